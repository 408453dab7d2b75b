/**
 * X25519 (RFC 7748) from libsodium: `crypto_scalarmult_curve25519` and its base-point variant. Both clamp the
 * scalar as RFC 7748 section 5 says, and the first refuses (returns -1) when the result is all zeros, the sign of
 * a low-order point.
 * @module
 */

import { openLibrary } from "./runtime.ts";
import { LIBSODIUM } from "./aead.ts";

/** Curve25519 scalar multiplication over caller-owned 32-byte buffers. */
export interface NativeX25519 {
  /** The file it was loaded from. */
  readonly path: string;
  /** q = n·p; false when the result is all zeros. */
  scalarMult(q: Uint8Array, n: Uint8Array, p: Uint8Array): boolean;
  /** q = n·B, B the base point (u = 9). */
  scalarMultBase(q: Uint8Array, n: Uint8Array): void;
  close(): void;
}

/** Length of scalars, points and results. */
export const X25519_LEN = 32;

function check32(what: string, b: Uint8Array): void {
  if (b.length !== X25519_LEN) {
    throw new RangeError(`X25519 ${what} must be ${X25519_LEN} bytes, got ${b.length}`);
  }
}

/**
 * Loads libsodium's X25519.
 * @throws Error when libsodium is missing or fails to initialise
 */
export function openX25519(): NativeX25519 {
  const lib = openLibrary(LIBSODIUM, {
    sodium_init: { args: [], result: "i32" },
    mult: { name: "crypto_scalarmult_curve25519", args: ["buffer", "buffer", "buffer"], result: "i32" },
    base: { name: "crypto_scalarmult_curve25519_base", args: ["buffer", "buffer"], result: "i32" },
  });
  if (lib.symbols.sodium_init() < 0) {
    lib.close();
    throw new Error(`${LIBSODIUM}: sodium_init() failed`);
  }
  const { mult, base } = lib.symbols;
  return {
    path: LIBSODIUM,
    scalarMult(q, n, p) {
      check32("result", q);
      check32("scalar", n);
      check32("point", p);
      return mult(q, n, p) === 0;
    },
    scalarMultBase(q, n) {
      check32("result", q);
      check32("scalar", n);
      if (base(q, n) !== 0) throw new Error("crypto_scalarmult_curve25519_base failed");
    },
    close: () => lib.close(),
  };
}
