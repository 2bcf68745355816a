import type { Logger } from "pino";
import type { ResourceClient } from "./client.js";
import { condition, progressConditions, setConditions, type Condition, type ConditionInput } from "./conditions.js";
import { TerminalError, type Action, type Reconcile } from "./controller.js";
import type { EventRecorder, EventTarget } from "./events.js";
import { addFinalizerPatch, removeFinalizerPatch } from "./finalizers.js";
import type { KubeObject } from "./informer.js";
import { statusPatch } from "./status.js";

/** What every kind's status carries (see api/schema.ts commonStatus). */
export interface CommonStatus {
  observedGeneration?: number;
  phase?: string;
  conditions?: Condition[];
}

export type KindObject<S> = KubeObject &
  EventTarget & {
    metadata: { generation?: number; finalizers?: string[]; deletionTimestamp?: string };
    status?: S;
  };

/**
 * The status a reconcile leaves behind, rebuilt in memory and written once, at the end, only if it
 * differs from the stored one (a guarded patch, stamped with the generation it describes).
 * `flush` writes early, for what must be persisted before a host change (a VM's identity).
 */
export class StatusWriter<S extends CommonStatus> {
  private draft: S;

  constructor(
    private readonly stored: () => KindObject<S>,
    private readonly write: (ops: ReturnType<typeof statusPatch>) => Promise<void>,
  ) {
    this.draft = structuredClone(stored().status ?? ({} as S));
  }

  get value(): Readonly<S> {
    return this.draft;
  }

  /** Sets fields; a field set to undefined is removed. */
  set(fields: Partial<S>): void {
    const next = Object.entries({ ...this.draft, ...fields }).filter(([, v]) => v !== undefined);
    this.draft = Object.fromEntries(next) as unknown as S;
  }

  /** Sets conditions (metav1 semantics: the transition time moves only when the status does). */
  conditions(...inputs: (ConditionInput | undefined)[]): void {
    const generation = this.stored().metadata.generation;
    this.draft = { ...this.draft, conditions: setConditions(this.draft.conditions, inputs, generation) };
  }

  /** Writes what changed, stamped with the generation observed (not while deleting: it no longer matters). */
  /** Fields and conditions at once, as the planners return them. */
  apply({ fields, conditions }: { fields: Partial<S>; conditions: (ConditionInput | undefined)[] }): void {
    this.set(fields);
    this.conditions(...conditions);
  }

  /** `terminal`: a failure that will not be retried (Stalled). */
  async flush({ terminal = false }: { terminal?: boolean } = {}): Promise<void> {
    this.conditions(...progressConditions(this.draft.conditions, { terminal }));
    const obj = this.stored();
    const generation = obj.metadata.deletionTimestamp ? undefined : obj.metadata.generation;
    const status = { ...this.draft, ...(generation !== undefined ? { observedGeneration: generation } : {}) };
    await this.write(statusPatch(obj, status));
  }
}

/** An Event a plan asks for, told once its step is done. */
export interface PlannedEvent {
  type: "Normal" | "Warning";
  reason: string;
  message: string;
}

export interface ReconcileContext<S extends CommonStatus> {
  key: string;
  /** Aborted when the reconcile ran past its timeout: stop before the next host change. */
  signal: AbortSignal;
  log: Logger;
  status: StatusWriter<S>;
  /** Events about this object (folded and rate-limited by the recorder). */
  events: {
    normal(reason: string, message: string): Promise<void>;
    warning(reason: string, message: string): Promise<void>;
    emit(event: PlannedEvent): Promise<void>;
  };
}

/**
 * The executor of a plan: its steps in order, one host call each, then the step's Event. The
 * reconcile's signal is checked before each step, so nothing more is changed once it gave up. A
 * step may end the plan with an outcome (a start that failed), which is returned.
 */
export async function runSteps<Step extends { event?: PlannedEvent }, Outcome>(
  steps: readonly Step[],
  run: (step: Step) => Promise<Outcome | undefined>,
  signal: AbortSignal,
  emit: (event: PlannedEvent) => Promise<void>,
): Promise<Outcome | undefined> {
  for (const step of steps) {
    signal.throwIfAborted();
    const outcome = await run(step);
    if (outcome !== undefined) return outcome;
    if (step.event) await emit(step.event);
  }
  return undefined;
}

/** How an error shows on the object; `terminal`: retrying cannot help until the object changes. */
export interface Failure {
  reason: string;
  message: string;
  terminal: boolean;
}

/**
 * One controller's logic, the way kube-rs' `finalizer()` splits it: `apply` brings the host to the
 * spec (the finalizer is on first), `cleanup` removes what the object made (the finalizer comes off
 * when it returns without a requeue), `orphan` handles a key whose object is gone.
 */
export interface Reconciler<T extends KindObject<S>, S extends CommonStatus> {
  finalizer?: string;
  /** When cleanup is due; default: the object is being deleted. */
  needsCleanup?(obj: T): boolean;
  apply(obj: T, ctx: ReconcileContext<S>): Promise<Action>;
  /** Must tolerate apply never having run. A requeue means "not done yet". */
  cleanup?(obj: T, ctx: ReconcileContext<S>): Promise<Action>;
  /** Cleanup is due but this controller's finalizer is already off. */
  released?(obj: T, ctx: ReconcileContext<S>): Promise<Action>;
  /**
   * The object is gone from the cache, or is not this controller's (a VM of another node): the host
   * may still hold something made for it, or for an earlier object of that name.
   */
  orphan?(key: string, signal: AbortSignal, obj?: T): Promise<Action>;
  /** The error policy: how an error is reported; undefined leaves it to the runtime's backoff, unreported. */
  failure?(err: unknown): Failure | undefined;
}

export interface ShellDeps<T> {
  get(key: string): T | undefined;
  /** Whether an object is this controller's (a VM of this node); others go to `orphan`. */
  owns?(obj: T): boolean;
  client: ResourceClient<T>;
  events: EventRecorder;
  log: Logger;
}

const deleting = (o: { metadata: { deletionTimestamp?: string } }) => o.metadata.deletionTimestamp !== undefined;

/**
 * The frame around every reconcile: fetch from the cache, finalizer in and out, one status writer,
 * the error policy (conditions Synced and Ready False with the failure's reason, phase Failed, one
 * Warning Event; terminal failures stop retries).
 */
export function reconcile<T extends KindObject<S>, S extends CommonStatus>(
  deps: ShellDeps<T>,
  r: Reconciler<T, S>,
): Reconcile {
  return async (key, signal) => {
    const cached = deps.get(key);
    if (!cached || (deps.owns && !deps.owns(cached))) return r.orphan ? r.orphan(key, signal, cached) : {};
    let current: T = cached;
    const status = new StatusWriter<S>(
      () => current,
      async (ops) => {
        current = (await deps.client.patchStatus(key, ops)) ?? current;
      },
    );
    const ctx: ReconcileContext<S> = {
      key,
      signal,
      log: deps.log.child({ key }),
      status,
      events: {
        normal: (reason, message) => deps.events.normal(current, reason, message),
        warning: (reason, message) => deps.events.warning(current, reason, message),
        emit: (e) => deps.events.record(current, e.type, e.reason, e.message),
      },
    };
    try {
      const action = await run(r, current, ctx, deps, key, (o) => (current = o));
      await status.flush();
      return action;
    } catch (err) {
      const failure = r.failure?.(err);
      if (!failure) throw err;
      status.conditions(
        condition("Synced", "False", failure.reason, failure.message),
        condition("Ready", "False", failure.reason, failure.message),
      );
      status.set({ phase: "Failed" } as Partial<S>);
      await status.flush({ terminal: failure.terminal });
      await ctx.events.warning(failure.reason, failure.message);
      throw failure.terminal ? new TerminalError(failure.message) : err;
    }
  };
}

async function run<T extends KindObject<S>, S extends CommonStatus>(
  r: Reconciler<T, S>,
  obj: T,
  ctx: ReconcileContext<S>,
  deps: ShellDeps<T>,
  key: string,
  update: (obj: T) => void,
): Promise<Action> {
  const held = r.finalizer !== undefined && obj.metadata.finalizers?.includes(r.finalizer);
  if ((r.needsCleanup ?? deleting)(obj)) {
    if (!held) return r.released ? r.released(obj, ctx) : {};
    const action = r.cleanup ? await r.cleanup(obj, ctx) : {};
    if (action.requeueAfterMs !== undefined) return action;
    await ctx.status.flush();
    await deps.client.patch(key, removeFinalizerPatch(obj.metadata.finalizers, r.finalizer!));
    return action;
  }
  if (r.finalizer && !held) {
    // On before anything exists on the host; later writes build on the patched object.
    const patched = await deps.client.patch(key, addFinalizerPatch(obj.metadata.finalizers, r.finalizer));
    if (patched) update((obj = patched));
  }
  return r.apply(obj, ctx);
}
