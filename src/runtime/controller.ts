import type { Logger } from "pino";
import { ConflictError } from "./client.js";
import { WorkQueue, defaultRateLimits, type RateLimits } from "./queue.js";

/** What a reconcile asks of the runtime once it succeeded: come back later (drift checks), or not. */
export interface Action {
  requeueAfterMs?: number;
}

/** A failure retrying cannot fix (bad input already reported in status): no backoff loop. */
export class TerminalError extends Error {
  override name = "TerminalError";
}

export type Reconcile = (key: string, signal: AbortSignal) => Promise<Action>;

export interface ControllerOptions {
  workers?: number;
  /** A reconcile running longer is abandoned (its signal aborts) and retried with backoff. */
  reconcileTimeoutMs?: number;
  rateLimits?: RateLimits;
  /** Told about every finished reconcile (for metrics). */
  onReconciled?: (result: ReconcileResult, seconds: number) => void;
}

export type ReconcileResult = "success" | "requeue" | "error" | "terminal" | "timeout";

/**
 * Runs one reconcile function over a queue of keys: N workers across keys, never two at once for
 * one key, per-key backoff on errors (reset on success), terminal errors not retried, and a timeout
 * on every reconcile. Events only enqueue keys; the reconcile re-reads everything it needs.
 */
export class Controller {
  /** A new queue each time the controller starts again (a leader-elected one, after losing the lease). */
  queue: WorkQueue;
  readonly counts: Record<ReconcileResult, number> = { success: 0, requeue: 0, error: 0, terminal: 0, timeout: 0 };
  private running: Promise<void>[] = [];

  constructor(
    readonly name: string,
    private readonly reconcile: Reconcile,
    private readonly log: Logger,
    private readonly options: ControllerOptions = {},
  ) {
    this.queue = new WorkQueue(options.rateLimits ?? defaultRateLimits);
  }

  enqueue = (key: string): void => this.queue.add(key);

  start(): void {
    if (this.queue.isShutDown) this.queue = new WorkQueue(this.options.rateLimits ?? defaultRateLimits);
    const workers = this.options.workers ?? 2;
    this.running = Array.from({ length: workers }, () => this.work());
  }

  /** Stops taking keys and waits for the reconciles in flight to finish. */
  async stop(): Promise<void> {
    this.queue.shutDown();
    await Promise.all(this.running);
  }

  private async work(): Promise<void> {
    for (let key = await this.queue.get(); key !== undefined; key = await this.queue.get()) {
      await this.process(key);
    }
  }

  private async process(key: string): Promise<void> {
    const log = this.log.child({ key });
    const started = performance.now();
    const abort = new AbortController();
    const timeoutMs = this.options.reconcileTimeoutMs ?? 120_000;
    let timedOut = false;
    // Past its timeout a reconcile is told to give up (its signal aborts), but the key stays busy
    // until it has really returned: two reconciles of one object never run side by side.
    const timer = setTimeout(() => {
      timedOut = true;
      abort.abort(new Error(`reconcile of ${key} timed out after ${timeoutMs} ms`));
      log.warn({ timeoutMs }, "reconcile timed out; waiting for it to give up");
    }, timeoutMs);
    let result: ReconcileResult;
    try {
      const outcome = await this.reconcile(key, abort.signal);
      if (timedOut) {
        result = "timeout";
        log.warn({ retryInMs: this.queue.addRateLimited(key) }, "reconcile returned after its timeout");
      } else {
        this.queue.forget(key);
        result = outcome.requeueAfterMs !== undefined ? "requeue" : "success";
        if (outcome.requeueAfterMs !== undefined) this.queue.addAfter(key, outcome.requeueAfterMs);
      }
    } catch (err) {
      if (timedOut) {
        result = "timeout";
        log.warn({ err, retryInMs: this.queue.addRateLimited(key) }, "reconcile gave up after its timeout");
      } else if (err instanceof TerminalError) {
        result = "terminal";
        this.queue.forget(key);
        log.error({ err }, "reconcile failed for good; waiting for a change");
      } else if (err instanceof ConflictError) {
        // The cache had not seen our own last write yet: the normal optimistic-concurrency retry.
        result = "error";
        log.debug({ retryInMs: this.queue.addRateLimited(key) }, err.message);
      } else {
        result = "error";
        const delay = this.queue.addRateLimited(key);
        log.warn({ err, retryInMs: delay, retries: this.queue.retries(key) }, "reconcile failed; retrying");
      }
    } finally {
      clearTimeout(timer);
      this.queue.done(key);
    }
    this.counts[result]++;
    this.options.onReconciled?.(result, (performance.now() - started) / 1000);
  }
}
