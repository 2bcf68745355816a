import { readFileSync } from "node:fs";

/**
 * What this build is: the package version, and the source revision the image build stamps into the
 * environment (KAKTUS_BUILD_REVISION); "unknown" when run from a checkout.
 */
export const build = {
  version: (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string })
    .version,
  revision: process.env.KAKTUS_BUILD_REVISION ?? "unknown",
  node: process.version,
} as const;
