import { randomBytes } from "node:crypto";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { labAgent } from "../env/agents.js";
import { nodes, rbd, virsh } from "../env/lab.js";
import { labDir } from "../env/paths.js";
import { logFile, run } from "../env/proc.js";
import {
  applyObjects,
  conditionOf,
  domainNames,
  domainState,
  eventsOf,
  kbr,
  kvm,
  kvol,
  waitCondition,
  waitObject,
} from "../support/e2e.js";
import { deleteNamespace, installCrds, kubectl } from "../support/kube.js";

/**
 * Tenants stay in their lane: each customer project is a namespace, sharing nodes, Ceph and the
 * public bridge. A tenant's private Bridge admits only the namespaces its namespaceSelector names.
 */
const [nodeA] = nodes as [(typeof nodes)[0]];
// Every line an agent can log, searched for a planted secret at the end.
// Namespaces labelled kowabunga.cloud/pools=none may use no pool (the others: the default, rbd).
const tenantPools = join(labDir, "tenant-pools.yaml");
// Consoles with a password listen on the node's loopback (the lab's nodes share the test's).
const agents = nodes.map((n, i) =>
  labAgent(n, {
    metricsPort: 9510 + i,
    logLevel: "debug",
    args: ["--console-listen=127.0.0.1", `--tenant-pools=${tenantPools}`],
  }),
);
const [tenantA, tenantB, tenantQ] = ["tenancy-a", "tenancy-b", "tenancy-q"];
const namespaces = [tenantA, tenantB, tenantQ];
const privateBridge = "kbr-tenant-a";

const vm = (namespace: string, name: string, spec: Record<string, unknown> = {}) => ({
  apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
  kind: "VirtualMachine",
  metadata: { name, namespace },
  spec: { node: nodeA.name, memory: "128Mi", graphics: "none", shutdownGracePeriodSeconds: 2, ...spec },
});
const nic = (bridgeRef: string) => ({ interfaces: [{ name: "eth0", bridgeRef }] });
const volume = (namespace: string, name: string, size: string) => ({
  apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
  kind: "Volume",
  metadata: { name, namespace },
  spec: { pool: "rbd", size },
});
const secret = (namespace: string, name: string, data: Record<string, string>) => ({
  apiVersion: "v1",
  kind: "Secret",
  metadata: { name, namespace },
  stringData: data,
});
/** RFB (RFC 6143) up to the security result, answering the VNC challenge with zeros: no password. */
async function vncWithoutPassword(port: number): Promise<{ securityTypes: number[]; result: number }> {
  const socket = connect(port, "127.0.0.1");
  const chunks: Buffer[] = [];
  let buffered = Buffer.alloc(0);
  const read = async (n: number): Promise<Buffer> => {
    for (let i = 0; buffered.length < n; i++) {
      if (i > 100) throw new Error(`VNC: ${n} bytes never came`);
      if (chunks.length) buffered = Buffer.concat([buffered, ...chunks.splice(0)]);
      else await sleep(50);
    }
    const out = buffered.subarray(0, n);
    buffered = buffered.subarray(n);
    return out;
  };
  socket.on("data", (d: Buffer) => chunks.push(d));
  try {
    const version = await read(12);
    socket.write(version); // the server's own version, RFB 003.008
    const count = (await read(1))[0]!;
    const securityTypes = [...(await read(count))];
    if (!securityTypes.includes(2)) return { securityTypes, result: -1 };
    socket.write(Buffer.from([2]));
    await read(16); // the challenge
    socket.write(Buffer.alloc(16));
    return { securityTypes, result: (await read(4)).readUInt32BE(0) };
  } finally {
    socket.destroy();
  }
}
const images = async () => (await rbd("ls", "rbd")).split("\n").filter(Boolean);
const statSize = (path: string) => {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
};
const tapsOn = async (bridge: string) =>
  (await run("ip", ["-n", nodeA.netns, "-o", "link", "show", "master", bridge])).stdout
    .trim()
    .split("\n")
    .filter(Boolean);

describe("tenancy", () => {
  const logStart = agents.map((a) => statSize(logFile(a.name)));
  beforeAll(async () => {
    await installCrds();
    await Promise.all(namespaces.map((ns) => deleteNamespace(ns).then(() => kubectl(["create", "namespace", ns]))));
    await kubectl(["label", "namespace", tenantA, "kowabunga.cloud/project=a"]);
    await kubectl(["label", "namespace", tenantB, "kowabunga.cloud/pools=none"]);
    writeFileSync(
      tenantPools,
      "- namespaceSelector: { matchLabels: { kowabunga.cloud/pools: none } }\n  pools: []\n  clonePools: []\n",
    );
    await Promise.all(agents.map((a) => a.start()));
  }, 180_000);

  afterAll(async () => {
    await Promise.all(namespaces.map((ns) => deleteNamespace(ns).catch(() => undefined)));
    await kubectl(["delete", kbr, privateBridge, "--ignore-not-found", "--timeout=60s"]).catch(() => undefined);
    await Promise.all(agents.map((a) => a.stop()));
  }, 300_000);

  describe("bridge access", () => {
    beforeAll(async () => {
      await applyObjects({
        apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
        kind: "Bridge",
        metadata: { name: privateBridge },
        spec: {
          nodeSelector: { matchLabels: { "kubernetes.io/hostname": nodeA.name } },
          namespaceSelector: { matchLabels: { "kowabunga.cloud/project": "a" } },
        },
      });
      await waitCondition(kbr, privateBridge, undefined, "Ready", "True");
    }, 60_000);

    it("a VM of tenant B naming tenant A's private Bridge is refused, and nothing is plugged", async () => {
      await applyObjects(vm(tenantB, "intruder", nic(privateBridge)));
      const o = await waitCondition(kvm, "intruder", tenantB, "DependenciesReady", "False", "BridgeNotAllowed");
      expect(conditionOf(o, "DependenciesReady")?.message).toBe(
        `Bridge ${privateBridge} does not admit namespace ${tenantB} (its namespaceSelector)`,
      );
      expect(conditionOf(o, "Stalled")?.status).toBe("True");
      expect(await eventsOf("intruder", tenantB)).toContain(
        `BridgeNotAllowed: Bridge ${privateBridge} does not admit namespace ${tenantB} (its namespaceSelector)`,
      );
      expect(await domainNames(nodeA)).not.toContain(`${tenantB}_intruder`);
      expect(await tapsOn(privateBridge)).toEqual([]);
    });

    it("a running VM whose namespace loses access keeps running and says so: never a silent unplug", async () => {
      await applyObjects(vm(tenantA, "member", nic(privateBridge)));
      await waitCondition(kvm, "member", tenantA, "Ready", "True", "Running", 90_000);
      expect(await tapsOn(privateBridge)).toHaveLength(1);

      await kubectl(["label", "namespace", tenantA, "kowabunga.cloud/project-"]);
      const o = await waitCondition(kvm, "member", tenantA, "DependenciesReady", "False", "BridgeNotAllowed");
      expect(o?.status?.phase).toBe("Running");
      expect(await domainState(nodeA, `${tenantA}_member`)).toBe("running");
      expect(await tapsOn(privateBridge)).toHaveLength(1);

      // Access given back: the VM is Ready again, with the same NIC.
      await kubectl(["label", "namespace", tenantA, "kowabunga.cloud/project=a"]);
      await waitObject(kvm, "member", tenantA, "Ready again", (x) => conditionOf(x, "Ready")?.status === "True");
      expect(await tapsOn(privateBridge)).toHaveLength(1);
    }, 150_000);
  });

  describe("pools and capacity per namespace", () => {
    beforeAll(async () => {
      await kubectl([
        "annotate",
        "namespace",
        tenantQ,
        "kaktus.kowabunga.cloud/max-storage=100Mi",
        "kaktus.kowabunga.cloud/max-cores=2",
        "kaktus.kowabunga.cloud/max-memory=256Mi",
      ]);
    });

    it("a tenant rule gives a namespace its own pools: here none, so nothing is made", async () => {
      await applyObjects(volume(tenantB, "no-pool", "64Mi"));
      const o = await waitCondition(kvol, "no-pool", tenantB, "Ready", "False", "PoolNotAllowed");
      expect(conditionOf(o, "Ready")?.message).toBe(
        `pool rbd is not one Volumes of namespace ${tenantB} may use (none)`,
      );
      expect((await images()).filter((i) => i.startsWith(`${tenantB}.`))).toEqual([]);
    });

    it("a Volume over its namespace's storage is refused with nothing made in Ceph, and let in once there is room", async () => {
      await applyObjects(volume(tenantQ, "first", "64Mi"));
      await waitCondition(kvol, "first", tenantQ, "Ready", "True");
      await applyObjects(volume(tenantQ, "second", "64Mi"));
      const o = await waitCondition(kvol, "second", tenantQ, "Ready", "False", "QuotaExceeded");
      expect(conditionOf(o, "Ready")?.message).toBe(
        "storage: 64Mi asked, 64Mi of 100Mi in use (the namespace's capacity)",
      );
      expect(await eventsOf("second", tenantQ)).toContain(`QuotaExceeded: ${conditionOf(o, "Ready")?.message}`);
      expect((await images()).filter((i) => i.startsWith(`${tenantQ}.second`))).toEqual([]);

      // Growing the first beyond the room is refused too; its image stays as it was, and counted.
      await kubectl(["patch", "-n", tenantQ, `${kvol}/first`, "--type=merge", "-p", '{"spec":{"size":"128Mi"}}']);
      const grown = await waitCondition(kvol, "first", tenantQ, "Ready", "False", "QuotaExceeded");
      expect(grown?.status?.capacity).toBe("64Mi");

      await kubectl(["delete", "-n", tenantQ, `${kvol}/first`, "--timeout=60s"]);
      await waitCondition(kvol, "second", tenantQ, "Ready", "True", undefined, 30_000);
    }, 120_000);

    it("a VM over its namespace's cores or memory is refused: no domain", async () => {
      await applyObjects(vm(tenantQ, "small"), vm(tenantQ, "too-big", { cpu: { cores: 2 } }));
      await waitCondition(kvm, "small", tenantQ, "Ready", "True", "Running", 90_000);
      const o = await waitCondition(kvm, "too-big", tenantQ, "DependenciesReady", "False", "QuotaExceeded");
      expect(conditionOf(o, "DependenciesReady")?.message).toBe(
        "cores: 2 asked, 1 of 2 in use (the namespace's capacity)",
      );
      expect(await domainNames(nodeA)).not.toContain(`${tenantQ}_too-big`);
    }, 120_000);

    it("object counts are the standard ResourceQuota's: count/virtualmachines.kaktus.kowabunga.cloud", async () => {
      await applyObjects({
        apiVersion: "v1",
        kind: "ResourceQuota",
        metadata: { name: "vms", namespace: tenantQ },
        spec: { hard: { "count/virtualmachines.kaktus.kowabunga.cloud": "2" } },
      });
      await waitObject("resourcequota", "vms", tenantQ, "counted", (q) => {
        const used = (q as unknown as { status?: { used?: Record<string, string> } })?.status?.used;
        return used?.["count/virtualmachines.kaktus.kowabunga.cloud"] === "2";
      });
      await expect(applyObjects(vm(tenantQ, "third"))).rejects.toThrow(
        /exceeded quota: vms, requested: count\/virtualmachines.kaktus.kowabunga.cloud=1, used: count\/virtualmachines.kaktus.kowabunga.cloud=2, limited: count\/virtualmachines.kaktus.kowabunga.cloud=2/,
      );
    }, 120_000);
  });

  describe("consoles", () => {
    it("without a password, a console is a UNIX socket on the node: nothing listens on TCP", async () => {
      await applyObjects(vm(tenantB, "socket-console", { graphics: "vnc" }));
      const o = await waitObject(kvm, "socket-console", tenantB, "console in status", (x) => !!x?.status?.console);
      const console = o?.status?.console as { type: string; socket?: string; port?: number };
      expect(console).toMatchObject({ type: "vnc", socket: expect.stringMatching(/\.sock$/) });
      // The lab's libvirtd sees its node's folder as /var/lib/libvirt (test/env/libvirtd-sandbox.sh).
      const onHost = console.socket!.replace(/^\/var\/lib\/libvirt\//, `${nodeA.dir}/lib/`);
      expect(statSync(onHost).isSocket()).toBe(true);
      expect(statSync(dirname(onHost)).mode & 0o007).toBe(0); // no access for others
      const live = (await virsh(nodeA, "dumpxml", `${tenantB}_socket-console`)).stdout;
      const graphics = /<graphics[\s\S]*?<\/graphics>/.exec(live)?.[0];
      expect(graphics).toMatch(/<listen type='socket'/);
      expect(graphics).not.toMatch(/port=|type='address'/);
    }, 120_000);

    it("with a password, it listens where the node says, and a client without the password is refused", async () => {
      await applyObjects(secret(tenantB, "console", { password: "s3cret!" }));
      await applyObjects(
        vm(tenantB, "tcp-console", { graphics: "vnc", graphicsPasswordSecretRef: { name: "console" } }),
      );
      const o = await waitObject(kvm, "tcp-console", tenantB, "console in status", (x) => !!x?.status?.console);
      const console = o?.status?.console as { address: string; port: number };
      expect(console).toMatchObject({ type: "vnc", address: "127.0.0.1", port: expect.any(Number) });
      const { securityTypes, result } = await vncWithoutPassword(console.port);
      expect(securityTypes).toContain(2); // VNC authentication
      expect(securityTypes).not.toContain(1); // "None": open to anyone
      expect(result).not.toBe(0); // a wrong answer to the challenge is refused
      // A password too long for VNC is said, not cut.
      await applyObjects(secret(tenantB, "long", { password: "longer-than-8" }));
      await applyObjects(
        vm(tenantB, "long-password", { graphics: "vnc", graphicsPasswordSecretRef: { name: "long" } }),
      );
      const long = await waitCondition(kvm, "long-password", tenantB, "Ready", "False", "InvalidSpec");
      expect(conditionOf(long, "Ready")?.message).toBe(
        "Secret long key password: a console password is 1 to 8 printable ASCII characters for vnc",
      );
    }, 120_000);
  });

  describe("secrets from Secrets: user-data and console passwords", () => {
    const planted = `planted-${randomBytes(12).toString("hex")}`;

    it("only the key named is read, its size is bounded, and the value appears in no log, Event or status", async () => {
      const statuses: string[] = [];
      await applyObjects(
        secret(tenantA, "ud", {
          "cloud-config": `#cloud-config\nbootcmd: [echo ${planted}]\n`,
          userdata: "not this one",
          console: planted,
        }),
        secret(tenantA, "huge", { userdata: `#cloud-config\n# ${planted}${"x".repeat(70_000)}\n` }),
      );
      await applyObjects(
        vm(tenantA, "with-secret", {
          cloudInit: { userDataSecretRef: { name: "ud", key: "cloud-config" } },
          graphics: "spice",
          graphicsPasswordSecretRef: { name: "ud", key: "console" },
        }),
        vm(tenantA, "wrong-key", { cloudInit: { userDataSecretRef: { name: "ud", key: "missing" } } }),
        vm(tenantA, "too-much", { cloudInit: { userDataSecretRef: { name: "huge" } } }),
      );
      statuses.push(
        JSON.stringify(await waitCondition(kvm, "with-secret", tenantA, "Ready", "True", "Running", 90_000)),
      );
      const seed = (await run("find", [nodeA.dir, "-name", `${tenantA}_with-secret*.iso`])).stdout.trim();
      expect(readFileSync(seed, "latin1")).toContain(planted); // the guest gets it
      expect(statSync(seed).mode & 0o077).toBe(0); // root only
      // The console has it as its password: in the definition libvirt keeps (root only), nowhere else.
      const defined = (await virsh(nodeA, "dumpxml", "--inactive", "--security-info", `${tenantA}_with-secret`)).stdout;
      expect(defined).toContain(`passwd='${planted}'`);
      expect((await virsh(nodeA, "dumpxml", `${tenantA}_with-secret`)).stdout).not.toContain(planted);
      const wrong = await waitCondition(kvm, "wrong-key", tenantA, "Ready", "False", "MissingInput");
      expect(conditionOf(wrong, "Ready")?.message).toMatch(/Secret ud has no key missing/);
      const big = await waitCondition(kvm, "too-much", tenantA, "Ready", "False", "InvalidSpec");
      expect(conditionOf(big, "Ready")?.message).toMatch(
        /^Secret huge key userdata holds 70\d+ bytes of user-data, more than 65536/,
      );
      statuses.push(JSON.stringify(wrong), JSON.stringify(big));

      await kubectl([
        "delete",
        "-n",
        tenantA,
        `${kvm}/with-secret`,
        `${kvm}/wrong-key`,
        `${kvm}/too-much`,
        "--timeout=60s",
      ]);
      const events = await kubectl(["get", "events", "-n", tenantA, "-o", "json"]);
      const logs = agents.map((a, i) => readFileSync(logFile(a.name), "utf8").slice(logStart[i])).join("");
      expect(logs).toContain("with-secret"); // the logs cover its life
      for (const [where, text] of [
        ["status", statuses.join("")],
        ["Events", events],
        ["agent logs", logs],
      ] as const)
        expect(text.includes(planted), `${where} hold the planted secret`).toBe(false);
    }, 180_000);
  });
});
