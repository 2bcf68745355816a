import { createHash } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import { bridgeIfName, type Bridge } from "../api/bridge.js";
import { namespaceOf, vmDomainName, volumeImage } from "../api/names.js";
import { formatBytes, toBytes } from "../api/quantity.js";
import type { VirtualMachine, VirtualMachineStatus } from "../api/virtualmachine.js";
import type { Volume } from "../api/volume.js";
import { guestAgentOn, type ResolvedVm } from "../domain/desired.js";
import { diffDomains, type Change } from "../domain/diff.js";
import type { DomainModel, NodeFacts } from "../domain/model.js";
import { renderDiskXml, renderDomainXml, renderInterfaceXml } from "../domain/xml.js";
import type { LinkInfo } from "../host/bridge/bridges.js";
import type { NoCloudData } from "../host/cloudinit/media.js";
import type { DomainInfo, GuestInfo } from "../host/libvirt/types.js";
import { condition, findCondition, type ConditionInput } from "../runtime/conditions.js";
import type { PlannedEvent } from "../runtime/reconciler.js";
import { claimedByOther } from "./claims.js";
import { matchesSelector } from "./selector.js";
import type { StartWait } from "./startbackoff.js";

/**
 * The VirtualMachine controller's decisions, pure, in the order KubeVirt's virt-handler takes them:
 * dependencies, definition (live where libvirt can, else RestartRequired), live disk growth, power
 * (runStrategy, graceful shutdown, crash-loop backoff), cleanup; and the status they imply.
 * ./virtualmachine.ts observes, runs the steps and writes the status.
 */

export type VmStep = { event?: PlannedEvent } & (
  | { op: "seed"; data: NoCloudData }
  | { op: "define"; xml: string }
  | { op: "autostart"; on: boolean }
  | { op: "replug"; bridge: string; tap: string }
  | { op: "attach" | "detach" | "update"; xml: string }
  | { op: "grow"; target: string; bytes: bigint }
  | { op: "start" }
  /** ACPI shutdown; the domain is destroyed if it still runs at `deadline`. */
  | { op: "shutdown"; deadline: number }
  | { op: "destroy" }
  | { op: "undefine" }
  | { op: "remove-seed" }
);

/** What the reconciler read from the host for one VM. */
export interface VmObservation {
  domain: DomainInfo | null;
  /** The running domain's model (live XML), when it runs. */
  live?: DomainModel;
  /** The persistent definition's model, when the domain is persistent. */
  inactive?: DomainModel;
  /** The node's links, read when the domain runs with NICs (to find taps off their bridge). */
  links?: LinkInfo[];
  /** Digest of the seed image on the node; undefined when there is none. */
  seedDigest?: string;
  /** Disk images ("pool/image") another client has open while the domain does not run. */
  imagesInUse?: string[];
}

export interface VmPlan {
  steps: VmStep[];
  /** The Ready condition once the steps are done. */
  ready: ConditionInput;
  /** Fields that take effect at the next restart. */
  restart: string[];
  /** Whether the domain runs once the steps are done; undefined: no domain. */
  active: boolean | undefined;
  /** Look again this soon (a shutdown in progress, a start waiting for its backoff). */
  pollMs?: number;
  /** The graceful shutdown's deadline once the steps are done (kept in status); undefined: none. */
  shutdownDeadline?: number;
}

/** virDomainShutoffReason values that say why a domain is off. */
export const shutoff = { byGuest: 1, destroyed: 2, crashed: 3, failed: 6 } as const;

export const isActive = (d: DomainInfo | null | undefined) =>
  d !== null && d !== undefined && d.state !== "shutoff" && d.state !== "crashed";

/**
 * Why a domain stopped when the guest or QEMU stopped it (a crash-loop candidate); undefined when
 * someone destroyed or undefined it from outside, which is drift to repair at once.
 */
export function stoppedByItself(d: DomainInfo): string | undefined {
  if (d.state === "crashed") return "the guest crashed";
  if (d.state !== "shutoff") return undefined;
  return {
    [shutoff.byGuest]: "the guest powered off",
    [shutoff.crashed]: "QEMU crashed",
    [shutoff.failed]: "it failed",
  }[d.reason];
}

/** How often a stopping guest is looked at while it has time left to shut down. */
export const shutdownPollMs = 1_000;

/** A dependency not Ready for this VM yet: why, in words. */
export interface Unready {
  /**
   * VolumeInUse: another VM holds the Volume; BridgeNotAllowed: the Bridge is not for this
   * namespace; QuotaExceeded: no room in the namespace's cores or memory.
   */
  reason: "VolumeInUse" | "BridgeNotAllowed" | "QuotaExceeded" | "Waiting";
  message: string;
}

/** Dependencies refused rather than awaited: each is said with an Event, and the VM reads Stalled. */
export const refusalReasons = ["BridgeNotAllowed", "QuotaExceeded"] as const;
export const isRefusal = (w: Unready) => (refusalReasons as readonly string[]).includes(w.reason);

/** Volumes and Bridges this VM needs that are not Ready for it yet (or held by another VM). */
export function unreadyDependencies(
  vm: VirtualMachine,
  node: string,
  volumes: (name: string) => Volume | undefined,
  bridges: (name: string) => Bridge | undefined,
  namespaceLabels: Readonly<Record<string, string>>,
): Unready[] {
  const waits: Unready[] = [];
  const wait = (message: string) => waits.push({ reason: "Waiting", message });
  for (const disk of vm.spec.disks ?? []) {
    const volume = volumes(disk.volumeRef);
    const ready = findCondition(volume?.status?.conditions, "Ready");
    const holder = volume && claimedByOther(volume, vm);
    if (!volume) wait(`Volume ${disk.volumeRef} does not exist`);
    else if (volume.metadata.deletionTimestamp) wait(`Volume ${disk.volumeRef} is being deleted`);
    else if (holder)
      waits.push({
        reason: "VolumeInUse",
        message: `Volume ${disk.volumeRef} is attached to VirtualMachine ${holder.name} (on ${holder.node})`,
      });
    // A Volume waiting for this VM to grow it live is usable (its image exists).
    else if (ready?.status !== "True" && ready?.reason !== "WaitingForResize")
      wait(`Volume ${disk.volumeRef} is not Ready${ready?.message ? `: ${ready.message}` : ""}`);
  }
  for (const nic of vm.spec.interfaces ?? []) {
    const bridge = bridges(nic.bridgeRef);
    if (!bridge) wait(`Bridge ${nic.bridgeRef} does not exist`);
    else if (!matchesSelector(bridge.spec.namespaceSelector, namespaceLabels))
      waits.push({
        reason: "BridgeNotAllowed",
        message: `Bridge ${nic.bridgeRef} does not admit namespace ${namespaceOf(vm)} (its namespaceSelector)`,
      });
    else if (!bridge.status?.nodes?.find((n) => n.node === node)?.ready)
      wait(`Bridge ${nic.bridgeRef} is not Ready on ${node}`);
  }
  return waits;
}

/** The NoCloud data of a VM's seed image; `secretUserData`: the Secret's, when the spec names one. */
export function seedData(vm: VirtualMachine, secretUserData?: string): NoCloudData | undefined {
  const ci = vm.spec.cloudInit;
  if (!ci) return undefined;
  const name = vmDomainName(vm);
  return {
    userData: (ci.userDataSecretRef ? secretUserData : ci.userData) ?? "",
    metaData: ci.metaData ?? `instance-id: ${vm.metadata.uid ?? name}\nlocal-hostname: ${vm.metadata.name}\n`,
    ...(ci.networkConfig ? { networkConfig: ci.networkConfig } : {}),
  };
}

/** What the VM's references resolve to on this node (all dependencies Ready: see unreadyDependencies). */
export function resolveVm(
  vm: VirtualMachine,
  identity: Required<Pick<VirtualMachineStatus, "domainUUID" | "interfaces">>,
  facts: NodeFacts,
  volumes: (name: string) => Volume | undefined,
  bridges: (name: string) => Bridge | undefined,
  seedPath: string | undefined,
  /** Where this node's consoles listen when they have a password ("socket", or an address). */
  console: { listen: string; password?: string } = { listen: "socket" },
): ResolvedVm {
  const resolved: ResolvedVm = {
    uuid: identity.domainUUID,
    macs: Object.fromEntries(identity.interfaces.map((i) => [i.name, i.mac])),
    volumes: {},
    bridges: {},
    domainType: facts.domainType,
    defaultCpu: facts.defaultCpu,
    ...(seedPath ? { cloudInitIso: seedPath } : {}),
    // Never open by default: without a password, a UNIX socket only root on the node can reach.
    console:
      console.password === undefined
        ? { listen: "socket" }
        : {
            listen: console.listen,
            passwordDigest: createHash("sha256").update(console.password).digest("hex"),
          },
  };
  for (const d of vm.spec.disks ?? []) {
    const volume = volumes(d.volumeRef)!;
    resolved.volumes[d.volumeRef] = { pool: volume.spec.pool, image: volumeImage(volume) };
  }
  for (const i of vm.spec.interfaces ?? []) resolved.bridges[i.bridgeRef] = bridgeIfName(bridges(i.bridgeRef)!);
  return resolved;
}

export interface VmPlanInput {
  vm: VirtualMachine;
  node: string;
  desired: DomainModel;
  facts: NodeFacts;
  /** The console's password (rendered into the definition, never kept in the model). */
  consolePassword?: string;
  /** The seed image's content, when the VM has cloud-init. */
  seed?: NoCloudData;
  seedDigest?: string;
  observed: VmObservation;
  /** Disks whose Volume waits for this VM to grow it live (the Volume's size). */
  growing: { disk: string; bytes: bigint }[];
  now: number;
  /** When the graceful shutdown in progress must end with a destroy (from status). */
  shutdownDeadline?: number;
  /** The crash-loop backoff's wait, when a start must wait. */
  startWait?: StartWait;
}

const describe = (c: Change): string =>
  c.kind === "field" ? c.field : `${c.kind} ${"disk" in c ? c.disk.name : c.nic.name}`;

/** Apply: seed image, definition (live changes on a running domain), live growth, then power. */
export function planVm(input: VmPlanInput): VmPlan {
  const { vm, node, desired, facts, observed } = input;
  const name = desired.name;
  const steps: VmStep[] = [];
  if (input.seed && observed.seedDigest !== input.seedDigest) steps.push({ op: "seed", data: input.seed });
  const xml = renderDomainXml(desired, facts, {
    ...(input.consolePassword ? { consolePassword: input.consolePassword } : {}),
  });
  const phase = vm.status?.phase;
  let domain = observed.domain;
  let restart: string[] = [];
  const wantAutostart = vm.spec.autostart ?? true;

  // Undefined behind our back while running, a domain lives on as a transient one: define it again too.
  if (!domain?.persistent) {
    steps.push({
      op: "define",
      xml,
      event:
        phase === "Running" || phase === "Stopped"
          ? {
              type: "Warning",
              reason: "DomainRecreated",
              message: `domain ${name} had vanished from ${node}; defined it again`,
            }
          : { type: "Normal", reason: "Defined", message: `defined domain ${name} on ${node}` },
    });
    domain = {
      ...(domain ?? { name, uuid: desired.uuid, state: "shutoff", reason: 0 }),
      persistent: true,
      autostart: false,
    };
  } else {
    if (isActive(domain) && observed.live) {
      steps.push(...replugs(desired, observed.live, observed.links ?? []));
      const live = diffDomains(desired, observed.live, { live: true });
      for (const change of live.filter((c) => c.class === "live"))
        steps.push({
          ...liveStep(change, facts),
          event: { type: "Normal", reason: "UpdatedLive", message: `${describe(change)} on the running domain` },
        });
      restart = live.filter((c) => c.class !== "live").map(describe);
    }
    const persistent = observed.inactive ? diffDomains(desired, observed.inactive) : [];
    if (persistent.length) {
      const what = persistent.map(describe).join(", ");
      steps.push({
        op: "define",
        xml,
        event:
          vm.status?.observedGeneration === vm.metadata.generation
            ? {
                type: "Warning",
                reason: "DefinitionDrift",
                message: `domain definition was changed behind the operator: reverted ${what}`,
              }
            : { type: "Normal", reason: "Updated", message: `updated the domain definition: ${what}` },
      });
    }
  }
  if (domain.autostart !== wantAutostart) steps.push({ op: "autostart", on: wantAutostart });

  if (isActive(domain))
    for (const g of input.growing) {
      const target = desired.disks.find((d) => d.name === g.disk)?.target;
      if (target)
        steps.push({
          op: "grow",
          target,
          bytes: g.bytes,
          event: {
            type: "Normal",
            reason: "DiskGrown",
            message: `grew ${g.disk} (${target}) to ${formatBytes(g.bytes)} live`,
          },
        });
    }

  const power = planPower(vm, node, domain, input);
  return { ...power, steps: [...steps, ...power.steps], restart };
}

/** Each running NIC whose tap is off its bridge (re-created behind the operator's back) is plugged back. */
function replugs(desired: DomainModel, live: DomainModel, links: LinkInfo[]): VmStep[] {
  const wanted = new Map(desired.interfaces.map((i) => [i.name, i.bridge]));
  const byName = new Map(links.map((l) => [l.name, l]));
  return live.interfaces.flatMap((nic): VmStep[] => {
    const tap = nic.tap ? byName.get(nic.tap) : undefined;
    if (!tap || wanted.get(nic.name) !== nic.bridge || tap.master === nic.bridge || !byName.has(nic.bridge)) return [];
    return [
      {
        op: "replug",
        bridge: nic.bridge,
        tap: tap.name,
        event: {
          type: "Warning",
          reason: "NicReplugged",
          message: `${nic.name} (${tap.name}) was off bridge ${nic.bridge}; plugged it back`,
        },
      },
    ];
  });
}

/** Live only: the persistent definition is rewritten as a whole by its own step. */
function liveStep(change: Change, facts: NodeFacts): VmStep {
  switch (change.kind) {
    case "attach-disk":
      return { op: "attach", xml: renderDiskXml(change.disk, facts) };
    case "detach-disk":
      return { op: "detach", xml: renderDiskXml(change.disk, facts) };
    case "attach-interface":
      return { op: "attach", xml: renderInterfaceXml(change.nic) };
    case "detach-interface":
      return { op: "detach", xml: renderInterfaceXml(change.nic) };
    case "update-interface":
      return { op: "update", xml: renderInterfaceXml(change.nic) };
    case "field":
      throw new Error(`field ${change.field} cannot change live`);
  }
}

/** Whether the runStrategy may start a stopped domain (only then do open disk images matter). */
export const mayStart = (vm: VirtualMachine) => ["Always", "RerunOnFailure"].includes(vm.spec.runStrategy ?? "Always");

type Power = Pick<VmPlan, "ready" | "active" | "pollMs" | "shutdownDeadline"> & { steps: VmStep[] };

/** The power state the runStrategy asks for, one step at a time. */
function planPower(vm: VirtualMachine, node: string, domain: DomainInfo, input: VmPlanInput): Power {
  const strategy = vm.spec.runStrategy ?? "Always";
  const name = domain.name;
  const active = isActive(domain);
  if (strategy === "Halted") return planStop(vm, domain, input);
  const running = condition("Ready", "True", "Running", `running on ${node}`);
  if (active) return { steps: [], ready: running, active: true };
  // RerunOnFailure leaves a guest that powered itself off alone; Manual never starts anything.
  const shouldStart = mayStart(vm) && (strategy === "Always" || domain.reason !== shutoff.byGuest);
  if (!shouldStart)
    return {
      steps: [],
      ready: condition("Ready", "True", "Stopped", `stopped (runStrategy ${strategy})`),
      active: false,
    };
  if (input.startWait) return { steps: [], ...startFailed(input.startWait, input.now), active: false };
  // Another client has a disk open (a domain on another node, left there or started by hand): never two writers.
  const imagesInUse = input.observed.imagesInUse ?? [];
  if (imagesInUse.length)
    return {
      steps: [],
      active: false,
      ready: condition("Ready", "False", "ImageInUse", `not started: ${imagesInUse.join(", ")} open by another client`),
      pollMs: 10_000,
    };
  const event: PlannedEvent =
    vm.status?.phase === "Running"
      ? { type: "Warning", reason: "Restarted", message: `domain ${name} was found ${domain.state}; started it again` }
      : { type: "Normal", reason: "Started", message: `started domain ${name}` };
  return { steps: [{ op: "start", event }], ready: running, active: true };
}

/** Not Ready, saying why the last start failed and when the next one comes. */
export function startFailed(wait: StartWait, now: number): Pick<VmPlan, "ready" | "pollMs"> {
  const times = wait.failures === 1 ? "once" : `${wait.failures} times`;
  const next = new Date(wait.until).toISOString();
  return {
    ready: condition("Ready", "False", "StartFailed", `${wait.message} (failed ${times}; next try at ${next})`),
    pollMs: Math.max(0, wait.until - now),
  };
}

/**
 * ACPI shutdown, then destroy once the grace period is over. Non-blocking: the deadline is kept by
 * the reconciler and the key comes back every second.
 */
export function planStop(
  vm: VirtualMachine | undefined,
  domain: DomainInfo | null,
  input: Pick<VmPlanInput, "now" | "shutdownDeadline"> & { orphanGraceSeconds?: number },
): Power {
  const graceSeconds = vm?.spec.shutdownGracePeriodSeconds ?? input.orphanGraceSeconds ?? 60;
  if (!domain || !isActive(domain))
    return {
      steps: [],
      active: domain ? false : undefined,
      ready:
        domain?.reason === shutoff.destroyed
          ? condition(
              "Ready",
              "True",
              "Destroyed",
              `the guest was destroyed (did not shut down within ${graceSeconds} s after ACPI, or powered off from outside)`,
            )
          : condition("Ready", "True", "Stopped", "stopped"),
    };
  const { now, shutdownDeadline: deadline } = input;
  if (deadline === undefined) {
    return {
      shutdownDeadline: now + graceSeconds * 1000,
      steps: [
        {
          op: "shutdown",
          deadline: now + graceSeconds * 1000,
          event: {
            type: "Normal",
            reason: "ShuttingDown",
            message: `sent ACPI shutdown to ${domain.name}; destroy in ${graceSeconds} s`,
          },
        },
      ],
      active: true,
      ready: condition("Ready", "False", "ShuttingDown", `waiting for the guest to power off (${graceSeconds} s left)`),
      pollMs: shutdownPollMs,
    };
  }
  if (now >= deadline) {
    const message = `the guest did not shut down within ${graceSeconds} s after ACPI; destroyed it`;
    return {
      steps: [{ op: "destroy", event: { type: "Warning", reason: "Destroyed", message } }],
      active: false,
      ready: condition("Ready", "True", "Destroyed", message),
    };
  }
  const left = Math.max(0, Math.ceil((deadline - now) / 1000));
  return {
    shutdownDeadline: deadline,
    steps: [],
    active: true,
    ready: condition("Ready", "False", "ShuttingDown", `waiting for the guest to power off (${left} s left)`),
    pollMs: shutdownPollMs,
  };
}

/**
 * Deletion (or an orphan): stop the guest gracefully, then undefine the domain and remove its seed
 * image. Its disks are Volumes and are never touched here.
 */
export function planVmCleanup(
  vm: VirtualMachine | undefined,
  domain: DomainInfo | null,
  /** orphanGraceSeconds: for a domain whose object is gone, the grace its definition carries. */
  input: Pick<VmPlanInput, "now" | "shutdownDeadline"> & { orphanGraceSeconds?: number },
  node: string,
): Power {
  const stop = planStop(vm, domain, input);
  if (stop.pollMs) return stop;
  const undefine: VmStep[] = domain
    ? [
        {
          op: "undefine",
          event: { type: "Normal", reason: "Deleted", message: `undefined domain ${domain.name} on ${node}` },
        },
      ]
    : [];
  return { ...stop, steps: [...stop.steps, ...undefine, { op: "remove-seed" }], active: undefined };
}

export interface VmStatusInput {
  /** Dependencies not Ready yet; empty: all Ready. */
  waiting: Unready[];
  ready?: ConditionInput;
  restart?: string[];
  /** Whether the domain runs; undefined: there is none. */
  active: boolean | undefined;
  /** The graceful shutdown's deadline, kept with the object so an agent restart keeps it. */
  shutdownDeadline?: number;
}

/** The conditions and phase a VM's status shows. */
export function vmStatus(
  vm: VirtualMachine,
  node: string,
  s: VmStatusInput,
): {
  fields: Partial<VirtualMachineStatus>;
  conditions: (ConditionInput | undefined)[];
} {
  const deleting = vm.metadata.deletionTimestamp !== undefined;
  const waiting = s.waiting.length > 0;
  const why = s.waiting.map((w) => w.message).join("; ");
  // A refusal (a Bridge not for this namespace, no room in its capacity) stays until someone changes
  // something: Ready says so, and the VM reads Stalled; anything else is waited for.
  const refused = refusalReasons.find((r) => s.waiting.some((w) => w.reason === r));
  const ready = waiting ? condition("Ready", "False", refused ?? "WaitingForDependencies", why) : s.ready;
  const phase = deleting
    ? "Terminating"
    : ready?.reason === "StartFailed"
      ? "Failed"
      : s.active
        ? "Running"
        : s.active === false
          ? "Stopped"
          : waiting
            ? "Pending"
            : "Provisioning";
  const deadline = s.shutdownDeadline !== undefined ? new Date(s.shutdownDeadline).toISOString() : undefined;
  const dependencies = refused ?? (s.waiting.some((w) => w.reason === "VolumeInUse") ? "VolumeInUse" : "Waiting");
  return {
    fields: { phase, node, shutdownDeadline: deadline },
    conditions: [
      waiting
        ? condition("DependenciesReady", "False", dependencies, why)
        : deleting
          ? undefined
          : condition("DependenciesReady", "True", "AllReady"),
      ready,
      waiting || deleting ? undefined : condition("Synced", "True", "Synced"),
      s.restart === undefined
        ? undefined
        : s.restart.length
          ? condition(
              "RestartRequired",
              "True",
              "PendingChanges",
              `applied after the next restart: ${s.restart.join(", ")}`,
            )
          : condition("RestartRequired", "False", "UpToDate"),
    ],
  };
}

/** Disks whose Volume waits for this VM to grow it live, with the size to grow to. */
export function growingDisks(vm: VirtualMachine, volumes: (name: string) => Volume | undefined) {
  return (vm.spec.disks ?? []).flatMap((d) => {
    const volume = volumes(d.volumeRef);
    if (findCondition(volume?.status?.conditions, "Ready")?.reason !== "WaitingForResize") return [];
    return [{ disk: d.name, bytes: toBytes(volume!.spec.size) }];
  });
}

/** Guest agent reads: soon after it connects or its answer changed, then twice as long each time, up to 5 min. */
export const guestReadMs = { min: 5_000, max: 300_000 } as const;

/** How long until the guest agent is asked again, after a read that answered `info` (undefined: failed). */
export function guestReadInterval(
  last: { info?: GuestInfo; intervalMs: number } | undefined,
  info: GuestInfo | undefined,
): number {
  if (!info || !last || !isDeepStrictEqual(info, last.info)) return guestReadMs.min;
  return Math.min(last.intervalMs * 2, guestReadMs.max);
}

/** fe80::/10: every IPv6 NIC has one; it says nothing about how to reach the guest. */
const ipv6LinkLocal = /^fe[89ab][0-9a-f]:/i;

/**
 * The guest's own view in status: hostname and OS, the addresses of each NIC (matched by MAC),
 * and GuestAgentConnected. `interfaces`: the VM's identity (name, MAC, bridge) to add addresses to.
 */
export function guestStatus(
  vm: VirtualMachine,
  interfaces: NonNullable<VirtualMachineStatus["interfaces"]>,
  s: { running: boolean; connected: boolean; info?: GuestInfo },
): { fields: Pick<VirtualMachineStatus, "guest" | "interfaces">; conditions: (ConditionInput | undefined)[] } {
  const enabled = guestAgentOn(vm);
  const info = enabled && s.running && s.connected ? s.info : undefined;
  const ipsOf = (mac: string) =>
    (info?.interfaces ?? []).filter((i) => i.mac === mac).flatMap((i) => i.ips.filter((ip) => !ipv6LinkLocal.test(ip)));
  const type = "GuestAgentConnected";
  const known = findCondition(vm.status?.conditions, type) !== undefined;
  return {
    fields: {
      guest:
        info && (info.hostname || info.os)
          ? { ...(info.hostname ? { hostname: info.hostname } : {}), ...(info.os ? { os: info.os } : {}) }
          : undefined,
      interfaces: interfaces.map((i) => {
        const ips = ipsOf(i.mac).slice(0, 32);
        return ips.length ? { ...i, ips } : i;
      }),
    },
    conditions: [
      !enabled
        ? known
          ? condition(type, "False", "Disabled", "the VM has no guest agent channel (spec.guestAgent)")
          : undefined
        : !s.running
          ? condition(type, "False", "DomainNotRunning", "the domain does not run")
          : s.connected
            ? condition(type, "True", "Connected", "the QEMU guest agent answers on its channel")
            : condition(
                type,
                "False",
                "NotConnected",
                "no guest agent on the channel yet (is qemu-guest-agent installed and running in the guest?)",
              ),
    ],
  };
}

/** How to reach the running domain's console, from its live XML; undefined when it has none or is off. */
export function consoleStatus(live: DomainModel | undefined): VirtualMachineStatus["console"] {
  const c = live?.console;
  if (!live || !c || live.graphics === "none") return undefined;
  if (c.listen === "socket") return c.socket ? { type: live.graphics, socket: c.socket } : undefined;
  return { type: live.graphics, address: c.listen, ...(c.port ? { port: c.port } : {}) };
}
