/** Presentation helpers: times, avatars, links. */
import { h } from "./dom.ts";

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayFmt = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });

export function formatTime(ts: number, now = Date.now()): string {
  const d = new Date(ts);
  const sameDay = new Date(now).toDateString() === d.toDateString();
  return sameDay ? timeFmt.format(d) : `${dayFmt.format(d)}, ${timeFmt.format(d)}`;
}

export function fullTime(ts: number): string {
  return new Date(ts).toLocaleString();
}

/** A stable hue per user name, for avatars. */
export function hue(name: string): number {
  let x = 0;
  for (let i = 0; i < name.length; i++) x = (x * 31 + name.charCodeAt(i)) >>> 0;
  return x % 360;
}

export function avatar(name: string, size: "sm" | "md" = "md"): HTMLSpanElement {
  const el = h("span", { class: `avatar avatar-${size}`, "aria-hidden": "true" }, (name[0] ?? "?").toUpperCase());
  el.style.setProperty("--hue", String(hue(name)));
  return el;
}

const URL_RE = /\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]]/g;

/**
 * Message text with web addresses as links; never HTML. `decorate` turns
 * the text between links into nodes (mentions, see `badges.ts`).
 */
export function richText(text: string, decorate: (s: string) => (string | Node)[] = (s) => [s]): DocumentFragment {
  const frag = document.createDocumentFragment();
  let last = 0;
  for (const match of text.matchAll(URL_RE)) {
    const start = match.index ?? 0;
    if (start > last) frag.append(...decorate(text.slice(last, start)));
    frag.append(h("a", { href: match[0], target: "_blank", rel: "noopener noreferrer" }, match[0]));
    last = start + match[0].length;
  }
  if (last < text.length) frag.append(...decorate(text.slice(last)));
  return frag;
}

/** "bob", "bob and carol", "bob, carol and 2 others". */
export function listNames(names: string[]): string {
  if (names.length <= 1) return names.join("");
  if (names.length === 2) return `${names[0]} and ${names[1]}`;
  if (names.length === 3) return `${names[0]}, ${names[1]} and ${names[2]}`;
  return `${names[0]}, ${names[1]} and ${names.length - 2} others`;
}

/** A size for people: "512 B", "1.5 KB", "25 MB" (units of 1024). */
export function humanSize(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 1024) return `${Math.max(0, Math.round(bytes || 0))} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let v = bytes / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1).replace(/\.0$/, "") : Math.round(v)} ${units[i]}`;
}
