/**
 * The device: every peer, the index table, cryptokey routing, and the three entry points of the sans-I/O core.
 *
 * - `handlePlaintext` takes an IP packet read from the TUN and encrypts it in place for its peer.
 * - `handleDatagram` takes a UDP datagram and handles a handshake message or decrypts data in place.
 * - `tick` runs the timers of section 6.
 *
 * Every datagram the device sends, data and handshakes alike, leaves through one {@link DatagramSink}: the
 * data loop's send batch, or an in-memory {@link Outbox} (the default, for tests and other sans-I/O callers).
 * The hot path encrypts in place in the caller's buffer and hands the datagram over where it lies, so a batch
 * that gave out that place takes it without a copy; a decrypted packet is described in `this.out`. Every call
 * returns a Verdict, and each verdict, the drop reasons among them, is counted in `this.verdicts`.
 * Time and randomness come from the injected clock and RNG.
 * @module
 */
import { CookieChecker, type Source } from "./cookie.ts";
import { AllowedIps } from "./allowedips.ts";
import {
  clampPrivateKey,
  equalConstantTime,
  isZero,
  nobleAead,
  nobleX25519,
  type Rng,
  type TransportAead,
  type X25519,
  zero,
} from "./crypto.ts";
import { Endpoint, ipTotalLength, IPV4_DST, IPV4_SRC, IPV6_DST, IPV6_SRC, ipVersion } from "./ip.ts";
import {
  DATA_COUNTER,
  DATA_HEADER_LEN,
  DATA_RECEIVER,
  DATA_TRAILER_ROOM,
  KEEPALIVE_TIMEOUT,
  MESSAGE_DATA,
  MESSAGE_HANDSHAKE_COOKIE,
  MESSAGE_HANDSHAKE_INITIATION,
  MESSAGE_HANDSHAKE_RESPONSE,
  MESSAGE_PADDING_MULTIPLE,
  messageType,
  NOISE_AUTHTAG_LEN,
  readU32,
  REJECT_AFTER_TIME,
  REKEY_AFTER_MESSAGES,
  REKEY_AFTER_TIME,
  REKEY_TIMEOUT,
  REKEY_TIMEOUT_JITTER_MAX,
  writeHeader,
  writeU32,
} from "./messages.ts";
import {
  beginSession,
  consumeInitiation,
  consumeResponse,
  createInitiation,
  createResponse,
  type Keypair,
  type StaticIdentity,
} from "./noise.ts";
import { canReceive, canSend, Peer } from "./peer.ts";
import { RateLimiter } from "./ratelimiter.ts";
import { type TimerActions, TimerQueue } from "./timers.ts";
import type { DeviceInfo, DeviceUpdate, PeerInfo } from "./uapi.ts";

/** Monotonic time for the protocol, wall time for TAI64N timestamps and `latest handshake`; both in ms. */
export interface Clock {
  now(): number;
  wall(): number;
}

/**
 * What happened to a packet or datagram: one of four outcomes, or a drop and its reason (see {@link isDrop}).
 * `Device.verdicts` counts each.
 */
export enum Verdict {
  /**
   * Encrypted in place and handed to the sink where it lies; `out.offset`, `out.length` and `out.endpoint`
   * describe it.
   */
  Send,
  /** Decrypted in place: write `out.length` bytes at `out.offset` to the TUN. */
  Deliver,
  /** Queued until a session exists (a handshake may have gone to the sink). */
  Queued,
  /** Consumed: a handshake, cookie reply or keepalive; replies, if any, went to the sink. */
  Handled,
  /** No peer's allowed IPs hold the packet's destination. */
  DropNoRoute,
  /** The peer has no endpoint to send to. */
  DropNoEndpoint,
  /** A handshake message arrived while the device has no private key. */
  DropNoKey,
  /** Not a well-formed WireGuard message, or a decrypted packet that is not a well-formed IP packet. */
  DropMalformed,
  /** A handshake message whose mac1 is wrong (paper 5.4.4). */
  DropInvalidMac,
  /** Under load, a handshake from a source over its rate (paper 5.3). */
  DropRateLimited,
  /** Under load, a handshake without a valid mac2: a cookie reply went back instead (paper 5.3). */
  DropCookieSent,
  /** A handshake message that did not verify (unknown peer, replayed timestamp, flood, bad ephemeral). */
  DropHandshake,
  /** Data or a cookie reply for a receiver index we do not hold. */
  DropUnknownIndex,
  /** Data or a cookie reply that failed authentication. */
  DropDecrypt,
  /** Data whose counter was seen before or is too old (RFC 6479 window). */
  DropReplay,
  /** Data under a session past REJECT_AFTER_TIME or REJECT_AFTER_MESSAGES. */
  DropExpired,
  /** Decrypted data whose inner source is not one of the peer's allowed IPs (cryptokey routing). */
  DropNotAllowed,
  /** A packet waiting for a session pushed out by newer ones (MAX_STAGED_PACKETS). */
  DropQueueFull,
  /** A plaintext packet a {@link PacketHook} refused (a per-peer packet filter). */
  DropFiltered,
}

/** How many verdicts there are: the length of `Device.verdicts`. */
export const VERDICT_COUNT = Verdict.DropFiltered + 1;

/** Whether a verdict is a drop (anything but Send, Deliver, Queued and Handled). */
export function isDrop(v: Verdict): boolean {
  return v !== Verdict.Send && v !== Verdict.Deliver && v !== Verdict.Queued && v !== Verdict.Handled;
}

/** The drop reasons, in the order of their counters (for metrics and `show`). */
export const DROP_REASONS: readonly Verdict[] = Array.from({ length: VERDICT_COUNT }, (_, v) => v as Verdict)
  .filter(isDrop);

/**
 * Where the device sends every datagram. `to` is a view the caller may reuse after the call (a receive batch's
 * source address), and `buf[off, off+len)` is valid only during the call, except when `inPlace` is true: then it
 * is the caller's own buffer, where handlePlaintext built the datagram from the caller's packet. A send batch
 * whose write position that is takes it without a copy (the hot path); anything else is copied.
 */
export interface DatagramSink {
  send(buf: Uint8Array, off: number, len: number, to: Source, inPlace: boolean): void;
}

/**
 * Sees the plaintext packets the device routes: one from the TUN once its peer is chosen (before it is staged or
 * encrypted), and one from a peer once cryptokey routing accepted it (before it goes to the TUN). Returning false
 * drops the packet as Verdict.DropFiltered, and the hooks after it do not see it. Packet filters, per-connection
 * statistics and capture are hooks (as Tailscale's tstun wraps its TUN with filter and capture functions); the
 * packet is `buf[off, off+len)`, valid only during the call. With no hook installed the cost is one length test.
 */
export interface PacketHook {
  outbound(peer: Peer, buf: Uint8Array, off: number, len: number): boolean;
  inbound(peer: Peer, buf: Uint8Array, off: number, len: number): boolean;
}

/** A datagram kept by an {@link Outbox}. */
export interface Datagram {
  endpoint: Endpoint;
  data: Uint8Array;
}

/**
 * The in-memory sink: a copy of every datagram the caller does not already hold, in order. Datagrams built in
 * place from the caller's packet are left out: the caller has them, described by `Device.out`. The default
 * sink of a Device, for tests and other sans-I/O callers; the data loop gives its send batch instead.
 */
export class Outbox implements DatagramSink {
  readonly datagrams: Datagram[] = [];
  send(buf: Uint8Array, off: number, len: number, to: Source, inPlace: boolean): void {
    if (inPlace) return;
    const addr = to.addr.slice();
    this.datagrams.push({
      endpoint: new Endpoint(addr.length === 4 ? 4 : 6, addr, to.port),
      data: buf.slice(off, off + len),
    });
  }
}

export interface DeviceOptions {
  clock: Clock;
  rng: Rng;
  /** Transport AEAD backend (default: pure TypeScript). */
  aead?: TransportAead;
  /** X25519 for the handshakes (default: noble's pure TypeScript; the daemon passes a native one). */
  x25519?: X25519;
  /** Interface MTU: padding never makes a packet larger than this (paper 5.4.6). */
  mtu?: number;
  /**
   * Handshake messages with a valid mac1 per second above which the device is "under load" and demands
   * cookies (paper 5.3); 0 means always under load.
   */
  underLoadThreshold?: number;
  /** Where every datagram goes (default: a new {@link Outbox}). */
  sink?: DatagramSink;
}

/** The result of the last hot-path call; reused, never reallocated. */
export interface Output {
  offset: number;
  length: number;
  endpoint: Endpoint | null;
  peer: Peer | null;
}

/** An index in the table: a peer's in-progress handshake (keypair null) or one of its keypairs. */
interface IndexEntry {
  peer: Peer;
  keypair: Keypair | null;
}

/** Under load, stay under load for a second after the rate falls (as wireguard-go's UnderLoadAfterTime). */
const UNDER_LOAD_AFTER = 1000;
const DEFAULT_UNDER_LOAD_THRESHOLD = 128;
const TWO_32 = 2 ** 32;

export class Device implements TimerActions<Peer> {
  readonly clock: Clock;
  readonly rng: Rng;
  aead: TransportAead;
  readonly x25519: X25519;
  mtu: number;
  identity: StaticIdentity | null = null;
  listenPort = 0;
  fwmark = 0;
  readonly peers = new Map<string, Peer>();
  readonly allowedIps = new AllowedIps<Peer>();
  /** Where every datagram goes; the data loop sets its send batch here. */
  sink: DatagramSink;
  readonly out: Output = { offset: 0, length: 0, endpoint: null, peer: null };
  /** Called in order for every routed plaintext packet (see {@link PacketHook}); empty by default. */
  readonly hooks: PacketHook[] = [];
  /**
   * Called when a peer with an endpoint name (`peer.endpointName`) should have it resolved again: an initiation
   * went unanswered, at most as often as the back-off allows (Timers.resolveDue). The caller resolves it
   * elsewhere (cmd/reresolve.ts) and sets `peer.endpoint` if the address changed.
   */
  onResolve: ((peer: Peer) => void) | null = null;
  /** How many times each verdict was reached, indexed by Verdict: the drop counters are among them. */
  readonly verdicts = new Float64Array(VERDICT_COUNT);
  /** Handshake initiations sent, first tries and retransmissions alike (for metrics). */
  handshakesInitiated = 0;
  /**
   * Handshakes completed: a response consumed by the initiator, or the first data under the responder's new
   * session (where both call wg_timers_handshake_complete, and `latest handshake` moves).
   */
  handshakesCompleted = 0;
  /** Initiations that got no response within REKEY_TIMEOUT (+ jitter): each retransmission, and the last try. */
  handshakesFailed = 0;
  /** Staged packets are encrypted here before they go to the sink (grown to the largest, then reused). */
  #scratch = new Uint8Array(0);
  readonly #defaultOutbox: Outbox;
  readonly #indices = new Map<number, IndexEntry>();
  readonly #cookieChecker = new CookieChecker();
  readonly #rateLimiter: RateLimiter;
  readonly #underLoadThreshold: number;
  #handshakeWindowStart = 0;
  #handshakesInWindow = 0;
  #lastUnderLoad = -Infinity;
  readonly #jitterBuf = new Uint8Array(4);
  /** Every peer with an armed timer, by its earliest deadline. */
  readonly #timers = new TimerQueue<Peer>();
  readonly #indexBuf = new Uint8Array(4);

  constructor(opts: DeviceOptions) {
    this.clock = opts.clock;
    this.rng = opts.rng;
    this.aead = opts.aead ?? nobleAead;
    this.x25519 = opts.x25519 ?? nobleX25519;
    this.mtu = opts.mtu ?? 1420;
    this.#underLoadThreshold = opts.underLoadThreshold ?? DEFAULT_UNDER_LOAD_THRESHOLD;
    this.#defaultOutbox = opts.sink instanceof Outbox ? opts.sink : new Outbox();
    this.sink = opts.sink ?? this.#defaultOutbox;
    // A secret hash seed, so that nobody can aim source addresses at one slot of the rate limiter's table.
    const seed = new Uint8Array(4);
    this.rng(seed);
    this.#rateLimiter = new RateLimiter({ seed: readU32(seed, 0) });
  }

  /** Whether the device is under load now (paper 5.3): it demands cookies of handshake messages. */
  get underLoad(): boolean {
    return this.clock.now() - this.#lastUnderLoad < UNDER_LOAD_AFTER;
  }

  /** The keypairs in use (current, previous and unconfirmed next, over all peers); costs one step per peer. */
  keypairCount(): number {
    let n = 0;
    for (const p of this.peers.values()) {
      if (p.current) n++;
      if (p.previous) n++;
      if (p.next) n++;
    }
    return n;
  }

  /**
   * The datagrams of the default sink, an {@link Outbox} (empty when another sink was set), for sans-I/O
   * callers to carry or inspect.
   */
  get outbox(): Datagram[] {
    return this.#defaultOutbox.datagrams;
  }

  // ---------------------------------------------------------------- configuration

  /**
   * Sets (or with null, removes) the private key; the one it replaces is wiped, as is every static-static DH
   * made with it. A peer with our own public key is removed (as `wg` does).
   */
  setPrivateKey(privateKey: Uint8Array | null): void {
    if (privateKey && isZero(privateKey)) privateKey = null;
    if (privateKey && this.identity && equalConstantTime(privateKey, this.identity.privateKey)) return;
    if (privateKey) privateKey = clampPrivateKey(privateKey.slice()); // as the kernel stores it
    const old = this.identity;
    const x25519 = this.x25519;
    this.identity = privateKey ? { privateKey, publicKey: x25519.publicKey(privateKey), x25519 } : null;
    this.#cookieChecker.setPublicKey(this.identity?.publicKey ?? null);
    for (const peer of [...this.peers.values()]) {
      if (this.identity && equalConstantTime(peer.publicKey, this.identity.publicKey)) {
        this.removePeer(peer.publicKey);
        continue;
      }
      peer.handshake.precompute(this.identity);
      // Sessions made with the old key are no longer ours to use.
      this.#retire(peer.clearKeypairs());
      this.#retireHandshake(peer);
    }
    zero(old?.privateKey);
  }

  peer(publicKey: Uint8Array): Peer | undefined {
    return this.peers.get(keyId(publicKey));
  }

  /** Adds a peer (or returns the existing one). Returns null for our own public key. */
  addPeer(publicKey: Uint8Array): Peer | null {
    const existing = this.peer(publicKey);
    if (existing) return existing;
    if (this.identity && equalConstantTime(publicKey, this.identity.publicKey)) return null;
    const peer = new Peer(publicKey.slice(), this.#timers);
    peer.handshake.precompute(this.identity);
    this.peers.set(keyId(publicKey), peer);
    return peer;
  }

  removePeer(publicKey: Uint8Array): boolean {
    const peer = this.peer(publicKey);
    if (!peer) return false;
    peer.dead = true;
    peer.timers.stop();
    peer.staged = [];
    this.#retire(peer.clearKeypairs());
    this.#retireHandshake(peer);
    peer.handshake.wipe();
    this.allowedIps.removeByPeer(peer);
    this.peers.delete(keyId(publicKey));
    return true;
  }

  /** Applies a parsed UAPI `set` (already validated as a whole, so it cannot fail halfway). */
  apply(update: DeviceUpdate): void {
    if (update.privateKey !== undefined) this.setPrivateKey(update.privateKey);
    if (update.listenPort !== undefined) this.listenPort = update.listenPort;
    if (update.fwmark !== undefined) this.fwmark = update.fwmark;
    if (update.replacePeers) { for (const p of [...this.peers.values()]) this.removePeer(p.publicKey); }
    for (const u of update.peers) {
      if (u.remove) {
        this.removePeer(u.publicKey);
        continue;
      }
      if (u.updateOnly && !this.peer(u.publicKey)) continue;
      const peer = this.addPeer(u.publicKey);
      if (!peer) continue;
      if (u.presharedKey !== undefined) peer.handshake.setPresharedKey(u.presharedKey);
      if (u.endpoint !== undefined) {
        peer.endpoint = u.endpoint;
        peer.endpointName = null; // an endpoint given as an address is meant as given
      }
      if (u.endpointName !== undefined) peer.endpointName = u.endpointName;
      if (u.replaceAllowedIps) this.allowedIps.removeByPeer(peer);
      for (const c of u.allowedIps) {
        if (c.op === "-") this.allowedIps.remove(c, peer); // a prefix the peer does not own: nothing to do
        else this.allowedIps.insert(c, peer);
      }
      if (u.persistentKeepalive !== undefined) {
        const wasOff = peer.persistentKeepalive === 0;
        peer.persistentKeepalive = u.persistentKeepalive;
        // Turning persistent keepalive on sends one now, so a NAT mapping opens right away (as the kernel).
        if (wasOff && u.persistentKeepalive > 0) this.sendKeepalive(peer);
      }
    }
  }

  /** The configuration and statistics, for UAPI `get`. */
  info(): DeviceInfo {
    const peers: PeerInfo[] = [];
    for (const p of this.peers.values()) {
      peers.push({
        publicKey: p.publicKey,
        presharedKey: isZero(p.handshake.presharedKey) ? null : p.handshake.presharedKey,
        endpoint: p.endpoint,
        persistentKeepalive: p.persistentKeepalive,
        lastHandshakeMs: p.lastHandshakeWall,
        rxBytes: p.rxBytes,
        txBytes: p.txBytes,
        allowedIps: this.allowedIps.entriesForPeer(p),
      });
    }
    return {
      privateKey: this.identity?.privateKey ?? null,
      listenPort: this.listenPort,
      fwmark: this.fwmark,
      peers,
    };
  }

  // ---------------------------------------------------------------- TUN → network

  /**
   * An IP packet read from the TUN at `buf[off, off+len)`. The caller leaves DATA_HEADER_LEN bytes free before
   * `off` and DATA_TRAILER_ROOM bytes after the packet, so the datagram is built in place and handed to the
   * sink there (Verdict.Send).
   */
  handlePlaintext(buf: Uint8Array, off: number, len: number): Verdict {
    const v = this.#plaintext(buf, off, len);
    this.verdicts[v]!++;
    return v;
  }

  #plaintext(buf: Uint8Array, off: number, len: number): Verdict {
    const family = ipVersion(buf, off, len);
    if (family === 0) return Verdict.DropMalformed;
    const peer = this.allowedIps.lookup(family, buf, off + (family === 4 ? IPV4_DST : IPV6_DST));
    if (!peer) return Verdict.DropNoRoute;
    if (!peer.endpoint) return Verdict.DropNoEndpoint;
    const hooks = this.hooks;
    for (let i = 0; i < hooks.length; i++) {
      if (!hooks[i]!.outbound(peer, buf, off, len)) return Verdict.DropFiltered;
    }
    const now = this.clock.now();
    const kp = peer.current;
    // Without a usable session the packet waits, and a handshake starts (paper 6.2 / the kernel's staging).
    if (!canSend(kp, now) || peer.staged.length > 0) {
      if (!peer.stage(buf.slice(off, off + len))) this.verdicts[Verdict.DropQueueFull]!++;
      this.#sendStaged(peer);
      return Verdict.Queued;
    }
    const total = this.#encrypt(peer, kp, buf, off, len);
    const at = off - DATA_HEADER_LEN;
    this.out.offset = at;
    this.out.length = total;
    this.out.endpoint = peer.endpoint;
    this.out.peer = peer;
    // Handed over before anything the timers below may send, so the sink sees it first, in its place.
    this.sink.send(buf, at, total, peer.endpoint, true);
    this.#afterDataSent(peer, kp, now, len > 0);
    return Verdict.Send;
  }

  /** Pads, writes the header in front and seals in place; returns the datagram length. */
  #encrypt(peer: Peer, kp: Keypair, buf: Uint8Array, off: number, len: number): number {
    // Pad to a multiple of 16 (paper 5.4.6), but never past the MTU.
    let padded = (len + MESSAGE_PADDING_MULTIPLE - 1) & ~(MESSAGE_PADDING_MULTIPLE - 1);
    if (padded > this.mtu) padded = len > this.mtu ? len : this.mtu;
    buf.fill(0, off + len, off + padded);
    const counter = kp.sendCounter++;
    const lo = counter >>> 0;
    const hi = (counter / TWO_32) >>> 0;
    const h = off - DATA_HEADER_LEN;
    writeHeader(buf, MESSAGE_DATA, h);
    writeU32(buf, h + DATA_RECEIVER, kp.remoteIndex);
    writeU32(buf, h + DATA_COUNTER, lo);
    writeU32(buf, h + DATA_COUNTER + 4, hi);
    this.aead.seal(kp.sendKey, lo, hi, buf, off, padded);
    const total = DATA_HEADER_LEN + padded + NOISE_AUTHTAG_LEN;
    peer.txBytes += total;
    return total;
  }

  /** Timer hooks and rekeying after data went out (the kernel's wg_packet_create_data_done, keep_key_fresh). */
  #afterDataSent(peer: Peer, kp: Keypair, now: number, isData: boolean): void {
    const t = peer.timers;
    t.anyAuthenticatedPacketTraversal(now);
    t.anyAuthenticatedPacketSent();
    // The jitter only matters when the new-handshake timer is not already armed (as the kernel's
    // wg_timers_data_sent); drawing it for every packet would cost an RNG call per packet on the hot path.
    if (isData) t.dataSent(now, this);
    if (kp.sendCounter > REKEY_AFTER_MESSAGES || (kp.isInitiator && now - kp.birth >= REKEY_AFTER_TIME)) {
      this.sendInitiation(peer, false);
    }
  }

  /** Sends what waits for a session, or starts a handshake if there is no usable session. */
  #sendStaged(peer: Peer): void {
    const now = this.clock.now();
    const kp = peer.current;
    if (!canSend(kp, now) || !peer.endpoint) {
      this.sendInitiation(peer, false);
      return;
    }
    const packets = peer.staged;
    peer.staged = [];
    let data = false;
    for (const p of packets) {
      if (this.#scratch.length < DATA_HEADER_LEN + p.length + DATA_TRAILER_ROOM) {
        this.#scratch = new Uint8Array(DATA_HEADER_LEN + Math.max(p.length, 1500) + DATA_TRAILER_ROOM);
      }
      const buf = this.#scratch;
      buf.set(p, DATA_HEADER_LEN);
      const total = this.#encrypt(peer, kp, buf, DATA_HEADER_LEN, p.length);
      this.sink.send(buf, 0, total, peer.endpoint, false);
      if (p.length > 0) data = true;
    }
    this.#afterDataSent(peer, kp, now, data);
  }

  /** A keepalive: an empty data message, unless real packets are waiting anyway (the kernel's send_keepalive). */
  sendKeepalive(peer: Peer): void {
    if (peer.staged.length === 0) peer.staged.push(new Uint8Array(0));
    this.#sendStaged(peer);
  }

  /**
   * Sends a handshake initiation, at most once per REKEY_TIMEOUT (paper 6.4). `isRetry` keeps the attempt
   * count; anything else starts a fresh series of attempts.
   */
  sendInitiation(peer: Peer, isRetry: boolean): void {
    // Only the retransmit timer retries, and it fires only when the last initiation got no response in time.
    if (isRetry) this.handshakesFailed++;
    peer.timers.initiationRequested(isRetry);
    const now = this.clock.now();
    // The last initiation went unanswered for REKEY_TIMEOUT: the peer's name may point elsewhere by now.
    if (isRetry && peer.endpointName !== null && peer.timers.resolveDue(now)) this.onResolve?.(peer);
    if (now - peer.lastSentHandshake < REKEY_TIMEOUT || peer.dead) return;
    if (!this.identity || !peer.endpoint) return;
    this.#retireHandshake(peer);
    const index = this.#allocateIndex(peer, null);
    const msg = createInitiation(peer.handshake, this.identity, index, this.clock.wall(), this.rng);
    if (!msg) {
      this.#indices.delete(index);
      return;
    }
    peer.cookie.addMacs(msg, now);
    peer.timers.anyAuthenticatedPacketTraversal(now);
    peer.timers.anyAuthenticatedPacketSent();
    peer.lastSentHandshake = now;
    this.#send(peer, msg);
    this.handshakesInitiated++;
    peer.timers.handshakeInitiated(now, this.jitter());
  }

  #send(peer: Peer, data: Uint8Array): void {
    if (!peer.endpoint) return;
    peer.txBytes += data.length;
    this.sink.send(data, 0, data.length, peer.endpoint, false);
  }

  // ---------------------------------------------------------------- network → TUN

  /**
   * A UDP datagram at `buf[off, off+len)` from `src`. Data is decrypted in place: the IP packet is then at
   * `out.offset`, `out.length` bytes long (Verdict.Deliver). Handshake replies go to the sink.
   */
  handleDatagram(buf: Uint8Array, off: number, len: number, src: Source): Verdict {
    const v = this.#datagram(buf, off, len, src);
    this.verdicts[v]!++;
    return v;
  }

  #datagram(buf: Uint8Array, off: number, len: number, src: Source): Verdict {
    switch (messageType(buf, off, len)) {
      case MESSAGE_DATA:
        return this.#receiveData(buf, off, len, src);
      case MESSAGE_HANDSHAKE_INITIATION:
      case MESSAGE_HANDSHAKE_RESPONSE:
        return this.#receiveHandshake(buf, off, len, src);
      case MESSAGE_HANDSHAKE_COOKIE:
        return this.#receiveCookie(buf.subarray(off, off + len));
      default:
        return Verdict.DropMalformed;
    }
  }

  #receiveData(buf: Uint8Array, off: number, len: number, src: Source): Verdict {
    const entry = this.#indices.get(readU32(buf, off + DATA_RECEIVER));
    const kp = entry?.keypair;
    if (!entry || !kp) return Verdict.DropUnknownIndex;
    const peer = entry.peer;
    const now = this.clock.now();
    if (!canReceive(kp, now)) return Verdict.DropExpired;
    const lo = readU32(buf, off + DATA_COUNTER);
    const hi = readU32(buf, off + DATA_COUNTER + 4);
    const payload = off + DATA_HEADER_LEN;
    if (!this.aead.open(kp.receiveKey, lo, hi, buf, payload, len - DATA_HEADER_LEN)) {
      return Verdict.DropDecrypt;
    }
    // The counter is checked only after authentication, so forged packets cannot move the window.
    if (!kp.replay.validate(lo, hi)) return Verdict.DropReplay;

    const rotation = peer.receivedWithKeypair(kp);
    if (rotation.rotated) {
      if (rotation.retired) this.#retire([rotation.retired]);
      peer.timers.handshakeComplete(this.clock.wall());
      this.handshakesCompleted++;
      this.#sendStaged(peer);
    }
    this.#keepKeyFreshOnReceive(peer, now);
    peer.timers.anyAuthenticatedPacketReceived();
    peer.timers.anyAuthenticatedPacketTraversal(now);
    this.#roam(peer, src);
    peer.rxBytes += len;

    const plainLen = len - DATA_HEADER_LEN - NOISE_AUTHTAG_LEN;
    if (plainLen === 0) return Verdict.Handled; // a keepalive
    peer.timers.dataReceived(now);

    const family = ipVersion(buf, payload, plainLen);
    if (family === 0) return Verdict.DropMalformed;
    const ipLen = ipTotalLength(buf, payload);
    if (ipLen > plainLen || ipLen < (family === 4 ? 20 : 40)) return Verdict.DropMalformed;
    // Cryptokey routing (paper 2): the inner source must be one of this peer's allowed IPs.
    const src2 = payload + (family === 4 ? IPV4_SRC : IPV6_SRC);
    if (this.allowedIps.lookup(family, buf, src2) !== peer) return Verdict.DropNotAllowed;
    const hooks = this.hooks;
    for (let i = 0; i < hooks.length; i++) {
      if (!hooks[i]!.inbound(peer, buf, payload, ipLen)) return Verdict.DropFiltered;
    }
    this.out.offset = payload;
    this.out.length = ipLen;
    this.out.endpoint = peer.endpoint;
    this.out.peer = peer;
    return Verdict.Deliver;
  }

  /** An initiator whose session nears REJECT_AFTER_TIME starts a new handshake once (the kernel's
   * keep_key_fresh on receive), so a quiet initiator does not lose the session. */
  #keepKeyFreshOnReceive(peer: Peer, now: number): void {
    const kp = peer.current;
    if (peer.timers.sentLastMinuteHandshake || !kp || !kp.isInitiator) return;
    if (now - kp.birth >= REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT) {
      peer.timers.sentLastMinuteHandshake = true;
      this.sendInitiation(peer, false);
    }
  }

  /** The endpoint follows the source of the latest authenticated packet (paper 2.1, roaming). */
  #roam(peer: Peer, src: Source): void {
    const ep = peer.endpoint;
    // The sticky source follows too: a reply leaves from the address the peer wrote to (lib/ip.ts Endpoint).
    if (ep?.matches(src.addr, src.port) && ep.sameLocal(src.local, src.ifindex)) return;
    peer.endpoint = endpointOf(src);
  }

  /**
   * Whether the device is under load (paper 5.3), counting one more handshake message with a valid mac1. The
   * kernel and wireguard-go look at the backlog of handshakes queued for their workers; a sans-I/O device
   * handles each at once, so here the backlog is a rate: more than the threshold within a second. Only
   * messages that passed mac1 count, as only those are about to cost a DH: junk, which anyone can send without
   * knowing our public key, must not make us demand cookies from legitimate peers. Once under load, the device
   * stays so for UNDER_LOAD_AFTER.
   */
  #underLoad(now: number): boolean {
    if (now - this.#handshakeWindowStart >= 1000) {
      this.#handshakeWindowStart = now;
      this.#handshakesInWindow = 0;
    }
    if (++this.#handshakesInWindow > this.#underLoadThreshold) this.#lastUnderLoad = now;
    return now - this.#lastUnderLoad < UNDER_LOAD_AFTER;
  }

  /** A handshake message at `buf[off, off+len)`, its length already checked for its type. */
  #receiveHandshake(buf: Uint8Array, off: number, len: number, src: Source): Verdict {
    if (!this.identity) return Verdict.DropNoKey;
    // Paper 5.4.4: mac1 before anything else. A datagram that fails it has cost one BLAKE2s and changed nothing.
    if (!this.#cookieChecker.checkMac1(buf, off, len)) return Verdict.DropInvalidMac;
    const msg = buf.subarray(off, off + len);
    const now = this.clock.now();
    if (this.#underLoad(now)) {
      // Paper 5.3: under load, only a sender that proves its address with a cookie gets a handshake, and
      // only at the per-source rate.
      if (!this.#cookieChecker.checkMac2(msg, src, now)) {
        const reply = this.#cookieChecker.createReply(msg, src, now, this.rng);
        this.sink.send(reply, 0, reply.length, src, false);
        return Verdict.DropCookieSent;
      }
      if (!this.#rateLimiter.allow(src.addr, now)) return Verdict.DropRateLimited;
    }

    const identity = this.identity;
    let peer: Peer;
    if (msg[0] === MESSAGE_HANDSHAKE_INITIATION) {
      let found: Peer | undefined;
      const hs = consumeInitiation(msg, identity, (pub) => {
        found = this.peer(pub);
        return found?.handshake;
      }, now);
      if (!hs || !found) return Verdict.DropHandshake;
      peer = found;
      peer.rxBytes += msg.length;
      this.#roam(peer, src);
      this.#sendResponse(peer, now);
    } else {
      const hs = consumeResponse(msg, identity, (index) => {
        const e = this.#indices.get(index);
        return e && !e.keypair ? e.peer.handshake : undefined;
      });
      if (!hs) return Verdict.DropHandshake;
      peer = this.#indices.get(hs.localIndex)!.peer;
      peer.rxBytes += msg.length;
      this.#roam(peer, src);
      const index = hs.localIndex;
      const kp = beginSession(hs, now);
      if (!kp) return Verdict.DropHandshake;
      this.#indices.set(index, { peer, keypair: kp });
      this.#retire(peer.addKeypair(kp));
      peer.timers.sessionDerived(now);
      peer.timers.handshakeComplete(this.clock.wall());
      this.handshakesCompleted++;
      // Confirm the session at once: send what waited, or a keepalive.
      this.sendKeepalive(peer);
    }
    peer.timers.anyAuthenticatedPacketReceived();
    peer.timers.anyAuthenticatedPacketTraversal(now);
    return Verdict.Handled;
  }

  #sendResponse(peer: Peer, now: number): void {
    peer.lastSentHandshake = now;
    const hs = peer.handshake;
    // The index of a handshake we initiated is replaced by the one of this response.
    const old = hs.localIndex;
    if (old && this.#indices.get(old)?.keypair === null) this.#indices.delete(old);
    const index = this.#allocateIndex(peer, null);
    const msg = createResponse(hs, index, this.rng);
    if (!msg) {
      this.#indices.delete(index);
      return;
    }
    peer.cookie.addMacs(msg, now);
    const kp = beginSession(hs, now);
    if (!kp) {
      this.#indices.delete(index);
      return;
    }
    this.#indices.set(index, { peer, keypair: kp });
    this.#retire(peer.addKeypair(kp));
    peer.timers.sessionDerived(now);
    peer.timers.anyAuthenticatedPacketTraversal(now);
    peer.timers.anyAuthenticatedPacketSent();
    this.#send(peer, msg);
  }

  #receiveCookie(msg: Uint8Array): Verdict {
    const entry = this.#indices.get(readU32(msg, 4));
    if (!entry) return Verdict.DropUnknownIndex;
    return entry.peer.cookie.consumeReply(msg, this.clock.now()) ? Verdict.Handled : Verdict.DropDecrypt;
  }

  // ---------------------------------------------------------------- timers

  /**
   * Runs the expired timers (their policy is in timers.ts) and the rate limiter's garbage collection. Costs
   * time in proportion to the peers whose timers expired, not to the number of peers.
   */
  tick(): void {
    const now = this.clock.now();
    this.#timers.expire(now, this);
    this.#rateLimiter.gc(now);
  }

  /** The earliest timer deadline of any peer (monotonic ms), Infinity if none: the event loop's timeout. */
  nextDeadline(): number {
    return this.#timers.next();
  }

  // What the timers make the device do (TimerActions); sendInitiation and sendKeepalive are above.

  /** The timers gave up on a handshake (REKEY_ATTEMPT_TIME): its last initiation went unanswered too. */
  purgeStaged(peer: Peer): void {
    this.handshakesFailed++;
    peer.staged = [];
  }

  zeroKeyMaterial(peer: Peer): void {
    this.#retire(peer.clearKeypairs());
    this.#retireHandshake(peer);
  }

  /** A random REKEY_TIMEOUT jitter, below REKEY_TIMEOUT_JITTER_MAX (paper 6.1). */
  jitter(): number {
    this.rng(this.#jitterBuf);
    return readU32(this.#jitterBuf, 0) % REKEY_TIMEOUT_JITTER_MAX;
  }

  // ---------------------------------------------------------------- indices

  /** A random 32-bit index not in use (paper 5.4.2: sender indices are random, to not leak a count). */
  #allocateIndex(peer: Peer, keypair: Keypair | null): number {
    for (;;) {
      this.rng(this.#indexBuf);
      const i = readU32(this.#indexBuf, 0);
      if (i !== 0 && !this.#indices.has(i)) {
        this.#indices.set(i, { peer, keypair });
        return i;
      }
    }
  }

  #retire(keypairs: Keypair[]): void {
    for (const k of keypairs) {
      if (this.#indices.get(k.localIndex)?.keypair === k) this.#indices.delete(k.localIndex);
      k.wipe();
    }
  }

  #retireHandshake(peer: Peer): void {
    const i = peer.handshake.localIndex;
    if (i && this.#indices.get(i)?.keypair === null) this.#indices.delete(i);
    peer.handshake.clear();
  }
}

/** A lasting Endpoint for a datagram's source (whose address view the caller reuses). */
function endpointOf(src: Source): Endpoint {
  const local = src.local !== undefined && src.local.length > 0 ? src.local.slice() : undefined;
  return new Endpoint(src.addr.length === 4 ? 4 : 6, src.addr.slice(), src.port, local, src.ifindex);
}

/** Peers are keyed by their public key's bytes; a latin1 string of them is a cheap exact Map key. */
function keyId(publicKey: Uint8Array): string {
  return String.fromCharCode(...publicKey);
}

export type { Peer };
