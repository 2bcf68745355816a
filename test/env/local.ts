import { setTimeout as sleep } from "node:timers/promises";
import { installCrds, kubectl } from "../support/kube.js";
import { labAgent } from "./agents.js";
import { down, up } from "./lab.js";
import { nodes, repoRoot } from "./paths.js";
import { run } from "./proc.js";

/**
 * The local mode behind `npm start`: the lab, the CRDs, the examples, one agent per node sandbox
 * (separate processes, as on hosts), and a summary of the objects printed whenever it changes,
 * until Ctrl-C; then the agents stop gracefully and the lab components this run started stop too.
 * Objects stay in the lab's etcd, so the next start picks up where this one left.
 */
export async function runLocal(printEndpoints: () => void): Promise<void> {
  const started = await up();
  // The agents run compiled, as the DaemonSet runs them.
  await run("npm", ["run", "build"], { cwd: repoRoot });
  const agents = nodes.map((node, i) => labAgent(node, { metricsPort: 9464 + i, accelerator: "auto", compiled: true }));
  let stopRequested = false;
  const stop = new Promise<void>((resolve) =>
    // `on`, not `once`: a second signal during the shutdown below must not kill us half-way.
    process.on("SIGINT", () => resolve()).on("SIGTERM", () => resolve()),
  ).then(() => (stopRequested = true));
  try {
    printEndpoints();
    await installCrds();
    await kubectl(["apply", "--server-side", "-f", "examples/"]);
    await Promise.all(agents.map((a) => a.start()));
    console.log(
      agents
        .map((a, i) => `agent ${a.node.name}: http://127.0.0.1:${9464 + i}/metrics, log .lab/logs/${a.name}.log`)
        .join("\n"),
    );
    console.log("Ctrl-C stops what this command started.\n");
    let last = "";
    // Bounded: the local run ends on a signal, at the latest after a week of 5 s polls.
    for (let i = 0; i < 7 * 24 * 720 && !stopRequested; i++) {
      const summary = await kubectl(["get", "kaktus", "-A"]).catch((err: Error) => `(cannot list: ${err.message})`);
      // Printed when something other than the AGE column changed.
      const shape = summary.replace(/\s+\S+$/gm, "");
      if (shape !== last) {
        console.log(`--- ${new Date().toISOString()}\n${summary.trimEnd()}\n`);
        last = shape;
      }
      await Promise.race([stop, sleep(5_000)]);
    }
  } finally {
    console.log("stopping the agents and the lab…");
    await Promise.all(agents.map((a) => a.stop()));
    await down(started);
  }
}
