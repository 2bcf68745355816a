import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { insideLab } from "./netns.js";
import { labNetns, repoRoot, type LabNode } from "./paths.js";
import { run, runningPid, startDaemon, stopDaemon, stopPid, waitDaemonReady, type Daemon } from "./proc.js";

/**
 * One libvirtd (QEMU driver) per lab node, started by hand since there is no systemd, inside the
 * node's network namespace and a private mount namespace (where node B's /dev/kvm is hidden).
 */
const sandboxScript = join(repoRoot, "test/env/libvirtd-sandbox.sh");

export const virsh = (node: LabNode, ...args: string[]) => run("virsh", ["-c", node.libvirtUri, ...args]);

function daemon(node: LabNode): Daemon {
  const sandbox = [
    ...["unshare", "--mount", "--propagation", "private", "--", sandboxScript, node.dir],
    ...(node.hideKvm ? ["hide-kvm"] : []),
  ];
  // The lab namespace is where we already run; node B is entered explicitly.
  const inNetns = node.netns === labNetns && insideLab() ? sandbox : ["ip", "netns", "exec", node.netns, ...sandbox];
  return { name: `libvirtd-${node.name}`, comm: "libvirtd", cmd: inNetns[0]!, args: inNetns.slice(1) };
}

function writeConfig(node: LabNode): void {
  const etc = join(node.dir, "etc");
  mkdirSync(etc, { recursive: true });
  writeFileSync(join(etc, "libvirtd.conf"), 'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n');
  // Root without a security driver: the lab has no libvirt-qemu-owned images, and nothing to confine from.
  writeFileSync(join(etc, "qemu.conf"), 'user = "root"\ngroup = "root"\nsecurity_driver = "none"\n');
  writeFileSync(join(etc, "virtlogd.conf"), 'log_outputs = "3:file:/var/log/libvirt/virtlogd.log"\n');
  writeFileSync(join(etc, "virtlockd.conf"), 'log_outputs = "3:file:/var/log/libvirt/virtlockd.log"\n');
}

/** QEMU processes outlive libvirtd; the pid files libvirt writes for them tell us which are ours. */
async function stopGuests(node: LabNode): Promise<void> {
  const qemuRun = join(node.dir, "run", "qemu");
  if (!existsSync(qemuRun)) return;
  for (const f of readdirSync(qemuRun).filter((f) => f.endsWith(".pid"))) {
    const pid = Number(readFileSync(join(qemuRun, f), "utf8"));
    if (Number.isInteger(pid) && pid > 0) await stopPid(pid, "qemu-system-x86", 5_000);
  }
}

/** virtlogd and virtlockd daemonise themselves and record their PIDs in the node's run folder. */
async function stopHelpers(node: LabNode): Promise<void> {
  for (const helper of ["virtlogd", "virtlockd"]) {
    const pidFile = join(node.dir, "run", `${helper}.pid`);
    if (!existsSync(pidFile)) continue;
    const pid = Number(readFileSync(pidFile, "utf8"));
    if (Number.isInteger(pid) && pid > 0) await stopPid(pid, helper, 5_000);
  }
}

/** Whether this libvirtd offers KVM; a node that should hide it but does not was started before the mask. */
const offersKvm = async (node: LabNode) => (await virsh(node, "capabilities")).stdout.includes("<domain type='kvm'");

export function libvirtDaemon(node: LabNode) {
  const d = daemon(node);
  const kvmAsWanted = async () => !node.hideKvm || !(await offersKvm(node));
  return {
    async healthy(): Promise<boolean> {
      if (runningPid(d) === undefined) return false;
      return (
        (await kvmAsWanted().catch(() => false)) && (await virsh(node, "uri").catch(() => undefined)) !== undefined
      );
    },

    async start(): Promise<void> {
      if (runningPid(d) !== undefined && !(await kvmAsWanted().catch(() => true))) await this.stop();
      if (runningPid(d) === undefined) {
        await stopHelpers(node); // left over from a libvirtd that was killed
        writeConfig(node);
        startDaemon(d);
      }
      await waitDaemonReady(d, `libvirtd on ${node.name}`, async () => (await virsh(node, "uri")).stdout !== "", {
        timeoutMs: 30_000,
      });
    },

    /** `guests: true` also stops the QEMUs (lab teardown); a libvirtd restart alone leaves them running. */
    async stop({ guests = true }: { guests?: boolean } = {}): Promise<void> {
      if (guests) await stopGuests(node);
      await stopDaemon(d);
      await stopHelpers(node);
    },
  };
}
