// The SDK against frames the server really produces (frames.gen.ts, written
// by confab-protocol's tests from the Rust types): the SDK's per-op types
// accept them (checked by tsc), and a connection carries them unchanged.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Connection } from "../src/connection.ts";
import type { OpName, ReplyOf, RequestOf, ServerEvent } from "../src/protocol.ts";
import { FakeClock, FakeServer, flush } from "./fakes.ts";
import { events, replies, requests } from "./frames.gen.ts";

/** A frame without the keys that frame it (`op`, `id`, `re`, `ok`). */
function fields<T extends object>(frame: T): Omit<T, "op" | "id" | "re" | "ok"> {
  const { op: _op, id: _id, re: _re, ok: _ok, ...rest } = frame as Record<string, unknown>;
  return rest as Omit<T, "op" | "id" | "re" | "ok">;
}

/** Each op with the request and reply the server decodes and encodes; tsc checks both against the SDK's types. */
const exchanges: { [K in OpName]: { req: RequestOf<K>; reply: ReplyOf<K> } } = {
  ping: { req: fields(requests.ping), reply: fields(replies.ping) },
  join: { req: fields(requests.join), reply: fields(replies.join) },
  leave: { req: fields(requests.leave), reply: fields(replies.leave) },
  rooms: { req: fields(requests.rooms), reply: fields(replies.rooms) },
  send: { req: fields(requests.send), reply: fields(replies.send) },
  history: { req: fields(requests.history), reply: fields(replies.history) },
  sync: { req: fields(requests.sync), reply: fields(replies.sync) },
  typing: { req: fields(requests.typing), reply: fields(replies.typing) },
  read: { req: fields(requests.read), reply: fields(replies.read) },
  presence: { req: fields(requests.presence), reply: fields(replies.presence) },
  create: { req: fields(requests.create), reply: fields(replies.create) },
  invite: { req: fields(requests.invite), reply: fields(replies.invite) },
  kick: { req: fields(requests.kick), reply: fields(replies.kick) },
  ban: { req: fields(requests.ban), reply: fields(replies.ban) },
  unban: { req: fields(requests.unban), reply: fields(replies.unban) },
  mute: { req: fields(requests.mute), reply: fields(replies.mute) },
  unmute: { req: fields(requests.unmute), reply: fields(replies.unmute) },
  set_role: { req: fields(requests.set_role), reply: fields(replies.set_role) },
  update_room: { req: fields(requests.update_room), reply: fields(replies.update_room) },
  room_info: { req: fields(requests.room_info), reply: fields(replies.room_info) },
  members: { req: fields(requests.members), reply: fields(replies.members) },
  directory: { req: fields(requests.directory), reply: fields(replies.directory) },
  profile: { req: fields(requests.profile), reply: fields(replies.profile) },
  users: { req: fields(requests.users), reply: fields(replies.users) },
  contact_add: { req: fields(requests.contact_add), reply: fields(replies.contact_add) },
  contact_remove: { req: fields(requests.contact_remove), reply: fields(replies.contact_remove) },
  contacts: { req: fields(requests.contacts), reply: fields(replies.contacts) },
  block: { req: fields(requests.block), reply: fields(replies.block) },
  unblock: { req: fields(requests.unblock), reply: fields(replies.unblock) },
  blocks: { req: fields(requests.blocks), reply: fields(replies.blocks) },
  notify: { req: fields(requests.notify), reply: fields(replies.notify) },
  edit: { req: fields(requests.edit), reply: fields(replies.edit) },
  edits: { req: fields(requests.edits), reply: fields(replies.edits) },
  delete: { req: fields(requests.delete), reply: fields(replies.delete) },
  react: { req: fields(requests.react), reply: fields(replies.react) },
};
const directSend: { req: RequestOf<"send">; reply: ReplyOf<"send"> } = {
  req: fields(requests.send_dm),
  reply: fields(replies.send_dm),
};

async function connected() {
  const server = new FakeServer();
  const conn = new Connection({
    url: "ws://test/v1/ws?token=t",
    socket: server.factory,
    clock: new FakeClock(),
    heartbeat: false,
  });
  conn.start();
  server.current.onopen?.({});
  server.current.deliver(events.hello);
  await flush();
  assert.equal(conn.status, "open", "a real hello opens the connection");
  return { server, conn };
}

describe("the SDK and the server's real frames", () => {
  it("sends every op as the server's decoder expects and resolves with the reply's fields", async () => {
    const { server, conn } = await connected();
    for (const [op, { req, reply }] of [...Object.entries(exchanges), ["send", directSend] as const]) {
      const pending = conn.request(op as OpName, req as never);
      await flush();
      const sent = server.current.take(op);
      assert.deepEqual(sent, { op, id: sent.id, ...req }, `the ${op} frame`);
      server.current.deliver({ re: sent.id, ok: true, ...reply });
      assert.deepEqual(await pending, reply, `the ${op} reply`);
    }
  });

  it("rejects with the code and message of a real error reply", async () => {
    const { server, conn } = await connected();
    const pending = conn.request("join", exchanges.join.req);
    await flush();
    const sent = server.current.take("join");
    server.current.deliver({ ...replies.error, re: sent.id });
    await assert.rejects(pending, { code: replies.error.error.code, message: replies.error.error.message });
  });

  it("passes every real event on as it came", async () => {
    const { server, conn } = await connected();
    const seen: ServerEvent[] = [];
    conn.on("event", (ev) => seen.push(ev));
    const { hello: _hello, ...others } = events;
    for (const ev of Object.values(others)) server.current.deliver(ev);
    await flush();
    assert.deepEqual(seen, Object.values(others));
  });
});
