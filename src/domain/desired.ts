import { namespaceOf, vmDomainName } from "../api/names.js";
import type { VirtualMachine } from "../api/virtualmachine.js";
import { toBytes } from "../api/quantity.js";
import { cloudInitDiskName, type ConsoleModel, type CpuModel, type DiskModel, type DomainModel } from "./model.js";

/** What a VirtualMachine's references resolved to, and what was generated once and kept in status. */
export interface ResolvedVm {
  /** Domain UUID, generated once. */
  uuid: string;
  /** MAC per interface name: from the spec, or generated once and kept in status. */
  macs: Record<string, string>;
  /** RBD image per volumeRef. */
  volumes: Record<string, { pool: string; image: string }>;
  /** Linux bridge name per bridgeRef. */
  bridges: Record<string, string>;
  /** Path of the NoCloud ISO on the node, when the VM has cloud-init. */
  cloudInitIso?: string;
  domainType: "kvm" | "qemu";
  /** The node's CPU for VMs that name none (from its probe). */
  defaultCpu: CpuModel;
  /** Where the console listens and the digest of its password (graphics spice or vnc). */
  console?: ConsoleModel;
}

/** The VM asks for something this node cannot give (host-passthrough on a TCG node): nothing to retry. */
export class UnsupportedOnNode extends Error {
  override name = "UnsupportedOnNode";
}

/** Spec disks take vda… at most vdp (16 disks); the seed sits apart. */
const cloudInitTarget = "vdz";
const targetPrefix: Record<DiskModel["bus"], string> = { virtio: "vd", scsi: "sd", sata: "sd" };
/** vda, vdb, … vdz, vdaa: the kernel's own naming. */
function targetName(prefix: string, index: number): string {
  let suffix = "";
  for (let i = index + 1; i > 0; i = Math.floor((i - 1) / 26))
    suffix = String.fromCharCode(97 + ((i - 1) % 26)) + suffix;
  return prefix + suffix;
}

const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

/**
 * The node's CPU when the spec names none; a host mode only where the node runs KVM (it keeps the
 * features the node's probe had to turn off); a named model as it is. The spec's features come last
 * and win over the node's for the same name.
 */
function cpuOf(cpu: VirtualMachine["spec"]["cpu"], r: ResolvedVm): CpuModel {
  const model = cpu?.model;
  let base: CpuModel;
  if (model === undefined) base = r.defaultCpu;
  else if (model === "host-passthrough" || model === "host-model") {
    if (r.domainType !== "kvm")
      throw new UnsupportedOnNode(`cpu.model ${model} needs KVM, and this node runs VMs under TCG (no usable KVM)`);
    base = { mode: model, features: r.defaultCpu.features.filter((f) => f.policy === "disable") };
  } else base = { mode: "custom", model, features: [] };
  const features = new Map(base.features.map((f) => [f.name, f]));
  for (const f of cpu?.features ?? []) features.set(f.name, { name: f.name, policy: f.policy ?? "require" });
  return { ...base, features: [...features.values()].sort(byName) };
}

/** The spec's switch; omitted, a VM configured by cloud-init (whose images carry the agent) gets one. */
export const guestAgentOn = (vm: VirtualMachine) => vm.spec.guestAgent ?? vm.spec.cloudInit !== undefined;

/** The domain a VirtualMachine asks for. Pure: everything it needs is passed in. */
export function desiredDomain(vm: VirtualMachine, r: ResolvedVm): DomainModel {
  const s = vm.spec;
  const used: Record<string, number> = {};
  const nextTarget = (bus: DiskModel["bus"]) => {
    const prefix = targetPrefix[bus];
    const index = used[prefix] ?? 0;
    used[prefix] = index + 1;
    return targetName(prefix, index);
  };
  const disks: DiskModel[] = (s.disks ?? []).map((d) => {
    const volume = r.volumes[d.volumeRef];
    if (!volume) throw new Error(`volume ${d.volumeRef} is not resolved`);
    const bus = d.bus ?? "virtio";
    return {
      name: d.name,
      target: nextTarget(bus),
      bus,
      source: { kind: "rbd", ...volume },
      device: "disk",
      ...(d.bootOrder !== undefined ? { bootOrder: d.bootOrder } : {}),
      readOnly: d.readOnly ?? false,
    };
  });
  // A read-only virtio disk, as KubeVirt attaches its NoCloud disk: Debian's cloud kernel (that of
  // its cloud images) has no SATA (AHCI) driver and never sees a SATA cdrom. Its target is fixed
  // past the last a spec can use, so that a disk added to the spec never renames it.
  if (r.cloudInitIso) {
    disks.push({
      name: cloudInitDiskName,
      target: cloudInitTarget,
      bus: "virtio",
      source: { kind: "file", path: r.cloudInitIso },
      device: "disk",
      readOnly: true,
    });
  }
  return {
    name: vmDomainName(vm),
    uuid: r.uuid,
    type: r.domainType,
    memoryKiB: (toBytes(s.memory) + 1023n) / 1024n,
    vcpus: s.cpu?.cores ?? 1,
    cpu: cpuOf(s.cpu, r),
    firmware: s.firmware ?? "bios",
    secureBoot: s.secureBoot ?? false,
    disks,
    interfaces: (s.interfaces ?? []).map((i) => {
      const mac = i.mac ?? r.macs[i.name];
      const bridge = r.bridges[i.bridgeRef];
      if (!mac) throw new Error(`interface ${i.name} has no MAC yet`);
      if (!bridge) throw new Error(`bridge ${i.bridgeRef} is not resolved`);
      return { name: i.name, mac: mac.toLowerCase(), bridge, model: i.model ?? "virtio" };
    }),
    graphics: s.graphics ?? "spice",
    ...((s.graphics ?? "spice") !== "none" ? { console: r.console ?? { listen: "socket" } } : {}),
    guestAgent: guestAgentOn(vm),
    owner: {
      namespace: namespaceOf(vm),
      name: vm.metadata.name,
      uid: vm.metadata.uid ?? "",
      graceSeconds: s.shutdownGracePeriodSeconds ?? 60,
    },
  };
}
