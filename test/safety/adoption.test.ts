import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { labAgent } from "../env/agents.js";
import { linkNames, nodes, rbd } from "../env/lab.js";
import { run } from "../env/proc.js";
import {
  applyObjects,
  conditionOf,
  freshNamespace,
  kbr,
  kvol,
  waitCondition,
  waitEvent,
  waitObject,
} from "../support/e2e.js";
import { deleteNamespace, kubectl } from "../support/kube.js";

/**
 * Hazard 3: host objects adopted by name. An RBD image or a host bridge that the operator did not
 * make (or made for another object) is never reconfigured or deleted because a new object has its
 * name: it is reported NotOwned. Adopting one is an explicit opt-in (an annotation on the object).
 */
const [nodeA] = nodes as [(typeof nodes)[0]];
const agents = nodes.map((n, i) => labAgent(n, { metricsPort: 9486 + i }));
const ns = "safety-adopt";
const adopt = { "kaktus.kowabunga.cloud/adopt": "true" };

const volume = (name: string, size: string, extra: Record<string, unknown> = {}, annotations = {}) => ({
  apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
  kind: "Volume",
  metadata: { name, namespace: ns, annotations },
  spec: { pool: "rbd", size, ...extra },
});
const imageInfo = async (image: string) =>
  JSON.parse(await rbd("info", "--format", "json", `rbd/${image}`)) as { id: string; size: number };
const ipA = (...args: string[]) => run("ip", ["-n", nodeA.netns, ...args]);
const mtu = async (link: string) =>
  (JSON.parse((await ipA("-j", "link", "show", "dev", link)).stdout) as { mtu: number }[])[0]!.mtu;

describe("never adopt by name", () => {
  beforeAll(async () => {
    await freshNamespace(ns, agents);
  }, 180_000);

  afterAll(async () => {
    await deleteNamespace(ns).catch(() => undefined);
    await kubectl(["delete", kbr, "safety-host", "--ignore-not-found", "--timeout=60s"]).catch(() => undefined);
    await Promise.all(agents.map((a) => a.stop()));
    for (const image of ["kept", "stray"]) await rbd("rm", `rbd/${ns}.${image}`).catch(() => undefined);
    await ipA("link", "del", "kbr-host").catch(() => undefined);
  }, 300_000);

  it("a namespace deleted with a retained image, made again with a Volume of that name: NotOwned, image untouched", async () => {
    await applyObjects(volume("kept", "64Mi", { reclaimPolicy: "Retain" }));
    await waitCondition(kvol, "kept", ns, "Ready", "True");
    const before = await imageInfo(`${ns}.kept`);
    await deleteNamespace(ns);
    await kubectl(["create", "namespace", ns]);
    // Another tenant, a new Volume with the same name, asking for more: it must not get the old disk.
    await applyObjects(volume("kept", "128Mi"));
    const o = await waitCondition(kvol, "kept", ns, "Ready", "False", "NotOwned");
    expect(conditionOf(o, "Ready")?.message).toContain(`rbd/${ns}.kept`);
    await waitEvent("kept", ns, "NotOwned");
    expect(await imageInfo(`${ns}.kept`)).toEqual(before);
    await kubectl(["delete", "-n", ns, `${kvol}/kept`, "--timeout=60s"]);
    expect(await imageInfo(`${ns}.kept`)).toEqual(before);
  }, 240_000);

  it("an image made by hand is adopted only with the annotation", async () => {
    await rbd("create", "--size", "32M", `rbd/${ns}.stray`);
    await applyObjects(volume("stray", "32Mi"));
    await waitCondition(kvol, "stray", ns, "Ready", "False", "NotOwned");
    await applyObjects(volume("stray", "32Mi", {}, adopt));
    await waitCondition(kvol, "stray", ns, "Ready", "True");
    // Adopted: it is the Volume's now, deleted with it (reclaimPolicy Delete).
    await kubectl(["delete", "-n", ns, `${kvol}/stray`, "--timeout=60s"]);
    expect(JSON.parse(await rbd("ls", "--format", "json", "rbd")) as string[]).not.toContain(`${ns}.stray`);
  }, 120_000);

  it("a Bridge named like a host bridge: not reconfigured, not deleted", async () => {
    await ipA("link", "del", "kbr-host").catch(() => undefined);
    await ipA("link", "add", "kbr-host", "type", "bridge");
    await ipA("link", "set", "kbr-host", "up");
    await applyObjects({
      apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
      kind: "Bridge",
      metadata: { name: "safety-host" },
      spec: {
        bridgeName: "kbr-host",
        mtu: 9000,
        nodeSelector: { matchLabels: { "kubernetes.io/hostname": nodeA.name } },
      },
    });
    const b = await waitObject(kbr, "safety-host", undefined, "NotOwned on node A", (o) =>
      ((o?.status?.nodes as { message?: string }[] | undefined) ?? []).some((n) =>
        /NotOwned|not made by the operator/.test(n.message ?? ""),
      ),
    );
    expect(b?.status?.readyNodes).toBe("0/1");
    expect(await mtu("kbr-host")).toBe(1500);
    await kubectl(["delete", kbr, "safety-host", "--timeout=60s"]);
    expect(await linkNames(nodeA.netns)).toContain("kbr-host");
    expect(await mtu("kbr-host")).toBe(1500);
  }, 120_000);
});
