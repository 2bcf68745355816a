import * as k8s from "@kubernetes/client-node";
import { Agent } from "node:https";
import { describe, expect, it } from "vitest";
import { reuseConnections } from "./kubeconfig.js";

const config = (server: string) => {
  const kc = new k8s.KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: "c", server, caData: Buffer.from("not a real CA").toString("base64") }],
    users: [{ name: "u", token: "t" }],
    contexts: [{ name: "x", cluster: "c", user: "u" }],
    currentContext: "x",
  });
  return kc;
};

async function agentOf(kc: k8s.KubeConfig): Promise<unknown> {
  const context = new k8s.RequestContext("https://127.0.0.1:6443/api", k8s.HttpMethod.GET);
  await kc.applySecurityAuthentication(context);
  return context.getAgent();
}

describe("API connections", () => {
  it("client-node alone makes a new agent (a new TLS connection) for every request", async () => {
    const kc = config("https://127.0.0.1:6443");
    expect(await agentOf(kc)).not.toBe(await agentOf(kc));
  });

  it("reuseConnections gives every request, API call or watch, one keep-alive agent", async () => {
    const kc = reuseConnections(config("https://127.0.0.1:6443"));
    const agent = await agentOf(kc);
    expect(agent).toBeInstanceOf(Agent);
    expect((agent as Agent & { keepAlive: boolean }).keepAlive).toBe(true);
    expect(await agentOf(kc)).toBe(agent);
    expect((await kc.applyToFetchOptions({})).agent).toBe(agent);
  });
});
