import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Agent } from "../../src/agent.js";
import { ProbeError } from "../../src/host/accel/probe.js";
import { agentConfig } from "../../src/main.js";
import { labAgent, labAgentArgs, labAgentFlags } from "../env/agents.js";
import { nodes, virsh } from "../env/lab.js";
import {
  applyObjects,
  conditionOf,
  domainNames,
  dropNamespace,
  eventsOf,
  freshNamespace,
  getObject,
  kvm,
  waitCondition,
  waitObject,
} from "../support/e2e.js";
import { kubectl } from "../support/kube.js";

/**
 * Hosts as they come: each agent probes its node (node B never has KVM; node A has whatever this
 * machine gives, usable or not), publishes what it decided, gives VMs the CPU that works there,
 * refuses what cannot work, and backs off a domain that can never start.
 */
const [nodeA, nodeB] = nodes as [(typeof nodes)[0], (typeof nodes)[0]];
// Probed as on a host: the probe and what it publishes are under test here.
const agents = [
  labAgent(nodeA, { metricsPort: 9468, accelerator: "auto" }),
  labAgent(nodeB, { metricsPort: 9469, accelerator: "auto" }),
] as const;
const [agentA, agentB] = agents;
const ns = "e2e-hosts";

const vm = (name: string, node: string, spec: Record<string, unknown> = {}) => ({
  apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
  kind: "VirtualMachine",
  metadata: { name, namespace: ns },
  spec: { node, memory: "128Mi", graphics: "none", shutdownGracePeriodSeconds: 2, ...spec },
});

interface ProbeAnnotation {
  accelerator: string;
  cpu?: { mode: string; disabledFeatures: string[] };
  reason: string;
  steps: { check: string; candidate: string; ok: boolean }[];
}

async function nodeProbe(node: string) {
  const n = JSON.parse(await kubectl(["get", "node", node, "-o", "json"])) as {
    metadata: { labels: Record<string, string>; annotations: Record<string, string> };
  };
  const annotation = n.metadata.annotations["kaktus.kowabunga.cloud/accelerator-probe"];
  return {
    labels: n.metadata.labels,
    probe: annotation ? (JSON.parse(annotation) as ProbeAnnotation) : undefined,
  };
}

/** The agent's process, started by hand to see its exit code and what it said. */
function runAgent(args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { env: { ...process.env, NODE_OPTIONS: "" } });
    let output = "";
    child.stdout.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr.on("data", (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("error", reject);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

describe("hosts as they come: probed accelerators, CPUs, and starts that back off", () => {
  beforeAll(async () => {
    await freshNamespace(ns, agents);
  }, 180_000);

  afterAll(async () => {
    await dropNamespace(ns, agents);
  }, 300_000);

  it("each agent publishes its node's accelerator and default CPU: labels, annotation, metric", async () => {
    const b = await nodeProbe(nodeB.name);
    expect(b.labels).toMatchObject({
      "kaktus.kowabunga.cloud/accelerator": "tcg",
      "kaktus.kowabunga.cloud/cpu-mode": "maximum",
    });
    expect(b.probe?.reason).toMatch(/^TCG because libvirt offers no KVM/);
    expect(await agentB.metric("kaktus_node_accelerator_info", { accelerator: "tcg", cpu_mode: "maximum" })).toBe(1);

    const a = await nodeProbe(nodeA.name);
    const accelerator = a.labels["kaktus.kowabunga.cloud/accelerator"];
    console.log(`[figure] node A probe: ${accelerator}: ${a.probe?.reason}`);
    expect(["kvm", "tcg"]).toContain(accelerator);
    expect(a.probe?.accelerator).toBe(accelerator);
    // KVM is chosen only after real guest code ran under it.
    if (accelerator === "kvm") expect(a.probe?.steps.at(-1)).toMatchObject({ check: "guest-run", ok: true });
    expect(await agentA.metric("kaktus_node_accelerator_info", { accelerator: accelerator! })).toBe(1);
    expect(await agentA.metric("kaktus_node_probe_duration_seconds")).toBeGreaterThan(0);
  });

  it("a VM that names no CPU gets its node's: domain type and CPU mode as the probe published", async () => {
    await applyObjects(vm("default-cpu-a", nodeA.name), vm("default-cpu-b", nodeB.name));
    for (const [node, name] of [
      [nodeA, "default-cpu-a"],
      [nodeB, "default-cpu-b"],
    ] as const) {
      await waitCondition(kvm, name, ns, "Ready", "True", "Running", 90_000);
      const { labels } = await nodeProbe(node.name);
      const xml = (await virsh(node, "dumpxml", "--inactive", `${ns}_${name}`)).stdout;
      const type = labels["kaktus.kowabunga.cloud/accelerator"] === "kvm" ? "kvm" : "qemu";
      expect(xml).toContain(`<domain type='${type}'>`);
      expect(xml).toMatch(new RegExp(`<cpu mode='${labels["kaktus.kowabunga.cloud/cpu-mode"]}'`));
    }
  }, 180_000);

  it("a VM asking for a KVM-only CPU on the TCG node is refused with a condition and an Event", async () => {
    await applyObjects(
      vm("passthrough-on-b", nodeB.name, { cpu: { model: "host-passthrough", features: [{ name: "pdpe1gb" }] } }),
    );
    const o = await waitCondition(kvm, "passthrough-on-b", ns, "Ready", "False", "Unsupported");
    expect(conditionOf(o, "Ready")?.message).toMatch(
      /cpu\.model host-passthrough needs KVM, and this node runs VMs under TCG/,
    );
    expect(o?.status?.phase).toBe("Failed");
    expect((await eventsOf("passthrough-on-b", ns)).some((e) => e.startsWith("Unsupported: cpu.model"))).toBe(true);
    expect(await domainNames(nodeB)).not.toContain(`${ns}_passthrough-on-b`);
  }, 60_000);

  it("a VM whose domain can never start backs off like a crash loop: few starts, few writes, one Event", async () => {
    const apiWrites = () =>
      Promise.all(agents.map((a) => a.metric("kaktus_api_writes_total"))).then((w) => w[0]! + w[1]!);
    const starts = () => agentB.metric("kaktus_host_mutations_total", { host: "libvirt", op: "start" });
    const [startsBefore, writesBefore] = [await starts(), await apiWrites()];
    // 4 TiB of guest memory on a machine with a few GiB: QEMU cannot set it up, every time.
    await applyObjects(vm("never-starts", nodeB.name, { memory: "4Ti" }));
    const failed = await waitCondition(kvm, "never-starts", ns, "Ready", "False", "StartFailed", 60_000);
    const firstFailure = Date.now();
    expect(conditionOf(failed, "Ready")?.message).toMatch(
      /^start e2e-hosts_never-starts: .*memory.*\(failed once; next try at \d{4}-.*Z\)$/i,
    );
    expect(failed?.status?.phase).toBe("Failed");

    // Long enough for three tries (10 s, then 20 s apart), where a naive retry would start ~40 times.
    const holdMs = 40_000;
    await sleep(holdMs - (Date.now() - firstFailure));
    const attempts = (await starts()) - startsBefore;
    const writes = (await apiWrites()) - writesBefore;
    const events = JSON.parse(
      await kubectl([
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "involvedObject.name=never-starts,reason=StartFailed",
        "-o",
        "json",
      ]),
    ) as { items: { count: number; message: string }[] };
    const o = await getObject(kvm, "never-starts", ns);
    console.log(
      `[figure] a VM that never starts, held ${holdMs / 1000} s after its first failure: ${attempts} start attempts, ${writes} API writes ` +
        `(all agents, from apply), ${events.items.length} StartFailed Event(s) with count ` +
        `${events.items.map((e) => e.count).join(",")}; status: ${conditionOf(o, "Ready")?.message}`,
    );
    // At 0, 10 and 30 s: 3 in all (the bounds leave room for slow reconciles).
    expect(attempts).toBeGreaterThanOrEqual(3);
    expect(attempts).toBeLessThanOrEqual(4);
    // Finalizer, identity, Defined, one status per failure, one folded Event patched at most every 30 s.
    expect(writes).toBeLessThanOrEqual(12);
    expect(events.items).toHaveLength(1);
    expect(events.items[0]!.count).toBeGreaterThanOrEqual(2);
    expect(conditionOf(o, "Ready")).toMatchObject({ status: "False", reason: "StartFailed" });
    expect(conditionOf(o, "Ready")?.message).toMatch(/failed \d times; next try at/);
  }, 200_000);

  it("a changed spec ends the wait: the fixed VM starts at once", async () => {
    await kubectl(["patch", "-n", ns, `${kvm}/never-starts`, "--type=merge", "-p", '{"spec":{"memory":"128Mi"}}']);
    // Well before its next try (40 s after the last): the new generation starts afresh.
    await waitObject(kvm, "never-starts", ns, "running", (o) => conditionOf(o, "Ready")?.reason === "Running", 20_000);
  }, 60_000);

  it("a flag that cannot work on the node is a clear startup error (exit 2), not a crash loop", async () => {
    // Three rounds: the refusal comes while host threads still load, which once aborted 1 start in 5.
    const cases = [
      ["--accelerator=kvm", "cannot start: --accelerator=kvm, but KVM does not work here: libvirt offers no KVM"],
      [
        "--cpu-model=host-passthrough",
        "cannot start: the default CPU host-passthrough needs KVM, and this node runs TCG",
      ],
    ] as const;
    for (const [flag, message] of [...cases, ...cases, ...cases]) {
      const { code, output } = await runAgent(labAgentArgs(nodeB, { metricsPort: 9470, args: [flag] }));
      expect(code, output).toBe(2);
      expect(output).toContain(message);
      expect(output).not.toMatch(/\n\s+at /); // one line, no stack trace
    }
  }, 150_000);

  it("an agent whose start is refused has closed its host threads: none is left loading when it exits", async () => {
    // A thread still loading its native module when the process exits aborts it (SIGABRT, no exit 2).
    const threads = () => readdirSync("/proc/self/task").length;
    const before = threads();
    const agent = new Agent(
      agentConfig(labAgentFlags(nodeB, { metricsPort: 9471, logLevel: "silent", args: ["--accelerator=kvm"] })),
    );
    expect(threads()).toBeGreaterThan(before);
    await expect(agent.start()).rejects.toThrow(ProbeError);
    expect(threads()).toBe(before);
  });
});
