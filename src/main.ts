import * as k8s from "@kubernetes/client-node";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { isIP } from "node:net";
import { parseArgs } from "node:util";
import { parse as parseYaml } from "yaml";
import { Agent, type AgentConfig } from "./agent.js";
import type { LabelSelector } from "./controllers/selector.js";
import type { PoolPolicy } from "./controllers/volume.js";
import { build } from "./build.js";
import { ProbeError } from "./host/accel/probe.js";
import { parseMonHost } from "./host/rbd/monitors.js";
import { rootLogger } from "./log.js";
import { reuseConnections } from "./runtime/kubeconfig.js";

const usage = `kaktus-operator: the Kaktus node agent (reconciles VirtualMachines, Volumes and Bridges)

Every flag can also be given as an environment variable (shown in brackets).
  --node NAME             Kubernetes Node this agent runs for [KAKTUS_NODE, else NODE_NAME]
  --kubeconfig PATH       kubeconfig file [KUBECONFIG]; omitted: in-cluster, else ~/.kube/config
  --libvirt-uri URI       [KAKTUS_LIBVIRT_URI] default qemu:///system
  --ceph-conf PATH        [CEPH_CONF] default /etc/ceph/ceph.conf
  --ceph-user NAME        cephx user, without "client." [KAKTUS_CEPH_USER] default libvirt
  --ceph-keyring PATH     [KAKTUS_CEPH_KEYRING] default /etc/ceph/ceph.client.USER.keyring
  --pools LIST            pools Volumes may live in [KAKTUS_POOLS] default rbd
  --clone-pools LIST      pools images may be cloned from [KAKTUS_CLONE_POOLS] default templates
  --tenant-pools PATH     YAML list of {namespaceSelector, pools, clonePools}: the namespaces a rule
                          selects (first match) use its pools instead [KAKTUS_TENANT_POOLS]
  --console-listen WHERE  where consoles with a password listen: socket, or an address of the node
                          (QEMU listens there on a TCP port) [KAKTUS_CONSOLE_LISTEN] default socket;
                          a console without a password is always a UNIX socket (root only)
  --netns NAME            network namespace of the node's bridges (tests) [KAKTUS_NETNS]
  --state-dir PATH        cloud-init seed images and probe files; QEMU must read it [KAKTUS_STATE_DIR]
                          default /var/lib/kaktus-operator
  --accelerator MODE      auto, kvm or tcg [KAKTUS_ACCELERATOR] default auto: KVM only where a probe shows
                          that it starts guests and runs real guest code, else TCG
  --cpu-model MODEL       default CPU of VMs that name none: host-passthrough, host-model or a libvirt
                          model [KAKTUS_CPU_MODEL] default: the best that the probe finds working
  --probe-guest DIR       the probe guest (vmlinuz, initrd.img) booted to check KVM [KAKTUS_PROBE_GUEST]
                          default /usr/lib/kaktus-operator/probe-guest
  --workers N             concurrent reconciles per controller [KAKTUS_WORKERS] default 4
  --host-workers N        threads making libvirt calls, and threads making RBD calls, each with its
                          own connection [KAKTUS_HOST_WORKERS] default 1
  --resync SECONDS        drift check period for converged objects [KAKTUS_RESYNC] default 300
  --sync-period SECONDS   every cached object is queued again this often, even one whose
                          reconcile gave up [KAKTUS_SYNC_PERIOD] default 3600
  --lease-namespace NS    namespace of the Volume controller's Lease [KAKTUS_LEASE_NAMESPACE] default kaktus-system
  --lease-duration S      [KAKTUS_LEASE_DURATION] default 15
  --metrics-address A     /healthz, /readyz, /metrics [KAKTUS_METRICS_ADDRESS] default 127.0.0.1:9464
  --log-level LEVEL       [KAKTUS_LOG_LEVEL] default info
  --version               print the version and exit
`;

const options = {
  node: { type: "string", env: "KAKTUS_NODE" },
  kubeconfig: { type: "string", env: "KUBECONFIG" },
  "libvirt-uri": { type: "string", env: "KAKTUS_LIBVIRT_URI", default: "qemu:///system" },
  "ceph-conf": { type: "string", env: "CEPH_CONF", default: "/etc/ceph/ceph.conf" },
  "ceph-user": { type: "string", env: "KAKTUS_CEPH_USER", default: "libvirt" },
  "ceph-keyring": { type: "string", env: "KAKTUS_CEPH_KEYRING" },
  pools: { type: "string", env: "KAKTUS_POOLS", default: "rbd" },
  "clone-pools": { type: "string", env: "KAKTUS_CLONE_POOLS", default: "templates" },
  "tenant-pools": { type: "string", env: "KAKTUS_TENANT_POOLS" },
  "console-listen": { type: "string", env: "KAKTUS_CONSOLE_LISTEN", default: "socket" },
  netns: { type: "string", env: "KAKTUS_NETNS" },
  "state-dir": { type: "string", env: "KAKTUS_STATE_DIR", default: "/var/lib/kaktus-operator" },
  accelerator: { type: "string", env: "KAKTUS_ACCELERATOR", default: "auto" },
  "cpu-model": { type: "string", env: "KAKTUS_CPU_MODEL" },
  "probe-guest": { type: "string", env: "KAKTUS_PROBE_GUEST", default: "/usr/lib/kaktus-operator/probe-guest" },
  workers: { type: "string", env: "KAKTUS_WORKERS", default: "4" },
  "host-workers": { type: "string", env: "KAKTUS_HOST_WORKERS", default: "1" },
  resync: { type: "string", env: "KAKTUS_RESYNC", default: "300" },
  "sync-period": { type: "string", env: "KAKTUS_SYNC_PERIOD", default: "3600" },
  "lease-namespace": { type: "string", env: "KAKTUS_LEASE_NAMESPACE", default: "kaktus-system" },
  "lease-duration": { type: "string", env: "KAKTUS_LEASE_DURATION", default: "15" },
  "metrics-address": { type: "string", env: "KAKTUS_METRICS_ADDRESS", default: "127.0.0.1:9464" },
  "log-level": { type: "string", env: "KAKTUS_LOG_LEVEL", default: "info" },
  help: { type: "boolean", env: "" },
  version: { type: "boolean", env: "" },
} as const;

type Flags = { -readonly [K in keyof typeof options]?: string };

/** Flags win over environment variables, which win over defaults. */
function readFlags(argv: string[]): Flags {
  const { values } = parseArgs({
    args: argv,
    options: Object.fromEntries(Object.entries(options).map(([k, o]) => [k, { type: o.type }])),
    strict: true,
  });
  if (values.help) {
    process.stdout.write(usage);
    process.exit(0);
  }
  if (values.version) {
    process.stdout.write(`kaktus-operator ${build.version} (revision ${build.revision}, Node.js ${build.node})\n`);
    process.exit(0);
  }
  const flags: Flags = {};
  for (const [name, o] of Object.entries(options) as [keyof typeof options, (typeof options)[keyof typeof options]][]) {
    const value = (values[name] as string | undefined) ?? (o.env ? process.env[o.env] : undefined);
    const fallback = "default" in o ? o.default : undefined;
    if (value !== undefined || fallback !== undefined) flags[name] = value ?? fallback;
  }
  flags.node ??= process.env.NODE_NAME;
  return flags;
}

const positiveInt = (name: string, value: string | undefined): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer, not ${value}`);
  return n;
};
const list = (value: string | undefined) =>
  (value ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);

function monitorsFrom(confPath: string): { host: string; port: number }[] {
  const conf = readFileSync(confPath, "utf8");
  const line = /^\s*mon[ _]host\s*=\s*(.+)$/m.exec(conf)?.[1];
  const monitors = line ? parseMonHost(line) : [];
  if (!monitors.length) throw new Error(`${confPath} has no mon_host the agent can read`);
  return monitors;
}

/** "socket", or an IP address (what QEMU can listen on; never a name that resolves elsewhere later). */
function consoleListen(value: string): string {
  if (value === "socket" || isIP(value)) return value;
  throw new Error(`--console-listen must be socket or an IP address, not ${value}`);
}

/** The tenant pool rules file: a bad one stops the agent at start, saying where. */
function tenantPools(path: string): NonNullable<PoolPolicy["tenants"]> {
  const rules: unknown = parseYaml(readFileSync(path, "utf8"));
  const names = (v: unknown) =>
    Array.isArray(v) && v.every((p) => typeof p === "string" && /^[A-Za-z0-9._-]+$/.test(p));
  if (!Array.isArray(rules))
    throw new Error(`${path}: a YAML list of {namespaceSelector, pools, clonePools} is expected`);
  return rules.map((r: Record<string, unknown>, i) => {
    const selector = r?.namespaceSelector;
    if (typeof selector !== "object" || selector === null || !names(r.pools) || !names(r.clonePools ?? []))
      throw new Error(
        `${path}: rule ${i + 1} needs namespaceSelector (a label selector), pools and clonePools (pool names)`,
      );
    return {
      namespaceSelector: selector as LabelSelector,
      pools: r.pools as string[],
      clonePools: (r.clonePools ?? []) as string[],
    };
  });
}

function configFrom(flags: Flags): AgentConfig & { metricsAddress: string } {
  if (!flags.node) throw new Error("--node (or NODE_NAME) is required: the Kubernetes Node this agent runs for");
  const user = flags["ceph-user"]!;
  if (!/^[A-Za-z0-9._-]+$/.test(user)) throw new Error(`--ceph-user ${user} is not a cephx user name`);
  const kc = reuseConnections(new k8s.KubeConfig());
  if (flags.kubeconfig) kc.loadFromFile(flags.kubeconfig);
  else kc.loadFromDefault();
  const confPath = flags["ceph-conf"]!;
  const accelerator = flags.accelerator!;
  if (accelerator !== "auto" && accelerator !== "kvm" && accelerator !== "tcg")
    throw new Error(`--accelerator must be auto, kvm or tcg, not ${accelerator}`);
  const cpuModel = flags["cpu-model"];
  if (cpuModel !== undefined && !/^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$/.test(cpuModel))
    throw new Error(`--cpu-model ${cpuModel} is not a CPU model name`);
  return {
    kubeConfig: kc,
    node: flags.node,
    libvirtUri: flags["libvirt-uri"]!,
    ceph: {
      confPath,
      user,
      keyringPath: flags["ceph-keyring"] ?? `/etc/ceph/ceph.client.${user}.keyring`,
      monitors: monitorsFrom(confPath),
    },
    ...(flags.netns ? { netns: flags.netns } : {}),
    stateDir: flags["state-dir"]!,
    workers: positiveInt("workers", flags.workers),
    hostWorkers: positiveInt("host-workers", flags["host-workers"]),
    resyncSeconds: positiveInt("resync", flags.resync),
    syncPeriodSeconds: positiveInt("sync-period", flags["sync-period"]),
    pools: {
      pools: list(flags.pools),
      clonePools: list(flags["clone-pools"]),
      ...(flags["tenant-pools"] ? { tenants: tenantPools(flags["tenant-pools"]) } : {}),
    },
    lease: {
      namespace: flags["lease-namespace"]!,
      name: "kaktus-operator-volumes",
      durationSeconds: positiveInt("lease-duration", flags["lease-duration"]),
    },
    probe: { accelerator, ...(cpuModel ? { cpuModel } : {}), guestDir: flags["probe-guest"]! },
    metricsAddress: flags["metrics-address"]!,
    consoleListen: consoleListen(flags["console-listen"]!),
  };
}

/** The agent's configuration from its command line and environment. */
export function agentConfig(argv: string[]): ReturnType<typeof configFrom> {
  const flags = readFlags(argv);
  rootLogger.level = flags["log-level"] ?? "info";
  return configFrom(flags);
}

async function main(): Promise<void> {
  const config = agentConfig(process.argv.slice(2));
  const agent = new Agent(config);
  let stopping = false;

  const [host, port] = splitAddress(config.metricsAddress);
  const server = createServer((req, res) => {
    const reply = (code: number, body: string, type = "text/plain") => {
      res.writeHead(code, { "content-type": type });
      res.end(body);
    };
    if (req.url === "/healthz") return reply(stopping ? 503 : 200, stopping ? "stopping\n" : "ok\n");
    if (req.url === "/readyz") return reply(agent.ready && !stopping ? 200 : 503, agent.ready ? "ok\n" : "not ready\n");
    if (req.url === "/metrics")
      return void agent.metrics.registry.metrics().then(
        (text) => reply(200, text, agent.metrics.registry.contentType),
        (err: Error) => reply(500, err.message),
      );
    reply(404, "not found\n");
  });
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(port, host, resolve)).catch(
    async (err: unknown) => {
      await agent.stop(); // its host threads are closed before the process exits
      throw err;
    },
  );
  rootLogger.info({ node: config.node, metrics: config.metricsAddress, libvirt: config.libvirtUri }, "starting");

  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    rootLogger.info({ signal }, "stopping: finishing reconciles in flight, releasing the lease");
    const force = setTimeout(() => {
      rootLogger.error("graceful stop took too long; exiting");
      process.exit(1);
    }, 60_000);
    force.unref();
    agent
      .stop()
      .then(() => server.close())
      .then(
        () => process.exit(0),
        (err: unknown) => {
          rootLogger.error({ err }, "stop failed");
          process.exit(1);
        },
      );
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
  await agent.start();
}

function splitAddress(address: string): [string, number] {
  const i = address.lastIndexOf(":");
  const port = Number(address.slice(i + 1));
  if (i < 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad address ${address}`);
  return [address.slice(0, i).replace(/^\[|\]$/g, "") || "127.0.0.1", port];
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith("/main.ts")) {
  main().catch((err: unknown) => {
    // A flag that cannot work on this node (a forced accelerator or CPU) is a configuration error, said once.
    if (err instanceof ProbeError) {
      rootLogger.fatal({ steps: err.steps }, `cannot start: ${err.message}`);
      process.exit(2);
    }
    rootLogger.fatal({ err }, (err as Error).message);
    process.exit(1);
  });
}
