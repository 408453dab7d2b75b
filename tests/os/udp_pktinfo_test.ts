/**
 * Sticky source addresses through GroRecvBatch and GsoSendBatch (IP_PKTINFO, IPV6_PKTINFO) on loopback: a
 * receive reports the local address a datagram was sent to, a send from a given local address leaves from it
 * (grouped into GSO messages by source as well as destination), and a source that is not ours is dropped: the
 * datagrams still go, from the address routing picks, and the owner is told once per message.
 */
import assert from "node:assert/strict";
import { GroRecvBatch, GsoSendBatch, UdpBind, type UdpSocket } from "../../ffi/udp.ts";
import { POLLIN, PollSet } from "../../ffi/poll.ts";
import { isRoot } from "./_helpers.ts";

const ignore = !isRoot;
const V4 = (...b: number[]) => new Uint8Array(b);
const LOOP4 = V4(127, 0, 0, 1);
/** 127.0.0.0/8 is all on lo: a second local address without setting anything up. */
const SECOND4 = V4(127, 0, 0, 2);
/** TEST-NET-1 and the IPv6 documentation prefix: never a local address here. */
const FOREIGN4 = V4(192, 0, 2, 77);
const LOOP6 = new Uint8Array(16).fill(0, 0, 15).map((_, i) => (i === 15 ? 1 : 0));
const FOREIGN6 = new Uint8Array([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x77]);

interface Got {
  from: string;
  local: string;
  ifindex: number;
  len: number;
}

/** Receives until `want` datagrams arrived (bounded by 100 polls of 20 ms). */
function receive(socket: UdpSocket, want: number): Got[] {
  const batch = new GroRecvBatch(8, 65536);
  const set = new PollSet(1);
  set.add(socket.fd, POLLIN);
  const out: Got[] = [];
  for (let round = 0; round < 100 && out.length < want; round++) {
    set.poll(20);
    const n = batch.recv(socket);
    for (let i = 0; i < n; i++) {
      out.push({
        from: batch.address(i).join("."),
        local: batch.local(i).join("."),
        ifindex: batch.ifindex(i),
        len: batch.length(i),
      });
    }
  }
  return out;
}

function put(
  batch: GsoSendBatch,
  len: number,
  to: Uint8Array,
  port: number,
  local?: Uint8Array,
  owner?: object,
) {
  batch.data.fill(0x5a, batch.cursor, batch.cursor + len);
  batch.push(len, to.length === 4 ? 4 : 6, to, port, local, 1, owner ?? null);
}

for (const offloads of [{}, { gso: true, gro: true }]) {
  const mode = "gso" in offloads ? "GSO on" : "offloads off";

  Deno.test({ name: `${mode}: a receive tells the local address, a reply leaves from it`, ignore }, () => {
    const server = UdpBind.open(0, 0, offloads);
    const client = UdpBind.open(0, 0, offloads);
    try {
      assert.ok(server.v4!.pktinfo && server.v6!.pktinfo, "PKTINFO is on for both sockets");
      const batch = new GsoSendBatch(8, 65536);
      put(batch, 100, SECOND4, server.port);
      put(batch, 100, LOOP6, server.port);
      assert.equal(batch.send(client), 2);
      const got4 = receive(server.v4!, 1);
      const got6 = receive(server.v6!, 1);
      assert.deepEqual(got4.map((g) => [g.from, g.local]), [["127.0.0.1", "127.0.0.2"]]);
      assert.ok(got4[0]!.ifindex > 0, "the interface is reported");
      assert.deepEqual(got6.map((g) => [g.from, g.local]), [[LOOP6.join("."), LOOP6.join(".")]]);

      // Three replies from the second address make one GSO message; one without a source another.
      put(batch, 200, LOOP4, client.port, SECOND4);
      put(batch, 200, LOOP4, client.port, SECOND4);
      put(batch, 150, LOOP4, client.port, SECOND4);
      put(batch, 200, LOOP4, client.port);
      assert.equal(batch.messages, 2, "grouped by destination and source");
      assert.equal(batch.send(server), 4);
      const replies = receive(client.v4!, 4);
      assert.deepEqual(replies.map((g) => [g.from, g.len]), [
        ["127.0.0.2", 200],
        ["127.0.0.2", 200],
        ["127.0.0.2", 150],
        ["127.0.0.1", 200],
      ]);
    } finally {
      server.close();
      client.close();
    }
  });

  Deno.test({
    name: `${mode}: a source that is not ours is dropped, told once, and the datagrams go`,
    ignore,
  }, () => {
    const server = UdpBind.open(0, 0, offloads);
    const client = UdpBind.open(0, 0, offloads);
    try {
      const batch = new GsoSendBatch(8, 65536);
      const told: object[] = [];
      batch.onSourceGone = (o) => told.push(o);
      const a = { peer: "a" }, b = { peer: "b" }, c = { peer: "c" };
      put(batch, 300, LOOP4, client.port, FOREIGN4, a);
      put(batch, 300, LOOP4, client.port, FOREIGN4, a);
      put(batch, 300, LOOP4, client.port, SECOND4, b);
      put(batch, 300, LOOP6, client.port, FOREIGN6, c);
      assert.equal(batch.send(server), 4);
      assert.deepEqual(told, [a, c]);
      assert.equal(batch.sourceRefusals, 2);
      const got4 = receive(client.v4!, 3);
      assert.deepEqual(got4.map((g) => g.from), ["127.0.0.1", "127.0.0.1", "127.0.0.2"]);
      const got6 = receive(client.v6!, 1);
      assert.deepEqual(got6.map((g) => g.from), [LOOP6.join(".")]);
    } finally {
      server.close();
      client.close();
    }
  });
}
