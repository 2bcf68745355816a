import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cephConfPath, cephDir, labVethAddress } from "./paths.js";
import { LabError, logTail, run, runningPid, startDaemon, stopDaemon, waitFor, type Daemon } from "./proc.js";

/**
 * A one-node Ceph cluster whose public network is the link between the node namespaces (as on a
 * real Kaktus cluster): the lab's side of the veth, reached from node B's namespace through it, so
 * both nodes' agents and QEMUs are Ceph clients, each with its own address. One mon, one memstore
 * OSD (no disk), one mgr
 * (PG statistics and health need it), cephx, pool size 1, an `rbd` pool, and a `client.libvirt`
 * user with RBD caps like the one Kaktus nodes give to QEMU. Recipe: ../shared/HOST-FACTS.md.
 */
export const cephPools = ["rbd", "templates"] as const;
export const cephLibvirtKeyringPath = join(cephDir, "client.libvirt.keyring");
const keyringPath = join(cephDir, "keyring");
/** The monitor as libvirt and QEMU name it (v1). */
export const cephMonitor = { host: labVethAddress, port: 6789 } as const;
const monAddrs = `[v2:${labVethAddress}:3300,v1:${labVethAddress}:6789]`;
// The OSD's RAM budget: copies of large Volumes (the safety tests) must not fill it.
const memstoreBytes = 4 * 2 ** 30;
// A killed client's watches (and so its exclusive locks) expire after this, not Ceph's 30 s: the
// safety tests kill agents in the middle of copies, and the next leader waits that long for them.
const watchTimeoutSeconds = 10;
/** What a made cluster must match to be kept: its addresses (in the monmap) and its OSD's settings. */
const recipe = `${monAddrs} memstore=${memstoreBytes} watch=${watchTimeoutSeconds}`;
const bootstrapMark = join(cephDir, "bootstrapped");
const madeByThisRecipe = () => existsSync(bootstrapMark) && readFileSync(bootstrapMark, "utf8").endsWith(recipe);

const cephEnv = { ...process.env, CEPH_CONF: cephConfPath };

const daemons: Daemon[] = [
  { name: "ceph-mon", comm: "ceph-mon", cmd: "ceph-mon", args: ["-f", "-c", cephConfPath, "-i", "a"] },
  { name: "ceph-osd", comm: "ceph-osd", cmd: "ceph-osd", args: ["-f", "-c", cephConfPath, "-i", "0"] },
  { name: "ceph-mgr", comm: "ceph-mgr", cmd: "ceph-mgr", args: ["-f", "-c", cephConfPath, "-i", "x"] },
];
const [mon, osd, mgr] = daemons as [Daemon, Daemon, Daemon];

/** Runs the `ceph` CLI as client.admin against the lab cluster, JSON out. */
export async function ceph<T = unknown>(...args: string[]): Promise<T> {
  const { stdout } = await run("ceph", ["--connect-timeout", "10", ...args, "--format", "json"], { env: cephEnv });
  return (stdout.trim() ? JSON.parse(stdout) : {}) as T;
}

/** Runs the `ceph` CLI as client.admin, plain text out (for commands whose JSON is followed by prose). */
export async function cephText(...args: string[]): Promise<string> {
  const { stdout, stderr } = await run("ceph", ["--connect-timeout", "10", ...args], { env: cephEnv });
  return `${stdout}\n${stderr}`;
}

/** Runs the `rbd` CLI as client.admin against the lab cluster. */
export async function rbd(...args: string[]): Promise<string> {
  return (await run("rbd", args, { env: cephEnv })).stdout;
}

/** The images of a pool. */
export const rbdImages = async (pool: string) => JSON.parse(await rbd("ls", "--format", "json", pool)) as string[];

function writeConf(fsid: string): void {
  const d = cephDir;
  writeFileSync(
    cephConfPath,
    `[global]
fsid = ${fsid}
mon_host = ${monAddrs}
mon_initial_members = a
public_addr = ${labVethAddress}
cluster_addr = ${labVethAddress}
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
auth_allow_insecure_global_id_reclaim = false
keyring = ${keyringPath}
osd_objectstore = memstore
# memstore writes its data to osd_data only on a clean umount, which fast shutdown skips:
# without this, an OSD restart comes back with no PGs.
osd_fast_shutdown = false
memstore_device_bytes = ${memstoreBytes}
osd_client_watch_timeout = ${watchTimeoutSeconds}
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
# The lab shares the machine's disk; its free share says nothing about the lab's health.
mon_data_avail_warn = 1
osd_crush_chooseleaf_type = 0
osd_pool_default_pg_autoscale_mode = off
run_dir = ${d}/run
pid_file = ${d}/run/$cluster-$name.pid
log_file = ${d}/log/$cluster-$name.log
mon_cluster_log_file = ${d}/log/cluster.log
crash_dir = ${d}/crash
mon_data = ${d}/mon/$cluster-$id
osd_data = ${d}/osd/$cluster-$id
mgr_data = ${d}/mgr/$cluster-$id
`,
  );
}

const authtool = (...args: string[]) => run("ceph-authtool", args);

/** First start only: keys, monmap, mon and OSD file systems. */
async function bootstrap(): Promise<void> {
  rmSync(cephDir, { recursive: true, force: true });
  for (const sub of ["run", "log", "crash", "mon/ceph-a", "osd/ceph-0", "mgr/ceph-x"]) {
    mkdirSync(join(cephDir, sub), { recursive: true });
  }
  const fsid = randomUUID();
  writeConf(fsid);
  // One keyring with every daemon's key and the admin's: the lab has a single trust domain.
  const entities: [string, Record<string, string>][] = [
    ["mon.", { mon: "allow *" }],
    ["client.admin", { mon: "allow *", osd: "allow *", mds: "allow *", mgr: "allow *" }],
    ["osd.0", { mon: "allow profile osd", mgr: "allow profile osd", osd: "allow *" }],
    ["mgr.x", { mon: "allow profile mgr", osd: "allow *", mds: "allow *" }],
  ];
  for (const [i, [name, caps]] of entities.entries()) {
    const capArgs = Object.entries(caps).flatMap(([service, cap]) => ["--cap", service, cap]);
    await authtool(...(i === 0 ? ["--create-keyring"] : []), keyringPath, "--gen-key", "-n", name, ...capArgs);
  }
  const monmap = join(cephDir, "monmap");
  await run("monmaptool", ["--create", "--fsid", fsid, "--addv", "a", monAddrs, monmap]);
  await run("ceph-mon", ["-c", cephConfPath, "--mkfs", "-i", "a", "--monmap", monmap, "--keyring", keyringPath]);
  startDaemon(mon);
  await waitMon();
  const osdUuid = randomUUID();
  await ceph("osd", "new", osdUuid, "0");
  await run("ceph-osd", ["-c", cephConfPath, "-i", "0", "--mkfs", "--osd-uuid", osdUuid]);
  startDaemon(osd);
  startDaemon(mgr);
  for (const pool of cephPools) {
    await ceph("osd", "pool", "create", pool, "8", "8", "replicated");
    await rbd("pool", "init", pool);
  }
  // The identity QEMU uses on Kaktus nodes: RBD only, the data pool rw, templates read-only.
  const [libvirt] = await ceph<{ key: string }[]>(
    "auth",
    "get-or-create",
    "client.libvirt",
    "mon",
    "profile rbd",
    "osd",
    "profile rbd pool=rbd, profile rbd-read-only pool=templates",
  );
  writeFileSync(cephLibvirtKeyringPath, `[client.libvirt]\n\tkey = ${libvirt?.key}\n`, { mode: 0o600 });
  writeFileSync(bootstrapMark, `${fsid} ${recipe}`);
}

const waitMon = () =>
  waitFor(
    "ceph-mon quorum",
    async () => ((await ceph<{ quorum_names?: string[] }>("quorum_status")).quorum_names?.length ? true : undefined),
    {
      timeoutMs: 30_000,
      intervalMs: 500,
    },
  );

interface CephStatus {
  health: { status: string; checks?: Record<string, { summary: { message: string } }> };
  pgmap: { num_pgs: number; pgs_by_state?: { state_name: string; count: number }[] };
  osdmap: { num_up_osds: number };
}

/** Healthy means what clients need: HEALTH_OK, the OSD up, and every PG active+clean. */
async function clusterReady(): Promise<string | undefined> {
  const s = await ceph<CephStatus>("status");
  const clean = s.pgmap.pgs_by_state?.find((p) => p.state_name === "active+clean")?.count ?? 0;
  const problem =
    s.health.status !== "HEALTH_OK"
      ? `${s.health.status}: ${Object.values(s.health.checks ?? {})
          .map((c) => c.summary.message)
          .join("; ")}`
      : s.osdmap.num_up_osds < 1
        ? "no OSD up"
        : s.pgmap.num_pgs === 0 || clean !== s.pgmap.num_pgs
          ? `${clean}/${s.pgmap.num_pgs} PGs active+clean`
          : undefined;
  if (problem) throw new Error(problem);
  return "ok";
}

export const cephCluster = {
  async healthy(): Promise<boolean> {
    if (!daemons.every((d) => runningPid(d) !== undefined) || !madeByThisRecipe()) return false;
    return (await clusterReady().catch(() => undefined)) !== undefined;
  },

  async start(): Promise<void> {
    try {
      // A cluster made by another recipe (an older lab) is made again: its monmap names its addresses.
      if (!madeByThisRecipe()) {
        for (const d of [osd, mgr, mon]) await stopDaemon(d, 20_000);
        await bootstrap();
      } else {
        for (const d of daemons) if (runningPid(d) === undefined) startDaemon(d);
        await waitMon();
      }
      await waitFor("ceph HEALTH_OK with all PGs active+clean", clusterReady, { timeoutMs: 90_000, intervalMs: 500 });
    } catch (err) {
      throw new LabError(
        `ceph did not come up: ${(err as Error).message}\n--- ceph-mon log ---\n${logTail("ceph-mon", 8)}\n--- ceph-osd log ---\n${logTail("ceph-osd", 8)}`,
      );
    }
  },

  /** OSD first, then mgr, then mon: the OSD would otherwise wait for the gone mon. */
  async stop(): Promise<void> {
    for (const d of [osd, mgr, mon]) await stopDaemon(d, 20_000);
  },
};
