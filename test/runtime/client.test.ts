import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Volume } from "../../src/api/volume.js";
import { ConflictError, ResourceClient } from "../../src/runtime/client.js";
import { addFinalizerPatch, removeFinalizerPatch } from "../../src/runtime/finalizers.js";
import { statusPatch } from "../../src/runtime/status.js";
import { deleteNamespace, installCrds, kubeConfig, kubectl } from "../support/kube.js";

const ns = `cl-${randomBytes(3).toString("hex")}`;
const finalizer = "kaktus.kowabunga.cloud/volume";
const key = `${ns}/vol`;

describe("guarded patches of objects and their status, against the real apiserver", () => {
  const volumes = new ResourceClient<Volume>(kubeConfig, {
    group: "kaktus.kowabunga.cloud",
    version: "v1alpha1",
    plural: "volumes",
  });

  beforeAll(async () => {
    await installCrds();
    await kubectl(["create", "namespace", ns]);
    await kubectl(
      ["create", "-f", "-"],
      JSON.stringify({
        apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
        kind: "Volume",
        metadata: { name: "vol", namespace: ns },
        spec: { pool: "rbd", size: "1Gi" },
      }),
    );
  });
  afterAll(async () => {
    const v = await volumes.get(key);
    if (v) await volumes.patch(key, removeFinalizerPatch(v.metadata.finalizers, finalizer));
    await deleteNamespace(ns);
  });

  it("adds a finalizer once, and refuses a patch computed from a stale list", async () => {
    const v = (await volumes.get(key))!;
    const stale = addFinalizerPatch(v.metadata.finalizers, finalizer);
    await volumes.patch(key, stale);
    expect((await volumes.get(key))?.metadata.finalizers).toEqual([finalizer]);
    await expect(volumes.patch(key, stale)).rejects.toBeInstanceOf(ConflictError);
    expect((await volumes.get(key))?.metadata.finalizers).toEqual([finalizer]);
  });

  it("writes status only when it changed, guarded by resourceVersion", async () => {
    const v = (await volumes.get(key))!;
    const writes = volumes.writes;
    const updated = await volumes.patchStatus(key, statusPatch(v, { phase: "Creating", observedGeneration: 1 }));
    expect(updated?.status?.phase).toBe("Creating");
    expect(volumes.writes).toBe(writes + 1);
    // Same status again: no request at all.
    expect(
      await volumes.patchStatus(key, statusPatch(updated!, { phase: "Creating", observedGeneration: 1 })),
    ).toBeUndefined();
    expect(volumes.writes).toBe(writes + 1);
    // A patch from the old read loses to the newer write.
    await expect(volumes.patchStatus(key, statusPatch(v, { phase: "Ready" }))).rejects.toBeInstanceOf(ConflictError);
  });

  it("deletion waits for the finalizer, and completes once it is removed", async () => {
    await kubectl(["delete", "volume", "vol", "-n", ns, "--wait=false"]);
    const terminating = (await volumes.get(key))!;
    expect(terminating.metadata.deletionTimestamp).toBeDefined();
    await volumes.patch(key, removeFinalizerPatch(terminating.metadata.finalizers, finalizer));
    expect(await volumes.get(key)).toBeUndefined();
  });
});
