// Starting a real Confab server and a headless Chromium for the browser tests.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createHmac, randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import WebSocket from "ws";

export const webDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const repoDir = resolve(webDir, "..");
export const screenshotDir = resolve(process.env.SCREENSHOT_DIR ?? join(repoDir, "target", "web-screenshots"));

/** Ports this process has handed out: the kernel may offer a closed port again before its server binds it. */
const handedOut = new Set();

/** Binds port 0 and reads the port; the server stays open until the caller closes it. */
function openEphemeral() {
  return new Promise((resolveServer, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => resolveServer(srv));
  });
}

/**
 * `n` distinct ports nobody listens on right now, none handed out before by
 * this process. Every probe stays bound until all are found, so the kernel
 * cannot give the same port twice.
 */
export async function freePorts(n) {
  const open = [];
  const ports = [];
  try {
    while (ports.length < n) {
      const srv = await openEphemeral();
      open.push(srv);
      const { port } = srv.address();
      if (!handedOut.has(port)) {
        handedOut.add(port);
        ports.push(port);
      }
    }
  } finally {
    await Promise.all(open.map((srv) => new Promise((r) => srv.close(r))));
  }
  return ports;
}

/** One port nobody listens on right now (see `freePorts`). */
export async function freePort() {
  const [port] = await freePorts(1);
  return port;
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
    [this.port, this.adminPort] = await freePorts(2);
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
 * With `{ cluster: true }` the server is a {@link ConfabCluster} (its
 * gateways take `extraArgs`); `state.server.urls` has each gateway's page.
 */
export function serverAndBrowser(name, extraArgs, { cluster = false } = {}) {
  const state = { server: undefined, browser: undefined };
  before(async () => {
    assert.ok(existsSync(confabBin), `no server binary at ${confabBin}: build it or set CONFAB_BIN`);
    state.server = cluster
      ? new ConfabCluster(confabBin, { name, gatewayArgs: extraArgs })
      : new ConfabServer(confabBin, { name, extraArgs });
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

/** What a cluster needs from `source target/infra/env` (scripts/infra up kafka cql s3). */
const CLUSTER_ENV = [
  "KAFKA_BOOTSTRAP",
  "CQL_CONTACT_POINTS",
  "CONFAB_TEST_S3_ENDPOINT",
  "CONFAB_TEST_S3_BUCKET",
  "CONFAB_TEST_S3_ACCESS_KEY",
  "CONFAB_TEST_S3_SECRET_KEY",
];

/** The variables a cluster needs that are not set. */
export function clusterEnvMissing() {
  return CLUSTER_ENV.filter((n) => !process.env[n]);
}

/**
 * `skip` for a suite on the cluster: a reason to skip when the servers'
 * variables are missing on a developer's machine; `false` when they are
 * set, and in CI (CI=true), where a missing variable must fail the suite
 * (ConfabCluster.start names it), not skip it.
 */
export function clusterSkip() {
  const missing = clusterEnvMissing();
  if (missing.length === 0 || process.env.CI === "true") return false;
  return `no ${missing.join(", ")}: run scripts/infra up kafka cql s3 and source target/infra/env (in CI this fails)`;
}

/** Rust's `confab_bus::partition_for` (FNV-1a of the room name). */
function partitionFor(room, partitions) {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(room, "utf8")) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % partitions;
}

/** An HS256 token for `sub`, valid for ten minutes, signed with `secret`. */
function hs256(secret, sub) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 600 })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

/** A logged child process; resolves its `exited` promise with { code, signal }. */
function spawnLogged(bin, args, logPath, env = {}) {
  const log = createWriteStream(logPath, { flags: "w" });
  log.write(`$ ${bin} ${args.join(" ")}\n`);
  const proc = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info", NO_COLOR: "1", ...env } });
  proc.stdout.pipe(log, { end: false });
  proc.stderr.pipe(log, { end: false });
  const exited = new Promise((r) => proc.on("exit", (code, signal) => r({ code, signal })));
  const child = { proc, log, logPath, exited, exitedEarly: undefined };
  exited.then((e) => (child.exitedEarly = e));
  return child;
}

function tailOf(path, lines) {
  try {
    return readFileSync(path, "utf8").split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/**
 * A distributed cluster as confab/tests/common/cluster.rs starts one, as
 * separate processes: `confab migrate` (fresh Kafka topics and CQL
 * keyspace), two dispatchers, two gateways, on the infra's Kafka and
 * Cassandra; the gateways keep attachments in the infra's S3-compatible
 * bucket (SeaweedFS) and serve the web client. `url` is the first
 * gateway's, `urls` every gateway's. Ready once every gateway's writes on
 * every partition are answered. Logs: target/web-e2e/NAME-ROLE.log. The
 * keyspace and topics stay (named web-…/web_…): `scripts/infra down` or
 * `clean` removes them with the servers.
 */
export class ConfabCluster {
  constructor(bin, { name = "cluster", gatewayArgs = [], gateways = 2, dispatchers = 2, partitions = 4 } = {}) {
    Object.assign(this, { bin, name, gatewayArgs, gatewayCount: gateways, dispatcherCount: dispatchers, partitions });
    this.dataDir = mkdtempSync(join(tmpdir(), "confab-e2e-cluster-"));
    this.logDir = join(repoDir, "target", "web-e2e");
    mkdirSync(this.logDir, { recursive: true });
    this.children = [];
    this.secret = `web-e2e-${randomBytes(16).toString("hex")}`;
    const id = randomBytes(8).toString("hex");
    this.topicPrefix = `web-${id}`;
    this.keyspace = `web_${id}`;
  }

  async init() {
    const missing = clusterEnvMissing();
    if (missing.length) {
      throw new Error(`the cluster needs ${missing.join(", ")}: run scripts/infra up kafka cql s3 and source target/infra/env`);
    }
    this.gateways = [];
    for (let i = 0; i < this.gatewayCount; i++) {
      const [port, admin, internal] = await freePorts(3);
      this.gateways.push({ port, admin, internal });
    }
    this.urls = this.gateways.map((g) => `http://127.0.0.1:${g.port}`);
    this.url = this.urls[0];
  }

  backend() {
    const e = process.env;
    return ["--kafka", e.KAFKA_BOOTSTRAP, "--topic-prefix", this.topicPrefix, "--cql", e.CQL_CONTACT_POINTS, "--keyspace", this.keyspace];
  }

  async ready(child, adminUrl, what) {
    await until(async () => {
      if (child.exitedEarly) throw new Error(`${what} exited (${JSON.stringify(child.exitedEarly)})\n${tailOf(child.logPath, 60)}`);
      const res = await fetch(`${adminUrl}/readyz`);
      return res.status === 200;
    }, `${what}'s ${adminUrl}/readyz to answer 200`, 90_000);
  }

  async start() {
    const e = process.env;
    const logPath = (role) => join(this.logDir, `${this.name}-${role}.log`);
    const migrate = spawnLogged(this.bin, ["migrate", "--partitions", String(this.partitions), ...this.backend()], logPath("migrate"));
    this.children.push(migrate);
    const { code, signal } = await migrate.exited;
    if (code !== 0) throw new Error(`confab migrate failed (${code ?? signal})\n${tailOf(migrate.logPath, 60)}`);

    for (let i = 0; i < this.dispatcherCount; i++) {
      const admin = await freePort();
      const child = spawnLogged(this.bin, ["dispatcher", "--admin-listen", `127.0.0.1:${admin}`, "--jwt-secret", this.secret, ...this.backend()], logPath(`dispatcher-${i}`));
      this.children.push(child);
      await this.ready(child, `http://127.0.0.1:${admin}`, `dispatcher ${i}`);
    }
    const credentials = join(this.dataDir, "s3-credentials");
    writeFileSync(credentials, `[default]\naws_access_key_id = ${e.CONFAB_TEST_S3_ACCESS_KEY}\naws_secret_access_key = ${e.CONFAB_TEST_S3_SECRET_KEY}\n`, { mode: 0o600 });
    const s3 = [
      "--s3-endpoint", e.CONFAB_TEST_S3_ENDPOINT,
      "--s3-bucket", e.CONFAB_TEST_S3_BUCKET,
      "--s3-region", e.CONFAB_TEST_S3_REGION ?? "us-east-1",
      "--s3-credentials-file", credentials,
    ];
    for (const [i, g] of this.gateways.entries()) {
      const args = [
        "gateway",
        "--listen", `127.0.0.1:${g.port}`,
        "--admin-listen", `127.0.0.1:${g.admin}`,
        "--internal-listen", `127.0.0.1:${g.internal}`,
        "--server-id", `gw-${i}`,
        "--jwt-secret", this.secret,
        ...this.backend(),
        ...s3,
        ...this.gatewayArgs,
      ];
      const child = spawnLogged(this.bin, args, logPath(`gw-${i}`));
      this.children.push(child);
      await this.ready(child, `http://127.0.0.1:${g.admin}`, `gateway ${i}`);
    }
    for (const [i, g] of this.gateways.entries()) await this.warmUp(i, g.port);
  }

  /** Joins a room on every partition through gateway `i` until each join is answered. */
  async warmUp(i, port) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/ws?token=${hs256(this.secret, `warmup${i}`)}`);
    const replies = new Set();
    ws.on("message", (data) => {
      try {
        const v = JSON.parse(String(data));
        if (v.re !== undefined && v.ok === true) replies.add(v.re);
      } catch {}
    });
    await new Promise((resolveOpen, reject) => {
      ws.once("open", resolveOpen);
      ws.once("error", reject);
    });
    try {
      for (let p = 0; p < this.partitions; p++) {
        let n = 0;
        while (partitionFor(`warm-${p}-${n}`, this.partitions) !== p) n++;
        const room = `warm-${p}-${n}`;
        let attempt = 0;
        await until(
          () => {
            const id = `w${p}-${attempt++}`;
            ws.send(JSON.stringify({ id, op: "join", room }));
            return until(() => replies.has(id), `join ${room}`, 2_000).then(
              () => true,
              () => false,
            );
          },
          `gateway ${i}'s writes on partition ${p} to be answered`,
          90_000,
        );
      }
    } finally {
      ws.close();
    }
  }

  async stop() {
    // Gateways first, then dispatchers, as an orchestrator drains them.
    for (const child of [...this.children].reverse()) {
      if (child.proc.exitCode !== null || child.proc.signalCode !== null) continue;
      child.proc.kill("SIGTERM");
      const timer = setTimeout(() => child.proc.kill("SIGKILL"), 20_000);
      await child.exited;
      clearTimeout(timer);
    }
  }

  tail(lines = 30) {
    return this.children.map((c) => `--- ${c.logPath}\n${tailOf(c.logPath, lines)}`).join("\n");
  }

  async dispose() {
    await this.stop();
    for (const c of this.children) c.log.end();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** Fills the sign-in form's credentials. */
export async function fillCredentials(page, user, password) {
  await page.getByLabel("Username").fill(user);
  await page.getByLabel("Password").fill(password);
}

/**
 * Registers `user` in a fresh browser context and waits for the chat;
 * the page's uncaught errors are pushed to `pageErrors`.
 */
export async function signedUpPage(browser, url, user, password, pageErrors, viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport });
  context.setDefaultTimeout(15_000);
  const page = await context.newPage();
  page.on("pageerror", (err) => pageErrors.push(`${user}: ${err.message}`));
  await page.goto(url);
  await fillCredentials(page, user, password);
  await page.getByRole("button", { name: "Register" }).click();
  await page.getByLabel("Room").waitFor();
  return page;
}
