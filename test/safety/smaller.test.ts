import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { labAgent } from "../env/agents.js";
import { nodes } from "../env/lab.js";
import {
  applyObjects,
  conditionOf,
  domainState,
  dropNamespace,
  eventsOf,
  freshNamespace,
  getObject,
  kvm,
  kvol,
  patchObject,
  waitCondition,
} from "../support/e2e.js";

/**
 * Hazard 7, the smaller ones: a shutdown deadline that outlives a switch back to Always; seed images
 * (which may hold secrets) readable by others; objects never looked at again once their reconcile
 * gave up; quantities the schema admits and the parser does not.
 */
const [nodeA] = nodes as [(typeof nodes)[0]];
// Every cached object looked at again every 5 s (an environment variable: old agents ignore it).
const agents = nodes.map((n, i) => labAgent(n, { metricsPort: 9494 + i, env: { KAKTUS_SYNC_PERIOD: "5" } }));
const ns = "safety-small";

const vm = (name: string, spec: Record<string, unknown> = {}) => ({
  apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
  kind: "VirtualMachine",
  metadata: { name, namespace: ns },
  spec: { node: nodeA.name, memory: "128Mi", graphics: "none", shutdownGracePeriodSeconds: 1, ...spec },
});

describe("the smaller hazards", () => {
  beforeAll(async () => {
    await freshNamespace(ns, agents);
  }, 180_000);

  afterAll(async () => {
    await dropNamespace(ns, agents);
  }, 300_000);

  it("a shutdown deadline does not outlive a switch back to Always: the next Halted asks ACPI again", async () => {
    await applyObjects(vm("grace", { shutdownGracePeriodSeconds: 8 }));
    await waitCondition(kvm, "grace", ns, "Ready", "True", "Running");
    await patchObject(kvm, "grace", ns, { spec: { runStrategy: "Halted" } });
    await waitCondition(kvm, "grace", ns, "Ready", "False", "ShuttingDown");
    await patchObject(kvm, "grace", ns, { spec: { runStrategy: "Always" } });
    await waitCondition(kvm, "grace", ns, "Ready", "True", "Running");
    await sleep(9_000); // past the first deadline
    await patchObject(kvm, "grace", ns, { spec: { runStrategy: "Halted" } });
    // A fresh grace period: ACPI again, not a destroy at once.
    await waitCondition(kvm, "grace", ns, "Ready", "False", "ShuttingDown");
    await sleep(4_000);
    expect(await domainState(nodeA, `${ns}_grace`)).toBe("running");
    const o = await waitCondition(kvm, "grace", ns, "Ready", "True", "Destroyed", 30_000);
    expect(conditionOf(o, "Ready")?.message).toContain("within 8 s after ACPI");
  }, 120_000);

  it("seed images are readable by root only, in a folder only root can list", async () => {
    await applyObjects(vm("seeded", { cloudInit: { userData: "#cloud-config\npassword: not-for-others\n" } }));
    await waitCondition(kvm, "seeded", ns, "Ready", "True", "Running");
    const dir = join(nodeA.dir, "agent");
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    for (const f of readdirSync(dir).filter((n) => n.startsWith(`${ns}_seeded`)))
      expect(statSync(join(dir, f)).mode & 0o777, f).toBe(0o600);
  }, 60_000);

  it("an object whose reconcile gave up is looked at again by the periodic resync", async () => {
    await applyObjects(vm("given-up", { cpu: { model: "host-passthrough" }, node: nodes[1]!.name }));
    await waitCondition(kvm, "given-up", ns, "Ready", "False", "Unsupported");
    const agentB = agents[1]!;
    const before = await agentB.metric("kaktus_reconcile_total", { controller: "virtualmachine", result: "terminal" });
    await sleep(12_000);
    const after = await agentB.metric("kaktus_reconcile_total", { controller: "virtualmachine", result: "terminal" });
    expect(after - before).toBeGreaterThanOrEqual(2);
    expect((await eventsOf("given-up", ns)).filter((e) => e.startsWith("Unsupported:"))).toHaveLength(1);
  }, 60_000);

  it("a quantity the schema admits is understood, or gets a condition at once; sub-byte ones are refused by the API", async () => {
    const volume = (name: string, size: string) => ({
      apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
      kind: "Volume",
      metadata: { name, namespace: ns },
      spec: { pool: "rbd", size },
    });
    await applyObjects(volume("half", ".5Gi"));
    const o = await waitCondition(kvol, "half", ns, "Ready", "True", undefined, 30_000);
    expect(o?.status?.capacity).toBe("512Mi");
    await expect(applyObjects(volume("milli", "1500m"))).rejects.toThrow(/whole number of bytes/);
    expect(await getObject(kvol, "milli", ns)).toBeUndefined();
    // Admitted by the API server (a positive quantity), absurd for a disk: a condition, not an endless retry.
    await applyObjects(volume("tiny", "1e-999999"));
    const tiny = await waitCondition(kvol, "tiny", ns, "Synced", "False", "InvalidSpec", 15_000);
    expect(conditionOf(tiny, "Synced")?.message).toMatch(/out of range/);
    const reconciles = async () =>
      (await Promise.all(agents.map((a) => a.metric("kaktus_reconcile_total", { controller: "volume" })))).reduce(
        (x, y) => x + y,
        0,
      );
    const before = await reconciles();
    // Shorter than the 5 s sync period: at most one periodic sweep of the two, where a retry loop makes dozens.
    await sleep(3_000);
    expect((await reconciles()) - before).toBeLessThanOrEqual(2);
  }, 60_000);
});
