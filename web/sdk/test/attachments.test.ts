import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type ClientOptions, ConfabClient, MAX_ATTACHMENTS } from "../src/client.ts";
import { ConfabError } from "../src/errors.ts";
import { resolveUrl, signUpload, upload } from "../src/http.ts";
import type { Attachment } from "../src/protocol.ts";
import { RoomState } from "../src/room.ts";
import { FakeClock, FakeServer, fakeToken, flush, message, msgEvent } from "./fakes.ts";

const ME = "alice";

interface Call {
  url: string;
  init: RequestInit | undefined;
}

/** A `fetch` answering each call with the next of `answers` (status, body), recording the calls. */
function scriptedFetch(...answers: [number, unknown][]) {
  const calls: Call[] = [];
  const fetch = async (url: string, init?: RequestInit) => {
    calls.push({ url, init });
    const [status, body] = answers.shift() ?? [500, "no answer scripted"];
    return new Response(typeof body === "string" ? body : JSON.stringify(body), { status });
  };
  return { calls, fetch };
}

const cat: Attachment = {
  id: "u1",
  url: "/v1/uploads/u1",
  name: "cat.png",
  content_type: "image/png",
  size: 3,
  width: 2,
  height: 1,
  thumbnail_url: "/v1/uploads/u1/thumbnail",
};

const notes: Attachment = { id: "u2", url: "/v1/uploads/u2", name: "notes.txt", content_type: "text/plain", size: 5 };

function headerOf(init: RequestInit | undefined, name: string): string | undefined {
  return (init?.headers as Record<string, string> | undefined)?.[name];
}

describe("upload", () => {
  it("POSTs the bytes with the token, room and file name, reporting progress", async () => {
    const { calls, fetch } = scriptedFetch([201, cat]);
    const progress: [number, number][] = [];
    const bytes = new Uint8Array([1, 2, 3]);
    const result = await upload({ baseUrl: "http://h/", fetch, token: "tok" }, "dm:alice:bob", bytes, {
      filename: "cat & dog.png",
      onProgress: (loaded, total) => progress.push([loaded, total]),
    });
    assert.deepEqual(result, cat);
    assert.equal(calls.length, 1);
    const url = new URL(calls[0]!.url);
    assert.equal(url.origin + url.pathname, "http://h/v1/uploads");
    assert.equal(url.searchParams.get("room"), "dm:alice:bob");
    assert.equal(url.searchParams.get("filename"), "cat & dog.png");
    assert.equal(calls[0]!.init?.method, "POST");
    assert.equal(headerOf(calls[0]!.init, "Authorization"), "Bearer tok");
    const sent = new Uint8Array(await new Response(calls[0]!.init!.body as BodyInit).arrayBuffer());
    assert.deepEqual([...sent], [1, 2, 3]);
    assert.deepEqual(progress, [
      [0, 3],
      [3, 3],
    ]);
  });

  it("takes a File's name unless told one, and leaves it out for bare bytes", async () => {
    const { calls, fetch } = scriptedFetch([201, notes], [201, notes]);
    await upload({ baseUrl: "http://h", fetch, token: "t" }, "r", new File(["hello"], "notes.txt"));
    assert.equal(new URL(calls[0]!.url).searchParams.get("filename"), "notes.txt");
    await upload({ baseUrl: "http://h", fetch, token: "t" }, "r", new ArrayBuffer(5));
    assert.equal(new URL(calls[1]!.url).searchParams.has("filename"), false);
  });

  it("reports the server's refusals by code and status: 413, 415, 403", async () => {
    const { fetch } = scriptedFetch(
      [413, { error: { code: "too_large", message: "uploads are limited to 10 bytes" } }],
      [415, { error: { code: "bad_request", message: "type application/octet-stream is not allowed" } }],
      [403, { error: { code: "not_member", message: "not a member of r" } }],
      [413, "<html>proxy says no</html>"],
    );
    const opts = { baseUrl: "http://h", fetch, token: "t" };
    const body = new Uint8Array(20);
    await assert.rejects(upload(opts, "r", body), { code: "too_large", status: 413, message: "uploads are limited to 10 bytes" });
    await assert.rejects(upload(opts, "r", body), { code: "bad_request", status: 415 });
    await assert.rejects(upload(opts, "r", body), { code: "not_member", status: 403 });
    await assert.rejects(upload(opts, "r", body), { code: "too_large", status: 413 }, "a bare 413 is too_large too");
  });

  it("fails with aborted when its signal fires", async () => {
    const controller = new AbortController();
    const fetch = (_url: string, init?: RequestInit) =>
      new Promise<Response>((_resolve, reject) => {
        init?.signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
      });
    const pending = upload({ baseUrl: "http://h", fetch, token: "t" }, "r", new Uint8Array(1), { signal: controller.signal });
    controller.abort();
    await assert.rejects(pending, { code: "aborted" });
    await assert.rejects(
      upload({ baseUrl: "http://h", fetch, token: "t" }, "r", new Uint8Array(1), { signal: controller.signal }),
      { code: "aborted" },
    );
  });

  it("signs an upload with the token; relative URLs resolve against the base", async () => {
    const { calls, fetch } = scriptedFetch([200, { url: "/v1/uploads/u1?sig=a", expires_at: 9 }]);
    assert.deepEqual(await signUpload({ baseUrl: "http://h", fetch, token: "tok" }, "u1"), {
      url: "/v1/uploads/u1?sig=a",
      expires_at: 9,
    });
    assert.equal(calls[0]!.url, "http://h/v1/uploads/u1/sign");
    assert.equal(calls[0]!.init?.method, "POST");
    assert.equal(headerOf(calls[0]!.init, "Authorization"), "Bearer tok");
    assert.equal(resolveUrl("https://chat.example/", "/v1/uploads/u1?x=1"), "https://chat.example/v1/uploads/u1?x=1");
    assert.equal(resolveUrl("https://chat.example", "https://cdn.example/a"), "https://cdn.example/a");
    assert.equal(resolveUrl("https://chat.example", "javascript:alert(1)"), "https://chat.example/javascript:alert(1)");
    assert.equal(resolveUrl("https://chat.example", "//evil.example/x"), "https://chat.example/evil.example/x");
  });
});

describe("a room's messages and attachments", () => {
  it("keeps a message's attachments, and drops them when it is deleted", () => {
    const room = new RoomState("r", { floor: 0, onServer: true });
    room.insert([{ ...message("r", 1, "bob", ""), attachments: [cat] }, message("r", 2, "bob")]);
    assert.deepEqual(room.message(1)!.attachments, [cat]);
    assert.equal("attachments" in room.message(2)!, false);
    assert.equal(room.applyChange({ ev: "delete", room: "r", seq: 1, by: "bob", pos: 3, prev_pos: 2 }), "applied");
    assert.equal(room.message(1)!.attachments, undefined);
    assert.equal(room.message(1)!.deleted, true);
  });
});

describe("the client and attachments", () => {
  async function connected(options: Partial<ClientOptions> = {}) {
    const clock = new FakeClock();
    const server = new FakeServer();
    let n = 0;
    const client = new ConfabClient({
      baseUrl: "http://test",
      token: fakeToken(ME, 4_000_000_000),
      user: ME,
      socket: server.factory,
      clock,
      random: () => 0.5,
      heartbeat: false,
      checkToken: async () => undefined,
      newCid: () => `cid${++n}`,
      ...options,
    });
    client.connect();
    const socket = server.current;
    await socket.accept(ME);
    await socket.answer("rooms", { rooms: [{ room: "r", last_seq: 0, read_seq: 0 }] });
    if (socket.unanswered("sync").length > 0) await socket.answer("sync", { rooms: { r: { messages: [], more: false } } });
    return { clock, server, client };
  }

  it("sends attachment ids, with no text, and keeps the attachments on the local echo", async () => {
    const { client, server } = await connected();
    const sent = client.send("r", "", { attachments: [cat, notes] });
    await flush();
    const frame = server.current.take("send");
    assert.deepEqual(frame.attachments, ["u1", "u2"]);
    assert.equal(frame.text, "");
    const out = client.room("r")!.outgoing[0]!;
    assert.deepEqual(
      out.attachments?.map((a) => a.name),
      ["cat.png", "notes.txt"],
    );
    await server.current.reply(frame, { room: "r", seq: 1, msg_id: "m1", ts: 5 });
    await sent;
    server.current.deliver(msgEvent({ ...message("r", 1, ME, "", "cid1"), attachments: [cat, notes] }, 0));
    await flush();
    assert.deepEqual(client.room("r")!.messages[0]!.attachments, [cat, notes]);
    assert.equal(client.room("r")!.outgoing.length, 0);
  });

  it("sends the same attachments again with the same cid after a timeout", async () => {
    const { client, server, clock } = await connected({ sendTimeoutMs: 1_000 });
    void client.send("r", "look", { attachments: [cat] });
    await flush();
    const first = server.current.take("send");
    await clock.advance(1_000);
    await clock.advance(1_000);
    const again = server.current.take("send");
    assert.equal(again.cid, first.cid);
    assert.deepEqual(again.attachments, ["u1"]);
  });

  it("refuses an empty message without attachments and more than the limit, before sending", async () => {
    const { client, server } = await connected();
    await assert.rejects(client.send("r", ""), { code: "bad_request" });
    const many = Array.from({ length: MAX_ATTACHMENTS + 1 }, (_, i) => ({ ...notes, id: `u${i}` }));
    await assert.rejects(client.send("r", "x", { attachments: many }), { code: "bad_request" });
    await flush();
    assert.equal(server.current.unanswered("send").length, 0);
  });

  it("uploads with its token to a DM's canonical room id", async () => {
    const { calls, fetch } = scriptedFetch([201, cat]);
    const { client } = await connected({ fetch });
    assert.deepEqual(await client.upload("dm:bob:alice", new Uint8Array([1])), cat);
    assert.equal(new URL(calls[0]!.url).searchParams.get("room"), "dm:alice:bob");
    assert.match(headerOf(calls[0]!.init, "Authorization") ?? "", /^Bearer ey/);
  });

  it("signs attachment URLs once, shares the request, and signs again near expiry", async () => {
    const exp = (s: number) => ({
      url: `/v1/uploads/u1?exp=${s}`,
      thumbnail_url: `/v1/uploads/u1/thumbnail?exp=${s}`,
      expires_at: s,
    });
    const { clock, calls, fetch } = (() => {
      const f = scriptedFetch([200, exp(5_000)], [200, exp(9_000)]);
      return { ...f, clock: new FakeClock() };
    })();
    const { client } = await connected({ fetch, clock });
    const [a, b] = await Promise.all([client.attachmentUrls(cat), client.attachmentUrls(cat)]);
    assert.equal(calls.length, 1, "one request for both");
    assert.deepEqual(a, {
      url: "http://test/v1/uploads/u1?exp=5000",
      thumbnailUrl: "http://test/v1/uploads/u1/thumbnail?exp=5000",
      expiresAt: 5_000,
    });
    assert.deepEqual(b, a);
    // The fake clock starts at 1,000 s.
    await clock.advance(3_000_000);
    assert.equal((await client.attachmentUrls(cat)).expiresAt, 5_000, "still good for 1,000 s");
    await clock.advance(900_000);
    assert.equal((await client.attachmentUrls(cat)).expiresAt, 9_000, "signed again 100 s before expiry");
    assert.equal(calls.length, 2);
  });

  it("forgets a failed signature so the next call asks again", async () => {
    const { calls, fetch } = scriptedFetch([403, { error: { code: "not_member", message: "no" } }], [200, { url: "/x", expires_at: 99_999 }]);
    const { client } = await connected({ fetch });
    await assert.rejects(client.attachmentUrls(cat), (err: unknown) => err instanceof ConfabError && err.code === "not_member");
    assert.equal((await client.attachmentUrls(cat)).url, "http://test/x");
    assert.equal(calls.length, 2);
  });
});
