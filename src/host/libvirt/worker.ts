import { workerData } from "node:worker_threads";
import { serve } from "../worker-pool.js";
import { connectionLost, errorKind, LibvirtError } from "./errors.js";
import { ErrorFunc, koffi, VirDomainInterface, VirDomainIPAddress, VirError, virt, type Ptr } from "./ffi.js";
import type { DomainInfo, DomainState, GuestInfo } from "./types.js";

/** One libvirt connection, used by this worker thread only; reopened when libvirtd went away. */
const uri = (workerData as { uri: string }).uri;
let conn: Ptr | null = null;
// Errors are read from virGetLastError right after each call; libvirt must not also print them.
const silence = koffi.register(() => undefined, koffi.pointer(ErrorFunc));

function fail(operation: string): never {
  const err = virt.getLastError() as Ptr | null;
  const { code, message } = err
    ? (koffi.decode(err, VirError) as { code: number; message: string | null })
    : { code: 1, message: null };
  virt.resetLastError();
  if (connectionLost(code) && conn) {
    virt.connectClose(conn);
    conn = null;
  }
  throw new LibvirtError(errorKind(code), code, message ?? "unknown libvirt error", operation);
}

function connection(): Ptr {
  if (conn && virt.connectIsAlive(conn) === 1) return conn;
  if (conn) virt.connectClose(conn);
  conn = virt.connectOpen(uri) as Ptr | null;
  if (!conn) fail(`connect to ${uri}`);
  virt.connSetErrorFunc(conn, null, silence);
  return conn;
}

const check = (result: number, operation: string) => (result < 0 ? fail(operation) : result);

const states: DomainState[] = [
  "nostate",
  "running",
  "blocked",
  "paused",
  "shutdown",
  "shutoff",
  "crashed",
  "pmsuspended",
];

function info(dom: Ptr): DomainInfo {
  const uuid = Buffer.alloc(37);
  const state = [0];
  const reason = [0];
  const autostart = [0];
  const name = virt.domainGetName(dom) as string;
  check(virt.domainGetUUIDString(dom, uuid), `uuid of ${name}`);
  check(virt.domainGetState(dom, state, reason, 0), `state of ${name}`);
  const persistent = check(virt.domainIsPersistent(dom), `persistence of ${name}`) === 1;
  if (persistent) check(virt.domainGetAutostart(dom, autostart), `autostart of ${name}`);
  return {
    name,
    uuid: uuid.toString("latin1", 0, 36),
    state: states[state[0]!] ?? "nostate",
    reason: reason[0]!,
    persistent,
    autostart: autostart[0] === 1,
  };
}

/** Runs `fn` on a domain handle libvirt just returned (null: the call failed) and frees it, whatever happens. */
function usingDomain<T>(dom: Ptr | null, operation: string, fn: (dom: Ptr) => T): T {
  if (!dom) fail(operation);
  try {
    return fn(dom);
  } finally {
    virt.domainFree(dom);
  }
}

const withDomain = <T>(name: string, operation: string, fn: (dom: Ptr) => T): T =>
  usingDomain(virt.domainLookupByName(connection(), name) as Ptr | null, `${operation} ${name}`, fn);

/** A lookup that answers null for "no such domain" instead of failing. */
function orNull<T>(fn: () => T): T | null {
  try {
    return fn();
  } catch (err) {
    if (err instanceof LibvirtError && err.kind === "not-found") return null;
    throw err;
  }
}

/** Reads are retried once after a lost connection (libvirtd restarted); writes are left to the caller. */
function retryRead<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof LibvirtError && connectionLost(err.code)) return fn();
    throw err;
  }
}

const VIR_ERR_INVALID_ARG = 8;
const VIR_DOMAIN_XML_INACTIVE = 2;
const VIR_DOMAIN_DEFINE_VALIDATE = 1;
const VIR_DOMAIN_START_PAUSED = 1;
const VIR_DOMAIN_START_AUTODESTROY = 2;
const VIR_DOMAIN_AFFECT_LIVE = 1;
const VIR_DOMAIN_AFFECT_CONFIG = 2;
const VIR_DOMAIN_BLOCK_RESIZE_BYTES = 1;
const VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN = 1;
const VIR_DOMAIN_GUEST_INFO_OS = 1 << 1;
const VIR_DOMAIN_GUEST_INFO_HOSTNAME = 1 << 3;
const VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT = 1;
/** Seconds a guest agent command may take: an agent that hangs must not hold this thread for long. */
const agentTimeoutSeconds = 5;
// MANAGED_SAVE | SNAPSHOTS_METADATA | NVRAM | CHECKPOINTS_METADATA: nothing of the domain is left behind.
const UNDEFINE_EVERYTHING = 1 | 2 | 4 | 16;
const deviceFlags = (live: boolean, config: boolean) =>
  (config ? VIR_DOMAIN_AFFECT_CONFIG : 0) | (live ? VIR_DOMAIN_AFFECT_LIVE : 0);

export const ops = {
  capabilities: () =>
    retryRead(() => (virt.connectGetCapabilities(connection()) as string | null) ?? fail("capabilities")),

  /** What libvirt offers for one virtualization type on q35 (CPU modes and models); fails when the type is not offered. */
  domainCapabilities: (virtType: string) =>
    retryRead(
      () =>
        (virt.connectGetDomainCapabilities(connection(), null, "x86_64", "q35", virtType, 0) as string | null) ??
        fail(`domain capabilities for ${virtType}`),
    ),

  listDomains: (): DomainInfo[] =>
    retryRead(() => {
      const out: Ptr[] = [null];
      const n = check(virt.connectListAllDomains(connection(), out, 0), "list domains");
      const doms = (n ? koffi.decode(out[0], "virDomain *", n) : []) as Ptr[];
      try {
        return doms.map(info);
      } finally {
        for (const d of doms) virt.domainFree(d);
        virt.free(out[0]);
      }
    }),

  /** null when there is no such domain. */
  lookup: (name: string): DomainInfo | null => retryRead(() => orNull(() => withDomain(name, "look up domain", info))),

  lookupByUuid: (uuid: string): DomainInfo | null =>
    retryRead(() =>
      orNull(() =>
        usingDomain(virt.domainLookupByUUIDString(connection(), uuid) as Ptr | null, `look up domain ${uuid}`, info),
      ),
    ),

  /** Defines (or redefines) a persistent domain; libvirt validates the XML against its schema. */
  define: (xml: string): DomainInfo =>
    usingDomain(
      virt.domainDefineXMLFlags(connection(), xml, VIR_DOMAIN_DEFINE_VALIDATE) as Ptr | null,
      "define domain",
      info,
    ),

  /** Starts a transient domain that libvirt destroys if this connection closes (probes). */
  createTransient: (xml: string, paused: boolean): DomainInfo =>
    usingDomain(
      virt.domainCreateXML(
        connection(),
        xml,
        VIR_DOMAIN_START_AUTODESTROY | (paused ? VIR_DOMAIN_START_PAUSED : 0),
      ) as Ptr | null,
      "create transient domain",
      info,
    ),

  getXml: (name: string, inactive: boolean): string =>
    retryRead(() =>
      withDomain(name, "get XML of", (dom) => {
        const xml = virt.domainGetXMLDesc(dom, inactive ? VIR_DOMAIN_XML_INACTIVE : 0) as string | null;
        return xml ?? fail(`get XML of ${name}`);
      }),
    ),

  start: (name: string) => void withDomain(name, "start", (d) => check(virt.domainCreate(d), `start ${name}`)),
  // Always the ACPI power button: left to choose, libvirt asks a guest agent instead when there is
  // one, and a guest whose agent cannot shut it down would then ignore the request.
  shutdown: (name: string) =>
    void withDomain(name, "shut down", (d) =>
      check(virt.domainShutdownFlags(d, VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN), `shut down ${name}`),
    ),
  destroy: (name: string) => void withDomain(name, "destroy", (d) => check(virt.domainDestroy(d), `destroy ${name}`)),
  undefine: (name: string) =>
    void withDomain(name, "undefine", (d) => {
      if (virt.domainUndefineFlags(d, UNDEFINE_EVERYTHING) >= 0) return;
      // Drivers without NVRAM or checkpoints (the test driver) refuse those flags: plain undefine.
      const err = koffi.decode(virt.getLastError(), VirError) as { code: number };
      if (err.code !== VIR_ERR_INVALID_ARG) fail(`undefine ${name}`);
      virt.resetLastError();
      check(virt.domainUndefineFlags(d, 0), `undefine ${name}`);
    }),
  setAutostart: (name: string, on: boolean) =>
    void withDomain(name, "set autostart of", (d) =>
      check(virt.domainSetAutostart(d, on ? 1 : 0), `set autostart of ${name}`),
    ),
  attachDevice: (name: string, xml: string, live: boolean, config: boolean) =>
    void withDomain(name, "attach device to", (d) =>
      check(virt.domainAttachDeviceFlags(d, xml, deviceFlags(live, config)), `attach device to ${name}`),
    ),
  detachDevice: (name: string, xml: string, live: boolean, config: boolean) =>
    void withDomain(name, "detach device from", (d) =>
      check(virt.domainDetachDeviceFlags(d, xml, deviceFlags(live, config)), `detach device from ${name}`),
    ),
  updateDevice: (name: string, xml: string, live: boolean, config: boolean) =>
    void withDomain(name, "update device of", (d) =>
      check(virt.domainUpdateDeviceFlags(d, xml, deviceFlags(live, config)), `update device of ${name}`),
    ),
  blockResize: (name: string, target: string, bytes: bigint) =>
    void withDomain(name, "resize disk of", (d) =>
      check(virt.domainBlockResize(d, target, bytes, VIR_DOMAIN_BLOCK_RESIZE_BYTES), `resize ${target} of ${name}`),
    ),

  /** Hostname, OS and addresses per NIC, from the guest agent; fails when it is not connected or does not answer. */
  guestInfo: (name: string): GuestInfo =>
    withDomain(name, "ask the guest agent of", (d) => {
      check(virt.domainAgentSetResponseTimeout(d, agentTimeoutSeconds, 0), `set the agent timeout of ${name}`);
      const interfaces = guestInterfaces(d, name);
      // An agent too old for guest-get-osinfo or guest-get-host-name still gives the addresses.
      return { ...orUnsupported(() => guestSystem(d, name), {}), interfaces };
    }),

  /** Defines (or updates) a secret and returns its UUID. */
  defineSecret: (xml: string): string => {
    const secret = virt.secretDefineXML(connection(), xml, 0) as Ptr | null;
    if (!secret) fail("define secret");
    virt.secretFree(secret);
    const uuid = /<uuid>([0-9a-f-]{36})<\/uuid>/.exec(xml)?.[1];
    if (!uuid) throw new LibvirtError("invalid", 8, "secret XML must carry its <uuid>", "define secret");
    return uuid;
  },
  setSecretValue: (uuid: string, value: Uint8Array) =>
    void withSecret(uuid, (s) => check(virt.secretSetValue(s, value, value.length, 0), `set value of secret ${uuid}`)),
  undefineSecret: (uuid: string) =>
    void withSecret(uuid, (s) => check(virt.secretUndefine(s), `undefine secret ${uuid}`)),
};

const agentUnreachable = new Set([86, 97, 103]); // VIR_ERR_AGENT_UNRESPONSIVE, _UNSYNCED, _COMMAND_TIMEOUT

/** What `fn` returns, or `fallback` when the guest agent answered that it cannot. */
function orUnsupported<T>(fn: () => T, fallback: T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof LibvirtError && !agentUnreachable.has(err.code) && !connectionLost(err.code)) return fallback;
    throw err;
  }
}

function guestSystem(dom: Ptr, name: string): Omit<GuestInfo, "interfaces"> {
  const params: Ptr[] = [null];
  const count = [0];
  const types = VIR_DOMAIN_GUEST_INFO_OS | VIR_DOMAIN_GUEST_INFO_HOSTNAME;
  check(virt.domainGetGuestInfo(dom, types, params, count, 0), `guest info of ${name}`);
  try {
    // The strings stay owned by the parameter array: read them before it is freed.
    const get = (key: string): string | undefined => {
      const value: (string | null)[] = [null];
      return virt.typedParamsGetString(params[0], count[0], key, value) === 1 ? (value[0] ?? undefined) : undefined;
    };
    const os = {
      id: get("os.id"),
      name: get("os.name"),
      prettyName: get("os.pretty-name"),
      versionId: get("os.version-id"),
      kernelRelease: get("os.kernel-release"),
    };
    const hostname = get("hostname");
    const known = Object.entries(os).filter(([, v]) => v !== undefined);
    return { ...(hostname ? { hostname } : {}), ...(known.length ? { os: Object.fromEntries(known) } : {}) };
  } finally {
    virt.typedParamsFree(params[0], count[0]);
  }
}

function guestInterfaces(dom: Ptr, name: string): GuestInfo["interfaces"] {
  const out: Ptr[] = [null];
  const n = check(
    virt.domainInterfaceAddresses(dom, out, VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0),
    `interface addresses of ${name}`,
  );
  const ifaces = (n ? koffi.decode(out[0], "virDomainInterface *", n) : []) as Ptr[];
  try {
    return ifaces.map((p) => {
      const i = koffi.decode(p, VirDomainInterface) as {
        name: string;
        hwaddr: string | null;
        naddrs: number;
        addrs: Ptr;
      };
      const addrs = (i.naddrs ? koffi.decode(i.addrs, VirDomainIPAddress, i.naddrs) : []) as {
        addr: string;
        prefix: number;
      }[];
      return { name: i.name, mac: (i.hwaddr ?? "").toLowerCase(), ips: addrs.map((a) => `${a.addr}/${a.prefix}`) };
    });
  } finally {
    for (const p of ifaces) virt.domainInterfaceFree(p);
    if (out[0]) virt.free(out[0]);
  }
}

function withSecret<T>(uuid: string, fn: (secret: Ptr) => T): T {
  const secret = virt.secretLookupByUUIDString(connection(), uuid) as Ptr | null;
  if (!secret) fail(`look up secret ${uuid}`);
  try {
    return fn(secret);
  } finally {
    virt.secretFree(secret);
  }
}

export type LibvirtOps = typeof ops;

serve(ops);
