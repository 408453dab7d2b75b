/**
 * ChaCha20-Poly1305 from a native library: the IETF construction of RFC 8439 section 2.8 (256-bit key, 96-bit
 * nonce, 128-bit tag), in place and with a detached tag. OpenSSL's libcrypto (its EVP interface) is used when it
 * is installed, else libsodium; which one is decided when {@link openChaCha20Poly1305} loads it.
 *
 * Why libcrypto first: OpenSSL carries ChaCha20 and Poly1305 in assembly for each vector extension (AVX2,
 * AVX-512, NEON) and picks one at run time; libsodium's Poly1305 has no AVX-512 path, and its detached decrypt
 * must run twice over the data here (check the tag, then decrypt, see openSodium). Measured on the 2-core
 * AVX-512 VMs this is developed on (`deno bench -A bench/core_bench.ts`): seal of 1420 bytes 0.90 µs with
 * libcrypto against 1.6 µs with libsodium, and one packet out and back in (encap+decap 1420 B) 2.2 µs against
 * 3.9 µs, even though EVP takes four calls per message where libsodium takes one or two. On Bun, the daemon
 * replaces this four-call path with ffi/aead_cc.ts's compiled helper (one call per message) once it is up.
 *
 * Calls allocate nothing once warm, and keep to the fast FFI paths of both runtimes:
 * - a 64-bit argument stays on V8's fast call path only when it is a bigint; a number sends the whole call
 *   down the slow path, about 0.25 µs more per call. Lengths are therefore passed as bigints from a table
 *   filled on first use, and NULL pointers as `0n`. Bun converts either at the same speed.
 * - pointers into the middle of a buffer are passed as views (`buffer` arguments). A fresh subarray per call
 *   is an allocation; views are kept per buffer and offset instead. The daemon lays datagrams out back to back
 *   in one large buffer (so the kernel can send or receive them as one GSO/GRO run), and a steady stream comes
 *   back to the same few hundred offsets batch after batch.
 * - the tag goes through a preallocated 16-byte scratch buffer, copied in JavaScript, so the caller's tag may
 *   sit anywhere (for WireGuard, right after the ciphertext).
 * @module
 */

import { openLibrary } from "./runtime.ts";

/** Key length in bytes (RFC 8439 section 2.8). */
export const CHACHA20POLY1305_KEY_LEN = 32;
/** Nonce length in bytes (RFC 8439 section 2.8: 96 bits, the IETF variant). */
export const CHACHA20POLY1305_NONCE_LEN = 12;
/** Tag length in bytes (RFC 8439 section 2.5: a 128-bit Poly1305 tag). */
export const CHACHA20POLY1305_TAG_LEN = 16;

/** The libraries tried: libcrypto first (see the module notes), then libsodium. */
export const LIBSODIUM = "libsodium.so.23";
export const LIBCRYPTO = "libcrypto.so.3";

/** Which native library provides the cipher. */
export type NativeAeadLibrary = "libsodium" | "libcrypto";

/** ChaCha20-Poly1305 over caller-owned bytes, with no allocation per call. */
export interface ChaCha20Poly1305 {
  /** The library in use. */
  readonly library: NativeAeadLibrary;
  /** The file it was loaded from. */
  readonly path: string;
  /**
   * Foreign calls per sealed message: 4 for EVP driven from here, 1 for libsodium and for the compiled helper
   * of ffi/aead_cc.ts (which drives EVP from C).
   */
  readonly calls: number;
  /**
   * Encrypts `buf[off, off+len)` in place and writes the 16-byte tag to `tag[tagOff, tagOff+16)`.
   * @param ad additional authenticated data (RFC 8439 section 2.8), none if omitted
   */
  seal(
    key: Uint8Array,
    nonce: Uint8Array,
    buf: Uint8Array,
    off: number,
    len: number,
    tag: Uint8Array,
    tagOff: number,
    ad?: Uint8Array,
  ): void;
  /**
   * Checks the tag at `tag[tagOff, tagOff+16)` and decrypts `buf[off, off+len)` in place.
   * @returns false if the tag is wrong, the data then left as it was
   */
  open(
    key: Uint8Array,
    nonce: Uint8Array,
    buf: Uint8Array,
    off: number,
    len: number,
    tag: Uint8Array,
    tagOff: number,
    ad?: Uint8Array,
  ): boolean;
  /** Frees the library's state and closes it. */
  close(): void;
}

// ---- allocation-free arguments ------------------------------------------------------------------------

/** Lengths below this (any UDP payload) are cached as bigints; longer ones are converted per call. */
const CACHED_LENGTHS = 1 << 16;
const bigLengths: (bigint | undefined)[] = new Array(CACHED_LENGTHS);

function u64(n: number): bigint {
  if (n >= CACHED_LENGTHS) return BigInt(n);
  return bigLengths[n] ?? (bigLengths[n] = BigInt(n));
}

/** Views kept per buffer before that buffer's cache starts over (a bound on memory, not a tuning knob). */
const MAX_VIEWS_PER_BUFFER = 4096;
/** Per buffer, views by offset (a WeakMap: it never keeps a buffer alive). */
const views = new WeakMap<Uint8Array, Map<number, Uint8Array>>();

/** `buf.subarray(off)`, made once per buffer and offset. Only its start matters to C. */
function viewAt(buf: Uint8Array, off: number): Uint8Array {
  let byOffset = views.get(buf);
  if (byOffset === undefined) views.set(buf, byOffset = new Map());
  let v = byOffset.get(off);
  if (v === undefined) {
    if (byOffset.size >= MAX_VIEWS_PER_BUFFER) byOffset.clear();
    v = buf.subarray(off);
    byOffset.set(off, v);
  }
  return v;
}

const NO_AD = new Uint8Array(0);

/** Refuses anything that would let C read or write outside the caller's buffers (also for ffi/aead_cc.ts). */
export function checkArgs(
  key: Uint8Array,
  nonce: Uint8Array,
  buf: Uint8Array,
  off: number,
  len: number,
  tag: Uint8Array,
  tagOff: number,
): void {
  if (key.length !== CHACHA20POLY1305_KEY_LEN) {
    throw new RangeError(
      `ChaCha20-Poly1305 key must be ${CHACHA20POLY1305_KEY_LEN} bytes, got ${key.length}`,
    );
  }
  if (nonce.length !== CHACHA20POLY1305_NONCE_LEN) {
    throw new RangeError(
      `ChaCha20-Poly1305 nonce must be ${CHACHA20POLY1305_NONCE_LEN} bytes, got ${nonce.length}`,
    );
  }
  // `x >>> 0 === x` holds exactly for the integers 0 … 2^32-1.
  if (off >>> 0 !== off || len >>> 0 !== len || off + len > buf.length) {
    throw new RangeError(`data [${off}, ${off}+${len}) is outside a buffer of ${buf.length} bytes`);
  }
  if (tagOff >>> 0 !== tagOff || tagOff + CHACHA20POLY1305_TAG_LEN > tag.length) {
    throw new RangeError(`tag at ${tagOff} does not fit a buffer of ${tag.length} bytes`);
  }
}

// ---- libsodium ----------------------------------------------------------------------------------------

function openSodium(): ChaCha20Poly1305 {
  const lib = openLibrary(LIBSODIUM, {
    sodium_init: { args: [], result: "i32" },
    // (c, mac, maclen_p, m, mlen, ad, adlen, nsec, npub, k); c may equal m (in place).
    encrypt: {
      name: "crypto_aead_chacha20poly1305_ietf_encrypt_detached",
      args: ["buffer", "buffer", "usize", "buffer", "u64", "buffer", "u64", "usize", "buffer", "buffer"],
      result: "i32",
    },
    // (m, nsec, c, clen, mac, ad, adlen, npub, k) with m NULL only checks the tag (with m set, a wrong tag
    // would zero m, and open() promises to leave the data as it was).
    verify: {
      name: "crypto_aead_chacha20poly1305_ietf_decrypt_detached",
      args: ["usize", "usize", "buffer", "u64", "buffer", "buffer", "u64", "buffer", "buffer"],
      result: "i32",
    },
    // (c, m, mlen, n, ic, k): the ChaCha20 keystream from block `ic` on (RFC 8439 section 2.8: block 0 made
    // the Poly1305 key, the data uses the blocks from 1).
    xor: {
      name: "crypto_stream_chacha20_ietf_xor_ic",
      args: ["buffer", "buffer", "u64", "buffer", "u32", "buffer"],
      result: "i32",
    },
  });
  // sodium_init picks the fastest implementation for this CPU; 1 means it already ran, -1 that it failed.
  if (lib.symbols.sodium_init() < 0) {
    lib.close();
    throw new Error(`${LIBSODIUM}: sodium_init() failed`);
  }
  const { encrypt, verify, xor } = lib.symbols;
  const tagScratch = new Uint8Array(CHACHA20POLY1305_TAG_LEN);
  return {
    library: "libsodium",
    path: LIBSODIUM,
    calls: 1,
    seal(key, nonce, buf, off, len, tag, tagOff, ad = NO_AD) {
      checkArgs(key, nonce, buf, off, len, tag, tagOff);
      const data = viewAt(buf, off);
      if (encrypt(data, tagScratch, 0n, data, u64(len), ad, u64(ad.length), 0n, nonce, key) !== 0) {
        throw new Error("crypto_aead_chacha20poly1305_ietf_encrypt_detached failed");
      }
      tag.set(tagScratch, tagOff);
    },
    open(key, nonce, buf, off, len, tag, tagOff, ad = NO_AD) {
      checkArgs(key, nonce, buf, off, len, tag, tagOff);
      for (let i = 0; i < CHACHA20POLY1305_TAG_LEN; i++) tagScratch[i] = tag[tagOff + i]!;
      const data = viewAt(buf, off);
      if (verify(0n, 0n, data, u64(len), tagScratch, ad, u64(ad.length), nonce, key) !== 0) return false;
      if (len > 0 && xor(data, data, u64(len), nonce, 1, key) !== 0) {
        throw new Error("crypto_stream_chacha20_ietf_xor_ic failed");
      }
      return true;
    },
    close: () => lib.close(),
  };
}

// ---- OpenSSL libcrypto (EVP) --------------------------------------------------------------------------

/** From openssl/evp.h. */
const EVP_CTRL_AEAD_GET_TAG = 0x10;
const EVP_CTRL_AEAD_SET_TAG = 0x11;

function openLibcrypto(): ChaCha20Poly1305 {
  const lib = openLibrary(LIBCRYPTO, {
    EVP_chacha20_poly1305: { args: [], result: "pointer" },
    EVP_CIPHER_CTX_new: { args: [], result: "pointer" },
    EVP_CIPHER_CTX_free: { args: ["pointer"], result: "void" },
    // Contexts are passed as addresses (bigints held for the library's life) rather than as pointer objects,
    // so calls need no conversion. `setup` chooses the cipher with no key yet (NULL key and IV); `init` then
    // sets key and nonce per message, its NULL cipher and engine keeping what `setup` chose.
    setup: {
      name: "EVP_CipherInit_ex",
      args: ["usize", "usize", "usize", "usize", "usize", "i32"],
      result: "i32",
    },
    init: {
      name: "EVP_CipherInit_ex",
      args: ["usize", "usize", "usize", "buffer", "buffer", "i32"],
      result: "i32",
    },
    update: { name: "EVP_CipherUpdate", args: ["usize", "buffer", "buffer", "buffer", "i32"], result: "i32" },
    // With a NULL output, EVP_CipherUpdate takes its input as additional authenticated data.
    updateAd: {
      name: "EVP_CipherUpdate",
      args: ["usize", "usize", "buffer", "buffer", "i32"],
      result: "i32",
    },
    final: { name: "EVP_CipherFinal_ex", args: ["usize", "buffer", "buffer"], result: "i32" },
    ctrl: { name: "EVP_CIPHER_CTX_ctrl", args: ["usize", "i32", "i32", "buffer"], result: "i32" },
  });
  const s = lib.symbols;
  const cipher = s.EVP_chacha20_poly1305();
  if (cipher === 0n) {
    lib.close();
    throw new Error(`${LIBCRYPTO}: EVP_chacha20_poly1305() is not available (OpenSSL built without it)`);
  }
  // One context per direction, so neither has to switch between encrypting and decrypting.
  const contexts: bigint[] = [];
  const newContext = (enc: 0 | 1): bigint => {
    const ctx = s.EVP_CIPHER_CTX_new();
    if (ctx === 0n) throw new Error(`${LIBCRYPTO}: EVP_CIPHER_CTX_new() failed`);
    contexts.push(ctx);
    if (s.setup(ctx, cipher, 0n, 0n, 0n, enc) !== 1) {
      throw new Error(`${LIBCRYPTO}: EVP_CipherInit_ex(chacha20-poly1305) failed`);
    }
    return ctx;
  };
  const freeAll = () => {
    for (const c of contexts.splice(0)) s.EVP_CIPHER_CTX_free(c);
    lib.close();
  };
  let sealCtx: bigint, openCtx: bigint;
  try {
    sealCtx = newContext(1);
    openCtx = newContext(0);
  } catch (e) {
    freeAll();
    throw e;
  }
  const tagScratch = new Uint8Array(CHACHA20POLY1305_TAG_LEN);
  const outLen = new Int32Array(1);
  const finalOut = new Uint8Array(CHACHA20POLY1305_TAG_LEN);
  // The default IV length of EVP_chacha20_poly1305 is 12 bytes, the RFC 8439 nonce: nothing to set.
  const start = (ctx: bigint, key: Uint8Array, nonce: Uint8Array, enc: 0 | 1, ad: Uint8Array): void => {
    if (s.init(ctx, 0n, 0n, key, nonce, enc) !== 1) throw new Error("EVP_CipherInit_ex failed");
    if (ad.length > 0 && s.updateAd(ctx, 0n, outLen, ad, ad.length) !== 1) {
      throw new Error("EVP_CipherUpdate (AAD) failed");
    }
  };
  return {
    library: "libcrypto",
    path: LIBCRYPTO,
    calls: 4,
    seal(key, nonce, buf, off, len, tag, tagOff, ad = NO_AD) {
      checkArgs(key, nonce, buf, off, len, tag, tagOff);
      start(sealCtx, key, nonce, 1, ad);
      const data = viewAt(buf, off);
      // EVP_CipherUpdate allows its output to be exactly its input (in place).
      if (len > 0 && s.update(sealCtx, data, outLen, data, len) !== 1) {
        throw new Error("EVP_CipherUpdate failed");
      }
      if (s.final(sealCtx, finalOut, outLen) !== 1) throw new Error("EVP_CipherFinal_ex failed");
      if (s.ctrl(sealCtx, EVP_CTRL_AEAD_GET_TAG, CHACHA20POLY1305_TAG_LEN, tagScratch) !== 1) {
        throw new Error("EVP_CIPHER_CTX_ctrl(EVP_CTRL_AEAD_GET_TAG) failed");
      }
      tag.set(tagScratch, tagOff);
    },
    open(key, nonce, buf, off, len, tag, tagOff, ad = NO_AD) {
      checkArgs(key, nonce, buf, off, len, tag, tagOff);
      for (let i = 0; i < CHACHA20POLY1305_TAG_LEN; i++) tagScratch[i] = tag[tagOff + i]!;
      start(openCtx, key, nonce, 0, ad);
      if (s.ctrl(openCtx, EVP_CTRL_AEAD_SET_TAG, CHACHA20POLY1305_TAG_LEN, tagScratch) !== 1) {
        throw new Error("EVP_CIPHER_CTX_ctrl(EVP_CTRL_AEAD_SET_TAG) failed");
      }
      const data = viewAt(buf, off);
      if (len > 0 && s.update(openCtx, data, outLen, data, len) !== 1) {
        throw new Error("EVP_CipherUpdate failed");
      }
      // EVP_CipherFinal_ex compares the tag: 1 if it matches, 0 if not.
      if (s.final(openCtx, finalOut, outLen) === 1) return true;
      // OpenSSL decrypted while it authenticated. ChaCha20 is an XOR with a keystream that depends only on
      // key and nonce, so running the same keystream over the bytes again restores the ciphertext.
      if (len > 0) {
        start(sealCtx, key, nonce, 1, NO_AD);
        s.update(sealCtx, data, outLen, data, len);
        s.final(sealCtx, finalOut, outLen);
      }
      return false;
    },
    close: freeAll,
  };
}

/**
 * Loads a native ChaCha20-Poly1305.
 * @param library which library to use; without it libcrypto, else libsodium
 * @returns the cipher
 * @throws Error naming each library tried and why it could not be used
 */
export function openChaCha20Poly1305(library?: NativeAeadLibrary): ChaCha20Poly1305 {
  const tries: [NativeAeadLibrary, string, () => ChaCha20Poly1305][] = [
    ["libcrypto", LIBCRYPTO, openLibcrypto],
    ["libsodium", LIBSODIUM, openSodium],
  ];
  const reasons: string[] = [];
  for (const [name, path, open] of tries) {
    if (library !== undefined && library !== name) continue;
    try {
      return open();
    } catch (e) {
      // Deno repeats its "Could not open library: " prefix; the dlerror text after it is what matters.
      const msg = (e instanceof Error ? e.message : String(e)).replace(/^(Could not open library: )+/, "");
      reasons.push(msg.startsWith(path) ? msg : `${path}: ${msg}`);
    }
  }
  const install = library === "libsodium"
    ? "install libsodium (Debian: libsodium23)"
    : library === "libcrypto"
    ? "install OpenSSL 3 (Debian: libssl3)"
    : "install OpenSSL 3 (Debian: libssl3) or libsodium (Debian: libsodium23)";
  throw new Error(`no native ChaCha20-Poly1305 (${reasons.join("; ")}): ${install}`);
}
