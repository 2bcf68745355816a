import { describe, expect, it } from "vitest";
import { formatBytes, toBytes } from "./quantity.js";

describe("byte quantities", () => {
  it.each([
    ["20Gi", 20n << 30n],
    ["1.5Gi", 3n << 29n],
    ["64Mi", 64n << 20n],
    ["1G", 1_000_000_000n],
    ["1048576", 1048576n],
    [1048576, 1048576n],
    ["1e3", 1000n],
    ["1.5", 2n], // rounded up to a whole byte
    ["0.5Ki", 512n],
    ["+2Ki", 2048n],
  ])("%s is %s bytes", (q, bytes) => {
    expect(toBytes(q)).toBe(bytes);
  });

  it.each(["", "-1Gi", "ten", "1Gb", "1.Gi", "Gi", "1 Gi"])("rejects %j", (q) => {
    expect(() => toBytes(q)).toThrow(/not a byte quantity/);
  });

  it.each([
    [20n << 30n, "20Gi"],
    [1536n << 20n, "1536Mi"],
    [1000n, "1000"],
    [0n, "0"],
  ])("formats %s as %s", (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
    expect(toBytes(text)).toBe(bytes);
  });
});
