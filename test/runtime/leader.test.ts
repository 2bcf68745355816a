import { randomBytes } from "node:crypto";
import { pino } from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { LeaderElector } from "../../src/runtime/leader.js";
import { waitFor } from "../env/proc.js";
import { kubeConfig } from "../support/kube.js";

const lease = `kaktus-test-${randomBytes(3).toString("hex")}`;
const log = pino({ level: "silent" });

function candidate(identity: string) {
  const events: string[] = [];
  const elector = new LeaderElector(
    kubeConfig,
    { namespace: "default", name: lease, identity, leaseDurationSeconds: 3, retryPeriodMs: 300 },
    { onStartedLeading: () => events.push("start"), onStoppedLeading: () => events.push("stop") },
    log,
  );
  return { elector, events };
}

describe("leader election on a Lease, against the real apiserver", () => {
  const a = candidate("agent-a");
  const b = candidate("agent-b");
  const c = candidate("agent-c");

  afterAll(async () => {
    for (const x of [a, b, c]) await x.elector.stop();
  });

  it("elects exactly one leader", async () => {
    a.elector.start();
    await waitFor("a leads", async () => a.elector.isLeader || undefined, { timeoutMs: 10_000 });
    b.elector.start();
    await new Promise((r) => setTimeout(r, 1_500));
    expect(a.elector.isLeader).toBe(true);
    expect(b.elector.isLeader).toBe(false);
  });

  it("hands over at once when the leader stops gracefully (it releases the lease)", async () => {
    const started = Date.now();
    await a.elector.stop();
    expect(a.events).toEqual(["start", "stop"]);
    await waitFor("b leads", async () => b.elector.isLeader || undefined, { timeoutMs: 10_000 });
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it("takes over within the lease duration when the leader dies without releasing", async () => {
    c.elector.start();
    // A killed leader: it stops renewing and never releases (no stop()).
    (b.elector as unknown as { stopped: boolean }).stopped = true;
    const started = Date.now();
    await waitFor("c leads", async () => c.elector.isLeader || undefined, { timeoutMs: 15_000, intervalMs: 100 });
    expect(Date.now() - started).toBeLessThan(3_000 + 2_000);
  });
});
