/**
 * libvirt failures, typed by what a caller does about them:
 * - not-found: the domain/secret/device is not there (reconcilers create it, or treat it as gone);
 * - invalid: the request itself is wrong (bad XML, unsupported config): retrying will not help;
 * - conflict: wrong state for the operation (start a running domain): re-read and decide again;
 * - transient: libvirtd unreachable, timed out or busy: retry with backoff;
 * - failed: anything else libvirt refused.
 */
export type LibvirtErrorKind = "not-found" | "invalid" | "conflict" | "transient" | "failed";

export class LibvirtError extends Error {
  override name = "LibvirtError";
  constructor(
    readonly kind: LibvirtErrorKind,
    /** virErrorNumber */
    readonly code: number,
    message: string,
    /** What we were doing, for example "define domain web-1". */
    readonly operation: string,
  ) {
    super(`${operation}: ${message}`);
  }
}

// virterror.h numbers
const kinds: Record<number, LibvirtErrorKind> = {
  42: "not-found", // NO_DOMAIN
  66: "not-found", // NO_SECRET
  99: "not-found", // DEVICE_MISSING
  27: "invalid", // XML_ERROR
  35: "invalid", // XML_DETAIL
  8: "invalid", // INVALID_ARG
  67: "invalid", // CONFIG_UNSUPPORTED
  92: "invalid", // XML_INVALID_SCHEMA
  74: "invalid", // ARGUMENT_UNSUPPORTED
  84: "invalid", // OPERATION_UNSUPPORTED
  3: "invalid", // NO_SUPPORT
  55: "conflict", // OPERATION_INVALID (e.g. domain is not running)
  28: "conflict", // DOM_EXIST
  5: "transient", // NO_CONNECT
  6: "transient", // INVALID_CONN
  38: "transient", // SYSTEM_ERROR (socket errors, EOF from libvirtd)
  39: "transient", // RPC
  68: "transient", // OPERATION_TIMEOUT
  86: "transient", // AGENT_UNRESPONSIVE
  87: "transient", // RESOURCE_BUSY
};

export const errorKind = (code: number): LibvirtErrorKind => kinds[code] ?? "failed";

/** Codes that mean the connection itself is gone, so the worker reconnects. */
export const connectionLost = (code: number) => code === 38 || code === 39 || code === 5 || code === 6;
