import { describe, expect, it } from "vitest";
import type { Volume } from "../api/volume.js";
import type { ImageStatus } from "../host/rbd/types.js";
import {
  isFenced,
  planVolume,
  planVolumeCleanup,
  poolsFor,
  volumeStatus,
  type VolumeObservation,
  type VolumeStep,
} from "./volume-plan.js";

const MiB = 1n << 20n;
const uid = "u-1";
const policy = { pools: ["rbd"], clonePools: ["templates"] };

function volume(
  spec: Partial<Volume["spec"]> = {},
  meta: Partial<Volume["metadata"]> = {},
  status?: Volume["status"],
): Volume {
  return {
    apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
    kind: "Volume",
    metadata: { name: "data", namespace: "acme", uid, generation: 1, ...meta },
    spec: { pool: "rbd", size: "64Mi", ...spec },
    ...(status ? { status } : {}),
  };
}
/** An image marked as this Volume's, unless `owner` says otherwise. */
const image = (size: bigint, watchers = 0, owner: string | null = uid): ImageStatus => ({
  size,
  parent: null,
  snapshots: [],
  watchers: Array.from({ length: watchers }, (_, i) => ({ address: `10.0.0.${i}:0/${100 + i}`, id: String(i) })),
  owner: owner ?? undefined,
});
const readyVolume = (name: string, ready: boolean): Volume =>
  volume(
    {},
    { name },
    {
      conditions: [
        { type: "Ready", status: ready ? "True" : "False", reason: "x", message: "", lastTransitionTime: "t" },
      ],
    },
  );
const observed = (o: Partial<VolumeObservation> = {}): VolumeObservation => ({
  image: null,
  partial: null,
  inUseBy: [],
  ...o,
});
const show = (s: VolumeStep) =>
  `${s.op}${"image" in s ? ` ${s.image}` : ""}${"address" in s ? ` ${s.address}` : ""}${s.op === "rename" ? ` ${s.from}>${s.to}` : ""}${s.event ? ` ${s.event.reason}` : ""}`;
/** A plan as "op image event" strings, or the refusal / wait. */
const describePlan = (p: ReturnType<typeof planVolume>) =>
  p.refusal
    ? `refused ${p.refusal.reason}: ${p.refusal.message}`
    : p.waiting
      ? `waits: ${p.waiting.reason}`
      : p.steps.map(show);

const built = (op: string) => [
  `${op} acme.data.partial`,
  "mark acme.data.partial",
  "rename acme.data.partial>acme.data Created",
];

describe("planVolume: what the Volume controller does to the image", () => {
  it.each([
    ["no image: built under .partial, marked, renamed", volume(), observed(), built("create")],
    [
      "no image, a template source: cloned",
      volume({ source: { image: { pool: "templates", name: "debian", snapshot: "s" } } }),
      observed(),
      built("clone"),
    ],
    [
      "no image, a Ready source Volume: copied",
      volume({ source: { volume: { name: "gold" } } }),
      observed({ source: readyVolume("gold", true) }),
      built("copy"),
    ],
    [
      "an interrupted build left a .partial: removed, built again",
      volume(),
      observed({ partial: image(7n * MiB, 0, null) }),
      ["remove acme.data.partial", ...built("create")],
    ],
    [
      "a previous leader still has its interrupted build open: fenced first, then removed, built again",
      volume(),
      observed({ partial: image(7n * MiB, 1, null) }),
      ["blocklist 10.0.0.0:0/100 BuilderFenced", "remove acme.data.partial", ...built("create")],
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
    [
      "the spec grew: grown",
      volume({ size: "96Mi" }),
      observed({ image: image(64n * MiB) }),
      ["grow acme.data Resized"],
    ],
    [
      "grown while a VM has it open: left to the VM's live resize",
      volume({ size: "96Mi" }),
      observed({ image: image(64n * MiB, 1) }),
      [],
    ],
    [
      "shrunk behind the operator's back: grown back, with a Warning",
      volume({}, {}, { capacity: "64Mi" }),
      observed({ image: image(32n * MiB) }),
      ["grow acme.data SizeDrift"],
    ],
    [
      "a pool outside the policy: refused, nothing made",
      volume({ pool: "templates" }),
      observed(),
      "refused PoolNotAllowed: pool templates is not one Volumes of namespace acme may use (rbd)",
    ],
    [
      "cloning from a pool outside the policy: refused",
      volume({ source: { image: { pool: "rbd", name: "x", snapshot: "s" } } }),
      observed(),
      "refused PoolNotAllowed: pool rbd is not one images may be cloned from",
    ],
    [
      "an image with this name made by hand (no mark): NotOwned, untouched",
      volume({ size: "96Mi" }),
      observed({ image: image(32n * MiB, 0, null) }),
      "refused NotOwned: rbd image rbd/acme.data exists and was not made for this Volume (owner mark: none); it is left untouched. Annotate the Volume kaktus.kowabunga.cloud/adopt=true to adopt it.",
    ],
    [
      "an image made for another object of the same name (a retained disk): NotOwned",
      volume(),
      observed({ image: image(64n * MiB, 0, "u-old") }),
      "refused NotOwned: rbd image rbd/acme.data exists and was not made for this Volume (owner mark: u-old); it is left untouched. Annotate the Volume kaktus.kowabunga.cloud/adopt=true to adopt it.",
    ],
    [
      "the same, with the adopt annotation: marked as this Volume's, then grown",
      volume({ size: "96Mi" }, { annotations: { "kaktus.kowabunga.cloud/adopt": "true" } }),
      observed({ image: image(32n * MiB, 0, "u-old") }),
      ["mark acme.data Adopted", "grow acme.data Resized"],
    ],
  ] as const)("%s", (_, v, o, want) => {
    expect(describePlan(planVolume(v, o, policy))).toEqual(want);
  });

  it("a tenant rule gives the namespaces it selects their own pools, first match; others keep the default", () => {
    const tenants = {
      ...policy,
      tenants: [
        { namespaceSelector: { matchLabels: { tier: "gold" } }, pools: ["ssd"], clonePools: ["templates"] },
        { namespaceSelector: {}, pools: [], clonePools: [] },
      ],
    };
    expect(poolsFor(tenants, { tier: "gold" }).pools).toEqual(["ssd"]);
    expect(poolsFor(tenants, {}).pools).toEqual([]);
    expect(poolsFor(policy, { tier: "gold" }).pools).toEqual(["rbd"]);
    expect(describePlan(planVolume(volume(), observed(), poolsFor(tenants, {})))).toBe(
      "refused PoolNotAllowed: pool rbd is not one Volumes of namespace acme may use (none)",
    );
  });

  it("no room in the namespace's capacity: refused QuotaExceeded, nothing made or grown", () => {
    expect(describePlan(planVolume(volume(), observed(), policy, "storage: 1Gi asked"))).toBe(
      "refused QuotaExceeded: storage: 1Gi asked",
    );
    const existing = observed({ image: image(32n * MiB, 0, "u-1") });
    const plan = planVolume(volume({ size: "96Mi" }), existing, policy, "storage: 96Mi asked");
    expect(plan.steps).toEqual([]);
    // The image stays shown: it exists, and counts.
    expect(volumeStatus(volume({ size: "96Mi" }), existing, plan).fields).toMatchObject({
      phase: "Failed",
      capacity: "32Mi",
    });
  });

  it("names the image namespace.name in the Volume's pool, at the requested size, marked with its UID", () => {
    const steps = planVolume(volume({ size: "1Gi" }), observed(), policy).steps;
    expect(steps[0]).toMatchObject({ op: "create", pool: "rbd", image: "acme.data.partial", size: 1024n * MiB });
    expect(steps[1]).toMatchObject({ op: "mark", uid });
  });
});

describe("planVolumeCleanup: what deletion does", () => {
  const deleting = (spec: Partial<Volume["spec"]> = {}) => volume(spec, { deletionTimestamp: "2026-01-01T00:00:00Z" });
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
    [
      "its only client is fenced (a dead node, blocklisted): removed",
      deleting(),
      observed({ image: image(MiB, 1), blocklisted: ["10.0.0.0:0/0"] }),
      { steps: ["remove acme.data Deleted"] },
    ],
    ["unused: removed", deleting(), observed({ image: image(MiB) }), { steps: ["remove acme.data Deleted"] }],
    ["already gone: done, nothing to do", deleting(), observed(), { steps: [] }],
    [
      "not made for it: left, said so",
      deleting(),
      observed({ image: image(MiB, 0, "u-other") }),
      { steps: [], event: "NotOwned" },
    ],
    [
      "a .partial left behind goes too",
      deleting(),
      observed({ partial: image(MiB, 0, null) }),
      { steps: ["remove acme.data.partial"] },
    ],
  ] as const)("%s", (_, v, o, want) => {
    const plan = planVolumeCleanup(v, o);
    expect({
      steps: plan.steps.map(show),
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

describe("fenced clients", () => {
  it.each([
    ["169.254.100.2:0/123", ["169.254.100.2:0/0"], true],
    ["v1:169.254.100.2:0/123", ["169.254.100.2:0/0"], true],
    ["169.254.100.2:0/123", ["169.254.100.2:0/123"], true],
    ["169.254.100.2:0/123", ["169.254.100.2:0/124"], false],
    ["169.254.100.1:0/123", ["169.254.100.2:0/0"], false],
    ["169.254.100.21:0/123", ["169.254.100.2:0/0"], false],
  ] as const)("%s against %j: %s", (address, list, fenced) => {
    expect(isFenced(address, list)).toBe(fenced);
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
      { refusal: { reason: "PoolNotAllowed", message: "no" } },
      "Failed",
      ["Synced False PoolNotAllowed", "Ready False PoolNotAllowed"],
    ],
    [
      "not owned",
      volume(),
      observed({ image: image(MiB, 0, "x") }),
      { refusal: { reason: "NotOwned", message: "no" } },
      "Failed",
      ["Synced False NotOwned", "Ready False NotOwned"],
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
      volume({}, { deletionTimestamp: "t" }),
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
