import type { Bridge } from "../api/bridge.js";
import { kinds } from "../api/kinds.js";
import type { VirtualMachine, VirtualMachineStatus } from "../api/virtualmachine.js";
import type { Volume } from "../api/volume.js";
import { domainName, namespaceOf, vmDomainName, volumeImage } from "../api/names.js";
import { desiredDomain } from "../domain/desired.js";
import type { DomainModel, NodeFacts } from "../domain/model.js";
import { bytesOf, capacityOf, quotaRefusal, type Claimant } from "./quota.js";
import type { BridgeHost } from "../host/bridge/bridges.js";
import { seedDigest } from "../host/cloudinit/media.js";
import type { Controller } from "../runtime/controller.js";
import { changedIn, specOrMetaChanged } from "../runtime/filters.js";
import { objectKey } from "../runtime/informer.js";
import type { Manager } from "../runtime/manager.js";
import type { PlannedEvent, ReconcileContext } from "../runtime/reconciler.js";
import {
  bridgeState,
  namespaceLabels,
  ownClaimEcho,
  vmsByBridge,
  vmsByNode,
  vmsByVolume,
  volumeState,
  type Namespace,
} from "./indexes.js";
import {
  consoleStatus,
  growingDisks,
  guestStatus,
  isActive,
  isRefusal,
  planVm,
  resolveVm,
  seedData,
  stoppedByItself,
  unreadyDependencies,
  vmStatus,
} from "./vm-plan.js";
import { claim, release, volumesByClaim } from "./claims.js";
import { identityOf, NotOwned, statusDeadline, VmExecutor, vmFailure, type VmHost } from "./vm-executor.js";

export const vmFinalizer = "kaktus.kowabunga.cloud/virtualmachine";

export interface VmDeps extends VmHost {
  /** The node this agent runs for: only VMs with this spec.node are touched. */
  node: string;
  /** Where consoles with a password listen ("socket", or an address); without one, always a socket. */
  consoleListen: string;
  /** The node's network also says when its links change (a tap may be off a re-created bridge). */
  network: VmHost["network"] & Pick<BridgeHost, "onChange">;
  /** The node's facts (probe result, Ceph secret), and news when a new probe changed them. */
  nodeFacts: { get(): Promise<NodeFacts>; onChange(listener: () => void): () => void };
  resyncMs: number;
}

const dependencyRetryMs = 15_000;
type Ctx = ReconcileContext<VirtualMachineStatus>;

/**
 * VirtualMachine controller (the agent of spec.node): observe the domain, plan (./vm-plan.ts), run
 * the steps, report. Crash-loop backoff of starts and graceful-shutdown deadlines are its state.
 */
export function setupVirtualMachines(manager: Manager, deps: VmDeps): Controller {
  const { node } = deps;
  const log = manager.log.child({ controller: "virtualmachine" });
  // Only this node's VMs, filtered by the API server (spec.node is a selectable field).
  const scope = { fieldSelector: `spec.node=${node}` };
  const vms = manager.informer<VirtualMachine>(kinds.virtualMachine, scope);
  const vmClient = manager.client<VirtualMachine>(kinds.virtualMachine);
  const volumes = manager.informer<Volume>(kinds.volume);
  const bridges = manager.informer<Bridge>(kinds.bridge);
  const namespaces = manager.informer<Namespace>(kinds.namespace);
  const [usersOfVolume, usersOfBridge, onNode] = [vmsByVolume(vms), vmsByBridge(vms), vmsByNode(vms)];
  const host = new VmExecutor(deps);
  const { starts } = host;
  const volumeClient = manager.client<Volume>(kinds.volume);
  const claimedBy = volumesByClaim(volumes);
  const local = (vm: VirtualMachine) => vm.spec.node === node;
  const keys = (list: VirtualMachine[]) => list.filter(local).map(objectKey);

  return (
    manager
      .controller<VirtualMachine>("virtualmachine", kinds.virtualMachine, scope)
      .for({ filter: specOrMetaChanged, owns: local })
      // A Volume's readiness, size, deletion or holder; not the claim a VM of this node just made, for itself.
      .watches(
        volumes,
        (v, old) => keys(usersOfVolume(objectKey(v)).filter((vm) => !ownClaimEcho(v, old, vm))),
        changedIn(volumeState),
      )
      .watches(
        bridges,
        (b) => keys(usersOfBridge(b.metadata.name)),
        changedIn((b) => bridgeState(b, node)),
      )
      // A namespace's labels decide which Bridges its VMs may use, its annotations their capacity.
      .watches(
        namespaces,
        (n) => keys(onNode(node).filter((vm) => namespaceOf(vm) === n.metadata.name)),
        changedIn((n) => [n.metadata.labels, n.metadata.annotations]),
      )
      .watchesHost((enqueue) => host.watchDomains(enqueue, () => keys(onNode(node)), log))
      // Another accelerator or CPU after a re-probe: every definition may differ.
      .watchesHost((enqueue) => deps.nodeFacts.onChange(() => keys(onNode(node)).forEach(enqueue)))
      // A link change may be a tap left off a re-created bridge: only a running domain has taps.
      .watchesHost((enqueue) =>
        deps.network.onChange(() =>
          keys(onNode(node).filter((vm) => vm.spec.interfaces?.length && vm.status?.phase === "Running")).forEach(
            enqueue,
          ),
        ),
      )
      .reconcile<VirtualMachineStatus>({ finalizer: vmFinalizer, apply, cleanup, orphan, failure: vmFailure })
  );

  async function apply(vm: VirtualMachine, ctx: Ctx) {
    const ns = namespaceOf(vm);
    const name = vmDomainName(vm);
    const volume = (ref: string) => volumes.get(`${ns}/${ref}`);
    const bridge = (ref: string) => bridges.get(ref);
    const found = await host.find(name);
    // Only a domain made for this very object is touched: not one made by hand, nor an earlier object's.
    if (found && !found.owner)
      throw new NotOwned(`domain ${name} on ${node} was not made by the operator: left untouched`);
    if (found && found.owner?.uid !== vm.metadata.uid) return removeOrphan(ctx.key, ctx.signal, vm, found.owner!.uid);
    const existing = found?.domain ?? null;
    const waiting = unreadyDependencies(
      vm,
      node,
      volume,
      bridge,
      namespaceLabels(ns, namespaces.get(ns)?.metadata.labels),
    );
    const quota = await quotaFor(vm, found?.definition);
    if (quota) waiting.push({ reason: "QuotaExceeded", message: quota });
    for (const w of waiting.filter(isRefusal)) await ctx.events.warning(w.reason, w.message);
    if (waiting.length) {
      // Nothing changes on the host while a dependency is missing or refused: a running domain keeps running.
      report(vm, ctx, { waiting, active: existing ? isActive(existing) : undefined });
      return { requeueAfterMs: dependencyRetryMs };
    }
    // Claims are persisted before the domain exists; the identity (UUID, MACs) derives from the uid,
    // so a crash before status is written changes neither.
    const disks = (vm.spec.disks ?? []).map((d) => volume(d.volumeRef)!);
    await claim(volumeClient, disks, vm, node);
    const identity = identityOf(vm, existing);
    if (identity.changed) ctx.status.set(identity.status);
    const facts = await deps.nodeFacts.get();
    const seed = seedData(vm, await host.secretUserData(vm));
    const consolePassword = await host.consolePassword(vm);
    const resolved = resolveVm(vm, identity.status, facts, volume, bridge, seed && deps.media.path(name), {
      listen: deps.consoleListen,
      ...(consolePassword !== undefined ? { password: consolePassword } : {}),
    });
    const desired = desiredDomain(vm, resolved);
    const observed = await host.observe(name, found, vm, !!seed, Object.values(resolved.volumes));
    if (existing && !isActive(existing)) starts.foundStopped(ctx.key, stoppedByItself(existing));
    const plan = planVm({
      vm,
      node,
      desired,
      facts,
      ...(seed ? { seed, seedDigest: seedDigest(seed) } : {}),
      observed,
      growing: growingDisks(vm, volume),
      now: Date.now(),
      shutdownDeadline: statusDeadline(vm),
      startWait: starts.waiting(ctx.key, vm.metadata.generation),
      ...(consolePassword !== undefined ? { consolePassword } : {}),
    });
    const target = { name, key: ctx.key, generation: vm.metadata.generation };
    const done = { ...plan, ...(await host.run(plan.steps, target, ctx.signal, ctx.events.emit)) };
    // A disk gone from the spec and from the running domain: its Volume is free for another VM.
    const inUse = (image: string) =>
      (observed.live?.disks ?? []).some((d) => "image" in d.source && d.source.image === image);
    const wanted = new Set((vm.spec.disks ?? []).map((d) => d.volumeRef));
    const dropped = claimedBy(vm.metadata.uid ?? "").filter(
      (v) => !wanted.has(v.metadata.name) && !inUse(volumeImage(v)),
    );
    await release(volumeClient, dropped, vm.metadata.uid ?? "");
    report(vm, ctx, { waiting: [], ...done });
    ctx.status.apply({ fields: { console: done.active ? consoleStatus(observed.live) : undefined }, conditions: [] });
    const running = done.active === true;
    const connected = running && desired.guestAgent && observed.live?.guestAgentConnected === true;
    const guest = await host.guest(name, connected, ctx.log);
    ctx.status.apply(guestStatus(vm, identity.status.interfaces, { running, connected, ...guest }));
    return { requeueAfterMs: Math.min(done.pollMs ?? deps.resyncMs, guest.nextInMs ?? Infinity) };
  }

  async function cleanup(vm: VirtualMachine, ctx: Ctx) {
    const plan = await host.teardown(vm, { name: vmDomainName(vm), key: ctx.key }, ctx.signal, ctx.events.emit, node);
    if (plan.pollMs) {
      report(vm, ctx, { waiting: [], ...plan });
      return { requeueAfterMs: plan.pollMs };
    }
    await release(volumeClient, claimedBy(vm.metadata.uid ?? ""), vm.metadata.uid ?? "");
    return {};
  }

  /**
   * A domain here whose object is gone (finalizer removed by hand, found by the startup sweep), or
   * is another node's now, or is an earlier object of the same name: it is stopped (ACPI, then
   * destroyed) and undefined, never started again, and its claims released; its disks are Volumes
   * and stay untouched. Only domains carrying the operator's mark for this name are touched.
   */
  async function orphan(key: string, signal: AbortSignal, vm?: VirtualMachine) {
    const [namespace, vmName] = key.split("/", 2) as [string, string];
    const found = await host.find(domainName(namespace, vmName));
    const owner = found?.owner;
    if (!owner || owner.namespace !== namespace || owner.name !== vmName) return {};
    // A VM of this name made again on another node is not in this node's cache: read it, for the Event.
    return removeOrphan(key, signal, vm ?? (await vmClient.get(key)), owner.uid);
  }

  async function removeOrphan(key: string, signal: AbortSignal, vm: VirtualMachine | undefined, uid: string) {
    const name = domainName(...(key.split("/", 2) as [string, string]));
    const orphanLog = log.child({ key, domain: name });
    const emit = async (e: PlannedEvent) => orphanLog.info({ reason: e.reason }, e.message);
    const plan = await host.teardown(undefined, { name, key }, signal, emit, node);
    if (plan.pollMs) return { requeueAfterMs: plan.pollMs };
    await release(volumeClient, claimedBy(uid), uid);
    const message = `removed domain ${name} from ${node}: it was made for an earlier or moved object (uid ${uid})`;
    orphanLog.warn(message);
    if (vm) await manager.events.warning(vm, "OrphanRemoved", message);
    // The object itself (if any) is looked at again now: its own domain, here or on its node.
    return vm && local(vm) ? { requeueAfterMs: 0 } : {};
  }

  /**
   * Why the namespace's cores or memory leave no room for this VM, if so. A node's cache holds only
   * its own VMs: the namespace's are read from the API, and only where the platform set a limit.
   */
  async function quotaFor(vm: VirtualMachine, defined: DomainModel | undefined): Promise<string | undefined> {
    const ns = namespaceOf(vm);
    const { limits, error } = capacityOf(namespaces.get(ns)?.metadata.annotations);
    if (error) return `the namespace's capacity cannot be read: ${error}`;
    const { cores, memory } = limits;
    if (cores === undefined && memory === undefined) return undefined;
    const request = (v: VirtualMachine) => ({
      cores: BigInt(v.spec.cpu?.cores ?? 1),
      memory: bytesOf(v.spec.memory) ?? 0n,
    });
    const claimant = (v: VirtualMachine): Claimant => {
      // What a VM holds: its domain's definition here; another's, its spec once it has a domain.
      const holds =
        v.metadata.uid === vm.metadata.uid
          ? defined && { cores: BigInt(defined.vcpus), memory: defined.memoryKiB * 1024n }
          : v.status?.domainUUID !== undefined
            ? request(v)
            : undefined;
      return {
        key: objectKey(v),
        created: v.metadata.creationTimestamp ?? "",
        request: request(v),
        ...(holds ? { holds } : {}),
        deleting: v.metadata.deletionTimestamp !== undefined,
      };
    };
    const others = (await vmClient.list(ns)).filter((v) => v.metadata.uid !== vm.metadata.uid);
    return quotaRefusal(objectKey(vm), [vm, ...others].map(claimant), {
      ...(cores !== undefined ? { cores } : {}),
      ...(memory !== undefined ? { memory } : {}),
    });
  }

  function report(vm: VirtualMachine, ctx: Ctx, s: Parameters<typeof vmStatus>[2]): void {
    ctx.status.apply(vmStatus(vm, node, s));
  }
}
