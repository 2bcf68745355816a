import { existsSync } from "node:fs";
import { join } from "node:path";
import { buildGoBinary, goBinary } from "../env/go.js";
import { repoRoot } from "../env/paths.js";
import { run } from "../env/proc.js";

/** test/kstatus: cli-utils' kstatus Compute on objects, as kpt and cli-utils appliers read them. */
const kstatusDir = join(repoRoot, "test/kstatus");
export const buildKstatus = () => buildGoBinary(kstatusDir, "kstatus");

export async function kstatus(objects: object[]): Promise<{ name: string; status: string; message: string }[]> {
  const binary = goBinary(kstatusDir, "kstatus");
  if (!existsSync(binary))
    throw new Error(`${binary} is missing: run \`bash .ci/setup\` (or \`npm run lab -- build\`)`);
  const { stdout } = await run(binary, [], { input: JSON.stringify(objects) });
  return stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { name: string; status: string; message: string });
}
