import * as k8s from "@kubernetes/client-node";
import { randomBytes } from "node:crypto";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Volume } from "../../src/api/volume.js";
import { Informer } from "../../src/runtime/informer.js";
import { controlPlane } from "../env/lab.js";
import { waitFor } from "../env/proc.js";
import { deleteNamespace, installCrds, kubeConfig, kubectl } from "../support/kube.js";

const ns = `inf-${randomBytes(3).toString("hex")}`;
const group = "kaktus.kowabunga.cloud";
const api = kubeConfig.makeApiClient(k8s.CustomObjectsApi);

const volume = (name: string, size = "1Gi") => ({
  apiVersion: `${group}/v1alpha1`,
  kind: "Volume",
  metadata: { name, namespace: ns },
  spec: { pool: "rbd", size },
});
const create = (name: string) =>
  api.createNamespacedCustomObject({
    group,
    version: "v1alpha1",
    namespace: ns,
    plural: "volumes",
    body: volume(name),
  });

describe("informer (list + supervised watch) against the real apiserver", () => {
  const changes: { key: string; size: string | number | undefined }[] = [];
  const informer = new Informer<Volume>(
    kubeConfig,
    { group, version: "v1alpha1", plural: "volumes", silenceMs: 3_000, maxBackoffMs: 1_000 },
    (key, obj) => changes.push({ key, size: obj?.spec.size }),
    pino({ level: "silent" }),
  );
  const seen = (key: string, size: string | undefined) =>
    waitFor(
      `change ${key} -> ${size}`,
      async () => changes.some((c) => c.key === key && c.size === size) || undefined,
      {
        timeoutMs: 30_000,
        intervalMs: 50,
      },
    );

  beforeAll(async () => {
    await installCrds();
    await kubectl(["create", "namespace", ns]);
    await create("before-start");
    informer.start();
    await informer.hasSynced;
  });

  afterAll(async () => {
    await informer.stop();
    await deleteNamespace(ns);
  });

  it("lists what exists, then streams adds, updates and deletes", async () => {
    expect(informer.get(`${ns}/before-start`)?.spec.size).toBe("1Gi");
    // The apiserver's managedFields are not kept in the cache (memory).
    expect(informer.get(`${ns}/before-start`)?.metadata).not.toHaveProperty("managedFields");
    await create("added");
    await seen(`${ns}/added`, "1Gi");
    await api.patchNamespacedCustomObject(
      { group, version: "v1alpha1", namespace: ns, plural: "volumes", name: "added", body: { spec: { size: "2Gi" } } },
      k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch),
    );
    await seen(`${ns}/added`, "2Gi");
    expect(informer.get(`${ns}/added`)?.spec.size).toBe("2Gi");
    await api.deleteNamespacedCustomObject({
      group,
      version: "v1alpha1",
      namespace: ns,
      plural: "volumes",
      name: "added",
    });
    await seen(`${ns}/added`, undefined);
    expect(informer.get(`${ns}/added`)).toBeUndefined();
  });

  it("restarts a silent watch (watchdog) and keeps delivering", async () => {
    const stalls = informer.stats.stalls;
    await waitFor("a watchdog restart", async () => (informer.stats.stalls > stalls ? true : undefined), {
      timeoutMs: 15_000,
    });
    await create("after-stall");
    await seen(`${ns}/after-stall`, "1Gi");
  });

  it("reconnects by itself after the apiserver restarts, and misses nothing", async () => {
    const watchesBefore = informer.stats.watches;
    await controlPlane.stop("apiserver");
    await controlPlane.startApiserver();
    await create("after-restart");
    await seen(`${ns}/after-restart`, "1Gi");
    expect(informer.stats.watches).toBeGreaterThan(watchesBefore);
    // Every object is in the cache exactly once, whatever was replayed.
    expect(
      informer
        .list()
        .filter((v) => v.metadata.namespace === ns)
        .map((v) => v.metadata.name)
        .sort(),
    ).toEqual(["after-restart", "after-stall", "before-start"]);
  });
});

describe("an informer scoped by a selectable field (spec.node), against the real apiserver", () => {
  const vmNs = `inf-vm-${randomBytes(3).toString("hex")}`;
  const vmApi = { group, version: "v1alpha1", namespace: vmNs, plural: "virtualmachines" };
  const vm = (name: string, node: string) => ({
    apiVersion: `${group}/v1alpha1`,
    kind: "VirtualMachine",
    metadata: { name, namespace: vmNs },
    spec: { node, runStrategy: "Halted", memory: "128Mi" },
  });
  const changes: { key: string; node: string | undefined }[] = [];
  const informer = new Informer<{ metadata: { name: string; namespace: string }; spec: { node: string } }>(
    kubeConfig,
    { group, version: "v1alpha1", plural: "virtualmachines", fieldSelector: "spec.node=node-a" },
    (key, obj) => changes.push({ key, node: obj?.spec.node }),
    pino({ level: "silent" }),
  );

  beforeAll(async () => {
    await installCrds();
    await kubectl(["create", "namespace", vmNs]);
    await api.createNamespacedCustomObject({ ...vmApi, body: vm("listed-a", "node-a") });
    await api.createNamespacedCustomObject({ ...vmApi, body: vm("listed-b", "node-b") });
    informer.start();
    await informer.hasSynced;
  });

  afterAll(async () => {
    await informer.stop();
    await deleteNamespace(vmNs);
  });

  it("lists and watches only its node's objects", async () => {
    const names = () =>
      informer
        .list()
        .filter((v) => v.metadata.namespace === vmNs)
        .map((v) => v.metadata.name)
        .sort();
    expect(names()).toEqual(["listed-a"]);
    await api.createNamespacedCustomObject({ ...vmApi, body: vm("watched-b", "node-b") });
    await api.createNamespacedCustomObject({ ...vmApi, body: vm("watched-a", "node-a") });
    await waitFor("watched-a", async () => informer.get(`${vmNs}/watched-a`) ?? undefined, { timeoutMs: 30_000 });
    await api.deleteNamespacedCustomObject({ ...vmApi, name: "watched-b" });
    await api.deleteNamespacedCustomObject({ ...vmApi, name: "listed-a" });
    await waitFor("listed-a gone", async () => (informer.get(`${vmNs}/listed-a`) ? undefined : true), {
      timeoutMs: 30_000,
    });
    expect(names()).toEqual(["watched-a"]);
    expect(changes.filter((c) => c.key.startsWith(`${vmNs}/`))).toEqual([
      { key: `${vmNs}/listed-a`, node: "node-a" },
      { key: `${vmNs}/watched-a`, node: "node-a" },
      { key: `${vmNs}/listed-a`, node: undefined },
    ]);
  });
});
