import { describe, expect, it } from "vitest";
import type { Bridge, BridgeNodeStatus } from "../api/bridge.js";
import type { BridgeInfo, LinkInfo } from "../host/bridge/bridges.js";
import {
  bridgeFinalizer,
  bridgeStatus,
  goneNodeFinalizers,
  nodeEntry,
  planBridge,
  planBridgeCleanup,
  type BridgeStep,
} from "./bridge-plan.js";

const node = "kaktus-a";

function bridge(
  spec: Partial<Bridge["spec"]> = {},
  status?: Bridge["status"],
  meta: Partial<Bridge["metadata"]> = {},
): Bridge {
  return {
    apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
    kind: "Bridge",
    metadata: { name: "br0", uid: "u-br", generation: 1, ...meta },
    spec,
    ...(status ? { status } : {}),
  };
}
const mark = "kaktus:u-br";
const br = (o: Partial<BridgeInfo> = {}): BridgeInfo => ({
  name: "br0",
  alias: mark,
  mtu: 1500,
  up: true,
  stp: false,
  vlanFiltering: false,
  ports: [],
  ...o,
});
const link = (name: string, o: Partial<LinkInfo> = {}): LinkInfo => ({ name, mtu: 1500, up: true, ...o });
const entry = (o: Partial<BridgeNodeStatus> = {}): BridgeNodeStatus => ({ node, ready: true, ...o });
/** Steps as short strings: "create", "enslave eth1", "update mtu=9000". */
const show = (steps: BridgeStep[]) =>
  steps.map((s) => {
    switch (s.op) {
      case "create":
      case "update":
        return `${s.op}${Object.entries(s.settings)
          .map(([k, v]) => ` ${k}=${String(v)}`)
          .join("")}`;
      case "release":
        return `release ${s.port}`;
      case "create-vlan":
        return `create-vlan ${s.parent}.${s.id}`;
      case "enslave":
        return `enslave ${s.port}`;
      case "delete":
        return `delete ${s.link}`;
      case "mark":
        return `mark ${s.link} ${s.alias}`;
    }
  });

describe("planBridge: the host changes, one call per difference", () => {
  const eth1 = { name: "eth1" };
  it.each([
    ["missing: created", bridge(), null, [], ["create"]],
    [
      "missing with STP: created with it (kernel defaults are never sent)",
      bridge({ stp: true }),
      null,
      [],
      ["create stp=true"],
    ],
    ["converged: nothing", bridge(), br(), [link("br0", { kind: "bridge" })], []],
    ["STP turned on: updated in place", bridge({ stp: true }), br(), [], ["update stp=true"]],
    ["down: brought up", bridge(), br({ up: false }), [], ["update"]],
    ["a port to enslave", bridge({ ports: [eth1] }), br(), [link("eth1")], ["enslave eth1"]],
    [
      "a port already enslaved and up: nothing",
      bridge({ ports: [eth1] }),
      br({ ports: ["eth1"] }),
      [link("eth1", { master: "br0" })],
      [],
    ],
    [
      "a port enslaved but down: enslaved (set up) again",
      bridge({ ports: [eth1] }),
      br(),
      [link("eth1", { master: "br0", up: false })],
      ["enslave eth1"],
    ],
    [
      "a port on another bridge: moved",
      bridge({ ports: [eth1] }),
      br(),
      [link("eth1", { master: "br9" })],
      ["enslave eth1"],
    ],
    [
      "a VLAN port that does not exist: made, then enslaved",
      bridge({ ports: [{ vlan: { parent: "bond0", id: 100 } }] }),
      br(),
      [link("bond0")],
      ["create-vlan bond0.100", "enslave bond0.100"],
    ],
    [
      "a VLAN port the host made already: used as it is",
      bridge({ ports: [{ vlan: { parent: "bond0", id: 100 } }] }),
      br(),
      [link("bond0.100")],
      ["enslave bond0.100"],
    ],
    ["MTU differs: set", bridge({ mtu: 9000 }), br(), [], ["update mtu=9000"]],
    ["MTU right: nothing", bridge({ mtu: 9000 }), br({ mtu: 9000 }), [], []],
    [
      "MTU after ports (enslaving resets it)",
      bridge({ mtu: 9000, ports: [eth1] }),
      br({ mtu: 9000 }),
      [link("eth1")],
      ["enslave eth1", "update mtu=9000"],
    ],
    [
      "created with an MTU: MTU last",
      bridge({ mtu: 9000, ports: [eth1] }),
      null,
      [link("eth1")],
      ["create", "enslave eth1", "update mtu=9000"],
    ],
    [
      "a port dropped from the spec that this node enslaved: released",
      bridge({}, { nodes: [entry({ ports: ["eth1"] })] }),
      br({ ports: ["eth1"] }),
      [link("eth1", { master: "br0" })],
      ["release eth1"],
    ],
    [
      "a port dropped that is on another bridge now: left alone",
      bridge({}, { nodes: [entry({ ports: ["eth1"] })] }),
      br(),
      [link("eth1", { master: "br9" })],
      [],
    ],
    [
      "a port enslaved by someone else, not in the spec: never touched",
      bridge(),
      br({ ports: ["eth2"] }),
      [link("eth2", { master: "br0" })],
      [],
    ],
    ["bridgeName differs from the object name", bridge({ bridgeName: "kbr-x" }), null, [], ["create"]],
  ] as const)("%s", (_, b, observed, links, want) => {
    const plan = planBridge(b, node, { bridge: observed, links: [...links] });
    expect(show(plan.steps)).toEqual(want);
    expect(plan.problem).toBeUndefined();
  });

  it.each([
    ["made by hand (no mark): NotOwned, nothing done", bridge({ mtu: 9000 }), br({ alias: undefined }), [], "NotOwned"],
    [
      "made for another Bridge (another UID): NotOwned",
      bridge(),
      br({ alias: "kaktus:u-other", up: false }),
      [],
      "NotOwned",
    ],
    [
      "adopted with the annotation: marked, then converged",
      bridge({ mtu: 9000 }, undefined, { annotations: { "kaktus.kowabunga.cloud/adopt": "true" } }),
      br({ alias: undefined }),
      ["mark br0 kaktus:u-br", "update mtu=9000"],
      undefined,
    ],
    ["a marked temporary link a crash left behind: removed", bridge(), br(), ["delete kaktus-tmp-0a1b"], undefined],
  ] as const)("ownership: %s", (_, b, observed, want, problem) => {
    const links = [
      link("kaktus-tmp-0a1b", { kind: "bridge", alias: mark }),
      link("kaktus-tmp-ffff", { alias: "kaktus:u-other" }),
    ];
    const plan = planBridge(b, node, { bridge: observed, links: _.includes("temporary") ? links : [] });
    expect(show(plan.steps)).toEqual(want);
    expect(plan.problem?.reason).toBe(problem);
    if (problem)
      expect(plan.problem?.message).toMatch(/^NotOwned: bridge br0 on kaktus-a was not made by the operator/);
  });

  it("a missing port is a problem, after the changes that can be made", () => {
    const plan = planBridge(bridge({ ports: [{ name: "eth9" }, { name: "eth1" }] }), node, {
      bridge: null,
      links: [link("eth1")],
    });
    expect(show(plan.steps)).toEqual(["create", "enslave eth1"]);
    expect(plan.problem).toEqual({
      reason: "PortNotFound",
      message: "add port: interface eth9 does not exist on kaktus-a",
    });
  });

  it("says Created, or Recreated with a Warning when the bridge was Ready here before", () => {
    expect(planBridge(bridge(), node, { bridge: null, links: [] }).steps[0]?.event).toMatchObject({
      type: "Normal",
      reason: "Created",
    });
    const before = bridge({}, { nodes: [entry()] });
    expect(planBridge(before, node, { bridge: null, links: [] }).steps[0]?.event).toMatchObject({
      type: "Warning",
      reason: "Recreated",
    });
  });
});

describe("planBridgeCleanup: removal waits for the node's VMs", () => {
  const tap = link("vnet0", { kind: "tun", master: "br0" });
  it.each([
    ["no user: bridge deleted", bridge(), [link("br0", { alias: mark })], [], { steps: ["delete br0"] }],
    ["not made by the operator: left on the host", bridge(), [link("br0")], [], { steps: [] }],
    [
      "a VM on this node names it: waits",
      bridge(),
      [link("br0")],
      ["acme/web"],
      { waiting: "waiting to remove br0: used by VirtualMachine acme/web" },
    ],
    [
      "a tap still on it: waits",
      bridge(),
      [link("br0"), tap],
      [],
      { waiting: "waiting to remove br0: used by 1 NIC(s)" },
    ],
    [
      "Orphan: left on the host",
      bridge({ deletionPolicy: "Orphan" }),
      [link("br0", { alias: mark })],
      [],
      { steps: [] },
    ],
    ["already gone: nothing", bridge(), [], [], { steps: [] }],
    [
      "a VLAN sub-interface the operator made goes too; host ports never",
      bridge({ ports: [{ name: "eth1" }, { vlan: { parent: "bond0", id: 100 } }] }),
      [
        link("br0", { alias: mark }),
        link("eth1", { master: "br0" }),
        link("bond0.100", { kind: "vlan", master: "br0", alias: mark }),
      ],
      [],
      { steps: ["delete bond0.100", "delete br0"] },
    ],
    [
      "a PARENT.ID port the host made (unmarked): kept",
      bridge({ ports: [{ vlan: { parent: "bond0", id: 100 } }] }),
      [link("br0", { alias: mark }), link("bond0.100", { kind: "vlan", master: "br0" })],
      [],
      { steps: ["delete br0"] },
    ],
  ] as const)("%s", (_, b, links, users, want) => {
    const plan = planBridgeCleanup(b, node, { bridge: br(), links: [...links] }, [...users]);
    expect(plan.waiting ? { waiting: plan.waiting } : { steps: show(plan.steps) }).toEqual(want);
  });
});

describe("status: this node's entry and the aggregate every agent computes alike", () => {
  const nodes = [
    { name: "kaktus-a", labels: { zone: "a" } },
    { name: "kaktus-b", labels: { zone: "b" } },
  ];
  it.each([
    [
      "ready on both",
      bridge({}, { nodes: [entry({ node: "kaktus-b" })] }),
      entry(),
      "Ready",
      "2/2",
      ["Ready True BridgeReady", "Synced True Synced", "Degraded False AllNodesHealthy"],
    ],
    [
      "the other node not yet",
      bridge(),
      entry(),
      "Pending",
      "1/2",
      ["Ready False NodesNotReady", "Synced True Synced", "Degraded False AllNodesHealthy"],
    ],
    [
      "failing here",
      bridge({}, { nodes: [entry({ node: "kaktus-b" })] }),
      entry({ ready: false, message: "boom" }),
      "Degraded",
      "1/2",
      ["Ready False NodesNotReady", "Synced False HostError", "Degraded True NodesFailing"],
    ],
    [
      "only zone a selected",
      bridge({ nodeSelector: { matchLabels: { zone: "a" } } }),
      entry(),
      "Ready",
      "1/1",
      ["Ready True BridgeReady", "Synced True Synced", "Degraded False AllNodesHealthy"],
    ],
    [
      "no node selected",
      bridge({ nodeSelector: { matchLabels: { zone: "z" } } }),
      undefined,
      "Pending",
      "0/0",
      ["Ready False NoNodeSelected", "Synced True Synced", "Degraded False AllNodesHealthy"],
    ],
    [
      "deleting",
      bridge({}, undefined, { deletionTimestamp: "t" }),
      undefined,
      "Terminating",
      "0/2",
      ["Ready False NodesNotReady", "Synced True Synced", "Degraded False AllNodesHealthy"],
    ],
  ] as const)("%s", (_, b, e, phase, readyNodes, conditions) => {
    const s = bridgeStatus(b, node, e, nodes);
    expect(s.fields).toMatchObject({ phase, readyNodes });
    expect(s.conditions.map((c) => `${c.type} ${c.status} ${c.reason}`)).toEqual(conditions);
  });

  it("keeps the other nodes' entries, sorted, and drops this node's when asked", () => {
    const b = bridge({}, { nodes: [entry({ node: "kaktus-c" }), entry(), entry({ node: "kaktus-b" })] });
    expect(bridgeStatus(b, node, undefined, nodes).fields.nodes?.map((n) => n.node)).toEqual(["kaktus-b", "kaktus-c"]);
    expect(bridgeStatus(b, node, entry({ mtu: 9000 }), nodes).fields.nodes?.map((n) => n.node)).toEqual([
      "kaktus-a",
      "kaktus-b",
      "kaktus-c",
    ]);
  });

  it.each([
    [
      "ready",
      bridge({ ports: [{ name: "eth1" }] }),
      br({ ports: ["eth1", "vnet0"] }),
      undefined,
      { ready: true, ports: ["eth1"], attachedNICs: 1 },
    ],
    [
      "a port not enslaved",
      bridge({ ports: [{ name: "eth1" }] }),
      br(),
      undefined,
      { ready: false, ports: [], message: "port(s) eth1 not enslaved" },
    ],
    ["a problem", bridge(), br(), "create VLAN x: refused", { ready: false, message: "create VLAN x: refused" }],
    ["no bridge", bridge(), null, undefined, { ready: false }],
  ] as const)("this node's entry: %s", (_, b, observed, problem, want) => {
    const links = [link("vnet0", { kind: "tun", master: "br0" })];
    expect(nodeEntry(b, node, { bridge: observed, links }, problem)).toMatchObject({ node, ...want });
  });

  it("finalizers of nodes that are gone are the ones to drop", () => {
    const b = bridge({}, undefined, {
      finalizers: [bridgeFinalizer("kaktus-a"), bridgeFinalizer("kaktus-gone"), "other.io/keep"],
    });
    expect(goneNodeFinalizers(b, [{ name: "kaktus-a", labels: {} }])).toEqual([bridgeFinalizer("kaktus-gone")]);
  });
});
