import { execFileSync } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { VirtualMachine } from "../../src/api/virtualmachine.js";
import { desiredDomain, type ResolvedVm } from "../../src/domain/desired.js";
import { exampleResolved, exampleVm } from "../fixtures/domain.js";
import { diffDomains } from "../../src/domain/diff.js";
import type { NodeFacts } from "../../src/domain/model.js";
import { parseDomainXml, renderDomainXml } from "../../src/domain/xml.js";
import { LibvirtClient } from "../../src/host/libvirt/client.js";
import { cephLibvirtKeyringPath, cephMonitor, labNetns, nodes, rbd } from "../env/lab.js";
import { run } from "../env/proc.js";

/**
 * The example VM, rendered by the operator's converter, defined and started under the real
 * libvirtd: what libvirt reads back (live, with everything it fills in) must not differ from
 * what we asked for, and single edits must be classified as the converter promises.
 */
const id = randomBytes(3).toString("hex");
const node = nodes[0]!;
const work = mkdtempSync(join(tmpdir(), "kaktus-rt-"));
const secretUuid = randomUUID();
const facts: NodeFacts = {
  domainType: "qemu",
  defaultCpu: { mode: "maximum", features: [] },
  ceph: { monitors: [cephMonitor], user: "libvirt", secretUuid },
};
const images = { os: `rt-${id}-os`, data: `rt-${id}-data`, logs: `rt-${id}-logs` };
const bridges = { br0: `kbr-rt${id.slice(0, 3)}a`, br100: `kbr-rt${id.slice(0, 3)}b` };

function vm(): VirtualMachine {
  const v = exampleVm();
  v.metadata.namespace = `rt${id}`;
  // TCG on 2 cores: keep the guest small; the layout is what is under test.
  v.spec.memory = "128Mi";
  return v;
}
const resolved: ResolvedVm = {
  ...exampleResolved,
  uuid: randomUUID(),
  volumes: {
    "web-1-os": { pool: "rbd", image: images.os },
    "web-1-data": { pool: "rbd", image: images.data },
    "web-1-logs": { pool: "rbd", image: images.logs },
  },
  bridges,
  cloudInitIso: join(work, "cidata.iso"),
};

describe("converter round trip through the real libvirtd", () => {
  const client = new LibvirtClient(node.libvirtUri);
  const desired = desiredDomain(vm(), resolved);

  beforeAll(async () => {
    for (const image of Object.values(images)) await rbd("create", "--size", "64M", `rbd/${image}`);
    for (const br of Object.values(bridges)) {
      await run("ip", ["-n", labNetns, "link", "add", br, "type", "bridge"]);
      await run("ip", ["-n", labNetns, "link", "set", br, "up"]);
    }
    writeFileSync(join(work, "user-data"), "#cloud-config\nhostname: web-1\n");
    writeFileSync(join(work, "meta-data"), "instance-id: web-1\n");
    execFileSync("cloud-localds", [resolved.cloudInitIso!, join(work, "user-data"), join(work, "meta-data")]);
    const key = /key = (\S+)/.exec(readFileSync(cephLibvirtKeyringPath, "utf8"))![1]!;
    await client.defineSecret(
      `<secret ephemeral='no' private='yes'><uuid>${secretUuid}</uuid><usage type='ceph'><name>rt ${id}</name></usage></secret>`,
    );
    await client.setSecretValue(secretUuid, Buffer.from(key, "base64")); // libvirt wants the raw cephx key
  });

  afterAll(async () => {
    await client.destroy(desired.name).catch(() => undefined);
    await client.undefine(desired.name).catch(() => undefined);
    await client.undefineSecret(secretUuid).catch(() => undefined);
    await client.close();
    for (const br of Object.values(bridges))
      await run("ip", ["-n", labNetns, "link", "del", br]).catch(() => undefined);
    for (const image of Object.values(images)) await rbd("rm", "--no-progress", `rbd/${image}`).catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  });

  it("defines the example VM: the inactive XML reads back with no difference", async () => {
    await client.define(renderDomainXml(desired, facts));
    expect(diffDomains(desired, parseDomainXml(await client.getXml(desired.name, { inactive: true })))).toEqual([]);
  });

  it("starts it: the live XML, with all libvirt fills in, reads back with no difference", async () => {
    await client.start(desired.name);
    const live = parseDomainXml(await client.getXml(desired.name));
    expect(diffDomains(desired, live)).toEqual([]);
  });

  it.each<[string, (v: VirtualMachine) => void, [string, string][]]>([
    ["memory", (v) => (v.spec.memory = "256Mi"), [["field:memory", "restart"]]],
    ["cores", (v) => (v.spec.cpu = { cores: 1 }), [["field:vcpus", "restart"]]],
    ["an added disk", (v) => v.spec.disks!.push({ name: "logs", volumeRef: "web-1-logs" }), [["attach-disk", "live"]]],
    [
      "an added NIC",
      (v) => v.spec.interfaces!.push({ name: "extra", bridgeRef: "br0", mac: "52:54:00:00:00:09" }),
      [["attach-interface", "live"]],
    ],
    [
      "a NIC moved to another bridge",
      (v) => (v.spec.interfaces![0]!.bridgeRef = "br100"),
      [["update-interface", "live"]],
    ],
  ])("classifies a change of %s against the live domain", async (_, edit, expected) => {
    const v = vm();
    edit(v);
    const live = parseDomainXml(await client.getXml(desired.name));
    const changes = diffDomains(desiredDomain(v, resolved), live).map((c) => [
      c.kind === "field" ? `field:${c.field}` : c.kind,
      c.class,
    ]);
    expect(changes).toEqual(expected);
  });
});
