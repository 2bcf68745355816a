import { bridgeIfName, type Bridge, type BridgeNodeStatus, type BridgeStatus } from "../api/bridge.js";
import { kinds } from "../api/kinds.js";
import type { VirtualMachine } from "../api/virtualmachine.js";
import { BridgeError, type BridgeHost } from "../host/bridge/bridges.js";
import type { Controller } from "../runtime/controller.js";
import { changedIn, specOrMetaChanged } from "../runtime/filters.js";
import { removeFinalizerPatch } from "../runtime/finalizers.js";
import type { KubeObject } from "../runtime/informer.js";
import type { Manager } from "../runtime/manager.js";
import { runSteps, type ReconcileContext } from "../runtime/reconciler.js";
import {
  bridgeFinalizer,
  bridgeStatus,
  goneNodeFinalizers,
  nodeEntry,
  planBridge,
  planBridgeCleanup,
  tapCount,
  type BridgeStep,
  type NodeLabels,
} from "./bridge-plan.js";
import { vmsByBridge } from "./indexes.js";
import { matchesSelector } from "./selector.js";

export { bridgeFinalizer, type NodeLabels } from "./bridge-plan.js";

export interface BridgeDeps {
  /** The node this agent runs for. */
  node: string;
  network: BridgeHost;
  resyncMs: number;
}

type NodeObject = KubeObject & { metadata: { labels?: Record<string, string> } };
type Ctx = ReconcileContext<BridgeStatus>;

const retryInMs = 10_000;

/**
 * Bridge controller (every agent, for its own node): the Linux bridge exists on this node when the
 * Bridge selects it, with its settings and ports; this node's entry in status says what was seen.
 * A bridge is removed (deletion, or the node no longer selected) only once no VM NIC uses it.
 * Decisions are in ./bridge-plan.ts.
 */
export function setupBridges(manager: Manager, deps: BridgeDeps): Controller {
  const { node, network } = deps;
  const bridges = manager.informer<Bridge>(kinds.bridge);
  const nodes = manager.informer<NodeObject>(kinds.node);
  const vms = manager.informer<VirtualMachine>(kinds.virtualMachine, { fieldSelector: `spec.node=${node}` });
  const usersOf = vmsByBridge(vms);
  const allBridges = () => bridges.list().map((b) => b.metadata.name);
  const nodeList = (): NodeLabels[] =>
    nodes.list().map((n) => ({ name: n.metadata.name, labels: n.metadata.labels ?? {} }));
  const self = () => nodes.get(node);
  const selected = (b: Bridge) => matchesSelector(b.spec.nodeSelector, self()?.metadata.labels ?? {});
  const needsCleanup = (b: Bridge) =>
    b.metadata.deletionTimestamp !== undefined || (self() !== undefined && !selected(b));
  const leaving = (name: string) => {
    const b = bridges.get(name);
    return b !== undefined && needsCleanup(b);
  };
  const bridgeRefs = (vm: VirtualMachine) =>
    vm.spec.node === node ? (vm.spec.interfaces ?? []).map((i) => i.bridgeRef) : [];
  const observe = async (b: Bridge) => ({
    bridge: await network.bridge(bridgeIfName(b)),
    links: await network.links(),
  });
  const report = (b: Bridge, ctx: Ctx, entry: BridgeNodeStatus | undefined) =>
    ctx.status.apply(bridgeStatus(b, node, entry, nodeList()));

  return (
    manager
      .controller<Bridge>("bridge", kinds.bridge)
      .for({ filter: specOrMetaChanged })
      // Which nodes exist and their labels decide where a Bridge goes (heartbeats do not).
      .watches(
        nodes,
        () => allBridges(),
        changedIn((n) => n.metadata.labels ?? {}),
      )
      // A bridge's removal waits for the VMs on this node whose NICs use it (a bridge that stays does not).
      .watches(
        vms,
        (vm, old) => [...new Set([...bridgeRefs(vm), ...(old ? bridgeRefs(old) : [])])].filter(leaving),
        changedIn(bridgeRefs),
      )
      // A link change may be a bridge deleted behind the operator's back.
      .watchesHost((enqueue) => network.onChange(() => allBridges().forEach(enqueue)))
      .reconcile<BridgeStatus>({
        finalizer: bridgeFinalizer(node),
        // Without its own Node the agent cannot tell whether it is selected: it never cleans up then.
        needsCleanup,
        async apply(b, ctx) {
          if (!self()) {
            ctx.log.warn({ node }, "this agent's Node does not exist; bridges wait for it");
            return { requeueAfterMs: retryInMs };
          }
          let observed = await observe(b);
          const plan = planBridge(b, node, observed);
          let problem = plan.problem;
          try {
            await execute(plan.steps, ctx);
          } catch (err) {
            if (!(err instanceof BridgeError)) throw err;
            problem = { reason: reasonOf(err), message: err.message };
          }
          if (problem) await ctx.events.warning(problem.reason, `${node}: ${problem.message}`);
          // Converged (the usual resync) costs the two reads above; the host is read again only after a change.
          if (plan.steps.length) observed = await observe(b);
          report(b, ctx, nodeEntry(b, node, observed, problem?.message));
          return { requeueAfterMs: problem ? retryInMs : deps.resyncMs };
        },
        async cleanup(b, ctx) {
          const users = usersOf(b.metadata.name)
            .filter((vm) => vm.spec.node === node)
            .map((vm) => `${vm.metadata.namespace}/${vm.metadata.name}`)
            .sort();
          const observed = await observe(b);
          const plan = planBridgeCleanup(b, node, observed, users);
          if (plan.waiting) {
            const taps = tapCount(observed.links, bridgeIfName(b));
            report(b, ctx, { node, ready: false, attachedNICs: taps, message: plan.waiting });
            await ctx.events.warning("InUse", `${node}: ${plan.waiting}`);
            return { requeueAfterMs: retryInMs };
          }
          await execute(plan.steps, ctx);
          report(b, ctx, undefined);
          return {};
        },
        // Not this node's (or this node is done): drop a stale entry, and finalizers of nodes that are gone.
        async released(b, ctx) {
          if (!b.metadata.deletionTimestamp) {
            // Also the aggregate: a Bridge no node selects is reported (NoNodeSelected) by every agent
            // alike, which writes only what differs, instead of by none.
            report(b, ctx, undefined);
            return {};
          }
          const [stale] = goneNodeFinalizers(b, nodeList());
          if (stale)
            await manager
              .client<Bridge>(kinds.bridge)
              .patch(ctx.key, removeFinalizerPatch(b.metadata.finalizers, stale));
          return {};
        },
      })
  );

  function execute(steps: BridgeStep[], ctx: Ctx) {
    return runSteps(steps, run, ctx.signal, ctx.events.emit);
  }

  /** One host call per step (nothing to return: a refusal throws). */
  async function run(step: BridgeStep): Promise<void> {
    if (step.op === "create") await network.createBridge(step.name, step.settings, step.alias);
    else if (step.op === "mark") await network.setAlias(step.link, step.alias);
    else if (step.op === "update") await network.updateBridge(step.name, step.settings);
    else if (step.op === "release") await network.removePort(step.port);
    else if (step.op === "create-vlan") await network.createVlan(step.parent, step.id, step.alias);
    else if (step.op === "enslave") await network.addPort(step.bridge, step.port);
    else await network.deleteLink(step.link);
  }
}

const reasonOf = (err: BridgeError) =>
  ({ "not-found": "PortNotFound", unsupported: "Unsupported", invalid: "InvalidSetting", exists: "Conflict" })[
    err.kind as string
  ] ?? "HostError";
