/**
 * Three devices wired through a fuzzer-controlled network, with the bookkeeping the device invariants need:
 * every inner packet a sender encrypted (so that every Deliver can be matched with one), every counter each
 * receiving keypair accepted, and bounds on what may pile up. `deliver` and `sendPlain` are the only ways
 * datagrams and packets reach the devices, and each checks its result.
 * @module
 */
import process from "node:process";
import { dhGenerate, dhPublic, equalConstantTime, type TransportAead } from "../lib/crypto.ts";
import { type Clock, Device, type Peer, Verdict } from "../lib/device.ts";
import { selectX25519 } from "../cmd/crypto.ts";
import { Endpoint } from "../lib/ip.ts";
import type { Keypair } from "../lib/noise.ts";
import {
  DATA_COUNTER,
  DATA_HEADER_LEN,
  DATA_RECEIVER,
  MAX_STAGED_PACKETS,
  MESSAGE_DATA,
  NOISE_AUTHTAG_LEN,
  readU32,
} from "../lib/messages.ts";
import type { Prng } from "./prng.ts";
import { check, hex } from "./target.ts";

export class FakeClock implements Clock {
  t = 1_000_000;
  now(): number {
    return this.t;
  }
  wall(): number {
    return 1_700_000_000_000 + this.t;
  }
}

export interface Node {
  i: number;
  device: Device;
  privateKey: Uint8Array;
  publicKey: Uint8Array;
  endpoint: Endpoint;
  /** Its tunnel addresses: 10.0.0.(i+1) and fd00::(i+1), each the only allowed IP the others route to it. */
  ip4: Uint8Array;
  ip6: Uint8Array;
}

interface InFlight {
  to: number;
  data: Uint8Array;
  src: Endpoint;
}

/** What may be in flight or captured at once (the fuzzer's network, not the device, is bounded here). */
const MAX_IN_FLIGHT = 512;
const MAX_CAPTURED = 64;
const MAX_REGISTERED = 200_000;
/** Datagrams one input may make a device queue: a flush of staged packets plus a handshake message. */
const MAX_OUTBOX_PER_INPUT = MAX_STAGED_PACKETS + 4;
/** The heap may not grow by more than this over a run (an unbounded table grows far past it in a long run). */
const MAX_HEAP_GROWTH = 768 * 2 ** 20;

export class World {
  readonly clock = new FakeClock();
  readonly nodes: Node[] = [];
  inflight: InFlight[] = [];
  /** Datagrams seen on the wire, by message type (index 1..4), for replays and mutations. */
  readonly captured: Uint8Array[][] = [[], [], [], [], []];
  /** Inner packets a sender encrypted, as `from>to hex`, with how many times each may still be delivered. */
  readonly #sent = new Map<string, number>();
  /** Counters each receiving keypair accepted. */
  readonly #accepted = new WeakMap<Keypair, Set<number | string>>();
  readonly #heapAtStart = process.memoryUsage().heapUsed;
  readonly stats = {
    delivered: 0,
    keepalives: 0,
    handshakes: 0,
    recoveries: 0,
    cookieSent: 0,
    rateLimited: 0,
  };

  /** `aead` replaces the transport AEAD (a test hands in a broken one to see the invariants catch it). */
  constructor(readonly p: Prng, aead?: TransportAead) {
    const rng = p.rng();
    for (let i = 0; i < 3; i++) {
      // The handshakes' X25519 from libsodium when it loads, as the daemon does: the same results, 20× faster.
      const device = new Device({ clock: this.clock, rng, aead, x25519: selectX25519() });
      const privateKey = dhGenerate(rng);
      device.setPrivateKey(privateKey);
      device.listenPort = 1000 + i;
      this.nodes.push({
        i,
        device,
        privateKey,
        publicKey: dhPublic(privateKey),
        endpoint: new Endpoint(4, new Uint8Array([192, 0, 2, i + 1]), 1000 + i),
        ip4: new Uint8Array([10, 0, 0, i + 1]),
        ip6: new Uint8Array([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, i + 1]),
      });
    }
    this.configure(false);
  }

  /**
   * Gives every node the others as peers, at their real endpoints, each with its two tunnel addresses. With
   * `fresh`, the peers are replaced (new peer state, no session): the next packet needs a new handshake.
   */
  configure(fresh: boolean): void {
    for (const a of this.nodes) {
      a.device.apply({
        replacePeers: fresh,
        peers: this.nodes.filter((b) => b !== a).map((b) => ({
          publicKey: b.publicKey,
          remove: false,
          updateOnly: false,
          endpoint: b.endpoint,
          replaceAllowedIps: true,
          allowedIps: [{ family: 4, addr: b.ip4, prefixLen: 32 }, { family: 6, addr: b.ip6, prefixLen: 128 }],
        })),
      });
    }
  }

  /** The node a peer object stands for (peers are the other nodes, by public key). */
  nodeOf(peer: Peer): Node {
    const n = this.nodes.find((x) => equalConstantTime(x.publicKey, peer.publicKey));
    check(n !== undefined, "a device answered for a peer that was never configured");
    return n;
  }

  /** Records a datagram seen on the wire (a random slot is replaced when full). */
  capture(data: Uint8Array): void {
    const t = data.length > 0 && data[0]! >= 1 && data[0]! <= 4 ? data[0]! : 0;
    const list = this.captured[t]!;
    if (list.length < MAX_CAPTURED) list.push(data);
    else list[this.p.below(MAX_CAPTURED)] = data;
  }

  /** Moves what the devices queued onto the network: to a node when the endpoint is one, else into the void. */
  route(onStray?: (to: Endpoint, data: Uint8Array, from: Node) => void): void {
    for (const n of this.nodes) {
      const out = n.device.outbox.splice(0);
      for (const d of out) {
        this.capture(d.data);
        const to = this.nodes.find((x) => x.endpoint.matches(d.endpoint.addr, d.endpoint.port));
        if (to) this.inflight.push({ to: to.i, data: d.data, src: n.endpoint });
        else onStray?.(d.endpoint, d.data, n);
      }
    }
    if (this.inflight.length > MAX_IN_FLIGHT) this.inflight.splice(0, this.inflight.length - MAX_IN_FLIGHT);
  }

  /** Notes that `plain` (as the receiver would decrypt it, padding included) went from one node to another. */
  register(from: Node, to: Node, plain: Uint8Array): void {
    const deliverable = deliverablePart(plain, from);
    if (!deliverable) return;
    const key = `${from.i}>${to.i} ${hex(deliverable)}`;
    this.#sent.set(key, (this.#sent.get(key) ?? 0) + 1);
    if (this.#sent.size > MAX_REGISTERED) {
      // The oldest registrations: their datagrams left the bounded network long ago.
      const it = this.#sent.keys();
      for (let k = 0; k < MAX_REGISTERED / 4; k++) this.#sent.delete(it.next().value!);
    }
  }

  /**
   * Hands a datagram to node `to` as if from `src`, at a random offset in a larger buffer, and checks: no
   * exception; a Deliver is an inner packet the peer sent and that was not delivered before, under a counter
   * its keypair never accepted; the device queued no more than one input can justify.
   */
  deliver(to: number, data: Uint8Array, src: Endpoint): Verdict {
    const node = this.nodes[to]!;
    const off = this.p.below(8);
    const buf = new Uint8Array(off + data.length + this.p.below(8));
    buf.set(data, off);
    const isData = data.length >= DATA_HEADER_LEN && data[0] === MESSAGE_DATA;
    const index = isData ? readU32(data, DATA_RECEIVER) : 0;
    const lo = isData ? readU32(data, DATA_COUNTER) : 0;
    const hi = isData ? readU32(data, DATA_COUNTER + 4) : 0;
    const before = node.device.outbox.length;
    const v = node.device.handleDatagram(buf, off, data.length, { addr: src.addr.slice(), port: src.port });
    check(
      node.device.outbox.length - before <= MAX_OUTBOX_PER_INPUT,
      () => `one datagram made the device queue ${node.device.outbox.length - before} datagrams`,
    );
    if (v === Verdict.Deliver) {
      const o = node.device.out;
      check(o.peer !== null, "Deliver without a peer");
      check(
        o.offset >= off + DATA_HEADER_LEN && o.offset + o.length <= off + data.length - NOISE_AUTHTAG_LEN,
        () =>
          `Deliver of [${o.offset}, +${o.length}) outside the datagram's payload at ${off}, ${data.length} bytes`,
      );
      const from = this.nodeOf(o.peer);
      const key = `${from.i}>${to} ${hex(buf.subarray(o.offset, o.offset + o.length))}`;
      const left = this.#sent.get(key) ?? 0;
      check(
        left > 0,
        () => `delivered a packet node ${from.i} did not send to node ${to} (or delivered it again)`,
      );
      if (left === 1) this.#sent.delete(key);
      else this.#sent.set(key, left - 1);
      this.#acceptCounter(node, o.peer, index, lo, hi);
      this.stats.delivered++;
    } else if (v === Verdict.Handled && isData) {
      // A keepalive: nothing reaches the TUN, but its counter is spent.
      let peer: Peer | undefined;
      for (const pr of node.device.peers.values()) {
        if (pr.keypairs().some((k) => k.localIndex === index)) peer = pr;
      }
      check(peer !== undefined, "a keepalive was accepted under an index no peer holds");
      this.#acceptCounter(node, peer, index, lo, hi);
      this.stats.keepalives++;
    } else if (v === Verdict.Handled) {
      this.stats.handshakes++;
    } else if (v === Verdict.DropCookieSent) {
      this.stats.cookieSent++;
    } else if (v === Verdict.DropRateLimited) {
      this.stats.rateLimited++;
    }
    return v;
  }

  #acceptCounter(node: Node, peer: Peer, index: number, lo: number, hi: number): void {
    const kp = peer.keypairs().find((k) => k.localIndex === index);
    check(
      kp !== undefined,
      `node ${node.i} accepted data under index ${index}, which the peer no longer holds`,
    );
    let seen = this.#accepted.get(kp);
    if (!seen) this.#accepted.set(kp, seen = new Set());
    const c = hi < 2 ** 20 ? hi * 2 ** 32 + lo : `${hi}:${lo}`;
    check(!seen.has(c), () => `node ${node.i} accepted counter ${hi}:${lo} twice under one keypair`);
    seen.add(c);
  }

  /**
   * A packet read from node `from`'s TUN. If it goes out (now, or staged until a session exists), registers
   * what the receiver may deliver of it. Returns the verdict.
   */
  sendPlain(from: number, packet: Uint8Array): Verdict {
    const node = this.nodes[from]!;
    const buf = new Uint8Array(DATA_HEADER_LEN + packet.length + 16 + NOISE_AUTHTAG_LEN);
    buf.set(packet, DATA_HEADER_LEN);
    const dst = this.#routeOf(packet);
    // Register first: a staged packet may be encrypted and sent by this very call.
    const padded = paddedLength(packet.length, node.device.mtu);
    const plain = new Uint8Array(padded);
    plain.set(packet);
    if (dst && dst !== node) this.register(node, dst, plain);
    const before = node.device.outbox.length;
    const v = node.device.handlePlaintext(buf, DATA_HEADER_LEN, packet.length);
    check(
      node.device.outbox.length - before <= MAX_OUTBOX_PER_INPUT,
      "one packet made the device queue too much",
    );
    if (v === Verdict.Send) {
      const o = node.device.out;
      check(o.peer !== null && o.endpoint !== null, "Send without a peer or endpoint");
      check(
        dst !== undefined && this.nodeOf(o.peer) === dst,
        "a packet was encrypted for a peer its address does not route to",
      );
      const data = buf.slice(o.offset, o.offset + o.length);
      this.capture(data);
      const to = this.nodes.find((x) => x.endpoint.matches(o.endpoint!.addr, o.endpoint!.port));
      if (to) this.inflight.push({ to: to.i, data, src: node.endpoint });
    } else {
      check(v !== Verdict.Queued || dst !== undefined, "a packet without a route was queued");
    }
    this.checkBounds();
    return v;
  }

  /** The node whose tunnel address is the packet's destination (as every device routes), if any. */
  #routeOf(packet: Uint8Array): Node | undefined {
    const v = packet.length > 0 ? packet[0]! >> 4 : 0;
    if (v === 4 && packet.length >= 20) return this.nodes.find((n) => equal(packet.subarray(16, 20), n.ip4));
    if (v === 6 && packet.length >= 40) return this.nodes.find((n) => equal(packet.subarray(24, 40), n.ip6));
    return undefined;
  }

  /** Memory bounds that hold at every moment: staged packets per peer, peers per device. */
  checkBounds(): void {
    for (const n of this.nodes) {
      check(n.device.peers.size === 2, `node ${n.i} has ${n.device.peers.size} peers, not 2`);
      for (const peer of n.device.peers.values()) {
        check(peer.staged.length <= MAX_STAGED_PACKETS, `${peer.staged.length} packets staged for one peer`);
      }
    }
  }

  /** The heap bound, checked after each flood phase. */
  checkHeap(): void {
    const growth = process.memoryUsage().heapUsed - this.#heapAtStart;
    check(growth < MAX_HEAP_GROWTH, () => `the heap grew by ${Math.round(growth / 2 ** 20)} MiB`);
  }

  /** Lets time pass: to `ms` later, stopping at timer deadlines to tick every device. */
  elapse(ms: number): void {
    const end = this.clock.t + ms;
    for (let k = 0; k < 1000 && this.clock.t < end; k++) {
      const next = Math.min(end, ...this.nodes.map((n) => n.device.nextDeadline()));
      this.clock.t = Math.max(this.clock.t, Math.ceil(next));
      for (const n of this.nodes) n.device.tick();
      this.route();
    }
    this.clock.t = Math.max(this.clock.t, end);
  }
}

/**
 * What a receiver may deliver of a decrypted payload from `from`: the IP packet up to the length its header
 * claims, if the header is whole, the claim fits and the source is `from`'s tunnel address (cryptokey
 * routing); else null (nothing may be delivered).
 */
export function deliverablePart(plain: Uint8Array, from: Node): Uint8Array | null {
  const v = plain.length > 0 ? plain[0]! >> 4 : 0;
  if (v === 4 && plain.length >= 20) {
    const len = (plain[2]! << 8) | plain[3]!;
    if (len < 20 || len > plain.length || !equal(plain.subarray(12, 16), from.ip4)) return null;
    return plain.subarray(0, len);
  }
  if (v === 6 && plain.length >= 40) {
    const len = 40 + ((plain[4]! << 8) | plain[5]!);
    if (len > plain.length || !equal(plain.subarray(8, 24), from.ip6)) return null;
    return plain.subarray(0, len);
  }
  return null;
}

/** The length a sender pads a packet to: a multiple of 16, but never past the MTU (paper 5.4.6). */
export function paddedLength(len: number, mtu: number): number {
  const padded = Math.ceil(len / 16) * 16;
  return padded > mtu ? Math.max(len, mtu) : padded;
}

export function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
