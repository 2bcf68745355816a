import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { buildIntoCache } from "./cache.js";
import { join } from "node:path";
import { probeGuestFiles } from "../../src/host/accel/libvirt-probe.js";
import { cacheDir, repoRoot } from "./paths.js";
import { LabError, run } from "./proc.js";

/**
 * The probe guest the agent boots to check that KVM runs real guest code: Debian's cloud kernel
 * (taken from its package, never installed on the machine) and an initramfs holding only the static
 * /init built from src/host/accel/guest/init.c. Built once into the cache, keyed by its sources.
 */
const initSource = join(repoRoot, "src/host/accel/guest/init.c");
const kernelPackage = "linux-image-cloud-amd64";
/** Bump when the recipe below changes: the cache is keyed by it and by /init's source. */
const recipe = `1 ${kernelPackage} gcc -O2 -static -mcx16; cpio newc`;

export function probeGuestDir(): string {
  const hash = createHash("sha256").update(readFileSync(initSource)).update(recipe);
  return join(cacheDir, `probe-guest-${hash.digest("hex").slice(0, 12)}`);
}

export const probeGuestBuilt = () => Object.values(probeGuestFiles).every((f) => existsSync(join(probeGuestDir(), f)));

export async function buildProbeGuest(): Promise<string> {
  const dir = probeGuestDir();
  if (probeGuestBuilt()) return dir;
  await buildIntoCache(dir, `the probe guest (${kernelPackage}, static /init)`, async (tmp) => {
    mkdirSync(join(tmp, "root"));
    // The metapackage names the versioned kernel package of the day.
    const depends = (await run("apt-cache", ["depends", kernelPackage])).stdout;
    const versioned = /Depends: (linux-image-[0-9][\w.+-]*)/.exec(depends)?.[1];
    if (!versioned) throw new LabError(`${kernelPackage} names no kernel package:\n${depends}`);
    await run("apt-get", ["download", versioned], { cwd: tmp });
    const deb = readdirSync(tmp).find((f) => f.endsWith(".deb"));
    if (!deb) throw new LabError(`apt-get download ${versioned} left no .deb`);
    await run("dpkg-deb", ["-x", deb, "pkg"], { cwd: tmp, timeoutMs: 300_000 });
    const kernel = readdirSync(join(tmp, "pkg/boot")).find((f) => f.startsWith("vmlinuz-"));
    if (!kernel) throw new LabError(`${deb} has no /boot/vmlinuz-*`);
    copyFileSync(join(tmp, "pkg/boot", kernel), join(tmp, probeGuestFiles.kernel));

    await run("gcc", ["-O2", "-static", "-mcx16", "-Wall", "-Werror", "-o", join(tmp, "root/init"), initSource]);
    await run("cpio", ["--quiet", "-o", "-H", "newc", "-F", join(tmp, probeGuestFiles.initrd)], {
      cwd: join(tmp, "root"),
      input: "init\n",
    });
    rmSync(join(tmp, "pkg"), { recursive: true, force: true });
    rmSync(join(tmp, "root"), { recursive: true, force: true });
    rmSync(join(tmp, deb));
  });
  return dir;
}
