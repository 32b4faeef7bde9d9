/**
 * The Confab TypeScript SDK: HTTP helpers for accounts (`register`, `login`),
 * a reconnecting `Connection` with typed requests, and `ConfabClient`, which
 * keeps per-room state (ordered messages, read markers, unread counts, typing,
 * presence) right across reconnects, resending unacked messages by `cid` and
 * repairing gaps with `sync`.
 */
export * from "./protocol.js";
export { ConfabError, isPermanent } from "./errors.js";
export { Backoff, type BackoffOptions } from "./backoff.js";
export { type Clock, systemClock } from "./clock.js";
export { Emitter } from "./emitter.js";
export {
  Connection,
  type ConnectionEvents,
  type ConnectionOptions,
  type ConnectionStatus,
  type RequestOptions,
  type WebSocketFactory,
  type WebSocketLike,
} from "./connection.js";
export {
  type AttachmentUrls,
  ConfabClient,
  type ClientEvents,
  type ClientOptions,
  MAX_ATTACHMENTS,
  type SendResult,
} from "./client.js";
export { mentions, type OutgoingMessage, RoomState, type ServerCounts } from "./room.js";
export {
  deleteAccount,
  fetchMessages,
  type FetchLike,
  type HttpOptions,
  login,
  logoutAll,
  register,
  resolveUrl,
  type SignedUrls,
  signUpload,
  tokenExpiry,
  upload,
  type UploadBody,
  type UploadOptions,
  websocketUrl,
} from "./http.js";
