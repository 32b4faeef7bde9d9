import type { Clock } from "./clock.js";
import { ConfabError, isPermanent } from "./errors.js";
import type { ReplyOf, RequestOf } from "./protocol.js";
import type { OutgoingMessage } from "./room.js";

export type SendResult = ReplyOf<"send">;

/** What the outbox needs from the client around it. */
export interface OutboxHost {
  readonly clock: Clock;
  isOpen(): boolean;
  /** One `send` attempt. */
  send(fields: RequestOf<"send">): Promise<SendResult>;
  /** The message's state changed (sending, failed). */
  changed(out: OutgoingMessage): void;
  /** The server stored the message. */
  stored(out: OutgoingMessage, result: SendResult): void;
}

interface Entry {
  out: OutgoingMessage;
  resolve: (result: SendResult) => void;
  reject: (err: ConfabError) => void;
  inFlight: boolean;
  retryTimer: unknown;
}

/** Delay before an unanswered or refused-for-now send goes out again. */
const RETRY_MS = 1_000;

/**
 * Sends that the server has not acknowledged yet. Each keeps its `cid` for
 * life, so sending it again — after a timeout, a server hiccup or a reconnect —
 * can never store it twice: the server answers a known cid with the first
 * message's seq.
 */
export class Outbox {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly host: OutboxHost) {}

  /** Starts sending `out`; resolves once stored, rejects on a failure that repeating cannot fix. */
  add(out: OutgoingMessage): Promise<SendResult> {
    return new Promise<SendResult>((resolve, reject) => {
      const entry: Entry = { out, resolve, reject, inFlight: false, retryTimer: undefined };
      this.entries.set(out.cid, entry);
      this.pump(entry);
    });
  }

  /** Sends every waiting entry, oldest first (after a hello). */
  flush(): void {
    for (const entry of this.entries.values()) this.pump(entry);
  }

  /** The message with this cid is known stored (its ack, or the message itself seen). */
  complete(cid: string, result: SendResult): void {
    const entry = this.entries.get(cid);
    if (!entry) return;
    this.entries.delete(cid);
    this.host.clock.clearTimeout(entry.retryTimer);
    this.host.stored(entry.out, result);
    entry.resolve(result);
  }

  /** Unacked sends, oldest first. */
  get pending(): OutgoingMessage[] {
    return [...this.entries.values()].map((e) => e.out);
  }

  /** Fails every entry: the client is closing. */
  close(): void {
    for (const entry of this.entries.values()) {
      this.host.clock.clearTimeout(entry.retryTimer);
      entry.reject(new ConfabError("unavailable", "client closed"));
    }
    this.entries.clear();
  }

  private pump(entry: Entry): void {
    if (!this.host.isOpen() || entry.inFlight || entry.retryTimer !== undefined) return;
    if (this.entries.get(entry.out.cid) !== entry) return;
    const { out } = entry;
    entry.inFlight = true;
    const reply = {
      ...(out.replyTo !== undefined ? { reply_to: out.replyTo } : {}),
      ...(out.attachments?.length ? { attachments: out.attachments.map((a) => a.id) } : {}),
    };
    const fields =
      out.to !== undefined
        ? { to: out.to, text: out.text, cid: out.cid, ...reply }
        : { room: out.room, text: out.text, cid: out.cid, ...reply };
    this.host.send(fields).then(
      (result) => {
        entry.inFlight = false;
        this.complete(out.cid, result);
      },
      (err: ConfabError) => {
        entry.inFlight = false;
        if (this.entries.get(out.cid) !== entry) return;
        if (isPermanent(err.code)) {
          this.entries.delete(out.cid);
          out.state = "failed";
          out.error = { code: err.code, message: err.message };
          this.host.changed(out);
          entry.reject(err);
        } else if (err.code !== "unavailable" || this.host.isOpen()) {
          // A timeout or a server hiccup: the same cid again, a little later.
          entry.retryTimer = this.host.clock.setTimeout(() => {
            entry.retryTimer = undefined;
            this.pump(entry);
          }, RETRY_MS);
        }
        // Otherwise the connection is down: the next hello flushes it.
      },
    );
  }
}
