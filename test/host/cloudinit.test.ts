import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { LocalCloudInitMedia, seedDigest } from "../../src/host/cloudinit/media.js";

const dir = mkdtempSync(join(tmpdir(), "kaktus-ci-"));
const media = new LocalCloudInitMedia(dir);
const data = { userData: "#cloud-config\nhostname: a\n", metaData: "instance-id: a\n" };

describe("cloud-init seed images (cloud-localds)", () => {
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("writes an ISO 9660 NoCloud image and keeps the digest of its content beside it", async () => {
    expect(await media.digest("ns_vm")).toBeUndefined();
    await media.write("ns_vm", data);
    expect(media.path("ns_vm")).toBe(join(dir, "ns_vm.iso"));
    // ISO 9660 volume descriptor at 32 KiB, volume label "cidata" (what cloud-init looks for).
    const iso = readFileSync(media.path("ns_vm"));
    expect(iso.subarray(0x8001, 0x8006).toString()).toBe("CD001");
    expect(iso.subarray(0x8028, 0x802e).toString()).toBe("cidata");
    expect(await media.digest("ns_vm")).toBe(seedDigest(data));
    const changed = { ...data, networkConfig: "version: 2\n" };
    expect(seedDigest(changed)).not.toBe(seedDigest(data));
    await media.write("ns_vm", changed);
    expect(await media.digest("ns_vm")).toBe(seedDigest(changed));
  });

  it("cleans work folders a killed agent left, and only its own", async () => {
    mkdirSync(join(dir, ".ns_vm-abc123"));
    mkdirSync(join(dir, ".ns_vm-2-abc123"));
    await media.remove("ns_vm");
    expect(readdirSync(dir).sort()).toEqual([".ns_vm-2-abc123"]);
  });

  it("refuses names that are not plain file names", async () => {
    for (const name of ["../etc/x", "a/b", "", ".hidden", "A"]) {
      await expect(media.write(name, data)).rejects.toThrow(/cannot name a cloud-init image/);
      expect(() => media.path(name)).toThrow(/cannot name a cloud-init image/);
    }
  });
});
