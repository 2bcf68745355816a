import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { labAgent } from "../env/agents.js";
import { linkNames, nodes, rbdImages } from "../env/lab.js";
import { kubeconfigPath } from "../env/paths.js";
import { domainNames, kbr } from "../support/e2e.js";
import { kahunaBinary } from "../support/kstatus.js";
import { installCrds, kubectl } from "../support/kube.js";

/**
 * A Go client doing what Kahuna (the Kowabunga orchestrator, written in Go) does: test/kahuna creates
 * a Bridge, two Volumes and a VM with client-go's dynamic client, waits for them through kstatus,
 * grows a Volume, halts the VM and deletes everything. The agent of node A does the work.
 */
const [nodeA] = nodes as [(typeof nodes)[0]];
const agent = labAgent(nodeA, { metricsPort: 9472 });
const execFileAsync = promisify(execFile);
const ns = "kahuna";
const bridge = "kahuna0";

interface Step {
  step: string;
  seconds: number;
  status?: Record<string, string>;
  fields?: Record<string, string>;
  error?: string;
}

const cleanSlate = async () => {
  await kubectl(["delete", "namespace", ns, "--ignore-not-found", "--timeout=180s"]);
  await kubectl(["delete", kbr, bridge, "--ignore-not-found", "--timeout=60s"]);
};

describe("a Go client doing what Kahuna does", () => {
  let steps: Step[] = [];

  beforeAll(async () => {
    await installCrds();
    await agent.start();
    await cleanSlate();
    await kubectl(["create", "namespace", ns]);
    const args = ["-kubeconfig", kubeconfigPath, "-namespace", ns, "-node", nodeA.name, "-bridge", bridge];
    // Its steps are read whatever its exit status: a failing step says why in its line.
    const { stdout } = await execFileAsync(kahunaBinary(), args, { timeout: 600_000 }).catch(
      (err: { stdout?: string; stderr?: string }) => ({ stdout: `${err.stdout ?? ""}\n${err.stderr ?? ""}` }),
    );
    steps = stdout
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Step);
    console.log(`[figure] kahuna steps (s): ${steps.map((s) => `${s.step} ${s.seconds.toFixed(1)}`).join(", ")}`);
  }, 700_000);

  afterAll(async () => {
    await cleanSlate().catch(() => undefined);
    await agent.stop();
  }, 300_000);

  it("runs every step, in order, without an error", () => {
    expect(steps.length, "no step printed").toBeGreaterThan(0);
    expect(steps.map((s) => s.error ?? "")).toEqual(["", "", "", "", ""]);
    expect(steps.map((s) => s.step)).toEqual(["create", "current", "grow", "halt", "delete"]);
  });

  it("reads each new object InProgress until the operator has observed it, then Current", () => {
    const all = (status: string) => ({
      [`bridges/${bridge}`]: status,
      "volumes/kahuna-os": status,
      "volumes/kahuna-data": status,
      "virtualmachines/kahuna-vm": status,
    });
    expect(steps[0]?.status).toEqual(all("InProgress"));
    expect(steps[1]?.status).toEqual(all("Current"));
  });

  it("grows the data Volume and halts the VM, each Current again at its new generation", () => {
    expect(steps[2]?.status).toEqual({ "volumes/kahuna-data": "Current" });
    expect(steps[2]?.fields).toEqual({ capacity: "128Mi" });
    expect(steps[3]?.status).toEqual({ "virtualmachines/kahuna-vm": "Current" });
    expect(steps[3]?.fields).toEqual({ phase: "Stopped" });
  });

  it("deletes everything, and the host objects went with the API objects", async () => {
    expect(Object.values(steps[4]?.status ?? {})).toEqual(["NotFound", "NotFound", "NotFound", "NotFound"]);
    expect(await domainNames(nodeA)).not.toContain(`${ns}_kahuna-vm`);
    expect((await rbdImages("rbd")).filter((i) => i.startsWith(`${ns}.`))).toEqual([]);
    expect(await linkNames(nodeA.netns)).not.toContain(bridge);
  });
});
