/**
 * A robot user on the TypeScript SDK under Node (examples/bots/README.md):
 * signs in, joins its rooms, and answers `!help`, `!time` and messages that
 * mention it; never its own messages.
 *
 *   CONFAB_URL=http://127.0.0.1:8080 BOT_USER=helpbot BOT_PASSWORD=... BOT_ROOMS=lobby \
 *     node --import tsx --experimental-websocket examples/bots/ts/bot.ts   (Node 20; drop the flag on 22+)
 *
 * Outside this repository, import from "@confab/sdk" instead of the path below.
 */
import { ConfabClient, login, type ServerEvent } from "../../../web/sdk/src/index.ts";

/** The bot's answer to a message, if any. `now` is for tests. */
export function answer(me: string, msg: { from: string; text: string; mentions?: string[] | null }, now = new Date()): string | undefined {
  if (msg.from === me || msg.from === "") return undefined;
  const text = msg.text.trim();
  const command = text.split(/\s+/)[0];
  if (command === "!help") return "I answer !help and !time, and say hello when you mention me.";
  if (command === "!time") return `It is ${now.toISOString().slice(0, 19).replace("T", " ")} UTC.`;
  const mentioned = (msg.mentions ?? []).includes(me) || new RegExp(`(^|[^\\w@-])@${me}(?![\\w-])`).test(text);
  return mentioned ? `Hello @${msg.from}! I am a bot: try !help.` : undefined;
}

/** Answers every message `client` receives in its rooms. */
export function attach(client: ConfabClient): void {
  client.on("event", (ev: ServerEvent) => {
    if (ev.ev !== "msg") return;
    const reply = answer(client.me, ev);
    if (reply === undefined) return;
    client.send(ev.room, reply, { replyTo: ev.seq }).catch((err: unknown) => console.error(`cannot answer in ${ev.room}:`, err));
  });
}

async function main(): Promise<void> {
  const baseUrl = process.env.CONFAB_URL ?? "http://127.0.0.1:8080";
  const user = process.env.BOT_USER ?? "helpbot";
  const password = process.env.BOT_PASSWORD;
  if (!password) throw new Error("set BOT_PASSWORD (the bot's password)");
  const rooms = (process.env.BOT_ROOMS ?? "lobby").split(",").filter(Boolean);
  const session = await login({ baseUrl }, user, password);
  const client = new ConfabClient({ baseUrl, ...session }).connect();
  attach(client);
  for (const room of rooms) await client.join(room);
  console.log(`${client.me} answers in ${rooms.join(", ")}`);
  const stop = () => {
    client.close();
    process.exit(0);
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
