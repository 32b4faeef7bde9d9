/**
 * Wire types of the Confab client protocol v1 (docs/protocol.md).
 *
 * The frames themselves are generated from the server's Rust types into
 * `protocol.gen.ts` (`cargo test -p confab-protocol` fails when that file is
 * stale). This file only names the parts the SDK works with, picked from the
 * generated types, so SDK code that reads or sends a field the server does not
 * know fails to type-check.
 */
import type {
  ErrorCode,
  Op,
  ProtocolError,
  Reply,
  ReplyBody,
  RequestId,
  RoomInfo,
  ServerEvent,
  SyncRoom,
} from "./protocol.gen.js";

export type * from "./protocol.gen.js";

/** An error as a reply or an HTTP error body carries it; codes added later are strings too. */
export type ErrorBody = Omit<ProtocolError, "code"> & { code: ErrorCode | (string & {}) };

/** One entry of the `rooms` reply. */
export type RoomSummary = RoomInfo;
/** One room of a `sync` reply. */
export type SyncRoomResult = SyncRoom;

export type OpName = Op["op"];

/** The fields of an `op` request as the server decodes them, without `op` and `id`. */
type OpFields<K extends OpName> = Omit<Extract<Op, { op: K }>, "op">;

/** `send` names exactly one of `room` and `to`, which the server checks and the Rust type cannot say. */
type SendFields = OpFields<"send">;
type SendRequest =
  | (Omit<SendFields, "room" | "to"> & Required<Pick<SendFields, "room">> & { to?: never })
  | (Omit<SendFields, "room" | "to"> & Required<Pick<SendFields, "to">> & { room?: never });

/** The variant of the generated `ReplyBody` that has these fields (the keys tell them apart). */
type ReplyWith<Fields> = Extract<ReplyBody, Fields>;
/** The reply of ops that answer with `ok` alone. */
type EmptyReply = Record<string, never>;

/** Request fields and reply fields of every op, by op name. */
export interface Ops {
  ping: { req: OpFields<"ping">; reply: EmptyReply };
  join: { req: OpFields<"join">; reply: ReplyWith<{ last_seq: unknown }> };
  leave: { req: OpFields<"leave">; reply: EmptyReply };
  rooms: { req: OpFields<"rooms">; reply: ReplyWith<{ rooms: readonly { last_seq: number }[] }> };
  send: { req: SendRequest; reply: ReplyWith<{ msg_id: unknown }> };
  history: { req: OpFields<"history">; reply: ReplyWith<{ messages: unknown }> };
  sync: { req: OpFields<"sync">; reply: ReplyWith<{ rooms: Record<string, SyncRoom> }> };
  typing: { req: OpFields<"typing">; reply: EmptyReply };
  read: { req: OpFields<"read">; reply: EmptyReply };
  presence: { req: OpFields<"presence">; reply: ReplyWith<{ online: unknown }> };
  create: { req: OpFields<"create">; reply: ReplyWith<{ last_seq: unknown }> };
  invite: { req: OpFields<"invite">; reply: EmptyReply };
  kick: { req: OpFields<"kick">; reply: EmptyReply };
  ban: { req: OpFields<"ban">; reply: EmptyReply };
  unban: { req: OpFields<"unban">; reply: EmptyReply };
  mute: { req: OpFields<"mute">; reply: EmptyReply };
  unmute: { req: OpFields<"unmute">; reply: EmptyReply };
  set_role: { req: OpFields<"set_role">; reply: EmptyReply };
  update_room: { req: OpFields<"update_room">; reply: EmptyReply };
  room_info: { req: OpFields<"room_info">; reply: ReplyWith<{ visibility: unknown }> };
  members: { req: OpFields<"members">; reply: ReplyWith<{ members: readonly unknown[] }> };
  directory: { req: OpFields<"directory">; reply: ReplyWith<{ rooms: readonly { members: number }[] }> };
  profile: { req: OpFields<"profile">; reply: ReplyWith<{ display_name: unknown }> };
  users: { req: OpFields<"users">; reply: ReplyWith<{ users: unknown }> };
  contact_add: { req: OpFields<"contact_add">; reply: ReplyWith<{ status: unknown }> };
  contact_remove: { req: OpFields<"contact_remove">; reply: EmptyReply };
  contacts: { req: OpFields<"contacts">; reply: ReplyWith<{ contacts: unknown }> };
  block: { req: OpFields<"block">; reply: EmptyReply };
  unblock: { req: OpFields<"unblock">; reply: EmptyReply };
  blocks: { req: OpFields<"blocks">; reply: ReplyWith<{ blocked: unknown }> };
  notify: { req: OpFields<"notify">; reply: EmptyReply };
  edit: { req: OpFields<"edit">; reply: ReplyWith<{ room: string; seq: number }> };
  edits: { req: OpFields<"edits">; reply: ReplyWith<{ versions: unknown }> };
  delete: { req: OpFields<"delete">; reply: ReplyWith<{ room: string; seq: number }> };
  react: { req: OpFields<"react">; reply: ReplyWith<{ room: string; seq: number }> };
}

export type RequestOf<K extends OpName> = Ops[K]["req"];
export type ReplyOf<K extends OpName> = Ops[K]["reply"];

/** A client frame: the op's fields plus `op` and `id`. */
export type RequestFrame<K extends OpName = OpName> = { op: K; id: RequestId } & RequestOf<K>;

/** A reply, told apart by `ok`: a failure always carries `error`. */
export type ReplyFrame = (Reply & { ok: true }) | (Reply & { ok: false; error: ErrorBody });

type EventOf<K extends ServerEvent["ev"]> = Extract<ServerEvent, { ev: K }>;
export type HelloEvent = EventOf<"hello">;
export type MsgEvent = EventOf<"msg">;
export type MemberEvent = EventOf<"member">;
export type TypingEvent = EventOf<"typing">;
export type ReadEvent = EventOf<"read">;
export type PresenceEvent = EventOf<"presence">;
export type ByeEvent = EventOf<"bye">;
export type RoomEvent = EventOf<"room">;
export type ContactEvent = EventOf<"contact">;
export type EditEvent = EventOf<"edit">;
export type DeleteEvent = EventOf<"delete">;
export type ReactEvent = EventOf<"react">;
/** A change to a message already sent (docs/protocol.md, "Messages that live"). */
export type ChangeEvent = EditEvent | DeleteEvent | ReactEvent;

/** Results of `POST /v1/auth/*`. */
export interface RegisterResult {
  user: string;
}
export interface LoginResult {
  token: string;
  user: string;
  /** Unix seconds. */
  expires_at: number;
}

export const USERNAME_RE = /^[a-z0-9][a-z0-9_.-]{0,31}$/;
export const ROOM_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
export const CID_RE = /^[A-Za-z0-9_-]{1,64}$/;

/** The direct-message room of two users: `dm:<a>:<b>`, names sorted. */
export function dmRoomId(a: string, b: string): string {
  return a < b ? `dm:${a}:${b}` : `dm:${b}:${a}`;
}

export function isDmRoom(room: string): boolean {
  return room.startsWith("dm:");
}

/** The other participant of a DM room, seen from `me`. */
export function dmPeer(room: string, me: string): string | undefined {
  if (!isDmRoom(room)) return undefined;
  const [, a, b] = room.split(":");
  if (a === undefined || b === undefined) return undefined;
  return a === me ? b : a;
}
