/**
 * A peer: its configuration, its handshake, its three keypairs, the packets waiting for a session, and its
 * statistics. The keypair rotation follows the kernel's noise.c (add_new_keypair, received_with_keypair).
 * @module
 */
import { CookieGenerator } from "./cookie.ts";
import type { Endpoint } from "./ip.ts";
import { MAX_SEND_COUNTER, MAX_STAGED_PACKETS, REJECT_AFTER_TIME } from "./messages.ts";
import { Handshake, type Keypair } from "./noise.ts";
import { type TimerQueue, Timers } from "./timers.ts";

export class Peer {
  readonly handshake: Handshake;
  readonly cookie: CookieGenerator;
  readonly timers: Timers<Peer>;
  endpoint: Endpoint | null = null;
  /** The `HOST:PORT` the endpoint was resolved from (UAPI endpoint_name), resolved again while handshakes fail. */
  endpointName: string | null = null;
  /** Keypairs (paper 5.4.5 and section 6): the one we send with, the one before it, and a responder's
   * unconfirmed new one, which becomes current when the first data packet arrives under it. */
  current: Keypair | null = null;
  previous: Keypair | null = null;
  next: Keypair | null = null;
  /** Packets from the TUN waiting for a session; the oldest is dropped when full. */
  staged: Uint8Array[] = [];
  /** When we last sent an initiation: no more than one per REKEY_TIMEOUT. */
  lastSentHandshake = -Infinity;
  rxBytes = 0;
  txBytes = 0;
  /** Set when the peer is removed, so that nothing queued for it is sent afterwards. */
  dead = false;

  /**
   * @param publicKey the peer's static public key
   * @param queue the device's timer queue, which this peer joins whenever one of its timers is armed
   */
  constructor(readonly publicKey: Uint8Array, queue: TimerQueue<Peer> | null = null) {
    this.handshake = new Handshake(publicKey);
    this.cookie = new CookieGenerator(publicKey);
    this.timers = new Timers<Peer>(this, queue);
  }

  /** Wall-clock time (ms since the epoch) of the last completed handshake, 0 if none, for `wg show`. */
  get lastHandshakeWall(): number {
    return this.timers.lastHandshakeWall;
  }

  /** Persistent keepalive interval in seconds, as configured (0 = off). */
  get persistentKeepalive(): number {
    return this.timers.persistentKeepaliveInterval / 1000;
  }

  set persistentKeepalive(seconds: number) {
    this.timers.persistentKeepaliveInterval = seconds * 1000;
  }

  /** Stages a packet for when a session exists; returns false if an older one had to be dropped. */
  stage(packet: Uint8Array): boolean {
    this.staged.push(packet);
    if (this.staged.length <= MAX_STAGED_PACKETS) return true;
    this.staged.shift();
    return false;
  }

  /**
   * Installs a keypair fresh from a handshake and returns the keypairs it pushed out, whose indices the caller
   * must retire. An initiator may use the new keypair at once; a responder keeps it as `next` until the
   * initiator proves it has it too.
   */
  addKeypair(kp: Keypair): Keypair[] {
    const retired: Keypair[] = [];
    const retire = (k: Keypair | null) => {
      if (k && k !== kp) retired.push(k);
    };
    if (kp.isInitiator) {
      if (this.next) {
        // A pending next keypair becomes the previous one; the old current is dropped.
        retire(this.previous);
        retire(this.current);
        this.previous = this.next;
        this.next = null;
      } else {
        retire(this.previous);
        this.previous = this.current;
      }
      this.current = kp;
    } else {
      retire(this.next);
      retire(this.previous);
      this.next = kp;
      this.previous = null;
    }
    return retired;
  }

  /**
   * Called when data arrives under `kp`. If it is the unconfirmed `next` keypair, the initiator has proven it
   * holds it: rotate it in. Returns the retired keypair (or null) and whether the rotation happened.
   */
  receivedWithKeypair(kp: Keypair): { rotated: boolean; retired: Keypair | null } {
    if (kp !== this.next) return { rotated: false, retired: null };
    const retired = this.previous;
    this.previous = this.current;
    this.current = kp;
    this.next = null;
    return { rotated: true, retired };
  }

  /** Every keypair this peer holds, for wiping. */
  keypairs(): Keypair[] {
    return [this.current, this.previous, this.next].filter((k): k is Keypair => k !== null);
  }

  /** Forgets all keypairs; returns them so their indices can be retired. */
  clearKeypairs(): Keypair[] {
    const all = this.keypairs();
    for (const k of all) k.wipe();
    this.current = this.previous = this.next = null;
    return all;
  }
}

/** Whether `kp` may still encrypt: not too old and not out of counters (paper section 6). */
export function canSend(kp: Keypair | null, now: number): kp is Keypair {
  return kp !== null && now - kp.birth < REJECT_AFTER_TIME && kp.sendCounter < MAX_SEND_COUNTER;
}

/** Whether a packet received under `kp` may be accepted on age grounds. */
export function canReceive(kp: Keypair, now: number): boolean {
  return now - kp.birth < REJECT_AFTER_TIME;
}
