// Messages that live, across two people in two browsers: bob reacts to
// alice's message, alice fixes a typo and bob sees the "edited" mark and the
// earlier version, bob replies with the message quoted, alice deletes hers
// after confirming and bob sees it go.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { ConfabServer, confabBin, launchBrowser } from "./harness.mjs";

const PASSWORD = "correct horse battery";

describe("replies, edits, deletion and reactions in the web client", { timeout: 180_000 }, () => {
  let server;
  let browser;
  let alice;
  let bob;
  const pageErrors = [];

  async function signedUp(user) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    context.setDefaultTimeout(15_000);
    const page = await context.newPage();
    page.on("pageerror", (err) => pageErrors.push(`${user}: ${err.message}`));
    await page.goto(server.url);
    await page.getByLabel("Username").fill(user);
    await page.getByLabel("Password").fill(PASSWORD);
    await page.getByRole("button", { name: "Register" }).click();
    await page.getByLabel("Room").waitFor();
    return page;
  }

  async function join(page, room) {
    await page.getByLabel("Room").fill(room);
    await page.getByRole("button", { name: "Join", exact: true }).click();
    await page.getByRole("heading", { name: room }).waitFor();
  }

  async function say(page, text) {
    await page.getByLabel("Message").fill(text);
    await page.getByLabel("Message").press("Enter");
  }

  const history = (page) => page.getByRole("list", { name: "Chat history" });
  const message = (page, text) => history(page).locator("li.msg").filter({ hasText: text });

  before(async () => {
    assert.ok(existsSync(confabBin), `no server binary at ${confabBin}: build it or set CONFAB_BIN`);
    server = new ConfabServer(confabBin, { name: "lifecycle" });
    await server.init();
    await server.start();
    browser = await launchBrowser();
    alice = await signedUp("alice");
    bob = await signedUp("bob");
    await join(alice, "lounge");
    await join(bob, "lounge");
  });

  after(async () => {
    await browser?.close();
    await server?.dispose();
    assert.deepEqual(pageErrors, [], "no uncaught errors in the pages");
  });

  it("reacts, edits, replies and deletes, and each side sees the other's changes", async () => {
    await say(alice, "helo wrld");
    const bobsView = message(bob, "helo wrld");
    await bobsView.waitFor();

    // bob reacts from the picker; both see the count, bob's chip is pressed.
    await bobsView.getByRole("button", { name: "React", exact: true }).click();
    await bobsView.getByRole("button", { name: "React with 👍" }).click();
    await message(alice, "helo wrld").getByRole("button", { name: "👍 1" }).waitFor();
    const chip = bobsView.getByRole("button", { name: "👍 1" });
    await chip.waitFor();
    assert.equal(await chip.getAttribute("aria-pressed"), "true");
    // alice adds hers by pressing the chip.
    await message(alice, "helo wrld").getByRole("button", { name: "👍 1" }).click();
    await bobsView.getByRole("button", { name: "👍 2" }).waitFor();

    // alice fixes the typo; bob sees the new text, the mark and the old text.
    await message(alice, "helo wrld").getByRole("button", { name: "Edit", exact: true }).click();
    await alice.locator(".compose-banner").filter({ hasText: "Editing your message" }).waitFor();
    assert.equal(await alice.getByLabel("Message").inputValue(), "helo wrld");
    await say(alice, "hello world");
    const edited = message(bob, "hello world");
    await edited.getByRole("button", { name: "(edited)" }).click();
    await edited.getByRole("list", { name: "Earlier versions" }).getByText("helo wrld").waitFor();
    await edited.getByRole("button", { name: "👍 2" }).waitFor();
    assert.equal(await message(bob, "hello world").getByRole("button", { name: "Edit", exact: true }).count(), 0, "bob cannot edit it");

    // bob replies; alice sees the quote.
    await edited.getByRole("button", { name: "Reply", exact: true }).click();
    await bob.locator(".compose-banner").filter({ hasText: "Replying to alice" }).waitFor();
    await say(bob, "agreed");
    const reply = message(alice, "agreed");
    await reply.locator(".msg-quote").filter({ hasText: "hello world" }).waitFor();

    // alice deletes hers after confirming; bob sees it go, quote included.
    alice.once("dialog", (dialog) => dialog.accept());
    await message(alice, "hello world").filter({ hasNot: alice.locator(".msg-quote") }).getByRole("button", { name: "Delete", exact: true }).click();
    await history(bob).locator("li.msg.deleted").getByText("Message deleted").waitFor();
    await message(bob, "agreed").locator(".msg-quote").filter({ hasText: "a deleted message" }).waitFor();
    assert.equal(await history(bob).locator("li.msg.deleted .reaction").count(), 0, "its reactions went with it");
  });
});
