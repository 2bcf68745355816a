import { Type, type Static } from "@sinclair/typebox";
import {
  celQuantity,
  commonStatus,
  DnsLabel,
  DnsSubdomain,
  MacAddress,
  NamedList,
  Quantity,
  StringEnum,
  validations,
  type KaktusObject,
} from "./schema.js";

/** A VirtualMachine is a persistent libvirt domain on `spec.node`, reconciled by that node's agent. */
export const virtualMachineKind = {
  kind: "VirtualMachine",
  plural: "virtualmachines",
  singular: "virtualmachine",
  shortNames: ["kvm"],
  scope: "Namespaced",
} as const;

export const runStrategies = ["Always", "Halted", "Manual", "RerunOnFailure"] as const;

const Disk = Type.Object({
  name: DnsLabel({ description: "Name of the disk inside this VM." }),
  volumeRef: DnsLabel({ description: "A Volume in the VM's namespace." }),
  bus: Type.Optional(
    StringEnum(["virtio", "scsi", "sata"] as const, {
      default: "virtio",
      description: "How the guest sees the disk: virtio (vdX, fastest), scsi (sdX, virtio-scsi) or sata (sdX, any OS).",
    }),
  ),
  bootOrder: Type.Optional(Type.Integer({ minimum: 1, maximum: 64, description: "Boot priority, 1 first." })),
  readOnly: Type.Optional(Type.Boolean({ default: false, description: "The guest cannot write to the disk." })),
});

const Interface = Type.Object({
  name: DnsLabel({ description: "Name of the NIC inside this VM." }),
  bridgeRef: DnsSubdomain({ description: "A Bridge (cluster-scoped) that is Ready on the VM's node." }),
  mac: Type.Optional(MacAddress({ description: "Omitted: generated once and kept in status." })),
  model: Type.Optional(
    StringEnum(["virtio", "e1000"] as const, {
      default: "virtio",
      description: "The NIC the guest sees: virtio (fastest), or e1000 for an OS without virtio drivers.",
    }),
  ),
});

const CpuFeature = Type.Object({
  name: Type.String({
    minLength: 1,
    maxLength: 64,
    pattern: "^[a-z0-9][a-z0-9_.-]*$",
    description: "A libvirt CPU feature name (lower case, e.g. avx2, arch-capabilities, sse4.1).",
  }),
  policy: Type.Optional(
    StringEnum(["require", "disable"] as const, {
      default: "require",
      description: "require: the guest gets the feature (start fails where the host lacks it); disable: it never does.",
    }),
  ),
});

/** One key of a Secret in the VM's namespace (no namespace field: never another tenant's). */
const SecretKeyRef = (defaultKey: string, keyDescription: string, description: string) =>
  Type.Object(
    {
      name: DnsSubdomain({ description: "The Secret's name." }),
      key: Type.Optional(
        Type.String({
          minLength: 1,
          maxLength: 253,
          pattern: "^[-._a-zA-Z0-9]+$",
          default: defaultKey,
          description: keyDescription,
        }),
      ),
    },
    { description },
  );

const CloudInit = Type.Object(
  {
    userData: Type.Optional(Type.String({ maxLength: 65536, description: "NoCloud user-data." })),
    userDataSecretRef: Type.Optional(
      SecretKeyRef(
        "userdata",
        "The key holding the user-data (at most 64 KiB); only this key is read.",
        "A Secret in the VM's namespace holding the user-data. Read by the VM's node agent only, never " +
          "logged nor shown in status or Events; the seed image is readable by root only.",
      ),
    ),
    metaData: Type.Optional(
      Type.String({ maxLength: 65536, description: "NoCloud meta-data; default: instance-id and hostname." }),
    ),
    networkConfig: Type.Optional(Type.String({ maxLength: 65536, description: "NoCloud network-config (v1 or v2)." })),
  },
  {
    description: "A NoCloud seed disk for cloud-init (a read-only virtio disk, volume id cidata).",
    ...validations({
      rule: "!(has(self.userData) && has(self.userDataSecretRef))",
      message: "set userData or userDataSecretRef, not both",
    }),
  },
);

export const VirtualMachineSpec = Type.Object(
  {
    node: DnsSubdomain({
      description: "The Kaktus node that runs the domain.",
      ...validations({
        rule: "self == oldSelf",
        message: "node is immutable: moving a VM between nodes is not supported",
      }),
    }),
    runStrategy: Type.Optional(
      StringEnum(runStrategies, {
        default: "Always",
        description:
          "Always: kept running, started again whenever it stops. Halted: shut down (ACPI, then destroyed after " +
          "shutdownGracePeriodSeconds) and kept off. Manual: never started or stopped by the operator (virsh or " +
          "the guest decide). RerunOnFailure: started again after a crash or a failure, left off when the guest " +
          "powers itself off.",
      }),
    ),
    cpu: Type.Optional(
      Type.Object(
        {
          cores: Type.Optional(Type.Integer({ minimum: 1, maximum: 256, default: 1, description: "Virtual CPUs." })),
          model: Type.Optional(
            Type.String({
              maxLength: 64,
              pattern: "^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
              description:
                "host-passthrough or host-model (KVM nodes only), or a libvirt CPU model name (virsh domcapabilities). " +
                "Omitted: the node's default, which its agent probes at start (label kaktus.kowabunga.cloud/cpu-mode).",
            }),
          ),
          features: Type.Optional(
            NamedList(CpuFeature, {
              maxItems: 64,
              description: "CPU features to require or turn off, on top of the model (libvirt names, e.g. pdpe1gb).",
            }),
          ),
        },
        { default: {}, description: "The guest's CPUs." },
      ),
    ),
    memory: Quantity({
      description: "Guest memory.",
      ...validations(
        { rule: `${celQuantity("self")}.compareTo(quantity('64Mi')) >= 0`, message: "memory must be at least 64Mi" },
        {
          rule: "!string(self).matches('[mun]$')",
          message: "memory must be a whole number of bytes, not milli-, micro- or nano-bytes",
        },
        { rule: `${celQuantity("self")}.compareTo(quantity('4Ti')) <= 0`, message: "memory must be at most 4Ti" },
      ),
    }),
    firmware: Type.Optional(
      StringEnum(["bios", "efi"] as const, { default: "bios", description: "bios (SeaBIOS) or efi (OVMF, on q35)." }),
    ),
    secureBoot: Type.Optional(Type.Boolean({ default: false, description: "UEFI Secure Boot; needs firmware efi." })),
    disks: Type.Optional(
      NamedList(Disk, {
        maxItems: 16,
        description: "Volumes attached as disks, in order (vda, vdb, … on virtio). Added or removed live.",
        ...validations(
          {
            rule: "self.all(d, !has(d.bootOrder) || self.exists_one(e, has(e.bootOrder) && e.bootOrder == d.bootOrder))",
            message: "two disks have the same bootOrder",
          },
          {
            rule: "self.all(d, self.exists_one(e, e.volumeRef == d.volumeRef))",
            message: "a Volume can be attached only once",
          },
        ),
      }),
    ),
    interfaces: Type.Optional(
      NamedList(Interface, {
        maxItems: 8,
        description: "NICs on Bridges of the VM's node. Added, removed or moved to another Bridge live.",
        ...validations({
          rule: "self.all(i, !has(i.mac) || self.exists_one(j, has(j.mac) && j.mac.lowerAscii() == i.mac.lowerAscii()))",
          message: "two interfaces have the same mac",
        }),
      }),
    ),
    cloudInit: Type.Optional(CloudInit),
    guestAgent: Type.Optional(
      Type.Boolean({
        description:
          "A QEMU guest agent channel: the guest's hostname, OS and addresses in status (GuestAgentConnected). " +
          "Omitted: on for VMs with cloudInit, off otherwise.",
      }),
    ),
    graphics: Type.Optional(
      StringEnum(["spice", "vnc", "none"] as const, {
        default: "spice",
        description:
          "A console (spice or vnc), or none (serial console only). Without a password it is a UNIX socket " +
          "on the node (root only); with one, it listens where the node's agent says (--console-listen). " +
          "status.console says how to reach it.",
      }),
    ),
    graphicsPasswordSecretRef: Type.Optional(
      SecretKeyRef(
        "password",
        "The key holding the password (printable ASCII; at most 8 characters for vnc, 64 for spice).",
        "A Secret in the VM's namespace holding the console's password. Changing the password takes effect " +
          "at the next restart (RestartRequired).",
      ),
    ),
    autostart: Type.Optional(Type.Boolean({ default: true, description: "Start the domain when the host boots." })),
    shutdownGracePeriodSeconds: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 3600,
        default: 60,
        description: "How long an ACPI shutdown may take before the domain is destroyed.",
      }),
    ),
  },
  validations({
    rule: "!has(self.secureBoot) || !self.secureBoot || self.firmware == 'efi'",
    message: "secureBoot needs firmware: efi",
    fieldPath: ".secureBoot",
  }),
);

export const VirtualMachineStatus = Type.Object({
  ...commonStatus,
  node: Type.Optional(Type.String({ description: "Node the domain was observed on." })),
  domainUUID: Type.Optional(Type.String({ description: "libvirt domain UUID, generated once." })),
  console: Type.Optional(
    Type.Object(
      {
        type: Type.String({ description: "spice or vnc." }),
        socket: Type.Optional(Type.String({ description: "The UNIX socket on the node (root only)." })),
        address: Type.Optional(Type.String({ description: "The address it listens on, with a password." })),
        port: Type.Optional(Type.Integer({ description: "The TCP port at that address." })),
      },
      { description: "How to reach the running VM's console, on its node." },
    ),
  ),
  shutdownDeadline: Type.Optional(
    Type.String({
      format: "date-time",
      description:
        "While an ACPI shutdown is in progress (runStrategy Halted): when the domain is destroyed if still running.",
    }),
  ),
  guest: Type.Optional(
    Type.Object(
      {
        hostname: Type.Optional(Type.String({ description: "The guest's hostname." })),
        os: Type.Optional(
          Type.Object(
            {
              id: Type.Optional(Type.String({ description: "os-release ID, for example debian." })),
              name: Type.Optional(Type.String({ description: "os-release NAME." })),
              prettyName: Type.Optional(Type.String({ description: "os-release PRETTY_NAME." })),
              versionId: Type.Optional(Type.String({ description: "os-release VERSION_ID, for example 12." })),
              kernelRelease: Type.Optional(Type.String({ description: "The running kernel's release." })),
            },
            { description: "The guest's operating system." },
          ),
        ),
      },
      { description: "What the guest agent says of the guest; absent while no agent answers." },
    ),
  ),
  interfaces: Type.Optional(
    Type.Array(
      Type.Object({
        name: Type.String({ description: "The spec's interface name." }),
        mac: Type.String({ description: "Its MAC address (from the spec, or generated once and kept)." }),
        bridge: Type.Optional(Type.String({ description: "The Bridge it is on." })),
        ips: Type.Optional(
          Type.Array(Type.String(), {
            maxItems: 32,
            description: "Addresses the guest agent reports on this NIC (address/prefix; no IPv6 link-local).",
          }),
        ),
      }),
      {
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
        maxItems: 8,
        description: "Each NIC: its identity, and the addresses the guest agent reports.",
      },
    ),
  ),
});

export type VirtualMachineSpec = Static<typeof VirtualMachineSpec>;
export type VirtualMachineStatus = Static<typeof VirtualMachineStatus>;
export type VirtualMachine = KaktusObject<"VirtualMachine", VirtualMachineSpec, VirtualMachineStatus>;
