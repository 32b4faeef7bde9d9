/**
 * What tells the user where to look: unread and mention badges that follow
 * the room's notification level, the level control, highlighted `@name`
 * mentions, and `@` completion of room members in the composer.
 */
import type { ConfabClient, NotifyLevel, RoomState } from "../sdk/src/index.ts";
import { h, srOnly } from "./dom.ts";

/** What a room's list entry shows, by its notification level. */
export interface BadgeState {
  /** The number on the badge; 0 shows none. */
  count: number;
  /** The count is of mentions (at `mentions`, or when any at `all`). */
  mention: boolean;
  /** `+`: at least this many (not every unread message is counted yet). */
  exact: boolean;
  muted: boolean;
}

/**
 * `all`: every unread message, marked `@` when one mentions the user;
 * `mentions`: mentions only; `none`: nothing, a muted mark.
 */
export function badgeState(room: RoomState, me: string): BadgeState {
  const unread = room.unreadCount(me);
  const mentions = room.mentionCount(me);
  const exact = room.unreadIsExact;
  switch (room.notify) {
    case "none":
      return { count: 0, mention: false, exact, muted: true };
    case "mentions":
      return { count: mentions, mention: true, exact, muted: false };
    default:
      return { count: unread, mention: mentions > 0, exact, muted: false };
  }
}

/** The badge element, or null when there is nothing to show. */
export function badge(state: BadgeState, id: string): HTMLElement | null {
  if (state.muted) {
    return h("span", { class: "muted-mark", id, title: "Notifications off" }, "⊘", srOnly(" muted"));
  }
  if (state.count === 0) return null;
  const n = `${state.count}${state.exact ? "" : "+"}`;
  return h(
    "span",
    { class: `badge${state.mention ? " badge-mention" : ""}`, id },
    state.mention ? `@${n}` : n,
    srOnly(state.mention ? " unread, with mentions" : " unread"),
  );
}

const LEVELS: readonly [NotifyLevel, string][] = [
  ["all", "All"],
  ["mentions", "Mentions"],
  ["none", "None"],
];

/** The per-room notification level control of the conversation header. */
export class NotifyControl {
  readonly el: HTMLSpanElement;
  private readonly select: HTMLSelectElement;
  private roomId: string | undefined;

  constructor(private readonly client: ConfabClient) {
    this.select = h(
      "select",
      {
        class: "notify-select",
        "aria-label": "Notification level",
        "data-testid": "notify-level",
        onchange: () => void this.change(),
      },
      ...LEVELS.map(([value, label]) => h("option", { value }, label)),
    );
    this.el = h(
      "span",
      { class: "notify-control", title: "Which messages to badge" },
      h("span", { "aria-hidden": "true" }, "🔔"),
      this.select,
    );
  }

  show(room: RoomState | undefined): void {
    this.roomId = room?.id;
    this.el.hidden = !room || !room.onServer;
    if (room && this.select.value !== room.notify) this.select.value = room.notify;
  }

  private async change(): Promise<void> {
    const roomId = this.roomId;
    if (!roomId) return;
    const level = this.select.value as NotifyLevel;
    try {
      await this.client.setNotify(roomId, level);
    } catch {
      // Shown as it is on the server.
      this.show(this.client.room(roomId));
    }
  }
}

const MENTION_RE = /(^|[^A-Za-z0-9@])@([a-z0-9][a-z0-9_.-]{0,31})/g;

/**
 * `text` with the `@name`s the server recorded as mentions (`mentioned`)
 * in `<mark>`, the user's own name marked apart. Never HTML.
 */
export function withMentions(text: string, mentioned: readonly string[], me: string): (string | HTMLElement)[] {
  if (mentioned.length === 0) return [text];
  const out: (string | HTMLElement)[] = [];
  let last = 0;
  for (const match of text.matchAll(MENTION_RE)) {
    const name = match[2]!.replace(/[._-]+$/, "");
    if (!mentioned.includes(name)) continue;
    const start = (match.index ?? 0) + match[1]!.length;
    if (start > last) out.push(text.slice(last, start));
    out.push(h("mark", { class: `mention${name === me ? " mention-me" : ""}` }, `@${name}`));
    last = start + 1 + name.length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

/**
 * `@` completion in the composer: typing `@` and the start of a name lists
 * the room's members who match; ↑/↓ choose, Enter or Tab takes one, Escape
 * closes, a click takes one.
 */
export class MentionCompleter {
  readonly el: HTMLUListElement;
  private matches: string[] = [];
  private active = 0;
  private roomId: string | undefined;
  /** Rooms whose member list was fetched (once each). */
  private readonly fetched = new Set<string>();

  constructor(
    private readonly client: ConfabClient,
    private readonly input: HTMLTextAreaElement,
  ) {
    this.el = h("ul", { class: "mention-list", role: "listbox", id: "mention-list", "aria-label": "Mention suggestions", hidden: true });
    input.setAttribute("aria-controls", "mention-list");
    input.addEventListener("input", () => this.update());
    input.addEventListener("blur", () => setTimeout(() => this.close(), 150));
  }

  show(roomId: string | undefined): void {
    this.roomId = roomId;
    this.close();
  }

  /** Handles a composer key; true when it was the completer's. */
  handleKey(e: KeyboardEvent): boolean {
    if (this.el.hidden) return false;
    switch (e.key) {
      case "ArrowDown":
      case "ArrowUp": {
        const n = this.matches.length;
        this.active = (this.active + (e.key === "ArrowDown" ? 1 : n - 1)) % n;
        this.render();
        break;
      }
      case "Enter":
      case "Tab":
        this.take(this.matches[this.active]!);
        break;
      case "Escape":
        this.close();
        break;
      default:
        return false;
    }
    e.preventDefault();
    return true;
  }

  /** The `@prefix` being typed before the caret, if any. */
  private prefix(): { start: number; text: string } | undefined {
    const upto = this.input.value.slice(0, this.input.selectionStart ?? this.input.value.length);
    const m = /(^|[^A-Za-z0-9@])@([a-z0-9_.-]{0,32})$/.exec(upto);
    if (!m) return undefined;
    return { start: upto.length - m[2]!.length - 1, text: m[2]! };
  }

  private update(): void {
    const room = this.roomId ? this.client.room(this.roomId) : undefined;
    const at = this.prefix();
    if (!room || !at) {
      this.close();
      return;
    }
    this.fetchMembers(room);
    const me = this.client.me;
    const names = room.isDm ? [room.peer(me) ?? ""] : [...room.members];
    this.matches = names
      .filter((u) => u && u !== me && u.startsWith(at.text.toLowerCase()))
      .sort()
      .slice(0, 8);
    this.active = 0;
    if (this.matches.length === 0) {
      this.close();
      return;
    }
    this.render();
  }

  private fetchMembers(room: RoomState): void {
    if (room.isDm || !room.onServer || this.fetched.has(room.id)) return;
    this.fetched.add(room.id);
    this.client
      .members(room.id, { limit: 1000 })
      .then((page) => {
        for (const m of page.members) room.members.add(m.user);
        if (this.roomId === room.id && this.prefix()) this.update();
      })
      .catch(() => this.fetched.delete(room.id));
  }

  private render(): void {
    this.el.replaceChildren(
      ...this.matches.map((user, i) =>
        h(
          "li",
          {
            role: "option",
            class: `mention-option${i === this.active ? " active" : ""}`,
            "aria-selected": i === this.active ? "true" : "false",
            onmousedown: (e: Event) => {
              e.preventDefault();
              this.take(user);
            },
          },
          `@${user}`,
        ),
      ),
    );
    this.el.hidden = false;
    this.input.setAttribute("aria-expanded", "true");
  }

  private take(user: string): void {
    const at = this.prefix();
    if (!at) return this.close();
    const value = this.input.value;
    const caret = this.input.selectionStart ?? value.length;
    const insert = `@${user} `;
    this.input.value = value.slice(0, at.start) + insert + value.slice(caret);
    const pos = at.start + insert.length;
    this.input.setSelectionRange(pos, pos);
    this.close();
    this.input.dispatchEvent(new Event("input"));
  }

  private close(): void {
    this.el.hidden = true;
    this.matches = [];
    this.input.setAttribute("aria-expanded", "false");
  }
}
