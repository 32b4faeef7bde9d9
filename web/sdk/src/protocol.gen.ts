// Generated from the Rust types of confab-protocol (protocol/src) by its
// `typescript` tests; do not edit. Regenerate with
// UPDATE_EXPECT=1 cargo test -p confab-protocol typescript

/**
 * The client's request id: a string or an integer, echoed verbatim as `re`.
 */
export type RequestId = number | string;

/**
 * Every operation of protocol v1 (docs/protocol.md). Unknown fields are ignored so that
 * clients written for later, additive versions still work.
 */
export type Op = { "op": "ping" } | { "op": "join", room: string, } | { "op": "leave", room: string, } | { "op": "rooms" } | { "op": "send", room?: string, to?: string, 
/**
 * May be empty (or absent) when `attachments` is not.
 */
text?: string, cid: string, 
/**
 * The seq of a message of the same room this one replies to.
 */
reply_to?: number, 
/**
 * Upload ids (`POST /v1/uploads`) of the same room and sender.
 */
attachments?: Array<string>, } | { "op": "history", room: string, before?: number, limit?: number, } | { "op": "sync", rooms: { [key in string]: number }, limit?: number, 
/**
 * Per room of `rooms`, the device's change position: the reply
 * also holds the current state of earlier messages changed after it
 * (crate::lifecycle).
 */
changes?: { [key in string]: number }, } | { "op": "typing", room: string, } | { "op": "read", room: string, seq: number, } | { "op": "presence", room: string, } | { "op": "create", room: string, visibility?: Visibility, name?: string, topic?: string, } | { "op": "invite", room: string, user: string, } | { "op": "kick", room: string, user: string, reason?: string, } | { "op": "ban", room: string, user: string, reason?: string, } | { "op": "unban", room: string, user: string, } | { "op": "mute", room: string, user: string, 
/**
 * Unix seconds; without it, until `unmute`.
 */
until?: number, } | { "op": "unmute", room: string, user: string, } | { "op": "set_role", room: string, user: string, role: Role, } | { "op": "update_room", room: string, name?: string, topic?: string, visibility?: Visibility, 
/**
 * Days the room keeps messages, 1 to 36500; 0: the cluster's default.
 */
retention_days?: number, } | { "op": "room_info", room: string, } | { "op": "members", room: string, after?: string, limit?: number, } | { "op": "directory", query?: string, after?: string, limit?: number, } | { "op": "profile", display_name?: string, avatar?: string, } | { "op": "users", users: Array<string>, } | { "op": "contact_add", user: string, } | { "op": "contact_remove", user: string, } | { "op": "contacts" } | { "op": "block", user: string, } | { "op": "unblock", user: string, } | { "op": "blocks" } | { "op": "notify", room: string, level: NotifyLevel, } | { "op": "edit", room: string, seq: number, text: string, } | { "op": "edits", room: string, seq: number, } | { "op": "delete", room: string, seq: number, } | { "op": "react", room: string, seq: number, emoji: string, remove?: boolean, };

/**
 * The protocol's error codes, exactly as clients see them.
 */
export type ErrorCode = "bad_request" | "unauthorized" | "forbidden" | "not_member" | "not_found" | "taken" | "too_large" | "rate_limited" | "unavailable" | "internal";

/**
 * A failure a client is told about: a code and a human message.
 */
export type ProtocolError = { code: ErrorCode, message: string, };

/**
 * The body of every HTTP error: `{"error":{"code":"...","message":"..."}}`.
 */
export type HttpErrorBody = { error: ProtocolError, };

/**
 * One emoji's reactions on a message: `users` holds the first
 * [`MAX_REACTION_USERS`] names in name order.
 */
export type Reaction = { emoji: string, count: number, users: Array<string>, };

/**
 * One file of a message, as `POST /v1/uploads` answers it and a message's
 * `attachments` hold it.
 */
export type Attachment = { 
/**
 * The upload's id.
 */
id: string, 
/**
 * Where its bytes are, relative to the server's origin.
 */
url: string, 
/**
 * Its file name as uploaded (cleaned).
 */
name: string, 
/**
 * The type sniffed from its bytes.
 */
content_type: string, 
/**
 * Bytes.
 */
size: number, 
/**
 * An image's width in pixels.
 */
width?: number, 
/**
 * An image's height in pixels.
 */
height?: number, 
/**
 * An image's thumbnail (at most 320 pixels on the long side).
 */
thumbnail_url?: string, };

/**
 * An earlier version of an edited message: its text and when that text was
 * stored (the message's `ts`, or the `edited_ts` of the edit that wrote it).
 */
export type Version = { text: string, ts: number, };

/**
 * A stored chat message (docs/protocol.md): `ts` is unix milliseconds at
 * acceptance, `msg_id` is unique across the cluster.
 *
 * `reply_to`, `edited_ts`, `deleted` and `reactions` are a message's life
 * after it was sent (crate::lifecycle), `mentions` what it mentions
 * (crate::unread); each is absent while it has its default, so a message
 * nobody replied with, edited, deleted or reacted to and that mentions
 * nobody reads as in v1.
 */
export type Message = { room: string, seq: number, msg_id: string, from: string, text: string, ts: number, cid: string, 
/**
 * The seq of the message this one replies to, in the same room.
 */
reply_to?: number, 
/**
 * When the current `text` was stored by an `edit` (unix milliseconds).
 */
edited_ts?: number, 
/**
 * Deleted: `text` is empty and earlier versions and reactions are gone.
 */
deleted?: boolean, 
/**
 * By emoji, in emoji order.
 */
reactions?: Array<Reaction>, 
/**
 * Members the text mentions as `@name` (each once, at most
 * [`MAX_MENTIONS`](crate::unread::MAX_MENTIONS)); absent when none.
 */
mentions?: Array<string>, 
/**
 * Files sent with it (crate::attachments), in the order of `send`'s
 * `attachments`; absent when none. A message with attachments may
 * have an empty `text`.
 */
attachments?: Array<Attachment>, };

/**
 * One entry of the `rooms` reply.
 */
export type RoomInfo = { room: string, last_seq: number, read_seq: number, 
/**
 * A pending invitation rather than a membership (absent for members).
 */
invited?: boolean, 
/**
 * Messages after `read_seq` that are not the user's own (0 for an
 * invitation). (Optional in TypeScript: servers before it omit it.)
 */
unread?: number, 
/**
 * Of those, the messages that mention the user.
 */
mentions?: number, 
/**
 * The user's notification level for the room.
 */
notify?: NotifyLevel, };

/**
 * One room of a `sync` reply.
 */
export type SyncRoom = { messages: Array<Message>, more: boolean, 
/**
 * With the request's `changes` for this room: the current state of
 * messages up to the room's `after` changed since the device's change
 * position, in seq order.
 */
changed?: Array<Message>, 
/**
 * With `changes`: the change position the device has now reached.
 */
change_pos?: number, 
/**
 * `true` when `changed` stopped short: sync again from `change_pos`.
 */
changes_more?: boolean, };

/**
 * The op-specific fields of a reply.
 */
export type ReplyBody = { error: ProtocolError, } | { room: string, seq: number, msg_id: string, ts: number, } | { room: string, name: string, topic: string, visibility: Visibility, members: number, role: Role | null, 
/**
 * Days the room keeps messages (its own setting, else the
 * cluster's default); absent: forever.
 */
retention_days?: number, } | { room: string, last_seq: number, } | { members: Array<MemberEntry>, next?: string, } | { rooms: Array<DirectoryEntry>, next?: string, } | { user: string, display_name: string, avatar: string, 
/**
 * A bot account; absent when false.
 */
bot?: boolean, } | { users: Array<Profile>, } | { rooms: Array<RoomInfo>, } | { messages: Array<Message>, 
/**
 * `true` when the page stopped short of `limit` at the reply's byte
 * budget, so older messages remain; absent otherwise.
 */
more?: boolean, } | { rooms: { [key in string]: SyncRoom }, } | { online: Array<string>, } | { user: string, status: ContactStatus, } | { contacts: Array<ContactEntry>, } | { blocked: Array<string>, } | { versions: Array<Version>, } | { room: string, seq: number, } | Record<symbol, never>;

/**
 * The one reply to a request.
 */
export type Reply = { re?: RequestId, ok: boolean, } & ({ error: ProtocolError, } | { room: string, seq: number, msg_id: string, ts: number, } | { room: string, name: string, topic: string, visibility: Visibility, members: number, role: Role | null, 
/**
 * Days the room keeps messages (its own setting, else the
 * cluster's default); absent: forever.
 */
retention_days?: number, } | { room: string, last_seq: number, } | { members: Array<MemberEntry>, next?: string, } | { rooms: Array<DirectoryEntry>, next?: string, } | { user: string, display_name: string, avatar: string, 
/**
 * A bot account; absent when false.
 */
bot?: boolean, } | { users: Array<Profile>, } | { rooms: Array<RoomInfo>, } | { messages: Array<Message>, 
/**
 * `true` when the page stopped short of `limit` at the reply's byte
 * budget, so older messages remain; absent otherwise.
 */
more?: boolean, } | { rooms: { [key in string]: SyncRoom }, } | { online: Array<string>, } | { user: string, status: ContactStatus, } | { contacts: Array<ContactEntry>, } | { blocked: Array<string>, } | { versions: Array<Version>, } | { room: string, seq: number, } | Record<symbol, never>);

export type MemberAction = "join" | "leave" | "invite" | "kick" | "ban" | "unban" | "mute" | "unmute" | "role";

/**
 * Who may join a room: anyone not banned, or invited users only.
 */
export type Visibility = "public" | "private";

/**
 * A member's role, highest first.
 */
export type Role = "owner" | "admin" | "member";

/**
 * One entry of the `members` reply.
 */
export type MemberEntry = { user: string, role: Role, };

/**
 * One entry of the `directory` reply.
 */
export type DirectoryEntry = { room: string, name: string, topic: string, members: number, };

/**
 * A user's profile: one entry of the `users` reply, the `profile` reply
 * and the body of `GET /v1/users/{user}`. Empty strings: not set.
 */
export type Profile = { user: string, display_name: string, avatar: string, 
/**
 * A bot account (created by the server API with `bot: true`); absent
 * when false.
 */
bot?: boolean, };

/**
 * Where a contact relation stands, as the user who reads it sees it.
 */
export type ContactStatus = "pending_in" | "pending_out" | "mutual" | "none";

/**
 * One entry of the `contacts` reply.
 */
export type ContactEntry = { user: string, status: ContactStatus, 
/**
 * At least one live session. Always `false` unless `mutual`: online
 * state is for those both sides agreed to share it with.
 */
online: boolean, };

/**
 * Why the server is closing a session (`bye`).
 */
export type ByeReason = "slow_consumer" | "token_expired" | "server_restart" | "token_revoked" | "disconnected";

/**
 * Which messages of a room a user wants to be told about: the web client
 * badges by it, and an outside push hand-off names only the offline
 * members whose level lets a message through ([`NotifyLevel::notifies`]).
 */
export type NotifyLevel = "all" | "mentions" | "none";

/**
 * Server-to-client events.
 */
export type ServerEvent = { "ev": "hello", user: string, session: string, server: string, heartbeat_ms: number, } | { "ev": "msg", prev_seq: number, room: string, seq: number, msg_id: string, from: string, text: string, ts: number, cid: string, 
/**
 * The seq of the message this one replies to, in the same room.
 */
reply_to?: number, 
/**
 * When the current `text` was stored by an `edit` (unix milliseconds).
 */
edited_ts?: number, 
/**
 * Deleted: `text` is empty and earlier versions and reactions are gone.
 */
deleted?: boolean, 
/**
 * By emoji, in emoji order.
 */
reactions?: Array<Reaction>, 
/**
 * Members the text mentions as `@name` (each once, at most
 * [`MAX_MENTIONS`](crate::unread::MAX_MENTIONS)); absent when none.
 */
mentions?: Array<string>, 
/**
 * Files sent with it (crate::attachments), in the order of `send`'s
 * `attachments`; absent when none. A message with attachments may
 * have an empty `text`.
 */
attachments?: Array<Attachment>, } | { "ev": "member", room: string, user: string, action: MemberAction, 
/**
 * Who did it, when it was not `user` (moderation, invitations, roles).
 */
by?: string, reason?: string, 
/**
 * The new role (`role`).
 */
role?: Role, 
/**
 * End of a mute, unix seconds (`mute`).
 */
until?: number, } | { "ev": "room", room: string, name: string, topic: string, visibility: Visibility, by: string, 
/**
 * The room's own `retention_days`, when it has one.
 */
retention_days?: number, } | { "ev": "typing", room: string, user: string, } | { "ev": "read", room: string, user: string, seq: number, } | { "ev": "presence", user: string, online: boolean, } | { "ev": "bye", reason: ByeReason, } | { "ev": "contact", user: string, status: ContactStatus, } | { "ev": "edit", room: string, seq: number, text: string, edited_ts: number, by: string, pos: number, prev_pos: number, } | { "ev": "delete", room: string, seq: number, by: string, pos: number, prev_pos: number, } | { "ev": "react", room: string, seq: number, emoji: string, user: string, remove: boolean, pos: number, prev_pos: number, };
