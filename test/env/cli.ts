import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { deleteLabNetwork, ensureLabNetwork, insideLab } from "./netns.js";
import { buildKubeBinaries } from "./kube.js";
import { buildProbeGuest } from "./probe-guest.js";
import { buildTemplate } from "./template.js";
import { buildPeer } from "../../bench/peer.js";
import { ensureImage } from "../../image/build.js";
import { buildKahuna, buildKstatus } from "../support/kstatus.js";
import { down, status, up } from "./lab.js";
import { runLocal } from "./local.js";
import { kubeconfigPath, labDir, labNetns, nodes } from "./paths.js";
import { cephConfPath } from "./paths.js";

const usage = `usage: npm run lab -- <command>
  build     build (once) the kube-apiserver, kube-controller-manager, kubectl and etcd binaries,
            the probe guest the agents boot to check KVM, the Debian template image, the
            Go programs (kstatus, kahuna, the bench peer) and the agent's image (npm run image)
  up [COMPONENT...]    start the lab (control plane, Ceph, one libvirtd per node) and leave it running
  down [COMPONENT...]  stop the lab or some of its components (state is kept)
  status    say which components are healthy
  clean     stop everything, delete the lab's state and its network namespaces
  exec -- CMD [ARGS...]   run a command inside the lab (npm test uses this)
  local     start the lab, install the CRDs, apply examples/, run one agent per node and
            print the objects until Ctrl-C, then stop what was started`;

/**
 * Runs a program with our terminal and returns its exit code. SIGINT and SIGTERM are passed on to it
 * and do not stop us: the child decides when it is done (a Ctrl-C from a terminal reaches it twice).
 */
function runAttached(cmd: string, args: string[]): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { stdio: "inherit" });
    const forward = (sig: NodeJS.Signals) => child.kill(sig);
    process.on("SIGINT", forward).on("SIGTERM", forward);
    child.on("error", reject);
    child.on("exit", (code, signal) => resolvePromise(code ?? (signal ? 128 : 1)));
  });
}

function printEndpoints(): void {
  console.log(`lab is up in network namespace ${labNetns}
  KUBECONFIG=${kubeconfigPath}
  CEPH_CONF=${cephConfPath}
${nodes.map((n) => `  node ${n.name} (netns ${n.netns}): ${n.libvirtUri}`).join("\n")}`);
}

async function inside(command: string, args: string[]): Promise<number> {
  switch (command) {
    case "up":
      await up(args.length ? args : undefined);
      printEndpoints();
      return 0;
    case "status": {
      const s = await status();
      for (const [name, ok] of Object.entries(s)) console.log(`${ok ? "ok  " : "DOWN"}  ${name}`);
      return Object.values(s).every(Boolean) ? 0 : 1;
    }
    case "exec":
      if (!args.length) throw new Error(usage);
      return runAttached(args[0]!, args.slice(1));
    case "local":
      await runLocal(printEndpoints);
      return 0;
    default:
      throw new Error(usage);
  }
}

async function main(): Promise<number> {
  const [command = "", ...rest] = process.argv.slice(2);
  const args = rest[0] === "--" ? rest.slice(1) : rest;
  if (command === "build") {
    console.log(
      (
        await Promise.all([
          buildKubeBinaries(),
          buildProbeGuest(),
          buildTemplate(),
          buildKstatus(),
          buildKahuna(),
          buildPeer(),
          ensureImage(),
        ])
      ).join("\n"),
    );
    return 0;
  }
  if (command === "down" || command === "clean") {
    await down(command === "down" && args.length ? args : undefined);
    if (command === "clean") {
      await deleteLabNetwork();
      rmSync(labDir, { recursive: true, force: true });
    }
    return 0;
  }
  if (insideLab()) return inside(command, args);
  // Enter the lab: create its namespaces from the root namespace, then run this same command in it.
  await ensureLabNetwork();
  // The lab's own tests check they leave this (the machine's) namespace alone: tell them where it is.
  process.env.KAKTUS_HOST_NETNS = `/proc/${process.pid}/ns/net`;
  return runAttached("ip", [
    "netns",
    "exec",
    labNetns,
    process.execPath,
    ...process.execArgv,
    ...process.argv.slice(1),
  ]);
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
