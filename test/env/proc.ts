import { execFile, spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { logDir, pidDir } from "./paths.js";

export class LabError extends Error {
  override name = "LabError";
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Runs a program without a shell; a non-zero exit becomes an error that carries its stderr. */
export function run(
  cmd: string,
  args: readonly string[],
  opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = execFile(
      cmd,
      args,
      { timeout: opts.timeoutMs ?? 120_000, maxBuffer: 64 << 20, env: opts.env ?? process.env, cwd: opts.cwd },
      (err, stdout, stderr) => {
        if (err) {
          const detail = stderr.trim() || stdout.trim() || err.message;
          reject(new LabError(`${cmd} ${args.join(" ")} failed: ${detail}`));
        } else {
          resolvePromise({ stdout, stderr });
        }
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Polls `probe` until it returns a value, at most `timeoutMs`; the last failure is in the error. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  { timeoutMs, intervalMs = 200 }: { timeoutMs: number; intervalMs?: number },
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = "not ready";
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    await sleep(intervalMs);
  }
  throw new LabError(`${what} not ready after ${timeoutMs / 1000}s: ${last}`);
}

export interface Daemon {
  /** Name of the pid and log files. */
  name: string;
  /** What /proc/PID/comm must read (first 15 bytes of the executable name) before we signal it. */
  comm: string;
  /** A program that execs into it (unshare, chroot): what comm reads for the first instants. */
  launcher?: string;
  cmd: string;
  args: readonly string[];
  env?: NodeJS.ProcessEnv;
}

const pidFile = (name: string) => join(pidDir, `${name}.pid`);
export const logFile = (name: string) => join(logDir, `${name}.log`);

function procComm(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return undefined;
  }
}

/** The PID recorded for a daemon, only while that PID is still the same program (pid files go stale). */
export function runningPid(daemon: Pick<Daemon, "name" | "comm" | "launcher">): number | undefined {
  if (!existsSync(pidFile(daemon.name))) return undefined;
  const pid = Number(readFileSync(pidFile(daemon.name), "utf8"));
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  const comm = procComm(pid);
  return comm === daemon.comm.slice(0, 15) || (comm !== undefined && comm === daemon.launcher) ? pid : undefined;
}

/** Starts a long-running program detached from us (it outlives `npm run lab up`), logs to a file. */
export function startDaemon(daemon: Daemon): number {
  mkdirSync(pidDir, { recursive: true });
  mkdirSync(logDir, { recursive: true });
  const out = openSync(logFile(daemon.name), "a");
  try {
    const child = spawn(daemon.cmd, daemon.args, {
      detached: true,
      stdio: ["ignore", out, out],
      env: daemon.env ?? process.env,
    });
    if (child.pid === undefined) throw new LabError(`could not start ${daemon.cmd}`);
    child.unref();
    writeFileSync(pidFile(daemon.name), String(child.pid));
    return child.pid;
  } finally {
    closeSync(out);
  }
}

/** True while a process with this PID exists (a zombie counts as gone). */
export function alive(pid: number): boolean {
  try {
    return !readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.startsWith("Z");
  } catch {
    return false;
  }
}

/** The live children of a process (the fourth field of /proc/PID/stat is the parent's PID). */
export function childrenOf(parent: number): number[] {
  return readdirSync("/proc")
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        return Number(readFileSync(`/proc/${d}/stat`, "utf8").split(") ")[1]?.split(" ")[1]) === parent;
      } catch {
        return false; // gone meanwhile
      }
    })
    .map(Number)
    .filter(alive);
}

/**
 * Stops one process we started, by PID, after checking it is still ours: TERM, then KILL after the
 * grace. Says how it ended: "exited" on TERM, "killed", or "gone" (not running, or no longer ours).
 */
export async function stopPid(pid: number, comm: string, graceMs = 10_000): Promise<"exited" | "killed" | "gone"> {
  if (procComm(pid) !== comm.slice(0, 15)) return "gone";
  process.kill(pid, "SIGTERM");
  const deadline = Date.now() + graceMs;
  while (alive(pid) && Date.now() < deadline) await sleep(50);
  if (!alive(pid) || procComm(pid) !== comm.slice(0, 15)) return "exited";
  process.kill(pid, "SIGKILL");
  for (let i = 0; i < 100 && alive(pid); i++) await sleep(20);
  return "killed";
}

export async function stopDaemon(
  daemon: Pick<Daemon, "name" | "comm">,
  graceMs?: number,
): Promise<"exited" | "killed" | "gone"> {
  const pid = runningPid(daemon);
  const ended = pid === undefined ? "gone" : await stopPid(pid, daemon.comm, graceMs);
  rmSync(pidFile(daemon.name), { force: true });
  return ended;
}

/** Waits until a daemon answers `ready`; if it never does, the error carries the tail of its log. */
export async function waitDaemonReady(
  daemon: Pick<Daemon, "name">,
  what: string,
  ready: () => Promise<boolean>,
  opts: { timeoutMs: number; intervalMs?: number },
): Promise<void> {
  await waitFor(what, async () => ((await ready()) ? true : undefined), opts).catch((err: unknown) => {
    throw new LabError(`${(err as Error).message}\n--- ${daemon.name} log ---\n${logTail(daemon.name)}`);
  });
}

/** The last lines of a daemon's log, for error messages that say why it did not come up. */
export function logTail(name: string, lines = 15): string {
  try {
    return readFileSync(logFile(name), "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/** Rejects with a clear message when `promise` has not settled within `ms`. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new LabError(`${what}: nothing after ${ms / 1000}s`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
