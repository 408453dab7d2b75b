/**
 * `typetun demo`: shows a tunnel working. This in-process version runs two devices back to back in memory
 * (no root needed): a handshake, encrypted packets both ways, and what each side saw.
 * @module
 */
import process from "node:process";
import { performance } from "node:perf_hooks";
import { dhGenerate, dhPublic } from "../lib/crypto.ts";
import { type Clock, Device, Verdict } from "../lib/device.ts";
import { Endpoint, parseCidr } from "../lib/ip.ts";
import { DATA_HEADER_LEN } from "../lib/messages.ts";
import { keyToBase64 } from "../lib/uapi.ts";
import { systemRng } from "./keys.ts";

const clock: Clock = { now: () => performance.now(), wall: () => Date.now() };

function say(line: string): void {
  process.stdout.write(line + "\n");
}

interface Node {
  name: string;
  device: Device;
  endpoint: Endpoint;
  publicKey: Uint8Array;
}

function makeNode(name: string, last: number): Node {
  const device = new Device({ clock, rng: systemRng });
  const key = dhGenerate(systemRng);
  device.setPrivateKey(key);
  return {
    name,
    device,
    endpoint: new Endpoint(4, new Uint8Array([192, 0, 2, last]), 51820),
    publicKey: dhPublic(key),
  };
}

function peerWith(x: Node, y: Node, allowed: string): void {
  x.device.apply({
    replacePeers: false,
    peers: [{
      publicKey: y.publicKey,
      remove: false,
      updateOnly: false,
      endpoint: y.endpoint,
      replaceAllowedIps: true,
      allowedIps: [parseCidr(allowed)!],
    }],
  });
}

/** Carries every queued datagram across; returns how many handshake messages moved. */
function carry(x: Node, y: Node): number {
  let handshakes = 0;
  for (let round = 0; round < 10; round++) {
    let moved = 0;
    for (const [from, to] of [[x, y], [y, x]] as const) {
      for (const d of from.device.outbox.splice(0)) {
        moved++;
        if (d.data[0] !== 4) handshakes++;
        to.device.handleDatagram(d.data, 0, d.data.length, from.endpoint);
      }
    }
    if (!moved) break;
  }
  return handshakes;
}

/** An IPv4/UDP-shaped packet of `size` bytes from `src` to `dst`. */
function packet(buf: Uint8Array, off: number, size: number, src: number, dst: number): void {
  buf.fill(0, off, off + size);
  buf[off] = 0x45;
  buf[off + 2] = size >> 8;
  buf[off + 3] = size & 0xff;
  buf[off + 9] = 17;
  buf.set([10, 0, 0, src], off + 12);
  buf.set([10, 0, 0, dst], off + 16);
}

export function inProcessDemo(): number {
  const a = makeNode("alice", 1);
  const b = makeNode("bob", 2);
  peerWith(a, b, "10.0.0.2/32");
  peerWith(b, a, "10.0.0.1/32");
  say(
    `typetun demo (in process): alice ${keyToBase64(a.publicKey).slice(0, 8)}… ↔ bob ${
      keyToBase64(b.publicKey).slice(0, 8)
    }…`,
  );

  const buf = new Uint8Array(DATA_HEADER_LEN + 1500 + 32);
  const t0 = performance.now();
  packet(buf, DATA_HEADER_LEN, 84, 1, 2);
  if (a.device.handlePlaintext(buf, DATA_HEADER_LEN, 84) !== Verdict.Queued) {
    throw new Error("expected a handshake");
  }
  const messages = carry(a, b);
  say(`handshake: ${messages} messages (initiation, response), ${(performance.now() - t0).toFixed(1)} ms`);

  const n = 20_000, size = 1420;
  let delivered = 0;
  const t1 = performance.now();
  for (let i = 0; i < n; i++) {
    const [from, to, s, d] = i % 2 ? [b, a, 2, 1] : [a, b, 1, 2];
    packet(buf, DATA_HEADER_LEN, size, s, d);
    if (from.device.handlePlaintext(buf, DATA_HEADER_LEN, size) !== Verdict.Send) continue;
    const o = from.device.out;
    if (to.device.handleDatagram(buf, o.offset, o.length, from.endpoint) === Verdict.Deliver) delivered++;
  }
  const secs = (performance.now() - t1) / 1000;
  say(`data: ${delivered}/${n} packets of ${size} bytes encrypted and decrypted, both directions`);
  say(
    `      ${
      (n * size * 8 / secs / 1e6).toFixed(0)
    } Mbit/s through both ends on one core (${a.device.aead.name} AEAD)`,
  );
  for (const node of [a, b]) {
    const p = node.device.info().peers[0]!;
    say(
      `${node.name}: peer ${
        keyToBase64(p.publicKey).slice(0, 8)
      }… transfer ${p.rxBytes} B received, ${p.txBytes} B sent`,
    );
  }
  say("Run as root for the real thing: two network namespaces joined by a typetun tunnel.");
  return delivered === n ? 0 : 1;
}
