import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { labAgent } from "../test/env/agents.js";
import { nodes } from "../test/env/lab.js";
import { applyObjects, kvm, kvol, waitReady } from "../test/support/e2e.js";
import { installCrds, kubectl } from "../test/support/kube.js";

/**
 * One agent (a separate process, as on a host) converging a batch of objects from nothing: N
 * Volumes (empty RBD images) and M VirtualMachines defined with runStrategy Halted (no guest runs,
 * so the figure is the operator's, not TCG's), all on one Bridge. Reports time to all Ready, API
 * writes and host mutations per object, reconcile latency, the agent's memory, and time to delete.
 */
export async function agentBenchmark(volumes = 30, vms = 15): Promise<Record<string, unknown>> {
  const ns = "bench-agent";
  const agent = labAgent(nodes[0]!, { metricsPort: 9470, resyncSeconds: 300 });
  await installCrds();
  await agent.start();
  try {
    await kubectl(["delete", "namespace", ns, "--ignore-not-found", "--timeout=300s"]);
    await kubectl(["create", "namespace", ns]);
    const before = await counters(agent);
    const started = performance.now();
    const items = [
      {
        apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
        kind: "Bridge",
        metadata: { name: "bench-br" },
        spec: { bridgeName: "kbr-bench" },
      },
      ...Array.from({ length: volumes }, (_, i) => ({
        apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
        kind: "Volume",
        metadata: { name: `vol-${i}`, namespace: ns },
        spec: { pool: "rbd", size: "16Mi" },
      })),
      ...Array.from({ length: vms }, (_, i) => ({
        apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
        kind: "VirtualMachine",
        metadata: { name: `vm-${i}`, namespace: ns },
        spec: {
          node: nodes[0]!.name,
          runStrategy: "Halted",
          memory: "128Mi",
          graphics: "none",
          disks: [{ name: "os", volumeRef: `vol-${i}` }],
          interfaces: [{ name: "net0", bridgeRef: "bench-br" }],
        },
      })),
    ];
    await applyObjects(...items);
    await waitReady(kvol, ns);
    await waitReady(kvm, ns);
    const convergeSeconds = (performance.now() - started) / 1000;
    await sleep(2_000);
    const after = await counters(agent);
    const objects = items.length;
    const rssMiB = (await agent.metric("process_resident_memory_bytes")) / 2 ** 20;
    const reconcileSeconds = (await agent.metric("kaktus_reconcile_duration_seconds_sum")) - before.durationSum;
    const reconciles = after.reconciles - before.reconciles;

    const deleting = performance.now();
    await kubectl(["delete", "namespace", ns, "--timeout=600s"]);
    await kubectl(["delete", "bridges.kaktus.kowabunga.cloud", "bench-br", "--timeout=120s"]);
    const deleteSeconds = (performance.now() - deleting) / 1000;
    return {
      objects: { volumes, virtualMachines: vms, bridges: 1 },
      convergeSeconds: round(convergeSeconds),
      objectsPerSecond: round(objects / convergeSeconds),
      apiWritesPerObject: round((after.writes - before.writes) / objects),
      hostMutationsPerObject: round((after.mutations - before.mutations) / objects),
      reconciles,
      meanReconcileMs: round((reconcileSeconds / Math.max(1, reconciles)) * 1000),
      agentRssMiB: round(rssMiB),
      deleteSeconds: round(deleteSeconds),
    };
  } finally {
    await agent.stop();
  }
}

async function counters(agent: ReturnType<typeof labAgent>) {
  return {
    writes: await agent.metric("kaktus_api_writes_total"),
    mutations: await agent.metric("kaktus_host_mutations_total"),
    reconciles: await agent.metric("kaktus_reconcile_total"),
    durationSum: await agent.metric("kaktus_reconcile_duration_seconds_sum"),
  };
}

const round = (x: number) => Math.round(x * 1000) / 1000;
