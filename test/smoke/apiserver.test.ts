import * as k8s from "@kubernetes/client-node";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { kubeconfigPath, kubectlPath, nodeBKubeconfigPath, nodeBNetns } from "../env/lab.js";
import { run, waitFor } from "../env/proc.js";

const kc = new k8s.KubeConfig();
kc.loadFromFile(kubeconfigPath);
const group = "smoke.kaktus.kowabunga.cloud";
const plural = `widgets${randomBytes(3).toString("hex")}`;
const crdName = `${plural}.${group}`;

describe("kube-apiserver + etcd", () => {
  const extensions = kc.makeApiClient(k8s.ApiextensionsV1Api);
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);

  afterAll(async () => {
    await extensions.deleteCustomResourceDefinition({ name: crdName }).catch(() => undefined);
  });

  it("reports the real release version, which kubectl and version-checking clients parse", async () => {
    const { stdout, stderr } = await run(kubectlPath(), ["--kubeconfig", kubeconfigPath, "version", "-o", "json"]);
    const goMod = readFileSync("test/env/kube/go.mod", "utf8");
    const release = /k8s\.io\/kubernetes (v\d+\.\d+\.\d+)/.exec(goMod)![1]!;
    const version = JSON.parse(stdout) as {
      clientVersion: { gitVersion: string };
      serverVersion: { gitVersion: string };
    };
    expect(version.serverVersion.gitVersion).toBe(release);
    expect(version.clientVersion.gitVersion).toBe(release);
    expect(stderr).not.toMatch(/error|could not parse/i);
    expect((await kc.makeApiClient(k8s.VersionApi).getCode()).gitVersion).toBe(release);
  });

  it("serves a CRD, stores a custom resource and streams its watch event", async () => {
    await extensions.createCustomResourceDefinition({
      body: {
        metadata: { name: crdName },
        spec: {
          group,
          scope: "Namespaced",
          names: { plural, singular: plural.slice(0, -1), kind: "Widget", listKind: "WidgetList" },
          versions: [
            {
              name: "v1",
              served: true,
              storage: true,
              schema: {
                openAPIV3Schema: {
                  type: "object",
                  properties: { spec: { type: "object", properties: { size: { type: "integer" } } } },
                },
              },
            },
          ],
        },
      },
    });
    await waitFor(
      "CRD Established",
      async () => {
        const crd = await extensions.readCustomResourceDefinition({ name: crdName });
        return crd.status?.conditions?.some((c) => c.type === "Established" && c.status === "True") || undefined;
      },
      { timeoutMs: 20_000 },
    );

    type Widget = { metadata: { name: string }; spec: { size: number } };
    const added: Widget[] = [];
    let watchEnded: unknown;
    // A new CRD's watch cache may still be starting: until it is, the apiserver answers 429, which
    // client-node reports through the done callback before watch() resolves. Open it again then.
    const watch = await waitFor(
      "watch on the new resource",
      async () => {
        watchEnded = undefined;
        const req = await new k8s.Watch(kc).watch(
          `/apis/${group}/v1/namespaces/default/${plural}`,
          {},
          (type, obj: Widget) => type === "ADDED" && added.push(obj),
          (err: unknown) => (watchEnded = err ?? "closed"),
        );
        if (watchEnded) throw new Error(`watch refused: ${String(watchEnded)}`);
        return req;
      },
      { timeoutMs: 20_000, intervalMs: 250 },
    );
    await custom.createNamespacedCustomObject({
      group,
      version: "v1",
      namespace: "default",
      plural,
      body: { apiVersion: `${group}/v1`, kind: "Widget", metadata: { name: "first" }, spec: { size: 3 } },
    });
    const widget = await waitFor(
      "ADDED event for the new Widget",
      async () => {
        if (watchEnded) throw new Error(`watch ended: ${String(watchEnded)}`);
        return added[0];
      },
      { timeoutMs: 15_000, intervalMs: 50 },
    ).finally(() => watch.abort());
    expect(widget.metadata.name).toBe("first");
    expect(widget.spec.size).toBe(3);
  });

  it("is reachable from node B over the lab veth, with a certificate valid for that address", async () => {
    const { stdout } = await run("ip", [
      "netns",
      "exec",
      nodeBNetns,
      kubectlPath(),
      "--kubeconfig",
      nodeBKubeconfigPath,
      "get",
      "--raw",
      "/readyz",
    ]);
    expect(stdout.trim()).toBe("ok");
  });

  it("runs the controller-manager: deleting a namespace finishes", async () => {
    const core = kc.makeApiClient(k8s.CoreV1Api);
    const name = `smoke-${randomBytes(3).toString("hex")}`;
    await core.createNamespace({ body: { metadata: { name } } });
    await core.createNamespacedConfigMap({ namespace: name, body: { metadata: { name: "c" }, data: { a: "b" } } });
    await core.deleteNamespace({ name });
    await waitFor(
      `namespace ${name} gone`,
      async () =>
        await core.readNamespace({ name }).then(
          () => undefined,
          () => true,
        ),
      { timeoutMs: 30_000, intervalMs: 500 },
    );
  });
});
