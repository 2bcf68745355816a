import { spawn, execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

/**
 * Runs a command inside an image's root file system, as a container runtime would, for the lab:
 *
 *   unshare --mount --propagation private node --import tsx enter-root.ts ROOT PATH... -- CMD [ARG...]
 *
 * In that private mount namespace (the mounts go with it), ROOT becomes a mount point, and /proc,
 * /dev, /sys and each PATH are bind-mounted at the same place under ROOT; then CMD runs chrooted in ROOT. SIGTERM and SIGINT are
 * passed on, and this exits with CMD's status, so the lab stops it like any daemon.
 */
const argv = process.argv.slice(2);
const split = argv.indexOf("--");
const [root, ...paths] = argv.slice(0, split);
const command = argv.slice(split + 1);
if (split < 1 || !root || !command.length) {
  console.error("usage: enter-root.ts ROOT [PATH...] -- CMD [ARG...]");
  process.exit(2);
}
// ROOT on itself first: a container's / is a mount point, which `ip -n` needs (it makes / a slave).
execFileSync("mount", ["--bind", root, root]);
for (const path of ["/proc", "/dev", "/sys", ...paths]) {
  const target = join(root, path);
  mkdirSync(target, { recursive: true });
  execFileSync("mount", ["--rbind", path, target]);
}
const child = spawn("chroot", [root, ...command], { stdio: "inherit" });
for (const signal of ["SIGTERM", "SIGINT"] as const) process.on(signal, () => child.kill(signal));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 128 : 1)));
