/**
 * Wire types of the Confab client protocol v1 (design/PROTOCOL.md).
 *
 * Everything here mirrors the JSON on the wire field for field, so that a
 * frame can be typed without conversion. Optional fields the server may add
 * later are allowed by TypeScript's structural typing.
 */

/** Error codes a reply or an HTTP error body may carry. */
export type ErrorCode =
  | "bad_request"
  | "unauthorized"
  | "forbidden"
  | "not_member"
  | "not_found"
  | "taken"
  | "too_large"
  | "rate_limited"
  | "unavailable"
  | "internal";

export interface ErrorBody {
  code: ErrorCode | (string & {});
  message: string;
}

/** A stored message, as `history`, `sync` and `msg` events carry it. */
export interface Message {
  room: string;
  seq: number;
  msg_id: string;
  from: string;
  text: string;
  /** Unix milliseconds at acceptance. */
  ts: number;
  cid?: string | null;
}

export interface RoomSummary {
  room: string;
  last_seq: number;
  read_seq: number;
}

export interface SyncRoomResult {
  messages: Message[];
  more: boolean;
}

/** Request fields and reply fields of every op, by op name. */
export interface Ops {
  ping: { req: Record<string, never>; reply: Record<string, never> };
  join: { req: { room: string }; reply: { room: string; last_seq: number } };
  leave: { req: { room: string }; reply: Record<string, never> };
  rooms: { req: Record<string, never>; reply: { rooms: RoomSummary[] } };
  send: {
    req:
      | { room: string; text: string; cid: string }
      | { to: string; text: string; cid: string };
    reply: { room: string; seq: number; msg_id: string; ts: number };
  };
  history: {
    req: { room: string; before?: number; limit?: number };
    reply: { messages: Message[] };
  };
  sync: {
    req: { rooms: Record<string, number>; limit?: number };
    reply: { rooms: Record<string, SyncRoomResult> };
  };
  typing: { req: { room: string }; reply: Record<string, never> };
  read: { req: { room: string; seq: number }; reply: Record<string, never> };
  presence: { req: { room: string }; reply: { online: string[] } };
}

export type OpName = keyof Ops;
export type RequestOf<K extends OpName> = Ops[K]["req"];
export type ReplyOf<K extends OpName> = Ops[K]["reply"];

/** A client frame: the op's fields plus `op` and `id`. */
export type RequestFrame<K extends OpName = OpName> = { op: K; id: number | string } & RequestOf<K>;

export type ReplyFrame =
  | ({ re: number | string; ok: true } & Record<string, unknown>)
  | { re: number | string; ok: false; error: ErrorBody };

export interface HelloEvent {
  ev: "hello";
  user: string;
  session: string;
  server: string;
  heartbeat_ms: number;
}
export interface MsgEvent extends Message {
  ev: "msg";
  prev_seq: number;
}
export interface MemberEvent {
  ev: "member";
  room: string;
  user: string;
  action: "join" | "leave";
}
export interface TypingEvent {
  ev: "typing";
  room: string;
  user: string;
}
export interface ReadEvent {
  ev: "read";
  room: string;
  user: string;
  seq: number;
}
export interface PresenceEvent {
  ev: "presence";
  user: string;
  online: boolean;
}
export type ByeReason = "server_restart" | "token_expired" | "slow_consumer" | (string & {});
export interface ByeEvent {
  ev: "bye";
  reason: ByeReason;
}

export type ServerEvent =
  | HelloEvent
  | MsgEvent
  | MemberEvent
  | TypingEvent
  | ReadEvent
  | PresenceEvent
  | ByeEvent;

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
