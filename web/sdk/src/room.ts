import {
  type Attachment,
  type ChangeEvent,
  dmPeer,
  isDmRoom,
  type Message,
  type NotifyLevel,
  type Role,
  type Visibility,
} from "./protocol.js";

/** The server's counts for a room (from `rooms`), as of its `read_seq` and `last_seq`. */
export interface ServerCounts {
  readSeq: number;
  lastSeq: number;
  unread: number;
  mentions: number;
}

/** A message the user sent that the room does not hold yet (a local echo). */
export interface OutgoingMessage {
  cid: string;
  room: string;
  /** Set for direct messages sent with `to`. */
  to?: string;
  text: string;
  /** When the app called `send`, in unix milliseconds. */
  createdAt: number;
  /** `sending` until acked; `sent` once acked but not yet seen in the room; `failed` for good. */
  state: "sending" | "sent" | "failed";
  error?: { code: string; message: string };
  /** The server's answer, once acked. */
  seq?: number;
  msg_id?: string;
  /** The seq of the message this one replies to. */
  replyTo?: number;
  /** Files sent with it (uploaded first, see `ConfabClient.upload`). */
  attachments?: Attachment[];
}

/**
 * What the client knows of one room.
 *
 * The loaded messages are one contiguous stretch of the room's history: every
 * message with `floor < seq <= tailSeq` is in `messages`, in seq order, once.
 * `sync` extends the stretch forward from its tail, `history` backward from
 * its head; a `msg` event whose `prev_seq` is not the tail is a gap, repaired
 * by `sync` rather than inserted (it would break contiguity).
 */
export class RoomState {
  readonly id: string;
  readonly isDm: boolean;
  /** Sorted by seq, no duplicates. */
  messages: Message[] = [];
  /** All messages with a seq above `floor` (up to the tail) are loaded; 0 means from the start. */
  floor: number;
  /** The highest seq the server reported for the room. */
  lastSeq = 0;
  /** The user's read marker. */
  readSeq = 0;
  /** Other members' read markers, from `read` events. */
  readBy = new Map<string, number>();
  /** Users seen typing, with the time (clock ms) their indicator ends. */
  typing = new Map<string, number>();
  /** Users known to be members: from `presence` replies, `member` events and senders. */
  members = new Set<string>();
  /** Unacked or unseen sends, in the order they were made. */
  outgoing: OutgoingMessage[] = [];
  /** False while the room is only known locally (a DM before its first message). */
  onServer: boolean;
  /** The room's settings, from `room_info` and `room` events (empty until known). */
  name = "";
  topic = "";
  visibility: Visibility = "public";
  /** The user's own role, from `room_info` and `member` events; undefined until known. */
  role: Role | undefined;
  /** The user's notification level for the room, from `rooms` and `notify`. */
  notify: NotifyLevel = "all";
  /** Days the room keeps messages (`room_info`); undefined: forever. */
  retentionDays: number | undefined;
  /** The server's exact counts from the last `rooms`, for a marker below the loaded stretch. */
  serverCounts: ServerCounts | undefined;
  /**
   * The room's change position: the `pos` of the last edit, deletion or
   * reaction applied. Set to the tail when the room is first loaded (every
   * change before that read is in what was loaded; a later one has a higher pos).
   */
  changePos: number | undefined;

  constructor(id: string, options: { floor?: number; onServer?: boolean } = {}) {
    this.id = id;
    this.isDm = isDmRoom(id);
    this.floor = options.floor ?? 0;
    this.onServer = options.onServer ?? true;
  }

  /** Seq of the newest loaded message, or `floor` when none is loaded. */
  get tailSeq(): number {
    const last = this.messages[this.messages.length - 1];
    return last ? last.seq : this.floor;
  }

  /** Whether `history` may return messages older than the loaded ones. */
  get hasOlder(): boolean {
    return this.floor > 0;
  }

  /** The other user of a DM room. */
  peer(me: string): string | undefined {
    return dmPeer(this.id, me);
  }

  /**
   * Messages from others above the read marker: counted among the loaded
   * ones when they reach down to the marker, else the server's count (from
   * `rooms`) plus what was loaded after it. Exact when `unreadIsExact`;
   * otherwise a lower bound.
   */
  unreadCount(me: string): number {
    return this.count(me, () => true, (c) => c.unread);
  }

  /** Of those, the messages that mention the user. */
  mentionCount(me: string): number {
    return this.count(me, (m) => mentions(m, me), (c) => c.mentions);
  }

  private count(me: string, counted: (m: Message) => boolean, server: (c: ServerCounts) => number): number {
    const c = this.serverCounts;
    const fromServer = !this.loadedToMarker && c !== undefined && c.readSeq === this.readSeq;
    const above = fromServer ? c.lastSeq : this.readSeq;
    let n = fromServer ? server(c) : 0;
    for (let i = this.messages.length - 1; i >= 0; i--) {
      const m = this.messages[i]!;
      if (m.seq <= above) break;
      if (m.from !== me && counted(m)) n++;
    }
    return n;
  }

  private get loadedToMarker(): boolean {
    return this.floor <= this.readSeq;
  }

  /** Whether the unread count is exact: every message above the read marker is loaded, or the server counted them. */
  get unreadIsExact(): boolean {
    const c = this.serverCounts;
    return this.loadedToMarker || (c !== undefined && c.readSeq === this.readSeq && this.floor <= c.lastSeq);
  }

  /**
   * Adds messages known to extend the loaded stretch (a `sync` page from the
   * tail, a `history` page before the head, or an in-order `msg` event). Keeps
   * seq order and drops duplicates. Returns how many were new.
   */
  insert(incoming: readonly Message[]): number {
    if (incoming.length === 0) return 0;
    const bySeq = new Map<number, Message>();
    for (const m of this.messages) bySeq.set(m.seq, m);
    let added = 0;
    for (const m of incoming) {
      if (m.room !== this.id || bySeq.has(m.seq)) continue;
      bySeq.set(m.seq, stripEvent(m));
      added++;
      this.members.add(m.from);
      if (m.seq > this.lastSeq) this.lastSeq = m.seq;
    }
    if (added > 0) {
      this.messages = [...bySeq.values()].sort((a, b) => a.seq - b.seq);
      this.changePos ??= this.tailSeq;
      this.dropEchoes();
      this.onServer = true;
    }
    return added;
  }

  /**
   * Applies a `history` page fetched with `before` = the head of the stretch.
   * A page shorter than `limit` reaches the start of the room, unless the
   * server says `more` (it stopped at its reply budget).
   */
  applyHistory(page: readonly Message[], limit: number, more = false): number {
    const added = this.insert(page);
    const first = page[0];
    if (page.length < limit && !more) {
      this.floor = 0;
    } else if (first && (this.messages.length === 0 || first.seq <= this.messages[0]!.seq)) {
      this.floor = Math.min(this.floor, first.seq - 1);
    }
    return added;
  }

  /**
   * Replaces the loaded stretch with the room's newest page (a `history`
   * without `before`), when the gap to the old stretch is too wide to fill.
   * `more`: the page stopped at the server's reply budget, short of `limit`.
   */
  replaceWithNewest(page: readonly Message[], limit: number, more = false): void {
    this.messages = [];
    this.floor = (page.length < limit && !more) || page.length === 0 ? 0 : page[0]!.seq - 1;
    this.insert(page);
  }

  /** The loaded message `seq`, if any. */
  message(seq: number): Message | undefined {
    return this.messages.find((m) => m.seq === seq);
  }

  /** Replaces loaded messages with their current state (a `sync`'s `changed`). */
  replace(current: readonly Message[]): void {
    if (current.length === 0) return;
    const bySeq = new Map(current.map((m) => [m.seq, stripEvent(m)]));
    this.messages = this.messages.map((m) => bySeq.get(m.seq) ?? m);
  }

  /**
   * Applies an `edit`, `delete` or `react` event: `applied`, `old` (it came
   * with a sync already) or `gap` (changes before it were missed: sync).
   */
  applyChange(ev: ChangeEvent): "applied" | "old" | "gap" {
    const pos = this.changePos;
    if (pos === undefined) return "gap";
    if (ev.pos <= pos) return "old";
    if (ev.prev_pos !== pos) return "gap";
    this.changePos = ev.pos;
    const i = this.messages.findIndex((m) => m.seq === ev.seq);
    if (i < 0) return "applied";
    const m = { ...this.messages[i]! };
    if (ev.ev === "edit") {
      m.text = ev.text;
      m.edited_ts = ev.edited_ts;
    } else if (ev.ev === "delete") {
      m.text = "";
      m.deleted = true;
      delete m.edited_ts;
      delete m.reactions;
      delete m.mentions;
      // The server deleted the files with the message.
      delete m.attachments;
    } else {
      const reactions = (m.reactions ?? []).map((r) => ({ ...r, users: [...r.users] }));
      let r = reactions.find((x) => x.emoji === ev.emoji);
      if (!r && !ev.remove) {
        r = { emoji: ev.emoji, count: 0, users: [] };
        reactions.push(r);
        reactions.sort((a, b) => (utf8(a.emoji) < utf8(b.emoji) ? -1 : 1));
      }
      if (r) {
        const has = r.users.includes(ev.user);
        if (ev.remove) {
          r.count = Math.max(0, r.count - 1);
          r.users = r.users.filter((u) => u !== ev.user);
        } else {
          r.count += 1;
          if (!has && r.users.length < 20) r.users = [...r.users, ev.user].sort();
        }
      }
      const left = reactions.filter((x) => x.count > 0);
      if (left.length > 0) m.reactions = left;
      else delete m.reactions;
    }
    this.messages[i] = m;
    this.messages = [...this.messages];
    return "applied";
  }

  /** Removes local echoes of messages the room now holds. */
  private dropEchoes(): void {
    if (this.outgoing.length === 0) return;
    const cids = new Set<string>();
    for (const m of this.messages) if (m.cid) cids.add(m.cid);
    this.outgoing = this.outgoing.filter((o) => !cids.has(o.cid));
  }
}

/** Drops event-only fields (`ev`, `prev_seq`) so that stored messages look the same wherever they came from. */
function stripEvent(m: Message): Message {
  const { room, seq, msg_id, from, text, ts, cid, reply_to, edited_ts, deleted, reactions, mentions, attachments } = m;
  return {
    room,
    seq,
    msg_id,
    from,
    text,
    ts,
    cid: cid ?? null,
    ...(reply_to !== undefined ? { reply_to } : {}),
    ...(edited_ts !== undefined ? { edited_ts } : {}),
    ...(deleted ? { deleted } : {}),
    ...(reactions && reactions.length > 0 ? { reactions } : {}),
    ...(mentions && mentions.length > 0 ? { mentions } : {}),
    ...(attachments && attachments.length > 0 ? { attachments } : {}),
  };
}

/** Whether `m` mentions `user` (the server lists mentioned members in `mentions`). */
export function mentions(m: Message, user: string): boolean {
  return m.mentions?.includes(user) ?? false;
}

/** Emoji order as the server has it: by the bytes of the UTF-8. */
function utf8(s: string): string {
  return unescape(encodeURIComponent(s));
}
