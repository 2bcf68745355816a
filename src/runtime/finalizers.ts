import type { Operation } from "./status.js";

/**
 * Finalizer edits as JSON patches guarded by `test` ops (the kube-rs way): each applies only to the
 * finalizer list it was computed from, so two writers never silently undo each other; a failed
 * test is a conflict, and the reconcile simply runs again on the fresh object.
 */
export function addFinalizerPatch(finalizers: readonly string[] | undefined, finalizer: string): Operation[] {
  if (finalizers?.includes(finalizer)) return [];
  if (!finalizers?.length) {
    return [
      { op: "test", path: "/metadata/finalizers", value: finalizers ?? null },
      { op: "add", path: "/metadata/finalizers", value: [finalizer] },
    ];
  }
  return [
    { op: "test", path: "/metadata/finalizers", value: finalizers },
    { op: "add", path: "/metadata/finalizers/-", value: finalizer },
  ];
}

export function removeFinalizerPatch(finalizers: readonly string[] | undefined, finalizer: string): Operation[] {
  const index = finalizers?.indexOf(finalizer) ?? -1;
  if (index < 0) return [];
  return [
    { op: "test", path: `/metadata/finalizers/${index}`, value: finalizer },
    { op: "remove", path: `/metadata/finalizers/${index}` },
  ];
}
