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

/** A domain lifecycle event (virDomainEventType), or the connection going away and coming back. */
export type LibvirtEvent =
  | { type: "lifecycle"; name: string; uuid: string; event: LifecycleEvent; detail: number }
  | { type: "disconnected"; reason: string }
  | { type: "connected" };

export type LifecycleEvent =
  "defined" | "undefined" | "started" | "suspended" | "resumed" | "stopped" | "shutdown" | "pmsuspended" | "crashed";
