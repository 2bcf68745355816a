import { Type, type SchemaOptions, type TSchema, type TUnsafe } from "@sinclair/typebox";

/**
 * Schema building blocks shared by the three kinds. Each returns a TypeBox schema, so that one
 * declaration gives both the TypeScript type (`Static<>`) and the OpenAPI v3 schema that goes into
 * the CRD. Only structural-schema constructs are used (no anyOf/oneOf except int-or-string).
 */

export const group = "kaktus.kowabunga.cloud";
export const version = "v1alpha1";
export const apiVersion = `${group}/${version}`;

/** A CEL rule the API server enforces (`x-kubernetes-validations`). */
export interface CelRule {
  rule: string;
  message: string;
  /** Which field the error names when the rule sits on a parent (e.g. ".size"). */
  fieldPath?: string;
  reason?: "FieldValueInvalid" | "FieldValueForbidden" | "FieldValueRequired" | "FieldValueDuplicate";
}

export const validations = (...rules: CelRule[]) => ({ "x-kubernetes-validations": rules });

/** A field that can be set at creation and never changed afterwards. */
export const immutable = (what: string): CelRule => ({ rule: "self == oldSelf", message: `${what} is immutable` });

/** A string enum (a TS union of literals, an OpenAPI `enum`). */
export const StringEnum = <const T extends readonly string[]>(
  values: T,
  options: SchemaOptions = {},
): TUnsafe<T[number]> => Type.Unsafe<T[number]>({ type: "string", enum: [...values], ...options });

/** Kubernetes resource.Quantity, as Kubernetes itself declares it in CRDs: integer or string. */
const quantityPattern =
  "^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$";
export const Quantity = (options: SchemaOptions = {}): TUnsafe<string | number> =>
  Type.Unsafe<string | number>({
    anyOf: [{ type: "integer" }, { type: "string" }],
    pattern: quantityPattern,
    "x-kubernetes-int-or-string": true,
    ...options,
  });

/** A CEL expression for a Quantity field, usable with compareTo/isLessThan (int-or-string is dyn in CEL). */
export const celQuantity = (expr: string) => `quantity(string(${expr}))`;

/** RFC 1123 label: what names of objects in one namespace look like (Volume, Secret refs). */
export const DnsLabel = (options: SchemaOptions = {}) =>
  Type.String({ minLength: 1, maxLength: 63, pattern: "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", ...options });

/** RFC 1123 subdomain: Node names, cluster-scoped object names. */
export const DnsSubdomain = (options: SchemaOptions = {}) =>
  Type.String({
    minLength: 1,
    maxLength: 253,
    pattern: "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    ...options,
  });

/**
 * A Linux interface name: at most 15 bytes (IFNAMSIZ - 1). ASCII only, so characters are bytes;
 * no '/', ':', whitespace, and not "." or "..": the kernel's own rules, kept strict on purpose.
 */
export const ifnamePattern = "^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$";
export const IfName = (options: SchemaOptions = {}) =>
  Type.String({ minLength: 1, maxLength: 15, pattern: ifnamePattern, ...options });

/** A unicast MAC address (the first octet's low bit is 0), colon-separated. */
export const MacAddress = (options: SchemaOptions = {}) =>
  Type.String({ maxLength: 17, pattern: "^[0-9a-fA-F][02468aceACE](:[0-9a-fA-F]{2}){5}$", ...options });

/** A Ceph pool or image name: what `rbd` accepts, without '/' and '@' which are its separators. */
export const CephName = (options: SchemaOptions = {}) =>
  Type.String({ minLength: 1, maxLength: 128, pattern: "^[a-zA-Z0-9][a-zA-Z0-9_.-]*$", ...options });

/** A list whose items are identified by their `name`: the API server rejects duplicates itself. */
export const NamedList = <T extends TSchema>(item: T, options: SchemaOptions & { maxItems: number }) =>
  Type.Array(item, { "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"], ...options });

/** metav1.Condition, as the API declares it. */
export const Condition = Type.Object({
  type: Type.String({
    description:
      "Ready, Synced, Reconciling, Stalled, and per kind (DependenciesReady, RestartRequired, GuestAgentConnected, Degraded).",
    maxLength: 316,
    pattern:
      "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
  }),
  status: StringEnum(["True", "False", "Unknown"] as const, { description: "Whether the condition holds." }),
  observedGeneration: Type.Optional(
    Type.Integer({ format: "int64", minimum: 0, description: "The metadata.generation the condition was set for." }),
  ),
  lastTransitionTime: Type.String({ format: "date-time", description: "When status last changed." }),
  reason: Type.String({
    minLength: 1,
    maxLength: 1024,
    pattern: "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
    description: "Why, in one CamelCase word (the README lists them per condition).",
  }),
  message: Type.String({ maxLength: 32768, description: "Why, in words." }),
});

/** What every kind's status carries. */
export const commonStatus = {
  observedGeneration: Type.Optional(
    Type.Integer({ format: "int64", minimum: 0, description: "The metadata.generation the status describes." }),
  ),
  phase: Type.Optional(Type.String({ description: "A one-word summary for humans; conditions are the API." })),
  conditions: Type.Optional(
    Type.Array(Condition, {
      "x-kubernetes-list-type": "map",
      "x-kubernetes-list-map-keys": ["type"],
      maxItems: 16,
      description:
        "Ready (converged), Synced (the last reconcile applied the spec), Reconciling (working toward Ready) and Stalled (cannot progress until something changes), with kind-specific ones.",
    }),
  ),
};

/** Object metadata as the operator reads it (the API server owns its schema). */
export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  generation?: number;
  resourceVersion?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  deletionTimestamp?: string;
  creationTimestamp?: string;
}

/** An object of one of the operator's kinds, as the API server stores it. */
export interface KaktusObject<Kind extends string, Spec, Status> {
  apiVersion: typeof apiVersion;
  kind: Kind;
  metadata: ObjectMeta;
  spec: Spec;
  status?: Status;
}
