/**
 * The Noise IKpsk2 handshake (WireGuard paper section 5.4.2 – 5.4.5) and the transport keypairs it yields.
 *
 *   IKpsk2:
 *     <- s
 *     ...
 *     -> e, es, s, ss
 *     <- e, ee, se, psk
 *
 * Each message has a create/consume pair; each step is marked with its Noise token. MAC1 and MAC2 are added
 * and checked by cookie.ts, not here. Nothing in this file reads a clock or RNG: both are passed in.
 * @module
 */
import {
  aeadDecrypt,
  aeadEncrypt,
  dh,
  dhGenerate,
  dhPublic,
  hash,
  kdf1,
  kdf2,
  kdf3,
  type Rng,
  tai64n,
  tai64nAfter,
  type X25519,
  zero,
} from "./crypto.ts";
import {
  INITIATION_EPHEMERAL,
  INITIATION_SENDER,
  INITIATION_STATIC,
  INITIATION_TIMESTAMP,
  INITIATIONS_PER_SECOND,
  MESSAGE_HANDSHAKE_INITIATION,
  MESSAGE_HANDSHAKE_RESPONSE,
  MESSAGE_INITIATION_LEN,
  MESSAGE_RESPONSE_LEN,
  NOISE_PUBLIC_KEY_LEN,
  NOISE_SYMMETRIC_KEY_LEN,
  NOISE_TIMESTAMP_LEN,
  noiseEncryptedLen,
  readU32,
  RESPONSE_EMPTY,
  RESPONSE_EPHEMERAL,
  RESPONSE_RECEIVER,
  RESPONSE_SENDER,
  writeHeader,
  writeU32,
} from "./messages.ts";
import { ReplayCounter } from "./replay.ts";

const enc = new TextEncoder();
/** Construction and Identifier strings (paper 5.4). */
const CONSTRUCTION = enc.encode("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s");
const IDENTIFIER = enc.encode("WireGuard v1 zx2c4 Jason@zx2c4.com");
/** Ci := HASH(Construction); Hi := HASH(Ci || Identifier) — the same for every handshake, so computed once. */
const INITIAL_CHAINING_KEY = hash(CONSTRUCTION);
const INITIAL_HASH = hash(INITIAL_CHAINING_KEY, IDENTIFIER);
const EMPTY = new Uint8Array(0);

/** The kernel's five handshake states (noise.h). */
export enum HandshakeState {
  Zeroed,
  CreatedInitiation,
  ConsumedInitiation,
  CreatedResponse,
  ConsumedResponse,
}

/** The local static key pair of a device, and the X25519 every DH of its handshakes is computed with. */
export interface StaticIdentity {
  readonly privateKey: Uint8Array;
  readonly publicKey: Uint8Array;
  /** Injected by the device (DeviceOptions), as the transport AEAD is: noble's, or a native one. */
  readonly x25519: X25519;
}

/** Per-peer handshake state: the peer's static key, the preshared key and the running Noise state. */
export class Handshake {
  state = HandshakeState.Zeroed;
  /** Q in the paper; all zeros when no preshared key is configured. */
  presharedKey: Uint8Array = new Uint8Array(NOISE_SYMMETRIC_KEY_LEN);
  /** DH(S_priv_local, S_pub_remote): fixed for a given pair of static keys, so computed once. */
  precomputedStaticStatic: Uint8Array | null = null;
  hash: Uint8Array = new Uint8Array(32);
  chainingKey: Uint8Array = new Uint8Array(32);
  ephemeralPrivate: Uint8Array | null = null;
  remoteEphemeral: Uint8Array | null = null;
  /** Our index for this handshake (sender field of what we send) and the peer's. */
  localIndex = 0;
  remoteIndex = 0;
  /** Greatest TAI64N seen in an initiation from this peer: older or equal ones are replays (paper 5.1). */
  latestTimestamp: Uint8Array = new Uint8Array(NOISE_TIMESTAMP_LEN);
  /** When we last consumed an initiation from this peer, for the flood limit. */
  lastInitiationConsumption = -Infinity;
  /** The local identity this handshake runs for (the kernel's handshake->static_identity); set by precompute. */
  local: StaticIdentity | null = null;

  constructor(readonly remoteStatic: Uint8Array) {}

  /** Recomputes the static-static DH after the local private key changes; null if it is a low-order point. */
  precompute(local: StaticIdentity | null): void {
    zero(this.precomputedStaticStatic);
    this.local = local;
    this.precomputedStaticStatic = local ? dh(local.privateKey, this.remoteStatic, local.x25519) : null;
  }

  /** Sets the preshared key (all zeros for none), wiping the one it replaces. */
  setPresharedKey(psk: Uint8Array): void {
    zero(this.presharedKey);
    this.presharedKey = psk.slice();
  }

  /** Wipes every secret this handshake holds, for a peer that is removed. */
  wipe(): void {
    this.clear();
    zero(this.presharedKey, this.precomputedStaticStatic);
    this.precomputedStaticStatic = null;
    this.local = null;
  }

  /** Forgets the in-progress handshake (but not the replay and flood state, which must survive). */
  clear(): void {
    zero(this.hash, this.chainingKey, this.ephemeralPrivate, this.remoteEphemeral);
    this.ephemeralPrivate = null;
    this.remoteEphemeral = null;
    this.state = HandshakeState.Zeroed;
    // localIndex is kept: the device uses it to retire the index-table entry of the abandoned handshake.
  }
}

/** A session's transport keys (paper 5.4.5), with its counters. */
export class Keypair {
  /** Next counter to send; also the number of messages sent. */
  sendCounter = 0;
  readonly replay = new ReplayCounter();

  constructor(
    readonly sendKey: Uint8Array,
    readonly receiveKey: Uint8Array,
    readonly localIndex: number,
    readonly remoteIndex: number,
    readonly isInitiator: boolean,
    /** Monotonic time of creation, in ms, for REKEY_AFTER_TIME and REJECT_AFTER_TIME. */
    readonly birth: number,
  ) {}

  wipe(): void {
    zero(this.sendKey, this.receiveKey);
  }
}

function mixHash(h: Uint8Array, data: Uint8Array): Uint8Array {
  return hash(h, data);
}

// Every chaining key is a secret: once a KDF has replaced it, it is wiped (the kernel overwrites it in place).
// The constant Ci is shared by all handshakes and public, so it is never wiped; a handshake's stored chaining
// key is copied before use, so that a message that fails leaves the handshake as it was.

function retire(c: Uint8Array): void {
  if (c !== INITIAL_CHAINING_KEY) c.fill(0);
}

/** C := KDF1(C, input). */
function mixKey(c: Uint8Array, input: Uint8Array): Uint8Array {
  const next = kdf1(c, input);
  retire(c);
  return next;
}

/** (C, k) := KDF2(C, input). */
function mixKeyAndKey(c: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array] {
  const [next, k] = kdf2(c, input);
  retire(c);
  return [next, k];
}

/**
 * The part of the response (paper 5.4.3) both sides compute alike once each has the two DH results: the
 * responder's ephemeral, ee, se and the preshared key. Returns the chaining key, the hash and the key that
 * seals the empty payload; the DH results, tau and every chaining key it replaces (`c` included) are wiped.
 */
function responseKeySchedule(
  c: Uint8Array,
  h: Uint8Array,
  ePub: Uint8Array,
  ee: Uint8Array,
  se: Uint8Array,
  psk: Uint8Array,
): [Uint8Array, Uint8Array, Uint8Array] {
  /* e */
  c = mixKey(c, ePub);
  h = mixHash(h, ePub);
  /* ee */
  c = mixKey(c, ee);
  /* se */
  c = mixKey(c, se);
  /* psk */
  const [c2, tau, k] = kdf3(c, psk);
  h = mixHash(h, tau);
  zero(ee, se, tau, c);
  return [c2, h, k];
}

/**
 * Writes a handshake initiation (paper 5.4.2) for `hs` into a new 148-byte message, MACs left zero.
 * Returns null if the local key is missing or the DH yields a low-order result.
 */
export function createInitiation(
  hs: Handshake,
  local: StaticIdentity,
  localIndex: number,
  wallMs: number,
  rng: Rng,
): Uint8Array | null {
  if (!hs.precomputedStaticStatic) return null;
  const msg = new Uint8Array(MESSAGE_INITIATION_LEN);
  writeHeader(msg, MESSAGE_HANDSHAKE_INITIATION);
  writeU32(msg, INITIATION_SENDER, localIndex);

  let c = INITIAL_CHAINING_KEY;
  // Hi := HASH(Hi || Sr_pub)
  let h = mixHash(INITIAL_HASH, hs.remoteStatic);

  /* e */
  const x = local.x25519;
  const ePriv = dhGenerate(rng);
  const ePub = dhPublic(ePriv, x);
  msg.set(ePub, INITIATION_EPHEMERAL);
  c = mixKey(c, ePub);
  h = mixHash(h, ePub);

  /* es */
  const es = dh(ePriv, hs.remoteStatic, x);
  if (!es) {
    zero(ePriv, c);
    return null;
  }
  let k: Uint8Array;
  [c, k] = mixKeyAndKey(c, es);
  zero(es);

  /* s */
  const encStatic = aeadEncrypt(k, 0, local.publicKey, h);
  msg.set(encStatic, INITIATION_STATIC);
  h = mixHash(h, encStatic);
  zero(k);

  /* ss */
  [c, k] = mixKeyAndKey(c, hs.precomputedStaticStatic);

  /* {t} */
  const encTimestamp = aeadEncrypt(k, 0, tai64n(wallMs), h);
  msg.set(encTimestamp, INITIATION_TIMESTAMP);
  h = mixHash(h, encTimestamp);

  zero(k);
  hs.clear();
  hs.chainingKey = c;
  hs.hash = h;
  hs.ephemeralPrivate = ePriv;
  hs.localIndex = localIndex;
  hs.state = HandshakeState.CreatedInitiation;
  return msg;
}

/**
 * Consumes a handshake initiation (paper 5.4.2) addressed to `local`. `findPeer` maps the decrypted initiator
 * static key to that peer's handshake. Returns the handshake, now in CONSUMED_INITIATION, or null when the
 * message does not decrypt, names no known peer, replays an old timestamp or comes too soon after the last.
 * On every way out, the secrets derived so far are wiped.
 */
export function consumeInitiation(
  msg: Uint8Array,
  local: StaticIdentity,
  findPeer: (staticPublic: Uint8Array) => Handshake | undefined,
  now: number,
): Handshake | null {
  let c = INITIAL_CHAINING_KEY;
  let h = mixHash(INITIAL_HASH, local.publicKey);
  let k: Uint8Array | null = null;
  const fail = (): null => {
    retire(c);
    zero(k);
    return null;
  };

  /* e */
  const ePub = msg.slice(INITIATION_EPHEMERAL, INITIATION_EPHEMERAL + NOISE_PUBLIC_KEY_LEN);
  c = mixKey(c, ePub);
  h = mixHash(h, ePub);

  /* es */
  const es = dh(local.privateKey, ePub, local.x25519);
  if (!es) return fail();
  [c, k] = mixKeyAndKey(c, es);
  zero(es);

  /* s */
  const encStatic = msg.subarray(INITIATION_STATIC, INITIATION_TIMESTAMP);
  const sPub = aeadDecrypt(k, 0, encStatic, h);
  if (!sPub) return fail();
  h = mixHash(h, encStatic);
  const hs = findPeer(sPub);
  if (!hs || !hs.precomputedStaticStatic) return fail();
  zero(k);

  /* ss */
  [c, k] = mixKeyAndKey(c, hs.precomputedStaticStatic);

  /* {t} */
  const encTimestamp = msg.subarray(
    INITIATION_TIMESTAMP,
    INITIATION_TIMESTAMP + noiseEncryptedLen(NOISE_TIMESTAMP_LEN),
  );
  const t = aeadDecrypt(k, 0, encTimestamp, h);
  if (!t) return fail();
  zero(k);
  h = mixHash(h, encTimestamp);

  // Paper 5.1: a timestamp no greater than the last one is a replay; and at most INITIATIONS_PER_SECOND
  // initiations per peer are processed, so a flood of fresh ones cannot keep the responder busy.
  const replay = !tai64nAfter(t, hs.latestTimestamp);
  const flood = hs.lastInitiationConsumption + 1000 / INITIATIONS_PER_SECOND > now;
  if (replay || flood) return fail();

  hs.clear();
  hs.latestTimestamp = t;
  hs.lastInitiationConsumption = now;
  hs.chainingKey = c;
  hs.hash = h;
  hs.remoteEphemeral = ePub;
  hs.remoteIndex = readU32(msg, INITIATION_SENDER);
  hs.state = HandshakeState.ConsumedInitiation;
  return hs;
}

/** Writes a handshake response (paper 5.4.3) to a consumed initiation, MACs left zero; null on failure. */
export function createResponse(hs: Handshake, localIndex: number, rng: Rng): Uint8Array | null {
  const x = hs.local?.x25519;
  if (hs.state !== HandshakeState.ConsumedInitiation || !hs.remoteEphemeral || !x) return null;
  const msg = new Uint8Array(MESSAGE_RESPONSE_LEN);
  writeHeader(msg, MESSAGE_HANDSHAKE_RESPONSE);
  writeU32(msg, RESPONSE_SENDER, localIndex);
  writeU32(msg, RESPONSE_RECEIVER, hs.remoteIndex);
  let c: Uint8Array = hs.chainingKey.slice();
  let h = hs.hash;

  /* e */
  const ePriv = dhGenerate(rng);
  const ePub = dhPublic(ePriv, x);
  msg.set(ePub, RESPONSE_EPHEMERAL);
  const ee = dh(ePriv, hs.remoteEphemeral, x);
  const se = dh(ePriv, hs.remoteStatic, x);
  if (!ee || !se) {
    zero(ePriv, ee, se, c);
    return null;
  }
  const [c2, h2, k] = responseKeySchedule(c, h, ePub, ee, se, hs.presharedKey);
  c = c2;
  h = h2;

  /* {} */
  const encEmpty = aeadEncrypt(k, 0, EMPTY, h);
  msg.set(encEmpty, RESPONSE_EMPTY);
  h = mixHash(h, encEmpty);

  zero(k, hs.chainingKey);
  hs.chainingKey = c;
  hs.hash = h;
  hs.ephemeralPrivate = ePriv;
  hs.localIndex = localIndex;
  hs.state = HandshakeState.CreatedResponse;
  return msg;
}

/**
 * Consumes a handshake response (paper 5.4.3). `findHandshake` maps the receiver index to the handshake that
 * sent the matching initiation. Returns it, now in CONSUMED_RESPONSE, or null.
 */
export function consumeResponse(
  msg: Uint8Array,
  local: StaticIdentity,
  findHandshake: (receiverIndex: number) => Handshake | undefined,
): Handshake | null {
  const receiver = readU32(msg, RESPONSE_RECEIVER);
  const hs = findHandshake(receiver);
  if (!hs || hs.state !== HandshakeState.CreatedInitiation || hs.localIndex !== receiver) return null;
  if (!hs.ephemeralPrivate) return null;
  let h = hs.hash;

  /* e */
  const ePub = msg.slice(RESPONSE_EPHEMERAL, RESPONSE_EPHEMERAL + NOISE_PUBLIC_KEY_LEN);
  const ee = dh(hs.ephemeralPrivate, ePub, local.x25519);
  const se = dh(local.privateKey, ePub, local.x25519);
  if (!ee || !se) {
    zero(ee, se);
    return null;
  }
  // On a copy: a forged response (anyone can give it a valid mac1) must leave the handshake able to take
  // the real one.
  const [c, h2, k] = responseKeySchedule(hs.chainingKey.slice(), h, ePub, ee, se, hs.presharedKey);
  h = h2;

  /* {} */
  const encEmpty = msg.subarray(RESPONSE_EMPTY, RESPONSE_EMPTY + noiseEncryptedLen(0));
  const ok = aeadDecrypt(k, 0, encEmpty, h);
  zero(k);
  if (!ok) {
    zero(c);
    return null;
  }
  h = mixHash(h, encEmpty);

  zero(hs.chainingKey);
  hs.chainingKey = c;
  hs.hash = h;
  hs.remoteEphemeral = ePub;
  hs.remoteIndex = readU32(msg, RESPONSE_SENDER);
  hs.state = HandshakeState.ConsumedResponse;
  return hs;
}

/**
 * Derives the transport keys once the handshake is done (paper 5.4.5): (T_send, T_recv) := KDF2(C, ε) for the
 * initiator, swapped for the responder. The handshake's secrets are wiped, as the paper requires.
 */
export function beginSession(hs: Handshake, now: number): Keypair | null {
  const initiator = hs.state === HandshakeState.ConsumedResponse;
  if (!initiator && hs.state !== HandshakeState.CreatedResponse) return null;
  const [first, second] = kdf2(hs.chainingKey, EMPTY);
  const kp = initiator
    ? new Keypair(first, second, hs.localIndex, hs.remoteIndex, true, now)
    : new Keypair(second, first, hs.localIndex, hs.remoteIndex, false, now);
  hs.clear();
  return kp;
}
