/** The sign-in / register screen. */
import { ConfabError, login, register, USERNAME_RE } from "../sdk/src/index.ts";
import { h } from "./dom.ts";
import type { Session } from "./session.ts";

export interface AuthViewOptions {
  baseUrl: string;
  /** Shown above the form, e.g. "Your session expired". */
  notice?: string;
  onSignedIn: (session: Session) => void;
}

function explain(err: unknown, action: "register" | "login"): string {
  if (err instanceof ConfabError) {
    switch (err.code) {
      case "taken":
        return "That user name is taken. Pick another one, or sign in.";
      case "unauthorized":
        return "Wrong user name or password.";
      case "bad_request":
        return action === "register"
          ? "User names are 1–32 lowercase letters, digits, '.', '_' or '-'; passwords at least 8 characters."
          : err.message;
      case "unavailable":
        return "Cannot reach the server. Check your connection and try again.";
      case "rate_limited":
        return "Too many attempts. Wait a moment and try again.";
      default:
        return err.message || "Something went wrong.";
    }
  }
  return String(err);
}

export function authView(options: AuthViewOptions): HTMLElement {
  const username = h("input", {
    id: "auth-username",
    name: "username",
    autocomplete: "username",
    autocapitalize: "none",
    spellcheck: "false",
    required: true,
    maxlength: "32",
  });
  const password = h("input", {
    id: "auth-password",
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
  });
  const error = h("p", { class: "form-error", role: "alert" });
  const signIn = h("button", { type: "submit", class: "btn btn-primary" }, "Sign in");
  const registerBtn = h("button", { type: "button", class: "btn btn-secondary" }, "Register");

  const busy = (on: boolean) => {
    signIn.disabled = on;
    registerBtn.disabled = on;
    form.classList.toggle("busy", on);
  };

  const run = async (action: "register" | "login") => {
    const name = username.value.trim().toLowerCase();
    const pw = password.value;
    error.textContent = "";
    if (!name || !pw) {
      error.textContent = "Enter a user name and a password.";
      return;
    }
    if (action === "register") {
      if (!USERNAME_RE.test(name)) {
        error.textContent = "User names are 1–32 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit.";
        return;
      }
      if (new TextEncoder().encode(pw).length < 8) {
        error.textContent = "Passwords need at least 8 characters.";
        return;
      }
    }
    busy(true);
    try {
      if (action === "register") await register({ baseUrl: options.baseUrl }, name, pw);
      const result = await login({ baseUrl: options.baseUrl }, name, pw);
      options.onSignedIn({ token: result.token, user: result.user, expiresAt: result.expires_at });
    } catch (err) {
      error.textContent = explain(err, action);
      busy(false);
    }
  };

  const form = h(
    "form",
    {
      class: "auth-form",
      novalidate: true,
      onsubmit: (e: Event) => {
        e.preventDefault();
        void run("login");
      },
    },
    h("label", { for: "auth-username" }, "Username"),
    username,
    h("label", { for: "auth-password" }, "Password"),
    password,
    error,
    h("div", { class: "auth-actions" }, signIn, registerBtn),
  );
  registerBtn.addEventListener("click", () => void run("register"));

  const view = h(
    "main",
    { class: "auth" },
    h(
      "div",
      { class: "auth-card" },
      h("div", { class: "brand" }, h("span", { class: "brand-mark", "aria-hidden": "true" }, "◆"), "Confab"),
      h("p", { class: "auth-tagline" }, "Rooms, direct messages and your history, on every device."),
      options.notice ? h("p", { class: "notice", role: "status" }, options.notice) : null,
      form,
    ),
  );
  queueMicrotask(() => username.focus());
  return view;
}
