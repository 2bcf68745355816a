import { workerData } from "node:worker_threads";
import { serve } from "../worker-pool.js";
import { RbdError, rbdError } from "./errors.js";
import { ImageInfo, ImageSpec, koffi, lib, LinkedImageSpec, SnapInfo, SnapSpec, Watcher, type Ptr } from "./ffi.js";
import type { ImageStatus, RbdConfig, SnapshotInfo, WatcherInfo } from "./types.js";

/** One cluster connection per worker thread, with an I/O context per pool; rebuilt after a failure. */
const config = workerData as RbdConfig;
let cluster: Ptr | null = null;
const ioctxs = new Map<string, Ptr>();

function check(rc: number, operation: string): number {
  if (rc >= 0) return rc;
  const err = rbdError(-rc, operation);
  if (err.kind === "transient") disconnect();
  throw err;
}

function disconnect(): void {
  for (const io of ioctxs.values()) lib.ioctxDestroy(io);
  ioctxs.clear();
  if (cluster) lib.shutdown(cluster);
  cluster = null;
}

function connection(): Ptr {
  if (cluster) return cluster;
  const out: Ptr[] = [null];
  check(lib.create2(out, "ceph", `client.${config.user}`, 0), "create cluster handle");
  const handle = out[0];
  try {
    check(lib.confReadFile(handle, config.confPath), `read ${config.confPath}`);
    if (config.keyringPath) check(lib.confSet(handle, "keyring", config.keyringPath), "set keyring");
    if (config.key) check(lib.confSet(handle, "key", config.key), "set key");
    check(lib.confSet(handle, "client_mount_timeout", String(config.timeoutSeconds ?? 10)), "set timeout");
    check(lib.confSet(handle, "rados_osd_op_timeout", String(config.timeoutSeconds ?? 10)), "set timeout");
    check(lib.connect(handle), "connect to the Ceph cluster");
  } catch (err) {
    lib.shutdown(handle);
    throw err;
  }
  cluster = handle;
  return handle;
}

function ioctx(pool: string): Ptr {
  let io = ioctxs.get(pool);
  if (!io) {
    const out: Ptr[] = [null];
    check(lib.ioctxCreate(connection(), pool, out), `open pool ${pool}`);
    io = out[0];
    ioctxs.set(pool, io);
  }
  return io;
}

function withImage<T>(pool: string, name: string, operation: string, fn: (image: Ptr) => T): T {
  const out: Ptr[] = [null];
  check(lib.open(ioctx(pool), name, out, null), `${operation} ${pool}/${name}`);
  try {
    return fn(out[0]);
  } finally {
    lib.close(out[0]);
  }
}

/**
 * Calls a librbd list function that reports -ERANGE and the needed count when the buffer is short.
 * rbd_snap_list returns the count; rbd_list2 and rbd_watchers_list return 0 and write it back.
 */
function listInto<T>(
  type: unknown,
  first: number,
  countIn: "result" | "max",
  call: (buf: Ptr, max: number[]) => number,
  read: (buf: Ptr, n: number) => T,
  op: string,
): T {
  let max = first;
  for (let attempt = 0; attempt < 8; attempt++) {
    const buf = koffi.alloc(type as never, Math.max(max, 1));
    try {
      const count = [max];
      const rc = call(buf, count);
      if (rc === -34 && count[0]! > max) {
        max = count[0]!;
        continue;
      }
      check(rc, op);
      return read(buf, countIn === "result" ? rc : count[0]!);
    } finally {
      koffi.free(buf);
    }
  }
  throw new RbdError("failed", 34, "list kept growing", op);
}

function imageSize(image: Ptr, op: string): bigint {
  const info: Record<string, unknown> = {};
  check(lib.stat(image, info, koffi.sizeof(ImageInfo)), op);
  return BigInt(info.size as number | bigint);
}

/** "pool/image@snapshot" of a clone's parent, null for an image that has none (or no longer). */
function parent(image: Ptr, op: string): string | null {
  const spec = koffi.alloc(LinkedImageSpec, 1);
  const snap = koffi.alloc(SnapSpec, 1);
  try {
    const rc = lib.getParent(image, spec, snap);
    if (rc === -2) return null;
    check(rc, op);
    const p = koffi.decode(spec, LinkedImageSpec) as { pool_name: string; image_name: string };
    const s = koffi.decode(snap, SnapSpec) as { name: string };
    lib.linkedImageSpecCleanup(spec);
    lib.snapSpecCleanup(snap);
    return `${p.pool_name}/${p.image_name}@${s.name}`;
  } finally {
    koffi.free(spec);
    koffi.free(snap);
  }
}

function snapshots(image: Ptr, op: string): SnapshotInfo[] {
  const names = listInto(
    SnapInfo,
    16,
    "result",
    (buf, max) => lib.snapList(image, buf, max),
    (buf, n) => {
      const snaps = (koffi.decode(buf, SnapInfo, n) as { name: string }[]).map((s) => s.name);
      lib.snapListEnd(buf);
      return snaps;
    },
    op,
  );
  return names.map((name) => {
    const isProtected = [0];
    check(lib.snapIsProtected(image, name, isProtected), `${op}: snapshot ${name}`);
    return { name, protected: isProtected[0] === 1 };
  });
}

/** Other clients with the image open; our own open handle (a watcher too) is left out. */
function watchers(image: Ptr, op: string): WatcherInfo[] {
  const self = String(lib.instanceId(connection()));
  return listInto(
    Watcher,
    8,
    "max",
    (buf, max) => lib.watchersList(image, buf, max),
    (buf, n) => {
      const list = (koffi.decode(buf, Watcher, n) as { addr: string; id: number | bigint }[])
        .map((w) => ({ address: w.addr, id: String(w.id) }))
        .filter((w) => w.id !== self);
      lib.watchersListCleanup(buf, n);
      return list;
    },
    op,
  );
}

/** Layering (clones), exclusive-lock (one writer at a time), object-map and fast-diff (which need it). */
const FEATURES = 1n | 4n | 8n | 16n;

/** Image metadata key of the owner mark: the UID of the object an image was made for. */
export const ownerKey = "kaktus.kowabunga.cloud/owner";

/** A metadata value, undefined when the key is not set. */
function metadata(image: Ptr, key: string, op: string): string | undefined {
  let size = 128;
  for (let attempt = 0; attempt < 4; attempt++) {
    const buf = Buffer.alloc(size);
    const len = [size];
    const rc = lib.metadataGet(image, key, buf, len);
    if (rc === -2) return undefined;
    if (rc === -34) {
      size = Math.max(len[0]!, size * 2);
      continue;
    }
    check(rc, op);
    // The value is NUL-terminated; the length written back is not always its own.
    const end = buf.indexOf(0);
    return buf.toString("utf8", 0, end >= 0 ? end : Math.min(len[0]!, size));
  }
  throw new RbdError("failed", 34, "metadata value kept growing", op);
}

export const ops = {
  list: (pool: string): string[] =>
    listInto(
      ImageSpec,
      64,
      "max",
      (buf, max) => lib.list2(ioctx(pool), buf, max),
      (buf, n) => {
        const names = (koffi.decode(buf, ImageSpec, n) as { name: string }[]).map((s) => s.name);
        lib.imageSpecListCleanup(buf, n);
        return names.sort();
      },
      `list pool ${pool}`,
    ),

  /** Everything a reconciler reports about an image, from one open. */
  status: (pool: string, name: string): ImageStatus =>
    withImage(pool, name, "status of", (image) => {
      const op = `status of ${pool}/${name}`;
      return {
        size: imageSize(image, op),
        parent: parent(image, op),
        snapshots: snapshots(image, op),
        watchers: watchers(image, op),
        owner: metadata(image, ownerKey, op),
      };
    }),

  /** Marks an image as made for the object with this UID (image metadata). */
  setOwner: (pool: string, name: string, uid: string) =>
    void withImage(pool, name, "mark", (image) => check(lib.metadataSet(image, ownerKey, uid), `mark ${pool}/${name}`)),

  rename: (pool: string, from: string, to: string) =>
    void check(lib.rename(ioctx(pool), from, to), `rename ${pool}/${from} to ${to}`),

  /** Runs a monitor command (JSON) and returns its JSON output. */
  monCommand: (command: Record<string, unknown>): string => {
    const outbuf: Ptr[] = [null];
    const outlen = [0];
    const outs: Ptr[] = [null];
    const outslen = [0];
    const rc = lib.monCommand(connection(), [JSON.stringify(command)], 1, null, 0, outbuf, outlen, outs, outslen);
    try {
      const text = (p: Ptr, n: number) =>
        p && n ? Buffer.from(koffi.decode(p, "uint8_t", n) as number[]).toString() : "";
      if (rc < 0) throw rbdError(-rc, `${String(command.prefix)}: ${text(outs[0], outslen[0]!)}`);
      return text(outbuf[0], outlen[0]!);
    } finally {
      if (outbuf[0]) lib.bufferFree(outbuf[0]);
      if (outs[0]) lib.bufferFree(outs[0]);
    }
  },

  /** A format 2 image with layering (clones need it) and exclusive-lock (with object-map, fast-diff). */
  create: (pool: string, name: string, size: bigint) =>
    void check(lib.create2Image(ioctx(pool), name, size, FEATURES, [0]), `create ${pool}/${name}`),

  /** Grows an image; a smaller size is refused (a shrink loses data). */
  grow: (pool: string, name: string, size: bigint) =>
    void withImage(pool, name, "grow", (image) => {
      const op = `grow ${pool}/${name}`;
      const current = imageSize(image, op);
      if (size < current) throw new RbdError("invalid", 0, `refusing to shrink from ${current} to ${size} bytes`, op);
      if (size > current) check(lib.resize(image, size), op);
    }),

  createSnapshot: (pool: string, name: string, snap: string, protect: boolean) =>
    void withImage(pool, name, "snapshot", (image) => {
      check(lib.snapCreate(image, snap), `snapshot ${pool}/${name}@${snap}`);
      if (protect) check(lib.snapProtect(image, snap), `protect ${pool}/${name}@${snap}`);
    }),
  protectSnapshot: (pool: string, name: string, snap: string) =>
    void withImage(pool, name, "protect", (image) =>
      check(lib.snapProtect(image, snap), `protect ${pool}/${name}@${snap}`),
    ),
  unprotectSnapshot: (pool: string, name: string, snap: string) =>
    void withImage(pool, name, "unprotect", (image) =>
      check(lib.snapUnprotect(image, snap), `unprotect ${pool}/${name}@${snap}`),
    ),
  removeSnapshot: (pool: string, name: string, snap: string) =>
    void withImage(pool, name, "remove snapshot of", (image) =>
      check(lib.snapRemove(image, snap), `remove snapshot ${pool}/${name}@${snap}`),
    ),

  /** A copy-on-write clone of a protected snapshot. */
  clone: (parentPool: string, parent: string, snap: string, pool: string, name: string) =>
    void check(
      lib.clone(ioctx(parentPool), parent, snap, ioctx(pool), name, FEATURES, [0]),
      `clone ${parentPool}/${parent}@${snap} to ${pool}/${name}`,
    ),
  /** Copies the parent's data into a clone so it no longer depends on the snapshot. */
  flatten: (pool: string, name: string) =>
    void withImage(pool, name, "flatten", (image) => check(lib.flatten(image), `flatten ${pool}/${name}`)),
  /** A full copy of another image's current data. */
  copy: (srcPool: string, src: string, pool: string, name: string) =>
    void withImage(srcPool, src, "copy", (image) =>
      check(lib.copy(image, ioctx(pool), name), `copy ${srcPool}/${src} to ${pool}/${name}`),
    ),

  /**
   * Removes an image and its snapshots. Refused (busy) while any client has it open, and before
   * anything is touched, so a refusal leaves the image exactly as it was.
   */
  remove: (pool: string, name: string) => {
    const op = `remove ${pool}/${name}`;
    withImage(pool, name, "remove", (image) => {
      const open = watchers(image, op);
      if (open.length)
        throw new RbdError(
          "busy",
          16,
          `in use by ${open.length} client(s): ${open.map((w) => w.address).join(", ")}`,
          op,
        );
      // Unprotect all first and undo that if one refuses (a clone still depends on it): a refusal
      // must leave the image as it was. Only then are snapshots removed.
      const snaps = snapshots(image, op);
      const unprotected: string[] = [];
      try {
        for (const s of snaps.filter((s) => s.protected)) {
          check(lib.snapUnprotect(image, s.name), `${op}: unprotect ${s.name}`);
          unprotected.push(s.name);
        }
      } catch (err) {
        for (const s of unprotected) lib.snapProtect(image, s);
        throw err;
      }
      for (const s of snaps) check(lib.snapRemove(image, s.name), `${op}: remove snapshot ${s.name}`);
    });
    check(lib.remove(ioctx(pool), name), op);
  },
};

export type RbdOps = typeof ops;

serve(ops);
