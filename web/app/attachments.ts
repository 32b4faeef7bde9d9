/**
 * Attachments: what a message's files look like (images inline from their
 * thumbnail, opened full size in an overlay; other files as download cards)
 * and the composer's tray of files being uploaded (attach button, drag and
 * drop, paste), with progress and the server's refusals in words.
 */
import { type Attachment, type ConfabClient, ConfabError, MAX_ATTACHMENTS } from "../sdk/src/index.ts";
import { h } from "./dom.ts";
import { humanSize } from "./format.ts";

/** Types the browser shows inline (the server serves these `inline`, everything else as a download). */
const INLINE_IMAGES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);
/** The long side of a thumbnail, as the server makes them. */
const THUMB_PX = 320;

export function isInlineImage(a: Attachment): boolean {
  return INLINE_IMAGES.has(a.content_type);
}

/** The files of one message; `onLoad` is called as images arrive (their height changes the list). */
export function renderAttachments(client: ConfabClient, attachments: readonly Attachment[], onLoad: () => void): HTMLElement {
  const box = h("div", { class: "attachments" });
  for (const a of attachments) box.append(isInlineImage(a) ? imageTile(client, a, onLoad) : fileCard(client, a));
  return box;
}

function imageTile(client: ConfabClient, a: Attachment, onLoad: () => void): HTMLElement {
  const img = h("img", { class: "att-img", alt: a.name, decoding: "async" });
  if (a.width && a.height) {
    // Reserve the thumbnail's box so the list does not jump when it arrives.
    const scale = Math.min(1, THUMB_PX / Math.max(a.width, a.height));
    img.width = Math.max(1, Math.round(a.width * scale));
    img.height = Math.max(1, Math.round(a.height * scale));
  }
  img.addEventListener("load", onLoad);
  const button = h(
    "button",
    { type: "button", class: "att-image", "aria-label": `Open ${a.name} full size`, title: a.name },
    img,
  );
  button.addEventListener("click", () => void openLightbox(client, a));
  client.attachmentUrls(a).then(
    (urls) => {
      img.src = urls.thumbnailUrl ?? urls.url;
    },
    () => button.replaceWith(fileCard(client, a)),
  );
  return button;
}

function fileCard(client: ConfabClient, a: Attachment): HTMLElement {
  const link = h(
    "a",
    { class: "att-file", download: a.name, rel: "noopener", "data-type": a.content_type },
    h("span", { class: "att-file-icon", "aria-hidden": "true" }, fileIcon(a.content_type)),
    h("span", { class: "att-file-text" }, h("span", { class: "att-file-name" }, a.name), h("span", { class: "att-file-size" }, humanSize(a.size))),
  );
  link.setAttribute("aria-label", `Download ${a.name}, ${humanSize(a.size)}`);
  client.attachmentUrls(a).then(
    (urls) => link.setAttribute("href", urls.url),
    () => link.classList.add("unavailable"),
  );
  // A signed URL expires: sign again (cached while fresh) right before following it.
  link.addEventListener("click", (e) => {
    e.preventDefault();
    void client.attachmentUrls(a).then((urls) => {
      link.setAttribute("href", urls.url);
      const go = h("a", { href: urls.url, download: a.name, rel: "noopener" });
      document.body.append(go);
      go.click();
      go.remove();
    });
  });
  return link;
}

function fileIcon(type: string): string {
  if (type === "application/pdf") return "PDF";
  if (type === "application/zip") return "ZIP";
  if (type.startsWith("text/")) return "TXT";
  if (type.startsWith("image/")) return "IMG";
  return "FILE";
}

/** The image full size over everything; Escape, the close button or a click beside it closes. */
export async function openLightbox(client: ConfabClient, a: Attachment): Promise<void> {
  const before = document.activeElement as HTMLElement | null;
  const img = h("img", { class: "lightbox-img", alt: a.name });
  const close = h("button", { type: "button", class: "btn btn-icon lightbox-close", "aria-label": "Close" }, "×");
  const caption = h("p", { class: "lightbox-caption" }, `${a.name} · ${a.width && a.height ? `${a.width}×${a.height} · ` : ""}${humanSize(a.size)}`);
  const overlay = h(
    "div",
    { class: "lightbox", role: "dialog", "aria-modal": "true", "aria-label": a.name, tabindex: "-1" },
    close,
    h("figure", { class: "lightbox-figure" }, img, caption),
  );
  const done = () => {
    overlay.remove();
    document.removeEventListener("keydown", onKey, true);
    before?.focus({ preventScroll: true });
  };
  const onKey = (e: KeyboardEvent) => {
    if (e.key === "Escape") {
      e.preventDefault();
      e.stopPropagation();
      done();
    }
  };
  overlay.addEventListener("click", (e) => {
    if (e.target === overlay || e.target === close) done();
  });
  document.addEventListener("keydown", onKey, true);
  document.body.append(overlay);
  close.focus();
  try {
    img.src = (await client.attachmentUrls(a)).url;
  } catch (err) {
    caption.textContent = `Could not open ${a.name}: ${(err as Error).message}`;
  }
}

interface Pending {
  file: File;
  state: "uploading" | "done" | "failed";
  loaded: number;
  attachment?: Attachment;
  error?: string;
  abort: AbortController;
  el: HTMLElement;
}

/**
 * Uploads the tray runs at once (the others wait their turn): under the
 * server's default `max_concurrent_uploads` (4), which answers one more
 * with 429.
 */
const UPLOADS_AT_ONCE = 3;

/** What a refused upload means for the person who tried it. */
export function explainUploadError(err: unknown, name: string): string {
  const e = err instanceof ConfabError ? err : undefined;
  if (e?.code === "too_large" || e?.status === 413) {
    const limit = /(\d+) bytes/.exec(e?.message ?? "")?.[1];
    return `${name} is too large to upload${limit ? `: the limit is ${humanSize(Number(limit))}` : ""}.`;
  }
  if (e?.status === 415) return `${name}: this type of file cannot be sent here.`;
  if (e?.code === "not_member" || e?.code === "forbidden" || e?.status === 403) return `${name}: you are not allowed to upload to this room.`;
  if (e?.code === "rate_limited" || e?.status === 429) return `${name} could not be uploaded: too many uploads at once. Try again in a moment.`;
  if (e?.code === "unavailable") return `${name} could not be uploaded: the server cannot be reached. Try again.`;
  return `${name} could not be uploaded: ${(err as Error)?.message ?? "unknown error"}.`;
}

/**
 * The files waiting to go with the next message: each is uploaded as soon as
 * it is added, with a progress bar; a failed one shows why and can be removed.
 */
export class UploadTray {
  readonly el: HTMLElement;
  private readonly list: HTMLUListElement;
  private items: Pending[] = [];
  private room: string | undefined;
  /** Uploads running, and those waiting for one of them to end. */
  private active = 0;
  private readonly queued: (() => void)[] = [];

  constructor(
    private readonly client: ConfabClient,
    private readonly changed: () => void,
  ) {
    this.list = h("ul", { class: "upload-list", "aria-label": "Attachments to send" });
    this.el = h("div", { class: "upload-tray", hidden: true }, this.list);
  }

  /** Another room: what was waiting for the last one is dropped. */
  show(room: string | undefined): void {
    if (room === this.room) return;
    this.clear();
    this.room = room;
  }

  /** Starts uploading `files` to the current room. */
  add(files: Iterable<File>): void {
    const room = this.room;
    if (!room) return;
    for (const file of files) {
      if (this.items.filter((p) => p.state !== "failed").length >= MAX_ATTACHMENTS) {
        this.push(file, "failed", `At most ${MAX_ATTACHMENTS} files per message.`);
        continue;
      }
      const item = this.push(file, "uploading");
      this.schedule(() => this.start(room, file, item));
    }
  }

  /** Runs `start` now, or once fewer than UPLOADS_AT_ONCE uploads run. */
  private schedule(start: () => Promise<void>): void {
    const run = () => {
      this.active++;
      void start().finally(() => {
        this.active--;
        this.queued.shift()?.();
      });
    };
    if (this.active < UPLOADS_AT_ONCE) run();
    else this.queued.push(run);
  }

  private start(room: string, file: File, item: Pending): Promise<void> {
    // Removed while it waited its turn.
    if (!this.items.includes(item)) return Promise.resolve();
    return this.client
        .upload(room, file, {
          filename: file.name || "file",
          signal: item.abort.signal,
          onProgress: (loaded) => {
            item.loaded = loaded;
            this.update(item);
          },
        })
        .then(
          (attachment) => {
            if (!this.items.includes(item)) return;
            item.state = "done";
            item.attachment = attachment;
            this.update(item);
          },
          (err: unknown) => {
            if (!this.items.includes(item)) return;
            item.state = "failed";
            item.error = explainUploadError(err, file.name || "The file");
            this.update(item);
          },
        );
  }

  get uploading(): boolean {
    return this.items.some((p) => p.state === "uploading");
  }

  /** The uploaded attachments, in the order they were added. */
  get ready(): Attachment[] {
    return this.items.flatMap((p) => (p.state === "done" && p.attachment ? [p.attachment] : []));
  }

  /** The message was sent with `ready`: those leave the tray (failures stay to be read). */
  sent(): void {
    for (const p of this.items.filter((x) => x.state === "done")) this.remove(p);
  }

  clear(): void {
    for (const p of [...this.items]) this.remove(p);
  }

  private push(file: File, state: Pending["state"], error?: string): Pending {
    const item: Pending = { file, state, loaded: 0, abort: new AbortController(), el: h("li") };
    if (error) item.error = error;
    this.items.push(item);
    this.list.append(item.el);
    this.update(item);
    return item;
  }

  private remove(item: Pending): void {
    if (item.state === "uploading") item.abort.abort();
    this.items = this.items.filter((p) => p !== item);
    item.el.remove();
    this.el.hidden = this.items.length === 0;
    this.changed();
  }

  private update(item: Pending): void {
    const name = item.file.name || "file";
    const size = item.file.size;
    const removeBtn = h(
      "button",
      { type: "button", class: "btn btn-icon upload-remove", "aria-label": `Remove ${name}`, onclick: () => this.remove(item) },
      "×",
    );
    const parts: (Node | string)[] = [h("span", { class: "upload-name" }, name), h("span", { class: "upload-size" }, humanSize(size))];
    if (item.state === "uploading") {
      const bar = h("progress", { class: "upload-progress", max: String(Math.max(1, size)), "aria-label": `Uploading ${name}` });
      bar.value = Math.min(item.loaded, size);
      parts.push(bar);
    } else if (item.state === "failed") {
      parts.push(h("span", { class: "upload-error", role: "alert" }, item.error ?? "Upload failed."));
    } else {
      parts.push(h("span", { class: "upload-done" }, "Ready"));
    }
    item.el.className = `upload-item ${item.state}`;
    item.el.replaceChildren(...parts, removeBtn);
    this.el.hidden = this.items.length === 0;
    this.changed();
  }
}

/** A paperclip, drawn (an emoji may have no glyph in the reader's fonts). */
export function paperclipIcon(): SVGSVGElement {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "22");
  svg.setAttribute("height", "22");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  const path = document.createElementNS(ns, "path");
  path.setAttribute(
    "d",
    "M21.4 11.1l-9.2 9.2a6 6 0 0 1-8.5-8.5l9.2-9.2a4 4 0 0 1 5.7 5.7l-9.2 9.2a2 2 0 0 1-2.8-2.8l8.5-8.5",
  );
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", "currentColor");
  path.setAttribute("stroke-width", "2");
  path.setAttribute("stroke-linecap", "round");
  path.setAttribute("stroke-linejoin", "round");
  svg.append(path);
  return svg;
}

/** The files of a drag or a paste (none for text). */
export function filesOf(data: DataTransfer | null): File[] {
  if (!data) return [];
  const files = [...data.files];
  if (files.length > 0) return files;
  const out: File[] = [];
  for (const item of data.items ?? []) {
    if (item.kind === "file") {
      const f = item.getAsFile();
      if (f) out.push(f);
    }
  }
  return out;
}
