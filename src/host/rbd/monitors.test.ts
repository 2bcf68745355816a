import { describe, expect, it } from "vitest";
import { parseBlocklist, parseMonHost } from "./monitors.js";

describe("parseMonHost (ceph.conf mon_host → the v1 addresses QEMU uses)", () => {
  it.each([
    ["[v2:127.0.0.1:3300,v1:127.0.0.1:6789]", [{ host: "127.0.0.1", port: 6789 }]],
    [
      "[v2:10.0.0.1:3300,v1:10.0.0.1:6789] [v2:10.0.0.2:3300,v1:10.0.0.2:6789]",
      [
        { host: "10.0.0.1", port: 6789 },
        { host: "10.0.0.2", port: 6789 },
      ],
    ],
    [
      "10.0.0.1:6790, 10.0.0.2",
      [
        { host: "10.0.0.1", port: 6790 },
        { host: "10.0.0.2", port: 6789 },
      ],
    ],
    ["mon1.example.org", [{ host: "mon1.example.org", port: 6789 }]],
    ["[v2:[fd00::1]:3300,v1:[fd00::1]:6789]", [{ host: "fd00::1", port: 6789 }]],
    ["[v2:10.0.0.1:3300]", []],
  ])("%s", (monHost, expected) => {
    expect(parseMonHost(monHost)).toEqual(expected);
  });
});

describe("parseBlocklist (osd blocklist ls: two JSON arrays back to back since Quincy)", () => {
  it.each([
    ["", []],
    ["[][]", []],
    ['[{"addr":"169.254.100.2:0/0","until":"2026-11-25T22:00:00Z"}]\n[]', ["169.254.100.2:0/0"]],
    ['[{"addr":"10.0.0.1:0/123","until":"x"}][{"range":"10.0.0.0/24","until":"y"}]', ["10.0.0.1:0/123", "10.0.0.0/24"]],
  ])("%j", (text, addresses) => {
    expect(parseBlocklist(text)).toEqual(addresses);
  });
});
