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
import { Verdict } from "../lib/device.ts";
import {
  DATA_HEADER_LEN,
  MESSAGE_PADDING_MULTIPLE,
  NOISE_AUTHTAG_LEN,
  REKEY_TIMEOUT,
} from "../lib/messages.ts";
import { selectAead, selectX25519 } from "../cmd/crypto.ts";
import { connect, packetAB, pair, peerOf, pump } from "../tests/unit/_harness.ts";

/** Every backend that can run here: noble always, native per library when it loads. */
function backends(): TransportAead[] {
  const out = [selectAead("noble").aead];
  for (const lib of ["libsodium", "libcrypto"]) {
    try {
      out.push(selectAead(lib).aead);
    } catch (e) {
      console.error(`bench: skipping ${lib}: ${e instanceof Error ? e.message : e}`);
    }
  }
  return out;
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
    Deno.bench({
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
  Deno.bench({
    name: `seal 1420 B, ${aead.name}`,
    group: "seal 1420 B",
    baseline,
    fn() {
      aead.seal(key, counter++, 0, data, 0, 1420);
    },
  });
}

// Handshakes cost X25519 first of all (four or five scalar multiplications a side), so they are measured per
// X25519 implementation; the transport AEAD only seals the one keepalive.
for (const x of [nobleX25519, selectX25519("native")]) {
  const hs = pair({ aead: selectAead().aead, x25519: x });
  connect(hs.a, hs.b, hs.clock);
  const peerA = peerOf(hs.a, hs.b);
  const peerB = peerOf(hs.b, hs.a);
  Deno.bench({
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
