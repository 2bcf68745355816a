import { objectKey } from "../runtime/informer.js";
import type { VirtualMachine } from "../api/virtualmachine.js";
import type { Volume } from "../api/volume.js";
import type { ResourceClient } from "../runtime/client.js";
import type { SharedInformer } from "../runtime/manager.js";
import type { Operation } from "../runtime/status.js";

/**
 * A Volume is attached to one VirtualMachine at a time: `status.attachedTo` names it (and its UID:
 * a new object of the same name holds no claim). The VM's agent claims the Volume before its
 * domain uses the image, with a patch guarded by the resourceVersion it read, so of two VMs racing
 * for one Volume exactly one wins; the other sees the claim and waits (VolumeInUse). The claim is
 * released once the domain no longer uses the image (deleted, disk removed, orphan removed), or by
 * the leader's fencing of a dead node.
 */
export type Claim = NonNullable<NonNullable<Volume["status"]>["attachedTo"]>;

export const claimOf = (vm: VirtualMachine, node: string): Claim => ({
  name: vm.metadata.name,
  uid: vm.metadata.uid ?? "",
  node,
});

/** Whether the Volume is claimed by someone else than this VM. */
export const claimedByOther = (volume: Volume, vm: VirtualMachine) => {
  const holder = volume.status?.attachedTo;
  return holder !== undefined && holder.uid !== vm.metadata.uid ? holder : undefined;
};

/** The status patch that claims a Volume; empty when the VM holds it already. */
export function claimPatch(volume: Volume, claim: Claim): Operation[] {
  if (volume.status?.attachedTo?.uid === claim.uid) return [];
  return [
    { op: "test", path: "/metadata/resourceVersion", value: volume.metadata.resourceVersion },
    volume.status
      ? { op: "add", path: "/status/attachedTo", value: claim }
      : { op: "add", path: "/status", value: { attachedTo: claim } },
  ];
}

/** The status patch that releases a claim held by `uid`; empty when it holds none. */
export function releasePatch(volume: Volume, uid: string): Operation[] {
  if (volume.status?.attachedTo?.uid !== uid) return [];
  return [
    { op: "test", path: "/status/attachedTo/uid", value: uid },
    { op: "remove", path: "/status/attachedTo" },
  ];
}

/** Volumes by the UID of the VM that holds them. */
export function volumesByClaim(volumes: SharedInformer<Volume>) {
  volumes.addIndex("by-claim", (v) => (v.status?.attachedTo ? [v.status.attachedTo.uid] : []));
  return (uid: string) => volumes.byIndex("by-claim", uid);
}

/** Claims every Volume for the VM (a conflict, someone else claimed meanwhile, throws: the reconcile runs again). */
export async function claim(client: ResourceClient<Volume>, volumes: Volume[], vm: VirtualMachine, node: string) {
  for (const v of volumes) await client.patchStatus(objectKey(v), claimPatch(v, claimOf(vm, node)));
}

/** Releases the claims held by `uid` on these Volumes. */
export async function release(client: ResourceClient<Volume>, volumes: Volume[], uid: string) {
  for (const v of volumes) await client.patchStatus(objectKey(v), releasePatch(v, uid));
}
