import type * as k8s from "@kubernetes/client-node";
import type { Logger } from "pino";
import { ResourceClient } from "./client.js";
import { Controller, type ReconcileResult } from "./controller.js";
import type { EventRecorder } from "./events.js";
import type { EventFilter } from "./filters.js";
import { Informer, objectKey, type KubeObject } from "./informer.js";
import { reconcile, type CommonStatus, type KindObject, type Reconciler } from "./reconciler.js";

/** A resource the manager can watch. `group` "" is the core API (Nodes). */
export interface Kind {
  group: string;
  version: string;
  plural: string;
  kind: string;
}

type Listener<T> = (obj: T | undefined, old: T | undefined, key: string) => void;

export interface InformerScope {
  /** Only the objects whose fields match, filtered by the API server ("spec.node=a"). */
  fieldSelector?: string;
  /**
   * Read only by leader-elected controllers: started when this agent first leads (and kept), so an
   * agent that never leads never caches it.
   */
  leaderOnly?: boolean;
}

/**
 * One informer per kind, shared by every controller that reads or watches the kind, with named
 * indexes (controller-runtime's field indexes): "which VMs name this Volume" is a lookup, not a scan.
 */
export class SharedInformer<T extends KubeObject> {
  readonly informer: Informer<T>;
  private readonly listeners: Listener<T>[] = [];
  private readonly indexes = new Map<string, { values: (obj: T) => string[]; keys: Map<string, Set<string>> }>();
  leaderOnly: boolean;

  constructor(kc: k8s.KubeConfig, kind: Kind, scope: InformerScope, log: Logger) {
    this.leaderOnly = scope.leaderOnly ?? false;
    this.informer = new Informer<T>(
      kc,
      {
        ...kind,
        ...(kind.group ? {} : { kind: kind.kind }),
        ...(scope.fieldSelector ? { fieldSelector: scope.fieldSelector } : {}),
      },
      (key, obj, old) => {
        for (const index of this.indexes.values()) {
          for (const v of old ? index.values(old) : []) index.keys.get(v)?.delete(key);
          for (const v of obj ? index.values(obj) : []) {
            if (!index.keys.has(v)) index.keys.set(v, new Set());
            index.keys.get(v)!.add(key);
          }
        }
        for (const listener of this.listeners) listener(obj, old, key);
      },
      log,
    );
  }

  get = (key: string): T | undefined => this.informer.get(key);
  list = (): T[] => this.informer.list();

  /** Adds an index; declared before the informer starts, so every object passes through it. */
  addIndex(name: string, values: (obj: T) => string[]): void {
    if (!this.indexes.has(name)) this.indexes.set(name, { values, keys: new Map() });
  }

  /** The cached objects whose index `name` holds `value`. */
  byIndex(name: string, value: string): T[] {
    const index = this.indexes.get(name);
    if (!index) throw new Error(`no index ${name}`);
    return [...(index.keys.get(value) ?? [])].flatMap((key) => this.informer.get(key) ?? []);
  }

  onChange(listener: Listener<T>): void {
    this.listeners.push(listener);
  }
}

export interface ManagerOptions {
  log: Logger;
  workers: number;
  /** Where every controller's Events go. */
  events: EventRecorder;
  /**
   * Every cached object of every running controller is queued again this often (jittered by ±10 %),
   * as controller-runtime's SyncPeriod does: an object whose reconcile gave up (a terminal error)
   * or asked for no requeue is looked at again. Undefined: never.
   */
  syncPeriodMs?: number;
  /** Told about every finished reconcile, by controller (metrics). */
  onReconciled?: (controller: string) => (result: ReconcileResult, seconds: number) => void;
}

/**
 * Owns the shared informers and the controllers, in the shape of controller-runtime's manager:
 * controllers declare what they read (`for`, `watches`, `watchesHost`) through a builder, the manager
 * starts the informers once, waits for their caches, and runs the controllers; leader-elected ones
 * only while the agent leads.
 */
export class Manager {
  private readonly shared = new Map<string, SharedInformer<KubeObject>>();
  private readonly clients = new Map<string, ResourceClient<unknown>>();
  private readonly controllers: Registration[] = [];
  private leading = false;
  private started = false;
  private syncTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly kc: k8s.KubeConfig,
    private readonly options: ManagerOptions,
  ) {}

  /**
   * The shared informer of a kind in a scope: one per kind and field selector. Leader-only unless
   * some caller needs it always.
   */
  informer<T extends KubeObject>(kind: Kind, scope: InformerScope = {}): SharedInformer<T> {
    const name = scope.fieldSelector ? `${kind.plural}{${scope.fieldSelector}}` : kind.plural;
    let shared = this.shared.get(name);
    if (!shared) {
      shared = new SharedInformer<KubeObject>(this.kc, kind, scope, this.options.log.child({ informer: name }));
      this.shared.set(name, shared);
    }
    if (!scope.leaderOnly) shared.leaderOnly = false;
    return shared as unknown as SharedInformer<T>;
  }

  /** The only writer to the API for one kind (guarded patches, counted). */
  client<T>(kind: Kind): ResourceClient<T> {
    let client = this.clients.get(kind.plural);
    if (!client)
      this.clients.set(
        kind.plural,
        (client = new ResourceClient<unknown>(this.kc, kind, this.options.log.child({ client: kind.plural }))),
      );
    return client as ResourceClient<T>;
  }

  /** API writes by resource, for metrics. */
  apiWrites(): Record<string, number> {
    return Object.fromEntries([...this.clients].map(([plural, c]) => [plural, c.writes]));
  }

  get events(): EventRecorder {
    return this.options.events;
  }

  /** A controller named `name` whose reconciles get keys of `kind` (its `for`), cached in `scope`. */
  controller<T extends KubeObject>(name: string, kind: Kind, scope: InformerScope = {}): ControllerBuilder<T> {
    return new ControllerBuilder<T>(this, name, kind, scope, (entry) => this.controllers.push(entry));
  }

  /** Informer statistics by resource, for the watch-restart metric. */
  informerStats(): Record<string, Informer<KubeObject>["stats"]> {
    return Object.fromEntries([...this.shared].map(([plural, s]) => [plural, s.informer.stats]));
  }

  queueDepths(): Record<string, number> {
    return Object.fromEntries(this.controllers.map(({ controller }) => [controller.name, controller.queue.length]));
  }

  /** Starts the informers of `leaderOnly` (false: every one the agent always needs); resolves once they have listed. */
  private startInformers(leaderOnly: boolean): Promise<void> {
    const informers = [...this.shared.values()].filter((s) => s.leaderOnly === leaderOnly);
    for (const s of informers) s.informer.start();
    return Promise.all(informers.map((s) => s.informer.hasSynced)).then(() => undefined);
  }

  /** Starts the informers every agent needs; once they have listed, starts the controllers that need no leadership. */
  async start(): Promise<void> {
    await this.startInformers(false);
    this.started = true;
    for (const c of this.controllers) if (!c.leaderElected) this.run(c);
    if (this.leading) await this.runLeaderElected();
    this.scheduleSync();
  }

  /** The leader's own informers first (started once, kept afterwards), then its controllers. */
  private async runLeaderElected(): Promise<void> {
    await this.startInformers(true);
    if (this.leading) for (const c of this.controllers) if (c.leaderElected && !c.running) this.run(c);
  }

  private scheduleSync(): void {
    const period = this.options.syncPeriodMs;
    if (!period) return;
    this.syncTimer = setTimeout(
      () => {
        for (const c of this.controllers) if (c.running) c.sweep();
        this.scheduleSync();
      },
      period * (0.9 + Math.random() * 0.2),
    );
    this.syncTimer.unref();
  }

  /** Leadership gained: the leader-elected controllers start, with every key of their kind queued. */
  startLeading(): void {
    this.leading = true;
    if (this.started) void this.runLeaderElected();
  }

  /** Leadership lost: the leader-elected controllers stop and drain their reconciles in flight. */
  async stopLeading(): Promise<void> {
    this.leading = false;
    await Promise.all(this.controllers.filter((c) => c.leaderElected).map((c) => this.halt(c)));
  }

  /** Stops every controller (reconciles in flight finish), then the informers. */
  async stop(): Promise<void> {
    clearTimeout(this.syncTimer);
    for (const c of this.controllers) for (const u of c.unsubscribe.splice(0)) u();
    await Promise.all(this.controllers.map((c) => this.halt(c)));
    await Promise.all([...this.shared.values()].map((s) => s.informer.stop()));
  }

  /** Starts a controller with every key it owns queued (the startup sweep of the cache). */
  private run(entry: Registration): void {
    entry.running = true;
    entry.controller.start();
    if (!entry.unsubscribe.length) entry.unsubscribe.push(...entry.connectHost());
    entry.sweep();
  }

  private async halt(entry: Registration): Promise<void> {
    entry.running = false;
    await entry.controller.stop();
  }

  get log(): Logger {
    return this.options.log;
  }

  /** For the builder: a fresh Controller for a name, with the manager's options. */
  newController(name: string, reconcile: ConstructorParameters<typeof Controller>[1]): Controller {
    return new Controller(name, reconcile, this.options.log.child({ controller: name }), {
      workers: this.options.workers,
      ...(this.options.onReconciled ? { onReconciled: this.options.onReconciled(name) } : {}),
    });
  }
}

interface Registration {
  controller: Controller;
  leaderElected: boolean;
  running?: boolean;
  /** Queues every key the controller owns. */
  sweep: () => void;
  /** Subscribes to the host event sources (at the first start); returns their unsubscribes. */
  connectHost: () => (() => void)[];
  /** Host event subscriptions, ended when the manager stops. */
  unsubscribe: (() => void)[];
}

/** Keys to reconcile when a watched object changed: from an index, usually. */
export type MapToKeys<U> = (obj: U, old: U | undefined) => Iterable<string>;

/**
 * Declares a controller next to its reads, as controller-runtime's builder does: the primary kind
 * (`for`, with an event filter and an ownership test), other kinds it reads (`watches`, mapped to
 * primary keys), host event sources (`watchesHost`), and whether it runs only on the leader.
 */
export class ControllerBuilder<T extends KubeObject> {
  private readonly wiring: ((enqueue: (key: string) => void) => void)[] = [];
  private readonly hostSources: ((enqueue: (key: string) => void) => () => void)[] = [];
  private leaderOnly = false;
  private owns: (obj: T) => boolean = () => true;

  private readonly primary: SharedInformer<T>;

  constructor(
    private readonly manager: Manager,
    private readonly name: string,
    private readonly kind: Kind,
    scope: InformerScope,
    private readonly register: (entry: Registration) => void,
  ) {
    this.primary = manager.informer<T>(kind, scope);
  }

  /**
   * The primary kind: a change passing `filter` enqueues the object's key when `owns` says it is
   * this controller's (before or after the change). Deletions always enqueue: the reconcile may
   * have host objects to clean up for a key whose object is gone.
   */
  for(opts: { filter?: EventFilter<T>; owns?: (obj: T) => boolean } = {}): this {
    const { filter, owns } = opts;
    if (owns) this.owns = owns;
    this.wiring.push((enqueue) =>
      this.primary.onChange((obj, old, key) => {
        if (!obj) return enqueue(key);
        if (!this.owns(obj) && !(old && this.owns(old))) return;
        if (!filter || filter(obj, old)) enqueue(key);
      }),
    );
    return this;
  }

  /** Another kind this controller reads: its changes that pass `filter` enqueue the keys `map` gives. */
  watches<U extends KubeObject>(informer: SharedInformer<U>, map: MapToKeys<U>, filter?: EventFilter<U>): this {
    this.wiring.push((enqueue) =>
      informer.onChange((obj, old) => {
        if (obj && filter && !filter(obj, old)) return;
        for (const key of map((obj ?? old)!, obj ? old : undefined)) enqueue(key);
      }),
    );
    return this;
  }

  /**
   * A host event source (libvirt lifecycle events, link changes), subscribed when the controller
   * first starts; `subscribe` returns its unsubscribe.
   */
  watchesHost(subscribe: (enqueue: (key: string) => void) => () => void): this {
    this.hostSources.push(subscribe);
    return this;
  }

  /** Runs only while this agent holds the lease; every owned key is queued when it starts. */
  leaderElected(): this {
    this.leaderOnly = true;
    return this;
  }

  /**
   * Completes the controller with its logic; the runtime's shell (./reconciler.ts) fetches the
   * object, handles the finalizer, writes status once and applies the error policy.
   */
  reconcile<S extends CommonStatus>(r: Reconciler<T & KindObject<S>, S>): Controller {
    const { manager } = this;
    const shell = reconcile<T & KindObject<S>, S>(
      {
        get: (key) => this.primary.get(key) as (T & KindObject<S>) | undefined,
        owns: this.owns,
        client: manager.client<T & KindObject<S>>(this.kind),
        events: manager.events,
        log: manager.log.child({ controller: this.name }),
      },
      r,
    );
    const controller = manager.newController(this.name, shell);
    const enqueue = (key: string) => controller.enqueue(key);
    for (const wire of this.wiring) wire(enqueue);
    const sweep = () => {
      for (const obj of this.primary.list()) if (this.owns(obj)) enqueue(objectKey(obj));
    };
    const connectHost = () => this.hostSources.map((subscribe) => subscribe(enqueue));
    this.register({ controller, leaderElected: this.leaderOnly, sweep, connectHost, unsubscribe: [] });
    return controller;
  }
}
