/** virDomainState, named. */
export type DomainState =
  "nostate" | "running" | "blocked" | "paused" | "shutdown" | "shutoff" | "crashed" | "pmsuspended";

export interface DomainInfo {
  name: string;
  uuid: string;
  state: DomainState;
  /** virDomain*Reason for the state (for example why it is shut off). */
  reason: number;
  persistent: boolean;
  autostart: boolean;
}

/** A domain lifecycle event (virDomainEventType), the guest agent (dis)connecting, or the connection going away and coming back. */
export type LibvirtEvent =
  | { type: "lifecycle"; name: string; uuid: string; event: LifecycleEvent; detail: number }
  | { type: "agent"; name: string; uuid: string; connected: boolean }
  | { type: "disconnected"; reason: string }
  | { type: "connected" };

export type LifecycleEvent =
  "defined" | "undefined" | "started" | "suspended" | "resumed" | "stopped" | "shutdown" | "pmsuspended" | "crashed";

/** What a running guest says of itself through its QEMU guest agent. */
export interface GuestInfo {
  hostname?: string;
  os?: { id?: string; name?: string; prettyName?: string; versionId?: string; kernelRelease?: string };
  /** The guest's NICs with their hardware address and addresses as address/prefix. */
  interfaces: { name: string; mac: string; ips: string[] }[];
}
