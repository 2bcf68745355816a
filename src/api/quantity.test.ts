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
    // Every form the API server's quantity pattern admits:
    [".5Gi", 1n << 29n],
    ["1.Gi", 1n << 30n],
    ["2.", 2n],
    ["1500m", 2n],
    ["3u", 1n],
    ["1e-9", 1n],
    ["0", 0n],
  ])("%s is %s bytes", (q, bytes) => {
    expect(toBytes(q)).toBe(bytes);
  });

  it.each(["", "-1Gi", "ten", "1Gb", ".", "Gi", "1 Gi", "1e2.5", "9".repeat(65)])("rejects %j", (q) => {
    expect(() => toBytes(q)).toThrow(/not a byte quantity/);
  });

  it.each(["1e999999", "1e-999999", "1e65"])("refuses %j at once: out of range", (q) => {
    const started = performance.now();
    expect(() => toBytes(q)).toThrow(/out of range/);
    expect(performance.now() - started).toBeLessThan(50);
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
