import type { Logger } from "pino";
import { formatBytes, toBytes } from "../api/quantity.js";
import type { Volume, VolumeStatus } from "../api/volume.js";
import type { VirtualMachine } from "../api/virtualmachine.js";
import { RbdError } from "../host/rbd/errors.js";
import type { BlockStore } from "../host/rbd/client.js";
import type { ResourceClient } from "../runtime/client.js";
import { condition, isTrue, setConditions, type ConditionInput } from "../runtime/conditions.js";
import { TerminalError, type Action } from "../runtime/controller.js";
import type { EventRecorder } from "../runtime/events.js";
import { addFinalizerPatch, removeFinalizerPatch } from "../runtime/finalizers.js";
import { statusPatch } from "../runtime/status.js";

export const volumeFinalizer = "kaktus.kowabunga.cloud/volume";

/** Which pools tenants may use: the operator's configuration, never the tenant's choice. */
export interface PoolPolicy {
  /** Pools Volumes may live in. */
  pools: readonly string[];
  /** Pools whose images may be cloned from. */
  clonePools: readonly string[];
}

export interface VolumeContext {
  store: BlockStore;
  volumes: ResourceClient<Volume>;
  /** Informer caches: the Volume itself and the VMs that may reference it. */
  getVolume(key: string): Volume | undefined;
  virtualMachines(namespace: string): VirtualMachine[];
  events: EventRecorder;
  policy: PoolPolicy;
  log: Logger;
  /** Drift check period for converged Volumes. */
  resyncMs: number;
}

/** RBD image of a Volume: "." cannot occur in a namespace, so namespace.name never collides. */
export const volumeImage = (v: Volume) => `${v.metadata.namespace}.${v.metadata.name}`;

const retryInMs = 10_000;

/**
 * Volume reconciler (leader only): the RBD image exists with at least the requested size, its
 * observed state is in status, and deletion honours reclaimPolicy and never removes an image a VM
 * references or a client has open.
 */
export async function reconcileVolume(key: string, ctx: VolumeContext): Promise<Action> {
  const cached = ctx.getVolume(key);
  if (!cached) return {};
  let volume: Volume = cached;
  const { pool } = volume.spec;
  const image = volumeImage(volume);
  const inUseBy = ctx
    .virtualMachines(volume.metadata.namespace ?? "")
    .filter((vm) => vm.spec.disks?.some((d) => d.volumeRef === cached.metadata.name))
    .map((vm) => vm.metadata.name)
    .sort();

  if (volume.metadata.deletionTimestamp) return cleanup(volume, key, ctx, inUseBy);

  // The finalizer goes on before anything exists on the host; later writes build on the patched object.
  volume = (await ctx.volumes.patch(key, addFinalizerPatch(volume.metadata.finalizers, volumeFinalizer))) ?? volume;
  const refusal = policyRefusal(volume, ctx.policy);
  if (refusal) {
    await report(volume, key, ctx, { phase: "Failed", synced: ["False", "PoolNotAllowed", refusal], inUseBy });
    await ctx.events.warning(volume, "PoolNotAllowed", refusal);
    throw new TerminalError(refusal);
  }

  const size = toBytes(volume.spec.size);
  let observed = await ctx.store.status(pool, image);
  try {
    if (!observed) {
      await provision(volume, image, size, ctx);
      await ctx.events.normal(volume, "Created", `created RBD image ${pool}/${image}`);
      observed = await ctx.store.status(pool, image);
    } else if (observed.size < size && observed.watchers.length === 0) {
      await ctx.store.grow(pool, image, size);
      // Capacity already reported at the requested size: someone shrank the image behind the operator.
      if (volume.status?.capacity && toBytes(volume.status.capacity) >= size)
        await ctx.events.warning(
          volume,
          "SizeDrift",
          `${pool}/${image} had shrunk; grew it back to ${formatBytes(size)}`,
        );
      else await ctx.events.normal(volume, "Resized", `grew ${pool}/${image} to ${formatBytes(size)}`);
      observed = await ctx.store.status(pool, image);
    }
  } catch (err) {
    if (err instanceof RbdError && err.kind !== "transient") {
      await report(volume, key, ctx, { phase: "Failed", synced: ["False", reasonOf(err), err.message], inUseBy });
      await ctx.events.warning(volume, reasonOf(err), err.message);
      if (err.kind === "invalid" || err.kind === "denied") throw new TerminalError(err.message);
    }
    throw err;
  }
  if (!observed) throw new Error(`${pool}/${image} vanished right after it was made`);
  // A running VM holds the image: only libvirt's block resize makes the guest see the new size.
  const growing = observed.size < size;
  await report(volume, key, ctx, {
    phase: growing ? "Creating" : "Ready",
    ready: growing
      ? ["False", "WaitingForResize", "the VM using this Volume grows it live"]
      : ["True", "ImageReady", ""],
    synced: ["True", "Synced", ""],
    image: `${pool}/${image}`,
    capacity: formatBytes(observed.size),
    watchers: observed.watchers.length,
    inUseBy,
  });
  return { requeueAfterMs: growing ? retryInMs : ctx.resyncMs };
}

async function provision(volume: Volume, image: string, size: bigint, ctx: VolumeContext): Promise<void> {
  const { pool, source } = volume.spec;
  if (source?.image) {
    await ctx.store.clone(
      { pool: source.image.pool, name: source.image.name, snapshot: source.image.snapshot },
      pool,
      image,
    );
    const cloned = await ctx.store.status(pool, image);
    if (cloned && cloned.size < size) await ctx.store.grow(pool, image, size);
  } else if (source?.volume) {
    const from = ctx.getVolume(`${volume.metadata.namespace}/${source.volume.name}`);
    if (!from || !isTrue(from.status?.conditions, "Ready")) {
      throw new Error(`source Volume ${source.volume.name} is not Ready yet`);
    }
    await ctx.store.copy({ pool: from.spec.pool, name: volumeImage(from) }, pool, image);
    const copied = await ctx.store.status(pool, image);
    if (copied && copied.size < size) await ctx.store.grow(pool, image, size);
  } else {
    await ctx.store.create(pool, image, size);
  }
}

async function cleanup(volume: Volume, key: string, ctx: VolumeContext, inUseBy: string[]): Promise<Action> {
  const { pool } = volume.spec;
  const image = volumeImage(volume);
  const drop = () => ctx.volumes.patch(key, removeFinalizerPatch(volume.metadata.finalizers, volumeFinalizer));
  if (!volume.metadata.finalizers?.includes(volumeFinalizer)) return {};
  if (volume.spec.reclaimPolicy === "Retain") {
    await ctx.events.normal(volume, "Retained", `kept RBD image ${pool}/${image} (reclaimPolicy Retain)`);
    await drop();
    return {};
  }
  if (inUseBy.length) {
    const message = `still used by VirtualMachine ${inUseBy.join(", ")}`;
    await report(volume, key, ctx, { phase: "Terminating", ready: ["False", "InUse", message], inUseBy });
    await ctx.events.warning(volume, "InUse", `not deleting: ${message}`);
    return { requeueAfterMs: retryInMs };
  }
  const observed = await ctx.store.status(pool, image);
  if (observed && observed.watchers.length) {
    const message = `${pool}/${image} is open by ${observed.watchers.length} client(s)`;
    await report(volume, key, ctx, { phase: "Terminating", ready: ["False", "ImageInUse", message], inUseBy });
    await ctx.events.warning(volume, "ImageInUse", `not deleting: ${message}`);
    return { requeueAfterMs: retryInMs };
  }
  // Already gone (removed by hand, or an earlier attempt): nothing to wait for.
  if (observed) {
    await ctx.store.remove(pool, image);
    await ctx.events.normal(volume, "Deleted", `removed RBD image ${pool}/${image}`);
  }
  await drop();
  return {};
}

function policyRefusal(v: Volume, policy: PoolPolicy): string | undefined {
  if (!policy.pools.includes(v.spec.pool))
    return `pool ${v.spec.pool} is not one Volumes may use (${policy.pools.join(", ")})`;
  const from = v.spec.source?.image?.pool;
  if (from !== undefined && !policy.clonePools.includes(from))
    return `pool ${from} is not one images may be cloned from`;
  return undefined;
}

const reasonOf = (err: RbdError) =>
  ({
    "not-found": "SourceNotFound",
    exists: "ImageExists",
    busy: "ImageBusy",
    denied: "AccessDenied",
    invalid: "InvalidRequest",
  })[err.kind as string] ?? "CephError";

interface Report {
  phase: string;
  ready?: [ConditionInput["status"], string, string];
  synced?: [ConditionInput["status"], string, string];
  image?: string;
  capacity?: string;
  watchers?: number;
  inUseBy: string[];
}

/** Rebuilds status from what was observed and writes it only if it changed. */
async function report(volume: Volume, key: string, ctx: VolumeContext, r: Report): Promise<void> {
  const generation = volume.metadata.generation;
  const asCondition = (type: string, c: Report["ready"]) => c && condition(type, c[0], c[1], c[2]);
  const conditions = setConditions(
    volume.status?.conditions,
    [
      asCondition("Ready", r.ready),
      asCondition("Synced", r.synced),
      // A failed sync makes the Volume not Ready, for the same reason.
      r.synced?.[0] === "False" ? asCondition("Ready", r.synced) : undefined,
    ],
    generation,
  );
  const status: VolumeStatus = {
    ...volume.status,
    ...(generation !== undefined ? { observedGeneration: generation } : {}),
    phase: r.phase,
    conditions,
    ...(r.image ? { image: r.image } : {}),
    ...(r.capacity ? { capacity: r.capacity } : {}),
    ...(r.watchers !== undefined ? { watchers: r.watchers } : {}),
    inUseBy: r.inUseBy,
  };
  await ctx.volumes.patchStatus(key, statusPatch(volume, status));
}
