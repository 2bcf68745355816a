/**
 * The parts of a libvirt domain the operator manages, as plain data. The desired model is built
 * from a VirtualMachine; the observed one is read from libvirt's XML. Everything libvirt fills in
 * by itself (PCI addresses, its own aliases, controllers, default input devices, security labels)
 * is simply not part of the model, so it can never read as drift.
 */
export interface DomainModel {
  name: string;
  uuid: string;
  /** "kvm" on real Kaktus nodes, "qemu" (TCG) where there is no /dev/kvm. */
  type: "kvm" | "qemu";
  memoryKiB: bigint;
  vcpus: number;
  cpu: CpuModel;
  firmware: "bios" | "efi";
  secureBoot: boolean;
  disks: DiskModel[];
  interfaces: InterfaceModel[];
  graphics: "spice" | "vnc" | "none";
  /** Where the console of `graphics` listens, and with which password; absent for "none". */
  console?: ConsoleModel;
  /** A QEMU guest agent channel (org.qemu.guest_agent.0). */
  guestAgent: boolean;
  /** Whether a guest agent is connected on that channel (live XML only; never rendered). */
  guestAgentConnected?: boolean;
  /** The object this domain belongs to (from <metadata>); absent on domains the operator did not make. */
  owner?: DomainOwner;
}

/** "maximum" is what TCG offers in place of host-passthrough (QEMU's "max" CPU). */
export interface CpuModel {
  mode: "host-passthrough" | "host-model" | "maximum" | "custom";
  /** A libvirt CPU model name, with mode custom. */
  model?: string;
  /** Sorted by name, so that two equal CPUs compare equal. */
  features: CpuFeature[];
}

export interface CpuFeature {
  name: string;
  policy: "require" | "disable";
}

export interface ConsoleModel {
  /**
   * "socket": a UNIX socket libvirt makes in the domain's private folder (root only on the node);
   * else the address QEMU listens on (TCP, a port libvirt picks), only ever with a password.
   */
  listen: string;
  /** sha256 of the password, kept in the owner metadata: the password itself is never read back. */
  passwordDigest?: string;
  /** Live XML only: the socket's path, or the TCP port libvirt chose. */
  socket?: string;
  port?: number;
}

export interface DomainOwner {
  namespace: string;
  name: string;
  uid: string;
  /** The VM's shutdown grace when the domain was defined: an orphan is stopped with it. */
  graceSeconds?: number;
}

export interface DiskModel {
  /** The spec's disk name ("os"); the cloud-init cdrom is "cloudinit". */
  name: string;
  /** Guest device name (vda, sda, …). */
  target: string;
  bus: "virtio" | "scsi" | "sata";
  source: { kind: "rbd"; pool: string; image: string } | { kind: "file"; path: string };
  device: "disk" | "cdrom";
  bootOrder?: number;
  readOnly: boolean;
}

export interface InterfaceModel {
  /** The spec's interface name ("public"). */
  name: string;
  mac: string;
  bridge: string;
  model: "virtio" | "e1000";
  /** The host tap device of a running domain's NIC (live XML only; never rendered). */
  tap?: string;
}

/** Host facts the XML depends on: how QEMU reaches Ceph, which virtualization the node has, its default CPU. */
export interface NodeFacts {
  domainType: "kvm" | "qemu";
  /** The CPU of VMs whose spec names none: what the node's probe found to work. */
  defaultCpu: CpuModel;
  ceph: { monitors: { host: string; port: number }[]; user: string; secretUuid: string };
}

/** User-visible aliases ("ua-" prefix) tie libvirt devices back to names in the spec. */
export const diskAlias = (name: string) => `ua-disk-${name}`;
export const nicAlias = (name: string) => `ua-nic-${name}`;
export const cloudInitDiskName = "cloudinit";
export const guestAgentChannel = "org.qemu.guest_agent.0";
