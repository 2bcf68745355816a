import { XMLBuilder, XMLParser } from "fast-xml-parser";
import { toBytes } from "../api/quantity.js";
import {
  diskAlias,
  guestAgentChannel,
  nicAlias,
  type ConsoleModel,
  type CpuFeature,
  type DiskModel,
  type DomainModel,
  type InterfaceModel,
  type NodeFacts,
} from "./model.js";

/**
 * Domain XML in the Kaktus agent's layout, built and read with a real XML library: every string
 * is escaped by the builder, and a string XML 1.0 cannot carry at all is refused, never dropped.
 */
export class DomainXmlError extends Error {
  override name = "DomainXmlError";
}

const kaktusNs = "https://kaktus.kowabunga.cloud/domain/v1";
/** Hot-plug capacity on q35: each attached disk or NIC needs a free PCIe root port. */
const spareRootPorts = 8;
/** Controllers and devices libvirt also puts on root ports: virtio-serial, balloon, RNG, USB, virtio-scsi, video. */
const builtInPciDevices = 6;

// XML 1.0 Char production: everything else (most C0 controls, lone surrogates, U+FFFE/F) is unrepresentable.
const xmlChar = /^[\t\n\r\u0020-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]*$/u;
function text(value: string, field: string): string {
  if (!xmlChar.test(value)) throw new DomainXmlError(`${field} contains characters XML cannot carry`);
  // XML turns a carriage return into a newline when it reads the document back.
  if (value.includes("\r")) throw new DomainXmlError(`${field} contains a carriage return`);
  return value;
}
/** Attribute values: XML parsers (libvirt's libxml2 too) turn tabs and newlines into spaces there. */
function attrText(value: string, field: string): string {
  if (/[\t\n\r]/.test(text(value, field))) throw new DomainXmlError(`${field} must be on one line`);
  return value;
}

const builder = new XMLBuilder({
  ignoreAttributes: false,
  attributeNamePrefix: "@_",
  format: true,
  suppressEmptyNode: true,
});

type Node = Record<string, unknown>;

/** An RBD pool or image name: "/" and "@" would change what QEMU opens (pool/image@snapshot). */
function rbdPart(value: string, field: string): string {
  if (!value || /[/@:]/.test(value)) throw new DomainXmlError(`${field} "${value}" is not a valid RBD name`);
  return value;
}

function diskNode(d: DiskModel, facts: NodeFacts): Node {
  const source =
    d.source.kind === "rbd"
      ? {
          "@_protocol": "rbd",
          "@_name": attrText(
            `${rbdPart(d.source.pool, `disk ${d.name} pool`)}/${rbdPart(d.source.image, `disk ${d.name} image`)}`,
            `disk ${d.name} source`,
          ),
          host: facts.ceph.monitors.map((m) => ({
            "@_name": attrText(m.host, "ceph monitor"),
            "@_port": String(m.port),
          })),
        }
      : { "@_file": attrText(d.source.path, `disk ${d.name} file`) };
  return {
    "@_type": d.source.kind === "rbd" ? "network" : "file",
    "@_device": d.device,
    driver: {
      "@_name": "qemu",
      "@_type": "raw",
      ...(d.source.kind === "rbd" ? { "@_cache": "none", "@_discard": "unmap" } : {}),
    },
    ...(d.source.kind === "rbd"
      ? {
          auth: {
            "@_username": attrText(facts.ceph.user, "ceph user"),
            secret: { "@_type": "ceph", "@_uuid": facts.ceph.secretUuid },
          },
        }
      : {}),
    source,
    target: { "@_dev": d.target, "@_bus": d.bus },
    ...(d.bootOrder !== undefined ? { boot: { "@_order": String(d.bootOrder) } } : {}),
    ...(d.readOnly ? { readonly: "" } : {}),
    alias: { "@_name": attrText(diskAlias(d.name), `disk ${d.name} name`) },
  };
}

function interfaceNode(i: InterfaceModel): Node {
  return {
    "@_type": "bridge",
    mac: { "@_address": attrText(i.mac, `interface ${i.name} mac`) },
    source: { "@_bridge": attrText(i.bridge, `interface ${i.name} bridge`) },
    model: { "@_type": i.model },
    alias: { "@_name": attrText(nicAlias(i.name), `interface ${i.name} name`) },
  };
}

/** The device XML of one disk or NIC, for attach/detach on a running domain. */
export const renderDiskXml = (d: DiskModel, facts: NodeFacts) => builder.build({ disk: diskNode(d, facts) }) as string;
export const renderInterfaceXml = (i: InterfaceModel) => builder.build({ interface: interfaceNode(i) }) as string;

/** What the XML carries and the model does not: the console's password (write-only). */
export interface DomainSecrets {
  consolePassword?: string;
}

export function renderDomainXml(m: DomainModel, facts: NodeFacts, secrets: DomainSecrets = {}): string {
  const cpu = {
    "@_mode": m.cpu.mode,
    ...(m.cpu.mode === "custom"
      ? { "@_match": "exact", model: { "@_fallback": "allow", "#text": text(m.cpu.model ?? "", "cpu model") } }
      : {}),
    feature: m.cpu.features.map((f) => ({ "@_policy": f.policy, "@_name": attrText(f.name, "cpu feature") })),
  };
  const graphics =
    m.graphics === "none"
      ? {}
      : {
          graphics: consoleXml(m.graphics, m.console ?? { listen: "socket" }, secrets.consolePassword),
          video: { model: { "@_type": "virtio" } },
        };
  const domain = {
    "@_type": m.type,
    name: text(m.name, "name"),
    uuid: m.uuid,
    ...(m.owner
      ? {
          metadata: {
            "kaktus:owner": {
              "@_xmlns:kaktus": kaktusNs,
              "@_namespace": attrText(m.owner.namespace, "namespace"),
              "@_name": attrText(m.owner.name, "name"),
              "@_uid": attrText(m.owner.uid, "uid"),
              ...(m.owner.graceSeconds !== undefined ? { "@_grace": String(m.owner.graceSeconds) } : {}),
              ...(m.console?.passwordDigest
                ? { "@_console-digest": attrText(m.console.passwordDigest, "console digest") }
                : {}),
            },
          },
        }
      : {}),
    memory: { "@_unit": "KiB", "#text": String(m.memoryKiB) },
    currentMemory: { "@_unit": "KiB", "#text": String(m.memoryKiB) },
    vcpu: { "@_placement": "static", "#text": String(m.vcpus) },
    os: {
      ...(m.firmware === "efi" ? { "@_firmware": "efi" } : {}),
      type: { "@_arch": "x86_64", "@_machine": "q35", "#text": "hvm" },
      // Said either way: left open, libvirt picks the Secure Boot OVMF build by itself.
      ...(m.firmware === "efi"
        ? {
            firmware: { feature: { "@_enabled": m.secureBoot ? "yes" : "no", "@_name": "secure-boot" } },
            ...(m.secureBoot ? { loader: { "@_secure": "yes" } } : {}),
          }
        : {}),
    },
    features: { acpi: "", apic: "", ...(m.secureBoot ? { smm: { "@_state": "on" } } : {}) },
    cpu,
    clock: { "@_offset": "utc" },
    on_poweroff: "destroy",
    on_reboot: "restart",
    on_crash: "destroy",
    devices: {
      disk: m.disks.map((d) => diskNode(d, facts)),
      controller: [
        ...(m.disks.some((d) => d.bus === "scsi") ? [{ "@_type": "scsi", "@_model": "virtio-scsi" }] : []),
        { "@_type": "pci", "@_index": "0", "@_model": "pcie-root" },
        // libvirt fills explicit root ports with the domain's own devices first: spare ones come on top.
        ...Array.from({ length: m.disks.length + m.interfaces.length + builtInPciDevices + spareRootPorts }, () => ({
          "@_type": "pci",
          "@_model": "pcie-root-port",
        })),
      ],
      interface: m.interfaces.map(interfaceNode),
      serial: { "@_type": "pty", target: { "@_port": "0" } },
      console: { "@_type": "pty", target: { "@_type": "virtio", "@_port": "1" } },
      ...(m.guestAgent
        ? { channel: { "@_type": "unix", target: { "@_type": "virtio", "@_name": guestAgentChannel } } }
        : {}),
      ...graphics,
      memballoon: { "@_model": "virtio" },
      rng: { "@_model": "virtio", backend: { "@_model": "random", "#text": "/dev/urandom" } },
    },
  };
  return builder.build({ domain }) as string;
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: "@_",
  parseTagValue: false,
  parseAttributeValue: false,
  // Names are data: keep them exactly, spaces included.
  trimValues: false,
  isArray: (name, path) =>
    [
      "domain.devices.disk",
      "domain.devices.interface",
      "domain.devices.disk.source.host",
      "domain.cpu.feature",
      "domain.devices.channel",
    ].includes(String(path)) || name === "controller",
});

const attr = (node: unknown, name: string): string | undefined =>
  (node as Node | undefined)?.[`@_${name}`] as string | undefined;
const textOf = (node: unknown): string =>
  typeof node === "object" && node !== null ? String((node as Node)["#text"] ?? "") : String(node ?? "");

/** libvirt's memory units as Kubernetes quantity suffixes (libvirt's "k", "M"… are binary). */
const unitSuffix: Record<string, string> = {
  b: "",
  bytes: "",
  KiB: "Ki",
  k: "Ki",
  K: "Ki",
  MiB: "Mi",
  M: "Mi",
  GiB: "Gi",
  G: "Gi",
  TiB: "Ti",
  T: "Ti",
};
function memoryKiB(node: unknown): bigint {
  const unit = attr(node, "unit") ?? "KiB";
  const suffix = unitSuffix[unit];
  if (suffix === undefined) throw new DomainXmlError(`memory unit ${unit} is not supported`);
  return toBytes(`${textOf(node)}${suffix}`) / 1024n;
}

/** From the firmware feature we set (inactive XML) or the loader libvirt chose (live XML). */
function secureBoot(os: Node): boolean {
  const feature = (os.firmware as Node | undefined)?.feature;
  const features = (Array.isArray(feature) ? feature : [feature]) as Node[];
  const requested = features.find((f) => attr(f, "name") === "secure-boot");
  if (requested) return attr(requested, "enabled") === "yes";
  return attr(os.loader, "secure") === "yes";
}

/** Reads the managed parts of a domain from libvirt's XML (live or inactive). */
export function parseDomainXml(xml: string): DomainModel {
  const doc = parser.parse(xml) as { domain?: Node };
  const d = doc.domain;
  if (!d) throw new DomainXmlError("not a domain XML document");
  const devices = (d.devices ?? {}) as Node;
  const os = (d.os ?? {}) as Node;
  const cpuNode = d.cpu as Node | undefined;
  const cpuMode = (attr(cpuNode, "mode") ?? "custom") as DomainModel["cpu"]["mode"];
  const ownerNode = ((d.metadata as Node | undefined)?.["kaktus:owner"] ?? undefined) as Node | undefined;
  const graphicsType = attr(devices.graphics, "type");
  const console =
    graphicsType === "spice" || graphicsType === "vnc" ? consoleOf(devices.graphics as Node, ownerNode) : undefined;
  const disks = ((devices.disk as Node[] | undefined) ?? []).flatMap((disk): DiskModel[] => {
    const alias = attr(disk.alias, "name") ?? "";
    const source = disk.source as Node | undefined;
    const target = disk.target as Node | undefined;
    const rbdName = attr(source, "protocol") === "rbd" ? attr(source, "name") : undefined;
    const [pool = "", image = ""] = rbdName
      ? [rbdName.slice(0, rbdName.indexOf("/")), rbdName.slice(rbdName.indexOf("/") + 1)]
      : [];
    return [
      {
        name: alias.startsWith("ua-disk-") ? alias.slice("ua-disk-".length) : (attr(target, "dev") ?? ""),
        target: attr(target, "dev") ?? "",
        bus: (attr(target, "bus") ?? "virtio") as DiskModel["bus"],
        source: rbdName ? { kind: "rbd", pool, image } : { kind: "file", path: attr(source, "file") ?? "" },
        device: (attr(disk, "device") ?? "disk") as DiskModel["device"],
        ...(attr(disk.boot, "order") !== undefined ? { bootOrder: Number(attr(disk.boot, "order")) } : {}),
        readOnly: disk.readonly !== undefined,
      },
    ];
  });
  const interfaces = ((devices.interface as Node[] | undefined) ?? []).map((nic): InterfaceModel => {
    const alias = attr(nic.alias, "name") ?? "";
    return {
      name: alias.startsWith("ua-nic-") ? alias.slice("ua-nic-".length) : (attr(nic.mac, "address") ?? ""),
      mac: (attr(nic.mac, "address") ?? "").toLowerCase(),
      bridge: attr(nic.source, "bridge") ?? "",
      model: (attr(nic.model, "type") ?? "virtio") as InterfaceModel["model"],
      ...(attr(nic.target, "dev") ? { tap: attr(nic.target, "dev")! } : {}),
    };
  });
  const agent = ((devices.channel as Node[] | undefined) ?? [])
    .map((c) => c.target as Node | undefined)
    .find((t) => attr(t, "type") === "virtio" && attr(t, "name") === guestAgentChannel);
  const agentState = attr(agent, "state");
  return {
    name: textOf(d.name),
    uuid: textOf(d.uuid),
    type: (attr(d, "type") ?? "qemu") as DomainModel["type"],
    memoryKiB: memoryKiB(d.memory),
    vcpus: Number(textOf(d.vcpu)),
    cpu: {
      mode: cpuMode,
      ...(cpuMode === "custom" ? { model: textOf(cpuNode?.model) } : {}),
      features: ((cpuNode?.feature as Node[] | undefined) ?? [])
        .map((f) => ({ name: attr(f, "name") ?? "", policy: attr(f, "policy") as CpuFeature["policy"] }))
        .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
    },
    firmware: attr(os, "firmware") === "efi" || os.loader !== undefined ? "efi" : "bios",
    secureBoot: secureBoot(os),
    disks,
    interfaces,
    graphics: graphicsType === "spice" || graphicsType === "vnc" ? graphicsType : "none",
    ...(console ? { console } : {}),
    guestAgent: agent !== undefined,
    ...(agentState ? { guestAgentConnected: agentState === "connected" } : {}),
    ...(ownerNode
      ? {
          owner: {
            namespace: attr(ownerNode, "namespace") ?? "",
            name: attr(ownerNode, "name") ?? "",
            uid: attr(ownerNode, "uid") ?? "",
            ...graceOf(attr(ownerNode, "grace")),
          },
        }
      : {}),
  };
}

/** The owner's grace attribute, when it is a whole number of seconds (older domains have none). */
const graceOf = (value: string | undefined) =>
  value !== undefined && /^\d{1,4}$/.test(value) ? { graceSeconds: Number(value) } : {};

/** A UNIX socket libvirt places, or a TCP address with a port libvirt picks (and a password). */
function consoleXml(type: "spice" | "vnc", c: ConsoleModel, password: string | undefined): Node {
  const socket = c.listen === "socket";
  return {
    "@_type": type,
    ...(socket ? {} : { "@_autoport": "yes" }),
    ...(password !== undefined ? { "@_passwd": attrText(password, "console password") } : {}),
    listen: socket
      ? { "@_type": "socket" }
      : { "@_type": "address", "@_address": attrText(c.listen, "console address") },
  };
}

function consoleOf(graphics: Node, owner: Node | undefined): ConsoleModel {
  const listen = graphics.listen as Node | undefined;
  const socket = attr(listen, "type") === "socket";
  const path = attr(listen, "socket") ?? attr(graphics, "socket");
  const port = Number(attr(graphics, "port") ?? "-1");
  const digest = attr(owner, "console-digest");
  return {
    listen: socket ? "socket" : (attr(listen, "address") ?? attr(graphics, "listen") ?? ""),
    ...(digest ? { passwordDigest: digest } : {}),
    ...(socket && path ? { socket: path } : {}),
    ...(!socket && port > 0 ? { port } : {}),
  };
}
