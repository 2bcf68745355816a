import type { TSchema } from "@sinclair/typebox";
import { stringify } from "yaml";
import { BridgeSpec, BridgeStatus, bridgeKind, bridgeRootValidations } from "./bridge.js";
import { group, version } from "./schema.js";
import { VirtualMachineSpec, VirtualMachineStatus, virtualMachineKind } from "./virtualmachine.js";
import { VolumeSpec, VolumeStatus, volumeKind } from "./volume.js";

/** Everything the CRD of one kind is made of; the schemas are the same objects the types come from. */
interface KindDefinition {
  names: {
    kind: string;
    plural: string;
    singular: string;
    shortNames: readonly string[];
    scope: "Namespaced" | "Cluster";
  };
  spec: TSchema;
  status: TSchema;
  rootValidations?: object;
  columns: { name: string; type: string; jsonPath: string; priority?: number; description?: string }[];
  /** Fields a list or watch may filter on (`--field-selector`), besides metadata.name and namespace. */
  selectableFields?: string[];
}

const readyColumn = { name: "Ready", type: "string", jsonPath: '.status.conditions[?(@.type=="Ready")].status' };
const phaseColumn = { name: "Phase", type: "string", jsonPath: ".status.phase" };
const ageColumn = { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" };

export const kinds: readonly KindDefinition[] = [
  {
    names: virtualMachineKind,
    spec: VirtualMachineSpec,
    status: VirtualMachineStatus,
    // Each node's agent caches and watches only its own VMs.
    selectableFields: [".spec.node"],
    columns: [
      { name: "Node", type: "string", jsonPath: ".spec.node" },
      phaseColumn,
      readyColumn,
      { name: "Cores", type: "integer", jsonPath: ".spec.cpu.cores", priority: 1 },
      { name: "Memory", type: "string", jsonPath: ".spec.memory", priority: 1 },
      { name: "Run", type: "string", jsonPath: ".spec.runStrategy", priority: 1 },
      ageColumn,
    ],
  },
  {
    names: volumeKind,
    spec: VolumeSpec,
    status: VolumeStatus,
    columns: [
      { name: "Size", type: "string", jsonPath: ".spec.size" },
      { name: "Pool", type: "string", jsonPath: ".spec.pool" },
      phaseColumn,
      readyColumn,
      { name: "Capacity", type: "string", jsonPath: ".status.capacity", priority: 1 },
      { name: "Reclaim", type: "string", jsonPath: ".spec.reclaimPolicy", priority: 1 },
      ageColumn,
    ],
  },
  {
    names: bridgeKind,
    spec: BridgeSpec,
    status: BridgeStatus,
    rootValidations: bridgeRootValidations,
    columns: [
      { name: "Ready Nodes", type: "string", jsonPath: ".status.readyNodes" },
      phaseColumn,
      readyColumn,
      // Empty when it defaults to metadata.name, so only in -o wide.
      { name: "Bridge", type: "string", jsonPath: ".spec.bridgeName", priority: 1 },
      { name: "MTU", type: "integer", jsonPath: ".spec.mtu", priority: 1 },
      ageColumn,
    ],
  },
];

/** TypeBox marks schemas with symbol keys; JSON keeps only what the API server should see. */
const plain = (schema: TSchema): object => JSON.parse(JSON.stringify(schema)) as object;

export function customResourceDefinition(def: KindDefinition) {
  const { names } = def;
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: `${names.plural}.${group}` },
    spec: {
      group,
      scope: names.scope,
      names: {
        kind: names.kind,
        listKind: `${names.kind}List`,
        plural: names.plural,
        singular: names.singular,
        shortNames: [...names.shortNames],
        categories: ["kaktus"],
      },
      versions: [
        {
          name: version,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: def.columns,
          ...(def.selectableFields ? { selectableFields: def.selectableFields.map((jsonPath) => ({ jsonPath })) } : {}),
          schema: {
            openAPIV3Schema: {
              type: "object",
              required: ["spec"],
              properties: {
                apiVersion: { type: "string" },
                kind: { type: "string" },
                metadata: { type: "object" },
                spec: { ...plain(def.spec), description: "What the user asks for." },
                status: {
                  ...plain(def.status),
                  description: "What the operator observed (written by the operator only).",
                  // A new object reads "not yet observed" (generation 1, observed 0) before the operator
                  // first writes: without it kstatus (kpt, Flux, cli-utils appliers) reads an object with
                  // no status as Current at once.
                  default: { observedGeneration: 0 },
                },
              },
              ...def.rootValidations,
            },
          },
        },
      ],
    },
  };
}

export const crdFileName = (def: KindDefinition) => `${group}_${def.names.plural}.yaml`;

/** The checked-in YAML of one CRD: a header saying where it comes from, then the object. */
export const renderCrd = (def: KindDefinition): string =>
  "# Generated from src/api by `npm run gen:crds`. Do not edit: change the schema and regenerate.\n" +
  stringify(customResourceDefinition(def), { lineWidth: 0 });

/**
 * The JSON Schema of one kind's objects, for kubeconform and editors (the CRDs-catalog layout:
 * schemas/GROUP/KIND_VERSION.json), from the same source as the CRD.
 */
export const jsonSchemaFileName = (def: KindDefinition) => `${group}/${def.names.kind.toLowerCase()}_${version}.json`;
export function renderJsonSchema(def: KindDefinition): string {
  const crd = customResourceDefinition(def);
  const schema = crd.spec.versions[0]!.schema.openAPIV3Schema;
  return `${JSON.stringify({ $schema: "http://json-schema.org/draft-04/schema#", title: `${def.names.kind} (${group}/${version})`, ...schema }, null, 2)}\n`;
}
