// When the token expires the server says `bye token_expired`; the app must
// send the user back to the sign-in screen with a word of explanation, and
// signing in again must work.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { ConfabServer, confabBin, launchBrowser } from "./harness.mjs";

describe("an expired session", { timeout: 120_000 }, () => {
  let server;
  let browser;

  before(async () => {
    assert.ok(existsSync(confabBin), `no server binary at ${confabBin}: build it or set CONFAB_BIN`);
    server = new ConfabServer(confabBin, { name: "expiry", extraArgs: ["--token-ttl-secs", "3"] });
    await server.init();
    await server.start();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.dispose();
  });

  it("returns to sign-in with a notice, and signing in again works", async () => {
    const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    page.setDefaultTimeout(15_000);
    await page.goto(server.url);
    await page.getByLabel("Username").fill("dora");
    await page.getByLabel("Password").fill("password123");
    await page.getByRole("button", { name: "Register" }).click();
    await page.getByLabel("Room").waitFor();
    // Three seconds later the server ends the session.
    await page.getByRole("status").filter({ hasText: /session expired/i }).waitFor();
    await page.getByRole("button", { name: "Sign in" }).waitFor();
    assert.equal(await page.evaluate(() => localStorage.getItem("confab.session")), null, "the stale token is gone");
    await page.getByLabel("Username").fill("dora");
    await page.getByLabel("Password").fill("password123");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByLabel("Room").waitFor();
  });
});
