import { readdirSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { labAgent } from "../env/agents.js";
import { controlPlane, libvirtDaemon, linkNames, nodes, rbdImages, virsh } from "../env/lab.js";
import { alive, childrenOf, waitFor } from "../env/proc.js";
import {
  applyObjects,
  conditionOf,
  domainNames,
  domainState,
  getObject,
  kbr,
  kvm,
  kvol,
  volumeLeader,
  volumeLeaseHolder,
  waitCondition,
  waitEvent,
  waitObject,
} from "../support/e2e.js";
import { installCrds, kubectl } from "../support/kube.js";

/**
 * Two agents for the two node sandboxes, as separate processes, and what goes wrong around them:
 * the leader dying, a crash in the middle of provisioning, the apiserver and libvirtd restarting,
 * and a graceful stop.
 */
const [nodeA, nodeB] = nodes as [(typeof nodes)[0], (typeof nodes)[0]];
const leaseSeconds = 5;
const agents = [
  labAgent(nodeA, { metricsPort: 9466, leaseDurationSeconds: leaseSeconds }),
  labAgent(nodeB, { metricsPort: 9467, leaseDurationSeconds: leaseSeconds }),
] as const;
const [agentA] = agents;
const ns = "e2e-agents";
const apply = applyObjects;

/** A small diskless BIOS guest on the test bridge: enough for QEMU to run and libvirt to manage. */
const vm = (name: string, node: string, extra: Record<string, unknown> = {}) => ({
  apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
  kind: "VirtualMachine",
  metadata: { name, namespace: ns },
  spec: {
    node,
    cpu: { cores: 1 },
    memory: "128Mi",
    graphics: "none",
    shutdownGracePeriodSeconds: 2,
    interfaces: [{ name: "net0", bridgeRef: "e2e-br" }],
    ...extra,
  },
});
const volume = (name: string, size = "64Mi") => ({
  apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
  kind: "Volume",
  metadata: { name, namespace: ns },
  spec: { pool: "rbd", size },
});

describe("two agents, crashes and restarts", () => {
  beforeAll(async () => {
    await installCrds();
    await Promise.all(agents.map((a) => a.start()));
    await kubectl(["delete", "namespace", ns, "--ignore-not-found", "--timeout=180s"]);
    await kubectl(["create", "namespace", ns]);
    await apply({
      apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
      kind: "Bridge",
      metadata: { name: "e2e-br" },
      spec: { bridgeName: "kbr-e2e" },
    });
    await waitObject(kbr, "e2e-br", undefined, "ready on both nodes", (o) => o?.status?.readyNodes === "2/2");
  }, 300_000);

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.start().catch(() => undefined)));
    await kubectl(["delete", "namespace", ns, "--ignore-not-found", "--timeout=180s"]).catch(() => undefined);
    await kubectl(["delete", kbr, "e2e-br", "--ignore-not-found", "--timeout=60s"]).catch(() => undefined);
    await Promise.all(agents.map((a) => a.stop()));
  }, 300_000);

  it("each agent only touches VMs of its own node", async () => {
    await apply(vm("vm-a", nodeA.name), vm("vm-b", nodeB.name));
    await waitCondition(kvm, "vm-a", ns, "Ready", "True");
    await waitCondition(kvm, "vm-b", ns, "Ready", "True");
    expect(await domainNames(nodeA)).toContain(`${ns}_vm-a`);
    expect(await domainNames(nodeA)).not.toContain(`${ns}_vm-b`);
    expect(await domainNames(nodeB)).toContain(`${ns}_vm-b`);
    expect(await domainNames(nodeB)).not.toContain(`${ns}_vm-a`);
    expect((await getObject(kvm, "vm-b", ns))?.status?.node).toBe(nodeB.name);
  }, 120_000);

  it("killing the leader hands Volume reconciling to the other within the lease duration", async () => {
    const { leader: dead, follower } = await volumeLeader(agents);
    // Its `ip monitor` must not outlive it (a leftover keeps the node's network namespace busy).
    const helpers = childrenOf(dead.pid()!);
    expect(helpers.length).toBeGreaterThan(0);
    dead.kill();
    const killed = Date.now();
    await apply(volume("after-leader-died"));
    await waitFor(
      "the other agent holds the lease",
      async () => (await volumeLeaseHolder()) === follower.node.name || undefined,
      {
        timeoutMs: 20_000,
        intervalMs: 100,
      },
    );
    const handover = Date.now() - killed;
    await waitFor("the killed agent's helpers gone", async () => helpers.every((pid) => !alive(pid)) || undefined, {
      timeoutMs: 5_000,
    });
    console.log(
      `[figure] Volume lease taken over ${handover} ms after the leader was killed (lease ${leaseSeconds} s)`,
    );
    await waitCondition(kvol, "after-leader-died", ns, "Ready", "True", undefined, 30_000);
    // The lease expires at most leaseSeconds after the last renewal, and the follower wakes right then
    // (the margin is this test polling kubectl).
    expect(handover).toBeLessThanOrEqual(leaseSeconds * 1000 + 1000);
    await dead.start();
  }, 120_000);

  it("converges without duplicates or leaks after a SIGKILL in the middle of provisioning", async () => {
    await apply(
      volume("crash-disk"),
      vm("crash-vm", nodeA.name, {
        disks: [{ name: "os", volumeRef: "crash-disk" }],
        cloudInit: { userData: "#cloud-config\nhostname: crash-vm\n" },
      }),
    );
    // Kill as soon as the identity is persisted: the domain is about to be defined.
    await waitObject(kvm, "crash-vm", ns, "has a domain UUID", (o) => o?.status?.domainUUID !== undefined, 60_000);
    agentA.kill();
    await sleep(500);
    await agentA.start();
    const ready = await waitCondition(kvm, "crash-vm", ns, "Ready", "True", undefined, 90_000);
    expect((await domainNames(nodeA)).filter((d) => d === `${ns}_crash-vm`)).toHaveLength(1);
    expect(await domainNames(nodeB)).not.toContain(`${ns}_crash-vm`);
    expect((await virsh(nodeA, "domuuid", `${ns}_crash-vm`)).stdout.trim()).toBe(ready?.status?.domainUUID);
    const images = (await rbdImages("rbd")).filter((i) => i.startsWith(`${ns}.`));
    expect(images.sort()).toEqual([`${ns}.after-leader-died`, `${ns}.crash-disk`]);
    // Only finished seed images (and their hashes) in the agent's folder: no half-written work dirs.
    const files = readdirSync(join(nodeA.dir, "agent")).filter(
      (f) => f.startsWith(`${ns}_`) || f.startsWith(`.${ns}_`),
    );
    expect(files.sort()).toEqual([`${ns}_crash-vm.iso`, `${ns}_crash-vm.sha256`]);
  }, 180_000);

  it("reconnects to libvirtd after it restarts: events and calls resume", async () => {
    const libvirtd = libvirtDaemon(nodeA);
    await libvirtd.stop({ guests: false });
    await libvirtd.start();
    await waitFor("agent A ready again", async () => (await agentA.get("/readyz")).status === 200 || undefined, {
      timeoutMs: 30_000,
    });
    await virsh(nodeA, "destroy", `${ns}_vm-a`);
    // Well inside the 30 s resync: the lifecycle event brought it back.
    await waitFor(
      "vm-a running again",
      async () => (await domainState(nodeA, `${ns}_vm-a`)) === "running" || undefined,
      {
        timeoutMs: 15_000,
      },
    );
  }, 120_000);

  it("reconnects to the apiserver after it restarts and keeps converging", async () => {
    const watchesBefore = await agentA.metric("kaktus_watch_restarts_total", { why: "any" });
    await controlPlane.stop("apiserver");
    await sleep(3_000);
    await controlPlane.startApiserver();
    await kubectl(["patch", "-n", ns, `${kvm}/vm-a`, "--type=merge", "-p", '{"spec":{"runStrategy":"Halted"}}']);
    await waitCondition(kvm, "vm-a", ns, "Ready", "True", "Destroyed", 60_000);
    expect(await domainState(nodeA, `${ns}_vm-a`)).toBe("shut off");
    expect(await agentA.metric("kaktus_watch_restarts_total", { why: "any" })).toBeGreaterThan(watchesBefore);
  }, 120_000);

  it("stops gracefully on SIGTERM: the lease is released and taken over at once", async () => {
    const { leader: stopping, follower } = await volumeLeader(agents);
    const started = Date.now();
    await stopping.stop();
    const stoppedIn = Date.now() - started;
    console.log(`[figure] graceful stop of the leader took ${stoppedIn} ms`);
    await waitFor(
      "the other agent holds the lease",
      async () => (await volumeLeaseHolder()) === follower.node.name || undefined,
      {
        timeoutMs: 10_000,
        intervalMs: 100,
      },
    );
    expect(stoppedIn).toBeLessThan(10_000);
    // Released, not expired: well under the lease duration after the process ended.
    expect(Date.now() - started - stoppedIn).toBeLessThan(leaseSeconds * 1000);
    expect(stopping.pid()).toBeUndefined();
    await stopping.start();
  }, 60_000);

  it("reports a kernel that refuses a VLAN port as a condition and an Event, without a half-made port", async () => {
    await apply({
      apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
      kind: "Bridge",
      metadata: { name: "e2e-vlan" },
      spec: {
        bridgeName: "kbr-e2e-vlan",
        nodeSelector: { matchLabels: { "kubernetes.io/hostname": nodeA.name } },
        ports: [{ vlan: { parent: "eth1", id: 200 } }],
      },
    });
    const bridge = await waitCondition(kbr, "e2e-vlan", undefined, "Synced", "False");
    expect(bridge?.status?.readyNodes).toBe("0/1");
    expect(conditionOf(bridge, "Ready")?.status).toBe("False");
    expect(conditionOf(bridge, "Synced")?.message).toMatch(/kaktus-a: create VLAN eth1\.200: .*Unknown device type/);
    await waitEvent("e2e-vlan", "default", "Unsupported");
    expect(await linkNames(nodeA.netns)).not.toContain("eth1.200");
    await kubectl(["delete", kbr, "e2e-vlan", "--timeout=60s"]);
  }, 60_000);

  it("removes a Bridge only once no VM NIC on the node uses it, and says why it waits", async () => {
    await kubectl(["delete", kbr, "e2e-br", "--wait=false"]);
    const waiting = await waitObject(kbr, "e2e-br", undefined, "waiting for its VMs", (o) =>
      ((o?.status?.nodes as { message?: string }[] | undefined) ?? []).some((n) =>
        /used by VirtualMachine/.test(n.message ?? ""),
      ),
    );
    expect(waiting?.status?.phase).toBe("Terminating");
    await waitEvent("e2e-br", "default", "InUse");
    for (const node of nodes) expect(await linkNames(node.netns)).toContain("kbr-e2e");
    await kubectl(["delete", "-n", ns, kvm, "--all", "--timeout=90s"]);
    await waitObject(kbr, "e2e-br", undefined, "gone", (o) => o === undefined, 60_000);
    for (const node of nodes) expect(await linkNames(node.netns)).not.toContain("kbr-e2e");
  }, 180_000);
});
