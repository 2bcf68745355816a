import type { CpuCapabilities } from "./capabilities.js";

/**
 * Which accelerator and default CPU a node's VMs get, decided from what actually works rather than
 * from what libvirt advertises. Capabilities are read first; then each KVM CPU candidate is started
 * paused (catches refusals such as an MSR KVM cannot set, in about a second); then real guest code
 * runs under the chosen candidate, because a paused start passes on hosts where every real guest
 * dies (nested KVM with a broken instruction emulator). When any step fails, the node uses TCG.
 *
 * The steps go through `ProbeHost`, so the decision table is tested without a hypervisor and the
 * real probe (./libvirt-probe.ts) only runs domains.
 */

export type Accelerator = "kvm" | "tcg";
export type CpuMode = "host-passthrough" | "host-model" | "maximum" | "custom";

/** The CPU a VM gets when its spec names none. */
export interface CpuChoice {
  mode: CpuMode;
  /** A libvirt CPU model name, with mode custom. */
  model?: string;
  /** Features the probe had to turn off for the guest to start (host modes only). */
  disabledFeatures: string[];
}

export interface Candidate {
  accelerator: Accelerator;
  cpu: CpuChoice;
}

export interface ProbeStep {
  check: "capabilities" | "paused-start" | "guest-run";
  candidate: string;
  ok: boolean;
  ms: number;
  message?: string;
}

export interface AcceleratorChoice extends Candidate {
  /** "flag" when --accelerator forced it, else "probe". */
  decidedBy: "probe" | "flag";
  /** One sentence a person can act on. */
  reason: string;
  steps: ProbeStep[];
}

/** What the probe asks of the host; every method throws with the host's own message on failure. */
export interface ProbeHost {
  cpuCapabilities(accelerator: Accelerator): Promise<CpuCapabilities>;
  /** Starts the candidate as a tiny paused domain, then removes it. */
  startPaused(candidate: Candidate): Promise<void>;
  /** Boots real guest code under the candidate and waits for it to finish; false: no probe guest installed. */
  runGuest(candidate: Candidate): Promise<boolean>;
}

export interface ProbeOptions {
  accelerator: "auto" | Accelerator;
  /** The default CPU asked for by flag: host-passthrough, host-model or a model name. */
  cpuModel?: string;
}

/** A forced choice (flag) that does not work here, or a node on which no guest can start at all. */
export class ProbeError extends Error {
  override name = "ProbeError";
  constructor(
    message: string,
    readonly steps: ProbeStep[],
  ) {
    super(message);
  }
}

/** MSRs that QEMU fails to set on some hosts (nested KVM, mixed CPUs), and the CPU feature behind each. */
const featureOfMsr: Record<number, string> = {
  0x48: "spec-ctrl",
  0x10a: "arch-capabilities",
  0x122: "tsx-ctrl",
  0x345: "pdcm",
  0x6e0: "tsc-deadline",
};

/** The CPU features a failed start names (an MSR QEMU could not set, or a feature the host lacks). */
export function featuresFromFailure(message: string): string[] {
  const found = new Set<string>();
  for (const m of message.matchAll(/failed to set MSR (0x[0-9a-f]+)/gi)) {
    const feature = featureOfMsr[Number(m[1])];
    if (feature) found.add(feature);
  }
  for (const m of message.matchAll(/requested feature: CPUID[^ ]*?\.([a-z0-9_-]+) \[bit/gi)) found.add(m[1]!);
  return [...found].sort();
}

export const hostModes = ["host-passthrough", "host-model"] as const;
export const isHostMode = (mode: string): mode is (typeof hostModes)[number] =>
  (hostModes as readonly string[]).includes(mode);

/** "kvm host-passthrough -arch-capabilities": how steps and reasons name a candidate. */
export function describeCandidate({ accelerator, cpu }: Candidate): string {
  return [accelerator, cpu.model ?? cpu.mode, ...cpu.disabledFeatures.map((f) => `-${f}`)].join(" ");
}

const cpuFor = (model: string, disabledFeatures: string[] = []): CpuChoice =>
  isHostMode(model) || model === "maximum"
    ? { mode: model, disabledFeatures }
    : { mode: "custom", model, disabledFeatures };

/** How many rounds of turning off the features a failure names, per CPU mode. */
const maxFeatureRounds = 3;

export async function probeAccelerator(host: ProbeHost, opts: ProbeOptions): Promise<AcceleratorChoice> {
  const steps: ProbeStep[] = [];
  const attempt = async (check: ProbeStep["check"], candidate: Candidate, fn: () => Promise<unknown>) => {
    const started = performance.now();
    try {
      const value = await fn();
      steps.push({ check, candidate: describeCandidate(candidate), ok: true, ms: elapsed(started) });
      return { ok: true as const, value };
    } catch (err) {
      const message = (err as Error).message;
      steps.push({ check, candidate: describeCandidate(candidate), ok: false, ms: elapsed(started), message });
      return { ok: false as const, message };
    }
  };
  const decidedBy = opts.accelerator === "auto" ? "probe" : "flag";

  let kvmTrouble = "";
  if (opts.accelerator !== "tcg") {
    const kvm = await kvmCandidate(host, opts, attempt);
    if ("candidate" in kvm) {
      // A forced KVM is trusted to run guests: only the CPU is probed.
      if (opts.accelerator === "kvm")
        return { ...kvm.candidate, decidedBy, reason: `forced by flag; ${kvm.note}`, steps };
      const run = await attempt("guest-run", kvm.candidate, () => host.runGuest(kvm.candidate));
      if (run.ok && run.value === true)
        return { ...kvm.candidate, decidedBy, reason: `${kvm.note}, and real guest code ran under it`, steps };
      kvmTrouble = run.ok
        ? `KVM could not be verified with real guest code (no probe guest installed)`
        : `real guest code failed under ${describeCandidate(kvm.candidate)}: ${run.message}`;
    } else kvmTrouble = kvm.trouble;
    if (opts.accelerator === "kvm")
      throw new ProbeError(`--accelerator=kvm, but KVM does not work here: ${kvmTrouble}`, steps);
  }

  const model = opts.cpuModel ?? "maximum";
  if (isHostMode(model))
    throw new ProbeError(
      `the default CPU ${model} needs KVM, and this node runs TCG${kvmTrouble ? ` (${kvmTrouble})` : ""}`,
      steps,
    );
  const tcg: Candidate = { accelerator: "tcg", cpu: cpuFor(model) };
  const start = await attempt("paused-start", tcg, () => host.startPaused(tcg));
  if (!start.ok)
    throw new ProbeError(`no guest can start on this node: ${describeCandidate(tcg)}: ${start.message}`, steps);
  const reason =
    opts.accelerator === "tcg" ? "forced by flag" : `TCG because ${kvmTrouble || "libvirt offers no KVM here"}`;
  return { ...tcg, decidedBy, reason, steps };
}

type Attempt = (
  check: ProbeStep["check"],
  candidate: Candidate,
  fn: () => Promise<unknown>,
) => Promise<{ ok: true; value: unknown } | { ok: false; message: string }>;

/**
 * The first KVM candidate that starts paused, in this order: host-passthrough, host-model, then each
 * of them again with the features its failure named turned off (the flag's model alone when given).
 */
async function kvmCandidate(
  host: ProbeHost,
  opts: ProbeOptions,
  attempt: Attempt,
): Promise<{ candidate: Candidate; note: string } | { trouble: string }> {
  let caps: CpuCapabilities | undefined;
  const kvmCaps = { accelerator: "kvm", cpu: cpuFor("host-passthrough") } as const;
  const read = await attempt("capabilities", kvmCaps, async () => (caps = await host.cpuCapabilities("kvm")));
  if (!read.ok || !caps) return { trouble: `libvirt offers no KVM (${read.ok ? "no capabilities" : read.message})` };
  const offered = caps;
  const models = opts.cpuModel
    ? [opts.cpuModel]
    : hostModes.filter((m) => (m === "host-passthrough" ? offered.hostPassthrough : offered.hostModel));
  if (!models.length) return { trouble: "libvirt offers neither host-passthrough nor host-model under KVM" };

  const failures: { model: string; message: string }[] = [];
  for (const model of models) {
    const candidate: Candidate = { accelerator: "kvm", cpu: cpuFor(model) };
    const start = await attempt("paused-start", candidate, () => host.startPaused(candidate));
    if (start.ok) return { candidate, note: `${model} starts under KVM` };
    failures.push({ model, message: start.message });
  }
  for (const failure of failures) {
    let disabled: string[] = [];
    let message = failure.message;
    for (let round = 0; round < maxFeatureRounds; round++) {
      const more = featuresFromFailure(message).filter((f) => !disabled.includes(f));
      if (!more.length) break;
      disabled = [...disabled, ...more].sort();
      const candidate: Candidate = { accelerator: "kvm", cpu: cpuFor(failure.model, disabled) };
      const start = await attempt("paused-start", candidate, () => host.startPaused(candidate));
      if (start.ok)
        return { candidate, note: `${failure.model} starts under KVM with ${disabled.join(", ")} turned off` };
      message = start.message;
    }
  }
  const last = failures[0]!;
  return { trouble: `no CPU starts under KVM (${last.model}: ${last.message})` };
}

const elapsed = (since: number) => Math.round(performance.now() - since);
