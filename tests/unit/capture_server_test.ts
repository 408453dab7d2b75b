/**
 * The capture server (cmd/capture_server.ts) on sockets in /tmp, against a stand-in data plane: no root, no
 * daemon. Its hook and tap exist only while someone captures; a capture gets the packets the hook sees on its
 * peer's interface with their direction, then the statistics; requests it cannot serve are refused in words.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { capturePath, CaptureServer, parseCaptureRequest } from "../../cmd/capture_server.ts";
import type { DataPlane } from "../../cmd/dataplane.ts";
import { Level, Logger } from "../../cmd/log.ts";
import type { PacketHook } from "../../lib/device.ts";
import { keyToBase64 } from "../../lib/encoding.ts";
import { Endpoint } from "../../lib/ip.ts";
import { Peer } from "../../lib/peer.ts";
import { capture } from "./_capture.ts";
import {
  BLOCK_EPB,
  BLOCK_IDB,
  BLOCK_ISB,
  INBOUND,
  ISB_OSDROP,
  optionInt64,
  OUTBOUND,
  readBlocks,
  readEnhancedPacket,
  readInterfaceDescription,
  readOptions,
} from "../../lib/pcapng.ts";

Deno.test("parseCaptureRequest: options, and what is refused", () => {
  const key = keyToBase64(new Uint8Array(32).fill(7));
  const t = "0123456789abcdef";
  assert.deepEqual(parseCaptureRequest(`capture outer peer=${key} data=/tmp/x token=${t}`), {
    outer: true,
    peer: new Uint8Array(32).fill(7),
    data: "/tmp/x",
    token: t,
  });
  assert.match(parseCaptureRequest("get=1") as string, /not a capture request/);
  assert.match(parseCaptureRequest(`capture peer=nope data=/x token=${t}`) as string, /not a public key/);
  assert.match(
    parseCaptureRequest(`capture fast data=/x token=${t}`) as string,
    /unknown capture option "fast"/,
  );
  assert.match(parseCaptureRequest("capture") as string, /needs data=PATH and token=HEX/);
});

/** A stand-in for the DataPlane: the few fields the server touches. */
function fakeLoop(peers: Peer[]) {
  return {
    device: {
      hooks: [] as PacketHook[],
      peers: new Map(peers.map((p, i) => [String(i), p])),
      listenPort: 51820,
    },
    tap: null as unknown,
  };
}

Deno.test("CaptureServer: hook and tap only while capturing; packets on their peer's interface, then statistics", async () => {
  const dir = mkdtempSync("/tmp/typetun-capture-unit-");
  const a = new Peer(new Uint8Array(32).fill(1)), b = new Peer(new Uint8Array(32).fill(2));
  b.endpoint = new Endpoint(4, Uint8Array.of(192, 0, 2, 2), 51821);
  const loop = fakeLoop([a, b]);
  const server = await CaptureServer.listen(
    capturePath("tt0", dir),
    loop as unknown as DataPlane,
    "tt0",
    0,
    new Logger(Level.Silent, "test"),
  );
  try {
    assert.equal(loop.device.hooks.length, 0, "nothing installed while nobody captures");
    assert.equal(loop.tap, null);
    const c = await capture(server.path, dir, ` peer=${keyToBase64(b.publicKey)}`);
    assert.equal(c.reply(), "ok\n");
    assert.deepEqual(loop.device.hooks, [server]);
    assert.equal(loop.tap, null, "no tap without outer");

    const ping = Uint8Array.of(0x45, 0, 0, 20, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2);
    const buf = new Uint8Array(100);
    buf.set(ping, 30);
    assert.equal(server.outbound(b, buf, 30, 20), true, "a capture lets every packet through");
    assert.equal(server.inbound(b, buf, 30, 20), true);
    assert.equal(server.outbound(a, buf, 30, 20), true); // another peer: filtered out by --peer
    const stream = await c.stop();
    assert.equal(loop.device.hooks.length, 0, "removed when the capture ends");

    // The token's line, then pcapng.
    const nl = stream.indexOf(10);
    assert.equal(new TextDecoder().decode(stream.subarray(0, nl)), "00112233445566778899");
    const blocks = readBlocks(stream.subarray(nl + 1));
    const names = blocks.filter((x) => x.type === BLOCK_IDB).map((x) =>
      readInterfaceDescription(x.body).name
    );
    assert.deepEqual(names, ["tt0", keyToBase64(b.publicKey)]);
    const packets = blocks.filter((x) => x.type === BLOCK_EPB).map((x) => readEnhancedPacket(x.body));
    assert.deepEqual(packets.map((p) => [p.iface, p.direction]), [[1, OUTBOUND], [1, INBOUND]]);
    assert.deepEqual(packets[0]!.data.subarray(20), ping, "the IP packet after the SLL2 header");
    const isb = blocks.at(-1)!;
    assert.equal(isb.type, BLOCK_ISB);
    assert.equal(optionInt64(readOptions(isb.body, 12).get(ISB_OSDROP)![0]!), 0);

    // --outer installs the tap; a datagram from b's endpoint lands on b's interface with IP/UDP headers.
    const o = await capture(server.path, dir, " outer");
    assert.equal(loop.tap, server);
    server.received(buf, 30, 20, { addr: Uint8Array.of(192, 0, 2, 2), port: 51821 });
    const outer = await o.stop();
    assert.equal(loop.tap, null);
    const op = readBlocks(outer.subarray(outer.indexOf(10) + 1)).filter((x) => x.type === BLOCK_EPB).map((
      x,
    ) => readEnhancedPacket(x.body));
    assert.equal(op.length, 1);
    assert.equal(op[0]!.iface, 2, "b is the second peer declared (after a)");
    assert.deepEqual(
      Array.from(op[0]!.data.subarray(20 + 12, 20 + 16)),
      [192, 0, 2, 2],
      "source: b's endpoint",
    );
    assert.equal((op[0]!.data[20 + 22]! << 8) | op[0]!.data[20 + 23]!, 51820, "to our listen port");
    assert.deepEqual(op[0]!.data.subarray(20 + 28), ping, "the datagram after IP and UDP headers");

    // Refusals say why.
    const bad = await capture(server.path, dir, ` peer=${keyToBase64(new Uint8Array(32).fill(9))}`);
    await bad.closed;
    assert.match(bad.reply(), /^error: tt0 has no peer /);
    const nowhere = connect(server.path);
    let r = "";
    nowhere.on("data", (d) => (r += d.toString()));
    nowhere.write(`capture data=${dir}/missing.sock token=0011223344556677\n`);
    await new Promise((res) => nowhere.on("close", res));
    assert.match(r, /^error: cannot connect to the capture's data socket/);
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
