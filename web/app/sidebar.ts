/** The left column: who I am, join a room, message a user, and the room list with unread counts. */
import { type ConfabClient, ROOM_RE, type RoomState, USERNAME_RE } from "../sdk/src/index.ts";
import { badge, type BadgeState, badgeState } from "./badges.ts";
import { h } from "./dom.ts";
import { avatar } from "./format.ts";
import { RoomTools } from "./rooms.ts";

export interface SidebarOptions {
  client: ConfabClient;
  onOpen: (room: string) => void;
  onSignOut: () => void;
  /** The account panel, shown under the room list by the "Account" button. */
  account?: HTMLElement;
}

interface Row {
  li: HTMLLIElement;
  sig: string;
}

/** How a room is named in the UI: `general`, or the other user of a DM. */
export function roomTitle(room: RoomState, me: string): string {
  return room.isDm ? (room.peer(me) ?? room.id) : room.id;
}

export class Sidebar {
  readonly el: HTMLElement;
  private readonly list: HTMLUListElement;
  private readonly empty: HTMLElement;
  private readonly rows = new Map<string, Row>();
  private readonly joinError: HTMLElement;
  private readonly dmError: HTMLElement;
  private readonly tools: RoomTools;
  private current: string | undefined;
  /** Numbers the ids that tie each room button to its name, unread count and preview. */
  private rowIds = 0;

  constructor(private readonly options: SidebarOptions) {
    const { client } = options;

    const roomInput = h("input", {
      id: "join-room",
      name: "room",
      placeholder: "Room name",
      autocomplete: "off",
      autocapitalize: "none",
      spellcheck: "false",
      maxlength: "64",
    });
    this.joinError = h("p", { class: "form-error", role: "alert" });
    const joinBtn = h("button", { type: "submit", class: "btn btn-primary btn-sm" }, "Join");
    const joinForm = h(
      "form",
      {
        class: "inline-form",
        onsubmit: async (e: Event) => {
          e.preventDefault();
          const name = roomInput.value.trim();
          this.joinError.textContent = "";
          if (!name) return;
          if (!ROOM_RE.test(name)) {
            this.joinError.textContent = "Room names: letters, digits, '.', '_' or '-', up to 64.";
            return;
          }
          joinBtn.disabled = true;
          try {
            await client.join(name);
            roomInput.value = "";
            options.onOpen(name);
          } catch (err) {
            this.joinError.textContent = `Could not join: ${(err as Error).message}`;
          } finally {
            joinBtn.disabled = false;
          }
        },
      },
      h("label", { for: "join-room", class: "sr-only" }, "Room"),
      roomInput,
      joinBtn,
    );

    const userInput = h("input", {
      id: "dm-user",
      name: "user",
      placeholder: "Message a user…",
      autocomplete: "off",
      autocapitalize: "none",
      spellcheck: "false",
      maxlength: "32",
      enterkeyhint: "go",
    });
    this.dmError = h("p", { class: "form-error", role: "alert" });
    const dmForm = h(
      "form",
      {
        class: "inline-form",
        onsubmit: (e: Event) => {
          e.preventDefault();
          const name = userInput.value.trim().toLowerCase();
          this.dmError.textContent = "";
          if (!name) return;
          if (!USERNAME_RE.test(name)) {
            this.dmError.textContent = "That is not a valid user name.";
            return;
          }
          if (name === client.me) {
            this.dmError.textContent = "That is you. Pick someone else.";
            return;
          }
          const room = client.openDirect(name);
          userInput.value = "";
          options.onOpen(room.id);
        },
      },
      h("label", { for: "dm-user", class: "sr-only" }, "User"),
      userInput,
      h("button", { type: "submit", class: "btn btn-ghost btn-sm", title: "Open the conversation" }, "Open"),
    );

    this.tools = new RoomTools({ client, onOpen: options.onOpen });
    this.list = h("ul", { class: "room-list", "aria-label": "Conversations" });
    this.empty = h("p", { class: "room-list-empty" }, "No conversations yet. Join a room, or message someone by user name.");

    this.el = h(
      "nav",
      { class: "sidebar", "aria-label": "Navigation" },
      h(
        "header",
        { class: "sidebar-header" },
        h("div", { class: "brand brand-sm" }, h("span", { class: "brand-mark", "aria-hidden": "true" }, "◆"), "Confab"),
      ),
      h("section", { class: "sidebar-forms" }, joinForm, this.joinError, dmForm, this.dmError, this.tools.el),
      h("h2", { class: "section-title" }, "Conversations"),
      this.list,
      this.empty,
      options.account ?? null,
      h(
        "footer",
        { class: "sidebar-footer" },
        avatar(client.me, "sm"),
        h("span", { class: "me-name", title: `Signed in as ${client.me}` }, client.me),
        options.account
          ? h(
              "button",
              {
                type: "button",
                class: "btn btn-link",
                "aria-expanded": "false",
                onclick: (e: Event) => {
                  const panel = options.account!;
                  panel.hidden = !panel.hidden;
                  (e.currentTarget as HTMLElement).setAttribute("aria-expanded", String(!panel.hidden));
                },
              },
              "Account",
            )
          : null,
        h("button", { type: "button", class: "btn btn-link", onclick: () => options.onSignOut() }, "Sign out"),
      ),
    );
  }

  setCurrent(room: string | undefined): void {
    this.current = room;
    this.render();
  }

  render(): void {
    const { client } = this.options;
    const me = client.me;
    this.tools.render();
    const rooms = [...client.rooms.values()].sort((a, b) => {
      if (a.isDm !== b.isDm) return a.isDm ? 1 : -1;
      return roomTitle(a, me).localeCompare(roomTitle(b, me));
    });
    this.empty.hidden = rooms.length > 0;
    const keep = new Set<string>();
    let prev: HTMLLIElement | null = null;
    for (const room of rooms) {
      keep.add(room.id);
      const title = roomTitle(room, me);
      const state = badgeState(room, me);
      const online = room.isDm ? client.online.has(title) : false;
      const current = room.id === this.current;
      const preview = this.preview(room);
      const sig = `${title}|${JSON.stringify(state)}|${online}|${current}|${preview}`;
      let row = this.rows.get(room.id);
      if (!row || row.sig !== sig) {
        const li = this.renderRow(room, title, state, online, current, preview);
        if (row) row.li.replaceWith(li);
        row = { li, sig };
        this.rows.set(room.id, row);
      }
      const expected: ChildNode | null = prev ? prev.nextSibling : this.list.firstChild;
      if (expected !== row.li) this.list.insertBefore(row.li, expected);
      prev = row.li;
    }
    for (const [id, row] of [...this.rows]) {
      if (!keep.has(id)) {
        row.li.remove();
        this.rows.delete(id);
      }
    }
  }

  /** The newest message of a room, one line: "bob: see you" or "You: ok". */
  private preview(room: RoomState): string {
    const me = this.options.client.me;
    const out = room.outgoing[room.outgoing.length - 1];
    const last = room.messages[room.messages.length - 1];
    const [from, body, files] = out
      ? [me, out.text, out.attachments]
      : last
        ? [last.from, last.text, last.deleted ? undefined : last.attachments]
        : [undefined, undefined, undefined];
    if (from === undefined || body === undefined) return "";
    const text = body || (files?.length ? `📎 ${files.map((f) => f.name).join(", ")}` : "");
    const who = from === me ? "You: " : room.isDm ? "" : `${from}: `;
    return (who + text).replace(/\s+/g, " ").slice(0, 80);
  }

  private renderRow(
    room: RoomState,
    title: string,
    state: BadgeState,
    online: boolean,
    current: boolean,
    preview: string,
  ): HTMLLIElement {
    const icon = room.isDm
      ? h("span", { class: `room-icon dm${online ? " online" : ""}`, "aria-hidden": "true" }, avatar(title, "sm"))
      : h("span", { class: "room-icon", "aria-hidden": "true" }, "#");
    // The button is named by the room and its badge ("lobby 2 unread"), as
    // its notification level has it, and described by the preview, which
    // screen readers read after the name.
    const id = `room-${++this.rowIds}`;
    const mark = badge(state, `${id}-unread`);
    return h(
      "li",
      { class: "room-item", "data-room": room.id },
      h(
        "button",
        {
          type: "button",
          class: `room-button${current ? " current" : ""}${state.count > 0 ? " has-unread" : ""}`,
          "aria-current": current ? "page" : undefined,
          "aria-labelledby": mark ? `${id}-name ${id}-unread` : `${id}-name`,
          "aria-describedby": preview ? `${id}-preview` : undefined,
          onclick: () => this.options.onOpen(room.id),
        },
        icon,
        h(
          "span",
          { class: "room-text" },
          h("span", { class: "room-name", id: `${id}-name` }, title),
          preview ? h("span", { class: "room-preview", id: `${id}-preview` }, preview) : null,
        ),
        mark,
      ),
    );
  }
}
