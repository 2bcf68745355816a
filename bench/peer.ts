import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync } from "node:fs";
import { join } from "node:path";
import { cacheDir, repoRoot } from "../test/env/paths.js";
import { run } from "../test/env/proc.js";

const peerDir = join(repoRoot, "bench/peer");

/** The peer's sources, for its cache key: every Go file, go.mod and go.sum. */
function sourceDigest(): string {
  const hash = createHash("sha256");
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = join(dir, entry.name);
      if (entry.isDirectory() && entry.name !== "bin") walk(path);
      else if (/\.go$|^go\.(mod|sum)$/.test(entry.name)) hash.update(entry.name).update(readFileSync(path));
    }
  };
  walk(peerDir);
  return hash.digest("hex").slice(0, 12);
}

/** The Go peer's binary, built once per source version into the cache (cgo: librbd-dev, librados-dev). */
export function peerBinary(): string {
  return join(cacheDir, `bench-peer-${sourceDigest()}`, "peer");
}

export async function buildPeer(): Promise<string> {
  const binary = peerBinary();
  if (existsSync(binary)) return binary;
  mkdirSync(join(binary, ".."), { recursive: true });
  const started = Date.now();
  await run("go", ["-C", peerDir, "build", "-trimpath", "-o", `${binary}.tmp`, "."], { timeoutMs: 20 * 60_000 });
  renameSync(`${binary}.tmp`, binary);
  console.error(`[bench] built the Go peer in ${(Date.now() - started) / 1000}s`);
  return binary;
}
