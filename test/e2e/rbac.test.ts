import { readFileSync } from "node:fs";
import * as k8s from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { labAgent } from "../env/agents.js";
import { agentKubeconfigPath, agentUser, auditLogPath } from "../env/kube.js";
import { nodes } from "../env/lab.js";
import { kinds } from "../../src/api/kinds.js";
import { ResourceClient } from "../../src/runtime/client.js";
import type { Operation } from "../../src/runtime/status.js";
import { applyObjects, kbr, kvm, kvol, patchObject, waitCondition, waitObject } from "../support/e2e.js";
import { installCrds, kubeConfig, kubectl } from "../support/kube.js";

/**
 * The agents run under the bundle's ServiceAccount (test/env/kube.ts), never as the lab's admin.
 * Here two agents take a VM through its life (a Bridge, Volumes, user-data from a Secret, a live
 * grow, deletion), and the API server's audit log of that account is compared with what
 * `kubectl auth can-i --list` grants it: nothing refused, nothing granted that is never used (but
 * the few calls of rare paths, each named below with its caller).
 */
const [nodeA, nodeB] = nodes as [(typeof nodes)[0], (typeof nodes)[0]];
const agents = [labAgent(nodeA, { metricsPort: 9500 }), labAgent(nodeB, { metricsPort: 9501 })] as const;
const ns = "e2e-rbac";

/** Granted, and called only on paths this scenario does not take. */
const rarePaths: Record<string, string> = {
  "get virtualmachines.kaktus.kowabunga.cloud":
    "an orphaned domain whose object moved nodes (virtualmachine.ts orphan)",
  "create leases.coordination.k8s.io": "the first agent of a cluster makes the Volume controller's Lease (leader.ts)",
  "patch events": "folds a repeated Event into its first (events.ts)",
};

interface AuditEvent {
  verb: string;
  user: { username: string };
  objectRef?: { resource?: string; subresource?: string; apiGroup?: string };
  responseStatus?: { code?: number };
  requestReceivedTimestamp: string;
}

/** As `kubectl auth can-i --list` names it: plural.group/subresource. */
const resourceOf = (r: NonNullable<AuditEvent["objectRef"]>) =>
  `${r.resource}${r.apiGroup ? `.${r.apiGroup}` : ""}${r.subresource ? `/${r.subresource}` : ""}`;

/** `kubectl auth can-i --list` as "verb resource" pairs (its table: Resources, URLs, Names, Verbs). */
async function granted(namespace: string): Promise<Set<string>> {
  const out = await kubectl(["auth", "can-i", "--list", `--as=${agentUser}`, "-n", namespace]);
  const pairs = new Set<string>();
  for (const line of out.split("\n").slice(1)) {
    const m = /^(\S+)\s+.*\[([^\]]*)\]\s*$/.exec(line.trim());
    if (!m) continue;
    const [, resource, verbs] = m;
    // What every authenticated user may do (discovery, self reviews) is not the bundle's grant.
    if (/selfsubject|^\*\.|^\[/.test(resource!) || resource!.startsWith("/")) continue;
    for (const verb of verbs!.split(" ").filter(Boolean)) pairs.add(`${verb} ${resource}`);
  }
  return pairs;
}

describe("RBAC: the agents under their ServiceAccount", () => {
  let since = "";

  beforeAll(async () => {
    await installCrds();
    since = new Date().toISOString();
    await Promise.all(agents.map((a) => a.start()));
    await kubectl(["delete", "namespace", ns, "--ignore-not-found", "--timeout=180s"]);
    await kubectl(["create", "namespace", ns]);
  }, 300_000);

  afterAll(async () => {
    await kubectl(["delete", "namespace", ns, "--ignore-not-found", "--timeout=180s"]).catch(() => undefined);
    await kubectl(["delete", kbr, "rbac-br", "--ignore-not-found", "--timeout=60s"]).catch(() => undefined);
    await Promise.all(agents.map((a) => a.stop()));
  }, 300_000);

  it("take a VM through its life with only the bundle's permissions", async () => {
    await kubectl(["create", "secret", "generic", "rbac-userdata", "-n", ns, "--from-literal=userdata=#cloud-config"]);
    await applyObjects(
      { apiVersion: "kaktus.kowabunga.cloud/v1alpha1", kind: "Bridge", metadata: { name: "rbac-br" }, spec: {} },
      {
        apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
        kind: "Volume",
        metadata: { name: "rbac-disk", namespace: ns },
        spec: { pool: "rbd", size: "64Mi" },
      },
      {
        apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
        kind: "VirtualMachine",
        metadata: { name: "rbac-vm", namespace: ns },
        spec: {
          node: nodeB.name,
          memory: "64Mi",
          graphics: "none",
          shutdownGracePeriodSeconds: 1,
          disks: [{ name: "os", volumeRef: "rbac-disk" }],
          interfaces: [{ name: "net0", bridgeRef: "rbac-br" }],
          cloudInit: { userDataSecretRef: { name: "rbac-userdata" } },
        },
      },
    );
    await waitCondition(kvm, "rbac-vm", ns, "Ready", "True", "Running", 120_000);
    await patchObject(kvol, "rbac-disk", ns, { spec: { size: "128Mi" } });
    await waitObject(kvol, "rbac-disk", ns, "grown", (o) => o?.status?.capacity === "128Mi");
    await kubectl(["delete", kvm, "rbac-vm", "-n", ns, "--timeout=120s"]);
    await kubectl(["delete", kvol, "rbac-disk", "-n", ns, "--timeout=120s"]);
    await kubectl(["delete", kbr, "rbac-br", "--timeout=60s"]);
  }, 300_000);

  it("the audit log: nothing refused, and every permission granted is used", async () => {
    const events = readFileSync(auditLogPath, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as AuditEvent)
      .filter((e) => e.user.username === agentUser && e.requestReceivedTimestamp >= since && e.objectRef?.resource);
    expect(events.length).toBeGreaterThan(0);
    const refused = events
      .filter((e) => e.responseStatus?.code === 403)
      .map((e) => `${e.verb} ${resourceOf(e.objectRef!)}`);
    expect(refused).toEqual([]);
    const used = new Set(events.map((e) => `${e.verb} ${resourceOf(e.objectRef!)}`));
    // The Lease's Role is in kaktus-system; everything else is cluster-wide.
    const grants = new Set([...(await granted(ns)), ...(await granted("kaktus-system"))]);
    const unused = [...grants].filter((g) => !used.has(g) && !(g in rarePaths)).sort();
    console.log(`[figure] the agents' account: ${used.size} verb/resource pairs used, ${grants.size} granted`);
    expect(unused).toEqual([]);
  }, 60_000);

  // After the audit test: these refusals are the point here.
  it("node restriction: each agent writes the status of its own node's VMs only, patches its own Node only, and no spec", async () => {
    await Promise.all(agents.map((a) => a.stop()));
    const vm = (name: string, node: string) => ({
      apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
      kind: "VirtualMachine",
      metadata: { name, namespace: ns },
      spec: { node, memory: "64Mi", graphics: "none" },
    });
    await applyObjects(vm("on-a", nodeA.name), vm("on-b", nodeB.name));
    // As node B's agent writes: a JSON patch of the status, a merge patch of a Node (kubectl patch would GET first).
    const asAgent = (node: string, token?: string) => {
      const kc = new k8s.KubeConfig();
      kc.loadFromFile(agentKubeconfigPath(node));
      if (token) {
        const cluster = kc.getCurrentCluster()!;
        kc.loadFromOptions({
          clusters: [cluster],
          users: [{ name: "unbound", token }],
          contexts: [{ name: "unbound", cluster: cluster.name, user: "unbound" }],
          currentContext: "unbound",
        });
      }
      return kc;
    };
    const asAgentB = (token?: string) => asAgent(nodeB.name, token);
    const writeStatus = (name: string, token?: string) =>
      new ResourceClient(asAgentB(token), kinds.virtualMachine).patchStatus(`${ns}/${name}`, [
        { op: "add", path: "/status/phase", value: "Pending" },
      ]);
    const annotate = (node: string, value: string | null) =>
      asAgentB()
        .makeApiClient(k8s.CoreV1Api)
        .patchNode(
          { name: node, body: { metadata: { annotations: { "kaktus.kowabunga.cloud/restriction-test": value } } } },
          k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch),
        );

    await expect(writeStatus("on-a")).rejects.toThrow(
      /the agent of node kaktus-b may not write virtualmachines of node kaktus-a/,
    );
    await writeStatus("on-b");
    await expect(annotate(nodeA.name, "x")).rejects.toThrow(
      /the agent of node kaktus-b may not write nodes of node kaktus-a/,
    );
    await annotate(nodeB.name, "x");
    await annotate(nodeB.name, null);
    // Metadata (finalizers) of any node's VM, as the leader fencing a dead node removes them; never a spec.
    const vms = new ResourceClient(asAgentB(), kinds.virtualMachine);
    await expect(vms.patch(`${ns}/on-b`, [{ op: "replace", path: "/spec/memory", value: "128Mi" }])).rejects.toThrow(
      /the agents never change the spec of virtualmachines/,
    );
    // Finalizers of another node's VM: only removed, and only once it is being deleted (the fencing leader).
    const testFinalizer = { op: "add", path: "/metadata/finalizers", value: ["kaktus.kowabunga.cloud/test"] } as const;
    await expect(vms.patch(`${ns}/on-a`, [testFinalizer])).rejects.toThrow(
      /the agent of node kaktus-b may not add finalizers to a VirtualMachine of node kaktus-a, nor remove them before it is deleted/,
    );
    await vms.patch(`${ns}/on-b`, [testFinalizer]);
    await vms.patch(`${ns}/on-b`, [{ op: "remove", path: "/metadata/finalizers" }]);
    await new ResourceClient(kubeConfig, kinds.virtualMachine).patch(`${ns}/on-a`, [testFinalizer]);
    await expect(vms.patch(`${ns}/on-a`, [{ op: "remove", path: "/metadata/finalizers" }])).rejects.toThrow(
      /nor remove them before it is deleted/,
    );
    await kubectl(["delete", "-n", ns, `${kvm}/on-a`, "--wait=false"]);
    await vms.patch(`${ns}/on-a`, [{ op: "remove", path: "/metadata/finalizers" }]);

    // A Bridge's status: each agent writes its own node's entry only.
    await applyObjects({
      apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
      kind: "Bridge",
      metadata: { name: "kbr-restrict" },
      spec: {},
    });
    const bridgeStatus = (node: string, ops: Operation[]) =>
      new ResourceClient(asAgent(node), kinds.bridge).patchStatus("kbr-restrict", ops);
    try {
      await bridgeStatus(nodeA.name, [
        { op: "add", path: "/status/nodes", value: [{ node: nodeA.name, ready: true }] },
      ]);
      await expect(
        bridgeStatus(nodeB.name, [{ op: "replace", path: "/status/nodes/0/ready", value: false }]),
      ).rejects.toThrow(/the agent of node kaktus-b may write only its own node's entry of a Bridge's status/);
      await expect(bridgeStatus(nodeB.name, [{ op: "remove", path: "/status/nodes/0" }])).rejects.toThrow(
        /only its own node's entry/,
      );
      await bridgeStatus(nodeB.name, [
        { op: "add", path: "/status/nodes/-", value: { node: nodeB.name, ready: true } },
      ]);
      await bridgeStatus(nodeB.name, [{ op: "replace", path: "/status/nodes/1/ready", value: false }]);
    } finally {
      await kubectl(["delete", kbr, "kbr-restrict", "--wait=false"]);
    }
    // A token of the account that is not a pod's names no node: refused, not trusted with every node.
    const unbound = (
      await kubectl(["create", "token", "kaktus-operator", "-n", "kaktus-system", "--duration=10m"])
    ).trim();
    await expect(writeStatus("on-b", unbound)).rejects.toThrow(/names no node/);
  });
});
