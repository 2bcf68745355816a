import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { LocalCloudInitMedia } from "../../src/host/cloudinit/media.js";

const dir = mkdtempSync(join(tmpdir(), "kaktus-ci-"));
const media = new LocalCloudInitMedia(dir);
const data = { userData: "#cloud-config\nhostname: a\n", metaData: "instance-id: a\n" };

describe("cloud-init seed images (cloud-localds)", () => {
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("writes an ISO 9660 NoCloud image once, and again only when its content changes", async () => {
    const first = await media.ensure("ns_vm", data);
    expect(first).toEqual({ path: join(dir, "ns_vm.iso"), written: true });
    // ISO 9660 volume descriptor at 32 KiB, volume label "cidata" (what cloud-init looks for).
    const iso = readFileSync(first.path);
    expect(iso.subarray(0x8001, 0x8006).toString()).toBe("CD001");
    expect(iso.subarray(0x8028, 0x802e).toString()).toBe("cidata");
    expect((await media.ensure("ns_vm", data)).written).toBe(false);
    expect((await media.ensure("ns_vm", { ...data, networkConfig: "version: 2\n" })).written).toBe(true);
  });

  it("cleans work folders a killed agent left, and only its own", async () => {
    mkdirSync(join(dir, ".ns_vm-abc123"));
    mkdirSync(join(dir, ".ns_vm-2-abc123"));
    await media.remove("ns_vm");
    expect(readdirSync(dir).sort()).toEqual([".ns_vm-2-abc123"]);
  });

  it("refuses names that are not plain file names", async () => {
    for (const name of ["../etc/x", "a/b", "", ".hidden", "A"]) {
      await expect(media.ensure(name, data)).rejects.toThrow(/cannot name a cloud-init image/);
    }
  });
});
