import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { labAgent } from "../env/agents.js";
import { crossNodePort, templateImage } from "../env/fixtures.js";
import { nodes, virsh } from "../env/lab.js";
import { run, waitFor } from "../env/proc.js";
import {
  applyObjects,
  conditionOf,
  eventsOf,
  getObject,
  kbr,
  kvm,
  kvol,
  patchObject,
  waitCondition,
  waitObject,
  type Obj,
} from "../support/e2e.js";
import { guestExec } from "../support/guest.js";
import { installCrds, kubectl } from "../support/kube.js";

/**
 * Real guests, end to end: Debian cloned from the lab's template (test/env/template.ts) boots on each
 * node, cloud-init configures a user, a hostname and a static address, the guest agent's view lands
 * in status, the node reaches the guest over the Bridge, a guest on node B reaches the one on node A
 * through the Bridge spanning both nodes (port lan0), a live grow reaches the guest, and runStrategy
 * Halted ends the guest by ACPI. Under TCG a guest boots in about 40 s; the waits allow for two at once.
 */
const [nodeA, nodeB] = nodes as [(typeof nodes)[0], (typeof nodes)[0]];
const agents = [labAgent(nodeA, { metricsPort: 9496 }), labAgent(nodeB, { metricsPort: 9497 })] as const;
const ns = "e2e-guest";
const bridge = { name: "guest-br", ifname: "kbr-guest" };
const subnet = { node: "10.213.0.1/24", a: "10.213.0.10", b: "10.213.0.11", prefix: 24 };
const guests = {
  a: { name: "guest-a", node: nodeA, ip: subnet.a, mac: "52:54:00:d3:00:0a" },
  b: { name: "guest-b", node: nodeB, ip: subnet.b, mac: "52:54:00:d3:00:0b" },
};
const bootMs = 420_000;
const keyDir = mkdtempSync(join(tmpdir(), "kaktus-guest-"));
const domainOf = (g: (typeof guests)["a"]) => `${ns}_${g.name}`;

const volume = (name: string, size: string, fromTemplate: boolean) => ({
  apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
  kind: "Volume",
  metadata: { name, namespace: ns },
  spec: { pool: "rbd", size, ...(fromTemplate ? { source: { image: templateImage } } : {}) },
});

function guestVm(g: (typeof guests)["a"], sshKey: string, dataDisk: boolean) {
  return {
    apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
    kind: "VirtualMachine",
    metadata: { name: g.name, namespace: ns },
    spec: {
      node: g.node.name,
      memory: "512Mi",
      graphics: "none",
      shutdownGracePeriodSeconds: 180,
      disks: [
        { name: "os", volumeRef: `${g.name}-os`, bootOrder: 1 },
        ...(dataDisk ? [{ name: "data", volumeRef: `${g.name}-data` }] : []),
      ],
      interfaces: [{ name: "lan", bridgeRef: bridge.name, mac: g.mac }],
      cloudInit: {
        userData: [
          "#cloud-config",
          `hostname: ${g.name}`,
          "users:",
          "  - name: kaktus",
          "    shell: /bin/bash",
          `    ssh_authorized_keys: [${JSON.stringify(sshKey)}]`,
        ].join("\n"),
        networkConfig: [
          "version: 2",
          "ethernets:",
          "  lan0:",
          `    match: {macaddress: "${g.mac}"}`,
          "    set-name: lan0",
          `    addresses: [${g.ip}/${subnet.prefix}]`,
        ].join("\n"),
      },
    },
  };
}

/** Running, its agent connected, and cloud-init done inside (asked through the agent). */
async function booted(g: (typeof guests)["a"], since: number): Promise<Obj | undefined> {
  await waitCondition(kvm, g.name, ns, "GuestAgentConnected", "True", undefined, bootMs);
  const agentMs = Date.now() - since;
  const done = await guestExec(g.node, domainOf(g), ["cloud-init", "status", "--wait"], bootMs);
  expect(done.stdout).toContain("status: done");
  const domainType = /<domain type='(\w+)'/.exec((await virsh(g.node, "dumpxml", domainOf(g))).stdout)?.[1];
  console.log(
    `[figure] ${g.name} on ${g.node.name} (${domainType}): guest agent connected ${(agentMs / 1000).toFixed(1)} s ` +
      `and cloud-init done ${((Date.now() - since) / 1000).toFixed(1)} s after the VM was applied`,
  );
  // The agent is asked again soon after it connects: the static address comes up about then.
  return waitObject(
    kvm,
    g.name,
    ns,
    "its address in status",
    (o) => ipsOf(o).includes(`${g.ip}/${subnet.prefix}`),
    60_000,
  );
}

const ipsOf = (o: Obj | undefined) =>
  ((o?.status?.interfaces as { name: string; ips?: string[] }[] | undefined) ?? []).flatMap((i) => i.ips ?? []);

/** The first line a TCP server sends (an SSH banner), read from inside the lab's namespace. */
function banner(host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, timeout: 10_000 });
    socket.once("data", (d) => {
      resolve(d.toString("utf8").split("\r\n")[0]!);
      socket.destroy();
    });
    socket.once("timeout", () => socket.destroy(new Error(`no banner from ${host}:${port}`)));
    socket.once("error", reject);
  });
}

const ping = (from: "node" | (typeof guests)["a"], to: string) =>
  from === "node"
    ? run("ping", ["-c", "3", "-W", "2", to]).then(
        () => 0,
        () => 1,
      )
    : guestExec(from.node, domainOf(from), ["ping", "-c", "3", "-W", "2", to]).then((r) => r.exitCode);

describe("a real guest from the template", () => {
  let applied = 0;
  let sshKey = "";
  /** guest-a's resourceVersion once booted: its agent is asked again and again, and nothing changes. */
  let bootedVersion = "";

  beforeAll(async () => {
    await installCrds();
    await Promise.all(agents.map((a) => a.start()));
    await kubectl(["delete", "namespace", ns, "--ignore-not-found", "--timeout=300s"]);
    await kubectl(["create", "namespace", ns]);
    await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "kaktus-e2e", "-f", join(keyDir, "id")]);
    sshKey = readFileSync(join(keyDir, "id.pub"), "utf8").trim();
    await applyObjects({
      apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
      kind: "Bridge",
      metadata: { name: bridge.name },
      spec: { bridgeName: bridge.ifname, ports: [{ name: crossNodePort }] },
    });
    await waitObject(kbr, bridge.name, undefined, "ready on both nodes", (o) => o?.status?.readyNodes === "2/2");
    // The node's own address on the bridge (an operator's host address on its guest network).
    await run("ip", ["-n", nodeA.netns, "addr", "replace", subnet.node, "dev", bridge.ifname]);
    await applyObjects(
      volume("guest-a-os", "3Gi", true),
      volume("guest-a-data", "256Mi", false),
      volume("guest-b-os", "3Gi", true),
    );
    applied = Date.now();
    await applyObjects(guestVm(guests.a, sshKey, true), guestVm(guests.b, sshKey, false));
  }, 300_000);

  afterAll(async () => {
    await kubectl(["delete", "namespace", ns, "--ignore-not-found", "--timeout=300s"]).catch(() => undefined);
    await kubectl(["delete", kbr, bridge.name, "--ignore-not-found", "--timeout=60s"]).catch(() => undefined);
    await Promise.all(agents.map((a) => a.stop()));
    rmSync(keyDir, { recursive: true, force: true });
  }, 400_000);

  it(
    "boots on node A: cloud-init makes its user, hostname and address, and the guest agent's view is in status",
    async () => {
      const vm = await booted(guests.a, applied);
      bootedVersion = vm?.metadata.resourceVersion ?? "";
      expect(vm?.status?.phase).toBe("Running");
      const guest = vm?.status?.guest as { hostname?: string; os?: { id?: string; versionId?: string } };
      expect(guest.hostname).toBe(guests.a.name);
      expect(guest.os).toMatchObject({ id: "debian", versionId: "12" });
      expect(vm?.status?.interfaces).toEqual([
        { name: "lan", mac: guests.a.mac, bridge: bridge.name, ips: expect.arrayContaining([`${guests.a.ip}/24`]) },
      ]);
      expect(conditionOf(vm, "GuestAgentConnected")).toMatchObject({ status: "True", reason: "Connected" });
      const user = await guestExec(nodeA, domainOf(guests.a), ["cat", "/home/kaktus/.ssh/authorized_keys"]);
      expect(user.stdout.trim()).toBe(sshKey);
      // The clone is larger than the template: cloud-init grew the root file system to it.
      const root = await guestExec(nodeA, domainOf(guests.a), ["df", "--output=size", "-B1G", "/"]);
      expect(Number(root.stdout.trim().split("\n").at(-1))).toBeGreaterThanOrEqual(2);
    },
    bootMs + 120_000,
  );

  it("answers ping and SSH from the node's namespace, over the Bridge", async () => {
    expect(await ping("node", guests.a.ip)).toBe(0);
    expect(await banner(guests.a.ip, 22)).toMatch(/^SSH-2\.0-OpenSSH/);
  }, 60_000);

  it(
    "a guest on node B reaches it through the Bridge that spans both nodes",
    async () => {
      await booted(guests.b, applied);
      expect(await ping(guests.b, guests.a.ip)).toBe(0);
      expect(await ping("node", guests.b.ip)).toBe(0);
    },
    bootMs + 120_000,
  );

  it("a live grow of its data Volume is seen inside the guest", async () => {
    // Since it booted, the guest agent was asked a few times (5, 10, 20 s…): the same answers, no write.
    expect((await getObject(kvm, guests.a.name, ns))?.metadata).toMatchObject({ resourceVersion: bootedVersion });
    const sectors = async () =>
      Number((await guestExec(nodeA, domainOf(guests.a), ["cat", "/sys/block/vdb/size"])).stdout.trim());
    expect(await sectors()).toBe((256 * 2 ** 20) / 512);
    await patchObject(kvol, "guest-a-data", ns, { spec: { size: "512Mi" } });
    await waitFor(
      "the guest sees 512 MiB on vdb",
      async () => (await sectors()) === (512 * 2 ** 20) / 512 || undefined,
      {
        timeoutMs: 60_000,
        intervalMs: 1_000,
      },
    );
    await waitObject(kvol, "guest-a-data", ns, "capacity 512Mi", (o) => o?.status?.capacity === "512Mi");
  }, 120_000);

  it("runStrategy Halted ends the guest by ACPI within its grace period, without a destroy", async () => {
    const asked = Date.now();
    await patchObject(kvm, guests.a.name, ns, { spec: { runStrategy: "Halted" } });
    const vm = await waitObject(kvm, guests.a.name, ns, "Stopped", (o) => o?.status?.phase === "Stopped", 180_000);
    console.log(`[figure] ${guests.a.name}: ACPI shutdown took ${((Date.now() - asked) / 1000).toFixed(1)} s`);
    expect(conditionOf(vm, "Ready")).toMatchObject({ status: "True", reason: "Stopped" });
    // libvirt's own record of why the domain is off: the guest shut down, it was not destroyed.
    expect((await virsh(nodeA, "domstate", "--reason", domainOf(guests.a))).stdout).toContain("shut off (shutdown)");
    const events = await eventsOf(guests.a.name, ns);
    expect(events.some((e) => e.startsWith("ShuttingDown:"))).toBe(true);
    expect(events.some((e) => e.startsWith("Destroyed:"))).toBe(false);
    expect(conditionOf(vm, "GuestAgentConnected")).toMatchObject({ status: "False", reason: "DomainNotRunning" });
    expect(vm?.status?.guest).toBeUndefined();
    expect(ipsOf(vm)).toEqual([]);
    expect((await getObject(kvm, guests.b.name, ns))?.status?.phase).toBe("Running");
  }, 240_000);
});
