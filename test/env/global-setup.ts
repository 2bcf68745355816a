import { insideLab } from "./netns.js";
import { down, up } from "./lab.js";
import { labNetns } from "./paths.js";
import { kubectl } from "../support/kube.js";
import { waitFor } from "./proc.js";

/**
 * Starts the lab components a run needs, once, and stops the ones it started. A component that does
 * not come up fails the whole run with its log tail: no test is ever skipped for a missing component.
 * KAKTUS_LAB_KEEP=1 leaves what it started running for the next run.
 */
export default async function setup(): Promise<() => Promise<void>> {
  if (!insideLab()) {
    throw new Error(`tests run inside the lab network namespace ${labNetns}: start them with \`npm test\``);
  }
  const started = await up();
  return async () => {
    try {
      await noNamespaceLeftTerminating();
    } finally {
      if (!process.env.KAKTUS_LAB_KEEP) await down(started);
    }
  };
}

/**
 * Tests delete their namespaces and wait for them to go. One still terminating now would keep its
 * objects (and their finalizers) for ever once the lab stops: say which, and fail the run.
 */
async function noNamespaceLeftTerminating(): Promise<void> {
  const terminating = async () => {
    const list = JSON.parse(await kubectl(["get", "namespaces", "-o", "json"])) as {
      items: { metadata: { name: string }; status?: { phase?: string } }[];
    };
    return list.items.filter((n) => n.status?.phase === "Terminating").map((n) => n.metadata.name);
  };
  let left: string[] = [];
  await waitFor("test namespaces gone", async () => ((left = await terminating()).length ? undefined : true), {
    timeoutMs: 60_000,
    intervalMs: 1_000,
  }).catch(async () => {
    const stuck = await kubectl(["get", "kaktus", "-A", "--ignore-not-found"]).catch(() => "");
    throw new Error(`namespaces still terminating at the end of the run: ${left.join(", ")}\n${stuck}`);
  });
}
