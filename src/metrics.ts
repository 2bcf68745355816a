import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { build } from "./build.js";
import type { AcceleratorChoice } from "./host/accel/probe.js";
import type { ReconcileResult } from "./runtime/controller.js";

/**
 * The agent's Prometheus metrics. Host calls that change something are counted per host and
 * operation, so "a converged node makes no mutating host call" can be read from /metrics.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly reconciles = new Counter({
    name: "kaktus_reconcile_total",
    help: "Reconciles by controller and result (success, requeue, error, terminal, timeout).",
    labelNames: ["controller", "result"] as const,
    registers: [this.registry],
  });
  readonly reconcileSeconds = new Histogram({
    name: "kaktus_reconcile_duration_seconds",
    help: "Reconcile durations by controller.",
    labelNames: ["controller"] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly hostMutations = new Counter({
    name: "kaktus_host_mutations_total",
    help: "Host calls that change something, by host layer (libvirt, rbd, bridge) and operation.",
    labelNames: ["host", "op"] as const,
    registers: [this.registry],
  });
  readonly hostErrors = new Counter({
    name: "kaktus_host_errors_total",
    help: "Host calls that failed, by host layer and operation.",
    labelNames: ["host", "op"] as const,
    registers: [this.registry],
  });
  readonly leader = new Gauge({
    name: "kaktus_leader",
    help: "1 while this agent holds the Volume controller lease.",
    registers: [this.registry],
  });

  readonly accelerator = new Gauge({
    name: "kaktus_node_accelerator_info",
    help: "The node's accelerator and default CPU as its probe decided (value 1); accelerator none: no guest can start.",
    labelNames: ["accelerator", "cpu_mode", "cpu_model", "disabled_features", "decided_by"] as const,
    registers: [this.registry],
  });
  readonly probeSeconds = new Gauge({
    name: "kaktus_node_probe_duration_seconds",
    help: "How long the node's last accelerator probe took.",
    registers: [this.registry],
  });

  constructor(private readonly sources: MetricSources) {
    // process_* and nodejs_*, the names Prometheus users and dashboards expect.
    collectDefaultMetrics({ register: this.registry });
    const { registry } = this;
    new Gauge({
      name: "kaktus_build_info",
      help: "The agent's version, source revision and Node.js version (value 1).",
      labelNames: ["version", "revision", "nodejs_version"] as const,
      registers: [registry],
    }).set({ version: build.version, revision: build.revision, nodejs_version: build.node }, 1);
    new Gauge({
      name: "kaktus_queue_depth",
      help: "Keys waiting in each controller's queue.",
      labelNames: ["controller"] as const,
      registers: [registry],
      collect() {
        for (const [controller, depth] of Object.entries(sources.queueDepths())) this.set({ controller }, depth);
      },
    });
    new Counter({
      name: "kaktus_api_writes_total",
      help: "Writes to the Kubernetes API by resource (object patches, status patches, Events).",
      labelNames: ["resource"] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const [resource, writes] of Object.entries(sources.apiWrites())) this.inc({ resource }, writes);
      },
    });
    new Counter({
      name: "kaktus_watch_restarts_total",
      help: "Watches re-opened (ends, errors, silent stalls) by resource.",
      labelNames: ["resource", "why"] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const [resource, s] of Object.entries(sources.informers())) {
          this.inc({ resource, why: "stall" }, s.stalls);
          this.inc({ resource, why: "gone" }, s.gone);
          this.inc({ resource, why: "any" }, Math.max(0, s.watches - 1));
        }
      },
    });
  }

  /** The probe's decision; undefined when it found no accelerator that works. */
  probed(choice: AcceleratorChoice | undefined, seconds: number): void {
    this.accelerator.reset();
    this.accelerator.set(
      {
        accelerator: choice?.accelerator ?? "none",
        cpu_mode: choice?.cpu.mode ?? "",
        cpu_model: choice?.cpu.model ?? "",
        disabled_features: choice?.cpu.disabledFeatures.join(",") ?? "",
        decided_by: choice?.decidedBy ?? "probe",
      },
      1,
    );
    this.probeSeconds.set(seconds);
  }

  reconciled(controller: string): (result: ReconcileResult, seconds: number) => void {
    return (result, seconds) => {
      this.reconciles.inc({ controller, result });
      this.reconcileSeconds.observe({ controller }, seconds);
    };
  }

  /**
   * The same host adapter, with its mutating methods counted (and their failures). Reads pass
   * through untouched.
   */
  counted<T extends object>(host: string, target: T, mutating: readonly (keyof T & string)[]): T {
    const { hostMutations, hostErrors } = this;
    return new Proxy(target, {
      get(obj, prop, receiver) {
        const value = Reflect.get(obj, prop, receiver) as unknown;
        if (typeof value !== "function" || !mutating.includes(prop as keyof T & string)) return value;
        const op = prop as string;
        return async (...args: unknown[]) => {
          hostMutations.inc({ host, op });
          try {
            return await (value as (...a: unknown[]) => Promise<unknown>).apply(obj, args);
          } catch (err) {
            hostErrors.inc({ host, op });
            throw err;
          }
        };
      },
    });
  }
}

export interface MetricSources {
  queueDepths(): Record<string, number>;
  apiWrites(): Record<string, number>;
  informers(): Record<string, { watches: number; stalls: number; gone: number }>;
}
