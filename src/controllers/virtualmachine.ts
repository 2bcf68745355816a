import { randomBytes, randomUUID } from "node:crypto";
import type { Logger } from "pino";
import { bridgeIfName, type Bridge } from "../api/bridge.js";
import { formatBytes, toBytes } from "../api/quantity.js";
import type { VirtualMachine, VirtualMachineStatus } from "../api/virtualmachine.js";
import type { Volume } from "../api/volume.js";
import { desiredDomain, domainName, UnsupportedOnNode, type ResolvedVm } from "../domain/desired.js";
import { diffDomains, type Change } from "../domain/diff.js";
import type { DomainModel, NodeFacts } from "../domain/model.js";
import { DomainXmlError, parseDomainXml, renderDiskXml, renderDomainXml, renderInterfaceXml } from "../domain/xml.js";
import type { BridgeHost } from "../host/bridge/bridges.js";
import type { CloudInitMedia } from "../host/cloudinit/media.js";
import { LibvirtError } from "../host/libvirt/errors.js";
import type { Hypervisor } from "../host/libvirt/client.js";
import type { DomainInfo } from "../host/libvirt/types.js";
import type { ResourceClient } from "../runtime/client.js";
import { condition, findCondition, isTrue, setConditions, type ConditionInput } from "../runtime/conditions.js";
import { TerminalError, type Action } from "../runtime/controller.js";
import type { EventRecorder } from "../runtime/events.js";
import { addFinalizerPatch, removeFinalizerPatch } from "../runtime/finalizers.js";
import { statusPatch } from "../runtime/status.js";
import type { StartBackoff, StartWait } from "./startbackoff.js";
import { volumeImage } from "./volume.js";

export const vmFinalizer = "kaktus.kowabunga.cloud/virtualmachine";

export interface VmContext {
  /** The node this agent runs for: only VMs with this spec.node are touched. */
  node: string;
  hypervisor: Hypervisor;
  /** The node's links, to put a NIC's tap back on its bridge when the bridge was re-created. */
  links: Pick<BridgeHost, "links" | "addPort">;
  media: CloudInitMedia;
  vms: ResourceClient<VirtualMachine>;
  /** Informer caches. */
  getVm(key: string): VirtualMachine | undefined;
  getVolume(key: string): Volume | undefined;
  getBridge(name: string): Bridge | undefined;
  /** The `userdata` key of a Secret in the VM's namespace; undefined when it does not exist. */
  readUserDataSecret(namespace: string, name: string): Promise<string | undefined>;
  /** Node facts, once the libvirt secret for Ceph is registered (memoised by the agent). */
  nodeFacts(): Promise<NodeFacts>;
  /** When each graceful shutdown in progress must end with a destroy (ms since epoch), by key. */
  shutdownDeadlines: Map<string, number>;
  /** Crash-loop backoff of domain starts, by key. */
  starts: StartBackoff;
  events: EventRecorder;
  log: Logger;
  resyncMs: number;
}

const dependencyRetryMs = 15_000;
/** How often a stopping guest is looked at while it has time left to shut down. */
const shutdownPollMs = 1_000;

// virDomainShutoffReason values that say why a domain is off.
const shutoffByGuest = 1;
const shutoffDestroyed = 2;
const shutoffCrashed = 3;
const shutoffFailed = 6;

const isActive = (d: DomainInfo | null) => d !== null && d.state !== "shutoff" && d.state !== "crashed";

/**
 * VirtualMachine reconciler (the agent of spec.node): in the order KubeVirt's virt-handler uses,
 * it decides one thing at a time from the object and the domain it observes: clean up, wait for
 * dependencies, keep the identity, define or update the domain (live where libvirt can), then
 * bring its power state to the runStrategy, and writes what it saw to status.
 */
export async function reconcileVirtualMachine(key: string, ctx: VmContext): Promise<Action> {
  const cached = ctx.getVm(key);
  if (!cached) return removeOrphan(key, ctx);
  if (cached.spec.node !== ctx.node) return {};
  let vm: VirtualMachine = cached;
  const name = domainName(vm.metadata.namespace ?? "default", vm.metadata.name);

  if (vm.metadata.deletionTimestamp) return cleanup(vm, key, name, ctx);
  vm = (await ctx.vms.patch(key, addFinalizerPatch(vm.metadata.finalizers, vmFinalizer))) ?? vm;

  const waiting = unreadyDependencies(vm, ctx);
  const existing = await ctx.hypervisor.lookup(name);
  if (waiting.length) {
    await report(vm, key, ctx, existing, {
      dependencies: condition("DependenciesReady", "False", "Waiting", waiting.join("; ")),
    });
    return { requeueAfterMs: dependencyRetryMs };
  }

  // Identity first, persisted before the domain exists: a crash between the two never changes it.
  const identity = identityOf(vm, existing);
  if (identity.changed) {
    vm = (await ctx.vms.patchStatus(key, statusPatch(vm, { ...vm.status, ...identity.status }))) ?? vm;
  }

  let power: PowerOutcome;
  let restart: string[];
  try {
    const facts = await ctx.nodeFacts();
    const desired = desiredDomain(vm, await resolve(vm, identity.status, name, facts, ctx));
    const defined = await applyDefinition(vm, name, desired, facts, existing, ctx);
    restart = defined.restart;
    await growDisks(vm, name, desired, defined.domain, ctx);
    power = await applyRunStrategy(vm, key, name, defined.domain, ctx);
  } catch (err) {
    const reason = failureReason(err);
    if (!reason) throw err;
    const message = (err as Error).message;
    await report(vm, key, ctx, existing, { synced: condition("Synced", "False", reason, message) });
    await ctx.events.warning(vm, reason, message);
    // Only input that can never work stops retries; the host failing is retried with backoff.
    if (
      err instanceof DomainXmlError ||
      err instanceof UnsupportedOnNode ||
      (err instanceof LibvirtError && err.kind === "invalid")
    )
      throw new TerminalError(message);
    throw err;
  }

  await report(vm, key, ctx, power.domain, {
    ready: power.ready,
    restartRequired: restart.length
      ? condition("RestartRequired", "True", "PendingChanges", `applied after the next restart: ${restart.join(", ")}`)
      : condition("RestartRequired", "False", "UpToDate"),
  });
  return { requeueAfterMs: power.pollMs ?? ctx.resyncMs };
}

/** Volumes and Bridges this VM needs that are not Ready for it yet, as human sentences. */
function unreadyDependencies(vm: VirtualMachine, ctx: VmContext): string[] {
  const ns = vm.metadata.namespace ?? "default";
  const waits: string[] = [];
  for (const disk of vm.spec.disks ?? []) {
    const volume = ctx.getVolume(`${ns}/${disk.volumeRef}`);
    const ready = findCondition(volume?.status?.conditions, "Ready");
    if (!volume) waits.push(`Volume ${disk.volumeRef} does not exist`);
    else if (volume.metadata.deletionTimestamp) waits.push(`Volume ${disk.volumeRef} is being deleted`);
    // A Volume waiting for this VM to grow it live is usable (its image exists).
    else if (ready?.status !== "True" && ready?.reason !== "WaitingForResize")
      waits.push(`Volume ${disk.volumeRef} is not Ready${ready?.message ? `: ${ready.message}` : ""}`);
  }
  for (const nic of vm.spec.interfaces ?? []) {
    const bridge = ctx.getBridge(nic.bridgeRef);
    const here = bridge?.status?.nodes?.find((n) => n.node === ctx.node);
    if (!bridge) waits.push(`Bridge ${nic.bridgeRef} does not exist`);
    else if (!here?.ready) waits.push(`Bridge ${nic.bridgeRef} is not Ready on ${ctx.node}`);
  }
  return waits;
}

/** UUID and MACs: from status when known, else from the domain found, else generated, never changed after. */
function identityOf(vm: VirtualMachine, existing: DomainInfo | null) {
  const status = vm.status ?? {};
  const domainUUID = status.domainUUID ?? existing?.uuid ?? randomUUID();
  const interfaces = (vm.spec.interfaces ?? []).map((i) => ({
    name: i.name,
    mac: (i.mac ?? status.interfaces?.find((s) => s.name === i.name)?.mac ?? generateMac()).toLowerCase(),
    bridge: i.bridgeRef,
  }));
  const changed =
    status.domainUUID !== domainUUID || JSON.stringify(status.interfaces ?? []) !== JSON.stringify(interfaces);
  return { changed, status: { domainUUID, interfaces } satisfies VirtualMachineStatus };
}

/** A locally administered MAC in QEMU's 52:54:00 prefix, as libvirt itself generates them. */
const generateMac = () =>
  ["52", "54", "00", ...[...randomBytes(3)].map((b) => b.toString(16).padStart(2, "0"))].join(":");

async function resolve(
  vm: VirtualMachine,
  identity: Required<Pick<VirtualMachineStatus, "domainUUID" | "interfaces">>,
  name: string,
  facts: NodeFacts,
  ctx: VmContext,
): Promise<ResolvedVm> {
  const ns = vm.metadata.namespace ?? "default";
  const volumes: ResolvedVm["volumes"] = {};
  for (const d of vm.spec.disks ?? []) {
    const volume = ctx.getVolume(`${ns}/${d.volumeRef}`)!;
    volumes[d.volumeRef] = { pool: volume.spec.pool, image: volumeImage(volume) };
  }
  const bridges: ResolvedVm["bridges"] = {};
  for (const i of vm.spec.interfaces ?? []) bridges[i.bridgeRef] = bridgeIfName(ctx.getBridge(i.bridgeRef)!);
  const iso = await cloudInitIso(vm, name, ctx);
  return {
    uuid: identity.domainUUID,
    macs: Object.fromEntries(identity.interfaces.map((i) => [i.name, i.mac])),
    volumes,
    bridges,
    ...(iso ? { cloudInitIso: iso } : {}),
    domainType: facts.domainType,
    defaultCpu: facts.defaultCpu,
  };
}

async function cloudInitIso(vm: VirtualMachine, name: string, ctx: VmContext): Promise<string | undefined> {
  const ci = vm.spec.cloudInit;
  if (!ci) return undefined;
  let userData = ci.userData;
  if (ci.userDataSecretRef) {
    userData = await ctx.readUserDataSecret(vm.metadata.namespace ?? "default", ci.userDataSecretRef.name);
    if (userData === undefined) throw new MissingInput(`Secret ${ci.userDataSecretRef.name} has no key userdata`);
  }
  const metaData = ci.metaData ?? `instance-id: ${vm.metadata.uid ?? name}\nlocal-hostname: ${vm.metadata.name}\n`;
  const { path } = await ctx.media.ensure(name, {
    userData: userData ?? "",
    metaData,
    ...(ci.networkConfig ? { networkConfig: ci.networkConfig } : {}),
  });
  return path;
}

/** Input the reconciler needs and cannot find (a Secret): reported, retried when things change. */
class MissingInput extends Error {
  override name = "MissingInput";
}

/**
 * Defines the domain or brings its definition to the desired one: the persistent definition is
 * rewritten when it differs; on a running domain, what libvirt can change live (devices) is
 * changed live, and the rest is listed as waiting for a restart.
 */
async function applyDefinition(
  vm: VirtualMachine,
  name: string,
  desired: DomainModel,
  facts: NodeFacts,
  existing: DomainInfo | null,
  ctx: VmContext,
): Promise<{ domain: DomainInfo; restart: string[] }> {
  const hv = ctx.hypervisor;
  const xml = renderDomainXml(desired, facts);
  // Undefined behind our back while running, it lives on as a transient domain: define it again too.
  if (!existing?.persistent) {
    const domain = await hv.define(xml);
    if (vm.status?.phase === "Running" || vm.status?.phase === "Stopped")
      await ctx.events.warning(vm, "DomainRecreated", `domain ${name} had vanished from ${ctx.node}; defined it again`);
    else await ctx.events.normal(vm, "Defined", `defined domain ${name} on ${ctx.node}`);
    return { domain: await autostart(vm, domain, ctx), restart: [] };
  }
  let restart: string[] = [];
  if (isActive(existing)) {
    const liveModel = parseDomainXml(await hv.getXml(name));
    await replugTaps(vm, desired, liveModel, ctx);
    const live = diffDomains(desired, liveModel, { live: true });
    for (const change of live.filter((c) => c.class === "live")) {
      await applyLive(name, change, facts, ctx);
      await ctx.events.normal(vm, "UpdatedLive", `${describe(change)} on the running domain`);
    }
    restart = live.filter((c) => c.class !== "live").map(describe);
  }
  const persistent = diffDomains(desired, parseDomainXml(await hv.getXml(name, { inactive: true })));
  if (persistent.length) {
    await hv.define(xml);
    const what = persistent.map(describe).join(", ");
    if (vm.status?.observedGeneration === vm.metadata.generation)
      await ctx.events.warning(
        vm,
        "DefinitionDrift",
        `domain definition was changed behind the operator: reverted ${what}`,
      );
    else await ctx.events.normal(vm, "Updated", `updated the domain definition: ${what}`);
  }
  return { domain: await autostart(vm, existing, ctx), restart };
}

/**
 * A bridge deleted and re-created behind the operator's back comes back without the guests' taps:
 * each running NIC whose tap is off the bridge it should be on is plugged back.
 */
async function replugTaps(vm: VirtualMachine, desired: DomainModel, live: DomainModel, ctx: VmContext) {
  const wanted = new Map(desired.interfaces.map((i) => [i.name, i.bridge]));
  const stray = live.interfaces.filter((i) => i.tap && wanted.get(i.name) === i.bridge);
  if (!stray.length) return;
  const links = new Map((await ctx.links.links()).map((l) => [l.name, l]));
  for (const nic of stray) {
    const tap = links.get(nic.tap!);
    if (!tap || tap.master === nic.bridge || !links.has(nic.bridge)) continue;
    await ctx.links.addPort(nic.bridge, tap.name);
    await ctx.events.warning(
      vm,
      "NicReplugged",
      `${nic.name} (${tap.name}) was off bridge ${nic.bridge}; plugged it back`,
    );
  }
}

async function autostart(vm: VirtualMachine, domain: DomainInfo, ctx: VmContext): Promise<DomainInfo> {
  const wanted = vm.spec.autostart ?? true;
  if (domain.autostart === wanted) return domain;
  await ctx.hypervisor.setAutostart(domain.name, wanted);
  return { ...domain, autostart: wanted };
}

/** Live only: the persistent definition is rewritten as a whole afterwards. */
async function applyLive(name: string, change: Change, facts: NodeFacts, ctx: VmContext): Promise<void> {
  const hv = ctx.hypervisor;
  const scope = { live: true, config: false };
  switch (change.kind) {
    case "attach-disk":
      return hv.attachDevice(name, renderDiskXml(change.disk, facts), scope);
    case "detach-disk":
      return hv.detachDevice(name, renderDiskXml(change.disk, facts), scope);
    case "attach-interface":
      return hv.attachDevice(name, renderInterfaceXml(change.nic), scope);
    case "detach-interface":
      return hv.detachDevice(name, renderInterfaceXml(change.nic), scope);
    case "update-interface":
      return hv.updateDevice(name, renderInterfaceXml(change.nic), scope);
    case "field":
      return;
  }
}

const describe = (c: Change): string =>
  c.kind === "field" ? c.field : `${c.kind} ${"disk" in c ? c.disk.name : c.nic.name}`;

/** A Volume grown beyond its image while this VM holds it open: QEMU grows it so the guest sees it. */
async function growDisks(vm: VirtualMachine, name: string, desired: DomainModel, domain: DomainInfo, ctx: VmContext) {
  if (!isActive(domain)) return;
  for (const disk of vm.spec.disks ?? []) {
    const volume = ctx.getVolume(`${vm.metadata.namespace}/${disk.volumeRef}`);
    if (findCondition(volume?.status?.conditions, "Ready")?.reason !== "WaitingForResize") continue;
    const target = desired.disks.find((d) => d.name === disk.name)?.target;
    if (!volume || !target) continue;
    await ctx.hypervisor.blockResize(name, target, toBytes(volume.spec.size));
    await ctx.events.normal(
      vm,
      "DiskGrown",
      `grew ${disk.name} (${target}) to ${formatBytes(toBytes(volume.spec.size))} live`,
    );
  }
}

interface PowerOutcome {
  domain: DomainInfo;
  ready: ConditionInput;
  /** Set while something is in progress (a guest shutting down): look again soon. */
  pollMs?: number;
}

/** Brings the power state to the runStrategy, one step per reconcile. */
async function applyRunStrategy(
  vm: VirtualMachine,
  key: string,
  name: string,
  domain: DomainInfo,
  ctx: VmContext,
): Promise<PowerOutcome> {
  const strategy = vm.spec.runStrategy ?? "Always";
  const active = isActive(domain);
  if (strategy === "Halted" || strategy === "Manual") ctx.starts.forget(key);
  if (strategy === "Halted") {
    const stop = await stopGracefully(vm, key, name, domain, ctx);
    return { ...stop, domain: stop.domain ?? domain };
  }
  const running = condition("Ready", "True", "Running", `running on ${ctx.node}`);
  if (active) ctx.starts.running(key);
  // RerunOnFailure leaves a guest that powered itself off alone; Manual never starts anything.
  const shouldStart =
    !active && (strategy === "Always" || (strategy === "RerunOnFailure" && domain.reason !== shutoffByGuest));
  if (!shouldStart)
    return {
      domain,
      ready: active ? running : condition("Ready", "True", "Stopped", `stopped (runStrategy ${strategy})`),
    };

  ctx.starts.foundStopped(key, stoppedByItself(domain));
  const generation = vm.metadata.generation;
  const wait = ctx.starts.waiting(key, generation);
  if (wait) return startFailed(domain, wait);
  try {
    await ctx.hypervisor.start(name);
  } catch (err) {
    // libvirtd away is the runtime's retry; anything else libvirt refused is a failed start that backs off.
    if (!(err instanceof LibvirtError) || err.kind === "transient") throw err;
    const failure = ctx.starts.failed(key, generation, withoutTimestamps(err.message));
    await ctx.events.warning(vm, "StartFailed", failure.message);
    return startFailed(domain, failure);
  }
  ctx.starts.started(key, generation);
  if (vm.status?.phase === "Running")
    await ctx.events.warning(vm, "Restarted", `domain ${name} was found ${domain.state}; started it again`);
  else await ctx.events.normal(vm, "Started", `started domain ${name}`);
  ctx.shutdownDeadlines.delete(key);
  return { domain: (await ctx.hypervisor.lookup(name)) ?? domain, ready: running };
}

/**
 * Why a domain stopped when the guest or QEMU stopped it (a crash-loop candidate); undefined when
 * someone destroyed or undefined it from outside, which is drift to repair at once.
 */
function stoppedByItself(d: DomainInfo): string | undefined {
  if (d.state === "crashed") return "the guest crashed";
  if (d.state !== "shutoff") return undefined;
  return { [shutoffByGuest]: "the guest powered off", [shutoffCrashed]: "QEMU crashed", [shutoffFailed]: "it failed" }[
    d.reason
  ];
}

/** Not Ready, says why and when the next start comes; the key comes back then. */
function startFailed(domain: DomainInfo, wait: StartWait): PowerOutcome {
  const times = wait.failures === 1 ? "once" : `${wait.failures} times`;
  return {
    domain,
    ready: condition(
      "Ready",
      "False",
      "StartFailed",
      `${wait.message} (failed ${times}; next try at ${new Date(wait.until).toISOString()})`,
    ),
    pollMs: Math.max(0, wait.until - Date.now()),
  };
}

/** QEMU stamps its messages with the time: without it, repeats of one failure read (and fold) as one. */
const withoutTimestamps = (message: string) =>
  message.replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)?:?\s*/g, "");

/**
 * ACPI shutdown, then destroy once the grace period is over. Non-blocking: the deadline is kept in
 * memory and the reconcile comes back every second (an agent restart gives the guest a new period).
 */
async function stopGracefully(
  vm: VirtualMachine | undefined,
  key: string,
  name: string,
  domain: DomainInfo | null,
  ctx: VmContext,
): Promise<{ domain: DomainInfo | null; ready: ConditionInput; pollMs?: number }> {
  const graceSeconds = vm?.spec.shutdownGracePeriodSeconds ?? 60;
  if (!isActive(domain)) {
    ctx.shutdownDeadlines.delete(key);
    return {
      domain,
      ready:
        domain?.reason === shutoffDestroyed
          ? condition(
              "Ready",
              "True",
              "Destroyed",
              `the guest was destroyed (did not shut down within ${graceSeconds} s after ACPI, or powered off from outside)`,
            )
          : condition("Ready", "True", "Stopped", "stopped"),
    };
  }
  const deadline = ctx.shutdownDeadlines.get(key);
  if (deadline === undefined) {
    await ctx.hypervisor.shutdown(name);
    ctx.shutdownDeadlines.set(key, Date.now() + graceSeconds * 1000);
    if (vm) await ctx.events.normal(vm, "ShuttingDown", `sent ACPI shutdown to ${name}; destroy in ${graceSeconds} s`);
  } else if (Date.now() >= deadline) {
    await ctx.hypervisor.destroy(name);
    ctx.shutdownDeadlines.delete(key);
    const message = `the guest did not shut down within ${graceSeconds} s after ACPI; destroyed it`;
    if (vm) await ctx.events.warning(vm, "Destroyed", message);
    return { domain: await ctx.hypervisor.lookup(name), ready: condition("Ready", "True", "Destroyed", message) };
  }
  const left = Math.max(0, Math.ceil(((ctx.shutdownDeadlines.get(key) ?? 0) - Date.now()) / 1000));
  return {
    domain,
    ready: condition("Ready", "False", "ShuttingDown", `waiting for the guest to power off (${left} s left)`),
    pollMs: shutdownPollMs,
  };
}

/** Deletion: the guest is stopped (gracefully), the domain undefined, its seed image removed, then the finalizer dropped. */
async function cleanup(vm: VirtualMachine, key: string, name: string, ctx: VmContext): Promise<Action> {
  if (!vm.metadata.finalizers?.includes(vmFinalizer)) return {};
  const domain = await ctx.hypervisor.lookup(name);
  const stop = await stopGracefully(vm, key, name, domain, ctx);
  if (stop.pollMs) {
    await report(vm, key, ctx, domain, { ready: stop.ready });
    return { requeueAfterMs: stop.pollMs };
  }
  if (domain) {
    await ctx.hypervisor.undefine(name);
    await ctx.events.normal(vm, "Deleted", `undefined domain ${name} on ${ctx.node}`);
  }
  await ctx.media.remove(name);
  ctx.starts.forget(key);
  await ctx.vms.patch(key, removeFinalizerPatch(vm.metadata.finalizers, vmFinalizer));
  return {};
}

/**
 * A domain this operator made whose object is gone (finalizer removed by hand, or found by the
 * startup sweep): it is stopped and undefined; its disks are Volumes and stay untouched.
 */
async function removeOrphan(key: string, ctx: VmContext): Promise<Action> {
  const [namespace, vmName] = key.split("/", 2) as [string, string];
  const name = domainName(namespace, vmName);
  const domain = await ctx.hypervisor.lookup(name);
  if (!domain) return {};
  const owner = parseDomainXml(await ctx.hypervisor.getXml(name, { inactive: true })).owner;
  if (!owner || owner.namespace !== namespace || owner.name !== vmName) return {};
  const stop = await stopGracefully(undefined, key, name, domain, ctx);
  if (stop.pollMs) return { requeueAfterMs: stop.pollMs };
  await ctx.hypervisor.undefine(name);
  await ctx.media.remove(name);
  ctx.log.warn({ domain: name }, "removed a domain whose VirtualMachine no longer exists");
  return {};
}

function failureReason(err: unknown): string | undefined {
  if (err instanceof DomainXmlError) return "InvalidSpec";
  if (err instanceof UnsupportedOnNode) return "Unsupported";
  if (err instanceof MissingInput) return "MissingInput";
  if (err instanceof LibvirtError)
    return (
      { invalid: "InvalidDomain", conflict: "DomainConflict", transient: "LibvirtUnavailable" }[err.kind as string] ??
      "LibvirtError"
    );
  return undefined;
}

interface Report {
  dependencies?: ConditionInput;
  ready?: ConditionInput;
  synced?: ConditionInput;
  restartRequired?: ConditionInput;
}

/** Status rebuilt from what was observed; written only when it changed. */
async function report(
  vm: VirtualMachine,
  key: string,
  ctx: VmContext,
  domain: DomainInfo | null,
  r: Report,
): Promise<void> {
  const deleting = vm.metadata.deletionTimestamp !== undefined;
  const failed = r.synced?.status === "False";
  const waiting = r.dependencies?.status === "False";
  const conditions = setConditions(
    vm.status?.conditions,
    [
      r.dependencies ?? (waiting || deleting ? undefined : condition("DependenciesReady", "True", "AllReady")),
      waiting ? condition("Ready", "False", "WaitingForDependencies", r.dependencies!.message) : undefined,
      failed ? condition("Ready", "False", r.synced!.reason, r.synced!.message) : r.ready,
      r.synced ?? (waiting || deleting ? undefined : condition("Synced", "True", "Synced")),
      r.restartRequired,
    ],
    vm.metadata.generation,
  );
  const phase = deleting
    ? "Terminating"
    : failed || r.ready?.reason === "StartFailed"
      ? "Failed"
      : waiting && !domain
        ? "Pending"
        : isActive(domain)
          ? "Running"
          : domain
            ? "Stopped"
            : "Provisioning";
  const status: VirtualMachineStatus = {
    ...vm.status,
    ...(vm.metadata.generation !== undefined ? { observedGeneration: vm.metadata.generation } : {}),
    phase,
    conditions,
    node: ctx.node,
  };
  await ctx.vms.patchStatus(key, statusPatch(vm, status));
}

export const isVmReady = (vm: VirtualMachine) => isTrue(vm.status?.conditions, "Ready");
