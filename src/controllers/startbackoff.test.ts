import { describe, expect, it } from "vitest";
import { LibvirtError } from "../host/libvirt/errors.js";
import { StartBackoff } from "./startbackoff.js";
import { startFailure } from "./vm-executor.js";

const s = 1000;
const min = 60 * s;

function clock() {
  let t = 1_000_000;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

describe("start backoff", () => {
  it("doubles from 10 s to 5 min between failed starts", () => {
    const c = clock();
    const b = new StartBackoff(undefined, c.now);
    const delays = Array.from({ length: 8 }, () => {
      const before = c.now();
      const w = b.failed("k", 1, "boom");
      c.advance(w.until - before);
      return (w.until - before) / s;
    });
    expect(delays).toEqual([10, 20, 40, 80, 160, 300, 300, 300]);
  });

  it("makes the key wait until its time, whatever enqueues it meanwhile", () => {
    const c = clock();
    const b = new StartBackoff(undefined, c.now);
    expect(b.waiting("k", 1)).toBeUndefined();
    b.failed("k", 1, "cannot set up guest memory");
    c.advance(9 * s);
    expect(b.waiting("k", 1)).toMatchObject({ failures: 1, message: "cannot set up guest memory" });
    c.advance(1 * s);
    expect(b.waiting("k", 1)).toBeUndefined();
  });

  it("counts a domain that stops soon after its start as a failed start", () => {
    const c = clock();
    const b = new StartBackoff(undefined, c.now);
    b.started("k", 1);
    c.advance(30 * s);
    b.foundStopped("k", "QEMU crashed");
    expect(b.waiting("k", 1)).toMatchObject({
      failures: 1,
      message: "the domain stopped within 5 min of its start: QEMU crashed",
    });
    c.advance(10 * s);
    b.started("k", 1);
    c.advance(1 * s);
    b.foundStopped("k", "the guest powered off");
    expect(b.waiting("k", 1)?.failures).toBe(2);
    expect(b.waiting("k", 1)!.until - c.now()).toBe(20 * s);
  });

  it("forgets failures once the domain has run for 5 min, and a late stop starts afresh", () => {
    const c = clock();
    const b = new StartBackoff(undefined, c.now);
    b.failed("k", 1, "x");
    b.failed("k", 1, "x");
    c.advance(1 * min);
    b.started("k", 1);
    c.advance(4 * min);
    b.running("k");
    b.foundStopped("k", "the guest powered off");
    expect(b.waiting("k", 1)?.failures).toBe(3);

    const late = new StartBackoff(undefined, c.now);
    late.failed("k", 1, "x");
    c.advance(10 * s);
    late.started("k", 1);
    c.advance(6 * min);
    late.foundStopped("k", "the guest powered off");
    expect(late.waiting("k", 1)).toBeUndefined();
    late.failed("k", 1, "y");
    expect(late.waiting("k", 1)?.failures).toBe(1);
  });

  it("a stop that did not follow a start of the agent's, or came from outside, is not a failure", () => {
    const c = clock();
    const b = new StartBackoff(undefined, c.now);
    b.foundStopped("k", "the guest powered off");
    expect(b.waiting("k", 1)).toBeUndefined();
    b.started("k", 1);
    c.advance(5 * s);
    b.foundStopped("k", undefined);
    expect(b.waiting("k", 1)).toBeUndefined();
  });

  it("a new generation (the spec changed) ends the wait", () => {
    const b = new StartBackoff();
    b.failed("k", 1, "x");
    b.failed("k", 1, "x");
    expect(b.waiting("k", 1)?.failures).toBe(2);
    expect(b.waiting("k", 2)).toBeUndefined();
    expect(b.waiting("k", 1)).toBeUndefined();
    expect(b.failed("k", 2, "y").failures).toBe(1);
  });

  it("forget drops any wait", () => {
    const b = new StartBackoff();
    b.failed("k", 1, "x");
    b.forget("k");
    expect(b.waiting("k", 1)).toBeUndefined();
  });
});

describe("why a start failed, the same words each try", () => {
  it.each([
    "internal error: qemu unexpectedly closed the monitor: 2026-11-25T18:18:28.736741Z qemu-system-x86_64: cannot set up guest memory 'pc.ram': Cannot allocate memory",
    "internal error: process exited while connecting to monitor: qemu-system-x86_64: cannot set up guest memory 'pc.ram': Cannot allocate memory",
  ])("%s", (message) => {
    expect(startFailure(new LibvirtError("failed", 1, message, "start acme_web"))).toBe(
      "start acme_web: cannot set up guest memory 'pc.ram': Cannot allocate memory",
    );
  });

  it("keeps libvirt's own message when QEMU said nothing", () => {
    expect(startFailure(new LibvirtError("invalid", 67, "unsupported configuration: x", "start a_b"))).toBe(
      "start a_b: unsupported configuration: x",
    );
  });
});
