import { describe, expect, it } from "vitest";
import type { VirtualMachine } from "../api/virtualmachine.js";
import type { Volume } from "../api/volume.js";
import { claimedByOther, claimOf, claimPatch, releasePatch } from "./claims.js";
import { ownClaimEcho } from "./indexes.js";

const vm = (uid: string): VirtualMachine => ({
  apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
  kind: "VirtualMachine",
  metadata: { name: `vm-${uid}`, namespace: "acme", uid },
  spec: { node: "kaktus-a", memory: "128Mi" },
});
const volume = (attachedTo?: { name: string; uid: string; node: string }, status = true): Volume => ({
  apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
  kind: "Volume",
  metadata: { name: "data", namespace: "acme", resourceVersion: "42" },
  spec: { pool: "rbd", size: "1Gi" },
  ...(status ? { status: { phase: "Ready", ...(attachedTo ? { attachedTo } : {}) } } : {}),
});

describe("Volume claims", () => {
  it("a claim is a patch guarded by the resourceVersion read: of two racing writers, one wins", () => {
    expect(claimPatch(volume(), claimOf(vm("u1"), "kaktus-a"))).toEqual([
      { op: "test", path: "/metadata/resourceVersion", value: "42" },
      { op: "add", path: "/status/attachedTo", value: { name: "vm-u1", uid: "u1", node: "kaktus-a" } },
    ]);
    expect(claimPatch(volume(undefined, false), claimOf(vm("u1"), "kaktus-a"))[1]).toEqual({
      op: "add",
      path: "/status",
      value: { attachedTo: { name: "vm-u1", uid: "u1", node: "kaktus-a" } },
    });
  });

  it("holding it already: nothing to write", () => {
    expect(claimPatch(volume({ name: "vm-u1", uid: "u1", node: "kaktus-a" }), claimOf(vm("u1"), "kaktus-a"))).toEqual(
      [],
    );
  });

  it("held by another VM, or by an earlier object of the same name (another UID)", () => {
    const held = volume({ name: "vm-u1", uid: "u1", node: "kaktus-b" });
    expect(claimedByOther(held, vm("u2"))).toMatchObject({ uid: "u1" });
    expect(claimedByOther(held, vm("u1"))).toBeUndefined();
    expect(claimedByOther(volume(), vm("u2"))).toBeUndefined();
  });

  it("only the holder releases, guarded by its UID", () => {
    const held = volume({ name: "vm-u1", uid: "u1", node: "kaktus-a" });
    expect(releasePatch(held, "u1")).toEqual([
      { op: "test", path: "/status/attachedTo/uid", value: "u1" },
      { op: "remove", path: "/status/attachedTo" },
    ]);
    expect(releasePatch(held, "u2")).toEqual([]);
  });

  it("a claim's echo wakes the VMs waiting for the Volume, not the VM that made it", () => {
    const claimed = volume(claimOf(vm("u1"), "kaktus-a"));
    expect(ownClaimEcho(claimed, volume(), vm("u1"))).toBe(true);
    expect(ownClaimEcho(claimed, volume(), vm("u2"))).toBe(false);
    // Grown meanwhile: the holder has something to learn.
    const grown = { ...claimed, spec: { ...claimed.spec, size: "2Gi" } };
    expect(ownClaimEcho(grown, volume(), vm("u1"))).toBe(false);
    expect(ownClaimEcho(claimed, undefined, vm("u1"))).toBe(false);
  });
});
