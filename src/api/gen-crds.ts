import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { crdFileName, jsonSchemaFileName, kinds, renderCrd, renderJsonSchema } from "./crds.js";

/** `npm run gen:crds`: writes crds/*.yaml and their JSON Schemas (schemas/) from the schemas in src/api. */
const [dir = "crds", schemaDir = "schemas"] = process.argv.slice(2);
for (const def of kinds) {
  for (const [file, text] of [
    [join(dir, crdFileName(def)), renderCrd(def)],
    [join(schemaDir, jsonSchemaFileName(def)), renderJsonSchema(def)],
  ] as const) {
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, text);
    console.log(`wrote ${file}`);
  }
}
