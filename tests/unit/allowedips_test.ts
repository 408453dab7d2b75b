import assert from "node:assert/strict";
import { AllowedIps } from "../../lib/allowedips.ts";
import { type Cidr, type Family, formatCidr, maskAddress, parseAddress, parseCidr } from "../../lib/ip.ts";

interface Peer {
  readonly name: string;
}
const peer = (name: string): Peer => ({ name });

function ip4(a: number, b: number, c: number, d: number): Uint8Array {
  return new Uint8Array([a, b, c, d]);
}

/** An IPv6 address from four big-endian 32-bit words, as the kernel self-test writes them. */
function ip6(a: number, b: number, c: number, d: number): Uint8Array {
  const out = new Uint8Array(16);
  const v = new DataView(out.buffer);
  [a, b, c, d].forEach((w, i) => v.setUint32(4 * i, w >>> 0));
  return out;
}

function cidr(addr: Uint8Array, prefixLen: number): Cidr {
  return { family: addr.length === 4 ? 4 : 6, addr, prefixLen };
}

function lookup<T>(t: AllowedIps<T>, addr: Uint8Array): T | undefined {
  return t.lookup(addr.length === 4 ? 4 : 6, addr, 0);
}

// The kernel's static allowedips self-test (drivers/net/wireguard/selftest/allowedips.c), inserts and lookups
// case for case.
Deno.test("kernel self-test: inserts and lookups", () => {
  const [a, b, c, d, e, f, g, h] = ["a", "b", "c", "d", "e", "f", "g", "h"].map(peer) as [
    Peer,
    Peer,
    Peer,
    Peer,
    Peer,
    Peer,
    Peer,
    Peer,
  ];
  const t = new AllowedIps<Peer>();
  t.insert(cidr(ip4(192, 168, 4, 0), 24), a);
  t.insert(cidr(ip4(192, 168, 4, 4), 32), b);
  t.insert(cidr(ip4(192, 168, 0, 0), 16), c);
  t.insert(cidr(ip4(192, 95, 5, 64), 27), d);
  // replaces the previous entry, and the host bits must be masked
  t.insert(cidr(ip4(192, 95, 5, 65), 27), c);
  t.insert(cidr(ip6(0x26075300, 0x60006b00, 0, 0xc05f0543), 128), d);
  t.insert(cidr(ip6(0x26075300, 0x60006b00, 0, 0), 64), c);
  t.insert(cidr(ip4(0, 0, 0, 0), 0), e);
  t.insert(cidr(ip6(0, 0, 0, 0), 0), e);
  // replaces the previous entry
  t.insert(cidr(ip6(0, 0, 0, 0), 0), f);
  t.insert(cidr(ip6(0x24046800, 0, 0, 0), 32), g);
  // host bits must be masked
  t.insert(cidr(ip6(0x24046800, 0x40040800, 0xdeadbeef, 0xdeadbeef), 64), h);
  t.insert(cidr(ip6(0x24046800, 0x40040800, 0xdeadbeef, 0xdeadbeef), 128), a);
  t.insert(cidr(ip6(0x24446800, 0x40e40800, 0xdeaebeef, 0xdefbeef), 128), c);
  t.insert(cidr(ip6(0x24446800, 0xf0e40800, 0xeeaebeef, 0), 98), b);
  t.insert(cidr(ip4(64, 15, 112, 0), 20), g);
  // host bits must be masked
  t.insert(cidr(ip4(64, 15, 123, 211), 25), h);
  t.insert(cidr(ip4(10, 0, 0, 0), 25), a);
  t.insert(cidr(ip4(10, 0, 0, 128), 25), b);
  t.insert(cidr(ip4(10, 1, 0, 0), 30), a);
  t.insert(cidr(ip4(10, 1, 0, 4), 30), b);
  t.insert(cidr(ip4(10, 1, 0, 8), 29), c);
  t.insert(cidr(ip4(10, 1, 0, 16), 29), d);

  const cases: readonly (readonly [Peer, Uint8Array])[] = [
    [a, ip4(192, 168, 4, 20)],
    [a, ip4(192, 168, 4, 0)],
    [b, ip4(192, 168, 4, 4)],
    [c, ip4(192, 168, 200, 182)],
    [c, ip4(192, 95, 5, 68)],
    [e, ip4(192, 95, 5, 96)],
    [d, ip6(0x26075300, 0x60006b00, 0, 0xc05f0543)],
    [c, ip6(0x26075300, 0x60006b00, 0, 0xc02e01ee)],
    [f, ip6(0x26075300, 0x60006b01, 0, 0)],
    [g, ip6(0x24046800, 0x40040806, 0, 0x1006)],
    [g, ip6(0x24046800, 0x40040806, 0x1234, 0x5678)],
    [f, ip6(0x240467ff, 0x40040806, 0x1234, 0x5678)],
    [f, ip6(0x24046801, 0x40040806, 0x1234, 0x5678)],
    [h, ip6(0x24046800, 0x40040800, 0x1234, 0x5678)],
    [h, ip6(0x24046800, 0x40040800, 0, 0)],
    [h, ip6(0x24046800, 0x40040800, 0x10101010, 0x10101010)],
    [a, ip6(0x24046800, 0x40040800, 0xdeadbeef, 0xdeadbeef)],
    [g, ip4(64, 15, 116, 26)],
    [g, ip4(64, 15, 127, 3)],
    [g, ip4(64, 15, 123, 1)],
    [h, ip4(64, 15, 123, 128)],
    [h, ip4(64, 15, 123, 129)],
    [a, ip4(10, 0, 0, 52)],
    [b, ip4(10, 0, 0, 220)],
    [a, ip4(10, 1, 0, 2)],
    [b, ip4(10, 1, 0, 6)],
    [c, ip4(10, 1, 0, 10)],
    [d, ip4(10, 1, 0, 20)],
  ] as const;
  cases.forEach(([want, addr], i) => {
    assert.equal(lookup(t, addr)?.name, want.name, `case ${i + 1}`);
  });

  // Removing a peer removes all of its routes, wherever they sit in the trie.
  for (const first of [1, 64, 128, 192, 255]) t.insert(cidr(ip4(first, 0, 0, 0), 32), a);
  t.removeByPeer(a);
  for (const first of [1, 64, 128, 192, 255]) {
    assert.notEqual(lookup(t, ip4(first, 0, 0, 0)), a, `${first}.0.0.0 after removeByPeer`);
  }
});

Deno.test("kernel self-test: nested prefixes of one peer removed together", () => {
  const a = peer("a");
  const t = new AllowedIps<Peer>();
  t.insert(cidr(ip4(192, 168, 0, 0), 16), a);
  t.insert(cidr(ip4(192, 168, 0, 0), 24), a);
  t.removeByPeer(a);
  assert.equal(lookup(t, ip4(192, 168, 0, 1)), undefined);
});

Deno.test("kernel self-test: 128 host routes differing in one bit each", () => {
  const a = peer("a");
  const t = new AllowedIps<Peer>();
  const addrs: Uint8Array[] = [];
  for (let i = 0; i < 128; i++) {
    const ip = new Uint8Array(16).fill(0xff);
    ip[15 - (i >> 3)]! &= ~(1 << (i & 7));
    addrs.push(ip);
    t.insert(cidr(ip, 128), a);
  }
  for (const ip of addrs) assert.equal(lookup(t, ip), a);
  assert.equal(lookup(t, new Uint8Array(16).fill(0xff)), undefined);
  assert.equal(t.entriesForPeer(a).length, 128);
  t.removeByPeer(a);
  for (const ip of addrs) assert.equal(lookup(t, ip), undefined);
});

Deno.test("kernel self-test: entries of a peer read back masked", () => {
  const a = peer("a");
  const t = new AllowedIps<Peer>();
  t.insert(cidr(ip4(192, 95, 5, 93), 27), a);
  t.insert(cidr(ip6(0x26075300, 0x60006b00, 0, 0xc05f0543), 128), a);
  t.insert(cidr(ip4(10, 1, 0, 20), 29), a);
  t.insert(cidr(ip6(0x26075300, 0x6d8a6bf8, 0xdab1f1df, 0xc05f1523), 83), a);
  t.insert(cidr(ip6(0x26075300, 0x6d8a6bf8, 0xdab1f1df, 0xc05f1523), 21), a);
  const got = t.entriesForPeer(a).map(formatCidr).sort();
  const want = [
    cidr(ip4(192, 95, 5, 64), 27),
    cidr(ip6(0x26075300, 0x60006b00, 0, 0xc05f0543), 128),
    cidr(ip4(10, 1, 0, 16), 29),
    cidr(ip6(0x26075300, 0x6d8a6bf8, 0xdab1e000, 0), 83),
    cidr(ip6(0x26075000, 0, 0, 0), 21),
  ].map(formatCidr).sort();
  assert.deepEqual(got, want);
});

Deno.test("last insert wins, and the previous owner loses the entry", () => {
  const a = peer("a"), b = peer("b");
  const t = new AllowedIps<Peer>();
  t.insert(parseCidr("10.0.0.0/8")!, a);
  t.insert(parseCidr("10.0.0.0/8")!, b);
  assert.equal(lookup(t, parseAddress("10.1.2.3")!), b);
  assert.deepEqual(t.entriesForPeer(a), []);
  assert.deepEqual(t.entriesForPeer(b).map(formatCidr), ["10.0.0.0/8"]);
  // Host bits do not make it a different prefix.
  t.insert(parseCidr("10.0.0.0/8")!, a);
  t.insert(cidr(ip4(10, 9, 9, 9), 8), a);
  assert.deepEqual(t.entriesForPeer(a).map(formatCidr), ["10.0.0.0/8"]);
  assert.deepEqual(t.entriesForPeer(b), []);
});

Deno.test("remove only removes a prefix owned by that peer", () => {
  const a = peer("a"), b = peer("b");
  const t = new AllowedIps<Peer>();
  t.insert(parseCidr("10.0.0.0/8")!, a);
  t.insert(parseCidr("10.1.0.0/16")!, b);
  t.insert(parseCidr("fd00::/8")!, a);
  assert.equal(t.remove(parseCidr("10.1.0.0/16")!, a), false);
  assert.equal(t.remove(parseCidr("10.2.0.0/16")!, a), false); // not present
  assert.equal(t.remove(parseCidr("10.0.0.0/9")!, a), false); // not present, though covered
  assert.equal(t.remove(parseCidr("fd00::/8")!, b), false);
  assert.equal(lookup(t, parseAddress("10.1.2.3")!), b);
  assert.equal(t.remove(parseCidr("10.1.0.0/16")!, b), true);
  assert.equal(lookup(t, parseAddress("10.1.2.3")!), a);
  assert.equal(t.remove(parseCidr("10.1.0.0/16")!, b), false);
  assert.equal(t.remove(cidr(ip4(10, 255, 0, 1), 8), a), true); // host bits are masked here too
  assert.equal(lookup(t, parseAddress("10.1.2.3")!), undefined);
  assert.equal(lookup(t, parseAddress("fd12::1")!), a);
  assert.deepEqual(t.entriesForPeer(a).map(formatCidr), ["fd00::/8"]);
});

Deno.test("families are separate tries", () => {
  const a = peer("a"), b = peer("b");
  const t = new AllowedIps<Peer>();
  t.insert(parseCidr("0.0.0.0/0")!, a);
  assert.equal(lookup(t, parseAddress("::")!), undefined);
  t.insert(parseCidr("::/0")!, b);
  assert.equal(lookup(t, parseAddress("1.2.3.4")!), a);
  assert.equal(lookup(t, parseAddress("::ffff:1.2.3.4")!), b);
});

Deno.test("lookup reads the address in place and tolerates short buffers", () => {
  const a = peer("a");
  const t = new AllowedIps<Peer>();
  t.insert(parseCidr("192.0.2.0/24")!, a);
  t.insert(parseCidr("2001:db8::/32")!, a);
  // An IPv4 header with the destination at offset 16.
  const pkt = new Uint8Array(20);
  pkt.set([192, 0, 2, 77], 16);
  assert.equal(t.lookup(4, pkt, 16), a);
  assert.equal(t.lookup(4, pkt, 12), undefined);
  assert.equal(t.lookup(4, pkt, 17), undefined); // would read past the end
  assert.equal(t.lookup(6, pkt, 0), undefined);
  assert.equal(t.lookup(4, pkt, -1), undefined);
  assert.equal(t.lookup(4, pkt, NaN), undefined);
  const pkt6 = new Uint8Array(40);
  pkt6.set(parseAddress("2001:db8::1")!, 24);
  assert.equal(t.lookup(6, pkt6, 24), a);
});

Deno.test("clear and the /0 and /32 edges", () => {
  const a = peer("a"), b = peer("b");
  const t = new AllowedIps<Peer>();
  t.insert(parseCidr("0.0.0.0/0")!, a);
  t.insert(parseCidr("255.255.255.255/32")!, b);
  t.insert(parseCidr("0.0.0.0/32")!, b);
  assert.equal(lookup(t, ip4(255, 255, 255, 255)), b);
  assert.equal(lookup(t, ip4(255, 255, 255, 254)), a);
  assert.equal(lookup(t, ip4(0, 0, 0, 0)), b);
  assert.equal(lookup(t, ip4(0, 0, 0, 1)), a);
  t.clear();
  assert.equal(lookup(t, ip4(255, 255, 255, 255)), undefined);
  assert.deepEqual(t.entriesForPeer(a), []);
});

Deno.test("caller bugs throw, with the right error types", () => {
  const t = new AllowedIps<Peer>();
  assert.throws(() => t.insert({ family: 4, addr: new Uint8Array(16), prefixLen: 8 }, peer("a")), TypeError);
  assert.throws(() => t.insert({ family: 4, addr: new Uint8Array(4), prefixLen: 33 }, peer("a")), RangeError);
  assert.throws(
    () => t.insert({ family: 6, addr: new Uint8Array(16), prefixLen: -1 }, peer("a")),
    RangeError,
  );
});

// ---- Against a naive reference, like the kernel's horrible_allowedips ----

/** Mulberry32: a small seeded PRNG so that failures reproduce. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = s;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return (x ^ (x >>> 14)) >>> 0;
  };
}

interface RefEntry {
  family: Family;
  addr: Uint8Array;
  prefixLen: number;
  peer: number;
}

/** A list scanned in full for every lookup: obviously correct, and slow. */
class HorribleAllowedIps {
  entries: RefEntry[] = [];
  insert(c: Cidr, p: number): void {
    const addr = maskAddress(c.addr, c.prefixLen);
    const e = this.entries.find((x) =>
      x.family === c.family && x.prefixLen === c.prefixLen && eq(x.addr, addr)
    );
    if (e) e.peer = p;
    else this.entries.push({ family: c.family, addr, prefixLen: c.prefixLen, peer: p });
  }
  remove(c: Cidr, p: number): boolean {
    const addr = maskAddress(c.addr, c.prefixLen);
    const i = this.entries.findIndex((x) =>
      x.family === c.family && x.prefixLen === c.prefixLen && eq(x.addr, addr) && x.peer === p
    );
    if (i < 0) return false;
    this.entries.splice(i, 1);
    return true;
  }
  removeByPeer(p: number): void {
    this.entries = this.entries.filter((x) => x.peer !== p);
  }
  lookup(addr: Uint8Array): number | undefined {
    let best: RefEntry | undefined;
    const family = addr.length === 4 ? 4 : 6;
    for (const e of this.entries) {
      if (e.family !== family || (best && best.prefixLen >= e.prefixLen)) continue;
      if (prefixMatches(e.addr, addr, e.prefixLen)) best = e;
    }
    return best?.peer;
  }
  entriesFor(p: number): string[] {
    return this.entries.filter((x) => x.peer === p).map((x) => formatCidr(x)).sort();
  }
}

/** Whether the first `len` bits of `a` and `b` agree, checked bit by bit. */
function prefixMatches(a: Uint8Array, b: Uint8Array, len: number): boolean {
  for (let i = 0; i < len; i++) {
    if (((a[i >> 3]! ^ b[i >> 3]!) >> (7 - (i & 7))) & 1) return false;
  }
  return true;
}

function eq(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function randomBytes(rand: () => number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = rand() & 0xff;
  return out;
}

/** A copy of `base` whose first `keep` bits are kept and the rest random (the kernel's "mutated" routes). */
function mutate(rand: () => number, base: Uint8Array, keep: number): Uint8Array {
  const out = randomBytes(rand, base.length);
  for (let i = 0; i < base.length; i++) {
    const k = Math.max(0, Math.min(8, keep - 8 * i));
    const m = (0xff00 >> k) & 0xff;
    out[i] = (base[i]! & m) | (out[i]! & ~m & 0xff);
  }
  return out;
}

for (const family of [4, 6] as const) {
  Deno.test(`random IPv${family} prefixes agree with the naive reference`, () => {
    const rand = prng(family === 4 ? 0xc0ffee : 0xdecade);
    const bytes = family === 4 ? 4 : 16;
    const bits = bytes * 8;
    const NUM_PEERS = 50, ROUTES = 60, MUTATED = 40;
    const t = new AllowedIps<number>();
    const ref = new HorribleAllowedIps();
    const inserted: Cidr[] = [];
    for (let i = 0; i < ROUTES; i++) {
      const base = randomBytes(rand, bytes);
      for (let j = 0; j <= MUTATED; j++) {
        const addr = j === 0 ? base : mutate(rand, base, rand() % bits);
        const c: Cidr = { family, addr, prefixLen: (rand() % bits) + 1 };
        // A few short prefixes (and the default route) so that lookups of random addresses hit something.
        if (rand() % 50 === 0) (c as { prefixLen: number }).prefixLen = rand() % 9;
        const p = rand() % NUM_PEERS;
        t.insert(c, p);
        ref.insert(c, p);
        inserted.push(c);
      }
    }

    const check = (round: string, minHits: number) => {
      let hits = 0;
      for (let q = 0; q < 3000; q++) {
        // Half the queries are near inserted prefixes, half anywhere.
        const near = inserted[rand() % inserted.length]!;
        const addr = q & 1 ? randomBytes(rand, bytes) : mutate(rand, near.addr, rand() % (bits + 1));
        const got = t.lookup(family, addr, 0);
        assert.equal(
          got,
          ref.lookup(addr),
          `${round}: lookup of ${formatCidr({ family, addr, prefixLen: bits })}`,
        );
        if (got !== undefined) hits++;
      }
      // The comparison means little unless many lookups find a peer.
      assert.ok(hits >= minHits, `${round}: only ${hits} lookups matched`);
      for (let p = 0; p < NUM_PEERS; p += 7) {
        assert.deepEqual(
          t.entriesForPeer(p).map(formatCidr).sort(),
          ref.entriesFor(p),
          `${round}: peer ${p}`,
        );
      }
    };

    check("after inserts", 1000);
    // Remove single prefixes, sometimes naming the wrong peer.
    for (let i = 0; i < 300; i++) {
      const c = inserted[rand() % inserted.length]!;
      const masked = maskAddress(c.addr, c.prefixLen);
      const owner = ref.entries.find((x) => x.prefixLen === c.prefixLen && eq(x.addr, masked));
      const p = owner?.peer ?? 0;
      const who = rand() % 3 === 0 ? (p + 1) % NUM_PEERS : p;
      assert.equal(t.remove(c, who), ref.remove(c, who), `remove ${formatCidr(c)}`);
    }
    check("after removals", 1000);
    // Then peers one by one, until nothing is left.
    for (let p = 0; p < NUM_PEERS; p++) {
      t.removeByPeer(p);
      ref.removeByPeer(p);
      if (p % 10 === 9) check(`after removing peers 0..${p}`, p === NUM_PEERS - 1 ? 0 : 100);
    }
    assert.equal(ref.entries.length, 0);
    for (let q = 0; q < 200; q++) assert.equal(t.lookup(family, randomBytes(rand, bytes), 0), undefined);
  });
}

Deno.test("removeByPeer stays fast with thousands of entries", () => {
  const t = new AllowedIps<number>();
  const rand = prng(7);
  for (let i = 0; i < 20_000; i++) {
    t.insert({ family: 6, addr: randomBytes(rand, 16), prefixLen: 48 + (rand() % 81) }, i % 100);
  }
  const start = performance.now();
  for (let p = 0; p < 100; p++) t.removeByPeer(p);
  const ms = performance.now() - start;
  assert.ok(ms < 1000, `removeByPeer of 20000 entries took ${ms} ms`);
  assert.equal(t.lookup(6, randomBytes(rand, 16), 0), undefined);
});
