import { randomBytes } from "node:crypto";
import { copyFile, mkdir, readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { XMLBuilder } from "fast-xml-parser";
import type { Hypervisor } from "../libvirt/client.js";
import { LibvirtError } from "../libvirt/errors.js";
import { parseCpuCapabilities } from "./capabilities.js";
import type { Candidate, ProbeHost } from "./probe.js";

/** What the probe guest's init prints once its work is done, just before it powers off. */
export const probeGuestMarker = "KAKTUS-PROBE-OK";
/** The probe guest's files in its folder: a Linux kernel and an initramfs whose /init does the work. */
export const probeGuestFiles = { kernel: "vmlinuz", initrd: "initrd.img" } as const;

export interface LibvirtProbeOptions {
  /** Folder with the probe guest (`vmlinuz`, `initrd.img`); undefined or incomplete: no guest run. */
  guestDir?: string;
  /** A folder QEMU can read and write on the node (the agent's state folder): guest files and console logs go here. */
  workDir: string;
  /** How long the guest may take in all; a working KVM needs a second or two, TCG about five. */
  guestTimeoutMs?: number;
  /**
   * How long its console may stay silent. A booting kernel prints all the time, so a silent guest
   * is a hung one: a broken nested KVM hangs right after the kernel decompresses itself.
   */
  guestSilenceMs?: number;
}

const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: "@_", suppressEmptyNode: true });

/** A name no VirtualMachine's domain can have (those contain "_"), unique per probe. */
const probeName = () => `kaktus-probe-${randomBytes(4).toString("hex")}`;

interface GuestBoot {
  kernel: string;
  initrd: string;
  console: string;
}

/** The smallest domain that exercises a candidate: q35, one vCPU, no disks, no network. */
export function probeDomainXml(name: string, { accelerator, cpu }: Candidate, boot?: GuestBoot): string {
  const domain = {
    "@_type": accelerator === "kvm" ? "kvm" : "qemu",
    name,
    memory: { "@_unit": "MiB", "#text": boot ? "128" : "64" },
    vcpu: "1",
    os: {
      type: { "@_arch": "x86_64", "@_machine": "q35", "#text": "hvm" },
      ...(boot ? { kernel: boot.kernel, initrd: boot.initrd, cmdline: "console=ttyS0 panic=-1" } : {}),
    },
    features: { acpi: "", apic: "" },
    cpu: {
      "@_mode": cpu.mode,
      ...(cpu.model ? { "@_match": "exact", model: { "@_fallback": "forbid", "#text": cpu.model } } : {}),
      feature: cpu.disabledFeatures.map((f) => ({ "@_policy": "disable", "@_name": f })),
    },
    on_poweroff: "destroy",
    // A guest that panics reboots (panic=-1): the probe domain ends instead of looping.
    on_reboot: "destroy",
    on_crash: "destroy",
    devices: {
      ...(boot ? { serial: { "@_type": "file", source: { "@_path": boot.console }, target: { "@_port": "0" } } } : {}),
      memballoon: { "@_model": "none" },
    },
  };
  return builder.build({ domain }) as string;
}

/** The probe's steps done with real transient domains on the node's libvirtd. */
export function libvirtProbeHost(hv: Hypervisor, opts: LibvirtProbeOptions): ProbeHost {
  const timeoutMs = opts.guestTimeoutMs ?? 20_000;
  const silenceMs = opts.guestSilenceMs ?? 3_000;
  const dir = join(opts.workDir, "probe");
  const destroy = (name: string) =>
    hv.destroy(name).catch((err: unknown) => {
      if (!(err instanceof LibvirtError && (err.kind === "not-found" || err.kind === "conflict"))) throw err;
    });

  return {
    cpuCapabilities: async (accelerator) =>
      parseCpuCapabilities(await hv.domainCapabilities(accelerator === "kvm" ? "kvm" : "qemu")),

    async startPaused(candidate) {
      const domain = await hv.createTransient(probeDomainXml(probeName(), candidate), { paused: true });
      await destroy(domain.name);
    },

    async runGuest(candidate) {
      const boot = await installGuest(opts.guestDir, dir);
      if (!boot) return false;
      const name = probeName();
      const consoleLog = join(dir, `${name}.console`);
      try {
        await hv.createTransient(probeDomainXml(name, candidate, { ...boot, console: consoleLog }), { paused: false });
        const deadline = Date.now() + timeoutMs;
        let heard = { at: Date.now(), bytes: 0 };
        for (;;) {
          const domain = await hv.lookup(name);
          // A transient domain is gone once it stopped: the console says whether its work was done.
          if (!domain) break;
          const bytes = (await stat(consoleLog).catch(() => undefined))?.size ?? 0;
          if (bytes !== heard.bytes) heard = { at: Date.now(), bytes };
          // QEMU stops the guest on a KVM internal error (for example an instruction it cannot emulate).
          const problem =
            domain.state === "paused" || domain.state === "crashed"
              ? `the guest was stopped by the hypervisor (${domain.state})`
              : Date.now() >= deadline
                ? `the guest did not finish within ${timeoutMs / 1000} s`
                : Date.now() - heard.at >= silenceMs
                  ? `the guest's console stayed silent for ${silenceMs / 1000} s`
                  : undefined;
          if (problem) {
            await destroy(name);
            throw new Error(`${problem}${await tail(consoleLog)}`);
          }
          await sleep(100);
        }
        const output = await readFile(consoleLog, "utf8").catch(() => "");
        if (!output.includes(probeGuestMarker))
          throw new Error(`the guest stopped before finishing${await tail(consoleLog)}`);
        return true;
      } finally {
        await rm(consoleLog, { force: true });
      }
    },
  };
}

/** Copies the probe guest into the work folder (where QEMU can read it) unless it is there already. */
async function installGuest(
  guestDir: string | undefined,
  dir: string,
): Promise<Omit<GuestBoot, "console"> | undefined> {
  if (!guestDir) return undefined;
  const files = { kernel: join(dir, probeGuestFiles.kernel), initrd: join(dir, probeGuestFiles.initrd) };
  await mkdir(dir, { recursive: true, mode: 0o700 });
  for (const key of ["kernel", "initrd"] as const) {
    const source = join(guestDir, probeGuestFiles[key]);
    const from = await stat(source).catch(() => undefined);
    if (!from) return undefined;
    const to = await stat(files[key]).catch(() => undefined);
    if (to?.size !== from.size || to.mtimeMs < from.mtimeMs) await copyFile(source, files[key]);
  }
  return files;
}

/** The last lines of the guest's console, for the reason a person reads. */
async function tail(consoleLog: string): Promise<string> {
  // Firmware and kernel write terminal escapes (ESC [ ... letter): only the words are kept.
  const escapes = new RegExp(`${String.fromCharCode(27)}\\[[0-9;?]*[a-zA-Z]`, "g");
  const text = (await readFile(consoleLog, "utf8").catch(() => "")).replace(escapes, "").trim();
  const last = text.split("\n").slice(-3).join(" | ").slice(-300);
  return last ? `; console: ${last}` : "; the console stayed empty";
}
