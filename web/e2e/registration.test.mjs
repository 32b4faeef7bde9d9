// A server whose registration is closed (the default once an application's
// keys are configured) answers `403 forbidden`; the register form must show
// the server's own explanation, and sign-in must stay available.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { ConfabServer, confabBin, launchBrowser } from "./harness.mjs";

describe("closed registration", { timeout: 120_000 }, () => {
  let server;
  let browser;

  before(async () => {
    assert.ok(existsSync(confabBin), `no server binary at ${confabBin}: build it or set CONFAB_BIN`);
    server = new ConfabServer(confabBin, { name: "registration", extraArgs: ["--registration", "closed"] });
    await server.init();
    await server.start();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.dispose();
  });

  it("shows the server's refusal on the register form", async () => {
    const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    page.setDefaultTimeout(15_000);
    await page.goto(server.url);
    await page.getByLabel("Username").fill("erin");
    await page.getByLabel("Password").fill("password123");
    await page.getByRole("button", { name: "Register" }).click();
    const alert = page.getByRole("alert").filter({ hasText: /registration is closed/i });
    await alert.waitFor();
    assert.equal(await page.getByLabel("Room").count(), 0, "not signed in");
    assert.equal(await page.getByRole("button", { name: "Sign in" }).isEnabled(), true, "sign-in stays available");
  });
});
