import { describe, expect, it } from "vitest";
import type { Volume } from "../api/volume.js";
import type { ImageStatus } from "../host/rbd/types.js";
import { planVolume, planVolumeCleanup, volumeStatus, type VolumeObservation } from "./volume-plan.js";

const MiB = 1n << 20n;
const policy = { pools: ["rbd"], clonePools: ["templates"] };

function volume(spec: Partial<Volume["spec"]> = {}, extra: Partial<Volume> = {}): Volume {
  return {
    apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
    kind: "Volume",
    metadata: { name: "data", namespace: "acme", generation: 1 },
    spec: { pool: "rbd", size: "64Mi", ...spec },
    ...extra,
  };
}
const image = (size: bigint, watchers = 0): ImageStatus => ({
  size,
  parent: null,
  snapshots: [],
  watchers: Array.from({ length: watchers }, (_, i) => ({ address: `10.0.0.${i}`, id: String(i) })),
});
const readyVolume = (name: string, ready: boolean): Volume =>
  volume(
    {},
    {
      metadata: { name, namespace: "acme" },
      status: {
        conditions: [
          {
            type: "Ready",
            status: ready ? "True" : "False",
            reason: "x",
            message: "",
            lastTransitionTime: "2026-01-01T00:00:00Z",
          },
        ],
      },
    },
  );
const observed = (o: Partial<VolumeObservation> = {}): VolumeObservation => ({ image: null, inUseBy: [], ...o });
/** A plan as "op[:detail] event-reason" strings, or the refusal / wait. */
const describePlan = (p: ReturnType<typeof planVolume>) =>
  p.refusal
    ? `refused: ${p.refusal}`
    : p.waiting
      ? `waits: ${p.waiting.reason}`
      : p.steps.map((s) => `${s.op} ${s.event?.reason ?? "-"}`);

describe("planVolume: what the Volume controller does to the image", () => {
  it.each([
    ["no image: created", volume(), observed(), ["create Created"]],
    [
      "no image, a template source: cloned",
      volume({ source: { image: { pool: "templates", name: "debian", snapshot: "s" } } }),
      observed(),
      ["clone Created"],
    ],
    [
      "no image, a Ready source Volume: copied",
      volume({ source: { volume: { name: "gold" } } }),
      observed({ source: readyVolume("gold", true) }),
      ["copy Created"],
    ],
    [
      "a source Volume not Ready yet: waits",
      volume({ source: { volume: { name: "gold" } } }),
      observed({ source: readyVolume("gold", false) }),
      "waits: WaitingForSource",
    ],
    [
      "a source Volume that does not exist: waits",
      volume({ source: { volume: { name: "gold" } } }),
      observed(),
      "waits: WaitingForSource",
    ],
    ["converged: nothing", volume(), observed({ image: image(64n * MiB) }), []],
    ["bigger than asked: nothing (never shrinks)", volume(), observed({ image: image(128n * MiB) }), []],
    ["the spec grew: grown", volume({ size: "96Mi" }), observed({ image: image(64n * MiB) }), ["grow Resized"]],
    [
      "grown while a VM has it open: left to the VM's live resize",
      volume({ size: "96Mi" }),
      observed({ image: image(64n * MiB, 1) }),
      [],
    ],
    [
      "shrunk behind the operator's back: grown back, with a Warning",
      volume({}, { status: { capacity: "64Mi" } }),
      observed({ image: image(32n * MiB) }),
      ["grow SizeDrift"],
    ],
    [
      "a pool outside the policy: refused, nothing made",
      volume({ pool: "templates" }),
      observed(),
      "refused: pool templates is not one Volumes may use (rbd)",
    ],
    [
      "cloning from a pool outside the policy: refused",
      volume({ source: { image: { pool: "rbd", name: "x", snapshot: "s" } } }),
      observed(),
      "refused: pool rbd is not one images may be cloned from",
    ],
  ] as const)("%s", (_, v, o, want) => {
    expect(describePlan(planVolume(v, o, policy))).toEqual(want);
  });

  it("names the image namespace.name in the Volume's pool, at the requested size", () => {
    expect(planVolume(volume({ size: "1Gi" }), observed(), policy).steps[0]).toMatchObject({
      op: "create",
      pool: "rbd",
      image: "acme.data",
      size: 1024n * MiB,
    });
  });
});

describe("planVolumeCleanup: what deletion does", () => {
  const deleting = (spec: Partial<Volume["spec"]> = {}) =>
    volume(spec, { metadata: { name: "data", namespace: "acme", deletionTimestamp: "2026-01-01T00:00:00Z" } });
  it.each([
    [
      "Retain keeps the image",
      deleting({ reclaimPolicy: "Retain" }),
      observed({ image: image(MiB) }),
      { steps: [], event: "Retained" },
    ],
    [
      "Retain keeps it even in use",
      deleting({ reclaimPolicy: "Retain" }),
      observed({ image: image(MiB, 1), inUseBy: ["web"] }),
      { steps: [], event: "Retained" },
    ],
    [
      "a VM references it: waits",
      deleting(),
      observed({ image: image(MiB), inUseBy: ["web"] }),
      { steps: [], waiting: "InUse", event: "InUse" },
    ],
    [
      "a client has it open: waits",
      deleting(),
      observed({ image: image(MiB, 2) }),
      { steps: [], waiting: "ImageInUse", event: "ImageInUse" },
    ],
    ["unused: removed", deleting(), observed({ image: image(MiB) }), { steps: ["remove"] }],
    ["already gone: done, nothing to do", deleting(), observed(), { steps: [] }],
  ] as const)("%s", (_, v, o, want) => {
    const plan = planVolumeCleanup(v, o);
    expect({
      steps: plan.steps.map((s) => s.op),
      ...(plan.waiting ? { waiting: plan.waiting.reason } : {}),
      ...(plan.event ? { event: plan.event.reason } : {}),
    }).toEqual(want);
  });

  it("says who uses it", () => {
    expect(planVolumeCleanup(deleting(), observed({ inUseBy: ["a", "b"] })).waiting?.message).toBe(
      "still used by VirtualMachine a, b",
    );
  });
});

describe("volumeStatus: phase and conditions from what was observed", () => {
  it.each([
    [
      "ready",
      volume(),
      observed({ image: image(64n * MiB) }),
      {},
      "Ready",
      ["Ready True ImageReady", "Synced True Synced"],
    ],
    [
      "waiting for the VM's live resize",
      volume({ size: "96Mi" }),
      observed({ image: image(64n * MiB, 1) }),
      {},
      "Creating",
      ["Ready False WaitingForResize", "Synced True Synced"],
    ],
    [
      "refused",
      volume({ pool: "x" }),
      observed(),
      { refusal: "no" },
      "Failed",
      ["Synced False PoolNotAllowed", "Ready False PoolNotAllowed"],
    ],
    [
      "waiting for its source",
      volume(),
      observed(),
      { waiting: { reason: "WaitingForSource", message: "m" } },
      "Pending",
      ["Ready False WaitingForSource"],
    ],
    [
      "deleting, waiting",
      volume({}, { metadata: { name: "d", namespace: "acme", deletionTimestamp: "t" } }),
      observed({ inUseBy: ["web"] }),
      { waiting: { reason: "InUse", message: "m" } },
      "Terminating",
      ["Ready False InUse"],
    ],
  ] as const)("%s", (_, v, o, plan, phase, conditions) => {
    const s = volumeStatus(v, o, plan);
    expect(s.fields.phase).toBe(phase);
    expect(s.conditions.map((c) => `${c.type} ${c.status} ${c.reason}`)).toEqual(conditions);
  });

  it("reports image, capacity, watchers and users", () => {
    expect(volumeStatus(volume(), observed({ image: image(64n * MiB, 1), inUseBy: ["web"] }), {}).fields).toEqual({
      phase: "Ready",
      image: "rbd/acme.data",
      capacity: "64Mi",
      watchers: 1,
      inUseBy: ["web"],
    });
  });
});
