import { describe, expect, it } from "vitest";
import { capacityOf, quotaRefusal, type Claimant } from "./quota.js";

const Gi = 1n << 30n;
const vol = (key: string, created: string, size: bigint, holds?: bigint, deleting = false): Claimant => ({
  key,
  created,
  request: { storage: size },
  ...(holds !== undefined ? { holds: { storage: holds } } : {}),
  deleting,
});

describe("capacityOf: the namespace's annotations", () => {
  it("reads storage and memory as quantities, cores as a count", () => {
    expect(
      capacityOf({
        "kaktus.kowabunga.cloud/max-storage": "10Gi",
        "kaktus.kowabunga.cloud/max-cores": "8",
        "kaktus.kowabunga.cloud/max-memory": "16Gi",
      }),
    ).toEqual({ limits: { storage: 10n * Gi, cores: 8n, memory: 16n * Gi } });
    expect(capacityOf(undefined)).toEqual({ limits: {} });
  });

  it("an unreadable value is an error, naming the annotation", () => {
    expect(capacityOf({ "kaktus.kowabunga.cloud/max-cores": "8.5" }).error).toBe(
      'namespace annotation kaktus.kowabunga.cloud/max-cores: "8.5" is not a cores amount',
    );
    expect(capacityOf({ "kaktus.kowabunga.cloud/max-storage": "lots" }).error).toMatch(/max-storage/);
  });
});

describe("quotaRefusal: who gets the room", () => {
  it("no limit: everything fits", () => {
    expect(quotaRefusal("a", [vol("a", "1", 100n * Gi)], {})).toBeUndefined();
  });

  it("earlier objects first; a refused one does not count for later ones", () => {
    const objects = [vol("a", "1", 6n * Gi), vol("b", "2", 6n * Gi), vol("c", "3", 4n * Gi)];
    const limits = { storage: 10n * Gi };
    expect(quotaRefusal("a", objects, limits)).toBeUndefined();
    expect(quotaRefusal("b", objects, limits)).toBe(
      "storage: 6Gi asked, 6Gi of 10Gi in use (the namespace's capacity)",
    );
    expect(quotaRefusal("c", objects, limits)).toBeUndefined();
  });

  it("the same answer whatever the order the objects come in", () => {
    const objects = [vol("b", "2", 6n * Gi), vol("c", "2", 6n * Gi), vol("a", "1", 2n * Gi)];
    const limits = { storage: 8n * Gi };
    const verdicts = (list: Claimant[]) => ["a", "b", "c"].map((k) => quotaRefusal(k, list, limits) === undefined);
    expect(verdicts(objects)).toEqual([true, true, false]);
    expect(verdicts([...objects].reverse())).toEqual([true, true, false]);
  });

  it("what exists counts first and is never taken away; only its growth is refused", () => {
    const objects = [vol("new", "1", 2n * Gi), vol("old", "2", 12n * Gi, 9n * Gi)];
    const limits = { storage: 10n * Gi };
    // The older pending object loses to the image that exists, whatever their creation order.
    expect(quotaRefusal("new", objects, limits)).toMatch(/^storage: 2Gi asked, 9Gi of 10Gi in use/);
    expect(quotaRefusal("old", objects, limits)).toMatch(/^storage: 12Gi asked, 0 of 10Gi in use/);
    // A limit lowered below what is held: nothing is refused that does not grow.
    expect(quotaRefusal("old", [vol("old", "2", 9n * Gi, 9n * Gi)], { storage: 1n * Gi })).toBeUndefined();
  });

  it("an object being deleted counts while it holds something, not before", () => {
    const limits = { storage: 10n * Gi };
    expect(quotaRefusal("b", [vol("a", "1", 8n * Gi, 8n * Gi, true), vol("b", "2", 4n * Gi)], limits)).toMatch(
      /^storage/,
    );
    expect(
      quotaRefusal("b", [vol("a", "1", 8n * Gi, undefined, true), vol("b", "2", 4n * Gi)], limits),
    ).toBeUndefined();
  });

  it("cores and memory are checked each, and both are said", () => {
    const vm = (key: string, created: string, cores: bigint, memory: bigint): Claimant => ({
      key,
      created,
      request: { cores, memory },
    });
    const objects = [vm("a", "1", 4n, 4n * Gi), vm("b", "2", 4n, 8n * Gi)];
    expect(quotaRefusal("b", objects, { cores: 6n, memory: 8n * Gi })).toBe(
      "cores: 4 asked, 4 of 6 in use; memory: 8Gi asked, 4Gi of 8Gi in use (the namespace's capacity)",
    );
    expect(quotaRefusal("b", objects, { cores: 8n })).toBeUndefined();
  });
});
