import { formatBytes, toBytes } from "../api/quantity.js";

/**
 * A namespace's capacity, as the platform sets it in the namespace's annotations (tenants cannot
 * edit their Namespace). Counted by the operator over the namespace's objects: Volume sizes, VM
 * cores and memory. Object counts are the standard ResourceQuota's (count/virtualmachines...).
 */
export const capacityAnnotations = {
  storage: "kaktus.kowabunga.cloud/max-storage",
  cores: "kaktus.kowabunga.cloud/max-cores",
  memory: "kaktus.kowabunga.cloud/max-memory",
} as const;

export type Resource = keyof typeof capacityAnnotations;
export type Amounts = Partial<Record<Resource, bigint>>;

/** The limits a namespace's annotations set; an unreadable one is an error (said on the objects). */
export function capacityOf(annotations: Readonly<Record<string, string>> | undefined): {
  limits: Amounts;
  error?: string;
} {
  const limits: Amounts = {};
  for (const [resource, key] of Object.entries(capacityAnnotations) as [Resource, string][]) {
    const value = annotations?.[key];
    if (value === undefined) continue;
    const amount = resource === "cores" ? (/^\d{1,9}$/.test(value) ? BigInt(value) : undefined) : bytesOf(value);
    if (amount === undefined)
      return { limits, error: `namespace annotation ${key}: ${JSON.stringify(value)} is not a ${resource} amount` };
    limits[resource] = amount;
  }
  return { limits };
}

/** One object of a namespace as the quota sees it. */
export interface Claimant {
  key: string;
  /** Creation order: earlier objects are admitted first. */
  created: string;
  /** What it asks for. */
  request: Amounts;
  /** What it holds on the hosts now (an image, a domain); undefined: nothing yet. */
  holds?: Amounts;
  deleting?: boolean;
}

const add = (a: Amounts, b: Amounts, sign = 1n): Amounts => {
  const out: Amounts = { ...a };
  for (const [r, v] of Object.entries(b) as [Resource, bigint][]) out[r] = (out[r] ?? 0n) + sign * v;
  return out;
};

/**
 * Whether `key` may get what it asks for: what the others hold, plus what earlier objects that
 * hold nothing yet were admitted to, plus its request, within every limit. The same answer for the
 * same objects whatever the order of reconciles (or the agent that asks): two objects racing for
 * the last room never both get it. What exists is never taken away; only growth is refused.
 * Returns undefined when it fits, else why not.
 */
export function quotaRefusal(key: string, objects: readonly Claimant[], limits: Amounts): string | undefined {
  if (Object.keys(limits).length === 0) return undefined;
  const held = objects.reduce((sum, o) => (o.holds ? add(sum, o.holds) : sum), {} as Amounts);
  const ordered = [...objects].sort((a, b) => a.created.localeCompare(b.created) || a.key.localeCompare(b.key));
  let admitted: Amounts = {};
  for (const o of ordered) {
    if (!o.holds && o.deleting) continue;
    const others = add(add(held, o.holds ?? {}, -1n), admitted);
    const over = (Object.entries(limits) as [Resource, bigint][]).filter(
      ([r, limit]) => (others[r] ?? 0n) + (o.request[r] ?? 0n) > limit && (o.request[r] ?? 0n) > (o.holds?.[r] ?? 0n),
    );
    if (o.key === key)
      return over.length
        ? over
            .map(
              ([r, limit]) =>
                `${r}: ${show(r, o.request[r] ?? 0n)} asked, ${show(r, others[r] ?? 0n)} of ${show(r, limit)} in use`,
            )
            .join("; ") + " (the namespace's capacity)"
        : undefined;
    if (!o.holds && over.length === 0) admitted = add(admitted, o.request);
  }
  return undefined;
}

const show = (r: Resource, v: bigint) => (r === "cores" ? String(v) : formatBytes(v));

/** A quantity in bytes; undefined when it cannot be read (the object's own reconcile says why). */
export function bytesOf(quantity: string | number): bigint | undefined {
  try {
    return toBytes(quantity);
  } catch {
    return undefined;
  }
}
