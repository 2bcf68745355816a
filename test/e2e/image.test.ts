import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { testedImageArchive, unpackImage, type ImageConfig } from "../../image/build.js";
import { agentProcess, labAgentFlags } from "../env/agents.js";
import { cacheDir, labDir, linkNames, nodes, rbdImages, repoRoot } from "../env/lab.js";
import { run, waitFor } from "../env/proc.js";
import { applyObjects, domainState, kbr, kvm, kvol, waitReady } from "../support/e2e.js";
import { installCrds, kubectl } from "../support/kube.js";

/**
 * The agent as the image ships it: the OCI archive `npm run image` built (.ci/setup builds it) is
 * unpacked, and its entrypoint runs chrooted in that root file system, in a private mount namespace
 * where the lab's folders are bind-mounted at their own paths (as a DaemonSet mounts the node's
 * libvirt socket, Ceph conf and keyring), in the lab's network namespace. It is node B's only agent:
 * a Bridge, a Volume and a VM on node B converge through it alone.
 */
const [, nodeB] = nodes as [(typeof nodes)[0], (typeof nodes)[0]];
const root = join(labDir, "image-root");
const ns = "e2e-image";
const bridge = "kimg0";
const domain = `${ns}_img-vm`;
let config: ImageConfig = {};

const daemon = {
  name: `image-agent-${nodeB.name}`,
  comm: "node",
  launcher: "unshare",
  cmd: "unshare",
  args: [] as string[],
  env: {} as NodeJS.ProcessEnv,
};
const agent = agentProcess(nodeB, { metricsPort: 9474 }, daemon);

const cleanSlate = async () => {
  await kubectl(["delete", "namespace", ns, "--ignore-not-found", "--timeout=180s"]);
  await kubectl(["delete", kbr, bridge, "--ignore-not-found", "--timeout=60s"]);
};

describe("the agent from its image", () => {
  beforeAll(async () => {
    const archive = testedImageArchive();
    if (!existsSync(archive))
      throw new Error(`${archive} is missing: run \`bash .ci/setup\` (or \`npm run lab -- build\`)`);
    // A previous run's root may still hold its mounts only in that run's (gone) namespace: rm stays on this file system.
    await run("rm", ["-rf", "--one-file-system", root]);
    ({ config } = await unpackImage(archive, root));
    const accelerator = readFileSync(join(nodeB.dir, "accelerator"), "utf8").trim();
    daemon.args = [
      "--mount",
      "--propagation",
      "private",
      "--",
      process.execPath,
      "--import",
      "tsx",
      join(repoRoot, "test/env/enter-root.ts"),
      root,
      labDir,
      cacheDir,
      "/run/netns",
      "--",
      ...(config.Entrypoint ?? []),
      ...labAgentFlags(nodeB, { metricsPort: 9474, args: [`--accelerator=${accelerator}`] }),
    ];
    daemon.env = { PATH: process.env.PATH, ...Object.fromEntries((config.Env ?? []).map((e) => e.split(/=(.*)/s))) };
    await installCrds();
    await agent.start();
    await cleanSlate();
  }, 300_000);

  afterAll(async () => {
    await cleanSlate().catch(() => undefined);
    await agent.stop();
    await run("rm", ["-rf", "--one-file-system", root]);
  }, 300_000);

  it("is the image's build: its node, its entrypoint, its revision in kaktus_build_info", async () => {
    expect(config.Entrypoint).toEqual(["/usr/local/bin/node", "/app/dist/main.js"]);
    const revision = config.Labels?.["org.opencontainers.image.revision"];
    expect(revision).toMatch(/^[0-9a-f]{40}$/);
    expect(await agent.metric("kaktus_build_info", { revision: revision! })).toBe(1);
    const { text } = await agent.get("/metrics");
    expect(text).toMatch(/^nodejs_version_info\{[^}]*version="v20\.20\.2"/m);
  });

  it("converges a Bridge, a Volume and a VM on its node, then deletes them", async () => {
    await kubectl(["create", "namespace", ns]);
    await applyObjects(
      {
        apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
        kind: "Bridge",
        metadata: { name: bridge },
        spec: { bridgeName: bridge, nodeSelector: { matchLabels: { "kubernetes.io/hostname": nodeB.name } } },
      },
      {
        apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
        kind: "Volume",
        metadata: { name: "img-disk", namespace: ns },
        spec: { pool: "rbd", size: "64Mi" },
      },
      {
        apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
        kind: "VirtualMachine",
        metadata: { name: "img-vm", namespace: ns },
        spec: {
          node: nodeB.name,
          memory: "64Mi",
          graphics: "none",
          shutdownGracePeriodSeconds: 1,
          disks: [{ name: "disk", volumeRef: "img-disk" }],
          interfaces: [{ name: "lan", bridgeRef: bridge }],
        },
      },
    );
    await waitReady(kbr, undefined, bridge);
    await waitReady(kvol, ns, "img-disk");
    await waitReady(kvm, ns, "img-vm");
    expect(await domainState(nodeB, domain)).toBe("running");
    expect(await rbdImages("rbd")).toContain(`${ns}.img-disk`);
    expect((await linkNames(nodeB.netns, bridge)).filter((l) => /^vnet\d+$/.test(l))).toHaveLength(1);

    await kubectl(["delete", "namespace", ns, "--timeout=120s"]);
    await kubectl(["delete", kbr, bridge, "--timeout=60s"]);
    expect(await domainState(nodeB, domain)).toBeUndefined();
    expect(await rbdImages("rbd")).not.toContain(`${ns}.img-disk`);
    await waitFor(`${bridge} gone`, async () => !(await linkNames(nodeB.netns)).includes(bridge) || undefined, {
      timeoutMs: 30_000,
    });
  }, 300_000);

  it("stops on SIGTERM once it has used libvirt and Ceph, within a pod's grace period (no SIGKILL)", async () => {
    // It used to wait 12-60 s at exit: Node joined the libvirt event loop thread, which never read "stop".
    expect(await agent.stop(10_000)).toBe("exited");
  });
});
