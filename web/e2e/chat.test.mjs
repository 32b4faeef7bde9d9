// Browser end-to-end test of the web client against a real `confab standalone`.
//
// alice uses a desktop browser (1280x800), bob a phone (390x844). They sign
// up, chat in a room and by DM, see typing, presence and unread counts; alice
// reloads; the server restarts mid-conversation. Steps run in order and share
// state; screenshots land in target/web-screenshots/.
//
//   CONFAB_BIN=../target/debug/confab node --test e2e/
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ConfabServer, confabBin as bin, ensureScreenshotDir, launchBrowser, until } from "./harness.mjs";

const PASSWORD = "correct horse battery";
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

/** Every message sent to the room `lobby`, in order: what "nothing lost" is checked against. */
const lobby = [];

let server;
let browser;
let alice; // desktop page
let bob; // phone page
let carol; // desktop page, for seeding history and sign-in checks
const pageErrors = [];
let shots;

async function newPage(viewport, name) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1, isMobile: viewport === PHONE, hasTouch: viewport === PHONE });
  context.setDefaultTimeout(15_000);
  const page = await context.newPage();
  page.on("pageerror", (err) => pageErrors.push(`${name}: ${err.message}`));
  await page.goto(server.url);
  return page;
}

const shot = (page, name) => page.screenshot({ path: join(shots, `${name}.png`) });
const history = (page) => page.getByRole("list", { name: "Chat history" });
const message = (page, text) => history(page).getByRole("listitem").filter({ hasText: text });
const roomList = (page) => page.getByRole("list", { name: "Conversations" });
// By the room's name alone: an item's text also holds its last message.
const roomItem = (page, name) =>
  roomList(page)
    .getByRole("listitem")
    .filter({ has: page.locator(".room-name").getByText(name, { exact: true }) });
const banner = (page) => page.getByRole("status").filter({ hasText: /reconnecting/i });
const messageTexts = (page) => history(page).locator(".msg-text").allTextContents();

async function signUp(page, user) {
  await page.getByLabel("Username").fill(user);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Register" }).click();
  await page.getByLabel("Room").waitFor();
}

async function joinRoom(page, room) {
  await page.getByLabel("Room").fill(room);
  await page.getByRole("button", { name: "Join" }).click();
  await page.getByRole("heading", { name: room }).waitFor();
}

async function say(page, text, { room = "lobby", click = false } = {}) {
  await page.getByLabel("Message").fill(text);
  if (click) await page.getByRole("button", { name: "Send", exact: true }).click();
  else await page.getByLabel("Message").press("Enter");
  if (room === "lobby") lobby.push(text);
  await message(page, text).waitFor();
}

async function backToList(page) {
  await page.getByRole("button", { name: "Back to conversations" }).click();
  await roomList(page).waitFor();
}

/** Sends `count` messages to `room` over a raw WebSocket of the page's session; returns their seqs. */
function seed(page, room, count) {
  return page.evaluate(
    async ({ room, count }) => {
      const { token } = JSON.parse(localStorage.getItem("confab.session"));
      const ws = new WebSocket(`${location.origin.replace(/^http/, "ws")}/v1/ws?token=${encodeURIComponent(token)}`);
      const waiting = new Map();
      let id = 0;
      await new Promise((resolveHello, reject) => {
        ws.onmessage = (e) => {
          const f = JSON.parse(e.data);
          if (f.ev === "hello") resolveHello();
          else if (f.re !== undefined) waiting.get(f.re)?.(f);
        };
        ws.onerror = () => reject(new Error("websocket failed"));
      });
      const call = (op, fields) =>
        new Promise((r) => {
          const i = ++id;
          waiting.set(i, r);
          ws.send(JSON.stringify({ op, id: i, ...fields }));
        });
      const must = async (op, fields) => {
        for (;;) {
          const reply = await call(op, fields);
          if (reply.ok) return reply;
          if (reply.error?.code !== "rate_limited") throw new Error(`${op}: ${JSON.stringify(reply)}`);
          await new Promise((r) => setTimeout(r, 100)); // the protocol's "retry later"
        }
      };
      await must("join", { room });
      const seqs = [];
      for (let i = 1; i <= count; i++) {
        const reply = await must("send", { room, text: `${room} message ${String(i).padStart(3, "0")}`, cid: `seed-${room}-${i}` });
        seqs.push(reply.seq);
      }
      ws.close();
      return seqs;
    },
    { room, count },
  );
}

describe("web client against a real server", { timeout: 300_000 }, () => {
  before(async () => {
    assert.ok(existsSync(bin), `no server binary at ${bin}: build it or set CONFAB_BIN`);
    shots = ensureScreenshotDir();
    server = new ConfabServer(bin, { name: "chat" });
    await server.init();
    await server.start();
    browser = await launchBrowser();
    alice = await newPage(DESKTOP, "alice");
    bob = await newPage(PHONE, "bob");
  });

  after(async () => {
    await browser?.close();
    await server?.dispose();
  });

  /** Wraps a step so that its failure comes with the server's log. */
  function step(name, fn) {
    it(name, async () => {
      try {
        await fn();
      } catch (err) {
        err.message += `\n--- last lines of the server log (${server.logPath}) ---\n${server.tail()}`;
        throw err;
      } finally {
        assert.deepEqual(pageErrors, [], "no uncaught errors in the pages");
      }
    });
  }

  step("serves the app at / and two users sign up", async () => {
    await alice.getByRole("button", { name: "Sign in" }).waitFor();
    await shot(alice, "desktop-sign-in");
    await shot(bob, "phone-sign-in");
    await signUp(alice, "alice");
    await signUp(bob, "bob");
  });

  step("a wrong password is refused and the right one signs in", async () => {
    const res = await fetch(`${server.url}/v1/auth/register`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: "carol", password: PASSWORD }),
    });
    assert.equal(res.status, 201);
    carol = await newPage(DESKTOP, "carol");
    await carol.getByLabel("Username").fill("carol");
    await carol.getByLabel("Password").fill("wrong password");
    await carol.getByRole("button", { name: "Sign in" }).click();
    await carol.getByRole("alert").filter({ hasText: /wrong/i }).waitFor();
    await carol.getByLabel("Password").fill(PASSWORD);
    await carol.getByRole("button", { name: "Sign in" }).click();
    await carol.getByLabel("Room").waitFor();
  });

  step("both join a room and exchange messages", async () => {
    await joinRoom(alice, "lobby");
    await joinRoom(bob, "lobby");
    await say(alice, "Hello from alice, on a desktop");
    await message(bob, "Hello from alice, on a desktop").waitFor();
    await say(bob, "Hi alice! bob here, on a phone.", { click: true });
    await message(alice, "Hi alice! bob here, on a phone.").waitFor();
  });

  step("the other side sees who is typing", async () => {
    await bob.getByLabel("Message").fill("I am typing something…");
    await alice.getByText("bob is typing").waitFor();
    await shot(alice, "desktop-chat");
    await bob.getByLabel("Message").fill("");
  });

  step("shows who is online", async () => {
    await alice.locator(".conv-subtitle").filter({ hasText: /online/ }).filter({ hasText: "bob" }).waitFor();
    await bob.locator(".conv-subtitle").filter({ hasText: "alice" }).waitFor();
  });

  step("counts unread messages per room and clears them when read", async () => {
    await backToList(bob);
    await say(alice, "First while bob looks away");
    await say(alice, "Second while bob looks away");
    await roomList(bob).getByRole("button", { name: "lobby 2 unread", exact: true }).waitFor();
    await shot(bob, "phone-rooms");
    await roomItem(bob, "lobby").getByRole("button").click();
    await message(bob, "Second while bob looks away").waitFor();
    await shot(bob, "phone-chat");
    await backToList(bob);
    await roomList(bob).getByRole("button", { name: "lobby", exact: true }).waitFor();
  });

  step("the room list's previews are text that screen readers get", async () => {
    const preview = "alice: Second while bob looks away";
    const item = roomItem(bob, "lobby");
    await item.getByText(preview, { exact: true }).waitFor();
    assert.ok((await item.textContent()).includes(preview), "the preview is in the item's text");
    // What Chromium hands to assistive technology: the button keeps its short
    // name and is described by the preview, whose text is not hidden.
    const cdp = await bob.context().newCDPSession(bob);
    try {
      const { nodes } = await cdp.send("Accessibility.getFullAXTree");
      const buttons = nodes.filter((n) => !n.ignored && n.role?.value === "button" && n.name?.value === "lobby");
      assert.equal(buttons.length, 1, "one button named lobby");
      assert.equal(buttons[0].description?.value, preview, "the lobby button is described by its preview");
      const texts = nodes.filter((n) => !n.ignored && n.role?.value === "StaticText" && n.name?.value === preview);
      assert.equal(texts.length, 1, "the preview text is in the accessibility tree");
    } finally {
      await cdp.detach();
    }
  });

  step("direct messages by user name", async () => {
    await alice.getByLabel("User").fill("bob");
    await alice.getByLabel("User").press("Enter");
    await alice.getByRole("heading", { name: "bob" }).waitFor();
    await say(alice, "psst, just between us", { room: "dm" });
    // bob is on his room list: the DM appears with one unread message.
    await roomList(bob).getByRole("button", { name: "alice 1 unread", exact: true }).waitFor();
    await roomItem(bob, "alice").getByRole("button").click();
    await message(bob, "psst, just between us").waitFor();
    await say(bob, "Got it, my lips are sealed", { room: "dm" });
    await message(alice, "Got it, my lips are sealed").waitFor();
    await shot(alice, "desktop-dm");
    await backToList(bob);
  });

  step("older history loads when scrolling up", async () => {
    const seqs = await seed(carol, "archive", 120);
    for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `seqs strictly increase: ${seqs}`);
    await joinRoom(alice, "archive");
    await message(alice, "archive message 120").waitFor();
    assert.equal(await message(alice, "archive message 001").count(), 0, "the first page holds only the newest messages");
    await until(async () => {
      await history(alice).evaluate((list) => {
        list.parentElement.scrollTop = 0;
      });
      return (await message(alice, "archive message 001").count()) === 1;
    }, "the oldest message after scrolling up", 30_000);
    const texts = await messageTexts(alice);
    const expected = Array.from({ length: 120 }, (_, i) => `archive message ${String(i + 1).padStart(3, "0")}`);
    assert.deepEqual(texts, expected, "all 120 messages, in order, once each");
    await alice.getByText("This is the beginning of #archive.").waitFor();
    await shot(alice, "desktop-history-top");
  });

  step("leaving a room takes it off the list", async () => {
    await roomList(alice).getByRole("button", { name: "archive", exact: true }).click();
    await alice.getByRole("heading", { name: "archive" }).waitFor();
    await alice.getByRole("button", { name: "Leave" }).click();
    await roomItem(alice, "archive").waitFor({ state: "detached" });
    await alice.getByText("Welcome to Confab").waitFor();
  });

  step("a reload stays signed in and shows the history again", async () => {
    await roomItem(alice, "lobby").getByRole("button").click();
    await alice.getByRole("heading", { name: "lobby" }).waitFor();
    await alice.reload();
    await alice.getByLabel("Room").waitFor();
    assert.equal(await alice.getByLabel("Username").count(), 0, "not asked to sign in again");
    await alice.getByRole("heading", { name: "lobby" }).waitFor();
    await message(alice, lobby[lobby.length - 1]).waitFor();
    assert.deepEqual(await messageTexts(alice), lobby);
  });

  step("a server restart mid-conversation shows the banner and loses nothing", async () => {
    await roomItem(bob, "lobby").getByRole("button").click();
    await message(bob, lobby[lobby.length - 1]).waitFor();
    await say(alice, "Just before the restart");
    await message(bob, "Just before the restart").waitFor();

    const exit = await server.stop();
    assert.ok(exit, "the server stopped");
    await banner(alice).waitFor();
    await banner(bob).waitFor();
    // bob keeps typing while the server is away; the message waits in the outbox.
    await bob.getByLabel("Message").fill("Sent while the server was down");
    await bob.getByLabel("Message").press("Enter");
    lobby.push("Sent while the server was down");
    await message(bob, "Sent while the server was down").getByText("Sending…").waitFor();
    await shot(alice, "desktop-reconnecting");
    await shot(bob, "phone-reconnecting");

    await server.start();
    await banner(alice).waitFor({ state: "hidden", timeout: 30_000 });
    await banner(bob).waitFor({ state: "hidden", timeout: 30_000 });
    await message(alice, "Sent while the server was down").waitFor();
    await until(async () => (await message(bob, "Sent while the server was down").getByText("Sending…").count()) === 0, "bob's message to be acknowledged");
    await say(alice, "And after the restart");
    await message(bob, "And after the restart").waitFor();

    assert.deepEqual(await messageTexts(alice), lobby, "alice has every message once, in order");
    assert.deepEqual(await messageTexts(bob), lobby, "bob has every message once, in order");
    await shot(alice, "desktop-after-restart");
  });

  step("signing out forgets the session; signing in brings the rooms back", async () => {
    await alice.getByRole("button", { name: "Sign out" }).click();
    await alice.getByRole("button", { name: "Sign in" }).waitFor();
    assert.equal(await alice.evaluate(() => localStorage.getItem("confab.session")), null);
    await alice.getByLabel("Username").fill("alice");
    await alice.getByLabel("Password").fill(PASSWORD);
    await alice.getByRole("button", { name: "Sign in" }).click();
    await roomList(alice).getByRole("button", { name: "lobby", exact: true }).click();
    await message(alice, "And after the restart").waitFor();
  });
});
