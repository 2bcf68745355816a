import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { deleteNamespace, installCrds, kubectl } from "../support/kube.js";

/**
 * Bad objects the API server itself must reject (schema, enums, formats, CEL rules), each with a
 * message that names the field. Create cases are server-side dry runs; update cases create a valid
 * object first and then try the change.
 */
const ns = `api-${randomBytes(3).toString("hex")}`;
const group = "kaktus.kowabunga.cloud/v1alpha1";
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- free-form test objects

const vm = (): Json => ({
  apiVersion: group,
  kind: "VirtualMachine",
  metadata: { name: "vm", namespace: ns },
  spec: {
    node: "kaktus-a",
    memory: "1Gi",
    disks: [{ name: "os", volumeRef: "os", bootOrder: 1 }],
    interfaces: [{ name: "public", bridgeRef: "br0" }],
  },
});
const volume = (): Json => ({
  apiVersion: group,
  kind: "Volume",
  metadata: { name: "vol", namespace: ns },
  spec: { pool: "rbd", size: "20Gi", source: { image: { pool: "templates", name: "debian-12", snapshot: "base" } } },
});
const bridge = (): Json => ({
  apiVersion: group,
  kind: "Bridge",
  metadata: { name: "br-valid" },
  spec: { bridgeName: "brv", ports: [{ name: "eth1" }] },
});

interface BadCase {
  what: string;
  base: () => Json;
  /** Makes the object bad. */
  edit: (o: Json) => void;
  /** The error must match this (it names the field). */
  error: RegExp;
  /** Create the base object first, then submit the edit as an update. */
  update?: boolean;
}

const cases: BadCase[] = [
  // VirtualMachine, on create
  { what: "memory of the wrong type", base: vm, edit: (o) => (o.spec.memory = true), error: /spec\.memory/ },
  { what: "memory that is not a quantity", base: vm, edit: (o) => (o.spec.memory = "lots"), error: /spec\.memory/ },
  { what: "memory below 64Mi", base: vm, edit: (o) => (o.spec.memory = "32Mi"), error: /spec\.memory.*at least 64Mi/ },
  { what: "zero cores", base: vm, edit: (o) => (o.spec.cpu = { cores: 0 }), error: /spec\.cpu\.cores/ },
  { what: "cores as a word", base: vm, edit: (o) => (o.spec.cpu = { cores: "two" }), error: /spec\.cpu\.cores/ },
  {
    what: "an unknown runStrategy",
    base: vm,
    edit: (o) => (o.spec.runStrategy = "Sometimes"),
    error: /spec\.runStrategy.*Unsupported value/,
  },
  { what: "an unknown firmware", base: vm, edit: (o) => (o.spec.firmware = "coreboot"), error: /spec\.firmware/ },
  { what: "no node", base: vm, edit: (o) => delete o.spec.node, error: /spec\.node.*Required/ },
  { what: "a node name that is not DNS-1123", base: vm, edit: (o) => (o.spec.node = "Kaktus_A"), error: /spec\.node/ },
  {
    what: "duplicate disk names",
    base: vm,
    edit: (o) => o.spec.disks.push({ name: "os", volumeRef: "data" }),
    error: /spec\.disks\[1\].*Duplicate value/,
  },
  {
    what: "two disks with one bootOrder",
    base: vm,
    edit: (o) => o.spec.disks.push({ name: "data", volumeRef: "data", bootOrder: 1 }),
    error: /spec\.disks.*same bootOrder/,
  },
  {
    what: "one Volume attached twice",
    base: vm,
    edit: (o) => o.spec.disks.push({ name: "again", volumeRef: "os" }),
    error: /spec\.disks.*attached only once/,
  },
  {
    what: "a volumeRef with capitals",
    base: vm,
    edit: (o) => (o.spec.disks[0].volumeRef = "OS"),
    error: /spec\.disks\[0\]\.volumeRef/,
  },
  { what: "an unknown disk bus", base: vm, edit: (o) => (o.spec.disks[0].bus = "ide"), error: /spec\.disks\[0\]\.bus/ },
  {
    what: "a short MAC",
    base: vm,
    edit: (o) => (o.spec.interfaces[0].mac = "52:54:00:12:34"),
    error: /spec\.interfaces\[0\]\.mac/,
  },
  {
    what: "a multicast MAC",
    base: vm,
    edit: (o) => (o.spec.interfaces[0].mac = "01:00:5e:00:00:01"),
    error: /spec\.interfaces\[0\]\.mac/,
  },
  {
    what: "duplicate interface names",
    base: vm,
    edit: (o) => o.spec.interfaces.push({ name: "public", bridgeRef: "br1" }),
    error: /spec\.interfaces\[1\].*Duplicate value/,
  },
  {
    what: "one MAC on two interfaces",
    base: vm,
    edit: (o) => {
      o.spec.interfaces[0].mac = "52:54:00:aa:bb:cc";
      o.spec.interfaces.push({ name: "private", bridgeRef: "br1", mac: "52:54:00:AA:BB:CC" });
    },
    error: /spec\.interfaces.*same mac/,
  },
  {
    what: "an unknown NIC model",
    base: vm,
    edit: (o) => (o.spec.interfaces[0].model = "rtl8139"),
    error: /spec\.interfaces\[0\]\.model/,
  },
  {
    what: "a bridgeRef that is not a name",
    base: vm,
    edit: (o) => (o.spec.interfaces[0].bridgeRef = "br 0"),
    error: /spec\.interfaces\[0\]\.bridgeRef/,
  },
  {
    what: "user-data both inline and from a Secret",
    base: vm,
    edit: (o) => (o.spec.cloudInit = { userData: "#cloud-config\n", userDataSecretRef: { name: "s" } }),
    error: /spec\.cloudInit.*not both/,
  },
  {
    what: "secureBoot with bios",
    base: vm,
    edit: (o) => (o.spec.secureBoot = true),
    error: /spec\.secureBoot.*firmware: efi/,
  },
  {
    what: "a negative grace period",
    base: vm,
    edit: (o) => (o.spec.shutdownGracePeriodSeconds = -1),
    error: /spec\.shutdownGracePeriodSeconds/,
  },
  { what: "an unknown graphics type", base: vm, edit: (o) => (o.spec.graphics = "rdp"), error: /spec\.graphics/ },
  { what: "a misspelt field", base: vm, edit: (o) => (o.spec.cpus = 2), error: /unknown field "spec\.cpus"/ },
  // VirtualMachine, on update
  {
    what: "moving a VM to another node",
    base: vm,
    update: true,
    edit: (o) => (o.spec.node = "kaktus-b"),
    error: /spec\.node.*immutable/,
  },
  // Volume, on create
  { what: "a negative size", base: volume, edit: (o) => (o.spec.size = "-1Gi"), error: /spec\.size.*positive/ },
  { what: "a size beyond 64Ti", base: volume, edit: (o) => (o.spec.size = "100Pi"), error: /spec\.size.*at most 64Ti/ },
  { what: "a size that is not a quantity", base: volume, edit: (o) => (o.spec.size = "ten gigs"), error: /spec\.size/ },
  { what: "no size", base: volume, edit: (o) => delete o.spec.size, error: /spec\.size.*Required/ },
  { what: "a pool with a slash", base: volume, edit: (o) => (o.spec.pool = "rbd/evil"), error: /spec\.pool/ },
  {
    what: "a source with image and volume",
    base: volume,
    edit: (o) => (o.spec.source.volume = { name: "other" }),
    error: /spec\.source.*exactly one/,
  },
  {
    what: "an image source without snapshot",
    base: volume,
    edit: (o) => delete o.spec.source.image.snapshot,
    error: /spec\.source\.image\.snapshot.*Required/,
  },
  {
    what: "an image name with @",
    base: volume,
    edit: (o) => (o.spec.source.image.name = "debian@12"),
    error: /spec\.source\.image\.name/,
  },
  {
    what: "an unknown reclaimPolicy",
    base: volume,
    edit: (o) => (o.spec.reclaimPolicy = "Recycle"),
    error: /spec\.reclaimPolicy/,
  },
  // Volume, on update
  {
    what: "shrinking a Volume",
    base: volume,
    update: true,
    edit: (o) => (o.spec.size = "10Gi"),
    error: /spec\.size.*only grow/,
  },
  {
    what: "moving a Volume to another pool",
    base: volume,
    update: true,
    edit: (o) => (o.spec.pool = "fast"),
    error: /spec\.pool.*immutable/,
  },
  {
    what: "changing the clone source",
    base: volume,
    update: true,
    edit: (o) => (o.spec.source.image.snapshot = "other"),
    error: /spec\.source.*immutable/,
  },
  {
    what: "dropping the clone source",
    base: volume,
    update: true,
    edit: (o) => delete o.spec.source,
    error: /spec\.source.*immutable/,
  },
  // Bridge, on create
  {
    what: "a 16-byte bridge name",
    base: bridge,
    edit: (o) => (o.spec.bridgeName = "br-0123456789abc"),
    error: /spec\.bridgeName/,
  },
  {
    what: "a bridge name with a slash",
    base: bridge,
    edit: (o) => (o.spec.bridgeName = "br/0"),
    error: /spec\.bridgeName/,
  },
  {
    what: "a non-ASCII bridge name",
    base: bridge,
    edit: (o) => (o.spec.bridgeName = "brücke"),
    error: /spec\.bridgeName/,
  },
  {
    what: "a long object name and no bridgeName",
    base: bridge,
    edit: (o) => {
      o.metadata.name = "public-bridge-eu-west";
      delete o.spec.bridgeName;
    },
    error: /spec\.bridgeName.*set spec\.bridgeName/,
  },
  { what: "an MTU below 68", base: bridge, edit: (o) => (o.spec.mtu = 10), error: /spec\.mtu/ },
  {
    what: "VLAN id 4095",
    base: bridge,
    edit: (o) => (o.spec.ports = [{ vlan: { parent: "bond0", id: 4095 } }]),
    error: /spec\.ports\[0\]\.vlan\.id/,
  },
  {
    what: "a port with name and vlan",
    base: bridge,
    edit: (o) => (o.spec.ports = [{ name: "eth1", vlan: { parent: "bond0", id: 100 } }]),
    error: /spec\.ports\[0\].*exactly one/,
  },
  {
    what: "a VLAN interface name over 15 bytes",
    base: bridge,
    edit: (o) => (o.spec.ports = [{ vlan: { parent: "enp129s0f1np1", id: 100 } }]),
    error: /spec\.ports\[0\]\.vlan.*15 bytes/,
  },
  {
    what: "the same port twice",
    base: bridge,
    edit: (o) => o.spec.ports.push({ name: "eth1" }),
    error: /spec\.ports.*unique/,
  },
  {
    what: "an unknown deletionPolicy",
    base: bridge,
    edit: (o) => (o.spec.deletionPolicy = "Keep"),
    error: /spec\.deletionPolicy/,
  },
  {
    what: "a selector In without values",
    base: bridge,
    edit: (o) => (o.spec.nodeSelector = { matchExpressions: [{ key: "zone", operator: "In" }] }),
    error: /spec\.nodeSelector\.matchExpressions\[0\].*need values/,
  },
  // Bridge, on update
  {
    what: "renaming the host bridge",
    base: bridge,
    update: true,
    edit: (o) => (o.spec.bridgeName = "brw"),
    error: /spec\.bridgeName.*immutable/,
  },
];

describe("the API server rejects bad objects with a message naming the field", () => {
  beforeAll(async () => {
    await installCrds();
    await kubectl(["create", "namespace", ns]);
  });
  afterAll(async () => {
    await deleteNamespace(ns);
    await kubectl(["delete", "bridges.kaktus.kowabunga.cloud", "-l", "test=validation", "--ignore-not-found"]);
  });

  it(`has at least 30 distinct cases (${cases.length})`, () => {
    expect(new Set(cases.map((c) => c.what)).size).toBe(cases.length);
    expect(cases.length).toBeGreaterThanOrEqual(30);
  });

  it.each(cases.map((c, i) => [c.what, c, i] as const))("rejects %s", async (_, c, i) => {
    const good = c.base();
    good.metadata.name = `${good.metadata.name}-${i}`;
    good.metadata.labels = { test: "validation" };
    if (c.update) await kubectl(["create", "-f", "-"], JSON.stringify(good));
    const bad = structuredClone(good);
    c.edit(bad);
    // The object before the edit is valid: only the edit can be what is rejected.
    if (!c.update) await kubectl(["create", "--dry-run=server", "-f", "-"], JSON.stringify(good));
    const verb = c.update ? ["replace", "--dry-run=server"] : ["create", "--dry-run=server"];
    await expect(kubectl([...verb, "-f", "-"], JSON.stringify(bad))).rejects.toThrow(c.error);
  });
});
