import { readdirSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../env/paths.js";
import { kubectl } from "../support/kube.js";

/**
 * The GitOps bundle (manifests/) against the lab's apiserver: every overlay builds and passes a
 * server-side dry-run (schemas, admission, Pod Security of its namespace), and says what the
 * DaemonSet needs instead of `privileged`.
 */
const overlays = readdirSync(join(repoRoot, "manifests/overlays"));
type Doc = {
  kind: string;
  metadata: { name: string; annotations?: Record<string, string> };
  spec?: { template?: { spec: PodSpec } };
};
type PodSpec = {
  containers: { image: string; securityContext?: Record<string, unknown> }[];
  priorityClassName?: string;
};

const build = async (overlay: string) =>
  parseAllDocuments(await kubectl(["kustomize", join(repoRoot, "manifests/overlays", overlay)])).map(
    (d) => d.toJS() as Doc,
  );

describe("the GitOps bundle", () => {
  it("has a lab and a production overlay", () => {
    expect(overlays.sort()).toEqual(["lab", "production"]);
  });

  it.each(overlays)("overlay %s passes a server-side dry-run on the lab's apiserver", async (overlay) => {
    const out = await kubectl([
      "apply",
      "--server-side",
      "--dry-run=server",
      "--field-manager=kaktus-bundle-test",
      "-k",
      join(repoRoot, "manifests/overlays", overlay),
    ]);
    for (const kind of [
      "customresourcedefinition",
      "namespace",
      "serviceaccount",
      "clusterrole",
      "daemonset",
      "service",
    ])
      expect(out).toMatch(new RegExp(`^${kind}[./]`, "m"));
  });

  it.each(overlays)("overlay %s: CRDs first, the agent by version, not privileged", async (overlay) => {
    const docs = await build(overlay);
    const wave = (d: Doc) => Number(d.metadata.annotations?.["argocd.argoproj.io/sync-wave"] ?? 0);
    const crds = docs.filter((d) => d.kind === "CustomResourceDefinition");
    expect(crds).toHaveLength(3);
    expect(Math.max(...crds.map(wave))).toBeLessThan(
      Math.min(...docs.filter((d) => d.kind !== "CustomResourceDefinition").map(wave)),
    );
    const pod = docs.find((d) => d.kind === "DaemonSet")!.spec!.template!.spec;
    const [agent] = pod.containers;
    expect(agent!.image).toMatch(/:\d+\.\d+\.\d+$/);
    expect(agent!.securityContext).toMatchObject({ capabilities: { drop: ["ALL"], add: ["NET_ADMIN"] } });
    expect(agent!.securityContext?.privileged).toBeUndefined();
    expect(pod.priorityClassName).toBe("system-node-critical");
  });
});
