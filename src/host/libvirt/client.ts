import { MessageChannel, type Worker } from "node:worker_threads";
import { reviveError, siblingModule, startWorker, WorkerPool } from "../worker-pool.js";
import { LibvirtError, type LibvirtErrorKind } from "./errors.js";
import type { EventMessage } from "./events-worker.js";
import type { DomainInfo, GuestInfo, LibvirtEvent } from "./types.js";
import type { LibvirtOps } from "./worker.js";

/** Where a device change applies: the running domain, its persistent definition, or both. */
export interface DeviceScope {
  live: boolean;
  config?: boolean;
}

/** What the operator needs from a hypervisor; controllers see only this. */
export interface Hypervisor {
  readonly uri: string;
  capabilities(): Promise<string>;
  /** Domain capabilities XML for q35 under one virtualization type; fails when libvirt does not offer it. */
  domainCapabilities(virtType: "kvm" | "qemu"): Promise<string>;
  /** Starts a transient domain (gone once it stops, or when this client closes); for probes. */
  createTransient(xml: string, opts: { paused: boolean }): Promise<DomainInfo>;
  listDomains(): Promise<DomainInfo[]>;
  /** null when there is no such domain. */
  lookup(name: string): Promise<DomainInfo | null>;
  lookupByUuid(uuid: string): Promise<DomainInfo | null>;
  /** Defines or redefines a persistent domain (libvirt validates the XML). */
  define(xml: string): Promise<DomainInfo>;
  getXml(name: string, opts?: { inactive?: boolean }): Promise<string>;
  start(name: string): Promise<void>;
  /** Asks the guest to power off (ACPI); returns at once. */
  shutdown(name: string): Promise<void>;
  destroy(name: string): Promise<void>;
  /** Removes the definition with its NVRAM, managed save and snapshot metadata. */
  undefine(name: string): Promise<void>;
  setAutostart(name: string, on: boolean): Promise<void>;
  /** Device changes touch the persistent definition (unless `config: false`) and, with `live`, the running domain. */
  attachDevice(name: string, xml: string, scope: DeviceScope): Promise<void>;
  detachDevice(name: string, xml: string, scope: DeviceScope): Promise<void>;
  updateDevice(name: string, xml: string, scope: DeviceScope): Promise<void>;
  /** Grows a running domain's disk (QEMU resizes the RBD image itself). */
  blockResize(name: string, target: string, bytes: bigint): Promise<void>;
  /** What the guest's agent says of it (hostname, OS, addresses); fails when the agent does not answer. */
  guestInfo(name: string): Promise<GuestInfo>;
  defineSecret(xml: string): Promise<string>;
  setSecretValue(uuid: string, value: Uint8Array): Promise<void>;
  undefineSecret(uuid: string): Promise<void>;
  /** Domain lifecycle and guest agent events, and connection changes; returns the unsubscribe function. */
  onEvent(listener: (event: LibvirtEvent) => void): () => void;
  close(): Promise<void>;
}

/** The calls that change something on the host (counted by the agent's metrics). */
export const libvirtMutations = [
  "createTransient",
  "define",
  "start",
  "shutdown",
  "destroy",
  "undefine",
  "setAutostart",
  "attachDevice",
  "detachDevice",
  "updateDevice",
  "blockResize",
  "defineSecret",
  "setSecretValue",
  "undefineSecret",
] as const satisfies readonly (keyof Hypervisor)[];

const toError = reviveError(LibvirtError);

/** libvirt through worker threads; blocking calls never touch the event loop. */
export class LibvirtClient implements Hypervisor {
  private readonly pool: WorkerPool<LibvirtOps>;
  /** Guest agents answer in their own time (up to the agent timeout): their calls get a thread of their own. */
  private agentPool: WorkerPool<LibvirtOps> | undefined;
  private readonly listeners = new Set<(event: LibvirtEvent) => void>();
  private unsubscribeEvents: (() => void) | undefined;

  constructor(
    readonly uri: string,
    { workers = 2 }: { workers?: number } = {},
  ) {
    this.pool = new WorkerPool<LibvirtOps>(siblingModule("worker", import.meta.url), { uri }, workers, toError);
  }

  capabilities = () => this.pool.call("capabilities");
  domainCapabilities = (virtType: "kvm" | "qemu") => this.pool.call("domainCapabilities", virtType);
  createTransient = (xml: string, { paused }: { paused: boolean }) => this.pool.call("createTransient", xml, paused);
  listDomains = () => this.pool.call("listDomains");
  lookup = (name: string) => this.pool.call("lookup", name);
  lookupByUuid = (uuid: string) => this.pool.call("lookupByUuid", uuid);
  define = (xml: string) => this.pool.call("define", xml);
  getXml = (name: string, { inactive = false }: { inactive?: boolean } = {}) =>
    this.pool.call("getXml", name, inactive);
  start = (name: string) => this.pool.call("start", name);
  shutdown = (name: string) => this.pool.call("shutdown", name);
  destroy = (name: string) => this.pool.call("destroy", name);
  undefine = (name: string) => this.pool.call("undefine", name);
  setAutostart = (name: string, on: boolean) => this.pool.call("setAutostart", name, on);
  attachDevice = (name: string, xml: string, { live, config = true }: DeviceScope) =>
    this.pool.call("attachDevice", name, xml, live, config);
  detachDevice = (name: string, xml: string, { live, config = true }: DeviceScope) =>
    this.pool.call("detachDevice", name, xml, live, config);
  updateDevice = (name: string, xml: string, { live, config = true }: DeviceScope) =>
    this.pool.call("updateDevice", name, xml, live, config);
  blockResize = (name: string, target: string, bytes: bigint) => this.pool.call("blockResize", name, target, bytes);
  guestInfo = (name: string) => {
    this.agentPool ??= new WorkerPool<LibvirtOps>(
      siblingModule("worker", import.meta.url),
      { uri: this.uri },
      1,
      toError,
    );
    return this.agentPool.call("guestInfo", name);
  };
  defineSecret = (xml: string) => this.pool.call("defineSecret", xml);
  setSecretValue = (uuid: string, value: Uint8Array) => this.pool.call("setSecretValue", uuid, value);
  undefineSecret = (uuid: string) => this.pool.call("undefineSecret", uuid);

  onEvent(listener: (event: LibvirtEvent) => void): () => void {
    this.listeners.add(listener);
    this.unsubscribeEvents ??= eventLoop.subscribe(this.uri, (e) => {
      for (const l of this.listeners) l(e);
    });
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0) {
        this.unsubscribeEvents?.();
        this.unsubscribeEvents = undefined;
      }
    };
  }

  async close(): Promise<void> {
    this.unsubscribeEvents?.();
    this.unsubscribeEvents = undefined;
    this.listeners.clear();
    await Promise.all([this.pool.close(), this.agentPool?.close(), eventLoop.exited]);
  }
}

/** Swallows the given kinds of LibvirtError (for example "already stopped" during a stop). */
export const ignoreKinds =
  (...kinds: LibvirtErrorKind[]) =>
  (err: unknown): void => {
    if (!(err instanceof LibvirtError && kinds.includes(err.kind))) throw err;
  };

/** The process-wide event loop thread, started on the first subscription, stopped after the last. */
const eventLoop = {
  worker: undefined as Worker | undefined,
  port: undefined as MessageChannel["port1"] | undefined,
  byUri: new Map<string, Set<(e: LibvirtEvent) => void>>(),
  /** Settles once the last stopped loop thread has exited. */
  exited: Promise.resolve(),

  subscribe(uri: string, listener: (e: LibvirtEvent) => void): () => void {
    if (!this.worker) {
      const { port1, port2 } = new MessageChannel();
      this.worker = startWorker(siblingModule("events-worker", import.meta.url), { port: port2 }, [port2]);
      this.worker.unref();
      port1.on("message", ({ uri: u, event }: EventMessage) => {
        for (const l of this.byUri.get(u) ?? []) l(event);
      });
      port1.unref();
      this.port = port1;
    }
    let set = this.byUri.get(uri);
    if (!set) {
      set = new Set();
      this.byUri.set(uri, set);
      this.port!.postMessage({ subscribe: uri });
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size > 0) return;
      this.byUri.delete(uri);
      this.port?.postMessage({ unsubscribe: uri });
      if (this.byUri.size === 0 && this.worker && this.port) {
        // The port stays open until the loop has read "stop" and the thread is gone: a worker still
        // inside virEventRunDefaultImpl at process exit holds the exit up (Node joins its thread).
        const { worker, port } = this;
        this.exited = new Promise<void>((resolve) => worker.once("exit", () => resolve())).finally(() => port.close());
        port.postMessage({ stop: true });
        this.worker = undefined;
        this.port = undefined;
      }
    };
  },
};
