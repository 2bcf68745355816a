import { waitFor } from "../env/proc.js";
import { virsh, type LabNode } from "../env/lab.js";
import { deleteNamespace, installCrds, kubectl } from "./kube.js";

export interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
}

export interface Obj {
  metadata: {
    name: string;
    namespace?: string;
    generation?: number;
    resourceVersion?: string;
    finalizers?: string[];
    uid?: string;
  };
  spec: Record<string, unknown>;
  status?: { observedGeneration?: number; phase?: string; conditions?: Condition[] } & Record<string, unknown>;
}

/** One object as JSON; undefined when it does not exist. */
export async function getObject(resource: string, name: string, namespace?: string): Promise<Obj | undefined> {
  const out = await kubectl([
    "get",
    resource,
    name,
    "-o",
    "json",
    "--ignore-not-found",
    ...(namespace ? ["-n", namespace] : []),
  ]);
  return out.trim() ? (JSON.parse(out) as Obj) : undefined;
}

export const conditionOf = (o: Obj | undefined, type: string) => o?.status?.conditions?.find((c) => c.type === type);

/** Waits until the object satisfies `check`; the failure message carries the last status seen. */
export async function waitObject(
  resource: string,
  name: string,
  namespace: string | undefined,
  what: string,
  check: (o: Obj | undefined) => boolean,
  timeoutMs = 90_000,
): Promise<Obj | undefined> {
  let last: Obj | undefined;
  try {
    await waitFor(
      `${resource}/${name} ${what}`,
      async () => {
        last = await getObject(resource, name, namespace);
        return check(last) || undefined;
      },
      { timeoutMs, intervalMs: 500 },
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}\nlast seen: ${JSON.stringify(last?.status ?? last ?? null)}`);
  }
  return last;
}

export const waitCondition = (
  resource: string,
  name: string,
  namespace: string | undefined,
  type: string,
  status: string,
  reason?: string,
  timeoutMs?: number,
) =>
  waitObject(
    resource,
    name,
    namespace,
    `${type}=${status}${reason ? ` (${reason})` : ""}`,
    (o) => {
      const c = conditionOf(o, type);
      return c?.status === status && (reason === undefined || c.reason === reason);
    },
    timeoutMs,
  );

/** Events recorded for one object, as `reason: message` lines. */
export async function eventsOf(name: string, namespace = "default"): Promise<string[]> {
  const out = await kubectl([
    "get",
    "events",
    "-n",
    namespace,
    "--field-selector",
    `involvedObject.name=${name}`,
    "-o",
    "json",
  ]);
  return (JSON.parse(out) as { items: { reason: string; message: string }[] }).items.map(
    (e) => `${e.reason}: ${e.message}`,
  );
}

export async function waitEvent(name: string, namespace: string | undefined, reason: string, timeoutMs = 60_000) {
  return waitFor(
    `event ${reason} on ${name}`,
    async () => (await eventsOf(name, namespace)).find((e) => e.startsWith(`${reason}:`)),
    { timeoutMs, intervalMs: 500 },
  );
}

/** The domain's state on a node ("running", "shut off"), undefined when there is no such domain. */
export async function domainState(node: LabNode, domain: string): Promise<string | undefined> {
  const out = await virsh(node, "domstate", domain).catch(() => undefined);
  return out?.stdout.trim();
}

export async function domainNames(node: LabNode): Promise<string[]> {
  return (await virsh(node, "list", "--all", "--name")).stdout
    .split("\n")
    .map((s) => s.trim())
    .filter(Boolean);
}

export const kvm = "virtualmachines.kaktus.kowabunga.cloud";
export const kvol = "volumes.kaktus.kowabunga.cloud";
export const kbr = "bridges.kaktus.kowabunga.cloud";

/** Server-side apply of objects built in the test. */
export const applyObjects = (...objects: object[]) =>
  kubectl(["apply", "--server-side", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "List", items: objects }));

/** A merge patch (an object) or a JSON patch (a list of operations) of one object's spec. */
export const patchObject = (resource: string, name: string, namespace: string | undefined, patch: object) =>
  kubectl([
    "patch",
    ...(namespace ? ["-n", namespace] : []),
    `${resource}/${name}`,
    `--type=${Array.isArray(patch) ? "json" : "merge"}`,
    "-p",
    JSON.stringify(patch),
  ]);

/** kubectl wait for Ready; the failure message carries each object's Ready condition (kubectl's says only "timed out"). */
export async function waitReady(resource: string, namespace: string | undefined, ...names: string[]): Promise<void> {
  const scope = namespace ? ["-n", namespace] : [];
  const targets = names.length ? names.map((n) => `${resource}/${n}`) : [resource, "--all"];
  try {
    await kubectl(["wait", "--for=condition=Ready", "--timeout=180s", ...scope, ...targets]);
  } catch (err) {
    const listed = await kubectl(["get", "-o", "json", ...scope, ...(names.length ? targets : [resource])]).catch(
      () => "{}",
    );
    const parsed = JSON.parse(listed) as Obj & { items?: Obj[] };
    const seen = (parsed.items ?? [parsed]).map(
      (o) => `${o.metadata?.name}: ${JSON.stringify(conditionOf(o, "Ready") ?? o.status ?? null)}`,
    );
    throw new Error(`${(err as Error).message}\n${seen.join("\n")}`);
  }
}

/** The node holding the Volume controller's lease ("" when none). */
export const volumeLeaseHolder = async () =>
  (
    await kubectl([
      "get",
      "lease",
      "-n",
      "kaktus-system",
      "kaktus-operator-volumes",
      "-o",
      "jsonpath={.spec.holderIdentity}",
    ])
  ).trim();

/** The agent leading the Volume controller (waited for), and another one. */
export async function volumeLeader<A extends { node: LabNode }>(
  agents: readonly A[],
): Promise<{ leader: A; follower: A }> {
  const holder = await waitFor("a Volume leader", async () => (await volumeLeaseHolder()) || undefined, {
    timeoutMs: 30_000,
  });
  const leader = agents.find((a) => a.node.name === holder)!;
  return { leader, follower: agents.find((a) => a !== leader)! };
}

interface Startable {
  start(): Promise<void>;
  stop(): Promise<unknown>;
}

/** The CRDs installed, namespace `ns` made afresh, the agents running: a test file's starting point. */
export async function freshNamespace(ns: string, agents: readonly Startable[]): Promise<void> {
  await installCrds();
  await deleteNamespace(ns);
  await kubectl(["create", "namespace", ns]);
  await Promise.all(agents.map((a) => a.start()));
}

/** Namespace `ns` deleted with whatever a failed test left in it, then the agents stopped. */
export async function dropNamespace(ns: string, agents: readonly Startable[]): Promise<void> {
  await deleteNamespace(ns).catch(() => undefined);
  await Promise.all(agents.map((a) => a.stop()));
}
