import { mkdirSync, renameSync, rmSync } from "node:fs";

/**
 * Builds one cache entry, the folder `dir`: `build` fills a scratch folder beside it, which then
 * replaces `dir` in one rename, so an interrupted build never leaves half an entry. Says how long it took.
 */
export async function buildIntoCache(dir: string, what: string, build: (tmp: string) => Promise<void>): Promise<void> {
  const started = Date.now();
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    await build(tmp);
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  console.error(`[lab] built ${what} in ${(Date.now() - started) / 1000}s`);
}
