import assert from "node:assert/strict";
import { Endpoint, parseCidr, parseEndpoint } from "../../lib/ip.ts";
import {
  type DeviceInfo,
  type DeviceUpdate,
  EADDRINUSE,
  EINVAL,
  EIO,
  EMSGSIZE,
  ENOANO,
  EPROTO,
  formatErrno,
  formatGet,
  formatSet,
  parseGet,
  parseSet,
  UAPI_MAX_REQUEST_BYTES,
  UapiReader,
} from "../../lib/uapi.ts";
import { keyToBase64, keyToHex } from "../../lib/encoding.ts";

function key(fill: number): Uint8Array {
  return new Uint8Array(32).fill(fill);
}
function hex(fill: number): string {
  return keyToHex(key(fill));
}
function cidr(s: string) {
  const c = parseCidr(s);
  assert.ok(c, s);
  return c;
}
function endpoint(s: string): Endpoint {
  const e = parseEndpoint(s);
  assert.ok(e, s);
  return e;
}
function ok<T>(r: { ok: true; value: T } | { ok: false; errno: number; message: string }): T {
  if (!r.ok) assert.fail(`expected success, got errno ${r.errno}: ${r.message}`);
  return r.value;
}

Deno.test("errno constants are Linux's", () => {
  assert.deepEqual([EIO, EINVAL, ENOANO, EPROTO, EMSGSIZE, EADDRINUSE], [5, 22, 55, 71, 90, 98]);
});

Deno.test("parseSet()", async (t) => {
  await t.step("a realistic request as wg setconf writes it", () => {
    const body = [
      `private_key=${hex(1)}`,
      "listen_port=51820",
      "fwmark=0",
      "replace_peers=true",
      `public_key=${hex(2)}`,
      `preshared_key=${hex(3)}`,
      "endpoint=192.0.2.1:51820",
      "persistent_keepalive_interval=25",
      "replace_allowed_ips=true",
      "allowed_ip=10.0.0.2/32",
      "allowed_ip=fd00::/64",
      `public_key=${hex(4)}`,
      "endpoint=[2001:db8::1]:4500",
      "persistent_keepalive_interval=0",
      "replace_allowed_ips=true",
      "allowed_ip=0.0.0.0/0",
      "",
      "",
    ].join("\n");
    const expected: DeviceUpdate = {
      privateKey: key(1),
      listenPort: 51820,
      fwmark: 0,
      replacePeers: true,
      peers: [
        {
          publicKey: key(2),
          remove: false,
          updateOnly: false,
          presharedKey: key(3),
          endpoint: new Endpoint(4, new Uint8Array([192, 0, 2, 1]), 51820),
          persistentKeepalive: 25,
          replaceAllowedIps: true,
          allowedIps: [cidr("10.0.0.2/32"), cidr("fd00::/64")],
        },
        {
          publicKey: key(4),
          remove: false,
          updateOnly: false,
          endpoint: endpoint("[2001:db8::1]:4500"),
          persistentKeepalive: 0,
          replaceAllowedIps: true,
          allowedIps: [cidr("0.0.0.0/0")],
        },
      ],
    };
    assert.deepEqual(ok(parseSet(body)), expected);
  });

  await t.step("wg set: remove a peer, update_only, protocol_version, zero keys", () => {
    const body = [
      `private_key=${hex(0)}`,
      `public_key=${hex(2).toUpperCase()}`,
      "remove=true",
      `public_key=${hex(5)}`,
      "protocol_version=1",
      "update_only=true",
      `preshared_key=${hex(0)}`,
      "",
    ].join("\n");
    const u = ok(parseSet(body));
    assert.deepEqual(u.privateKey, key(0));
    assert.equal(u.replacePeers, false);
    assert.equal(u.listenPort, undefined);
    assert.equal(u.peers.length, 2);
    assert.deepEqual(u.peers[0]!.publicKey, key(2));
    assert.equal(u.peers[0]!.remove, true);
    assert.equal(u.peers[1]!.updateOnly, true);
    assert.deepEqual(u.peers[1]!.presharedKey, key(0));
    assert.equal(u.peers[1]!.endpoint, undefined);
  });

  await t.step("empty body, bodies with and without the final newline", () => {
    const empty: DeviceUpdate = { replacePeers: false, peers: [] };
    assert.deepEqual(ok(parseSet("")), empty);
    assert.deepEqual(ok(parseSet("\n")), empty);
    assert.deepEqual(ok(parseSet("listen_port=1")).listenPort, 1);
    assert.deepEqual(ok(parseSet("listen_port=1\n")).listenPort, 1);
    assert.deepEqual(ok(parseSet("listen_port=1\n\n")).listenPort, 1);
  });

  await t.step("boundary values and leading zeros, as strconv.ParseUint accepts them", () => {
    const u = ok(
      parseSet(
        `listen_port=65535\nfwmark=4294967295\npublic_key=${hex(9)}\npersistent_keepalive_interval=65535\n`,
      ),
    );
    assert.equal(u.listenPort, 65535);
    assert.equal(u.fwmark, 4294967295);
    assert.equal(u.peers[0]!.persistentKeepalive, 65535);
    assert.equal(ok(parseSet("listen_port=0\n")).listenPort, 0);
    assert.equal(ok(parseSet("listen_port=051820\n")).listenPort, 51820);
  });

  await t.step("replace_allowed_ips drops allowed_ip lines before it in the section", () => {
    const u = ok(
      parseSet(
        `public_key=${hex(2)}\nallowed_ip=10.0.0.1/32\nreplace_allowed_ips=true\nallowed_ip=10.0.0.2/32\n`,
      ),
    );
    assert.deepEqual(u.peers[0]!.allowedIps, [cidr("10.0.0.2/32")]);
    assert.equal(u.peers[0]!.replaceAllowedIps, true);
  });

  await t.step("host bits of allowed_ip are cleared; IPv6 endpoint with a zone", () => {
    const u = ok(parseSet(`public_key=${hex(2)}\nallowed_ip=10.1.2.3/8\nendpoint=[fe80::1%eth0]:1\n`));
    assert.deepEqual(u.peers[0]!.allowedIps, [cidr("10.0.0.0/8")]);
    assert.equal(u.peers[0]!.endpoint!.toString(), "[fe80::1]:1");
  });

  await t.step("the same peer twice gives two sections, in order", () => {
    const u = ok(
      parseSet(`public_key=${hex(2)}\nremove=true\npublic_key=${hex(2)}\nallowed_ip=10.0.0.1/32\n`),
    );
    assert.equal(u.peers.length, 2);
    assert.equal(u.peers[0]!.remove, true);
    assert.equal(u.peers[1]!.remove, false);
  });
});

Deno.test("parseSet() errors", async (t) => {
  const P = `public_key=${hex(2)}\n`;
  const cases: [string, string, number][] = [
    ["line without '='", "listen_port 51820\n", EPROTO],
    ["line without '=' in a peer", P + "remove\n", EPROTO],
    ["private key too short", `private_key=${hex(1).slice(2)}\n`, EINVAL],
    ["private key not hex", `private_key=${hex(1).slice(1)}x\n`, EINVAL],
    ["private key in base64", `private_key=${keyToBase64(key(1))}\n`, EINVAL],
    ["public key too long", `public_key=${hex(1)}00\n`, EINVAL],
    ["public key empty", "public_key=\n", EINVAL],
    ["preshared key not hex", P + `preshared_key=${"z".repeat(64)}\n`, EINVAL],
    ["port not a number", "listen_port=abc\n", EINVAL],
    ["port empty", "listen_port=\n", EINVAL],
    ["port negative", "listen_port=-1\n", EINVAL],
    ["port with a sign", "listen_port=+1\n", EINVAL],
    ["port > 65535", "listen_port=65536\n", EINVAL],
    ["port with spaces", "listen_port= 1\n", EINVAL],
    ["fwmark > 2^32-1", "fwmark=4294967296\n", EINVAL],
    ["fwmark in hex", "fwmark=0x10\n", EINVAL],
    ["replace_peers=false", "replace_peers=false\n", EINVAL],
    ["replace_peers=1", "replace_peers=1\n", EINVAL],
    ["unknown device key", "mtu=1420\n", EINVAL],
    ["empty key", "=1\n", EINVAL],
    ["key case matters", "Listen_Port=1\n", EINVAL],
    ["peer key before any public_key", "endpoint=192.0.2.1:1\n", EINVAL],
    ["device key after a peer", P + "listen_port=51820\n", EINVAL],
    ["private_key after a peer", P + `private_key=${hex(1)}\n`, EINVAL],
    ["unknown peer key", P + "last_handshake_time_sec=0\n", EINVAL],
    ["remove=false", P + "remove=false\n", EINVAL],
    ["update_only=yes", P + "update_only=yes\n", EINVAL],
    ["replace_allowed_ips=TRUE", P + "replace_allowed_ips=TRUE\n", EINVAL],
    ["protocol_version=2", P + "protocol_version=2\n", EINVAL],
    ["protocol_version empty", P + "protocol_version=\n", EINVAL],
    ["endpoint without port", P + "endpoint=192.0.2.1\n", EINVAL],
    ["endpoint port > 65535", P + "endpoint=192.0.2.1:65536\n", EINVAL],
    ["endpoint bad IPv4", P + "endpoint=192.0.2.256:1\n", EINVAL],
    ["endpoint IPv6 without brackets", P + "endpoint=2001:db8::1:51820\n", EINVAL],
    ["endpoint host name", P + "endpoint=example.com:51820\n", EINVAL],
    ["allowed_ip without length", P + "allowed_ip=10.0.0.1\n", EINVAL],
    ["allowed_ip length too big", P + "allowed_ip=10.0.0.0/33\n", EINVAL],
    ["allowed_ip IPv6 length too big", P + "allowed_ip=fd00::/129\n", EINVAL],
    ["allowed_ip leading zero", P + "allowed_ip=10.0.0.0/08\n", EINVAL],
    ["allowed_ip not an address", P + "allowed_ip=10.0.0/8\n", EINVAL],
    ["allowed_ip list", P + "allowed_ip=10.0.0.0/8,fd00::/64\n", EINVAL],
    ["keepalive > 65535", P + "persistent_keepalive_interval=65536\n", EINVAL],
    ["keepalive negative", P + "persistent_keepalive_interval=-1\n", EINVAL],
    ["keepalive off is a number", P + "persistent_keepalive_interval=off\n", EINVAL],
    ["text after the blank line", "listen_port=1\n\nlisten_port=2\n", EPROTO],
    ["carriage return", "listen_port=1\r\n", EINVAL],
  ];
  for (const [name, body, errno] of cases) {
    await t.step(name, () => {
      const r = parseSet(body);
      assert.equal(r.ok, false);
      if (r.ok) return;
      assert.equal(r.errno, errno, r.message);
      assert.match(r.message, /^Line \d+: /);
    });
  }

  await t.step("the message names the line and never echoes a key", () => {
    const secret = hex(7).slice(1) + "x";
    const r = parseSet(`listen_port=1\nprivate_key=${secret}\n`);
    assert.equal(r.ok, false);
    if (r.ok) return;
    assert.match(r.message, /^Line 2: private_key/);
    assert.equal(r.message.includes(secret), false);
  });

  await t.step("a bad line late in the request still fails the whole request", () => {
    const r = parseSet(
      `private_key=${hex(1)}\nreplace_peers=true\n${P}allowed_ip=10.0.0.0/8\nallowed_ip=bad\n`,
    );
    assert.equal(r.ok, false);
  });

  await t.step("never throws on arbitrary text", () => {
    const alphabet = "=\n0123456789abcdef:/[].%_ -eyklprstuvw";
    for (let i = 0; i < 2000; i++) {
      let s = "";
      const n = Math.floor(Math.random() * 60);
      for (let j = 0; j < n; j++) s += alphabet[Math.floor(Math.random() * alphabet.length)];
      const r = parseSet(s);
      assert.equal(typeof r.ok, "boolean");
    }
  });
});

const INFO: DeviceInfo = {
  privateKey: key(1),
  listenPort: 51820,
  fwmark: 0x1234,
  peers: [
    {
      publicKey: key(2),
      presharedKey: key(3),
      endpoint: endpoint("192.0.2.1:51820"),
      persistentKeepalive: 25,
      lastHandshakeMs: 1_700_000_000_123,
      rxBytes: 1234,
      txBytes: 5678,
      allowedIps: [cidr("10.0.0.2/32"), cidr("fd00::/64")],
    },
    {
      publicKey: key(4),
      presharedKey: null,
      endpoint: null,
      persistentKeepalive: 0,
      lastHandshakeMs: 0,
      rxBytes: 0,
      txBytes: 0,
      allowedIps: [],
    },
  ],
};

Deno.test("formatGet()", async (t) => {
  await t.step("wireguard-go's keys, order and conditions", () => {
    assert.equal(
      formatGet(INFO),
      [
        `private_key=${hex(1)}`,
        "listen_port=51820",
        "fwmark=4660",
        `public_key=${hex(2)}`,
        `preshared_key=${hex(3)}`,
        "protocol_version=1",
        "endpoint=192.0.2.1:51820",
        "last_handshake_time_sec=1700000000",
        "last_handshake_time_nsec=123000000",
        "tx_bytes=5678",
        "rx_bytes=1234",
        "persistent_keepalive_interval=25",
        "allowed_ip=10.0.0.2/32",
        "allowed_ip=fd00::/64",
        `public_key=${hex(4)}`,
        `preshared_key=${hex(0)}`,
        "protocol_version=1",
        "last_handshake_time_sec=0",
        "last_handshake_time_nsec=0",
        "tx_bytes=0",
        "rx_bytes=0",
        "persistent_keepalive_interval=0",
        "",
      ].join("\n"),
    );
  });
  await t.step("an unconfigured device prints nothing", () => {
    assert.equal(formatGet({ privateKey: null, listenPort: 0, fwmark: 0, peers: [] }), "");
    assert.equal(formatGet({ privateKey: key(0), listenPort: 0, fwmark: 0, peers: [] }), "");
  });
  await t.step("IPv6 endpoint and large counters", () => {
    const out = formatGet({
      privateKey: null,
      listenPort: 0,
      fwmark: 0,
      peers: [{ ...INFO.peers[1]!, endpoint: endpoint("[2001:db8::1]:1"), rxBytes: 2 ** 60, txBytes: 1e21 }],
    });
    assert.match(out, /^endpoint=\[2001:db8::1\]:1$/m);
    assert.match(out, /^rx_bytes=1152921504606846976$/m);
    assert.match(out, /^tx_bytes=1000000000000000000000$/m);
  });
});

Deno.test("formatErrno() writes the errno negated, as wireguard-go", () => {
  assert.equal(formatErrno(0), "errno=0\n\n");
  assert.equal(formatErrno(EINVAL), "errno=-22\n\n");
  assert.equal(formatErrno(-EPROTO), "errno=-71\n\n");
});

Deno.test("round trips", async (t) => {
  await t.step("formatSet() then parseSet()", () => {
    const update: DeviceUpdate = {
      privateKey: key(1),
      listenPort: 0,
      fwmark: 7,
      replacePeers: true,
      peers: [
        {
          publicKey: key(2),
          remove: false,
          updateOnly: true,
          presharedKey: key(0),
          endpoint: endpoint("[::ffff:192.0.2.1]:9"),
          persistentKeepalive: 65535,
          replaceAllowedIps: true,
          allowedIps: [cidr("0.0.0.0/0"), cidr("::/0"), cidr("192.168.1.0/24")],
        },
        { publicKey: key(3), remove: true, updateOnly: false, replaceAllowedIps: false, allowedIps: [] },
        { publicKey: key(4), remove: false, updateOnly: false, replaceAllowedIps: false, allowedIps: [] },
      ],
    };
    assert.deepEqual(ok(parseSet(formatSet(update))), update);
    assert.deepEqual(ok(parseSet(formatSet({ replacePeers: false, peers: [] }))), {
      replacePeers: false,
      peers: [],
    });
  });

  await t.step("formatGet() then parseGet()", () => {
    assert.deepEqual(ok(parseGet(formatGet(INFO) + "errno=0\n\n")), INFO);
  });

  await t.step("a get reply read back as the equivalent set request", () => {
    // What `wg showconf | wg setconf` does: the get reply, minus the statistics, is a valid set request.
    const stats = /^(last_handshake_time_sec|last_handshake_time_nsec|tx_bytes|rx_bytes)=/;
    const body = formatGet(INFO).split("\n").filter((l) => !stats.test(l)).join("\n");
    const u = ok(parseSet(body));
    assert.deepEqual(u.privateKey, INFO.privateKey);
    assert.equal(u.listenPort, INFO.listenPort);
    assert.equal(u.fwmark, INFO.fwmark);
    assert.deepEqual(u.peers.map((p) => p.publicKey), INFO.peers.map((p) => p.publicKey));
    assert.deepEqual(u.peers[0]!.allowedIps, INFO.peers[0]!.allowedIps);
    assert.deepEqual(u.peers[0]!.endpoint, INFO.peers[0]!.endpoint);
    assert.deepEqual(u.peers[1]!.presharedKey, key(0));
  });
});

Deno.test("parseGet()", async (t) => {
  await t.step("ignores unknown keys and device keys after a peer, as wg(8)", () => {
    const info = ok(
      parseGet(`listen_port=1\njc=4\npublic_key=${hex(2)}\nlisten_port=9\nfoo=bar\nerrno=0\n\n`),
    );
    assert.equal(info.listenPort, 1);
    assert.equal(info.peers.length, 1);
  });
  await t.step("nsec before sec", () => {
    const info = ok(
      parseGet(
        `public_key=${hex(2)}\nlast_handshake_time_nsec=5000000\nlast_handshake_time_sec=2\nerrno=0\n`,
      ),
    );
    assert.equal(info.peers[0]!.lastHandshakeMs, 2005);
  });
  await t.step("errors", () => {
    const bad = (s: string, errno: number) => {
      const r = parseGet(s);
      assert.equal(r.ok, false, s);
      if (!r.ok) assert.equal(r.errno, errno, s);
    };
    bad("errno=-22\n\n", EINVAL);
    bad("errno=98\n\n", EADDRINUSE);
    bad("listen_port=1\n\n", EPROTO); // no errno line
    bad("", EPROTO);
    bad("listen_port=x\nerrno=0\n", EPROTO);
    bad(`public_key=${hex(2)}\nendpoint=nowhere\nerrno=0\n`, EPROTO);
    bad("garbage\nerrno=0\n", EPROTO);
    bad("errno=abc\n", EPROTO);
  });
});

Deno.test("UapiReader", async (t) => {
  const setBody = `listen_port=1\npublic_key=${hex(2)}\nallowed_ip=10.0.0.0/8\n`;

  await t.step("one get and one set", () => {
    assert.deepEqual(new UapiReader().push("get=1\n\n"), [{ op: "get" }]);
    assert.deepEqual(new UapiReader().push(`set=1\n${setBody}\n`), [{ op: "set", body: setBody }]);
    assert.deepEqual(new UapiReader().push("set=1\n\n"), [{ op: "set", body: "" }]);
  });

  await t.step("several requests in one chunk", () => {
    const r = new UapiReader();
    assert.deepEqual(r.push(`get=1\n\nset=1\n${setBody}\nget=1\n\nset=1\n\nget=1\n`), [
      { op: "get" },
      { op: "set", body: setBody },
      { op: "get" },
      { op: "set", body: "" },
    ]);
    assert.deepEqual(r.push("\n"), [{ op: "get" }]);
    assert.equal(r.done, false);
  });

  await t.step("any chunking gives the same requests", () => {
    const text = `get=1\n\nset=1\n${setBody}\nset=1\n\nget=1\n\n`;
    const whole = new UapiReader().push(text);
    assert.equal(whole.length, 4);
    for (let size = 1; size <= 9; size++) {
      const r = new UapiReader();
      const got = [];
      for (let i = 0; i < text.length; i += size) got.push(...r.push(text.slice(i, i + size)));
      assert.deepEqual(got, whole, `chunks of ${size}`);
    }
    for (let cut = 0; cut <= text.length; cut++) {
      const r = new UapiReader();
      assert.deepEqual([...r.push(text.slice(0, cut)), ...r.push(text.slice(cut))], whole, `cut at ${cut}`);
    }
  });

  await t.step("waits for an incomplete request", () => {
    const r = new UapiReader();
    assert.deepEqual(r.push("se"), []);
    assert.deepEqual(r.push("t=1\nlisten_port=1\n"), []);
    assert.deepEqual(r.push("\n"), [{ op: "set", body: "listen_port=1\n" }]);
    assert.deepEqual(r.push("get=1\n"), []);
  });

  await t.step("garbage is a protocol error, and the reader stops", () => {
    for (const text of ["hello\n", "get=2\n\n", "set=0\n\n", "GET=1\n\n", "\n", "get=1 \n\n", "xyz"]) {
      const r = new UapiReader();
      const out = r.push(text);
      assert.equal(out.length, 1, JSON.stringify(text));
      assert.equal(out[0]!.op, "error");
      if (out[0]!.op === "error") assert.equal(out[0]!.errno, EPROTO, JSON.stringify(text));
      assert.equal(r.done, true);
      assert.deepEqual(r.push("get=1\n\n"), []);
    }
  });

  await t.step("requests before the garbage still count", () => {
    const out = new UapiReader().push("get=1\n\nbogus\nget=1\n\n");
    assert.equal(out.length, 2);
    assert.deepEqual(out[0], { op: "get" });
    assert.equal(out[1]!.op, "error");
  });

  await t.step("get=1 followed by anything but a blank line is EINVAL, as wireguard-go", () => {
    const out = new UapiReader().push("get=1\nlisten_port=1\n\n");
    assert.equal(out.length, 1);
    assert.ok(out[0]!.op === "error" && out[0]!.errno === EINVAL);
  });

  await t.step(
    "a request longer than the limit is refused with EMSGSIZE, and what came before still counts",
    () => {
      const r = new UapiReader({ maxRequestBytes: 100 });
      assert.deepEqual(r.push("get=1\n\nset=1\n"), [{ op: "get" }]);
      const out = r.push("allowed_ip=10.0.0.0/8\n".repeat(10));
      assert.equal(out.length, 1);
      assert.ok(out[0]!.op === "error" && out[0]!.errno === EMSGSIZE);
      assert.equal(r.done, true);
      assert.equal(r.pending, 0, "the refused text is not kept");
      assert.deepEqual(r.push("\nget=1\n\n"), [], "nothing after it is read");

      // Complete in one chunk, but too long: refused all the same; the get before it is answered.
      const whole = new UapiReader({ maxRequestBytes: 100 }).push(
        `get=1\n\nset=1\n${"fwmark=0\n".repeat(20)}\nget=1\n\n`,
      );
      assert.deepEqual(whole.map((q) => q.op), ["get", "error"]);
      assert.ok(whole[1]!.op === "error" && whole[1]!.errno === EMSGSIZE);

      // A request of exactly the limit passes, counted from its own start (not from earlier requests).
      const body = "fwmark=0\n".repeat(10); // "set=1\n" + 90 + "\n" = 97 characters
      const exact = new UapiReader({ maxRequestBytes: 97 });
      for (let i = 0; i < 3; i++) assert.deepEqual(exact.push(`set=1\n${body}\n`), [{ op: "set", body }]);
      assert.deepEqual(exact.push(`set=1\n${body}x\n\n`).map((q) => q.op), ["error"]);
    },
  );

  await t.step("the default limit lets a 10,000-peer setconf through", () => {
    const peers = Array.from({ length: 10_000 }, (_, i) => ({
      publicKey: Uint8Array.from({ length: 32 }, (_, j) => (i * 31 + j * 7) & 0xff),
      remove: false,
      updateOnly: false,
      presharedKey: key(9),
      endpoint: endpoint(`192.0.2.${i % 250}:${20000 + i}`),
      persistentKeepalive: 25,
      replaceAllowedIps: true,
      allowedIps: [cidr(`10.${i >> 8}.${i & 0xff}.0/24`), cidr(`fd00:${i.toString(16)}::/64`)],
    }));
    const body = formatSet({ privateKey: key(1), listenPort: 51820, replacePeers: true, peers });
    assert.ok(body.length > 2_500_000 && body.length < 0.75 * UAPI_MAX_REQUEST_BYTES, `${body.length} bytes`);
    const r = new UapiReader();
    const got = [];
    // In socket-sized chunks, as the daemon receives it.
    const text = `set=1\n${body}\n`;
    for (let i = 0; i < text.length; i += 65536) got.push(...r.push(text.slice(i, i + 65536)));
    assert.equal(got.length, 1);
    assert.ok(got[0]!.op === "set");
    if (got[0]!.op === "set") assert.equal(ok(parseSet(got[0]!.body)).peers.length, 10_000);
  });

  await t.step("linear time: 1 MiB a character at a time", () => {
    const n = 1 << 20;
    // One set whose body arrives a character at a time (the trickling client of issue 11).
    const line = "allowed_ip=10.1.2.3/32\n";
    const text = `set=1\npublic_key=${hex(3)}\n${line.repeat(Math.ceil(n / line.length))}\n`;
    let t0 = performance.now();
    const r = new UapiReader();
    let got: ReturnType<UapiReader["push"]> = [];
    for (let i = 0; i < text.length; i++) {
      const out = r.push(text[i]!);
      if (out.length) got = out;
    }
    const setMs = performance.now() - t0;
    assert.equal(got.length, 1);
    assert.ok(got[0]!.op === "set" && got[0]!.body.length === text.length - 7);
    // Pipelined gets, a byte at a time (as the daemon feeds what it receives).
    const gets = new TextEncoder().encode("get=1\n\n".repeat(Math.ceil(n / 7)));
    t0 = performance.now();
    const g = new UapiReader();
    let count = 0;
    for (let i = 0; i < gets.length; i++) count += g.push(gets.subarray(i, i + 1)).length;
    const getMs = performance.now() - t0;
    assert.equal(count, Math.ceil(n / 7));
    // Quadratic framing took 13.8 s for a quarter of this (issue 11); linear takes some tens of milliseconds.
    assert.ok(setMs < 500, `the set took ${setMs.toFixed(0)} ms`);
    assert.ok(getMs < 500, `the gets took ${getMs.toFixed(0)} ms`);
  });

  await t.step("a blank line split between chunks ends the request; one newline does not", () => {
    const r = new UapiReader();
    assert.deepEqual(r.push("set=1\nfwmark=1\n"), []);
    assert.deepEqual(r.push("\n"), [{ op: "set", body: "fwmark=1\n" }]);
    assert.deepEqual(r.push("set=1\n"), []);
    assert.deepEqual(r.push("\n"), [{ op: "set", body: "" }]);
    assert.deepEqual(r.push("set=1\nfwmark=1"), []);
    assert.deepEqual(r.push("\nfwmark=2"), []);
    assert.deepEqual(r.push("\n"), []);
    assert.deepEqual(r.push("\nget=1\n"), [{ op: "set", body: "fwmark=1\nfwmark=2\n" }]);
    assert.deepEqual(r.push("\n"), [{ op: "get" }]);
  });

  await t.step("split anywhere into three: the same requests", () => {
    const text = `get=1\n\nset=1\n${setBody}\nset=1\n\nget=1\n\nset=1\nfwmark=7\n\n`;
    const whole = new UapiReader().push(text);
    assert.deepEqual(whole.map((q) => q.op), ["get", "set", "set", "get", "set"]);
    for (let a = 0; a <= text.length; a++) {
      for (let b = a; b <= text.length; b++) {
        const r = new UapiReader();
        const got = [...r.push(text.slice(0, a)), ...r.push(text.slice(a, b)), ...r.push(text.slice(b))];
        assert.deepEqual(got, whole, `cut at ${a} and ${b}`);
        assert.equal(r.pending, 0);
      }
    }
  });

  await t.step("pipelined requests come out one at a time with next()", () => {
    const r = new UapiReader();
    r.feed(`get=1\n\nset=1\n${setBody}\nget=1\n\nset=1\nfwm`);
    assert.equal(r.pending, 7 + 6 + setBody.length + 1 + 7 + 9);
    assert.deepEqual(r.next(), { op: "get" });
    assert.deepEqual(r.next(), { op: "set", body: setBody });
    assert.equal(r.pending, 7 + 9);
    assert.deepEqual(r.next(), { op: "get" });
    assert.equal(r.next(), null);
    assert.equal(r.pending, 9, "the unfinished set is held");
    r.feed("ark=1\n\n");
    assert.deepEqual(r.next(), { op: "set", body: "fwmark=1\n" });
    assert.equal(r.next(), null);
    assert.equal(r.pending, 0);
  });

  await t.step("a request that is not an operation is refused at once, without waiting for its line", () => {
    const r = new UapiReader();
    r.feed("get=1\n\nhello");
    assert.deepEqual(r.next(), { op: "get" });
    const e = r.next();
    assert.ok(e && e.op === "error" && e.errno === EPROTO && e.message.includes("hello"), JSON.stringify(e));
    assert.equal(r.next(), null);
    assert.equal(r.pending, 0);
  });

  await t.step("bytes as received: a UTF-8 character split between chunks stays whole", () => {
    // The daemon feeds the socket's bytes; a set's body is decoded once it is complete.
    const bytes = new TextEncoder().encode("get=1\n\nset=1\nfwmark=\u00e9\u20ac\n\n");
    const r = new UapiReader();
    const got = [];
    for (let i = 0; i < bytes.length; i++) got.push(...r.push(bytes.subarray(i, i + 1)));
    assert.deepEqual(got, [{ op: "get" }, { op: "set", body: "fwmark=\u00e9\u20ac\n" }]);
    assert.equal(r.pending, 0);
    // Text comes back as it was sent, a leading byte-order mark included.
    assert.deepEqual(new UapiReader().push("set=1\n\ufefffwmark=1\n\n"), [{
      op: "set",
      body: "\ufefffwmark=1\n",
    }]);
  });

  await t.step("end of input completes a pending set, nothing else", () => {
    const r = new UapiReader();
    assert.deepEqual(r.push("set=1\nlisten_port=1"), []);
    assert.deepEqual(r.end(), [{ op: "set", body: "listen_port=1" }]);
    assert.equal(r.done, true);
    const g = new UapiReader();
    g.push("get=1\n");
    assert.deepEqual(g.end(), []);
    assert.deepEqual(new UapiReader().end(), []);
  });

  await t.step("the set body it yields parses", () => {
    const [req] = new UapiReader().push(`set=1\n${setBody}\n`);
    assert.ok(req && req.op === "set");
    if (req.op === "set") assert.equal(ok(parseSet(req.body)).peers.length, 1);
  });
});
