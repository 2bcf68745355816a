import { performance } from "node:perf_hooks";
import { components, up } from "../test/env/lab.js";
import { agentBenchmark } from "./agent.js";
import { examplesBenchmark } from "./examples.js";
import { hostBenchmark } from "./host.js";

/**
 * Benchmarks print one JSON document on stdout; progress goes to stderr. Usage:
 *   npm run bench -- [SUITE...]     (default: every suite)
 * The lab components a suite needs are started if they are not running (and left running).
 */
type Suite = () => Promise<Record<string, unknown>>;

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

const names = process.argv.slice(2).filter((a) => a !== "--");
const unknown = names.filter((n) => !(n in suites));
if (unknown.length) {
  console.error(`unknown suites ${unknown.join(", ")}; known: ${Object.keys(suites).join(", ")}`);
  process.exit(2);
}
const results: Record<string, unknown> = {};
for (const name of names.length ? names : Object.keys(suites)) results[name] = await suites[name]!();
console.log(JSON.stringify({ date: new Date().toISOString(), results }, null, 2));
