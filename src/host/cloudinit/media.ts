import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { chmod, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

export interface NoCloudData {
  userData: string;
  metaData: string;
  networkConfig?: string;
}

/** NoCloud seed images (the cloud-init cdrom) on a node; controllers see only this. */
export interface CloudInitMedia {
  /** Where NAME's seed image is (or will be) on the node. */
  path(name: string): string;
  /** The digest (seedDigest) of what NAME's image holds; undefined when there is no image. */
  digest(name: string): Promise<string | undefined>;
  /** Writes NAME's seed image, replacing the one there. */
  write(name: string, data: NoCloudData): Promise<void>;
  remove(name: string): Promise<void>;
}

/** What identifies a seed image's content: an unchanged VM never rewrites its image. */
export const seedDigest = (data: NoCloudData): string =>
  createHash("sha256").update(JSON.stringify(data)).digest("hex");

/** Names become file names: only what a domain name can hold, never a path. */
const safeName = /^[a-z0-9][a-z0-9._-]{0,252}$/;

/**
 * Seed images built by cloud-localds (cloud-image-utils), run without a shell; the content digest
 * is kept beside each image.
 */
export class LocalCloudInitMedia implements CloudInitMedia {
  constructor(readonly dir: string) {}

  private paths(name: string) {
    if (!safeName.test(name)) throw new Error(`${JSON.stringify(name)} cannot name a cloud-init image`);
    return { iso: join(this.dir, `${name}.iso`), hash: join(this.dir, `${name}.sha256`) };
  }

  path(name: string): string {
    return this.paths(name).iso;
  }

  async digest(name: string): Promise<string | undefined> {
    const { iso, hash } = this.paths(name);
    const present = await stat(iso).then(
      () => true,
      () => false,
    );
    return present ? await readFile(hash, "utf8").catch(() => undefined) : undefined;
  }

  /** Seed images may hold secrets (passwords, keys in user-data): root only, in a folder only root lists. */
  async write(name: string, data: NoCloudData): Promise<void> {
    const { iso, hash } = this.paths(name);
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await chmod(this.dir, 0o700);
    await this.removeWorkDirs(name);
    const work = await mkdtemp(join(this.dir, `.${name}-`));
    try {
      const file = (n: string, text: string) =>
        writeFile(join(work, n), text, { mode: 0o600 }).then(() => join(work, n));
      const args = data.networkConfig ? ["--network-config", await file("network-config", data.networkConfig)] : [];
      const out = join(work, "seed.iso");
      args.push(out, await file("user-data", data.userData), await file("meta-data", data.metaData));
      await execFileAsync("cloud-localds", args, { timeout: 30_000 });
      await chmod(out, 0o600);
      await rename(out, iso);
      await writeFile(hash, seedDigest(data), { mode: 0o600 });
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }

  async remove(name: string): Promise<void> {
    const { iso, hash } = this.paths(name);
    await rm(iso, { force: true });
    await rm(hash, { force: true });
    await this.removeWorkDirs(name);
  }

  /** Work folders a killed agent left behind (one name is never built twice at once). */
  private async removeWorkDirs(name: string): Promise<void> {
    const entries = await readdir(this.dir).catch(() => [] as string[]);
    // mkdtemp adds exactly six characters: ".NAME-XXXXXX" never matches another VM's folder.
    const mine = (e: string) => e.length === name.length + 8 && e.startsWith(`.${name}-`);
    for (const entry of entries.filter(mine)) await rm(join(this.dir, entry), { recursive: true, force: true });
  }
}
