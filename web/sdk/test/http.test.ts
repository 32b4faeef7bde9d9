import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfabError } from "../src/errors.ts";
import { fetchMessages, login, register, tokenExpiry, websocketUrl } from "../src/http.ts";
import { dmPeer, dmRoomId } from "../src/protocol.ts";
import { fakeToken } from "./fakes.ts";

interface Call {
  url: string;
  init: RequestInit | undefined;
}

function fakeFetch(status: number, body: unknown) {
  const calls: Call[] = [];
  const fetch = async (url: string, init?: RequestInit) => {
    calls.push({ url, init });
    return new Response(typeof body === "string" ? body : JSON.stringify(body), { status });
  };
  return { calls, fetch };
}

describe("HTTP helpers", () => {
  it("registers with a JSON body", async () => {
    const { calls, fetch } = fakeFetch(201, { user: "alice" });
    assert.deepEqual(await register({ baseUrl: "http://h:1/", fetch }, "alice", "secret-pw"), { user: "alice" });
    assert.equal(calls[0]!.url, "http://h:1/v1/auth/register");
    assert.equal(calls[0]!.init?.method, "POST");
    assert.deepEqual(new Headers(calls[0]!.init?.headers).get("content-type"), "application/json");
    assert.deepEqual(JSON.parse(String(calls[0]!.init?.body)), { username: "alice", password: "secret-pw" });
  });

  it("logs in and returns the token", async () => {
    const { fetch } = fakeFetch(200, { token: "t", user: "alice", expires_at: 99 });
    assert.deepEqual(await login({ baseUrl: "http://h", fetch }, "alice", "pw"), { token: "t", user: "alice", expires_at: 99 });
  });

  it("turns an error body into a ConfabError with code and status", async () => {
    const { fetch } = fakeFetch(409, { error: { code: "taken", message: "user name taken" } });
    const err = await register({ baseUrl: "http://h", fetch }, "alice", "password1").catch((e: unknown) => e);
    assert.ok(err instanceof ConfabError);
    assert.equal(err.code, "taken");
    assert.equal(err.status, 409);
    assert.equal(err.message, "user name taken");
  });

  it("copes with an error that has no JSON body", async () => {
    const { fetch } = fakeFetch(401, "nope");
    await assert.rejects(login({ baseUrl: "http://h", fetch }, "a", "b"), { code: "unauthorized", status: 401 });
  });

  it("reports a network failure as unavailable", async () => {
    const fetch = async () => {
      throw new TypeError("fetch failed");
    };
    await assert.rejects(login({ baseUrl: "http://h", fetch }, "a", "b"), { code: "unavailable" });
  });

  it("fetches a history page with the bearer token", async () => {
    const { calls, fetch } = fakeFetch(200, { messages: [] });
    await fetchMessages({ baseUrl: "http://h", fetch, token: "tok" }, "dm:a:b", { before: 10, limit: 5 });
    assert.equal(calls[0]!.url, "http://h/v1/rooms/dm%3Aa%3Ab/messages?before=10&limit=5");
    assert.equal(new Headers(calls[0]!.init?.headers).get("authorization"), "Bearer tok");
  });

  it("derives the WebSocket URL", () => {
    assert.equal(websocketUrl("http://127.0.0.1:8080", "a+b"), "ws://127.0.0.1:8080/v1/ws?token=a%2Bb");
    assert.equal(websocketUrl("https://x.org/", "t"), "wss://x.org/v1/ws?token=t");
  });

  it("reads a token's expiry, and nothing from garbage", () => {
    assert.equal(tokenExpiry(fakeToken("alice", 1234)), 1234);
    assert.equal(tokenExpiry("garbage"), undefined);
    assert.equal(tokenExpiry("a.!!!.c"), undefined);
  });
});

describe("DM room ids", () => {
  it("sorts the two names and finds the peer", () => {
    assert.equal(dmRoomId("bob", "alice"), "dm:alice:bob");
    assert.equal(dmRoomId("alice", "bob"), "dm:alice:bob");
    assert.equal(dmPeer("dm:alice:bob", "alice"), "bob");
    assert.equal(dmPeer("dm:alice:bob", "bob"), "alice");
    assert.equal(dmPeer("general", "alice"), undefined);
  });
});
