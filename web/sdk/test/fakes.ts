/**
 * Scripted stand-ins for the network and time: `FakeServer` hands out
 * `FakeSocket`s whose frames a test reads and answers one by one, and
 * `FakeClock` runs timers only when the test advances it.
 */
import assert from "node:assert/strict";
import type { Clock } from "../src/clock.ts";
import type { WebSocketLike } from "../src/connection.ts";
import type { Message } from "../src/protocol.ts";

/** Lets pending promise callbacks and emitted events run. */
export function flush(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

interface Timer {
  id: number;
  at: number;
  fn: () => void;
}

export class FakeClock implements Clock {
  private t = 1_000_000;
  private timers: Timer[] = [];
  private nextId = 1;

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const timer = { id: this.nextId++, at: this.t + Math.max(0, ms), fn };
    this.timers.push(timer);
    return timer.id;
  }

  clearTimeout(handle: unknown): void {
    this.timers = this.timers.filter((t) => t.id !== handle);
  }

  /** Moves time forward by `ms`, running due timers in order and letting their effects settle. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    await flush();
    for (;;) {
      const due = this.timers.filter((t) => t.at <= end).sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.timers = this.timers.filter((t) => t !== due);
      this.t = due.at;
      due.fn();
      await flush();
    }
    this.t = end;
    await flush();
  }

  /** Delays of the pending timers, from now. */
  pending(): number[] {
    return this.timers.map((t) => t.at - this.t).sort((a, b) => a - b);
  }
}

export interface SentFrame {
  op: string;
  id: number;
  [field: string]: unknown;
}

export class FakeSocket implements WebSocketLike {
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  /** Every frame the client sent, parsed. */
  readonly sent: SentFrame[] = [];
  /** Frames already answered or consumed by `take`. */
  private readonly taken = new Set<SentFrame>();
  closedByClient = false;
  closedByServer = false;

  constructor(readonly url: string) {}

  send(data: string): void {
    if (this.closedByClient || this.closedByServer) throw new Error("socket closed");
    this.sent.push(JSON.parse(data) as SentFrame);
  }

  close(): void {
    this.closedByClient = true;
  }

  /** The upgrade succeeded and the server said hello. */
  async accept(user = "alice", heartbeatMs = 25_000): Promise<void> {
    this.onopen?.({});
    this.deliver({ ev: "hello", user, session: "s-1", server: "gw-1", heartbeat_ms: heartbeatMs });
    await flush();
  }

  deliver(frame: unknown): void {
    this.onmessage?.({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
  }

  /** The connection broke (or the server closed it). */
  async drop(code = 1006): Promise<void> {
    this.closedByServer = true;
    this.onclose?.({ code, reason: "" });
    await flush();
  }

  /** Requests not yet taken, optionally of one op. */
  unanswered(op?: string): SentFrame[] {
    return this.sent.filter((f) => !this.taken.has(f) && (op === undefined || f.op === op));
  }

  /** The oldest unanswered request of `op`; fails the test when there is none. */
  take(op: string): SentFrame {
    const frame = this.unanswered(op)[0];
    assert.ok(frame, `expected an unanswered '${op}' request; sent: ${JSON.stringify(this.sent)}`);
    this.taken.add(frame);
    return frame;
  }

  async reply(frame: SentFrame, fields: Record<string, unknown> = {}): Promise<void> {
    this.taken.add(frame);
    this.deliver({ re: frame.id, ok: true, ...fields });
    await flush();
  }

  async replyError(frame: SentFrame, code: string, message = code): Promise<void> {
    this.taken.add(frame);
    this.deliver({ re: frame.id, ok: false, error: { code, message } });
    await flush();
  }

  /** Takes the oldest `op` request and answers it. */
  async answer(op: string, fields: Record<string, unknown> = {}): Promise<SentFrame> {
    const frame = this.take(op);
    await this.reply(frame, fields);
    return frame;
  }
}

export class FakeServer {
  readonly sockets: FakeSocket[] = [];
  readonly factory = (url: string): WebSocketLike => {
    const socket = new FakeSocket(url);
    this.sockets.push(socket);
    return socket;
  };

  get current(): FakeSocket {
    const socket = this.sockets[this.sockets.length - 1];
    assert.ok(socket, "no socket was opened");
    return socket;
  }
}

/** A message as the server would store it. */
export function message(room: string, seq: number, from: string, text = `m${seq}`, cid?: string): Message {
  return { room, seq, msg_id: `${room}-${seq}`, from, text, ts: 1_700_000_000_000 + seq, cid: cid ?? `c${seq}` };
}

/** A `msg` event for `message(...)`. */
export function msgEvent(m: Message, prevSeq: number): Record<string, unknown> {
  return { ev: "msg", ...m, prev_seq: prevSeq };
}

/** A JWT-shaped token with only `sub` and `exp` (the client never checks signatures). */
export function fakeToken(sub: string, exp: number): string {
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp })}.sig`;
}
