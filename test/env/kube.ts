import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { join } from "node:path";
import { stringify } from "yaml";
import { cacheDir, kubeconfigPath, kubeDir, labDir, labVethAddress, logDir, nodes, repoRoot } from "./paths.js";
import { LabError, run, runningPid, startDaemon, stopDaemon, waitDaemonReady, type Daemon } from "./proc.js";

/**
 * A real control plane for tests: etcd, kube-apiserver and the kube-controller-manager (namespace
 * deletion and garbage collection need it), all built from Go modules at the versions pinned in
 * test/env/kube/go.mod, and kubectl from the same release.
 */
const goModuleDir = join(repoRoot, "test/env/kube");
const tools = {
  "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
  "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
  kubectl: "k8s.io/kubernetes/cmd/kubectl",
  etcd: "./etcd",
} as const;

export const apiserverPort = 6443;
const etcdClientUrl = "http://127.0.0.1:2379";

/**
 * The release's version stamped into the binaries, as Kubernetes' own build does: without it the
 * apiserver reports v0.0.0-master+$Format:%H$, which kubectl and version-checking clients cannot parse.
 */
function versionLdflags(): string {
  const version = /^\s*k8s\.io\/kubernetes (v(\d+)\.(\d+)\.\d+)/m.exec(
    readFileSync(join(goModuleDir, "go.mod"), "utf8"),
  );
  if (!version) throw new LabError("test/env/kube/go.mod does not require k8s.io/kubernetes");
  const [, gitVersion, major, minor] = version;
  const fields = { gitVersion, gitMajor: major, gitMinor: minor, gitTreeState: "clean" };
  return ["k8s.io/component-base/version", "k8s.io/client-go/pkg/version"]
    .flatMap((pkg) => Object.entries(fields).map(([k, v]) => `-X ${pkg}.${k}=${v}`))
    .join(" ");
}

/** The folder of built binaries, keyed by the Go module's inputs and flags so a version bump rebuilds. */
export function kubeBinDir(): string {
  const hash = createHash("sha256");
  for (const f of ["go.mod", "go.sum", "etcd/main.go"]) hash.update(readFileSync(join(goModuleDir, f)));
  hash.update(versionLdflags());
  return join(cacheDir, `kube-${hash.digest("hex").slice(0, 12)}`);
}

export const kubectlPath = () => join(kubeBinDir(), "kubectl");

/** Builds the binaries once (minutes cold, seconds with Go's build cache), then reuses them. */
export async function buildKubeBinaries(): Promise<string> {
  const binDir = kubeBinDir();
  if (Object.keys(tools).every((t) => existsSync(join(binDir, t)))) return binDir;
  const tmp = `${binDir}.tmp-${process.pid}`;
  mkdirSync(tmp, { recursive: true });
  const started = Date.now();
  const ldflags = `-s -w ${versionLdflags()}`;
  await run(
    "go",
    ["-C", goModuleDir, "build", "-trimpath", `-ldflags=${ldflags}`, "-o", tmp, ...Object.values(tools)],
    {
      timeoutMs: 40 * 60_000,
    },
  );
  rmSync(binDir, { recursive: true, force: true });
  renameSync(tmp, binDir);
  console.error(
    `[lab] built kube-apiserver, kube-controller-manager, kubectl, etcd in ${(Date.now() - started) / 1000}s`,
  );
  return binDir;
}

const certs = {
  ca: join(kubeDir, "ca"),
  apiserver: join(kubeDir, "apiserver"),
  admin: join(kubeDir, "admin"),
  controllerManager: join(kubeDir, "controller-manager"),
  serviceAccount: join(kubeDir, "sa"),
};

const openssl = (args: string[]) => run("openssl", args);

async function issueCert(path: string, subject: string, extensions: string[]): Promise<void> {
  await openssl([
    "req",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    `${path}.key`,
    "-out",
    `${path}.csr`,
    "-subj",
    subject,
    ...extensions.flatMap((e) => ["-addext", e]),
  ]);
  await openssl([
    "x509",
    "-req",
    "-in",
    `${path}.csr`,
    "-CA",
    `${certs.ca}.crt`,
    "-CAkey",
    `${certs.ca}.key`,
    "-CAcreateserial",
    "-days",
    "3650",
    "-copy_extensions",
    "copyall",
    "-out",
    `${path}.crt`,
  ]);
  rmSync(`${path}.csr`);
}

/** A self-signed CA, a serving cert for the lab addresses, client certs, the service-account key. */
async function ensureCerts(): Promise<void> {
  if (existsSync(`${certs.admin}.crt`)) return;
  mkdirSync(kubeDir, { recursive: true });
  await openssl([
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-days",
    "3650",
    "-keyout",
    `${certs.ca}.key`,
    "-out",
    `${certs.ca}.crt`,
    "-subj",
    "/CN=kaktus-lab-ca",
  ]);
  await issueCert(certs.apiserver, "/CN=kube-apiserver", [
    `subjectAltName=IP:127.0.0.1,IP:${labVethAddress},IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc`,
    "extendedKeyUsage=serverAuth",
  ]);
  // With one identity for all its controllers (no per-controller service accounts), the
  // controller-manager needs the rights of them all: a lab-only shortcut.
  await issueCert(certs.controllerManager, "/O=system:masters/CN=system:kube-controller-manager", [
    "extendedKeyUsage=clientAuth",
  ]);
  await openssl([
    "genpkey",
    "-algorithm",
    "RSA",
    "-pkeyopt",
    "rsa_keygen_bits:2048",
    "-out",
    `${certs.serviceAccount}.key`,
  ]);
  await openssl(["pkey", "-in", `${certs.serviceAccount}.key`, "-pubout", "-out", `${certs.serviceAccount}.pub`]);
  // Written last: its presence means the whole set exists.
  await issueCert(certs.admin, "/O=system:masters/CN=kaktus-lab-admin", ["extendedKeyUsage=clientAuth"]);
}

const b64 = (path: string) => readFileSync(path).toString("base64");

/** A kubeconfig for the lab's apiserver; `client`: a client cert's path (no suffix), or a bearer token. */
function writeKubeconfig(path: string, server: string, client: string | { token: string }): void {
  const config = {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "kaktus-lab", cluster: { server, "certificate-authority-data": b64(`${certs.ca}.crt`) } }],
    users: [
      {
        name: "user",
        user:
          typeof client === "string"
            ? { "client-certificate-data": b64(`${client}.crt`), "client-key-data": b64(`${client}.key`) }
            : { token: client.token },
      },
    ],
    contexts: [{ name: "kaktus-lab", context: { cluster: "kaktus-lab", user: "user" } }],
    "current-context": "kaktus-lab",
  };
  writeFileSync(path, stringify(config), { mode: 0o600 });
}

/** The kubeconfig that node B's agents use: the same admin identity, the lab's veth address. */
export const nodeBKubeconfigPath = join(kubeDir, "admin-node-b.kubeconfig");
const controllerManagerKubeconfig = join(kubeDir, "controller-manager.kubeconfig");

function daemons(binDir: string): Record<"etcd" | "apiserver" | "controllerManager", Daemon> {
  return {
    etcd: {
      name: "etcd",
      comm: "etcd",
      cmd: join(binDir, "etcd"),
      args: [
        "--name=lab",
        `--data-dir=${join(labDir, "etcd")}`,
        `--listen-client-urls=${etcdClientUrl}`,
        `--advertise-client-urls=${etcdClientUrl}`,
        "--listen-peer-urls=http://127.0.0.1:2380",
        "--initial-advertise-peer-urls=http://127.0.0.1:2380",
        "--initial-cluster=lab=http://127.0.0.1:2380",
        "--listen-metrics-urls=http://127.0.0.1:2381",
        // Test data only: fsync buys nothing here and costs seconds per run.
        "--unsafe-no-fsync",
        "--log-level=warn",
      ],
    },
    apiserver: {
      name: "kube-apiserver",
      comm: "kube-apiserver",
      cmd: join(binDir, "kube-apiserver"),
      args: [
        `--etcd-servers=${etcdClientUrl}`,
        // 0.0.0.0 of the lab namespace only: its loopback and the veth towards node B.
        "--bind-address=0.0.0.0",
        `--secure-port=${apiserverPort}`,
        `--advertise-address=${labVethAddress}`,
        `--tls-cert-file=${certs.apiserver}.crt`,
        `--tls-private-key-file=${certs.apiserver}.key`,
        `--client-ca-file=${certs.ca}.crt`,
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        `--service-account-key-file=${certs.serviceAccount}.pub`,
        `--service-account-signing-key-file=${certs.serviceAccount}.key`,
        "--service-cluster-ip-range=10.96.0.0/24",
        "--authorization-mode=RBAC",
        "--allow-privileged=true",
        "--profiling=false",
        "--event-ttl=1h",
        // What the agents' ServiceAccount does, request by request (the RBAC test reads it).
        `--audit-policy-file=${auditPolicyPath}`,
        `--audit-log-path=${auditLogPath}`,
        "--audit-log-maxsize=200",
        "--audit-log-maxbackup=1",
        "--v=1",
      ],
    },
    controllerManager: {
      name: "kube-controller-manager",
      comm: "kube-controller-manager",
      cmd: join(binDir, "kube-controller-manager"),
      args: [
        `--kubeconfig=${controllerManagerKubeconfig}`,
        `--authentication-kubeconfig=${controllerManagerKubeconfig}`,
        `--authorization-kubeconfig=${controllerManagerKubeconfig}`,
        // Only what the operator's users rely on: namespace deletion, owner-reference GC, and the
        // object counts of ResourceQuotas (count/virtualmachines.kaktus.kowabunga.cloud).
        "--controllers=namespace-controller,garbage-collector-controller,resourcequota-controller",
        // A quota made before the controller has discovered a kind it counts (discovery runs every
        // 30 s, and the lab installs the CRDs just before the tests) is counted only at the next full
        // resync: 5 min by default, longer than a test waits.
        "--resource-quota-sync-period=10s",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        "--secure-port=10257",
        "--v=1",
      ],
    },
  };
}

/** GET over TLS with the admin client cert (fetch cannot present one). Resolves the status and body. */
export function apiGet(path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolvePromise, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port: apiserverPort,
        path,
        ca: readFileSync(`${certs.ca}.crt`),
        cert: readFileSync(`${certs.admin}.crt`),
        key: readFileSync(`${certs.admin}.key`),
        timeout: 5_000,
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => (body += chunk));
        res.on("end", () => resolvePromise({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end();
  });
}

async function etcdHealthy(): Promise<boolean> {
  const res = await fetch(`${etcdClientUrl}/health`, { signal: AbortSignal.timeout(2_000) });
  return res.ok && ((await res.json()) as { health?: string }).health === "true";
}

const apiserverReady = async () => (await apiGet("/readyz")).status === 200;

export const controlPlane = {
  async healthy(): Promise<boolean> {
    const d = daemons(kubeBinDir());
    if (![d.etcd, d.apiserver, d.controllerManager].every((x) => runningPid(x) !== undefined)) return false;
    return (await etcdHealthy().catch(() => false)) && (await apiserverReady().catch(() => false));
  },

  async start(): Promise<void> {
    const binDir = await buildKubeBinaries();
    await ensureCerts();
    writeKubeconfig(kubeconfigPath, `https://127.0.0.1:${apiserverPort}`, certs.admin);
    writeKubeconfig(nodeBKubeconfigPath, `https://${labVethAddress}:${apiserverPort}`, certs.admin);
    writeKubeconfig(controllerManagerKubeconfig, `https://127.0.0.1:${apiserverPort}`, certs.controllerManager);
    writeFileSync(auditPolicyPath, stringify(auditPolicy));
    const d = daemons(binDir);
    await this.startEtcd(d.etcd);
    await this.startApiserver(d.apiserver);
    if (runningPid(d.controllerManager) === undefined) startDaemon(d.controllerManager);
  },

  async startEtcd(etcd: Daemon = daemons(kubeBinDir()).etcd): Promise<void> {
    if (runningPid(etcd) === undefined) startDaemon(etcd);
    await waitDaemonReady(etcd, "etcd", etcdHealthy, { timeoutMs: 30_000 });
  },

  async startApiserver(apiserver: Daemon = daemons(kubeBinDir()).apiserver): Promise<void> {
    if (runningPid(apiserver) === undefined) startDaemon(apiserver);
    await waitDaemonReady(apiserver, "kube-apiserver /readyz", apiserverReady, { timeoutMs: 90_000, intervalMs: 500 });
  },

  /** Stops one piece (the reliability tests restart the apiserver alone) or, by default, all. */
  async stop(only?: "etcd" | "apiserver" | "controllerManager"): Promise<void> {
    const d = daemons(kubeBinDir());
    const order = only ? [d[only]] : [d.controllerManager, d.apiserver, d.etcd];
    for (const daemon of order) await stopDaemon(daemon);
  },
};

/** The agents' identity in the lab: the bundle's ServiceAccount. */
export const agentUser = "system:serviceaccount:kaktus-system:kaktus-operator";
const auditPolicyPath = join(kubeDir, "audit-policy.yaml");
export const auditLogPath = join(logDir, "audit-agents.log");
const auditPolicy = {
  apiVersion: "audit.k8s.io/v1",
  kind: "Policy",
  omitStages: ["RequestReceived"],
  rules: [{ level: "Metadata", users: [agentUser] }, { level: "None" }],
};

/**
 * Each node's agent's kubeconfig: the bundle's ServiceAccount, with the bundle's RBAC, never the
 * lab's admin; its token is bound to a Pod on that node, as a DaemonSet pod's projected token is,
 * so it names the node (which the bundle's node restriction policy checks).
 */
export const agentKubeconfigPath = (node: string) => join(kubeDir, `agent-${node}.kubeconfig`);
let agentIdentity: { at: number; done: Promise<void> } | undefined;

/** The stand-in for the agent's DaemonSet pod on a node: no kubelet runs it, its token is all it is for. */
const agentPod = (node: string) => ({
  apiVersion: "v1",
  kind: "Pod",
  metadata: { name: `kaktus-operator-${node}`, namespace: "kaktus-system" },
  spec: {
    nodeName: node,
    serviceAccountName: "kaktus-operator",
    // The lab's Nodes have no kubelet: tainted unreachable, they would see this pod evicted (and its tokens void).
    tolerations: [{ operator: "Exists" }],
    containers: [{ name: "agent", image: "kaktus-operator:lab" }],
  },
});

/**
 * Applies the bundle's ServiceAccount, RBAC and node restriction policy (manifests/base) to the lab
 * and writes each node's agent kubeconfig with a fresh token, at most once an hour per process:
 * every agent the tests start has exactly what a cluster install gives it, so a missing permission shows.
 */
export function ensureAgentKubeconfig(): Promise<void> {
  if (agentIdentity && Date.now() - agentIdentity.at < 3_600_000) return agentIdentity.done;
  const kubectl = (args: string[], input?: string) =>
    run(kubectlPath(), ["--kubeconfig", kubeconfigPath, ...args], input === undefined ? {} : { input });
  const done = (async () => {
    const apply = ["apply", "--server-side", "--force-conflicts", "--field-manager=kaktus-lab", "-n", "kaktus-system"];
    for (const file of ["rbac.yaml", "node-restriction.yaml"])
      await kubectl([...apply, "-f", join(repoRoot, "manifests/base", file)]);
    await kubectl(
      [...apply, "-f", "-"],
      JSON.stringify({ apiVersion: "v1", kind: "List", items: nodes.map((n) => agentPod(n.name)) }),
    );
    for (const node of nodes) {
      const { stdout } = await kubectl([
        "create",
        "token",
        "kaktus-operator",
        "-n",
        "kaktus-system",
        "--bound-object-kind=Pod",
        `--bound-object-name=kaktus-operator-${node.name}`,
        "--duration=24h",
      ]);
      writeKubeconfig(agentKubeconfigPath(node.name), `https://127.0.0.1:${apiserverPort}`, { token: stdout.trim() });
    }
  })();
  agentIdentity = { at: Date.now(), done };
  done.catch(() => (agentIdentity = undefined));
  return done;
}
