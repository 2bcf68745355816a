import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { kinds } from "../../src/api/kinds.js";
import type { Volume } from "../../src/api/volume.js";
import { setupVolumes, volumeFinalizer } from "../../src/controllers/volume.js";
import { RbdClient } from "../../src/host/rbd/client.js";
import { EventRecorder } from "../../src/runtime/events.js";
import { Manager } from "../../src/runtime/manager.js";
import { cephConfPath, rbd } from "../env/lab.js";
import { waitFor } from "../env/proc.js";
import { deleteNamespace, installCrds, kubeConfig, kubectl } from "../support/kube.js";

const id = randomBytes(3).toString("hex");
const ns = `vol-${id}`;
const template = `tpl-${id}`;
const group = "kaktus.kowabunga.cloud";
const log = pino({ level: "silent" });
const MiB = 1n << 20n;

const apply = (obj: object) =>
  kubectl(["apply", "--server-side", "--field-manager=test", "-f", "-"], JSON.stringify(obj));
const volume = (name: string, spec: Record<string, unknown>) =>
  apply({ apiVersion: `${group}/v1alpha1`, kind: "Volume", metadata: { name, namespace: ns }, spec });

describe("Volume reconciler against the real apiserver and Ceph", () => {
  const store = new RbdClient({ confPath: cephConfPath, user: "admin" });
  const events = new EventRecorder(kubeConfig, "kaktus-agent", "kaktus-a", log, 1_000);
  const manager = new Manager(kubeConfig, { log, workers: 2, events });
  const client = manager.client<Volume>(kinds.volume);
  const controller = setupVolumes(manager, {
    store,
    policy: { pools: ["rbd"], clonePools: ["templates"] },
    resyncMs: 60_000,
    // Only this test's namespace: other files' Volumes share the lab's apiserver.
    namespace: ns,
    // The only controller here: it always leads.
    fence: () => undefined,
  });
  const get = async (name: string) =>
    JSON.parse(await kubectl(["get", "volume", name, "-n", ns, "-o", "json"])) as Volume;
  const waitCondition = (
    name: string,
    type: string,
    what: string,
    matches: (c: { status: string; reason: string }) => boolean,
  ) =>
    waitFor(
      `Volume ${name} ${type} ${what}`,
      async () => {
        const condition = (await get(name)).status?.conditions?.find((c) => c.type === type);
        return condition && matches(condition) ? true : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200 },
    );
  const waitReason = (name: string, type: string, reason: string) =>
    waitCondition(name, type, reason, (c) => c.reason === reason);
  const waitReady = (name: string) => waitCondition(name, "Ready", "True", (c) => c.status === "True");
  const gone = (name: string) =>
    waitFor(
      `Volume ${name} gone`,
      async () =>
        (await kubectl(["get", "volume", name, "-n", ns, "--ignore-not-found", "-o", "name"])).trim() === "" ||
        undefined,
      {
        timeoutMs: 30_000,
        intervalMs: 200,
      },
    );

  beforeAll(async () => {
    await installCrds();
    await kubectl(["create", "namespace", ns]);
    // A template image with a protected snapshot, as Kaktus keeps OS images.
    await rbd("create", "--size", "32M", `templates/${template}`);
    await rbd("snap", "create", `templates/${template}@base`);
    await rbd("snap", "protect", `templates/${template}@base`);
    await manager.start();
    manager.startLeading();
  });

  afterAll(async () => {
    // While the controller runs: it holds the Volumes' finalizers.
    await deleteNamespace(ns);
    await manager.stop();
    for (const image of (await store.list("rbd")).filter((i) => i.startsWith(`${ns}.`)))
      await store.remove("rbd", image).catch(() => undefined);
    await rbd("snap", "unprotect", `templates/${template}@base`).catch(() => undefined);
    await rbd("snap", "purge", `templates/${template}`).catch(() => undefined);
    await rbd("rm", `templates/${template}`).catch(() => undefined);
    await store.close();
  });

  it("creates an empty image and reports it Ready with its capacity, finalizer on", async () => {
    await volume("data", { pool: "rbd", size: "64Mi" });
    await waitReady("data");
    const v = await get("data");
    expect(v.metadata.finalizers).toEqual([volumeFinalizer]);
    expect(v.status).toMatchObject({
      phase: "Ready",
      image: `rbd/${ns}.data`,
      capacity: "64Mi",
      watchers: 0,
      inUseBy: [],
      observedGeneration: 1,
    });
    expect((await store.status("rbd", `${ns}.data`))?.size).toBe(64n * MiB);
  });

  it("clones a template snapshot and grows the clone to the requested size", async () => {
    await volume("os", {
      pool: "rbd",
      size: "128Mi",
      source: { image: { pool: "templates", name: template, snapshot: "base" } },
    });
    await waitReady("os");
    const observed = await store.status("rbd", `${ns}.os`);
    expect(observed?.parent).toBe(`templates/${template}@base`);
    expect(observed?.size).toBe(128n * MiB);
  });

  it("grows the image when the Volume grows, and stays quiet once converged", async () => {
    await volume("data", { pool: "rbd", size: "96Mi" });
    await waitFor("grown", async () => ((await get("data")).status?.capacity === "96Mi" ? true : undefined), {
      timeoutMs: 30_000,
    });
    expect((await store.status("rbd", `${ns}.data`))?.size).toBe(96n * MiB);
    const writes = client.writes;
    controller.enqueue(`${ns}/data`);
    controller.enqueue(`${ns}/os`);
    await new Promise((r) => setTimeout(r, 1_000));
    expect(client.writes).toBe(writes);
  });

  it("refuses a pool outside the policy with a condition and an event, creating nothing", async () => {
    await volume("elsewhere", { pool: "templates", size: "8Mi" });
    await waitReason("elsewhere", "Synced", "PoolNotAllowed");
    expect(await store.status("templates", `${ns}.elsewhere`)).toBeNull();
    await events.flush();
    const recorded = await kubectl([
      "get",
      "events",
      "-n",
      ns,
      "--field-selector",
      "reason=PoolNotAllowed",
      "-o",
      "name",
    ]);
    expect(recorded.trim()).not.toBe("");
  });

  it("does not delete a Volume a VM references, nor one whose image is open; deletes it after", async () => {
    await apply({
      apiVersion: `${group}/v1alpha1`,
      kind: "VirtualMachine",
      metadata: { name: "web", namespace: ns },
      spec: { node: "kaktus-a", memory: "128Mi", disks: [{ name: "os", volumeRef: "data" }] },
    });
    await kubectl(["delete", "volume", "data", "-n", ns, "--wait=false"]);
    await waitReason("data", "Ready", "InUse");
    expect(await store.status("rbd", `${ns}.data`)).not.toBeNull();
    // The VM goes, but a client still has the image open.
    const watcher = spawn("rbd", ["watch", `rbd/${ns}.data`], { env: { ...process.env, CEPH_CONF: cephConfPath } });
    try {
      await waitFor(
        "watcher",
        async () => ((await store.status("rbd", `${ns}.data`))?.watchers.length ? true : undefined),
        { timeoutMs: 15_000 },
      );
      await kubectl(["delete", "virtualmachine", "web", "-n", ns]);
      await waitReason("data", "Ready", "ImageInUse");
      expect(await store.status("rbd", `${ns}.data`)).not.toBeNull();
    } finally {
      watcher.stdin.end("\n");
    }
    await gone("data");
    expect(await store.status("rbd", `${ns}.data`)).toBeNull();
  });

  it("keeps the image under reclaimPolicy Retain, and never sticks when the image is already gone", async () => {
    await volume("kept", { pool: "rbd", size: "8Mi", reclaimPolicy: "Retain" });
    await waitReady("kept");
    await kubectl(["delete", "volume", "kept", "-n", ns]);
    expect(await store.status("rbd", `${ns}.kept`)).not.toBeNull();
    await store.remove("rbd", `${ns}.kept`);

    await volume("vanished", { pool: "rbd", size: "8Mi" });
    await waitReady("vanished");
    await store.remove("rbd", `${ns}.vanished`); // removed behind the operator's back
    await kubectl(["delete", "volume", "vanished", "-n", ns, "--wait=false"]);
    await gone("vanished");
  });
});
