// The TypeScript example bot (examples/bots/ts/bot.ts) as a user runs it:
// its own Node process against a real server, with a bot account the server
// API made. It answers `!help`, `!time` and a mention, never itself.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import WebSocket from "ws";
import { ConfabClient, login, register } from "../sdk/dist/index.js";
import { ConfabServer, confabBin, launchBrowser, repoDir, signedUpPage, until, webDir } from "./harness.mjs";

const KEY = "e2e-bots-key-0123456789abcdef";
const socket = typeof globalThis.WebSocket === "function" ? {} : { socket: (url) => new WebSocket(url) };

let server;
let bot;
let browser;
before(async () => {
  const keys = join(mkdtempSync(join(tmpdir(), "confab-bots-")), "keys");
  writeFileSync(keys, `app:${KEY}\n`);
  server = new ConfabServer(confabBin, { name: "bots", extraArgs: ["--api-key-file", keys] });
  await server.init();
  await server.start();
});
after(async () => {
  await browser?.close();
  bot?.kill("SIGTERM");
  await server?.dispose();
});

async function api(path, body) {
  const res = await fetch(`${server.url}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  assert.ok(res.ok, `${path}: ${res.status} ${text}`);
  return JSON.parse(text);
}

test("the TypeScript bot answers !help, !time and a mention, and not itself", async () => {
  const baseUrl = server.url;
  const created = await api("/v1/server/users", { user: "helpbot", password: "bot-password-123", bot: true });
  assert.equal(created.bot, true);

  let output = "";
  bot = spawn(process.execPath, ["--import", "tsx", "--experimental-websocket", join(repoDir, "examples/bots/ts/bot.ts")], {
    cwd: webDir,
    env: { ...process.env, CONFAB_URL: baseUrl, BOT_USER: "helpbot", BOT_PASSWORD: "bot-password-123", BOT_ROOMS: "lobby" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  bot.stdout.on("data", (d) => (output += d));
  bot.stderr.on("data", (d) => (output += d));
  await until(() => output.includes("helpbot answers in lobby"), `the bot to start (output: ${output})`);

  await register({ baseUrl }, "ann", "password-123");
  const ann = new ConfabClient({ baseUrl, ...(await login({ baseUrl }, "ann", "password-123")), ...socket }).connect();
  await ann.join("lobby");
  const texts = () => (ann.room("lobby")?.messages ?? []).map((m) => `${m.from}: ${m.text}`);
  const botSaid = () => texts().filter((t) => t.startsWith("helpbot: "));

  const help = await ann.send("lobby", "!help");
  await until(() => botSaid().length === 1, `the answer to !help (${texts()})`);
  const answer = ann.room("lobby").messages.find((m) => m.from === "helpbot");
  assert.match(answer.text, /!time/);
  assert.equal(answer.reply_to, help.seq);

  await ann.send("lobby", "!time");
  await until(() => botSaid().length === 2, `the answer to !time (${texts()})`);
  assert.match(botSaid()[1], /^helpbot: It is \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\.$/);

  // The bot's own `!help`, published in its name, gets no answer; the
  // mention after it (answered in the room's order) proves the bot saw it.
  await api("/v1/server/publish", { room: "lobby", from: "helpbot", text: "!help", cid: "own-1" });
  await ann.send("lobby", "thanks @helpbot");
  await until(() => botSaid().includes("helpbot: Hello @ann! I am a bot: try !help."), `the answer to a mention (${texts()})`);
  assert.deepEqual(botSaid().slice(2), ["helpbot: !help", "helpbot: Hello @ann! I am a bot: try !help."]);

  // Shown as a bot to other users.
  const users = await ann.request("users", { users: ["helpbot", "ann"] });
  assert.deepEqual(users.users.map((u) => [u.user, u.bot ?? false]), [["helpbot", true], ["ann", false]]);
  ann.close();
});

test("the web client shows a bot badge by the bot's name, in messages and members", { timeout: 120_000 }, async () => {
  // After the test above: helpbot has spoken in lobby.
  browser = await launchBrowser();
  const pageErrors = [];
  const page = await signedUpPage(browser, server.url, "cara", "correct horse battery", pageErrors);
  await page.getByLabel("Room").fill("lobby");
  await page.getByRole("button", { name: "Join", exact: true }).click();
  await page.getByRole("heading", { name: "lobby" }).waitFor();
  const author = (user) => page.locator(`.msg-author[data-bot-user="${user}"]`).first();
  await author("helpbot").locator(".bot-badge").waitFor();
  assert.equal(await author("helpbot").locator(".bot-badge").textContent(), "bot");
  await author("ann").waitFor();
  assert.equal(await author("ann").locator(".bot-badge").count(), 0, "ann is no bot");
  await page.locator(".room-panel summary").click();
  await page.locator('.member-name[data-bot-user="helpbot"] .bot-badge').waitFor();
  assert.equal(await page.locator('.member-name[data-bot-user="cara"] .bot-badge').count(), 0);
  assert.deepEqual(pageErrors, []);
});
