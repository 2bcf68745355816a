import { volumeImage } from "../api/names.js";
import { formatBytes, toBytes } from "../api/quantity.js";
import type { Volume, VolumeStatus } from "../api/volume.js";
import type { ImageStatus } from "../host/rbd/types.js";
import { condition, type ConditionInput } from "../runtime/conditions.js";
import type { PlannedEvent } from "../runtime/reconciler.js";

/**
 * The Volume controller's decisions, pure: what to do to the RBD image, and what status says,
 * from the object and what was observed. ./volume.ts runs the steps.
 */

/** Which pools tenants may use: the operator's configuration, never the tenant's choice. */
export interface PoolPolicy {
  /** Pools Volumes may live in. */
  pools: readonly string[];
  /** Pools whose images may be cloned from. */
  clonePools: readonly string[];
}

export type VolumeStep = { event?: PlannedEvent } & (
  | { op: "create"; pool: string; image: string; size: bigint }
  /** Clone, then grow the clone to `size` if the template is smaller. */
  | { op: "clone"; from: { pool: string; name: string; snapshot: string }; pool: string; image: string; size: bigint }
  | { op: "copy"; from: { pool: string; name: string }; pool: string; image: string; size: bigint }
  | { op: "grow"; pool: string; image: string; size: bigint }
  | { op: "remove"; pool: string; image: string }
);

export interface VolumeObservation {
  /** The image, null when it does not exist. */
  image: ImageStatus | null;
  /** VirtualMachines of the namespace that reference the Volume, sorted. */
  inUseBy: string[];
  /** The Volume a copy is made from (spec.source.volume), when it exists. */
  source?: Volume | undefined;
}

export interface VolumePlan {
  steps: VolumeStep[];
  /** Nothing can progress until the object changes (a pool the policy refuses). */
  refusal?: string;
  /** Waiting for something (the source Volume): said in status, looked at again later. */
  waiting?: Waiting;
}

export interface Waiting {
  reason: string;
  message: string;
}

export function policyRefusal(v: Volume, policy: PoolPolicy): string | undefined {
  if (!policy.pools.includes(v.spec.pool))
    return `pool ${v.spec.pool} is not one Volumes may use (${policy.pools.join(", ")})`;
  const from = v.spec.source?.image?.pool;
  if (from !== undefined && !policy.clonePools.includes(from))
    return `pool ${from} is not one images may be cloned from`;
  return undefined;
}

const isReady = (v: Volume | undefined) =>
  v?.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");

/** Apply: make the image exist with at least the requested size. */
export function planVolume(volume: Volume, observed: VolumeObservation, policy: PoolPolicy): VolumePlan {
  const refusal = policyRefusal(volume, policy);
  if (refusal) return { steps: [], refusal };
  const { pool, source } = volume.spec;
  const image = volumeImage(volume);
  const size = toBytes(volume.spec.size);
  const made = { type: "Normal", reason: "Created", message: `created RBD image ${pool}/${image}` } as const;
  if (!observed.image) {
    if (source?.image) return { steps: [{ op: "clone", from: source.image, pool, image, size, event: made }] };
    if (source?.volume) {
      const from = observed.source;
      if (!isReady(from))
        return {
          steps: [],
          waiting: { reason: "WaitingForSource", message: `source Volume ${source.volume.name} is not Ready yet` },
        };
      return {
        steps: [
          { op: "copy", from: { pool: from!.spec.pool, name: volumeImage(from!) }, pool, image, size, event: made },
        ],
      };
    }
    return { steps: [{ op: "create", pool, image, size, event: made }] };
  }
  // A running VM holds the image: only libvirt's block resize makes the guest see the new size.
  if (observed.image.size >= size || observed.image.watchers.length) return { steps: [] };
  // Capacity already reported at the requested size: someone shrank the image behind the operator.
  const shrunk = volume.status?.capacity !== undefined && toBytes(volume.status.capacity) >= size;
  const event: PlannedEvent = shrunk
    ? {
        type: "Warning",
        reason: "SizeDrift",
        message: `${pool}/${image} had shrunk; grew it back to ${formatBytes(size)}`,
      }
    : { type: "Normal", reason: "Resized", message: `grew ${pool}/${image} to ${formatBytes(size)}` };
  return { steps: [{ op: "grow", pool, image, size, event }] };
}

export interface CleanupPlan {
  steps: VolumeStep[];
  /** Why the image cannot go yet (a VM references it, a client has it open): cleanup waits. */
  waiting?: Waiting;
  event?: PlannedEvent;
}

/** Cleanup: Retain keeps the image; otherwise it goes once nothing uses it. Already gone: done. */
export function planVolumeCleanup(volume: Volume, observed: VolumeObservation): CleanupPlan {
  const { pool } = volume.spec;
  const image = volumeImage(volume);
  if (volume.spec.reclaimPolicy === "Retain")
    return {
      steps: [],
      event: { type: "Normal", reason: "Retained", message: `kept RBD image ${pool}/${image} (reclaimPolicy Retain)` },
    };
  if (observed.inUseBy.length) {
    const message = `still used by VirtualMachine ${observed.inUseBy.join(", ")}`;
    return {
      steps: [],
      waiting: { reason: "InUse", message },
      event: { type: "Warning", reason: "InUse", message: `not deleting: ${message}` },
    };
  }
  if (observed.image?.watchers.length) {
    const message = `${pool}/${image} is open by ${observed.image.watchers.length} client(s)`;
    return {
      steps: [],
      waiting: { reason: "ImageInUse", message },
      event: { type: "Warning", reason: "ImageInUse", message: `not deleting: ${message}` },
    };
  }
  if (!observed.image) return { steps: [] };
  return {
    steps: [
      {
        op: "remove",
        pool,
        image,
        event: { type: "Normal", reason: "Deleted", message: `removed RBD image ${pool}/${image}` },
      },
    ],
  };
}

/** The status fields and conditions that describe what was observed after the steps. */
export function volumeStatus(
  volume: Volume,
  observed: VolumeObservation,
  plan: { refusal?: string; waiting?: Waiting },
): { fields: Partial<VolumeStatus>; conditions: ConditionInput[] } {
  const { pool } = volume.spec;
  const { inUseBy } = observed;
  const waiting = plan.waiting && condition("Ready", "False", plan.waiting.reason, plan.waiting.message);
  if (volume.metadata.deletionTimestamp)
    return { fields: { phase: "Terminating", inUseBy }, conditions: waiting ? [waiting] : [] };
  if (plan.refusal)
    return {
      fields: { phase: "Failed", inUseBy },
      conditions: [
        condition("Synced", "False", "PoolNotAllowed", plan.refusal),
        condition("Ready", "False", "PoolNotAllowed", plan.refusal),
      ],
    };
  const image = observed.image;
  if (!image) return { fields: { phase: "Pending", inUseBy }, conditions: waiting ? [waiting] : [] };
  const growing = image.size < toBytes(volume.spec.size);
  return {
    fields: {
      phase: growing ? "Creating" : "Ready",
      image: `${pool}/${volumeImage(volume)}`,
      capacity: formatBytes(image.size),
      watchers: image.watchers.length,
      inUseBy,
    },
    conditions: [
      growing
        ? condition("Ready", "False", "WaitingForResize", "the VM using this Volume grows it live")
        : condition("Ready", "True", "ImageReady"),
      condition("Synced", "True", "Synced"),
    ],
  };
}
