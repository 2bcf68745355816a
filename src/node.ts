import * as k8s from "@kubernetes/client-node";
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { isDeepStrictEqual } from "node:util";
import type { Logger } from "pino";
import type { CpuModel, NodeFacts } from "./domain/model.js";
import { libvirtProbeHost } from "./host/accel/libvirt-probe.js";
import {
  describeCandidate,
  probeAccelerator,
  ProbeError,
  type AcceleratorChoice,
  type ProbeOptions,
} from "./host/accel/probe.js";
import type { Hypervisor } from "./host/libvirt/client.js";
import type { Metrics } from "./metrics.js";
import { apiMessage } from "./runtime/client.js";

export const acceleratorLabel = "kaktus.kowabunga.cloud/accelerator";
export const cpuModeLabel = "kaktus.kowabunga.cloud/cpu-mode";
export const probeAnnotation = "kaktus.kowabunga.cloud/accelerator-probe";

export interface NodeFactsConfig {
  node: string;
  hypervisor: Hypervisor;
  ceph: { user: string; keyringPath: string; monitors: { host: string; port: number }[] };
  probe: ProbeOptions & { guestDir?: string; workDir: string };
  kubeConfig: k8s.KubeConfig;
  metrics: Metrics;
  log: Logger;
}

/**
 * What the domain XML needs from this node, settled once per libvirt connection: the accelerator and
 * default CPU from the probe (published on the Node, as KubeVirt's node labeller does), and the Ceph
 * key registered as a libvirt secret. A failure is retried on the next call.
 */
export class NodeFactsSource {
  private facts: Promise<NodeFacts> | undefined;
  private refreshing = false;
  private readonly listeners = new Set<() => void>();
  private readonly core: k8s.CoreV1Api;
  /** Writes to the Node object (for the API write metric). */
  writes = 0;

  constructor(private readonly config: NodeFactsConfig) {
    this.core = config.kubeConfig.makeApiClient(k8s.CoreV1Api);
  }

  /**
   * The first probe. A choice forced by flag (--accelerator, --cpu-model) that does not work here
   * rejects: the agent must not start. Any other failure is logged; VMs wait for a later probe.
   */
  async probeAtStart(): Promise<void> {
    const { accelerator, cpuModel } = this.config.probe;
    try {
      await this.get();
    } catch (err) {
      if (err instanceof ProbeError && (accelerator !== "auto" || cpuModel !== undefined)) throw err;
      this.config.log.error({ err }, "node probe failed; VMs on this node wait for it");
    }
  }

  get(): Promise<NodeFacts> {
    this.facts ??= this.resolve().catch((err: unknown) => {
      this.facts = undefined;
      throw err;
    });
    return this.facts;
  }

  /**
   * Probes again in the background whenever libvirtd comes back (restarted, maybe with another
   * KVM). VMs keep the facts they had until the new ones are in; `onChange` listeners hear when
   * those differ. Returns the unsubscribe function.
   */
  watch(): () => void {
    let connected = true;
    return this.config.hypervisor.onEvent((e) => {
      if (e.type === "lifecycle") return;
      if (e.type === "connected" && !connected) this.refresh();
      connected = e.type === "connected";
    });
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private refresh(): void {
    if (this.refreshing) return;
    this.refreshing = true;
    const previous = this.facts?.catch(() => undefined);
    this.resolve()
      .then(async (facts) => {
        this.facts = Promise.resolve(facts);
        if (!isDeepStrictEqual(await previous, facts)) for (const l of this.listeners) l();
      })
      .catch((err: unknown) => this.config.log.error({ err }, "node probe after a libvirt reconnect failed"))
      .finally(() => (this.refreshing = false));
  }

  private async resolve(): Promise<NodeFacts> {
    const choice = await this.probe();
    return {
      domainType: choice.accelerator === "kvm" ? "kvm" : "qemu",
      defaultCpu: cpuOfChoice(choice),
      ceph: await this.registerCephSecret(),
    };
  }

  private async probe(): Promise<AcceleratorChoice> {
    const { probe, hypervisor, log, metrics } = this.config;
    const started = performance.now();
    const host = libvirtProbeHost(hypervisor, probe);
    try {
      const choice = await probeAccelerator(host, probe);
      const seconds = (performance.now() - started) / 1000;
      metrics.probed(choice, seconds);
      log.info(
        {
          accelerator: choice.accelerator,
          cpu: describeCandidate(choice),
          decidedBy: choice.decidedBy,
          steps: choice.steps,
          seconds,
        },
        `node probe: ${choice.reason}`,
      );
      await this.publish(choice);
      return choice;
    } catch (err) {
      if (err instanceof ProbeError) {
        metrics.probed(undefined, (performance.now() - started) / 1000);
        log.error({ steps: err.steps }, `node probe: ${err.message}`);
        await this.publish(undefined, err);
      }
      throw err;
    }
  }

  /** Labels a scheduler or a person can select on, and the probe's details in an annotation. */
  private async publish(choice: AcceleratorChoice | undefined, failure?: ProbeError): Promise<void> {
    const details = choice
      ? {
          accelerator: choice.accelerator,
          cpu: choice.cpu,
          decidedBy: choice.decidedBy,
          reason: choice.reason,
          steps: choice.steps,
        }
      : { accelerator: "none", reason: failure?.message ?? "", steps: failure?.steps ?? [] };
    const body = {
      metadata: {
        labels: { [acceleratorLabel]: choice?.accelerator ?? "none", [cpuModeLabel]: choice?.cpu.mode ?? null },
        annotations: { [probeAnnotation]: JSON.stringify({ ...details, probedAt: new Date().toISOString() }) },
      },
    };
    try {
      this.writes++;
      await this.core.patchNode(
        { name: this.config.node, body },
        k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch),
      );
    } catch (err) {
      // The probe's result stands without its publication: VMs still get the right XML.
      this.config.log.warn({ error: apiMessage(err) }, "could not publish the probe's result on the Node");
    }
  }

  private async registerCephSecret(): Promise<NodeFacts["ceph"]> {
    const { hypervisor, ceph } = this.config;
    const key = /^\s*key\s*=\s*(\S+)\s*$/m.exec(await readFile(ceph.keyringPath, "utf8"))?.[1];
    if (!key) throw new Error(`no key in ${ceph.keyringPath}`);
    const secretUuid = uuidFrom(`kaktus-operator ceph client.${ceph.user}`);
    await hypervisor.defineSecret(
      `<secret ephemeral='no' private='yes'><uuid>${secretUuid}</uuid><usage type='ceph'><name>kaktus client.${ceph.user}</name></usage></secret>`,
    );
    // libvirt wants the raw cephx key, not its base64 text.
    await hypervisor.setSecretValue(secretUuid, Buffer.from(key, "base64"));
    return { monitors: ceph.monitors, user: ceph.user, secretUuid };
  }
}

/** The probe's CPU as the domain model's: the features it turned off stay off. */
export const cpuOfChoice = ({ cpu }: AcceleratorChoice): CpuModel => ({
  mode: cpu.mode,
  ...(cpu.model ? { model: cpu.model } : {}),
  features: cpu.disabledFeatures.map((name) => ({ name, policy: "disable" as const })),
});

/** A stable UUID (RFC 4122 layout, name-based) so every agent restart finds the same libvirt secret. */
function uuidFrom(name: string): string {
  const h = createHash("sha256").update(name).digest("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}
