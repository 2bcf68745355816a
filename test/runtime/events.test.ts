import * as k8s from "@kubernetes/client-node";
import { randomBytes, randomUUID } from "node:crypto";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { EventRecorder } from "../../src/runtime/events.js";
import { kubeConfig } from "../support/kube.js";

describe("event recorder against the real apiserver", () => {
  const core = kubeConfig.makeApiClient(k8s.CoreV1Api);
  const target = {
    apiVersion: "kaktus.kowabunga.cloud/v1alpha1",
    kind: "Volume",
    metadata: { name: `ev-${randomBytes(3).toString("hex")}`, namespace: "default", uid: randomUUID() },
  };
  const eventsOf = async () =>
    (
      await core.listNamespacedEvent({
        namespace: "default",
        fieldSelector: `involvedObject.uid=${target.metadata.uid}`,
      })
    ).items;

  it("records an event that kubectl describe would show", async () => {
    const recorder = new EventRecorder(kubeConfig, "kaktus-agent", "kaktus-a", pino({ level: "silent" }));
    await recorder.warning(target, "ImageInUse", "rbd/web-1-os has 1 watcher");
    await recorder.flush();
    const [event] = await eventsOf();
    expect(event).toMatchObject({
      type: "Warning",
      reason: "ImageInUse",
      message: "rbd/web-1-os has 1 watcher",
      count: 1,
      source: { component: "kaktus-agent", host: "kaktus-a" },
      involvedObject: { kind: "Volume", name: target.metadata.name },
    });
  });

  it("folds repeats into one Event with a count, writing at most once per interval", async () => {
    const recorder = new EventRecorder(kubeConfig, "kaktus-agent", "kaktus-a", pino({ level: "silent" }), 200);
    for (let i = 0; i < 50; i++) await recorder.normal(target, "Waiting", "waiting for Volume web-1-os");
    expect(recorder.writes).toBe(1);
    await new Promise((r) => setTimeout(r, 250));
    await recorder.normal(target, "Waiting", "waiting for Volume web-1-os");
    expect(recorder.writes).toBe(2);
    await recorder.flush();
    const waiting = (await eventsOf()).filter((e) => e.reason === "Waiting");
    expect(waiting).toHaveLength(1);
    expect(waiting[0]?.count).toBe(51);
  });
});
