import { ConfabError } from "./errors.js";
import type { Attachment, ErrorBody, LoginResult, Message, RegisterResult } from "./protocol.js";

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export interface HttpOptions {
  /** Base URL of a gateway, e.g. `https://chat.example.com`. */
  baseUrl: string;
  fetch?: FetchLike;
}

function url(baseUrl: string, path: string): string {
  return baseUrl.replace(/\/+$/, "") + path;
}

async function call<T>(options: HttpOptions, path: string, init: RequestInit): Promise<T> {
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  let response: Response;
  try {
    response = await doFetch(url(options.baseUrl, path), init);
  } catch (err) {
    throw new ConfabError("unavailable", `cannot reach the server: ${String(err)}`);
  }
  return decode<T>(response.status, await response.text());
}

/** An HTTP answer's JSON body, or the `ConfabError` its error body (or status) stands for. */
function decode<T>(status: number, text: string): T {
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : {};
  } catch {
    body = undefined;
  }
  if (status < 200 || status > 299) {
    const error = (body as { error?: ErrorBody } | undefined)?.error;
    throw new ConfabError(error?.code ?? codeOfStatus(status), error?.message ?? `HTTP ${status}`, status);
  }
  if (body === undefined) {
    throw new ConfabError("internal", "the server sent a body that is not JSON", status);
  }
  return body as T;
}

/** The error code of a bare HTTP status (a proxy's answer without Confab's error body). */
function codeOfStatus(status: number): string {
  switch (status) {
    case 400:
    case 415:
      return "bad_request";
    case 401:
      return "unauthorized";
    case 403:
      return "forbidden";
    case 404:
      return "not_found";
    case 413:
      return "too_large";
    case 429:
      return "rate_limited";
    case 502:
    case 503:
    case 504:
      return "unavailable";
    default:
      return "internal";
  }
}

function postJson<T>(options: HttpOptions, path: string, body: unknown): Promise<T> {
  return call<T>(options, path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

/** `POST /v1/auth/register`. Fails with `bad_request`, `taken`, or `forbidden` when the server has registration closed. */
export function register(
  options: HttpOptions,
  username: string,
  password: string,
): Promise<RegisterResult> {
  return postJson(options, "/v1/auth/register", { username, password });
}

/** `POST /v1/auth/login`. Fails with `unauthorized`. */
export function login(options: HttpOptions, username: string, password: string): Promise<LoginResult> {
  return postJson(options, "/v1/auth/login", { username, password });
}

/** `POST /v1/auth/logout-all`: revokes every token of the user; their sessions end everywhere. */
export async function logoutAll(options: HttpOptions & { token: string }): Promise<void> {
  await call(options, "/v1/auth/logout-all", {
    method: "POST",
    headers: { Authorization: `Bearer ${options.token}`, "Content-Type": "application/json" },
    body: "{}",
  });
}

/** `DELETE /v1/account`: erases the account for good. Fails with `unauthorized` on a wrong password. */
export async function deleteAccount(options: HttpOptions & { token: string }, password: string): Promise<void> {
  await call(options, "/v1/account", {
    method: "DELETE",
    headers: { Authorization: `Bearer ${options.token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ password }),
  });
}

/** `GET /v1/rooms/{room}/messages`: the same page as the `history` op. */
export async function fetchMessages(
  options: HttpOptions & { token: string },
  room: string,
  query: { before?: number; limit?: number } = {},
): Promise<Message[]> {
  const params = new URLSearchParams();
  if (query.before !== undefined) params.set("before", String(query.before));
  if (query.limit !== undefined) params.set("limit", String(query.limit));
  const qs = params.toString();
  const result = await call<{ messages: Message[] }>(
    options,
    `/v1/rooms/${encodeURIComponent(room)}/messages${qs ? `?${qs}` : ""}`,
    { headers: { Authorization: `Bearer ${options.token}` } },
  );
  return result.messages;
}

/** What an upload's body may be: a browser `File`/`Blob`, or bytes. */
export type UploadBody = Blob | ArrayBuffer | Uint8Array;

export interface UploadOptions {
  /** The name shown to others; default the `File`'s name, else the server's `file`. */
  filename?: string;
  /**
   * Called as the bytes go out: `loaded` of `total` bytes sent. In a browser
   * (XMLHttpRequest) it follows the upload; with `fetch` (Node, or a custom
   * `fetch`) it is called at the start and once everything was sent.
   */
  onProgress?: (loaded: number, total: number) => void;
  /** Aborts the upload; it then rejects with `aborted`. */
  signal?: AbortSignal;
}

/** Signed URLs for an upload (`POST /v1/uploads/{id}/sign`), relative to the server's origin. */
export interface SignedUrls {
  url: string;
  thumbnail_url?: string;
  /** Unix seconds. */
  expires_at: number;
}

function bodySize(body: UploadBody): number {
  return body instanceof Uint8Array || body instanceof ArrayBuffer ? body.byteLength : body.size;
}

/**
 * `POST /v1/uploads?room=ROOM[&filename=NAME]`: uploads a file to attach to a
 * message in `room` (send its id with `send`'s `attachments`). Resolves with
 * the attachment object. Fails with `too_large` (413), `bad_request` (415: a
 * type the server does not take, status 415), `not_member` (403),
 * `unauthorized`, `unavailable`, or `aborted`.
 */
export function upload(
  options: HttpOptions & { token: string },
  room: string,
  body: UploadBody,
  uploadOptions: UploadOptions = {},
): Promise<Attachment> {
  const params = new URLSearchParams({ room });
  const named = (body as { name?: unknown }).name;
  const filename = uploadOptions.filename ?? (typeof named === "string" ? named : undefined);
  if (filename) params.set("filename", filename);
  const path = `/v1/uploads?${params.toString()}`;
  const total = bodySize(body);
  const { onProgress, signal } = uploadOptions;
  if (signal?.aborted) return Promise.reject(new ConfabError("aborted", "upload aborted"));
  if (options.fetch === undefined && typeof XMLHttpRequest === "function") {
    return xhrUpload(url(options.baseUrl, path), options.token, body, total, uploadOptions);
  }
  onProgress?.(0, total);
  const data: BodyInit = body instanceof Uint8Array ? new Blob([body as Uint8Array<ArrayBuffer>]) : body;
  return call<Attachment>(options, path, {
    method: "POST",
    headers: { Authorization: `Bearer ${options.token}`, "Content-Type": "application/octet-stream" },
    body: data,
    ...(signal ? { signal } : {}),
  }).then(
    (attachment) => {
      onProgress?.(total, total);
      return attachment;
    },
    (err: unknown) => {
      if (signal?.aborted) throw new ConfabError("aborted", "upload aborted");
      throw err;
    },
  );
}

/** The browser path of `upload`: XMLHttpRequest reports the upload's progress. */
function xhrUpload(target: string, token: string, body: UploadBody, total: number, options: UploadOptions): Promise<Attachment> {
  return new Promise<Attachment>((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", target);
    xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = (e) => options.onProgress?.(e.loaded, e.lengthComputable ? e.total : total);
    xhr.onload = () => {
      try {
        const attachment = decode<Attachment>(xhr.status, xhr.responseText);
        options.onProgress?.(total, total);
        resolve(attachment);
      } catch (err) {
        reject(err as ConfabError);
      }
    };
    xhr.onerror = () => reject(new ConfabError("unavailable", "the upload could not reach the server"));
    xhr.onabort = () => reject(new ConfabError("aborted", "upload aborted"));
    options.signal?.addEventListener("abort", () => xhr.abort(), { once: true });
    options.onProgress?.(0, total);
    xhr.send(body instanceof Uint8Array ? new Blob([body as Uint8Array<ArrayBuffer>]) : body);
  });
}

/** `POST /v1/uploads/{id}/sign`: short-lived URLs that work without a token (for `<img src>` and links). */
export function signUpload(options: HttpOptions & { token: string }, id: string): Promise<SignedUrls> {
  return call<SignedUrls>(options, `/v1/uploads/${encodeURIComponent(id)}/sign`, {
    method: "POST",
    headers: { Authorization: `Bearer ${options.token}`, "Content-Type": "application/json" },
    body: "{}",
  });
}

/**
 * An absolute URL for a path the server answered (upload and signed URLs are
 * relative). Only an `http(s):` URL is taken as it is: anything else (a
 * `javascript:` URL, say) is made a path under the server.
 */
export function resolveUrl(baseUrl: string, path: string): string {
  if (/^https?:\/\//i.test(path)) return path;
  return url(baseUrl, `/${path.replace(/^\/+/, "")}`);
}

/** The WebSocket URL of a gateway for a token: `ws(s)://host/v1/ws?token=...`. */
export function websocketUrl(baseUrl: string, token: string): string {
  const base = baseUrl.replace(/\/+$/, "").replace(/^http(s?):\/\//, "ws$1://");
  return `${base}/v1/ws?token=${encodeURIComponent(token)}`;
}

/**
 * The `exp` claim of a JWT in unix seconds, or undefined when the token cannot
 * be read. The client only reads it to tell "expired" from "server down"
 * (a browser never sees the 401 of a refused WebSocket upgrade).
 */
export function tokenExpiry(token: string): number | undefined {
  const payload = token.split(".")[1];
  if (!payload) return undefined;
  try {
    const b64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const json = JSON.parse(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4))) as { exp?: unknown };
    return typeof json.exp === "number" ? json.exp : undefined;
  } catch {
    return undefined;
  }
}
