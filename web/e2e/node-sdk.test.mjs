// The SDK under Node (no browser): the packaged build (sdk/dist) against a
// real server, over Node's global WebSocket where there is one (Node 22+) and
// over the `ws` package passed as `socket` (Node 20 has no global one).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import WebSocket from "ws";
import { ConfabClient, login, register } from "../sdk/dist/index.js";
import { ConfabServer, confabBin, until } from "./harness.mjs";

let server;
before(async () => {
  server = new ConfabServer(confabBin, { name: "node-sdk" });
  await server.init();
  await server.start();
});
after(async () => {
  await server?.dispose();
});

const sockets = [["ws package", (url) => new WebSocket(url)]];
if (typeof globalThis.WebSocket === "function") sockets.push(["global WebSocket", undefined]);

for (const [name, socket] of sockets) {
  test(`a bot on Node (${name}) connects, joins and answers messages`, async () => {
    const baseUrl = server.url;
    const suffix = name.replace(/\W/g, "").slice(0, 6);
    const [botName, userName, room] = [`bot${suffix}`, `user${suffix}`, `room-${suffix}`];
    for (const u of [botName, userName]) await register({ baseUrl }, u, "password-123");
    const bot = new ConfabClient({ baseUrl, ...(await login({ baseUrl }, botName, "password-123")), ...(socket ? { socket } : {}) }).connect();
    bot.on("event", (ev) => {
      if (ev.ev === "msg" && ev.from !== bot.me) void bot.send(ev.room, `echo: ${ev.text}`);
    });
    await bot.join(room);

    const user = new ConfabClient({ baseUrl, ...(await login({ baseUrl }, userName, "password-123")), ...(socket ? { socket } : {}) }).connect();
    await user.join(room);
    await user.send(room, "hello bot");
    const texts = () => (user.room(room)?.messages ?? []).map((m) => `${m.from}: ${m.text}`);
    await until(() => texts().includes(`${botName}: echo: hello bot`), `the bot's answer in ${room}`);
    assert.deepEqual(texts(), [`${userName}: hello bot`, `${botName}: echo: hello bot`]);
    bot.close();
    user.close();
  });
}
