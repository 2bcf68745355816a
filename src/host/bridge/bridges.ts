import { randomBytes } from "node:crypto";
import { BridgeError, IpRoute } from "./iproute.js";

export { BridgeError, type BridgeErrorKind } from "./iproute.js";

export interface LinkInfo {
  name: string;
  /** The link's alias (ifalias): the operator's mark on links it made. */
  alias?: string;
  /** linkinfo.info_kind: bridge, veth, vlan, tun, … (absent for plain devices) */
  kind?: string;
  /** The bridge this link is a port of. */
  master?: string;
  mtu: number;
  up: boolean;
}

export interface BridgeInfo {
  name: string;
  /** The bridge's alias (ifalias): the operator's mark on bridges it made. */
  alias?: string;
  mtu: number;
  up: boolean;
  stp: boolean;
  vlanFiltering: boolean;
  /** Names of the links enslaved to the bridge (host ports and VM taps alike). */
  ports: string[];
}

export interface BridgeSettings {
  stp?: boolean;
  vlanFiltering?: boolean;
  mtu?: number;
}

/** What the operator needs from a node's network; controllers see only this. */
export interface BridgeHost {
  links(): Promise<LinkInfo[]>;
  bridges(): Promise<BridgeInfo[]>;
  /** null when there is no bridge of that name. */
  bridge(name: string): Promise<BridgeInfo | null>;
  /**
   * Creates the bridge up, with its settings and `alias` (the operator's mark); MTU is applied after
   * ports (the kernel resets it). The bridge appears under its name only once marked.
   */
  createBridge(name: string, settings: BridgeSettings, alias: string): Promise<void>;
  /** Marks a link (adoption). */
  setAlias(name: string, alias: string): Promise<void>;
  /** Changes settings of an existing bridge in place (no delete and re-create). */
  updateBridge(name: string, settings: BridgeSettings): Promise<void>;
  /** Enslaves an existing link to a bridge and sets it up. */
  addPort(bridge: string, port: string): Promise<void>;
  removePort(port: string): Promise<void>;
  /** Creates PARENT.ID (802.1Q), marked with `alias`; the kernel may refuse (no 8021q): an "unsupported" error. */
  createVlan(parent: string, id: number, alias: string): Promise<string>;
  deleteLink(name: string): Promise<void>;
  /** Called (debounced) whenever links change; returns the unsubscribe function. */
  onChange(listener: () => void): () => void;
  close(): void;
}

/** The calls that change the node's network (counted by the agent's metrics). */
export const bridgeMutations = [
  "createBridge",
  "updateBridge",
  "addPort",
  "removePort",
  "createVlan",
  "deleteLink",
  "setAlias",
] as const satisfies readonly (keyof BridgeHost)[];

interface IpLink {
  ifname: string;
  ifalias?: string;
  mtu: number;
  flags?: string[];
  master?: string;
  operstate?: string;
  linkinfo?: { info_kind?: string; info_data?: { stp_state?: number; vlan_filtering?: number } };
}

const onOff = (b: boolean) => (b ? "1" : "0");

/** Prefix of links being made (at most 15 bytes with its suffix): never a name a user gives. */
export const temporaryLinkPrefix = "kaktus-tmp-";
const temporaryLink = () => `${temporaryLinkPrefix}${randomBytes(2).toString("hex")}`;

export class LinuxBridges implements BridgeHost {
  private readonly ip: IpRoute;
  private readonly listeners = new Set<() => void>();
  private monitor: ReturnType<IpRoute["monitor"]> | undefined;
  private pending: NodeJS.Timeout | undefined;

  constructor(netns?: string) {
    this.ip = new IpRoute(netns);
  }

  /**
   * The link table, read once per change rather than once per question: each read is an `ip`
   * process, and a fork of the agent costs its event loop milliseconds. Kept only while `ip monitor`
   * runs (it says when the table changed); dropped on each of its lines and after each change made here.
   */
  private snapshot: Promise<IpLink[]> | undefined;

  private rawLinks(): Promise<IpLink[]> {
    if (this.snapshot) return this.snapshot;
    const read = this.ip.json<IpLink[]>(["-d", "link", "show"], "list links");
    if (this.monitor && this.monitor.exitCode === null) {
      this.snapshot = read;
      read.catch(() => this.forget(read));
    }
    return read;
  }

  private forget(read?: Promise<IpLink[]>): void {
    if (!read || this.snapshot === read) this.snapshot = undefined;
  }

  /** A change to the host's links: the snapshot is dropped once it is done (or failed). */
  private async change(args: readonly string[], operation: string): Promise<void> {
    try {
      await this.ip.run(args, operation);
    } finally {
      this.forget();
    }
  }

  async links(): Promise<LinkInfo[]> {
    return (await this.rawLinks()).map((l) => ({
      name: l.ifname,
      ...(l.ifalias ? { alias: l.ifalias } : {}),
      ...(l.linkinfo?.info_kind ? { kind: l.linkinfo.info_kind } : {}),
      ...(l.master ? { master: l.master } : {}),
      mtu: l.mtu,
      up: l.flags?.includes("UP") ?? false,
    }));
  }

  async bridges(): Promise<BridgeInfo[]> {
    const links = await this.rawLinks();
    return links
      .filter((l) => l.linkinfo?.info_kind === "bridge")
      .map((b) => ({
        name: b.ifname,
        ...(b.ifalias ? { alias: b.ifalias } : {}),
        mtu: b.mtu,
        up: b.flags?.includes("UP") ?? false,
        stp: (b.linkinfo?.info_data?.stp_state ?? 0) !== 0,
        vlanFiltering: (b.linkinfo?.info_data?.vlan_filtering ?? 0) !== 0,
        ports: links.filter((l) => l.master === b.ifname).map((l) => l.ifname),
      }));
  }

  async bridge(name: string): Promise<BridgeInfo | null> {
    return (await this.bridges()).find((b) => b.name === name) ?? null;
  }

  async createBridge(name: string, settings: BridgeSettings, alias: string): Promise<void> {
    const op = `create bridge ${name}`;
    // One netlink request: if the kernel refuses a setting, it creates nothing.
    await this.addMarked(name, ["type", "bridge", ...bridgeArgs(settings)], alias, op);
    try {
      if (settings.mtu !== undefined) await this.change(["link", "set", "dev", name, "mtu", String(settings.mtu)], op);
      await this.change(["link", "set", "dev", name, "up"], op);
    } catch (err) {
      // What this call created and could not finish, it removes: no half-made bridge stays behind.
      await this.change(["link", "del", "dev", name], op).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Adds a link under a temporary name, marks it, then gives it its name: a link with the real
   * name is always marked (a crash in between leaves a marked `kaktus-tmp-*` link, never an
   * unmarked one that would read as someone else's). The kernel ignores an alias given to `add`.
   */
  private async addMarked(name: string, args: string[], alias: string, op: string, parent?: string): Promise<void> {
    const tmp = temporaryLink();
    await this.change(["link", "add", ...(parent ? ["link", parent] : []), "name", tmp, ...args], op);
    try {
      await this.change(["link", "set", "dev", tmp, "alias", alias], op);
      await this.change(["link", "set", "dev", tmp, "name", name], op);
    } catch (err) {
      await this.change(["link", "del", "dev", tmp], op).catch(() => undefined);
      throw err;
    }
  }

  async setAlias(name: string, alias: string): Promise<void> {
    await this.change(["link", "set", "dev", name, "alias", alias], `mark ${name}`);
  }

  async updateBridge(name: string, settings: BridgeSettings): Promise<void> {
    const op = `update bridge ${name}`;
    const args = bridgeArgs(settings);
    if (args.length) await this.change(["link", "set", "dev", name, "type", "bridge", ...args], op);
    if (settings.mtu !== undefined) await this.change(["link", "set", "dev", name, "mtu", String(settings.mtu)], op);
    await this.change(["link", "set", "dev", name, "up"], op);
  }

  async addPort(bridge: string, port: string): Promise<void> {
    const op = `add port ${port} to ${bridge}`;
    await this.change(["link", "set", "dev", port, "master", bridge], op);
    await this.change(["link", "set", "dev", port, "up"], op);
  }

  async removePort(port: string): Promise<void> {
    await this.change(["link", "set", "dev", port, "nomaster"], `remove port ${port}`);
  }

  async createVlan(parent: string, id: number, alias: string): Promise<string> {
    if (!Number.isInteger(id) || id < 1 || id > 4094)
      throw new BridgeError("invalid", `VLAN id ${id} is not in 1..4094`, "create VLAN");
    const name = `${parent}.${id}`;
    await this.addMarked(name, ["type", "vlan", "id", String(id)], alias, `create VLAN ${name}`, parent);
    return name;
  }

  async deleteLink(name: string): Promise<void> {
    await this.change(["link", "del", "dev", name], `delete ${name}`);
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    // One monitor per host, coalescing bursts (a bridge create is several netlink messages).
    this.monitor ??= this.ip.monitor(() => {
      this.forget();
      this.pending ??= setTimeout(() => {
        this.pending = undefined;
        for (const l of this.listeners) l();
      }, 100);
    });
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0) this.stopMonitor();
    };
  }

  private stopMonitor(): void {
    this.forget();
    this.monitor?.kill();
    this.monitor = undefined;
    clearTimeout(this.pending);
    this.pending = undefined;
  }

  close(): void {
    this.listeners.clear();
    this.stopMonitor();
  }
}

function bridgeArgs(s: BridgeSettings): string[] {
  return [
    ...(s.stp === undefined ? [] : ["stp_state", onOff(s.stp)]),
    ...(s.vlanFiltering === undefined ? [] : ["vlan_filtering", onOff(s.vlanFiltering)]),
  ];
}
