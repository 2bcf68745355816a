import { describe, expect, it } from "vitest";
import { progressConditions, setCondition } from "./conditions.js";
import { statusPatch } from "./status.js";

const t0 = new Date("2026-11-25T10:00:00.123Z");
const t1 = new Date("2026-11-25T10:05:00Z");

describe("conditions", () => {
  it("adds a condition with the transition time in seconds", () => {
    expect(
      setCondition(undefined, { type: "Ready", status: "False", reason: "Provisioning", message: "defining" }, 3, t0),
    ).toEqual([
      {
        type: "Ready",
        status: "False",
        observedGeneration: 3,
        lastTransitionTime: "2026-11-25T10:00:00Z",
        reason: "Provisioning",
        message: "defining",
      },
    ]);
  });

  it("moves lastTransitionTime only when the status changes", () => {
    const first = setCondition(undefined, { type: "Ready", status: "False", reason: "A", message: "a" }, 1, t0);
    const sameStatus = setCondition(first, { type: "Ready", status: "False", reason: "B", message: "b" }, 2, t1);
    expect(sameStatus[0]).toMatchObject({
      reason: "B",
      message: "b",
      observedGeneration: 2,
      lastTransitionTime: "2026-11-25T10:00:00Z",
    });
    const flipped = setCondition(sameStatus, { type: "Ready", status: "True", reason: "Running", message: "" }, 2, t1);
    expect(flipped[0]?.lastTransitionTime).toBe("2026-11-25T10:05:00Z");
  });

  it("leaves other conditions alone and an unchanged condition equal", () => {
    const list = setCondition(
      setCondition(undefined, { type: "Ready", status: "True", reason: "R", message: "" }, 1, t0),
      { type: "Synced", status: "True", reason: "S", message: "" },
      1,
      t0,
    );
    const again = setCondition(list, { type: "Ready", status: "True", reason: "R", message: "" }, 1, t1);
    expect(again).toEqual(list);
  });
});

describe("status patch", () => {
  const stored = { metadata: { resourceVersion: "42" }, status: { phase: "Ready", observedGeneration: 1 } };

  it("is empty when nothing changed: no API write", () => {
    expect(statusPatch(stored, { phase: "Ready", observedGeneration: 1 })).toEqual([]);
  });

  it("changes only what differs, guarded by the resourceVersion it was computed from", () => {
    expect(statusPatch(stored, { phase: "Ready", observedGeneration: 2 })).toEqual([
      { op: "test", path: "/metadata/resourceVersion", value: "42" },
      { op: "replace", path: "/status/observedGeneration", value: 2 },
    ]);
  });

  it("creates a missing status whole", () => {
    expect(statusPatch({ metadata: { resourceVersion: "1" } }, { phase: "Pending" })).toEqual([
      { op: "test", path: "/metadata/resourceVersion", value: "1" },
      { op: "add", path: "/status", value: { phase: "Pending" } },
    ]);
  });
});

describe("progressConditions: kstatus' Reconciling and Stalled, from Ready", () => {
  const ready = (status: "True" | "False", reason: string) => [
    { type: "Ready", status, reason, message: `ready says ${reason}`, lastTransitionTime: "t" },
  ];
  it.each([
    ["no Ready yet", undefined, {}, ["True", "Provisioning"], ["False", "Provisioning"]],
    ["Ready", ready("True", "Running"), {}, ["False", "Running"], ["False", "Running"]],
    [
      "working toward Ready",
      ready("False", "WaitingForDependencies"),
      {},
      ["True", "WaitingForDependencies"],
      ["False", "WaitingForDependencies"],
    ],
    [
      "a reason that cannot progress",
      ready("False", "PoolNotAllowed"),
      {},
      ["False", "PoolNotAllowed"],
      ["True", "PoolNotAllowed"],
    ],
    [
      "a failure that is not retried",
      ready("False", "InvalidDomain"),
      { terminal: true },
      ["False", "InvalidDomain"],
      ["True", "InvalidDomain"],
    ],
  ] as const)("%s", (_, conditions, opts, reconciling, stalled) => {
    const [r, s] = progressConditions(conditions, opts);
    expect([r.type, r.status, r.reason]).toEqual(["Reconciling", ...reconciling]);
    expect([s.type, s.status, s.reason]).toEqual(["Stalled", ...stalled]);
  });
  it("the abnormal one carries Ready's message", () => {
    expect(progressConditions(ready("False", "VolumeInUse"))[1].message).toBe("ready says VolumeInUse");
    expect(progressConditions(ready("False", "ShuttingDown"))[0].message).toBe("ready says ShuttingDown");
  });
});
