import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { labAgent } from "../env/agents.js";
import { labNetns, linkNames, nodes, rbd, rbdImages, virsh } from "../env/lab.js";
import { run, waitFor } from "../env/proc.js";
import {
  conditionOf,
  domainNames,
  domainState,
  getObject,
  waitCondition,
  waitEvent,
  waitObject,
  applyObjects,
  kbr,
  kvm,
  kvol,
  patchObject,
  waitReady,
} from "../support/e2e.js";
import { installCrds, kubectl } from "../support/kube.js";

/**
 * The examples, end to end: two agents (one per node sandbox) run as separate processes against
 * the real apiserver, libvirtd/QEMU, Ceph and bridges in the node namespaces. The steps share
 * state and run in order: apply, stay quiet, edit, repair drift, delete.
 */
const [nodeA, nodeB] = nodes as [(typeof nodes)[0], (typeof nodes)[0]];
// A resync every 10 s (30 s by default): the quiet window and the repair of an RBD drift (no host
// event there) each need one, and this file is one of the suite's longest.
const resyncSeconds = 10;
const agents = [
  labAgent(nodeA, { metricsPort: 9464, resyncSeconds }),
  labAgent(nodeB, { metricsPort: 9465, resyncSeconds }),
];
const ns = "acme";
const domain = "acme_web-1";
const ipA = (...args: string[]) => run("ip", ["-n", labNetns, ...args]);
const waitRunning = () =>
  waitFor(`${domain} running`, async () => (await domainState(nodeA, domain)) === "running" || undefined, {
    timeoutMs: 60_000,
  });
const imageSize = async (image: string) =>
  (JSON.parse(await rbd("info", "--format", "json", image)) as { size: number }).size;

/** The sum of a metric over both agents. */
const total = async (metric: string) =>
  (await Promise.all(agents.map((a) => a.metric(metric)))).reduce((a, b) => a + b);

async function cleanSlate(): Promise<void> {
  await kubectl(["delete", "namespace", ns, "--ignore-not-found", "--timeout=180s"]);
  await kubectl(["delete", kbr, "br0", "br100", "--ignore-not-found", "--timeout=60s"]);
  // The example's data disk is Retain: a run that stopped half-way (or `npm start`) leaves its image.
  if ((await rbdImages("rbd")).includes("acme.web-1-data")) await rbd("rm", "rbd/acme.web-1-data");
}

describe("the examples, reconciled by two agents", () => {
  beforeAll(async () => {
    await installCrds();
    await Promise.all(agents.map((a) => a.start()));
    await cleanSlate();
  }, 300_000);

  afterAll(async () => {
    await cleanSlate().catch(() => undefined);
    await Promise.all(agents.map((a) => a.stop()));
  }, 300_000);

  it("applies the examples: every object Ready, at its generation, the domain running on RBD and bridges", async () => {
    await kubectl(["apply", "--server-side", "-f", "examples/"]);
    await waitReady(kbr, undefined, "br0", "br100");
    await waitReady(kvol, ns, "web-1-os", "web-1-data");
    await waitReady(kvm, ns, "web-1");
    for (const [resource, name, namespace] of [
      [kbr, "br0", undefined],
      [kbr, "br100", undefined],
      [kvol, "web-1-os", ns],
      [kvol, "web-1-data", ns],
      [kvm, "web-1", ns],
    ] as const) {
      const o = await getObject(resource, name, namespace);
      expect(o?.status?.observedGeneration, `${resource}/${name}`).toBe(o?.metadata.generation);
      expect(conditionOf(o, "Ready")?.status, `${resource}/${name}`).toBe("True");
    }
    expect((await getObject(kbr, "br0"))?.status?.readyNodes).toBe("2/2");
    expect((await getObject(kbr, "br100"))?.status?.readyNodes).toBe("1/1");

    expect(await domainState(nodeA, domain)).toBe("running");
    expect(await domainNames(nodeB)).not.toContain(domain);
    const xml = (await virsh(nodeA, "dumpxml", domain)).stdout;
    expect(xml).toContain("protocol='rbd' name='rbd/acme.web-1-os'");
    expect(xml).toContain("protocol='rbd' name='rbd/acme.web-1-data'");
    expect(xml).toMatch(/<source bridge='br0'\/>/);
    expect(xml).toMatch(/<source bridge='br100'\/>/);
    expect(xml).toContain("<mac address='52:54:00:12:34:56'/>");
    // The generated MAC and the UUID are in status, and they are the domain's.
    const vm = await getObject(kvm, "web-1", ns);
    const status = vm?.status as { domainUUID: string; interfaces: { name: string; mac: string }[] };
    expect(xml).toContain(`<uuid>${status.domainUUID}</uuid>`);
    expect(xml).toContain(`<mac address='${status.interfaces.find((i) => i.name === "public")?.mac}'/>`);
    // Bridges on both nodes, with their ports; the template clone grown to its size.
    for (const node of nodes) expect(await linkNames(node.netns, "br0")).toContain("eth1");
    expect(await imageSize("rbd/acme.web-1-os")).toBe(20 * 2 ** 30);
  }, 240_000);

  it("stays quiet once converged: no API write and no mutating host call in 12 s, through a resync of each object", async () => {
    // Let in-flight follow-ups (status echoes, tap changes) settle first.
    await sleep(5_000);
    const before = {
      writes: await total("kaktus_api_writes_total"),
      mutations: await total("kaktus_host_mutations_total"),
      reconciles: await total("kaktus_reconcile_total"),
    };
    // Each object is looked at again within the window (a resync every 10 s).
    await sleep(12_000);
    const after = {
      writes: await total("kaktus_api_writes_total"),
      mutations: await total("kaktus_host_mutations_total"),
      reconciles: await total("kaktus_reconcile_total"),
    };
    console.log(
      `[figure] 12 s converged: ${after.reconciles - before.reconciles} reconciles, ${after.writes - before.writes} API writes, ${after.mutations - before.mutations} host mutations`,
    );
    expect(after.writes - before.writes).toBe(0);
    expect(after.mutations - before.mutations).toBe(0);
    // The window did contain reconciles: quiet, not idle.
    expect(after.reconciles - before.reconciles).toBeGreaterThanOrEqual(5);
  }, 120_000);

  it("grows a Volume in use live: QEMU grows the image and the guest's disk", async () => {
    await patchObject(kvol, "web-1-data", ns, { spec: { size: "110Gi" } });
    await waitObject(
      kvol,
      "web-1-data",
      ns,
      "capacity 110Gi and Ready",
      (o) =>
        o?.status?.capacity === "110Gi" &&
        conditionOf(o, "Ready")?.status === "True" &&
        o.status.observedGeneration === o.metadata.generation,
    );
    expect(await imageSize("rbd/acme.web-1-data")).toBe(110 * 2 ** 30);
    const blk = (await virsh(nodeA, "domblkinfo", domain, "vdb", "--human")).stdout;
    expect(blk).toMatch(/Capacity:\s+110\.000 GiB/);
    await waitEvent("web-1", ns, "DiskGrown");
  }, 120_000);

  it("adds a NIC live, without restarting the domain", async () => {
    const id = (await virsh(nodeA, "domid", domain)).stdout.trim();
    await patchObject(kvm, "web-1", ns, [
      { op: "add", path: "/spec/interfaces/-", value: { name: "extra", bridgeRef: "br0" } },
    ]);
    await waitObject(
      kvm,
      "web-1",
      ns,
      "3 NICs in status",
      (o) =>
        (o?.status?.interfaces as unknown[] | undefined)?.length === 3 &&
        o?.status?.observedGeneration === o?.metadata.generation,
    );
    await waitEvent("web-1", ns, "UpdatedLive");
    const live = (await virsh(nodeA, "domiflist", domain)).stdout;
    expect(live.split("\n").filter((l) => /vnet\d+/.test(l))).toHaveLength(3);
    expect((await virsh(nodeA, "domid", domain)).stdout.trim()).toBe(id);
    expect(conditionOf(await getObject(kvm, "web-1", ns), "RestartRequired")?.status).toBe("False");
  }, 120_000);

  it("changes memory: RestartRequired until a restart; Halted shuts down (a guest ignoring ACPI is destroyed after its grace period)", async () => {
    await patchObject(kvm, "web-1", ns, { spec: { memory: "2Gi", shutdownGracePeriodSeconds: 5 } });
    const vm = await waitCondition(kvm, "web-1", ns, "RestartRequired", "True");
    expect(conditionOf(vm, "RestartRequired")?.message).toContain("memory");
    expect((await virsh(nodeA, "dumpxml", "--inactive", domain)).stdout).toContain(
      "<memory unit='KiB'>2097152</memory>",
    );
    expect(await domainState(nodeA, domain)).toBe("running");

    // The guest has no OS: it ignores the ACPI request, so the grace period ends in a destroy.
    const halting = Date.now();
    await patchObject(kvm, "web-1", ns, { spec: { runStrategy: "Halted" } });
    await waitCondition(kvm, "web-1", ns, "Ready", "False", "ShuttingDown", 30_000);
    const stopped = await waitCondition(kvm, "web-1", ns, "Ready", "True", "Destroyed", 60_000);
    expect(Date.now() - halting).toBeGreaterThanOrEqual(5_000);
    expect(conditionOf(stopped, "Ready")?.message).toMatch(/did not shut down within 5 s/);
    expect(stopped?.status?.phase).toBe("Stopped");
    expect(await domainState(nodeA, domain)).toBe("shut off");
    await waitEvent("web-1", ns, "Destroyed");

    await patchObject(kvm, "web-1", ns, { spec: { runStrategy: "Always" } });
    const running = await waitCondition(kvm, "web-1", ns, "Ready", "True", "Running");
    expect(conditionOf(running, "RestartRequired")?.status).toBe("False");
    expect(running?.status?.observedGeneration).toBe(running?.metadata.generation);
    expect(await domainState(nodeA, domain)).toBe("running");
    expect((await virsh(nodeA, "dominfo", domain)).stdout).toMatch(/Max memory:\s+2097152 KiB/);
  }, 180_000);

  it("repairs a domain destroyed and then undefined behind its back, with Events", async () => {
    await virsh(nodeA, "destroy", domain);
    await waitRunning();
    await waitEvent("web-1", ns, "Restarted");
    await virsh(nodeA, "destroy", domain);
    await virsh(nodeA, "undefine", "--nvram", domain);
    await waitRunning();
    await waitEvent("web-1", ns, "DomainRecreated");
    const vm = await getObject(kvm, "web-1", ns);
    expect((await virsh(nodeA, "domuuid", domain)).stdout.trim()).toBe(
      (vm?.status as { domainUUID: string }).domainUUID,
    );
  }, 120_000);

  it("repairs a bridge deleted behind its back", async () => {
    await ipA("link", "del", "br0");
    await waitFor("br0 back with eth1", async () => (await linkNames(labNetns, "br0")).includes("eth1") || undefined, {
      timeoutMs: 60_000,
    });
    await waitEvent("br0", "default", "Recreated");
    // The guest's two NICs on br0 (public, extra) are plugged back into the new bridge.
    await waitFor(
      "both taps back on br0",
      async () => (await linkNames(labNetns, "br0")).filter((p) => /^vnet\d+$/.test(p)).length === 2 || undefined,
      { timeoutMs: 60_000 },
    );
    await waitEvent("web-1", ns, "NicReplugged");
    await waitCondition(kbr, "br0", undefined, "Ready", "True");
  }, 120_000);

  it("repairs an image shrunk behind its back", async () => {
    await applyObjects({
      apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
      kind: "Volume",
      metadata: { name: "scratch", namespace: ns },
      spec: { pool: "rbd", size: "1Gi" },
    });
    await waitCondition(kvol, "scratch", ns, "Ready", "True");
    await rbd("resize", "--allow-shrink", "--size", "512M", "rbd/acme.scratch");
    // No host event for RBD: the resync finds it.
    await waitFor("image grown back", async () => (await imageSize("rbd/acme.scratch")) === 2 ** 30 || undefined, {
      timeoutMs: 90_000,
    });
    await waitEvent("scratch", ns, "SizeDrift");
  }, 120_000);

  it("deletes: a Volume in use waits for its VM, the VM's domain goes, Retain keeps its image", async () => {
    await kubectl(["delete", "-n", ns, `${kvol}/web-1-os`, "--wait=false"]);
    const waiting = await waitCondition(kvol, "web-1-os", ns, "Ready", "False", "InUse");
    expect(conditionOf(waiting, "Ready")?.message).toContain("web-1");
    expect(await rbdImages("rbd")).toContain("acme.web-1-os");

    await kubectl(["delete", "-n", ns, `${kvm}/web-1`, "--timeout=90s"]);
    expect(await domainNames(nodeA)).not.toContain(domain);
    // Its Volume follows now that nothing uses it.
    await waitObject(kvol, "web-1-os", ns, "gone", (o) => o === undefined);
    await waitFor("image removed", async () => !(await rbdImages("rbd")).includes("acme.web-1-os") || undefined, {
      timeoutMs: 60_000,
    });

    await kubectl(["delete", "-n", ns, `${kvol}/web-1-data`, "--timeout=60s"]);
    expect(await rbdImages("rbd")).toContain("acme.web-1-data");
    await waitEvent("web-1-data", ns, "Retained");
    await rbd("rm", "rbd/acme.web-1-data");
  }, 180_000);

  it("never leaves a finalizer behind when the host object is already gone", async () => {
    await rbd("rm", "rbd/acme.scratch");
    await kubectl(["delete", "-n", ns, `${kvol}/scratch`, "--timeout=60s"]);
    await ipA("link", "del", "br100");
    await kubectl(["delete", `${kbr}/br100`, "--timeout=60s"]);
    expect(await getObject(kvol, "scratch", ns)).toBeUndefined();
    expect(await getObject(kbr, "br100")).toBeUndefined();
  }, 120_000);

  it("deleting the namespace removes its VMs, domains and images", async () => {
    await kubectl([
      "apply",
      "--server-side",
      "-f",
      "examples/00-namespace.yaml",
      "-f",
      "examples/20-volumes.yaml",
      "-f",
      "examples/30-virtualmachine.yaml",
    ]);
    // br100 was deleted above: the VM only needs br0 here; a short grace period (the guest ignores ACPI).
    await patchObject(kvm, "web-1", ns, [
      { op: "remove", path: "/spec/interfaces/1" },
      { op: "add", path: "/spec/shutdownGracePeriodSeconds", value: 3 },
    ]);
    await waitCondition(kvm, "web-1", ns, "Ready", "True", undefined, 120_000);
    await kubectl(["delete", "namespace", ns, "--timeout=180s"]);
    expect(await domainNames(nodeA)).not.toContain(domain);
    const images = (await rbdImages("rbd")) as string[];
    expect(images).not.toContain("acme.web-1-os");
    // Retain is honoured even when the namespace goes.
    expect(images).toContain("acme.web-1-data");
    await rbd("rm", "rbd/acme.web-1-data");
  }, 300_000);
});
