import { randomBytes, randomUUID } from "node:crypto";
import { expectKind } from "../support/errors.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LibvirtClient } from "../../src/host/libvirt/client.js";
import { LibvirtError } from "../../src/host/libvirt/errors.js";
import type { LibvirtEvent } from "../../src/host/libvirt/types.js";
import { labNetns, libvirtDaemon, nodes } from "../env/lab.js";
import { run, waitFor } from "../env/proc.js";

const node = nodes[0]!;
const id = randomBytes(3).toString("hex");
const name = `kaktus-lv-${id}`;
const efiName = `kaktus-lv-efi-${id}`;
const bridge = `kbr-lv${id.slice(0, 4)}`;
const secretUuid = randomUUID();

const domainXml = (domainName: string, extra = "") => `<domain type='qemu'>
  <name>${domainName}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/></features>
  <devices><serial type='pty'/>${extra}</devices>
</domain>`;
const nicXml = (mac: string) =>
  `<interface type='bridge'><mac address='${mac}'/><source bridge='${bridge}'/><model type='virtio'/></interface>`;

const expectLibvirtError = (promise: Promise<unknown>, kind: LibvirtError["kind"]) =>
  expectKind(promise, LibvirtError, kind);

describe("libvirt client (koffi in worker threads) against the lab's libvirtd + QEMU", () => {
  const client = new LibvirtClient(node.libvirtUri);
  const events: LibvirtEvent[] = [];
  let unsubscribe = () => {};

  beforeAll(async () => {
    unsubscribe = client.onEvent((e) => events.push(e));
    await run("ip", ["-n", labNetns, "link", "add", bridge, "type", "bridge"]);
    await run("ip", ["-n", labNetns, "link", "set", bridge, "up"]);
    await waitFor("event stream connected", async () => events.some((e) => e.type === "connected") || undefined, {
      timeoutMs: 10_000,
    });
  });

  afterAll(async () => {
    for (const n of [name, efiName]) {
      await client.destroy(n).catch(() => undefined);
      await client.undefine(n).catch(() => undefined);
    }
    await client.undefineSecret(secretUuid).catch(() => undefined);
    unsubscribe();
    await client.close();
    await run("ip", ["-n", labNetns, "link", "del", bridge]).catch(() => undefined);
  });

  it("reports QEMU capabilities (TCG here: no /dev/kvm)", async () => {
    const caps = await client.capabilities();
    expect(caps).toContain("<domain type='qemu'");
  });

  it("defines a persistent domain, finds it by name and UUID, lists it, reads its XML", async () => {
    const defined = await client.define(domainXml(name));
    expect(defined).toMatchObject({ name, state: "shutoff", persistent: true, autostart: false });
    expect(await client.lookup(name)).toEqual(defined);
    expect(await client.lookupByUuid(defined.uuid)).toEqual(defined);
    expect((await client.listDomains()).map((d) => d.name)).toContain(name);
    expect(await client.getXml(name, { inactive: true })).toContain(`<uuid>${defined.uuid}</uuid>`);
    expect(await client.lookup(`${name}-missing`)).toBeNull();
    expect(await client.lookupByUuid(randomUUID())).toBeNull();
  });

  it("types its errors: invalid XML, missing domain, wrong state", async () => {
    const invalid = await expectLibvirtError(client.define("<domain type='qemu'><name>x</name></domain>"), "invalid");
    expect(invalid.message).toMatch(/define domain/);
    await expectLibvirtError(client.getXml(`${name}-missing`), "not-found");
    await expectLibvirtError(client.destroy(name), "conflict"); // not running
  });

  it("sets autostart", async () => {
    await client.setAutostart(name, true);
    expect((await client.lookup(name))?.autostart).toBe(true);
    await client.setAutostart(name, false);
    expect((await client.lookup(name))?.autostart).toBe(false);
  });

  it("starts the domain and streams its lifecycle events", async () => {
    await client.start(name);
    expect((await client.lookup(name))?.state).toBe("running");
    await waitFor(
      "started event",
      async () => events.some((e) => e.type === "lifecycle" && e.name === name && e.event === "started") || undefined,
      { timeoutMs: 10_000 },
    );
    await expectLibvirtError(client.start(name), "conflict");
  });

  it("attaches a NIC live and persistently, and detaches it from the definition", async () => {
    const mac = "52:54:00:aa:00:01";
    await client.attachDevice(name, nicXml(mac), { live: true });
    expect(await client.getXml(name)).toContain(mac);
    expect(await client.getXml(name, { inactive: true })).toContain(mac);
    const ports = JSON.parse(
      (await run("ip", ["-n", labNetns, "-j", "link", "show", "master", bridge])).stdout,
    ) as unknown[];
    expect(ports).toHaveLength(1);
    // With no guest OS to answer the unplug, only the persistent part goes (HOST-FACTS): detach from config.
    await client.detachDevice(name, nicXml(mac), { live: false });
    expect(await client.getXml(name, { inactive: true })).not.toContain(mac);
  });

  it("asks a guest to shut down (ACPI) and returns at once; a guest that ignores it stops only when destroyed", async () => {
    const started = Date.now();
    await client.shutdown(name);
    expect(Date.now() - started).toBeLessThan(1000);
    await new Promise((r) => setTimeout(r, 1000));
    expect((await client.lookup(name))?.state).toBe("running");
    await client.destroy(name);
    expect(await client.lookup(name)).toMatchObject({ state: "shutoff", reason: 2 });
  });

  it("undefines an EFI domain together with its NVRAM", async () => {
    const efi = `<domain type='qemu'><name>${efiName}</name><memory unit='MiB'>64</memory>
      <os firmware='efi'><type arch='x86_64' machine='q35'>hvm</type></os><features><acpi/></features></domain>`;
    await client.define(efi);
    await client.start(efiName); // creates the NVRAM file
    await client.destroy(efiName);
    await client.undefine(efiName);
    expect(await client.lookup(efiName)).toBeNull();
  });

  it("defines a ceph secret and sets its value", async () => {
    const xml = `<secret ephemeral='no' private='yes'><uuid>${secretUuid}</uuid><usage type='ceph'><name>client.test ${id}</name></usage></secret>`;
    expect(await client.defineSecret(xml)).toBe(secretUuid);
    await client.setSecretValue(secretUuid, Buffer.from("AQBsecretkeybytes"));
    await client.undefineSecret(secretUuid);
    await expectLibvirtError(client.undefineSecret(secretUuid), "not-found");
  });

  it("keeps working across a libvirtd restart: calls reconnect and events resume", async () => {
    const libvirtd = libvirtDaemon(node);
    const before = events.length;
    // Stop libvirtd but not the guests: that is what an upgrade or a crash looks like.
    await libvirtd.stop({ guests: false });
    await expectLibvirtError(client.lookup(name), "transient");
    await libvirtd.start();
    await waitFor("reconnected calls", async () => (await client.lookup(name)) ?? undefined, { timeoutMs: 20_000 });
    await waitFor(
      "event stream reconnected",
      async () =>
        (events.slice(before).some((e) => e.type === "disconnected") &&
          events.slice(before).some((e) => e.type === "connected")) ||
        undefined,
      { timeoutMs: 20_000 },
    );
    await client.start(name);
    await waitFor(
      "a lifecycle event after the restart",
      async () => events.slice(before).some((e) => e.type === "lifecycle" && e.event === "started") || undefined,
      { timeoutMs: 10_000 },
    );
    await client.destroy(name);
    await client.undefine(name);
    expect(await client.lookup(name)).toBeNull();
  });
});
