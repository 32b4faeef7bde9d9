import { ConfabError } from "./errors.js";
import type { ErrorBody, LoginResult, Message, RegisterResult } from "./protocol.js";

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
  const text = await response.text();
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : {};
  } catch {
    body = undefined;
  }
  if (!response.ok) {
    const error = (body as { error?: ErrorBody } | undefined)?.error;
    throw new ConfabError(
      error?.code ?? (response.status === 401 ? "unauthorized" : "internal"),
      error?.message ?? `HTTP ${response.status}`,
      response.status,
    );
  }
  if (body === undefined) {
    throw new ConfabError("internal", "the server sent a body that is not JSON", response.status);
  }
  return body as T;
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
