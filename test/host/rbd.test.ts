import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { expectKind } from "../support/errors.js";
import { afterAll, describe, expect, it } from "vitest";
import { RbdClient } from "../../src/host/rbd/client.js";
import { RbdError } from "../../src/host/rbd/errors.js";
import { ceph, cephConfPath, cephLibvirtKeyringPath, rbd } from "../env/lab.js";
import { waitFor } from "../env/proc.js";

const id = randomBytes(3).toString("hex");
const img = (suffix: string) => `test-${id}-${suffix}`;
const MiB = 1n << 20n;

const expectRbdError = (promise: Promise<unknown>, kind: RbdError["kind"]) => expectKind(promise, RbdError, kind);

describe("RBD client (librados/librbd through koffi in worker threads) against the lab's Ceph", () => {
  const store = new RbdClient({ confPath: cephConfPath, user: "admin" });

  afterAll(async () => {
    for (const name of await store.list("rbd")) {
      if (name.startsWith(`test-${id}-`)) await rbd("rm", "--no-progress", `rbd/${name}`).catch(() => undefined);
    }
    await store.close();
  });

  it("creates a format 2 image, lists it and reports its status", async () => {
    await store.create("rbd", img("a"), 64n * MiB);
    expect(await store.list("rbd")).toContain(img("a"));
    expect(await store.status("rbd", img("a"))).toEqual({ size: 64n * MiB, parent: null, snapshots: [], watchers: [] });
    const info = JSON.parse(await rbd("info", "--format", "json", `rbd/${img("a")}`)) as {
      format: number;
      features: string[];
    };
    expect(info.format).toBe(2);
    expect(info.features).toContain("layering");
  });

  it("types its errors: missing image, existing name, missing pool", async () => {
    expect(await store.status("rbd", img("missing"))).toBeNull();
    await expectRbdError(store.create("rbd", img("a"), MiB), "exists");
    await expectRbdError(store.remove("rbd", img("missing")), "not-found");
    await expectRbdError(store.list("no-such-pool"), "not-found");
  });

  it("grows an image and refuses to shrink it, leaving it unchanged", async () => {
    await store.grow("rbd", img("a"), 128n * MiB);
    expect((await store.status("rbd", img("a")))?.size).toBe(128n * MiB);
    const err = await expectRbdError(store.grow("rbd", img("a"), 64n * MiB), "invalid");
    expect(err.message).toMatch(/refusing to shrink/);
    expect((await store.status("rbd", img("a")))?.size).toBe(128n * MiB);
    await store.grow("rbd", img("a"), 128n * MiB); // same size: nothing to do
  });

  it("snapshots, protects, clones, flattens and copies", async () => {
    await store.createSnapshot("rbd", img("a"), "base", { protect: true });
    expect((await store.status("rbd", img("a")))?.snapshots).toEqual([{ name: "base", protected: true }]);
    await store.clone({ pool: "rbd", name: img("a"), snapshot: "base" }, "rbd", img("clone"));
    expect((await store.status("rbd", img("clone")))?.parent).toBe(`rbd/${img("a")}@base`);
    // While the clone depends on it, removing the parent is refused and changes nothing.
    await expectRbdError(store.remove("rbd", img("a")), "busy");
    expect((await store.status("rbd", img("a")))?.snapshots).toEqual([{ name: "base", protected: true }]);
    // A protected snapshot with a child cannot be unprotected.
    await expectRbdError(store.unprotectSnapshot("rbd", img("a"), "base"), "busy");
    await store.flatten("rbd", img("clone"));
    expect((await store.status("rbd", img("clone")))?.parent).toBeNull();
    await store.copy({ pool: "rbd", name: img("clone") }, "rbd", img("copy"));
    expect((await store.status("rbd", img("copy")))?.size).toBe(128n * MiB);
  });

  it("removes and unprotects snapshots one by one", async () => {
    await store.createSnapshot("rbd", img("copy"), "s1");
    await store.protectSnapshot("rbd", img("copy"), "s1");
    await expectRbdError(store.removeSnapshot("rbd", img("copy"), "s1"), "busy"); // protected
    await store.unprotectSnapshot("rbd", img("copy"), "s1");
    await store.removeSnapshot("rbd", img("copy"), "s1");
    expect((await store.status("rbd", img("copy")))?.snapshots).toEqual([]);
  });

  it("connects with a cephx key instead of a keyring file (a key from a Secret), with only that user's caps", async () => {
    const key = /key = (\S+)/.exec(readFileSync(cephLibvirtKeyringPath, "utf8"))![1]!;
    const libvirtUser = new RbdClient({ confPath: cephConfPath, user: "libvirt", key }, { workers: 1 });
    try {
      expect(await libvirtUser.list("rbd")).toContain(img("copy"));
      // client.libvirt may only read templates: creating there is denied.
      await expectRbdError(libvirtUser.create("templates", img("denied"), MiB), "denied");
    } finally {
      await libvirtUser.close();
    }
  });

  it("blocklists a client address with the agent's own caps, and lists it among the others", async () => {
    const key = /key = (\S+)/.exec(readFileSync(cephLibvirtKeyringPath, "utf8"))![1]!;
    const libvirtUser = new RbdClient({ confPath: cephConfPath, user: "libvirt", key }, { workers: 1 });
    const address = `192.0.2.${1 + (Number.parseInt(id, 16) % 250)}:0/0`; // TEST-NET-1: no real client
    try {
      expect(await libvirtUser.blocklisted()).not.toContain(address);
      await libvirtUser.blocklist(address);
      expect(await libvirtUser.blocklisted()).toContain(address);
    } finally {
      await ceph("osd", "blocklist", "rm", address).catch(() => undefined);
      await libvirtUser.close();
    }
  });

  it("refuses to remove an image that a client has open, then removes it with its snapshots", async () => {
    const watcher = spawn("rbd", ["watch", `rbd/${img("a")}`], { env: { ...process.env, CEPH_CONF: cephConfPath } });
    try {
      await waitFor(
        "rbd watch to register",
        async () => ((await store.status("rbd", img("a")))?.watchers.length ? true : undefined),
        {
          timeoutMs: 15_000,
        },
      );
      const err = await expectRbdError(store.remove("rbd", img("a")), "busy");
      expect(err.message).toMatch(/in use by 1 client/);
      expect((await store.status("rbd", img("a")))?.snapshots).toHaveLength(1); // untouched
    } finally {
      watcher.stdin.end("\n"); // `rbd watch` unwatches and exits on Enter
    }
    await waitFor(
      "watcher gone",
      async () => ((await store.status("rbd", img("a")))?.watchers.length === 0 ? true : undefined),
      {
        timeoutMs: 60_000,
        intervalMs: 500,
      },
    );
    await store.remove("rbd", img("a"));
    expect(await store.status("rbd", img("a"))).toBeNull();
  });

  it("never blocks the event loop: a timer keeps firing during a burst of calls", async () => {
    let maxGapMs = 0;
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      maxGapMs = Math.max(maxGapMs, now - last);
      last = now;
    }, 5);
    try {
      await Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          await store.create("rbd", img(`burst${i}`), MiB);
          await store.remove("rbd", img(`burst${i}`));
        }),
      );
    } finally {
      clearInterval(timer);
    }
    expect(maxGapMs).toBeLessThan(100);
  });
});
