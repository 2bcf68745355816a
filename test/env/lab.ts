import { execFileSync } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { join } from "node:path";
import { cephCluster } from "./ceph.js";
import { ensureFixtures } from "./fixtures.js";
import { controlPlane } from "./kube.js";
import { libvirtDaemon } from "./libvirt.js";
import { insideLab } from "./netns.js";
import { labNetns, nodes } from "./paths.js";
import { probeGuestBuilt } from "./probe-guest.js";
import { templateBuilt } from "./template.js";
import { LabError } from "./proc.js";

export * from "./paths.js";
export { ceph, cephText, cephMonitor, rbd, rbdImages, cephLibvirtKeyringPath, cephPools } from "./ceph.js";
export { linkNames } from "./netns.js";
// The typed components too: reliability tests stop and start pieces (the apiserver alone, libvirtd without its guests).
export { controlPlane, kubectlPath, nodeBKubeconfigPath } from "./kube.js";
export { libvirtDaemon, virsh } from "./libvirt.js";

interface Component {
  healthy(): Promise<boolean>;
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** Everything the lab runs, in start order; stopped in reverse. Each can be stopped on its own. */
export const components: Record<string, Component> = {
  "control-plane": controlPlane,
  ceph: cephCluster,
  ...Object.fromEntries(nodes.map((n) => [`libvirtd-${n.name}`, libvirtDaemon(n)])),
};

const hostCommands = [
  "ip",
  "unshare",
  "openssl",
  "go",
  "ceph-mon",
  "ceph-osd",
  "ceph-mgr",
  "ceph",
  "rbd",
  "monmaptool",
  "ceph-authtool",
  "libvirtd",
  "virtlogd",
  "virtlockd",
  "virsh",
  "qemu-system-x86_64",
  "gcc",
  "cpio",
  "dpkg-deb",
];

/** What the machine must have before anything starts; says how to get it instead of failing later. */
function checkHost(): void {
  const path = (process.env.PATH ?? "").split(":").concat("/usr/sbin", "/sbin");
  const has = (cmd: string) =>
    path.some((dir) => {
      try {
        accessSync(join(dir, cmd), constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
  const missing = hostCommands.filter((c) => !has(c));
  try {
    execFileSync("id", ["libvirt-qemu"], { stdio: "ignore" });
  } catch {
    missing.push("user libvirt-qemu");
  }
  if (missing.length) throw new LabError(`the lab needs ${missing.join(", ")}: run \`bash .ci/setup\` once`);
  if (process.getuid?.() !== 0) throw new LabError("the lab needs root (network and mount namespaces)");
}

/**
 * Starts what is not already healthy, all components at once, and returns the names it started so
 * the caller stops only those. If one fails, the others it started are stopped again.
 */
export async function up(names: readonly string[] = Object.keys(components)): Promise<string[]> {
  checkHost();
  if (!insideLab()) throw new LabError(`the lab runs inside network namespace ${labNetns}: use \`npm run lab -- up\``);
  const unknown = names.filter((n) => !(n in components));
  if (unknown.length)
    throw new LabError(`unknown lab components ${unknown.join(", ")}; known: ${Object.keys(components).join(", ")}`);
  // The agents boot it to check KVM. Built by `.ci/setup` outside the lab: its kernel is downloaded.
  if (!probeGuestBuilt() || !templateBuilt())
    throw new LabError(
      "the probe guest or the template image is not built: run `bash .ci/setup` (or `npm run lab -- build`)",
    );
  const entries = Object.entries(components).filter(([name]) => names.includes(name));
  const health = await Promise.all(entries.map(([, c]) => c.healthy()));
  const toStart = entries.filter((_, i) => !health[i]);
  const results = await Promise.allSettled(toStart.map(([, c]) => c.start()));
  const failed = results.flatMap((r, i) =>
    r.status === "rejected" ? [`${toStart[i]![0]}: ${(r.reason as Error).message}`] : [],
  );
  const started = toStart.map(([name]) => name);
  if (failed.length) {
    await down(started);
    throw new LabError(`the lab did not come up:\n${failed.join("\n")}`);
  }
  // Node objects, host ports and the template image need every component: only a whole lab gets them.
  if (Object.values(await status()).every(Boolean)) {
    await ensureFixtures().catch(async (err: Error) => {
      await down(started);
      throw new LabError(`the lab's fixtures could not be made: ${err.message}`);
    });
  }
  return started;
}

export async function down(names: readonly string[] = Object.keys(components)): Promise<void> {
  for (const [name, c] of Object.entries(components).reverse()) if (names.includes(name)) await c.stop();
}

export async function status(): Promise<Record<string, boolean>> {
  const entries = Object.entries(components);
  const health = await Promise.all(entries.map(([, c]) => c.healthy().catch(() => false)));
  return Object.fromEntries(entries.map(([name], i) => [name, health[i]!]));
}
