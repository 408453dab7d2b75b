import assert from "node:assert/strict";
import { Verdict } from "../../lib/device.ts";
import { deliver, ipv4Packet, ipv6Packet, pair, pump, send, type Side } from "./_harness.ts";
import { parseIPv6 } from "../../lib/ip.ts";

const payload = (n: number, fill = 0xab) => new Uint8Array(n).fill(fill);

/** A sends one packet to B through whatever handshake is needed; returns what B's TUN got. */
function exchange(from: Side, to: Side, packet: Uint8Array): void {
  const r = send(from, packet);
  if (r.datagram) deliver(to, r.datagram, from.endpoint);
  pump(from, to);
}

Deno.test("handshake and data both ways, A initiating", () => {
  const { a, b } = pair();
  const p1 = ipv4Packet("10.0.0.1", "10.0.0.2", payload(100));
  assert.equal(send(a, p1).verdict, Verdict.Queued);
  assert.equal(a.device.outbox.length, 1, "an initiation is sent");
  assert.equal(a.device.outbox[0]!.data.length, 148);
  pump(a, b);
  assert.deepEqual(b.delivered, [p1], "the staged packet arrives after the handshake");
  const p2 = ipv4Packet("10.0.0.2", "10.0.0.1", payload(33, 1));
  exchange(b, a, p2);
  assert.deepEqual(a.delivered, [p2]);
  const p3 = ipv6Packet(parseIPv6("fd00::1")!, parseIPv6("fd00::2")!, payload(1380, 7));
  exchange(a, b, p3);
  assert.deepEqual(b.delivered[1], p3);
});
