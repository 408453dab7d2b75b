import assert from "node:assert/strict";
import { connectionCapacityFromEnv, Connections, formatConnectionTable } from "../../cmd/connections.ts";
import { type PacketHook, Verdict } from "../../lib/device.ts";
import { parseRules } from "../../lib/filter.ts";
import { parseConnections } from "../../lib/connstats.ts";
import { connect, deliver, pair, send } from "./_harness.ts";
import { tcp } from "./_packets.ts";

Deno.test("TYPETUN_CONNECTIONS: on by default, off, or a capacity; anything else is refused", () => {
  assert.equal(connectionCapacityFromEnv(undefined), 4096);
  assert.equal(connectionCapacityFromEnv("on"), 4096);
  assert.equal(connectionCapacityFromEnv("off"), 0);
  assert.equal(connectionCapacityFromEnv("0"), 0);
  assert.equal(connectionCapacityFromEnv("100000"), 100000);
  for (const bad of ["8", "-1", "lots", "1e5"]) {
    assert.throws(() => connectionCapacityFromEnv(bad), /TYPETUN_CONNECTIONS must be on, off, or a capacity/);
  }
});

Deno.test("daemon wiring: the filter hook is installed only while a peer has rules; other hooks stay", () => {
  const { a, b, clock } = pair();
  connect(a, b, clock);
  const other: PacketHook = { outbound: () => true, inbound: () => true };
  b.device.hooks.push(other);
  const c = new Connections(b.device, 0);
  assert.deepEqual(b.device.hooks, [other], "statistics off, no rules: only the other hook");
  const update = (inbound: string | undefined) => ({
    replacePeers: false,
    peers: [{
      publicKey: a.publicKey,
      remove: false,
      updateOnly: true,
      replaceAllowedIps: false,
      allowedIps: [],
      ...(inbound === undefined ? {} : { allowInbound: parseRules(inbound) }),
    }],
  });
  b.device.apply(update("tcp/22"));
  c.applied(update("tcp/22"));
  assert.deepEqual(b.device.hooks, [c.filter, other]);
  const verdict = (port: number) =>
    deliver(b, send(a, tcp("10.0.0.1", 1000, "10.0.0.2", port)).datagram!, a.endpoint);
  assert.equal(verdict(22), Verdict.Deliver);
  assert.equal(verdict(23), Verdict.DropFiltered);
  const reply = parseConnections(c.reply() + "errno=0\n\n");
  assert.deepEqual(reply.filters.map((f) => [f.allowInbound, f.allowOutbound, f.droppedInbound]), [[
    "tcp/22",
    "any",
    1,
  ]]);
  assert.equal(reply.statistics, null);
  assert.match(
    formatConnectionTable(reply),
    /statistics: off[^]*inbound tcp\/22 \(1 dropped\), outbound any/,
  );
  // A set without filter keys keeps the rules; `any` both ways removes the filter and its hook.
  c.applied(update(undefined));
  assert.deepEqual(b.device.hooks, [c.filter, other]);
  c.applied(update("any"));
  assert.deepEqual(b.device.hooks, [other]);
  // With statistics, the removed peer's rules and counts go with it.
  const s = new Connections(b.device, 64);
  assert.deepEqual(b.device.hooks, [s.stats, other]);
  b.device.apply(update("tcp/22"));
  s.applied(update("tcp/22"));
  verdict(22);
  assert.equal(s.report().statistics!.connections.length, 1);
  b.device.apply({ replacePeers: true, peers: [] });
  s.applied({ replacePeers: true, peers: [] });
  assert.deepEqual(b.device.hooks, [s.stats, other]);
  assert.deepEqual(s.report(), {
    statistics: { capacity: 64, evicted: 0, peers: [], connections: [] },
    filters: [],
  });
});
