/**
 * The cryptographic primitives of the WireGuard paper (section 5.4), named as the paper names them, over the
 * audited noble libraries. Nothing here reads a clock or an RNG of its own: both are passed in.
 * @module
 */
import { x25519 } from "@noble/curves/ed25519.js";
import { blake2s } from "@noble/hashes/blake2.js";
import { hmac } from "@noble/hashes/hmac.js";
import { chacha20, xchacha20poly1305 } from "@noble/ciphers/chacha.js";
import { Poly1305 } from "@noble/ciphers/_poly1305.js";
import { NOISE_AUTHTAG_LEN, NOISE_PUBLIC_KEY_LEN, NOISE_TIMESTAMP_LEN } from "./messages.ts";

/** Fills `out` with cryptographically secure random bytes. Injected so tests can be deterministic. */
export type Rng = (out: Uint8Array) => void;

/** Clamps a Curve25519 private key in place, as `wg genkey` does (RFC 7748 section 5). */
export function clampPrivateKey(k: Uint8Array): Uint8Array {
  k[0]! &= 248;
  k[31] = (k[31]! & 127) | 64;
  return k;
}

/** DH-Generate(): a fresh clamped private key. */
export function dhGenerate(rng: Rng): Uint8Array {
  const k = new Uint8Array(NOISE_PUBLIC_KEY_LEN);
  rng(k);
  return clampPrivateKey(k);
}

/** X25519 (RFC 7748 section 5), the function behind DH: scalar times a point, and scalar times the base point. */
export interface X25519 {
  /** e.g. "noble" or "native (libsodium)". */
  readonly name: string;
  /** The shared secret of a private scalar and a public point; null when it is all zeros or the point is bad. */
  sharedSecret(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array | null;
  /** The public key of a private scalar. */
  publicKey(privateKey: Uint8Array): Uint8Array;
}

/** X25519 in pure TypeScript (noble), always available. */
export const nobleX25519: X25519 = {
  name: "noble",
  sharedSecret(privateKey, publicKey) {
    try {
      const s = x25519.getSharedSecret(privateKey, publicKey);
      return isZero(s) ? null : s;
    } catch {
      // noble throws on an all-zero shared secret and on malformed keys; both mean "no DH".
      return null;
    }
  },
  publicKey: (privateKey) => x25519.getPublicKey(privateKey),
};

// There is no process-wide choice: like the transport AEAD, the X25519 is handed to the Device (DeviceOptions),
// which gives it to the handshake with its static identity. A native X25519 is about 20 times faster, which is
// what bounds handshakes per second (and the time to the first one, when noble's code is not yet compiled).

/** The public key of a private key, by `x` (noble's unless given). */
export function dhPublic(privateKey: Uint8Array, x: X25519 = nobleX25519): Uint8Array {
  return x.publicKey(privateKey);
}

/**
 * DH(private, public): X25519 by `x` (noble's unless given). Returns null when the result is all zeros (a
 * low-order public key), which the kernel rejects so that a peer cannot force a known shared secret.
 */
export function dh(
  privateKey: Uint8Array,
  publicKey: Uint8Array,
  x: X25519 = nobleX25519,
): Uint8Array | null {
  return x.sharedSecret(privateKey, publicKey);
}

/** HASH(input): BLAKE2s-256 over the concatenation of the inputs. */
export function hash(...inputs: Uint8Array[]): Uint8Array {
  const h = blake2s.create();
  for (const i of inputs) h.update(i);
  return h.digest();
}

/** MAC(key, input): keyed BLAKE2s with a 128-bit output. */
export function mac(key: Uint8Array, input: Uint8Array): Uint8Array {
  const out = new Uint8Array(16);
  blake2sInto(key, input, 0, input.length, out, 16);
  return out;
}

// ---- BLAKE2s (RFC 7693) over a range of a caller's buffer, allocating nothing ----
//
// MAC1 is the one check every handshake-shaped datagram gets before anything else (paper 5.4.4), so a flood of
// junk costs exactly this function. noble's BLAKE2s makes a hasher object and typed-array views per call; this
// one works in module-level scratch words instead.

/** The initialisation vector (the SHA-256 IV) and the message schedule of RFC 7693 section 2.7. */
const B2S_IV = Uint32Array.of(
  0x6a09e667,
  0xbb67ae85,
  0x3c6ef372,
  0xa54ff53a,
  0x510e527f,
  0x9b05688c,
  0x1f83d9ab,
  0x5be0cd19,
);
// deno-fmt-ignore
const B2S_SIGMA = Uint8Array.of(
  0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
  14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3,
  11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4,
  7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8,
  9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13,
  2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9,
  12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11,
  13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10,
  6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5,
  10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0,
);
const b2sH = new Uint32Array(8);
const b2sV = new Uint32Array(16);
const b2sM = new Uint32Array(16);

/** Loads the 64-byte block of `src` at `at` into the message words, little-endian, zero past `end`. */
function b2sLoad(src: Uint8Array, at: number, end: number): void {
  for (let i = 0; i < 16; i++, at += 4) {
    b2sM[i] = at + 4 <= end
      ? src[at]! | (src[at + 1]! << 8) | (src[at + 2]! << 16) | (src[at + 3]! << 24)
      : (at < end ? src[at]! : 0) | (at + 1 < end ? src[at + 1]! << 8 : 0) |
        (at + 2 < end ? src[at + 2]! << 16 : 0);
  }
}

/**
 * The mixing function G (RFC 7693 section 3.1) with BLAKE2s's rotations 16, 12, 8, 7. It takes the indices of
 * its two message words rather than the words: a 32-bit value passed to a function may be boxed as a heap
 * number, and this runs 80 times per block.
 */
function b2sG(a: number, b: number, c: number, d: number, x: number, y: number): void {
  const v = b2sV;
  v[a] = v[a]! + v[b]! + b2sM[x]!;
  let t = v[d]! ^ v[a]!;
  v[d] = (t >>> 16) | (t << 16);
  v[c] = v[c]! + v[d]!;
  t = v[b]! ^ v[c]!;
  v[b] = (t >>> 12) | (t << 20);
  v[a] = v[a]! + v[b]! + b2sM[y]!;
  t = v[d]! ^ v[a]!;
  v[d] = (t >>> 8) | (t << 24);
  v[c] = v[c]! + v[d]!;
  t = v[b]! ^ v[c]!;
  v[b] = (t >>> 7) | (t << 25);
}

/** The compression function F (RFC 7693 section 3.2) on the loaded block; `t` counts bytes so far (< 2^32). */
function b2sCompress(t: number, last: boolean): void {
  const v = b2sV, s = B2S_SIGMA;
  for (let i = 0; i < 8; i++) {
    v[i] = b2sH[i]!;
    v[i + 8] = B2S_IV[i]!;
  }
  v[12] ^= t;
  if (last) v[14] = ~v[14]!;
  for (let r = 0; r < 160; r += 16) {
    b2sG(0, 4, 8, 12, s[r]!, s[r + 1]!);
    b2sG(1, 5, 9, 13, s[r + 2]!, s[r + 3]!);
    b2sG(2, 6, 10, 14, s[r + 4]!, s[r + 5]!);
    b2sG(3, 7, 11, 15, s[r + 6]!, s[r + 7]!);
    b2sG(0, 5, 10, 15, s[r + 8]!, s[r + 9]!);
    b2sG(1, 6, 11, 12, s[r + 10]!, s[r + 11]!);
    b2sG(2, 7, 8, 13, s[r + 12]!, s[r + 13]!);
    b2sG(3, 4, 9, 14, s[r + 14]!, s[r + 15]!);
  }
  for (let i = 0; i < 8; i++) b2sH[i] = b2sH[i]! ^ v[i]! ^ v[i + 8]!;
}

/**
 * BLAKE2s of `src[off, off+len)` keyed with `key` (0 to 32 bytes), `outLen` bytes (1 to 32) written to `out`.
 * Allocates nothing; the scratch words are wiped afterwards, since they held the key.
 */
export function blake2sInto(
  key: Uint8Array,
  src: Uint8Array,
  off: number,
  len: number,
  out: Uint8Array,
  outLen: number,
): void {
  b2sH.set(B2S_IV);
  b2sH[0] = b2sH[0]! ^ 0x01010000 ^ (key.length << 8) ^ outLen;
  let t = 0;
  if (key.length > 0) {
    // The key, zero-padded, is a block of its own (the last one when there is no message).
    b2sLoad(key, 0, key.length);
    t = 64;
    b2sCompress(t, len === 0);
  }
  const end = off + len;
  let at = off;
  for (; end - at > 64; at += 64) {
    b2sLoad(src, at, end);
    t += 64;
    b2sCompress(t, false);
  }
  if (len > 0 || key.length === 0) {
    b2sLoad(src, at, end);
    t += end - at;
    b2sCompress(t, true);
  }
  for (let i = 0; i < outLen; i++) out[i] = b2sH[i >>> 2]! >>> (8 * (i & 3));
  b2sH.fill(0);
  b2sV.fill(0);
  b2sM.fill(0);
}

/** HMAC(key, input): HMAC-BLAKE2s-256 (RFC 2104). */
export function hmacBlake2s(key: Uint8Array, input: Uint8Array): Uint8Array {
  return hmac(blake2s, key, input);
}

/** KDF_n(key, input): HKDF (RFC 5869) with HMAC-BLAKE2s, returning n 32-byte outputs. */
function kdf(n: 1 | 2 | 3, key: Uint8Array, input: Uint8Array): Uint8Array[] {
  const t0 = hmacBlake2s(key, input);
  const out: Uint8Array[] = [];
  let prev: Uint8Array = new Uint8Array(0);
  for (let i = 1; i <= n; i++) {
    const block = new Uint8Array(prev.length + 1);
    block.set(prev);
    block[prev.length] = i;
    prev = hmacBlake2s(t0, block);
    block.fill(0); // it held the previous output
    out.push(prev);
  }
  t0.fill(0);
  return out;
}

export function kdf1(key: Uint8Array, input: Uint8Array): Uint8Array {
  return kdf(1, key, input)[0]!;
}

export function kdf2(key: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array] {
  const [a, b] = kdf(2, key, input);
  return [a!, b!];
}

export function kdf3(key: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array, Uint8Array] {
  const [a, b, c] = kdf(3, key, input);
  return [a!, b!, c!];
}

// ---- AEAD: ChaCha20-Poly1305 (RFC 8439) with the paper's 64-bit little-endian counter nonce ----

const POLY_KEY_ZEROS = new Uint8Array(32);
const polyKey = new Uint8Array(32);
const nonce12 = new Uint8Array(12);
const lengths = new Uint8Array(16);
const PAD = new Uint8Array(16);
const tagScratch = new Uint8Array(NOISE_AUTHTAG_LEN);

/** The nonce is 32 zero bits followed by the counter as a 64-bit little-endian integer (paper 5.4.6). */
function setNonce(counterLo: number, counterHi: number): void {
  nonce12[4] = counterLo & 0xff;
  nonce12[5] = (counterLo >>> 8) & 0xff;
  nonce12[6] = (counterLo >>> 16) & 0xff;
  nonce12[7] = (counterLo >>> 24) & 0xff;
  nonce12[8] = counterHi & 0xff;
  nonce12[9] = (counterHi >>> 8) & 0xff;
  nonce12[10] = (counterHi >>> 16) & 0xff;
  nonce12[11] = (counterHi >>> 24) & 0xff;
}

function writeLen64(off: number, n: number): void {
  // Lengths here are below 2^32, so the high word is zero.
  lengths[off] = n & 0xff;
  lengths[off + 1] = (n >>> 8) & 0xff;
  lengths[off + 2] = (n >>> 16) & 0xff;
  lengths[off + 3] = (n >>> 24) & 0xff;
  lengths[off + 4] =
    lengths[off + 5] =
    lengths[off + 6] =
    lengths[off + 7] =
      0;
}

/** The RFC 8439 section 2.8 tag over AD and ciphertext, written into `out`. */
function poly1305Tag(key: Uint8Array, ad: Uint8Array, ct: Uint8Array, out: Uint8Array): void {
  chacha20(key, nonce12, POLY_KEY_ZEROS, polyKey, 0);
  const p = new Poly1305(polyKey);
  p.update(ad);
  if (ad.length % 16) p.update(PAD.subarray(0, 16 - (ad.length % 16)));
  p.update(ct);
  if (ct.length % 16) p.update(PAD.subarray(0, 16 - (ct.length % 16)));
  writeLen64(0, ad.length);
  writeLen64(8, ct.length);
  p.update(lengths);
  p.digestInto(out);
  polyKey.fill(0);
}

/**
 * The AEAD used for transport data, in place: the hot path encrypts and decrypts inside the caller's buffer.
 * Two backends implement it (pure TypeScript here, native through FFI elsewhere); both pass the same vectors.
 */
export interface TransportAead {
  readonly name: string;
  /** Encrypts `buf[off, off+len)` in place and writes the 16-byte tag right after it. */
  seal(
    key: Uint8Array,
    counterLo: number,
    counterHi: number,
    buf: Uint8Array,
    off: number,
    len: number,
  ): void;
  /** Authenticates and decrypts `buf[off, off+len)` (tag included) in place; false if the tag is wrong. */
  open(
    key: Uint8Array,
    counterLo: number,
    counterHi: number,
    buf: Uint8Array,
    off: number,
    len: number,
  ): boolean;
}

const NO_AD = new Uint8Array(0);

/** ChaCha20-Poly1305 in pure TypeScript (noble), always available. */
export const nobleAead: TransportAead = {
  name: "noble",
  seal(key, counterLo, counterHi, buf, off, len) {
    setNonce(counterLo, counterHi);
    const data = buf.subarray(off, off + len);
    if (len > 0) chacha20(key, nonce12, data, data, 1);
    poly1305Tag(key, NO_AD, data, buf.subarray(off + len, off + len + NOISE_AUTHTAG_LEN));
  },
  open(key, counterLo, counterHi, buf, off, len) {
    if (len < NOISE_AUTHTAG_LEN) return false;
    setNonce(counterLo, counterHi);
    const ctLen = len - NOISE_AUTHTAG_LEN;
    const data = buf.subarray(off, off + ctLen);
    poly1305Tag(key, NO_AD, data, tagScratch);
    if (!equalConstantTime(tagScratch, buf.subarray(off + ctLen, off + len))) return false;
    if (ctLen > 0) chacha20(key, nonce12, data, data, 1);
    return true;
  },
};

/** AEAD(key, counter, plain, authtext) for handshake messages: returns a new ciphertext with its tag. */
export function aeadEncrypt(key: Uint8Array, counter: number, plain: Uint8Array, ad: Uint8Array): Uint8Array {
  setNonce(counter >>> 0, Math.floor(counter / 2 ** 32));
  const out = new Uint8Array(plain.length + NOISE_AUTHTAG_LEN);
  const ct = out.subarray(0, plain.length);
  if (plain.length > 0) chacha20(key, nonce12, plain, ct, 1);
  poly1305Tag(key, ad, ct, out.subarray(plain.length));
  return out;
}

/** The inverse of aeadEncrypt; null when the ciphertext or authtext was tampered with. */
export function aeadDecrypt(
  key: Uint8Array,
  counter: number,
  sealed: Uint8Array,
  ad: Uint8Array,
): Uint8Array | null {
  if (sealed.length < NOISE_AUTHTAG_LEN) return null;
  setNonce(counter >>> 0, Math.floor(counter / 2 ** 32));
  const ctLen = sealed.length - NOISE_AUTHTAG_LEN;
  const ct = sealed.subarray(0, ctLen);
  poly1305Tag(key, ad, ct, tagScratch);
  if (!equalConstantTime(tagScratch, sealed.subarray(ctLen))) return null;
  const out = new Uint8Array(ctLen);
  if (ctLen > 0) chacha20(key, nonce12, ct, out, 1);
  return out;
}

/** XAEAD(key, nonce, plain, authtext): XChaCha20-Poly1305 with a 24-byte random nonce (cookie replies). */
export function xaeadEncrypt(
  key: Uint8Array,
  nonce: Uint8Array,
  plain: Uint8Array,
  ad: Uint8Array,
): Uint8Array {
  return xchacha20poly1305(key, nonce, ad).encrypt(plain);
}

export function xaeadDecrypt(
  key: Uint8Array,
  nonce: Uint8Array,
  sealed: Uint8Array,
  ad: Uint8Array,
): Uint8Array | null {
  try {
    return xchacha20poly1305(key, nonce, ad).decrypt(sealed);
  } catch {
    return null;
  }
}

/** 2^24 ns: rounddown_pow_of_two(NSEC_PER_SEC / INITIATIONS_PER_SECOND), as the kernel's tai64n_now. */
const TAI64N_NANOS_GRAIN = 2 ** 24;

/**
 * TAI64N(): 12 bytes, big-endian TAI64 seconds (https://cr.yp.to/libtai/tai64.html: 2^62 + 10 + seconds since
 * 1970, the label the kernel and wireguard-go write), then big-endian nanoseconds. A responder keeps the
 * greatest timestamp it has seen per peer, so the label must match theirs: a peer that moved to us from
 * another implementation with the same key would otherwise have its handshakes refused for 10 seconds.
 *
 * Like the kernel, the nanoseconds are rounded down to a multiple of 2^24 (the largest power of two below
 * 1 s / INITIATIONS_PER_SECOND), so the timestamp does not leak the fine-grained clock.
 */
export function tai64n(wallMs: number): Uint8Array {
  const out = new Uint8Array(NOISE_TIMESTAMP_LEN);
  const secs = Math.floor(wallMs / 1000);
  const nanos = Math.floor(wallMs - secs * 1000) * 1_000_000;
  const v = new DataView(out.buffer);
  // 2^62 + 10 + secs: the high word carries 0x40000000 plus the seconds above 2^32 (with any carry out of the
  // low word, which holds 10 + the low 32 bits of the seconds).
  const low = 10 + (secs % 2 ** 32);
  v.setUint32(0, 0x40000000 + Math.floor(secs / 2 ** 32) + Math.floor(low / 2 ** 32));
  v.setUint32(4, low >>> 0);
  v.setUint32(8, nanos - (nanos % TAI64N_NANOS_GRAIN));
  return out;
}

/** True when `a` is a strictly later TAI64N timestamp than `b` (big-endian byte order compares as numbers). */
export function tai64nAfter(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < NOISE_TIMESTAMP_LEN; i++) {
    if (a[i] !== b[i]) return a[i]! > b[i]!;
  }
  return false;
}

/** Compares two byte strings without an early exit, so the time taken does not reveal where they differ. */
export function equalConstantTime(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

/** Compares `a` with `b[bOff, bOff + a.length)` in constant time, without making a view of `b`. */
export function equalConstantTimeAt(a: Uint8Array, b: Uint8Array, bOff: number): boolean {
  if (bOff < 0 || bOff + a.length > b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[bOff + i]!;
  return d === 0;
}

export function isZero(a: Uint8Array): boolean {
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]!;
  return d === 0;
}

/** Overwrites secrets once they are no longer needed (the kernel's memzero_explicit). */
export function zero(...arrays: (Uint8Array | null | undefined)[]): void {
  for (const a of arrays) a?.fill(0);
}
