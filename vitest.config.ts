import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    reporters: ["default", "json"],
    outputFile: { json: "reports/vitest.json" },
    projects: [
      {
        // Pure logic beside the code: no lab, runs in parallel.
        test: { name: "unit", include: ["src/**/*.test.ts"] },
      },
      {
        // Against the real components of the lab, which the global setup starts once.
        test: {
          name: "lab",
          include: ["test/**/*.test.ts"],
          globalSetup: ["test/env/global-setup.ts"],
          // One apiserver, one Ceph, one libvirtd per node shared by all files: one file at a time.
          fileParallelism: false,
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
