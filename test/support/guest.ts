import { setTimeout as sleep } from "node:timers/promises";
import { virsh, type LabNode } from "../env/lab.js";

/**
 * The test's own hands inside a real guest: QEMU guest agent commands through the node's libvirt
 * (virsh qemu-agent-command), never a network login.
 */
export async function agentCommand<T>(node: LabNode, domain: string, execute: string, args?: object): Promise<T> {
  const command = JSON.stringify({ execute, ...(args ? { arguments: args } : {}) });
  const { stdout } = await virsh(node, "qemu-agent-command", domain, command, "--timeout", "10");
  return (JSON.parse(stdout) as { return: T }).return;
}

export interface GuestExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs a program in the guest (guest-exec, no shell) and waits for it, at most `timeoutMs`. */
export async function guestExec(
  node: LabNode,
  domain: string,
  argv: [string, ...string[]],
  timeoutMs = 60_000,
): Promise<GuestExecResult> {
  const [path, ...arg] = argv;
  const { pid } = await agentCommand<{ pid: number }>(node, domain, "guest-exec", {
    path,
    arg,
    "capture-output": true,
  });
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const s = await agentCommand<{ exited: boolean; exitcode?: number; "out-data"?: string; "err-data"?: string }>(
      node,
      domain,
      "guest-exec-status",
      { pid },
    );
    if (s.exited) {
      const text = (b64?: string) => Buffer.from(b64 ?? "", "base64").toString("utf8");
      return { exitCode: s.exitcode ?? -1, stdout: text(s["out-data"]), stderr: text(s["err-data"]) };
    }
    await sleep(500);
  }
  throw new Error(`${argv.join(" ")} in ${domain} did not end within ${timeoutMs} ms`);
}
