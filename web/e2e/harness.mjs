// Starting a real Confab server and a headless Chromium for the browser tests.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const webDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const repoDir = resolve(webDir, "..");
export const screenshotDir = resolve(process.env.SCREENSHOT_DIR ?? join(repoDir, "target", "web-screenshots"));

/** A port nobody listens on right now: bind port 0, read it, close. */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolvePort(port));
    });
  });
}

/** Polls `check` until it returns a truthy value; fails with `what` after `timeoutMs`. */
export async function until(check, what, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * `confab standalone` on fixed ports and a temp data dir, which survive
 * restarts, so a restart keeps the same address and state.
 */
export class ConfabServer {
  /** `name` names the log file (target/web-e2e/NAME.log); `extraArgs` go after the standard flags. */
  constructor(bin, { name = "server", extraArgs = [] } = {}) {
    this.bin = bin;
    this.extraArgs = extraArgs;
    this.dataDir = mkdtempSync(join(tmpdir(), "confab-e2e-"));
    const logDir = join(repoDir, "target", "web-e2e");
    mkdirSync(logDir, { recursive: true });
    this.logPath = join(logDir, `${name}.log`);
    this.log = createWriteStream(this.logPath, { flags: "w" });
    this.proc = undefined;
    this.exited = undefined;
  }

  async init() {
    this.port = await freePort();
    this.adminPort = await freePort();
    this.url = `http://127.0.0.1:${this.port}`;
    this.adminUrl = `http://127.0.0.1:${this.adminPort}`;
  }

  async start() {
    const args = [
      "standalone",
      "--listen",
      `127.0.0.1:${this.port}`,
      "--admin-listen",
      `127.0.0.1:${this.adminPort}`,
      "--data",
      join(this.dataDir, "data"),
      ...this.extraArgs,
    ];
    this.log.write(`\n$ ${this.bin} ${args.join(" ")}\n`);
    const proc = spawn(this.bin, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info", NO_COLOR: "1" } });
    this.proc = proc;
    proc.stdout.pipe(this.log, { end: false });
    proc.stderr.pipe(this.log, { end: false });
    this.exited = new Promise((r) => proc.on("exit", (code, signal) => r({ code, signal })));
    let exitedEarly;
    this.exited.then((e) => (exitedEarly = e));
    await until(async () => {
      if (exitedEarly) throw new Error(`the server exited (${JSON.stringify(exitedEarly)})\n${this.tail()}`);
      const res = await fetch(`${this.adminUrl}/readyz`);
      return res.status === 200;
    }, `${this.adminUrl}/readyz to answer 200`, 30_000);
  }

  /** SIGTERM, as an orchestrator would, and wait for the process to end. */
  async stop() {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill("SIGTERM");
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), 20_000);
    const result = await this.exited;
    clearTimeout(timer);
    return result;
  }

  tail(lines = 60) {
    try {
      return readFileSync(this.logPath, "utf8").split("\n").slice(-lines).join("\n");
    } catch {
      return "(no server log)";
    }
  }

  async dispose() {
    await this.stop();
    this.log.end();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** The confab binary: CONFAB_BIN (relative to web/), or target/debug/confab. */
export const confabBin = resolve(webDir, process.env.CONFAB_BIN ?? "../target/debug/confab");

export const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";

/** Debian's Chromium, headless; Playwright gives each launch a fresh profile directory. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: chromiumPath,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

export function ensureScreenshotDir() {
  mkdirSync(screenshotDir, { recursive: true });
  return screenshotDir;
}

/**
 * Starts one server (with `extraArgs`) and one browser before the suite's
 * tests and stops both after them. Returns a getter for both, and
 * `openPage()`, which opens the server's page in a fresh desktop context.
 */
export function serverAndBrowser(name, extraArgs) {
  const state = { server: undefined, browser: undefined };
  before(async () => {
    assert.ok(existsSync(confabBin), `no server binary at ${confabBin}: build it or set CONFAB_BIN`);
    state.server = new ConfabServer(confabBin, { name, extraArgs });
    await state.server.init();
    await state.server.start();
    state.browser = await launchBrowser();
  });
  after(async () => {
    await state.browser?.close();
    await state.server?.dispose();
  });
  state.openPage = async () => {
    const page = await (await state.browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    page.setDefaultTimeout(15_000);
    await page.goto(state.server.url);
    return page;
  };
  return state;
}

/** Fills the sign-in form's credentials. */
export async function fillCredentials(page, user, password) {
  await page.getByLabel("Username").fill(user);
  await page.getByLabel("Password").fill(password);
}
