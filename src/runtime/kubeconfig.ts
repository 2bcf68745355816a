import type * as k8s from "@kubernetes/client-node";
import { Agent, type AgentOptions } from "node:https";

type AgentFactory = (cluster: k8s.Cluster | null, options: AgentOptions) => unknown;

/**
 * client-node 1.x makes a new https.Agent for every request (kubernetes-client/javascript#2893; 2.x
 * caches them): every API call then pays a TCP connect and a full TLS handshake, on both sides,
 * which on a busy apiserver costs more than the call. This gives a KubeConfig one keep-alive agent
 * per TLS identity, as 2.x does. Proxied and plain-HTTP clusters keep the library's own behaviour.
 */
export function reuseConnections(kc: k8s.KubeConfig): k8s.KubeConfig {
  const agents = new Map<string, Agent>();
  const target = kc as unknown as { createAgent: AgentFactory };
  const create = target.createAgent.bind(kc);
  target.createAgent = (cluster, options) => {
    if (!cluster?.server.startsWith("https:") || cluster.proxyUrl) return create(cluster, options);
    const { ca, cert, key, servername, rejectUnauthorized } = options;
    const id = JSON.stringify([cluster.server, servername, rejectUnauthorized, String(ca), String(cert), String(key)]);
    let agent = agents.get(id);
    if (!agent) agents.set(id, (agent = new Agent({ ...options, keepAlive: true })));
    return agent;
  };
  return kc;
}
