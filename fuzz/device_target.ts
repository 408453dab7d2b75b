/**
 * Datagrams and packets to three `Device`s (device_world.ts), in cycles of a mixed phase, a flood phase and a
 * recovery check:
 * - mixed: packets through the TUN in every direction; datagrams delivered in order, reordered, duplicated or
 *   dropped; replays and mutations of captured messages of every type; mutations re-MACed so they get past
 *   mac1 (and mac2, with a cookie the fuzzer obtained as any sender could); data sealed with the live session
 *   keys carrying well-formed, malformed and spoofed inner packets under fresh, replayed, old and far-ahead
 *   counters; timers;
 * - flood: handshake-shaped datagrams in bulk from many sources (random, re-MACed, replayed), with bounds
 *   on what may pile up and on the heap;
 * - recovery: with the endpoints reset (and every other time the peers replaced, so that no session is
 *   left), every pair of nodes must handshake and carry a packet each way.
 * @module
 */
import { hash, mac, type TransportAead, xaeadDecrypt } from "../lib/crypto.ts";
import { Endpoint } from "../lib/ip.ts";
import {
  COOKIE_ENCRYPTED,
  COOKIE_NONCE,
  COOKIE_NONCE_LEN,
  COOKIE_RECEIVER,
  DATA_HEADER_LEN,
  MAX_SEND_COUNTER,
  MESSAGE_COOKIE_LEN,
  MESSAGE_DATA,
  NOISE_AUTHTAG_LEN,
  readU32,
  writeHeader,
  writeU32,
} from "../lib/messages.ts";
import type { Keypair } from "../lib/noise.ts";
import { type Node, World } from "./device_world.ts";
import type { Prng } from "./prng.ts";
import { check, mutate, type Target } from "./target.ts";

const enc = new TextEncoder();
const LABEL_MAC1 = enc.encode("mac1----");
const LABEL_COOKIE = enc.encode("cookie--");
const MIXED_STEPS = 3000;
const FLOOD_STEPS = 1500;
const RECOVERY_LIMIT_MS = 200_000;

export function deviceTarget(p: Prng, aead?: TransportAead): Target {
  const w = new World(p, aead);
  const nodes = w.nodes;
  /** Sources an attacker may send from: unrelated addresses, and the nodes' own (spoofed). */
  const attackers = [
    ...Array.from({ length: 6 }, (_, i) => new Endpoint(4, new Uint8Array([198, 51, 100, i + 1]), 4000 + i)),
    new Endpoint(6, new Uint8Array([0x20, 0x01, 0x0d, 0xb8, ...new Uint8Array(11), 7]), 5000),
    ...nodes.map((n) => n.endpoint),
  ];
  /** Cookies the attacker got, by `node source`, and the mac1 of its last message per node and source. */
  const cookies = new Map<string, Uint8Array>();
  const lastMac1 = new Map<string, Uint8Array>();
  const mac1Keys = nodes.map((n) => hash(LABEL_MAC1, n.publicKey));
  const cookieKeys = nodes.map((n) => hash(LABEL_COOKIE, n.publicKey));
  let input: Uint8Array = new Uint8Array(0);
  let step = 0;
  let serial = 0;
  let cookiesTaken = 0;

  const sourceKey = (to: number, src: Endpoint) => `${to} ${src.toString()}`;

  /** A cookie reply that went to an attacker's address: open it as the sender of the message would. */
  const onStray = (to: Endpoint, data: Uint8Array, from: Node) => {
    if (data.length !== MESSAGE_COOKIE_LEN || data[0] !== 3) return;
    const key = sourceKey(from.i, to);
    const m1 = lastMac1.get(key);
    if (!m1) return;
    const nonce = data.subarray(COOKIE_NONCE, COOKIE_NONCE + COOKIE_NONCE_LEN);
    const cookie = xaeadDecrypt(cookieKeys[from.i]!, nonce, data.subarray(COOKIE_ENCRYPTED), m1);
    if (!cookie) return;
    cookies.set(key, cookie);
    cookiesTaken++;
  };

  /** Recomputes mac1 (and mac2 when a cookie for this source is known) of a handshake message for `to`. */
  const remac = (msg: Uint8Array, to: number, src: Endpoint) => {
    if (msg.length < 32) return;
    const m1 = msg.length - 32, m2 = msg.length - 16;
    const mac1 = mac(mac1Keys[to]!, msg.subarray(0, m1));
    msg.set(mac1, m1);
    lastMac1.set(sourceKey(to, src), mac1);
    const cookie = cookies.get(sourceKey(to, src));
    if (cookie && p.chance(0.9)) msg.set(mac(cookie, msg.subarray(0, m2)), m2);
    else if (p.chance(0.5)) msg.fill(0, m2);
  };

  /** An IP packet from node a to node b (or elsewhere), with a serial number so that every one differs. */
  const packet = (a: Node, b: Node): Uint8Array => {
    const v6 = p.chance(0.3);
    const size = p.chance(0.9) ? p.int(0, 120) : p.int(0, 1500);
    const pkt = new Uint8Array((v6 ? 40 : 20) + 8 + size);
    const id = ++serial;
    if (v6) {
      pkt[0] = 0x60;
      pkt[4] = (pkt.length - 40) >> 8;
      pkt[5] = pkt.length - 40;
      pkt[6] = 17;
      pkt[7] = 64;
      pkt.set(a.ip6, 8);
      pkt.set(b.ip6, 24);
    } else {
      pkt[0] = 0x45;
      pkt[2] = pkt.length >> 8;
      pkt[3] = pkt.length;
      pkt[8] = 64;
      pkt[9] = 17;
      pkt.set(a.ip4, 12);
      pkt.set(b.ip4, 16);
    }
    const at = v6 ? 40 : 20;
    writeU32(pkt, at, id);
    writeU32(pkt, at + 4, id / 2 ** 32);
    p.fill(pkt.subarray(at + 8));
    return pkt;
  };

  const twoNodes = (): [Node, Node] => {
    const a = p.pick(nodes);
    const others = nodes.filter((n) => n !== a);
    return [a, p.pick(others)];
  };

  const deliverOne = (f: { to: number; data: Uint8Array; src: Endpoint }) => {
    input = f.data;
    w.deliver(f.to, f.data, f.src);
    w.route(onStray);
  };

  /** Data sealed with a live session key of a → b: what only a (or whoever holds its keys) can produce. */
  const crafted = () => {
    const [a, b] = twoNodes();
    const peer = a.device.peer(b.publicKey)!;
    const kps = peer.keypairs();
    if (kps.length === 0) return sendNatural();
    const kp = p.pick(kps);
    const plain = innerPlain(a, b);
    const counter = pickCounter(kp);
    const lo = counter % 2 ** 32, hi = Math.floor(counter / 2 ** 32);
    const dg = new Uint8Array(DATA_HEADER_LEN + plain.length + NOISE_AUTHTAG_LEN);
    writeHeader(dg, MESSAGE_DATA);
    writeU32(dg, 4, kp.remoteIndex);
    writeU32(dg, 8, lo);
    writeU32(dg, 12, hi);
    dg.set(plain, DATA_HEADER_LEN);
    a.device.aead.seal(kp.sendKey, lo, hi, dg, DATA_HEADER_LEN, plain.length);
    w.register(a, b, plain);
    w.capture(dg);
    // Mostly from a's address; sometimes from elsewhere, which moves b's endpoint for a (roaming).
    const src = p.chance(0.97) ? a.endpoint : p.pick(attackers);
    if (p.chance(0.8)) deliverOne({ to: b.i, data: dg, src });
    else w.inflight.push({ to: b.i, data: dg, src });
  };

  /** Inner packets: mostly well formed from a's address, else malformed, padded, spoofed or empty. */
  const innerPlain = (a: Node, b: Node): Uint8Array => {
    let pkt = packet(a, b);
    switch (p.below(12)) {
      case 0:
        return new Uint8Array(0); // keepalive
      case 1:
        pkt.set(p.pick(nodes).ip4, 12); // a source that may not be a's
        pkt.set(p.pick(nodes).ip6.subarray(0, 4), 8);
        break;
      case 2: { // the header claims more, or less, than there is
        const claim = p.int(0, pkt.length + 40);
        if (pkt[0] === 0x45) (pkt[2] = claim >> 8), (pkt[3] = claim);
        else (pkt[4] = claim >> 8), (pkt[5] = claim);
        break;
      }
      case 3:
        pkt = mutate(p, pkt);
        break;
      case 4: { // padding after the packet
        const padded = new Uint8Array(pkt.length + p.int(1, 31));
        padded.set(pkt);
        pkt = padded;
        break;
      }
      case 5:
        pkt = p.bytes(p.size(100));
        break;
    }
    return pkt;
  };

  /** Counters for crafted data: fresh, replayed, old, far ahead, or at the end of the sendable range. */
  const pickCounter = (kp: Keypair): number => {
    const next = kp.sendCounter;
    let c: number;
    switch (p.below(8)) {
      case 0:
        c = Math.max(0, next - 1 - p.below(40)); // a replay, or a counter sent but not yet delivered
        break;
      case 1:
        c = Math.max(0, next - 8128 - p.int(-3, 3)); // at the window's edge
        break;
      case 2:
        c = next + p.int(1, p.chance(0.5) ? 9000 : 2 ** 31);
        break;
      case 3:
        c = p.chance(0.99) ? next : MAX_SEND_COUNTER - p.below(3);
        break;
      default:
        c = next;
    }
    // The sender's own counter moves past anything it "sent", so it never reuses one.
    if (c >= next) kp.sendCounter = c + 1;
    return c;
  };

  const sendNatural = () => {
    const [a, b] = twoNodes();
    let pkt = packet(a, b);
    if (p.chance(0.05)) pkt = mutate(p, pkt, undefined, 0);
    input = pkt;
    w.sendPlain(a.i, pkt);
    w.route(onStray);
  };

  /** A captured message, perhaps mutated and re-MACed, to any node from any source. */
  const injectCaptured = (types: number[]) => {
    const t = p.pick(types);
    const pool = w.captured[t]!;
    if (pool.length === 0) return sendNatural();
    let msg: Uint8Array = p.pick(pool).slice();
    const to = p.below(3);
    const src = p.pick(attackers);
    const r = p.below(10);
    if (r < 3) {
      // A replay as is.
    } else if (r < 6) {
      msg = mutate(p, msg, p.pick(w.captured[p.int(1, 4)]!.concat([msg])), p.chance(0.7) ? 4 : 0);
    } else {
      msg = mutate(p, msg, undefined, 4);
      if (t === 1 || t === 2) remac(msg, to, src);
      if (t === 3 && msg.length >= 8) {
        writeU32(msg, COOKIE_RECEIVER, readU32(msg, COOKIE_RECEIVER) ^ p.below(2));
      }
    }
    deliverOne({ to, data: msg, src });
  };

  /** Handshake-shaped junk: random bodies, or a captured initiation mutated and re-MACed. */
  const floodOne = () => {
    const to = p.below(3);
    const src = p.chance(0.5) ? p.pick(attackers) : new Endpoint(4, p.bytes(4), p.below(65536));
    let msg: Uint8Array;
    if (p.chance(0.5) || w.captured[1]!.length === 0) {
      msg = p.bytes(148);
      writeHeader(msg, 1);
      if (p.chance(0.6)) remac(msg, to, src);
    } else {
      msg = mutate(p, p.pick(w.captured[1]!), undefined, 4);
      if (msg.length === 148 && p.chance(0.7)) remac(msg, to, src);
    }
    deliverOne({ to, data: msg, src });
  };

  /** Every pair must handshake and carry a packet each way, within RECOVERY_LIMIT_MS of protocol time. */
  const recover = () => {
    // Endpoints back where the nodes are (roaming may have moved them to an attacker's address); every other
    // time, new peer state too, so that a fresh handshake must succeed right after the flood.
    w.configure(w.stats.recoveries % 2 === 1);
    w.inflight = [];
    for (const a of nodes) {
      for (const b of nodes) {
        if (a === b) continue;
        const start = w.clock.t;
        const before = w.stats.delivered;
        let ok = false;
        while (!ok && w.clock.t - start < RECOVERY_LIMIT_MS) {
          const pkt = packet(a, b);
          input = pkt;
          w.sendPlain(a.i, pkt);
          w.route(onStray);
          // Carry everything in order, letting a second pass between pings (timers fire on the way).
          for (let k = 0; k < 20 && !ok; k++) {
            while (w.inflight.length > 0) {
              const f = w.inflight.shift()!;
              deliverOne(f);
              if (f.to === b.i && w.stats.delivered > before) ok = true;
            }
            w.elapse(50);
          }
        }
        check(
          ok,
          `nodes ${a.i} → ${b.i}: no packet delivered within ${RECOVERY_LIMIT_MS / 1000} s after a flood`,
        );
      }
    }
    w.stats.recoveries++;
  };

  return {
    get input() {
      return input;
    },
    step() {
      const phase = step++ % (MIXED_STEPS + FLOOD_STEPS + 1);
      if (phase === MIXED_STEPS + FLOOD_STEPS) {
        w.checkHeap();
        recover();
        return;
      }
      if (phase >= MIXED_STEPS) {
        // Flood: many handshakes within a few seconds of protocol time.
        if (p.chance(0.3)) w.clock.t += 1;
        floodOne();
        w.checkBounds();
        return;
      }
      const r = p.below(100);
      if (r < 25) sendNatural();
      else if (r < 50 && w.inflight.length > 0) {
        // In order mostly; sometimes out of order, duplicated, or lost.
        const i = p.chance(0.8) ? 0 : p.below(w.inflight.length);
        const f = w.inflight[i]!;
        if (p.chance(0.9)) w.inflight.splice(i, 1);
        if (p.chance(0.97)) deliverOne(f);
      } else if (r < 65) crafted();
      else if (r < 80) injectCaptured([1, 2, 3, 4]);
      else if (r < 85) {
        input = p.bytes(p.size(200));
        if (input.length > 0 && p.chance(0.5)) input[0] = p.int(1, 4);
        deliverOne({ to: p.below(3), data: input, src: p.pick(attackers) });
      } else if (r < 97) {
        w.clock.t += p.below(30);
      } else {
        // Timers: up to a few minutes, which crosses rekey, keepalive and expiry deadlines.
        w.elapse(p.chance(0.8) ? p.below(12_000) : p.below(200_000));
      }
      w.checkBounds();
    },
    stats: () => ({ ...w.stats, cookies: cookiesTaken }),
  };
}
