/**
 * Test doubles for the sans-I/O core: a fake clock, a seeded RNG, and a pair of devices wired back to back.
 */
import { dhGenerate, dhPublic, type Rng } from "../../lib/crypto.ts";
import { type Clock, Device, type DeviceOptions, type Peer, Verdict } from "../../lib/device.ts";
import { Endpoint, parseCidr } from "../../lib/ip.ts";
import { addPeerUpdate } from "../../lib/uapi.ts";

export class FakeClock implements Clock {
  t = 1_000_000;
  wallOffset = 1_700_000_000_000 - 1_000_000;
  now(): number {
    return this.t;
  }
  wall(): number {
    return this.t + this.wallOffset;
  }
  advance(ms: number): void {
    this.t += ms;
  }
}

/** xorshift32: deterministic bytes, good enough to make keys and indices in tests. */
export function seededRng(seed: number): Rng {
  let x = seed >>> 0 || 1;
  return (out: Uint8Array) => {
    for (let i = 0; i < out.length; i++) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      out[i] = x & 0xff;
    }
  };
}

export interface Side {
  device: Device;
  privateKey: Uint8Array;
  publicKey: Uint8Array;
  endpoint: Endpoint;
  /** Datagrams delivered to this side's TUN, in order. */
  delivered: Uint8Array[];
}

/** A minimal IPv4 packet from `src` to `dst` with `payload`. */
export function ipv4Packet(src: string, dst: string, payload: Uint8Array): Uint8Array {
  const p = new Uint8Array(20 + payload.length);
  p[0] = 0x45;
  p[2] = p.length >> 8;
  p[3] = p.length & 0xff;
  p[8] = 64;
  p[9] = 17;
  p.set(src.split(".").map(Number), 12);
  p.set(dst.split(".").map(Number), 16);
  p.set(payload, 20);
  return p;
}

/** A minimal IPv6 packet. */
export function ipv6Packet(src: Uint8Array, dst: Uint8Array, payload: Uint8Array): Uint8Array {
  const p = new Uint8Array(40 + payload.length);
  p[0] = 0x60;
  p[4] = payload.length >> 8;
  p[5] = payload.length & 0xff;
  p[6] = 17;
  p[7] = 64;
  p.set(src, 8);
  p.set(dst, 24);
  p.set(payload, 40);
  return p;
}

/**
 * Two devices, A (10.0.0.1, endpoint 192.0.2.1:1000) and B (10.0.0.2, 192.0.2.2:2000), each with the other as
 * its only peer. `psk` is set on both when given.
 */
export function pair(
  opts:
    & {
      psk?: Uint8Array;
      clock?: FakeClock;
      seed?: number;
      /** Options for A's or B's device only (e.g. only B under load). */
      optsA?: Partial<DeviceOptions>;
      optsB?: Partial<DeviceOptions>;
    }
    & Partial<DeviceOptions> = {},
): { a: Side; b: Side; clock: FakeClock } {
  const clock = opts.clock ?? new FakeClock();
  const rng = seededRng(opts.seed ?? 42);
  const { optsA, optsB, ...common } = opts;
  const make = (port: number, last: number, own: Partial<DeviceOptions> | undefined): Side => {
    const privateKey = dhGenerate(rng);
    const device = new Device({ ...common, ...own, clock, rng });
    device.setPrivateKey(privateKey);
    device.listenPort = port;
    return {
      device,
      privateKey,
      publicKey: dhPublic(privateKey),
      endpoint: new Endpoint(4, new Uint8Array([192, 0, 2, last]), port),
      delivered: [],
    };
  };
  const a = make(1000, 1, optsA);
  const b = make(2000, 2, optsB);
  const link = (x: Side, y: Side, ip: string) => {
    const v6 = parseCidr("fd00::" + ip.split("/")[0]!.split(".")[3] + "/128")!;
    x.device.apply(addPeerUpdate(y.publicKey, y.endpoint, [parseCidr(ip)!, v6], opts.psk));
  };
  link(a, b, "10.0.0.2/32");
  link(b, a, "10.0.0.1/32");
  return { a, b, clock };
}

/** Room around a packet for the header in front and the padding and tag behind. */
export function framed(packet: Uint8Array): { buf: Uint8Array; off: number; len: number } {
  const buf = new Uint8Array(16 + packet.length + 16 + 16);
  buf.set(packet, 16);
  return { buf, off: 16, len: packet.length };
}

/**
 * Carries every datagram in each outbox to the other side until both are empty (bounded), delivering
 * decrypted packets. `filter` may drop or alter datagrams in flight. Returns the verdicts seen.
 */
export function pump(
  a: Side,
  b: Side,
  filter: (from: Side, data: Uint8Array) => Uint8Array | null = (_f, d) => d,
): Verdict[] {
  const verdicts: Verdict[] = [];
  for (let round = 0; round < 100; round++) {
    let moved = false;
    for (const [from, to] of [[a, b], [b, a]] as const) {
      const out = from.device.outbox.splice(0);
      for (const d of out) {
        moved = true;
        const data = filter(from, d.data);
        if (!data) continue;
        verdicts.push(deliver(to, data, from.endpoint));
      }
    }
    if (!moved) return verdicts;
  }
  throw new Error("pump did not settle");
}

/** Hands one datagram to `to` as if it came from `src`; records a delivered packet. */
export function deliver(to: Side, data: Uint8Array, src: Endpoint): Verdict {
  const buf = data.slice();
  const v = to.device.handleDatagram(buf, 0, buf.length, src);
  if (v === Verdict.Deliver) {
    const o = to.device.out;
    to.delivered.push(buf.slice(o.offset, o.offset + o.length));
  }
  return v;
}

/** Sends an IP packet from `x`'s TUN: returns the verdict, and the datagram if sent in place. */
export function send(x: Side, packet: Uint8Array): { verdict: Verdict; datagram: Uint8Array | null } {
  const { buf, off, len } = framed(packet);
  const verdict = x.device.handlePlaintext(buf, off, len);
  if (verdict !== Verdict.Send) return { verdict, datagram: null };
  const o = x.device.out;
  return { verdict, datagram: buf.slice(o.offset, o.offset + o.length) };
}

/** The peer object `x` holds for `y`. */
export function peerOf(x: Side, y: Side): Peer {
  const p = x.device.peer(y.publicKey);
  if (!p) throw new Error("not peered");
  return p;
}

/** Takes every datagram out of `x`'s outbox. */
export function drain(x: Side): Uint8Array[] {
  return x.device.outbox.splice(0).map((d) => d.data);
}

/** Datagrams of one message type (1 initiation, 2 response, 3 cookie reply, 4 data). */
export function ofType(datagrams: Uint8Array[], type: number): Uint8Array[] {
  return datagrams.filter((d) => d[0] === type);
}

/**
 * Lets `ms` of fake time pass, stopping at every timer deadline of either device to tick both and carry
 * whatever they send across (through `filter`, as `pump`). Returns the verdicts seen.
 */
export function elapse(
  clock: FakeClock,
  a: Side,
  b: Side,
  ms: number,
  filter?: (from: Side, data: Uint8Array) => Uint8Array | null,
): Verdict[] {
  const end = clock.t + ms;
  const verdicts: Verdict[] = [];
  for (let i = 0; i < 100_000; i++) {
    const next = Math.min(a.device.nextDeadline(), b.device.nextDeadline(), end);
    if (next > clock.t) clock.t = next;
    a.device.tick();
    b.device.tick();
    verdicts.push(...pump(a, b, filter));
    if (clock.t >= end && Math.min(a.device.nextDeadline(), b.device.nextDeadline()) > end) return verdicts;
  }
  throw new Error("elapse did not settle");
}

/** A packet from A (10.0.0.1) to B (10.0.0.2) or back, with a recognisable payload. */
export function packetAB(n: number, size = 40): Uint8Array {
  return ipv4Packet("10.0.0.1", "10.0.0.2", new Uint8Array(size).fill(n & 0xff));
}
export function packetBA(n: number, size = 40): Uint8Array {
  return ipv4Packet("10.0.0.2", "10.0.0.1", new Uint8Array(size).fill(n & 0xff));
}

/** Whether a verdict means the datagram or packet was dropped (lib/device.ts's, for the tests' imports). */
export { isDrop } from "../../lib/device.ts";

/** Completes a handshake with A initiating (A's packet reaches B) and returns the time it completed. */
export function connect(a: Side, b: Side, clock: FakeClock): number {
  const p = packetAB(0xee);
  const before = b.delivered.length;
  send(a, p);
  pump(a, b);
  if (b.delivered.length !== before + 1) throw new Error("handshake did not complete");
  b.delivered.pop();
  return clock.now();
}
