import { Type, type Static } from "@sinclair/typebox";
import {
  commonStatus,
  IfName,
  ifnamePattern,
  immutable,
  StringEnum,
  validations,
  type KaktusObject,
} from "./schema.js";

/** A Bridge is a Linux bridge on every node its selector matches, reconciled by each such node's agent. */
export const bridgeKind = {
  kind: "Bridge",
  plural: "bridges",
  singular: "bridge",
  shortNames: ["kbr"],
  scope: "Cluster",
} as const;

/** metav1.LabelSelector, of `what` ("Node" or "Namespace") labels. */
const LabelSelector = (what: string, description: string) =>
  Type.Object(
    {
      // A map, declared the structural way (additionalProperties), not TypeBox's patternProperties.
      matchLabels: Type.Optional(
        Type.Unsafe<Record<string, string>>({
          type: "object",
          additionalProperties: { type: "string", maxLength: 63 },
          description: `${what} labels that must all match.`,
        }),
      ),
      matchExpressions: Type.Optional(
        Type.Array(
          Type.Object(
            {
              key: Type.String({ minLength: 1, maxLength: 317, description: `A ${what.toLowerCase()} label key.` }),
              operator: StringEnum(["In", "NotIn", "Exists", "DoesNotExist"] as const, {
                description: "How the label's value is compared with values.",
              }),
              values: Type.Optional(
                Type.Array(Type.String({ maxLength: 63 }), { maxItems: 64, description: "For In and NotIn." }),
              ),
            },
            validations({
              rule: "self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0 : !has(self.values) || size(self.values) == 0",
              message: "In and NotIn need values; Exists and DoesNotExist take none",
            }),
          ),
          { maxItems: 16, description: "Label expressions that must all match." },
        ),
      ),
    },
    { description },
  );

const BridgePort = Type.Object(
  {
    name: Type.Optional(IfName({ description: "An existing host interface to enslave." })),
    vlan: Type.Optional(
      Type.Object(
        {
          parent: IfName({ description: "The interface the VLAN sub-interface is created on (for example bond0)." }),
          id: Type.Integer({ minimum: 1, maximum: 4094, description: "802.1Q VLAN id." }),
        },
        {
          description: "Create PARENT.ID and enslave it (Kaktus VLAN bridges).",
          ...validations({
            rule: "size(self.parent) + 1 + size(string(self.id)) <= 15",
            message: "the VLAN interface name parent.id must fit in 15 bytes",
          }),
        },
      ),
    ),
  },
  validations({ rule: "has(self.name) != has(self.vlan)", message: "a port needs exactly one of name or vlan" }),
);

export const BridgeSpec = Type.Object({
  bridgeName: Type.Optional(
    IfName({
      description: "Linux interface name of the bridge; defaults to metadata.name.",
      ...validations(immutable("bridgeName")),
    }),
  ),
  nodeSelector: Type.Optional(LabelSelector("Node", "Nodes that get this bridge; empty or omitted: every node.")),
  namespaceSelector: Type.Optional(
    LabelSelector(
      "Namespace",
      "Namespaces whose VirtualMachines may attach NICs to this bridge; omitted: every namespace (a shared " +
        "public bridge). A tenant's private bridge names its namespace: matchLabels kubernetes.io/metadata.name.",
    ),
  ),
  mtu: Type.Optional(
    Type.Integer({ minimum: 68, maximum: 65535, description: "MTU of the bridge; omitted: the kernel's." }),
  ),
  stp: Type.Optional(Type.Boolean({ default: false, description: "Spanning tree protocol." })),
  vlanFiltering: Type.Optional(Type.Boolean({ default: false, description: "802.1Q VLAN filtering on the bridge." })),
  ports: Type.Optional(
    Type.Array(BridgePort, {
      maxItems: 32,
      description: "Host interfaces enslaved to the bridge.",
      ...validations(
        {
          rule: "self.all(p, !has(p.name) || self.exists_one(q, has(q.name) && q.name == p.name))",
          message: "port names must be unique",
        },
        {
          rule: "self.all(p, !has(p.vlan) || self.exists_one(q, has(q.vlan) && q.vlan.parent == p.vlan.parent && q.vlan.id == p.vlan.id))",
          message: "VLAN ports must be unique",
        },
      ),
    }),
  ),
  deletionPolicy: Type.Optional(
    StringEnum(["Delete", "Orphan"] as const, {
      default: "Delete",
      description: "Delete removes the bridges from the hosts with the object; Orphan leaves them.",
    }),
  ),
});

export const BridgeNodeStatus = Type.Object({
  node: Type.String({ description: "The node." }),
  ready: Type.Boolean({ description: "Whether the bridge is there as the spec asks." }),
  mtu: Type.Optional(Type.Integer({ description: "Its MTU as seen." })),
  ports: Type.Optional(Type.Array(Type.String(), { maxItems: 64, description: "Its ports as seen." })),
  attachedNICs: Type.Optional(Type.Integer({ minimum: 0, description: "VM NICs plugged into the bridge." })),
  message: Type.Optional(Type.String({ maxLength: 4096, description: "What is wrong on this node, if anything." })),
});

export const BridgeStatus = Type.Object({
  ...commonStatus,
  readyNodes: Type.Optional(Type.String({ description: "Ready/selected nodes, for example 2/3." })),
  nodes: Type.Optional(
    Type.Array(BridgeNodeStatus, {
      "x-kubernetes-list-type": "map",
      "x-kubernetes-list-map-keys": ["node"],
      maxItems: 1024,
      description: "One entry per node the bridge is on, written by that node's agent.",
    }),
  ),
});

/** Object-level rules: the default bridge name (metadata.name) must itself be a valid interface name. */
export const bridgeRootValidations = validations({
  rule: `has(self.spec.bridgeName) || self.metadata.name.matches('${ifnamePattern}')`,
  message: "metadata.name is not a valid Linux interface name (at most 15 bytes): set spec.bridgeName",
  fieldPath: ".spec.bridgeName",
});

export type BridgeSpec = Static<typeof BridgeSpec>;
export type BridgeStatus = Static<typeof BridgeStatus>;
export type BridgeNodeStatus = Static<typeof BridgeNodeStatus>;
export type Bridge = KaktusObject<"Bridge", BridgeSpec, BridgeStatus>;

/** The Linux name of the bridge on the hosts. */
export const bridgeIfName = (b: Pick<Bridge, "metadata" | "spec">): string => b.spec.bridgeName ?? b.metadata.name;
