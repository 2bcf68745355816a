/**
 * A work queue of object keys, in the shape of client-go's workqueue: a key is queued at most once
 * however many events name it; a key being processed is never handed out again until `done`, and
 * if it was added meanwhile it is queued again then; failures back off per key (exponentially,
 * reset by `forget`), and a token bucket caps how fast retries come back across all keys.
 */
export interface RateLimits {
  /** First retry delay for a failing key, doubled at each further failure. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** Retries across all keys: sustained rate and burst. */
  qps: number;
  burst: number;
}

export const defaultRateLimits: RateLimits = { baseDelayMs: 5, maxDelayMs: 1_000_000, qps: 10, burst: 100 };

export class WorkQueue {
  private readonly queue: string[] = [];
  private readonly dirty = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private readonly waiters: ((key: string | undefined) => void)[] = [];
  private shuttingDown = false;
  private tokens: number;
  private lastRefill = Date.now();

  constructor(private readonly limits: RateLimits = defaultRateLimits) {
    this.tokens = limits.burst;
  }

  /** Queues a key unless it is already waiting; a key being processed is queued again after `done`. */
  add(key: string): void {
    if (this.shuttingDown || this.dirty.has(key)) return;
    this.dirty.add(key);
    if (this.processing.has(key)) return;
    const waiter = this.waiters.shift();
    if (waiter) {
      this.dirty.delete(key);
      this.processing.add(key);
      waiter(key);
    } else {
      this.queue.push(key);
    }
  }

  /** Queues a key after a delay; of several pending delays for one key, the earliest wins. */
  addAfter(key: string, delayMs: number): void {
    if (this.shuttingDown) return;
    if (delayMs <= 0) return this.add(key);
    const at = Date.now() + delayMs;
    const pending = this.timers.get(key);
    if (pending && pending.at <= at) return;
    if (pending) clearTimeout(pending.timer);
    const timer = setTimeout(() => {
      this.timers.delete(key);
      this.add(key);
    }, delayMs);
    timer.unref();
    this.timers.set(key, { at, timer });
  }

  /** Queues a failed key again after its backoff (and the global retry budget) allow. */
  addRateLimited(key: string): number {
    const delay = Math.max(this.backoff(key), this.globalDelay());
    this.addAfter(key, delay);
    return delay;
  }

  /** A success: the key's next failure starts again from the base delay. */
  forget(key: string): void {
    this.failures.delete(key);
  }

  /** How many times in a row this key has failed. */
  retries(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /** The next key to process, waiting for one; undefined once the queue is shut down. */
  get(): Promise<string | undefined> {
    const key = this.queue.shift();
    if (key !== undefined) {
      this.dirty.delete(key);
      this.processing.add(key);
      return Promise.resolve(key);
    }
    if (this.shuttingDown) return Promise.resolve(undefined);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Marks a key processed; if it was added meanwhile it goes back in the queue. */
  done(key: string): void {
    this.processing.delete(key);
    if (this.dirty.has(key)) {
      this.dirty.delete(key);
      this.add(key);
    }
  }

  get isShutDown(): boolean {
    return this.shuttingDown;
  }

  /** Keys waiting (not those being processed or delayed): the queue depth for metrics. */
  get length(): number {
    return this.queue.length;
  }

  /** Stops handing out keys: waiting `get`s resolve undefined, delayed adds are dropped. */
  shutDown(): void {
    this.shuttingDown = true;
    for (const { timer } of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    this.queue.length = 0;
    this.dirty.clear();
    for (const waiter of this.waiters.splice(0)) waiter(undefined);
  }

  private backoff(key: string): number {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    return Math.min(this.limits.baseDelayMs * 2 ** n, this.limits.maxDelayMs);
  }

  /** Token bucket: a retry takes a token; without one it waits for the next refill. */
  private globalDelay(): number {
    const now = Date.now();
    this.tokens = Math.min(this.limits.burst, this.tokens + ((now - this.lastRefill) / 1000) * this.limits.qps);
    this.lastRefill = now;
    this.tokens -= 1;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens / this.limits.qps) * 1000);
  }
}
