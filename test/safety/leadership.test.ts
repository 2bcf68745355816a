import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { labAgent, type LabAgent } from "../env/agents.js";
import { nodes, rbdImages } from "../env/lab.js";
import { waitFor } from "../env/proc.js";
import {
  applyObjects,
  dropNamespace,
  freshNamespace,
  getObject,
  kvol,
  volumeLeader,
  volumeLeaseHolder,
  waitCondition,
} from "../support/e2e.js";
import { kubectl } from "../support/kube.js";

/**
 * Hazard 5: two Volume leaders. The leader is frozen (SIGSTOP) past its lease; the other agent
 * takes over and deletes a Volume meanwhile. When the old leader is resumed, its timers are all
 * overdue and its cache is stale: it must make no Ceph mutation, and the new leader's work (the
 * image removed) must not be undone.
 */
const lease = 5;
const agents = nodes.map((n, i) =>
  labAgent(n, { metricsPort: 9490 + i, leaseDurationSeconds: lease, resyncSeconds: 20 }),
);
const ns = "safety-leader";

const rbdMutations = (a: LabAgent) => a.metric("kaktus_host_mutations_total", { host: "rbd" });

describe("a frozen leader, resumed, changes nothing", () => {
  beforeAll(async () => {
    await freshNamespace(ns, agents);
  }, 180_000);

  afterAll(async () => {
    for (const a of agents) {
      const pid = a.pid();
      if (pid) process.kill(pid, "SIGCONT");
    }
    await dropNamespace(ns, agents);
  }, 300_000);

  it("SIGSTOP past the lease, a deletion by the new leader, SIGCONT: no Ceph mutation, nothing undone", async () => {
    await applyObjects({
      apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
      kind: "Volume",
      metadata: { name: "v", namespace: ns },
      spec: { pool: "rbd", size: "16Mi" },
    });
    await waitCondition(kvol, "v", ns, "Ready", "True");
    const { leader: frozen, follower } = await volumeLeader(agents);
    const mutationsBefore = await rbdMutations(frozen);
    process.kill(frozen.pid()!, "SIGSTOP");
    const stoppedAt = Date.now();
    await waitFor(
      "the other agent holds the lease",
      async () => (await volumeLeaseHolder()) === follower.node.name || undefined,
      {
        timeoutMs: 30_000,
      },
    );
    await kubectl(["delete", "-n", ns, `${kvol}/v`, "--timeout=60s"]);
    expect(await rbdImages("rbd")).not.toContain(`${ns}.v`);
    // Frozen longer than its resync: every timer it had is overdue when it wakes, its cache stale.
    await sleep(Math.max(0, 25_000 - (Date.now() - stoppedAt)));
    process.kill(frozen.pid()!, "SIGCONT");
    await sleep(10_000);
    expect(await rbdMutations(frozen)).toBe(mutationsBefore);
    expect(await rbdImages("rbd")).not.toContain(`${ns}.v`);
    expect(await getObject(kvol, "v", ns)).toBeUndefined();
    expect(await volumeLeaseHolder()).toBe(follower.node.name);
  }, 180_000);
});
