import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { buildIntoCache } from "./cache.js";
import { cacheDir } from "./paths.js";
import { run } from "./proc.js";

/** A Go module's sources, for its cache key: every Go file, go.mod and go.sum below `dir`. */
function sourceDigest(dir: string): string {
  const hash = createHash("sha256");
  const walk = (d: string): void => {
    for (const entry of readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = join(d, entry.name);
      if (entry.isDirectory() && entry.name !== "bin") walk(path);
      else if (/\.go$|^go\.(mod|sum)$/.test(entry.name)) hash.update(entry.name).update(readFileSync(path));
    }
  };
  walk(dir);
  return hash.digest("hex").slice(0, 12);
}

/** Where the binary of the Go module in `dir` is cached, per version of its sources: CACHE/NAME-DIGEST/FILE. */
export const goBinary = (dir: string, name: string, file = name) =>
  join(cacheDir, `${name}-${sourceDigest(dir)}`, file);

/** The cached binary, built beforehand outside the lab (the lab cannot reach the Go proxy). */
export function builtGoBinary(dir: string, name: string, file = name): string {
  const binary = goBinary(dir, name, file);
  if (!existsSync(binary))
    throw new Error(`${binary} is missing: run \`bash .ci/setup\` (or \`npm run lab -- build\`)`);
  return binary;
}

/**
 * Builds the Go module in `dir` once per source version into the cache. Outside the lab: modules
 * come from the Go proxy, which the lab's namespaces cannot reach.
 */
export async function buildGoBinary(dir: string, name: string, file = name): Promise<string> {
  const binary = goBinary(dir, name, file);
  if (existsSync(binary)) return binary;
  await buildIntoCache(dirname(binary), name, (tmp) =>
    run("go", ["-C", dir, "build", "-trimpath", "-o", join(tmp, file), "."], { timeoutMs: 20 * 60_000 }).then(() => {}),
  );
  return binary;
}
