import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { Worker, parentPort, type Transferable } from "node:worker_threads";

/**
 * Blocking C calls (libvirt, librbd) run in worker threads so the event loop never waits on a host.
 * A pool owns a few workers; a call goes to the least busy one and resolves with its answer.
 * Errors cross the thread boundary as plain data and are turned back into typed errors by the
 * caller's `toError`.
 */

interface Request {
  id: number;
  op: string;
  args: unknown[];
}
type Response = { id: number; value: unknown } | { id: number; error: SerializedError } | { loaded: true };
export interface SerializedError {
  name: string;
  message: string;
  [field: string]: unknown;
}

type Ops = Record<string, (...args: never[]) => unknown>;

/** Turns a serialized error back into an instance of its class (when known), with all its fields. */
export const reviveError =
  (...classes: (abstract new (...args: never[]) => Error)[]) =>
  (e: SerializedError): Error => {
    const cls = classes.find((c) => c.name === e.name) ?? Error;
    return Object.assign(Object.create(cls.prototype) as Error, e);
  };

/**
 * Worker side: answers each request with what the matching op returns or throws. It first says the
 * worker's module has loaded (its native libraries with it): only then may the pool terminate it.
 */
export function serve(ops: Ops): void {
  if (!parentPort) throw new Error("serve() runs inside a worker thread");
  const port = parentPort;
  port.postMessage({ loaded: true } satisfies Response);
  port.on("message", ({ id, op, args }: Request) => {
    try {
      const fn = ops[op];
      if (!fn) throw new Error(`unknown op ${op}`);
      port.postMessage({ id, value: (fn as (...a: unknown[]) => unknown)(...args) } satisfies Response);
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      port.postMessage({ id, error: { ...e, name: e.name, message: e.message } } satisfies Response);
    }
  });
}

/** A worker module beside the caller's: .ts when running from source, .js once built. */
export const siblingModule = (name: string, callerUrl: string): URL =>
  new URL(`./${name}${callerUrl.endsWith(".ts") ? ".ts" : ".js"}`, callerUrl);

/** Starts a worker from a module next to the caller: .ts under tsx/vitest, .js once built. */
export function startWorker(url: URL, workerData: unknown, transferList: Transferable[] = []): Worker {
  if (!url.pathname.endsWith(".ts")) return new Worker(url, { workerData, transferList });
  // Source under tsx or vitest: Node 20 workers do not inherit ESM loader hooks, so the worker is
  // a CommonJS stub that registers tsx's require hook and loads the TypeScript module through it.
  const require = createRequire(import.meta.url);
  const boot = `require(${JSON.stringify(require.resolve("tsx/cjs/api"))}).register(); require(${JSON.stringify(fileURLToPath(url))});`;
  return new Worker(boot, { eval: true, workerData, transferList });
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

export class WorkerPool<T extends Ops> {
  private readonly workers: { worker: Worker; pending: Map<number, Pending>; loaded: Promise<void> }[] = [];
  private nextId = 1;
  private closed = false;

  constructor(
    url: URL,
    workerData: unknown,
    size: number,
    private readonly toError: (e: SerializedError) => Error,
  ) {
    for (let i = 0; i < size; i++) {
      const worker = startWorker(url, workerData);
      const pending = new Map<number, Pending>();
      let markLoaded!: () => void;
      const loaded = new Promise<void>((resolve) => (markLoaded = resolve));
      worker.on("message", (res: Response) => {
        if ("loaded" in res) return markLoaded();
        const p = pending.get(res.id);
        pending.delete(res.id);
        if (pending.size === 0) worker.unref();
        if (!p) return;
        if ("error" in res) p.reject(this.toError(res.error));
        else p.resolve(res.value);
      });
      // A worker that dies (or is stopped) fails what it had in hand; the pool keeps the others.
      const failPending = (err: Error) => {
        for (const p of pending.values()) p.reject(err);
        pending.clear();
      };
      worker.on("error", failPending);
      worker.once("exit", (code) => {
        markLoaded(); // a worker that never loaded has nothing left to wait for
        failPending(new Error(`host thread exited (code ${code})`));
      });
      // Idle workers do not keep the process alive; a worker with calls in hand does.
      worker.unref();
      this.workers.push({ worker, pending, loaded });
    }
  }

  call<K extends keyof T & string>(op: K, ...args: Parameters<T[K]>): Promise<Awaited<ReturnType<T[K]>>> {
    if (this.closed) return Promise.reject(new Error("worker pool is closed"));
    const target = this.workers.reduce((a, b) => (b.pending.size < a.pending.size ? b : a));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      target.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      target.worker.ref();
      target.worker.postMessage({ id, op, args } satisfies Request);
    });
  }

  /** Calls in flight, across workers (a queue depth for metrics). */
  get inFlight(): number {
    return this.workers.reduce((n, w) => n + w.pending.size, 0);
  }

  /**
   * Stops the workers once each has loaded: a worker terminated (or left running at process exit)
   * while its native library loads aborts the whole process (koffi cannot throw into a dying thread).
   */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(
      this.workers.map(async ({ worker, loaded }) => {
        worker.ref();
        await loaded;
        await worker.terminate();
      }),
    );
  }
}
