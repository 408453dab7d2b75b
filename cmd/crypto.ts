/**
 * The transport AEAD backend: lib/'s pure TypeScript one (noble) or a native library through ffi/aead.ts
 * (OpenSSL's libcrypto, else libsodium: the faster one first, see ffi/aead.ts), chosen by `TYPETUN_CRYPTO`:
 * - unset or empty: native when a library loads, else noble;
 * - `noble`: always the pure TypeScript one;
 * - `native`: a native library, or an error saying which were tried and what to install;
 * - `libsodium` / `libcrypto`: that library only (to compare them, or to test each).
 * @module
 */
import process from "node:process";
import { nobleAead, nobleX25519, type TransportAead, type X25519 } from "../lib/crypto.ts";
import { NOISE_AUTHTAG_LEN } from "../lib/messages.ts";
import { type ChaCha20Poly1305, type NativeAeadLibrary, openChaCha20Poly1305 } from "../ffi/aead.ts";
import { openCompiledLibcrypto } from "../ffi/aead_cc.ts";
import { type NativeX25519, openX25519 } from "../ffi/x25519.ts";

/** A chosen backend and the name to show for it. */
export interface AeadSelection {
  aead: TransportAead;
  /** e.g. "native (libcrypto)" or "noble". */
  name: string;
}

/** The values `TYPETUN_CRYPTO` accepts. */
export const CRYPTO_CHOICES = ["noble", "native", "libsodium", "libcrypto"] as const;
export type CryptoChoice = (typeof CRYPTO_CHOICES)[number];

/**
 * WireGuard's transport AEAD over a native ChaCha20-Poly1305: the same bytes as lib/'s `nobleAead`.
 * The nonce is 32 zero bits then the message counter as a 64-bit little-endian integer (paper 5.4.6, RFC 8439
 * section 2.8 with the counter in the last 64 bits of the 96-bit nonce), no additional data, and the 16-byte tag
 * right after the ciphertext.
 */
export function nativeTransportAead(cipher: ChaCha20Poly1305): TransportAead {
  // One nonce buffer per backend, rewritten per message: the hot path allocates nothing.
  const nonce = new Uint8Array(12);
  const setNonce = (lo: number, hi: number) => {
    nonce[4] = lo & 0xff;
    nonce[5] = (lo >>> 8) & 0xff;
    nonce[6] = (lo >>> 16) & 0xff;
    nonce[7] = (lo >>> 24) & 0xff;
    nonce[8] = hi & 0xff;
    nonce[9] = (hi >>> 8) & 0xff;
    nonce[10] = (hi >>> 16) & 0xff;
    nonce[11] = (hi >>> 24) & 0xff;
  };
  return {
    name: `native (${cipher.library}${
      cipher.calls === 1 && cipher.library === "libcrypto" ? ", compiled" : ""
    })`,
    seal(key, counterLo, counterHi, buf, off, len) {
      setNonce(counterLo, counterHi);
      cipher.seal(key, nonce, buf, off, len, buf, off + len);
    },
    open(key, counterLo, counterHi, buf, off, len) {
      if (len < NOISE_AUTHTAG_LEN) return false;
      setNonce(counterLo, counterHi);
      const ctLen = len - NOISE_AUTHTAG_LEN;
      return cipher.open(key, nonce, buf, off, ctLen, buf, off + ctLen);
    },
  };
}

/** Parses a `TYPETUN_CRYPTO` value; undefined for "choose for me". */
export function parseCryptoChoice(value: string | undefined): CryptoChoice | undefined {
  if (value === undefined || value.trim() === "") return undefined;
  const v = value.trim().toLowerCase();
  if ((CRYPTO_CHOICES as readonly string[]).includes(v)) return v as CryptoChoice;
  throw new Error(`TYPETUN_CRYPTO must be one of ${CRYPTO_CHOICES.join(", ")} (or unset), not "${value}"`);
}

/** Native backends already loaded, so that asking twice (daemon, version) opens each library once. */
const loaded = new Map<NativeAeadLibrary | "any", TransportAead>();

function native(library?: NativeAeadLibrary): TransportAead {
  const key = library ?? "any";
  let aead = loaded.get(key);
  if (aead === undefined) {
    aead = nativeTransportAead(openChaCha20Poly1305(library));
    loaded.set(key, aead);
  }
  return aead;
}

/**
 * Chooses the transport AEAD.
 * @param value the `TYPETUN_CRYPTO` setting (by default, the environment's)
 * @returns the backend and its name
 * @throws Error when the value is not a known choice, or a native backend was asked for and cannot be loaded
 */
export function selectAead(value: string | undefined = process.env.TYPETUN_CRYPTO): AeadSelection {
  const choice = parseCryptoChoice(value);
  if (choice === "noble") return { aead: nobleAead, name: nobleAead.name };
  if (choice === undefined) {
    try {
      const aead = native();
      return { aead, name: aead.name };
    } catch {
      // No native library here: the pure TypeScript backend is always there.
      return { aead: nobleAead, name: nobleAead.name };
    }
  }
  try {
    const aead = native(choice === "native" ? undefined : choice);
    return { aead, name: aead.name };
  } catch (e) {
    throw new Error(`TYPETUN_CRYPTO=${choice}: ${e instanceof Error ? e.message : e}`);
  }
}

/** `TYPETUN_CC`: unset or 1 lets the daemon compile its one-call libcrypto helper (Bun), 0 keeps four calls. */
export function compiledAeadWanted(value = process.env.TYPETUN_CC): boolean {
  if (value === undefined || value === "" || value === "1") return true;
  if (value === "0") return false;
  throw new Error(`TYPETUN_CC must be 0 or 1, not "${value}"`);
}

let compiled: TransportAead | undefined;

/**
 * The faster form of a libcrypto selection: the same cipher through ffi/aead_cc.ts's helper, one foreign call
 * per message instead of four. Compiling it takes a few milliseconds (TinyCC), so the daemon asks for it only
 * after its UAPI answers, and keeps the selection it had until then.
 * @param current the selection in use
 * @param wanted the `TYPETUN_CC` setting (see {@link compiledAeadWanted})
 * @returns the faster selection, or the reason there is none (not libcrypto, Deno, a compile or load error;
 *   `null` when nothing applies: the backend is not libcrypto's four-call one)
 */
export function compiledAead(
  current: AeadSelection,
  wanted: string | undefined = process.env.TYPETUN_CC,
): AeadSelection | { reason: string } | null {
  if (current.name !== "native (libcrypto)") return null;
  if (!compiledAeadWanted(wanted)) return { reason: "TYPETUN_CC=0" };
  try {
    compiled ??= nativeTransportAead(openCompiledLibcrypto());
    return { aead: compiled, name: compiled.name };
  } catch (e) {
    return { reason: e instanceof Error ? e.message : String(e) };
  }
}

/**
 * The backend the daemon would use, for `typetun version`: e.g. "native (libcrypto)", "noble", or what is
 * wrong with the setting. Never throws.
 */
export function aeadBackendName(value: string | undefined = process.env.TYPETUN_CRYPTO): string {
  try {
    return selectAead(value).name;
  } catch (e) {
    return `unavailable: ${e instanceof Error ? e.message : e}`;
  }
}

/** lib/'s X25519 over libsodium's: the same results as `nobleX25519`, about 20 times faster. */
export function nativeX25519(impl: NativeX25519): X25519 {
  return {
    name: "native (libsodium)",
    sharedSecret(privateKey, publicKey) {
      if (privateKey.length !== 32 || publicKey.length !== 32) return null;
      const q = new Uint8Array(32);
      return impl.scalarMult(q, privateKey, publicKey) ? q : null;
    },
    publicKey(privateKey) {
      const q = new Uint8Array(32);
      impl.scalarMultBase(q, privateKey);
      return q;
    },
  };
}

let loadedX25519: X25519 | undefined;

/**
 * Chooses X25519 for the handshakes by the same `TYPETUN_CRYPTO` setting: `noble` means pure TypeScript
 * throughout; otherwise libsodium's when it loads (OpenSSL's X25519 sits behind its EVP_PKEY interface, whose
 * per-call objects would cost more than they save), else noble. Never throws for a missing library.
 */
export function selectX25519(value: string | undefined = process.env.TYPETUN_CRYPTO): X25519 {
  if (parseCryptoChoice(value) === "noble") return nobleX25519;
  try {
    return loadedX25519 ??= nativeX25519(openX25519());
  } catch {
    return nobleX25519;
  }
}

/**
 * The warning the daemon logs at start when handshakes run on noble's X25519, or null for a native one. noble's
 * scalar multiplication uses BigInt arithmetic, which is not constant-time: how long a handshake takes may
 * leak bits of the private key to someone who can time many of them closely. libsodium's is constant-time.
 * @param impl the X25519 in use (see {@link selectX25519})
 * @param value the `TYPETUN_CRYPTO` setting it was chosen by
 */
export function x25519Warning(
  impl: X25519,
  value: string | undefined = process.env.TYPETUN_CRYPTO,
): string | null {
  if (impl !== nobleX25519) return null;
  const how = value?.trim().toLowerCase() === "noble"
    ? "unset TYPETUN_CRYPTO=noble to use libsodium's"
    : "libsodium was not found: install it (Debian: libsodium23) for a constant-time one";
  return `Warning: X25519 is noble's pure TypeScript code, which is not constant-time (handshake timing may ` +
    `leak the private key); ${how}`;
}
