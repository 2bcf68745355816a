import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Bridge } from "../../src/api/bridge.js";
import type { VirtualMachine } from "../../src/api/virtualmachine.js";
import type { Volume } from "../../src/api/volume.js";
import { installCrds, kubectl } from "../support/kube.js";

const get = async <T>(resource: string, name: string, namespace?: string): Promise<T> =>
  JSON.parse(await kubectl(["get", resource, name, "-o", "json", ...(namespace ? ["-n", namespace] : [])])) as T;

describe("the CRDs and the examples", () => {
  beforeAll(installCrds);
  afterAll(async () => {
    await kubectl(["delete", "-f", "examples/", "--ignore-not-found", "--wait=false"]);
  });

  it("install and reach Established", async () => {
    const out = await kubectl(["get", "crd", "-l", "!x", "-o", "name"]);
    for (const plural of ["virtualmachines", "volumes", "bridges"]) {
      expect(out).toContain(`customresourcedefinition.apiextensions.k8s.io/${plural}.kaktus.kowabunga.cloud`);
      const status = await kubectl([
        "get",
        "crd",
        `${plural}.kaktus.kowabunga.cloud`,
        "-o",
        "jsonpath={.status.conditions[?(@.type=='Established')].status}",
      ]);
      expect(status).toBe("True");
    }
  });

  it("apply with server-side apply, strict field validation, and read back with defaults filled", async () => {
    await kubectl([
      "apply",
      "--server-side",
      "--field-manager=kaktus-examples",
      "--validate=strict",
      "-f",
      "examples/",
    ]);

    const vm = await get<VirtualMachine>("virtualmachine", "web-1", "acme");
    expect(vm.spec).toMatchObject({
      node: "kaktus-a",
      runStrategy: "Always",
      // No CPU model: the node's default, which its agent probes.
      cpu: { cores: 2 },
      firmware: "efi",
      secureBoot: false,
      graphics: "spice",
      autostart: true,
      shutdownGracePeriodSeconds: 60,
    });
    expect(vm.spec.cpu?.model).toBeUndefined();
    expect(vm.spec.disks).toEqual([
      { name: "os", volumeRef: "web-1-os", bootOrder: 1, bus: "virtio", readOnly: false },
      { name: "data", volumeRef: "web-1-data", bus: "virtio", readOnly: false },
    ]);
    expect(vm.spec.interfaces).toEqual([
      { name: "public", bridgeRef: "br0", model: "virtio" },
      { name: "private", bridgeRef: "br100", mac: "52:54:00:12:34:56", model: "virtio" },
    ]);
    expect(vm.spec.cloudInit?.userData).toContain("hostname: web-1");

    const os = await get<Volume>("volume", "web-1-os", "acme");
    expect(os.spec).toEqual({
      pool: "rbd",
      size: "20Gi",
      reclaimPolicy: "Delete",
      source: { image: { pool: "templates", name: "debian-12", snapshot: "kowabunga" } },
    });
    expect((await get<Volume>("volume", "web-1-data", "acme")).spec.reclaimPolicy).toBe("Retain");

    const br0 = await get<Bridge>("bridge", "br0");
    expect(br0.spec).toEqual({ ports: [{ name: "eth1" }], stp: false, vlanFiltering: false, deletionPolicy: "Delete" });
    const br100 = await get<Bridge>("bridge", "br100");
    expect(br100.spec.ports).toEqual([{ vlan: { parent: "bond0", id: 100 } }]);
    expect(br100.spec.mtu).toBe(9000);
  });

  it("re-applying the examples changes nothing (no spurious generation bump)", async () => {
    const apply = () => kubectl(["apply", "--server-side", "--field-manager=kaktus-examples", "-f", "examples/"]);
    // With no operator here, the status default (observedGeneration 0, added on read) is stored by
    // the first write after create: once, with no generation bump. From then on nothing changes.
    await apply();
    const before = await get<VirtualMachine>("virtualmachine", "web-1", "acme");
    await apply();
    const after = await get<VirtualMachine>("virtualmachine", "web-1", "acme");
    expect(after.metadata.generation).toBe(before.metadata.generation);
    expect(after.metadata.resourceVersion).toBe(before.metadata.resourceVersion);
  });

  it("print useful columns in kubectl get, by short name and by category", async () => {
    const byShortName = await kubectl(["get", "kvm,kvol,kbr", "-A"]);
    expect(byShortName).toMatch(/NAMESPACE\s+NAME\s+NODE\s+PHASE\s+READY\s+AGE/);
    expect(byShortName).toMatch(/acme\s+virtualmachine\.kaktus\.kowabunga\.cloud\/web-1\s+kaktus-a\s/);
    expect(byShortName).toMatch(/NAMESPACE\s+NAME\s+SIZE\s+POOL\s+PHASE\s+READY\s+AGE/);
    expect(byShortName).toMatch(/acme\s+volume\.kaktus\.kowabunga\.cloud\/web-1-os\s+20Gi\s+rbd\s/);
    expect(byShortName).toMatch(/NAME\s+READY NODES\s+PHASE\s+READY\s+AGE/);
    expect(byShortName).toContain("bridge.kaktus.kowabunga.cloud/br100");
    const bridgeWide = await kubectl(["get", "kbr", "br100", "-o", "wide"]);
    expect(bridgeWide).toMatch(/NAME\s+READY NODES\s+PHASE\s+READY\s+BRIDGE\s+MTU\s+AGE/);
    expect(bridgeWide).toMatch(/\nbr100\s+br100\s+9000\s/);

    const wide = await kubectl(["get", "kvm", "-n", "acme", "-o", "wide"]);
    expect(wide).toMatch(/NAME\s+NODE\s+PHASE\s+READY\s+CORES\s+MEMORY\s+RUN\s+AGE/);
    expect(wide).toMatch(/web-1\s+kaktus-a\s+2\s+4Gi\s+Always\s/);

    // The category lists all three kinds; other test files may have objects of their own in the lab.
    const category = (await kubectl(["get", "kaktus", "-A", "-o", "name"])).trim().split("\n");
    expect(category).toEqual(
      expect.arrayContaining([
        "bridge.kaktus.kowabunga.cloud/br0",
        "bridge.kaktus.kowabunga.cloud/br100",
        "virtualmachine.kaktus.kowabunga.cloud/web-1",
        "volume.kaktus.kowabunga.cloud/web-1-data",
        "volume.kaktus.kowabunga.cloud/web-1-os",
      ]),
    );
    expect(category.every((line) => /^(bridge|virtualmachine|volume)\.kaktus\.kowabunga\.cloud\//.test(line))).toBe(
      true,
    );
  });
});
