import { pino } from "pino";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { Controller, TerminalError, type Action } from "./controller.js";

const log = pino({ level: "silent" });
const fast = { baseDelayMs: 1, maxDelayMs: 50, qps: 1000, burst: 1000 };

async function until(check: () => boolean, ms = 2_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await sleep(2);
  }
}

describe("controller loop", () => {
  it("never runs one key twice at once, and runs different keys in parallel", async () => {
    let running = 0;
    let maxSameKey = 0;
    let maxParallel = 0;
    const perKey = new Map<string, number>();
    const c = new Controller(
      "t",
      async (key): Promise<Action> => {
        perKey.set(key, (perKey.get(key) ?? 0) + 1);
        running++;
        maxSameKey = Math.max(maxSameKey, perKey.get(key)!);
        maxParallel = Math.max(maxParallel, running);
        await sleep(20);
        running--;
        perKey.set(key, perKey.get(key)! - 1);
        return {};
      },
      log,
      { workers: 4, rateLimits: fast },
    );
    c.start();
    for (let i = 0; i < 5; i++) for (const key of ["a", "b", "c"]) c.enqueue(key);
    await sleep(5);
    c.enqueue("a"); // while a runs: it runs again afterwards, never concurrently
    // 16 adds: each key runs once at once, and once more because it was added while running.
    await until(() => c.counts.success >= 6);
    await sleep(50);
    await c.stop();
    expect(maxSameKey).toBe(1);
    expect(maxParallel).toBe(3);
    expect(c.counts.success).toBe(6);
  });

  it("retries errors with backoff until success, then forgets the failures", async () => {
    let calls = 0;
    const c = new Controller(
      "t",
      async () => {
        calls++;
        if (calls < 4) throw new Error("libvirtd unreachable");
        return {};
      },
      log,
      { rateLimits: fast },
    );
    c.start();
    c.enqueue("a");
    await until(() => c.counts.success === 1);
    await c.stop();
    expect(c.counts.error).toBe(3);
    expect(c.queue.retries("a")).toBe(0);
  });

  it("does not retry a terminal error", async () => {
    const c = new Controller("t", async () => Promise.reject(new TerminalError("bad spec")), log, { rateLimits: fast });
    c.start();
    c.enqueue("a");
    await until(() => c.counts.terminal === 1);
    await sleep(50);
    await c.stop();
    expect(c.counts.terminal).toBe(1);
  });

  it("requeues after the delay a successful reconcile asks for (drift checks)", async () => {
    const c = new Controller("t", async () => ({ requeueAfterMs: 10 }), log, { rateLimits: fast });
    c.start();
    c.enqueue("a");
    await until(() => c.counts.requeue >= 3);
    await c.stop();
  });

  it("aborts a stuck reconcile's signal at its timeout, keeps the key busy until it returns, then retries", async () => {
    const aborted: boolean[] = [];
    let calls = 0;
    let running = 0;
    let overlapped = false;
    const c = new Controller(
      "t",
      async (_, signal) => {
        calls++;
        overlapped ||= running > 0;
        running++;
        if (calls === 1) {
          await sleep(200);
          aborted.push(signal.aborted);
        }
        running--;
        return {};
      },
      log,
      { rateLimits: fast, reconcileTimeoutMs: 30 },
    );
    c.start();
    c.enqueue("a");
    await until(() => c.counts.success === 1);
    expect(c.counts.timeout).toBe(1);
    await until(() => aborted.length === 1);
    expect(aborted).toEqual([true]);
    c.enqueue("a"); // queued while a second reconcile may run: still never two at once
    await until(() => c.counts.success === 2);
    expect(overlapped).toBe(false);
    await c.stop();
  });

  it("stops gracefully: finishes the reconcile in flight, takes no new work", async () => {
    let finished = 0;
    const c = new Controller(
      "t",
      async () => {
        await sleep(30);
        finished++;
        return {};
      },
      log,
      { workers: 1, rateLimits: fast },
    );
    c.start();
    c.enqueue("a");
    c.enqueue("b");
    await sleep(5);
    await c.stop();
    expect(finished).toBe(1);
  });
});
