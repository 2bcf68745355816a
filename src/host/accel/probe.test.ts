import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parseCpuCapabilities, type CpuCapabilities } from "./capabilities.js";
import {
  describeCandidate,
  featuresFromFailure,
  probeAccelerator,
  ProbeError,
  type Candidate,
  type ProbeOptions,
} from "./probe.js";

const msr = "internal error: qemu unexpectedly closed the monitor: error: failed to set MSR 0x10a to 0x69";
const full: CpuCapabilities = { hostPassthrough: true, hostModel: true, maximum: true, models: [] };

interface Row {
  name: string;
  /** CPU capabilities under KVM; undefined: libvirt offers no KVM. */
  kvm?: CpuCapabilities;
  /** Paused-start outcome by candidate description; missing: it starts. */
  refuse?: Record<string, string>;
  /** Outcome of real guest code: ran, failed (message), or no probe guest installed. */
  guest?: "ran" | "none" | string;
  opts?: Partial<ProbeOptions>;
  /** The choice as "accelerator cpu -disabled", or the start of a ProbeError's message. */
  want: string | { error: string };
  /** The candidates started paused, in order (when given). */
  tried?: string[];
}

const rows: Row[] = [
  { name: "working KVM: host-passthrough", kvm: full, want: "kvm host-passthrough", tried: ["kvm host-passthrough"] },
  { name: "no /dev/kvm: TCG", want: "tcg maximum", tried: ["tcg maximum"] },
  {
    name: "libvirt offers only host-model",
    kvm: { ...full, hostPassthrough: false },
    want: "kvm host-model",
    tried: ["kvm host-model"],
  },
  {
    name: "MSR refused: host-model tried next, then the feature turned off",
    kvm: full,
    refuse: { "kvm host-passthrough": msr, "kvm host-model": msr },
    want: "kvm host-passthrough -arch-capabilities",
    tried: ["kvm host-passthrough", "kvm host-model", "kvm host-passthrough -arch-capabilities"],
  },
  {
    name: "MSR refused by passthrough only: host-model wins before any feature is turned off",
    kvm: full,
    refuse: { "kvm host-passthrough": msr },
    want: "kvm host-model",
  },
  {
    name: "turning the feature off starts, but real guest code dies: TCG",
    kvm: full,
    refuse: { "kvm host-passthrough": msr, "kvm host-model": msr },
    guest: "no marker on the console within 10 s",
    want: "tcg maximum",
  },
  {
    name: "a refusal that names no feature: TCG",
    kvm: full,
    refuse: { "kvm host-passthrough": "KVM: permission denied", "kvm host-model": "KVM: permission denied" },
    want: "tcg maximum",
    tried: ["kvm host-passthrough", "kvm host-model", "tcg maximum"],
  },
  {
    name: "two features in a row",
    kvm: full,
    refuse: {
      "kvm host-passthrough": msr,
      "kvm host-model": "unrelated",
      "kvm host-passthrough -arch-capabilities": "failed to set MSR 0x6e0 to 0x1",
    },
    want: "kvm host-passthrough -arch-capabilities -tsc-deadline",
  },
  {
    name: "features that keep failing are bounded",
    kvm: full,
    refuse: {
      "kvm host-passthrough": msr,
      "kvm host-model": "unrelated",
      "kvm host-passthrough -arch-capabilities": "failed to set MSR 0x6e0 to 0x1",
      "kvm host-passthrough -arch-capabilities -tsc-deadline": "failed to set MSR 0x48 to 0x1",
      "kvm host-passthrough -arch-capabilities -spec-ctrl -tsc-deadline": "failed to set MSR 0x345 to 0x1",
    },
    want: "tcg maximum",
  },
  { name: "no probe guest installed: KVM unverified, TCG", kvm: full, guest: "none", want: "tcg maximum" },
  {
    name: "no CPU mode offered under KVM",
    kvm: { ...full, hostPassthrough: false, hostModel: false },
    want: "tcg maximum",
  },
  {
    name: "--accelerator=kvm trusts KVM to run guests (no guest run)",
    kvm: full,
    guest: "would fail",
    opts: { accelerator: "kvm" },
    want: "kvm host-passthrough",
  },
  {
    name: "--accelerator=kvm on a node without KVM: a startup error",
    opts: { accelerator: "kvm" },
    want: { error: "--accelerator=kvm, but KVM does not work here: libvirt offers no KVM" },
  },
  {
    name: "--accelerator=tcg on a KVM node",
    kvm: full,
    opts: { accelerator: "tcg" },
    want: "tcg maximum",
    tried: ["tcg maximum"],
  },
  {
    name: "--cpu-model host-model on working KVM",
    kvm: full,
    opts: { cpuModel: "host-model" },
    want: "kvm host-model",
    tried: ["kvm host-model"],
  },
  {
    name: "--cpu-model EPYC under KVM",
    kvm: full,
    opts: { cpuModel: "EPYC" },
    want: "kvm EPYC",
  },
  {
    name: "--cpu-model qemu64 on a TCG node",
    opts: { cpuModel: "qemu64" },
    want: "tcg qemu64",
  },
  {
    name: "--cpu-model host-passthrough on a TCG node: a startup error",
    opts: { cpuModel: "host-passthrough" },
    want: { error: "the default CPU host-passthrough needs KVM, and this node runs TCG" },
  },
  {
    name: "not even TCG starts",
    refuse: { "tcg maximum": "Could not access KVM kernel module" },
    want: { error: "no guest can start on this node: tcg maximum: Could not access KVM kernel module" },
  },
];

function fakeHost(row: Row) {
  const tried: string[] = [];
  return {
    tried,
    host: {
      cpuCapabilities: async (accelerator: string) => {
        if (accelerator === "kvm" && row.kvm) return row.kvm;
        if (accelerator === "tcg") return full;
        throw new Error("invalid argument: KVM is not supported by '/usr/bin/qemu-system-x86_64' on this host");
      },
      startPaused: async (c: Candidate) => {
        tried.push(describeCandidate(c));
        const refusal = row.refuse?.[describeCandidate(c)];
        if (refusal) throw new Error(refusal);
      },
      runGuest: async () => {
        if (row.guest === "none") return false;
        if (row.guest !== undefined && row.guest !== "ran") throw new Error(row.guest);
        return true;
      },
    },
  };
}

describe("the accelerator decision (capabilities + probe outcomes -> choice)", () => {
  it.each(rows)("$name", async (row) => {
    const { host, tried } = fakeHost(row);
    const opts: ProbeOptions = { accelerator: "auto", ...row.opts };
    const outcome = await probeAccelerator(host, opts).catch((err: unknown) => err);
    if (typeof row.want === "string") {
      expect(outcome).not.toBeInstanceOf(Error);
      const choice = outcome as Awaited<ReturnType<typeof probeAccelerator>>;
      expect(describeCandidate(choice)).toBe(row.want);
      expect(choice.decidedBy).toBe(opts.accelerator === "auto" ? "probe" : "flag");
      expect(choice.reason).not.toBe("");
      expect(choice.steps.length).toBeGreaterThan(0);
    } else {
      expect(outcome).toBeInstanceOf(ProbeError);
      expect((outcome as ProbeError).message).toContain(row.want.error);
    }
    if (row.tried) expect(tried).toEqual(row.tried);
  });

  it("says why it fell back to TCG", async () => {
    const { host } = fakeHost({ name: "", kvm: full, guest: "guest died: KVM internal error", want: "" });
    const choice = await probeAccelerator(host, { accelerator: "auto" });
    expect(choice.reason).toBe(
      "TCG because real guest code failed under kvm host-passthrough: guest died: KVM internal error",
    );
    expect(choice.steps.map((s) => [s.check, s.candidate, s.ok])).toEqual([
      ["capabilities", "kvm host-passthrough", true],
      ["paused-start", "kvm host-passthrough", true],
      ["guest-run", "kvm host-passthrough", false],
      ["paused-start", "tcg maximum", true],
    ]);
  });
});

describe("features named by a failed start", () => {
  it.each([
    [msr, ["arch-capabilities"]],
    ["failed to set MSR 0x48 to 0x1\nfailed to set MSR 0x10A to 0x69", ["arch-capabilities", "spec-ctrl"]],
    ["failed to set MSR 0x999 to 0x1", []],
    [
      "warning: host doesn't support requested feature: CPUID.07H:EDX.arch-capabilities [bit 29]",
      ["arch-capabilities"],
    ],
    ["qemu-system-x86_64: Could not access KVM kernel module: No such file or directory", []],
  ])("%s", (message, features) => expect(featuresFromFailure(message)).toEqual(features));
});

describe("domain capabilities", () => {
  it("reads CPU modes and models", () => {
    const caps = parseCpuCapabilities(readFileSync("test/fixtures/domcaps-kvm.xml", "utf8"));
    expect(caps).toMatchObject({ hostPassthrough: true, hostModel: true, maximum: true });
    expect(caps.models).toContainEqual({ name: "pentium3", usable: true });
    expect(caps.models).toContainEqual({ name: "Skylake-Server", usable: false });
  });

  it("reads a document without a CPU section as offering nothing", () => {
    expect(parseCpuCapabilities("<domainCapabilities/>")).toEqual({
      hostPassthrough: false,
      hostModel: false,
      maximum: false,
      models: [],
    });
  });
});
