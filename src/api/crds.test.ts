import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { crdFileName, customResourceDefinition, kinds, renderCrd } from "./crds.js";

describe("generated CRDs", () => {
  it.each(kinds.map((k) => [k.names.kind, k] as const))(
    "crds/ holds the current %s CRD (run npm run gen:crds)",
    (_, def) => {
      expect(readFileSync(`crds/${crdFileName(def)}`, "utf8")).toBe(renderCrd(def));
    },
  );

  it("declares every object in the schema (structural): no TypeBox-only keywords leak", () => {
    for (const def of kinds) {
      const text = JSON.stringify(customResourceDefinition(def));
      expect(text).not.toMatch(/patternProperties|"\$id"|"anyOf":\[\{"const"/);
    }
  });
});
