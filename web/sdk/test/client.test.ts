import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type ClientOptions, ConfabClient } from "../src/client.ts";
import { ConfabError } from "../src/errors.ts";
import type { Message, RoomSummary } from "../src/protocol.ts";
import { FakeClock, FakeServer, type FakeSocket, fakeToken, flush, message, msgEvent } from "./fakes.ts";

const ME = "alice";

function newClient(options: Partial<ClientOptions> = {}) {
  const clock = new FakeClock();
  const server = new FakeServer();
  let n = 0;
  const client = new ConfabClient({
    baseUrl: "http://test",
    token: fakeToken(ME, 4_000_000_000),
    socket: server.factory,
    clock,
    random: () => 0.5,
    heartbeat: false,
    checkToken: async () => undefined,
    newCid: () => `cid${++n}`,
    ...options,
  });
  return { clock, server, client };
}

type SyncReply = Record<string, { messages: Message[]; more: boolean }>;

/** Accepts the socket and answers the `rooms` and `sync` the client sends on every hello. */
async function handshake(socket: FakeSocket, rooms: RoomSummary[], sync: SyncReply = {}): Promise<Record<string, number>> {
  await socket.accept(ME);
  await socket.answer("rooms", { rooms });
  if (socket.unanswered("sync").length === 0) return {}; // no rooms, nothing to sync
  const frame = socket.take("sync");
  const since = frame.rooms as Record<string, number>;
  const reply: SyncReply = {};
  for (const room of Object.keys(since)) reply[room] = sync[room] ?? { messages: [], more: false };
  await socket.reply(frame, { rooms: reply });
  return since;
}

async function connected(rooms: RoomSummary[] = [], sync: SyncReply = {}, options: Partial<ClientOptions> = {}) {
  const env = newClient(options);
  env.client.connect();
  const since = await handshake(env.server.current, rooms, sync);
  return { ...env, since };
}

function seqs(client: ConfabClient, room: string): number[] {
  return client.room(room)!.messages.map((m) => m.seq);
}

async function reconnect(clock: FakeClock, server: FakeServer): Promise<FakeSocket> {
  const before = server.sockets.length;
  await server.current.drop();
  await clock.advance(clock.pending()[0]!);
  assert.equal(server.sockets.length, before + 1, "the client reconnected");
  return server.current;
}

describe("ConfabClient room state", () => {
  it("starts each room's sync at its read marker, so unread messages load at once", async () => {
    const { client, since } = await connected(
      [
        { room: "general", last_seq: 5, read_seq: 3 },
        { room: "quiet", last_seq: 2, read_seq: 2 },
      ],
      {
        general: { messages: [message("general", 4, "bob"), message("general", 5, "bob")], more: false },
      },
    );
    assert.deepEqual(since, { general: 3, quiet: 2 });
    assert.deepEqual(seqs(client, "general"), [4, 5]);
    assert.equal(client.room("general")!.unreadCount(ME), 2);
    assert.ok(client.room("general")!.unreadIsExact);
    assert.equal(client.room("quiet")!.unreadCount(ME), 0);
  });

  it("keeps messages in seq order without duplicates, whatever their source", async () => {
    const { client, server } = await connected([{ room: "r", last_seq: 10, read_seq: 10 }]);
    const socket = server.current;
    // The newest page, then events, then an older page overlapping it.
    const older = client.loadOlder("r", 3);
    await flush();
    const h = socket.take("history");
    assert.deepEqual({ room: h.room, before: h.before, limit: h.limit }, { room: "r", before: 11, limit: 3 });
    await socket.reply(h, { messages: [message("r", 7, "bob"), message("r", 9, "bob"), message("r", 10, "bob")] });
    assert.equal(await older, 3);
    socket.deliver(msgEvent(message("r", 12, "bob"), 10));
    socket.deliver(msgEvent(message("r", 12, "bob"), 10)); // duplicate delivery
    await flush();
    const older2 = client.loadOlder("r", 3);
    await flush();
    const h2 = socket.take("history");
    assert.equal(h2.before, 7);
    await socket.reply(h2, { messages: [message("r", 3, "bob"), message("r", 5, "bob"), message("r", 7, "bob")] });
    assert.equal(await older2, 2);
    assert.deepEqual(seqs(client, "r"), [3, 5, 7, 9, 10, 12]);
    assert.ok(client.room("r")!.hasOlder);
    // A short page means the start of the room.
    const older3 = client.loadOlder("r", 3);
    await flush();
    await socket.answer("history", { messages: [message("r", 1, "bob")] });
    await older3;
    assert.deepEqual(seqs(client, "r"), [1, 3, 5, 7, 9, 10, 12]);
    assert.equal(client.room("r")!.hasOlder, false);
    assert.equal(await client.loadOlder("r"), 0, "nothing older to load");
  });

  it("counts unread messages from others above the read marker", async () => {
    const { client, server } = await connected([{ room: "r", last_seq: 2, read_seq: 2 }]);
    const socket = server.current;
    socket.deliver(msgEvent(message("r", 3, "bob"), 2));
    socket.deliver(msgEvent(message("r", 4, ME), 3));
    socket.deliver(msgEvent(message("r", 6, "carol"), 4));
    await flush();
    const room = client.room("r")!;
    assert.equal(room.unreadCount(ME), 2, "own messages are never unread");

    client.markRead("r", 3);
    assert.equal(room.unreadCount(ME), 1);
    const read = socket.take("read");
    assert.deepEqual({ room: read.room, seq: read.seq }, { room: "r", seq: 3 });
    // Markers coalesce while one is in flight, and never move back.
    client.markRead("r");
    client.markRead("r", 2);
    assert.equal(socket.unanswered("read").length, 0);
    await socket.reply(read);
    assert.equal(socket.take("read").seq, 6);
    assert.equal(room.unreadCount(ME), 0);

    // A read marker set by another session of ours.
    socket.deliver(msgEvent(message("r", 7, "bob"), 6));
    socket.deliver({ ev: "read", room: "r", user: ME, seq: 7 });
    socket.deliver({ ev: "read", room: "r", user: "bob", seq: 7 });
    await flush();
    assert.equal(room.unreadCount(ME), 0);
    assert.equal(room.readBy.get("bob"), 7);
  });

  it("says when the unread count is only a lower bound", async () => {
    const { client, server } = await connected([{ room: "r", last_seq: 500, read_seq: 0 }], {}, { maxSyncPages: 1 });
    // The sync from 0 was answered empty by the helper; a busier room would page:
    const socket = server.current;
    client.requestSync(["r"]);
    await flush();
    await socket.answer("sync", { rooms: { r: { messages: [message("r", 1, "bob")], more: true } } });
    const h = socket.take("history");
    assert.equal(h.before, undefined, "jumps to the newest page");
    const page = Array.from({ length: 50 }, (_, i) => message("r", 451 + i, "bob"));
    await socket.reply(h, { messages: page });
    const room = client.room("r")!;
    assert.equal(room.messages[0]!.seq, 451);
    assert.equal(room.unreadCount(ME), 50);
    assert.equal(room.unreadIsExact, false);
    await socket.answer("sync", { rooms: { r: { messages: [], more: false } } });
  });

  it("opens a DM locally and sends to it with `to`", async () => {
    const { client, server } = await connected();
    const room = client.openDirect("bob");
    assert.equal(room.id, "dm:alice:bob");
    assert.equal(room.onServer, false);
    const sent = client.send(room.id, "hi bob");
    await flush();
    const frame = server.current.take("send");
    assert.deepEqual({ to: frame.to, room: frame.room, text: frame.text, cid: frame.cid }, {
      to: "bob",
      room: undefined,
      text: "hi bob",
      cid: "cid1",
    });
    await server.current.reply(frame, { room: "dm:alice:bob", seq: 1, msg_id: "m1", ts: 5 });
    assert.deepEqual(await sent, { room: "dm:alice:bob", seq: 1, msg_id: "m1", ts: 5 });
    assert.equal(room.outgoing[0]!.state, "sent", "shown as sent until the message itself arrives");
    server.current.deliver(msgEvent(message("dm:alice:bob", 1, ME, "hi bob", "cid1"), 0));
    await flush();
    assert.deepEqual(seqs(client, "dm:alice:bob"), [1]);
    assert.equal(room.outgoing.length, 0);
  });

  it("adds a DM room on its first incoming message, unread", async () => {
    const { client, server } = await connected();
    let roomsChanged = 0;
    client.on("rooms", () => roomsChanged++);
    server.current.deliver(msgEvent(message("dm:alice:carol", 1, "carol", "psst"), 0));
    await flush();
    assert.equal(roomsChanged, 1);
    const room = client.room("dm:alice:carol")!;
    assert.equal(room.peer(ME), "carol");
    assert.equal(room.unreadCount(ME), 1);
  });

  it("joins and leaves rooms", async () => {
    const { client, server } = await connected();
    const joined = client.join("lobby");
    await flush();
    server.current.deliver({ ev: "member", room: "lobby", user: ME, action: "join" });
    await server.current.answer("join", { room: "lobby", last_seq: 9 });
    const room = await joined;
    assert.equal(room.tailSeq, 9, "the room's stretch starts at its newest message");
    assert.equal(server.current.unanswered("rooms").length, 0, "our own join needs no refresh");
    server.current.deliver({ ev: "member", room: "lobby", user: "bob", action: "join" });
    await flush();
    assert.ok(room.members.has("bob"));

    const left = client.leave("lobby");
    await flush();
    await server.current.answer("leave");
    await left;
    assert.equal(client.room("lobby"), undefined);
  });

  it("drops rooms the server no longer lists after a reconnect, and keeps unsent DMs", async () => {
    const { client, server, clock } = await connected([
      { room: "a", last_seq: 0, read_seq: 0 },
      { room: "b", last_seq: 0, read_seq: 0 },
    ]);
    client.openDirect("zoe");
    const socket = await reconnect(clock, server);
    await handshake(socket, [{ room: "b", last_seq: 0, read_seq: 0 }]);
    assert.deepEqual([...client.rooms.keys()].sort(), ["b", "dm:alice:zoe"]);
  });

  it("learns a room joined elsewhere when its first message arrives", async () => {
    const { client, server } = await connected();
    const socket = server.current;
    socket.deliver(msgEvent(message("elsewhere", 3, "bob"), 2));
    await flush();
    await socket.answer("rooms", { rooms: [{ room: "elsewhere", last_seq: 3, read_seq: 1 }] });
    const sync = socket.take("sync");
    assert.deepEqual(sync.rooms, { elsewhere: 1 });
    await socket.reply(sync, { rooms: { elsewhere: { messages: [message("elsewhere", 2, "bob"), message("elsewhere", 3, "bob")], more: false } } });
    assert.deepEqual(seqs(client, "elsewhere"), [2, 3]);
    assert.equal(client.room("elsewhere")!.unreadCount(ME), 2);
  });

  it("forgets a room left from another session", async () => {
    const { client, server } = await connected([{ room: "r", last_seq: 0, read_seq: 0 }]);
    server.current.deliver({ ev: "member", room: "r", user: ME, action: "leave" });
    await flush();
    assert.equal(client.room("r"), undefined);
  });

  it("shows typing until a timeout or the typist's message, and throttles its own", async () => {
    const { client, server, clock } = await connected([{ room: "r", last_seq: 0, read_seq: 0 }], {}, {
      typingTimeoutMs: 5_000,
      typingThrottleMs: 3_000,
    });
    const socket = server.current;
    const room = client.room("r")!;
    socket.deliver({ ev: "typing", room: "r", user: "bob" });
    await flush();
    assert.deepEqual([...room.typing.keys()], ["bob"]);
    await clock.advance(4_000);
    socket.deliver({ ev: "typing", room: "r", user: "bob" }); // extends it
    await clock.advance(4_000);
    assert.deepEqual([...room.typing.keys()], ["bob"]);
    await clock.advance(1_000);
    assert.deepEqual([...room.typing.keys()], []);

    socket.deliver({ ev: "typing", room: "r", user: "bob" });
    socket.deliver(msgEvent(message("r", 1, "bob"), 0));
    await flush();
    assert.deepEqual([...room.typing.keys()], [], "a message ends the indicator");

    client.typing("r");
    client.typing("r");
    await clock.advance(2_999);
    client.typing("r");
    assert.equal(socket.unanswered("typing").length, 1);
    await clock.advance(1);
    client.typing("r");
    assert.equal(socket.unanswered("typing").length, 2);
  });

  it("tracks who is online from presence replies and events", async () => {
    const { client, server } = await connected([{ room: "r", last_seq: 1, read_seq: 1 }], {
      r: { messages: [], more: false },
    });
    const socket = server.current;
    socket.deliver({ ev: "member", room: "r", user: "dave", action: "join" });
    await flush();
    const presence = client.presence("r");
    await flush();
    assert.equal(socket.take("presence").room, "r");
    await socket.reply(socket.sent[socket.sent.length - 1]!, { online: ["alice", "bob"] });
    assert.deepEqual(await presence, ["alice", "bob"]);
    assert.deepEqual(client.onlineIn("r"), ["alice", "bob"]);
    const changes: string[] = [];
    client.on("presence", (user, online) => changes.push(`${user}:${online}`));
    socket.deliver({ ev: "presence", user: "bob", online: false });
    socket.deliver({ ev: "presence", user: "dave", online: true });
    await flush();
    assert.deepEqual(client.onlineIn("r"), ["alice", "dave"]);
    assert.deepEqual(changes, ["bob:false", "dave:true"]);
  });
});

describe("ConfabClient gap repair", () => {
  it("syncs a room when a msg event's prev_seq is not its last seq", async () => {
    const { client, server } = await connected([{ room: "r", last_seq: 2, read_seq: 0 }], {
      r: { messages: [message("r", 1, "bob"), message("r", 2, "bob")], more: false },
    });
    const socket = server.current;
    socket.deliver(msgEvent(message("r", 5, "bob"), 4)); // 3 and 4 were missed
    await flush();
    assert.deepEqual(seqs(client, "r"), [1, 2], "not inserted past a gap");
    const sync = socket.take("sync");
    assert.deepEqual(sync.rooms, { r: 2 });
    await socket.reply(sync, {
      rooms: { r: { messages: [message("r", 3, "bob"), message("r", 4, "bob"), message("r", 5, "bob")], more: false } },
    });
    socket.deliver(msgEvent(message("r", 6, "bob"), 5));
    await flush();
    assert.deepEqual(seqs(client, "r"), [1, 2, 3, 4, 5, 6]);
    assert.equal(socket.unanswered("sync").length, 0);
  });

  it("follows sync pages while the server says more", async () => {
    const { client, server } = await connected([{ room: "r", last_seq: 0, read_seq: 0 }], {}, { syncLimit: 2 });
    const socket = server.current;
    socket.deliver(msgEvent(message("r", 5, "bob"), 4));
    await flush();
    const first = socket.take("sync");
    assert.deepEqual({ rooms: first.rooms, limit: first.limit }, { rooms: { r: 0 }, limit: 2 });
    await socket.reply(first, { rooms: { r: { messages: [message("r", 1, "bob"), message("r", 2, "bob")], more: true } } });
    const second = socket.take("sync");
    assert.deepEqual(second.rooms, { r: 2 });
    await socket.reply(second, { rooms: { r: { messages: [message("r", 4, "bob"), message("r", 5, "bob")], more: false } } });
    assert.deepEqual(seqs(client, "r"), [1, 2, 4, 5]);
  });

  it("syncs again the rooms a reply's budget did not reach, without counting them as pages", async () => {
    // maxSyncPages 1: a room counted as paged once would jump to its newest page.
    const { client, server } = await connected(
      [
        { room: "a", last_seq: 0, read_seq: 0 },
        { room: "b", last_seq: 0, read_seq: 0 },
      ],
      {},
      { maxSyncPages: 1 },
    );
    const socket = server.current;
    client.requestSync(["a", "b"]);
    await flush();
    const first = socket.take("sync");
    assert.deepEqual(first.rooms, { a: 0, b: 0 });
    // The budget is spent in room a, which is complete; room b was not reached.
    await socket.reply(first, {
      rooms: { a: { messages: [message("a", 1, "bob")], more: false }, b: { messages: [], more: true } },
    });
    const second = socket.take("sync");
    assert.deepEqual(second.rooms, { b: 0 }, "room b again, from where it was");
    assert.equal(socket.unanswered("history").length, 0, "no jump for a room that got no page");
    await socket.reply(second, { rooms: { b: { messages: [message("b", 1, "bob"), message("b", 2, "bob")], more: false } } });
    assert.deepEqual(seqs(client, "a"), [1]);
    assert.deepEqual(seqs(client, "b"), [1, 2]);
    assert.equal(socket.unanswered("sync").length, 0);
  });

  it("keeps paging back when a short history page says more", async () => {
    const { client, server } = await connected([{ room: "r", last_seq: 10, read_seq: 10 }]);
    const socket = server.current;
    const older = client.loadOlder("r", 50);
    await flush();
    // Two messages of a page of 50: the server's reply budget, not the room's start.
    await socket.answer("history", { messages: [message("r", 9, "bob"), message("r", 10, "bob")], more: true });
    await older;
    assert.ok(client.room("r")!.hasOlder, "older messages remain");
    const older2 = client.loadOlder("r", 50);
    await flush();
    const h = socket.take("history");
    assert.equal(h.before, 9);
    await socket.reply(h, { messages: [message("r", 8, "bob")] });
    await older2;
    assert.equal(client.room("r")!.hasOlder, false, "a short page without more is the start");
  });

  it("batches the rooms of one sync and coalesces repeated gaps", async () => {
    const { client, server } = await connected([
      { room: "a", last_seq: 1, read_seq: 1 },
      { room: "b", last_seq: 1, read_seq: 1 },
    ]);
    const socket = server.current;
    socket.deliver(msgEvent(message("a", 3, "bob"), 2));
    await flush();
    socket.deliver(msgEvent(message("a", 4, "bob"), 3));
    socket.deliver(msgEvent(message("b", 3, "bob"), 2));
    await flush();
    const first = socket.take("sync");
    assert.deepEqual(first.rooms, { a: 1 });
    assert.equal(socket.unanswered("sync").length, 0, "one sync at a time");
    await socket.reply(first, { rooms: { a: { messages: [message("a", 2, "bob"), message("a", 3, "bob"), message("a", 4, "bob")], more: false } } });
    const second = socket.take("sync");
    assert.deepEqual(second.rooms, { a: 4, b: 1 });
    await socket.reply(second, {
      rooms: { a: { messages: [], more: false }, b: { messages: [message("b", 2, "bob"), message("b", 3, "bob")], more: false } },
    });
    assert.deepEqual(seqs(client, "a"), [2, 3, 4]);
    assert.deepEqual(seqs(client, "b"), [2, 3]);
  });

  it("syncs every known room after a reconnect", async () => {
    const { client, server, clock } = await connected([
      { room: "a", last_seq: 2, read_seq: 0 },
      { room: "b", last_seq: 0, read_seq: 0 },
    ], { a: { messages: [message("a", 1, "bob"), message("a", 2, "bob")], more: false } });
    const socket = await reconnect(clock, server);
    await socket.accept(ME);
    await socket.answer("rooms", {
      rooms: [
        { room: "a", last_seq: 3, read_seq: 0 },
        { room: "b", last_seq: 1, read_seq: 0 },
        { room: "dm:alice:bob", last_seq: 1, read_seq: 0 },
      ],
    });
    const sync = socket.take("sync");
    assert.deepEqual(sync.rooms, { a: 2, b: 0, "dm:alice:bob": 0 });
    await socket.reply(sync, {
      rooms: {
        a: { messages: [message("a", 3, "bob")], more: false },
        b: { messages: [message("b", 1, "bob")], more: false },
        "dm:alice:bob": { messages: [message("dm:alice:bob", 1, "bob")], more: false },
      },
    });
    assert.deepEqual(seqs(client, "a"), [1, 2, 3]);
    assert.deepEqual(seqs(client, "b"), [1]);
    assert.equal(client.room("dm:alice:bob")!.unreadCount(ME), 1);
  });

  it("forgets a room sync says we left, and still syncs the others", async () => {
    const { client, server } = await connected([
      { room: "a", last_seq: 0, read_seq: 0 },
      { room: "b", last_seq: 0, read_seq: 0 },
    ]);
    const socket = server.current;
    client.requestSync(["a", "b"]);
    await flush();
    assert.deepEqual(socket.unanswered("sync")[0]!.rooms, { a: 0, b: 0 });
    await socket.replyError(socket.take("sync"), "not_member");
    assert.deepEqual(socket.unanswered("sync")[0]!.rooms, { a: 0 }, "then room by room");
    await socket.replyError(socket.take("sync"), "not_member");
    await socket.answer("sync", { rooms: { b: { messages: [message("b", 1, "bob"), message("b", 2, "bob")], more: false } } });
    assert.equal(client.room("a"), undefined);
    assert.deepEqual(seqs(client, "b"), [1, 2]);
  });
});

describe("ConfabClient sending", () => {
  it("resends an unacked send with the same cid after a reconnect, once", async () => {
    const { client, server, clock } = await connected([{ room: "r", last_seq: 0, read_seq: 0 }]);
    const sent = client.send("r", "hello");
    let settled = 0;
    sent.then(() => settled++);
    await flush();
    const first = server.current.take("send");
    assert.deepEqual({ room: first.room, text: first.text, cid: first.cid }, { room: "r", text: "hello", cid: "cid1" });
    assert.equal(client.room("r")!.outgoing[0]!.state, "sending");

    // The connection breaks before the ack.
    const socket = await reconnect(clock, server);
    assert.equal(client.room("r")!.outgoing.length, 1, "still shown, still pending");
    await handshake(socket, [{ room: "r", last_seq: 1, read_seq: 0 }]);
    const again = socket.take("send");
    assert.deepEqual({ room: again.room, text: again.text, cid: again.cid }, { room: "r", text: "hello", cid: "cid1" });
    await socket.reply(again, { room: "r", seq: 1, msg_id: "m1", ts: 1 });
    assert.deepEqual(await sent, { room: "r", seq: 1, msg_id: "m1", ts: 1 });
    assert.equal(settled, 1);
    // Nothing is sent a third time.
    await clock.advance(60_000);
    assert.equal(socket.unanswered("send").length, 0);
  });

  it("keeps sends made while offline and sends them in order after hello", async () => {
    const { client, server, clock } = await connected([{ room: "r", last_seq: 0, read_seq: 0 }]);
    await server.current.drop();
    const a = client.send("r", "one");
    const b = client.send("r", "two");
    await clock.advance(clock.pending()[0]!);
    const socket = server.current;
    await socket.accept(ME);
    const sends = socket.unanswered("send");
    assert.deepEqual(
      sends.map((f) => [f.text, f.cid]),
      [
        ["one", "cid1"],
        ["two", "cid2"],
      ],
    );
    await socket.reply(sends[0]!, { room: "r", seq: 1, msg_id: "m1", ts: 1 });
    await socket.reply(sends[1]!, { room: "r", seq: 2, msg_id: "m2", ts: 2 });
    assert.equal((await a).seq, 1);
    assert.equal((await b).seq, 2);
  });

  it("completes a send whose ack was lost when the message arrives by sync", async () => {
    const { client, server, clock } = await connected([{ room: "r", last_seq: 0, read_seq: 0 }]);
    const sent = client.send("r", "hello");
    await flush();
    server.current.take("send");
    const socket = await reconnect(clock, server);
    await socket.accept(ME);
    // The client resends at once; before that reply, the sync shows the message stored.
    const resend = socket.take("send");
    await socket.answer("rooms", { rooms: [{ room: "r", last_seq: 1, read_seq: 0 }] });
    await socket.answer("sync", { rooms: { r: { messages: [message("r", 1, ME, "hello", "cid1")], more: false } } });
    assert.deepEqual(await sent, { room: "r", seq: 1, msg_id: "r-1", ts: 1_700_000_000_001 });
    await socket.reply(resend, { room: "r", seq: 1, msg_id: "r-1", ts: 1_700_000_000_001 }); // the idempotent answer
    assert.deepEqual(seqs(client, "r"), [1]);
    assert.equal(client.room("r")!.outgoing.length, 0);
  });

  it("repeats a send that timed out, with the same cid", async () => {
    const { client, server, clock } = await connected([{ room: "r", last_seq: 0, read_seq: 0 }], {}, { sendTimeoutMs: 2_000 });
    const sent = client.send("r", "hello");
    await flush();
    server.current.take("send");
    await clock.advance(3_000);
    const again = server.current.take("send");
    assert.equal(again.cid, "cid1");
    await server.current.reply(again, { room: "r", seq: 1, msg_id: "m1", ts: 1 });
    assert.equal((await sent).seq, 1);
  });

  it("retries a rate-limited send later with the same cid", async () => {
    const { client, server, clock } = await connected([{ room: "r", last_seq: 0, read_seq: 0 }]);
    const sent = client.send("r", "hello");
    await flush();
    for (let i = 0; i < 8; i++) {
      await server.current.replyError(server.current.take("send"), "rate_limited");
      await clock.advance(5_000);
    }
    const last = server.current.take("send");
    assert.equal(last.cid, "cid1");
    await server.current.reply(last, { room: "r", seq: 1, msg_id: "m1", ts: 1 });
    assert.equal((await sent).seq, 1);
  });

  it("marks a send failed for good on a permanent error, and can retry it", async () => {
    const { client, server } = await connected([{ room: "r", last_seq: 0, read_seq: 0 }]);
    const sent = client.send("r", "x".repeat(5000));
    const outcome = sent.catch((err: unknown) => err);
    await flush();
    await server.current.replyError(server.current.take("send"), "too_large", "text over 4096 bytes");
    const err = await outcome;
    assert.ok(err instanceof ConfabError);
    assert.equal(err.code, "too_large");
    const out = client.room("r")!.outgoing[0]!;
    assert.equal(out.state, "failed");
    assert.equal(out.error?.code, "too_large");

    const retried = client.retry(out.cid)!;
    await flush();
    const frame = server.current.take("send");
    assert.equal(frame.cid, out.cid);
    await server.current.reply(frame, { room: "r", seq: 1, msg_id: "m1", ts: 1 });
    assert.equal((await retried).seq, 1);
  });

  it("refuses an empty text and a room that was not joined without a round trip", async () => {
    const { client, server } = await connected();
    await assert.rejects(client.send("nowhere", "hi"), { code: "not_member" });
    await assert.rejects(client.sendDirect("bob", ""), { code: "bad_request" });
    assert.equal(server.current.unanswered("send").length, 0);
  });

  it("syncs the room when an acked message never arrives as an event", async () => {
    const { client, server, clock } = await connected([{ room: "r", last_seq: 0, read_seq: 0 }]);
    const sent = client.send("r", "hello");
    await flush();
    await server.current.answer("send", { room: "r", seq: 1, msg_id: "m1", ts: 1 });
    await sent;
    await clock.advance(3_000);
    const sync = server.current.take("sync");
    assert.deepEqual(sync.rooms, { r: 0 });
    await server.current.reply(sync, { rooms: { r: { messages: [message("r", 1, ME, "hello", "cid1")], more: false } } });
    assert.deepEqual(seqs(client, "r"), [1]);
    assert.equal(client.room("r")!.outgoing.length, 0);
  });
});

describe("ConfabClient session", () => {
  it("learns the user from hello and reports status changes", async () => {
    const { client, server, clock } = newClient();
    const statuses: string[] = [];
    client.on("status", (s) => statuses.push(s));
    client.connect();
    await handshake(server.current, []);
    assert.equal(client.me, ME);
    await reconnect(clock, server);
    await handshake(server.current, []);
    assert.deepEqual(statuses, ["open", "reconnecting", "open"]);
  });

  it("surfaces token expiry and stops", async () => {
    const { client, server, clock } = await connected();
    let expired = 0;
    client.on("expired", () => expired++);
    server.current.deliver({ ev: "bye", reason: "token_expired" });
    await flush();
    assert.equal(expired, 1);
    assert.equal(client.status, "closed");
    await clock.advance(60_000);
    assert.equal(server.sockets.length, 1);
  });

  it("builds the WebSocket URL from the base URL and token", () => {
    const { server, client } = newClient({ baseUrl: "https://chat.example.com/", token: "a.b.c" });
    client.connect();
    assert.equal(server.current.url, "wss://chat.example.com/v1/ws?token=a.b.c");
    client.close();
  });
});

describe("ConfabClient local DMs", () => {
  it("closes a DM opened but never written to, and keeps one with messages", async () => {
    const { client } = await connected();
    client.openDirect("zoe");
    client.closeLocal("dm:alice:zoe");
    assert.equal(client.room("dm:alice:zoe"), undefined);
    const room = client.openDirect("yan");
    room.outgoing.push({ cid: "x", room: room.id, to: "yan", text: "hi", createdAt: 0, state: "sending" });
    client.closeLocal(room.id);
    assert.ok(client.room(room.id), "an unsent message keeps it");
  });
});
