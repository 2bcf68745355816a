import { randomBytes } from "node:crypto";
import { expectKind } from "../support/errors.js";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { BridgeError, LinuxBridges } from "../../src/host/bridge/bridges.js";
import { IpRoute } from "../../src/host/bridge/iproute.js";
import { run, waitFor } from "../env/proc.js";

// A namespace of this test's own: nothing it does can reach another namespace.
const netns = `kt-br-${randomBytes(3).toString("hex")}`;
const ip = (...args: string[]) => run("ip", ["-n", netns, ...args]);

const expectBridgeError = (promise: Promise<unknown>, kind: BridgeError["kind"]) =>
  expectKind(promise, BridgeError, kind);

describe("Linux bridges through iproute2 JSON, in a test network namespace", () => {
  const host = new LinuxBridges(netns);
  const changes: number[] = [];
  let unsubscribe = () => {};

  beforeAll(async () => {
    await run("ip", ["netns", "add", netns]);
    // veth pairs stand in for physical ports (eth1, bond0): this kernel has no dummy or bond.
    for (const port of ["eth1", "eth2"]) await ip("link", "add", port, "type", "veth", "peer", "name", `${port}-peer`);
    unsubscribe = host.onChange(() => changes.push(Date.now()));
  });

  afterAll(async () => {
    unsubscribe();
    host.close();
    await run("ip", ["netns", "delete", netns]);
  });

  it("creates a bridge with STP, marked, and reads it back", async () => {
    await host.createBridge("br0", { stp: true }, "kaktus:test-uid");
    expect(await host.bridge("br0")).toEqual({
      name: "br0",
      alias: "kaktus:test-uid",
      mtu: 1500,
      up: true,
      stp: true,
      vlanFiltering: false,
      ports: [],
    });
    await expectBridgeError(host.createBridge("br0", {}, "kaktus:other"), "exists");
    expect(await host.bridge("br0")).toMatchObject({ alias: "kaktus:test-uid" }); // a refused create never touches what was there
    expect((await host.links()).filter((l) => l.name.startsWith("kaktus-tmp-"))).toEqual([]);
  });

  it("enslaves ports, and takes a jumbo MTU once its ports have it", async () => {
    for (const port of ["eth1", "eth2"]) {
      await ip("link", "set", "dev", port, "mtu", "9000");
      await host.addPort("br0", port);
    }
    await host.updateBridge("br0", { mtu: 9000 });
    const br = await host.bridge("br0");
    expect(br?.ports.sort()).toEqual(["eth1", "eth2"]);
    expect(br?.mtu).toBe(9000);
    const eth1 = (await host.links()).find((l) => l.name === "eth1");
    expect(eth1).toMatchObject({ kind: "veth", master: "br0", up: true, mtu: 9000 });
  });

  it("marks a link it did not make (adoption)", async () => {
    await ip("link", "add", "br-hand", "type", "bridge");
    expect((await host.bridge("br-hand"))?.alias).toBeUndefined();
    await host.setAlias("br-hand", "kaktus:adopted");
    expect((await host.bridge("br-hand"))?.alias).toBe("kaktus:adopted");
    await host.deleteLink("br-hand");
  });

  it("changes settings in place, without re-creating the bridge", async () => {
    const index = async () =>
      (JSON.parse((await ip("-j", "link", "show", "dev", "br0")).stdout) as { ifindex: number }[])[0]?.ifindex;
    const before = await index();
    await host.updateBridge("br0", { stp: false });
    expect((await host.bridge("br0"))?.stp).toBe(false);
    expect(await index()).toBe(before);
    expect((await host.bridge("br0"))?.ports).toHaveLength(2);
  });

  it("removes a port and deletes a bridge", async () => {
    await host.removePort("eth2");
    expect((await host.bridge("br0"))?.ports).toEqual(["eth1"]);
    await host.deleteLink("br0");
    expect(await host.bridge("br0")).toBeNull();
    expect((await host.links()).find((l) => l.name === "eth1")?.master).toBeUndefined();
    await expectBridgeError(host.deleteLink("br0"), "not-found");
  });

  it("turns the kernel's refusals into typed errors and leaves nothing half-made", async () => {
    // This kernel cannot filter VLANs on a bridge nor create 802.1Q links (HOST-FACTS).
    const filtering = await expectBridgeError(
      host.createBridge("br100", { vlanFiltering: true }, "kaktus:x"),
      "unsupported",
    );
    expect(filtering.message).toMatch(/create bridge br100/);
    expect(await host.bridge("br100")).toBeNull();
    await expectBridgeError(host.createVlan("eth1", 100, "kaktus:x"), "unsupported");
    await expectBridgeError(host.createVlan("eth1", 4095, "kaktus:x"), "invalid");
    expect((await host.links()).filter((l) => l.name.startsWith("kaktus-tmp-"))).toEqual([]);
    await expectBridgeError(host.addPort("br-missing", "eth1"), "not-found");
  });

  it("notifies link changes", async () => {
    const before = changes.length;
    await ip("link", "add", "eth3", "type", "veth", "peer", "name", "eth3-peer");
    await waitFor("a change notification", async () => (changes.length > before ? true : undefined), {
      timeoutMs: 5_000,
    });
  });

  it("reads the link table once per change, and sees a change made behind its back at once", async () => {
    await new Promise((r) => setTimeout(r, 300)); // the last test's notifications are in
    const reads = vi.spyOn(IpRoute.prototype, "json");
    try {
      await Promise.all([host.bridges(), host.links(), host.bridge("br-none")]);
      await host.links();
      expect(reads).toHaveBeenCalledTimes(1);
      await ip("link", "add", "eth4", "type", "veth", "peer", "name", "eth4-peer");
      await waitFor(
        "eth4 read back",
        async () => ((await host.links()).some((l) => l.name === "eth4") ? true : undefined),
        {
          timeoutMs: 5_000,
        },
      );
    } finally {
      reads.mockRestore();
    }
  });
});
