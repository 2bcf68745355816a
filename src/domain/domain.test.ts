import fc from "fast-check";
import { XMLValidator } from "fast-xml-parser";
import { describe, expect, it } from "vitest";
import type { VirtualMachine } from "../api/virtualmachine.js";
import { desiredDomain, UnsupportedOnNode, type ResolvedVm } from "./desired.js";
import { diffDomains } from "./diff.js";
import { exampleResolved, exampleVm, facts } from "../../test/fixtures/domain.js";
import type { DomainModel } from "./model.js";
import { DomainXmlError, parseDomainXml, renderDomainXml } from "./xml.js";

/** A KVM node whose probe had to turn arch-capabilities off for host-passthrough to start. */
const kvmNode: Pick<ResolvedVm, "domainType" | "defaultCpu"> = {
  domainType: "kvm",
  defaultCpu: { mode: "host-passthrough", features: [{ name: "arch-capabilities", policy: "disable" }] },
};

describe("desired domain of the example VM", () => {
  const desired = desiredDomain(exampleVm(), exampleResolved);

  it("follows the Kaktus layout", () => {
    expect(desired).toMatchObject({
      name: "acme_web-1",
      type: "qemu",
      memoryKiB: 4n * 1024n * 1024n,
      vcpus: 2,
      cpu: { mode: "maximum", features: [] }, // the TCG node's default
      firmware: "efi",
      graphics: "spice",
      owner: { namespace: "acme", name: "web-1" },
    });
    expect(desired.disks.map((d) => [d.name, d.target, d.bus, d.device, d.bootOrder])).toEqual([
      ["os", "vda", "virtio", "disk", 1],
      ["data", "vdb", "virtio", "disk", undefined],
      ["cloudinit", "vdz", "virtio", "disk", undefined],
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

  it("has a guest agent channel because it uses cloud-init; the live XML says whether an agent is there", () => {
    expect(desired.guestAgent).toBe(true);
    const live = renderDomainXml(desired, facts).replace(
      'name="org.qemu.guest_agent.0"/>',
      'name="org.qemu.guest_agent.0" state="connected"/>',
    );
    expect(parseDomainXml(live)).toMatchObject({ guestAgent: true, guestAgentConnected: true });
    const vm = exampleVm();
    vm.spec.guestAgent = false;
    const xml = renderDomainXml(desiredDomain(vm, exampleResolved), facts);
    expect(xml).not.toContain("guest_agent");
    expect(parseDomainXml(xml).guestAgent).toBe(false);
  });
});

describe("the console", () => {
  const vm = exampleVm();
  it("is a UNIX socket by default: nothing listens on TCP, no password", () => {
    const desired = desiredDomain(vm, exampleResolved);
    expect(desired.console).toEqual({ listen: "socket" });
    const xml = renderDomainXml(desired, facts);
    expect(xml).toMatch(/<graphics type="spice">\s*<listen type="socket"\/>\s*<\/graphics>/);
    expect(parseDomainXml(xml)).toEqual(desired);
  });

  it("with a password: listens at the node's address; the password is written, never read back, its digest is", () => {
    const desired = desiredDomain(vm, { ...exampleResolved, console: { listen: "10.0.0.5", passwordDigest: "d1" } });
    const xml = renderDomainXml(desired, facts, { consolePassword: "p&'<" });
    expect(xml).toContain('passwd="p&amp;&apos;&lt;"');
    expect(xml).toContain('<listen type="address" address="10.0.0.5"/>');
    expect(xml).toContain('console-digest="d1"');
    expect(parseDomainXml(xml)).toEqual(desired);
    // Another password (another digest) or another place is a change, applied at the next restart.
    const before = desiredDomain(vm, exampleResolved);
    expect(diffDomains(desired, parseDomainXml(renderDomainXml(before, facts)))).toEqual([
      expect.objectContaining({ field: "console", class: "restart" }),
    ]);
  });

  it("the socket path or port libvirt chose is read from the live XML, and is no drift", () => {
    const desired = desiredDomain(vm, exampleResolved);
    const live = renderDomainXml(desired, facts).replace(
      '<listen type="socket"/>',
      '<listen type="socket" socket="/var/lib/libvirt/qemu/domain-1-x/spice.sock"/>',
    );
    expect(parseDomainXml(live).console).toEqual({
      listen: "socket",
      socket: "/var/lib/libvirt/qemu/domain-1-x/spice.sock",
    });
    expect(diffDomains(desired, parseDomainXml(live))).toEqual([]);
  });
});

describe("the CPU a VM gets", () => {
  type CpuSpec = NonNullable<VirtualMachine["spec"]["cpu"]>;
  const cpuOn = (node: Pick<ResolvedVm, "domainType" | "defaultCpu">, cpu: CpuSpec) => {
    const vm = exampleVm();
    vm.spec.cpu = { cores: 2, ...cpu };
    return desiredDomain(vm, { ...exampleResolved, ...node }).cpu;
  };
  const tcgNode = { domainType: "qemu", defaultCpu: exampleResolved.defaultCpu } as const;
  const off = (name: string) => ({ name, policy: "disable" as const });
  const on = (name: string) => ({ name, policy: "require" as const });

  it.each([
    ["no model on a TCG node: its default", tcgNode, {}, { mode: "maximum", features: [] }],
    ["no model on a KVM node: its probed default", kvmNode, {}, kvmNode.defaultCpu],
    [
      "host-model on a KVM node keeps the probe's disabled features",
      kvmNode,
      { model: "host-model" },
      { mode: "host-model", features: [off("arch-capabilities")] },
    ],
    ["a named model on KVM", kvmNode, { model: "EPYC" }, { mode: "custom", model: "EPYC", features: [] }],
    ["a named model on TCG", tcgNode, { model: "qemu64" }, { mode: "custom", model: "qemu64", features: [] }],
    [
      "the spec's features, sorted, policy require by default",
      tcgNode,
      { model: "qemu64", features: [{ name: "pdpe1gb" }, { name: "avx2", policy: "disable" }] },
      { mode: "custom", model: "qemu64", features: [off("avx2"), on("pdpe1gb")] },
    ],
    [
      "the spec's features win over the node's for the same name",
      kvmNode,
      { features: [{ name: "arch-capabilities", policy: "require" }, { name: "x2apic" }] },
      { mode: "host-passthrough", features: [on("arch-capabilities"), on("x2apic")] },
    ],
  ] as const)("%s", (_, node, cpu, want) => {
    expect(cpuOn(node, structuredClone(cpu) as CpuSpec)).toEqual(want);
  });

  it.each(["host-passthrough", "host-model"])("%s on a TCG node is refused, saying why", (model) => {
    expect(() => cpuOn(tcgNode, { model })).toThrow(UnsupportedOnNode);
    expect(() => cpuOn(tcgNode, { model })).toThrow(`cpu.model ${model} needs KVM`);
  });

  it("renders and reads back features", () => {
    const vm = exampleVm();
    vm.spec.cpu = { cores: 1, model: "host-passthrough", features: [{ name: "sse4.1" }] };
    const desired = desiredDomain(vm, { ...exampleResolved, ...kvmNode });
    const xml = renderDomainXml(desired, facts);
    expect(xml).toContain('<cpu mode="host-passthrough">');
    expect(xml).toContain('<feature policy="disable" name="arch-capabilities"/>');
    expect(xml).toContain('<feature policy="require" name="sse4.1"/>');
    expect(parseDomainXml(xml).cpu).toEqual(desired.cpu);
  });

  it("a running host-model domain, which libvirt shows as the CPU it chose, is not drift", () => {
    const vm = exampleVm();
    vm.spec.cpu = { cores: 2, model: "host-model" };
    const desired = desiredDomain(vm, { ...exampleResolved, ...kvmNode });
    const live = { ...desired, cpu: { mode: "custom" as const, model: "EPYC-Rome", features: [on("x2apic")] } };
    expect(diffDomains(desired, live, { live: true })).toEqual([]);
    expect(diffDomains(desired, live).map((c) => c.kind === "field" && c.field)).toEqual(["cpu"]);
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
    ["the guest agent switch", (vm: VirtualMachine) => (vm.spec.guestAgent = false), [["field:guestAgent", "restart"]]],
    ["cores", (vm: VirtualMachine) => (vm.spec.cpu = { cores: 4 }), [["field:vcpus", "restart"]]],
    ["a CPU model", (vm: VirtualMachine) => (vm.spec.cpu = { cores: 2, model: "qemu64" }), [["field:cpu", "restart"]]],
    [
      "a CPU feature",
      (vm: VirtualMachine) => (vm.spec.cpu = { cores: 2, features: [{ name: "avx2", policy: "disable" }] }),
      [["field:cpu", "restart"]],
    ],
    [
      "the node's accelerator (a re-probe found KVM gone)",
      (_: VirtualMachine, r: ResolvedVm) => Object.assign(r, kvmNode),
      [
        ["field:type", "restart"],
        ["field:cpu", "restart"],
      ],
    ],
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
      "a disk on another bus (the cloud-init disk keeps its name)",
      (vm: VirtualMachine) => (vm.spec.disks![1]!.bus = "scsi"),
      [["field:disks[data]", "restart"]],
    ],
    [
      "the UUID",
      (_: VirtualMachine, r: ResolvedVm) => (r.uuid = "00000000-0000-4000-8000-000000000000"),
      [["field:uuid", "restart"]],
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
    cpuFeature: hostile,
    grace: fc.integer({ min: 0, max: 3600 }),
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
          cpu: { mode: "custom", model: h.cpuModel, features: [{ name: h.cpuFeature, policy: "disable" }] },
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
              target: "vdz",
              bus: "virtio",
              source: { kind: "file", path: h.iso },
              device: "disk",
              readOnly: true,
            },
          ],
          interfaces: [{ name: h.nic, mac: h.mac.toLowerCase(), bridge: h.bridge, model: "virtio" }],
          graphics: "none",
          guestAgent: true,
          owner: { namespace: h.ns, name: h.name, uid: h.uid, graceSeconds: h.grace },
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
