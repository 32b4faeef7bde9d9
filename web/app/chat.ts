/**
 * The signed-in app: a ConfabClient, the sidebar, the conversation and the
 * connection banner. The open room lives in the URL hash (`#general`,
 * `#dm:alice:bob`), so reloads and the back button work.
 */
import { ConfabClient, type ConnectionStatus } from "../sdk/src/index.ts";
import { AccountPanel } from "./account.ts";
import { Conversation } from "./conversation.ts";
import { h } from "./dom.ts";
import type { Session } from "./session.ts";
import { Sidebar } from "./sidebar.ts";

export interface ChatOptions {
  baseUrl: string;
  session: Session;
  onSignOut: () => void;
  /** The session ended: `why` is shown above the sign-in form. */
  onExpired: (why?: string) => void;
}

function roomFromHash(): string | undefined {
  const raw = decodeURIComponent(location.hash.replace(/^#/, ""));
  return raw || undefined;
}

export class ChatApp {
  readonly el: HTMLElement;
  readonly client: ConfabClient;
  private readonly sidebar: Sidebar;
  private readonly conversation: Conversation;
  private readonly banner: HTMLElement;
  private renderQueued = false;
  private roomsKnown = false;
  private connectingTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly onHash = () => this.route();
  /** Back online or back to the tab: no need to sit out the backoff. */
  private readonly onWake = () => {
    if (document.visibilityState === "visible") this.client.connection.reconnectNow();
  };

  constructor(private readonly options: ChatOptions) {
    const { session } = options;
    this.client = new ConfabClient({ baseUrl: options.baseUrl, token: session.token, user: session.user });
    const account = new AccountPanel({
      client: this.client,
      baseUrl: options.baseUrl,
      token: session.token,
      onSignedOut: () => options.onSignOut(),
    });
    account.el.hidden = true;
    this.sidebar = new Sidebar({
      client: this.client,
      onOpen: (room) => this.open(room),
      onSignOut: () => options.onSignOut(),
      account: account.el,
    });
    this.conversation = new Conversation({
      client: this.client,
      onBack: () => this.open(undefined),
      onLeft: () => this.open(undefined),
    });
    this.banner = h("div", { class: "banner", role: "status", "aria-live": "polite", hidden: true });
    this.el = h("div", { class: "app" }, this.banner, h("div", { class: "layout" }, this.sidebar.el, this.conversation.el));

    const c = this.client;
    c.on("status", (s) => this.onStatus(s));
    c.on("rooms", () => this.schedule());
    c.on("room", () => this.schedule());
    c.on("presence", () => this.schedule());
    c.on("ready", () => {
      this.roomsKnown = true;
      this.route();
      void this.conversation.refreshPresence();
      this.loadPreviews();
    });
    c.on("expired", () => options.onExpired());
    c.on("disconnected", () => options.onExpired("You were disconnected by the service. Sign in again to continue."));
    window.addEventListener("hashchange", this.onHash);
    window.addEventListener("online", this.onWake);
    document.addEventListener("visibilitychange", this.onWake);
    this.onStatus(c.status);
    this.route();
    c.connect();
  }

  destroy(): void {
    window.removeEventListener("hashchange", this.onHash);
    window.removeEventListener("online", this.onWake);
    document.removeEventListener("visibilitychange", this.onWake);
    clearTimeout(this.connectingTimer);
    this.conversation.destroy();
    this.client.close();
    this.el.remove();
  }

  /** Opens a room (or the list, on phones) by moving the hash. */
  private open(room: string | undefined): void {
    const hash = room ? `#${encodeURIComponent(room).replace(/%3A/g, ":")}` : "";
    if (location.hash === hash || (!hash && !location.hash)) {
      this.route();
    } else if (hash) {
      location.hash = hash;
    } else {
      history.pushState(null, "", location.pathname + location.search);
      this.route();
    }
  }

  private route(): void {
    const wanted = roomFromHash();
    let room = wanted;
    if (wanted && !this.client.room(wanted)) {
      // Rooms not loaded yet: wait for them; an unknown room closes.
      room = undefined;
      if (this.roomsKnown) history.replaceState(null, "", location.pathname + location.search);
    }
    const previous = this.conversation.current;
    this.el.classList.toggle("has-room", room !== undefined);
    this.conversation.show(room);
    // A DM opened by name but never written to leaves no trace in the list.
    if (previous && previous !== room) this.client.closeLocal(previous);
    this.sidebar.setCurrent(room);
  }

  private onStatus(status: ConnectionStatus): void {
    clearTimeout(this.connectingTimer);
    const show = (text: string) => {
      this.banner.hidden = false;
      this.banner.replaceChildren(h("span", { class: "spinner", "aria-hidden": "true" }), text);
      this.el.classList.add("offline");
    };
    if (status === "reconnecting") {
      const unsent = this.client.pendingSends.length;
      show(
        `Connection lost. Reconnecting…${unsent ? ` ${unsent} unsent message${unsent === 1 ? "" : "s"} will go out when you are back.` : ""}`,
      );
    } else if (status === "connecting") {
      // Only a slow first connection deserves a banner.
      this.connectingTimer = setTimeout(() => show("Connecting…"), 800);
    } else {
      this.banner.hidden = true;
      this.banner.replaceChildren();
      this.el.classList.remove("offline");
    }
  }

  /** The newest message of rooms that have none loaded, for the room list's previews. */
  private loadPreviews(): void {
    let n = 0;
    for (const room of this.client.rooms.values()) {
      if (room.messages.length > 0 || !room.hasOlder || !room.onServer) continue;
      if (++n > 30) break;
      this.client.loadOlder(room.id, 1).catch(() => {});
    }
  }

  /** Coalesces the many state events of one burst into one render. */
  private schedule(): void {
    if (this.renderQueued) return;
    this.renderQueued = true;
    queueMicrotask(() => {
      this.renderQueued = false;
      if (this.client.status === "reconnecting") this.onStatus("reconnecting");
      const current = this.conversation.current;
      if (current && !this.client.room(current)) {
        this.open(undefined);
        return;
      }
      if (!this.conversation.current && roomFromHash() && this.client.room(roomFromHash()!)) this.route();
      this.sidebar.render();
      this.conversation.render();
      this.renderTitle();
    });
  }

  /** "(3) Confab · alice": unread messages in the tab's title. */
  private renderTitle(): void {
    let unread = 0;
    for (const room of this.client.rooms.values()) unread += room.unreadCount(this.client.me);
    const title = `${unread > 0 ? `(${unread}) ` : ""}Confab · ${this.client.me}`;
    if (document.title !== title) document.title = title;
  }
}
