import type { BridgeSpec } from "../api/bridge.js";

export type LabelSelector = NonNullable<BridgeSpec["nodeSelector"]>;

/** metav1.LabelSelector semantics: every matchLabels pair and every expression must hold; empty matches all. */
export function matchesSelector(
  selector: LabelSelector | undefined,
  labels: Readonly<Record<string, string>>,
): boolean {
  for (const [key, value] of Object.entries(selector?.matchLabels ?? {})) if (labels[key] !== value) return false;
  for (const e of selector?.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    const ok =
      e.operator === "Exists"
        ? has
        : e.operator === "DoesNotExist"
          ? !has
          : e.operator === "In"
            ? has && (e.values ?? []).includes(labels[e.key]!)
            : !has || !(e.values ?? []).includes(labels[e.key]!);
    if (!ok) return false;
  }
  return true;
}
