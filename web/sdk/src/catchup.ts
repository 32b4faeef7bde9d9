import type { ConfabError } from "./errors.js";
import { isPermanent } from "./errors.js";
import type { Message, ReplyOf, RequestOf, SyncRoomResult } from "./protocol.js";
import type { RoomState } from "./room.js";

/** What catching up needs from the client around it. */
export interface CatchupHost {
  readonly rooms: ReadonlyMap<string, RoomState>;
  isOpen(): boolean;
  sync(fields: RequestOf<"sync">): Promise<ReplyOf<"sync">>;
  history(fields: RequestOf<"history">): Promise<ReplyOf<"history">>;
  /** Messages entered a room. */
  inserted(room: RoomState, messages: readonly Message[]): void;
  /** The room is not ours any more (the server says we are not a member). */
  forget(roomId: string): void;
  error(err: ConfabError): void;
}

export interface CatchupOptions {
  /** Messages per room per `sync` request. */
  syncLimit: number;
  /** `sync` pages for one room before jumping to its newest page instead. */
  maxSyncPages: number;
  /** Messages per `history` page. */
  historyLimit: number;
}

/**
 * Gap repair: brings rooms' loaded stretches up to date with `sync`, from each
 * stretch's tail, repeating it while a room says `more` (a reply stops at the
 * server's byte budget and message cap; rooms it did not reach come back
 * empty with `more`). Rooms wanted while a `sync` is in flight go together in
 * the next one; a room further behind than `maxSyncPages` pages jumps to its
 * newest page instead (its unread count then becomes a lower bound).
 */
export class Catchup {
  private readonly wanted = new Set<string>();
  private readonly pages = new Map<string, number>();
  private readonly jumping = new Set<string>();
  private running = false;

  constructor(
    private readonly host: CatchupHost,
    private readonly options: CatchupOptions,
  ) {}

  /** Syncs these rooms soon, batched in one `sync` request. */
  want(ids: Iterable<string>): void {
    for (const id of ids) if (this.host.rooms.get(id)?.onServer) this.wanted.add(id);
    if (!this.running && this.wanted.size > 0 && this.host.isOpen()) void this.run();
  }

  /** While a room jumps to its newest page, its events are not applied (the jump's sync fetches them). */
  isJumping(id: string): boolean {
    return this.jumping.has(id);
  }

  forget(id: string): void {
    this.wanted.delete(id);
    this.pages.delete(id);
  }

  private async run(): Promise<void> {
    this.running = true;
    try {
      while (this.wanted.size > 0 && this.host.isOpen()) {
        const since: Record<string, number> = {};
        for (const id of this.wanted) {
          const room = this.host.rooms.get(id);
          if (room && !this.jumping.has(id)) since[id] = room.tailSeq;
        }
        this.wanted.clear();
        if (Object.keys(since).length === 0) break;
        if (!(await this.batch(since))) break;
      }
    } finally {
      this.running = false;
    }
  }

  /** One `sync` request; false when the connection is in trouble and syncing should pause. */
  private async batch(since: Record<string, number>): Promise<boolean> {
    const ids = Object.keys(since);
    let reply: ReplyOf<"sync">;
    try {
      // Every room's change position too, so changes to messages it holds come along.
      const changes: Record<string, number> = {};
      for (const id of ids) changes[id] = this.host.rooms.get(id)?.changePos ?? since[id]!;
      reply = await this.host.sync({ rooms: since, limit: this.options.syncLimit, changes });
    } catch (e) {
      const err = e as ConfabError;
      if (!isPermanent(err.code)) {
        // Connection trouble: keep the rooms wanted; the next hello syncs every room anyway.
        for (const id of ids) this.wanted.add(id);
        if (err.code !== "unavailable") this.host.error(err);
        return false;
      }
      if (ids.length > 1) {
        // One bad room (left elsewhere?) must not block the others.
        for (const id of ids) {
          if (!(await this.batch({ [id]: since[id]! }))) return false;
        }
      } else if (err.code === "not_member" || err.code === "not_found" || err.code === "forbidden") {
        this.host.forget(ids[0]!);
      } else {
        this.host.error(err);
      }
      return true;
    }
    for (const [id, result] of Object.entries(reply.rooms)) {
      const from = since[id];
      if (from !== undefined) this.apply(id, from, result);
    }
    return true;
  }

  private apply(id: string, since: number, result: SyncRoomResult): void {
    const room = this.host.rooms.get(id);
    if (!room) return;
    if (room.tailSeq < since) {
      // The stretch was replaced meanwhile; this page no longer joins it.
      this.wanted.add(id);
      return;
    }
    room.insert(result.messages);
    if (result.changed) room.replace(result.changed);
    if (result.change_pos !== undefined) {
      // Changes applied while the sync was in flight are newer than the
      // state it read, which may have overwritten them: go back to the
      // reply's position and fetch what changed since once more.
      const ahead = (room.changePos ?? 0) > result.change_pos;
      room.changePos = result.change_pos;
      if (ahead) this.wanted.add(id);
    }
    this.host.inserted(room, result.messages);
    if (result.changes_more) this.wanted.add(id);
    if (!result.more) {
      this.pages.delete(id);
      return;
    }
    if (result.messages.length === 0) {
      // The server's reply budget ran out before this room: sync it again,
      // from the same seq, without counting a page.
      this.wanted.add(id);
      return;
    }
    const pages = (this.pages.get(id) ?? 0) + 1;
    if (pages < this.options.maxSyncPages) {
      this.pages.set(id, pages);
      this.wanted.add(id);
    } else {
      this.pages.delete(id);
      void this.jumpToNewest(room);
    }
  }

  /** Too far behind to catch up page by page: load the newest page instead. */
  private async jumpToNewest(room: RoomState): Promise<void> {
    this.jumping.add(room.id);
    const limit = this.options.historyLimit;
    try {
      const reply = await this.host.history({ room: room.id, limit });
      if (this.host.rooms.get(room.id) !== room) return;
      room.replaceWithNewest(reply.messages, limit, reply.more === true);
      this.host.inserted(room, reply.messages);
    } catch (err) {
      this.host.error(err as ConfabError);
    } finally {
      this.jumping.delete(room.id);
    }
    // Events ignored during the jump are fetched now.
    this.want([room.id]);
  }
}
