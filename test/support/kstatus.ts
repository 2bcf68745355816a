import { join } from "node:path";
import { buildGoBinary, builtGoBinary } from "../env/go.js";
import { repoRoot } from "../env/paths.js";
import { run } from "../env/proc.js";

/** test/kstatus: cli-utils' kstatus Compute on objects, as kpt and cli-utils appliers read them. */
const kstatusDir = join(repoRoot, "test/kstatus");
export const buildKstatus = () => buildGoBinary(kstatusDir, "kstatus");

export async function kstatus(objects: object[]): Promise<{ name: string; status: string; message: string }[]> {
  const { stdout } = await run(builtGoBinary(kstatusDir, "kstatus"), [], { input: JSON.stringify(objects) });
  return stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { name: string; status: string; message: string });
}

/** test/kahuna: what the Kahuna orchestrator does, from Go (client-go's dynamic client and kstatus waits). */
const kahunaDir = join(repoRoot, "test/kahuna");
export const buildKahuna = () => buildGoBinary(kahunaDir, "kahuna");
export const kahunaBinary = () => builtGoBinary(kahunaDir, "kahuna");
