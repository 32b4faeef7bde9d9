/**
 * The chat pane of one room: header with presence, the message list (older
 * pages load as you scroll up), typing indicator, read markers for what is on
 * screen, and the composer.
 */
import { type ConfabClient, type Message, mentions, type OutgoingMessage, type RoomState } from "../sdk/src/index.ts";
import { UploadTray, filesOf, paperclipIcon, renderAttachments } from "./attachments.ts";
import { MentionCompleter, NotifyControl, withMentions } from "./badges.ts";
import { BotDirectory } from "./bots.ts";
import { h } from "./dom.ts";
import { avatar, formatTime, fullTime, listNames, richText } from "./format.ts";
import { type ComposeMode, type LifecycleHost, actions, composeBanner, editedMark, quote, reactions, signature } from "./lifecycle.ts";
import { RoomPanel } from "./rooms.ts";
import { roomTitle } from "./sidebar.ts";

export interface ConversationOptions {
  client: ConfabClient;
  onBack: () => void;
  onLeft: (room: string) => void;
}

/** Messages of one author within this many ms share one header. */
const GROUP_MS = 5 * 60_000;
/** Load older messages when the list is scrolled this close to its top. */
const LOAD_MARGIN_PX = 240;

type Item =
  | { kind: "msg"; key: string; m: Message }
  | { kind: "out"; key: string; o: OutgoingMessage };

interface Rendered {
  li: HTMLLIElement;
  sig: string;
}

export class Conversation {
  readonly el: HTMLElement;
  private readonly title: HTMLHeadingElement;
  private readonly subtitle: HTMLElement;
  private readonly leaveBtn: HTMLButtonElement;
  private readonly panel: RoomPanel;
  private readonly scroller: HTMLElement;
  private readonly edge: HTMLElement;
  private readonly list: HTMLOListElement;
  private readonly typingLine: HTMLElement;
  private readonly input: HTMLTextAreaElement;
  private readonly composer: HTMLFormElement;
  private readonly completer: MentionCompleter;
  private readonly notifyControl: NotifyControl;
  private readonly emptyState: HTMLElement;
  private readonly jumpBtn: HTMLButtonElement;
  private readonly rendered = new Map<string, Rendered>();
  private readonly observer: IntersectionObserver;
  private readonly resizeObserver: ResizeObserver;
  private readonly visibleSeqs = new Set<number>();
  private roomId: string | undefined;
  /** The read marker when the room was opened: the "new" divider stays put while reading. */
  private dividerAfter = 0;
  /** ...and it marks only messages that existed then, not those arriving while reading. */
  private dividerUntil = 0;
  private loadingOlder = false;
  private stickToBottom = true;
  private presenceFor: string | undefined;
  /** Replying to or editing a message, from the composer. */
  private mode: ComposeMode;
  private readonly banner: HTMLElement;
  private readonly lifecycle: LifecycleHost;
  private readonly bots: BotDirectory;
  private readonly tray: UploadTray;
  private readonly sendBtn: HTMLButtonElement;
  private readonly fileInput: HTMLInputElement;
  private readonly dropHint: HTMLElement;
  private dragDepth = 0;

  constructor(private readonly options: ConversationOptions) {
    const { client } = options;
    this.title = h("h1", { class: "conv-title" });
    this.subtitle = h("p", { class: "conv-subtitle" });
    this.leaveBtn = h(
      "button",
      { type: "button", class: "btn btn-ghost btn-sm", onclick: () => void this.leave() },
      "Leave",
    );
    this.bots = new BotDirectory(client, () => document);
    this.panel = new RoomPanel(client, this.bots);
    this.edge = h("div", { class: "history-edge" });
    this.list = h("ol", { class: "messages", "aria-label": "Chat history", "aria-live": "polite", "aria-relevant": "additions" });
    this.scroller = h("div", { class: "scroller", tabindex: "-1" }, this.edge, this.list);
    this.jumpBtn = h(
      "button",
      {
        type: "button",
        class: "btn btn-primary btn-sm jump-btn",
        hidden: true,
        onclick: () => {
          this.stickToBottom = true;
          this.scroller.scrollTop = this.scroller.scrollHeight;
          this.jumpBtn.hidden = true;
        },
      },
      "Jump to latest ↓",
    );
    this.typingLine = h("p", { class: "typing", "aria-live": "polite" });
    this.input = h("textarea", {
      id: "composer-input",
      name: "message",
      rows: "1",
      autocomplete: "off",
      enterkeyhint: "send",
    });
    this.completer = new MentionCompleter(client, this.input);
    this.notifyControl = new NotifyControl(client);
    const sendBtn = h("button", { type: "submit", class: "btn btn-primary send-btn" }, "Send");
    this.sendBtn = sendBtn;
    this.tray = new UploadTray(client, () => this.syncSendButton());
    this.fileInput = h("input", { type: "file", multiple: true, class: "sr-only", tabindex: "-1", "aria-hidden": "true" });
    this.fileInput.addEventListener("change", () => {
      this.tray.add([...(this.fileInput.files ?? [])]);
      this.fileInput.value = "";
      this.input.focus();
    });
    const attachBtn = h(
      "button",
      { type: "button", class: "btn btn-icon attach-btn", "aria-label": "Attach files", title: "Attach files", onclick: () => this.fileInput.click() },
      paperclipIcon(),
    );
    this.dropHint = h("div", { class: "drop-hint", "aria-hidden": "true" }, "Drop files to attach them");
    this.banner = h("div", { class: "compose-banner-slot" });
    this.lifecycle = {
      client,
      room: () => (this.roomId ? client.room(this.roomId) : undefined),
      compose: (mode, text) => this.compose(mode, text),
      fail: (message) => {
        this.subtitle.textContent = message;
      },
    };
    this.composer = h(
      "form",
      { class: "composer", onsubmit: (e: Event) => this.onSubmit(e) },
      h("label", { for: "composer-input", class: "sr-only" }, "Message"),
      this.completer.el,
      attachBtn,
      this.fileInput,
      this.input,
      sendBtn,
    );
    // A pasted image (a screenshot) is attached; pasted text stays text.
    this.input.addEventListener("paste", (e) => {
      const files = filesOf(e.clipboardData);
      if (files.length === 0) return;
      e.preventDefault();
      this.tray.add(files);
    });
    this.input.addEventListener("keydown", (e) => {
      if (this.completer.handleKey(e)) return;
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this.composer.requestSubmit();
      }
    });
    this.input.addEventListener("input", () => {
      this.autosize();
      if (this.roomId && this.input.value.trim()) client.typing(this.roomId);
    });

    this.emptyState = h(
      "div",
      { class: "empty-state" },
      h("div", { class: "empty-mark", "aria-hidden": "true" }, "◆"),
      h("h1", null, "Welcome to Confab"),
      h("p", null, "Join a room or message someone by user name to start chatting."),
    );

    const header = h(
      "header",
      { class: "conv-header" },
      h(
        "button",
        { type: "button", class: "btn btn-icon back-btn", "aria-label": "Back to conversations", onclick: () => options.onBack() },
        "‹",
      ),
      h("div", { class: "conv-heading" }, this.title, this.subtitle),
      this.notifyControl.el,
      this.leaveBtn,
    );
    this.el = h(
      "section",
      { class: "conversation" },
      this.emptyState,
      h(
        "div",
        { class: "conv-body" },
        header,
        this.panel.el,
        h("div", { class: "scroller-wrap" }, this.scroller, this.jumpBtn),
        this.typingLine,
        this.banner,
        this.tray.el,
        this.composer,
        this.dropHint,
      ),
    );
    const body = this.el.querySelector<HTMLElement>(".conv-body")!;
    const hasFiles = (e: DragEvent) => [...(e.dataTransfer?.types ?? [])].includes("Files");
    body.addEventListener("dragenter", (e) => {
      if (!hasFiles(e) || !this.roomId) return;
      e.preventDefault();
      this.dragDepth++;
      body.classList.add("dropping");
    });
    body.addEventListener("dragover", (e) => {
      if (!hasFiles(e) || !this.roomId) return;
      e.preventDefault();
      if (e.dataTransfer) e.dataTransfer.dropEffect = "copy";
    });
    body.addEventListener("dragleave", () => {
      this.dragDepth = Math.max(0, this.dragDepth - 1);
      if (this.dragDepth === 0) body.classList.remove("dropping");
    });
    body.addEventListener("drop", (e) => {
      this.dragDepth = 0;
      body.classList.remove("dropping");
      const files = filesOf(e.dataTransfer);
      if (files.length === 0 || !this.roomId) return;
      e.preventDefault();
      this.tray.add(files);
      this.input.focus();
    });

    this.scroller.addEventListener("scroll", () => {
      this.stickToBottom = this.atBottom();
      if (this.stickToBottom) this.jumpBtn.hidden = true;
      if (this.scroller.scrollTop < LOAD_MARGIN_PX) void this.loadOlder();
    });
    // The composer grows, a phone keyboard opens: stay at the bottom when following.
    this.resizeObserver = new ResizeObserver(() => {
      if (this.stickToBottom) this.scroller.scrollTop = this.scroller.scrollHeight;
    });
    this.resizeObserver.observe(this.scroller);
    this.observer = new IntersectionObserver((entries) => this.onVisibility(entries), {
      root: this.scroller,
      threshold: 0.5,
    });
    document.addEventListener("visibilitychange", this.onPageVisible);
    window.addEventListener("focus", this.onPageVisible);
  }

  private readonly onPageVisible = () => this.markVisibleRead();

  /** An image arrived and the list grew: stay at the bottom when following. */
  private readonly onImageLoad = () => {
    if (this.stickToBottom) this.scroller.scrollTop = this.scroller.scrollHeight;
  };

  /** Send waits while files are still uploading. */
  private syncSendButton(): void {
    this.sendBtn.disabled = this.tray.uploading;
    this.sendBtn.title = this.tray.uploading ? "Waiting for uploads to finish" : "";
  }

  destroy(): void {
    document.removeEventListener("visibilitychange", this.onPageVisible);
    window.removeEventListener("focus", this.onPageVisible);
    this.observer.disconnect();
    this.resizeObserver.disconnect();
  }

  get current(): string | undefined {
    return this.roomId;
  }

  /** Shows a room (or the welcome screen for `undefined`). */
  show(roomId: string | undefined): void {
    if (roomId === this.roomId) return;
    const { client } = this.options;
    this.roomId = roomId;
    this.compose(undefined);
    this.panel.show(roomId);
    this.completer.show(roomId);
    this.tray.show(roomId);
    this.clearList();
    this.el.classList.toggle("is-empty", roomId === undefined);
    if (roomId === undefined) return;
    const room = client.room(roomId);
    this.dividerAfter = room?.readSeq ?? 0;
    this.dividerUntil = room?.lastSeq ?? 0;
    this.stickToBottom = true;
    this.input.value = "";
    this.autosize();
    this.render();
    void this.fill();
    void this.refreshPresence();
    if (matchMedia("(min-width: 720px)").matches) this.input.focus({ preventScroll: true });
  }

  /** Fetches who is online in the current room (on open and after reconnects). */
  async refreshPresence(): Promise<void> {
    const roomId = this.roomId;
    const room = roomId ? this.options.client.room(roomId) : undefined;
    if (!roomId || !room || !room.onServer || !this.options.client.connection.isOpen) return;
    if (this.presenceFor === roomId) return; // already asking
    this.presenceFor = roomId;
    try {
      await this.options.client.presence(roomId);
    } catch {
      // Shown as unknown; the next presence event or reconnect fills it in.
    } finally {
      this.presenceFor = undefined;
    }
    this.render();
  }

  render(): void {
    const { client } = this.options;
    const roomId = this.roomId;
    if (roomId === undefined) return;
    const room = client.room(roomId);
    if (!room) {
      this.options.onBack();
      return;
    }
    const me = client.me;
    const title = roomTitle(room, me);
    this.title.replaceChildren(
      h("span", { class: "conv-sigil", "aria-hidden": "true" }, room.isDm ? "@" : "#"),
      title,
    );
    this.renderSubtitle(room, title);
    this.leaveBtn.hidden = room.isDm;
    this.notifyControl.show(room);
    this.input.placeholder = room.isDm ? `Message ${title}` : `Message #${title}`;
    this.renderEdge(room);
    this.renderTyping(room);
    this.renderMessages(room);
  }

  private renderSubtitle(room: RoomState, title: string): void {
    const { client } = this.options;
    if (room.isDm) {
      const online = client.online.has(title);
      this.subtitle.replaceChildren(
        h("span", { class: `dot${online ? " on" : ""}`, "aria-hidden": "true" }),
        online ? "Online" : room.onServer ? "Offline" : "New conversation",
      );
      return;
    }
    const online = client.onlineIn(room.id);
    this.subtitle.replaceChildren(
      h("span", { class: `dot${online.length ? " on" : ""}`, "aria-hidden": "true" }),
      online.length ? `${online.length} online: ${online.join(", ")}` : "Nobody else online",
    );
    this.subtitle.title = online.join(", ");
  }

  private renderEdge(room: RoomState): void {
    const title = roomTitle(room, this.options.client.me);
    const text = room.hasOlder
      ? this.loadingOlder
        ? "Loading older messages…"
        : ""
      : room.isDm
        ? `This is the beginning of your conversation with ${title}.`
        : `This is the beginning of #${title}.`;
    if (this.edge.textContent !== text) this.edge.textContent = text;
  }

  private renderTyping(room: RoomState): void {
    const now = Date.now();
    const names = [...room.typing.entries()].filter(([, until]) => until > now).map(([u]) => u).sort();
    const text =
      names.length === 0 ? "" : names.length > 3 ? "Several people are typing…" : `${listNames(names)} ${names.length === 1 ? "is" : "are"} typing…`;
    if (this.typingLine.textContent !== text) this.typingLine.textContent = text;
  }

  private renderMessages(room: RoomState): void {
    const items: Item[] = room.messages.map((m) => ({ kind: "msg", key: `m${m.seq}`, m }));
    for (const o of room.outgoing) items.push({ kind: "out", key: `o${o.cid}`, o });

    const before = { height: this.scroller.scrollHeight, top: this.scroller.scrollTop };
    const firstKeyBefore = this.list.firstElementChild?.getAttribute("data-key");
    const lastKeyBefore = this.list.lastElementChild?.getAttribute("data-key");
    const me = this.options.client.me;
    const keep = new Set<string>();
    let prev: Item | undefined;
    let prevLi: HTMLLIElement | null = null;
    let dividerPlaced = false;
    for (const item of items) {
      keep.add(item.key);
      const from = item.kind === "msg" ? item.m.from : me;
      const ts = item.kind === "msg" ? item.m.ts : item.o.createdAt;
      const prevFrom = prev ? (prev.kind === "msg" ? prev.m.from : me) : undefined;
      const prevTs = prev ? (prev.kind === "msg" ? prev.m.ts : prev.o.createdAt) : 0;
      const divider =
        !dividerPlaced &&
        item.kind === "msg" &&
        item.m.seq > this.dividerAfter &&
        item.m.seq <= this.dividerUntil &&
        item.m.from !== me &&
        this.dividerAfter > 0;
      if (divider) dividerPlaced = true;
      const cont = !divider && prevFrom === from && ts - prevTs < GROUP_MS;
      const sig =
        item.kind === "msg"
          ? `m|${cont}|${divider}|${signature(item.m)}|${item.m.reply_to !== undefined ? (this.lifecycle.room()?.message(item.m.reply_to)?.text ?? "") : ""}`
          : `o|${cont}|${item.o.state}|${item.o.error?.code ?? ""}`;
      let r = this.rendered.get(item.key);
      if (!r || r.sig !== sig) {
        const li = item.kind === "msg" ? this.renderMessage(item.m, cont, divider) : this.renderOutgoing(item.o, cont);
        li.setAttribute("data-key", item.key);
        if (r) {
          this.observer.unobserve(r.li);
          r.li.replaceWith(li);
        }
        r = { li, sig };
        this.rendered.set(item.key, r);
        if (item.kind === "msg") this.observer.observe(li);
      }
      const expected: ChildNode | null = prevLi ? prevLi.nextSibling : this.list.firstChild;
      if (expected !== r.li) this.list.insertBefore(r.li, expected);
      prevLi = r.li;
      prev = item;
    }
    for (const [key, r] of [...this.rendered]) {
      if (!keep.has(key)) {
        this.observer.unobserve(r.li);
        r.li.remove();
        this.rendered.delete(key);
      }
    }

    // Keep the view where the reader is: at the bottom when following; on the
    // same message when older ones were added above, with a way down when
    // newer ones arrived below.
    const keyOf = (el: Element | null) => el?.getAttribute("data-key");
    if (this.stickToBottom) {
      this.scroller.scrollTop = this.scroller.scrollHeight;
      return;
    }
    if (firstKeyBefore && keyOf(this.list.firstElementChild) !== firstKeyBefore) {
      this.scroller.scrollTop = before.top + (this.scroller.scrollHeight - before.height);
    }
    if (lastKeyBefore && keyOf(this.list.lastElementChild) !== lastKeyBefore) this.jumpBtn.hidden = false;
  }

  private renderMessage(m: Message, cont: boolean, divider: boolean): HTMLLIElement {
    const me = this.options.client.me;
    const li = h("li", {
      class: `msg${cont ? " cont" : ""}${m.from === me ? " mine" : ""}${divider ? " first-unread" : ""}`,
      "data-seq": String(m.seq),
    });
    if (divider) li.append(h("div", { class: "new-divider", "aria-hidden": "true" }, h("span", null, "New")));
    const body = this.messageBody(m.from, m.ts, m.deleted ? "" : m.text, cont, m.deleted ? [] : (m.mentions ?? []));
    if (!m.deleted && mentions(m, me) && m.from !== me) li.classList.add("mentions-me");
    const content = body.querySelector(".msg-content")!;
    const text = content.querySelector(".msg-text")!;
    if (m.deleted) {
      li.classList.add("deleted");
      text.replaceChildren(h("em", null, "Message deleted"));
    }
    const quoted = quote(this.lifecycle.room(), m);
    if (quoted) text.before(quoted);
    if (!m.deleted && m.attachments?.length) text.after(renderAttachments(this.options.client, m.attachments, this.onImageLoad));
    const edited = editedMark(this.lifecycle, m);
    if (edited) text.append(" ", edited);
    for (const part of [reactions(this.lifecycle, m), actions(this.lifecycle, m)]) if (part) content.append(part);
    li.append(body);
    return li;
  }

  private renderOutgoing(o: OutgoingMessage, cont: boolean): HTMLLIElement {
    const li = h("li", { class: `msg mine outgoing ${o.state}${cont ? " cont" : ""}` });
    const body = this.messageBody(this.options.client.me, o.createdAt, o.text, cont);
    const content = body.querySelector(".msg-content")!;
    if (o.attachments?.length) content.append(renderAttachments(this.options.client, o.attachments, this.onImageLoad));
    if (o.state === "sending") {
      content.append(h("div", { class: "msg-status" }, "Sending…"));
    } else if (o.state === "failed") {
      content.append(
        h(
          "div",
          { class: "msg-status error" },
          `Not sent: ${explainSendError(o)} `,
          h("button", { type: "button", class: "btn btn-link", onclick: () => void this.options.client.retry(o.cid)?.catch(() => {}) }, "Retry"),
          " · ",
          h("button", { type: "button", class: "btn btn-link", onclick: () => this.options.client.discard(o.cid) }, "Discard"),
        ),
      );
    }
    li.append(body);
    return li;
  }

  private messageBody(from: string, ts: number, text: string, cont: boolean, mentioned: readonly string[] = []): HTMLElement {
    const content = h("div", { class: "msg-content" });
    if (!cont) {
      content.append(
        h(
          "div",
          { class: "msg-meta" },
          this.bots.name("span", "msg-author", from),
          h("time", { class: "msg-time", datetime: new Date(ts).toISOString(), title: fullTime(ts) }, formatTime(ts)),
        ),
      );
    }
    const me = this.options.client.me;
    content.append(h("div", { class: "msg-text" }, richText(text, (s) => withMentions(s, mentioned, me))));
    return h("div", { class: "msg-row" }, cont ? h("span", { class: "avatar-gap", "aria-hidden": "true" }) : avatar(from), content);
  }

  private clearList(): void {
    this.jumpBtn.hidden = true;
    for (const r of this.rendered.values()) this.observer.unobserve(r.li);
    this.rendered.clear();
    this.visibleSeqs.clear();
    this.list.replaceChildren();
    this.typingLine.textContent = "";
    this.edge.textContent = "";
  }

  private atBottom(): boolean {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 48;
  }

  /** Loads older pages until the list fills the screen (or the room's start). */
  private async fill(): Promise<void> {
    const roomId = this.roomId;
    for (let i = 0; i < 20 && roomId === this.roomId; i++) {
      const room = roomId ? this.options.client.room(roomId) : undefined;
      if (!room || !room.hasOlder || !room.onServer) return;
      if (room.messages.length >= 30 && this.scroller.scrollHeight > this.scroller.clientHeight + LOAD_MARGIN_PX) return;
      const added = await this.loadOlder();
      if (added === 0) return;
    }
  }

  private async loadOlder(): Promise<number> {
    const roomId = this.roomId;
    const room = roomId ? this.options.client.room(roomId) : undefined;
    if (!roomId || !room || !room.hasOlder || !room.onServer || this.loadingOlder) return 0;
    this.loadingOlder = true;
    this.renderEdge(room);
    try {
      return await this.options.client.loadOlder(roomId);
    } catch {
      return 0;
    } finally {
      this.loadingOlder = false;
      if (this.roomId === roomId) this.render();
    }
  }

  private onVisibility(entries: IntersectionObserverEntry[]): void {
    for (const entry of entries) {
      const seq = Number((entry.target as HTMLElement).dataset["seq"]);
      if (!Number.isFinite(seq)) continue;
      if (entry.isIntersecting) this.visibleSeqs.add(seq);
      else this.visibleSeqs.delete(seq);
    }
    this.markVisibleRead();
  }

  /** Moves the read marker to the newest message on screen while the page is visible. */
  private markVisibleRead(): void {
    if (!this.roomId || document.visibilityState !== "visible" || this.visibleSeqs.size === 0) return;
    this.options.client.markRead(this.roomId, Math.max(...this.visibleSeqs));
  }

  private onSubmit(e: Event): void {
    e.preventDefault();
    const roomId = this.roomId;
    const text = this.input.value.replace(/^\s*\n|\s+$/g, "");
    const editing = this.mode?.kind === "edit";
    if (!editing && this.tray.uploading) return;
    const attachments = editing ? [] : this.tray.ready;
    if (!roomId || (!text.trim() && attachments.length === 0)) return;
    this.input.value = "";
    this.autosize();
    const mode = this.mode;
    this.compose(undefined);
    if (mode?.kind === "edit") {
      this.options.client.edit(roomId, mode.seq, text).catch((err: Error) => {
        this.subtitle.textContent = `Could not edit: ${err.message}`;
      });
      this.input.focus();
      return;
    }
    this.stickToBottom = true;
    const options = {
      ...(mode?.kind === "reply" ? { replyTo: mode.seq } : {}),
      ...(attachments.length > 0 ? { attachments } : {}),
    };
    this.tray.sent();
    this.options.client.send(roomId, text.trim() ? text : "", options).catch(() => {
      // Shown on the message itself, with Retry.
    });
    this.input.focus();
  }

  /** Switches the composer to replying to or editing a message (or back). */
  private compose(mode: ComposeMode, text?: string): void {
    this.mode = mode;
    const room = this.lifecycle.room();
    const banner = composeBanner(room, mode, () => this.compose(undefined));
    this.banner.replaceChildren(...(banner ? [banner] : []));
    if (text !== undefined) {
      this.input.value = text;
      this.autosize();
    }
    if (mode) this.input.focus();
  }

  private async leave(): Promise<void> {
    const roomId = this.roomId;
    if (!roomId) return;
    this.leaveBtn.disabled = true;
    try {
      await this.options.client.leave(roomId);
      this.options.onLeft(roomId);
    } catch (err) {
      this.subtitle.textContent = `Could not leave: ${(err as Error).message}`;
    } finally {
      this.leaveBtn.disabled = false;
    }
  }

  private autosize(): void {
    this.input.style.height = "auto";
    this.input.style.height = `${Math.min(this.input.scrollHeight, 160)}px`;
  }
}

function explainSendError(o: OutgoingMessage): string {
  switch (o.error?.code) {
    case "not_found":
      if (o.attachments?.length) return "an attached file is no longer on the server; attach it again.";
      return o.to ? `there is no user named ${o.to}.` : "not found.";
    case "too_large":
      return "the message is too long.";
    case "not_member":
      return "you are not a member of this room.";
    default:
      return o.error?.message ?? "unknown error.";
  }
}
