/** The signed-in session, kept in localStorage so that a reload stays signed in. */
export interface Session {
  token: string;
  user: string;
  /** Unix seconds. */
  expiresAt: number;
}

const KEY = "confab.session";

export function loadSession(now = Date.now()): Session | undefined {
  try {
    const raw = localStorage.getItem(KEY);
    if (!raw) return undefined;
    const s = JSON.parse(raw) as Partial<Session>;
    if (typeof s.token !== "string" || typeof s.user !== "string" || typeof s.expiresAt !== "number") return undefined;
    if (s.expiresAt * 1000 <= now) {
      clearSession();
      return undefined;
    }
    return s as Session;
  } catch {
    return undefined;
  }
}

export function saveSession(session: Session): void {
  localStorage.setItem(KEY, JSON.stringify(session));
}

export function clearSession(): void {
  localStorage.removeItem(KEY);
}
