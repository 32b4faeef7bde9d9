// WebSocket compression with a real browser: Chromium offers
// permessage-deflate on every WebSocket, so against a server with
// `ws_compression` on (the default) the extension is negotiated and a
// session chats over it (the web client's own suites then run compressed
// too); with `--ws-compression=false` nothing is negotiated.
//
//   CONFAB_BIN=../target/debug/confab node --test e2e/compression.test.mjs
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { serverAndBrowser } from "./harness.mjs";

/**
 * In the page: registers `user`, opens a WebSocket session, joins `room`,
 * sends `text` and waits for its `msg` event. Returns the negotiated
 * extensions and the text that came back.
 */
async function chatOverRawSocket(page, user, room, text) {
  return page.evaluate(
    async ({ user, room, text }) => {
      const creds = { username: user, password: "password-123" };
      const post = (path) =>
        fetch(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(creds) });
      await post("/v1/auth/register");
      const { token } = await (await post("/v1/auth/login")).json();
      const ws = new WebSocket(`ws://${location.host}/v1/ws?token=${encodeURIComponent(token)}`);
      const frames = [];
      let wake = () => {};
      ws.onmessage = (e) => {
        frames.push(JSON.parse(e.data));
        wake();
      };
      const next = async (want) => {
        const deadline = Date.now() + 15_000;
        for (;;) {
          const i = frames.findIndex(want);
          if (i >= 0) return frames.splice(i, 1)[0];
          if (Date.now() > deadline) throw new Error("no matching frame in time");
          await new Promise((r) => {
            wake = r;
            setTimeout(r, 200);
          });
        }
      };
      await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = () => reject(new Error("the WebSocket failed"));
      });
      await next((f) => f.ev === "hello");
      ws.send(JSON.stringify({ id: 1, op: "join", room }));
      await next((f) => f.re === 1 && f.ok);
      ws.send(JSON.stringify({ id: 2, op: "send", room, text, cid: "c1" }));
      await next((f) => f.re === 2 && f.ok);
      const msg = await next((f) => f.ev === "msg");
      ws.close(1000);
      return { extensions: ws.extensions, text: msg.message?.text ?? msg.text };
    },
    { user, room, text },
  );
}

// Large enough to be compressed (over ws_compression_threshold, 512 bytes).
const LONG = "compression in the browser works; ".repeat(80);

describe("WebSocket compression, on (the default)", { timeout: 120_000 }, () => {
  const suite = serverAndBrowser("compression-on", []);

  it("negotiates permessage-deflate with Chromium and chats over it", async () => {
    const page = await suite.openPage();
    const got = await chatOverRawSocket(page, "zoe", "lobby", LONG);
    assert.match(got.extensions, /permessage-deflate/);
    assert.match(got.extensions, /client_no_context_takeover/);
    assert.equal(got.text, LONG);
  });
});

describe("WebSocket compression, off", { timeout: 120_000 }, () => {
  const suite = serverAndBrowser("compression-off", ["--ws-compression=false"]);

  it("negotiates nothing and chats as before", async () => {
    const page = await suite.openPage();
    const got = await chatOverRawSocket(page, "yann", "lobby", LONG);
    assert.equal(got.extensions, "");
    assert.equal(got.text, LONG);
  });
});
