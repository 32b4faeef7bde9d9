/**
 * The account panel: profile editing, contacts with their online state,
 * blocking, "sign out everywhere" and account deletion (behind a typed
 * confirmation). It talks to the server through the client's typed
 * requests and the SDK's HTTP helpers, and refreshes on `contact` and
 * `presence` events.
 */
import {
  type ConfabClient,
  type ConfabError,
  deleteAccount,
  logoutAll,
  USERNAME_RE,
} from "../sdk/src/index.ts";
import { h } from "./dom.ts";

export interface AccountOptions {
  client: ConfabClient;
  baseUrl: string;
  token: string;
  /** The account is gone or every session was signed out: back to sign-in. */
  onSignedOut: () => void;
}

const STATUS_TEXT: Record<string, string> = {
  mutual: "Contact",
  pending_in: "Wants to connect",
  pending_out: "Request sent",
};

function message(err: unknown): string {
  return (err as ConfabError)?.message ?? String(err);
}

export class AccountPanel {
  readonly el: HTMLElement;
  private readonly contactList: HTMLUListElement;
  private readonly blockedList: HTMLUListElement;
  private readonly contactError: HTMLElement;
  private readonly profileNote: HTMLElement;
  private readonly dangerError: HTMLElement;
  private refreshing = false;

  constructor(private readonly options: AccountOptions) {
    const { client } = options;

    const displayName = h("input", { id: "profile-name", name: "display_name", maxlength: "64", autocomplete: "off" });
    const avatarUrl = h("input", { id: "profile-avatar", name: "avatar", maxlength: "512", placeholder: "https://…" });
    this.profileNote = h("p", { class: "form-error", role: "status" });
    const profileForm = h(
      "form",
      {
        class: "stack-form",
        onsubmit: async (e: Event) => {
          e.preventDefault();
          try {
            await client.request("profile", { display_name: displayName.value.trim(), avatar: avatarUrl.value.trim() });
            this.profileNote.textContent = "Profile saved.";
          } catch (err) {
            this.profileNote.textContent = message(err);
          }
        },
      },
      h("label", { for: "profile-name" }, "Display name"),
      displayName,
      h("label", { for: "profile-avatar" }, "Avatar URL"),
      avatarUrl,
      h("button", { type: "submit", class: "btn btn-primary btn-sm" }, "Save profile"),
      this.profileNote,
    );
    void client.request("users", { users: [client.me] }).then(
      (r) => {
        const me = r.users[0];
        if (me) {
          displayName.value = me.display_name;
          avatarUrl.value = me.avatar;
        }
      },
      () => {},
    );

    const contactInput = h("input", { id: "contact-user", name: "contact", autocomplete: "off", autocapitalize: "none" });
    this.contactError = h("p", { class: "form-error", role: "alert" });
    const contactForm = h(
      "form",
      {
        class: "inline-form",
        onsubmit: async (e: Event) => {
          e.preventDefault();
          const user = contactInput.value.trim().toLowerCase();
          this.contactError.textContent = "";
          if (!USERNAME_RE.test(user)) {
            this.contactError.textContent = "That is not a valid user name.";
            return;
          }
          try {
            await client.request("contact_add", { user });
            contactInput.value = "";
          } catch (err) {
            this.contactError.textContent = message(err);
          }
          void this.refresh();
        },
      },
      h("label", { for: "contact-user", class: "sr-only" }, "Add a contact"),
      contactInput,
      h("button", { type: "submit", class: "btn btn-sm" }, "Add contact"),
    );
    this.contactList = h("ul", { class: "contact-list", "aria-label": "Contacts" });
    this.blockedList = h("ul", { class: "contact-list", "aria-label": "Blocked" });

    const signOutAll = h(
      "button",
      {
        type: "button",
        class: "btn btn-sm",
        onclick: async () => {
          try {
            await logoutAll({ baseUrl: options.baseUrl, token: options.token });
            options.onSignedOut();
          } catch (err) {
            this.dangerError.textContent = message(err);
          }
        },
      },
      "Sign out everywhere",
    );

    const password = h("input", { id: "delete-password", type: "password", autocomplete: "current-password" });
    const confirmText = h("input", { id: "delete-confirm", autocomplete: "off", placeholder: "delete" });
    this.dangerError = h("p", { class: "form-error", role: "alert" });
    const deleteForm = h(
      "form",
      {
        class: "stack-form danger",
        onsubmit: async (e: Event) => {
          e.preventDefault();
          this.dangerError.textContent = "";
          if (confirmText.value.trim() !== "delete") {
            this.dangerError.textContent = 'Type "delete" to confirm.';
            return;
          }
          try {
            await deleteAccount({ baseUrl: options.baseUrl, token: options.token }, password.value);
            options.onSignedOut();
          } catch (err) {
            this.dangerError.textContent = (err as ConfabError).code === "unauthorized" ? "Wrong password." : message(err);
          }
        },
      },
      h("p", null, "Deleting your account erases your messages everywhere and cannot be undone."),
      h("label", { for: "delete-password" }, "Password"),
      password,
      h("label", { for: "delete-confirm" }, 'Type "delete" to confirm'),
      confirmText,
      h("button", { type: "submit", class: "btn btn-danger btn-sm" }, "Delete account"),
    );

    this.el = h(
      "section",
      { class: "account-panel", "aria-label": "Account" },
      h("h2", null, "Profile"),
      profileForm,
      h("h2", null, "Contacts"),
      contactForm,
      this.contactError,
      this.contactList,
      h("h2", null, "Blocked"),
      this.blockedList,
      h("h2", null, "Sessions"),
      signOutAll,
      h("h2", null, "Delete account"),
      deleteForm,
      this.dangerError,
    );
    client.on("event", (ev) => {
      if (ev.ev === "contact") void this.refresh();
    });
    client.on("presence", () => void this.refresh());
    client.on("ready", () => void this.refresh());
    void this.refresh();
  }

  /** Re-reads contacts and blocks. */
  async refresh(): Promise<void> {
    if (this.refreshing) return;
    this.refreshing = true;
    const { client } = this.options;
    try {
      const [{ contacts }, { blocked }] = await Promise.all([
        client.request("contacts", {}),
        client.request("blocks", {}),
      ]);
      this.contactList.replaceChildren(
        ...contacts.map((c) =>
          h(
            "li",
            { class: "contact", "data-user": c.user },
            h("span", { class: c.online ? "dot online" : "dot", "aria-hidden": "true" }),
            h("span", { class: "contact-name" }, c.user),
            h("span", { class: "contact-status" }, `${STATUS_TEXT[c.status] ?? c.status}${c.online ? " · online" : ""}`),
            c.status === "pending_in" ? this.action("Accept", () => client.request("contact_add", { user: c.user })) : null,
            this.action(c.status === "mutual" ? "Remove" : "Dismiss", () =>
              client.request("contact_remove", { user: c.user }),
            ),
            this.action("Block", () => client.request("block", { user: c.user })),
          ),
        ),
      );
      this.blockedList.replaceChildren(
        ...blocked.map((user) =>
          h(
            "li",
            { class: "contact", "data-user": user },
            h("span", { class: "contact-name" }, user),
            this.action("Unblock", () => client.request("unblock", { user })),
          ),
        ),
      );
    } catch {
      // Offline: the next `ready` refreshes.
    } finally {
      this.refreshing = false;
    }
  }

  private action(label: string, run: () => Promise<unknown>): HTMLButtonElement {
    return h(
      "button",
      {
        type: "button",
        class: "btn btn-link btn-sm",
        onclick: async () => {
          try {
            await run();
          } catch (err) {
            this.contactError.textContent = message(err);
          }
          void this.refresh();
        },
      },
      label,
    );
  }
}
