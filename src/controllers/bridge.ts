import { createHash } from "node:crypto";
import type { Logger } from "pino";
import { bridgeIfName, type Bridge, type BridgeNodeStatus, type BridgeStatus } from "../api/bridge.js";
import type { VirtualMachine } from "../api/virtualmachine.js";
import { BridgeError, type BridgeHost, type BridgeInfo, type LinkInfo } from "../host/bridge/bridges.js";
import type { ResourceClient } from "../runtime/client.js";
import { condition, setConditions } from "../runtime/conditions.js";
import type { Action } from "../runtime/controller.js";
import type { EventRecorder } from "../runtime/events.js";
import { addFinalizerPatch, removeFinalizerPatch } from "../runtime/finalizers.js";
import { statusPatch } from "../runtime/status.js";
import { matchesSelector } from "./selector.js";

/** A Kubernetes Node as the Bridge reconciler needs it. */
export interface NodeLabels {
  name: string;
  labels: Readonly<Record<string, string>>;
}

export interface BridgeContext {
  /** The node this agent runs for. */
  node: string;
  host: BridgeHost;
  bridges: ResourceClient<Bridge>;
  getBridge(key: string): Bridge | undefined;
  /** Every Node (informer cache); undefined until the first list arrived. */
  nodes(): NodeLabels[] | undefined;
  /** VirtualMachines on this node (informer cache). */
  virtualMachines(): VirtualMachine[];
  events: EventRecorder;
  log: Logger;
  resyncMs: number;
}

/**
 * One finalizer per node, so that every node removes its own bridge before the object goes. A
 * finalizer's name part is at most 63 characters: long node names are hashed.
 */
export function bridgeFinalizer(node: string): string {
  const id = node.length <= 56 ? node : createHash("sha256").update(node).digest("hex").slice(0, 56);
  return `kaktus.kowabunga.cloud/bridge-${id}`;
}

const retryInMs = 10_000;

/** The Linux name of a port: the interface itself, or the VLAN sub-interface PARENT.ID. */
const portName = (p: NonNullable<Bridge["spec"]["ports"]>[number]) => p.name ?? `${p.vlan!.parent}.${p.vlan!.id}`;

/**
 * Bridge reconciler (every agent, for its own node): the Linux bridge exists on this node when the
 * Bridge selects it, with its settings and ports; this node's entry in status says what was seen.
 * A bridge is removed (deletion, or the node no longer selected) only once no VM NIC uses it.
 */
export async function reconcileBridge(key: string, ctx: BridgeContext): Promise<Action> {
  let bridge = ctx.getBridge(key);
  const nodes = ctx.nodes();
  if (!bridge || !nodes) return {};
  const ifname = bridgeIfName(bridge);
  const finalizer = bridgeFinalizer(ctx.node);
  const self = nodes.find((n) => n.name === ctx.node);
  // Without its own Node the agent cannot tell whether it is selected: it waits rather than remove anything.
  if (!self) {
    ctx.log.warn({ node: ctx.node }, "this agent's Node does not exist; bridges wait for it");
    return { requeueAfterMs: retryInMs };
  }
  const selected = matchesSelector(bridge.spec.nodeSelector, self.labels);
  const users = ctx
    .virtualMachines()
    .filter((vm) => vm.spec.interfaces?.some((i) => i.bridgeRef === key))
    .map((vm) => `${vm.metadata.namespace}/${vm.metadata.name}`)
    .sort();

  if (bridge.metadata.deletionTimestamp || !selected) {
    if (!bridge.metadata.finalizers?.includes(finalizer)) return dropGoneNodes(bridge, key, nodes, ctx);
    const links = await ctx.host.links();
    const taps = tapCount(links, ifname);
    if (users.length || taps) {
      const message = `waiting to remove ${ifname}: used by ${users.length ? `VirtualMachine ${users.join(", ")}` : `${taps} NIC(s)`}`;
      await report(bridge, key, ctx, { node: ctx.node, ready: false, attachedNICs: taps, message });
      await ctx.events.warning(bridge, "InUse", `${ctx.node}: ${message}`);
      return { requeueAfterMs: retryInMs };
    }
    if (bridge.spec.deletionPolicy !== "Orphan" && links.some((l) => l.name === ifname)) {
      // Only VLAN sub-interfaces the operator makes are removed; host ports are released, never deleted.
      for (const port of bridge.spec.ports ?? []) {
        const link = links.find((l) => l.name === portName(port));
        if (port.vlan && link?.kind === "vlan") await ctx.host.deleteLink(link.name);
      }
      await ctx.host.deleteLink(ifname);
      await ctx.events.normal(bridge, "Deleted", `removed bridge ${ifname} from ${ctx.node}`);
    }
    bridge = (await report(bridge, key, ctx, undefined)) ?? bridge;
    await ctx.bridges.patch(key, removeFinalizerPatch(bridge.metadata.finalizers, finalizer));
    return {};
  }

  bridge = (await ctx.bridges.patch(key, addFinalizerPatch(bridge.metadata.finalizers, finalizer))) ?? bridge;
  let observed = await ctx.host.bridge(ifname);
  let links = await ctx.host.links();
  let message: string | undefined;
  // Converged (the usual resync) costs these two reads; the host is read again only after a change.
  let changed = true;
  try {
    changed = await converge(bridge, ifname, observed, links, ctx);
  } catch (err) {
    if (!(err instanceof BridgeError)) throw err;
    message = err.message;
    await ctx.events.warning(bridge, reasonOf(err), `${ctx.node}: ${err.message}`);
  }
  if (changed) [observed, links] = [await ctx.host.bridge(ifname), await ctx.host.links()];
  const wanted = (bridge.spec.ports ?? []).map(portName);
  const missing = wanted.filter((p) => !observed?.ports.includes(p));
  if (!message && missing.length) message = `port(s) ${missing.join(", ")} not enslaved`;
  await report(bridge, key, ctx, {
    node: ctx.node,
    ready: observed !== null && message === undefined,
    ...(observed ? { mtu: observed.mtu } : {}),
    ports: wanted.filter((p) => observed?.ports.includes(p)),
    attachedNICs: tapCount(links, ifname),
    ...(message ? { message } : {}),
  });
  return { requeueAfterMs: message ? retryInMs : ctx.resyncMs };
}

/** VM NICs (taps) plugged into a bridge. */
const tapCount = (links: LinkInfo[], bridge: string) =>
  links.filter((l) => l.master === bridge && l.kind === "tun").length;

/**
 * Makes the bridge match the spec, one host call per difference; nothing when already converged.
 * Says whether it changed anything.
 */
async function converge(
  bridge: Bridge,
  ifname: string,
  observed: BridgeInfo | null,
  links: LinkInfo[],
  ctx: BridgeContext,
): Promise<boolean> {
  const { spec } = bridge;
  let changed = false;
  const stp = spec.stp ?? false;
  const vlanFiltering = spec.vlanFiltering ?? false;
  const previous = bridge.status?.nodes?.find((n) => n.node === ctx.node);
  if (!observed) {
    // Only settings that differ from the kernel's defaults are sent: a kernel without VLAN
    // filtering refuses even "vlan_filtering 0".
    await ctx.host.createBridge(ifname, { ...(stp ? { stp } : {}), ...(vlanFiltering ? { vlanFiltering } : {}) });
    changed = true;
    if (previous?.ready) await ctx.events.warning(bridge, "Recreated", `bridge ${ifname} vanished from ${ctx.node}`);
    else await ctx.events.normal(bridge, "Created", `created bridge ${ifname} on ${ctx.node}`);
  } else if (observed.stp !== stp || observed.vlanFiltering !== vlanFiltering || !observed.up) {
    await ctx.host.updateBridge(ifname, {
      ...(observed.stp !== stp ? { stp } : {}),
      ...(observed.vlanFiltering !== vlanFiltering ? { vlanFiltering } : {}),
    });
    changed = true;
    await ctx.events.normal(bridge, "Updated", `updated bridge ${ifname} settings on ${ctx.node}`);
  }
  const byName = new Map<string, LinkInfo>(links.map((l) => [l.name, l]));
  const wanted = new Set((spec.ports ?? []).map(portName));
  // Ports this node enslaved before that the spec no longer lists are released (never others').
  for (const old of previous?.ports ?? []) {
    if (!wanted.has(old) && byName.get(old)?.master === ifname) {
      await ctx.host.removePort(old);
      changed = true;
    }
  }
  for (const port of spec.ports ?? []) {
    const name = portName(port);
    let link = byName.get(name);
    // An existing PARENT.ID link (made by the host's own network setup) is used as it is.
    if (!link && port.vlan) {
      await ctx.host.createVlan(port.vlan.parent, port.vlan.id);
      changed = true;
      link = { name, mtu: 0, up: false };
    }
    if (!link) throw new BridgeError("not-found", `interface ${name} does not exist on ${ctx.node}`, "add port");
    if (link.master !== ifname || !link.up) {
      await ctx.host.addPort(ifname, name);
      changed = true;
    }
  }
  // The MTU last: enslaving a port resets the bridge's MTU to the smallest port's.
  const current = changed ? await ctx.host.bridge(ifname) : observed;
  if (spec.mtu !== undefined && current && current.mtu !== spec.mtu) {
    await ctx.host.updateBridge(ifname, { mtu: spec.mtu });
    changed = true;
  }
  return changed;
}

const reasonOf = (err: BridgeError) =>
  ({ "not-found": "PortNotFound", unsupported: "Unsupported", invalid: "InvalidSetting", exists: "Conflict" })[
    err.kind as string
  ] ?? "HostError";

/**
 * Writes this node's entry (or removes it when `entry` is undefined) and the aggregate the entries
 * imply; every agent computes the same aggregate from the same entries, so agents never flip-flop.
 */
async function report(
  bridge: Bridge,
  key: string,
  ctx: BridgeContext,
  entry: BridgeNodeStatus | undefined,
): Promise<Bridge | undefined> {
  const others = (bridge.status?.nodes ?? []).filter((n) => n.node !== ctx.node);
  const entries = [...others, ...(entry ? [entry] : [])].sort((a, b) => a.node.localeCompare(b.node));
  const selected = (ctx.nodes() ?? []).filter((n) => matchesSelector(bridge.spec.nodeSelector, n.labels));
  const ready = entries.filter((n) => n.ready && selected.some((s) => s.name === n.node));
  const failing = entries.filter((n) => !n.ready);
  const allReady = selected.length > 0 && ready.length === selected.length;
  const why = failing.map((n) => `${n.node}: ${n.message ?? "not ready"}`).join("; ");
  const deleting = bridge.metadata.deletionTimestamp !== undefined;
  const generation = bridge.metadata.generation;
  const conditions = setConditions(
    bridge.status?.conditions,
    [
      allReady
        ? condition("Ready", "True", "BridgeReady", `ready on ${ready.length} node(s)`)
        : condition("Ready", "False", selected.length ? "NodesNotReady" : "NoNodeSelected", why),
      failing.length ? condition("Synced", "False", "HostError", why) : condition("Synced", "True", "Synced"),
      condition(
        "Degraded",
        failing.length ? "True" : "False",
        failing.length ? "NodesFailing" : "AllNodesHealthy",
        why,
      ),
    ],
    generation,
  );
  const status: BridgeStatus = {
    ...bridge.status,
    ...(generation !== undefined ? { observedGeneration: generation } : {}),
    phase: deleting ? "Terminating" : allReady ? "Ready" : failing.length ? "Degraded" : "Pending",
    conditions,
    readyNodes: `${ready.length}/${selected.length}`,
    nodes: entries,
  };
  return ctx.bridges.patchStatus(key, statusPatch(bridge, status));
}

/**
 * A deleted Bridge must not wait forever on the finalizer of a node that no longer exists: any
 * agent drops those (the node and its bridge are gone with it).
 */
async function dropGoneNodes(bridge: Bridge, key: string, nodes: NodeLabels[], ctx: BridgeContext): Promise<Action> {
  if (!bridge.metadata.deletionTimestamp) {
    // Deselected and already cleaned: only a stale entry of ours may remain.
    if (bridge.status?.nodes?.some((n) => n.node === ctx.node)) await report(bridge, key, ctx, undefined);
    return {};
  }
  const stale = (bridge.metadata.finalizers ?? []).find(
    (f) => f.startsWith("kaktus.kowabunga.cloud/bridge-") && !nodes.some((n) => bridgeFinalizer(n.name) === f),
  );
  if (stale) await ctx.bridges.patch(key, removeFinalizerPatch(bridge.metadata.finalizers, stale));
  return {};
}
