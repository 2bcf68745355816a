import * as k8s from "@kubernetes/client-node";
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { LinuxBridges } from "../src/host/bridge/bridges.js";
import { LibvirtClient } from "../src/host/libvirt/client.js";
import { RbdClient } from "../src/host/rbd/client.js";
import { reuseConnections } from "../src/runtime/kubeconfig.js";
import { cephConfPath, kubeconfigPath, labDir, nodes } from "../test/env/lab.js";
import { kubectl } from "../test/support/kube.js";

/**
 * The limit for the scale scenario on this lab, measured with no agent running: how long the
 * apiserver takes for the apply plus the writes any operator must make (a finalizer and a status
 * per object, with client-node at the operators' concurrency), and how fast the host adapters make
 * what the scenario needs (RBD images on the Volume leader, domains and bridges on each node).
 * The irreducible time is the larger of the two: the API work and the host work overlap.
 */
export interface ScaleObject {
  kind: string;
  metadata: { name: string; namespace?: string };
}

export interface LimitFigures {
  applySeconds: number;
  apiWrites: number;
  apiWritesPerSecond: number;
  apiSeconds: number;
  rbdCreatesPerSecond: number;
  definesPerSecond: number;
  bridgeCreatesPerSecond: number;
  hostSeconds: number;
  irreducibleSeconds: number;
}

const group = "kaktus.kowabunga.cloud";
const version = "v1alpha1";
const plurals: Record<string, string> = { Volume: "volumes", VirtualMachine: "virtualmachines", Bridge: "bridges" };
const jsonPatch = k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.JsonPatch);
const round = (x: number) => Math.round(x * 1000) / 1000;

/** Runs `op` over `items` with `inFlight` lanes; seconds taken. */
async function timed<T>(items: T[], inFlight: number, op: (item: T) => Promise<unknown>): Promise<number> {
  const started = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < items.length) await op(items[next++]!);
    }),
  );
  return (performance.now() - started) / 1000;
}

/** The two writes every object needs from an operator, then the finalizers removed again (not timed). */
async function apiFigures(items: ScaleObject[], inFlight: number): Promise<{ writes: number; seconds: number }> {
  // Configured as the agent's (src/main.ts), connections reused.
  const kc = reuseConnections(new k8s.KubeConfig());
  kc.loadFromFile(kubeconfigPath);
  const api = kc.makeApiClient(k8s.CustomObjectsApi);
  const patch = (o: ScaleObject, body: object[], status = false) => {
    const req = { group, version, plural: plurals[o.kind]!, name: o.metadata.name, body };
    if (o.metadata.namespace) {
      const r = { ...req, namespace: o.metadata.namespace };
      return status
        ? api.patchNamespacedCustomObjectStatus(r, jsonPatch)
        : api.patchNamespacedCustomObject(r, jsonPatch);
    }
    return status ? api.patchClusterCustomObjectStatus(req, jsonPatch) : api.patchClusterCustomObject(req, jsonPatch);
  };
  const finalizer = [{ op: "add", path: "/metadata/finalizers", value: ["bench.kaktus.kowabunga.cloud/limit"] }];
  const status = [
    {
      op: "add",
      path: "/status",
      value: {
        observedGeneration: 1,
        phase: "Ready",
        conditions: [
          { type: "Ready", status: "True", reason: "Ready", message: "", lastTransitionTime: new Date().toISOString() },
        ],
      },
    },
  ];
  const seconds = await timed(items, inFlight, async (o) => {
    await patch(o, finalizer);
    await patch(o, status, true);
  });
  await timed(items, inFlight, (o) => patch(o, [{ op: "remove", path: "/metadata/finalizers" }]));
  return { writes: 2 * items.length, seconds };
}

/** Creates per second of `count` host objects through the operator's adapters, removed afterwards. */
async function hostRate(count: number, inFlight: number, create: (i: number) => Promise<unknown>) {
  const seconds = await timed(
    Array.from({ length: count }, (_, i) => i),
    inFlight,
    create,
  );
  return count / seconds;
}

const domainXml = (name: string) =>
  `<domain type='qemu'><name>${name}</name><memory unit='MiB'>128</memory><os><type arch='x86_64'>hvm</type></os>` +
  `<devices><interface type='bridge'><source bridge='kbs0'/><model type='virtio'/></interface></devices></domain>`;

/** `workers`: the adapters' threads, as the agent has them; as many calls in flight as a controller has workers. */
async function hostFigures(sample: number, workers: number) {
  const prefix = `limit-${randomBytes(3).toString("hex")}`;
  const rbd = new RbdClient({ confPath: cephConfPath, user: "admin" }, { workers });
  const libvirt = new LibvirtClient(nodes[0]!.libvirtUri, { workers });
  const inFlight = 4;
  const network = new LinuxBridges(nodes[0]!.netns);
  try {
    const rbdCreatesPerSecond = await hostRate(sample, inFlight, (i) =>
      rbd.create("rbd", `${prefix}-${i}`, 16n << 20n),
    );
    await timed([...Array(sample).keys()], inFlight, (i) => rbd.remove("rbd", `${prefix}-${i}`));
    const definesPerSecond = await hostRate(sample, inFlight, (i) => libvirt.define(domainXml(`${prefix}-${i}`)));
    await timed([...Array(sample).keys()], inFlight, (i) => libvirt.undefine(`${prefix}-${i}`));
    const bridgeCount = 10;
    const link = (i: number) => `klim${i}`;
    const bridgeCreatesPerSecond = await hostRate(bridgeCount, inFlight, (i) =>
      network.createBridge(link(i), {}, prefix),
    );
    await timed([...Array(bridgeCount).keys()], inFlight, (i) => network.deleteLink(link(i)));
    return { rbdCreatesPerSecond, definesPerSecond, bridgeCreatesPerSecond };
  } finally {
    network.close();
    await Promise.all([libvirt.close(), rbd.close()]);
  }
}

/**
 * `items` applied in one server-side apply to an empty namespace (created and deleted by the caller's
 * `clean`), then written to as an operator must; the host rates from a sample of the scenario's calls.
 */
export async function limitBenchmark(
  items: ScaleObject[],
  opts: { inFlight: number; hostWorkers: number; n: number; bridges: number; clean: () => Promise<void> },
): Promise<LimitFigures> {
  const manifest = join(labDir, "bench-limit.json");
  writeFileSync(manifest, JSON.stringify({ apiVersion: "v1", kind: "List", items }));
  const started = performance.now();
  await kubectl(["apply", "--server-side", "-f", manifest]);
  const applySeconds = (performance.now() - started) / 1000;
  const api = await apiFigures(items, opts.inFlight);
  await opts.clean();
  const host = await hostFigures(Math.min(opts.n, 200), opts.hostWorkers);
  // The Volume leader makes every image; each node defines its half of the domains and makes its bridges.
  const perNode = (count: number) => Math.ceil(count / nodes.length);
  const hostSeconds = Math.max(
    opts.n / host.rbdCreatesPerSecond,
    perNode(opts.n) / host.definesPerSecond + opts.bridges / host.bridgeCreatesPerSecond,
  );
  const apiSeconds = applySeconds + api.seconds;
  return {
    applySeconds: round(applySeconds),
    apiWrites: api.writes,
    apiWritesPerSecond: round(api.writes / api.seconds),
    apiSeconds: round(apiSeconds),
    rbdCreatesPerSecond: round(host.rbdCreatesPerSecond),
    definesPerSecond: round(host.definesPerSecond),
    bridgeCreatesPerSecond: round(host.bridgeCreatesPerSecond),
    hostSeconds: round(hostSeconds),
    irreducibleSeconds: round(Math.max(apiSeconds, hostSeconds)),
  };
}
