import assert from "node:assert/strict";
import { ConnTable } from "../../lib/conntrack.ts";
import {
  ConnStats,
  formatConnectionMetrics,
  formatConnections,
  parseConnections,
} from "../../lib/connstats.ts";
import { Verdict } from "../../lib/device.ts";
import { KEY_WORDS } from "../../lib/tuple.ts";
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
