/**
 * A message's life after it was sent, in the chat pane: the quoted message a
 * reply answers, the "edited" mark with the earlier versions, the actions
 * (reply, edit, delete with a confirmation, react) and the reaction chips.
 */
import type { ConfabClient, Message, RoomState } from "../sdk/src/index.ts";
import { h } from "./dom.ts";

/** The emojis the picker offers. */
export const PICKER = ["👍", "❤️", "😂", "🎉", "😮", "👀"];

/** What the composer is doing besides sending a new message. */
export type ComposeMode = { kind: "reply"; seq: number } | { kind: "edit"; seq: number } | undefined;

export interface LifecycleHost {
  client: ConfabClient;
  room: () => RoomState | undefined;
  /** The composer answers or edits this message. */
  compose: (mode: ComposeMode, text?: string) => void;
  /** Something went wrong; say so. */
  fail: (message: string) => void;
}

/** Everything a rendered message shows that can change after it was sent. */
export function signature(m: Message): string {
  return JSON.stringify([m.text, m.edited_ts, m.deleted, m.reactions, m.reply_to]);
}

/** The quote of the message `m` replies to, when it does. */
export function quote(room: RoomState | undefined, m: Message): HTMLElement | null {
  if (m.reply_to === undefined) return null;
  const target = room?.message(m.reply_to);
  const text = !target ? "an earlier message" : target.deleted ? "a deleted message" : target.text;
  return h(
    "div",
    { class: "msg-quote", "data-reply-to": String(m.reply_to) },
    h("span", { class: "msg-quote-author" }, target ? target.from : ""),
    " ",
    h("span", { class: "msg-quote-text" }, text.length > 120 ? `${text.slice(0, 119)}…` : text),
  );
}

/** "edited", which shows the earlier versions when pressed. */
export function editedMark(host: LifecycleHost, m: Message): HTMLElement | null {
  if (m.edited_ts === undefined || m.deleted) return null;
  const versions = h("ol", { class: "msg-versions", hidden: true, "aria-label": "Earlier versions" });
  const mark = h(
    "button",
    {
      type: "button",
      class: "btn btn-link msg-edited",
      "aria-expanded": "false",
      onclick: async () => {
        if (!versions.hidden) {
          versions.hidden = true;
          mark.setAttribute("aria-expanded", "false");
          return;
        }
        try {
          const list = await host.client.edits(m.room, m.seq);
          versions.replaceChildren(
            ...list.map((v) => h("li", null, h("time", { datetime: new Date(v.ts).toISOString() }, new Date(v.ts).toLocaleString()), " ", v.text)),
          );
          versions.hidden = false;
          mark.setAttribute("aria-expanded", "true");
        } catch (err) {
          host.fail(`Could not load earlier versions: ${(err as Error).message}`);
        }
      },
    },
    "(edited)",
  );
  return h("span", { class: "msg-edited-wrap" }, mark, versions);
}

/** The reaction chips: pressing one adds or takes back the user's reaction. */
export function reactions(host: LifecycleHost, m: Message): HTMLElement | null {
  if (!m.reactions || m.reactions.length === 0) return null;
  const me = host.client.me;
  return h(
    "div",
    { class: "msg-reactions" },
    ...m.reactions.map((r) => {
      const mine = r.users.includes(me);
      return h(
        "button",
        {
          type: "button",
          class: `reaction${mine ? " mine" : ""}`,
          "aria-pressed": String(mine),
          "data-emoji": r.emoji,
          title: r.users.join(", "),
          onclick: () => react(host, m, r.emoji, mine),
        },
        `${r.emoji} ${r.count}`,
      );
    }),
  );
}

function react(host: LifecycleHost, m: Message, emoji: string, remove: boolean): void {
  host.client.react(m.room, m.seq, emoji, remove).catch((err: Error) => host.fail(`Could not react: ${err.message}`));
}

/** Reply, react, and for the author (or a moderator) edit and delete. */
export function actions(host: LifecycleHost, m: Message): HTMLElement | null {
  if (m.deleted) return null;
  const me = host.client.me;
  const role = host.room()?.role;
  const moderator = role === "owner" || role === "admin";
  const picker = h(
    "div",
    { class: "reaction-picker", hidden: true, role: "group", "aria-label": "Pick a reaction" },
    ...PICKER.map((emoji) =>
      h(
        "button",
        {
          type: "button",
          class: "btn btn-ghost btn-sm",
          "aria-label": `React with ${emoji}`,
          onclick: () => {
            picker.hidden = true;
            const mine = m.reactions?.find((r) => r.emoji === emoji)?.users.includes(me) ?? false;
            react(host, m, emoji, mine);
          },
        },
        emoji,
      ),
    ),
  );
  const button = (label: string, onclick: () => void) =>
    h("button", { type: "button", class: "btn btn-link msg-action", onclick }, label);
  return h(
    "div",
    { class: "msg-actions" },
    button("Reply", () => host.compose({ kind: "reply", seq: m.seq })),
    button("React", () => {
      picker.hidden = !picker.hidden;
    }),
    m.from === me ? button("Edit", () => host.compose({ kind: "edit", seq: m.seq }, m.text)) : null,
    m.from === me || moderator
      ? button("Delete", () => {
          if (!window.confirm("Delete this message for everyone?")) return;
          host.client.deleteMessage(m.room, m.seq).catch((err: Error) => host.fail(`Could not delete: ${err.message}`));
        })
      : null,
    picker,
  );
}

/** The line above the composer while replying or editing. */
export function composeBanner(room: RoomState | undefined, mode: ComposeMode, cancel: () => void): HTMLElement | null {
  if (!mode) return null;
  const target = room?.message(mode.seq);
  const what = mode.kind === "reply" ? `Replying to ${target?.from ?? "a message"}` : "Editing your message";
  return h(
    "div",
    { class: "compose-banner", "data-mode": mode.kind },
    h("span", null, what, target && mode.kind === "reply" ? `: ${target.text.slice(0, 80)}` : ""),
    h("button", { type: "button", class: "btn btn-link", onclick: cancel }, "Cancel"),
  );
}
