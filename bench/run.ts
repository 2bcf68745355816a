import { performance } from "node:perf_hooks";
import { components, up } from "../test/env/lab.js";
import { agentBenchmark } from "./agent.js";
import { examplesBenchmark } from "./examples.js";
import { hostBenchmark } from "./host.js";
import { peerBinary } from "./peer.js";
import { growthTable, scaleBenchmark, scaleLimit, type ScaleOptions } from "./scale.js";

/**
 * Benchmarks print one JSON document on stdout; progress goes to stderr. Usage:
 *   npm run bench -- [SUITE...] [--OPTION=VALUE...]     (default: every suite)
 * Options of the scale suite: --n=100,300,1000 (default 1000), --operators=kaktus,peer (default
 * both), --steady=SECONDS (default 300), --drift-domains=100, --drift-bridges=5, --profile=DIR (the
 * operator's V8 CPU profiles, one per agent), --host-workers=N (the operator's, default 1).
 * The lab components a suite needs are started if they are not running (and left running).
 */
type Suite = () => Promise<unknown>;

const args = process.argv.slice(2).filter((a) => a !== "--");
const option = (name: string, fallback: string) =>
  args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback;

const suites: Record<string, Suite> = {
  /** libvirt and RBD adapter throughput, with event-loop delay during each run. */
  async host() {
    await up(["ceph", "libvirtd-kaktus-a"]);
    return hostBenchmark();
  },

  /** One agent converging, then deleting, a batch of Volumes and VirtualMachines. */
  async agent() {
    await up();
    return agentBenchmark();
  },

  /** The examples from nothing to converged with two agents: reconciles and API writes. */
  async examples() {
    await up();
    return examplesBenchmark();
  },

  /**
   * N Volumes + N VMs + 20 Bridges over two nodes, by the operator and by the Go peer, one after the
   * other on the same lab; the growth table (time per object must stay flat) goes to stderr.
   */
  async scale() {
    await up();
    const operators = option("operators", "kaktus,peer").split(",") as ScaleOptions["operator"][];
    // Built by `npm run lab -- build` (outside the lab: the Go proxy is not reachable from it).
    if (operators.includes("peer")) peerBinary();
    const rows: Record<string, unknown>[] = [];
    for (const n of option("n", "1000").split(",").map(Number)) {
      const limit = await scaleLimit(n, Number(option("host-workers", "1")));
      rows.push({ operator: "limit", n, convergeSeconds: limit.irreducibleSeconds, limit });
      for (const operator of operators) {
        const row = await scaleBenchmark({
          n,
          operator,
          steadySeconds: Number(option("steady", "300")),
          driftDomains: Number(option("drift-domains", "100")),
          driftBridges: Number(option("drift-bridges", "5")),
          ...(option("profile", "") ? { profileDir: option("profile", "") } : {}),
          hostWorkers: Number(option("host-workers", "1")),
          ...(option("log-level", "") ? { logLevel: option("log-level", "") } : {}),
        });
        rows.push({ ...row, ratioToLimit: round(Number(row.convergeSeconds) / limit.irreducibleSeconds) });
        console.error(growthTable(rows));
      }
      const [kaktus, peer] = ["kaktus", "peer"].map((o) => rows.find((r) => r.n === n && r.operator === o));
      if (kaktus && peer) kaktus.ratioToPeer = round(Number(kaktus.convergeSeconds) / Number(peer.convergeSeconds));
    }
    return rows;
  },

  /** How long each lab component takes to start warm (state kept) and to stop. */
  async lab() {
    const figures: Record<string, { startSeconds: number; stopSeconds: number }> = {};
    for (const [name, component] of Object.entries(components)) {
      let t = performance.now();
      await component.stop();
      const stopSeconds = (performance.now() - t) / 1000;
      t = performance.now();
      await component.start();
      figures[name] = { startSeconds: round((performance.now() - t) / 1000), stopSeconds: round(stopSeconds) };
      console.error(`[bench] ${name}: ${JSON.stringify(figures[name])}`);
    }
    return figures;
  },
};

const round = (x: number) => Math.round(x * 1000) / 1000;

const names = args.filter((a) => !a.startsWith("--"));
const unknown = names.filter((n) => !(n in suites));
if (unknown.length) {
  console.error(`unknown suites ${unknown.join(", ")}; known: ${Object.keys(suites).join(", ")}`);
  process.exit(2);
}
const results: Record<string, unknown> = {};
for (const name of names.length ? names : Object.keys(suites)) results[name] = await suites[name]!();
console.log(JSON.stringify({ date: new Date().toISOString(), results }, null, 2));
