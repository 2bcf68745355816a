import { isDeepStrictEqual } from "node:util";
import type { Bridge } from "../api/bridge.js";
import { namespaceOf } from "../api/names.js";
import type { VirtualMachine } from "../api/virtualmachine.js";
import type { Volume } from "../api/volume.js";
import { conditionState } from "../runtime/filters.js";
import type { KubeObject } from "../runtime/informer.js";
import type { SharedInformer } from "../runtime/manager.js";

/**
 * The cache indexes the controllers share: which VirtualMachines name a Volume or a Bridge, which
 * Volumes copy another; and what one kind reads from another (a change of anything else there does
 * not concern it). Each controller declares the indexes it reads; declaring twice is harmless.
 */

/** VMs by the Volumes they attach ("namespace/volume"). */
export function vmsByVolume(vms: SharedInformer<VirtualMachine>) {
  vms.addIndex("by-volume", (vm) => (vm.spec.disks ?? []).map((d) => `${namespaceOf(vm)}/${d.volumeRef}`));
  return (volumeKey: string) => vms.byIndex("by-volume", volumeKey);
}

/** VMs by the Bridges their NICs name. */
export function vmsByBridge(vms: SharedInformer<VirtualMachine>) {
  vms.addIndex("by-bridge", (vm) => (vm.spec.interfaces ?? []).map((i) => i.bridgeRef));
  return (bridge: string) => vms.byIndex("by-bridge", bridge);
}

/** VMs by the node that runs them. */
export function vmsByNode(vms: SharedInformer<VirtualMachine>) {
  vms.addIndex("by-node", (vm) => [vm.spec.node]);
  return (node: string) => vms.byIndex("by-node", node);
}

/** A namespace as the controllers read it: its labels (Bridge access, pools) and annotations (capacity). */
export type Namespace = {
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> };
};

/** A namespace's labels, with the name label the API server sets (also before the cache has it). */
export const namespaceLabels = (name: string, labels?: Record<string, string>): Record<string, string> => ({
  ...labels,
  "kubernetes.io/metadata.name": name,
});

/** Objects by their namespace. */
export function byNamespace<T extends KubeObject>(informer: SharedInformer<T>) {
  informer.addIndex("by-namespace", (o) => (o.metadata.namespace ? [o.metadata.namespace] : []));
  return (namespace: string) => informer.byIndex("by-namespace", namespace);
}

/** Volumes by the Volume they copy ("namespace/volume"). */
export function volumesBySource(volumes: SharedInformer<Volume>) {
  volumes.addIndex("by-source", (v) =>
    v.spec.source?.volume ? [`${namespaceOf(v)}/${v.spec.source.volume.name}`] : [],
  );
  return (volumeKey: string) => volumes.byIndex("by-source", volumeKey);
}

/** What a VM reads from a Volume, apart from who holds it: readiness (with WaitingForResize), size, deletion. */
const volumeReadiness = (v: Volume) => [
  conditionState(v.status?.conditions, "Ready"),
  v.spec.size,
  v.metadata.deletionTimestamp,
];

/** What a VM reads from a Volume: its readiness, and who holds it. */
export const volumeState = (v: Volume) => [...volumeReadiness(v), v.status?.attachedTo?.uid];

/** Only the holder changed, to `vm`: the VM made that claim itself and has nothing to learn from it. */
export const ownClaimEcho = (v: Volume, old: Volume | undefined, vm: VirtualMachine) =>
  old !== undefined &&
  v.status?.attachedTo?.uid === vm.metadata.uid &&
  isDeepStrictEqual(volumeReadiness(v), volumeReadiness(old));

/** What a VM reads from a Bridge: its Linux name, whom it admits, whether it is ready on the VM's node. */
export const bridgeState = (b: Bridge, node: string) => [
  b.spec.bridgeName,
  b.spec.namespaceSelector,
  b.status?.nodes?.find((n) => n.node === node)?.ready,
];
