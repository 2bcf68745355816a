import { adoptAnnotation, namespaceOf, volumeImage, wantsAdoption } from "../api/names.js";
import { formatBytes, toBytes } from "../api/quantity.js";
import type { Volume, VolumeStatus } from "../api/volume.js";
import type { ImageStatus } from "../host/rbd/types.js";
import { condition, type ConditionInput } from "../runtime/conditions.js";
import type { PlannedEvent } from "../runtime/reconciler.js";
import { matchesSelector, type LabelSelector } from "./selector.js";

/**
 * The Volume controller's decisions, pure: what to do to the RBD image, and what status says,
 * from the object and what was observed. ./volume.ts runs the steps.
 *
 * The operator acts only on images it made for this very object: each carries the object's UID
 * as its owner mark. An image is built under a temporary name (`<image>.partial`) and renamed
 * once whole, so an interrupted build is never taken for a finished one; a `.partial` left by an
 * interrupted build is removed and the build starts again.
 */

/** Which pools tenants may use: the operator's configuration, never the tenant's choice. */
export interface Pools {
  /** Pools Volumes may live in. */
  pools: readonly string[];
  /** Pools whose images may be cloned from. */
  clonePools: readonly string[];
}

/** The default pools, and per tenant (namespaces by label, first match) the pools they use instead. */
export interface PoolPolicy extends Pools {
  tenants?: readonly (Pools & { namespaceSelector: LabelSelector })[];
}

/** Where an image is built; "." cannot occur in a Volume's name, so no Volume's image has this name. */
export const partialImage = (image: string) => `${image}.partial`;

export type VolumeStep = { event?: PlannedEvent } & (
  | { op: "create"; pool: string; image: string; size: bigint }
  /** Clone, then grow the clone to `size` if the template is smaller. */
  | { op: "clone"; from: { pool: string; name: string; snapshot: string }; pool: string; image: string; size: bigint }
  | { op: "copy"; from: { pool: string; name: string }; pool: string; image: string; size: bigint }
  | { op: "mark"; pool: string; image: string; uid: string }
  | { op: "rename"; pool: string; from: string; to: string }
  | { op: "grow"; pool: string; image: string; size: bigint }
  | { op: "remove"; pool: string; image: string }
  /** Fences one client off the cluster ("IP:port/nonce"): its I/O is refused from now on. */
  | { op: "blocklist"; address: string }
);

/**
 * An interrupted build goes. Only the Volume leader opens a `.partial` (its copy or clone), and a
 * key's reconcile waits for its own: another client with it open is a previous leader, dead (its
 * watch lingers ~10 s) or frozen (it may still write). It is fenced first, as a dead node is.
 */
function removePartial(pool: string, image: string, partial: ImageStatus | null): VolumeStep[] {
  if (!partial) return [];
  const fence = partial.watchers.map(({ address }): VolumeStep => ({
    op: "blocklist",
    address,
    event: {
      type: "Warning",
      reason: "BuilderFenced",
      message: `blocklisted client ${address}: it still had the interrupted build ${pool}/${image} open (a previous leader)`,
    },
  }));
  return [...fence, { op: "remove", pool, image }];
}

export interface VolumeObservation {
  /** The image, null when it does not exist. */
  image: ImageStatus | null;
  /** What an interrupted build left (`<image>.partial`), null when nothing. */
  partial: ImageStatus | null;
  /** VirtualMachines of the namespace that reference the Volume, sorted. */
  inUseBy: string[];
  /** The Volume a copy is made from (spec.source.volume), when it exists. */
  source?: Volume | undefined;
  /** Clients fenced off the cluster (blocklisted): their watches do not count as users. */
  blocklisted?: string[];
}

export interface VolumePlan {
  steps: VolumeStep[];
  /** Nothing can progress until the object changes (a pool the policy refuses, an image not ours). */
  refusal?: { reason: string; message: string };
  /** Waiting for something (the source Volume): said in status, looked at again later. */
  waiting?: Waiting;
}

export interface Waiting {
  reason: string;
  message: string;
}

/** The pools a namespace's Volumes may use: the first tenant rule its labels match, else the default. */
export function poolsFor(policy: PoolPolicy, namespaceLabels: Readonly<Record<string, string>>): Pools {
  return policy.tenants?.find((t) => matchesSelector(t.namespaceSelector, namespaceLabels)) ?? policy;
}

export function policyRefusal(v: Volume, pools: Pools): string | undefined {
  if (!pools.pools.includes(v.spec.pool))
    return `pool ${v.spec.pool} is not one Volumes of namespace ${namespaceOf(v)} may use (${pools.pools.join(", ") || "none"})`;
  const from = v.spec.source?.image?.pool;
  if (from !== undefined && !pools.clonePools.includes(from))
    return `pool ${from} is not one images may be cloned from`;
  return undefined;
}

const isReady = (v: Volume | undefined) =>
  v?.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");

const notOwned = (v: Volume, image: ImageStatus) =>
  `rbd image ${v.spec.pool}/${volumeImage(v)} exists and was not made for this Volume (owner mark: ${image.owner ?? "none"}); ` +
  `it is left untouched. Annotate the Volume ${adoptAnnotation}=true to adopt it.`;

/**
 * A client address is fenced when it, or its whole IP ("IP:0/0"), is blocklisted. Addresses read
 * "IP:port/nonce", with an optional "v1:" or "any:" prefix.
 */
export function isFenced(address: string, blocklisted: readonly string[]): boolean {
  const bare = (a: string) => a.replace(/^(v1|v2|any):/, "");
  const ip = (a: string) => bare(a).replace(/:\d+\/\d+$/, "");
  return blocklisted.some((b) => bare(b) === bare(address) || (/:0\/0$/.test(bare(b)) && ip(b) === ip(address)));
}

/** Apply: make the image exist, marked as this Volume's, with at least the requested size. */
export function planVolume(
  volume: Volume,
  observed: VolumeObservation,
  pools: Pools,
  /** Why the namespace's capacity leaves no room for what this Volume asks (../quota.ts), if so. */
  quota?: string,
): VolumePlan {
  const refusal = policyRefusal(volume, pools);
  if (refusal) return { steps: [], refusal: { reason: "PoolNotAllowed", message: refusal } };
  // Nothing made and nothing grown: what exists stays as it is.
  if (quota) return { steps: [], refusal: { reason: "QuotaExceeded", message: quota } };
  const { pool, source } = volume.spec;
  const uid = volume.metadata.uid ?? "";
  const image = volumeImage(volume);
  const size = toBytes(volume.spec.size);
  const { image: existing } = observed;
  if (!existing) {
    const partial = partialImage(image);
    const steps: VolumeStep[] = removePartial(pool, partial, observed.partial);
    if (source?.image) steps.push({ op: "clone", from: source.image, pool, image: partial, size });
    else if (source?.volume) {
      const from = observed.source;
      if (!isReady(from))
        return {
          steps: [],
          waiting: { reason: "WaitingForSource", message: `source Volume ${source.volume.name} is not Ready yet` },
        };
      steps.push({ op: "copy", from: { pool: from!.spec.pool, name: volumeImage(from!) }, pool, image: partial, size });
    } else steps.push({ op: "create", pool, image: partial, size });
    steps.push(
      { op: "mark", pool, image: partial, uid },
      {
        op: "rename",
        pool,
        from: partial,
        to: image,
        event: { type: "Normal", reason: "Created", message: `created RBD image ${pool}/${image}` },
      },
    );
    return { steps };
  }
  const steps: VolumeStep[] = [];
  if (existing.owner !== uid) {
    if (!wantsAdoption(volume))
      return { steps: [], refusal: { reason: "NotOwned", message: notOwned(volume, existing) } };
    steps.push({
      op: "mark",
      pool,
      image,
      uid,
      event: { type: "Normal", reason: "Adopted", message: `adopted RBD image ${pool}/${image} (${adoptAnnotation})` },
    });
  }
  // A running VM holds the image: only libvirt's block resize makes the guest see the new size.
  if (existing.size >= size || existing.watchers.length) return { steps };
  // Capacity already reported at the requested size: someone shrank the image behind the operator.
  const shrunk = volume.status?.capacity !== undefined && toBytes(volume.status.capacity) >= size;
  const event: PlannedEvent = shrunk
    ? {
        type: "Warning",
        reason: "SizeDrift",
        message: `${pool}/${image} had shrunk; grew it back to ${formatBytes(size)}`,
      }
    : { type: "Normal", reason: "Resized", message: `grew ${pool}/${image} to ${formatBytes(size)}` };
  return { steps: [...steps, { op: "grow", pool, image, size, event }] };
}

export interface CleanupPlan {
  steps: VolumeStep[];
  /** Why the image cannot go yet (a VM references it, a client has it open): cleanup waits. */
  waiting?: Waiting;
  event?: PlannedEvent;
}

/**
 * Cleanup: what an interrupted build left goes; Retain keeps the image; an image not made for
 * this Volume is left alone; otherwise it goes once no VM references it and no client (other than
 * fenced ones) has it open. Already gone: done.
 */
export function planVolumeCleanup(volume: Volume, observed: VolumeObservation): CleanupPlan {
  const { pool } = volume.spec;
  const image = volumeImage(volume);
  const leftovers = removePartial(pool, partialImage(image), observed.partial);
  const existing = observed.image;
  if (volume.spec.reclaimPolicy === "Retain")
    return {
      steps: leftovers,
      event: { type: "Normal", reason: "Retained", message: `kept RBD image ${pool}/${image} (reclaimPolicy Retain)` },
    };
  if (existing && existing.owner !== (volume.metadata.uid ?? ""))
    return {
      steps: leftovers,
      event: {
        type: "Normal",
        reason: "NotOwned",
        message: `left RBD image ${pool}/${image}: not made for this Volume`,
      },
    };
  if (observed.inUseBy.length) {
    const message = `still used by VirtualMachine ${observed.inUseBy.join(", ")}`;
    return {
      steps: [],
      waiting: { reason: "InUse", message },
      event: { type: "Warning", reason: "InUse", message: `not deleting: ${message}` },
    };
  }
  const open = (existing?.watchers ?? []).filter((w) => !isFenced(w.address, observed.blocklisted ?? []));
  if (open.length) {
    const message = `${pool}/${image} is open by ${open.length} client(s)`;
    return {
      steps: [],
      waiting: { reason: "ImageInUse", message },
      event: { type: "Warning", reason: "ImageInUse", message: `not deleting: ${message}` },
    };
  }
  if (!existing) return { steps: leftovers };
  return {
    steps: [
      ...leftovers,
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
  plan: { refusal?: { reason: string; message: string }; waiting?: Waiting },
): { fields: Partial<VolumeStatus>; conditions: ConditionInput[] } {
  const { pool } = volume.spec;
  const { inUseBy } = observed;
  const waiting = plan.waiting && condition("Ready", "False", plan.waiting.reason, plan.waiting.message);
  if (volume.metadata.deletionTimestamp)
    return { fields: { phase: "Terminating", inUseBy }, conditions: waiting ? [waiting] : [] };
  const image = observed.image;
  // An image that exists is still shown when its growth is refused (what the quota counts).
  const shown = image && { image: `${pool}/${volumeImage(volume)}`, capacity: formatBytes(image.size) };
  if (plan.refusal)
    return {
      fields: { phase: "Failed", inUseBy, ...shown },
      conditions: [
        condition("Synced", "False", plan.refusal.reason, plan.refusal.message),
        condition("Ready", "False", plan.refusal.reason, plan.refusal.message),
      ],
    };
  if (!image) return { fields: { phase: "Pending", inUseBy }, conditions: waiting ? [waiting] : [] };
  const growing = image.size < toBytes(volume.spec.size);
  return {
    fields: {
      phase: growing ? "Creating" : "Ready",
      ...shown,
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
