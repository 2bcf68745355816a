import { describe, expect, it } from "vitest";
import { matchesSelector, type LabelSelector } from "./selector.js";

const labels = { zone: "a", role: "hv" };

describe("matchesSelector (metav1.LabelSelector)", () => {
  it.each<[string, LabelSelector | undefined, boolean]>([
    ["no selector", undefined, true],
    ["empty selector", {}, true],
    ["matchLabels hit", { matchLabels: { zone: "a" } }, true],
    ["matchLabels miss", { matchLabels: { zone: "b" } }, false],
    ["matchLabels absent key", { matchLabels: { rack: "1" } }, false],
    ["In hit", { matchExpressions: [{ key: "zone", operator: "In", values: ["b", "a"] }] }, true],
    ["In miss", { matchExpressions: [{ key: "zone", operator: "In", values: ["b"] }] }, false],
    ["In on absent key", { matchExpressions: [{ key: "rack", operator: "In", values: ["1"] }] }, false],
    ["NotIn hit", { matchExpressions: [{ key: "zone", operator: "NotIn", values: ["a"] }] }, false],
    ["NotIn on absent key", { matchExpressions: [{ key: "rack", operator: "NotIn", values: ["1"] }] }, true],
    ["Exists", { matchExpressions: [{ key: "role", operator: "Exists" }] }, true],
    ["DoesNotExist", { matchExpressions: [{ key: "role", operator: "DoesNotExist" }] }, false],
    [
      "labels and expressions together must both hold",
      { matchLabels: { zone: "a" }, matchExpressions: [{ key: "role", operator: "In", values: ["storage"] }] },
      false,
    ],
  ])("%s", (_, selector, expected) => {
    expect(matchesSelector(selector, labels)).toBe(expected);
  });
});
