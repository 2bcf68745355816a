import * as k8s from "@kubernetes/client-node";
import type { Logger } from "pino";
import type { Operation } from "./status.js";

/** The object changed since it was read (a guarded patch's `test` failed): re-read and reconcile again. */
export class ConflictError extends Error {
  override name = "ConflictError";
}

export interface ResourceRef {
  group: string;
  version: string;
  plural: string;
}

const jsonPatch = k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.JsonPatch);

/**
 * The only writer to the API for one kind: guarded JSON patches of the object and of its /status.
 * An empty patch is not sent. Counts its writes, so "converged objects cause no API writes" can be
 * measured.
 */
export class ResourceClient<T> {
  private readonly api: k8s.CustomObjectsApi;
  writes = 0;

  constructor(
    kc: k8s.KubeConfig,
    private readonly ref: ResourceRef,
    /** Every write is a debug line with its patch: what the operator changed, and why it wrote. */
    private readonly log?: Logger,
  ) {
    this.api = kc.makeApiClient(k8s.CustomObjectsApi);
  }

  private target(key: string) {
    const [namespace, name] = key.includes("/") ? key.split("/", 2) : [undefined, key];
    const { group, version, plural } = this.ref;
    return { group, version, plural, name: name!, ...(namespace ? { namespace } : {}) };
  }

  async get(key: string): Promise<T | undefined> {
    const t = this.target(key);
    try {
      return (await (t.namespace
        ? this.api.getNamespacedCustomObject({ ...t, namespace: t.namespace })
        : this.api.getClusterCustomObject(t))) as T;
    } catch (err) {
      if ((err as { code?: number }).code === 404) return undefined;
      throw err;
    }
  }

  /** The namespace's objects, read from the API (not a cache): for what a node's cache does not hold. */
  async list(namespace: string): Promise<T[]> {
    const { group, version, plural } = this.ref;
    const list = (await this.api.listNamespacedCustomObject({ group, version, plural, namespace })) as { items: T[] };
    return list.items;
  }

  /** Applies a guarded JSON patch to the object (metadata, spec); undefined if there was nothing to do. */
  patch(key: string, ops: Operation[]): Promise<T | undefined> {
    return this.send(key, ops, false);
  }

  /** Applies a guarded JSON patch to the /status subresource. */
  patchStatus(key: string, ops: Operation[]): Promise<T | undefined> {
    return this.send(key, ops, true);
  }

  private async send(key: string, ops: Operation[], status: boolean): Promise<T | undefined> {
    if (ops.length === 0) return undefined;
    const t = this.target(key);
    this.writes++;
    this.log?.debug({ key, status, ops }, `write ${this.ref.plural}${status ? "/status" : ""}`);
    try {
      const body = ops as object;
      if (t.namespace) {
        const req = { ...t, namespace: t.namespace, body };
        return (await (status
          ? this.api.patchNamespacedCustomObjectStatus(req, jsonPatch)
          : this.api.patchNamespacedCustomObject(req, jsonPatch))) as T;
      }
      return (await (status
        ? this.api.patchClusterCustomObjectStatus({ ...t, body }, jsonPatch)
        : this.api.patchClusterCustomObject({ ...t, body }, jsonPatch))) as T;
    } catch (err) {
      const code = (err as { code?: number }).code;
      // 409 from a resourceVersion precondition, 422 from a failed `test` op: both mean "changed meanwhile".
      // Any other 422 is a write the API refuses (an invalid status): that must surface, not be retried quietly.
      // (A failed `test` comes back as the bare "rejected our request" message, without field causes.)
      if (
        code === 409 ||
        (code === 422 && /rejected our request due to an error in our request$/.test(apiMessage(err)))
      )
        throw new ConflictError(`${key} changed since it was read`);
      // Deleted meanwhile: there is nothing left to patch.
      if (code === 404) return undefined;
      throw err;
    }
  }
}

/** The apiserver's own message in a client-node ApiException (its body is a Status), else the error text. */
export function apiMessage(err: unknown): string {
  const body = (err as { body?: unknown }).body;
  try {
    const status = (typeof body === "string" ? JSON.parse(body) : body) as { message?: string } | undefined;
    if (status?.message) return `${(err as { code?: number }).code ?? ""} ${status.message}`.trim();
  } catch {
    // not JSON: fall through
  }
  return err instanceof Error ? err.message : String(err);
}
