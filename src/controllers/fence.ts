import type { VirtualMachine, VirtualMachineStatus } from "../api/virtualmachine.js";
import type { Volume } from "../api/volume.js";
import { kinds } from "../api/kinds.js";
import { volumeImage } from "../api/names.js";
import type { BlockStore } from "../host/rbd/client.js";
import type { Controller } from "../runtime/controller.js";
import { removeFinalizerPatch } from "../runtime/finalizers.js";
import { changedIn } from "../runtime/filters.js";
import { objectKey, type KubeObject } from "../runtime/informer.js";
import type { Manager } from "../runtime/manager.js";
import { release, volumesByClaim } from "./claims.js";
import { vmsByNode } from "./indexes.js";
import { vmFinalizer } from "./virtualmachine.js";

/** Set on a Node whose agent will not come back (powered off for good): fence it as if it were deleted. */
export const fenceAnnotation = "kaktus.kowabunga.cloud/fence";

type NodeObject = KubeObject & {
  metadata: { annotations?: Record<string, string> };
  status?: { addresses?: { type: string; address: string }[] };
};

export interface FenceDeps {
  store: Pick<BlockStore, "status" | "blocklist">;
  /** Throws unless this agent surely still leads. */
  fence: () => void;
}

/**
 * The fenced way out of a dead node (leader only). Only a VM's own node cleans it up, so when a
 * node is gone for good, its VMs being deleted would wait forever, and removing their finalizers
 * by hand would leave a domain writing to disks that are handed to someone else. When the Node
 * object is deleted (or annotated kaktus.kowabunga.cloud/fence=true), the leader first blocklists
 * that node's Ceph clients (its addresses, and every client that has its VMs' images open), so
 * nothing there can write any more; then it releases each deleted VM's Volume claims and drops its
 * finalizer. Should the node come back, its agent finds the domains orphaned and removes them.
 */
export function setupFencing(manager: Manager, deps: FenceDeps): Controller {
  const vms = manager.informer<VirtualMachine>(kinds.virtualMachine, { leaderOnly: true });
  const nodes = manager.informer<NodeObject>(kinds.node);
  const volumes = manager.informer<Volume>(kinds.volume);
  const onNode = vmsByNode(vms);
  const claimedBy = volumesByClaim(volumes);
  // A deleted Node's addresses are needed after it is gone: the last ones seen are kept.
  const addresses = new Map<string, string[]>();
  nodes.onChange((node, old, key) => {
    const seen = (node ?? old)?.status?.addresses?.filter((a) => a.type === "InternalIP").map((a) => a.address);
    if (seen?.length) addresses.set(key, seen);
  });
  const fenced = (node: string) => {
    const n = nodes.get(node);
    return !n || n.metadata.annotations?.[fenceAnnotation] === "true";
  };
  const stranded = (vm: VirtualMachine) =>
    vm.metadata.deletionTimestamp !== undefined &&
    !!vm.metadata.finalizers?.includes(vmFinalizer) &&
    fenced(vm.spec.node);

  return (
    manager
      .controller<VirtualMachine>("fence", kinds.virtualMachine, { leaderOnly: true })
      .for({ owns: stranded })
      // A Node deleted or annotated: its VMs may be stranded now.
      .watches(
        nodes,
        (n) => onNode(n.metadata.name).map(objectKey),
        changedIn((n) => n.metadata.annotations?.[fenceAnnotation]),
      )
      .leaderElected()
      .reconcile<VirtualMachineStatus>({
        apply: async () => ({}),
        // No finalizer of its own: a deleted VM of a fenced node comes here.
        async released(vm, ctx) {
          const node = vm.spec.node;
          const claims = claimedBy(vm.metadata.uid ?? "");
          const clients = new Set((addresses.get(node) ?? []).map((ip) => `${ip}:0/0`));
          for (const v of claims)
            for (const w of (await deps.store.status(v.spec.pool, volumeImage(v)))?.watchers ?? [])
              clients.add(w.address);
          // Nothing on that node may write once its disks are handed over: the blocklist comes first.
          for (const client of clients) {
            deps.fence();
            await deps.store.blocklist(client);
          }
          await release(manager.client<Volume>(kinds.volume), claims, vm.metadata.uid ?? "");
          await ctx.events.warning(
            "Fenced",
            `node ${node} is gone: blocklisted its Ceph clients (${[...clients].join(", ") || "none known"}), released the VM's Volumes and removed its finalizer`,
          );
          await manager
            .client<VirtualMachine>(kinds.virtualMachine)
            .patch(ctx.key, removeFinalizerPatch(vm.metadata.finalizers, vmFinalizer));
          return {};
        },
      })
  );
}
