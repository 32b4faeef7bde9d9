import { Backoff, type BackoffOptions } from "./backoff.js";
import { type Clock, systemClock } from "./clock.js";
import { Emitter } from "./emitter.js";
import { ConfabError } from "./errors.js";
import type { ByeEvent, HelloEvent, OpName, ReplyFrame, ReplyOf, RequestOf, ServerEvent } from "./protocol.js";

/** The part of the DOM `WebSocket` the SDK uses; tests provide a fake. */
export interface WebSocketLike {
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketFactory = (url: string) => WebSocketLike;

/**
 * - `connecting`: the first connection is being made.
 * - `open`: the server said `hello`; requests flow.
 * - `reconnecting`: the connection was lost; the next attempt is scheduled or under way.
 * - `closed`: stopped by the app, or for good (the token expired).
 */
export type ConnectionStatus = "connecting" | "open" | "reconnecting" | "closed";

export interface ConnectionOptions {
  /** The full WebSocket URL, token included. */
  url: string;
  /** Creates sockets. Default: the global `WebSocket`. */
  socket?: WebSocketFactory;
  clock?: Clock;
  /** Source of jitter; `Math.random` by default. */
  random?: () => number;
  /** Reconnect delays. */
  backoff?: BackoffOptions;
  /** How long a request may wait for its reply, queueing included. Default 10 s. */
  requestTimeoutMs?: number;
  /** How many times a request answered `rate_limited` is tried again. Default 5. */
  rateLimitRetries?: number;
  /** Send a `ping` every `heartbeat_ms` and reconnect when it goes unanswered. Default true. */
  heartbeat?: boolean;
  /** Unix seconds at which the token expires, when known. */
  tokenExpiresAt?: number;
  /**
   * Asks the server whether the token is still accepted. Browsers never see
   * the 401 of a refused upgrade, so after `authCheckAfter` failed attempts in
   * a row the connection asks; `false` ends it as `expired`.
   */
  checkToken?: () => Promise<boolean | undefined>;
  /** Failed attempts in a row before `checkToken` is asked. Default 3. */
  authCheckAfter?: number;
}

export interface RequestOptions {
  timeoutMs?: number;
  /** Overrides `ConnectionOptions.rateLimitRetries` for this request. */
  rateLimitRetries?: number;
}

export type ConnectionEvents = {
  status: [status: ConnectionStatus];
  hello: [hello: HelloEvent];
  event: [event: Exclude<ServerEvent, HelloEvent>];
  /** The token expired or was revoked: the app must sign in again. The connection is closed. */
  expired: [];
  /** The application disconnected the user (`bye` `disconnected`): the connection is closed and does not reconnect. */
  disconnected: [];
};

interface Pending {
  id: number;
  op: OpName;
  fields: object;
  resolve: (reply: never) => void;
  reject: (err: ConfabError) => void;
  timer: unknown;
  retryTimer: unknown;
  /** True once written to the current socket and not yet answered. */
  inFlight: boolean;
  rateLimited: number;
  maxRateLimited: number;
}

/**
 * One logical connection to a gateway: it survives the loss of sockets by
 * reconnecting with jittered exponential backoff, matches replies to requests
 * by `id`/`re`, and times requests out. It knows nothing of rooms; `ConfabClient`
 * builds the chat state on top of it.
 */
export class Connection extends Emitter<ConnectionEvents> {
  status: ConnectionStatus = "connecting";
  /** The latest `hello`, once one came. */
  hello: HelloEvent | undefined;

  private socket: WebSocketLike | undefined;
  private readonly clock: Clock;
  private readonly backoff: Backoff;
  private readonly random: () => number;
  private readonly factory: WebSocketFactory;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private started = false;
  private stopped = false;
  private reconnectTimer: unknown;
  private heartbeatTimer: unknown;
  private byeTimer: unknown;
  private helloTimer: unknown;
  private lastBye: ByeEvent | undefined;
  /** Attempts since the last hello that ended without one. */
  private failures = 0;

  constructor(private readonly options: ConnectionOptions) {
    super();
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;
    this.backoff = new Backoff(options.backoff, this.random);
    this.factory =
      options.socket ??
      ((url: string) => {
        const Ws = (globalThis as { WebSocket?: new (url: string) => WebSocketLike }).WebSocket;
        if (!Ws) throw new Error("no global WebSocket: pass options.socket");
        return new Ws(url);
      });
  }

  /** Opens the first socket. Requests made before are queued. */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.connect();
  }

  /** Closes for good: pending requests fail with `unavailable`. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.clearTimers();
    const socket = this.socket;
    this.socket = undefined;
    if (socket) this.detach(socket, true);
    for (const p of [...this.pending.values()]) this.fail(p, new ConfabError("unavailable", "client closed"));
    this.setStatus("closed");
  }

  /** Skips the rest of the backoff delay (say, when the browser is back online). */
  reconnectNow(): void {
    if (this.stopped || this.status !== "reconnecting" || this.reconnectTimer === undefined) return;
    this.clock.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.connect();
  }

  get isOpen(): boolean {
    return this.status === "open";
  }

  /**
   * Sends one request and resolves with its reply's fields. Made while the
   * connection is down, the request waits for the next `hello`. It rejects with
   * the server's error, with `timeout`, or with `unavailable` when the socket
   * carrying it is lost (the reply can no longer come; the caller decides
   * whether repeating it is safe).
   */
  request<K extends OpName>(op: K, fields: RequestOf<K>, options: RequestOptions = {}): Promise<ReplyOf<K>> {
    return new Promise<ReplyOf<K>>((resolve, reject) => {
      if (this.stopped) {
        reject(new ConfabError("unavailable", "client closed"));
        return;
      }
      const p: Pending = {
        id: this.nextId++,
        op,
        fields: fields as object,
        resolve: resolve as (reply: never) => void,
        reject,
        timer: undefined,
        retryTimer: undefined,
        inFlight: false,
        rateLimited: 0,
        maxRateLimited: options.rateLimitRetries ?? this.options.rateLimitRetries ?? 5,
      };
      const timeoutMs = options.timeoutMs ?? this.options.requestTimeoutMs ?? 10_000;
      p.timer = this.clock.setTimeout(() => {
        this.fail(p, new ConfabError("timeout", `no reply to '${op}' within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(p.id, p);
      if (this.isOpen) this.transmit(p);
    });
  }

  private transmit(p: Pending): void {
    const socket = this.socket;
    if (!socket || !this.isOpen) return;
    p.inFlight = true;
    try {
      socket.send(JSON.stringify({ op: p.op, id: p.id, ...p.fields }));
    } catch {
      // The socket is going away; its close handler fails in-flight requests.
    }
  }

  private fail(p: Pending, err: ConfabError): void {
    if (!this.pending.delete(p.id)) return;
    this.clock.clearTimeout(p.timer);
    this.clock.clearTimeout(p.retryTimer);
    p.reject(err);
  }

  private connect(): void {
    if (this.stopped) return;
    const expiresAt = this.options.tokenExpiresAt;
    if (expiresAt !== undefined && this.clock.now() >= expiresAt * 1000) {
      this.expire();
      return;
    }
    let socket: WebSocketLike;
    try {
      socket = this.factory(this.options.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    this.lastBye = undefined;
    socket.onmessage = (ev) => {
      if (this.socket === socket) this.onFrame(ev.data);
    };
    socket.onclose = () => {
      if (this.socket === socket) this.onLost();
    };
    socket.onerror = () => {
      // Always followed by close.
    };
    socket.onopen = () => {
      // The server speaks first; a socket that never says hello is dead.
      this.clock.clearTimeout(this.helloTimer);
      this.helloTimer = this.clock.setTimeout(() => {
        if (this.socket === socket) this.abandon();
      }, this.options.requestTimeoutMs ?? 10_000);
    };
  }

  private onFrame(data: unknown): void {
    if (typeof data !== "string") return;
    let frame: unknown;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (typeof frame !== "object" || frame === null) return;
    if ("re" in frame) {
      this.onReply(frame as ReplyFrame);
    } else if ("ev" in frame) {
      this.onEvent(frame as ServerEvent);
    }
  }

  private onReply(reply: ReplyFrame): void {
    const id = typeof reply.re === "number" ? reply.re : Number(reply.re);
    const p = this.pending.get(id);
    if (!p || !p.inFlight) return;
    p.inFlight = false;
    if (reply.ok) {
      this.pending.delete(p.id);
      this.clock.clearTimeout(p.timer);
      const { re: _re, ok: _ok, ...fields } = reply;
      p.resolve(fields as never);
      return;
    }
    const error = reply.error ?? { code: "internal", message: "error reply without error" };
    if (error.code === "rate_limited" && p.rateLimited < p.maxRateLimited) {
      // Try again later under a fresh id, so a late duplicate reply is ignored.
      p.rateLimited += 1;
      this.pending.delete(p.id);
      p.id = this.nextId++;
      this.pending.set(p.id, p);
      const delay = Math.min(5_000, 250 * 2 ** (p.rateLimited - 1)) * (0.5 + this.random() * 0.5);
      p.retryTimer = this.clock.setTimeout(() => {
        p.retryTimer = undefined;
        if (this.pending.get(p.id) === p && this.isOpen) this.transmit(p);
      }, delay);
      return;
    }
    this.fail(p, new ConfabError(error.code, error.message));
  }

  private onEvent(event: ServerEvent): void {
    switch (event.ev) {
      case "hello":
        this.onHello(event);
        return;
      case "bye":
        this.onBye(event);
        break;
    }
    this.emit("event", event as Exclude<ServerEvent, HelloEvent>);
  }

  private onHello(hello: HelloEvent): void {
    this.clock.clearTimeout(this.helloTimer);
    this.hello = hello;
    this.failures = 0;
    this.backoff.reset();
    this.setStatus("open");
    this.emit("hello", hello);
    // Requests queued while down go out now, oldest first.
    for (const p of [...this.pending.values()]) {
      if (!p.inFlight && p.retryTimer === undefined) this.transmit(p);
    }
    this.scheduleHeartbeat();
  }

  private onBye(bye: ByeEvent): void {
    this.lastBye = bye;
    // A revoked token (a sign-out, a password change) is as dead as an
    // expired one: reconnecting with it would only be refused.
    if (bye.reason === "token_expired" || bye.reason === "token_revoked") {
      this.expire();
      return;
    }
    // The application around the server cut this user off: coming back on
    // our own would defeat it (docs/protocol.md, `bye` reasons).
    if (bye.reason === "disconnected") {
      this.stop();
      this.emit("disconnected");
      return;
    }
    // The server closes the socket after bye; do it ourselves if it does not.
    const socket = this.socket;
    this.clock.clearTimeout(this.byeTimer);
    this.byeTimer = this.clock.setTimeout(() => {
      if (this.socket === socket) this.abandon();
    }, 5_000);
  }

  private expire(): void {
    this.stop();
    this.emit("expired");
  }

  private scheduleHeartbeat(): void {
    if (this.options.heartbeat === false || !this.hello) return;
    const interval = this.hello.heartbeat_ms > 0 ? this.hello.heartbeat_ms : 25_000;
    this.clock.clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = this.clock.setTimeout(() => {
      const socket = this.socket;
      this.request("ping", {}, { timeoutMs: interval }).then(
        () => this.scheduleHeartbeat(),
        (err: ConfabError) => {
          if (err.code === "timeout" && this.socket === socket) this.abandon();
        },
      );
    }, interval);
  }

  /** Gives up on the current socket without waiting for its close handshake. */
  private abandon(): void {
    const socket = this.socket;
    if (socket) this.detach(socket, true);
    this.onLost();
  }

  private detach(socket: WebSocketLike, close: boolean): void {
    socket.onopen = null;
    socket.onmessage = null;
    socket.onclose = null;
    socket.onerror = null;
    if (close) {
      try {
        socket.close(1000, "");
      } catch {
        // already closed
      }
    }
  }

  private onLost(): void {
    const socket = this.socket;
    const hadHello = this.status === "open";
    this.socket = undefined;
    if (socket) this.detach(socket, false);
    this.clearTimers();
    if (this.stopped) return;
    if (!hadHello) {
      this.failures += 1;
      const after = this.options.authCheckAfter ?? 3;
      if (this.options.checkToken && this.failures % after === 0) this.askToken();
    }
    for (const p of [...this.pending.values()]) {
      if (p.inFlight) this.fail(p, new ConfabError("unavailable", "connection lost before the reply"));
    }
    this.scheduleReconnect();
  }

  private askToken(): void {
    this.options.checkToken?.().then(
      (valid) => {
        if (valid === false && !this.stopped && this.status !== "open") this.expire();
      },
      () => {
        // Unknown: keep trying.
      },
    );
  }

  private scheduleReconnect(): void {
    if (this.stopped) return;
    if (this.lastBye?.reason === "server_restart") {
      // A planned restart: come back soon, but spread the crowd.
      this.backoff.reset();
    }
    this.lastBye = undefined;
    const delay = this.backoff.next();
    this.setStatus("reconnecting");
    this.clock.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = this.clock.setTimeout(() => {
      this.reconnectTimer = undefined;
      this.connect();
    }, delay);
  }

  private clearTimers(): void {
    this.clock.clearTimeout(this.reconnectTimer);
    this.clock.clearTimeout(this.heartbeatTimer);
    this.clock.clearTimeout(this.byeTimer);
    this.clock.clearTimeout(this.helloTimer);
    this.reconnectTimer = this.heartbeatTimer = this.byeTimer = this.helloTimer = undefined;
  }

  private setStatus(status: ConnectionStatus): void {
    if (this.status === status) return;
    this.status = status;
    this.emit("status", status);
  }
}
