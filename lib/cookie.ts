/**
 * MAC1, MAC2 and cookie replies (WireGuard paper section 5.4.4 and 5.4.7).
 *
 * Every handshake message carries mac1 = MAC(HASH(LABEL_MAC1 || S_pub_receiver), msg[..mac1]), so a responder
 * can drop garbage without a DH. Under load, a responder also demands mac2 = MAC(cookie, msg[..mac2]), where
 * the cookie is a MAC of the sender's source address under a secret rotated every two minutes; without a
 * valid mac2 the sender gets a cookie reply instead of a handshake.
 * @module
 */
import {
  blake2sInto,
  equalConstantTimeAt,
  hash,
  mac,
  type Rng,
  xaeadDecrypt,
  xaeadEncrypt,
  zero,
} from "./crypto.ts";
import {
  COOKIE_ENCRYPTED,
  COOKIE_LEN,
  COOKIE_NONCE,
  COOKIE_NONCE_LEN,
  COOKIE_RECEIVER,
  COOKIE_SECRET_LATENCY,
  COOKIE_SECRET_MAX_AGE,
  MESSAGE_COOKIE_LEN,
  MESSAGE_HANDSHAKE_COOKIE,
  noiseEncryptedLen,
  readU32,
  writeHeader,
  writeU32,
} from "./messages.ts";

const enc = new TextEncoder();
const LABEL_MAC1 = enc.encode("mac1----");
const LABEL_COOKIE = enc.encode("cookie--");

/** The source of a datagram, as the cookie binds to it: address bytes and UDP port. */
export interface Source {
  readonly addr: Uint8Array;
  readonly port: number;
  /**
   * Our end: the local address the datagram arrived at (IP_PKTINFO) and its interface, when the transport
   * knows them; replies to this source leave from that address (the sticky source, see lib/ip.ts Endpoint).
   */
  readonly local?: Uint8Array;
  readonly ifindex?: number;
}

/** Both MACs sit at the end of a handshake message: mac1 then mac2, 16 bytes each. */
function macOffsets(msg: Uint8Array): [number, number] {
  const mac2At = msg.length - COOKIE_LEN;
  return [mac2At - COOKIE_LEN, mac2At];
}

function sourceBytes(src: Source): Uint8Array {
  const b = new Uint8Array(src.addr.length + 2);
  b.set(src.addr);
  b[src.addr.length] = src.port >>> 8;
  b[src.addr.length + 1] = src.port & 0xff;
  return b;
}

/** The responder side, one per device: checks MACs of incoming handshakes and makes cookie replies. */
export class CookieChecker {
  #mac1Key: Uint8Array = new Uint8Array(32);
  #encryptionKey: Uint8Array = new Uint8Array(32);
  #secret: Uint8Array = new Uint8Array(32);
  #secretBirth = -Infinity;
  /** Scratch for the mac1 being checked. */
  readonly #mac1 = new Uint8Array(COOKIE_LEN);

  /** Derives the keys from the device's public key; called again when the private key changes. */
  setPublicKey(publicKey: Uint8Array | null): void {
    if (!publicKey) {
      zero(this.#mac1Key, this.#encryptionKey);
      return;
    }
    this.#mac1Key = hash(LABEL_MAC1, publicKey);
    this.#encryptionKey = hash(LABEL_COOKIE, publicKey);
  }

  /**
   * Whether the handshake message at `buf[off, off+len)` carries a valid mac1. This is all a datagram with a bad
   * mac1 costs: one BLAKE2s over the buffer in place, no allocation, no other state touched.
   */
  checkMac1(buf: Uint8Array, off: number, len: number): boolean {
    const mac1At = off + len - 2 * COOKIE_LEN;
    blake2sInto(this.#mac1Key, buf, off, mac1At - off, this.#mac1, COOKIE_LEN);
    return equalConstantTimeAt(this.#mac1, buf, mac1At);
  }

  /** Whether a message (whose mac1 was valid) carries a valid mac2: proof that the sender owns `src`. */
  checkMac2(msg: Uint8Array, src: Source, now: number): boolean {
    // A cookie made under an expired secret is no longer valid: treat the secret as gone.
    if (now - this.#secretBirth > COOKIE_SECRET_MAX_AGE) return false;
    const [, mac2At] = macOffsets(msg);
    const cookie = mac(this.#secret, sourceBytes(src));
    const mac2 = mac(cookie, msg.subarray(0, mac2At));
    zero(cookie);
    return equalConstantTimeAt(mac2, msg, mac2At);
  }

  /**
   * The cookie reply (message type 3) to `msg`, sent back to `src`: the cookie for that source, encrypted under
   * a key only the holder of our public key can derive, with the message's mac1 as additional data so the
   * reply is bound to the message it answers.
   */
  createReply(msg: Uint8Array, src: Source, now: number, rng: Rng): Uint8Array {
    if (now - this.#secretBirth > COOKIE_SECRET_MAX_AGE) {
      rng(this.#secret);
      this.#secretBirth = now;
    }
    const [mac1At, mac2At] = macOffsets(msg);
    const reply = new Uint8Array(MESSAGE_COOKIE_LEN);
    writeHeader(reply, MESSAGE_HANDSHAKE_COOKIE);
    // The receiver of the reply is the sender of the message: its sender index is right after the header.
    writeU32(reply, COOKIE_RECEIVER, readU32(msg, 4));
    const nonce = reply.subarray(COOKIE_NONCE, COOKIE_NONCE + COOKIE_NONCE_LEN);
    rng(nonce);
    const cookie = mac(this.#secret, sourceBytes(src));
    reply.set(
      xaeadEncrypt(this.#encryptionKey, nonce, cookie, msg.subarray(mac1At, mac2At)),
      COOKIE_ENCRYPTED,
    );
    zero(cookie);
    return reply;
  }
}

/** The sender side, one per peer: adds MACs to our handshake messages and keeps the last cookie we got. */
export class CookieGenerator {
  #mac1Key: Uint8Array;
  #decryptionKey: Uint8Array;
  #cookie: Uint8Array = new Uint8Array(COOKIE_LEN);
  #cookieBirth = -Infinity;
  #lastMac1: Uint8Array | null = null;

  /** `peerPublicKey` is the receiver's static key: the MAC keys are derived from it. */
  constructor(peerPublicKey: Uint8Array) {
    this.#mac1Key = hash(LABEL_MAC1, peerPublicKey);
    this.#decryptionKey = hash(LABEL_COOKIE, peerPublicKey);
  }

  /** Writes mac1, and mac2 when we hold a fresh cookie (zeros otherwise), into a handshake message. */
  addMacs(msg: Uint8Array, now: number): void {
    const [mac1At, mac2At] = macOffsets(msg);
    const mac1 = mac(this.#mac1Key, msg.subarray(0, mac1At));
    msg.set(mac1, mac1At);
    this.#lastMac1 = mac1;
    // The cookie is trusted a little less long than the responder keeps its secret (paper 5.4.7).
    if (now - this.#cookieBirth < COOKIE_SECRET_MAX_AGE - COOKIE_SECRET_LATENCY) {
      msg.set(mac(this.#cookie, msg.subarray(0, mac2At)), mac2At);
    } else {
      msg.fill(0, mac2At, mac2At + COOKIE_LEN);
    }
  }

  /** Takes the cookie from a reply to the last message we MACed; false if it does not decrypt. */
  consumeReply(reply: Uint8Array, now: number): boolean {
    if (!this.#lastMac1) return false;
    const nonce = reply.subarray(COOKIE_NONCE, COOKIE_NONCE + COOKIE_NONCE_LEN);
    const sealed = reply.subarray(COOKIE_ENCRYPTED, COOKIE_ENCRYPTED + noiseEncryptedLen(COOKIE_LEN));
    const cookie = xaeadDecrypt(this.#decryptionKey, nonce, sealed, this.#lastMac1);
    if (!cookie) return false;
    this.#cookie = cookie;
    this.#cookieBirth = now;
    // One reply per message: a second copy of the same reply must not refresh the cookie.
    this.#lastMac1 = null;
    return true;
  }
}
