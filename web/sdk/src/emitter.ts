type Handler = (...args: never[]) => void;

/** A minimal typed event emitter: `on` returns the function that unsubscribes. */
export class Emitter<Events extends Record<string, unknown[]>> {
  private readonly handlers = new Map<keyof Events, Set<Handler>>();

  on<K extends keyof Events>(event: K, handler: (...args: Events[K]) => void): () => void {
    let set = this.handlers.get(event);
    if (!set) {
      set = new Set();
      this.handlers.set(event, set);
    }
    const h = handler as unknown as Handler;
    set.add(h);
    return () => set.delete(h);
  }

  protected emit<K extends keyof Events>(event: K, ...args: Events[K]): void {
    const set = this.handlers.get(event);
    if (!set) return;
    for (const handler of [...set]) {
      try {
        (handler as unknown as (...a: Events[K]) => void)(...args);
      } catch (err) {
        // A broken listener must not break the protocol state machine.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}
