import { receiveMessageOnPort, workerData, type MessagePort } from "node:worker_threads";
import {
  AgentLifecycleCallback,
  CloseCallback,
  ErrorFunc,
  koffi,
  LifecycleCallback,
  TimeoutCallback,
  virt,
  type Ptr,
} from "./ffi.js";
import type { LibvirtEvent, LifecycleEvent } from "./types.js";

/**
 * The process's one libvirt event loop thread. libvirt delivers domain events and notices a dead
 * libvirtd (keepalive) only while some thread runs virEventRunDefaultImpl; that call blocks, so it
 * lives here. Commands from the main thread are polled from a timer inside the loop.
 */
type Command = { subscribe: string } | { unsubscribe: string } | { stop: true };
export type EventMessage = { uri: string; event: LibvirtEvent };

const port = (workerData as { port: MessagePort }).port;
const lifecycleNames: LifecycleEvent[] = [
  "defined",
  "undefined",
  "started",
  "suspended",
  "resumed",
  "stopped",
  "shutdown",
  "pmsuspended",
  "crashed",
];

interface Watched {
  conn: Ptr | null;
  /** Set by the close callback; the connection is closed and reopened from the timer, not inside it. */
  lost: boolean;
  nextAttempt: number;
}
const watched = new Map<string, Watched>();
let running = true;

// Failures here are handled (retry, reconnect); libvirt must not print them to stderr as well.
const silence = koffi.register(() => undefined, koffi.pointer(ErrorFunc));
const post = (uri: string, event: LibvirtEvent) => port.postMessage({ uri, event } satisfies EventMessage);
const uriOf = new Map<bigint, string>();

function domainOf(dom: Ptr): { name: string; uuid: string } {
  const uuid = Buffer.alloc(37);
  virt.domainGetUUIDString(dom, uuid);
  return { name: virt.domainGetName(dom) as string, uuid: uuid.toString("latin1", 0, 36) };
}

const onLifecycle = koffi.register((conn: Ptr, dom: Ptr, event: number, detail: number) => {
  const uri = uriOf.get(conn as bigint);
  if (uri === undefined) return 0;
  post(uri, { type: "lifecycle", ...domainOf(dom), event: lifecycleNames[event] ?? "defined", detail });
  return 0;
}, koffi.pointer(LifecycleCallback));

const VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED = 1;
const onAgentLifecycle = koffi.register((conn: Ptr, dom: Ptr, state: number) => {
  const uri = uriOf.get(conn as bigint);
  if (uri === undefined) return;
  post(uri, {
    type: "agent",
    ...domainOf(dom),
    connected: state === VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED,
  });
}, koffi.pointer(AgentLifecycleCallback));

const closeReasons = ["error", "eof", "keepalive", "client"];
const onClose = koffi.register((conn: Ptr, reason: number) => {
  const uri = uriOf.get(conn as bigint);
  const w = uri === undefined ? undefined : watched.get(uri);
  if (!uri || !w) return;
  w.lost = true;
  post(uri, { type: "disconnected", reason: closeReasons[reason] ?? String(reason) });
}, koffi.pointer(CloseCallback));

function connect(uri: string, w: Watched): void {
  const conn = virt.connectOpen(uri) as Ptr | null;
  if (!conn) {
    virt.resetLastError();
    w.nextAttempt = Date.now() + 1_000;
    return;
  }
  uriOf.set(conn as bigint, uri);
  virt.connSetErrorFunc(conn, null, silence);
  // Ping every 2 s, give up after 3 missed answers: a dead libvirtd is noticed in about 8 s.
  virt.connectSetKeepAlive(conn, 2, 3);
  virt.connectRegisterCloseCallback(conn, onClose, null, null);
  const VIR_DOMAIN_EVENT_ID_LIFECYCLE = 0;
  const VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE = 18;
  if (
    virt.connectDomainEventRegisterAny(conn, null, VIR_DOMAIN_EVENT_ID_LIFECYCLE, onLifecycle, null, null) < 0 ||
    virt.connectDomainEventRegisterAgent(
      conn,
      null,
      VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE,
      onAgentLifecycle,
      null,
      null,
    ) < 0
  ) {
    virt.resetLastError();
    uriOf.delete(conn as bigint);
    virt.connectClose(conn);
    w.nextAttempt = Date.now() + 1_000;
    return;
  }
  w.conn = conn;
  w.lost = false;
  post(uri, { type: "connected" });
}

function drop(w: Watched): void {
  if (!w.conn) return;
  uriOf.delete(w.conn as bigint);
  virt.connectClose(w.conn);
  w.conn = null;
}

const tick = koffi.register(() => {
  for (let msg = receiveMessageOnPort(port); msg; msg = receiveMessageOnPort(port)) {
    const cmd = msg.message as Command;
    if ("subscribe" in cmd && !watched.has(cmd.subscribe)) {
      watched.set(cmd.subscribe, { conn: null, lost: false, nextAttempt: 0 });
    } else if ("unsubscribe" in cmd) {
      const w = watched.get(cmd.unsubscribe);
      if (w) drop(w);
      watched.delete(cmd.unsubscribe);
    } else if ("stop" in cmd) {
      running = false;
    }
  }
  for (const [uri, w] of watched) {
    if (w.lost) {
      drop(w);
      w.lost = false;
      w.nextAttempt = Date.now() + 500;
    }
    if (!w.conn && Date.now() >= w.nextAttempt) connect(uri, w);
  }
}, koffi.pointer(TimeoutCallback));

virt.eventRegisterDefaultImpl();
virt.eventAddTimeout(200, tick, null, null);
while (running) virt.eventRunDefaultImpl();
for (const w of watched.values()) drop(w);
port.close();
