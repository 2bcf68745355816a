import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { crdFileName, kinds, renderCrd } from "./crds.js";

/** `npm run gen:crds`: writes crds/*.yaml from the schemas in src/api. */
const dir = process.argv[2] ?? "crds";
for (const def of kinds) {
  const file = join(dir, crdFileName(def));
  writeFileSync(file, renderCrd(def));
  console.log(`wrote ${file}`);
}
