import assert from "node:assert/strict";
import { ConnTable } from "../../lib/conntrack.ts";
import {
  ConnStats,
  formatConnectionMetrics,
  formatConnections,
  parseConnections,
  protoName,
} from "../../lib/connstats.ts";
import { keyToHex } from "../../lib/encoding.ts";
import { formatAddress } from "../../lib/ip.ts";
import { Peer } from "../../lib/peer.ts";
import { Verdict } from "../../lib/device.ts";
import { KEY_WORDS, parseTuple, Tuple } from "../../lib/tuple.ts";
import { CONNECTIONS_REQUEST_TEXT, UapiReader } from "../../lib/uapi.ts";
import { connect, deliver, pair, peerOf, send } from "./_harness.ts";
import { echo, ipPacket, tcp, udp } from "./_packets.ts";

function key(n: number): Uint32Array {
  const k = new Uint32Array(KEY_WORDS);
  k[2] = n;
  k[11] = n * 7;
  return k;
}

Deno.test("conntrack: find, insert, least-recently-used eviction with a count", () => {
  const t = new ConnTable(3);
  const [a, b, c, d] = [1, 2, 3, 4].map(key);
  const ia = t.insert(a!), ib = t.insert(b!), ic = t.insert(c!);
  assert.deepEqual([t.find(a!), t.find(b!), t.find(c!), t.find(d!)], [ia, ib, ic, -1]);
  t.touch(ia); // b is now the least recent
  const id = t.insert(d!);
  assert.equal(t.evicted, 1);
  assert.equal(t.size, 3);
  assert.equal(id, ib, "the evicted entry's number is reused");
  assert.equal(t.find(b!), -1);
  assert.deepEqual(t.entries(), [id, ia, ic]);
});

Deno.test("conntrack: agrees with a reference model over random operations, removals included", () => {
  const cap = 64;
  const t = new ConnTable(cap);
  const model: number[] = []; // keys, most recent first
  let x = 12345;
  const rnd = (n: number) => (x = (x * 1103515245 + 12345) >>> 0) % n;
  let evicted = 0;
  for (let step = 0; step < 20000; step++) {
    const n = rnd(200);
    const k = key(n);
    const i = t.find(k);
    assert.equal(i >= 0, model.includes(n), `step ${step}`);
    if (rnd(10) === 0 && i >= 0) {
      t.remove(i, () => {});
      model.splice(model.indexOf(n), 1);
    } else if (i >= 0) {
      t.touch(i);
      model.splice(model.indexOf(n), 1);
      model.unshift(n);
    } else {
      t.insert(k);
      model.unshift(n);
      if (model.length > cap) {
        model.pop();
        evicted++;
      }
    }
  }
  assert.equal(t.evicted, evicted);
  assert.deepEqual(t.entries().map((i) => t.keys[i * KEY_WORDS + 2]), model);
});

Deno.test("conntrack: a capacity out of range is refused", () => {
  assert.throws(() => new ConnTable(0), /capacity must be 1 to/);
});

/** A and B with a session and statistics on B. */
function counted(capacity?: number) {
  const { a, b, clock } = pair();
  connect(a, b, clock);
  const stats = new ConnStats(capacity);
  b.device.hooks.push(stats);
  const fromA = (p: Uint8Array) => deliver(b, send(a, p).datagram!, a.endpoint);
  const fromB = (p: Uint8Array) => {
    const r = send(b, p);
    assert.equal(deliver(a, r.datagram!, b.endpoint), Verdict.Deliver);
  };
  return { a, b, stats, fromA, fromB };
}

Deno.test("connstats: packets and bytes per connection each way, per peer, by bytes", () => {
  const { a, b, stats, fromA, fromB } = counted();
  for (let i = 0; i < 3; i++) fromB(tcp("10.0.0.2", 40000, "10.0.0.1", 80, { payload: 100 })); // 140 bytes
  for (let i = 0; i < 2; i++) fromA(tcp("10.0.0.1", 80, "10.0.0.2", 40000, { flags: 0x10, payload: 1000 }));
  fromB(udp("fd00::2", 5353, "fd00::1", 53, { payload: 12 })); // 60 bytes
  fromB(echo("10.0.0.2", "10.0.0.1", 5));
  fromA(echo("10.0.0.1", "10.0.0.2", 5, true));
  const r = stats.report();
  assert.equal(r.connections.length, 3);
  const [top, second] = r.connections;
  assert.deepEqual(
    { ...top!, publicKey: undefined },
    {
      publicKey: undefined,
      proto: "tcp",
      local: "10.0.0.2",
      localPort: 40000,
      remote: "10.0.0.1",
      remotePort: 80,
      txPackets: 3,
      txBytes: 420,
      rxPackets: 2,
      rxBytes: 2080,
    },
  );
  assert.deepEqual(top!.publicKey, a.publicKey);
  // The ping (44 bytes each way, id 5 as both ports) before the DNS query (60 bytes out).
  assert.deepEqual([second!.proto, second!.localPort, second!.txPackets, second!.rxPackets], [
    "icmp",
    5,
    1,
    1,
  ]);
  const third = r.connections[2]!;
  assert.deepEqual([third.proto, third.local, third.localPort, third.remotePort, third.txBytes], [
    "udp",
    "fd00::2",
    5353,
    53,
    60,
  ]);
  assert.equal(r.peers.length, 1);
  assert.deepEqual([r.peers[0]!.txPackets, r.peers[0]!.rxPackets], [5, 3]);
  assert.equal(r.peers[0]!.txBytes, 420 + 60 + 44);
  // Later fragments are counted under their addresses with no ports; what names no connection only per peer.
  fromA(ipPacket("10.0.0.1", "10.0.0.2", 17, new Uint8Array(100), { fragOffset: 20, fragId: 1 }));
  const cut = tcp("10.0.0.1", 1, "10.0.0.2", 2).subarray(0, 30);
  cut[3] = 30;
  fromA(cut);
  const r2 = stats.report();
  assert.equal(r2.connections.length, 4);
  assert.ok(r2.connections.some((c) => c.proto === "udp" && c.localPort === 0 && c.rxBytes === 120));
  assert.equal(r2.peers[0]!.rxPackets, 5);
  // A removed peer goes, with its connections.
  b.device.removePeer(peerOf(b, a).publicKey);
  stats.prune();
  assert.deepEqual(stats.report(), {
    capacity: stats.table.capacity,
    evicted: 0,
    peers: [],
    connections: [],
  });
});

Deno.test("connstats: the table is bounded; the least recent connections are evicted and counted", () => {
  const { stats, fromB } = counted(8);
  for (let port = 1; port <= 20; port++) fromB(udp("10.0.0.2", port, "10.0.0.1", 53));
  fromB(udp("10.0.0.2", 20, "10.0.0.1", 53));
  const r = stats.report();
  assert.equal(r.connections.length, 8);
  assert.equal(r.evicted, 12);
  assert.deepEqual(r.connections.map((c) => c.localPort).sort((x, y) => x - y), [
    13,
    14,
    15,
    16,
    17,
    18,
    19,
    20,
  ]);
  assert.equal(r.connections[0]!.localPort, 20, "the busiest first");
  assert.equal(r.peers[0]!.txPackets, 21, "the peer's totals keep everything");
});

Deno.test("connstats: the get=connections reply round-trips; metrics list the busiest", () => {
  const { stats, fromA, fromB } = counted();
  fromB(tcp("10.0.0.2", 40000, "10.0.0.1", 80, { payload: 100 }));
  fromA(udp("fd00::1", 9, "fd00::2", 9, { payload: 10 }));
  const report = stats.report();
  const filters = [{
    publicKey: report.peers[0]!.publicKey,
    allowInbound: "tcp/22,icmp",
    allowOutbound: "any",
    droppedInbound: 4,
    droppedOutbound: 0,
  }];
  const text = formatConnections({ statistics: report, filters }) + "errno=0\n\n";
  assert.match(
    text,
    /^statistics=on\nconnection_capacity=4096\nconnections_evicted=0\npublic_key=[0-9a-f]{64}\n/,
  );
  assert.match(text, /connection=tcp 10\.0\.0\.2 40000 10\.0\.0\.1 80 1 140 0 0\n/);
  assert.match(text, /connection=udp fd00::2 9 fd00::1 9 0 0 1 58\n/);
  assert.deepEqual(parseConnections(text), { statistics: report, filters });
  assert.deepEqual(parseConnections("statistics=off\nerrno=0\n\n"), { statistics: null, filters: [] });
  assert.throws(() => parseConnections("statistics=on\n"), /no errno line/);
  const metrics = formatConnectionMetrics("wg0", report, 1);
  assert.match(metrics, /typetun_connections\{interface="wg0"\} 2\n/);
  assert.match(
    metrics,
    /typetun_connection_sent_bytes_total\{interface="wg0",public_key="[^"]+",protocol="tcp",local="10\.0\.0\.2:40000",remote="10\.0\.0\.1:80"\} 140\n/,
  );
  assert.doesNotMatch(metrics, /protocol="udp"/, "only the top 1");
});

Deno.test("uapi: get=connections is framed as its own request, split anywhere, between standard ones", () => {
  const stream = "get=1\n\n" + CONNECTIONS_REQUEST_TEXT + "set=1\nlisten_port=1\n\n" +
    CONNECTIONS_REQUEST_TEXT;
  for (let cut = 0; cut <= stream.length; cut++) {
    const r = new UapiReader();
    const reqs = [...r.push(stream.slice(0, cut)), ...r.push(stream.slice(cut))];
    assert.deepEqual(reqs.map((q) => q.op), ["get", "connections", "set", "connections"], `cut ${cut}`);
  }
  const bad = new UapiReader().push("get=connectionz\n\n");
  assert.equal(bad[0]!.op, "error");
});

// ---- The fast path: recent connections compared by their header bytes (lib/connstats.ts LastFlow) ----

/** A connection's text as the report gives it, for comparing with a model. */
function recordText(c: { publicKey: Uint8Array; proto: string; local: string; localPort: number }) {
  const r = c as unknown as Record<string, unknown>;
  return `${keyToHex(c.publicKey)} ${c.proto} ${c.local} ${c.localPort} ${r.remote} ${r.remotePort}`;
}

/** The words of an address in a Tuple as bytes. */
function addressBytes(family: number, w: Uint32Array): Uint8Array {
  const b = new Uint8Array(family === 4 ? 4 : 16);
  for (let i = 0; i < b.length; i++) b[i] = (w[i >> 2]! >>> (24 - 8 * (i & 3))) & 0xff;
  return b;
}

/**
 * The statistics as parseTuple defines them, with no cache: a least-recently-used map of connection texts (a
 * Map keeps insertion order, so re-inserting marks the most recent), capacity `cap`.
 */
class Model {
  readonly conns = new Map<string, number[]>();
  readonly peers = new Map<string, number[]>();
  evicted = 0;
  readonly #t = new Tuple();
  constructor(readonly cap: number) {}

  count(peer: Peer, buf: Uint8Array, off: number, len: number, out: boolean) {
    const slot = out ? 0 : 2;
    const hex = keyToHex(peer.publicKey);
    const pc = this.peers.get(hex) ?? [0, 0, 0, 0];
    this.peers.set(hex, pc);
    pc[slot]!++;
    pc[slot + 1]! += len;
    const t = this.#t;
    if (!parseTuple(t, buf, off, len)) return;
    const [l, r] = out ? [t.src, t.dst] : [t.dst, t.src];
    const [lp, rp] = out ? [t.srcPort, t.dstPort] : [t.dstPort, t.srcPort];
    const text = `${hex} ${protoName(t.proto)} ${formatAddress(addressBytes(t.family, l))} ${lp} ${
      formatAddress(addressBytes(t.family, r))
    } ${rp}`;
    let c = this.conns.get(text);
    if (c) this.conns.delete(text);
    else {
      c = [0, 0, 0, 0];
      if (this.conns.size === this.cap) {
        this.conns.delete(this.conns.keys().next().value!);
        this.evicted++;
      }
    }
    this.conns.set(text, c);
    c[slot]!++;
    c[slot + 1]! += len;
  }
}

function assertSameAsModel(stats: ConnStats, model: Model, what: string) {
  const r = stats.report();
  assert.equal(r.evicted, model.evicted, `${what}: evicted`);
  const got = new Map(
    r.connections.map((c) => [recordText(c), [c.txPackets, c.txBytes, c.rxPackets, c.rxBytes]]),
  );
  assert.deepEqual(got, new Map([...model.conns].sort()), `${what}: connections`);
  // The table's recency order is the model's.
  const recent = stats.table.entries().length;
  assert.equal(recent, model.conns.size, `${what}: entries`);
  const peers = new Map(
    r.peers.map((p) => [keyToHex(p.publicKey), [p.txPackets, p.txBytes, p.rxPackets, p.rxBytes]]),
  );
  assert.deepEqual(peers, model.peers, `${what}: peers`);
}

/** Two peers, a hook, and a model fed the same packets; each packet is copied to `at` in a dirty buffer. */
function modelled(capacity: number) {
  const peers = [new Peer(new Uint8Array(32).fill(1)), new Peer(new Uint8Array(32).fill(2))];
  const stats = new ConnStats(capacity);
  const model = new Model(capacity);
  const buf = new Uint8Array(2048).fill(0xee);
  const feed = (peer: Peer, p: Uint8Array, out: boolean, at = 16, len = p.length) => {
    buf.set(p, at);
    if (out) stats.outbound(peer, buf, at, len);
    else stats.inbound(peer, buf, at, len);
    model.count(peer, buf, at, len, out);
  };
  return { peers, stats, model, feed };
}

Deno.test("connstats fast path: interleaved flows and a flow that switches peer count as with no cache", () => {
  const { peers: [p, q], stats, model, feed } = modelled(64);
  // Ports 1000 and 1256 share a cache place (the same low bytes); 1001 has another.
  const flows = [
    tcp("10.0.0.2", 1000, "10.0.0.1", 80, { flags: 0x10, payload: 1000 }),
    tcp("10.0.0.2", 1256, "10.0.0.1", 80, { flags: 0x10, payload: 1000 }),
    udp("fd00::2", 1001, "fd00::1", 80, { payload: 500 }),
    tcp("fd00::2", 1000, "fd00::1", 80, { flags: 0x10, payload: 10 }),
  ];
  for (let round = 0; round < 5; round++) {
    for (const f of flows) {
      feed(p!, f, true);
      feed(p!, f, true);
      feed(p!, f, false); // the same bytes inbound: another connection (local and remote swap)
    }
  }
  // The same packets from the other peer are that peer's connections, though the bytes are the cached ones.
  for (const f of flows) feed(q!, f, true);
  feed(p!, flows[0]!, true);
  assertSameAsModel(stats, model, "interleaved");
  assert.equal(stats.report().connections.length, 12);
  const top = stats.report().connections.find((c) =>
    c.localPort === 1000 && c.local === "10.0.0.2" && keyToHex(c.publicKey) === keyToHex(p!.publicKey)
  )!;
  assert.deepEqual([top.txPackets, top.txBytes], [11, 11 * 1040]);
});

Deno.test("connstats fast path: a cached connection evicted and its entry reused counts into no other", () => {
  const { peers: [p], stats, model, feed } = modelled(2);
  const a = tcp("10.0.0.2", 1000, "10.0.0.1", 80, { flags: 0x10, payload: 100 });
  const b = udp("10.0.0.2", 2000, "10.0.0.1", 53);
  const c = udp("10.0.0.2", 3000, "10.0.0.1", 53);
  feed(p!, a, true); // a cached outbound
  feed(p!, b, false);
  feed(p!, c, false); // evicts a; c takes its entry
  feed(p!, a, true); // must not count into c's entry: a is new again (and evicts b)
  feed(p!, a, true);
  assertSameAsModel(stats, model, "evicted");
  const r = stats.report();
  assert.equal(r.evicted, 2);
  assert.deepEqual(
    r.connections.map((x) => [x.localPort, x.remotePort, x.txPackets, x.rxPackets]),
    [[1000, 80, 2, 0], [53, 3000, 0, 1]],
  );
  // A removed peer's connections go: the entries move, and the cache must not follow them.
  const { peers: [p1, p2], stats: s2, model: m2, feed: f2 } = modelled(8);
  f2(p1!, a, true);
  f2(p2!, b, true);
  f2(p2!, c, true);
  p1!.dead = true;
  s2.prune();
  m2.peers.delete(keyToHex(p1!.publicKey));
  for (const k of [...m2.conns.keys()]) if (k.startsWith(keyToHex(p1!.publicKey))) m2.conns.delete(k);
  f2(p2!, c, true);
  f2(p2!, b, true);
  assertSameAsModel(s2, m2, "pruned");
});

Deno.test("connstats fast path: random packets, shapes and lengths agree with parsing every packet", () => {
  const { peers, stats, model, feed } = modelled(6);
  let x = 4242;
  const rnd = (n: number) => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 16) % n;
  const hosts = [["10.0.0.2", "10.0.0.1"], ["fd00::2", "fd00::1"]];
  for (let step = 0; step < 6000; step++) {
    const [l, r] = hosts[rnd(2)]!;
    const port = [1000, 1256, 1001, 2000, 2512, 3003, 4004, 5005][rnd(8)]!;
    const kind = rnd(12);
    let p: Uint8Array;
    if (kind === 0) p = udp(l!, port, r!, 53, { fragOffset: 0, moreFragments: true, fragId: 7 });
    else if (kind === 1) p = udp(l!, port, r!, 53, { fragOffset: 10, fragId: 7 });
    else if (kind === 2) p = echo(l!, r!, port);
    else if (kind < 7) p = udp(l!, port, r!, 53, { payload: rnd(40) });
    else p = tcp(l!, port, r!, 443, { flags: 0x10, payload: rnd(40) });
    if (p[0] === 0x45 && rnd(4) === 0) p[6] |= 0x40; // don't fragment: still a whole datagram
    if (p[0] === 0x45 && rnd(8) === 0) {
      // IP options: the ports move 4 bytes on, and the bytes where they were are an option's.
      const o = new Uint8Array(p.length + 4);
      o.set(p.subarray(0, 20));
      o.set([1, 1, 1, 0], 20);
      o.set(p.subarray(20), 24);
      o[0] = 0x46;
      o[2] = o.length >> 8;
      o[3] = o.length & 0xff;
      p = o;
    }
    let len = p.length;
    const cut = rnd(10);
    if (cut === 0) len = 20 + rnd(p.length - 19); // the packet's length short, the buffer still has the rest
    else if (cut === 1 && p[0] === 0x45) p[3] = 20 + rnd(p.length - 19); // the IP length short
    else if (cut === 2 && p[0]! >> 4 === 6) p[5] = rnd(p.length - 39);
    feed(peers[rnd(2)]!, p, rnd(2) === 0, 16 + rnd(3), len);
    if (step % 500 === 499) assertSameAsModel(stats, model, `step ${step}`);
  }
  assert.ok(model.evicted > 100, "the table was full and evicted along the way");
});
