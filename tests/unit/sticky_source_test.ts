/**
 * Sticky source addresses in the sans-I/O core: the peer's endpoint remembers the local address (and
 * interface) its authenticated datagrams arrived at, the datagrams sent to it name that source, a datagram
 * that does not say where it arrived changes nothing, and a forgotten source comes back with the next one.
 */
import assert from "node:assert/strict";
import { Verdict } from "../../lib/device.ts";
import { Endpoint, NO_ADDRESS, parseIPv6 } from "../../lib/ip.ts";
import type { Source } from "../../lib/cookie.ts";
import { connect, deliver, drain, packetAB, packetBA, pair, peerOf, send } from "./_harness.ts";

const at = (ep: Endpoint, local: number[], ifindex: number): Source => ({
  addr: ep.addr,
  port: ep.port,
  local: new Uint8Array(local),
  ifindex,
});

Deno.test("sticky source: the endpoint keeps the address the peer wrote to, and replies name it", () => {
  const { a, b, clock } = pair();
  connect(a, b, clock);
  const peer = peerOf(a, b);
  assert.equal(peer.endpoint!.local.length, 0, "a configured endpoint has no source");

  // B writes to A's second address, 192.0.2.11, on interface 3.
  assert.equal(
    deliver(a, send(b, packetBA(1)).datagram!, at(b.endpoint, [192, 0, 2, 11], 3) as Endpoint),
    Verdict.Deliver,
  );
  assert.deepEqual([...peer.endpoint!.local], [192, 0, 2, 11]);
  assert.equal(peer.endpoint!.ifindex, 3);
  assert.equal(peer.endpoint!.toString(), "192.0.2.2:2000", "the remote end is unchanged");
  assert.equal(send(a, packetAB(2)).verdict, Verdict.Send);
  assert.deepEqual([...a.device.out.endpoint!.local], [192, 0, 2, 11], "A's reply leaves from it");

  // A datagram that does not know where it arrived (an in-memory transport) leaves it.
  const kept = peer.endpoint;
  assert.equal(deliver(a, send(b, packetBA(3)).datagram!, b.endpoint), Verdict.Deliver);
  assert.equal(peer.endpoint, kept);
  // The same source again allocates nothing new.
  assert.equal(
    deliver(a, send(b, packetBA(4)).datagram!, at(b.endpoint, [192, 0, 2, 11], 3) as Endpoint),
    Verdict.Deliver,
  );
  assert.equal(peer.endpoint, kept);

  // B now writes to the first address: the source follows.
  assert.equal(
    deliver(a, send(b, packetBA(5)).datagram!, at(b.endpoint, [192, 0, 2, 1], 3) as Endpoint),
    Verdict.Deliver,
  );
  assert.deepEqual([...peer.endpoint!.local], [192, 0, 2, 1]);

  // The transport found the address gone: forgotten, until B's next datagram.
  peer.endpoint!.clearLocal();
  assert.equal(peer.endpoint!.local, NO_ADDRESS);
  assert.equal(peer.endpoint!.ifindex, 0);
  assert.equal(
    deliver(a, send(b, packetBA(6)).datagram!, at(b.endpoint, [192, 0, 2, 1], 3) as Endpoint),
    Verdict.Deliver,
  );
  assert.deepEqual([...peer.endpoint!.local], [192, 0, 2, 1]);

  // A forged datagram moves nothing.
  const forged = send(b, packetBA(7)).datagram!;
  forged[forged.length - 1]! ^= 1;
  assert.equal(deliver(a, forged, at(b.endpoint, [192, 0, 2, 99], 3) as Endpoint), Verdict.DropDecrypt);
  assert.deepEqual([...peer.endpoint!.local], [192, 0, 2, 1]);
});

Deno.test("sticky source: a handshake sets it too (IPv6), and the response goes from it", () => {
  const { a, b } = pair();
  const v6 = new Endpoint(6, parseIPv6("2001:db8::2")!, 2000);
  const local = [...parseIPv6("2001:db8::11")!];
  b.device.sendInitiation(peerOf(b, a), false);
  const [init] = drain(b);
  assert.equal(deliver(a, init!, at(v6, local, 5) as Endpoint), Verdict.Handled);
  const ep = peerOf(a, b).endpoint!;
  assert.equal(ep.toString(), "[2001:db8::2]:2000");
  assert.deepEqual([...ep.local], local);
  assert.equal(ep.ifindex, 5);
});

Deno.test("Endpoint: a source of the other family is ignored; sameLocal compares address and interface", () => {
  const ep = new Endpoint(4, new Uint8Array([192, 0, 2, 2]), 1, parseIPv6("::1")!, 2);
  assert.equal(ep.local.length, 0);
  assert.equal(ep.ifindex, 0);
  const s = new Endpoint(4, new Uint8Array([192, 0, 2, 2]), 1, new Uint8Array([10, 0, 0, 1]), 2);
  assert.ok(s.sameLocal(new Uint8Array([10, 0, 0, 1]), 2));
  assert.ok(!s.sameLocal(new Uint8Array([10, 0, 0, 1]), 3));
  assert.ok(!s.sameLocal(new Uint8Array([10, 0, 0, 2]), 2));
  assert.ok(s.sameLocal(undefined, undefined));
  assert.ok(s.sameLocal(NO_ADDRESS, 0));
});
