import { join } from "node:path";
import { buildGoBinary, builtGoBinary } from "../test/env/go.js";
import { repoRoot } from "../test/env/paths.js";

/** The Go controller-runtime peer (cgo: librbd-dev, librados-dev), built once per source version into the cache. */
const peerDir = join(repoRoot, "bench/peer");
export const peerBinary = () => builtGoBinary(peerDir, "bench-peer", "peer");
export const buildPeer = () => buildGoBinary(peerDir, "bench-peer", "peer");
