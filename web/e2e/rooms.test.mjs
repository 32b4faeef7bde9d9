// A private room in the browser, from invitation to kick: alice creates it,
// invites bob, bob accepts and reads along, alice kicks him and his client
// lets go of the room; the directory never lists it.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { ConfabServer, confabBin, launchBrowser, signedUpPage } from "./harness.mjs";

const PASSWORD = "correct horse battery";

describe("a private room in the web client", { timeout: 180_000 }, () => {
  let server;
  let browser;
  let alice;
  let bob;
  const pageErrors = [];

  async function signedUp(user) {
    const page = await signedUpPage(browser, server.url, user, PASSWORD, pageErrors, { width: 1280, height: 800 });
    return page;
  }

  const roomItem = (page, name) =>
    page
      .getByRole("list", { name: "Conversations" })
      .getByRole("listitem")
      .filter({ has: page.locator(".room-name").getByText(name, { exact: true }) });

  before(async () => {
    assert.ok(existsSync(confabBin), `no server binary at ${confabBin}: build it or set CONFAB_BIN`);
    server = new ConfabServer(confabBin, { name: "rooms" });
    await server.init();
    await server.start();
    browser = await launchBrowser();
    alice = await signedUp("alice");
    bob = await signedUp("bob");
  });

  after(async () => {
    await browser?.close();
    await server?.dispose();
    assert.deepEqual(pageErrors, [], "no uncaught errors in the pages");
  });

  it("is created private, joined by invitation, and left behind on a kick", async () => {
    await alice.getByLabel("Name to create").fill("team");
    await alice.getByLabel("Private").check();
    await alice.getByRole("button", { name: "Create" }).click();
    await alice.getByRole("heading", { name: "team" }).waitFor();

    // Not invited yet: bob can neither join nor find it.
    await bob.getByLabel("Room").fill("team");
    await bob.getByRole("button", { name: "Join", exact: true }).click();
    await bob.getByRole("alert").filter({ hasText: /could not join/i }).waitFor();
    await bob.getByLabel("Search the directory").fill("team");
    await bob.getByRole("button", { name: "Search" }).click();
    await bob.getByRole("list", { name: "Directory" }).getByText("No room found.").waitFor();

    // alice invites bob from the room's details; bob accepts.
    await alice.locator(".room-panel summary").click();
    await alice.locator(".room-about").filter({ hasText: "private" }).filter({ hasText: "you are owner" }).waitFor();
    await alice.getByLabel("Invite by name").fill("bob");
    await alice.getByRole("button", { name: "Invite", exact: true }).click();
    await alice.getByText("Invited bob.").waitFor();
    await bob.getByRole("button", { name: "Accept invitation #team" }).click();
    await bob.getByRole("heading", { name: "team" }).waitFor();
    await alice.getByLabel("Message").fill("welcome, bob");
    await alice.getByLabel("Message").press("Enter");
    await bob.getByRole("list", { name: "Chat history" }).getByText("welcome, bob").waitFor();

    // The member list shows roles and, to the owner, what she may do.
    const members = alice.getByRole("list", { name: "Members" });
    await members.locator('[data-user="bob"]').filter({ hasText: "member" }).waitFor();
    assert.equal(await members.locator('[data-user="alice"]').getByRole("button").count(), 0, "nothing to do to oneself");
    await alice.getByRole("button", { name: "Kick bob" }).click();

    // bob's client lets go of the room, and it stays closed to him.
    await roomItem(bob, "team").waitFor({ state: "detached" });
    await bob.getByRole("heading", { name: "team" }).waitFor({ state: "detached" });
    await members.locator('[data-user="bob"]').waitFor({ state: "detached" });
    await bob.getByLabel("Room").fill("team");
    await bob.getByRole("button", { name: "Join", exact: true }).click();
    await bob.getByRole("alert").filter({ hasText: /could not join/i }).waitFor();
  });
});
