/**
 * Crash-loop backoff for domain starts, as the kubelet does for containers: a start that fails, or a
 * domain that stops again soon after its start, waits 10 s, then 20 s, 40 s… up to 5 min before the
 * next try; a domain that has run for 5 min starts afresh, and so does a changed spec (a new
 * generation: the user may have fixed the cause). Kept by the agent per object key and fed only by
 * start outcomes and what the reconciler observes, so the domain's own lifecycle events and the
 * agent's status writes (which both enqueue the key) never shorten a wait.
 */
export interface StartBackoffOptions {
  initialMs: number;
  maxMs: number;
  /** A domain up this long has recovered: its failures are forgotten. */
  resetAfterMs: number;
}

export const defaultStartBackoff: StartBackoffOptions = { initialMs: 10_000, maxMs: 300_000, resetAfterMs: 300_000 };

export interface StartWait {
  /** When the next start may be tried (ms since epoch). */
  until: number;
  failures: number;
  /** Why the last start failed, in words fit for a condition and an Event. */
  message: string;
}

interface Entry {
  /** The object's generation the failures were seen with. */
  generation: number | undefined;
  failures: number;
  until: number;
  message: string;
  /** When the agent last started the domain successfully. */
  startedAt?: number;
}

export class StartBackoff {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly options: StartBackoffOptions = defaultStartBackoff,
    private readonly now: () => number = Date.now,
  ) {}

  /** The domain is to be started: undefined when it may be now, else how long it must wait and why. */
  waiting(key: string, generation: number | undefined): StartWait | undefined {
    const e = this.entries.get(key);
    if (e && e.generation !== generation) this.entries.delete(key);
    if (!e || e.generation !== generation || this.now() >= e.until) return undefined;
    return { until: e.until, failures: e.failures, message: e.message };
  }

  /** A start failed: the next one waits twice as long as the last. */
  failed(key: string, generation: number | undefined, message: string): StartWait {
    const e = this.entries.get(key) ?? { generation, failures: 0, until: 0, message };
    e.generation = generation;
    e.failures++;
    e.message = message;
    e.until = this.now() + Math.min(this.options.maxMs, this.options.initialMs * 2 ** (e.failures - 1));
    delete e.startedAt;
    this.entries.set(key, e);
    return { until: e.until, failures: e.failures, message };
  }

  started(key: string, generation: number | undefined): void {
    const e = this.entries.get(key) ?? { generation, failures: 0, until: 0, message: "" };
    e.startedAt = this.now();
    this.entries.set(key, e);
  }

  /**
   * The domain was found stopped by itself (`why`: the guest powered off, QEMU crashed) and is to be
   * started again. Within `resetAfterMs` of the agent's last start, that counts as a failed start;
   * later, it starts afresh. A domain stopped from outside (destroyed, undefined) is drift, not a
   * crash: `why` undefined, and it is started again at once.
   */
  foundStopped(key: string, why: string | undefined): void {
    const e = this.entries.get(key);
    if (e?.startedAt === undefined || why === undefined) return;
    if (this.now() - e.startedAt < this.options.resetAfterMs)
      this.failed(
        key,
        e.generation,
        `the domain stopped within ${this.options.resetAfterMs / 60_000} min of its start: ${why}`,
      );
    else this.entries.delete(key);
  }

  /** The domain runs: once it has run long enough, its failures are forgotten. */
  running(key: string): void {
    const e = this.entries.get(key);
    if (e?.startedAt !== undefined && this.now() - e.startedAt >= this.options.resetAfterMs) this.entries.delete(key);
  }

  /** Nothing is to be started (Halted, Manual, deleted): no wait carries over. */
  forget(key: string): void {
    this.entries.delete(key);
  }
}
