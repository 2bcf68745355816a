import { describe, expect, it } from "vitest";
import { scaleBenchmark } from "../../bench/scale.js";

/**
 * The scale benchmark must keep working: run at a tiny N, for the operator and for the Go peer,
 * checking what it reports, never how fast (figures come from `npm run bench -- scale`).
 */
describe("the scale benchmark, smoke run at N = 4", () => {
  it.each(["kaktus", "peer"] as const)(
    "%s: converges, stays quiet, repairs the drift and deletes everything",
    async (operator) => {
      const figures = await scaleBenchmark({
        n: 4,
        operator,
        bridges: 2,
        steadySeconds: 5,
        resyncSeconds: 5,
        driftDomains: 2,
        driftBridges: 1,
      });
      console.log(`[figure] scale smoke ${operator}: ${JSON.stringify(figures)}`);
      expect(figures).toMatchObject({ operator, n: 4, objects: 10, drift: { repaired: 3 } });
      expect(figures.reconcilesPerObject).toBeGreaterThan(0);
      expect(figures.apiWritesPerObject).toBeGreaterThan(0);
      if (operator === "kaktus") expect(figures.steady).toMatchObject({ apiWrites: 0, hostMutations: 0 });
    },
    600_000,
  );
});
