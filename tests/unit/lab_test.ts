import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { formatCidr } from "../../lib/ip.ts";
import { type Lab, LabError } from "../../lib/lab.ts";
import { editDistance, LAB_KEYS, parseLab } from "../../lib/lab_parse.ts";

const EXAMPLES = new URL("../../examples/labs/", import.meta.url);

function example(name: string): Lab {
  return parseLab(readFileSync(new URL(name, EXAMPLES), "utf8"), `examples/labs/${name}`);
}

/** The problems parseLab reports for `text`, as "lab.toml:LINE: message". */
function problems(text: string): string[] {
  try {
    parseLab(text, "lab.toml");
  } catch (e) {
    if (e instanceof LabError) return e.problems;
    throw e;
  }
  assert.fail("parseLab accepted the file");
}

/** Two nodes on one link, each with a WireGuard interface peered with the other: a file that parses. */
const GOOD = `name = "t"
[node.a]
[node.b]

[[link]]
ends = ["a:eth0", "b:eth0"]
addresses = [["192.0.2.1/24"], ["192.0.2.2/24"]]

[[wireguard]]
node = "a"
name = "wg0"
addresses = ["10.0.0.1/24", "fd00::1/64"]

[[wireguard.peer]]
to = "b:wg0"
endpoint = "b:eth0"

[[wireguard]]
node = "b"
name = "wg0"
addresses = ["10.0.0.2/24", "fd00::2/64"]

[[wireguard.peer]]
to = "a:wg0"
`;

Deno.test("lab: every example in examples/labs parses, with checks", () => {
  const files = readdirSync(EXAMPLES).filter((f) => f.endsWith(".toml")).sort();
  assert.deepEqual(files, [
    "hub-and-spoke.toml",
    "ipv6-underlay.toml",
    "mixed.toml",
    "road-warrior.toml",
    "site-to-site.toml",
  ]);
  for (const f of files) {
    const lab = example(f);
    assert.ok(lab.checks.length > 0, f);
    assert.ok(lab.wireguards.every((w) => w.peers.length > 0), f);
  }
});

Deno.test("lab: site-to-site example reads into the model", () => {
  const lab = example("site-to-site.toml");
  assert.equal(lab.name, "s2s");
  assert.deepEqual(lab.nodes.map((n) => [n.name, n.forward, n.routes]), [
    ["a", false, ["default via 192.0.2.1"]],
    ["r", true, []],
    ["b", false, ["default via 198.51.100.1"]],
  ]);
  assert.deepEqual(lab.links[1]!.ends, [{ node: "r", ifname: "eth1" }, { node: "b", ifname: "eth0" }]);
  const [a, b] = lab.wireguards;
  assert.equal(a!.line, 25);
  assert.equal(a!.listenPort, 51820);
  assert.deepEqual(a!.implementation, { kind: "typetun" });
  const peer = a!.peers[0]!;
  assert.equal(peer.line, 31);
  assert.deepEqual(peer.to, { node: "b", name: "wg0" });
  assert.deepEqual(peer.endpoint, { node: "b", ifname: "eth0" });
  assert.equal(peer.presharedKey, true);
  // Default allowed IPs: the peer interface's own addresses, as host routes.
  assert.deepEqual(peer.allowedIps.map(formatCidr), ["10.10.0.2/32", "fd10::2/128"]);
  assert.deepEqual(b!.peers[0]!.allowedIps.map(formatCidr), ["10.10.0.1/32", "fd10::1/128"]);
  assert.deepEqual(lab.checks.map((c) => [c.from, c.ping, c.expect, c.line]), [
    ["a", "b:wg0", "reach", 47],
    ["b", "fd10::1", "reach", 51],
    ["a", "198.51.100.2", "reach", 55],
  ]);
});

Deno.test("lab: the extras (netem, sysctls, exec, implementations, several tunnels per node) are read", () => {
  const roam = example("road-warrior.toml");
  assert.equal(roam.nodes.find((n) => n.name === "home")!.nat, "eth1");
  assert.deepEqual(roam.links[1]!.netem, { delayMs: 5, lossPercent: 0 });
  assert.equal(roam.links[0]!.netem, null);
  assert.deepEqual(roam.wireguards[0]!.peers[0]!.allowedIps.map(formatCidr), ["10.20.0.0/24"]);
  assert.equal(roam.wireguards[0]!.peers[0]!.persistentKeepalive, 1);
  assert.equal(roam.wireguards[1]!.peers[0]!.endpoint, null);
  assert.deepEqual(roam.checks.map((c) => c.expect), ["reach", "reach", "blocked"]);

  const mixed = example("mixed.toml");
  assert.deepEqual(mixed.wireguards.map((w) => [w.node, w.name, w.implementation.kind]), [
    ["a", "wg0", "typetun"],
    ["b", "wg0", "wireguard-go"],
    ["b", "wg1", "typetun"],
    ["c", "wg0", "wireguard-go"],
  ]);
  const v6 = example("ipv6-underlay.toml");
  assert.deepEqual(v6.nodes[0]!.sysctls, { "net.ipv6.conf.default.accept_dad": "0" });
  assert.equal(v6.wireguards[0]!.mtu, 1400);

  const lab = parseLab(
    GOOD.replace("[node.b]", `[node.b]\nexec = ["sysctl -w net.ipv4.ip_forward=1", ["sh", "-c", "echo a b"]]`)
      .replace(
        `name = "wg0"\naddresses = ["10.0.0.2/24"`,
        `name = "wg0"\nimplementation = "/usr/bin/wg-x"\naddresses = ["10.0.0.2/24"`,
      ),
    "x.toml",
  );
  assert.deepEqual(lab.nodes[1]!.exec, [["sysctl", "-w", "net.ipv4.ip_forward=1"], ["sh", "-c", "echo a b"]]);
  assert.deepEqual(lab.wireguards[1]!.implementation, { kind: "path", path: "/usr/bin/wg-x" });
});

Deno.test("lab: unknown keys are named with the closest known one", () => {
  assert.deepEqual(
    problems(
      GOOD.replace("[node.b]", "[node.b]\nfoward = true").replace(
        `to = "a:wg0"`,
        `to = "a:wg0"\nendpiont = "a:eth0"`,
      ),
    ),
    [
      "lab.toml:4: unknown key 'foward' in [node.b] (did you mean 'forward'?)",
      "lab.toml:26: unknown key 'endpiont' in [[wireguard.peer]] (did you mean 'endpoint'?)",
    ],
  );
  // Far from every known key: no guess.
  assert.deepEqual(problems(GOOD + '[[check]]\nfrom = "a"\nping = "b:wg0"\nzzzzzz = 1\n'), [
    "lab.toml:28: unknown key 'zzzzzz' in [[check]]",
  ]);
  assert.deepEqual(problems(`nmae = "x"\n[node.a]\n`), [
    "lab.toml:1: unknown key 'nmae' in the top level (did you mean 'name'?)",
    "lab.toml:1: missing 'name' (the lab's name, e.g. name = \"s2s\")",
  ]);
  assert.equal(editDistance("endpiont", "endpoint"), 1);
  assert.equal(editDistance("", "abc"), 3);
  assert.equal(editDistance("kitten", "sitting"), 3);
});

Deno.test("lab: unknown nodes and interfaces in links, peers, checks and nat", () => {
  assert.deepEqual(
    problems(
      GOOD.replace(`ends = ["a:eth0", "b:eth0"]`, `ends = ["a:eth0", "bb:eth0"]`)
        .replace(`to = "b:wg0"`, `to = "b:wg9"`)
        .replace("[node.a]", `[node.a]\nnat = "eth7"`) +
        `[[check]]\nfrom = "c"\nping = "a:eth3"\n`,
    ),
    [
      "lab.toml:3: nat: node 'a' has no interface 'eth7'",
      "lab.toml:7: ends: unknown node 'bb' (did you mean 'b'?)",
      "lab.toml:16: to: node 'b' has no interface 'wg9' (did you mean 'wg0'?)",
      "lab.toml:17: endpoint: node 'b' has no interface 'eth0'",
      "lab.toml:27: unknown node 'c'",
      "lab.toml:28: ping: node 'a' has no interface 'eth3' (did you mean 'eth0'?)",
    ],
  );
});

Deno.test("lab: peers to themselves, to a link, to nothing, twice, and endpoints elsewhere", () => {
  const text = GOOD.replace(`to = "a:wg0"\n`, `to = "b:wg0"\n`) +
    `[[wireguard.peer]]\nto = "a:eth0"\n[[wireguard.peer]]\nendpoint = "a:eth0"\n` +
    `[[wireguard]]\nnode = "a"\nname = "wg1"\n[[wireguard.peer]]\nto = "b:wg0"\nendpoint = "a:eth0"\n` +
    `[[wireguard.peer]]\nto = "b:wg0"\n`;
  assert.deepEqual(problems(text), [
    "lab.toml:24: peer to itself: 'b:wg0' is the interface this peer belongs to",
    "lab.toml:26: peer to 'a:eth0', a link's interface, not a [[wireguard]]",
    "lab.toml:27: [[wireguard.peer]] needs 'to' = \"node:wgname\" (another [[wireguard]] of the lab)",
    "lab.toml:34: endpoint 'a:eth0' is not on node 'b', where 'b:wg0' listens",
    "lab.toml:36: a second peer to 'b:wg0' on a:wg1",
  ]);
});

Deno.test("lab: the same interface name twice in a node, links and wireguards alike", () => {
  const text = GOOD.replace(`ends = ["a:eth0", "b:eth0"]`, `ends = ["a:wg0", "b:eth0"]`).replace(
    `to = "b:wg0"\nendpoint = "b:eth0"`,
    `to = "b:wg0"`,
  ) + `[[link]]\nends = ["b:eth0", "a:eth1"]\n`;
  assert.deepEqual(problems(text), [
    "lab.toml:11: interface 'wg0' declared twice on node 'a' (first by a [[link]] on line 6)",
    "lab.toml:25: interface 'eth0' declared twice on node 'b' (first by a [[link]] on line 6)",
  ]);
});

Deno.test("lab: names too long for Linux interfaces and namespaces, and bad names", () => {
  const long = "n".repeat(70);
  const text = GOOD.replace(`name = "t"`, `name = "Lab_1"`)
    .replace(`"b:eth0"]`, `"b:veth-far-too-long0"]`)
    .replace(
      `name = "wg0"\naddresses = ["10.0.0.1/24"`,
      `name = "wireguard-tunnel0"\naddresses = ["10.0.0.1/24"`,
    )
    .replace("[node.b]", `[node.b]\n[node.${long}]\n[node.Up]`);
  assert.deepEqual(problems(text), [
    "lab.toml:1: bad lab name 'Lab_1': lower-case letters, digits and '-' (it prefixes namespace names)",
    `lab.toml:4: namespace name 'Lab_1-${long}' is longer than 64 characters`,
    "lab.toml:5: bad node name 'Up': lower-case letters, digits and '-'",
    "lab.toml:8: interface name 'veth-far-too-long0' is 18 bytes; Linux allows 15",
    "lab.toml:13: interface name 'wireguard-tunnel0' is 17 bytes; Linux allows 15",
    "lab.toml:18: endpoint: node 'b' has no interface 'eth0'",
    "lab.toml:26: to: node 'a' has no interface 'wg0'",
  ]);
});

Deno.test("lab: invalid, repeated and overlapping addresses", () => {
  const text = GOOD.replace(
    `[["192.0.2.1/24"], ["192.0.2.2/24"]]`,
    `[["192.0.2.1/24", "192.0.2.300/24"], ["10.0.0.1/8"]]`,
  ) +
    `[[link]]\nends = ["a:eth1", "b:eth1"]\naddresses = [["192.0.2.129/25"], ["2001:db8::1/129"]]\n` +
    `[[link]]\nends = ["a:eth2", "b:eth2"]\naddresses = [["2001:db8::1/64"], ["2001:db8::2/64"]]\n` +
    `[[link]]\nends = ["a:eth3", "b:eth3"]\naddresses = "10.9.9.9/24"\n`;
  assert.deepEqual(problems(text), [
    'lab.toml:7: bad address "192.0.2.300/24" (an address/prefix, e.g. 192.0.2.1/24)',
    "lab.toml:12: address 10.0.0.1 on a:wg0 is already on b:eth0 (line 7)",
    "lab.toml:12: subnet 10.0.0.0/24 of a:wg0 overlaps 10.0.0.0/8 of b:eth0 (line 7), on another link",
    'lab.toml:27: bad address "2001:db8::1/129" (an address/prefix, e.g. 192.0.2.1/24)',
    "lab.toml:27: subnet 192.0.2.128/25 of a:eth1 overlaps 192.0.2.0/24 of a:eth0 (line 7), on another link",
    'lab.toml:33: \'addresses\' must be two lists, one per end: [["192.0.2.1/24"], ["192.0.2.2/24"]]',
  ]);
});

Deno.test("lab: an endpoint of a family the node cannot reach", () => {
  const text = GOOD.replace(`[["192.0.2.1/24"], ["192.0.2.2/24"]]`, `[["192.0.2.1/24"], ["2001:db8::2/64"]]`);
  assert.deepEqual(problems(text), [
    "lab.toml:16: endpoint 'b:eth0' is IPv6 (its first address) but node 'a' has no IPv6 address on a link",
  ]);
});

Deno.test("lab: bad types and values", () => {
  const text = `name = 7
[node.a]
routes = "default via 192.0.2.1"
forward = "yes"
[node.b]
routes = ["bogus via 1.2.3.4"]
[[link]]
ends = "a:eth0 b:eth0"
mtu = 9999999
netem = { delay_ms = -1, jitter = 3 }
[[wireguard]]
node = "a"
name = "wg0"
listen_port = 70000
implementation = "boringtun"
[[wireguard.peer]]
to = 3
[[check]]
from = "a"
ping = "not an address"
expect = "maybe"
`;
  assert.deepEqual(problems(text), [
    "lab.toml:1: 'name' must be a string",
    "lab.toml:3: 'routes' must be a list of strings",
    "lab.toml:4: 'forward' must be true or false",
    "lab.toml:6: bad route 'bogus via 1.2.3.4' (`ip route add` syntax: \"DEST via GATEWAY\")",
    "lab.toml:8: 'ends' must be two strings \"node:ifname\"",
    "lab.toml:9: 'mtu' must be an integer from 68 to 65535",
    "lab.toml:10: unknown key 'jitter' in netem",
    "lab.toml:10: netem delay_ms must be a number from 0 to 60000",
    "lab.toml:14: 'listen_port' must be an integer from 0 to 65535",
    'lab.toml:15: unknown implementation \'boringtun\' ("typetun", "wireguard-go", or a path to a program)',
    "lab.toml:16: [[wireguard.peer]] needs 'to' = \"node:wgname\" (another [[wireguard]] of the lab)",
    "lab.toml:17: 'to' must be a string",
    "lab.toml:20: bad ping target 'not an address' (an address, or \"node:ifname\")",
    'lab.toml:21: expect must be "reach" or "blocked", not \'maybe\'',
  ]);
});

Deno.test("lab: a TOML syntax error is one problem with its line; no nodes is one too", () => {
  assert.deepEqual(problems(`name = "x"\n[node.a]\nforward = \n`).length, 1);
  assert.match(problems(`name = "x"\n[node.a]\nforward = \n`)[0]!, /^lab\.toml:3: TOML: /);
  assert.deepEqual(problems(`name = "x"\n`), ["lab.toml:1: no nodes: add at least one [node.NAME] table"]);
});

Deno.test("lab: every problem of a file comes in one LabError, in line order", () => {
  const text = GOOD.replace(`name = "t"`, `name = "t"\nlinks = []`)
    .replace(`"b:eth0"]`, `"q:eth0"]`)
    .replace(`to = "a:wg0"`, `to = "b:wg0"`) +
    `[[check]]\nfrom = "a"\nping = "10.0.0.2"\nexpect = "reached"\n`;
  let err: unknown;
  try {
    parseLab(text, "lab.toml");
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof LabError);
  assert.deepEqual(err.problems, [
    "lab.toml:2: unknown key 'links' in the top level (did you mean 'link'?)",
    "lab.toml:7: ends: unknown node 'q'",
    "lab.toml:17: endpoint: node 'b' has no interface 'eth0'",
    "lab.toml:25: peer to itself: 'b:wg0' is the interface this peer belongs to",
    'lab.toml:29: expect must be "reach" or "blocked", not \'reached\'',
  ]);
  assert.equal(err.message, err.problems.join("\n"));
});

Deno.test("lab: README's example parses, and its reference table has a row for every key", () => {
  const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
  const labs = readme.slice(readme.indexOf("\n## Labs\n"));
  const section = labs.slice(0, labs.indexOf("\n## ", 1));
  const toml = /```toml\n([^]*?)```/.exec(section)![1]!;
  const lab = parseLab(toml, "README.md");
  assert.equal(lab.wireguards[1]!.peers[0]!.persistentKeepalive, 25);
  const rows = [...section.matchAll(/^\| `([^`]+)` +\|/gm)].map((m) => m[1]!);
  const want = [
    ...LAB_KEYS.top.map((k) => k === "name" ? k : k === "node" ? "[node.NODE]" : `[[${k}]]`),
    ...LAB_KEYS.node.map((k) => `node.${k}`),
    ...LAB_KEYS.link.map((k) => `link.${k}`),
    ...LAB_KEYS.wireguard.map((k) => k === "peer" ? "[[wireguard.peer]]" : `wireguard.${k}`),
    ...LAB_KEYS.peer.map((k) => `peer.${k}`),
    ...LAB_KEYS.check.map((k) => `check.${k}`),
  ];
  assert.deepEqual(rows.toSorted(), want.toSorted());
  for (const k of LAB_KEYS.netem) assert.ok(section.includes(k), k);
});

Deno.test("lab: two tunnels of one node on one port, and a peer with nothing to route to", () => {
  const text = GOOD.replace(`addresses = ["10.0.0.2/24", "fd00::2/64"]`, "listen_port = 51820") +
    `[[wireguard]]\nnode = "b"\nname = "wg1"\nlisten_port = 51820\n` +
    `[[wireguard]]\nnode = "a"\nname = "wg1"\nlisten_port = 51820\n`;
  assert.deepEqual(problems(text), [
    "lab.toml:15: peer to 'b:wg0', which has no addresses: give this peer allowed_ips",
    "lab.toml:28: listen_port 51820 of b:wg1 is already b:wg0's (line 18)",
  ]);
  // With allowed_ips given, such a peer is fine.
  const lab = parseLab(
    GOOD.replace(`addresses = ["10.0.0.2/24", "fd00::2/64"]`, "").replace(
      `to = "b:wg0"`,
      `to = "b:wg0"\nallowed_ips = ["0.0.0.0/0", "::/0"]`,
    ),
    "x.toml",
  );
  assert.deepEqual(lab.wireguards[0]!.peers[0]!.allowedIps.map(formatCidr), ["0.0.0.0/0", "::/0"]);
});
