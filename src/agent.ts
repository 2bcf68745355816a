import type * as k8s from "@kubernetes/client-node";
import type { Logger } from "pino";
import { setupBridges } from "./controllers/bridge.js";
import { setupFencing } from "./controllers/fence.js";
import { setupVirtualMachines } from "./controllers/virtualmachine.js";
import { setupVolumes, type PoolPolicy } from "./controllers/volume.js";
import type { ProbeOptions } from "./host/accel/probe.js";
import { bridgeMutations, LinuxBridges } from "./host/bridge/bridges.js";
import { LocalCloudInitMedia } from "./host/cloudinit/media.js";
import { LibvirtClient, libvirtMutations } from "./host/libvirt/client.js";
import { RbdClient, rbdMutations } from "./host/rbd/client.js";
import { componentLogger } from "./log.js";
import { Metrics } from "./metrics.js";
import { NodeFactsSource } from "./node.js";
import { EventRecorder } from "./runtime/events.js";
import { LeaderElector } from "./runtime/leader.js";
import { Manager } from "./runtime/manager.js";
import { secretReader } from "./runtime/secrets.js";

export interface AgentConfig {
  kubeConfig: k8s.KubeConfig;
  /** The Kubernetes Node this agent runs for. */
  node: string;
  libvirtUri: string;
  ceph: { confPath: string; user: string; keyringPath: string; monitors: { host: string; port: number }[] };
  /** Network namespace the node's bridges live in (tests); undefined: the agent's own. */
  netns?: string;
  /** Where cloud-init seed images and probe files are written (QEMU must be able to read it). */
  stateDir: string;
  workers: number;
  /** Threads (each with its own connection) for libvirt calls, and as many for RBD calls. */
  hostWorkers: number;
  resyncSeconds: number;
  /** Every cached object is looked at again this often, whatever its last reconcile said. */
  syncPeriodSeconds: number;
  pools: PoolPolicy;
  lease: { namespace: string; name: string; durationSeconds: number };
  /** How the node's accelerator and default CPU are chosen; `guestDir`: the probe guest. */
  probe: ProbeOptions & { guestDir?: string };
  /** Where consoles with a password listen: "socket" (default) or an address of the node. */
  consoleListen: string;
}

/**
 * One agent per node, composed: host adapters (counted for metrics), the node's facts, a manager
 * with the three controllers (Volume only while this agent holds the lease), leader election.
 * The controllers declare what they watch; this file only puts them together.
 */
export class Agent {
  readonly metrics: Metrics;
  private readonly log: Logger;
  private readonly hosts: ReturnType<typeof hostAdapters>;
  private readonly nodeFacts: NodeFactsSource;
  private readonly manager: Manager;
  private readonly elector: LeaderElector;
  private readonly events: EventRecorder;
  private readonly unsubscribe: (() => void)[] = [];
  private synced = false;
  private libvirtConnected = true;

  constructor(private readonly config: AgentConfig) {
    const { kubeConfig: kc, node } = config;
    this.log = componentLogger("agent").child({ node });
    const events = (this.events = new EventRecorder(kc, "kaktus-operator", node, componentLogger("events")));
    const metrics = (this.metrics = new Metrics({
      queueDepths: () => this.manager.queueDepths(),
      apiWrites: () => ({ ...this.manager.apiWrites(), nodes: this.nodeFacts.writes, events: events.writes }),
      informers: () => this.manager.informerStats(),
    }));
    const hosts = (this.hosts = hostAdapters(config, metrics));
    this.nodeFacts = new NodeFactsSource({
      node,
      hypervisor: hosts.libvirt,
      ceph: config.ceph,
      probe: { ...config.probe, workDir: config.stateDir },
      kubeConfig: kc,
      metrics,
      log: componentLogger("node").child({ node }),
    });
    const resyncMs = config.resyncSeconds * 1000;
    const manager = (this.manager = new Manager(kc, {
      log: componentLogger("runtime").child({ node }),
      workers: config.workers,
      syncPeriodMs: config.syncPeriodSeconds * 1000,
      events,
      onReconciled: (controller) => metrics.reconciled(controller),
    }));
    const [media, readSecret, nodeFacts] = [new LocalCloudInitMedia(config.stateDir), secretReader(kc), this.nodeFacts];
    const { libvirt: hypervisor, network, rbd: store } = hosts;
    const { consoleListen } = config;
    setupVirtualMachines(manager, {
      node,
      hypervisor,
      network,
      store,
      media,
      readSecret,
      nodeFacts,
      resyncMs,
      consoleListen,
    });
    setupBridges(manager, { node, network, resyncMs });
    const fence = () => this.elector.fence();
    setupVolumes(manager, { store, policy: config.pools, resyncMs, fence });
    setupFencing(manager, { store, fence });
    const leading = (on: boolean) => {
      metrics.leader.set(on ? 1 : 0);
      if (on) manager.startLeading();
      else void manager.stopLeading();
    };
    this.elector = new LeaderElector(
      kc,
      { ...config.lease, identity: node, leaseDurationSeconds: config.lease.durationSeconds },
      { onStartedLeading: () => leading(true), onStoppedLeading: () => leading(false) },
      componentLogger("leader"),
    );
  }

  /** For /readyz: every informer has listed once and libvirt is connected. */
  get ready(): boolean {
    return this.synced && this.libvirtConnected;
  }

  /**
   * Starts watching and reconciling. The node is probed first (its accelerator and default CPU); a
   * choice forced by flag that does not work here rejects, and the agent should exit.
   */
  async start(): Promise<void> {
    try {
      await this.startParts();
    } catch (err) {
      // Host threads still loading their native modules when the process exits abort it.
      await this.stop().catch((e: unknown) => this.log.warn({ err: e }, "stop after a failed start"));
      throw err;
    }
  }

  private async startParts(): Promise<void> {
    const probed = this.nodeFacts.probeAtStart();
    this.unsubscribe.push(
      this.nodeFacts.watch(),
      this.hosts.libvirt.onEvent((e) => {
        if (e.type === "lifecycle" || e.type === "agent") return;
        this.libvirtConnected = e.type === "connected";
        if (e.type === "connected") this.log.info("libvirt connected");
        else this.log.warn({ reason: e.reason }, "libvirt connection lost; calls retry until it is back");
      }),
    );
    await probed;
    await this.manager.start();
    this.synced = true;
    this.elector.start();
    this.log.info("agent started");
  }

  /** Graceful stop: no new work, in-flight reconciles finish, the lease is released. */
  async stop(): Promise<void> {
    for (const u of this.unsubscribe) u();
    // The Volume controller drains before the lease is released: no two leaders ever act at once.
    await Promise.all([this.manager.stop(), this.elector.stopCampaign()]);
    await Promise.all([this.elector.stop(), this.events.flush()]);
    this.hosts.network.close();
    await Promise.all([this.hosts.libvirt.close(), this.hosts.rbd.close()]);
    this.log.info("agent stopped");
  }
}

/** The host adapters, their mutating calls counted per host and operation. */
function hostAdapters(config: AgentConfig, metrics: Metrics) {
  const { user, keyringPath, confPath } = config.ceph;
  const workers = config.hostWorkers;
  return {
    libvirt: metrics.counted("libvirt", new LibvirtClient(config.libvirtUri, { workers }), libvirtMutations),
    rbd: metrics.counted("rbd", new RbdClient({ confPath, user, keyringPath }, { workers }), rbdMutations),
    network: metrics.counted("bridge", new LinuxBridges(config.netns), bridgeMutations),
  };
}
