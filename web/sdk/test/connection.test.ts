import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Connection, type ConnectionOptions, type ConnectionStatus } from "../src/connection.ts";
import { ConfabError } from "../src/errors.ts";
import { FakeClock, FakeServer, flush } from "./fakes.ts";

function setup(options: Partial<ConnectionOptions> = {}) {
  const clock = new FakeClock();
  const server = new FakeServer();
  const conn = new Connection({
    url: "ws://test/v1/ws?token=t",
    socket: server.factory,
    clock,
    random: () => 0.5,
    heartbeat: false,
    ...options,
  });
  const statuses: ConnectionStatus[] = [];
  conn.on("status", (s) => statuses.push(s));
  return { clock, server, conn, statuses };
}

async function caught(p: Promise<unknown>): Promise<ConfabError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof ConfabError, `expected a ConfabError, got ${String(err)}`);
    return err;
  }
  assert.fail("expected a rejection");
}

describe("Connection requests", () => {
  it("matches replies to requests by id, whatever their order", async () => {
    const { server, conn } = setup();
    conn.start();
    await server.current.accept();
    const join = conn.request("join", { room: "general" });
    const history = conn.request("history", { room: "general", limit: 2 });
    await flush();
    const [joinFrame, historyFrame] = server.current.sent;
    assert.deepEqual(joinFrame, { op: "join", id: joinFrame!.id, room: "general" });
    assert.equal(historyFrame!.op, "history");
    assert.notEqual(joinFrame!.id, historyFrame!.id);

    await server.current.reply(historyFrame!, { messages: [] });
    await server.current.reply(joinFrame!, { room: "general", last_seq: 4 });
    assert.deepEqual(await join, { room: "general", last_seq: 4 });
    assert.deepEqual(await history, { messages: [] });
  });

  it("accepts a reply whose re is the id as a string", async () => {
    const { server, conn } = setup();
    conn.start();
    await server.current.accept();
    const ping = conn.request("ping", {});
    await flush();
    const frame = server.current.take("ping");
    server.current.deliver({ re: String(frame.id), ok: true });
    assert.deepEqual(await ping, {});
  });

  it("rejects with the server's error code", async () => {
    const { server, conn } = setup();
    conn.start();
    await server.current.accept();
    const outcome = caught(conn.request("send", { room: "x", text: "hi", cid: "c1" }));
    await flush();
    await server.current.replyError(server.current.take("send"), "not_member", "join room 'x' first");
    const err = await outcome;
    assert.equal(err.code, "not_member");
    assert.equal(err.message, "join room 'x' first");
  });

  it("times out a request without reply and ignores the late reply", async () => {
    const { clock, server, conn } = setup({ requestTimeoutMs: 1_000 });
    conn.start();
    await server.current.accept();
    const ping = conn.request("ping", {});
    const outcome = caught(ping);
    await clock.advance(999);
    const frame = server.current.take("ping");
    await clock.advance(1);
    assert.equal((await outcome).code, "timeout");
    await server.current.reply(frame); // must not throw or resolve anything
    assert.equal(conn.status, "open");
  });

  it("queues requests made before hello and sends them after it", async () => {
    const { server, conn } = setup();
    conn.start();
    const rooms = conn.request("rooms", {});
    await flush();
    assert.equal(server.current.sent.length, 0);
    await server.current.accept();
    await server.current.answer("rooms", { rooms: [{ room: "a", last_seq: 1, read_seq: 0 }] });
    assert.deepEqual(await rooms, { rooms: [{ room: "a", last_seq: 1, read_seq: 0 }] });
  });

  it("retries a rate-limited request later under a new id", async () => {
    const { clock, server, conn } = setup();
    conn.start();
    await server.current.accept();
    const read = conn.request("read", { room: "a", seq: 3 });
    await flush();
    const first = server.current.take("read");
    await server.current.replyError(first, "rate_limited");
    assert.equal(server.current.unanswered("read").length, 0, "not retried at once");
    await clock.advance(250);
    const second = server.current.take("read");
    assert.notEqual(second.id, first.id);
    assert.deepEqual({ ...second, id: 0 }, { ...first, id: 0 });
    await server.current.reply(second);
    assert.deepEqual(await read, {});
  });

  it("gives up on rate_limited after the configured retries", async () => {
    const { clock, server, conn } = setup({ rateLimitRetries: 1, requestTimeoutMs: 60_000 });
    conn.start();
    await server.current.accept();
    const outcome = caught(conn.request("ping", {}));
    await flush();
    await server.current.replyError(server.current.take("ping"), "rate_limited");
    await clock.advance(1_000);
    await server.current.replyError(server.current.take("ping"), "rate_limited");
    assert.equal((await outcome).code, "rate_limited");
  });

  it("fails requests in flight when the connection is lost", async () => {
    const { server, conn } = setup();
    conn.start();
    await server.current.accept();
    const outcome = caught(conn.request("join", { room: "a" }));
    await flush();
    await server.current.drop();
    assert.equal((await outcome).code, "unavailable");
  });

  it("ignores frames that are not JSON objects", async () => {
    const { server, conn } = setup();
    conn.start();
    await server.current.accept();
    server.current.deliver("not json");
    server.current.deliver("[1,2]");
    server.current.deliver("42");
    const ping = conn.request("ping", {});
    await flush();
    await server.current.answer("ping");
    assert.deepEqual(await ping, {});
  });
});

describe("Connection reconnects", () => {
  it("reconnects with exponential backoff and equal jitter", async () => {
    const { clock, server, conn, statuses } = setup({
      random: () => 0, // the shortest delay of each attempt: half the ceiling
      backoff: { initialMs: 100, maxMs: 1_000, factor: 2 },
    });
    conn.start();
    await server.current.accept();
    await server.current.drop();
    assert.equal(conn.status, "reconnecting");

    const delays: number[] = [];
    for (let attempt = 0; attempt < 6; attempt++) {
      const before = server.sockets.length;
      const [delay] = clock.pending();
      delays.push(delay!);
      await clock.advance(delay! - 1);
      assert.equal(server.sockets.length, before, "no attempt before the delay");
      await clock.advance(1);
      assert.equal(server.sockets.length, before + 1, "an attempt after the delay");
      await server.current.drop(); // refused again
    }
    assert.deepEqual(delays, [50, 100, 200, 400, 500, 500]);
    assert.deepEqual(statuses, ["open", "reconnecting"]);
  });

  it("jitters each delay within [ceiling/2, ceiling]", async () => {
    for (const [random, expected] of [
      [0, 250],
      [0.5, 375],
      [0.999, 500],
    ] as const) {
      const { clock, server, conn } = setup({ random: () => random, backoff: { initialMs: 500 } });
      conn.start();
      await server.current.drop();
      assert.equal(Math.round(clock.pending()[0]!), Math.round(expected));
      conn.stop();
    }
  });

  it("starts again from the shortest delay after a successful hello", async () => {
    const { clock, server, conn } = setup({ random: () => 0, backoff: { initialMs: 100, maxMs: 10_000 } });
    conn.start();
    await server.current.drop();
    await clock.advance(50);
    await server.current.drop();
    await clock.advance(100);
    await server.current.accept();
    await server.current.drop();
    assert.deepEqual(clock.pending(), [50]);
  });

  it("sends queued requests after reconnecting", async () => {
    const { clock, server, conn } = setup();
    conn.start();
    await server.current.accept();
    await server.current.drop();
    const ping = conn.request("ping", {});
    await clock.advance(clock.pending()[0]!);
    assert.equal(server.sockets.length, 2);
    await server.current.accept();
    await server.current.answer("ping");
    assert.deepEqual(await ping, {});
  });

  it("reconnects soon after bye server_restart", async () => {
    const { clock, server, conn, statuses } = setup({ random: () => 0, backoff: { initialMs: 400 } });
    conn.start();
    await server.current.drop(); // a failed attempt first: the next delay would be longer
    await clock.advance(200);
    await server.current.accept();
    server.current.deliver({ ev: "bye", reason: "server_restart" });
    await server.current.drop(1012);
    assert.equal(conn.status, "reconnecting");
    assert.deepEqual(clock.pending(), [200]);
    await clock.advance(200);
    await server.current.accept();
    assert.deepEqual(statuses, ["reconnecting", "open", "reconnecting", "open"]);
  });

  it("closes the socket itself when the server does not after bye", async () => {
    const { clock, server, conn } = setup();
    conn.start();
    await server.current.accept();
    server.current.deliver({ ev: "bye", reason: "server_restart" });
    await clock.advance(5_000);
    assert.ok(server.sockets[0]!.closedByClient);
    assert.equal(conn.status, "reconnecting");
  });

  it("reports bye token_expired to the app and stops", async () => {
    const { clock, server, conn } = setup();
    let expired = 0;
    conn.on("expired", () => expired++);
    conn.start();
    await server.current.accept();
    const outcome = caught(conn.request("ping", {}));
    await flush();
    server.current.deliver({ ev: "bye", reason: "token_expired" });
    await flush();
    assert.equal(expired, 1);
    assert.equal(conn.status, "closed");
    assert.equal((await outcome).code, "unavailable");
    await clock.advance(60_000);
    assert.equal(server.sockets.length, 1, "no reconnect");
  });

  it("treats bye token_revoked like an expired token", async () => {
    const { clock, server, conn } = setup();
    let expired = 0;
    conn.on("expired", () => expired++);
    conn.start();
    await server.current.accept();
    await flush();
    server.current.deliver({ ev: "bye", reason: "token_revoked" });
    await flush();
    assert.equal(expired, 1);
    assert.equal(conn.status, "closed");
    await clock.advance(60_000);
    assert.equal(server.sockets.length, 1, "no reconnect");
  });

  it("stops without reconnecting on bye disconnected", async () => {
    const { clock, server, conn } = setup();
    let disconnected = 0;
    let expired = 0;
    conn.on("disconnected", () => disconnected++);
    conn.on("expired", () => expired++);
    conn.start();
    await server.current.accept();
    await flush();
    server.current.deliver({ ev: "bye", reason: "disconnected" });
    await flush();
    assert.deepEqual([disconnected, expired], [1, 0]);
    assert.equal(conn.status, "closed");
    await clock.advance(60_000);
    assert.equal(server.sockets.length, 1, "no reconnect");
  });

  it("does not connect with a token known to be expired", async () => {
    const { clock, server, conn } = setup({ tokenExpiresAt: 10 });
    let expired = 0;
    conn.on("expired", () => expired++);
    conn.start();
    await clock.advance(0);
    assert.equal(server.sockets.length, 0);
    assert.equal(expired, 1);
    assert.equal(conn.status, "closed");
  });

  it("pings every heartbeat and reconnects when a ping goes unanswered", async () => {
    const { clock, server, conn } = setup({ heartbeat: true });
    conn.start();
    await server.current.accept("alice", 1_000);
    await clock.advance(1_000);
    await server.current.answer("ping");
    await clock.advance(1_000);
    server.current.take("ping"); // never answered
    await clock.advance(1_000);
    assert.equal(conn.status, "reconnecting");
    assert.ok(server.sockets[0]!.closedByClient);
  });

  it("gives up on a socket that opens but never says hello", async () => {
    const { clock, server, conn } = setup({ requestTimeoutMs: 2_000 });
    conn.start();
    server.current.onopen?.({});
    await clock.advance(2_000);
    assert.equal(conn.status, "reconnecting");
  });

  it("stop() fails pending requests and never reconnects", async () => {
    const { clock, server, conn } = setup();
    conn.start();
    await server.current.accept();
    const outcome = caught(conn.request("ping", {}));
    conn.stop();
    assert.equal((await outcome).code, "unavailable");
    assert.equal(conn.status, "closed");
    await clock.advance(60_000);
    assert.equal(server.sockets.length, 1);
    assert.equal((await caught(conn.request("ping", {}))).code, "unavailable");
  });
});

describe("Connection token checks", () => {
  it("asks whether the token is still good after failed attempts, and stops when it is not", async () => {
    let asked = 0;
    const { clock, server, conn } = setup({
      authCheckAfter: 2,
      checkToken: async () => {
        asked++;
        return false;
      },
    });
    let expired = 0;
    conn.on("expired", () => expired++);
    conn.start();
    await server.current.drop(); // refused, as a 401 looks to a browser
    assert.equal(asked, 0);
    await clock.advance(clock.pending()[0]!);
    await server.current.drop();
    await flush();
    assert.equal(asked, 1);
    assert.equal(expired, 1);
    assert.equal(conn.status, "closed");
  });

  it("keeps reconnecting while the token is fine", async () => {
    const { clock, server, conn } = setup({ authCheckAfter: 1, checkToken: async () => true });
    conn.start();
    await server.current.drop();
    await flush();
    assert.equal(conn.status, "reconnecting");
    await clock.advance(clock.pending()[0]!);
    await server.current.accept();
    assert.equal(conn.status, "open");
  });

  it("reconnectNow skips the rest of the delay", async () => {
    const { server, conn } = setup({ backoff: { initialMs: 60_000 } });
    conn.start();
    await server.current.drop();
    conn.reconnectNow();
    assert.equal(server.sockets.length, 2);
  });
});
