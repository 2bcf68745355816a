import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { labAgent, type LabAgent } from "../test/env/agents.js";
import { nodes } from "../test/env/lab.js";
import { kbr, kvm, kvol, waitReady } from "../test/support/e2e.js";
import { deleteNamespace, installCrds, kubectl } from "../test/support/kube.js";

/**
 * The examples from nothing to converged, with the two lab agents (separate processes) already
 * running: how many reconciles each controller ran and how many API writes each resource took, summed
 * over both agents. The reconcile count is the work the event filters and indexes are meant to cut.
 */
export async function examplesBenchmark(settleSeconds = 10): Promise<Record<string, unknown>> {
  const agents = nodes.map((n, i) => labAgent(n, { metricsPort: 9471 + i, resyncSeconds: 300 }));
  await installCrds();
  await clean();
  await Promise.all(agents.map((a) => a.start()));
  try {
    const before = await counters(agents);
    const started = performance.now();
    await kubectl(["apply", "--server-side", "-f", "examples/"]);
    await waitReady(kbr, undefined);
    await waitReady(kvol, "acme");
    await waitReady(kvm, "acme");
    const convergeSeconds = (performance.now() - started) / 1000;
    // Late echoes (status writes seen back, Events) count too: the figure is "until quiet".
    await sleep(settleSeconds * 1000);
    const after = await counters(agents);
    const delta = (a: Record<string, number>, b: Record<string, number>) =>
      Object.fromEntries(Object.keys(a).map((k) => [k, a[k]! - (b[k] ?? 0)]));
    const reconciles = delta(after.reconciles, before.reconciles);
    const writes = delta(after.writes, before.writes);
    return {
      convergeSeconds: Math.round(convergeSeconds * 1000) / 1000,
      settleSeconds,
      reconciles: { ...reconciles, total: sum(reconciles) },
      apiWrites: { ...writes, total: sum(writes) },
    };
  } finally {
    await clean();
    await Promise.all(agents.map((a) => a.stop()));
  }
}

async function clean(): Promise<void> {
  await deleteNamespace("acme");
  await kubectl(["delete", kbr, "br0", "br100", "--ignore-not-found", "--timeout=120s"]);
}

const sum = (o: Record<string, number>) => Object.values(o).reduce((a, b) => a + b, 0);

/** Per-label sums of a counter over both agents. */
async function counters(agents: LabAgent[]) {
  const byLabel = async (metric: string, label: string) => {
    const out: Record<string, number> = {};
    for (const agent of agents) {
      const { text } = await agent.get("/metrics");
      for (const m of text.matchAll(new RegExp(`^${metric}\\{([^}]*)\\} (\\S+)$`, "gm"))) {
        const value = new RegExp(`${label}="([^"]*)"`).exec(m[1]!)?.[1];
        if (value !== undefined) out[value] = (out[value] ?? 0) + Number(m[2]);
      }
    }
    return out;
  };
  return {
    reconciles: await byLabel("kaktus_reconcile_total", "controller"),
    writes: await byLabel("kaktus_api_writes_total", "resource"),
  };
}
