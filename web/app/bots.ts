/**
 * Which users are bots (a profile's `bot: true`, docs/protocol.md "Accounts:
 * profiles"): each name seen is looked up once with `users`, in batches, and
 * every author or member element carrying `data-bot-user` gets a "bot" badge
 * when the answer comes.
 */
import type { ConfabClient } from "../sdk/src/index.ts";
import { h } from "./dom.ts";

/** Most names one `users` request carries (the server's limit). */
const BATCH = 100;

export class BotDirectory {
  private readonly known = new Map<string, boolean>();
  private readonly pending = new Set<string>();
  private scheduled = false;

  constructor(
    private readonly client: ConfabClient,
    private readonly root: () => ParentNode,
  ) {}

  /** A name element for `user`: the name, then a "bot" badge if it is (or turns out to be) a bot. */
  name(tag: "span", cls: string, user: string): HTMLElement {
    const el = h(tag, { class: cls, "data-bot-user": user }, user);
    if (this.isBot(user)) el.append(badge());
    return el;
  }

  isBot(user: string): boolean {
    if (!user) return false;
    const k = this.known.get(user);
    if (k === undefined) this.lookUp(user);
    return k === true;
  }

  private lookUp(user: string): void {
    if (this.pending.has(user)) return;
    this.pending.add(user);
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => void this.flush());
  }

  private async flush(): Promise<void> {
    this.scheduled = false;
    const names = [...this.pending].slice(0, BATCH);
    if (names.length === 0) return;
    for (const n of names) this.pending.delete(n);
    if (this.pending.size > 0) {
      this.scheduled = true;
      queueMicrotask(() => void this.flush());
    }
    let users: { user: string; bot?: boolean }[];
    try {
      const reply = await this.client.request("users", { users: names });
      users = reply.users as { user: string; bot?: boolean }[];
    } catch {
      return; // Asked again the next time the name is drawn.
    }
    for (const n of names) this.known.set(n, false);
    for (const u of users) {
      if (u.bot !== true) continue;
      this.known.set(u.user, true);
      for (const el of this.root().querySelectorAll<HTMLElement>(`[data-bot-user="${CSS.escape(u.user)}"]`)) {
        if (!el.querySelector(".bot-badge")) el.append(badge());
      }
    }
  }
}

function badge(): HTMLElement {
  return h("span", { class: "bot-badge", title: "This account is a bot" }, "bot");
}
