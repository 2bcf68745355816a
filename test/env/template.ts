import { createHash } from "node:crypto";
import { existsSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { buildIntoCache } from "./cache.js";
import { join } from "node:path";
import { cacheDir } from "./paths.js";
import { LabError, run } from "./proc.js";

/**
 * The lab's golden image, as a Kaktus operator would import one: Debian bookworm made here from
 * Debian's packages (mmdebstrap), with the cloud kernel, systemd, cloud-init, the QEMU guest agent
 * and OpenSSH, on a bootable 2 GiB raw disk made without loop mounts:
 *   MBR (syslinux's mbr.bin) | p1 FAT16 96 MiB, active: syslinux, vmlinuz, initrd.img | p2 ext4 "kaktus-root"
 * The FAT file system is written with mkfs.fat/mcopy at its offset, syslinux installs itself through
 * mtools, and mke2fs -d fills the root file system from the tree at its offset. Built once into the
 * cache, keyed by this recipe; the lab imports it into Ceph (fixtures.ts).
 */
const packages = [
  "systemd-sysv",
  "udev",
  // systemd-logind needs D-Bus, and without logind nothing in the guest answers the ACPI power button.
  "dbus",
  "linux-image-cloud-amd64",
  "initramfs-tools",
  "cloud-init",
  // growpart (with sfdisk from fdisk): a clone larger than the template grows its root at first boot.
  "cloud-guest-utils",
  "fdisk",
  "qemu-guest-agent",
  "openssh-server",
  "iproute2",
  "ifupdown",
  "isc-dhcp-client",
  "netbase",
  "iputils-ping",
];
const diskBytes = 2 * 2 ** 30;
const sector = 512;
const bootStart = 2048;
const bootSectors = 96 * 2048;
const rootStart = bootStart + bootSectors;
const rootSectors = diskBytes / sector - rootStart;
export const templateRootLabel = "kaktus-root";

const syslinuxCfg = `DEFAULT debian
PROMPT 0
TIMEOUT 0
LABEL debian
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND root=LABEL=${templateRootLabel} ro console=ttyS0,115200
`;

// Only the NoCloud seed and nothing else: no network metadata service is ever probed from the lab.
// No locale module: minbase has no locales package (C.UTF-8 is built in), and update-locale fails.
const cloudCfg = "datasource_list: [ NoCloud, None ]\nlocale: false\n";

/**
 * mmdebstrap hooks (its own shell runs them, on constants only). Clones must not share host keys:
 * cloud-init makes them at first boot. No apt timers: a lab guest has no mirror to reach.
 */
const hooks = [
  'rm -f "$1"/etc/ssh/ssh_host_*',
  'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*',
  'systemctl --root="$1" disable apt-daily.timer apt-daily-upgrade.timer',
  'echo localhost > "$1"/etc/hostname',
  `echo 'LABEL=${templateRootLabel} / ext4 defaults,errors=remount-ro 0 1' > "$1"/etc/fstab`,
  `printf '%s' '${cloudCfg}' > "$1"/etc/cloud/cloud.cfg.d/90-kaktus-lab.cfg`,
];
const dpkgExcludes = [
  "path-exclude=/usr/share/man/*",
  "path-exclude=/usr/share/info/*",
  "path-exclude=/usr/share/locale/*",
  "path-exclude=/usr/share/doc/*",
  "path-include=/usr/share/doc/*/copyright",
];
/** Bump the number when something below changes that the lists above do not show. */
const recipe = JSON.stringify([1, packages, diskBytes, bootSectors, syslinuxCfg, hooks, dpkgExcludes]);

export const templateFile = "debian-12.raw";
export const templateRecipeHash = createHash("sha256").update(recipe).digest("hex").slice(0, 12);
export const templateDir = () => join(cacheDir, `template-${templateRecipeHash}`);
export const templatePath = () => join(templateDir(), templateFile);
export const templateBuilt = () => existsSync(templatePath());

export async function buildTemplate(): Promise<string> {
  const dir = templateDir();
  if (templateBuilt()) return dir;
  await buildIntoCache(dir, "the template image (Debian bookworm, cloud-init)", async (tmp) => {
    const root = join(tmp, "root");
    const disk = join(tmp, templateFile);
    await run(
      "mmdebstrap",
      [
        "--variant=minbase",
        "--mode=root",
        "--format=directory",
        "--quiet",
        `--include=${packages.join(",")}`,
        ...dpkgExcludes.map((o) => `--dpkgopt=${o}`),
        ...hooks.map((h) => `--customize-hook=${h}`),
        "bookworm",
        root,
      ],
      { timeoutMs: 900_000 },
    );
    const boot = readdirSync(join(root, "boot"));
    const kernel = boot.find((f) => f.startsWith("vmlinuz-"));
    const initrd = boot.find((f) => f.startsWith("initrd.img-"));
    if (!kernel || !initrd) throw new LabError(`the template's /boot has no kernel and initrd: ${boot.join(" ")}`);

    await run("truncate", ["-s", String(diskBytes), disk]);
    await run("sfdisk", ["-q", disk], {
      input: `label: dos\nstart=${bootStart}, size=${bootSectors}, type=ef, bootable\nstart=${rootStart}, size=${rootSectors}, type=83\n`,
    });
    await run("mkfs.fat", ["-F", "16", "-n", "KBOOT", "--offset", String(bootStart), disk, String(bootSectors / 2)]);
    await run("syslinux", ["--offset", String(bootStart * sector), "--install", disk]);
    await run("dd", [
      `if=/usr/lib/syslinux/mbr/mbr.bin`,
      `of=${disk}`,
      "bs=440",
      "count=1",
      "conv=notrunc",
      "status=none",
    ]);
    writeFileSync(join(tmp, "syslinux.cfg"), syslinuxCfg);
    const fat = `${disk}@@${bootStart * sector}`;
    const mtools = { env: { ...process.env, MTOOLS_SKIP_CHECK: "1" } };
    await run("mcopy", ["-i", fat, join(root, "boot", kernel), "::/vmlinuz"], mtools);
    await run("mcopy", ["-i", fat, join(root, "boot", initrd), "::/initrd.img"], mtools);
    await run("mcopy", ["-i", fat, join(tmp, "syslinux.cfg"), "::/syslinux.cfg"], mtools);
    await run(
      "mke2fs",
      [
        "-q",
        "-t",
        "ext4",
        "-L",
        templateRootLabel,
        "-d",
        root,
        "-E",
        `offset=${rootStart * sector}`,
        disk,
        `${rootSectors / 2}k`,
      ],
      { timeoutMs: 300_000 },
    );
    rmSync(root, { recursive: true, force: true });
    rmSync(join(tmp, "syslinux.cfg"));
  });
  return dir;
}
