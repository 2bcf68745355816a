import * as k8s from "@kubernetes/client-node";
import type { Logger } from "pino";
import { type Bridge } from "./api/bridge.js";
import { group, version } from "./api/schema.js";
import type { VirtualMachine } from "./api/virtualmachine.js";
import type { Volume } from "./api/volume.js";
import { reconcileBridge, type NodeLabels } from "./controllers/bridge.js";
import { reconcileVirtualMachine } from "./controllers/virtualmachine.js";
import { reconcileVolume, type PoolPolicy } from "./controllers/volume.js";
import { domainKey } from "./domain/desired.js";
import { StartBackoff } from "./controllers/startbackoff.js";
import { ProbeError, type ProbeOptions } from "./host/accel/probe.js";
import { LinuxBridges, type BridgeHost } from "./host/bridge/bridges.js";
import { LocalCloudInitMedia } from "./host/cloudinit/media.js";
import { LibvirtClient, type Hypervisor } from "./host/libvirt/client.js";
import { RbdClient, type BlockStore } from "./host/rbd/client.js";
import { componentLogger } from "./log.js";
import { Metrics } from "./metrics.js";
import { NodeFactsSource } from "./node.js";
import { ResourceClient } from "./runtime/client.js";
import { Controller, type Reconcile } from "./runtime/controller.js";
import { EventRecorder } from "./runtime/events.js";
import { Informer, objectKey, type KubeObject } from "./runtime/informer.js";
import { LeaderElector } from "./runtime/leader.js";

export interface AgentConfig {
  kubeConfig: k8s.KubeConfig;
  /** The Kubernetes Node this agent runs for. */
  node: string;
  libvirtUri: string;
  ceph: { confPath: string; user: string; keyringPath: string; monitors: { host: string; port: number }[] };
  /** Network namespace the node's bridges live in (tests); undefined: the agent's own. */
  netns?: string;
  /** Where cloud-init seed images are written (QEMU must be able to read it). */
  stateDir: string;
  workers: number;
  resyncSeconds: number;
  pools: PoolPolicy;
  lease: { namespace: string; name: string; durationSeconds: number };
  /** How the node's accelerator and default CPU are chosen; `guestDir`: the probe guest (kernel + initramfs). */
  probe: ProbeOptions & { guestDir?: string };
}

type NodeObject = KubeObject & { metadata: { labels?: Record<string, string> } };

/**
 * One agent per node: informers on the three kinds and on Nodes, a controller per kind (Volume
 * only while this agent holds the lease), host events turned into keys, and a startup sweep.
 * Everything here only wires: the reconcilers decide, the runtime retries.
 */
export class Agent {
  readonly metrics: Metrics;
  private readonly log: Logger;
  private readonly hypervisor: Hypervisor;
  private readonly store: BlockStore;
  private readonly bridgesHost: BridgeHost;
  private readonly events: EventRecorder;
  private readonly clients: {
    vms: ResourceClient<VirtualMachine>;
    volumes: ResourceClient<Volume>;
    bridges: ResourceClient<Bridge>;
  };
  private readonly informers: {
    vms: Informer<VirtualMachine>;
    volumes: Informer<Volume>;
    bridges: Informer<Bridge>;
    nodes: Informer<NodeObject>;
  };
  private readonly vmController: Controller;
  private readonly bridgeController: Controller;
  private volumeController: Controller | undefined;
  private readonly elector: LeaderElector;
  private readonly shutdownDeadlines = new Map<string, number>();
  private readonly unsubscribe: (() => void)[] = [];
  private readonly nodeFacts: NodeFactsSource;
  private readonly nodeLabelsSeen = new Map<string, string>();
  private readonly starts = new StartBackoff();
  private synced = false;
  private libvirtConnected = true;

  constructor(private readonly config: AgentConfig) {
    const kc = config.kubeConfig;
    this.log = componentLogger("agent").child({ node: config.node });
    this.metrics = new Metrics({
      queueDepths: () => ({
        virtualmachine: this.vmController.queue.length,
        bridge: this.bridgeController.queue.length,
        volume: this.volumeController?.queue.length ?? 0,
      }),
      apiWrites: () => ({
        virtualmachines: this.clients.vms.writes,
        volumes: this.clients.volumes.writes,
        bridges: this.clients.bridges.writes,
        nodes: this.nodeFacts.writes,
        events: this.events.writes,
      }),
      informers: () => Object.fromEntries(Object.entries(this.informers).map(([k, i]) => [k, i.stats])),
    });
    const m = this.metrics;
    this.hypervisor = m.counted("libvirt", new LibvirtClient(config.libvirtUri), [
      "createTransient",
      "define",
      "start",
      "shutdown",
      "stop",
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
    ]);
    this.store = m.counted(
      "rbd",
      new RbdClient({ confPath: config.ceph.confPath, user: config.ceph.user, keyringPath: config.ceph.keyringPath }),
      [
        "create",
        "grow",
        "createSnapshot",
        "protectSnapshot",
        "unprotectSnapshot",
        "removeSnapshot",
        "clone",
        "flatten",
        "copy",
        "remove",
      ],
    );
    this.bridgesHost = m.counted("bridge", new LinuxBridges(config.netns), [
      "createBridge",
      "updateBridge",
      "addPort",
      "removePort",
      "createVlan",
      "deleteLink",
    ]);
    this.events = new EventRecorder(kc, "kaktus-operator", config.node, componentLogger("events"));
    this.nodeFacts = new NodeFactsSource({
      node: config.node,
      hypervisor: this.hypervisor,
      ceph: config.ceph,
      probe: { ...config.probe, workDir: config.stateDir },
      kubeConfig: kc,
      metrics: m,
      log: componentLogger("node").child({ node: config.node }),
    });
    const ref = (plural: string) => ({ group, version, plural });
    this.clients = {
      vms: new ResourceClient(kc, ref("virtualmachines")),
      volumes: new ResourceClient(kc, ref("volumes")),
      bridges: new ResourceClient(kc, ref("bridges")),
    };

    const vmLog = componentLogger("virtualmachine");
    const bridgeLog = componentLogger("bridge");
    const resyncMs = config.resyncSeconds * 1000;
    const media = new LocalCloudInitMedia(config.stateDir);
    const core = kc.makeApiClient(k8s.CoreV1Api);
    this.vmController = this.controller("virtualmachine", vmLog, (key) =>
      reconcileVirtualMachine(key, {
        node: config.node,
        hypervisor: this.hypervisor,
        links: this.bridgesHost,
        media,
        vms: this.clients.vms,
        getVm: (k) => this.informers.vms.get(k),
        getVolume: (k) => this.informers.volumes.get(k),
        getBridge: (name) => this.informers.bridges.get(name),
        readUserDataSecret: async (namespace, name) => {
          const secret = await core.readNamespacedSecret({ namespace, name }).catch((err: { code?: number }) => {
            if (err.code === 404) return undefined;
            throw err;
          });
          const data = secret?.data?.userdata;
          return data === undefined ? undefined : Buffer.from(data, "base64").toString("utf8");
        },
        nodeFacts: () => this.nodeFacts.get(),
        shutdownDeadlines: this.shutdownDeadlines,
        starts: this.starts,
        events: this.events,
        log: vmLog.child({ key }),
        resyncMs,
      }),
    );
    this.bridgeController = this.controller("bridge", bridgeLog, (key) =>
      reconcileBridge(key, {
        node: config.node,
        host: this.bridgesHost,
        bridges: this.clients.bridges,
        getBridge: (k) => this.informers.bridges.get(k),
        nodes: () => this.nodeList(),
        virtualMachines: () => this.localVms(),
        events: this.events,
        log: bridgeLog.child({ key }),
        resyncMs,
      }),
    );

    const informer = <T extends KubeObject>(plural: string, onChange: (key: string, obj: T | undefined) => void) =>
      new Informer<T>(kc, { group, version, plural }, onChange, componentLogger("informer"));
    this.informers = {
      vms: informer<VirtualMachine>("virtualmachines", (key, vm) => this.onVmChange(key, vm)),
      volumes: informer<Volume>("volumes", (key, volume) => {
        this.volumeController?.enqueue(key);
        const [ns, name] = key.split("/", 2);
        for (const vm of this.localVms())
          if (vm.metadata.namespace === ns && vm.spec.disks?.some((d) => d.volumeRef === name))
            this.vmController.enqueue(objectKey(vm));
        // A Volume copied from this one waits for it to be Ready.
        if (volume)
          for (const v of this.informers.volumes.list())
            if (v.spec.source?.volume) this.volumeController?.enqueue(objectKey(v));
      }),
      bridges: informer<Bridge>("bridges", (key) => {
        this.bridgeController.enqueue(key);
        for (const vm of this.localVms())
          if (vm.spec.interfaces?.some((i) => i.bridgeRef === key)) this.vmController.enqueue(objectKey(vm));
      }),
      nodes: new Informer<NodeObject>(
        kc,
        { group: "", version: "v1", plural: "nodes", kind: "Node" },
        (key, node) => this.onNodeChange(key, node),
        componentLogger("informer"),
      ),
    };
    this.elector = new LeaderElector(
      kc,
      {
        namespace: config.lease.namespace,
        name: config.lease.name,
        identity: config.node,
        leaseDurationSeconds: config.lease.durationSeconds,
      },
      { onStartedLeading: () => this.startVolumes(), onStoppedLeading: () => void this.stopVolumes() },
      componentLogger("leader"),
    );
  }

  private controller(name: string, log: Logger, reconcile: Reconcile): Controller {
    return new Controller(name, reconcile, log, {
      workers: this.config.workers,
      onReconciled: this.metrics.reconciled(name),
    });
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
    for (const i of Object.values(this.informers)) i.start();
    const probed = this.nodeFacts.get().then(
      () => undefined,
      (err: unknown) => err,
    );
    this.unsubscribe.push(
      this.hypervisor.onEvent((e) => {
        if (e.type === "lifecycle") {
          const key = domainKey(e.name);
          if (key) this.vmController.enqueue(key);
          return;
        }
        const reconnected = e.type === "connected" && !this.libvirtConnected;
        this.libvirtConnected = e.type === "connected";
        if (e.type === "connected") this.log.info("libvirt connected");
        else this.log.warn({ reason: e.reason }, "libvirt connection lost; calls retry until it is back");
        if (!reconnected) return;
        // Everything may have changed while libvirtd was away (even its KVM): look at every VM, probe again.
        const everyVm = () => {
          for (const vm of this.localVms()) this.vmController.enqueue(objectKey(vm));
        };
        everyVm();
        this.nodeFacts.refresh(everyVm);
      }),
      // A link change may be a bridge gone (Bridges repair it) or a tap left off its bridge (VMs re-plug it).
      this.bridgesHost.onChange(() => {
        for (const b of this.informers.bridges.list()) this.bridgeController.enqueue(b.metadata.name);
        for (const vm of this.localVms()) if (vm.spec.interfaces?.length) this.vmController.enqueue(objectKey(vm));
      }),
    );
    const failure = await probed;
    if (failure instanceof ProbeError && (this.config.probe.accelerator !== "auto" || this.config.probe.cpuModel))
      throw failure;
    if (failure) this.log.error({ err: failure }, "node probe failed; VMs on this node wait for it");
    await Promise.all(Object.values(this.informers).map((i) => i.hasSynced));
    this.synced = true;
    this.vmController.start();
    this.bridgeController.start();
    this.elector.start();
    await this.sweep();
    this.log.info("agent started");
  }

  /** Domains the operator made whose object may be gone: their keys go through the reconciler. */
  private async sweep(): Promise<void> {
    try {
      for (const d of await this.hypervisor.listDomains()) {
        const key = domainKey(d.name);
        if (key) this.vmController.enqueue(key);
      }
    } catch (err) {
      this.log.warn({ err }, "startup sweep could not list domains; the resync will catch up");
    }
  }

  /** Graceful stop: no new work, in-flight reconciles finish, the lease is released. */
  async stop(): Promise<void> {
    for (const u of this.unsubscribe) u();
    await Promise.all([this.vmController.stop(), this.bridgeController.stop(), this.elector.stop()]);
    await this.stopVolumes();
    await Promise.all(Object.values(this.informers).map((i) => i.stop()));
    this.bridgesHost.close();
    await Promise.all([this.hypervisor.close(), this.store.close()]);
    this.log.info("agent stopped");
  }

  private startVolumes(): void {
    this.metrics.leader.set(1);
    const volumeLog = componentLogger("volume");
    const ns = (vm: VirtualMachine) => vm.metadata.namespace;
    this.volumeController = this.controller("volume", volumeLog, (key) =>
      reconcileVolume(key, {
        store: this.store,
        volumes: this.clients.volumes,
        getVolume: (k) => this.informers.volumes.get(k),
        virtualMachines: (namespace) => this.informers.vms.list().filter((vm) => ns(vm) === namespace),
        events: this.events,
        policy: this.config.pools,
        log: volumeLog.child({ key }),
        resyncMs: this.config.resyncSeconds * 1000,
      }),
    );
    this.volumeController.start();
    for (const v of this.informers.volumes.list()) this.volumeController.enqueue(objectKey(v));
  }

  private async stopVolumes(): Promise<void> {
    this.metrics.leader.set(0);
    const controller = this.volumeController;
    this.volumeController = undefined;
    await controller?.stop();
  }

  private onVmChange(key: string, vm: VirtualMachine | undefined): void {
    // A deleted object may have left a domain here (finalizer removed by hand): the reconcile looks.
    if (!vm || vm.spec.node === this.config.node) this.vmController.enqueue(key);
    const ns = key.split("/", 1)[0];
    // Volumes report who uses them and wait for their users before deletion.
    for (const v of this.informers.volumes.list())
      if (v.metadata.namespace === ns) this.volumeController?.enqueue(objectKey(v));
    for (const b of this.informers.bridges.list())
      if (b.metadata.deletionTimestamp || vm?.spec.interfaces?.some((i) => i.bridgeRef === b.metadata.name))
        this.bridgeController.enqueue(b.metadata.name);
  }

  /** Bridges depend on which nodes exist and on their labels, not on the rest of a Node (heartbeats). */
  private onNodeChange(key: string, node: NodeObject | undefined): void {
    const labels = node ? JSON.stringify(node.metadata.labels ?? {}) : "";
    if (this.nodeLabelsSeen.get(key) === labels && node) return;
    if (node) this.nodeLabelsSeen.set(key, labels);
    else this.nodeLabelsSeen.delete(key);
    for (const b of this.informers.bridges.list()) this.bridgeController.enqueue(b.metadata.name);
  }

  private nodeList(): NodeLabels[] | undefined {
    if (!this.synced) return undefined;
    return this.informers.nodes.list().map((n) => ({ name: n.metadata.name, labels: n.metadata.labels ?? {} }));
  }

  private localVms(): VirtualMachine[] {
    return this.informers.vms.list().filter((vm) => vm.spec.node === this.config.node);
  }
}
