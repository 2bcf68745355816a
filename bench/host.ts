import { randomBytes } from "node:crypto";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { LibvirtClient } from "../src/host/libvirt/client.js";
import { RbdClient } from "../src/host/rbd/client.js";
import { cephConfPath, nodes } from "../test/env/lab.js";

/**
 * Host adapter throughput, with the event loop's delay measured during each run: if a blocking
 * call ever ran on the main thread, max/p99 delay would show it.
 */
interface Figure {
  opsPerSecond: number;
  ops: number;
  seconds: number;
  inFlight: number;
  eventLoopDelayMs: { max: number; p99: number; mean: number };
}

async function measure(seconds: number, inFlight: number, op: (i: number) => Promise<void>): Promise<Figure> {
  const delay = monitorEventLoopDelay({ resolution: 1 });
  delay.enable();
  const deadline = performance.now() + seconds * 1000;
  let ops = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async (_, lane) => {
      for (let i = 0; performance.now() < deadline; i++) {
        await op(lane * 1_000_000 + i);
        ops++;
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  delay.disable();
  const ms = (ns: number) => Math.round(ns / 1e4) / 100;
  return {
    opsPerSecond: Math.round(ops / elapsed),
    ops,
    seconds: Math.round(elapsed * 100) / 100,
    inFlight,
    eventLoopDelayMs: { max: ms(delay.max), p99: ms(delay.percentile(99)), mean: ms(delay.mean) },
  };
}

const domainXml = (name: string, type: string) =>
  `<domain type='${type}'><name>${name}</name><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os></domain>`;

async function libvirtFigures(uri: string, type: string, seconds: number) {
  const client = new LibvirtClient(uri, { workers: 4 });
  const prefix = `bench-${randomBytes(3).toString("hex")}`;
  try {
    const defineUndefine = await measure(seconds, 8, async (i) => {
      await client.define(domainXml(`${prefix}-${i}`, type));
      await client.undefine(`${prefix}-${i}`);
    });
    await client.define(domainXml(`${prefix}-xml`, type));
    const getXml = await measure(seconds, 8, async () => void (await client.getXml(`${prefix}-xml`)));
    await client.undefine(`${prefix}-xml`);
    return { defineUndefine, getXml };
  } finally {
    await client.close();
  }
}

export async function hostBenchmark(seconds = 3): Promise<Record<string, unknown>> {
  const node = nodes[0]!;
  const rbd = new RbdClient({ confPath: cephConfPath, user: "admin" }, { workers: 4 });
  const prefix = `bench-${randomBytes(3).toString("hex")}`;
  try {
    return {
      libvirtQemu: await libvirtFigures(node.libvirtUri, "qemu", seconds),
      libvirtTestDriver: await libvirtFigures("test:///default", "test", seconds),
      rbdCreateRemove: await measure(seconds, 8, async (i) => {
        await rbd.create("rbd", `${prefix}-${i}`, 1n << 20n);
        await rbd.remove("rbd", `${prefix}-${i}`);
      }),
    };
  } finally {
    await rbd.close();
  }
}
