/**
 * RBD failures, typed by what a caller does about them (from the negative errno librbd returns).
 * - not-found (ENOENT), exists (EEXIST), busy (EBUSY: watchers, children of a snapshot),
 * - has-snapshots (ENOTEMPTY), invalid (EINVAL, ERANGE, our own refusals such as a shrink),
 * - denied (EPERM, EACCES), transient (timeouts, lost connection), failed (anything else).
 */
export type RbdErrorKind =
  "not-found" | "exists" | "busy" | "has-snapshots" | "invalid" | "denied" | "transient" | "failed";

export class RbdError extends Error {
  override name = "RbdError";
  constructor(
    readonly kind: RbdErrorKind,
    /** errno (positive), 0 for refusals of our own */
    readonly errno: number,
    message: string,
    readonly operation: string,
  ) {
    super(`${operation}: ${message}`);
  }
}

const kinds: Record<number, [RbdErrorKind, string]> = {
  1: ["denied", "operation not permitted"],
  2: ["not-found", "no such image, pool or snapshot"],
  13: ["denied", "permission denied"],
  16: ["busy", "resource busy"],
  17: ["exists", "already exists"],
  22: ["invalid", "invalid argument"],
  34: ["invalid", "out of range"],
  39: ["has-snapshots", "image has snapshots"],
  107: ["transient", "not connected"],
  108: ["transient", "cluster connection shut down"],
  110: ["transient", "timed out"],
};

export const rbdError = (errno: number, operation: string): RbdError => {
  const [kind, message] = kinds[errno] ?? ["failed", `errno ${errno}`];
  return new RbdError(kind, errno, message, operation);
};
