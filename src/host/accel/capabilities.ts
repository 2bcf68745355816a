import { XMLParser } from "fast-xml-parser";

/** What libvirt's domain capabilities say about CPUs for one virtualization type. */
export interface CpuCapabilities {
  hostPassthrough: boolean;
  hostModel: boolean;
  maximum: boolean;
  /** The named models libvirt knows, and whether it thinks each can run here. */
  models: { name: string; usable: boolean }[];
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: "@_",
  parseTagValue: false,
  parseAttributeValue: false,
  isArray: (name) => name === "mode" || name === "model",
});

type Node = Record<string, unknown>;

/** Reads the <cpu> part of `virConnectGetDomainCapabilities` XML. */
export function parseCpuCapabilities(xml: string): CpuCapabilities {
  const doc = parser.parse(xml) as { domainCapabilities?: { cpu?: { mode?: Node[] } } };
  const modes = doc.domainCapabilities?.cpu?.mode ?? [];
  const mode = (name: string) => modes.find((m) => m["@_name"] === name);
  const supported = (name: string) => mode(name)?.["@_supported"] === "yes";
  const custom = mode("custom");
  const models = custom?.["@_supported"] === "yes" ? ((custom.model as (Node | string)[] | undefined) ?? []) : [];
  return {
    hostPassthrough: supported("host-passthrough"),
    hostModel: supported("host-model"),
    maximum: supported("maximum"),
    models: models.map((m) =>
      typeof m === "string"
        ? { name: m, usable: true }
        : { name: String(m["#text"] ?? ""), usable: m["@_usable"] !== "no" },
    ),
  };
}
