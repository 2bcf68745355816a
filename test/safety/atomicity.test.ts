import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { labAgent } from "../env/agents.js";
import { RbdClient } from "../../src/host/rbd/client.js";
import { cephConfPath, nodes, rbd, rbdImages } from "../env/lab.js";
import { waitFor } from "../env/proc.js";
import {
  applyObjects,
  conditionOf,
  dropNamespace,
  freshNamespace,
  getObject,
  kvol,
  volumeLeader,
  waitCondition,
} from "../support/e2e.js";
import { kubectl } from "../support/kube.js";

/**
 * Hazard 4: a half-made image reported Ready. The Volume leader is SIGKILLed in the middle of a
 * copy of a Volume full of data, six times at random points. Whenever a copy says Ready, its data is
 * the source's, whole; none is lost, and no half-made image is left behind.
 */
const agents = nodes.map((n, i) => labAgent(n, { metricsPort: 9488 + i, leaseDurationSeconds: 3 }));
const store = new RbdClient({ confPath: cephConfPath, user: "admin" });
const ns = "safety-atomic";
const sourceMiB = 256;
/** Each kill costs a lease expiry, a takeover and the copy again (~2 s since the fencing of the dead builder). */
const kills = 6;

/** A digest of an image's whole content. */
async function digest(image: string): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), "kaktus-export-"));
  try {
    await rbd("export", `rbd/${image}`, join(dir, "image"));
    return createHash("sha256")
      .update(readFileSync(join(dir, "image")))
      .digest("hex");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("an interrupted copy is never Ready and never left behind", () => {
  beforeAll(async () => {
    await freshNamespace(ns, agents);
    await applyObjects({
      apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
      kind: "Volume",
      metadata: { name: "source", namespace: ns },
      spec: { pool: "rbd", size: `${sourceMiB}Mi` },
    });
    await waitCondition(kvol, "source", ns, "Ready", "True");
    // Real data: a copy takes long enough to be cut in the middle.
    await rbd(
      "bench",
      "--io-type",
      "write",
      "--io-size",
      "4M",
      "--io-total",
      `${sourceMiB}M`,
      "--io-pattern",
      "rand",
      `rbd/${ns}.source`,
    );
  }, 240_000);

  afterAll(async () => {
    await store.close();
    await Promise.all(agents.map((a) => a.start().catch(() => undefined)));
    await dropNamespace(ns, agents);
  }, 300_000);

  it(`SIGKILL of the leader at ${kills} random points of a copy`, async () => {
    const source = await digest(`${ns}.source`);
    const started = Date.now();
    const copyName = (i: number) => `copy-${i}`;
    const timings: number[] = [];
    const phases: Record<string, number> = { ready: 0, digest: 0, restartAndDelete: 0 };
    const lap = (phase: string, since: number) => (phases[phase]! += Date.now() - since);
    for (let i = 0; i < kills; i++) {
      const copy = copyName(i);
      await applyObjects({
        apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
        kind: "Volume",
        metadata: { name: copy, namespace: ns },
        spec: { pool: "rbd", size: `${sourceMiB}Mi`, source: { volume: { name: "source" } } },
      });
      const { leader: victim } = await volumeLeader(agents);
      // Memstore copies fast (256 MiB in ~0.3 s): the kill lands at a random point after the copy began.
      await waitFor(
        `${copy} being made`,
        async () => ((await store.list("rbd")).some((i) => i.startsWith(`${ns}.${copy}`)) ? true : undefined),
        { timeoutMs: 30_000, intervalMs: 2 },
      );
      const at = Math.floor(Math.random() * 300);
      timings.push(at);
      await sleep(at);
      victim.kill();
      let since = Date.now();
      // Until it is Ready, the copy must never say Ready; once it does, it is whole.
      await waitFor(
        `${copy} Ready`,
        async () => {
          const o = await getObject(kvol, copy, ns);
          return conditionOf(o, "Ready")?.status === "True" ? true : undefined;
        },
        { timeoutMs: 120_000, intervalMs: 200 },
      );
      lap("ready", since);
      // The new leader fences the dead one's client off its unfinished copy instead of waiting
      // out its watch (10-16 s a copy before): the lease (3 s), then the copy again.
      expect(Date.now() - since, `${copy} Ready again after the kill`).toBeLessThan(10_000);
      since = Date.now();
      expect(await digest(`${ns}.${copy}`), `${copy} (killed at ${at} ms)`).toBe(source);
      lap("digest", since);
      since = Date.now();
      // The verified copy goes (the OSD keeps data in memory) while the victim comes back.
      await Promise.all([victim.start(), kubectl(["delete", "-n", ns, `${kvol}/${copy}`, "--timeout=120s"])]);
      lap("restartAndDelete", since);
    }
    console.log(
      `[figure] ${kills} leader kills during copies (at ${timings.join(", ")} ms), ${(Date.now() - started) / 1000} s; ms in total per phase: ${JSON.stringify(phases)}`,
    );
    const left = (await rbdImages("rbd")).filter((i) => i.startsWith(`${ns}.`));
    expect(left).toEqual([`${ns}.source`]);
  }, 1_500_000);
});
