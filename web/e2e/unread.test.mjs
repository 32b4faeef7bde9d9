// Unread and mention badges in the browser: bob mentions alice with the
// composer's @ completion, alice's room list badges the mention, the message
// shows it highlighted, and her notification level changes what is badged.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { serverAndBrowser, signedUpPage } from "./harness.mjs";

const PASSWORD = "correct horse battery";

describe("unread counts and mentions in the web client", { timeout: 180_000 }, () => {
  const env = serverAndBrowser("unread");
  const pageErrors = [];
  let alice;
  let bob;

  async function join(page, room) {
    await page.getByLabel("Room").fill(room);
    await page.getByRole("button", { name: "Join", exact: true }).click();
    await page.getByRole("heading", { name: room }).waitFor();
  }

  const roomButton = (page, name) =>
    page
      .getByRole("list", { name: "Conversations" })
      .getByRole("listitem")
      .filter({ has: page.locator(".room-name").getByText(name, { exact: true }) })
      .getByRole("button");

  before(async () => {
    alice = await signedUpPage(env.browser, env.server.url, "alice", PASSWORD, pageErrors);
    bob = await signedUpPage(env.browser, env.server.url, "bob", PASSWORD, pageErrors);
  });

  after(() => assert.deepEqual(pageErrors, [], "no uncaught errors in the pages"));

  it("completes @names, badges mentions and follows the notification level", async () => {
    await join(alice, "team");
    await join(bob, "team");
    // alice looks elsewhere, so what comes to team stays unread.
    await join(alice, "lobby");

    // bob types "@al": the completion offers alice; Tab takes her.
    const composer = bob.getByLabel("Message");
    await composer.fill("");
    await composer.pressSequentially("@al");
    await bob.getByRole("listbox", { name: "Mention suggestions" }).getByRole("option", { name: "@alice" }).waitFor();
    await composer.press("Tab");
    assert.equal(await composer.inputValue(), "@alice ");
    await composer.pressSequentially("look at this");
    await composer.press("Enter");
    await bob.getByRole("list", { name: "Chat history" }).getByText("look at this").waitFor();

    // alice's list badges the mention; opening the room shows it highlighted.
    const team = roomButton(alice, "team");
    await team.filter({ hasText: "@1" }).waitFor();
    assert.match((await team.getAttribute("aria-labelledby")) ?? "", /unread/);
    await team.click();
    await alice.locator(".msg.mentions-me mark.mention-me").getByText("@alice").waitFor();
    await team.filter({ hasText: "@1" }).waitFor({ state: "detached" });

    // At "mentions", plain messages are not badged; at "none", nothing is.
    await alice.getByTestId("notify-level").selectOption("mentions");
    await join(alice, "lobby");
    await bob.getByLabel("Message").fill("just chatting");
    await bob.getByLabel("Message").press("Enter");
    await bob.getByRole("list", { name: "Chat history" }).getByText("just chatting").waitFor();
    await roomButton(alice, "team").filter({ hasText: "just chatting" }).waitFor();
    assert.equal(await roomButton(alice, "team").locator(".badge").count(), 0, "a plain message is not badged at mentions");
    await bob.getByLabel("Message").fill("@alice again");
    await bob.getByLabel("Message").press("Enter");
    await roomButton(alice, "team").filter({ hasText: "@1" }).waitFor();

    // The level is stored: a reload still shows it, and "none" mutes the room.
    await alice.reload();
    await roomButton(alice, "team").filter({ hasText: "@1" }).waitFor();
    await roomButton(alice, "team").click();
    // The control shows the server's level once `rooms` told it (the room
    // may be drawn from the session's first frames a moment before).
    await alice.waitForFunction(
      () => document.querySelector('[data-testid="notify-level"]')?.value === "mentions",
      undefined,
      { timeout: 10_000 },
    );
    await alice.getByTestId("notify-level").selectOption("none");
    await join(alice, "lobby");
    await bob.getByLabel("Message").fill("@alice once more");
    await bob.getByLabel("Message").press("Enter");
    await roomButton(alice, "team").filter({ hasText: "once more" }).waitFor();
    await roomButton(alice, "team").locator(".muted-mark").waitFor();
    assert.equal(await roomButton(alice, "team").locator(".badge").count(), 0, "a muted room shows no badge");
  });
});
