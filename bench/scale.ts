import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { agentProcess, labAgent, type AgentOptions } from "../test/env/agents.js";
import {
  cephConfPath,
  cephLibvirtKeyringPath,
  kubeconfigPath,
  labDir,
  repoRoot,
  nodes,
  virsh,
  type LabNode,
} from "../test/env/lab.js";
import { run } from "../test/env/proc.js";
import { installCrds, kubeConfig, kubectl } from "../test/support/kube.js";
import { pino } from "pino";
import type { Condition } from "../src/runtime/conditions.js";
import { Informer, type KubeObject } from "../src/runtime/informer.js";
import { limitBenchmark, type LimitFigures, type ScaleObject } from "./limit.js";
import { peerBinary } from "./peer.js";

/**
 * N Volumes + N VirtualMachines (Halted, one disk and one NIC each) + 20 Bridges over the two lab
 * nodes, applied at once (one server-side apply, as a GitOps tool does), converged by two agents
 * (the operator, or the Go peer in bench/peer): time to all Ready, work per object, the agents' CPU,
 * peak RSS and event-loop delay, a steady window with resyncs, a drift storm, and deletion.
 */
export interface ScaleOptions {
  n: number;
  operator: "kaktus" | "peer";
  bridges?: number;
  /** The steady window; resyncs every `resyncSeconds` happen inside it. */
  steadySeconds?: number;
  resyncSeconds?: number;
  driftDomains?: number;
  driftBridges?: number;
  /** A directory for the operator's V8 CPU profiles (written when the agents stop). */
  profileDir?: string;
  /** The operator's --host-workers (unset: its default). */
  hostWorkers?: number;
  /** The operator's log level (debug: every API write is logged with its patch). */
  logLevel?: string;
}

type Agent = ReturnType<typeof agentProcess>;
const ns = "bench-scale";
const group = "kaktus.kowabunga.cloud";
const linkOf = (i: number) => `kbs${i}`;

function startAgents(operator: ScaleOptions["operator"], resyncSeconds: number, opts: ScaleOptions): Agent[] {
  const { profileDir, hostWorkers, logLevel } = opts;
  return nodes.map((node, i) => {
    const opts: AgentOptions = {
      metricsPort: 9480 + i,
      resyncSeconds,
      args: [
        `--sync-period=${resyncSeconds}`,
        ...(hostWorkers && operator === "kaktus" ? [`--host-workers=${hostWorkers}`] : []),
      ],
      compiled: true,
      ...(logLevel ? { logLevel } : {}),
      ...(profileDir ? { nodeArgs: ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] } : {}),
    };
    return operator === "kaktus" ? labAgent(node, opts) : peerAgent(node, opts);
  });
}

function peerAgent(node: LabNode, opts: AgentOptions): Agent {
  return agentProcess(node, opts, {
    name: `peer-${node.name}`,
    comm: "peer",
    cmd: peerBinary(),
    args: [
      `--node=${node.name}`,
      `--kubeconfig=${kubeconfigPath}`,
      `--libvirt-uri=${node.libvirtUri}`,
      `--ceph-conf=${cephConfPath}`,
      "--ceph-user=libvirt",
      `--ceph-keyring=${cephLibvirtKeyringPath}`,
      `--netns=${node.netns}`,
      `--metrics-address=127.0.0.1:${opts.metricsPort}`,
      `--resync=${opts.resyncSeconds}`,
      ...(opts.args ?? []),
    ],
  });
}

function objects(n: number, bridges: number): ScaleObject[] {
  const bridgeItems = Array.from({ length: bridges }, (_, i) => ({
    apiVersion: `${group}/v1alpha1`,
    kind: "Bridge",
    metadata: { name: `bench-br-${i}`, labels: { bench: "scale" } },
    spec: { bridgeName: linkOf(i) },
  }));
  const volumes = Array.from({ length: n }, (_, i) => ({
    apiVersion: `${group}/v1alpha1`,
    kind: "Volume",
    metadata: { name: `vol-${i}`, namespace: ns },
    spec: { pool: "rbd", size: "16Mi" },
  }));
  const vms = Array.from({ length: n }, (_, i) => ({
    apiVersion: `${group}/v1alpha1`,
    kind: "VirtualMachine",
    metadata: { name: `vm-${i}`, namespace: ns },
    spec: {
      node: nodes[i % nodes.length]!.name,
      runStrategy: "Halted",
      memory: "128Mi",
      graphics: "none",
      disks: [{ name: "os", volumeRef: `vol-${i}` }],
      interfaces: [{ name: "net0", bridgeRef: `bench-br-${i % bridges}` }],
    },
  }));
  return [...bridgeItems, ...volumes, ...vms];
}

type BenchObject = KubeObject & {
  metadata: { labels?: Record<string, string> };
  status?: { conditions?: Condition[] };
};

/**
 * Which bench objects say Ready=True, kept by watches: polling lists of every object would cost
 * the apiserver (the bottleneck here) more than the operator's own writes.
 */
function readiness(): { count: () => number; synced: Promise<void>; stop: () => Promise<void> } {
  const ready = new Set<string>();
  const log = pino({ level: "silent" });
  const informers = ["bridges", "volumes", "virtualmachines"].map(
    (plural) =>
      new Informer<BenchObject>(
        kubeConfig,
        { group, version: "v1alpha1", plural },
        (key, obj) => {
          const ours = obj && (obj.metadata.namespace === ns || obj.metadata.labels?.bench === "scale");
          const isReady = ours && obj.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");
          if (isReady) ready.add(`${plural}/${key}`);
          else ready.delete(`${plural}/${key}`);
        },
        log,
      ),
  );
  for (const i of informers) i.start();
  return {
    count: () => ready.size,
    synced: Promise.all(informers.map((i) => i.hasSynced)).then(() => undefined),
    stop: () => Promise.all(informers.map((i) => i.stop())).then(() => undefined),
  };
}

/** CPU seconds (user + system) from a /proc stat line. */
const cpuOf = (stat: string) => {
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime (fields 14 and 15)
};

/**
 * CPU seconds by program on the whole machine (the apiserver, etcd, libvirtd, Ceph, the agents):
 * where the two cores went while the operator converged.
 */
function machineCpu(): Record<string, number> {
  return cpuByName("/proc");
}

/** CPU seconds by the name (comm) of the processes under `dir` (/proc) or the threads (/proc/PID/task). */
function cpuByName(dir: string): Record<string, number> {
  const byProgram: Record<string, number> = {};
  for (const pid of readdirSync(dir).filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = readFileSync(`${dir}/${pid}/stat`, "utf8");
      const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      byProgram[comm] = (byProgram[comm] ?? 0) + cpuOf(stat);
    } catch {
      // gone meanwhile
    }
  }
  return byProgram;
}

/** The programs that took the most CPU between two readings of machineCpu. */
function busiest(before: Record<string, number>, after: Record<string, number>, top = 8): Record<string, number> {
  return Object.fromEntries(
    Object.entries(after)
      .map(([comm, cpu]) => [comm, round(cpu - (before[comm] ?? 0))] as const)
      .sort((a, b) => b[1] - a[1])
      .slice(0, top),
  );
}

/** CPU seconds (user + system) and peak RSS of a process, from /proc. */
function processFigures(pid: number | undefined): { cpuSeconds: number; peakRssMiB: number; rssMiB: number } {
  if (!pid) return { cpuSeconds: NaN, peakRssMiB: NaN, rssMiB: NaN };
  const cpuSeconds = cpuOf(readFileSync(`/proc/${pid}/stat`, "utf8"));
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kB = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN) / 1024;
  return { cpuSeconds, peakRssMiB: kB("VmHWM"), rssMiB: kB("VmRSS") };
}

async function counters(agents: Agent[]) {
  const sum = async (name: string, labels: Record<string, string> = {}) =>
    (await Promise.all(agents.map((a) => a.metric(name, labels)))).reduce((x, y) => x + y, 0);
  const by = async (name: string, label: string, values: string[]) =>
    Object.fromEntries(await Promise.all(values.map(async (v) => [v, await sum(name, { [label]: v })] as const)));
  return {
    reconciles: await sum("kaktus_reconcile_total"),
    writes: await sum("kaktus_api_writes_total"),
    mutations: await sum("kaktus_host_mutations_total"),
    writesByResource: await by("kaktus_api_writes_total", "resource", [
      "virtualmachines",
      "volumes",
      "bridges",
      "events",
      "nodes",
    ]),
    reconcilesByController: await by("kaktus_reconcile_total", "controller", [
      "virtualmachine",
      "volume",
      "bridge",
      "fence",
    ]),
  };
}

/** Seconds from `started` to the last API write, once none came for 5 s (at most 5 minutes of waiting). */
async function untilQuiet(agents: Agent[], started: number): Promise<number> {
  const writes = async () =>
    (await Promise.all(agents.map((a) => a.metric("kaktus_api_writes_total")))).reduce((x, y) => x + y, 0);
  let last = await writes();
  let lastChange = performance.now();
  const deadline = Date.now() + 300_000;
  while (performance.now() - lastChange < 5_000 && Date.now() < deadline) {
    await sleep(500);
    const now = await writes();
    if (now !== last) [last, lastChange] = [now, performance.now()];
  }
  return (lastChange - started) / 1000;
}

/** Event-loop delay (ms) since the last scrape, the worst agent's, from prom-client's default metrics. */
async function eventLoopDelay(agents: Agent[]): Promise<Record<string, number>> {
  const texts = await Promise.all(agents.map(async (a) => (await a.get("/metrics")).text));
  const worst = (q: string) =>
    Math.max(
      ...texts.map((t) => Number(new RegExp(`^nodejs_eventloop_lag_${q}_seconds (\\S+)$`, "m").exec(t)?.[1] ?? NaN)),
    ) * 1000;
  return { p50: round(worst("p50")), p99: round(worst("p99")), max: round(worst("max")) };
}

const percentile = (sorted: number[], p: number) =>
  sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]! : NaN;
const round = (x: number) => Math.round(x * 1000) / 1000;

async function clean(): Promise<void> {
  await kubectl(["delete", "namespace", ns, "--ignore-not-found", "--timeout=900s"]);
  await kubectl(["delete", `bridges.${group}`, "-l", "bench=scale", "--ignore-not-found", "--timeout=300s"]);
}

/** The scenario's limit on this lab (./limit.ts), measured with no agent running. */
export async function scaleLimit(n: number, hostWorkers: number, bridges = 20): Promise<LimitFigures> {
  console.error(`[bench] scale limit N=${n}`);
  await installCrds();
  await clean();
  await sleep(10_000); // the apiserver and etcd settle after a previous run's deletions
  await kubectl(["create", "namespace", ns]);
  // The operators' concurrency: two agents, four workers per controller.
  return limitBenchmark(objects(n, bridges), { inFlight: 8, hostWorkers, n, bridges, clean });
}

export async function scaleBenchmark(opts: ScaleOptions): Promise<Record<string, unknown>> {
  const { n, operator, bridges = 20, steadySeconds = 300, resyncSeconds = 60 } = opts;
  const driftDomains = Math.min(opts.driftDomains ?? 100, n);
  const driftBridges = Math.min(opts.driftBridges ?? 5, bridges);
  const total = 2 * n + bridges;
  console.error(`[bench] scale ${operator} N=${n}: ${total} objects`);
  if (operator === "kaktus") await run("npm", ["run", "build"], { cwd: repoRoot }); // the agent as deployed
  await installCrds();
  await clean();
  await kubectl(["create", "namespace", ns]);
  const agents = startAgents(operator, resyncSeconds, opts);
  await Promise.all(agents.map((a) => a.start()));
  try {
    const manifest = join(labDir, "bench-scale.json");
    writeFileSync(manifest, JSON.stringify({ apiVersion: "v1", kind: "List", items: objects(n, bridges) }));
    const before = await counters(agents);
    const cpuBefore = agents.map((a) => processFigures(a.pid()).cpuSeconds);
    const idleRss = agents.map((a) => processFigures(a.pid()).rssMiB);
    const machineBefore = machineCpu();
    const threadsBefore = agents.map((a) => cpuByName(`/proc/${a.pid()}/task`));
    await Promise.all(agents.map((a) => a.metric("nodejs_eventloop_lag_max_seconds"))); // resets the window
    const watched = readiness();
    await watched.synced;
    const started = performance.now();
    await kubectl(["apply", "--server-side", "-f", manifest]);
    const applySeconds = (performance.now() - started) / 1000;
    const deadline = Date.now() + (120 + n) * 1000;
    try {
      while (watched.count() < total) {
        if (Date.now() > deadline)
          throw new Error(`scale ${operator} N=${n}: ${watched.count()}/${total} Ready at the deadline`);
        await sleep(50);
      }
    } finally {
      await watched.stop();
    }
    const convergeSeconds = (performance.now() - started) / 1000;
    const machineCpuSeconds = busiest(machineBefore, machineCpu());
    const threadCpuSeconds = agents.map((a, i) => busiest(threadsBefore[i]!, cpuByName(`/proc/${a.pid()}/task`), 6));
    // One scrape per agent: each scrape starts a new event-loop delay window.
    const eventLoopMs = operator === "kaktus" ? await eventLoopDelay(agents) : null;
    // Every object says Ready, but work may trail (a Volume's inUseBy, once its VM is seen): it is
    // counted as converging, and the steady window starts once no API write came for 5 s.
    const quietSeconds = await untilQuiet(agents, started);
    const converged = await counters(agents);
    const heapMiB = await Promise.all(
      agents.map(async (a) => round((await a.metric("nodejs_heap_size_used_bytes")) / 2 ** 20)),
    );
    const procs = agents.map((a, i) => ({ ...processFigures(a.pid()), cpuBefore: cpuBefore[i]! }));
    const perObject = (k: "reconciles" | "writes" | "mutations") => round((converged[k] - before[k]) / total);
    const delta = (after: Record<string, number>, earlier: Record<string, number>) =>
      Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - earlier[k]!]));

    console.error(`[bench] converged in ${round(convergeSeconds)} s; steady window ${steadySeconds} s`);
    await sleep(steadySeconds * 1000);
    // The window since the last scrape: the steady state, with its resyncs.
    const steadyEventLoopMs = operator === "kaktus" ? await eventLoopDelay(agents) : null;
    const steady = await counters(agents);

    const drift = await driftStorm(driftDomains, driftBridges);
    const deleting = performance.now();
    await clean();
    const deleteSeconds = (performance.now() - deleting) / 1000;
    return {
      operator,
      n,
      objects: total,
      applySeconds: round(applySeconds),
      convergeSeconds: round(convergeSeconds),
      quietSeconds: round(quietSeconds),
      secondsPerObject: round(convergeSeconds / total),
      reconcilesPerObject: perObject("reconciles"),
      apiWritesPerObject: perObject("writes"),
      apiWritesByResource: delta(converged.writesByResource, before.writesByResource),
      reconcilesByController: delta(converged.reconcilesByController, before.reconcilesByController),
      hostMutationsPerObject: perObject("mutations"),
      agents: procs.map((p, i) => ({
        node: nodes[i]!.name,
        cpuSeconds: round(p.cpuSeconds - p.cpuBefore),
        idleRssMiB: round(idleRss[i]!),
        peakRssMiB: round(p.peakRssMiB),
        threadCpuSeconds: threadCpuSeconds[i],
        ...(operator === "kaktus" ? { heapUsedMiB: heapMiB[i] } : {}),
      })),
      eventLoopDelayMs: eventLoopMs,
      machineCpuSeconds,
      steady: {
        seconds: steadySeconds,
        resyncSeconds,
        reconciles: steady.reconciles - converged.reconciles,
        apiWrites: steady.writes - converged.writes,
        apiWritesByResource: delta(steady.writesByResource, converged.writesByResource),
        eventLoopDelayMs: steadyEventLoopMs,
        hostMutations: steady.mutations - converged.mutations,
      },
      drift,
      deleteSeconds: round(deleteSeconds),
    };
  } finally {
    await Promise.all(agents.map((a) => a.stop()));
  }
}

/**
 * Domains undefined and bridges deleted behind the operator's back, spread over both nodes: how long
 * from each removal until it is back (polled every 100 ms, so figures are ±100 ms).
 */
async function driftStorm(domains: number, bridges: number): Promise<Record<string, unknown>> {
  const victims = Array.from({ length: domains }, (_, i) => ({
    node: nodes[i % nodes.length]!,
    name: `${ns}_vm-${i}`,
  }));
  const links = Array.from({ length: bridges }, (_, i) => ({ node: nodes[i % nodes.length]!, name: linkOf(i) }));
  // Polled while the removals go on: a domain back before the last removal is timed too.
  const removedAt = new Map<string, number>();
  const removals = Promise.all([
    ...nodes.map(async (node) => {
      for (const v of victims.filter((v) => v.node === node)) {
        await virsh(node, "undefine", v.name);
        removedAt.set(v.name, performance.now());
      }
    }),
    ...links.map(async (l) => {
      await run("ip", ["-n", l.node.netns, "link", "del", l.name]);
      removedAt.set(l.name, performance.now());
    }),
  ]);
  const repaired = new Map<string, number>();
  const seen = (name: string, asked: number) => {
    const removed = removedAt.get(name);
    if (removed !== undefined && removed < asked && !repaired.has(name))
      repaired.set(name, performance.now() - removed);
  };
  const deadline = Date.now() + 120_000;
  while (repaired.size < victims.length + links.length && Date.now() < deadline) {
    for (const node of nodes) {
      const asked = performance.now();
      const [defined, present] = await Promise.all([
        virsh(node, "list", "--all", "--name"),
        run("ip", ["-n", node.netns, "-o", "link", "show", "type", "bridge"]),
      ]);
      const names = new Set(defined.stdout.split("\n").map((l) => l.trim()));
      for (const v of victims) if (v.node === node && names.has(v.name)) seen(v.name, asked);
      for (const l of links) if (l.node === node && present.stdout.includes(`: ${l.name}:`)) seen(l.name, asked);
    }
    await sleep(100);
  }
  await removals;
  const times = [...repaired.values()].sort((a, b) => a - b);
  return {
    domains,
    bridges,
    repaired: repaired.size,
    p50Ms: round(percentile(times, 50)),
    p99Ms: round(percentile(times, 99)),
    maxMs: round(times.at(-1) ?? NaN),
  };
}

/** The growth table: one row per run, time per object first. */
export function growthTable(rows: Record<string, unknown>[]): string {
  const cols = [
    "operator",
    "n",
    "convergeSeconds",
    "quietSeconds",
    "secondsPerObject",
    "ratioToLimit",
    "reconcilesPerObject",
    "apiWritesPerObject",
    "hostMutationsPerObject",
    "deleteSeconds",
  ];
  const cell = (v: unknown) => String(v ?? "").padStart(12);
  return [cols.map(cell).join(" "), ...rows.map((r) => cols.map((c) => cell(r[c])).join(" "))].join("\n");
}
