// Contacts and account deletion in the browser: alice asks bob, bob
// accepts and both see each other online; alice blocks and unblocks him;
// bob deletes his account (a wrong password first), lands on the sign-in
// screen, and his name cannot be registered again.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { ConfabServer, confabBin, launchBrowser, signedUpPage } from "./harness.mjs";

const PASSWORD = "correct horse battery";

describe("contacts and account deletion in the web client", { timeout: 180_000 }, () => {
  let server;
  let browser;
  let alice;
  let bob;
  const pageErrors = [];

  async function signedUp(user) {
    const page = await signedUpPage(browser, server.url, user, PASSWORD, pageErrors, { width: 1280, height: 900 });
    await page.getByRole("button", { name: "Account" }).click();
    return page;
  }

  const contact = (page, user) => page.getByRole("list", { name: "Contacts" }).locator(`[data-user="${user}"]`);

  before(async () => {
    assert.ok(existsSync(confabBin), `no server binary at ${confabBin}: build it or set CONFAB_BIN`);
    server = new ConfabServer(confabBin, { name: "contacts" });
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

  it("asks, accepts, shows who is online, blocks and unblocks", async () => {
    await alice.getByLabel("Add a contact").fill("bob");
    await alice.getByRole("button", { name: "Add contact" }).click();
    await contact(alice, "bob").filter({ hasText: "Request sent" }).waitFor();
    // bob sees the request live and accepts it.
    await contact(bob, "alice").filter({ hasText: "Wants to connect" }).waitFor();
    await contact(bob, "alice").getByRole("button", { name: "Accept" }).click();
    await contact(alice, "bob").filter({ hasText: "Contact · online" }).waitFor();
    await contact(bob, "alice").filter({ hasText: "Contact · online" }).waitFor();

    // A block ends the relation on both sides; unblocking lifts it.
    await contact(alice, "bob").getByRole("button", { name: "Block" }).click();
    const blocked = alice.getByRole("list", { name: "Blocked", exact: true }).locator('[data-user="bob"]');
    await blocked.waitFor();
    await contact(alice, "bob").waitFor({ state: "detached" });
    await contact(bob, "alice").waitFor({ state: "detached" });
    await blocked.getByRole("button", { name: "Unblock" }).click();
    await blocked.waitFor({ state: "detached" });
  });

  it("deletes an account behind its password and a typed confirmation", async () => {
    await bob.getByLabel("Password", { exact: true }).fill("not my password");
    await bob.getByLabel('Type "delete" to confirm').fill("delete");
    await bob.getByRole("button", { name: "Delete account" }).click();
    await bob.getByRole("alert").filter({ hasText: "Wrong password." }).waitFor();

    await bob.getByLabel("Password", { exact: true }).fill(PASSWORD);
    await bob.getByRole("button", { name: "Delete account" }).click();
    await bob.getByRole("button", { name: "Register" }).waitFor();

    // The name is retired.
    await bob.getByLabel("Username").fill("bob");
    await bob.getByLabel("Password").fill(PASSWORD);
    await bob.getByRole("button", { name: "Register" }).click();
    await bob.getByRole("alert").filter({ hasText: /taken/i }).waitFor();
  });
});
