import assert from "node:assert/strict";
import {
  ConfigError,
  configFromDevice,
  configToUpdate,
  detectFormat,
  formatAddressLikeWg,
  formatConf,
  formatToml,
  hasQuickKeys,
  parseConf,
  parseConfig,
  parseEndpointSpec,
  parseToml,
  stripQuick,
  syncUpdate,
  type WgConfig,
} from "../../lib/config.ts";
import { Endpoint, formatCidr, parseAddress, parseCidr } from "../../lib/ip.ts";
import {
  type DeviceInfo,
  formatSet,
  keyToBase64,
  keyToHex,
  parseSet,
  type PeerInfo,
} from "../../lib/uapi.ts";

function key(fill: number): Uint8Array {
  return new Uint8Array(32).fill(fill);
}
const K = (fill: number) => keyToBase64(key(fill));

/** A wg-quick file using every key, with the irregular spellings wg and wg-quick accept. */
const FULL_CONF = `# a comment line
[interface]   # section names are case-insensitive
PrivateKey = ${K(1)}
listenport=51820
FwMark = 0x1f
Address = 10.0.0.1/24, fd00::1/64
Address = 10.0.1.1
DNS = 1.1.1.1 2606:4700:4700::1111,example.com
MTU = 1420
Table = off
SaveConfig = TRUE
PreUp = echo "pre up, with a comma"
PostUp = iptables -A FORWARD -i %i -j ACCEPT; iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE
PreDown = true
PostDown = logger down   # the comment is not part of the command

[Peer]
PublicKey = ${K(2)}
PresharedKey = ${K(3)}
AllowedIPs = 10.0.0.2/32, fd00::2/128
allowedips = 192.168.0.0/16
Endpoint = vpn.example.com:51820
PersistentKeepalive = 25

[PEER]\r
PublicKey = ${K(4)}\r
Endpoint = [2001:db8::1]:1234\r
AllowedIPs =\r
`;

/** The same configuration in TOML, with typed values and .conf-style strings mixed. */
const FULL_TOML = `[Interface]
privatekey = "${K(1)}"
ListenPort = 51820
FwMark = 0x1f
Address = ["10.0.0.1/24", "fd00::1/64", "10.0.1.1"]
DNS = "1.1.1.1, 2606:4700:4700::1111, example.com"
MTU = 1420
Table = "off"
SaveConfig = true
PreUp = 'echo "pre up, with a comma"'
PostUp = ["iptables -A FORWARD -i %i -j ACCEPT; iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE"]
PreDown = ["true"]
PostDown = "logger down"

[[Peer]]
PublicKey = "${K(2)}"
PresharedKey = "${K(3)}"
AllowedIPs = ["10.0.0.2/32", "fd00::2/128", "192.168.0.0/16"]
Endpoint = "vpn.example.com:51820"
PersistentKeepalive = 25

[[peer]]
PublicKey = "${K(4)}"
Endpoint = "[2001:db8::1]:1234"
AllowedIPs = []
`;

/** formatConf of FULL_CONF: wg-quick keys in save_config's order, then showconf's. */
const FULL_FORMATTED = `[Interface]
Address = 10.0.0.1/24
Address = fd00::1/64
Address = 10.0.1.1/32
DNS = 1.1.1.1
DNS = 2606:4700:4700::1111
DNS = example.com
MTU = 1420
Table = off
SaveConfig = true
PreUp = echo "pre up, with a comma"
PostUp = iptables -A FORWARD -i %i -j ACCEPT; iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE
PreDown = true
PostDown = logger down
ListenPort = 51820
FwMark = 0x1f
PrivateKey = ${K(1)}

[Peer]
PublicKey = ${K(2)}
PresharedKey = ${K(3)}
AllowedIPs = 10.0.0.2/32, fd00::2/128, 192.168.0.0/16
Endpoint = vpn.example.com:51820
PersistentKeepalive = 25

[Peer]
PublicKey = ${K(4)}
Endpoint = [2001:db8::1]:1234
`;

function throwsAt(fn: () => unknown, message: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ConfigError, `a ConfigError, got ${e}`);
    assert.equal(e.message, message);
    return true;
  });
}

Deno.test("parseConf reads every key of wg(8) and wg-quick(8)", () => {
  const c = parseConf(FULL_CONF, { file: "wg0.conf" });
  assert.deepEqual(c.privateKey, key(1));
  assert.equal(c.listenPort, 51820);
  assert.equal(c.fwmark, 0x1f);
  // Interface addresses keep their host bits; a bare address is a /32.
  assert.deepEqual(
    c.addresses.map((a) => `${formatAddressLikeWg(a.addr)}/${a.prefixLen}`),
    ["10.0.0.1/24", "fd00::1/64", "10.0.1.1/32"],
  );
  assert.deepEqual(c.dns, ["1.1.1.1", "2606:4700:4700::1111"]);
  assert.deepEqual(c.dnsSearch, ["example.com"]);
  assert.equal(c.mtu, 1420);
  assert.equal(c.table, "off");
  assert.equal(c.saveConfig, true);
  assert.deepEqual(c.preUp, ['echo "pre up, with a comma"']);
  assert.equal(c.postUp.length, 1);
  assert.deepEqual(c.postDown, ["logger down"]);
  assert.equal(c.peers.length, 2);
  const [p, q] = c.peers;
  assert.deepEqual(p!.publicKey, key(2));
  assert.deepEqual(p!.presharedKey, key(3));
  // Repeated AllowedIPs lines accumulate, in order.
  assert.deepEqual(p!.allowedIps.map(formatCidr), ["10.0.0.2/32", "fd00::2/128", "192.168.0.0/16"]);
  assert.deepEqual(p!.endpoint, { host: "vpn.example.com", port: 51820 });
  assert.equal(p!.persistentKeepalive, 25);
  assert.deepEqual(q!.endpoint, { host: "2001:db8::1", port: 1234 });
  assert.deepEqual(q!.allowedIps, []);
  assert.equal(q!.persistentKeepalive, undefined);
  assert.equal(q!.presharedKey, undefined);
});

Deno.test("formatConf writes wg showconf's layout and round trips", () => {
  const c = parseConf(FULL_CONF);
  assert.equal(formatConf(c), FULL_FORMATTED);
  assert.deepEqual(parseConf(formatConf(c)), c);
  // Values that mean "off" survive as such.
  const off = parseConf(
    "[Interface]\nFwMark = off\n[Peer]\nPublicKey = " + K(2) + "\nPersistentKeepalive = off\n",
  );
  assert.equal(off.fwmark, 0);
  assert.equal(off.peers[0]!.persistentKeepalive, 0);
  assert.equal(
    formatConf(off),
    `[Interface]\nFwMark = off\n\n[Peer]\nPublicKey = ${K(2)}\nPersistentKeepalive = off\n`,
  );
  assert.deepEqual(parseConf(formatConf(off)), off);
  assert.equal(formatConf(parseConf("")), "[Interface]\n\n");
});

Deno.test("TOML: the same keys as the .conf file, typed or as strings", () => {
  const fromConf = parseConf(FULL_CONF);
  const fromToml = parseToml(FULL_TOML, { file: "wg0.toml" });
  assert.deepEqual(fromToml, fromConf);
  // Formatting: conf → TOML → conf gives the same text, and TOML → TOML is stable.
  const toml = formatToml(fromConf);
  assert.deepEqual(parseToml(toml), fromConf);
  assert.equal(formatConf(parseToml(toml)), FULL_FORMATTED);
  assert.equal(formatToml(parseToml(toml)), toml);
  assert.match(toml, /^FwMark = 0x1f$/m);
  assert.match(toml, /^AllowedIPs = \["10\.0\.0\.2\/32", "fd00::2\/128", "192\.168\.0\.0\/16"\]$/m);
  assert.match(toml, /^PreUp = \["echo \\"pre up, with a comma\\""\]$/m);
  // String forms of numbers, as in a .conf file.
  const s = parseToml(
    `[Interface]\nFwMark = "0x10"\nListenPort = "0"\n[[Peer]]\nPublicKey = "${K(2)}"\n` +
      `PersistentKeepalive = "off"\n`,
  );
  assert.equal(s.fwmark, 16);
  assert.equal(s.listenPort, 0);
  assert.equal(s.peers[0]!.persistentKeepalive, 0);
});

Deno.test("TOML strings escape what TOML requires", () => {
  const c = parseConf(`[Interface]\nPostUp = printf 'a\\tb' \x7f "q"\n`);
  const toml = formatToml(c);
  assert.match(toml, /\\u007F/);
  assert.deepEqual(parseToml(toml).postUp, c.postUp);
});

Deno.test("detectFormat: by extension, else by content", () => {
  assert.equal(detectFormat("wg0.toml", "[Interface]\n"), "toml");
  assert.equal(detectFormat("wg0.conf", FULL_TOML), "conf");
  assert.equal(detectFormat("/dev/fd/63", FULL_TOML), "toml");
  assert.equal(detectFormat("/dev/fd/63", FULL_CONF), "conf");
  assert.equal(detectFormat("x", `[Interface]\nListenPort = 1\n[[Peer]]\n`), "toml");
  assert.equal(detectFormat("x", `[Peer]\nAllowedIPs = [\n  "10.0.0.0/8",\n]\n`), "toml");
  assert.equal(detectFormat("x", `[Peer]\nEndpoint = [2001:db8::1]:1\n`), "conf");
  assert.deepEqual(parseConfig(FULL_TOML), parseConfig(FULL_CONF));
});

Deno.test(".conf errors name file, line and problem", async (t) => {
  const pub = `[Peer]\nPublicKey = ${K(2)}\n`;
  const cases: [string, string, string][] = [
    [
      "unknown key",
      "[Interface]\nPrivateKey = " + K(1) + "\nAdress = 10.0.0.1/24\n",
      `wg0.conf:3: unknown key "Adress" in [Interface]`,
    ],
    [
      "key of the other section",
      "[Interface]\nEndpoint = 1.2.3.4:5\n",
      `wg0.conf:2: unknown key "Endpoint" in [Interface] (it belongs in [Peer])`,
    ],
    [
      "unknown section",
      "[Interface]\n\n[Peers]\n",
      `wg0.conf:3: unknown section "[Peers]" (expected [Interface] or [Peer])`,
    ],
    [
      "key outside a section",
      "# hi\nPrivateKey = " + K(1) + "\n",
      `wg0.conf:2: key "PrivateKey" outside a section ([Interface] or [Peer])`,
    ],
    ["not key = value", "[Interface]\nPrivateKey\n", `wg0.conf:2: expected "Key = Value", got "PrivateKey"`],
    [
      "short key",
      "[Interface]\nPrivateKey = AAAA\n",
      `wg0.conf:2: bad key for PrivateKey: must be 32 bytes of base64 (44 characters ending in "=")`,
    ],
    [
      "31-byte key",
      `[Peer]\nPublicKey = ${keyToBase64(new Uint8Array(31))}\n`,
      `wg0.conf:2: bad key for PublicKey: must be 32 bytes of base64 (44 characters ending in "=")`,
    ],
    [
      "non-canonical key",
      `[Peer]\nPublicKey = ${K(2).slice(0, 42)}B=\n`,
      `wg0.conf:2: bad key for PublicKey: must be 32 bytes of base64 (44 characters ending in "=")`,
    ],
    [
      "empty preshared key",
      pub + "PresharedKey =\n",
      `wg0.conf:3: bad key for PresharedKey: must be 32 bytes of base64 (44 characters ending in "=")`,
    ],
    [
      "prefix too long",
      pub + "AllowedIPs = 10.0.0.0/8, 10.0.0.1/33\n",
      `wg0.conf:3: bad CIDR "10.0.0.1/33" in AllowedIPs (expected address/length)`,
    ],
    [
      "not an address",
      pub + "AllowedIPs = 10.0.0.256/32\n",
      `wg0.conf:3: bad CIDR "10.0.0.256/32" in AllowedIPs (expected address/length)`,
    ],
    [
      "trailing comma",
      pub + "AllowedIPs = 10.0.0.1/32,\n",
      `wg0.conf:3: bad CIDR "" in AllowedIPs (expected address/length)`,
    ],
    [
      "bad Address",
      "[Interface]\nAddress = 10.0.0.1/24, fd00::1/129\n",
      `wg0.conf:2: bad CIDR "fd00::1/129" in Address (expected address or address/length)`,
    ],
    [
      "endpoint without port",
      pub + "Endpoint = 1.2.3.4\n",
      `wg0.conf:3: bad endpoint "1.2.3.4" (expected host:port, IPv4:port or [IPv6]:port)`,
    ],
    [
      "endpoint port too big",
      pub + "Endpoint = host:65536\n",
      `wg0.conf:3: bad endpoint "host:65536" (expected host:port, IPv4:port or [IPv6]:port)`,
    ],
    [
      "unclosed bracket",
      pub + "Endpoint = [::1:51820\n",
      `wg0.conf:3: bad endpoint "[::1:51820" (expected host:port, IPv4:port or [IPv6]:port)`,
    ],
    [
      "bad IPv4 literal",
      pub + "Endpoint = 1.2.3.999:1\n",
      `wg0.conf:3: bad endpoint "1.2.3.999:1" (expected host:port, IPv4:port or [IPv6]:port)`,
    ],
    [
      "bad port",
      "[Interface]\nListenPort = 65536\n",
      `wg0.conf:2: bad port "65536" for ListenPort (0-65535)`,
    ],
    [
      "port not a number",
      "[Interface]\nListenPort = -1\n",
      `wg0.conf:2: bad port "-1" for ListenPort (0-65535)`,
    ],
    [
      "bad fwmark",
      "[Interface]\nFwMark = 0x100000000\n",
      `wg0.conf:2: bad number "0x100000000" for FwMark (0-0xffffffff or off)`,
    ],
    [
      "bad keepalive",
      pub + "PersistentKeepalive = 65536\n",
      `wg0.conf:3: bad number "65536" for PersistentKeepalive (0-65535 or off)`,
    ],
    ["bad MTU", "[Interface]\nMTU = 20\n", `wg0.conf:2: bad number "20" for MTU (68-65535)`],
    ["bad SaveConfig", "[Interface]\nSaveConfig = yes\n", `wg0.conf:2: bad SaveConfig "yes" (true or false)`],
    ["bad DNS", "[Interface]\nDNS = 1.1.1\n", `wg0.conf:2: bad DNS server "1.1.1" (not an IP address)`],
    ["duplicate peer", pub + "\n" + pub, `wg0.conf:5: duplicate peer public key ${K(2)} (first at line 2)`],
    [
      "peer without key",
      pub + "[Peer]\nAllowedIPs = 10.0.0.0/8\n",
      `wg0.conf:3: [Peer] section without a PublicKey`,
    ],
  ];
  for (const [name, text, message] of cases) {
    await t.step(name, () => throwsAt(() => parseConf(text, { file: "wg0.conf" }), message));
  }
  await t.step("wg-quick keys refused where wg(8) refuses them", () => {
    throwsAt(
      () =>
        parseConf("[Interface]\nListenPort = 1\nAddress = 10.0.0.1/24\n", { file: "wg0.conf", wgOnly: true }),
      "wg0.conf:3: Address is a wg-quick key, not a WireGuard one (typetun convert --strip FILE drops them)",
    );
  });
});

Deno.test("TOML errors name file, line and problem", async (t) => {
  const cases: [string, string, string][] = [
    [
      "unknown key",
      `[Interface]\nListenPort = 1\nAdress = "10.0.0.1/24"\n`,
      `wg0.toml:3: unknown key "Adress" in [Interface]`,
    ],
    [
      "unknown table",
      `[Interface]\n\n[Peers]\nx = 1\n`,
      `wg0.toml:3: unknown section "Peers" (expected [Interface] or [[Peer]])`,
    ],
    [
      "key outside a table",
      `ListenPort = 1\n`,
      `wg0.toml:1: unknown section "ListenPort" (expected [Interface] or [[Peer]])`,
    ],
    [
      "peer as a table",
      `[Peer]\nPublicKey = "${K(2)}"\n`,
      `wg0.toml:1: "Peer" must be an array of tables ([[Peer]])`,
    ],
    [
      "bad key in the second peer",
      `[[Peer]]\nPublicKey = "${K(2)}"\n\n[[Peer]]\nPublicKey = "nope"\n`,
      `wg0.toml:5: bad key for PublicKey: must be 32 bytes of base64 (44 characters ending in "=")`,
    ],
    [
      "bad CIDR in a list",
      `[[Peer]]\nPublicKey = "${K(2)}"\nAllowedIPs = ["10.0.0.0/8",\n  "fd00::/200"]\n`,
      `wg0.toml:3: bad CIDR "fd00::/200" in AllowedIPs (expected address/length)`,
    ],
    ["wrong type", `[Interface]\nPrivateKey = 5\n`, `wg0.toml:2: "PrivateKey" must be a string`],
    [
      "fractional number",
      `[Interface]\nListenPort = 1.5\n`,
      `wg0.toml:2: bad number 1.5 for ListenPort (an integer)`,
    ],
    [
      "bad endpoint",
      `[[Peer]]\nPublicKey = "${K(2)}"\nEndpoint = "no port"\n`,
      `wg0.toml:3: bad endpoint "noport" (expected host:port, IPv4:port or [IPv6]:port)`,
    ],
    [
      "duplicate peer",
      `[[Peer]]\nPublicKey = "${K(2)}"\n[[Peer]]\nPublicKey = "${K(2)}"\n`,
      `wg0.toml:4: duplicate peer public key ${K(2)} (first at line 2)`,
    ],
    ["TOML syntax", `[Interface]\nListenPort = = 1\n`, `wg0.toml:2: TOML: `],
  ];
  for (const [name, text, message] of cases) {
    await t.step(name, () => {
      if (message.endsWith("TOML: ")) {
        assert.throws(() => parseToml(text, { file: "wg0.toml" }), (e: unknown) => {
          assert.ok(e instanceof ConfigError && e.message.startsWith(message) && e.line === 2, String(e));
          return true;
        });
      } else {
        throwsAt(() => parseToml(text, { file: "wg0.toml" }), message);
      }
    });
  }
});

Deno.test("endpoints as wg(8) splits them", () => {
  assert.deepEqual(parseEndpointSpec("192.0.2.1:51820"), { host: "192.0.2.1", port: 51820 });
  assert.deepEqual(parseEndpointSpec("[2001:DB8::1]:1"), { host: "2001:db8::1", port: 1 });
  // Without brackets the port follows the last colon, as in wg.
  assert.deepEqual(parseEndpointSpec("2001:db8::1:51820"), { host: "2001:db8::1", port: 51820 });
  assert.deepEqual(parseEndpointSpec("vpn-1.example.com:0"), { host: "vpn-1.example.com", port: 0 });
  for (
    const bad of [
      "",
      ":1",
      "host",
      "host:",
      "[::1]",
      "[::1]x1",
      "[host]:1",
      "1.2.3:4",
      "a b:1",
      "-a:1",
      "h:1x",
    ]
  ) {
    assert.equal(parseEndpointSpec(bad), null, bad);
  }
});

Deno.test("configToUpdate: setconf resets what the file omits, addconf does not", () => {
  const c = parseConf(
    `[Interface]\nListenPort = 51820\n[Peer]\nPublicKey = ${K(2)}\n` +
      `AllowedIPs = 10.0.0.2/32\nEndpoint = 192.0.2.1:1\nPersistentKeepalive = 0\n`,
  );
  const set = configToUpdate(c, "set");
  assert.equal(
    formatSet(set),
    `private_key=${"0".repeat(64)}\nlisten_port=51820\nfwmark=0\nreplace_peers=true\n` +
      `public_key=${keyToHex(key(2))}\nendpoint=192.0.2.1:1\npersistent_keepalive_interval=0\n` +
      `replace_allowed_ips=true\nallowed_ip=10.0.0.2/32\n`,
  );
  const add = configToUpdate(c, "add");
  assert.equal(
    formatSet(add),
    `listen_port=51820\npublic_key=${keyToHex(key(2))}\nendpoint=192.0.2.1:1\n` +
      `persistent_keepalive_interval=0\nreplace_allowed_ips=true\nallowed_ip=10.0.0.2/32\n`,
  );
  // What the device reads back is the same update.
  const back = parseSet(formatSet(set));
  assert.ok(back.ok);
  assert.deepEqual(back.value, set);
  // Host names need resolving first; the resolver the caller passes is used.
  const named = parseConf(`[Peer]\nPublicKey = ${K(2)}\nEndpoint = vpn.example.com:7\n`);
  assert.throws(() => configToUpdate(named, "set"), /needs name resolution/);
  const u = configToUpdate(named, "add", (e) => new Endpoint(4, parseAddress("203.0.113.9")!, e.port));
  assert.equal(u.peers[0]!.endpoint!.toString(), "203.0.113.9:7");
});

function peerInfo(fill: number, extra: Partial<PeerInfo> = {}): PeerInfo {
  return {
    publicKey: key(fill),
    presharedKey: null,
    endpoint: null,
    persistentKeepalive: 0,
    lastHandshakeMs: 0,
    rxBytes: 0,
    txBytes: 0,
    allowedIps: [],
    ...extra,
  };
}

Deno.test("syncUpdate removes peers not in the file and turns off what the file dropped", () => {
  const file = configToUpdate(
    parseConf(`[Peer]\nPublicKey = ${K(2)}\nAllowedIPs = 10.0.0.2/32\n[Peer]\nPublicKey = ${K(4)}\n`),
    "set",
  );
  const running: DeviceInfo = {
    privateKey: null,
    listenPort: 1,
    fwmark: 0,
    peers: [peerInfo(2, { presharedKey: key(9), persistentKeepalive: 25 }), peerInfo(3)],
  };
  const u = syncUpdate(file, running);
  assert.equal(u.replacePeers, false);
  assert.deepEqual(u.peers.map((p) => [p.publicKey[0], p.remove]), [[3, true], [2, false], [4, false]]);
  assert.deepEqual(u.peers[1]!.presharedKey, new Uint8Array(32));
  assert.equal(u.peers[1]!.persistentKeepalive, 0);
  assert.equal(u.peers[2]!.presharedKey, undefined, "a peer new to the interface gets nothing extra");
  assert.equal(file.peers[0]!.presharedKey, undefined, "the input update is left alone");
  // The interface part is sent as setconf would.
  assert.equal(u.listenPort, 0);
  // A file without peers keeps replace_peers (every peer goes); an interface without peers needs no removals.
  const none = configToUpdate(parseConf("[Interface]\nListenPort = 5\n"), "set");
  assert.equal(syncUpdate(none, running), none);
  assert.equal(syncUpdate(file, { ...running, peers: [] }), file);
});

Deno.test("configFromDevice + formatConf print what wg showconf prints", () => {
  const info: DeviceInfo = {
    privateKey: key(1),
    listenPort: 51820,
    fwmark: 0xca6c,
    peers: [
      peerInfo(2, {
        presharedKey: key(3),
        endpoint: new Endpoint(6, parseAddress("::a00:1")!, 5),
        persistentKeepalive: 25,
        allowedIps: ["10.0.0.0/24", "::1:2/128", "::ffff:1.2.3.4/128", "::/0"].map((s) => parseCidr(s)!),
        lastHandshakeMs: 1_700_000_000_000,
        rxBytes: 5,
      }),
      peerInfo(4),
    ],
  };
  assert.equal(
    formatConf(configFromDevice(info)),
    `[Interface]\nListenPort = 51820\nFwMark = 0xca6c\nPrivateKey = ${K(1)}\n\n` +
      `[Peer]\nPublicKey = ${K(2)}\nPresharedKey = ${K(3)}\n` +
      `AllowedIPs = 10.0.0.0/24, ::0.1.0.2/128, ::ffff:1.2.3.4/128, ::/0\n` +
      `Endpoint = [::10.0.0.1]:5\nPersistentKeepalive = 25\n\n` +
      `[Peer]\nPublicKey = ${K(4)}\n`,
  );
  const empty: DeviceInfo = { privateKey: null, listenPort: 0, fwmark: 0, peers: [] };
  assert.equal(formatConf(configFromDevice(empty)), "[Interface]\n\n");
});

Deno.test("stripQuick keeps exactly the WireGuard part", () => {
  const c = parseConf(FULL_CONF);
  assert.ok(hasQuickKeys(c));
  const s: WgConfig = stripQuick(c);
  assert.ok(!hasQuickKeys(s));
  assert.equal(
    formatConf(s),
    FULL_FORMATTED.replace(/^(Address|DNS|MTU|Table|SaveConfig|PreUp|PostUp|PreDown|PostDown) = .*\n/gm, ""),
  );
  assert.ok(!hasQuickKeys(parseConf(`[Interface]\nListenPort = 1\n`)));
});
