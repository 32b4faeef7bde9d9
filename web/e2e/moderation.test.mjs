// Moderation in the browser: the owner bans bob, who is let go of the room
// and cannot come back until she unbans him by name; she mutes him for an
// hour, and his message is refused; she makes the room private, and it
// leaves the directory.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { serverAndBrowser, signedUpPage } from "./harness.mjs";

const PASSWORD = "correct horse battery";

describe("unban, mute for a while and visibility in the web client", { timeout: 180_000 }, () => {
  const env = serverAndBrowser("moderation");
  const pageErrors = [];
  let alice;
  let bob;

  async function join(page, room) {
    await page.getByLabel("Room").fill(room);
    await page.getByRole("button", { name: "Join", exact: true }).click();
  }

  const roomItem = (page, name) =>
    page
      .getByRole("list", { name: "Conversations" })
      .getByRole("listitem")
      .filter({ has: page.locator(".room-name").getByText(name, { exact: true }) });

  before(async () => {
    alice = await signedUpPage(env.browser, env.server.url, "alice", PASSWORD, pageErrors);
    bob = await signedUpPage(env.browser, env.server.url, "bob", PASSWORD, pageErrors);
  });

  after(() => assert.deepEqual(pageErrors, [], "no uncaught errors in the pages"));

  it("bans then unbans, mutes for a duration and makes the room private", async () => {
    await alice.getByLabel("Name to create").fill("club");
    await alice.getByRole("button", { name: "Create" }).click();
    await alice.getByRole("heading", { name: "club" }).waitFor();
    await join(bob, "club");
    await bob.getByRole("heading", { name: "club" }).waitFor();

    // A plain member sees no moderation at all.
    await bob.locator(".room-panel summary").click();
    await bob.locator(".room-about").filter({ hasText: "you are member" }).waitFor();
    assert.equal(await bob.getByLabel("Unban by name").isVisible(), false);
    assert.equal(await bob.getByLabel("Visibility").isVisible(), false);

    await alice.locator(".room-panel summary").click();
    const members = alice.getByRole("list", { name: "Members" });
    await members.locator('[data-user="bob"]').waitFor();
    await alice.getByRole("button", { name: "Ban bob" }).click();
    await roomItem(bob, "club").waitFor({ state: "detached" });
    await members.locator('[data-user="bob"]').waitFor({ state: "detached" });
    await join(bob, "club");
    await bob.getByRole("alert").filter({ hasText: /could not join/i }).waitFor();

    await alice.getByLabel("Unban by name").fill("bob");
    await alice.getByRole("button", { name: "Unban", exact: true }).click();
    await alice.getByText("Unbanned bob.").waitFor();
    await join(bob, "club");
    await bob.getByRole("heading", { name: "club" }).waitFor();
    await members.locator('[data-user="bob"]').waitFor();

    // Muted for an hour: the panel says until when, and bob's message is refused.
    await alice.getByLabel("Mute bob for").selectOption({ label: "1 hour" });
    await alice.getByRole("button", { name: "Mute bob", exact: true }).click();
    await alice.getByText(/^Muted bob until /).waitFor();
    await bob.getByLabel("Message").fill("can I still talk?");
    await bob.getByLabel("Message").press("Enter");
    await bob.getByText(/Not sent: .*muted/).waitFor();
    await alice.getByLabel("Message").fill("the owner still can");
    await alice.getByLabel("Message").press("Enter");
    await bob.getByRole("list", { name: "Chat history" }).getByText("the owner still can").waitFor();

    // Private: out of the directory.
    await bob.getByLabel("Search the directory").fill("club");
    await bob.getByRole("button", { name: "Search" }).click();
    await bob.getByRole("list", { name: "Directory" }).getByText("#club").waitFor();
    await alice.getByLabel("Visibility").selectOption("private");
    await alice.locator(".room-panel").getByRole("button", { name: "Save" }).click();
    await alice.locator(".room-about").filter({ hasText: "private" }).waitFor();
    // bob's panel (closed since he came back) follows the room's event.
    await bob.locator(".room-about").filter({ hasText: "private" }).waitFor({ state: "attached" });
    await bob.getByRole("button", { name: "Search" }).click();
    await bob.getByRole("list", { name: "Directory" }).getByText("No room found.").waitFor();
  });
});
