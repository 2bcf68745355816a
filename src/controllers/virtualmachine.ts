import type { Bridge } from "../api/bridge.js";
import { kinds } from "../api/kinds.js";
import type { VirtualMachine, VirtualMachineStatus } from "../api/virtualmachine.js";
import type { Volume } from "../api/volume.js";
import { domainName, namespaceOf, vmDomainName } from "../api/names.js";
import { desiredDomain } from "../domain/desired.js";
import type { NodeFacts } from "../domain/model.js";
import { parseDomainXml } from "../domain/xml.js";
import type { BridgeHost } from "../host/bridge/bridges.js";
import { seedDigest } from "../host/cloudinit/media.js";
import type { Controller } from "../runtime/controller.js";
import { changedIn, specOrMetaChanged } from "../runtime/filters.js";
import { objectKey } from "../runtime/informer.js";
import type { Manager } from "../runtime/manager.js";
import type { PlannedEvent, ReconcileContext } from "../runtime/reconciler.js";
import { bridgeState, vmsByBridge, vmsByNode, vmsByVolume, volumeState } from "./indexes.js";
import {
  growingDisks,
  isActive,
  planVm,
  resolveVm,
  seedData,
  stoppedByItself,
  unreadyDependencies,
  vmStatus,
} from "./vm-plan.js";
import { identityOf, VmExecutor, vmFailure, type VmHost } from "./vm-executor.js";

export const vmFinalizer = "kaktus.kowabunga.cloud/virtualmachine";

export interface VmDeps extends VmHost {
  /** The node this agent runs for: only VMs with this spec.node are touched. */
  node: string;
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
  const { node, hypervisor: hv } = deps;
  const log = manager.log.child({ controller: "virtualmachine" });
  const vms = manager.informer<VirtualMachine>(kinds.virtualMachine);
  const volumes = manager.informer<Volume>(kinds.volume);
  const bridges = manager.informer<Bridge>(kinds.bridge);
  const [usersOfVolume, usersOfBridge, onNode] = [vmsByVolume(vms), vmsByBridge(vms), vmsByNode(vms)];
  const host = new VmExecutor(deps);
  const { starts, deadlines } = host;
  const local = (vm: VirtualMachine) => vm.spec.node === node;
  const keys = (list: VirtualMachine[]) => list.filter(local).map(objectKey);

  return (
    manager
      .controller<VirtualMachine>("virtualmachine", kinds.virtualMachine)
      .for({ filter: specOrMetaChanged, owns: local })
      .watches(volumes, (v) => keys(usersOfVolume(objectKey(v))), changedIn(volumeState))
      .watches(
        bridges,
        (b) => keys(usersOfBridge(b.metadata.name)),
        changedIn((b) => bridgeState(b, node)),
      )
      .watchesHost((enqueue) => host.watchDomains(enqueue, () => keys(onNode(node)), log))
      // Another accelerator or CPU after a re-probe: every definition may differ.
      .watchesHost((enqueue) => deps.nodeFacts.onChange(() => keys(onNode(node)).forEach(enqueue)))
      // A link change may be a tap left off a re-created bridge.
      .watchesHost((enqueue) =>
        deps.network.onChange(() => keys(onNode(node).filter((vm) => vm.spec.interfaces?.length)).forEach(enqueue)),
      )
      .reconcile<VirtualMachineStatus>({ finalizer: vmFinalizer, apply, cleanup, orphan, failure: vmFailure })
  );

  async function apply(vm: VirtualMachine, ctx: Ctx) {
    const ns = namespaceOf(vm);
    const name = vmDomainName(vm);
    const volume = (ref: string) => volumes.get(`${ns}/${ref}`);
    const bridge = (ref: string) => bridges.get(ref);
    const existing = await hv.lookup(name);
    const waiting = unreadyDependencies(vm, node, volume, bridge);
    if (waiting.length) {
      report(vm, ctx, { waiting, active: existing ? isActive(existing) : undefined });
      return { requeueAfterMs: dependencyRetryMs };
    }
    // Identity first, persisted before the domain exists: a crash between the two never changes it.
    const identity = identityOf(vm, existing);
    if (identity.changed) {
      ctx.status.set(identity.status);
      await ctx.status.flush();
    }
    const facts = await deps.nodeFacts.get();
    const seed = seedData(vm, await host.secretUserData(vm));
    const desired = desiredDomain(
      vm,
      resolveVm(vm, identity.status, facts, volume, bridge, seed && deps.media.path(name)),
    );
    const observed = await host.observe(name, existing, vm, !!seed);
    if ((vm.spec.runStrategy ?? "Always") !== "Halted" || !isActive(existing)) deadlines.delete(ctx.key);
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
      shutdownDeadline: deadlines.get(ctx.key),
      startWait: starts.waiting(ctx.key, vm.metadata.generation),
    });
    const target = { name, key: ctx.key, generation: vm.metadata.generation };
    const done = { ...plan, ...(await host.run(plan.steps, target, ctx.signal, ctx.events.emit)) };
    report(vm, ctx, { waiting: [], ready: done.ready, restart: done.restart, active: done.active });
    return { requeueAfterMs: done.pollMs ?? deps.resyncMs };
  }

  async function cleanup(vm: VirtualMachine, ctx: Ctx) {
    const name = vmDomainName(vm);
    const plan = await host.teardown(vm, { name, key: ctx.key }, ctx.signal, ctx.events.emit, node);
    if (!plan.pollMs) return {};
    report(vm, ctx, { waiting: [], ready: plan.ready, active: true });
    return { requeueAfterMs: plan.pollMs };
  }

  /**
   * A domain this operator made whose object is gone (finalizer removed by hand, or found by the
   * startup sweep): it is stopped and undefined; its disks are Volumes and stay untouched.
   */
  async function orphan(key: string, signal: AbortSignal) {
    const [namespace, vmName] = key.split("/", 2) as [string, string];
    const name = domainName(namespace, vmName);
    if (!(await hv.lookup(name))) return {};
    const owner = parseDomainXml(await hv.getXml(name, { inactive: true })).owner;
    if (!owner || owner.namespace !== namespace || owner.name !== vmName) return {};
    const orphanLog = log.child({ key, domain: name });
    const emit = async (e: PlannedEvent) => orphanLog.info({ reason: e.reason }, e.message);
    const plan = await host.teardown(undefined, { name, key }, signal, emit, node);
    if (plan.pollMs) return { requeueAfterMs: plan.pollMs };
    orphanLog.warn("removed a domain whose VirtualMachine no longer exists");
    return {};
  }

  function report(vm: VirtualMachine, ctx: Ctx, s: Parameters<typeof vmStatus>[2]): void {
    ctx.status.apply(vmStatus(vm, node, s));
  }
}
