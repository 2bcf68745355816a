import { kinds } from "../api/kinds.js";
import { namespaceOf, volumeImage } from "../api/names.js";
import { QuantityError, toBytes } from "../api/quantity.js";
import type { VirtualMachine } from "../api/virtualmachine.js";
import type { Volume, VolumeStatus } from "../api/volume.js";
import type { BlockStore } from "../host/rbd/client.js";
import { RbdError } from "../host/rbd/errors.js";
import type { Controller } from "../runtime/controller.js";
import { changedIn, conditionState, specOrMetaChanged } from "../runtime/filters.js";
import { findCondition } from "../runtime/conditions.js";
import { objectKey } from "../runtime/informer.js";
import type { Manager } from "../runtime/manager.js";
import { runSteps, type Failure, type ReconcileContext } from "../runtime/reconciler.js";
import { byNamespace, namespaceLabels, vmsByVolume, volumesBySource, type Namespace } from "./indexes.js";
import { bytesOf, capacityOf, quotaRefusal, type Claimant } from "./quota.js";
import {
  partialImage,
  planVolume,
  planVolumeCleanup,
  poolsFor,
  volumeStatus,
  type PoolPolicy,
  type VolumeObservation,
  type VolumeStep,
} from "./volume-plan.js";

export type { PoolPolicy } from "./volume-plan.js";

export const volumeFinalizer = "kaktus.kowabunga.cloud/volume";

export interface VolumeDeps {
  store: BlockStore;
  policy: PoolPolicy;
  /** Drift check period for converged Volumes. */
  resyncMs: number;
  /** Only this namespace's Volumes (tests sharing an apiserver); undefined: all. */
  namespace?: string;
  /** Throws unless this agent surely still leads: called before every Ceph change. */
  fence: () => void;
}

const retryInMs = 10_000;
/**
 * A live grow is done by the VM's node (QEMU grows the image it has open), which tells this
 * controller nothing: the image's size is read again this often meanwhile (one stat), for the
 * first half minute of the wait; after that (that node's agent may be down) at the usual retry.
 */
const resizePoll = { everyMs: 1_000, forMs: 30_000 };
type Ctx = ReconcileContext<VolumeStatus>;

/**
 * Volume controller (leader only): the RBD image exists with at least the requested size, its
 * observed state is in status, and deletion honours reclaimPolicy and never removes an image a VM
 * references or a client has open. Decisions are in ./volume-plan.ts.
 */
export function setupVolumes(manager: Manager, deps: VolumeDeps): Controller {
  const volumes = manager.informer<Volume>(kinds.volume);
  const vms = manager.informer<VirtualMachine>(kinds.virtualMachine, { leaderOnly: true });
  const namespaces = manager.informer<Namespace>(kinds.namespace);
  const usersOf = vmsByVolume(vms);
  const copiesOf = volumesBySource(volumes);
  const inNamespace = byNamespace(volumes);
  /** Volumes of a namespace refused for its pools or capacity: a change there may let them in. */
  const refusedIn = (ns: string) =>
    inNamespace(ns)
      .filter(mine)
      .filter((v) =>
        ["QuotaExceeded", "PoolNotAllowed"].includes(findCondition(v.status?.conditions, "Ready")?.reason ?? ""),
      )
      .map(objectKey);
  const mine = (o: { metadata: { namespace?: string } }) => !deps.namespace || o.metadata.namespace === deps.namespace;
  const volumeKeys = (vm: VirtualMachine) =>
    (vm.spec.disks ?? []).map((d) => `${vm.metadata.namespace}/${d.volumeRef}`);

  const observe = async (volume: Volume): Promise<VolumeObservation> => {
    const from = volume.spec.source?.volume;
    const { pool } = volume.spec;
    const image = await deps.store.status(pool, volumeImage(volume));
    // A leftover build matters only while there is no image yet, or when all goes: a converged
    // Volume's resync reads one image, not two.
    const leftovers = !image || volume.metadata.deletionTimestamp !== undefined;
    return {
      image,
      partial: leftovers ? await deps.store.status(pool, partialImage(volumeImage(volume))) : null,
      inUseBy: usersOf(objectKey(volume))
        .map((vm) => vm.metadata.name)
        .sort(),
      source: from ? volumes.get(`${namespaceOf(volume)}/${from.name}`) : undefined,
    };
  };

  return (
    manager
      .controller<Volume>("volume", kinds.volume)
      .for({ filter: specOrMetaChanged, owns: mine })
      // A copy waits for its source Volume to be Ready.
      .watches(volumes, (v) => copiesOf(objectKey(v)).filter(mine).map(objectKey), changedIn(readiness))
      // Which VMs reference a Volume is in its status and holds its deletion; whether they run opens its image.
      .watches(
        vms,
        (vm, old) => new Set([...volumeKeys(vm), ...(old ? volumeKeys(old) : [])]),
        changedIn((vm) => [volumeKeys(vm), vm.status?.phase]),
      )
      // A namespace's labels choose its pools, its annotations its capacity; a Volume that shrinks
      // its namespace's use (deleted, or its image gone) may make room for a refused one.
      .watches(
        namespaces,
        (n) => refusedIn(n.metadata.name),
        changedIn((n) => [n.metadata.labels, n.metadata.annotations]),
      )
      .watches(
        volumes,
        (v) => refusedIn(namespaceOf(v)),
        changedIn((v) => [v.status?.capacity, v.metadata.deletionTimestamp]),
      )
      .leaderElected()
      .reconcile<VolumeStatus>({
        finalizer: volumeFinalizer,
        async apply(volume, ctx) {
          const before = await observe(volume);
          const ns = namespaces.get(namespaceOf(volume))?.metadata;
          const pools = poolsFor(deps.policy, namespaceLabels(namespaceOf(volume), ns?.labels));
          const plan = planVolume(volume, before, pools, quotaFor(volume, before, ns?.annotations));
          await execute(plan.steps, ctx);
          const observed = plan.steps.length ? await observe(volume) : before;
          ctx.status.apply(volumeStatus(volume, observed, plan));
          // Nothing to retry until the object changes (a new generation, an annotation).
          if (plan.refusal) {
            await ctx.events.warning(plan.refusal.reason, plan.refusal.message);
            return {};
          }
          const done = ctx.status.value.phase === "Ready";
          const ready = findCondition(ctx.status.value.conditions, "Ready");
          const growing =
            ready?.reason === "WaitingForResize" &&
            Date.now() - Date.parse(ready.lastTransitionTime) < resizePoll.forMs;
          return { requeueAfterMs: done ? deps.resyncMs : growing ? resizePoll.everyMs : retryInMs };
        },
        async cleanup(volume, ctx) {
          const observed = await observe(volume);
          // Clients of fenced nodes may still be listed as watchers: they no longer hold the image.
          if (observed.image?.watchers.length) observed.blocklisted = await deps.store.blocklisted();
          const plan = planVolumeCleanup(volume, observed);
          if (plan.event) await ctx.events.emit(plan.event);
          await execute(plan.steps, ctx);
          ctx.status.apply(volumeStatus(volume, observed, plan));
          return plan.waiting ? { requeueAfterMs: retryInMs } : {};
        },
        failure,
      })
  );

  /** Why this Volume's namespace has no room for its size (when it asks for more than its image has). */
  function quotaFor(volume: Volume, observed: VolumeObservation, annotations?: Record<string, string>) {
    const { limits, error } = capacityOf(annotations);
    if (error) return `the namespace's capacity cannot be read: ${error}`;
    if (limits.storage === undefined) return undefined;
    // Another object's unreadable size counts as nothing: its own reconcile reports it.
    const claimant = (v: Volume): Claimant => {
      const capacity = v.status?.capacity;
      const holds = v === volume ? observed.image?.size : capacity ? bytesOf(capacity) : undefined;
      return {
        key: objectKey(v),
        created: v.metadata.creationTimestamp ?? "",
        request: { storage: v === volume ? toBytes(v.spec.size) : (bytesOf(v.spec.size) ?? 0n) },
        ...(holds !== undefined ? { holds: { storage: holds } } : {}),
        deleting: v.metadata.deletionTimestamp !== undefined,
      };
    };
    const others = inNamespace(namespaceOf(volume)).filter((v) => v.metadata.uid !== volume.metadata.uid);
    return quotaRefusal(objectKey(volume), [claimant(volume), ...others.map(claimant)], { storage: limits.storage });
  }

  function execute(steps: VolumeStep[], ctx: Ctx) {
    return runSteps(steps, run, ctx.signal, ctx.events.emit);
  }

  /**
   * One Ceph change per step; a clone or a copy is grown to the requested size. Each is fenced: an
   * agent that is no longer sure to lead (its lease may have passed to another) changes nothing.
   */
  async function run(step: VolumeStep): Promise<void> {
    const { store } = deps;
    deps.fence();
    if (step.op === "create") await store.create(step.pool, step.image, step.size);
    else if (step.op === "mark") await store.setOwner(step.pool, step.image, step.uid);
    else if (step.op === "rename") await store.rename(step.pool, step.from, step.to);
    else if (step.op === "grow") await store.grow(step.pool, step.image, step.size);
    else if (step.op === "remove") await store.remove(step.pool, step.image);
    else if (step.op === "blocklist") await store.blocklist(step.address);
    else {
      await (step.op === "clone"
        ? store.clone(step.from, step.pool, step.image)
        : store.copy(step.from, step.pool, step.image));
      await growTo(step.pool, step.image, step.size);
    }
  }

  /** A clone or copy of a smaller image is grown to the requested size. */
  async function growTo(pool: string, image: string, size: bigint): Promise<void> {
    const made = await deps.store.status(pool, image);
    if (made && made.size < size) await deps.store.grow(pool, image, size);
  }
}

const readiness = (v: Volume) => conditionState(v.status?.conditions, "Ready");

/** Ceph refusing is reported (retried unless the request itself is wrong); Ceph unreachable just retries. */
function failure(err: unknown): Failure | undefined {
  if (err instanceof QuantityError) return { reason: "InvalidSpec", message: err.message, terminal: true };
  if (!(err instanceof RbdError) || err.kind === "transient") return undefined;
  const reason =
    {
      "not-found": "SourceNotFound",
      exists: "ImageExists",
      busy: "ImageBusy",
      denied: "AccessDenied",
      invalid: "InvalidRequest",
    }[err.kind as string] ?? "CephError";
  return { reason, message: err.message, terminal: err.kind === "invalid" || err.kind === "denied" };
}
