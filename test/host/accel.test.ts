import { copyFileSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { libvirtProbeHost, probeGuestFiles } from "../../src/host/accel/libvirt-probe.js";
import { probeAccelerator, type Candidate } from "../../src/host/accel/probe.js";
import { LibvirtClient } from "../../src/host/libvirt/client.js";
import { nodes } from "../env/lab.js";
import { probeGuestDir } from "../env/probe-guest.js";
import { run } from "../env/proc.js";

/**
 * The node probe against the lab's real libvirtds: node B never has KVM (hidden), node A has
 * whatever this machine has; the assertions read what the probe found where the machine decides.
 */
const [nodeA, nodeB] = nodes as [(typeof nodes)[0], (typeof nodes)[0]];
const work = mkdtempSync(join(tmpdir(), "kaktus-probe-"));
const tcg: Candidate = { accelerator: "tcg", cpu: { mode: "maximum", disabledFeatures: [] } };

/** A probe guest whose initramfs has no /init: the kernel panics and the marker never comes. */
async function brokenGuest(): Promise<string> {
  const dir = join(work, "broken-guest");
  await run("mkdir", ["-p", dir]);
  copyFileSync(join(probeGuestDir(), probeGuestFiles.kernel), join(dir, probeGuestFiles.kernel));
  await run("cpio", ["--quiet", "-o", "-H", "newc", "-F", join(dir, probeGuestFiles.initrd)], { input: "" });
  return dir;
}

describe("node probe against the lab's libvirtds", () => {
  const clients = { a: new LibvirtClient(nodeA.libvirtUri), b: new LibvirtClient(nodeB.libvirtUri) };

  afterAll(async () => {
    await Promise.all(Object.values(clients).map((c) => c.close()));
    rmSync(work, { recursive: true, force: true });
  });

  it("node B (KVM hidden) is a TCG node, and says libvirt offers no KVM", async () => {
    const host = libvirtProbeHost(clients.b, { guestDir: probeGuestDir(), workDir: join(work, "b") });
    const choice = await probeAccelerator(host, { accelerator: "auto" });
    expect(choice).toMatchObject({ accelerator: "tcg", cpu: { mode: "maximum", disabledFeatures: [] } });
    expect(choice.reason).toMatch(/^TCG because libvirt offers no KVM \(.*kvm.*not supported/);
    expect(choice.steps.map((s) => [s.check, s.ok])).toEqual([
      ["capabilities", false],
      ["paused-start", true],
    ]);
  });

  it("node A gets KVM only where real guest code ran under it, else TCG with the reason", async () => {
    const host = libvirtProbeHost(clients.a, { guestDir: probeGuestDir(), workDir: join(work, "a") });
    const choice = await probeAccelerator(host, { accelerator: "auto" });
    const kvmOffered = !nodeA.hideKvm && existsSync("/dev/kvm");
    console.log(`node A probe (/dev/kvm ${kvmOffered ? "offered" : "absent"}): ${choice.reason}`, choice.steps);
    if (choice.accelerator === "kvm") {
      expect(choice.steps.at(-1)).toMatchObject({ check: "guest-run", ok: true });
    } else {
      expect(choice.cpu.mode).toBe("maximum");
      // On a machine with KVM, only a failed step may have sent it to TCG, and the reason names it.
      if (kvmOffered) {
        expect(choice.steps.some((s) => !s.ok && s.check !== "capabilities")).toBe(true);
        expect(choice.reason).toMatch(/^TCG because (real guest code failed|no CPU starts under KVM)/);
      }
    }
  }, 60_000);

  it("a paused start that libvirt refuses fails with libvirt's reason", async () => {
    const host = libvirtProbeHost(clients.b, { workDir: join(work, "b") });
    await expect(host.startPaused({ accelerator: "kvm", cpu: tcg.cpu })).rejects.toThrow(/kvm/i);
    await expect(
      host.startPaused({ accelerator: "tcg", cpu: { mode: "custom", model: "NoSuchCpu", disabledFeatures: [] } }),
    ).rejects.toThrow(/NoSuchCpu/);
    expect(await clients.b.listDomains()).not.toContainEqual(
      expect.objectContaining({ name: expect.stringMatching(/^kaktus-probe-/) }),
    );
  });

  it("runs the probe guest to its marker, and leaves nothing behind", async () => {
    const host = libvirtProbeHost(clients.b, {
      guestDir: probeGuestDir(),
      workDir: join(work, "b"),
      guestTimeoutMs: 30_000,
    });
    const started = Date.now();
    expect(await host.runGuest(tcg)).toBe(true);
    console.log(`probe guest under TCG on node B: ${(Date.now() - started) / 1000} s`);
    expect((await clients.b.listDomains()).map((d) => d.name).filter((n) => n.startsWith("kaktus-probe-"))).toEqual([]);
  }, 60_000);

  it("a guest that never prints the marker fails the run, and so do one that takes too long and one that falls silent", async () => {
    const broken = libvirtProbeHost(clients.b, {
      guestDir: await brokenGuest(),
      workDir: join(work, "broken"),
      guestTimeoutMs: 30_000,
    });
    await expect(broken.runGuest(tcg)).rejects.toThrow(/^the guest stopped before finishing; console: \[ *\d/);
    const slow = libvirtProbeHost(clients.b, {
      guestDir: probeGuestDir(),
      workDir: join(work, "slow"),
      guestTimeoutMs: 300,
    });
    await expect(slow.runGuest(tcg)).rejects.toThrow(/^the guest did not finish within 0.3 s/);
    // The probe guest works 1 s without a word between its start line and its marker.
    const hushed = libvirtProbeHost(clients.b, {
      guestDir: probeGuestDir(),
      workDir: join(work, "hushed"),
      guestSilenceMs: 500,
    });
    await expect(hushed.runGuest(tcg)).rejects.toThrow(/^the guest's console stayed silent for 0.5 s/);
    expect((await clients.b.listDomains()).map((d) => d.name).filter((n) => n.startsWith("kaktus-probe-"))).toEqual([]);
  }, 60_000);

  it("without a probe guest, KVM cannot be verified and there is no guest run", async () => {
    const host = libvirtProbeHost(clients.b, { guestDir: join(work, "nothing-here"), workDir: join(work, "b") });
    expect(await host.runGuest(tcg)).toBe(false);
  });
});
