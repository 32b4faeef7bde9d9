// Attachments in the browser: alice attaches an image with the attach button
// and sends it without text; bob sees it inline (the thumbnail loads) and
// opens it full size. A text file arrives as a download card whose signed
// link serves it; a dropped file and a pasted screenshot are attached too.
// Refusals are shown in words: a file over the server's limit (413) and a
// type it does not take (415). On standalone, and on a cluster of two
// gateways and two dispatchers (Kafka, Cassandra) keeping attachments in the
// S3-compatible server of scripts/infra, alice on one gateway and bob on the
// other.
import assert from "node:assert/strict";
import { join } from "node:path";
import { deflateSync } from "node:zlib";
import { after, before, describe, it } from "node:test";
import { clusterSkip, ensureScreenshotDir, serverAndBrowser, signedUpPage } from "./harness.mjs";

const PASSWORD = "correct horse battery";
/** The server's upload limit in this suite, small so that a too large file is cheap to make. */
const MAX_UPLOAD = 64 * 1024;
const shots = ensureScreenshotDir();
let shotPrefix = "";
const shot = (page, name) => page.screenshot({ path: join(shots, `${shotPrefix}${name}.png`) });

function crc32(bytes) {
  let c = ~0;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

/** A `width` x `height` PNG of one colour (RGB), made here: no fixture files. */
function png(width, height, [r, g, b]) {
  const chunk = (type, data) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(type, 4, "latin1");
    data.copy(out, 8);
    out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
    return out;
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = 2; // RGB
  const row = Buffer.alloc(1 + width * 3);
  for (let x = 0; x < width; x++) row.set([r, g, b], 1 + x * 3);
  const raw = Buffer.concat(Array.from({ length: height }, () => row));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(raw)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

function suite(mode) {
  const cluster = mode === "cluster";
  const env = serverAndBrowser(cluster ? "attachments-cluster" : "attachments", ["--max-upload-bytes", String(MAX_UPLOAD)], { cluster });
  const pageErrors = [];
  let alice;
  let bob;

  async function join(page, room) {
    await page.getByLabel("Room").fill(room);
    await page.getByRole("button", { name: "Join", exact: true }).click();
    await page.getByRole("heading", { name: room }).waitFor();
  }

  const tray = (page) => page.getByRole("list", { name: "Attachments to send" });
  const history = (page) => page.getByRole("list", { name: "Chat history" });

  /** Attaches files with the attach button's file picker. */
  async function attach(page, files) {
    const chooser = page.waitForEvent("filechooser");
    await page.getByRole("button", { name: "Attach files" }).click();
    await (await chooser).setFiles(files);
  }

  /** Waits until every file in the tray is uploaded, then sends (with `text`, maybe empty). */
  async function sendWhenReady(page, count, text = "") {
    await page.waitForFunction(
      (n) => document.querySelectorAll(".upload-item.done").length === n && !document.querySelector(".upload-item.uploading"),
      count,
    );
    await page.getByLabel("Message").fill(text);
    await page.getByRole("button", { name: "Send", exact: true }).click();
    await tray(page).locator(".upload-item.done").first().waitFor({ state: "detached" });
  }

  /** Whether the `<img>` matched by `selector` (the last one) has loaded pixels. */
  const imageLoaded = (page, selector) =>
    page.waitForFunction((sel) => {
      const imgs = document.querySelectorAll(sel);
      const img = imgs[imgs.length - 1];
      return img instanceof HTMLImageElement && img.complete && img.naturalWidth > 0;
    }, selector);

  before(async () => {
    shotPrefix = cluster ? "cluster-" : "";
    alice = await signedUpPage(env.browser, env.server.url, "alice", PASSWORD, pageErrors);
    // On the cluster, bob is on the other gateway.
    bob = await signedUpPage(env.browser, cluster ? env.server.urls[1] : env.server.url, "bob", PASSWORD, pageErrors);
    await join(alice, "pics");
    await join(bob, "pics");
  });

  after(() => assert.deepEqual(pageErrors, [], "no uncaught errors in the pages"));

  it("shows an image inline to the other member and opens it full size", async () => {
    await attach(alice, { name: "sunset.png", mimeType: "image/png", buffer: png(640, 480, [230, 120, 40]) });
    await tray(alice).getByText("sunset.png").waitFor();
    await sendWhenReady(alice, 1); // no text: a message of attachments only

    const tile = history(bob).getByRole("button", { name: "Open sunset.png full size" });
    await tile.waitFor();
    await imageLoaded(bob, ".msg .att-img");
    // Inline from the thumbnail: at most 320 pixels on its long side.
    const natural = await bob.evaluate(() => {
      const img = document.querySelector(".msg .att-img");
      return [img.naturalWidth, img.naturalHeight, img.getAttribute("src")];
    });
    assert.deepEqual(natural.slice(0, 2), [320, 240], "the thumbnail is shown inline");
    assert.match(natural[2], /\/v1\/uploads\/[^/]+\/thumbnail\?.*sig=/, "a signed thumbnail URL, no token in the page's URLs");

    await tile.click();
    const dialog = bob.getByRole("dialog", { name: "sunset.png" });
    await dialog.waitFor();
    await imageLoaded(bob, ".lightbox-img");
    assert.equal(await bob.evaluate(() => document.querySelector(".lightbox-img").naturalWidth), 640, "full size in the overlay");
    await shot(bob, "attachments-lightbox");
    await bob.keyboard.press("Escape");
    await dialog.waitFor({ state: "detached" });

    // alice's own message shows it too, and the room list says what was sent.
    await imageLoaded(alice, ".msg:not(.outgoing) .att-img");
    await bob
      .getByRole("list", { name: "Conversations" })
      .getByText(/sunset\.png/)
      .waitFor();
  });

  it("shows other files as download cards whose link serves the file", async () => {
    await attach(alice, { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("meeting at noon\n") });
    await sendWhenReady(alice, 1, "the notes");
    await history(bob).getByText("the notes").waitFor();
    const card = history(bob).getByRole("link", { name: "Download notes.txt, 16 B" });
    await card.waitFor();
    await bob.waitForFunction(() => document.querySelector("a.att-file[href]") !== null);
    const served = await bob.evaluate(async () => {
      const res = await fetch(document.querySelector("a.att-file[href]").href);
      return { status: res.status, body: await res.text(), disposition: res.headers.get("content-disposition") };
    });
    assert.equal(served.status, 200);
    assert.equal(served.body, "meeting at noon\n");
    assert.match(served.disposition ?? "", /^attachment/, "served as a download");
  });

  it("attaches a dropped file and a pasted image", async () => {
    // Drop a file onto the conversation.
    await alice.evaluate(() => {
      const dt = new DataTransfer();
      dt.items.add(new File(["dropped text"], "dropped.txt", { type: "text/plain" }));
      const target = document.querySelector(".scroller");
      for (const type of ["dragenter", "dragover", "drop"]) {
        target.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
      }
    });
    await tray(alice).getByText("dropped.txt").waitFor();
    // Paste a screenshot into the composer.
    const pasted = png(16, 12, [40, 90, 220]).toString("base64");
    await alice.evaluate((b64) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const dt = new DataTransfer();
      dt.items.add(new File([bytes], "image.png", { type: "image/png" }));
      document.querySelector("#composer-input").dispatchEvent(new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true }));
    }, pasted);
    await tray(alice).getByText("image.png").waitFor();
    await sendWhenReady(alice, 2, "dropped and pasted");

    const msg = history(bob).getByRole("listitem").filter({ hasText: "dropped and pasted" });
    await msg.getByRole("link", { name: /Download dropped\.txt/ }).waitFor();
    await msg.getByRole("button", { name: "Open image.png full size" }).waitFor();
    await imageLoaded(bob, ".msg .att-img");
    assert.equal(await bob.evaluate(() => [...document.querySelectorAll(".msg .att-img")].at(-1).naturalWidth), 16);
    await shot(bob, "attachments");
  });

  it("uploads many files attached at once, a few at a time", async () => {
    // More than the server takes at once from one user (max_concurrent_uploads, 4 by default).
    const files = Array.from({ length: 7 }, (_, i) => ({ name: `many-${i}.txt`, mimeType: "text/plain", buffer: Buffer.from(`file number ${i}\n`) }));
    await attach(alice, files);
    await sendWhenReady(alice, files.length, "seven files");
    const msg = history(bob).getByRole("listitem").filter({ hasText: "seven files" });
    for (const f of files) await msg.getByRole("link", { name: new RegExp(`Download ${f.name.replace(".", "\\.")}`) }).waitFor();
    assert.equal(await tray(alice).getByRole("alert").count(), 0, "no upload was refused");
  });

  it("shows an upload's progress and holds Send until it is done", async () => {
    // A slow link (its answers come late), so that the upload lasts long enough to be seen.
    const cdp = await alice.context().newCDPSession(alice);
    await cdp.send("Network.enable");
    await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 1500, downloadThroughput: -1, uploadThroughput: 16 * 1024 });
    try {
      await attach(alice, { name: "slow.txt", mimeType: "text/plain", buffer: Buffer.alloc(48 * 1024, "s") });
      const bar = tray(alice).getByRole("progressbar", { name: "Uploading slow.txt" });
      await bar.waitFor();
      assert.equal(await alice.getByRole("button", { name: "Send", exact: true }).isDisabled(), true, "Send waits for the upload");
      // The bar fills while the upload is still under way.
      const seen = await alice.waitForFunction(() => {
        const p = document.querySelector(".upload-progress");
        return p ? (p.value > 0 ? "moved" : false) : "done";
      });
      assert.equal(await seen.jsonValue(), "moved", "the bar showed bytes sent before the upload finished");
    } finally {
      await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
    }
    await sendWhenReady(alice, 1, "slowly");
    await history(bob).getByRole("listitem").filter({ hasText: "slowly" }).getByRole("link", { name: /Download slow\.txt/ }).waitFor();
  });

  it("tells the sender when a file is too large or of a type the server refuses", async () => {
    const before = await history(bob).getByRole("listitem").count();
    await attach(alice, [
      { name: "huge.txt", mimeType: "text/plain", buffer: Buffer.alloc(MAX_UPLOAD + 1, "a") },
      { name: "program.bin", mimeType: "application/octet-stream", buffer: Buffer.from([0, 1, 2, 3, 0xff, 0xfe, 0, 7]) },
    ]);
    const alerts = tray(alice).getByRole("alert");
    await alerts.filter({ hasText: "huge.txt is too large to upload: the limit is 64 KB." }).waitFor();
    await alerts.filter({ hasText: "program.bin: this type of file cannot be sent here" }).waitFor();
    await shot(alice, "attachments-refused");
    // Nothing to send: the failures stay until removed, and nothing reached bob.
    await alice.getByRole("button", { name: "Remove huge.txt" }).click();
    await alice.getByRole("button", { name: "Remove program.bin" }).click();
    await tray(alice).getByRole("listitem").first().waitFor({ state: "detached" });
    // Uploads still work afterwards.
    await attach(alice, { name: "after.txt", mimeType: "text/plain", buffer: Buffer.from("still fine") });
    await sendWhenReady(alice, 1, "after the refusals");
    await history(bob).getByText("after the refusals").waitFor();
    assert.equal(await history(bob).getByRole("listitem").count(), before + 1, "only the good message arrived");
  });
}

describe("attachments in the web client", { timeout: 180_000 }, () => suite("standalone"));
describe("attachments in the web client on a cluster with S3 storage", { timeout: 300_000, skip: clusterSkip() }, () => suite("cluster"));
