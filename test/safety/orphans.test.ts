import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { labAgent } from "../env/agents.js";
import { nodes, virsh } from "../env/lab.js";
import { waitFor } from "../env/proc.js";
import {
  applyObjects,
  domainNames,
  domainState,
  dropNamespace,
  freshNamespace,
  getObject,
  kvm,
  waitCondition,
  waitEvent,
} from "../support/e2e.js";
import { kubectl } from "../support/kube.js";

/**
 * Hazard 2: a domain left behind. A VM's finalizer removed by hand while its node's agent was
 * down, and the VM made again elsewhere (or again on the same node, a new object): the domain left
 * on the node belongs to no object any more. The returning agent removes it, never starts it, and
 * never takes it for the new object's.
 */
const [nodeA, nodeB] = nodes as [(typeof nodes)[0], (typeof nodes)[0]];
const agents = [labAgent(nodeA, { metricsPort: 9484 }), labAgent(nodeB, { metricsPort: 9485 })] as const;
const [agentA] = agents;
const ns = "safety-orphan";

const vm = (name: string, node: string) => ({
  apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
  kind: "VirtualMachine",
  metadata: { name, namespace: ns },
  spec: { node, memory: "128Mi", graphics: "none", shutdownGracePeriodSeconds: 1 },
});

/** The VM gone while its node's agent is down: its finalizer removed by hand, as people do. */
async function forceDelete(name: string): Promise<void> {
  await kubectl(["delete", "-n", ns, `${kvm}/${name}`, "--wait=false"]);
  await kubectl(["patch", "-n", ns, `${kvm}/${name}`, "--type=merge", "-p", '{"metadata":{"finalizers":null}}']);
  await waitFor("gone", async () => ((await getObject(kvm, name, ns)) ? undefined : true), { timeoutMs: 30_000 });
}

/** Watches a domain until it is gone; says whether it ever ran meanwhile. */
async function goneWithoutRunning(name: string, timeoutMs: number): Promise<boolean> {
  let ran = false;
  await waitFor(
    `${name} removed`,
    async () => {
      const state = await domainState(nodeA, name);
      if (state === "running") ran = true;
      return state === undefined ? true : undefined;
    },
    { timeoutMs, intervalMs: 100 },
  );
  return !ran;
}

describe("domains left behind are removed, never started, never adopted", () => {
  beforeAll(async () => {
    await freshNamespace(ns, agents);
  }, 180_000);

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.start().catch(() => undefined)));
    await dropNamespace(ns, agents);
  }, 300_000);

  it("a VM moved to node B while node A's agent was stopped: A removes its domain when it returns", async () => {
    await applyObjects(vm("mover", nodeA.name));
    await waitCondition(kvm, "mover", ns, "Ready", "True", "Running");
    await agentA.stop();
    await forceDelete("mover");
    await applyObjects(vm("mover", nodeB.name));
    await waitCondition(kvm, "mover", ns, "Ready", "True", "Running");
    // Left on node A, stopped (autostart would bring it back at the host's next boot).
    await virsh(nodeA, "destroy", `${ns}_mover`);
    await agentA.start();
    expect(await goneWithoutRunning(`${ns}_mover`, 60_000)).toBe(true);
    expect(await domainState(nodeB, `${ns}_mover`)).toBe("running");
    await waitEvent("mover", ns, "OrphanRemoved");
  }, 240_000);

  it("the same name again on the same node, a new object: the old domain goes, a new one is made", async () => {
    await applyObjects(vm("again", nodeA.name));
    const first = await waitCondition(kvm, "again", ns, "Ready", "True", "Running");
    await agentA.stop();
    await forceDelete("again");
    await applyObjects(vm("again", nodeA.name));
    await virsh(nodeA, "destroy", `${ns}_again`);
    await agentA.start();
    const second = await waitFor(
      "the new object's own domain",
      async () => {
        const o = await getObject(kvm, "again", ns);
        const xml = (await virsh(nodeA, "dumpxml", `${ns}_again`).catch(() => undefined))?.stdout ?? "";
        return o?.metadata.uid && xml.includes(`uid="${o.metadata.uid}"`) && o.status?.phase === "Running"
          ? o
          : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 500 },
    );
    expect(second.status?.domainUUID).not.toBe(first?.status?.domainUUID);
    expect((await virsh(nodeA, "domuuid", `${ns}_again`)).stdout.trim()).toBe(second.status?.domainUUID);
    expect((await domainNames(nodeA)).filter((d) => d === `${ns}_again`)).toHaveLength(1);
    await waitEvent("again", ns, "OrphanRemoved");
  }, 240_000);

  it("never touches a domain it did not make, even one named like a VM", async () => {
    const foreign = `${ns}_foreign`;
    const xml = `<domain type='qemu'><name>${foreign}</name><memory unit='MiB'>32</memory><os><type arch='x86_64'>hvm</type></os></domain>`;
    const dir = mkdtempSync(join(tmpdir(), "kaktus-foreign-"));
    writeFileSync(join(dir, "domain.xml"), xml);
    try {
      await virsh(nodeA, "define", join(dir, "domain.xml"));
      await agentA.stop();
      await agentA.start(); // its startup sweep sees the domain
      await applyObjects(vm("foreign", nodeA.name));
      const o = await waitCondition(kvm, "foreign", ns, "Ready", "False", "NotOwned");
      expect(o?.status?.phase).toBe("Failed");
      expect((await virsh(nodeA, "dumpxml", foreign)).stdout).not.toContain("kaktus.kowabunga.cloud");
      await kubectl(["delete", "-n", ns, `${kvm}/foreign`, "--timeout=60s"]);
      expect(await domainNames(nodeA)).toContain(foreign);
    } finally {
      await virsh(nodeA, "undefine", foreign).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);
});
