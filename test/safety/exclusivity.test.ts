import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { labAgent } from "../env/agents.js";
import { nodes, rbd } from "../env/lab.js";
import { waitFor } from "../env/proc.js";
import {
  applyObjects,
  conditionOf,
  domainState,
  dropNamespace,
  freshNamespace,
  getObject,
  kvm,
  kvol,
  waitCondition,
} from "../support/e2e.js";
import { kubectl } from "../support/kube.js";

/**
 * Hazard 1: two VMs on one disk. Two VirtualMachines on two nodes name the same Volume at once:
 * exactly one may run with the image open; the other says VolumeInUse. When the first is deleted,
 * the second takes the Volume.
 */
const [nodeA, nodeB] = nodes as [(typeof nodes)[0], (typeof nodes)[0]];
const agents = [labAgent(nodeA, { metricsPort: 9482 }), labAgent(nodeB, { metricsPort: 9483 })] as const;
const ns = "safety-excl";

const vm = (name: string, node: string) => ({
  apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
  kind: "VirtualMachine",
  metadata: { name, namespace: ns },
  spec: {
    node,
    memory: "128Mi",
    graphics: "none",
    shutdownGracePeriodSeconds: 1,
    disks: [{ name: "d", volumeRef: "shared" }],
  },
});
const watchers = async () =>
  (JSON.parse(await rbd("status", "--format", "json", `rbd/${ns}.shared`)) as { watchers: unknown[] }).watchers.length;
const running = async (name: string, node: (typeof nodes)[0]) =>
  (await domainState(node, `${ns}_${name}`)) === "running";

describe("one Volume, one VirtualMachine at a time", () => {
  beforeAll(async () => {
    await freshNamespace(ns, agents);
  }, 180_000);

  afterAll(async () => {
    await dropNamespace(ns, agents);
  }, 300_000);

  it("two VMs on two nodes racing for one Volume: exactly one runs, the other says VolumeInUse", async () => {
    await applyObjects({
      apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
      kind: "Volume",
      metadata: { name: "shared", namespace: ns },
      spec: { pool: "rbd", size: "64Mi" },
    });
    await waitCondition(kvol, "shared", ns, "Ready", "True");
    await applyObjects(vm("one", nodeA.name), vm("two", nodeB.name));
    const settled = await waitFor(
      "one VM running, the other refused",
      async () => {
        const [one, two] = [await getObject(kvm, "one", ns), await getObject(kvm, "two", ns)];
        const runs = [one, two].filter((o) => conditionOf(o, "Ready")?.reason === "Running");
        const refused = [one, two].filter((o) => conditionOf(o, "DependenciesReady")?.reason === "VolumeInUse");
        return runs.length === 1 && refused.length === 1 ? { winner: runs[0]!, loser: refused[0]! } : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 500 },
    );
    const winner = settled.winner.metadata.name;
    const loser = settled.loser.metadata.name;
    expect(conditionOf(settled.loser, "DependenciesReady")?.message).toContain(`VirtualMachine ${winner}`);
    // Held for a while: the loser never gets a domain that runs, and the image has one client.
    for (let i = 0; i < 10; i++) {
      expect([await running("one", nodeA), await running("two", nodeB)].filter(Boolean)).toHaveLength(1);
      await new Promise((r) => setTimeout(r, 1_000));
    }
    expect(await watchers()).toBe(1);
    expect((await getObject(kvol, "shared", ns))?.status?.attachedTo).toMatchObject({ name: winner });

    // The claim moves once the first VM is gone.
    await kubectl(["delete", "-n", ns, `${kvm}/${winner}`, "--timeout=90s"]);
    await waitCondition(kvm, loser, ns, "Ready", "True", "Running", 90_000);
    expect(await running(loser, loser === "one" ? nodeA : nodeB)).toBe(true);
    expect((await getObject(kvol, "shared", ns))?.status?.attachedTo).toMatchObject({ name: loser });
    expect(await watchers()).toBe(1);
  }, 300_000);
});
