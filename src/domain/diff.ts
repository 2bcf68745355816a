import { isDeepStrictEqual } from "node:util";
import type { DiskModel, DomainModel, InterfaceModel } from "./model.js";

/**
 * How a difference between desired and observed can be applied:
 * - live: on the running domain now (attach, detach or update a device) and in its definition;
 * - restart: in the persistent definition now, in effect after the next restart (RestartRequired).
 * A changed identity (name, UUID) is of the second kind: only a new definition can carry it.
 */
export type ChangeClass = "live" | "restart";

export type Change =
  | { kind: "attach-disk"; disk: DiskModel; class: "live" }
  | { kind: "detach-disk"; disk: DiskModel; class: "live" }
  | { kind: "attach-interface"; nic: InterfaceModel; class: "live" }
  | { kind: "detach-interface"; nic: InterfaceModel; class: "live" }
  | { kind: "update-interface"; nic: InterfaceModel; class: "live" }
  | { kind: "field"; field: string; desired: unknown; observed: unknown; class: ChangeClass };

const byName = <T extends { name: string }>(list: T[]) => new Map(list.map((x) => [x.name, x]));

/**
 * Every difference, classified; an empty list means the domain is converged. `live`: the observed
 * model is a running domain's, where libvirt has expanded host-model into the CPU it chose.
 */
export function diffDomains(desired: DomainModel, observed: DomainModel, { live = false } = {}): Change[] {
  const changes: Change[] = [];
  const field = (name: string, d: unknown, o: unknown, cls: ChangeClass) => {
    if (!isDeepStrictEqual(d, o)) changes.push({ kind: "field", field: name, desired: d, observed: o, class: cls });
  };
  field("name", desired.name, observed.name, "restart");
  field("uuid", desired.uuid, observed.uuid, "restart");
  field("type", desired.type, observed.type, "restart");
  field("memory", desired.memoryKiB, observed.memoryKiB, "restart");
  field("vcpus", desired.vcpus, observed.vcpus, "restart");
  if (!(live && desired.cpu.mode === "host-model")) field("cpu", desired.cpu, observed.cpu, "restart");
  field("firmware", desired.firmware, observed.firmware, "restart");
  field("secureBoot", desired.secureBoot, observed.secureBoot, "restart");
  field("graphics", desired.graphics, observed.graphics, "restart");
  // Where it listens and with which password; the socket path or port libvirt chose is not asked for.
  const asked = (c: DomainModel["console"]) => c && { listen: c.listen, passwordDigest: c.passwordDigest };
  field("console", asked(desired.console), asked(observed.console), "restart");
  field("guestAgent", desired.guestAgent, observed.guestAgent, "restart");

  const observedDisks = byName(observed.disks);
  const desiredDisks = byName(desired.disks);
  for (const disk of desired.disks) {
    const o = observedDisks.get(disk.name);
    if (!o) changes.push({ kind: "attach-disk", disk, class: "live" });
    // Same name, other backing or bus: the guest would see another disk; only a restart is safe.
    else field(`disks[${disk.name}]`, disk, o, "restart");
  }
  for (const disk of observed.disks) {
    if (!desiredDisks.has(disk.name)) changes.push({ kind: "detach-disk", disk, class: "live" });
  }

  const observedNics = byName(observed.interfaces);
  const desiredNics = byName(desired.interfaces);
  for (const nic of desired.interfaces) {
    const o = observedNics.get(nic.name);
    if (!o) changes.push({ kind: "attach-interface", nic, class: "live" });
    else if (o.mac !== nic.mac || o.model !== nic.model) field(`interfaces[${nic.name}]`, nic, o, "restart");
    // Moving a NIC to another bridge is a live update of its source.
    else if (o.bridge !== nic.bridge) changes.push({ kind: "update-interface", nic, class: "live" });
  }
  for (const nic of observed.interfaces) {
    if (!desiredNics.has(nic.name)) changes.push({ kind: "detach-interface", nic, class: "live" });
  }
  return changes;
}
