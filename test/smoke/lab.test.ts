import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { insideLab, recordedNetns } from "../env/netns.js";
import { linkNames, nodes, virsh } from "../env/lab.js";
import { run } from "../env/proc.js";

const [nodeA, nodeB] = nodes as [(typeof nodes)[0], (typeof nodes)[0]];
const domain = `kaktus-smoke-b-${randomBytes(3).toString("hex")}`;
const work = mkdtempSync(join(tmpdir(), "kaktus-lab-"));

const parseLinks = (stdout: string) => (JSON.parse(stdout) as { ifname: string }[]).map((l) => l.ifname);

describe("the lab", () => {
  afterAll(async () => {
    await virsh(nodeB, "undefine", domain).catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  });

  it("runs the tests inside its own network namespace", () => {
    expect(insideLab()).toBe(true);
  });

  it("runs in namespaces it created itself, not ones another lab left with its bridges", () => {
    const recorded = recordedNetns();
    for (const node of [nodeA, nodeB])
      expect(recorded[node.netns], node.netns).toBe(statSync(`/run/netns/${node.netns}`).ino);
  });

  it("keeps its interfaces out of the machine's own namespace", async () => {
    // `npm test` started in the machine's namespace and said where it is; the lab's veth must exist only in the lab.
    const hostNetns = process.env.KAKTUS_HOST_NETNS;
    expect(hostNetns, "KAKTUS_HOST_NETNS is set by test/env/cli.ts").toBeDefined();
    const rootLinks = parseLinks((await run("nsenter", [`--net=${hostNetns}`, "ip", "-j", "link", "show"])).stdout);
    expect(rootLinks).toContain("lo");
    expect(rootLinks).not.toContain("kaktus-veth-a");
    expect(rootLinks).not.toContain("kaktus-veth-b");
    expect(await linkNames(nodeA.netns)).toContain("kaktus-veth-a");
    expect(await linkNames(nodeB.netns)).toContain("kaktus-veth-b");
  });

  it("gives each node its own libvirtd: a domain defined on node B is unknown to node A", async () => {
    const xml = `<domain type='qemu'><name>${domain}</name><memory unit='MiB'>32</memory><os><type arch='x86_64'>hvm</type></os></domain>`;
    const file = join(work, "domain.xml");
    writeFileSync(file, xml);
    await virsh(nodeB, "define", file);
    expect((await virsh(nodeB, "list", "--all", "--name")).stdout).toContain(domain);
    expect((await virsh(nodeA, "list", "--all", "--name")).stdout).not.toContain(domain);
  });
});
