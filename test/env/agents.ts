import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cephLibvirtKeyringPath } from "./ceph.js";
import { agentKubeconfigPath, ensureAgentKubeconfig } from "./kube.js";
import { cephConfPath, repoRoot, type LabNode } from "./paths.js";
import { probeGuestDir } from "./probe-guest.js";
import { LabError, logTail, runningPid, startDaemon, stopDaemon, waitFor, type Daemon } from "./proc.js";

export interface AgentOptions {
  /** /healthz, /readyz and /metrics on 127.0.0.1:PORT inside the lab. */
  metricsPort: number;
  resyncSeconds?: number;
  leaseDurationSeconds?: number;
  logLevel?: string;
  /** Extra flags (for example a forced --accelerator). */
  args?: string[];
  /** Extra environment variables. */
  env?: Record<string, string>;
  /**
   * "auto": the agent probes its node as on a host. Unset: the accelerator this lab's first auto
   * probe of the node chose, forced by flag (a probe of a node whose KVM is broken takes ~13 s,
   * and most tests start agents many times); an unknown node is probed.
   */
  accelerator?: "auto";
  /** Run the compiled build (`npm run build`, dist/) as a DaemonSet does, not the sources through tsx. */
  compiled?: boolean;
  /** Flags for node itself (--cpu-prof is refused in NODE_OPTIONS). */
  nodeArgs?: string[];
}

/** The agent's command line (after `node`) for one lab node. */
export function labAgentArgs(node: LabNode, opts: AgentOptions): string[] {
  return [
    ...(opts.nodeArgs ?? []),
    ...(opts.compiled ? [join(repoRoot, "dist/main.js")] : ["--import", "tsx", join(repoRoot, "src/main.ts")]),
    ...labAgentFlags(node, opts),
  ];
}

/** The agent's flags for one lab node: every path they name is under the lab's folder or cache. */
export function labAgentFlags(node: LabNode, opts: AgentOptions): string[] {
  return [
    `--node=${node.name}`,
    `--kubeconfig=${agentKubeconfigPath(node.name)}`,
    `--libvirt-uri=${node.libvirtUri}`,
    `--ceph-conf=${cephConfPath}`,
    "--ceph-user=libvirt",
    `--ceph-keyring=${cephLibvirtKeyringPath}`,
    `--netns=${node.netns}`,
    `--state-dir=${join(node.dir, "agent")}`,
    `--metrics-address=127.0.0.1:${opts.metricsPort}`,
    `--resync=${opts.resyncSeconds ?? 30}`,
    `--lease-duration=${opts.leaseDurationSeconds ?? 5}`,
    `--log-level=${opts.logLevel ?? "info"}`,
    `--probe-guest=${probeGuestDir()}`,
    ...(opts.args ?? []),
  ];
}

/**
 * The operator's agent for one lab node, run as a separate process exactly as on a host (src/main.ts
 * through tsx), pointed at the lab: its libvirtd socket, the lab Ceph with client.libvirt, and the
 * node's network namespace for bridges. Agents run in the lab namespace (127.0.0.1 reaches the
 * apiserver and Ceph); node B's bridges are reached with `ip -n`.
 */
export function labAgent(node: LabNode, opts: AgentOptions) {
  const daemon: Daemon = {
    name: `agent-${node.name}`,
    comm: "node",
    cmd: process.execPath,
    args: labAgentArgs(node, opts),
    env: { ...process.env, NODE_OPTIONS: "", ...opts.env },
  };
  const agent = agentProcess(node, opts, daemon);
  const remembered = join(node.dir, "accelerator");
  return {
    ...agent,
    async start(): Promise<void> {
      const known = opts.accelerator === undefined && existsSync(remembered) && readFileSync(remembered, "utf8");
      const forced = known ? [`--accelerator=${known}`] : [];
      daemon.args = labAgentArgs(node, { ...opts, args: [...forced, ...(opts.args ?? [])] });
      await ensureAgentKubeconfig();
      await agent.start();
      if (known || opts.accelerator !== undefined) return;
      const { text } = await agent.get("/metrics");
      const chosen = /^kaktus_node_accelerator_info\{[^}]*accelerator="(kvm|tcg)"[^}]*\} 1$/m.exec(text)?.[1];
      if (chosen) writeFileSync(remembered, chosen);
    },
  };
}

/** Start, stop, crash and read the metrics of an agent-like daemon (the agent, or the bench's Go peer). */
export function agentProcess(node: LabNode, opts: Pick<AgentOptions, "metricsPort">, daemon: Daemon) {
  const url = (path: string) => `http://127.0.0.1:${opts.metricsPort}${path}`;
  const get = async (path: string) => {
    const res = await fetch(url(path), { signal: AbortSignal.timeout(5_000) });
    return { status: res.status, text: await res.text() };
  };
  return {
    name: daemon.name,
    node,
    pid: () => runningPid(daemon),
    async start(): Promise<void> {
      if (runningPid(daemon)) return;
      mkdirSync(join(node.dir, "agent"), { recursive: true });
      startDaemon(daemon);
      const outcome = await waitFor(
        `${daemon.name} ready`,
        async () => {
          if (!runningPid(daemon)) return "exited";
          return (await get("/readyz").catch(() => undefined))?.status === 200 ? "ready" : undefined;
        },
        { timeoutMs: 60_000 },
      );
      if (outcome === "exited") throw new LabError(`${daemon.name} exited:\n${logTail(daemon.name, 30)}`);
    },
    /** SIGTERM (graceful: reconciles finish, the lease is released), then SIGKILL after the grace. */
    stop: (graceMs = 30_000) => stopDaemon(daemon, graceMs),
    /** SIGKILL at once: a crash. */
    kill(): void {
      const pid = runningPid(daemon);
      if (pid) process.kill(pid, "SIGKILL");
    },
    get,
    /** One metric's value summed over the series whose labels contain all of `labels`. */
    async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
      const { text } = await get("/metrics");
      let sum = 0;
      for (const line of text.split("\n")) {
        const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$/.exec(line);
        if (!m || m[1] !== name) continue;
        const set = m[2] ?? "";
        if (Object.entries(labels).every(([k, v]) => set.includes(`${k}="${v}"`))) sum += Number(m[3]);
      }
      return sum;
    },
    logTail: (lines = 40) => logTail(daemon.name, lines),
  };
}

export type LabAgent = ReturnType<typeof labAgent>;
