import * as k8s from "@kubernetes/client-node";
import type { Logger } from "pino";
import { setTimeout as sleep } from "node:timers/promises";

const microTime = (d: Date) => d.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  /** This process's identity (pod or node name). */
  identity: string;
  leaseDurationSeconds?: number;
  /**
   * A leader that has not renewed for this long stops acting (client-go: 10 s of a 15 s lease), well
   * before anyone else can take the lease (a whole lease duration after its last renewal).
   * Default: two thirds of the lease.
   */
  renewDeadlineMs?: number;
  /** How often the holder renews and a candidate retries. */
  retryPeriodMs?: number;
}

/** Thrown by `fence()`: this agent is not surely the leader any more; it must change nothing. */
export class NotLeader extends Error {
  override name = "NotLeader";
}

/**
 * Leader election on a coordination.k8s.io Lease, like client-go's: a candidate takes the lease
 * when nobody holds it or the holder stopped renewing for a lease duration; the leader renews every
 * retry period and steps down when it cannot renew within the lease duration. Every write carries
 * the resourceVersion it read, so two candidates never both win. On stop the lease is released so
 * another agent takes over at once instead of after the lease duration.
 */
export class LeaderElector {
  private readonly api: k8s.CoordinationV1Api;
  private leading = false;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private lastRenew = 0;
  private readonly wake = new AbortController();
  /** When the lease another agent holds expires unless renewed (from its renewTime). */
  private otherExpiresAt = 0;

  constructor(
    kc: k8s.KubeConfig,
    private readonly opts: LeaderElectionOptions,
    private readonly callbacks: { onStartedLeading: () => void; onStoppedLeading: () => void },
    private readonly log: Logger,
  ) {
    this.api = kc.makeApiClient(k8s.CoordinationV1Api);
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Stops campaigning (no more renewals); `stop` then releases the lease. */
  async stopCampaign(): Promise<void> {
    this.stopped = true;
    this.wake.abort();
    await this.loop;
  }

  /** Stops campaigning; a leader releases the lease, so another agent takes over at once. */
  async stop(): Promise<void> {
    await this.stopCampaign();
    if (this.leading)
      await this.release().catch((err: unknown) => this.log.warn({ err }, "could not release the lease"));
    this.setLeading(false);
  }

  private get durationMs(): number {
    return (this.opts.leaseDurationSeconds ?? 15) * 1000;
  }

  private get renewDeadlineMs(): number {
    return this.opts.renewDeadlineMs ?? (this.durationMs * 2) / 3;
  }

  /** Whether the lease is surely still this agent's: renewed within the renew deadline, by the clock now. */
  holds(): boolean {
    return this.leading && Date.now() - this.lastRenew < this.renewDeadlineMs;
  }

  /**
   * Throws unless `holds()`: called before each change only the leader may make, so a leader that
   * was frozen or cut off past its renew deadline changes nothing, even before it noticed.
   */
  fence(): void {
    if (!this.holds())
      throw new NotLeader(`${this.opts.identity} is not surely the leader of ${this.opts.name} any more`);
  }

  private async run(): Promise<void> {
    const period = this.opts.retryPeriodMs ?? 2_000;
    while (!this.stopped) {
      try {
        const held = await this.tryAcquireOrRenew();
        if (held) this.lastRenew = Date.now();
        this.setLeading(held || this.holds());
      } catch (err) {
        this.log.warn({ err }, "lease update failed");
        // A leader that cannot renew within its renew deadline steps down before anyone can take over.
        if (this.leading && !this.holds()) this.setLeading(false);
      }
      // A follower wakes right when the holder's lease would expire, not up to a period later: a
      // dead leader is replaced within the lease duration, with no more reads than polling.
      const untilExpiry = this.otherExpiresAt - Date.now() + 50;
      const delay = this.leading || untilExpiry <= 0 ? period : Math.min(period, untilExpiry);
      await sleep(delay, undefined, { signal: this.wake.signal }).catch(() => undefined);
    }
  }

  private setLeading(leading: boolean): void {
    if (leading === this.leading) return;
    this.leading = leading;
    this.log.info(
      { lease: this.opts.name, identity: this.opts.identity, leading },
      leading ? "became leader" : "lost leadership",
    );
    if (leading) this.callbacks.onStartedLeading();
    else this.callbacks.onStoppedLeading();
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name, identity } = this.opts;
    const now = new Date();
    let lease: k8s.V1Lease;
    try {
      lease = await this.api.readNamespacedLease({ name, namespace });
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
      await this.api.createNamespacedLease({
        namespace,
        body: { metadata: { name, namespace }, spec: this.spec(now, now, 0) },
      });
      return true;
    }
    const spec = lease.spec ?? {};
    const renewed = spec.renewTime ? new Date(spec.renewTime).getTime() : 0;
    const expired = renewed + (spec.leaseDurationSeconds ?? 0) * 1000 < now.getTime();
    const mine = spec.holderIdentity === identity;
    if (!mine && spec.holderIdentity && !expired) {
      this.otherExpiresAt = renewed + (spec.leaseDurationSeconds ?? 0) * 1000;
      return false;
    }
    const acquired = mine && spec.acquireTime ? new Date(spec.acquireTime) : now;
    const transitions = (spec.leaseTransitions ?? 0) + (mine ? 0 : 1);
    // replace carries metadata.resourceVersion: a concurrent winner makes this fail with 409.
    await this.api.replaceNamespacedLease({
      name,
      namespace,
      body: { metadata: lease.metadata, spec: this.spec(acquired, now, transitions) } as k8s.V1Lease,
    });
    return true;
  }

  private spec(acquired: Date, renewed: Date, transitions: number): k8s.V1LeaseSpec {
    return {
      holderIdentity: this.opts.identity,
      leaseDurationSeconds: this.opts.leaseDurationSeconds ?? 15,
      // MicroTime: the apiserver wants six fractional digits; client-node would send three.
      acquireTime: microTime(acquired) as unknown as Date,
      renewTime: microTime(renewed) as unknown as Date,
      leaseTransitions: transitions,
    };
  }

  private async release(): Promise<void> {
    const { namespace, name, identity } = this.opts;
    const lease = await this.api.readNamespacedLease({ name, namespace });
    if (lease.spec?.holderIdentity !== identity) return;
    await this.api.replaceNamespacedLease({
      name,
      namespace,
      body: {
        metadata: lease.metadata,
        spec: { ...lease.spec, holderIdentity: "", leaseDurationSeconds: 1 },
      } as k8s.V1Lease,
    });
  }
}
