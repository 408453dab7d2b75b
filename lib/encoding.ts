/**
 * Keys as text: the 64 hex digits of the UAPI and the 44 base64 characters of config files and `wg genkey`,
 * named after wireguard-tools' encoding.c. Constant time, as there (no table lookups or branches on key bits):
 * keys are secret, and their text forms pass through here.
 * @module
 */

import { NOISE_PUBLIC_KEY_LEN } from "./messages.ts";

const KEY_LEN = NOISE_PUBLIC_KEY_LEN;

/** 64 lowercase hex digits. */
export function keyToHex(key: Uint8Array): string {
  const codes = new Array<number>(2 * key.length);
  for (let i = 0; i < key.length; i++) {
    codes[2 * i] = hexDigit(key[i]! >> 4);
    codes[2 * i + 1] = hexDigit(key[i]! & 0xf);
  }
  return String.fromCharCode(...codes);
}

/** `n` in 0..15 → char code of 0-9a-f: 'a' - 10 + n, minus 39 more when n < 10. */
function hexDigit(n: number): number {
  return 87 + n + (((n - 10) >> 8) & ~38);
}

/** Exactly 64 hex digits, either case → 32 bytes; anything else → null. */
export function keyFromHex(s: string): Uint8Array | null {
  if (s.length !== 2 * KEY_LEN) return null;
  const out = new Uint8Array(KEY_LEN);
  let bad = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const num = c ^ 0x30; // '0'..'9' → 0..9
    const isNum = (num - 10) >>> 31;
    const alpha = (c & ~0x20) - 55; // 'A'..'F' and 'a'..'f' → 10..15
    const isAlpha = ((alpha - 10) ^ (alpha - 16)) >>> 31;
    bad |= 1 ^ (isNum | isAlpha);
    out[i >> 1]! |= ((-isNum & num) | (-isAlpha & alpha)) << (4 * (1 - (i & 1)));
  }
  return bad === 0 ? out : null;
}

/** 44 characters of standard base64 (one `=`), as `wg genkey` prints keys. */
export function keyToBase64(key: Uint8Array): string {
  const codes: number[] = [];
  for (let i = 0; i < key.length; i += 3) {
    const b0 = key[i]!, b1 = key[i + 1] ?? 0, b2 = key[i + 2] ?? 0;
    codes.push(b64Digit(b0 >> 2), b64Digit(((b0 << 4) | (b1 >> 4)) & 63));
    codes.push(i + 1 < key.length ? b64Digit(((b1 << 2) | (b2 >> 6)) & 63) : 61);
    codes.push(i + 2 < key.length ? b64Digit(b2 & 63) : 61);
  }
  return String.fromCharCode(...codes);
}

/** `v` in 0..63 → char code in A-Z a-z 0-9 + /, each step adding the distance to the next range. */
function b64Digit(v: number): number {
  return 65 + v + (((25 - v) >> 8) & 6) - (((51 - v) >> 8) & 75) - (((61 - v) >> 8) & 15) +
    (((62 - v) >> 8) & 3);
}

/** 1 if lo <= c <= hi, else 0. */
function inRange(c: number, lo: number, hi: number): number {
  return ((lo - 1 - c) & (c - hi - 1)) >>> 31;
}

/** Char code → 0..63, or -1 if it is not a base64 digit. */
function b64Value(c: number): number {
  const upper = inRange(c, 65, 90), lower = inRange(c, 97, 122), digit = inRange(c, 48, 57);
  const plus = inRange(c, 43, 43), slash = inRange(c, 47, 47);
  const v = (-upper & (c - 65)) | (-lower & (c - 71)) | (-digit & (c + 4)) | (-plus & 62) | (-slash & 63);
  return v | ((upper | lower | digit | plus | slash) - 1);
}

/**
 * Standard base64 of exactly 32 bytes: 44 characters ending in a single `=`, with the unused low bits of the
 * last digit zero (the one canonical spelling, as wg(8) requires) → the key; anything else → null.
 */
export function keyFromBase64(s: string): Uint8Array | null {
  if (s.length !== 44 || s[43] !== "=") return null;
  const out = new Uint8Array(KEY_LEN);
  let acc = 0, bits = 0, o = 0, bad = 0;
  for (let i = 0; i < 43; i++) {
    const v = b64Value(s.charCodeAt(i));
    bad |= v >>> 31;
    acc = ((acc << 6) | (v & 63)) & 0xffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  bad |= acc & ((1 << bits) - 1); // 43 digits carry 258 bits: the last 2 must be zero
  return bad === 0 ? out : null;
}
