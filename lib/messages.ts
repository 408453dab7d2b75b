/**
 * Protocol constants and the wire layout of the four message types.
 *
 * Names follow the WireGuard paper (section 5.4 for messages, section 6 for timers) and the kernel's
 * messages.h. Durations are in milliseconds; derived values are written as the expressions that define them.
 * @module
 */

// ---- Noise lengths (paper 5.4) ----
export const NOISE_PUBLIC_KEY_LEN = 32;
export const NOISE_SYMMETRIC_KEY_LEN = 32;
export const NOISE_TIMESTAMP_LEN = 12;
export const NOISE_AUTHTAG_LEN = 16;
export const NOISE_HASH_LEN = 32;

/** Length of an AEAD ciphertext carrying `plainLen` bytes. */
export function noiseEncryptedLen(plainLen: number): number {
  return plainLen + NOISE_AUTHTAG_LEN;
}

// ---- Cookies (paper 5.4.7) ----
/** The cookie secret is replaced every two minutes. */
export const COOKIE_SECRET_MAX_AGE = 120_000;
/** A received cookie is trusted for a little less than the secret's age, for clock skew and latency. */
export const COOKIE_SECRET_LATENCY = 5_000;
export const COOKIE_NONCE_LEN = 24;
export const COOKIE_LEN = 16;

// ---- Replay counter (RFC 6479, as sized by the kernel) ----
export const COUNTER_BITS_TOTAL = 8192;
/** One machine word of the ring is always being recycled, so it does not count toward the window. */
export const COUNTER_REDUNDANT_BITS = 64;
export const COUNTER_WINDOW_SIZE = COUNTER_BITS_TOTAL - COUNTER_REDUNDANT_BITS;

// ---- Limits and timers (paper section 6) ----
/** 2^60: the sender starts a new handshake after this many messages under one key. */
export const REKEY_AFTER_MESSAGES = 2 ** 60;
/**
 * 2^64 - 2^13 - 1: no message may use a counter at or beyond this. It is not exactly representable as a
 * double, so it is kept as its two 32-bit halves; the replay filter compares those exactly.
 */
export const REJECT_AFTER_MESSAGES_HI = 0xffffffff;
export const REJECT_AFTER_MESSAGES_LO = 0xffffdfff;
/** The largest send counter we ever use: far below 2^64 - 2^13 - 1, and exact as a double. */
export const MAX_SEND_COUNTER = Number.MAX_SAFE_INTEGER;
export const REKEY_AFTER_TIME = 120_000;
export const REJECT_AFTER_TIME = 180_000;
export const REKEY_ATTEMPT_TIME = 90_000;
export const REKEY_TIMEOUT = 5_000;
/** Up to a third of a second of jitter on each handshake retransmission (the kernel's HZ / 3). */
export const REKEY_TIMEOUT_JITTER_MAX = 333;
export const KEEPALIVE_TIMEOUT = 10_000;
export const MAX_TIMER_HANDSHAKES = REKEY_ATTEMPT_TIME / REKEY_TIMEOUT;
/** Handshake initiations accepted from one peer: at most one per 1/INITIATIONS_PER_SECOND seconds. */
export const INITIATIONS_PER_SECOND = 50;
/** Key material is wiped after this long without a new handshake. */
export const KEY_ZEROING_TIME = REJECT_AFTER_TIME * 3;
/** Packets kept per peer while it has no session; the oldest is dropped first. */
export const MAX_STAGED_PACKETS = 128;

// ---- Message types (paper 5.4.2 – 5.4.6) ----
export const MESSAGE_HANDSHAKE_INITIATION = 1;
export const MESSAGE_HANDSHAKE_RESPONSE = 2;
export const MESSAGE_HANDSHAKE_COOKIE = 3;
export const MESSAGE_DATA = 4;
export type MessageType = 1 | 2 | 3 | 4;

/** Every message starts with a one-byte type and three reserved zero bytes, read as a little-endian u32. */
export const HEADER_LEN = 4;

// Handshake initiation (paper 5.4.2): type, sender, unencrypted_ephemeral, encrypted_static,
// encrypted_timestamp, mac1, mac2.
export const INITIATION_SENDER = 4;
export const INITIATION_EPHEMERAL = 8;
export const INITIATION_STATIC = INITIATION_EPHEMERAL + NOISE_PUBLIC_KEY_LEN;
export const INITIATION_TIMESTAMP = INITIATION_STATIC + noiseEncryptedLen(NOISE_PUBLIC_KEY_LEN);
export const INITIATION_MAC1 = INITIATION_TIMESTAMP + noiseEncryptedLen(NOISE_TIMESTAMP_LEN);
export const INITIATION_MAC2 = INITIATION_MAC1 + COOKIE_LEN;
export const MESSAGE_INITIATION_LEN = INITIATION_MAC2 + COOKIE_LEN;

// Handshake response (paper 5.4.3): type, sender, receiver, unencrypted_ephemeral, encrypted_nothing,
// mac1, mac2.
export const RESPONSE_SENDER = 4;
export const RESPONSE_RECEIVER = 8;
export const RESPONSE_EPHEMERAL = 12;
export const RESPONSE_EMPTY = RESPONSE_EPHEMERAL + NOISE_PUBLIC_KEY_LEN;
export const RESPONSE_MAC1 = RESPONSE_EMPTY + noiseEncryptedLen(0);
export const RESPONSE_MAC2 = RESPONSE_MAC1 + COOKIE_LEN;
export const MESSAGE_RESPONSE_LEN = RESPONSE_MAC2 + COOKIE_LEN;

// Cookie reply (paper 5.4.7): type, receiver, nonce, encrypted_cookie.
export const COOKIE_RECEIVER = 4;
export const COOKIE_NONCE = 8;
export const COOKIE_ENCRYPTED = COOKIE_NONCE + COOKIE_NONCE_LEN;
export const MESSAGE_COOKIE_LEN = COOKIE_ENCRYPTED + noiseEncryptedLen(COOKIE_LEN);

// Transport data (paper 5.4.6): type, receiver, counter, encrypted_encapsulated_packet.
export const DATA_RECEIVER = 4;
export const DATA_COUNTER = 8;
export const DATA_HEADER_LEN = 16;
/** The smallest data message is a keepalive: a header and the tag of an empty payload. */
export const MESSAGE_DATA_MIN_LEN = DATA_HEADER_LEN + noiseEncryptedLen(0);
/** Plaintext is padded to a multiple of 16 bytes (paper 5.4.6) to hide its exact length. */
export const MESSAGE_PADDING_MULTIPLE = 16;

/**
 * Room a data message needs behind its packet: padding (at most MESSAGE_PADDING_MULTIPLE - 1 bytes) and the tag.
 * A caller that leaves DATA_HEADER_LEN bytes in front of a packet and this much behind it lets the device build
 * the message in place.
 */
export const DATA_TRAILER_ROOM = MESSAGE_PADDING_MULTIPLE - 1 + NOISE_AUTHTAG_LEN;
/** The most a data message adds to an IP packet: the header in front, padding and tag behind. */
export const DATA_OVERHEAD = DATA_HEADER_LEN + DATA_TRAILER_ROOM;

// The sizes the paper fixes; a change in the offsets above that breaks them fails at load time.
if (
  MESSAGE_INITIATION_LEN !== 148 || MESSAGE_RESPONSE_LEN !== 92 || MESSAGE_COOKIE_LEN !== 64 ||
  MESSAGE_DATA_MIN_LEN !== 32
) {
  throw new Error("message layout does not match the WireGuard paper");
}

/**
 * The message type of a datagram, or 0 if it is not a well-formed WireGuard message: the type byte must be
 * known, the reserved bytes zero, and the length exact (handshakes) or at least a keepalive (data).
 */
export function messageType(b: Uint8Array, off = 0, len = b.length - off): MessageType | 0 {
  if (len < HEADER_LEN || b[off + 1] !== 0 || b[off + 2] !== 0 || b[off + 3] !== 0) return 0;
  switch (b[off]) {
    case MESSAGE_HANDSHAKE_INITIATION:
      return len === MESSAGE_INITIATION_LEN ? 1 : 0;
    case MESSAGE_HANDSHAKE_RESPONSE:
      return len === MESSAGE_RESPONSE_LEN ? 2 : 0;
    case MESSAGE_HANDSHAKE_COOKIE:
      return len === MESSAGE_COOKIE_LEN ? 3 : 0;
    case MESSAGE_DATA:
      return len >= MESSAGE_DATA_MIN_LEN ? 4 : 0;
    default:
      return 0;
  }
}

/** Writes the type byte and zeroes the reserved bytes. */
export function writeHeader(b: Uint8Array, type: MessageType, off = 0): void {
  b[off] = type;
  b[off + 1] = 0;
  b[off + 2] = 0;
  b[off + 3] = 0;
}

/** Reads a little-endian u32 (the sender and receiver indices). */
export function readU32(b: Uint8Array, off: number): number {
  return (b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16) | (b[off + 3]! << 24)) >>> 0;
}

/** Writes a little-endian u32. */
export function writeU32(b: Uint8Array, off: number, v: number): void {
  b[off] = v & 0xff;
  b[off + 1] = (v >>> 8) & 0xff;
  b[off + 2] = (v >>> 16) & 0xff;
  b[off + 3] = (v >>> 24) & 0xff;
}
