import { type Clock, systemClock } from "./clock.js";
import { Connection, type ConnectionOptions, type ConnectionStatus } from "./connection.js";
import { Emitter } from "./emitter.js";
import { Catchup } from "./catchup.js";
import { ConfabError, isPermanent } from "./errors.js";
import {
  type FetchLike,
  fetchMessages,
  resolveUrl,
  type SignedUrls,
  signUpload,
  tokenExpiry,
  upload,
  type UploadBody,
  type UploadOptions,
  websocketUrl,
} from "./http.js";
import {
  dmPeer,
  dmRoomId,
  isDmRoom,
  type Attachment,
  type HelloEvent,
  type MemberEvent,
  type Message,
  type MsgEvent,
  type NotifyLevel,
  type OpName,
  type ReplyOf,
  type RequestOf,
  type Role,
  type RoomSummary,
  type ServerEvent,
  type Visibility,
} from "./protocol.js";
import { Outbox, type SendResult } from "./outbox.js";
import { type OutgoingMessage, RoomState } from "./room.js";
import type { RequestOptions } from "./connection.js";

export type { SendResult } from "./outbox.js";

export interface ClientOptions extends Omit<ConnectionOptions, "url" | "tokenExpiresAt" | "clock"> {
  /** Base URL of a gateway, e.g. `https://chat.example.com` (browsers: `location.origin`). */
  baseUrl: string;
  token: string;
  /** The user's name, when known before `hello` (from login). */
  user?: string;
  clock?: Clock;
  /** Messages per room per `sync` request. Default 100. */
  syncLimit?: number;
  /** `sync` pages fetched for one room before jumping to its newest page instead. Default 3. */
  maxSyncPages?: number;
  /** Messages per `history` page. Default 50. */
  historyLimit?: number;
  /** How long a typing indicator lasts without a new `typing` event. Default 6 s. */
  typingTimeoutMs?: number;
  /** At most one `typing` op per room per this interval. Default 3 s. */
  typingThrottleMs?: number;
  /** Per-attempt reply timeout of `send`; an unanswered send is repeated with its cid. Default 10 s. */
  sendTimeoutMs?: number;
  /** Makes client message ids (cid); random by default. */
  newCid?: () => string;
  /** `fetch` for uploads and signed URLs; default the global one (XMLHttpRequest in browsers, for progress). */
  fetch?: FetchLike;
}

/** Most attachments one message may carry (docs/protocol.md, `send`). */
export const MAX_ATTACHMENTS = 10;

/** URLs of an attachment that work without a token (in `<img src>` or a link), absolute. */
export interface AttachmentUrls {
  url: string;
  thumbnailUrl?: string;
  /** Unix seconds. */
  expiresAt: number;
}

/** Signed URLs are signed again when they have less than this many seconds left. */
const SIGN_MARGIN_SECS = 120;

export type ClientEvents = {
  /** The connection's status changed. */
  status: [status: ConnectionStatus];
  /** Rooms were added or removed. */
  rooms: [];
  /** The room list is fresh after a (re)connect; a `sync` of every room follows. */
  ready: [];
  /** Something in one room changed: messages, unread, typing, outgoing... */
  room: [room: string];
  /** A user came online or went offline. */
  presence: [user: string, online: boolean];
  /** The session's token expired; sign in again. */
  expired: [];
  /** The application disconnected this user (`bye` `disconnected`); the client does not reconnect. */
  disconnected: [];
  /** Every server event, for apps that want more than the state. */
  event: [event: ServerEvent];
  /** A failure in background work (sync, read markers...). */
  error: [error: ConfabError];
};

/**
 * A Confab client: one connection plus the state of the user's rooms, kept
 * right across reconnects.
 *
 * - Unacked `send`s stay in an outbox and are sent again with the same `cid`
 *   after a reconnect (the server stores each cid once).
 * - A `msg` event whose `prev_seq` is not the room's last known seq starts a
 *   `sync` of that room; every reconnect syncs every known room.
 * - Requests answered `rate_limited` are tried again later.
 */
export class ConfabClient extends Emitter<ClientEvents> {
  readonly rooms = new Map<string, RoomState>();
  /** Rooms the user is invited to and has not joined (from `rooms` and `member` events). */
  readonly invitations = new Set<string>();
  /** Users known to have a live session. */
  readonly online = new Set<string>();
  readonly connection: Connection;
  /** The signed-in user; from the options, then from `hello`. */
  me: string;

  private readonly clock: Clock;
  private readonly outbox: Outbox;
  private readonly catchup: Catchup;
  private readonly joining = new Set<string>();
  private readonly olderLoads = new Map<string, Promise<number>>();
  private readonly typingSentAt = new Map<string, number>();
  private readonly typingTimers = new Map<string, unknown>();
  private readonly readInFlight = new Map<string, number>();
  private readonly readWanted = new Map<string, number>();
  private roomsRefresh: Promise<void> | undefined;
  private readonly signed = new Map<string, { promise: Promise<AttachmentUrls>; expiresAt: number; pending: boolean }>();

  constructor(private readonly options: ClientOptions) {
    super();
    this.clock = options.clock ?? systemClock;
    this.me = options.user ?? "";
    const expiresAt = tokenExpiry(options.token);
    this.connection = new Connection({
      checkToken: () => checkToken(options.baseUrl, options.token),
      ...options,
      clock: this.clock,
      url: websocketUrl(options.baseUrl, options.token),
      ...(expiresAt !== undefined ? { tokenExpiresAt: expiresAt } : {}),
    });
    const isOpen = () => this.connection.isOpen;
    this.outbox = new Outbox({
      clock: this.clock,
      isOpen,
      send: (fields) =>
        this.request("send", fields, {
          timeoutMs: options.sendTimeoutMs ?? 10_000,
          rateLimitRetries: Number.POSITIVE_INFINITY,
        }),
      changed: (out) => this.emit("room", out.room),
      stored: (out, result) => this.onStored(out, result),
    });
    this.catchup = new Catchup(
      {
        rooms: this.rooms,
        isOpen,
        sync: (fields) => this.request("sync", fields),
        history: (fields) => this.request("history", fields),
        inserted: (room, messages) => this.onInserted(room, messages),
        forget: (id) => this.forgetRoom(id),
        error: (err) => this.emit("error", err),
      },
      {
        syncLimit: options.syncLimit ?? 100,
        maxSyncPages: options.maxSyncPages ?? 3,
        historyLimit: options.historyLimit ?? 50,
      },
    );
    this.connection.on("status", (status) => this.emit("status", status));
    this.connection.on("hello", (hello) => this.onHello(hello));
    this.connection.on("event", (event) => this.onEvent(event));
    this.connection.on("expired", () => this.emit("expired"));
    this.connection.on("disconnected", () => this.emit("disconnected"));
  }

  get status(): ConnectionStatus {
    return this.connection.status;
  }

  /** Connects; the client reconnects by itself until `close`. */
  connect(): this {
    this.connection.start();
    return this;
  }

  close(): void {
    this.connection.stop();
    this.outbox.close();
    for (const t of this.typingTimers.values()) this.clock.clearTimeout(t);
    this.typingTimers.clear();
  }

  /** Any op, typed; the building block of the helpers below. */
  request<K extends OpName>(op: K, fields: RequestOf<K>, options?: RequestOptions): Promise<ReplyOf<K>> {
    return this.connection.request(op, fields, options);
  }

  room(id: string): RoomState | undefined {
    return this.rooms.get(id);
  }

  /** Joins (and creates) a room. */
  async join(room: string): Promise<RoomState> {
    this.joining.add(room);
    try {
      const reply = await this.request("join", { room });
      const state = this.ensureRoom(reply.room, reply.last_seq);
      state.lastSeq = Math.max(state.lastSeq, reply.last_seq);
      this.emit("room", state.id);
      return state;
    } finally {
      this.joining.delete(room);
    }
  }

  /** Creates a room owned by the user (`taken` if it exists), and enters it. */
  async create(
    room: string,
    settings: { visibility?: Visibility; name?: string; topic?: string } = {},
  ): Promise<RoomState> {
    this.joining.add(room);
    try {
      const reply = await this.request("create", { room, ...settings });
      const state = this.ensureRoom(reply.room, reply.last_seq);
      state.role = "owner";
      state.visibility = settings.visibility ?? "public";
      state.name = settings.name ?? "";
      state.topic = settings.topic ?? "";
      this.emit("room", state.id);
      return state;
    } finally {
      this.joining.delete(room);
    }
  }

  /** Accepts an invitation: joins the room. */
  async accept(room: string): Promise<RoomState> {
    const state = await this.join(room);
    if (this.invitations.delete(room)) this.emit("rooms");
    return state;
  }

  invite(room: string, user: string): Promise<unknown> {
    return this.request("invite", { room, user });
  }

  /** Moderation of `user` in `room` (admins and the owner, over lower roles). */
  moderate(
    room: string,
    user: string,
    act: "kick" | "ban" | "unban" | "mute" | "unmute",
    options: { reason?: string; until?: number } = {},
  ): Promise<unknown> {
    switch (act) {
      case "kick":
      case "ban":
        return this.request(act, options.reason ? { room, user, reason: options.reason } : { room, user });
      case "mute":
        return this.request("mute", options.until ? { room, user, until: options.until } : { room, user });
      default:
        return this.request(act, { room, user });
    }
  }

  setRole(room: string, user: string, role: Role): Promise<unknown> {
    return this.request("set_role", { room, user, role });
  }

  updateRoom(
    room: string,
    settings: { name?: string; topic?: string; visibility?: Visibility; retention_days?: number },
  ): Promise<unknown> {
    return this.request("update_room", { room, ...settings });
  }

  /** Sets the user's notification level for a room (on every device at its next `rooms`). */
  async setNotify(room: string, level: NotifyLevel): Promise<void> {
    await this.request("notify", { room, level });
    const state = this.rooms.get(room);
    if (state) {
      state.notify = level;
      this.emit("room", room);
      this.emit("rooms");
    }
  }

  /** The room's settings, size and the user's role; kept on the room's state too. */
  async roomInfo(room: string): Promise<ReplyOf<"room_info">> {
    const info = await this.request("room_info", { room });
    const state = this.rooms.get(room);
    if (state) {
      state.name = info.name;
      state.topic = info.topic;
      state.visibility = info.visibility;
      state.role = info.role ?? undefined;
      state.retentionDays = info.retention_days;
      this.emit("room", room);
    }
    return info;
  }

  /** One page of the room's members with their roles. */
  members(room: string, page: { after?: string; limit?: number } = {}): Promise<ReplyOf<"members">> {
    return this.request("members", { room, ...page });
  }

  /** Public rooms matching `query` (on id and name). */
  directory(query?: string, page: { after?: string; limit?: number } = {}): Promise<ReplyOf<"directory">> {
    return this.request("directory", query ? { query, ...page } : page);
  }

  async leave(room: string): Promise<void> {
    await this.request("leave", { room });
    this.forgetRoom(room);
  }

  /**
   * The DM room with `user`, created locally when it does not exist yet: the
   * server creates it with the first message.
   */
  openDirect(user: string): RoomState {
    const id = dmRoomId(this.me, user);
    const existing = this.rooms.get(id);
    if (existing) return existing;
    const state = new RoomState(id, { floor: 0, onServer: false });
    this.rooms.set(id, state);
    this.emit("rooms");
    return state;
  }

  /** Drops a room only known locally (a DM opened but never written to). */
  closeLocal(id: string): void {
    const room = this.rooms.get(id);
    if (room && !room.onServer && room.outgoing.every((o) => o.state === "failed")) this.forgetRoom(id);
  }

  /**
   * Sends `text` to a room (a DM room id included). Resolves once the server
   * stored it; until then it is in `room.outgoing` and survives reconnects.
   * Rejects only for failures that repeating cannot fix (`not_member`...).
   */
  send(
    room: string,
    text: string,
    options: { replyTo?: number; attachments?: readonly Attachment[] } = {},
  ): Promise<SendResult> {
    const peer = dmPeer(room, this.me);
    if (peer !== undefined) return this.enqueue(dmRoomId(this.me, peer), peer, text, options.replyTo, options.attachments);
    return this.enqueue(room, undefined, text, options.replyTo, options.attachments);
  }

  /**
   * Uploads a file to attach to a message in `room` (`POST /v1/uploads`);
   * resolves with the attachment to pass to `send`'s `attachments`. Fails with
   * `too_large` (413), `bad_request` with status 415 (a type the server does
   * not take), `not_member` (403), `unavailable`, or `aborted`.
   */
  upload(room: string, file: UploadBody, options: UploadOptions = {}): Promise<Attachment> {
    const peer = dmPeer(room, this.me);
    const target = peer !== undefined ? dmRoomId(this.me, peer) : room;
    return upload(this.http(), target, file, options);
  }

  /**
   * Signed, absolute URLs of an attachment for places that cannot send the
   * token (`<img src>`, download links). Cached per attachment and signed
   * again when near expiry; concurrent calls share one request.
   */
  attachmentUrls(attachment: Pick<Attachment, "id">): Promise<AttachmentUrls> {
    const cached = this.signed.get(attachment.id);
    const now = this.clock.now() / 1000;
    if (cached && (cached.pending || cached.expiresAt - SIGN_MARGIN_SECS > now)) return cached.promise;
    const entry: { promise: Promise<AttachmentUrls>; expiresAt: number; pending: boolean } = {
      promise: Promise.resolve() as unknown as Promise<AttachmentUrls>,
      expiresAt: 0,
      pending: true,
    };
    entry.promise = signUpload(this.http(), attachment.id).then(
      (signed: SignedUrls) => {
        entry.pending = false;
        entry.expiresAt = signed.expires_at;
        const urls: AttachmentUrls = { url: resolveUrl(this.options.baseUrl, signed.url), expiresAt: signed.expires_at };
        if (signed.thumbnail_url) urls.thumbnailUrl = resolveUrl(this.options.baseUrl, signed.thumbnail_url);
        return urls;
      },
      (err: unknown) => {
        this.signed.delete(attachment.id);
        throw err;
      },
    );
    this.signed.set(attachment.id, entry);
    // Bounded: forget the oldest when many attachments were seen.
    if (this.signed.size > 1000) this.signed.delete(this.signed.keys().next().value as string);
    return entry.promise;
  }

  private http() {
    return {
      baseUrl: this.options.baseUrl,
      token: this.options.token,
      ...(this.options.fetch ? { fetch: this.options.fetch } : {}),
    };
  }

  /** Replaces the text of one of the user's messages. */
  edit(room: string, seq: number, text: string): Promise<ReplyOf<"edit">> {
    return this.request("edit", { room, seq, text });
  }

  /** A message's earlier versions, oldest first. */
  async edits(room: string, seq: number): Promise<{ text: string; ts: number }[]> {
    return (await this.request("edits", { room, seq })).versions;
  }

  /** Deletes a message (the user's own, or any as an admin or the owner). */
  deleteMessage(room: string, seq: number): Promise<ReplyOf<"delete">> {
    return this.request("delete", { room, seq });
  }

  /** Adds (or with `remove`, takes back) the user's reaction. */
  react(room: string, seq: number, emoji: string, remove = false): Promise<ReplyOf<"react">> {
    return this.request("react", { room, seq, emoji, ...(remove ? { remove } : {}) });
  }

  /** Sends a direct message to `user`, creating the DM room with the first one. */
  sendDirect(user: string, text: string): Promise<SendResult> {
    return this.enqueue(dmRoomId(this.me, user), user, text);
  }

  /** Sends a failed message again (same cid). */
  retry(cid: string): Promise<SendResult> | undefined {
    for (const room of this.rooms.values()) {
      const out = room.outgoing.find((o) => o.cid === cid);
      if (out && out.state === "failed") {
        out.state = "sending";
        delete out.error;
        this.emit("room", room.id);
        return this.outbox.add(out);
      }
    }
    return undefined;
  }

  /** Drops a failed message from its room's outgoing list. */
  discard(cid: string): void {
    for (const room of this.rooms.values()) {
      const before = room.outgoing.length;
      room.outgoing = room.outgoing.filter((o) => o.cid !== cid || o.state !== "failed");
      if (room.outgoing.length !== before) this.emit("room", room.id);
    }
  }

  /** Loads the page of messages before the loaded ones. Resolves with how many were new. */
  loadOlder(roomId: string, limit = this.options.historyLimit ?? 50): Promise<number> {
    const room = this.rooms.get(roomId);
    if (!room || !room.onServer || !room.hasOlder) return Promise.resolve(0);
    const running = this.olderLoads.get(roomId);
    if (running) return running;
    const before = room.messages[0]?.seq ?? room.floor + 1;
    const load = this.request("history", { room: roomId, before, limit })
      .then((reply) => {
        if (this.rooms.get(roomId) !== room) return 0;
        const added = room.applyHistory(reply.messages, limit, reply.more === true);
        this.onInserted(room, reply.messages);
        return added;
      })
      .finally(() => this.olderLoads.delete(roomId));
    this.olderLoads.set(roomId, load);
    return load;
  }

  /**
   * Moves the user's read marker forward to `seq` (default: the newest loaded
   * message). Never moves it back; coalesces markers while one is in flight.
   */
  markRead(roomId: string, seq?: number): void {
    const room = this.rooms.get(roomId);
    if (!room || !room.onServer) return;
    const target = seq ?? room.tailSeq;
    if (target <= room.readSeq) return;
    room.readSeq = target;
    this.emit("room", roomId);
    this.readWanted.set(roomId, target);
    this.pumpRead(roomId);
  }

  private pumpRead(roomId: string): void {
    if (this.readInFlight.has(roomId)) return;
    const seq = this.readWanted.get(roomId);
    if (seq === undefined) return;
    this.readWanted.delete(roomId);
    this.readInFlight.set(roomId, seq);
    this.request("read", { room: roomId, seq })
      .catch((err: ConfabError) => {
        // Lost with the connection: try again; the marker never moves back.
        if (!isPermanent(err.code) && !this.readWanted.has(roomId)) this.readWanted.set(roomId, seq);
        if (isPermanent(err.code)) this.emit("error", err);
      })
      .finally(() => {
        this.readInFlight.delete(roomId);
        if (this.connection.isOpen) this.pumpRead(roomId);
      });
  }

  /** Tells the room the user is typing; throttled, so call it on every keystroke. */
  typing(roomId: string): void {
    const room = this.rooms.get(roomId);
    if (!room || !room.onServer || !this.connection.isOpen) return;
    const now = this.clock.now();
    const last = this.typingSentAt.get(roomId);
    if (last !== undefined && now - last < (this.options.typingThrottleMs ?? 3_000)) return;
    this.typingSentAt.set(roomId, now);
    this.request("typing", { room: roomId }).catch(() => {});
  }

  /** Users of the room with a live session; also updates `online` and the room's members. */
  async presence(roomId: string): Promise<string[]> {
    const reply = await this.request("presence", { room: roomId });
    const room = this.rooms.get(roomId);
    const online = new Set(reply.online);
    for (const user of online) {
      room?.members.add(user);
      this.setOnline(user, true);
    }
    if (room) {
      for (const member of room.members) if (!online.has(member)) this.setOnline(member, false);
      this.emit("room", roomId);
    }
    return reply.online;
  }

  /** Members of the room currently online, as far as the client knows. */
  onlineIn(roomId: string): string[] {
    const room = this.rooms.get(roomId);
    if (!room) return [];
    return [...room.members].filter((u) => this.online.has(u)).sort();
  }

  /** Fetches the user's rooms (`rooms`) and merges them into the state. */
  refreshRooms(): Promise<void> {
    this.roomsRefresh ??= this.request("rooms", {})
      .then((reply) => this.mergeRooms(reply.rooms))
      .finally(() => {
        this.roomsRefresh = undefined;
      });
    return this.roomsRefresh;
  }

  // --- connection lifecycle ---

  private onHello(hello: HelloEvent): void {
    this.me = hello.user;
    this.outbox.flush();
    for (const roomId of this.readWanted.keys()) this.pumpRead(roomId);
    // Rooms may have appeared (DMs) or gone while we were away; then catch up on all.
    this.refreshRooms().then(
      () => {
        this.emit("ready");
        this.catchup.want(this.rooms.keys());
      },
      (err: ConfabError) => {
        this.emit("error", err);
        this.catchup.want(this.rooms.keys());
      },
    );
  }

  private onEvent(event: Exclude<ServerEvent, HelloEvent>): void {
    switch (event.ev) {
      case "msg":
        this.onMsg(event);
        break;
      case "member":
        this.onMember(event);
        break;
      case "typing": {
        const room = this.rooms.get(event.room);
        if (room && event.user !== this.me) {
          this.setOnline(event.user, true);
          this.showTyping(room, event.user);
        }
        break;
      }
      case "read": {
        const room = this.rooms.get(event.room);
        if (!room) break;
        if (event.user === this.me) {
          if (event.seq > room.readSeq) room.readSeq = event.seq;
        } else {
          room.members.add(event.user);
          room.readBy.set(event.user, Math.max(room.readBy.get(event.user) ?? 0, event.seq));
        }
        this.emit("room", room.id);
        break;
      }
      case "presence":
        this.setOnline(event.user, event.online);
        break;
      case "room": {
        const room = this.rooms.get(event.room);
        if (!room) break;
        room.name = event.name;
        room.topic = event.topic;
        room.visibility = event.visibility;
        this.emit("room", room.id);
        break;
      }
      case "bye":
        // The connection reconnects (or reports expiry) by itself.
        break;
      case "edit":
      case "delete":
      case "react": {
        const room = this.rooms.get(event.room);
        if (!room) break;
        if (room.applyChange(event) === "gap") this.catchup.want([room.id]);
        else this.emit("room", room.id);
        break;
      }
    }
    this.emit("event", event);
  }

  private onMsg(ev: MsgEvent): void {
    let room = this.rooms.get(ev.room);
    if (!room) {
      if (!isDmRoom(ev.room)) {
        // A room joined elsewhere: learn it properly, then sync.
        this.refreshRooms().then(() => this.catchup.want([ev.room]), () => {});
        return;
      }
      // The first message of a DM: its history starts at seq 0.
      room = new RoomState(ev.room, { floor: 0 });
      this.rooms.set(ev.room, room);
      this.emit("rooms");
    }
    if (ev.seq > room.lastSeq) room.lastSeq = ev.seq;
    room.onServer = true;
    if (this.catchup.isJumping(room.id) || ev.seq <= room.tailSeq) return;
    if (ev.prev_seq === room.tailSeq) {
      room.insert([ev]);
      this.onInserted(room, [ev]);
    } else {
      // A gap: messages between our tail and this one were missed.
      this.catchup.want([room.id]);
    }
  }

  private onMember(ev: MemberEvent): void {
    const room = this.rooms.get(ev.room);
    if (ev.action === "role" && room && ev.role) {
      if (ev.user === this.me) room.role = ev.role;
      this.emit("room", room.id);
      return;
    }
    if (ev.action === "invite" || ev.action === "mute" || ev.action === "unmute" || ev.action === "unban") {
      // Nobody joins or leaves: only an invitation of ours changes the state.
      if (ev.action === "invite" && ev.user === this.me && !room && !this.invitations.has(ev.room)) {
        this.invitations.add(ev.room);
        this.emit("rooms");
      }
      if (room) this.emit("room", room.id);
      return;
    }
    const gone = ev.action === "leave" || ev.action === "kick" || ev.action === "ban";
    if (ev.user === this.me) {
      if (gone) {
        this.forgetRoom(ev.room);
      } else {
        if (this.invitations.delete(ev.room)) this.emit("rooms");
        if (!room && !this.joining.has(ev.room)) {
          // Joined from another session of ours.
          this.refreshRooms().then(() => this.catchup.want([ev.room]), () => {});
        }
      }
      return;
    }
    if (!room) return;
    if (ev.action === "join") {
      room.members.add(ev.user);
      // Joining takes a live session: no presence event says so when we shared no room before.
      this.setOnline(ev.user, true);
    } else {
      room.members.delete(ev.user);
      room.typing.delete(ev.user);
    }
    this.emit("room", room.id);
  }

  // --- rooms ---

  private ensureRoom(id: string, floor: number): RoomState {
    let room = this.rooms.get(id);
    if (room) {
      room.onServer = true;
      return room;
    }
    room = new RoomState(id, { floor });
    this.rooms.set(id, room);
    this.emit("rooms");
    return room;
  }

  private mergeRooms(summaries: readonly RoomSummary[]): void {
    const seen = new Set<string>();
    let changed = false;
    const invited = new Set<string>();
    for (const s of summaries) {
      if (s.invited) {
        invited.add(s.room);
        continue;
      }
      seen.add(s.room);
      let room = this.rooms.get(s.room);
      if (!room) {
        // Start the loaded stretch at the read marker: the sync that follows
        // fetches exactly the unread messages.
        room = new RoomState(s.room, { floor: Math.min(s.read_seq, s.last_seq) });
        this.rooms.set(s.room, room);
        changed = true;
      }
      room.onServer = true;
      room.lastSeq = Math.max(room.lastSeq, s.last_seq);
      room.readSeq = Math.max(room.readSeq, s.read_seq);
      room.notify = s.notify ?? "all";
      if (s.unread !== undefined) {
        room.serverCounts = { readSeq: s.read_seq, lastSeq: s.last_seq, unread: s.unread, mentions: s.mentions ?? 0 };
      }
      this.emit("room", room.id);
    }
    for (const [id, room] of [...this.rooms]) {
      if (room.onServer && !seen.has(id) && !this.joining.has(id)) {
        // Left from another session; keep unsent messages' rooms only locally.
        this.rooms.delete(id);
        changed = true;
      }
    }
    if (invited.size !== this.invitations.size || [...invited].some((r) => !this.invitations.has(r))) {
      this.invitations.clear();
      for (const r of invited) this.invitations.add(r);
      changed = true;
    }
    if (changed) this.emit("rooms");
  }

  private forgetRoom(id: string): void {
    if (!this.rooms.delete(id)) return;
    this.catchup.forget(id);
    this.emit("rooms");
  }

  /** Syncs rooms from their loaded tails (gap repair); batched in one `sync` request. */
  requestSync(ids: Iterable<string>): void {
    this.catchup.want(ids);
  }

  /** Bookkeeping for messages that entered a room from any source. */
  private onInserted(room: RoomState, messages: readonly Message[]): void {
    for (const m of messages) {
      if (room.typing.delete(m.from)) this.clock.clearTimeout(this.typingTimers.get(`${room.id}\n${m.from}`));
      // Our own message arrived: its send is done even if the ack was lost.
      if (m.from === this.me && m.cid) this.outbox.complete(m.cid, { room: m.room, seq: m.seq, msg_id: m.msg_id, ts: m.ts });
    }
    this.emit("room", room.id);
  }

  // --- outbox ---

  private enqueue(
    roomId: string,
    to: string | undefined,
    text: string,
    replyTo?: number,
    attachments: readonly Attachment[] = [],
  ): Promise<SendResult> {
    if (text.length === 0 && attachments.length === 0) return Promise.reject(new ConfabError("bad_request", "empty message"));
    if (attachments.length > MAX_ATTACHMENTS) {
      return Promise.reject(new ConfabError("bad_request", `at most ${MAX_ATTACHMENTS} attachments per message`));
    }
    let room = this.rooms.get(roomId);
    if (!room) {
      if (to === undefined) return Promise.reject(new ConfabError("not_member", `join room '${roomId}' first`));
      room = this.openDirect(to);
    }
    const out: OutgoingMessage = {
      cid: (this.options.newCid ?? randomCid)(),
      room: room.id,
      text,
      createdAt: this.clock.now(),
      state: "sending",
      ...(to !== undefined ? { to } : {}),
      ...(replyTo !== undefined ? { replyTo } : {}),
      ...(attachments.length > 0 ? { attachments: [...attachments] } : {}),
    };
    room.outgoing.push(out);
    // The message ends the others' typing indicator; the next keystroke starts a new one.
    this.typingSentAt.delete(room.id);
    this.emit("room", room.id);
    return this.outbox.add(out);
  }

  /** The server stored a message of ours: its echo waits for the message itself. */
  private onStored(out: OutgoingMessage, result: SendResult): void {
    const room = this.rooms.get(out.room) ?? this.rooms.get(result.room);
    if (!room) return;
    room.onServer = true;
    if (result.seq > room.lastSeq) room.lastSeq = result.seq;
    if (room.messages.some((m) => m.seq === result.seq)) {
      room.outgoing = room.outgoing.filter((o) => o !== out);
    } else {
      out.state = "sent";
      out.seq = result.seq;
      out.msg_id = result.msg_id;
      // The msg event normally follows; if it was lost, a sync finds the message.
      const roomId = room.id;
      this.clock.setTimeout(() => {
        if (this.rooms.get(roomId)?.outgoing.includes(out)) this.catchup.want([roomId]);
      }, 3_000);
    }
    this.emit("room", room.id);
  }

  /** Unacked sends, oldest first. */
  get pendingSends(): OutgoingMessage[] {
    return this.outbox.pending;
  }

  // --- typing and presence ---

  private showTyping(room: RoomState, user: string): void {
    const key = `${room.id}\n${user}`;
    const until = this.clock.now() + (this.options.typingTimeoutMs ?? 6_000);
    room.typing.set(user, until);
    room.members.add(user);
    this.clock.clearTimeout(this.typingTimers.get(key));
    this.typingTimers.set(
      key,
      this.clock.setTimeout(() => {
        this.typingTimers.delete(key);
        if (room.typing.get(user) === until) {
          room.typing.delete(user);
          this.emit("room", room.id);
        }
      }, this.options.typingTimeoutMs ?? 6_000),
    );
    this.emit("room", room.id);
  }

  private setOnline(user: string, online: boolean): void {
    if (this.online.has(user) === online) return;
    if (online) this.online.add(user);
    else this.online.delete(user);
    this.emit("presence", user, online);
  }
}

/**
 * Whether the server still accepts the token, asked over HTTP: a history page of
 * a room nobody joined answers 401 for a bad token and 403/404 for a good one.
 * Undefined when the server cannot be asked.
 */
async function checkToken(baseUrl: string, token: string): Promise<boolean | undefined> {
  if (typeof globalThis.fetch !== "function") return undefined;
  try {
    await fetchMessages({ baseUrl, token }, "confab-token-check", { limit: 1 });
    return true;
  } catch (err) {
    const status = (err as ConfabError).status;
    if (status === undefined || status >= 500) return undefined;
    return status !== 401;
  }
}

function randomCid(): string {
  const bytes = new Uint8Array(16);
  const c = (globalThis as { crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto;
  if (c?.getRandomValues) c.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}
