/**
 * Rooms people own: in the sidebar, creating a (private) room, the
 * invitations waiting, and the directory of public rooms; in a conversation,
 * the room's details: name and topic, inviting, and the members with their
 * roles and the moderation actions the user's role allows.
 */
import type { BotDirectory } from "./bots.ts";
import type { ConfabClient, MemberEntry, Role } from "../sdk/src/index.ts";
import { ROOM_RE, USERNAME_RE } from "../sdk/src/index.ts";
import { h } from "./dom.ts";

const RANK: Record<Role, number> = { owner: 2, admin: 1, member: 0 };

/** The mute durations offered, in seconds (0: until unmuted). */
const MUTE_FOR: [label: string, secs: number][] = [
  ["10 minutes", 600],
  ["1 hour", 3600],
  ["1 day", 86_400],
  ["1 week", 604_800],
  ["until unmuted", 0],
];

/** When a mute of `secs` from now ends, for people. */
function muteEnd(secs: number): string {
  if (secs === 0) return "until unmuted";
  const end = new Date(Date.now() + secs * 1000);
  const sameDay = end.toDateString() === new Date().toDateString();
  const time = end.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return `until ${sameDay ? time : `${end.toLocaleDateString()} ${time}`}`;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The sidebar's part: new room, invitations, directory. */
export class RoomTools {
  readonly el: HTMLElement;
  private readonly invitations: HTMLUListElement;
  private readonly invitationsTitle: HTMLElement;
  private readonly results: HTMLUListElement;
  private readonly error: HTMLElement;
  private shown = "";

  constructor(private readonly options: { client: ConfabClient; onOpen: (room: string) => void }) {
    const { client } = options;
    this.error = h("p", { class: "form-error", role: "alert" });
    const nameInput = h("input", {
      id: "new-room",
      name: "new-room",
      placeholder: "New room…",
      autocomplete: "off",
      autocapitalize: "none",
      spellcheck: "false",
      maxlength: "64",
    });
    const privateBox = h("input", { id: "new-room-private", type: "checkbox", name: "private" });
    const createForm = h(
      "form",
      {
        class: "inline-form",
        onsubmit: async (e: Event) => {
          e.preventDefault();
          const room = nameInput.value.trim();
          this.error.textContent = "";
          if (!ROOM_RE.test(room)) {
            this.error.textContent = "Room names: letters, digits, '.', '_' or '-', up to 64.";
            return;
          }
          try {
            await client.create(room, { visibility: privateBox.checked ? "private" : "public" });
            nameInput.value = "";
            options.onOpen(room);
          } catch (err) {
            this.error.textContent = `Could not create it: ${message(err)}`;
          }
        },
      },
      h("label", { for: "new-room", class: "sr-only" }, "Name to create"),
      nameInput,
      h("label", { class: "check" }, privateBox, "Private"),
      h("button", { type: "submit", class: "btn btn-ghost btn-sm" }, "Create"),
    );

    this.invitationsTitle = h("h2", { class: "section-title", hidden: true }, "Invitations");
    this.invitations = h("ul", { class: "room-list", "aria-label": "Invitations" });

    const query = h("input", {
      id: "directory-query",
      name: "query",
      placeholder: "Find public rooms",
      autocomplete: "off",
      maxlength: "64",
    });
    this.results = h("ul", { class: "room-list", "aria-label": "Directory" });
    const searchForm = h(
      "form",
      {
        class: "inline-form",
        onsubmit: async (e: Event) => {
          e.preventDefault();
          this.error.textContent = "";
          try {
            const found = await client.directory(query.value.trim(), { limit: 20 });
            this.results.replaceChildren(
              ...found.rooms.map((r) =>
                h(
                  "li",
                  { class: "room-item" },
                  h("span", { class: "room-name" }, `#${r.room}`),
                  r.name ? h("span", { class: "room-preview" }, ` ${r.name}`) : null,
                  h("span", { class: "room-preview" }, ` · ${r.members} member${r.members === 1 ? "" : "s"}`),
                  h(
                    "button",
                    {
                      type: "button",
                      class: "btn btn-link",
                      "aria-label": `Enter #${r.room}`,
                      onclick: async () => {
                        try {
                          await client.join(r.room);
                          options.onOpen(r.room);
                        } catch (err) {
                          this.error.textContent = `Could not join: ${message(err)}`;
                        }
                      },
                    },
                    "Enter",
                  ),
                ),
              ),
            );
            if (found.rooms.length === 0) this.results.replaceChildren(h("li", { class: "room-preview" }, "No room found."));
          } catch (err) {
            this.error.textContent = `Search failed: ${message(err)}`;
          }
        },
      },
      h("label", { for: "directory-query", class: "sr-only" }, "Search the directory"),
      query,
      h("button", { type: "submit", class: "btn btn-ghost btn-sm" }, "Search"),
    );

    this.el = h("div", { class: "room-tools" }, createForm, searchForm, this.results, this.error, this.invitationsTitle, this.invitations);
  }

  render(): void {
    const { client, onOpen } = this.options;
    const rooms = [...client.invitations].sort();
    const sig = rooms.join(",");
    if (sig === this.shown) return;
    this.shown = sig;
    this.invitationsTitle.hidden = rooms.length === 0;
    this.invitations.replaceChildren(
      ...rooms.map((room) =>
        h(
          "li",
          { class: "room-item", "data-invitation": room },
          h("span", { class: "room-name" }, `#${room}`),
          h(
            "button",
            {
              type: "button",
              class: "btn btn-primary btn-sm",
              "aria-label": `Accept invitation #${room}`,
              onclick: async () => {
                try {
                  await client.accept(room);
                  onOpen(room);
                } catch (err) {
                  this.error.textContent = `Could not join: ${message(err)}`;
                }
              },
            },
            "Accept",
          ),
        ),
      ),
    );
  }
}

/** A conversation's room details: settings, invitations, members and moderation. */
export class RoomPanel {
  readonly el: HTMLDetailsElement;
  private readonly about: HTMLElement;
  private readonly members: HTMLUListElement;
  private readonly error: HTMLElement;
  private readonly inviteForm: HTMLFormElement;
  private readonly unbanForm: HTMLFormElement;
  private readonly settingsForm: HTMLFormElement;
  private readonly visibilitySelect: HTMLSelectElement;
  private readonly nameInput: HTMLInputElement;
  private readonly topicInput: HTMLInputElement;
  private roomId: string | undefined;
  private loaded = "";

  constructor(
    private readonly client: ConfabClient,
    private readonly bots?: BotDirectory,
  ) {
    this.about = h("p", { class: "room-about" });
    this.error = h("p", { class: "form-error", role: "alert" });
    this.members = h("ul", { class: "member-list", "aria-label": "Members" });
    const inviteInput = h("input", {
      id: "invite-user",
      name: "invite",
      placeholder: "Invite by name…",
      autocomplete: "off",
      autocapitalize: "none",
      maxlength: "32",
    });
    this.inviteForm = h(
      "form",
      {
        class: "inline-form",
        onsubmit: async (e: Event) => {
          e.preventDefault();
          const user = inviteInput.value.trim().toLowerCase();
          this.error.textContent = "";
          if (!this.roomId || !USERNAME_RE.test(user)) {
            this.error.textContent = "That is not a valid user name.";
            return;
          }
          try {
            await client.invite(this.roomId, user);
            inviteInput.value = "";
            this.error.textContent = `Invited ${user}.`;
          } catch (err) {
            this.error.textContent = `Could not invite: ${message(err)}`;
          }
        },
      },
      h("label", { for: "invite-user", class: "sr-only" }, "Invite by name"),
      inviteInput,
      h("button", { type: "submit", class: "btn btn-ghost btn-sm" }, "Invite"),
    );
    // Bans are of people who are not members (any more): lifted by name.
    const unbanInput = h("input", {
      id: "unban-user",
      name: "unban",
      placeholder: "Unban by name…",
      autocomplete: "off",
      autocapitalize: "none",
      maxlength: "32",
    });
    this.unbanForm = h(
      "form",
      {
        class: "inline-form",
        onsubmit: async (e: Event) => {
          e.preventDefault();
          const user = unbanInput.value.trim().toLowerCase();
          this.error.textContent = "";
          if (!this.roomId || !USERNAME_RE.test(user)) {
            this.error.textContent = "That is not a valid user name.";
            return;
          }
          try {
            await client.moderate(this.roomId, user, "unban");
            unbanInput.value = "";
            this.error.textContent = `Unbanned ${user}.`;
          } catch (err) {
            this.error.textContent = `Could not unban: ${message(err)}`;
          }
        },
      },
      h("label", { for: "unban-user", class: "sr-only" }, "Unban by name"),
      unbanInput,
      h("button", { type: "submit", class: "btn btn-ghost btn-sm" }, "Unban"),
    );
    this.visibilitySelect = h(
      "select",
      { id: "room-visibility", name: "visibility" },
      h("option", { value: "public" }, "Public"),
      h("option", { value: "private" }, "Private"),
    );
    this.nameInput = h("input", { id: "room-name", name: "name", placeholder: "Name", maxlength: "64" });
    this.topicInput = h("input", { id: "room-topic", name: "topic", placeholder: "Topic", maxlength: "512" });
    this.settingsForm = h(
      "form",
      {
        class: "inline-form",
        onsubmit: async (e: Event) => {
          e.preventDefault();
          if (!this.roomId) return;
          try {
            const visibility = this.visibilitySelect.value === "private" ? "private" : "public";
            await client.updateRoom(this.roomId, { name: this.nameInput.value, topic: this.topicInput.value, visibility });
          } catch (err) {
            this.error.textContent = `Could not save: ${message(err)}`;
          }
        },
      },
      h("label", { for: "room-name", class: "sr-only" }, "Display name"),
      this.nameInput,
      h("label", { for: "room-topic", class: "sr-only" }, "Topic"),
      this.topicInput,
      h("label", { for: "room-visibility", class: "sr-only" }, "Visibility"),
      this.visibilitySelect,
      h("button", { type: "submit", class: "btn btn-ghost btn-sm" }, "Save"),
    );
    this.el = h(
      "details",
      { class: "room-panel" },
      h("summary", null, "Room details"),
      this.about,
      this.settingsForm,
      this.inviteForm,
      this.unbanForm,
      this.error,
      this.members,
    );
    this.el.addEventListener("toggle", () => void this.refresh());
    client.on("event", (ev) => {
      if ((ev.ev === "member" || ev.ev === "room") && ev.room === this.roomId) void this.refresh();
    });
  }

  /** Shows the panel for a room (hidden for DMs). */
  show(roomId: string | undefined): void {
    this.roomId = roomId;
    this.el.hidden = roomId === undefined || roomId.startsWith("dm:");
    this.el.open = false;
    this.error.textContent = "";
    this.members.replaceChildren();
    this.loaded = "";
    if (!this.el.hidden) void this.refresh();
  }

  /** Reads the room's settings, and its members when the panel is open. */
  private async refresh(): Promise<void> {
    const roomId = this.roomId;
    if (!roomId || this.el.hidden || !this.client.connection.isOpen) return;
    try {
      const info = await this.client.roomInfo(roomId);
      if (roomId !== this.roomId) return;
      const mine = info.role ?? "member";
      const moderates = RANK[mine] >= RANK.admin;
      this.about.textContent =
        `${info.name || roomId}${info.topic ? ` — ${info.topic}` : ""} · ${info.visibility} · ` +
        `${info.members} member${info.members === 1 ? "" : "s"} · you are ${mine}`;
      this.settingsForm.hidden = !moderates;
      this.unbanForm.hidden = !moderates;
      this.inviteForm.hidden = info.visibility === "private" && !moderates;
      const sig = `${info.name}|${info.topic}|${info.visibility}`;
      if (sig !== this.loaded) {
        this.loaded = sig;
        this.nameInput.value = info.name;
        this.topicInput.value = info.topic;
        this.visibilitySelect.value = info.visibility;
      }
      if (!this.el.open) return;
      const page = await this.client.members(roomId, { limit: 200 });
      if (roomId !== this.roomId) return;
      this.members.replaceChildren(...page.members.map((m) => this.memberRow(roomId, m, mine)));
    } catch (err) {
      this.error.textContent = message(err);
    }
  }

  private memberRow(roomId: string, m: MemberEntry, mine: Role): HTMLLIElement {
    const muteFor = h(
      "select",
      { class: "mute-for", "aria-label": `Mute ${m.user} for` },
      ...MUTE_FOR.map(([label, secs]) => h("option", { value: String(secs) }, label)),
    );
    muteFor.value = "3600";
    const act = (label: string, run: () => Promise<unknown>) =>
      h(
        "button",
        {
          type: "button",
          class: "btn btn-link",
          "aria-label": `${label} ${m.user}`,
          onclick: async () => {
            try {
              const done = await run();
              await this.refresh();
              if (typeof done === "string") this.error.textContent = done;
            } catch (err) {
              this.error.textContent = `${label}: ${message(err)}`;
            }
          },
        },
        label,
      );
    const c = this.client;
    const over = m.user !== c.me && RANK[mine] >= RANK.admin && RANK[mine] > RANK[m.role];
    const owner = mine === "owner" && m.user !== c.me;
    return h(
      "li",
      { class: "member", "data-user": m.user },
      this.bots ? this.bots.name("span", "member-name", m.user) : h("span", { class: "member-name" }, m.user),
      h("span", { class: `role role-${m.role}` }, m.role),
      over ? act("Kick", () => c.moderate(roomId, m.user, "kick")) : null,
      over ? act("Ban", () => c.moderate(roomId, m.user, "ban")) : null,
      over ? muteFor : null,
      over
        ? act("Mute", async () => {
            const secs = Number(muteFor.value);
            const until = secs > 0 ? { until: Math.floor(Date.now() / 1000) + secs } : {};
            await c.moderate(roomId, m.user, "mute", until);
            return `Muted ${m.user} ${muteEnd(secs)}.`;
          })
        : null,
      over ? act("Unmute", () => c.moderate(roomId, m.user, "unmute")) : null,
      owner && m.role === "member" ? act("Make admin", () => c.setRole(roomId, m.user, "admin")) : null,
      owner && m.role === "admin" ? act("Make member", () => c.setRole(roomId, m.user, "member")) : null,
      owner ? act("Make owner", () => c.setRole(roomId, m.user, "owner")) : null,
    );
  }
}
