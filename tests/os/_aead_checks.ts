/**
 * Checks of the native ChaCha20-Poly1305 (ffi/aead.ts) and of the transport AEAD built on it (cmd/crypto.ts),
 * shared by aead_native_test.ts (Deno) and aead_bun_smoke.ts (Bun), so both runtimes pass the same ones.
 * Each throws an AssertionError on the first difference.
 */
import assert from "node:assert/strict";
import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { nobleAead, type TransportAead } from "../../lib/crypto.ts";
import { Verdict } from "../../lib/device.ts";
import { type ChaCha20Poly1305 } from "../../ffi/aead.ts";
import { packetAB, packetBA, pair, pump, send } from "../unit/_harness.ts";

export function hex(s: string): Uint8Array {
  const t = s.replace(/\s+/g, "");
  const out = new Uint8Array(t.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(t.slice(2 * i, 2 * i + 2), 16);
  return out;
}

const ascii = (s: string) => new TextEncoder().encode(s);

function random(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

/** The 12-byte RFC 8439 nonce WireGuard's counter stands for: 32 zero bits, then the counter LE (paper 5.4.6). */
export function wgNonce(lo: number, hi: number): Uint8Array {
  const n = new Uint8Array(12);
  const v = new DataView(n.buffer);
  v.setUint32(4, lo >>> 0, true);
  v.setUint32(8, hi >>> 0, true);
  return n;
}

// RFC 8439 section 2.8.2: the AEAD example, with associated data and a non-zero first nonce word.
const S282_KEY = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
const S282_NONCE = hex("070000004041424344454647");
const S282_AAD = hex("50515253c0c1c2c3c4c5c6c7");
const S282_PLAIN = ascii(
  "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
);
const S282_CIPHER = hex(`
  d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b1a71de0a9e060b29
  05d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116`);
const S282_TAG = hex("1ae10b594f09e26a7e902ecbd0600691");

// RFC 8439 appendix A.5: the decryption example. Its nonce starts with 32 zero bits, so it is also WireGuard's
// counter 0x0807060504030201.
const A5_KEY = hex("1c9240a5eb55d38af333888604f6b5f0473917c1402b80099dca5cbc207075c0");
const A5_NONCE = hex("000000000102030405060708");
const A5_AAD = hex("f33388860000000000004e91");
const A5_PLAIN = hex(`
  496e7465726e65742d4472616674732061726520647261667420646f63756d656e74732076616c696420666f722061206d6178696d756d
  206f6620736978206d6f6e74687320616e64206d617920626520757064617465642c207265706c616365642c206f72206f62736f6c6574
  6564206279206f7468657220646f63756d656e747320617420616e792074696d652e20497420697320696e617070726f7072696174652074
  6f2075736520496e7465726e65742d447261667473206173207265666572656e6365206d6174657269616c206f7220746f20636974652074
  68656d206f74686572207468616e206173202fe2809c776f726b20696e2070726f67726573732e2fe2809d`);
const A5_SEALED = hex(`
  64a0861575861af460f062c79be643bd5e805cfd345cf389f108670ac76c8cb24c6cfc18755d43eea09ee94e382d26b0bdb7b73c321b01
  00d4f03b7f355894cf332f830e710b97ce98c8a84abd0b948114ad176e008d33bd60f982b1ff37c8559797a06ef4f0ef61c186324e2b3506
  383606907b6a7c02b0f9f6157b53c867e4b9166c767b804d46a59b5216cde7a4e99040c5a40433225ee282a1b0a06c523eaf4534d7f83fa1
  155b0047718cbc546a0d072b04b3564eea1b422273f548271a0bb2316053fa76991955ebd63159434ecebb4e466dae5a1073a6727627097a
  1049e617d91d361094fa68f0ff77987130305beaba2eda04df997b714d6c6f2c29a6ad5cb4022b02709b
  eead9d67890cbb22392336fea1851f38`);

/** RFC 8439 section 2.8.2 and appendix A.5, in place at an offset, the tag in a buffer of its own. */
export function rfcVectors(c: ChaCha20Poly1305): void {
  const buf = new Uint8Array(9 + S282_PLAIN.length + 5).fill(0xaa);
  buf.set(S282_PLAIN, 9);
  const tag = new Uint8Array(20).fill(0xbb);
  c.seal(S282_KEY, S282_NONCE, buf, 9, S282_PLAIN.length, tag, 3, S282_AAD);
  assert.deepEqual(buf.subarray(9, 9 + S282_PLAIN.length), S282_CIPHER, `${c.library}: 2.8.2 ciphertext`);
  assert.deepEqual(tag.subarray(3, 19), S282_TAG, `${c.library}: 2.8.2 tag`);
  assert.ok(
    buf.subarray(0, 9).every((x) => x === 0xaa) &&
      buf.subarray(9 + S282_PLAIN.length).every((x) => x === 0xaa),
  );
  assert.ok(
    tag.subarray(0, 3).every((x) => x === 0xbb) && tag[19] === 0xbb,
    "nothing written around the tag",
  );
  assert.equal(c.open(S282_KEY, S282_NONCE, buf, 9, S282_PLAIN.length, tag, 3, S282_AAD), true);
  assert.deepEqual(buf.subarray(9, 9 + S282_PLAIN.length), S282_PLAIN);

  const ct = A5_SEALED.slice(0, A5_PLAIN.length);
  assert.equal(c.open(A5_KEY, A5_NONCE, ct, 0, ct.length, A5_SEALED, ct.length, A5_AAD), true, "A.5 opens");
  assert.deepEqual(ct, A5_PLAIN, `${c.library}: A.5 plaintext`);
  const again = new Uint8Array(A5_PLAIN.length + 16);
  again.set(A5_PLAIN);
  c.seal(A5_KEY, A5_NONCE, again, 0, A5_PLAIN.length, again, A5_PLAIN.length, A5_AAD);
  assert.deepEqual(again, A5_SEALED, `${c.library}: A.5 sealed`);
}

/** A flipped bit anywhere, other associated data, nonce or key: refused, and the data left as it was. */
export function tamperRejected(c: ChaCha20Poly1305): void {
  const plain = A5_PLAIN;
  const sealed = A5_SEALED;
  const n = plain.length;
  const tryOpen = (data: Uint8Array, tagBuf: Uint8Array, key = A5_KEY, nonce = A5_NONCE, ad = A5_AAD) => {
    const before = data.slice();
    const ok = c.open(key, nonce, data, 0, n, tagBuf, n, ad);
    if (!ok) assert.deepEqual(data, before, `${c.library}: a refused open leaves the data as it was`);
    return ok;
  };
  for (const at of [0, 1, n >> 1, n - 1, n, n + 7, n + 15]) {
    const bad = sealed.slice();
    bad[at]! ^= 0x80;
    assert.equal(tryOpen(bad, bad), false, `${c.library}: flipped bit at ${at}`);
  }
  assert.equal(tryOpen(sealed.slice(), sealed, A5_KEY, A5_NONCE, A5_AAD.subarray(1)), false, "other AAD");
  assert.equal(
    tryOpen(sealed.slice(), sealed, A5_KEY, hex("000000000102030405060709")),
    false,
    "other nonce",
  );
  assert.equal(tryOpen(sealed.slice(), sealed, S282_KEY), false, "other key");
  assert.equal(tryOpen(sealed.slice(), sealed), true, "the untouched message still opens");
}

/** Arguments that would let C touch memory outside the buffers are refused before any call. */
export function badArgumentsRefused(c: ChaCha20Poly1305): void {
  const buf = new Uint8Array(64);
  const key = new Uint8Array(32), nonce = new Uint8Array(12);
  assert.throws(() => c.seal(new Uint8Array(31), nonce, buf, 0, 16, buf, 16), RangeError);
  assert.throws(() => c.seal(key, new Uint8Array(8), buf, 0, 16, buf, 16), RangeError);
  assert.throws(() => c.seal(key, nonce, buf, 60, 8, buf, 0), RangeError);
  assert.throws(() => c.seal(key, nonce, buf, -1, 8, buf, 16), RangeError);
  assert.throws(() => c.seal(key, nonce, buf, 0.5, 8, buf, 16), RangeError);
  assert.throws(() => c.seal(key, nonce, buf, 0, 16, buf, 49), RangeError);
  assert.throws(() => c.open(key, nonce, buf, 0, 65, buf, 0), RangeError);
}

/**
 * Every length from 0 to `maxLen` (stepping by `step`): a random message sealed by `aead` equals nobleAead's
 * and the reference construction's bytes, opens with nobleAead, and what nobleAead seals opens with `aead`.
 */
export function agreesWithNoble(aead: TransportAead, maxLen = 1500, step = 1): void {
  const key = random(32);
  const counters = random(8 * (maxLen + 1));
  for (let len = 0; len <= maxLen; len += step) {
    const lo = readU32(counters, 8 * len), hi = readU32(counters, 8 * len + 4);
    const plain = random(len);
    const off = len % 7; // in place at an offset, as the data path uses it
    const a = new Uint8Array(off + len + 16 + 3);
    a.set(plain, off);
    const b = a.slice();
    aead.seal(key, lo, hi, a, off, len);
    nobleAead.seal(key, lo, hi, b, off, len);
    assert.deepEqual(a, b, `${aead.name} and noble seal alike, length ${len}, counter ${hi}:${lo}`);
    if (len % 97 === 0) {
      const want = chacha20poly1305(key, wgNonce(lo, hi)).encrypt(plain);
      assert.deepEqual(a.subarray(off, off + len + 16), want, `reference, length ${len}`);
    }
    assert.equal(nobleAead.open(key, lo, hi, a, off, len + 16), true, `noble opens ${aead.name}'s, ${len}`);
    assert.deepEqual(a.subarray(off, off + len), plain);
    assert.equal(aead.open(key, lo, hi, b, off, len + 16), true, `${aead.name} opens noble's, ${len}`);
    assert.deepEqual(b.subarray(off, off + len), plain);
  }
}

function readU32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

/** Wrong counters (either half), a wrong key, a flipped bit, a message shorter than a tag: all refused. */
export function transportRejects(aead: TransportAead): void {
  const key = random(32);
  for (const [lo, hi] of [[0, 0], [1, 0], [0xffffffff, 0], [0, 1], [0xffffdfff, 0xffffffff]] as const) {
    const sealed = new Uint8Array(100 + 16);
    sealed.set(random(100));
    aead.seal(key, lo, hi, sealed, 0, 100);
    const opens = (k: Uint8Array, l: number, h: number, data = sealed.slice()) => {
      const before = data.slice();
      const ok = aead.open(k, l, h, data, 0, data.length);
      if (!ok) assert.deepEqual(data, before, `${aead.name}: refusal leaves the buffer as it was`);
      return ok;
    };
    assert.equal(opens(key, (lo + 1) >>> 0, hi), false, `${aead.name}: counter ${hi}:${lo} + 1`);
    assert.equal(opens(key, lo, (hi ^ 0x80000000) >>> 0), false, `${aead.name}: high half differs`);
    assert.equal(opens(random(32), lo, hi), false, `${aead.name}: other key`);
    for (const at of [0, 99, 100, 115]) {
      const bad = sealed.slice();
      bad[at]! ^= 1;
      assert.equal(opens(key, lo, hi, bad), false, `${aead.name}: flipped bit at ${at}`);
    }
    assert.equal(opens(key, lo, hi), true);
  }
  assert.equal(aead.open(key, 0, 0, new Uint8Array(15), 0, 15), false, "shorter than a tag");
}

/**
 * Two devices (lib/device.ts through the unit-test harness) with the given backends: a handshake each way and
 * data of several sizes, so the native backend is checked on the real data path and on the wire against noble.
 */
export function deviceExchange(aeadA: TransportAead, aeadB: TransportAead): void {
  const { a, b } = pair({ optsA: { aead: aeadA }, optsB: { aead: aeadB } });
  assert.equal(a.device.aead, aeadA);
  assert.equal(b.device.aead, aeadB);
  const first = packetAB(1, 100);
  assert.equal(send(a, first).verdict, Verdict.Queued);
  pump(a, b);
  assert.deepEqual(b.delivered, [first], "the staged packet arrives after the handshake");
  for (const size of [0, 1, 15, 16, 17, 63, 64, 500, 1380]) {
    const ab = packetAB(size, size), ba = packetBA(size, size);
    for (const [from, to, p] of [[a, b, ab], [b, a, ba]] as const) {
      const r = send(from, p);
      assert.equal(r.verdict, Verdict.Send, `${size} bytes sent in place`);
      const buf = r.datagram!.slice();
      assert.equal(to.device.handleDatagram(buf, 0, buf.length, from.endpoint), Verdict.Deliver);
      const o = to.device.out;
      assert.deepEqual(buf.slice(o.offset, o.offset + o.length), p, `${size} bytes arrive intact`);
    }
  }
  // A datagram altered in flight is dropped by the receiving backend.
  const r = send(a, packetAB(9, 200));
  const bad = r.datagram!.slice();
  bad[bad.length - 1]! ^= 1;
  assert.equal(b.device.handleDatagram(bad, 0, bad.length, a.endpoint), Verdict.DropDecrypt);
}

/**
 * Messages whose keys change from one to the next, in both directions (seal and open), and a key that comes
 * back: a backend that keeps the last key (ffi/aead_cc.ts sets it only when it changes) must notice every
 * change. Each sealed message is compared with nobleAead's.
 */
export function alternatingKeys(aead: TransportAead): void {
  const keys = [random(32), random(32), random(32)];
  // Keys differing in their last byte only: a comparison that stops early would miss it.
  keys.push(keys[0]!.slice());
  keys[3]![31]! ^= 1;
  const order = [0, 0, 1, 0, 2, 2, 3, 0, 3, 1, 1, 0];
  for (let i = 0; i < order.length; i++) {
    const key = keys[order[i]!]!;
    const plain = random(40 + i);
    const a = new Uint8Array(plain.length + 16);
    a.set(plain);
    const b = a.slice();
    aead.seal(key, i, 0, a, 0, plain.length);
    nobleAead.seal(key, i, 0, b, 0, plain.length);
    assert.deepEqual(a, b, `${aead.name}: message ${i} sealed with key ${order[i]}`);
    // Opened with the key of the next message first (refused), then with its own.
    const next = keys[order[(i + 1) % order.length]!]!;
    if (next !== key) assert.equal(aead.open(next, i, 0, b.slice(), 0, b.length), false, `other key, ${i}`);
    assert.equal(aead.open(key, i, 0, b, 0, b.length), true, `${aead.name}: message ${i} opens`);
    assert.deepEqual(b.subarray(0, plain.length), plain);
  }
}
