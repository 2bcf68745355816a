import fc from "fast-check";
import { XMLValidator } from "fast-xml-parser";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import type { VirtualMachine } from "../api/virtualmachine.js";
import { desiredDomain, type ResolvedVm } from "./desired.js";
import { diffDomains } from "./diff.js";
import type { DomainModel, NodeFacts } from "./model.js";
import { DomainXmlError, parseDomainXml, renderDomainXml } from "./xml.js";

const facts: NodeFacts = {
  domainType: "qemu",
  ceph: {
    monitors: [{ host: "127.0.0.1", port: 6789 }],
    user: "libvirt",
    secretUuid: "5c2c9a0e-8d4e-4a8e-9f61-0d1a5b1f0a01",
  },
};

/** The example VM as the API server returns it: with its defaults filled. */
export function exampleVm(): VirtualMachine {
  const doc = parseAllDocuments(readFileSync("examples/30-virtualmachine.yaml", "utf8"))[0]!.toJS() as VirtualMachine;
  doc.metadata.uid = "0b5a3d6e-7c1f-4e52-9d0a-3c8e1f2b4a55";
  doc.spec.disks = doc.spec.disks?.map((d) => ({ bus: "virtio", readOnly: false, ...d }));
  doc.spec.interfaces = doc.spec.interfaces?.map((i) => ({ model: "virtio", ...i }));
  return doc;
}

export const exampleResolved: ResolvedVm = {
  uuid: "8f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
  macs: { public: "52:54:00:00:00:01" },
  volumes: {
    "web-1-os": { pool: "rbd", image: "acme.web-1-os" },
    "web-1-data": { pool: "rbd", image: "acme.web-1-data" },
  },
  bridges: { br0: "br0", br100: "br100" },
  cloudInitIso: "/var/lib/kaktus/cloud-init/acme_web-1.iso",
  domainType: "qemu",
};

describe("desired domain of the example VM", () => {
  const desired = desiredDomain(exampleVm(), exampleResolved);

  it("follows the Kaktus layout", () => {
    expect(desired).toMatchObject({
      name: "acme_web-1",
      type: "qemu",
      memoryKiB: 4n * 1024n * 1024n,
      vcpus: 2,
      cpu: { mode: "maximum" }, // TCG; host-passthrough on kvm nodes
      firmware: "efi",
      graphics: "spice",
      owner: { namespace: "acme", name: "web-1" },
    });
    expect(desired.disks.map((d) => [d.name, d.target, d.bus, d.device, d.bootOrder])).toEqual([
      ["os", "vda", "virtio", "disk", 1],
      ["data", "vdb", "virtio", "disk", undefined],
      ["cloudinit", "sda", "sata", "cdrom", undefined],
    ]);
    expect(desired.interfaces).toEqual([
      { name: "public", mac: "52:54:00:00:00:01", bridge: "br0", model: "virtio" },
      { name: "private", mac: "52:54:00:12:34:56", bridge: "br100", model: "virtio" },
    ]);
    const xml = renderDomainXml(desired, facts);
    expect(XMLValidator.validate(xml)).toBe(true);
    for (const piece of [
      '<clock offset="utc"/>',
      'protocol="rbd" name="rbd/acme.web-1-os"',
      '<secret type="ceph" uuid="5c2c9a0e-8d4e-4a8e-9f61-0d1a5b1f0a01"/>',
      'name="org.qemu.guest_agent.0"',
      '<memballoon model="virtio"/>',
      '<rng model="virtio">',
      '<console type="pty">',
      '<os firmware="efi">',
    ]) {
      expect(xml).toContain(piece);
    }
  });

  it("reads back from its own XML unchanged, so a converged domain has no diff", () => {
    const back = parseDomainXml(renderDomainXml(desired, facts));
    expect(back).toEqual(desired);
    expect(diffDomains(desired, back)).toEqual([]);
  });
});

describe("diff classification, one field at a time", () => {
  const base = desiredDomain(exampleVm(), exampleResolved);
  const edit = (f: (vm: VirtualMachine, r: ResolvedVm) => unknown): DomainModel => {
    const vm = exampleVm();
    const r = structuredClone(exampleResolved);
    f(vm, r);
    return desiredDomain(vm, r);
  };
  const classes = (desired: DomainModel): [string, string][] =>
    diffDomains(desired, base).map((c) => [c.kind === "field" ? `field:${c.field}` : c.kind, c.class]);

  type Edit = (vm: VirtualMachine, r: ResolvedVm) => unknown;
  const table: [string, Edit, [string, string][]][] = [
    ["memory", (vm: VirtualMachine) => (vm.spec.memory = "8Gi"), [["field:memory", "restart"]]],
    ["cores", (vm: VirtualMachine) => (vm.spec.cpu = { cores: 4 }), [["field:vcpus", "restart"]]],
    ["firmware", (vm: VirtualMachine) => (vm.spec.firmware = "bios"), [["field:firmware", "restart"]]],
    ["graphics", (vm: VirtualMachine) => (vm.spec.graphics = "vnc"), [["field:graphics", "restart"]]],
    [
      "an added disk",
      (vm: VirtualMachine, r: ResolvedVm) => {
        vm.spec.disks!.push({ name: "logs", volumeRef: "web-1-logs" });
        r.volumes["web-1-logs"] = { pool: "rbd", image: "acme.web-1-logs" };
      },
      [["attach-disk", "live"]],
    ],
    ["a removed disk", (vm: VirtualMachine) => vm.spec.disks!.pop(), [["detach-disk", "live"]]],
    [
      "an added NIC",
      (vm: VirtualMachine, r: ResolvedVm) => {
        vm.spec.interfaces!.push({ name: "backup", bridgeRef: "br0" });
        r.macs.backup = "52:54:00:00:00:02";
      },
      [["attach-interface", "live"]],
    ],
    ["a removed NIC", (vm: VirtualMachine) => vm.spec.interfaces!.pop(), [["detach-interface", "live"]]],
    [
      "a NIC moved to another bridge",
      (vm: VirtualMachine) => (vm.spec.interfaces![0]!.bridgeRef = "br100"),
      [["update-interface", "live"]],
    ],
    [
      "a NIC model",
      (vm: VirtualMachine) => (vm.spec.interfaces![0]!.model = "e1000"),
      [["field:interfaces[public]", "restart"]],
    ],
    [
      "a disk on another bus (scsi shares sdX names with the cloud-init cdrom, which moves too)",
      (vm: VirtualMachine) => (vm.spec.disks![1]!.bus = "scsi"),
      [
        ["field:disks[data]", "restart"],
        ["field:disks[cloudinit]", "restart"],
      ],
    ],
    [
      "the UUID",
      (_: VirtualMachine, r: ResolvedVm) => (r.uuid = "00000000-0000-4000-8000-000000000000"),
      [["field:uuid", "redefine"]],
    ],
  ];
  it.each(table)("%s", (_, change, expected) => {
    expect(classes(edit(change))).toEqual(expected);
  });
});

describe("hostile strings never produce invalid XML or an injected element", () => {
  const hostile = fc.oneof(
    fc.string({ unit: "binary", maxLength: 40 }),
    fc.constantFrom(
      "'",
      '"',
      "<",
      ">",
      "&",
      "]]>",
      "</name><disk/>",
      "a\nb",
      "a\rb",
      "&amp;",
      "\u0000",
      "\uFFFE",
      "x".repeat(5000),
      "ünï©ødé 🦵",
    ),
  );
  const model = fc.record({
    name: hostile,
    ns: hostile,
    uid: hostile,
    disk: hostile,
    pool: hostile,
    image: hostile,
    iso: hostile,
    nic: hostile,
    bridge: hostile,
    mac: hostile,
    cpuModel: hostile,
  });

  it("renders valid XML that reads back exactly, or refuses with a DomainXmlError", () => {
    fc.assert(
      fc.property(model, (h) => {
        const m: DomainModel = {
          name: h.name,
          uuid: "8f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
          type: "qemu",
          memoryKiB: 65536n,
          vcpus: 1,
          cpu: { mode: "custom", model: h.cpuModel },
          firmware: "bios",
          secureBoot: false,
          disks: [
            {
              name: h.disk,
              target: "vda",
              bus: "virtio",
              source: { kind: "rbd", pool: h.pool, image: h.image },
              device: "disk",
              readOnly: false,
            },
            {
              name: "cloudinit",
              target: "sda",
              bus: "sata",
              source: { kind: "file", path: h.iso },
              device: "cdrom",
              readOnly: true,
            },
          ],
          interfaces: [{ name: h.nic, mac: h.mac.toLowerCase(), bridge: h.bridge, model: "virtio" }],
          graphics: "none",
          owner: { namespace: h.ns, name: h.name, uid: h.uid },
        };
        let xml: string;
        try {
          xml = renderDomainXml(m, facts);
        } catch (err) {
          expect(err).toBeInstanceOf(DomainXmlError);
          return;
        }
        expect(XMLValidator.validate(xml)).toBe(true);
        expect(parseDomainXml(xml)).toEqual(m);
      }),
      { numRuns: 1000 },
    );
  });
});
