import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { labDir, labNetns, labVethAddress, nodeBNetns, nodeBVethAddress } from "./paths.js";
import { LabError, run } from "./proc.js";

/**
 * The lab's network: two namespaces we create (node A, which also hosts the shared services, and
 * node B), each with its own loopback, joined by one veth pair with link-local addresses. Nothing
 * here ever names an interface of the machine's own namespace: every `ip` call carries `-n NS`.
 */
const vethA = "kaktus-veth-a";
const vethB = "kaktus-veth-b";

const netnsPath = (name: string) => `/run/netns/${name}`;

export const netnsExists = (name: string) => existsSync(netnsPath(name));

/** True when this process already runs inside the lab namespace. */
export function insideLab(): boolean {
  if (!netnsExists(labNetns)) return false;
  return statSync("/proc/self/ns/net").ino === statSync(netnsPath(labNetns)).ino;
}

/**
 * The namespaces this lab created, by inode: named namespaces outlive a lab (and a clone), and one
 * left by another lab holds that lab's bridges, which the operator rightly refuses to take as its own.
 */
const recordPath = join(labDir, "netns.json");
const netnsInode = (name: string) => statSync(netnsPath(name)).ino;

export function recordedNetns(): Record<string, number> {
  return existsSync(recordPath) ? (JSON.parse(readFileSync(recordPath, "utf8")) as Record<string, number>) : {};
}

/** Creates a namespace, or replaces one this lab did not create (refused while anything runs in it). */
async function ensureNetns(name: string, recorded: Record<string, number>): Promise<void> {
  if (netnsExists(name) && recorded[name] !== netnsInode(name)) {
    const { stdout } = await run("ip", ["netns", "pids", name]);
    if (stdout.trim())
      throw new LabError(
        `network namespace ${name} belongs to another lab whose processes still run (${stdout.trim().split("\n").join(", ")}): stop that lab (npm run lab -- down in its clone) first`,
      );
    await run("ip", ["netns", "delete", name]);
  }
  if (!netnsExists(name)) await run("ip", ["netns", "add", name]);
  recorded[name] = netnsInode(name);
  await run("ip", ["-n", name, "link", "set", "lo", "up"]);
}

/** Names of the links in a namespace, or of the ports of one bridge there (`master`). */
export async function linkNames(netns: string, master?: string): Promise<string[]> {
  const { stdout } = await run("ip", ["-n", netns, "-j", "link", "show", ...(master ? ["master", master] : [])]);
  return (JSON.parse(stdout) as { ifname: string }[]).map((l) => l.ifname);
}

export const linkExists = async (netns: string, ifname: string) => (await linkNames(netns)).includes(ifname);

export async function ensureLabNetwork(): Promise<void> {
  const recorded = recordedNetns();
  await ensureNetns(labNetns, recorded);
  await ensureNetns(nodeBNetns, recorded);
  mkdirSync(labDir, { recursive: true });
  writeFileSync(recordPath, JSON.stringify(recorded));
  if (!(await linkExists(labNetns, vethA))) {
    // Created inside the lab namespace, then one end is moved: it never exists in the root namespace.
    await run("ip", ["-n", labNetns, "link", "add", vethA, "type", "veth", "peer", "name", vethB, "netns", nodeBNetns]);
    await run("ip", ["-n", labNetns, "addr", "add", `${labVethAddress}/30`, "dev", vethA]);
    await run("ip", ["-n", nodeBNetns, "addr", "add", `${nodeBVethAddress}/30`, "dev", vethB]);
  }
  await run("ip", ["-n", labNetns, "link", "set", vethA, "up"]);
  await run("ip", ["-n", nodeBNetns, "link", "set", vethB, "up"]);
}

export async function deleteLabNetwork(): Promise<void> {
  for (const name of [nodeBNetns, labNetns]) {
    if (netnsExists(name)) await run("ip", ["netns", "delete", name]);
  }
}
