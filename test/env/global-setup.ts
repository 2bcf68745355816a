import { insideLab } from "./netns.js";
import { down, up } from "./lab.js";
import { labNetns } from "./paths.js";

/**
 * Starts the lab components a run needs, once, and stops the ones it started. A component that does
 * not come up fails the whole run with its log tail: no test is ever skipped for a missing component.
 * KAKTUS_LAB_KEEP=1 leaves what it started running for the next run.
 */
export default async function setup(): Promise<() => Promise<void>> {
  if (!insideLab()) {
    throw new Error(`tests run inside the lab network namespace ${labNetns}: start them with \`npm test\``);
  }
  const started = await up();
  return async () => {
    if (!process.env.KAKTUS_LAB_KEEP) await down(started);
  };
}
