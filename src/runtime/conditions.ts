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
