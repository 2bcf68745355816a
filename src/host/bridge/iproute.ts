import { execFile, spawn, type ChildProcess } from "node:child_process";

/** What iproute2 refused, by what a caller does about it. */
export type BridgeErrorKind = "not-found" | "exists" | "unsupported" | "invalid" | "failed";

export class BridgeError extends Error {
  override name = "BridgeError";
  constructor(
    readonly kind: BridgeErrorKind,
    message: string,
    readonly operation: string,
  ) {
    super(`${operation}: ${message}`);
  }
}

const classify = (stderr: string): BridgeErrorKind =>
  /Cannot find device|does not exist/i.test(stderr)
    ? "not-found"
    : /File exists/i.test(stderr)
      ? "exists"
      : /Unknown device type|Operation not supported|not supported/i.test(stderr)
        ? "unsupported"
        : /Invalid argument|Numerical result out of range|invalid|Error: argument/i.test(stderr)
          ? "invalid"
          : "failed";

/**
 * Linux bridges through iproute2: JSON output (`ip -j -d`) is parsed, never scraped, and every
 * command runs without a shell, with interface names passed as separate arguments. When a netns
 * is given, every command carries `-n NETNS`, so nothing outside it is ever touched.
 */
export class IpRoute {
  constructor(readonly netns?: string) {}

  private args(args: readonly string[]): string[] {
    return this.netns ? ["-n", this.netns, ...args] : [...args];
  }

  run(args: readonly string[], operation: string): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile("ip", this.args(args), { timeout: 10_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        const detail = (stderr || err.message).trim();
        reject(new BridgeError(classify(detail), detail, operation));
      });
    });
  }

  async json<T>(args: readonly string[], operation: string): Promise<T> {
    const out = await this.run(["-j", ...args], operation);
    return (out.trim() ? JSON.parse(out) : []) as T;
  }

  /** `ip monitor link`: its text is only a signal that something changed; state is re-read as JSON. */
  monitor(onLine: () => void): ChildProcess {
    // Killed with the agent, even by SIGKILL (setpriv sets the parent-death signal, then runs ip):
    // a monitor left behind would hold the node's network namespace for ever.
    const args = ["--pdeathsig", "KILL", "--", "ip", ...this.args(["monitor", "link"])];
    const child = spawn("setpriv", args, { stdio: ["ignore", "pipe", "ignore"] });
    child.stdout?.on("data", onLine);
    return child;
  }
}
