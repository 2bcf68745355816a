import { createHash } from "node:crypto";
import { bridgeIfName, type Bridge, type BridgeNodeStatus, type BridgeStatus } from "../api/bridge.js";
import { adoptAnnotation, linkMark, wantsAdoption } from "../api/names.js";
import { temporaryLinkPrefix, type BridgeInfo, type BridgeSettings, type LinkInfo } from "../host/bridge/bridges.js";
import { condition, type ConditionInput } from "../runtime/conditions.js";
import type { PlannedEvent } from "../runtime/reconciler.js";
import { matchesSelector } from "./selector.js";

/**
 * The Bridge controller's decisions, pure: the host changes that make this node's bridge match the
 * spec, what cleanup may remove, and the status (this node's entry and the aggregate every agent
 * computes the same way from the entries). ./bridge.ts runs the steps.
 */

/** A Kubernetes Node as the Bridge controller needs it. */
export interface NodeLabels {
  name: string;
  labels: Readonly<Record<string, string>>;
}

export type BridgeStep = { event?: PlannedEvent } & (
  | { op: "create"; name: string; settings: BridgeSettings; alias: string }
  | { op: "mark"; link: string; alias: string }
  | { op: "update"; name: string; settings: BridgeSettings }
  | { op: "release"; port: string }
  | { op: "create-vlan"; parent: string; id: number; alias: string }
  | { op: "enslave"; bridge: string; port: string }
  | { op: "delete"; link: string }
);

export interface BridgeObservation {
  bridge: BridgeInfo | null;
  links: LinkInfo[];
}

/**
 * One finalizer per node, so that every node removes its own bridge before the object goes. A
 * finalizer's name part is at most 63 characters: long node names are hashed.
 */
export function bridgeFinalizer(node: string): string {
  const id = node.length <= 56 ? node : createHash("sha256").update(node).digest("hex").slice(0, 56);
  return `kaktus.kowabunga.cloud/bridge-${id}`;
}

/** The Linux name of a port: the interface itself, or the VLAN sub-interface PARENT.ID. */
export const portName = (p: NonNullable<Bridge["spec"]["ports"]>[number]) =>
  p.name ?? `${p.vlan!.parent}.${p.vlan!.id}`;

const notOwned = (name: string, node: string) =>
  `NotOwned: bridge ${name} on ${node} was not made by the operator for this Bridge; left untouched (annotate ${adoptAnnotation}=true to adopt it)`;

/** VM NICs (taps) plugged into a bridge. */
export const tapCount = (links: LinkInfo[], bridge: string) =>
  links.filter((l) => l.master === bridge && l.kind === "tun").length;

/**
 * The changes, one host call each, nothing when converged. A port that is missing is a problem
 * (reported on this node's entry) after the changes that can be made.
 */
export function planBridge(
  bridge: Bridge,
  node: string,
  observed: BridgeObservation,
): { steps: BridgeStep[]; problem?: { reason: string; message: string } } {
  const { spec } = bridge;
  const name = bridgeIfName(bridge);
  const mark = linkMark(bridge.metadata.uid);
  const stp = spec.stp ?? false;
  const vlanFiltering = spec.vlanFiltering ?? false;
  const previous = bridge.status?.nodes?.find((n) => n.node === node);
  const current = observed.bridge;
  // Links this node began to make for the Bridge and never finished (the agent died meanwhile).
  const steps: BridgeStep[] = observed.links
    .filter((l) => l.name.startsWith(temporaryLinkPrefix) && l.alias === mark)
    .map((l) => ({ op: "delete", link: l.name }));
  if (current && current.alias !== mark) {
    if (!wantsAdoption(bridge)) return { steps, problem: { reason: "NotOwned", message: notOwned(name, node) } };
    steps.push({
      op: "mark",
      link: name,
      alias: mark,
      event: { type: "Normal", reason: "Adopted", message: `adopted bridge ${name} on ${node} (${adoptAnnotation})` },
    });
  }
  if (!current) {
    // Only settings that differ from the kernel's defaults are sent: a kernel without VLAN
    // filtering refuses even "vlan_filtering 0".
    steps.push({
      op: "create",
      name,
      alias: mark,
      settings: { ...(stp ? { stp } : {}), ...(vlanFiltering ? { vlanFiltering } : {}) },
      event: previous?.ready
        ? { type: "Warning", reason: "Recreated", message: `bridge ${name} vanished from ${node}` }
        : { type: "Normal", reason: "Created", message: `created bridge ${name} on ${node}` },
    });
  } else if (current.stp !== stp || current.vlanFiltering !== vlanFiltering || !current.up) {
    steps.push({
      op: "update",
      name,
      settings: {
        ...(current.stp !== stp ? { stp } : {}),
        ...(current.vlanFiltering !== vlanFiltering ? { vlanFiltering } : {}),
      },
      event: { type: "Normal", reason: "Updated", message: `updated bridge ${name} settings on ${node}` },
    });
  }
  const links = new Map(observed.links.map((l) => [l.name, l]));
  const wanted = new Set((spec.ports ?? []).map(portName));
  // Ports this node enslaved before that the spec no longer lists are released (never others').
  for (const old of previous?.ports ?? [])
    if (!wanted.has(old) && links.get(old)?.master === name) steps.push({ op: "release", port: old });
  let problem: { reason: string; message: string } | undefined;
  for (const port of spec.ports ?? []) {
    const portLink = portName(port);
    const link = links.get(portLink);
    // An existing PARENT.ID link (made by the host's own network setup) is used as it is.
    if (!link && port.vlan) steps.push({ op: "create-vlan", parent: port.vlan.parent, id: port.vlan.id, alias: mark });
    else if (!link) {
      problem ??= { reason: "PortNotFound", message: `add port: interface ${portLink} does not exist on ${node}` };
      continue;
    }
    if (!link || link.master !== name || !link.up) steps.push({ op: "enslave", bridge: name, port: portLink });
  }
  // The MTU last: enslaving a port resets the bridge's MTU to the smallest port's.
  const changed = steps.some((s) => s.op !== "delete" && s.op !== "mark");
  if (spec.mtu !== undefined && (changed || current?.mtu !== spec.mtu))
    steps.push({ op: "update", name, settings: { mtu: spec.mtu } });
  return { steps, ...(problem ? { problem } : {}) };
}

/** What cleanup does on this node: wait while VMs use the bridge, else remove what the operator made. */
export function planBridgeCleanup(
  bridge: Bridge,
  node: string,
  observed: BridgeObservation,
  users: string[],
): { steps: BridgeStep[]; waiting?: string } {
  const name = bridgeIfName(bridge);
  const taps = tapCount(observed.links, name);
  if (users.length || taps)
    return {
      steps: [],
      waiting: `waiting to remove ${name}: used by ${users.length ? `VirtualMachine ${users.join(", ")}` : `${taps} NIC(s)`}`,
    };
  const mark = linkMark(bridge.metadata.uid);
  const marked = (link: string) => observed.links.some((l) => l.name === link && l.alias === mark);
  // Only what the operator made for this Bridge goes (the bridge, VLAN sub-interfaces it created);
  // host ports are released with the bridge, never deleted; a bridge it did not make stays.
  if (bridge.spec.deletionPolicy === "Orphan" || !marked(name)) return { steps: [] };
  const vlans = (bridge.spec.ports ?? [])
    .filter((p) => p.vlan && marked(portName(p)))
    .map((p): BridgeStep => ({ op: "delete", link: portName(p) }));
  return {
    steps: [
      ...vlans,
      {
        op: "delete",
        link: name,
        event: { type: "Normal", reason: "Deleted", message: `removed bridge ${name} from ${node}` },
      },
    ],
  };
}

/** This node's entry in status, from what was observed after the changes. */
export function nodeEntry(
  bridge: Bridge,
  node: string,
  observed: BridgeObservation,
  problem: string | undefined,
): BridgeNodeStatus {
  const name = bridgeIfName(bridge);
  const wanted = (bridge.spec.ports ?? []).map(portName);
  const missing = wanted.filter((p) => !observed.bridge?.ports.includes(p));
  const message = problem ?? (missing.length ? `port(s) ${missing.join(", ")} not enslaved` : undefined);
  return {
    node,
    ready: observed.bridge !== null && message === undefined,
    ...(observed.bridge ? { mtu: observed.bridge.mtu } : {}),
    ports: wanted.filter((p) => observed.bridge?.ports.includes(p)),
    attachedNICs: tapCount(observed.links, name),
    ...(message ? { message } : {}),
  };
}

/**
 * Status with this node's entry set (or removed, `entry` undefined) and the aggregate the entries
 * imply: every agent computes the same aggregate from the same entries, so agents never flip-flop.
 */
export function bridgeStatus(
  bridge: Bridge,
  node: string,
  entry: BridgeNodeStatus | undefined,
  nodes: NodeLabels[],
): { fields: Partial<BridgeStatus>; conditions: ConditionInput[] } {
  const others = (bridge.status?.nodes ?? []).filter((n) => n.node !== node);
  const entries = [...others, ...(entry ? [entry] : [])].sort((a, b) => a.node.localeCompare(b.node));
  const selected = nodes.filter((n) => matchesSelector(bridge.spec.nodeSelector, n.labels));
  const ready = entries.filter((n) => n.ready && selected.some((s) => s.name === n.node));
  const failing = entries.filter((n) => !n.ready);
  const allReady = selected.length > 0 && ready.length === selected.length;
  const why = failing.map((n) => `${n.node}: ${n.message ?? "not ready"}`).join("; ");
  const deleting = bridge.metadata.deletionTimestamp !== undefined;
  return {
    fields: {
      phase: deleting ? "Terminating" : allReady ? "Ready" : failing.length ? "Degraded" : "Pending",
      readyNodes: `${ready.length}/${selected.length}`,
      nodes: entries,
    },
    conditions: [
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
  };
}

/** Finalizers of nodes that no longer exist: a deleted Bridge must not wait for them forever. */
export const goneNodeFinalizers = (bridge: Bridge, nodes: NodeLabels[]): string[] =>
  (bridge.metadata.finalizers ?? []).filter(
    (f) => f.startsWith("kaktus.kowabunga.cloud/bridge-") && !nodes.some((n) => bridgeFinalizer(n.name) === f),
  );
