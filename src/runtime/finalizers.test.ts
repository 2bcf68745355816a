import { describe, expect, it } from "vitest";
import { addFinalizerPatch, removeFinalizerPatch } from "./finalizers.js";

const f = "kaktus.kowabunga.cloud/volume";

describe("finalizer patches", () => {
  it("adds to a missing list, guarded by its absence", () => {
    expect(addFinalizerPatch(undefined, f)).toEqual([
      { op: "test", path: "/metadata/finalizers", value: null },
      { op: "add", path: "/metadata/finalizers", value: [f] },
    ]);
  });

  it("appends to an existing list, guarded by the list it saw", () => {
    expect(addFinalizerPatch(["other"], f)).toEqual([
      { op: "test", path: "/metadata/finalizers", value: ["other"] },
      { op: "add", path: "/metadata/finalizers/-", value: f },
    ]);
  });

  it("is empty when there is nothing to do", () => {
    expect(addFinalizerPatch([f], f)).toEqual([]);
    expect(removeFinalizerPatch(["other"], f)).toEqual([]);
    expect(removeFinalizerPatch(undefined, f)).toEqual([]);
  });

  it("removes exactly the entry it saw at that index", () => {
    expect(removeFinalizerPatch(["other", f], f)).toEqual([
      { op: "test", path: "/metadata/finalizers/1", value: f },
      { op: "remove", path: "/metadata/finalizers/1" },
    ]);
  });
});
