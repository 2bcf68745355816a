import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** Where everything the lab owns lives. Both folders are git-ignored; both can be moved by env. */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const labDir = resolve(process.env.KAKTUS_LAB_DIR ?? join(repoRoot, ".lab"));
export const cacheDir = resolve(process.env.KAKTUS_CACHE_DIR ?? join(repoRoot, ".cache"));

export const pidDir = join(labDir, "pids");
export const logDir = join(labDir, "logs");

/** Network namespace names: the lab itself is node A; node B is a second namespace joined by veth. */
export const labNetns = process.env.KAKTUS_LAB_NETNS ?? "kaktus-a";
export const nodeBNetns = `${labNetns.replace(/-a$/, "")}-b`;

/** Addresses that exist only on the veth pair between the two lab namespaces (link-local). */
export const labVethAddress = "169.254.100.1";
export const nodeBVethAddress = "169.254.100.2";

export interface LabNode {
  /** Kubernetes Node name the agent on this node uses. */
  name: string;
  netns: string;
  /** libvirtd's private folders (etc, run, lib, log, cache) live here. */
  dir: string;
  /** libvirt URI reachable from any namespace (unix sockets are files). */
  libvirtUri: string;
  /** Its libvirtd sees no /dev/kvm (hidden in its mount namespace): a TCG node whatever the machine. */
  hideKvm: boolean;
}

function node(name: string, netns: string, hideKvm: boolean): LabNode {
  const dir = join(labDir, "nodes", name);
  return { name, netns, dir, libvirtUri: `qemu:///system?socket=${join(dir, "run", "libvirt-sock")}`, hideKvm };
}

/**
 * Node A uses whatever KVM the machine has (its agent's probe decides); node B never has KVM, so
 * every run exercises both kinds of host. KAKTUS_LAB_HIDE_KVM=1 hides it from node A too (the
 * TCG-only machine, on a machine with KVM).
 */
export const nodes: readonly LabNode[] = [
  node("kaktus-a", labNetns, process.env.KAKTUS_LAB_HIDE_KVM === "1"),
  node("kaktus-b", nodeBNetns, true),
];

export const kubeDir = join(labDir, "kube");
export const kubeconfigPath = join(kubeDir, "admin.kubeconfig");
export const cephDir = join(labDir, "ceph");
export const cephConfPath = join(cephDir, "ceph.conf");
