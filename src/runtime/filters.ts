import { isDeepStrictEqual } from "node:util";
import type { Condition } from "./conditions.js";

/** Whether a change (old: undefined for a creation) should enqueue anything. */
export type EventFilter<T> = (obj: T, old: T | undefined) => boolean;

interface Meta {
  metadata: {
    generation?: number;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    deletionTimestamp?: string;
  };
}

/**
 * controller-runtime's GenerationChangedPredicate with labels, annotations and deletion: what the
 * user changed. Status-only updates (the controllers' own writes echoed back), finalizer edits and
 * resourceVersion-only echoes (a relist) do not pass.
 */
export const specOrMetaChanged = <T extends Meta>(obj: T, old: T | undefined): boolean =>
  !old ||
  obj.metadata.generation !== old.metadata.generation ||
  obj.metadata.deletionTimestamp !== old.metadata.deletionTimestamp ||
  !isDeepStrictEqual(obj.metadata.labels ?? {}, old.metadata.labels ?? {}) ||
  !isDeepStrictEqual(obj.metadata.annotations ?? {}, old.metadata.annotations ?? {});

/** Changes of what `view` picks from an object (a condition, a node's status entry, a list of references). */
export const changedIn =
  <T>(view: (obj: T) => unknown): EventFilter<T> =>
  (obj, old) =>
    !old || !isDeepStrictEqual(view(obj), view(old));

/** Either filter passes. */
export const either =
  <T>(...filters: EventFilter<T>[]): EventFilter<T> =>
  (obj, old) =>
    filters.some((f) => f(obj, old));

/** A condition's status and reason (its message and times are not a change of state). */
export const conditionState = (conditions: readonly Condition[] | undefined, type: string) => {
  const c = conditions?.find((x) => x.type === type);
  return c ? `${c.status}/${c.reason}` : undefined;
};
