import { bridgeKind } from "./bridge.js";
import { group, version } from "./schema.js";
import { virtualMachineKind } from "./virtualmachine.js";
import { volumeKind } from "./volume.js";

/** The resources the operator watches, as the runtime's manager names them. */
const resource = (k: { kind: string; plural: string }) => ({ group, version, plural: k.plural, kind: k.kind });

export const kinds = {
  virtualMachine: resource(virtualMachineKind),
  volume: resource(volumeKind),
  bridge: resource(bridgeKind),
  node: { group: "", version: "v1", plural: "nodes", kind: "Node" },
  namespace: { group: "", version: "v1", plural: "namespaces", kind: "Namespace" },
} as const;
