/** Entry point of the web client: the sign-in screen or the chat, by stored session. */
import { authView } from "./auth.ts";
import { ChatApp } from "./chat.ts";
import { clearSession, loadSession, type Session, saveSession } from "./session.ts";

const root = document.getElementById("app")!;
const baseUrl = location.origin;
let chat: ChatApp | undefined;

function showAuth(notice?: string): void {
  chat?.destroy();
  chat = undefined;
  document.title = "Confab";
  root.replaceChildren(
    authView({
      baseUrl,
      ...(notice ? { notice } : {}),
      onSignedIn: (session) => {
        saveSession(session);
        showChat(session);
      },
    }),
  );
}

function showChat(session: Session): void {
  chat?.destroy();
  chat = new ChatApp({
    baseUrl,
    session,
    onSignOut: () => {
      clearSession();
      history.replaceState(null, "", location.pathname);
      showAuth();
    },
    onExpired: (why?: string) => {
      clearSession();
      showAuth(why ?? "Your session expired. Sign in again to continue.");
    },
  });
  document.title = `Confab · ${session.user}`;
  root.replaceChildren(chat.el);
}

const session = loadSession();
if (session) showChat(session);
else showAuth();
