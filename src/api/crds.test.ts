import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  crdFileName,
  customResourceDefinition,
  jsonSchemaFileName,
  kinds,
  renderCrd,
  renderJsonSchema,
} from "./crds.js";

describe("generated CRDs", () => {
  it.each(kinds.map((k) => [k.names.kind, k] as const))(
    "crds/ holds the current %s CRD (run npm run gen:crds)",
    (_, def) => {
      expect(readFileSync(`crds/${crdFileName(def)}`, "utf8")).toBe(renderCrd(def));
      expect(readFileSync(`schemas/${jsonSchemaFileName(def)}`, "utf8")).toBe(renderJsonSchema(def));
    },
  );

  it("declares every object in the schema (structural): no TypeBox-only keywords leak", () => {
    for (const def of kinds) {
      const text = JSON.stringify(customResourceDefinition(def));
      expect(text).not.toMatch(/patternProperties|"\$id"|"anyOf":\[\{"const"/);
    }
  });

  it("describes every field, for kubectl explain (list items excepted: their list says it)", () => {
    type Schema = { description?: string; properties?: Record<string, Schema>; items?: Schema };
    const undescribed = (node: Schema, path: string): string[] => [
      ...(path && !node.description ? [path] : []),
      ...Object.entries(node.properties ?? {}).flatMap(([k, v]) => undescribed(v, path ? `${path}.${k}` : k)),
      ...(node.items
        ? Object.entries(node.items.properties ?? {}).flatMap(([k, v]) => undescribed(v, `${path}[].${k}`))
        : []),
    ];
    for (const def of kinds) {
      const root = customResourceDefinition(def).spec.versions[0]!.schema.openAPIV3Schema as Schema;
      const { spec, status } = root.properties!;
      expect([...undescribed(spec!, "spec"), ...undescribed(status!, "status")], def.names.kind).toEqual([]);
    }
  });
});
