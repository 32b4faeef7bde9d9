import type { ErrorCode } from "./protocol.js";

/**
 * A failure the server reported (an error reply or an HTTP error body), or one
 * the SDK reports in the same terms: `timeout` when no reply came in time and
 * `unavailable` when the connection was lost or closed before a reply.
 */
export class ConfabError extends Error {
  readonly code: ErrorCode | "timeout" | (string & {});
  /** HTTP status, for failures of HTTP calls. */
  readonly status: number | undefined;

  constructor(code: string, message: string, status?: number) {
    super(message);
    this.name = "ConfabError";
    this.code = code;
    this.status = status;
  }
}

/** Codes after which repeating the same request cannot succeed. */
export function isPermanent(code: string): boolean {
  return (
    code === "bad_request" ||
    code === "unauthorized" ||
    code === "forbidden" ||
    code === "not_member" ||
    code === "not_found" ||
    code === "taken" ||
    code === "too_large"
  );
}
