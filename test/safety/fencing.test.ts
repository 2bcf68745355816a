import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { labAgent } from "../env/agents.js";
import { ensureFixtures } from "../env/fixtures.js";
import { ceph, cephText, nodes, nodeBVethAddress, rbd } from "../env/lab.js";
import { waitFor } from "../env/proc.js";
import { applyObjects, domainState, kvm, waitCondition } from "../support/e2e.js";
import { installCrds, kubectl } from "../support/kube.js";

/**
 * Hazard 6: a dead node wedges deletion. Node B's agent is gone for good (stopped) while its VM
 * runs with an RBD disk; the namespace is deleted, then the Node object. The Volume leader fences
 * the node (its Ceph client blocklisted), releases the VM's claim and its finalizer: the VM, its
 * Volume and the namespace finish deleting. When node B comes back, its agent removes the domain.
 */
const [nodeA, nodeB] = nodes as [(typeof nodes)[0], (typeof nodes)[0]];
const agents = [labAgent(nodeA, { metricsPort: 9492 }), labAgent(nodeB, { metricsPort: 9493 })] as const;
const [, agentB] = agents;
const ns = "safety-fence";

const blocklist = () => cephText("osd", "blocklist", "ls");

describe("a Node deleted while its agent is gone", () => {
  beforeAll(async () => {
    await installCrds();
    await kubectl(["delete", "namespace", ns, "--ignore-not-found", "--timeout=120s"]);
    await kubectl(["create", "namespace", ns]);
    await Promise.all(agents.map((a) => a.start()));
  }, 180_000);

  afterAll(async () => {
    // Node B back, whatever happened: its Node object, Ceph access for its address.
    await ensureFixtures();
    await ceph("osd", "blocklist", "rm", `${nodeBVethAddress}:0/0`).catch(() => undefined);
    await kubectl(["delete", "namespace", ns, "--ignore-not-found", "--timeout=120s"]).catch(() => undefined);
    await Promise.all(agents.map((a) => a.stop()));
  }, 300_000);

  it("the node is fenced, then its VMs, their Volumes and the namespace finish deleting", async () => {
    await applyObjects(
      {
        apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
        kind: "Volume",
        metadata: { name: "fdisk", namespace: ns },
        spec: { pool: "rbd", size: "32Mi" },
      },
      {
        apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
        kind: "VirtualMachine",
        metadata: { name: "fenced", namespace: ns },
        spec: {
          node: nodeB.name,
          memory: "128Mi",
          graphics: "none",
          shutdownGracePeriodSeconds: 1,
          disks: [{ name: "d", volumeRef: "fdisk" }],
        },
      },
    );
    await waitCondition(kvm, "fenced", ns, "Ready", "True", "Running", 90_000);
    // Node B dies for good: its agent is gone; its QEMU still holds the image open.
    await agentB.stop();
    expect(await domainState(nodeB, `${ns}_fenced`)).toBe("running");
    await kubectl(["delete", "namespace", ns, "--wait=false"]);
    await kubectl(["delete", "node", nodeB.name]);
    await waitFor(
      "namespace gone",
      async () =>
        (await kubectl(["get", "namespace", ns, "--ignore-not-found", "-o", "name"])).trim() ? undefined : true,
      { timeoutMs: 120_000, intervalMs: 1_000 },
    );
    expect(await blocklist()).toContain(nodeBVethAddress);
    // The image is gone with its Volume, although node B's QEMU had it open: that client is fenced.
    expect(JSON.parse(await rbd("ls", "--format", "json", "rbd")) as string[]).not.toContain(`${ns}.fdisk`);
  }, 240_000);

  // Its object is gone, not its grace period: the domain's definition carries it (1 s; this guest has
  // no OS and ignores ACPI). It took the default 60 s and more before.
  it("when node B comes back, its agent removes the domain left there, within its VM's grace period", async () => {
    await ensureFixtures();
    await ceph("osd", "blocklist", "rm", `${nodeBVethAddress}:0/0`);
    await agentB.start();
    await waitFor(
      "node B's orphan domain removed",
      async () => ((await domainState(nodeB, `${ns}_fenced`)) ? undefined : true),
      { timeoutMs: 30_000 },
    );
  }, 120_000);
});
