#!/usr/bin/env node
// A throwaway Confab for working on the web client without the Rust server:
//   node dev/mock-server.mjs [standalone] [--listen 127.0.0.1:8080] [--admin-listen ADDR] [--data DIR]
// then open http://127.0.0.1:8080/. It serves web/dist, speaks enough of
// protocol v1 (docs/protocol.md) to click through the UI, keeps its state in
// DIR/mock.json when given --data, and says `bye server_restart` on SIGTERM,
// so the e2e suite can be tried against it (CONFAB_BIN=dev/mock-confab). It is NOT the reference:
// CI runs the e2e suite against the real binary, and where the two differ the
// real server and docs/protocol.md win.
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

const dist = join(dirname(fileURLToPath(import.meta.url)), "..", "dist");
const flag = (name, fallback) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const listen = flag("--listen", "127.0.0.1:8080");
const adminListen = flag("--admin-listen", "127.0.0.1:0");
const dataDir = flag("--data", undefined);

const users = new Map(); // name -> password
const rooms = new Map(); // id -> { members: Set, messages: [], cids: Map, reads: Map }
const sessions = new Map(); // name -> Set<Conn>

const stateFile = dataDir && join(dataDir, "mock.json");
if (dataDir) mkdirSync(dataDir, { recursive: true });
if (stateFile) {
  try {
    const saved = JSON.parse(readFileSync(stateFile, "utf8"));
    for (const [u, p] of saved.users) users.set(u, p);
    for (const [id, r] of saved.rooms) {
      rooms.set(id, {
        members: new Set(r.members),
        messages: r.messages,
        cids: new Map(r.messages.map((m) => [m.cid, m])),
        reads: new Map(r.reads),
      });
    }
  } catch {
    // a fresh data dir
  }
}
function save() {
  if (!stateFile) return;
  const state = {
    users: [...users],
    rooms: [...rooms].map(([id, r]) => [id, { members: [...r.members], messages: r.messages, reads: [...r.reads] }]),
  };
  writeFileSync(`${stateFile}.tmp`, JSON.stringify(state));
  renameSync(`${stateFile}.tmp`, stateFile);
}

const b64u = (s) => Buffer.from(s).toString("base64url");
function token(user) {
  const exp = Math.floor(Date.now() / 1000) + 24 * 3600;
  return { token: `${b64u('{"alg":"none"}')}.${b64u(JSON.stringify({ sub: user, exp }))}.mock`, exp };
}
function verify(t) {
  try {
    const p = JSON.parse(Buffer.from(String(t).split(".")[1], "base64url").toString());
    return p.exp * 1000 > Date.now() && users.has(p.sub) ? p.sub : undefined;
  } catch {
    return undefined;
  }
}

function json(res, status, body) {
  res.writeHead(status, { "Content-Type": "application/json" });
  res.end(JSON.stringify(body));
}
const fail = (res, status, code, message) => json(res, status, { error: { code, message } });

// Uploads (docs/protocol.md, "POST /v1/uploads"), in memory only: no real
// thumbnails (the thumbnail is the image itself), signatures not checked.
const uploads = new Map(); // id -> { room, from, name, content_type, size, bytes }
const MAX_UPLOAD = Number(flag("--max-upload-bytes", 25 * 1024 * 1024));
function sniff(b) {
  const starts = (...sig) => sig.every((x, i) => b[i] === x);
  if (starts(0x89, 0x50, 0x4e, 0x47)) return "image/png";
  if (starts(0xff, 0xd8, 0xff)) return "image/jpeg";
  if (starts(0x47, 0x49, 0x46, 0x38)) return "image/gif";
  if (starts(0x52, 0x49, 0x46, 0x46) && b.subarray(8, 12).toString() === "WEBP") return "image/webp";
  if (starts(0x25, 0x50, 0x44, 0x46)) return "application/pdf";
  if (starts(0x50, 0x4b, 0x03, 0x04)) return "application/zip";
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(b);
    if (!/[\u0000-\u0008\u000e-\u001f]/.test(text)) return "text/plain";
  } catch {
    // not UTF-8
  }
  return "application/octet-stream";
}
function attachmentOf(id) {
  const u = uploads.get(id);
  return {
    id,
    url: `/v1/uploads/${id}`,
    name: u.name,
    content_type: u.content_type,
    size: u.size,
    ...(u.content_type.startsWith("image/") ? { thumbnail_url: `/v1/uploads/${id}/thumbnail` } : {}),
  };
}
async function handleUploads(req, res, url) {
  const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1];
  const signed = url.searchParams.has("sig");
  const me = verify(bearer ?? url.searchParams.get("token")) ?? (signed ? url.searchParams.get("user") : undefined);
  if (!me) return fail(res, 401, "unauthorized", "no or bad token");
  if (req.method === "POST" && url.pathname === "/v1/uploads") {
    const id = url.searchParams.get("room") ?? "";
    if (!rooms.get(id)?.members.has(me)) return fail(res, 403, "not_member", `not a member of ${id}`);
    if (Number(req.headers["content-length"] ?? 0) > MAX_UPLOAD) return fail(res, 413, "too_large", `uploads are limited to ${MAX_UPLOAD} bytes`);
    const chunks = [];
    let size = 0;
    for await (const chunk of req) {
      size += chunk.length;
      if (size > MAX_UPLOAD) return fail(res, 413, "too_large", `uploads are limited to ${MAX_UPLOAD} bytes`);
      chunks.push(chunk);
    }
    const bytes = Buffer.concat(chunks);
    const content_type = sniff(bytes);
    if (content_type === "application/octet-stream") return fail(res, 415, "bad_request", `type ${content_type} is not allowed`);
    const uid = `u${randomBytes(16).toString("hex")}`;
    const name = (url.searchParams.get("filename") ?? "file").replace(/^.*[\\/]/, "").slice(0, 255) || "file";
    uploads.set(uid, { room: id, from: me, name, content_type, size: bytes.length, bytes });
    return json(res, 201, attachmentOf(uid));
  }
  const m = /^\/v1\/uploads\/([A-Za-z0-9_-]{1,64})(\/thumbnail|\/sign)?$/.exec(url.pathname);
  const u = m && uploads.get(m[1]);
  if (!u) return fail(res, 404, "not_found", "no such upload");
  if (!rooms.get(u.room)?.members.has(me)) return fail(res, 403, "not_member", `not a member of ${u.room}`);
  if (req.method === "POST" && m[2] === "/sign") {
    const exp = Math.floor(Date.now() / 1000) + 3600;
    const q = `?user=${encodeURIComponent(me)}&exp=${exp}&sig=mock`;
    const a = attachmentOf(m[1]);
    return json(res, 200, { url: a.url + q, ...(a.thumbnail_url ? { thumbnail_url: a.thumbnail_url + q } : {}), expires_at: exp });
  }
  if (req.method !== "GET" || m[2] === "/sign") return fail(res, 400, "bad_request", "no such method");
  const inline = u.content_type.startsWith("image/");
  res.writeHead(200, {
    "Content-Type": u.content_type === "text/plain" ? "text/plain; charset=utf-8" : u.content_type,
    "Content-Disposition": `${inline ? "inline" : "attachment"}; filename="${u.name.replace(/["\\]/g, "_")}"`,
    "X-Content-Type-Options": "nosniff",
  });
  res.end(u.bytes);
}

const server = createServer(async (req, res) => {
  const url = new URL(req.url, "http://x");
  if (url.pathname === "/v1/uploads" || url.pathname.startsWith("/v1/uploads/")) return handleUploads(req, res, url);
  if (req.method === "POST" && url.pathname.startsWith("/v1/auth/")) {
    let body = "";
    for await (const chunk of req) body += chunk;
    let u, p;
    try {
      ({ username: u, password: p } = JSON.parse(body));
    } catch {
      return fail(res, 400, "bad_request", "body is not JSON");
    }
    if (url.pathname === "/v1/auth/register") {
      if (!/^[a-z0-9][a-z0-9_.-]{0,31}$/.test(u ?? "") || typeof p !== "string" || p.length < 8)
        return fail(res, 400, "bad_request", "bad username or password");
      if (users.has(u)) return fail(res, 409, "taken", "user name taken");
      users.set(u, p);
      save();
      return json(res, 201, { user: u });
    }
    if (url.pathname === "/v1/auth/login") {
      if (users.get(u) !== p) return fail(res, 401, "unauthorized", "wrong user name or password");
      const t = token(u);
      return json(res, 200, { token: t.token, user: u, expires_at: t.exp });
    }
  }
  const file = url.pathname === "/" ? "index.html" : normalize(url.pathname).replace(/^[/\\]+/, "");
  try {
    const bytes = await readFile(join(dist, file));
    const type = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css" }[extname(file)] ?? "application/octet-stream";
    res.writeHead(200, { "Content-Type": `${type}; charset=utf-8` });
    res.end(bytes);
  } catch {
    fail(res, 404, "not_found", "no such file");
  }
});

// --- a minimal RFC 6455 server side ---
class Conn {
  constructor(socket, user) {
    this.socket = socket;
    this.user = user;
    this.buf = Buffer.alloc(0);
    socket.on("data", (d) => this.onData(d));
    socket.on("close", () => this.onClose());
    socket.on("error", () => {});
  }
  send(obj) {
    const payload = Buffer.from(JSON.stringify(obj));
    let header;
    if (payload.length < 126) header = Buffer.from([0x81, payload.length]);
    else if (payload.length < 65536) header = Buffer.from([0x81, 126, payload.length >> 8, payload.length & 255]);
    else {
      header = Buffer.alloc(10);
      header[0] = 0x81;
      header[1] = 127;
      header.writeBigUInt64BE(BigInt(payload.length), 2);
    }
    if (!this.socket.destroyed) this.socket.write(Buffer.concat([header, payload]));
  }
  onData(d) {
    this.buf = Buffer.concat([this.buf, d]);
    for (;;) {
      if (this.buf.length < 2) return;
      const op = this.buf[0] & 15;
      let len = this.buf[1] & 127;
      let off = 2;
      if (len === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) return;
        len = Number(this.buf.readBigUInt64BE(2));
        off = 10;
      }
      if (this.buf.length < off + 4 + len) return;
      const mask = this.buf.subarray(off, off + 4);
      const data = Buffer.from(this.buf.subarray(off + 4, off + 4 + len));
      for (let i = 0; i < data.length; i++) data[i] ^= mask[i & 3];
      this.buf = this.buf.subarray(off + 4 + len);
      if (op === 8) return this.socket.end(Buffer.from([0x88, 0]));
      if (op === 9) this.socket.write(Buffer.concat([Buffer.from([0x8a, data.length]), data]));
      if (op === 1) this.onText(data.toString());
    }
  }
  onClose() {
    const set = sessions.get(this.user);
    set?.delete(this);
    if (set && set.size === 0) {
      sessions.delete(this.user);
      announce(this.user, false);
    }
  }
  onText(text) {
    this.handle(text);
    save();
  }
  handle(text) {
    let f;
    try {
      f = JSON.parse(text);
    } catch {
      return this.send({ ok: false, error: { code: "bad_request", message: "not JSON" } });
    }
    const reply = (fields) => this.send({ re: f.id, ok: true, ...fields });
    const error = (code, message = code) => this.send({ re: f.id, ok: false, error: { code, message } });
    const member = (room) => rooms.get(room)?.members.has(this.user);
    const me = this.user;
    switch (f.op) {
      case "ping":
        return reply({});
      case "join": {
        if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(f.room ?? "")) return error("bad_request");
        const r = room(f.room);
        if (!r.members.has(me)) {
          r.members.add(me);
          broadcast(r, { ev: "member", room: f.room, user: me, action: "join" });
        }
        return reply({ room: f.room, last_seq: r.messages.at(-1)?.seq ?? 0 });
      }
      case "leave": {
        if (!member(f.room) || f.room.startsWith("dm:")) return error("not_member");
        const r = rooms.get(f.room);
        broadcast(r, { ev: "member", room: f.room, user: me, action: "leave" });
        r.members.delete(me);
        return reply({});
      }
      case "rooms":
        return reply({
          rooms: [...rooms.entries()]
            .filter(([, r]) => r.members.has(me))
            .map(([id, r]) => ({ room: id, last_seq: r.messages.at(-1)?.seq ?? 0, read_seq: r.reads.get(me) ?? 0 })),
        });
      case "send": {
        let id = f.room;
        if (f.to !== undefined) {
          if (!users.has(f.to)) return error("not_found", `no user '${f.to}'`);
          id = [me, f.to].sort().join(":").replace(/^/, "dm:");
          const r = room(id);
          r.members.add(me);
          r.members.add(f.to);
        }
        if (!member(id)) return error("not_member", `join room '${id}' first`);
        const ids = f.attachments ?? [];
        if (!f.text && ids.length === 0) return error("bad_request", "empty text");
        if (ids.length > 10) return error("bad_request", "more than 10 attachments");
        for (const a of ids) {
          const u = uploads.get(a);
          if (!u || u.from !== me || u.room !== id) return error("not_found", `no upload '${a}' of yours in ${id}`);
        }
        if (Buffer.byteLength(f.text) > 4096) return error("too_large", "text over 4096 bytes");
        const r = rooms.get(id);
        const dup = r.cids.get(f.cid);
        if (dup) return reply({ room: id, seq: dup.seq, msg_id: dup.msg_id, ts: dup.ts });
        const prev = r.messages.at(-1)?.seq ?? 0;
        const m = { room: id, seq: prev + 1, msg_id: randomBytes(8).toString("hex"), from: me, text: f.text ?? "", ts: Date.now(), cid: f.cid };
        if (ids.length > 0) m.attachments = ids.map(attachmentOf);
        r.messages.push(m);
        r.cids.set(f.cid, m);
        reply({ room: id, seq: m.seq, msg_id: m.msg_id, ts: m.ts });
        return broadcast(r, { ev: "msg", ...m, prev_seq: prev });
      }
      case "history": {
        if (!member(f.room)) return error("not_member");
        const limit = f.limit ?? 50;
        const all = rooms.get(f.room).messages.filter((m) => f.before === undefined || m.seq < f.before);
        return reply({ messages: all.slice(-limit) });
      }
      case "sync": {
        const out = {};
        for (const [id, since] of Object.entries(f.rooms ?? {})) {
          if (!member(id)) return error("not_member", `not a member of '${id}'`);
          const newer = rooms.get(id).messages.filter((m) => m.seq > since);
          const limit = f.limit ?? 100;
          out[id] = { messages: newer.slice(0, limit), more: newer.length > limit };
        }
        return reply({ rooms: out });
      }
      case "typing": {
        if (!member(f.room)) return error("not_member");
        reply({});
        return broadcast(rooms.get(f.room), { ev: "typing", room: f.room, user: me }, me);
      }
      case "read": {
        if (!member(f.room)) return error("not_member");
        const r = rooms.get(f.room);
        if ((r.reads.get(me) ?? 0) < f.seq) r.reads.set(me, f.seq);
        reply({});
        return broadcast(r, { ev: "read", room: f.room, user: me, seq: r.reads.get(me) });
      }
      case "presence": {
        if (!member(f.room)) return error("not_member");
        return reply({ online: [...rooms.get(f.room).members].filter((u) => sessions.has(u)) });
      }
      default:
        return error("bad_request", `unknown op '${f.op}'`);
    }
  }
}

function room(id) {
  if (!rooms.has(id)) rooms.set(id, { members: new Set(), messages: [], cids: new Map(), reads: new Map() });
  return rooms.get(id);
}
function broadcast(r, ev, except) {
  for (const u of r.members) if (u !== except) for (const c of sessions.get(u) ?? []) c.send(ev);
}
function announce(user, online) {
  const peers = new Set();
  for (const r of rooms.values()) if (r.members.has(user)) for (const u of r.members) if (u !== user) peers.add(u);
  for (const u of peers) for (const c of sessions.get(u) ?? []) c.send({ ev: "presence", user, online });
}

server.on("upgrade", (req, socket) => {
  const url = new URL(req.url, "http://x");
  const user = url.pathname === "/v1/ws" ? verify(url.searchParams.get("token")) : undefined;
  if (!user) {
    socket.end("HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
    return;
  }
  const accept = createHash("sha1")
    .update(req.headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
    .digest("base64");
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
  const conn = new Conn(socket, user);
  const first = !sessions.has(user);
  if (first) sessions.set(user, new Set());
  sessions.get(user).add(conn);
  conn.send({ ev: "hello", user, session: `s-${randomBytes(3).toString("hex")}`, server: "mock", heartbeat_ms: 25000 });
  if (first) announce(user, true);
});

const [host, port] = listen.split(/:(?=\d+$)/);
server.listen(Number(port), host, () => console.log(`mock confab listening on http://${host}:${server.address().port}`));

let draining = false;
const admin = createServer((req, res) => {
  if (req.url === "/healthz") return res.end("ok");
  if (req.url === "/readyz") {
    res.statusCode = draining ? 503 : 200;
    return res.end(draining ? "draining" : "ready");
  }
  res.statusCode = 404;
  res.end();
});
const [adminHost, adminPort] = adminListen.split(/:(?=\d+$)/);
admin.listen(Number(adminPort), adminHost, () => console.log(`admin listening on http://${adminHost}:${admin.address().port}`));

process.on("SIGTERM", () => {
  draining = true;
  server.close();
  for (const set of sessions.values()) {
    for (const c of set) {
      c.send({ ev: "bye", reason: "server_restart" });
      c.socket.end(Buffer.from([0x88, 2, 1012 >> 8, 1012 & 255]));
    }
  }
  save();
  setTimeout(() => process.exit(0), 100);
});
