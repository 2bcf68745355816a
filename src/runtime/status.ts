import fastJsonPatch from "fast-json-patch";

const { compare } = fastJsonPatch;
export type Operation = fastJsonPatch.Operation;

/**
 * The JSON patch that turns the stored status into the rebuilt one, guarded so that it applies
 * only to the object version it was computed from (a `test` of metadata.resourceVersion: a
 * conflict means re-read and reconcile again). Empty when nothing changed: then no write at all.
 */
export function statusPatch(
  stored: { metadata: { resourceVersion?: string }; status?: object },
  status: object,
): Operation[] {
  const ops = compare({ status: stored.status ?? {} }, { status });
  if (ops.length === 0) return [];
  // A missing status must be created whole: a patch cannot add below a path that does not exist.
  const body = stored.status === undefined ? [{ op: "add", path: "/status", value: status } as Operation] : ops;
  const guard: Operation[] = stored.metadata.resourceVersion
    ? [{ op: "test", path: "/metadata/resourceVersion", value: stored.metadata.resourceVersion }]
    : [];
  return [...guard, ...body];
}
