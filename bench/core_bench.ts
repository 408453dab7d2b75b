/**
 * Core benchmarks for `deno bench -A bench/core_bench.ts` (DESIGN.md, Performance): the sans-I/O data path and
 * handshakes, per transport AEAD backend (noble, and each native library that loads here). No I/O.
 *
 * - `encap+decap N B`: one IP packet of N bytes through A's handlePlaintext (pad, header, seal in place) and B's
 *   handleDatagram (index lookup, open in place, replay window, cryptokey routing). B leaves the decrypted
 *   packet where A reads the next one, so the loop copies nothing. Mbit/s = N × 8 × iterations/s / 10^6.
 * - `seal 1420 B`: the backend's seal alone, in place.
 * - `handshake`: initiation, response and the first data message (the initiator's keepalive that confirms the
 *   session, paper 5.4.7 and 6.1), between two long-lived devices, per X25519 implementation (noble, and
 *   libsodium's when it loads).
 * @module
 */
import { nobleX25519, type TransportAead } from "../lib/crypto.ts";
import { type PacketHook, Verdict } from "../lib/device.ts";
import {
  DATA_HEADER_LEN,
  MESSAGE_PADDING_MULTIPLE,
  NOISE_AUTHTAG_LEN,
  REKEY_TIMEOUT,
} from "../lib/messages.ts";
import process from "node:process";
import { copyBytes } from "../lib/bytes.ts";
import { ConnStats } from "../lib/connstats.ts";
import { Peer } from "../lib/peer.ts";
import { tcp } from "../tests/unit/_packets.ts";
import { csumPartial } from "../lib/checksum.ts";
import { compiledAead, selectAead, selectX25519 } from "../cmd/crypto.ts";
import { connect, packetAB, pair, peerOf, pump } from "../tests/unit/_harness.ts";

/** Every backend that can run here: noble always, native per library when it loads, the compiled helper (Bun). */
function backends(): TransportAead[] {
  const out = [selectAead("noble").aead];
  for (const lib of ["libsodium", "libcrypto"]) {
    try {
      const selection = selectAead(lib);
      out.push(selection.aead);
      if (lib !== "libcrypto") continue;
      const fast = compiledAead(selection);
      if (fast !== null && "aead" in fast) out.push(fast.aead);
      else if (fast !== null) console.error(`bench: no compiled libcrypto helper: ${fast.reason}`);
    } catch (e) {
      console.error(`bench: skipping ${lib}: ${e instanceof Error ? e.message : e}`);
    }
  }
  return out;
}

interface BenchDef {
  name: string;
  group: string;
  baseline?: boolean;
  n?: number;
  warmup?: number;
  fn: () => void;
}

/**
 * `deno bench -A bench/core_bench.ts` registers each case with Deno.bench. Bun has no bench runner of its
 * own that Deno also type-checks, so `bun bench/core_bench.ts` (and `deno run -A bench/core_bench.ts --standalone`) times
 * each case here: a warm-up, then rounds of CPU time, and prints the least CPU time per iteration.
 */
const denoBench = (globalThis as { Deno?: { bench?: (d: BenchDef) => void } }).Deno?.bench;
const standalone = denoBench === undefined || process.argv.includes("--standalone");
const queued: BenchDef[] = [];
/** `--filter S`: only the cases whose name contains S (a backend compared alone, with no other in its process). */
const filterAt = process.argv.indexOf("--filter");
const filter = filterAt >= 0 ? process.argv[filterAt + 1] ?? "" : "";

function bench(def: BenchDef): void {
  if (!def.name.includes(filter)) return;
  if (standalone) queued.push(def);
  else denoBench!(def);
}

/** CPU time of this process (user + system) in ms: other processes on a shared machine do not inflate it. */
function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

function runQueued(): void {
  const runtime = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined" ? "bun" : "deno";
  console.log(`runtime ${runtime}: CPU time per iteration, the least of 7 rounds of ≥ 150 ms each`);
  for (const def of queued) {
    for (let i = 0; i < (def.warmup ?? 5000); i++) def.fn();
    let best = Infinity;
    for (let round = 0; round < 7; round++) {
      let n = 0;
      const t0 = cpuMs();
      let t = t0;
      while (t - t0 < 150 && (def.n === undefined || n < def.n)) {
        for (let i = 0; i < 100 && (def.n === undefined || n < def.n); i++, n++) def.fn();
        t = cpuMs();
      }
      best = Math.min(best, (t - t0) / n);
    }
    const shown = best < 1 ? `${(best * 1e3).toFixed(3)} µs` : `${best.toFixed(2)} ms`;
    console.log(`${def.name.padEnd(72)} ${shown}`);
  }
}

const SIZES = [64, 512, 1420] as const;

for (const aead of backends()) {
  const baseline = aead.name === "noble";

  for (const size of SIZES) {
    const { a, b, clock } = pair({ aead });
    connect(a, b, clock);
    const packet = packetAB(7, size - 20); // an IPv4 packet of `size` bytes in all
    const buf = new Uint8Array(DATA_HEADER_LEN + size + MESSAGE_PADDING_MULTIPLE + NOISE_AUTHTAG_LEN);
    buf.set(packet, DATA_HEADER_LEN);
    const from = a.endpoint;
    bench({
      name: `encap+decap ${size} B, ${aead.name}`,
      group: `encap+decap ${size} B`,
      baseline,
      fn() {
        if (a.device.handlePlaintext(buf, DATA_HEADER_LEN, size) !== Verdict.Send) {
          throw new Error("not sent");
        }
        const length = a.device.out.length;
        if (b.device.handleDatagram(buf, 0, length, from) !== Verdict.Deliver) {
          throw new Error("not delivered");
        }
      },
    });
  }

  const key = new Uint8Array(32).fill(0x42);
  const data = new Uint8Array(1420 + NOISE_AUTHTAG_LEN);
  let counter = 0;
  bench({
    name: `seal 1420 B, ${aead.name}`,
    group: "seal 1420 B",
    baseline,
    fn() {
      aead.seal(key, counter++, 0, data, 0, 1420);
    },
  });
  // Open alone: one message sealed once and opened again and again (open is in place, so it is re-sealed
  // into `sealed` from the pristine copy each time: the copy is 1436 bytes, the same for every backend).
  const pristine = new Uint8Array(1420 + NOISE_AUTHTAG_LEN);
  aead.seal(key, 7, 0, pristine, 0, 1420);
  const sealed = pristine.slice();
  bench({
    name: `open 1420 B (and a 1436 B copy), ${aead.name}`,
    group: "open 1420 B",
    baseline,
    fn() {
      sealed.set(pristine);
      if (!aead.open(key, 7, 0, sealed, 0, sealed.length)) throw new Error("open failed");
    },
  });
}

// The per-segment work besides the AEAD on the sending side of a TSO read (lib/gso.ts): the TCP checksum of
// 1,400 bytes, and the copy into the send batch, between two buffers and within one ArrayBuffer (packet memory,
// ffi/packet_memory.ts: copyWithin).
{
  const memory = new Uint8Array(1 << 20);
  for (let i = 0; i < memory.length; i++) memory[i] = (i * 7919) & 0xff;
  const other = new Uint8Array(1 << 20);
  let k = 0, sink = 0;
  bench({
    name: "csumPartial 1400 B",
    group: "checksum",
    fn() {
      sink += csumPartial(memory, 10 + 1440 * (k++ & 31), 1400, 0);
    },
  });
  bench({
    name: "copyBytes 1400 B, two ArrayBuffers",
    group: "copy",
    baseline: true,
    fn() {
      const at = 1440 * (k++ & 31);
      copyBytes(memory, at + 10, other, at + 16, 1400);
    },
  });
  bench({
    name: "copyBytes 1400 B, one ArrayBuffer (packet memory)",
    group: "copy",
    fn() {
      const at = 1440 * (k++ & 31);
      copyBytes(memory, at + 10, memory, (1 << 19) + at + 16, 1400);
    },
  });
  if (sink === 0.5) console.log(sink); // keeps the sums alive
}

// Per-connection statistics (lib/connstats.ts), the device's packet hook, per packet: a bulk TCP flow as a
// sender's daemon sees it (two data segments out, an acknowledgement in), over IPv4 and IPv6, and four such
// flows interleaved packet by packet (no two consecutive packets of one flow: the worst case for a cache of
// the last connection).
{
  const peer = new Peer(new Uint8Array(32).fill(9));
  const flow = (i: number, v6: boolean) => {
    const [l, r] = v6 ? [`fd00::${i + 1}`, "fd00::99"] : [`10.0.0.${i + 1}`, "10.0.0.99"];
    return [
      { out: true, p: tcp(l, 40000 + i, r, 5201, { flags: 0x10, payload: 1348 }) },
      { out: true, p: tcp(l, 40000 + i, r, 5201, { flags: 0x10, payload: 1348 }) },
      { out: false, p: tcp(r, 5201, l, 40000 + i, { flags: 0x10 }) },
    ];
  };
  const cases = [
    { name: "one TCP flow, IPv4", packets: flow(0, false) },
    { name: "one TCP flow, IPv6", packets: flow(0, true) },
    {
      name: "4 TCP flows interleaved, IPv4",
      packets: [0, 1, 2].flatMap((k) => [0, 1, 2, 3].map((i) => flow(i, false)[k]!)),
    },
  ];
  // The loop alone, with a hook that does nothing, for what the cases above add.
  const none: PacketHook = { outbound: () => true, inbound: () => true };
  for (
    const c of [...cases, {
      name: "one TCP flow, IPv4, a hook that does nothing",
      packets: cases[0]!.packets,
    }]
  ) {
    const stats: PacketHook = c.name.includes("nothing") ? none : new ConnStats();
    let k = 0;
    bench({
      name: `connstats hook per packet, ${c.name}`,
      group: "connstats",
      baseline: stats === none,
      fn() {
        const x = c.packets[k++ % c.packets.length]!;
        if (x.out) stats.outbound(peer, x.p, 0, x.p.length);
        else stats.inbound(peer, x.p, 0, x.p.length);
      },
    });
  }
}

// Handshakes cost X25519 first of all (four or five scalar multiplications a side), so they are measured per
// X25519 implementation; the transport AEAD only seals the one keepalive.
for (const x of [nobleX25519, selectX25519("native")]) {
  const hs = pair({ aead: selectAead().aead, x25519: x });
  connect(hs.a, hs.b, hs.clock);
  const peerA = peerOf(hs.a, hs.b);
  const peerB = peerOf(hs.b, hs.a);
  bench({
    name: `handshake (initiation, response, first data), X25519 ${x.name}`,
    group: "handshake",
    baseline: x === nobleX25519,
    n: 200,
    warmup: 20,
    fn() {
      // A new handshake may start once REKEY_TIMEOUT has passed since the last (paper 6.1); the fake clock makes
      // that instant, and at one handshake per 5 s the responder is never under load (no cookies).
      hs.clock.advance(REKEY_TIMEOUT);
      const before = peerB.current;
      hs.a.device.sendInitiation(peerA, false);
      pump(hs.a, hs.b);
      // The responder moves the new session from `next` to `current` only when the first data arrives on it.
      if (peerB.current === before) throw new Error("handshake did not complete");
    },
  });
}

if (standalone) runQueued();
