import { describe, expect, it } from "vitest";
import { reviveError, WorkerPool } from "./worker-pool.js";

const slowLoading = new URL("../../test/fixtures/slow-loading-worker.ts", import.meta.url);

describe("WorkerPool", () => {
  it("answers calls from its workers", async () => {
    const pool = new WorkerPool<{ ping: () => string }>(
      slowLoading,
      { loadedCount: new Int32Array(new SharedArrayBuffer(4)), loadMs: 0 },
      2,
      reviveError(),
    );
    await expect(pool.call("ping")).resolves.toBe("pong");
    await pool.close();
    await expect(pool.call("ping")).rejects.toThrow("closed");
  });

  it("fails the calls in hand when it is closed: none is left waiting forever", async () => {
    const pool = new WorkerPool<{ block: (ms: number) => string }>(
      slowLoading,
      { loadedCount: new Int32Array(new SharedArrayBuffer(4)), loadMs: 0 },
      1,
      reviveError(),
    );
    const call = pool.call("block", 60_000);
    await Promise.all([pool.close(), expect(call).rejects.toThrow("host thread exited")]);
  });

  it("closed at once, lets each worker finish loading before it stops it", async () => {
    // Terminating a thread inside koffi.load aborts the process (SIGABRT instead of the exit code).
    const loadedCount = new Int32Array(new SharedArrayBuffer(4));
    const pool = new WorkerPool(slowLoading, { loadedCount, loadMs: 300 }, 2, reviveError());
    await pool.close();
    expect(Atomics.load(loadedCount, 0)).toBe(2);
  });
});
