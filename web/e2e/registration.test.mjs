// A server whose registration is closed (the default once an application's
// keys are configured) answers `403 forbidden`; the register form must show
// the server's own explanation, and sign-in must stay available.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { fillCredentials, serverAndBrowser } from "./harness.mjs";

describe("closed registration", { timeout: 120_000 }, () => {
  const suite = serverAndBrowser("registration", ["--registration", "closed"]);

  it("shows the server's refusal on the register form", async () => {
    const page = await suite.openPage();
    await fillCredentials(page, "erin", "password123");
    await page.getByRole("button", { name: "Register" }).click();
    const alert = page.getByRole("alert").filter({ hasText: /registration is closed/i });
    await alert.waitFor();
    assert.equal(await page.getByLabel("Room").count(), 0, "not signed in");
    assert.equal(await page.getByRole("button", { name: "Sign in" }).isEnabled(), true, "sign-in stays available");
  });
});
