import { kubeconfigPath, labVethAddress, nodeBVethAddress, nodes } from "./paths.js";
import { kubectlPath } from "./kube.js";
import { rbd, rbdImages } from "./ceph.js";
import { linkExists } from "./netns.js";
import { run } from "./proc.js";

/**
 * What a Kaktus node has before the operator runs, stood up in the lab once its components are up
 * (idempotent, so every start can call it):
 * - a Node object per node sandbox with a zone label (no kubelet here, so the lab registers them);
 * - the namespace of the Volume controller's Lease;
 * - host ports as veth stand-ins: `eth1` on every node and `bond0.100` (the examples' VLAN port;
 *   this kernel has no 8021q, so the host's "VLAN interface" is a veth with that name);
 * - the template image the examples clone: templates/debian-12@kowabunga, protected.
 */
export const nodeZones: Record<string, string> = { "kaktus-a": "eu-west-1a", "kaktus-b": "eu-west-1b" };
export const standInPorts = [
  { name: "eth1", peer: "eth1-peer", mtu: 1500 },
  { name: "bond0.100", peer: "bond0-100-peer", mtu: 9000 },
] as const;
export const templateImage = { pool: "templates", name: "debian-12", snapshot: "kowabunga" } as const;

const manifests = () =>
  JSON.stringify({
    apiVersion: "v1",
    kind: "List",
    items: [
      { apiVersion: "v1", kind: "Namespace", metadata: { name: "kaktus-system" } },
      ...nodes.map((n) => ({
        apiVersion: "v1",
        kind: "Node",
        metadata: {
          name: n.name,
          labels: { "kubernetes.io/hostname": n.name, "kaktus.kowabunga.cloud/zone": nodeZones[n.name] ?? "lab" },
        },
      })),
    ],
  });

/** Each node's address as a kubelet would report it: where its Ceph clients come from (fencing uses it). */
export const nodeAddresses: Record<string, string> = { "kaktus-a": labVethAddress, "kaktus-b": nodeBVethAddress };

export async function ensureFixtures(): Promise<void> {
  const kubectl = (args: string[], input?: string) =>
    run(kubectlPath(), ["--kubeconfig", kubeconfigPath, ...args], input === undefined ? {} : { input });
  await kubectl(["apply", "--server-side", "-f", "-"], manifests());
  for (const node of nodes) {
    const status = { status: { addresses: [{ type: "InternalIP", address: nodeAddresses[node.name] }] } };
    await kubectl(["patch", "node", node.name, "--subresource=status", "--type=merge", "-p", JSON.stringify(status)]);
  }
  for (const node of nodes) {
    for (const port of standInPorts) {
      if (await linkExists(node.netns, port.name)) continue;
      const ip = (...args: string[]) => run("ip", ["-n", node.netns, ...args]);
      await ip(
        "link",
        "add",
        port.name,
        "mtu",
        String(port.mtu),
        "type",
        "veth",
        "peer",
        "name",
        port.peer,
        "mtu",
        String(port.mtu),
      );
      await ip("link", "set", port.peer, "up");
    }
  }
  const { pool, name, snapshot } = templateImage;
  if (!(await rbdImages(pool)).includes(name))
    await rbd("create", "--size", "1G", "--image-feature", "layering", `${pool}/${name}`);
  const snaps = JSON.parse(await rbd("snap", "ls", "--format", "json", `${pool}/${name}`)) as {
    name: string;
    protected: string;
  }[];
  const snap = snaps.find((s) => s.name === snapshot);
  if (!snap) await rbd("snap", "create", `${pool}/${name}@${snapshot}`);
  if (snap?.protected !== "true") await rbd("snap", "protect", `${pool}/${name}@${snapshot}`);
}
