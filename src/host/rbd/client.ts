import { reviveError, siblingModule, WorkerPool } from "../worker-pool.js";
import { RbdError } from "./errors.js";
import { parseBlocklist } from "./monitors.js";
import type { ImageStatus, RbdConfig } from "./types.js";
import type { RbdOps } from "./worker.js";

/** What the operator needs from Ceph RBD; controllers see only this. */
export interface BlockStore {
  list(pool: string): Promise<string[]>;
  /** null when there is no such image. */
  status(pool: string, name: string): Promise<ImageStatus | null>;
  create(pool: string, name: string, size: bigint): Promise<void>;
  /** Grows an image; refuses (invalid) a smaller size. */
  grow(pool: string, name: string, size: bigint): Promise<void>;
  createSnapshot(pool: string, name: string, snap: string, opts?: { protect?: boolean }): Promise<void>;
  protectSnapshot(pool: string, name: string, snap: string): Promise<void>;
  unprotectSnapshot(pool: string, name: string, snap: string): Promise<void>;
  removeSnapshot(pool: string, name: string, snap: string): Promise<void>;
  clone(from: { pool: string; name: string; snapshot: string }, pool: string, name: string): Promise<void>;
  flatten(pool: string, name: string): Promise<void>;
  copy(from: { pool: string; name: string }, pool: string, name: string): Promise<void>;
  /** Removes an image with its snapshots; refuses (busy) while it has watchers. */
  remove(pool: string, name: string): Promise<void>;
  /** Marks an image as made for the object with this UID (the owner mark status reports). */
  setOwner(pool: string, name: string, uid: string): Promise<void>;
  rename(pool: string, from: string, to: string): Promise<void>;
  /** Blocklists a client address ("IP:port/nonce"; "IP:0/0" for every client of an IP): its I/O is refused. */
  blocklist(address: string): Promise<void>;
  /** The client addresses blocklisted now. */
  blocklisted(): Promise<string[]>;
  close(): Promise<void>;
}

/** The calls that change something in Ceph (counted by the agent's metrics). */
export const rbdMutations = [
  "create",
  "grow",
  "createSnapshot",
  "protectSnapshot",
  "unprotectSnapshot",
  "removeSnapshot",
  "clone",
  "flatten",
  "copy",
  "remove",
  "setOwner",
  "rename",
  "blocklist",
] as const satisfies readonly (keyof BlockStore)[];

const toError = reviveError(RbdError);

/** librados/librbd through worker threads; blocking calls never touch the event loop. */
export class RbdClient implements BlockStore {
  private readonly pool: WorkerPool<RbdOps>;

  constructor(config: RbdConfig, { workers = 2 }: { workers?: number } = {}) {
    this.pool = new WorkerPool<RbdOps>(siblingModule("worker", import.meta.url), config, workers, toError);
  }

  list = (pool: string) => this.pool.call("list", pool);
  status = (pool: string, name: string) =>
    this.pool.call("status", pool, name).catch((err: unknown) => {
      if (err instanceof RbdError && err.kind === "not-found") return null;
      throw err;
    });
  create = (pool: string, name: string, size: bigint) => this.pool.call("create", pool, name, size);
  grow = (pool: string, name: string, size: bigint) => this.pool.call("grow", pool, name, size);
  createSnapshot = (pool: string, name: string, snap: string, { protect = false } = {}) =>
    this.pool.call("createSnapshot", pool, name, snap, protect);
  protectSnapshot = (pool: string, name: string, snap: string) => this.pool.call("protectSnapshot", pool, name, snap);
  unprotectSnapshot = (pool: string, name: string, snap: string) =>
    this.pool.call("unprotectSnapshot", pool, name, snap);
  removeSnapshot = (pool: string, name: string, snap: string) => this.pool.call("removeSnapshot", pool, name, snap);
  clone = (from: { pool: string; name: string; snapshot: string }, pool: string, name: string) =>
    this.pool.call("clone", from.pool, from.name, from.snapshot, pool, name);
  flatten = (pool: string, name: string) => this.pool.call("flatten", pool, name);
  copy = (from: { pool: string; name: string }, pool: string, name: string) =>
    this.pool.call("copy", from.pool, from.name, pool, name);
  remove = (pool: string, name: string) => this.pool.call("remove", pool, name);
  setOwner = (pool: string, name: string, uid: string) => this.pool.call("setOwner", pool, name, uid);
  rename = (pool: string, from: string, to: string) => this.pool.call("rename", pool, from, to);
  blocklist = async (address: string) =>
    void (await this.pool.call("monCommand", { prefix: "osd blocklist", blocklistop: "add", addr: address }));
  blocklisted = async () =>
    parseBlocklist(await this.pool.call("monCommand", { prefix: "osd blocklist ls", format: "json" }));
  close = () => this.pool.close();
}
