import { describe, expect, it } from "vitest";
import type { Bridge } from "../api/bridge.js";
import type { VirtualMachine } from "../api/virtualmachine.js";
import type { Volume } from "../api/volume.js";
import { desiredDomain, type ResolvedVm } from "../domain/desired.js";
import { facts } from "../../test/fixtures/domain.js";
import type { DomainModel } from "../domain/model.js";
import type { DomainInfo } from "../host/libvirt/types.js";
import { condition } from "../runtime/conditions.js";
import {
  growingDisks,
  guestReadInterval,
  guestReadMs,
  guestStatus,
  planStop,
  planVm,
  planVmCleanup,
  seedData,
  shutoff,
  unreadyDependencies,
  vmStatus,
  type VmPlanInput,
  type VmStatusInput,
  type VmStep,
} from "./vm-plan.js";

const node = "kaktus-a";
const now = 1_000_000;
const resolved: ResolvedVm = {
  uuid: "8f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
  macs: { net0: "52:54:00:00:00:01" },
  volumes: { os: { pool: "rbd", image: "acme.os" } },
  bridges: { br0: "br0" },
  domainType: "qemu",
  defaultCpu: facts.defaultCpu,
};

function vm(
  spec: Partial<VirtualMachine["spec"]> = {},
  status: VirtualMachine["status"] = {},
  meta = {},
): VirtualMachine {
  return {
    apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
    kind: "VirtualMachine",
    metadata: { name: "web", namespace: "acme", uid: "u-1", generation: 2, ...meta },
    spec: {
      node,
      memory: "128Mi",
      disks: [{ name: "os", volumeRef: "os" }],
      interfaces: [{ name: "net0", bridgeRef: "br0" }],
      ...spec,
    },
    status: { observedGeneration: 2, ...status },
  };
}
const domain = (o: Partial<DomainInfo> = {}): DomainInfo => ({
  name: "acme_web",
  uuid: resolved.uuid,
  state: "running",
  reason: 1,
  persistent: true,
  autostart: true,
  ...o,
});
const off = (reason: number = shutoff.byGuest) => domain({ state: "shutoff", reason });

/** A plan for `v` against a domain whose definitions (live, persistent) are what `v` asks, unless edited. */
function plan(
  v: VirtualMachine,
  d: DomainInfo | null,
  o: Partial<VmPlanInput> & { edit?: (m: DomainModel) => void } = {},
) {
  const desired = desiredDomain(v, resolved);
  const defined = structuredClone(desired);
  o.edit?.(defined);
  const running = d && d.state !== "shutoff" && d.state !== "crashed";
  return planVm({
    vm: v,
    node,
    desired,
    facts,
    observed: {
      domain: d,
      ...(running ? { live: defined } : {}),
      ...(d?.persistent ? { inactive: defined } : {}),
      ...(running ? { links: [{ name: "br0", mtu: 1500, up: true }] } : {}),
    },
    growing: [],
    now,
    ...o,
  });
}
const ops = (steps: VmStep[]) => steps.map((s) => `${s.op}${s.event ? ` ${s.event.reason}` : ""}`);
const readyOf = (p: { ready: { status: string; reason: string } }) => `${p.ready.status} ${p.ready.reason}`;

describe("planVm: power by runStrategy", () => {
  it.each([
    ["Always, running: nothing", vm(), domain(), [], "True Running"],
    ["Always, off: started", vm(), off(shutoff.destroyed), ["start Started"], "True Running"],
    [
      "Always, off while it was Running: started again with a Warning",
      vm({}, { phase: "Running" }),
      off(),
      ["start Restarted"],
      "True Running",
    ],
    ["Always, crashed: started", vm(), domain({ state: "crashed", reason: 0 }), ["start Started"], "True Running"],
    ["Always, paused: left (not stopped)", vm(), domain({ state: "paused", reason: 0 }), [], "True Running"],
    [
      "RerunOnFailure, the guest powered off: left off",
      vm({ runStrategy: "RerunOnFailure" }),
      off(shutoff.byGuest),
      [],
      "True Stopped",
    ],
    [
      "RerunOnFailure, QEMU crashed: started",
      vm({ runStrategy: "RerunOnFailure" }),
      off(shutoff.crashed),
      ["start Started"],
      "True Running",
    ],
    [
      "RerunOnFailure, destroyed: started",
      vm({ runStrategy: "RerunOnFailure" }),
      off(shutoff.destroyed),
      ["start Started"],
      "True Running",
    ],
    ["Manual, off: left off", vm({ runStrategy: "Manual" }), off(), [], "True Stopped"],
    ["Manual, running: left running", vm({ runStrategy: "Manual" }), domain(), [], "True Running"],
    [
      "Halted, running: ACPI shutdown",
      vm({ runStrategy: "Halted" }),
      domain(),
      ["shutdown ShuttingDown"],
      "False ShuttingDown",
    ],
    ["Halted, off: nothing", vm({ runStrategy: "Halted" }), off(), [], "True Stopped"],
    [
      "Halted, destroyed: nothing, says so",
      vm({ runStrategy: "Halted" }),
      off(shutoff.destroyed),
      [],
      "True Destroyed",
    ],
  ] as const)("%s", (_, v, d, steps, ready) => {
    const p = plan(v, d);
    expect(ops(p.steps)).toEqual(steps);
    expect(readyOf(p)).toBe(ready);
  });

  it("an image another client has open: not started (never two writers), says which", () => {
    const desired = desiredDomain(vm(), resolved);
    const p = planVm({
      vm: vm(),
      node,
      desired,
      facts,
      observed: { domain: off(shutoff.destroyed), inactive: desired, imagesInUse: ["rbd/acme.os"] },
      growing: [],
      now,
    });
    expect(ops(p.steps)).toEqual([]);
    expect(p.ready).toEqual(
      condition("Ready", "False", "ImageInUse", "not started: rbd/acme.os open by another client"),
    );
    expect(p.active).toBe(false);
  });

  it("the shutdown deadline is kept (for the status) while the guest has time, and dropped after", () => {
    const halted = vm({ runStrategy: "Halted", shutdownGracePeriodSeconds: 7 });
    expect(plan(halted, domain()).shutdownDeadline).toBe(now + 7_000);
    expect(plan(halted, domain(), { shutdownDeadline: now + 3_000 }).shutdownDeadline).toBe(now + 3_000);
    expect(plan(halted, domain(), { shutdownDeadline: now - 1 }).shutdownDeadline).toBeUndefined();
    expect(plan(halted, off(), { shutdownDeadline: now + 3_000 }).shutdownDeadline).toBeUndefined();
    expect(plan(vm(), domain(), { shutdownDeadline: now + 3_000 }).shutdownDeadline).toBeUndefined();
  });

  it("Halted with time left: waits, looking again every second", () => {
    const p = plan(vm({ runStrategy: "Halted" }), domain(), { shutdownDeadline: now + 30_500 });
    expect(ops(p.steps)).toEqual([]);
    expect(p.ready).toMatchObject({
      reason: "ShuttingDown",
      message: "waiting for the guest to power off (31 s left)",
    });
    expect(p.pollMs).toBe(1_000);
  });

  it("Halted past its deadline: destroyed, with a Warning", () => {
    const p = plan(vm({ runStrategy: "Halted", shutdownGracePeriodSeconds: 5 }), domain(), { shutdownDeadline: now });
    expect(ops(p.steps)).toEqual(["destroy Destroyed"]);
    expect(p.ready).toEqual(
      condition("Ready", "True", "Destroyed", "the guest did not shut down within 5 s after ACPI; destroyed it"),
    );
  });

  it("the ACPI shutdown carries the deadline of the grace period", () => {
    const p = plan(vm({ runStrategy: "Halted", shutdownGracePeriodSeconds: 7 }), domain());
    expect(p.steps[0]).toMatchObject({ op: "shutdown", deadline: now + 7_000 });
  });

  it("a start waiting for its crash-loop backoff: no start, StartFailed with the next try, back then", () => {
    const p = plan(vm(), off(shutoff.failed), {
      startWait: { until: now + 20_000, failures: 2, message: "cannot set up guest memory" },
    });
    expect(ops(p.steps)).toEqual([]);
    expect(p.ready).toEqual(
      condition(
        "Ready",
        "False",
        "StartFailed",
        "cannot set up guest memory (failed 2 times; next try at 1970-01-01T00:17:00.000Z)",
      ),
    );
    expect(p.pollMs).toBe(20_000);
  });
});

describe("planVm: definition", () => {
  it.each([
    ["no domain: defined, autostart set, started", vm(), null, ["define Defined", "autostart", "start Started"]],
    [
      "no domain but it ran before: recreated with a Warning",
      vm({}, { phase: "Running" }),
      null,
      ["define DomainRecreated", "autostart", "start Restarted"],
    ],
    [
      "transient (undefined while running): defined again",
      vm({}, { phase: "Running" }),
      domain({ persistent: false, autostart: false }),
      ["define DomainRecreated", "autostart"],
    ],
    [
      "autostart off in the spec: no autostart step",
      vm({ autostart: false }),
      null,
      ["define Defined", "start Started"],
    ],
    ["autostart turned off: set", vm({ autostart: false }), domain(), ["autostart"]],
    ["converged: nothing at all", vm(), domain(), []],
  ] as const)("%s", (_, v, d, steps) => {
    expect(ops(plan(v, d).steps)).toEqual(steps);
  });

  it.each([
    [
      "memory changed behind its back (generation observed): reverted, with a Warning",
      vm(),
      (m: DomainModel): void => void (m.memoryKiB = 1n),
      "DefinitionDrift",
    ],
    [
      "memory changed in the spec (new generation): updated",
      vm({}, { observedGeneration: 1 }),
      (m: DomainModel): void => void (m.memoryKiB = 1n),
      "Updated",
    ],
  ] as const)("on a stopped domain, %s", (_, v, edit, reason) => {
    const p = plan(v, off(shutoff.destroyed), { edit });
    expect(ops(p.steps)).toEqual([`define ${reason}`, "start Started"]);
    expect(p.restart).toEqual([]);
  });

  it("on a running domain: a restart field goes to the definition and RestartRequired, not live", () => {
    const p = plan(vm({}, { observedGeneration: 1 }), domain(), { edit: (m) => (m.vcpus = 4) });
    expect(ops(p.steps)).toEqual(["define Updated"]);
    expect(p.restart).toEqual(["vcpus"]);
  });

  it("on a running domain: an added NIC is attached live and the definition rewritten", () => {
    const v = vm({}, { observedGeneration: 1 });
    const p = plan(v, domain(), { edit: (m) => (m.interfaces = []) });
    expect(ops(p.steps)).toEqual(["attach UpdatedLive", "define Updated"]);
    expect(p.steps[0]).toMatchObject({ op: "attach", xml: expect.stringContaining('<source bridge="br0"/>') });
    expect(p.restart).toEqual([]);
  });

  it("on a running domain: a removed disk is detached live", () => {
    const p = plan(vm({ disks: [] }, { observedGeneration: 1 }), domain(), {
      edit: (m) =>
        m.disks.push({
          name: "os",
          target: "vda",
          bus: "virtio",
          source: { kind: "rbd", pool: "rbd", image: "acme.os" },
          device: "disk",
          readOnly: false,
        }),
    });
    expect(ops(p.steps)).toEqual(["detach UpdatedLive", "define Updated"]);
  });

  it("on a running domain: a NIC moved to another bridge is updated live", () => {
    const p = plan(vm({}, { observedGeneration: 1 }), domain(), { edit: (m) => (m.interfaces[0]!.bridge = "br9") });
    expect(ops(p.steps)).toEqual(["update UpdatedLive", "define Updated"]);
  });

  /** A running domain whose NIC net0 has tap vnet3, with these links on the node. */
  const withTap = (links: { name: string; master?: string }[]) => {
    const desired = desiredDomain(vm(), resolved);
    const live = structuredClone(desired);
    live.interfaces[0]!.tap = "vnet3";
    const observed = {
      domain: domain(),
      live,
      inactive: desired,
      links: links.map((l) => ({ mtu: 1500, up: true, ...l })),
    };
    return planVm({ vm: vm(), node, desired, facts, observed, growing: [], now });
  };

  it("a NIC whose tap is off its re-created bridge is plugged back", () => {
    const p = withTap([{ name: "br0" }, { name: "vnet3" }]);
    expect(ops(p.steps)).toEqual(["replug NicReplugged"]);
    expect(p.steps[0]).toMatchObject({ bridge: "br0", tap: "vnet3" });
  });

  it.each([
    ["its tap is on the bridge", [{ name: "br0" }, { name: "vnet3", master: "br0" }]],
    ["the bridge is not there (yet)", [{ name: "vnet3" }]],
    ["the tap is gone", [{ name: "br0" }]],
  ])("no replug when %s", (_, links) => {
    expect(ops(withTap(links).steps)).toEqual([]);
  });

  it("a Volume waiting for this VM is grown live, on a running domain only", () => {
    const growing = [{ disk: "os", bytes: 2n << 30n }];
    const p = plan(vm(), domain(), { growing });
    expect(ops(p.steps)).toEqual(["grow DiskGrown"]);
    expect(p.steps[0]).toMatchObject({ target: "vda", bytes: 2n << 30n });
    expect(p.steps[0]?.event?.message).toBe("grew os (vda) to 2Gi live");
    expect(ops(plan(vm(), off(), { growing }).steps)).toEqual(["start Started"]);
  });

  it("the seed image is written before the definition when its content changed, else not", () => {
    const v = vm({ cloudInit: { userData: "#cloud-config\n" } });
    const seed = seedData(v)!;
    expect(ops(plan(v, null, { seed, seedDigest: "new" }).steps)[0]).toBe("seed");
    expect(
      ops(plan(v, domain(), { seed, seedDigest: "same", observed: { domain: domain(), seedDigest: "same" } }).steps),
    ).toEqual([]);
  });
});

describe("planVmCleanup and planStop", () => {
  const d = (o: Partial<DomainInfo> = {}) => domain(o);
  it.each([
    ["running: ACPI first, waits", d(), undefined, ["shutdown ShuttingDown"], true],
    [
      "running past the deadline: destroyed, then undefined",
      d(),
      now - 1,
      ["destroy Destroyed", "undefine Deleted", "remove-seed"],
      false,
    ],
    ["off: undefined, seed removed", d({ state: "shutoff" }), undefined, ["undefine Deleted", "remove-seed"], false],
    ["no domain: only the seed", null, undefined, ["remove-seed"], false],
  ] as const)("%s", (_, dom, deadline, steps, waits) => {
    const p = planVmCleanup(
      vm(),
      dom,
      { now, ...(deadline !== undefined ? { shutdownDeadline: deadline } : {}) },
      node,
    );
    expect(ops(p.steps)).toEqual(steps);
    expect(p.pollMs !== undefined).toBe(waits);
  });

  it("an orphan (no object) is stopped with the grace its definition carries, else the default", () => {
    expect(planStop(undefined, domain(), { now, orphanGraceSeconds: 2 }).steps[0]).toMatchObject({
      op: "shutdown",
      deadline: now + 2_000,
    });
    expect(planStop(undefined, domain(), { now }).steps[0]).toMatchObject({ op: "shutdown", deadline: now + 60_000 });
  });
});

describe("dependencies, seed, growth", () => {
  const readyVolume = (reason = "ImageReady", status = "True", extra: Partial<Volume["metadata"]> = {}): Volume => ({
    apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
    kind: "Volume",
    metadata: { name: "os", namespace: "acme", ...extra },
    spec: { pool: "rbd", size: "2Gi" },
    status: {
      conditions: [{ type: "Ready", status: status as "True", reason, message: "m", lastTransitionTime: "t" }],
    },
  });
  const bridgeOn = (ready: boolean): Bridge => ({
    apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
    kind: "Bridge",
    metadata: { name: "br0" },
    spec: {},
    status: { nodes: [{ node, ready }] },
  });
  it.each([
    ["all Ready", readyVolume(), bridgeOn(true), []],
    ["a Volume growing live counts as Ready", readyVolume("WaitingForResize", "False"), bridgeOn(true), []],
    ["a Volume missing", undefined, bridgeOn(true), ["Volume os does not exist"]],
    ["a Volume not Ready", readyVolume("Creating", "False"), bridgeOn(true), ["Volume os is not Ready: m"]],
    [
      "a Volume being deleted",
      readyVolume(undefined, undefined, { deletionTimestamp: "t" }),
      bridgeOn(true),
      ["Volume os is being deleted"],
    ],
    ["a Bridge missing", readyVolume(), undefined, ["Bridge br0 does not exist"]],
    ["a Bridge not Ready on this node", readyVolume(), bridgeOn(false), ["Bridge br0 is not Ready on kaktus-a"]],
  ] as const)("%s", (_, volume, bridge, waits) => {
    const found = unreadyDependencies(
      vm(),
      node,
      () => volume,
      () => bridge,
      {},
    );
    expect(found.map((w) => w.message)).toEqual(waits);
    expect(found.every((w) => w.reason === "Waiting")).toBe(true);
  });

  it("a Bridge whose namespaceSelector does not admit the VM's namespace: BridgeNotAllowed", () => {
    const privateBridge = { ...bridgeOn(true), spec: { namespaceSelector: { matchLabels: { tenant: "acme" } } } };
    const check = (labels: Record<string, string>) =>
      unreadyDependencies(
        vm(),
        node,
        () => readyVolume(),
        () => privateBridge,
        labels,
      );
    expect(check({ tenant: "acme" })).toEqual([]);
    expect(check({ tenant: "globex" })).toEqual([
      { reason: "BridgeNotAllowed", message: "Bridge br0 does not admit namespace acme (its namespaceSelector)" },
    ]);
    const status = vmStatus(vm(), node, { waiting: check({}), active: true });
    expect(status.conditions).toContainEqual(
      expect.objectContaining({ type: "DependenciesReady", reason: "BridgeNotAllowed" }),
    );
    expect(status.fields.phase).toBe("Running"); // a running VM keeps running, and says why it is not Ready
  });

  it("a Volume another VM holds: VolumeInUse, naming the holder", () => {
    const held = readyVolume();
    held.status!.attachedTo = { name: "other", uid: "u-other", node: "kaktus-b" };
    expect(
      unreadyDependencies(
        vm(),
        node,
        () => held,
        () => bridgeOn(true),
        {},
      ),
    ).toEqual([{ reason: "VolumeInUse", message: "Volume os is attached to VirtualMachine other (on kaktus-b)" }]);
    held.status!.attachedTo = { name: "web", uid: "u-1", node };
    expect(
      unreadyDependencies(
        vm(),
        node,
        () => held,
        () => bridgeOn(true),
        {},
      ),
    ).toEqual([]);
  });

  it("grows only disks whose Volume waits for it", () => {
    expect(growingDisks(vm(), () => readyVolume("WaitingForResize", "False"))).toEqual([
      { disk: "os", bytes: 2n << 30n },
    ]);
    expect(growingDisks(vm(), () => readyVolume())).toEqual([]);
  });

  it("seed: user-data from the spec or the Secret, default meta-data with the object's UID", () => {
    expect(seedData(vm())).toBeUndefined();
    expect(seedData(vm({ cloudInit: { userData: "u" } }))).toEqual({
      userData: "u",
      metaData: "instance-id: u-1\nlocal-hostname: web\n",
    });
    expect(
      seedData(vm({ cloudInit: { userDataSecretRef: { name: "s" }, networkConfig: "n" } }), "from-secret"),
    ).toEqual({
      userData: "from-secret",
      metaData: "instance-id: u-1\nlocal-hostname: web\n",
      networkConfig: "n",
    });
  });
});

describe("vmStatus: the phase and conditions table", () => {
  const running = condition("Ready", "True", "Running", "running on kaktus-a");
  it.each([
    [
      "running",
      vm(),
      { waiting: [], ready: running, restart: [], active: true },
      "Running",
      ["DependenciesReady True", "Ready True", "Synced True", "RestartRequired False"],
    ],
    [
      "stopped",
      vm(),
      { waiting: [], ready: condition("Ready", "True", "Stopped"), restart: [], active: false },
      "Stopped",
      ["DependenciesReady True", "Ready True", "Synced True", "RestartRequired False"],
    ],
    [
      "pending changes",
      vm(),
      { waiting: [], ready: running, restart: ["vcpus"], active: true },
      "Running",
      ["DependenciesReady True", "Ready True", "Synced True", "RestartRequired True"],
    ],
    [
      "waiting, no domain",
      vm(),
      { waiting: ["Volume os does not exist"], active: undefined },
      "Pending",
      ["DependenciesReady False", "Ready False"],
    ],
    [
      "waiting, domain running",
      vm(),
      { waiting: ["Bridge br0 is not Ready on kaktus-a"], active: true },
      "Running",
      ["DependenciesReady False", "Ready False"],
    ],
    [
      "start failed",
      vm(),
      { waiting: [], ready: condition("Ready", "False", "StartFailed"), restart: [], active: false },
      "Failed",
      ["DependenciesReady True", "Ready False", "Synced True", "RestartRequired False"],
    ],
    [
      "defined, no run yet",
      vm(),
      { waiting: [], active: undefined },
      "Provisioning",
      ["DependenciesReady True", "Synced True"],
    ],
    [
      "deleting, shutting down",
      vm({}, {}, { deletionTimestamp: "t" }),
      { waiting: [], ready: condition("Ready", "False", "ShuttingDown"), active: true },
      "Terminating",
      ["Ready False"],
    ],
  ] as const)("%s", (_, v, s, phase, conditions) => {
    const out = vmStatus(v, node, {
      ...s,
      waiting: s.waiting.map((message) => ({ reason: "Waiting" as const, message })),
      ...("restart" in s ? { restart: [...(s.restart as readonly string[])] } : {}),
    } as VmStatusInput);
    expect(out.fields).toEqual({ phase, node, shutdownDeadline: undefined });
    expect(out.conditions.flatMap((c) => (c ? [`${c.type} ${c.status}`] : []))).toEqual(conditions);
  });

  it("says what waits and what needs a restart", () => {
    const w = (message: string) => ({ reason: "Waiting" as const, message });
    const out = vmStatus(vm(), node, { waiting: [w("a"), w("b")], active: undefined });
    expect(out.conditions[1]).toEqual(condition("Ready", "False", "WaitingForDependencies", "a; b"));
    const held = vmStatus(vm(), node, {
      waiting: [w("a"), { reason: "VolumeInUse", message: "b" }],
      active: undefined,
    });
    expect(held.conditions[0]).toEqual(condition("DependenciesReady", "False", "VolumeInUse", "a; b"));
    const restart = vmStatus(vm(), node, {
      waiting: [],
      ready: condition("Ready", "True", "Running"),
      restart: ["memory", "vcpus"],
      active: true,
    });
    expect(restart.conditions[3]).toEqual(
      condition("RestartRequired", "True", "PendingChanges", "applied after the next restart: memory, vcpus"),
    );
  });
});

describe("guest agent: status and read schedule", () => {
  const identity = [{ name: "net0", mac: "52:54:00:00:00:01", bridge: "br0" }];
  const info = {
    hostname: "web",
    os: { id: "debian", versionId: "12" },
    interfaces: [
      { name: "lo", mac: "00:00:00:00:00:00", ips: ["127.0.0.1/8"] },
      { name: "lan0", mac: "52:54:00:00:00:01", ips: ["10.0.0.5/24", "fe80::5054:ff:fe00:1/64", "2001:db8::5/64"] },
    ],
  };
  const cloudInit = { cloudInit: { userData: "#cloud-config" } };

  it("a connected agent: hostname, OS and each NIC's addresses by MAC, without IPv6 link-local", () => {
    const s = guestStatus(vm(cloudInit), identity, { running: true, connected: true, info });
    expect(s.fields).toEqual({
      guest: { hostname: "web", os: { id: "debian", versionId: "12" } },
      interfaces: [{ ...identity[0], ips: ["10.0.0.5/24", "2001:db8::5/64"] }],
    });
    expect(s.conditions).toEqual([condition("GuestAgentConnected", "True", "Connected", expect.any(String))]);
  });

  it.each([
    ["not connected yet", { running: true, connected: false, info }, "NotConnected"],
    ["the domain stopped", { running: false, connected: false, info }, "DomainNotRunning"],
  ])("%s: nothing of the guest in status, and why", (_, state, reason) => {
    const s = guestStatus(vm(cloudInit), identity, state);
    expect(s.fields).toEqual({ guest: undefined, interfaces: identity });
    expect(s.conditions[0]).toMatchObject({ type: "GuestAgentConnected", status: "False", reason });
  });

  it("no agent asked for (no cloud-init, no spec switch): no condition, unless one was there", () => {
    expect(guestStatus(vm(), identity, { running: true, connected: false }).conditions).toEqual([undefined]);
    const before = vm(
      { guestAgent: false },
      { conditions: [{ ...condition("GuestAgentConnected", "True", "Connected"), lastTransitionTime: "t" }] },
    );
    expect(guestStatus(before, identity, { running: true, connected: false }).conditions[0]).toMatchObject({
      status: "False",
      reason: "Disabled",
    });
  });

  it("reads come soon after a change or a failure, then twice as late each time, up to the maximum", () => {
    expect(guestReadInterval(undefined, info)).toBe(guestReadMs.min);
    expect(guestReadInterval({ info, intervalMs: guestReadMs.min }, info)).toBe(2 * guestReadMs.min);
    expect(guestReadInterval({ info, intervalMs: guestReadMs.max }, info)).toBe(guestReadMs.max);
    expect(guestReadInterval({ info, intervalMs: guestReadMs.max }, { ...info, hostname: "other" })).toBe(
      guestReadMs.min,
    );
    expect(guestReadInterval({ info, intervalMs: guestReadMs.max }, undefined)).toBe(guestReadMs.min);
  });
});
