import { kubeconfigPath, labVethAddress, nodeBVethAddress, nodes, type LabNode } from "./paths.js";
import { kubectlPath } from "./kube.js";
import { rbd, rbdImages } from "./ceph.js";
import { linkExists } from "./netns.js";
import { run } from "./proc.js";
import { templatePath, templateRecipeHash } from "./template.js";

/**
 * What a Kaktus node has before the operator runs, stood up in the lab once its components are up
 * (idempotent, so every start can call it):
 * - a Node object per node sandbox with a zone label (no kubelet here, so the lab registers them);
 * - the namespace of the Volume controller's Lease;
 * - host ports as veth stand-ins: `eth1` on every node and `bond0.100` (the examples' VLAN port;
 *   this kernel has no 8021q, so the host's "VLAN interface" is a veth with that name), and `lan0`
 *   joining the nodes;
 * - the template image the examples and the guest tests clone: templates/debian-12@kowabunga (template.ts).
 */
export const nodeZones: Record<string, string> = { "kaktus-a": "eu-west-1a", "kaktus-b": "eu-west-1b" };
export const standInPorts = [
  { name: "eth1", peer: "eth1-peer", mtu: 1500 },
  { name: "bond0.100", peer: "bond0-100-peer", mtu: 9000 },
] as const;
/**
 * The segment the nodes' guests share, as a port on each node cabled to one switch: a veth pair
 * named `lan0` on both sides, joining the two node namespaces, without addresses. A Bridge that
 * enslaves it spans the nodes. (The Ceph veth cannot be that port: enslaved, its address stops working.)
 */
export const crossNodePort = "lan0";
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
  const [a, b] = nodes as [LabNode, LabNode];
  if (!(await linkExists(a.netns, crossNodePort)))
    await run("ip", [
      "-n",
      a.netns,
      "link",
      "add",
      crossNodePort,
      "type",
      "veth",
      "peer",
      "name",
      crossNodePort,
      "netns",
      b.netns,
    ]);
  for (const node of [a, b]) await run("ip", ["-n", node.netns, "link", "set", crossNodePort, "up"]);
  await ensureTemplateImage();
}

/**
 * The template image in Ceph, imported from the cache as an operator imports a golden image: a
 * format 2 image with layering, a protected snapshot, and the recipe it was built from in its
 * metadata. One of another recipe is replaced; renamed aside while it has clones (they keep their parent).
 */
async function ensureTemplateImage(): Promise<void> {
  const { pool, name, snapshot } = templateImage;
  const spec = `${pool}/${name}`;
  const recipeKey = "kaktus.lab.recipe";
  if ((await rbdImages(pool)).includes(name)) {
    const recipe = await rbd("image-meta", "get", spec, recipeKey).then(
      (r) => r.trim(),
      () => undefined,
    );
    if (recipe === templateRecipeHash) return;
    const children = await rbd("children", `${spec}@${snapshot}`).catch(() => "");
    if (children.trim()) await rbd("rename", spec, `${spec}-old-${Date.now()}`);
    else {
      await rbd("snap", "unprotect", `${spec}@${snapshot}`).catch(() => undefined);
      await rbd("snap", "purge", spec);
      await rbd("rm", spec);
    }
  }
  const started = Date.now();
  await rbd("import", "--image-format", "2", "--image-feature", "layering", templatePath(), spec);
  await rbd("snap", "create", `${spec}@${snapshot}`);
  await rbd("snap", "protect", `${spec}@${snapshot}`);
  await rbd("image-meta", "set", spec, recipeKey, templateRecipeHash);
  console.error(`[lab] imported the template image into ${spec}@${snapshot} in ${(Date.now() - started) / 1000}s`);
}
