import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { labAgent } from "../env/agents.js";
import { nodes } from "../env/lab.js";
import { repoRoot } from "../env/paths.js";
import { run } from "../env/proc.js";
import { applyObjects, conditionOf, kbr, kvm, kvol, waitObject, type Obj } from "../support/e2e.js";
import { kstatus } from "../support/kstatus.js";
import { installCrds, kubectl } from "../support/kube.js";

/**
 * What the tools that wait on objects make of the operator's conditions, on objects taken from the
 * lab in each state: Argo CD's health (manifests/argocd/health.lua, run by Lua 5.1 as Argo CD runs
 * it with gopher-lua) and kstatus (cli-utils' Compute, in test/kstatus). A state that cannot
 * progress must read Degraded and Failed at once, not Progressing until a timeout.
 */
const [nodeA, nodeB] = nodes as [(typeof nodes)[0], (typeof nodes)[0]];
const agents = [labAgent(nodeA, { metricsPort: 9498 }), labAgent(nodeB, { metricsPort: 9499 })] as const;
const ns = "e2e-health";
const healthScript = join(repoRoot, "manifests/argocd/health.lua");

const meta = (name: string) => ({ name, namespace: ns });
const volume = (name: string, pool: string) => ({
  apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
  kind: "Volume",
  metadata: meta(name),
  spec: { pool, size: "64Mi" },
});
const vm = (name: string, spec: object) => ({
  apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
  kind: "VirtualMachine",
  metadata: meta(name),
  spec: { node: nodeA.name, memory: "64Mi", graphics: "none", shutdownGracePeriodSeconds: 1, ...spec },
});
const bridge = (name: string, nodeSelector?: object) => ({
  apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
  kind: "Bridge",
  metadata: { name },
  spec: { bridgeName: name, ...(nodeSelector ? { nodeSelector } : {}) },
});

/** Argo CD's verdict: the script run on the object, as argocd-cm would run it. */
async function argoHealth(obj: Obj): Promise<{ status: string; message: string }> {
  const harness = `
local cjson = require("cjson")
obj = cjson.decode(io.read("*a"))
local hs = assert(loadfile(${JSON.stringify(healthScript)}))()
io.write(hs.status, "\\n", hs.message or "")`;
  const { stdout } = await run("lua5.1", ["-e", harness], { input: JSON.stringify(obj) });
  const [status = "", ...message] = stdout.split("\n");
  return { status, message: message.join("\n") };
}

const states: {
  what: string;
  resource: string;
  name: string;
  namespaced: boolean;
  ready: (o: Obj | undefined) => boolean;
  argo: string;
  kstatus: string;
}[] = [
  {
    what: "a Volume whose image is ready",
    resource: kvol,
    name: "ready",
    namespaced: true,
    ready: (o) => conditionOf(o, "Ready")?.status === "True",
    argo: "Healthy",
    kstatus: "Current",
  },
  {
    what: "a Volume in a pool the operator may not use",
    resource: kvol,
    name: "refused",
    namespaced: true,
    ready: (o) => conditionOf(o, "Stalled")?.reason === "PoolNotAllowed",
    argo: "Degraded",
    kstatus: "Failed",
  },
  {
    what: "a VM waiting for a Volume that does not exist",
    resource: kvm,
    name: "waiting",
    namespaced: true,
    ready: (o) => conditionOf(o, "Reconciling")?.reason === "WaitingForDependencies",
    argo: "Progressing",
    kstatus: "InProgress",
  },
  {
    what: "a running VM",
    resource: kvm,
    name: "running",
    namespaced: true,
    ready: (o) => o?.status?.phase === "Running" && conditionOf(o, "Ready")?.status === "True",
    argo: "Healthy",
    kstatus: "Current",
  },
  {
    what: "a Halted VM, stopped as asked",
    resource: kvm,
    name: "halted",
    namespaced: true,
    ready: (o) => o?.status?.phase === "Stopped" && conditionOf(o, "Ready")?.status === "True",
    argo: "Suspended",
    kstatus: "Current",
  },
  {
    what: "a VM whose CPU model this TCG node cannot give",
    resource: kvm,
    name: "unsupported",
    namespaced: true,
    ready: (o) => conditionOf(o, "Stalled")?.status === "True",
    argo: "Degraded",
    kstatus: "Failed",
  },
  {
    what: "a Bridge ready on both nodes",
    resource: kbr,
    name: "kbr-health",
    namespaced: false,
    ready: (o) => o?.status?.readyNodes === "2/2" && conditionOf(o, "Ready")?.status === "True",
    argo: "Healthy",
    kstatus: "Current",
  },
  {
    what: "a Bridge whose selector matches no node",
    resource: kbr,
    name: "kbr-nowhere",
    namespaced: false,
    ready: (o) => conditionOf(o, "Stalled")?.reason === "NoNodeSelected",
    argo: "Degraded",
    kstatus: "Failed",
  },
];

describe("health as Argo CD and kstatus read it", () => {
  const captured = new Map<string, Obj>();

  beforeAll(async () => {
    await installCrds();
    await Promise.all(agents.map((a) => a.start()));
    await kubectl(["delete", "namespace", ns, "--ignore-not-found", "--timeout=180s"]);
    await kubectl(["create", "namespace", ns]);
    await applyObjects(
      volume("ready", "rbd"),
      volume("refused", "not-a-kaktus-pool"),
      vm("waiting", { disks: [{ name: "os", volumeRef: "missing" }] }),
      vm("running", {}),
      vm("halted", { runStrategy: "Halted" }),
      // node B never has KVM: host-passthrough cannot be given there.
      vm("unsupported", { node: nodeB.name, cpu: { model: "host-passthrough" } }),
      bridge("kbr-health"),
      bridge("kbr-nowhere", { matchLabels: { "kaktus.kowabunga.cloud/zone": "nowhere" } }),
    );
    for (const s of states) {
      const o = await waitObject(s.resource, s.name, s.namespaced ? ns : undefined, s.what, s.ready, 120_000);
      captured.set(s.name, o!);
    }
  }, 400_000);

  afterAll(async () => {
    await kubectl(["delete", "namespace", ns, "--ignore-not-found", "--timeout=180s"]).catch(() => undefined);
    await kubectl(["delete", kbr, "kbr-health", "kbr-nowhere", "--ignore-not-found", "--timeout=60s"]).catch(
      () => undefined,
    );
    await Promise.all(agents.map((a) => a.stop()));
  }, 300_000);

  it.each(states)("$what: Argo CD $argo, kstatus $kstatus", async (s) => {
    const obj = captured.get(s.name)!;
    const argo = await argoHealth(obj);
    expect(argo.status, argo.message).toBe(s.argo);
    expect(argo.message).not.toBe("");
    const [k] = await kstatus([obj]);
    expect(k?.status, k?.message).toBe(s.kstatus);
  });

  it("an object the operator has not seen at its generation: Progressing and InProgress", async () => {
    const obj = structuredClone(captured.get("ready")!);
    obj.metadata.generation = (obj.metadata.generation ?? 1) + 1;
    expect((await argoHealth(obj)).status).toBe("Progressing");
    expect((await kstatus([obj]))[0]?.status).toBe("InProgress");
    const fresh = { ...structuredClone(obj), status: undefined };
    expect((await argoHealth(fresh)).status).toBe("Progressing");
  });

  it("Reconciling and Stalled never disagree with Ready", () => {
    for (const obj of captured.values()) {
      const [ready, reconciling, stalled] = ["Ready", "Reconciling", "Stalled"].map((t) => conditionOf(obj, t));
      if (ready?.status === "True") expect([reconciling?.status, stalled?.status]).toEqual(["False", "False"]);
      else expect([reconciling?.status, stalled?.status].sort()).toEqual(["False", "True"]);
    }
  });
});
