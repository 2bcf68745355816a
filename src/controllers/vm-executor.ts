import { createHash, randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { VirtualMachine, VirtualMachineStatus } from "../api/virtualmachine.js";
import type { BridgeHost } from "../host/bridge/bridges.js";
import type { CloudInitMedia } from "../host/cloudinit/media.js";
import type { Hypervisor } from "../host/libvirt/client.js";
import { LibvirtError } from "../host/libvirt/errors.js";
import type { DomainInfo, GuestInfo } from "../host/libvirt/types.js";
import type { BlockStore } from "../host/rbd/client.js";
import type { DomainModel, DomainOwner } from "../domain/model.js";
import { DomainXmlError, parseDomainXml } from "../domain/xml.js";
import { domainKey, namespaceOf } from "../api/names.js";
import { QuantityError } from "../api/quantity.js";
import { UnsupportedOnNode } from "../domain/desired.js";
import { runSteps, type Failure, type PlannedEvent } from "../runtime/reconciler.js";
import { StartBackoff } from "./startbackoff.js";
import {
  guestReadInterval,
  isActive,
  mayStart,
  planVmCleanup,
  startFailed,
  type VmObservation,
  type VmPlan,
  type VmStep,
} from "./vm-plan.js";

/** The graceful shutdown's deadline a VM's status keeps (ms since epoch), if one runs. */
export const statusDeadline = (vm: VirtualMachine) =>
  vm.status?.shutdownDeadline ? Date.parse(vm.status.shutdownDeadline) : undefined;

/** What a failed start leaves: not Ready (StartFailed), not running, looked at again at the next try. */
export type StartOutcome = Pick<VmPlan, "ready" | "pollMs"> & { active: false };

export interface VmHost {
  hypervisor: Hypervisor;
  /** Ceph, to see who else has a disk image open before a start. */
  store: Pick<BlockStore, "status">;
  /** The node's network (links and bridges): a tap may have to go back on its bridge. */
  network: Pick<BridgeHost, "links" | "addPort">;
  media: CloudInitMedia;
  /** A key of a Secret in the VM's namespace; undefined when the Secret or the key does not exist. */
  readSecret(namespace: string, name: string, key: string): Promise<string | undefined>;
}

/** Input the reconciler needs and cannot find (a Secret): reported, retried when things change. */
export class MissingInput extends Error {
  override name = "MissingInput";
}

/** Input outside the spec, unusable as it is (a Secret's user-data over the size bound): retried, it may be fixed. */
export class InvalidInput extends Error {
  override name = "InvalidInput";
}

/** A domain here that the operator did not make: never touched, whatever its name. */
export class NotOwned extends Error {
  override name = "NotOwned";
}

/**
 * The VM controller's hands on the host: it observes a domain, runs plans' steps (one call each,
 * then its Event), and keeps what the controller remembers between reconciles: the crash-loop
 * backoff of starts, and the shutdown deadlines of orphans (a VM's own is kept in its status).
 */
/** As spec.cloudInit.userData's maxLength (the CRD bounds characters, this bounds bytes). */
const maxUserDataBytes = 65536;

export class VmExecutor {
  readonly starts = new StartBackoff();
  /** Graceful-shutdown deadlines of domains whose object is gone (nowhere else to keep them), by key. */
  private readonly orphanDeadlines = new Map<string, number>();
  /**
   * The "defined" event each of our own defines causes, expected until a deadline (as
   * controller-runtime's expectations): the reconcile that defined it has nothing to learn from it.
   */
  private readonly ownDefines = new Map<string, number>();
  /** Each running guest's last answer from its agent, and when to ask again, by domain name. */
  private readonly guests = new Map<string, { info?: GuestInfo; at: number; intervalMs: number }>();

  constructor(private readonly host: VmHost) {}

  private ownDefine(name: string): boolean {
    const until = this.ownDefines.get(name);
    this.ownDefines.delete(name);
    return until !== undefined && Date.now() <= until;
  }

  /**
   * Domain events as keys: lifecycle events name their VM; after libvirtd was away, every VM of the
   * node (`all`) is looked at again. First, the startup sweep: domains the operator made whose
   * object may be gone go through the orphan path.
   */
  watchDomains(enqueue: (key: string) => void, all: () => string[], log: Logger): () => void {
    const { hypervisor: hv } = this.host;
    hv.listDomains().then(
      (domains) => domains.forEach((d) => domainKey(d.name) && enqueue(domainKey(d.name)!)),
      (err: unknown) => log.warn({ err }, "startup sweep could not list domains; the resync will catch up"),
    );
    let connected = true;
    return hv.onEvent((e) => {
      if (e.type === "lifecycle") {
        if (e.event === "defined" && this.ownDefine(e.name)) return;
        return void (domainKey(e.name) && enqueue(domainKey(e.name)!));
      }
      if (e.type === "agent") {
        // A guest agent that (re)connects is asked at once.
        this.guests.delete(e.name);
        return void (domainKey(e.name) && enqueue(domainKey(e.name)!));
      }
      if (e.type === "connected" && !connected) all().forEach(enqueue);
      connected = e.type === "connected";
    });
  }

  /**
   * The domain named `name` and whose it is: its persistent definition (or, for a transient one, its
   * live XML) carries the owner mark. null when there is no such domain.
   */
  async find(name: string): Promise<{ domain: DomainInfo; definition: DomainModel; owner?: DomainOwner } | null> {
    const { hypervisor: hv } = this.host;
    const domain = await hv.lookup(name);
    if (!domain) return null;
    const xml = await hv.getXml(name, { inactive: domain.persistent }).catch((err: unknown) => {
      // Undefined between the two calls (by hand, behind our back): there is no such domain.
      if (err instanceof LibvirtError && err.kind === "not-found") return null;
      throw err;
    });
    if (xml === null) return null;
    const definition = parseDomainXml(xml);
    return { domain, definition, ...(definition.owner ? { owner: definition.owner } : {}) };
  }

  /**
   * The domain as it is: live model when it runs, persistent definition, links for taps, seed
   * digest, and, while it does not run but may be started, the disk images another client has open.
   */
  async observe(
    name: string,
    found: Awaited<ReturnType<VmExecutor["find"]>>,
    vm: VirtualMachine,
    seeded: boolean,
    images: { pool: string; image: string }[],
  ): Promise<VmObservation> {
    const { hypervisor: hv } = this.host;
    const domain = found?.domain ?? null;
    const running = isActive(domain);
    const inUse =
      running || !mayStart(vm)
        ? []
        : (
            await Promise.all(
              images.map(async (i) =>
                (await this.host.store.status(i.pool, i.image))?.watchers.length ? `${i.pool}/${i.image}` : [],
              ),
            )
          ).flat();
    return {
      domain,
      ...(running ? { live: parseDomainXml(await hv.getXml(name)) } : {}),
      ...(domain?.persistent ? { inactive: found!.definition } : {}),
      ...(running && vm.spec.interfaces?.length ? { links: await this.host.network.links() } : {}),
      ...(seeded ? { seedDigest: await this.host.media.digest(name) } : {}),
      imagesInUse: inUse,
    };
  }

  /**
   * What the guest says of itself, asked of its agent only when due (soon after it connects or
   * something changed, then less and less often); undefined while no agent is connected. A read
   * that fails keeps the last answer and is tried again soon. `nextInMs`: when to look again.
   */
  async guest(name: string, connected: boolean, log: Logger): Promise<{ info?: GuestInfo; nextInMs?: number }> {
    if (!connected) {
      this.guests.delete(name);
      return {};
    }
    const now = Date.now();
    const last = this.guests.get(name);
    if (last && now < last.at + last.intervalMs)
      return { ...(last.info ? { info: last.info } : {}), nextInMs: last.at + last.intervalMs - now };
    let info: GuestInfo | undefined;
    try {
      info = await this.host.hypervisor.guestInfo(name);
    } catch (err) {
      if (!(err instanceof LibvirtError)) throw err;
      log.debug({ err: err.message }, "the guest agent did not answer");
    }
    const intervalMs = guestReadInterval(last, info);
    const read = { info: info ?? last?.info, at: now, intervalMs };
    this.guests.set(name, read);
    return { ...(read.info ? { info: read.info } : {}), nextInMs: intervalMs };
  }

  /** The user-data the VM's Secret holds, when its spec names one. */
  async secretUserData(vm: VirtualMachine): Promise<string | undefined> {
    const ref = vm.spec.cloudInit?.userDataSecretRef;
    if (!ref) return undefined;
    const { key, value: data } = await this.secretKey(vm, ref, "userdata");
    // The same bound as spec.cloudInit.userData; the message never quotes the data.
    const bytes = Buffer.byteLength(data);
    if (bytes > maxUserDataBytes)
      throw new InvalidInput(
        `Secret ${ref.name} key ${key} holds ${bytes} bytes of user-data, more than ${maxUserDataBytes}`,
      );
    return data;
  }

  /** One key of a Secret in the VM's namespace, which must be there (else MissingInput). */
  private async secretKey(vm: VirtualMachine, ref: { name: string; key?: string }, defaultKey: string) {
    const key = ref.key ?? defaultKey;
    const value = await this.host.readSecret(namespaceOf(vm), ref.name, key);
    if (value === undefined) throw new MissingInput(`Secret ${ref.name} has no key ${key}`);
    return { key, value };
  }

  /** The console password the VM's Secret holds, when its spec names one; checked, never quoted. */
  async consolePassword(vm: VirtualMachine): Promise<string | undefined> {
    const ref = vm.spec.graphicsPasswordSecretRef;
    if (!ref || (vm.spec.graphics ?? "spice") === "none") return undefined;
    const { key, value: password } = await this.secretKey(vm, ref, "password");
    const max = vm.spec.graphics === "vnc" ? 8 : 64; // VNC authentication uses 8 characters at most
    if (!/^[\x20-\x7e]+$/.test(password) || password.length > max)
      throw new InvalidInput(
        `Secret ${ref.name} key ${key}: a console password is 1 to ${max} printable ASCII characters for ${vm.spec.graphics ?? "spice"}`,
      );
    return password;
  }

  /**
   * Deletion, or an orphan (`vm` undefined): stop gracefully, then undefine and remove the seed image.
   * Says how soon to look again while the guest has time left to shut down.
   */
  async teardown(
    vm: VirtualMachine | undefined,
    target: { name: string; key: string },
    signal: AbortSignal,
    emit: (e: PlannedEvent) => Promise<void>,
    node: string,
  ): Promise<ReturnType<typeof planVmCleanup>> {
    const found = await this.find(target.name);
    // Only a domain made for this object (or, for an orphan, for this name) is ever stopped or undefined.
    const mine = vm ? found?.owner?.uid === vm.metadata.uid : found?.owner !== undefined;
    const domain = mine ? found!.domain : null;
    const deadline = vm ? statusDeadline(vm) : this.orphanDeadlines.get(target.key);
    const grace = found?.owner?.graceSeconds;
    const input = {
      now: Date.now(),
      shutdownDeadline: deadline,
      ...(grace !== undefined ? { orphanGraceSeconds: grace } : {}),
    };
    const plan = planVmCleanup(vm, domain, input, node);
    await this.run(plan.steps, { ...target, generation: vm?.metadata.generation }, signal, emit);
    if (!vm && plan.shutdownDeadline !== undefined) this.orphanDeadlines.set(target.key, plan.shutdownDeadline);
    if (!plan.pollMs) {
      this.guests.delete(target.name);
      this.starts.forget(target.key);
      this.orphanDeadlines.delete(target.key);
    }
    return plan;
  }

  /** In order; a start libvirt refuses backs off (and is the outcome) instead of failing the reconcile. */
  run(
    steps: VmStep[],
    target: { name: string; key: string; generation: number | undefined },
    signal: AbortSignal,
    emit: (e: PlannedEvent) => Promise<void>,
  ): Promise<StartOutcome | undefined> {
    return runSteps(steps, (step) => this.step(step, target, emit), signal, emit);
  }

  private async step(
    step: VmStep,
    { name, key, generation }: { name: string; key: string; generation: number | undefined },
    emit: (e: PlannedEvent) => Promise<void>,
  ): Promise<StartOutcome | undefined> {
    const { hypervisor: hv, media, network } = this.host;
    const live = { live: true, config: false };
    switch (step.op) {
      case "seed":
        return void (await media.write(name, step.data));
      case "define":
        this.ownDefines.set(name, Date.now() + 5_000);
        try {
          return void (await hv.define(step.xml));
        } catch (err) {
          this.ownDefines.delete(name);
          throw err;
        }
      case "autostart":
        return void (await hv.setAutostart(name, step.on));
      case "replug":
        return void (await network.addPort(step.bridge, step.tap));
      case "attach":
        return void (await hv.attachDevice(name, step.xml, live));
      case "detach":
        return void (await hv.detachDevice(name, step.xml, live));
      case "update":
        return void (await hv.updateDevice(name, step.xml, live));
      case "grow":
        return void (await hv.blockResize(name, step.target, step.bytes));
      case "start":
        try {
          await hv.start(name);
        } catch (err) {
          // A failed start backs off. libvirtd away, or the domain gone or changed meanwhile, is the runtime's retry.
          if (!(err instanceof LibvirtError) || (err.kind !== "failed" && err.kind !== "invalid")) throw err;
          const wait = this.starts.failed(key, generation, startFailure(err));
          await emit({ type: "Warning", reason: "StartFailed", message: wait.message });
          return { ...startFailed(wait, Date.now()), active: false };
        }
        this.starts.started(key, generation);
        return;
      case "shutdown":
        return void (await hv.shutdown(name));
      case "destroy":
        return void (await hv.destroy(name));
      case "undefine":
        return void (await hv.undefine(name));
      case "remove-seed":
        return void (await media.remove(name));
    }
  }
}

/** UUID and MACs: from status when known, else from the domain found, else derived from the uid; never changed after. */
export function identityOf(vm: VirtualMachine, existing: DomainInfo | null) {
  const status = vm.status ?? {};
  const uid = vm.metadata.uid ?? randomUUID();
  const domainUUID = status.domainUUID ?? existing?.uuid ?? uid;
  const interfaces = (vm.spec.interfaces ?? []).map((i) => ({
    name: i.name,
    mac: (i.mac ?? status.interfaces?.find((s) => s.name === i.name)?.mac ?? macOf(uid, i.name)).toLowerCase(),
    bridge: i.bridgeRef,
  }));
  // The guest's addresses (ips) are not identity.
  const stored = (status.interfaces ?? []).map(({ name, mac, bridge }) => ({ name, mac, bridge }));
  const changed = status.domainUUID !== domainUUID || JSON.stringify(stored) !== JSON.stringify(interfaces);
  return { changed, status: { domainUUID, interfaces } satisfies VirtualMachineStatus };
}

/**
 * A MAC in QEMU's 52:54:00 prefix, as libvirt itself makes them, but derived from the object's uid
 * and the NIC's name: a reconcile that dies before status is written derives the same one again.
 */
const macOf = (uid: string, nic: string) =>
  [
    "52",
    "54",
    "00",
    ...[...createHash("sha256").update(`${uid}/${nic}`).digest().subarray(0, 3)].map((b) =>
      b.toString(16).padStart(2, "0"),
    ),
  ].join(":");

/**
 * Why a start failed, in words that stay the same from one try to the next (so that the Events of
 * one failure fold into one): libvirt wraps QEMU's own error differently depending on timing ("qemu
 * unexpectedly closed the monitor", "process exited while connecting to monitor") and QEMU stamps
 * it with the time; QEMU's last line is what says why.
 */
export function startFailure(err: LibvirtError): string {
  const qemu = err.message.includes("qemu-system-") ? err.message.split(/qemu-system-\w+: /).at(-1) : undefined;
  const message = qemu ? `${err.operation}: ${qemu}` : err.message;
  return message.replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)?:?\s*/g, "").trim();
}

/** The error policy: bad input stops retries until the object changes; the host failing is retried. */
export function vmFailure(err: unknown): Failure | undefined {
  if (err instanceof DomainXmlError) return { reason: "InvalidSpec", message: err.message, terminal: true };
  if (err instanceof UnsupportedOnNode) return { reason: "Unsupported", message: err.message, terminal: true };
  if (err instanceof MissingInput) return { reason: "MissingInput", message: err.message, terminal: false };
  if (err instanceof InvalidInput) return { reason: "InvalidSpec", message: err.message, terminal: false };
  if (err instanceof NotOwned) return { reason: "NotOwned", message: err.message, terminal: true };
  if (err instanceof QuantityError) return { reason: "InvalidSpec", message: err.message, terminal: true };
  if (!(err instanceof LibvirtError)) return undefined;
  // The domain went while we acted on it (undefined by hand, behind our back): not a failure of the
  // VM, whose phase must stay what it was; the retry finds no domain and defines it again.
  if (err.kind === "not-found") return undefined;
  const reason =
    { invalid: "InvalidDomain", conflict: "DomainConflict", transient: "LibvirtUnavailable" }[err.kind as string] ??
    "LibvirtError";
  return { reason, message: err.message, terminal: err.kind === "invalid" };
}
