import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { cephLibvirtKeyringPath, cephMonitor, labNetns, nodes, rbd, virsh } from "../env/lab.js";
import { run, waitFor } from "../env/proc.js";

const nodeA = nodes[0]!;
const id = randomBytes(3).toString("hex");
const image = `smoke-${id}`;
const bridge = `kbr-smoke${id.slice(0, 4)}`;
const domain = `kaktus-smoke-${id}`;
const secretUuid = crypto.randomUUID();
const work = mkdtempSync(join(tmpdir(), "kaktus-smoke-"));

const write = (name: string, text: string) => {
  const path = join(work, name);
  writeFileSync(path, text, { mode: 0o600 });
  return path;
};
const ipA = (...args: string[]) => run("ip", ["-n", labNetns, ...args]);

// Fixed, test-owned XML: a TCG guest with no OS whose disk is the RBD image and whose NIC is on the bridge.
// TCG on every machine: the wiring is under test here, not the accelerator (node A's may be unusable).
const domainXml = () => `<domain type='qemu'>
  <name>${domain}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <auth username='libvirt'><secret type='ceph' uuid='${secretUuid}'/></auth>
      <source protocol='rbd' name='rbd/${image}'><host name='${cephMonitor.host}' port='${cephMonitor.port}'/></source>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='bridge'><source bridge='${bridge}'/><model type='virtio'/></interface>
    <serial type='pty'/>
  </devices>
</domain>`;

describe("Ceph RBD + libvirtd/QEMU + a bridge in the node sandbox", () => {
  afterAll(async () => {
    await virsh(nodeA, "destroy", domain).catch(() => undefined);
    await virsh(nodeA, "undefine", domain).catch(() => undefined);
    await virsh(nodeA, "secret-undefine", secretUuid).catch(() => undefined);
    await ipA("link", "del", bridge).catch(() => undefined);
    await rbd("rm", `rbd/${image}`).catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  });

  it("creates an RBD image", async () => {
    await rbd("create", "--size", "64M", "--image-feature", "layering", `rbd/${image}`);
    const info = JSON.parse(await rbd("info", "--format", "json", `rbd/${image}`)) as { size: number; format: number };
    expect(info).toMatchObject({ size: 64 << 20, format: 2 });
  });

  it("registers the client.libvirt cephx key as a libvirt secret", async () => {
    const key = /key = (\S+)/.exec(readFileSync(cephLibvirtKeyringPath, "utf8"))![1]!;
    const secretXml = `<secret ephemeral='no' private='yes'><uuid>${secretUuid}</uuid><usage type='ceph'><name>client.libvirt ${id}</name></usage></secret>`;
    await virsh(nodeA, "secret-define", write("secret.xml", secretXml));
    await virsh(nodeA, "secret-set-value", "--secret", secretUuid, "--file", write("key", key));
    expect((await virsh(nodeA, "secret-list")).stdout).toContain(secretUuid);
  });

  it("creates a bridge inside the node's network namespace", async () => {
    await ipA("link", "add", bridge, "type", "bridge");
    await ipA("link", "set", bridge, "up");
    const [link] = JSON.parse((await ipA("-j", "-d", "link", "show", bridge)).stdout) as {
      linkinfo: { info_kind: string };
    }[];
    expect(link?.linkinfo.info_kind).toBe("bridge");
  });

  it("defines and starts a domain whose disk is the RBD image and whose NIC is on the bridge", async () => {
    await virsh(nodeA, "define", write("domain.xml", domainXml()));
    await virsh(nodeA, "start", domain);
    expect((await virsh(nodeA, "domstate", domain)).stdout.trim()).toBe("running");
    // QEMU holds the image open: Ceph sees it as a watcher.
    const status = JSON.parse(await rbd("status", "--format", "json", `rbd/${image}`)) as { watchers: unknown[] };
    expect(status.watchers).toHaveLength(1);
    // Its tap device is a port of the bridge.
    const ports = JSON.parse((await ipA("-j", "link", "show", "master", bridge)).stdout) as { ifname: string }[];
    expect(ports.map((p) => p.ifname)).toEqual([expect.stringMatching(/^vnet\d+$/)]);
  });

  it("destroys and undefines the domain, then removes the image", async () => {
    await virsh(nodeA, "destroy", domain);
    await virsh(nodeA, "undefine", domain);
    await expect(virsh(nodeA, "domstate", domain)).rejects.toThrow(/failed to get domain/);
    await waitFor(
      "watchers released",
      async () =>
        (JSON.parse(await rbd("status", "--format", "json", `rbd/${image}`)) as { watchers: unknown[] }).watchers
          .length === 0 || undefined,
      { timeoutMs: 10_000 },
    );
    await rbd("rm", `rbd/${image}`);
    expect(JSON.parse(await rbd("ls", "--format", "json", "rbd"))).not.toContain(image);
  });
});
