// When the token expires the server says `bye token_expired`; the app must
// send the user back to the sign-in screen with a word of explanation, and
// signing in again must work.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { fillCredentials, serverAndBrowser } from "./harness.mjs";

describe("an expired session", { timeout: 120_000 }, () => {
  const suite = serverAndBrowser("expiry", ["--token-ttl-secs", "3"]);

  it("returns to sign-in with a notice, and signing in again works", async () => {
    const page = await suite.openPage();
    await fillCredentials(page, "dora", "password123");
    await page.getByRole("button", { name: "Register" }).click();
    await page.getByLabel("Room").waitFor();
    // Three seconds later the server ends the session.
    await page.getByRole("status").filter({ hasText: /session expired/i }).waitFor();
    await page.getByRole("button", { name: "Sign in" }).waitFor();
    assert.equal(await page.evaluate(() => localStorage.getItem("confab.session")), null, "the stale token is gone");
    await fillCredentials(page, "dora", "password123");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByLabel("Room").waitFor();
  });
});
