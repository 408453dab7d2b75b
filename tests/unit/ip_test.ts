import assert from "node:assert/strict";
import {
  Endpoint,
  formatAddress,
  formatCidr,
  ipTotalLength,
  IPV4_DST,
  IPV4_HEADER_LEN,
  IPV6_DST,
  IPV6_HEADER_LEN,
  IPV6_SRC,
  ipVersion,
  maskAddress,
  parseAddress,
  parseCidr,
  parseEndpoint,
  parseIPv4,
  parseIPv6,
} from "../../lib/ip.ts";

function roundTrip(s: string): string | null {
  const a = parseAddress(s);
  return a ? formatAddress(a) : null;
}

Deno.test("IPv4: parse and format", () => {
  assert.deepEqual(parseIPv4("192.0.2.1"), new Uint8Array([192, 0, 2, 1]));
  for (const s of ["0.0.0.0", "255.255.255.255", "10.0.0.1", "192.0.2.255"]) assert.equal(roundTrip(s), s);
});

Deno.test("IPv4: invalid text is null", () => {
  for (
    const s of [
      "",
      "1.2.3",
      "1.2.3.4.5",
      "1.2.3.4.",
      ".1.2.3",
      "1..2.3",
      "256.1.1.1",
      "1.2.3.999",
      "01.2.3.4", // leading zeros are ambiguous (octal to inet_aton), refused as inet_pton does
      "+1.2.3.4",
      "-1.2.3.4",
      "1.2.3.4 ",
      " 1.2.3.4",
      "0x1.2.3.4",
      "1e1.2.3.4",
      "a.b.c.d",
    ]
  ) {
    assert.equal(parseIPv4(s), null, JSON.stringify(s));
  }
});

Deno.test("IPv6: RFC 5952 section 4 canonical forms", () => {
  const cases: readonly (readonly [string, string])[] = [
    // 4.1: leading zeros are suppressed
    ["2001:0db8::0001", "2001:db8::1"],
    // 4.2.1: "::" is used to its maximum capability
    ["2001:db8:0:0:0:0:2:1", "2001:db8::2:1"],
    ["2001:db8::0:1", "2001:db8::1"],
    // 4.2.2: "::" does not shorten a single 16-bit 0 field
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
    // 4.2.3: the longest run is shortened; on a tie, the first
    ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    // 4.3: lowercase
    ["2001:DB8::ABCD", "2001:db8::abcd"],
    // Section 2's many spellings of one address all print the same way
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:0db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:db8::1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:db8::0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:0db8::1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:db8:0:0:1::1", "2001:db8::1:0:0:1"],
    ["2001:db8:0000:0:1::1", "2001:db8::1:0:0:1"],
    ["2001:DB8:0:0:1::1", "2001:db8::1:0:0:1"],
    // Edges
    ["0:0:0:0:0:0:0:0", "::"],
    ["0:0:0:0:0:0:0:1", "::1"],
    ["1:0:0:0:0:0:0:0", "1::"],
    ["1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"],
    ["::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"],
    ["fe80:0000:0000:0000:0204:61ff:fe9d:f156", "fe80::204:61ff:fe9d:f156"],
    ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"],
    // Section 5: IPv4-mapped addresses keep the dotted tail
    ["::ffff:192.0.2.1", "::ffff:192.0.2.1"],
    ["0:0:0:0:0:ffff:c000:0201", "::ffff:192.0.2.1"],
    // Other embedded IPv4 tails are plain hex when printed
    ["64:ff9b::192.0.2.33", "64:ff9b::c000:221"],
    ["1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304"],
  ];
  for (const [input, want] of cases) assert.equal(roundTrip(input), want, input);
});

Deno.test("IPv6: the canonical form is a fixed point and parses back to the same bytes", () => {
  let s = 0x12345678;
  const rand = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0);
  for (let i = 0; i < 2000; i++) {
    const b = new Uint8Array(16);
    // Many zero groups, so that runs of every length and position occur.
    for (let g = 0; g < 8; g++) {
      if (rand() % 3 !== 0) continue;
      const v = rand() & 0xffff;
      b[2 * g] = v >> 8;
      b[2 * g + 1] = v & 0xff;
    }
    const text = formatAddress(b);
    assert.deepEqual(parseIPv6(text), b, text);
    assert.equal(roundTrip(text), text);
  }
});

Deno.test("IPv6: zone ids are dropped", () => {
  assert.equal(roundTrip("fe80::1%eth0"), "fe80::1");
  assert.equal(roundTrip("fe80::1%3"), "fe80::1");
});

Deno.test("IPv6: invalid text is null", () => {
  for (
    const s of [
      "",
      ":",
      ":::",
      "1::2::3",
      ":1::",
      "1:::2",
      "1:2:3:4:5:6:7:8:9",
      "1:2:3:4:5:6:7",
      "1:2:3:4:5:6:7:8::",
      "::1:2:3:4:5:6:7:8",
      "12345::",
      "::g",
      "1:2:3:4:5:6:7:1.2.3.4",
      "::1.2.3",
      "::256.1.1.1",
      "1.2.3.4::", // an IPv4 part must end the address
      "::1.2.3.4:5",
      " ::1",
      "::1 ",
      "[::1]",
      "%eth0",
    ]
  ) {
    assert.equal(parseIPv6(s), null, JSON.stringify(s));
  }
});

Deno.test("parseAddress picks the family by the presence of a colon", () => {
  assert.equal(parseAddress("192.0.2.1")?.length, 4);
  assert.equal(parseAddress("::1")?.length, 16);
  assert.equal(parseAddress("::ffff:192.0.2.1")?.length, 16);
  assert.equal(parseAddress("example.com"), null);
});

Deno.test("CIDR: parse masks host bits, formats back", () => {
  const cases: readonly (readonly [string, string])[] = [
    ["10.0.0.1/8", "10.0.0.0/8"],
    ["192.0.2.255/25", "192.0.2.128/25"],
    ["192.0.2.1", "192.0.2.1/32"],
    ["0.0.0.0/0", "0.0.0.0/0"],
    ["1.2.3.4/0", "0.0.0.0/0"],
    ["fd00::1/64", "fd00::/64"],
    ["2001:db8:ffff:ffff::/33", "2001:db8:8000::/33"],
    ["::1", "::1/128"],
    ["::/0", "::/0"],
    ["1.2.3.4/08", "1.0.0.0/8"],
  ];
  for (const [input, want] of cases) {
    const c = parseCidr(input);
    assert.ok(c, input);
    assert.equal(formatCidr(c), want, input);
  }
  const c = parseCidr("fd00::1/64")!;
  assert.equal(c.family, 6);
  assert.equal(c.prefixLen, 64);
  assert.equal(parseCidr("10.1.2.3/8")!.family, 4);
});

Deno.test("CIDR: invalid text is null", () => {
  for (
    const s of [
      "",
      "/8",
      "1.2.3.4/",
      "1.2.3.4/33",
      "::/129",
      "1.2.3.4/-1",
      "1.2.3.4/8/9",
      "1.2.3.4/ 8",
      "1.2.3.4/x",
    ]
  ) {
    assert.equal(parseCidr(s), null, JSON.stringify(s));
  }
});

Deno.test("maskAddress clears the bits past the prefix and leaves its input alone", () => {
  const a = new Uint8Array([0xff, 0xff, 0xff, 0xff]);
  assert.deepEqual(maskAddress(a, 0), new Uint8Array([0, 0, 0, 0]));
  assert.deepEqual(maskAddress(a, 1), new Uint8Array([0x80, 0, 0, 0]));
  assert.deepEqual(maskAddress(a, 12), new Uint8Array([0xff, 0xf0, 0, 0]));
  assert.deepEqual(maskAddress(a, 32), a);
  assert.deepEqual(a, new Uint8Array([0xff, 0xff, 0xff, 0xff]));
});

Deno.test("endpoints: literal forms as wg accepts them, and back", () => {
  const cases: readonly (readonly [string, string, 4 | 6, number])[] = [
    ["192.0.2.1:51820", "192.0.2.1:51820", 4, 51820],
    ["[2001:db8::1]:51820", "[2001:db8::1]:51820", 6, 51820],
    ["[2001:0DB8:0::1]:1", "[2001:db8::1]:1", 6, 1],
    ["[::ffff:192.0.2.1]:65535", "[::ffff:192.0.2.1]:65535", 6, 65535],
    ["[fe80::1%eth0]:51820", "[fe80::1]:51820", 6, 51820],
    ["192.0.2.1:0", "192.0.2.1:0", 4, 0],
  ];
  for (const [input, want, family, port] of cases) {
    const e = parseEndpoint(input);
    assert.ok(e, input);
    assert.equal(e.toString(), want);
    assert.equal(e.family, family);
    assert.equal(e.port, port);
    assert.deepEqual(parseEndpoint(e.toString()), e);
  }
});

Deno.test("endpoints: invalid text is null", () => {
  for (
    const s of [
      "",
      "192.0.2.1",
      "192.0.2.1:",
      ":51820",
      "192.0.2.1:65536",
      "192.0.2.1:123456",
      "192.0.2.1:-1",
      "192.0.2.1:+1",
      "192.0.2.1:port",
      "2001:db8::1:51820", // IPv6 must be bracketed
      "[2001:db8::1]51820",
      "[2001:db8::1]:",
      "[2001:db8::1",
      "[]:51820",
      "example.com:51820", // names are resolved in cmd/, not here
    ]
  ) {
    assert.equal(parseEndpoint(s), null, JSON.stringify(s));
  }
});

Deno.test("Endpoint.matches compares address bytes and port", () => {
  const e = new Endpoint(4, new Uint8Array([192, 0, 2, 1]), 51820);
  assert.equal(e.matches(new Uint8Array([192, 0, 2, 1]), 51820), true);
  assert.equal(e.matches(new Uint8Array([192, 0, 2, 1]), 51821), false);
  assert.equal(e.matches(new Uint8Array([192, 0, 2, 2]), 51820), false);
  assert.equal(e.matches(new Uint8Array(16), 51820), false);
});

Deno.test("IP headers: version and total length", () => {
  const v4 = new Uint8Array(IPV4_HEADER_LEN + 8);
  v4[0] = 0x45;
  v4[2] = 0;
  v4[3] = 28;
  v4.set([198, 51, 100, 7], IPV4_DST);
  assert.equal(ipVersion(v4), 4);
  assert.equal(ipTotalLength(v4), 28);
  assert.equal(formatAddress(v4.subarray(IPV4_DST, IPV4_DST + 4)), "198.51.100.7");
  assert.equal(ipVersion(v4, 19), 0); // too short for a header
  assert.equal(ipVersion(new Uint8Array(0)), 0);

  const v6 = new Uint8Array(IPV6_HEADER_LEN + 100);
  v6[0] = 0x60;
  v6[4] = 0;
  v6[5] = 100;
  v6.set(parseIPv6("2001:db8::2")!, IPV6_SRC);
  v6.set(parseIPv6("2001:db8::3")!, IPV6_DST);
  assert.equal(ipVersion(v6), 6);
  assert.equal(ipTotalLength(v6), IPV6_HEADER_LEN + 100);
  assert.equal(formatAddress(v6.subarray(IPV6_DST, IPV6_DST + 16)), "2001:db8::3");
  assert.equal(ipVersion(v6, 39), 0);

  // Offsets: a header inside a larger buffer.
  const framed = new Uint8Array(10 + v4.length);
  framed.set(v4, 10);
  assert.equal(ipTotalLength(framed, 10), 28);

  const junk = new Uint8Array(40);
  junk[0] = 0x55;
  assert.equal(ipVersion(junk), 0);
});
