export interface BackoffOptions {
  /** Delay before the first retry, before jitter. Default 500 ms. */
  initialMs?: number;
  /** Upper bound of the delay, before jitter. Default 10 s. */
  maxMs?: number;
  /** Growth per attempt. Default 2. */
  factor?: number;
}

/**
 * Exponential backoff with "equal jitter": the delay of attempt n is uniform in
 * [d/2, d] with d = min(max, initial * factor^n). Half of the delay is certain,
 * so retries never hammer the server, and the other half spreads a crowd of
 * clients that lost the same server.
 */
export class Backoff {
  private attempt = 0;
  private readonly initialMs: number;
  private readonly maxMs: number;
  private readonly factor: number;

  constructor(
    options: BackoffOptions = {},
    private readonly random: () => number = Math.random,
  ) {
    this.initialMs = options.initialMs ?? 500;
    this.maxMs = options.maxMs ?? 10_000;
    this.factor = options.factor ?? 2;
  }

  /** The delay before the next attempt; each call grows the next one. */
  next(): number {
    const ceiling = Math.min(this.maxMs, this.initialMs * this.factor ** this.attempt);
    this.attempt += 1;
    return Math.round(ceiling / 2 + this.random() * (ceiling / 2));
  }

  /** How many delays were handed out since the last reset. */
  get attempts(): number {
    return this.attempt;
  }

  reset(): void {
    this.attempt = 0;
  }
}
