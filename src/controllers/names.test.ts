import { describe, expect, it } from "vitest";
import { domainKey, domainName } from "../api/names.js";
import { bridgeFinalizer } from "./bridge.js";

describe("names the reconcilers derive", () => {
  it("domain names map back to the object key, and only the operator's do", () => {
    expect(domainKey(domainName("acme", "web-1"))).toBe("acme/web-1");
    expect(domainKey(domainName("a", "b.c-d"))).toBe("a/b.c-d");
    for (const foreign of ["web-1", "acme_", "_web", "Acme_web", "a_b_c", "acme_web-", "acme_-web"]) {
      expect(domainKey(foreign), foreign).toBeUndefined();
    }
  });

  it("per-node Bridge finalizers are valid qualified names for any node name", () => {
    expect(bridgeFinalizer("kaktus-a")).toBe("kaktus.kowabunga.cloud/bridge-kaktus-a");
    const long = `${"n".repeat(200)}.example.org`;
    const finalizer = bridgeFinalizer(long);
    const namePart = finalizer.split("/")[1]!;
    expect(namePart.length).toBeLessThanOrEqual(63);
    expect(namePart).toMatch(/^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$/);
    expect(bridgeFinalizer(long)).toBe(finalizer);
    expect(bridgeFinalizer(`${long}x`)).not.toBe(finalizer);
  });
});
