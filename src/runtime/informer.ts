import * as k8s from "@kubernetes/client-node";
import type { Logger } from "pino";
import { setTimeout as sleep } from "node:timers/promises";

/** The fields every object has that the informer relies on. */
export interface KubeObject {
  metadata: { name: string; namespace?: string; resourceVersion?: string; uid?: string };
}

export const objectKey = (o: KubeObject): string =>
  o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name;

export interface InformerOptions {
  /** "" for the core API group (Nodes). */
  group: string;
  version: string;
  plural: string;
  /** The kind, needed to list core resources (group ""). */
  kind?: string;
  /** Only objects whose fields match, filtered by the API server ("spec.node=a", a CRD selectable field). */
  fieldSelector?: string;
  /** Server-side watch timeout: the watch is re-opened from the last resourceVersion after it. */
  watchTimeoutSeconds?: number;
  /** No event (bookmarks included) for this long means a silent stall: the watch is restarted. */
  silenceMs?: number;
  maxBackoffMs?: number;
}

/**
 * A cache of one resource kept by list + watch (client-node's Watch underneath), supervised:
 * - bookmarks keep the resume point fresh; a watch that ends (timeout, network, apiserver restart)
 *   is re-opened from the last resourceVersion, with backoff while it keeps failing;
 * - 410 Gone (the resume point was compacted away) relists, and deletions missed meanwhile are
 *   derived from the new list;
 * - a watchdog restarts a watch that went silent (client-node watches have stalled silently);
 * - replayed or older updates (same or lower resourceVersion) are ignored.
 * Every change calls `onChange(key, obj, old)` synchronously (obj undefined: deleted); handlers only enqueue.
 */
export class Informer<T extends KubeObject> {
  private readonly cache = new Map<string, T>();
  private resourceVersion = "";
  private stopped = false;
  private current: AbortController | undefined;
  private loop: Promise<void> | undefined;
  private synced!: () => void;
  /** Resolves once the first list is in the cache. */
  readonly hasSynced = new Promise<void>((resolve) => (this.synced = resolve));
  readonly stats = { lists: 0, watches: 0, events: 0, stalls: 0, gone: 0 };

  constructor(
    private readonly kc: k8s.KubeConfig,
    private readonly opts: InformerOptions,
    private readonly onChange: (key: string, obj: T | undefined, old: T | undefined) => void,
    private readonly log: Logger,
  ) {}

  get(key: string): T | undefined {
    return this.cache.get(key);
  }

  list(): T[] {
    return [...this.cache.values()];
  }

  start(): void {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.current?.abort();
    await this.loop;
  }

  private async run(): Promise<void> {
    let failures = 0;
    let needList = true;
    while (!this.stopped) {
      try {
        if (needList) {
          await this.relist();
          needList = false;
        }
        const outcome = await this.watchOnce();
        if (outcome === "gone") {
          this.stats.gone++;
          needList = true;
        }
        failures = outcome === "failed" ? failures + 1 : 0;
      } catch (err) {
        failures++;
        this.log.warn({ err, plural: this.opts.plural }, "list failed");
      }
      if (failures > 0 && !this.stopped) {
        const delay = Math.min(200 * 2 ** (failures - 1), this.opts.maxBackoffMs ?? 30_000);
        await sleep(delay * (0.75 + Math.random() / 2));
      }
    }
  }

  private async relist(): Promise<void> {
    const { group, version, plural, fieldSelector } = this.opts;
    const list = (await (group
      ? this.kc.makeApiClient(k8s.CustomObjectsApi).listClusterCustomObject({ group, version, plural, fieldSelector })
      : k8s.KubernetesObjectApi.makeApiClient(this.kc).list(
          version,
          this.opts.kind ?? "",
          undefined,
          undefined,
          undefined,
          undefined,
          fieldSelector,
        ))) as {
      items: T[];
      metadata: { resourceVersion: string };
    };
    this.stats.lists++;
    const seen = new Set<string>();
    for (const obj of list.items) {
      stripManagedFields(obj);
      const key = objectKey(obj);
      seen.add(key);
      const old = this.cache.get(key);
      this.cache.set(key, obj);
      if (old?.metadata.resourceVersion !== obj.metadata.resourceVersion) this.onChange(key, obj, old);
    }
    // Deleted while we were not watching: the list is the truth.
    for (const key of [...this.cache.keys()]) {
      const old = this.cache.get(key);
      if (old && !seen.has(key)) {
        this.cache.delete(key);
        this.onChange(key, undefined, old);
      }
    }
    this.resourceVersion = list.metadata.resourceVersion;
    this.synced();
  }

  /** One watch from the current resourceVersion until it ends; says how it ended. */
  private watchOnce(): Promise<"ended" | "gone" | "failed"> {
    const { group, version, plural } = this.opts;
    const silenceMs = this.opts.silenceMs ?? 90_000;
    return new Promise((resolve) => {
      let settled = false;
      let watchdog: NodeJS.Timeout | undefined;
      const finish = (how: "ended" | "gone" | "failed") => {
        if (settled) return;
        settled = true;
        clearTimeout(watchdog);
        this.current?.abort();
        resolve(how);
      };
      const feed = () => {
        clearTimeout(watchdog);
        watchdog = setTimeout(() => {
          this.stats.stalls++;
          this.log.warn({ plural, silenceMs }, "watch silent too long; restarting it");
          finish("failed");
        }, silenceMs);
      };
      feed();
      this.stats.watches++;
      new k8s.Watch(this.kc)
        .watch(
          group ? `/apis/${group}/${version}/${plural}` : `/api/${version}/${plural}`,
          {
            resourceVersion: this.resourceVersion,
            allowWatchBookmarks: true,
            timeoutSeconds: this.opts.watchTimeoutSeconds ?? 240,
            ...(this.opts.fieldSelector ? { fieldSelector: this.opts.fieldSelector } : {}),
          },
          (type: string, obj: T & { code?: number }) => {
            feed();
            this.stats.events++;
            if (type === "ERROR") return finish(obj.code === 410 ? "gone" : "failed");
            if (obj.metadata?.resourceVersion) this.resourceVersion = obj.metadata.resourceVersion;
            if (type === "BOOKMARK") return;
            this.apply(type, obj);
          },
          (err: unknown) => {
            const code = (err as { statusCode?: number } | null)?.statusCode;
            if (code === 410) finish("gone");
            else if (err && !this.stopped) {
              this.log.warn({ err, plural }, "watch ended with an error");
              finish("failed");
            } else finish("ended");
          },
        )
        .then(
          (controller) => {
            if (settled) controller.abort();
            else this.current = controller;
          },
          () => finish("failed"),
        );
    });
  }

  private apply(type: string, obj: T): void {
    stripManagedFields(obj);
    const key = objectKey(obj);
    const old = this.cache.get(key);
    if (type === "DELETED") {
      this.cache.delete(key);
      this.onChange(key, undefined, old ?? obj);
      return;
    }
    // A replayed or stale update (after a reconnect) must not roll the cache back.
    if (old && !newer(obj.metadata.resourceVersion, old.metadata.resourceVersion)) return;
    this.cache.set(key, obj);
    this.onChange(key, obj, old);
  }
}

/**
 * Server-side apply's bookkeeping (metadata.managedFields) is often the largest part of an object
 * and nothing here reads it: dropped before caching, as controller-runtime's
 * TransformStripManagedFields does.
 */
function stripManagedFields(obj: KubeObject): void {
  delete (obj.metadata as { managedFields?: unknown }).managedFields;
}

/** resourceVersions are opaque, but etcd's are integers: compare them as such when they are. */
function newer(a: string | undefined, b: string | undefined): boolean {
  if (!a || !b) return true;
  if (/^\d+$/.test(a) && /^\d+$/.test(b)) return BigInt(a) > BigInt(b);
  return a !== b;
}
