import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { WorkQueue } from "./queue.js";

describe("work queue", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("queues a key once however many times it is added", async () => {
    const q = new WorkQueue();
    q.add("a");
    q.add("b");
    q.add("a");
    expect(q.length).toBe(2);
    expect(await q.get()).toBe("a");
    expect(await q.get()).toBe("b");
  });

  it("never hands out a key that is being processed; re-queues it after done if it changed meanwhile", async () => {
    const q = new WorkQueue();
    q.add("a");
    expect(await q.get()).toBe("a");
    q.add("a"); // changed while its reconcile runs
    expect(q.length).toBe(0);
    q.add("b");
    expect(await q.get()).toBe("b");
    q.done("a");
    expect(await q.get()).toBe("a");
    q.done("a");
    expect(q.length).toBe(0);
  });

  it("hands a key straight to a waiting worker", async () => {
    const q = new WorkQueue();
    const next = q.get();
    q.add("a");
    expect(await next).toBe("a");
  });

  it("backs off failing keys exponentially, per key, and forgets on success", () => {
    const q = new WorkQueue({ baseDelayMs: 5, maxDelayMs: 1000, qps: 1000, burst: 1000 });
    expect([1, 2, 3, 4].map(() => q.addRateLimited("a"))).toEqual([5, 10, 20, 40]);
    expect(q.addRateLimited("b")).toBe(5);
    for (let i = 0; i < 20; i++) q.addRateLimited("a");
    expect(q.addRateLimited("a")).toBe(1000);
    expect(q.retries("a")).toBe(25);
    q.forget("a");
    expect(q.addRateLimited("a")).toBe(5);
  });

  it("limits retries across keys with a token bucket", () => {
    const q = new WorkQueue({ baseDelayMs: 1, maxDelayMs: 1, qps: 10, burst: 2 });
    expect(q.addRateLimited("a")).toBe(1);
    expect(q.addRateLimited("b")).toBe(1);
    expect(q.addRateLimited("c")).toBe(100); // bucket empty: one token per 100 ms
    expect(q.addRateLimited("d")).toBe(200);
  });

  it("delivers delayed keys after their delay, the earliest delay winning", async () => {
    const q = new WorkQueue();
    q.addAfter("a", 1000);
    q.addAfter("a", 100);
    q.addAfter("a", 5000);
    vi.advanceTimersByTime(99);
    expect(q.length).toBe(0);
    vi.advanceTimersByTime(1);
    expect(q.length).toBe(1);
    vi.advanceTimersByTime(10_000);
    expect(q.length).toBe(1);
    expect(await q.get()).toBe("a");
  });

  it("shuts down: waiting workers get undefined and nothing more is queued", async () => {
    const q = new WorkQueue();
    const waiting = q.get();
    q.addAfter("later", 10);
    q.shutDown();
    expect(await waiting).toBeUndefined();
    q.add("a");
    vi.advanceTimersByTime(100);
    expect(await q.get()).toBeUndefined();
  });
});
