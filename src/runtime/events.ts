import * as k8s from "@kubernetes/client-node";
import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import { apiMessage } from "./client.js";

export interface EventTarget {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; uid?: string; resourceVersion?: string };
}

interface Series {
  name: string;
  namespace: string;
  count: number;
  lastWrite: number;
  firstSeen: number;
}

/**
 * Kubernetes Events (core/v1, what `kubectl describe` shows) without spamming the API: the same
 * event for the same object is one Event whose count grows, written at most once per
 * `minIntervalMs`; repeats in between are folded into the next write. As client-go's recorder,
 * it never holds a reconcile up: the write goes on in the background (`flush` waits for those in
 * flight), and beyond `maxInFlight` writes an Event is only logged. Failures to record are logged,
 * never thrown: an Event is an explanation, not part of the reconcile.
 */
export class EventRecorder {
  private readonly api: k8s.CoreV1Api;
  private readonly series = new Map<string, Series>();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly maxInFlight = 256;
  writes = 0;

  constructor(
    kc: k8s.KubeConfig,
    private readonly component: string,
    private readonly host: string,
    private readonly log: Logger,
    private readonly minIntervalMs = 30_000,
    private readonly seriesTtlMs = 10 * 60_000,
  ) {
    this.api = kc.makeApiClient(k8s.CoreV1Api);
  }

  normal(target: EventTarget, reason: string, message: string): Promise<void> {
    return this.record(target, "Normal", reason, message);
  }

  warning(target: EventTarget, reason: string, message: string): Promise<void> {
    return this.record(target, "Warning", reason, message);
  }

  /** Records in the background; resolves at once. */
  record(target: EventTarget, type: "Normal" | "Warning", reason: string, message: string): Promise<void> {
    if (this.inFlight.size < this.maxInFlight) {
      const write = this.write(target, type, reason, message).finally(() => this.inFlight.delete(write));
      this.inFlight.add(write);
    } else {
      this.log.warn({ reason, message }, "too many Events in flight: this one is only logged");
    }
    return Promise.resolve();
  }

  /** Waits for the writes in flight (before the agent exits). */
  async flush(): Promise<void> {
    await Promise.all(this.inFlight);
  }

  private async write(target: EventTarget, type: "Normal" | "Warning", reason: string, message: string): Promise<void> {
    const now = Date.now();
    const { namespace: ns, name } = target.metadata;
    // Every Event is also a log line with the object's key: the log tells the same story.
    this.log[type === "Warning" ? "warn" : "info"](
      { key: ns ? `${ns}/${name}` : name, kind: target.kind, reason },
      message,
    );
    const id = `${target.metadata.uid ?? target.metadata.name}\u0000${type}\u0000${reason}\u0000${message}`;
    const existing = this.series.get(id);
    try {
      if (existing && now - existing.firstSeen < this.seriesTtlMs) {
        existing.count++;
        if (now - existing.lastWrite < this.minIntervalMs) return;
        existing.lastWrite = now;
        this.writes++;
        await this.api.patchNamespacedEvent(
          {
            name: existing.name,
            namespace: existing.namespace,
            body: { count: existing.count, lastTimestamp: new Date(now).toISOString() },
          },
          k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch),
        );
        return;
      }
      const namespace = target.metadata.namespace ?? "default";
      const name = `${target.metadata.name}.${randomBytes(8).toString("hex")}`;
      this.series.set(id, { name, namespace, count: 1, lastWrite: now, firstSeen: now });
      this.prune(now);
      this.writes++;
      const time = new Date(now);
      await this.api.createNamespacedEvent({
        namespace,
        body: {
          metadata: { name, namespace },
          involvedObject: {
            apiVersion: target.apiVersion,
            kind: target.kind,
            name: target.metadata.name,
            ...(target.metadata.namespace ? { namespace: target.metadata.namespace } : {}),
            ...(target.metadata.uid ? { uid: target.metadata.uid } : {}),
          },
          type,
          reason,
          message: message.slice(0, 1024),
          count: 1,
          firstTimestamp: time,
          lastTimestamp: time,
          source: { component: this.component, host: this.host },
          reportingComponent: this.component,
          reportingInstance: this.host,
        },
      });
    } catch (err) {
      this.log.warn({ reason, error: apiMessage(err) }, "could not record an event");
    }
  }

  private prune(now: number): void {
    for (const [id, s] of this.series) if (now - s.firstSeen >= this.seriesTtlMs) this.series.delete(id);
  }
}
