import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RoomState } from "../src/room.ts";
import { message } from "./fakes.ts";

describe("RoomState", () => {
  it("keeps messages sorted by seq and drops duplicates and other rooms' messages", () => {
    const room = new RoomState("r");
    assert.equal(room.insert([message("r", 5, "a"), message("r", 2, "b"), message("r", 9, "a")]), 3);
    assert.equal(room.insert([message("r", 5, "a"), message("r", 7, "b"), message("x", 8, "b")]), 1);
    assert.deepEqual(room.messages.map((m) => m.seq), [2, 5, 7, 9]);
    assert.equal(room.tailSeq, 9);
    assert.equal(room.lastSeq, 9);
    assert.deepEqual([...room.members].sort(), ["a", "b"]);
  });

  it("stores messages without event-only fields", () => {
    const room = new RoomState("r");
    room.insert([{ ...message("r", 1, "a"), ev: "msg", prev_seq: 0 } as never]);
    assert.deepEqual(Object.keys(room.messages[0]!).sort(), ["cid", "from", "msg_id", "room", "seq", "text", "ts"]);
  });

  it("counts unread messages from others above the read marker", () => {
    const room = new RoomState("r");
    room.insert([message("r", 1, "bob"), message("r", 2, "me"), message("r", 3, "bob"), message("r", 4, "carol")]);
    assert.equal(room.unreadCount("me"), 3);
    room.readSeq = 2;
    assert.equal(room.unreadCount("me"), 2);
    room.readSeq = 4;
    assert.equal(room.unreadCount("me"), 0);
  });

  it("takes the server's exact counts when the marker is below the loaded stretch, and adds what came after", () => {
    const room = new RoomState("r", { floor: 40 });
    room.readSeq = 10;
    room.serverCounts = { readSeq: 10, lastSeq: 42, unread: 7, mentions: 2 };
    room.insert([message("r", 41, "bob"), message("r", 42, "bob")]);
    assert.equal(room.unreadCount("me"), 7, "41 and 42 are among the server's 7");
    assert.equal(room.unreadIsExact, true);
    room.insert([{ ...message("r", 50, "bob"), mentions: ["me"] }, message("r", 51, "me")]);
    assert.equal(room.unreadCount("me"), 8, "one more from bob; one's own never counts");
    assert.equal(room.mentionCount("me"), 3);
    room.readSeq = 51;
    assert.deepEqual([room.unreadCount("me"), room.mentionCount("me")], [0, 0], "loaded to the marker: counted here");
  });

  it("knows whether the unread count is exact from where its stretch starts", () => {
    const room = new RoomState("r", { floor: 10 });
    room.readSeq = 5;
    room.insert([message("r", 11, "bob")]);
    assert.equal(room.unreadCount("me"), 1);
    assert.equal(room.unreadIsExact, false, "messages 6..10 are not loaded");
    room.applyHistory([message("r", 6, "bob"), message("r", 8, "bob")], 2);
    assert.equal(room.floor, 5);
    assert.equal(room.unreadIsExact, true);
    assert.equal(room.unreadCount("me"), 3);
  });

  it("learns the start of the room from a short history page", () => {
    const room = new RoomState("r", { floor: 4 });
    assert.ok(room.hasOlder);
    room.applyHistory([message("r", 3, "a")], 50);
    assert.equal(room.floor, 0);
    assert.equal(room.hasOlder, false);
  });

  it("does not take a short page cut at the server's budget for the start of the room", () => {
    const room = new RoomState("r", { floor: 4 });
    room.applyHistory([message("r", 3, "a")], 50, true);
    assert.equal(room.floor, 2);
    assert.ok(room.hasOlder);
    room.replaceWithNewest([message("r", 90, "a")], 50, true);
    assert.equal(room.floor, 89, "the newest page, cut at the budget, has older messages before it");
  });

  it("drops the local echo of a sent message when the message arrives", () => {
    const room = new RoomState("r");
    room.outgoing.push({ cid: "c1", room: "r", text: "hi", createdAt: 0, state: "sent" });
    room.outgoing.push({ cid: "c2", room: "r", text: "yo", createdAt: 0, state: "sending" });
    room.insert([message("r", 1, "me", "hi", "c1")]);
    assert.deepEqual(room.outgoing.map((o) => o.cid), ["c2"]);
  });

  it("replaces its stretch with the newest page", () => {
    const room = new RoomState("r");
    room.insert([message("r", 1, "a"), message("r", 2, "a")]);
    room.replaceWithNewest([message("r", 90, "a"), message("r", 91, "a")], 2);
    assert.deepEqual(room.messages.map((m) => m.seq), [90, 91]);
    assert.equal(room.floor, 89);
  });

  it("names the other user of a DM", () => {
    assert.equal(new RoomState("dm:alice:bob").peer("bob"), "alice");
    assert.equal(new RoomState("dm:alice:bob").isDm, true);
    assert.equal(new RoomState("general").isDm, false);
  });

  it("applies edits, deletions and reactions in order and asks for a sync on a gap", () => {
    const room = new RoomState("r");
    room.insert([message("r", 3, "alice"), message("r", 5, "bob")]);
    assert.equal(room.changePos, 5, "a first load starts the change position at its tail");
    const edit = { ev: "edit", room: "r", seq: 3, text: "fixed", edited_ts: 9, by: "alice", pos: 6, prev_pos: 5 } as const;
    assert.equal(room.applyChange(edit), "applied");
    assert.equal(room.applyChange(edit), "old");
    const react = (pos: number, prev: number, user: string, remove = false) =>
      ({ ev: "react", room: "r", seq: 3, emoji: "👍", user, remove, pos, prev_pos: prev }) as const;
    assert.equal(room.applyChange(react(7, 6, "bob")), "applied");
    assert.equal(room.applyChange(react(8, 7, "alice")), "applied");
    assert.deepEqual(room.message(3)!.reactions, [{ emoji: "👍", count: 2, users: ["alice", "bob"] }]);
    assert.equal(room.applyChange(react(9, 8, "bob", true)), "applied");
    assert.deepEqual(room.message(3)!.reactions, [{ emoji: "👍", count: 1, users: ["alice"] }]);
    assert.equal(room.applyChange(react(12, 10, "bob")), "gap", "the change at 10 was missed");
    const del = { ev: "delete", room: "r", seq: 3, by: "alice", pos: 10, prev_pos: 9 } as const;
    assert.equal(room.applyChange(del), "applied");
    const m = room.message(3)!;
    assert.deepEqual([m.text, m.deleted, m.edited_ts, m.reactions], ["", true, undefined, undefined]);
    room.replace([{ ...message("r", 5, "bob"), text: "current" }]);
    assert.equal(room.message(5)!.text, "current");
  });
});
