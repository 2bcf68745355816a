import type { Static } from "@sinclair/typebox";
import type { Condition as ConditionSchema } from "../api/schema.js";

export type Condition = Static<typeof ConditionSchema>;
export type ConditionInput = Omit<Condition, "lastTransitionTime" | "observedGeneration">;

/**
 * Sets one condition in a list (metav1.Condition semantics): lastTransitionTime moves only when
 * the status changes; reason, message and observedGeneration are updated in place. Returns a new
 * list; an unchanged condition yields a list equal to the input, so status is not rewritten.
 */
export function setCondition(
  conditions: readonly Condition[] | undefined,
  input: ConditionInput,
  generation: number | undefined,
  now: Date = new Date(),
): Condition[] {
  const list = [...(conditions ?? [])];
  const index = list.findIndex((c) => c.type === input.type);
  const previous = index >= 0 ? list[index] : undefined;
  const next: Condition = {
    type: input.type,
    status: input.status,
    ...(generation !== undefined ? { observedGeneration: generation } : {}),
    lastTransitionTime:
      previous && previous.status === input.status
        ? previous.lastTransitionTime
        : now.toISOString().replace(/\.\d{3}Z$/, "Z"),
    reason: input.reason,
    message: input.message,
  };
  if (index >= 0) list[index] = next;
  else list.push(next);
  return list;
}

export const findCondition = (conditions: readonly Condition[] | undefined, type: string): Condition | undefined =>
  conditions?.find((c) => c.type === type);

export const isTrue = (conditions: readonly Condition[] | undefined, type: string): boolean =>
  findCondition(conditions, type)?.status === "True";

/** Sets several conditions at once (see setCondition); absent entries leave their condition as it is. */
export function setConditions(
  conditions: readonly Condition[] | undefined,
  inputs: readonly (ConditionInput | undefined)[],
  generation: number | undefined,
): Condition[] {
  let list = [...(conditions ?? [])];
  for (const input of inputs) if (input) list = setCondition(list, input, generation);
  return list;
}

/** A condition from its four parts, for tables of conditions. */
export const condition = (
  type: string,
  status: ConditionInput["status"],
  reason: string,
  message = "",
): ConditionInput => ({ type, status, reason, message });

/**
 * Ready reasons that mean the object cannot progress until someone changes something (its spec, the
 * host, another object): Stalled, in kstatus' terms. Every other Ready=False is work in progress.
 */
export const stalledReasons: ReadonlySet<string> = new Set([
  "InvalidSpec", // the spec asks for what cannot be (a value libvirt or the XML cannot carry)
  "Unsupported", // this node cannot give it (host-passthrough on a TCG node)
  "NotOwned", // a host object of that name exists and is not the operator's
  "PoolNotAllowed", // a Volume in, or cloned from, a pool the operator may not use
  "SourceNotFound", // the template image or snapshot a Volume clones does not exist
  "NoNodeSelected", // a Bridge whose selector matches no node
  "MissingInput", // a Secret the spec names does not exist, or lacks the key
  "VolumeInUse", // another VirtualMachine holds the Volume
  "BridgeNotAllowed", // a NIC names a Bridge whose namespaceSelector does not admit the VM's namespace
  "QuotaExceeded", // the namespace's capacity (storage, cores, memory) would be exceeded
  "ImageInUse", // another client has the image open
  "StartFailed", // the domain fails to start, or keeps stopping (crash loop)
]);

/**
 * kstatus' abnormal-true conditions (sigs.k8s.io/cli-utils/pkg/kstatus), derived from Ready so
 * that they never disagree with it: Reconciling True while the operator works toward Ready,
 * Stalled True when it cannot progress (a reason of `stalledReasons`, or a failure it will not
 * retry); both False once Ready. Tools that wait (kstatus, kpt, Flux, Argo CD) then fail fast.
 */
export function progressConditions(
  conditions: readonly Condition[] | undefined,
  { terminal = false }: { terminal?: boolean } = {},
): [ConditionInput, ConditionInput] {
  const ready = findCondition(conditions, "Ready");
  if (!ready)
    return [
      condition("Reconciling", "True", "Provisioning", "not observed yet"),
      condition("Stalled", "False", "Provisioning"),
    ];
  const { reason, message } = ready;
  if (ready.status === "True")
    return [condition("Reconciling", "False", reason), condition("Stalled", "False", reason)];
  if (terminal || stalledReasons.has(reason))
    return [condition("Reconciling", "False", reason), condition("Stalled", "True", reason, message)];
  return [condition("Reconciling", "True", reason, message), condition("Stalled", "False", reason)];
}
