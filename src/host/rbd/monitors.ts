/** Ceph's mon_host: "[v2:H:3300,v1:H:6789] ..." or "H:6789,H2" or "H"; libvirt (and QEMU) want the v1 addresses. */
export function parseMonHost(monHost: string): { host: string; port: number }[] {
  const out: { host: string; port: number }[] = [];
  for (const group of splitTopLevel(monHost, /[\s,;]/)) {
    const addrs =
      group.startsWith("[") && !/^\[[0-9a-f:]+\]/i.test(group) ? splitTopLevel(group.slice(1, -1), /,/) : [group];
    const v1 = addrs.find((a) => a.startsWith("v1:")) ?? addrs.find((a) => !a.startsWith("v2:"));
    const m = v1 ? /^(?:v1:)?(\[[0-9a-f:]+\]|[^:/]+)(?::(\d+))?/i.exec(v1) : null;
    if (m) out.push({ host: m[1]!.replace(/^\[|\]$/g, ""), port: m[2] ? Number(m[2]) : 6789 });
  }
  return out;
}

/** Splits on separators that are not inside brackets (IPv6 addresses and address vectors nest them). */
function splitTopLevel(text: string, separator: RegExp): string[] {
  const parts: string[] = [];
  let depth = 0;
  let current = "";
  for (const ch of text) {
    if (ch === "[") depth++;
    if (ch === "]") depth--;
    if (depth === 0 && separator.test(ch)) {
      if (current) parts.push(current);
      current = "";
    } else current += ch;
  }
  if (current) parts.push(current);
  return parts;
}

/**
 * The addresses in `osd blocklist ls` output. Since Quincy the monitor answers with two JSON arrays
 * back to back (the address blocklist, then the range blocklist), which is not one JSON document.
 */
export function parseBlocklist(text: string): string[] {
  const trimmed = text.trim();
  if (!trimmed) return [];
  const lists = JSON.parse(`[${trimmed.replace(/\]\s*\[/g, "],[")}]`) as { addr?: string; range?: string }[][];
  return lists.flat().flatMap((e) => e.addr ?? e.range ?? []);
}
