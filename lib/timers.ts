/**
 * The per-peer timers of the WireGuard paper, section 6, as the kernel's timers.c arranges them:
 *
 * - retransmit handshake: an initiation got no response within REKEY_TIMEOUT (+ jitter): send another, and
 *   give up after MAX_TIMER_HANDSHAKES attempts (REKEY_ATTEMPT_TIME).
 * - send keepalive: we received data and sent nothing back for KEEPALIVE_TIMEOUT (passive keepalive).
 * - new handshake: we sent data and heard nothing for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (+ jitter).
 * - zero key material: no new handshake for 3 × REJECT_AFTER_TIME: forget every key.
 * - persistent keepalive: nothing sent or received for the configured interval (for NAT mappings).
 *
 * Timers here are deadlines, polled by the device's `tick(now)`; no OS timer per peer. Hooks are named after
 * the kernel's wg_timers_* functions and say when they must be called.
 * @module
 */
import { KEEPALIVE_TIMEOUT, KEY_ZEROING_TIME, REKEY_TIMEOUT } from "./messages.ts";

const NEVER = Infinity;

/** What happens when a timer expires; the device implements it (the kernel's wg_expired_* handlers). */
export interface TimerHandler<P> {
  expiredRetransmitHandshake(peer: P): void;
  expiredSendKeepalive(peer: P): void;
  expiredNewHandshake(peer: P): void;
  expiredZeroKeyMaterial(peer: P): void;
  expiredSendPersistentKeepalive(peer: P): void;
}

export class Timers {
  retransmitHandshake = NEVER;
  sendKeepalive = NEVER;
  newHandshake = NEVER;
  zeroKeyMaterial = NEVER;
  persistentKeepalive = NEVER;
  handshakeAttempts = 0;
  needAnotherKeepalive = false;
  sentLastMinuteHandshake = false;
  /** Persistent keepalive interval in ms; 0 = off. */
  persistentKeepaliveInterval = 0;

  /** Should be called after an authenticated data packet is sent. */
  dataSent(now: number, jitter: number): void {
    if (this.newHandshake === NEVER) this.newHandshake = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter;
  }

  /** Should be called after an authenticated data packet is received. */
  dataReceived(now: number): void {
    if (this.sendKeepalive === NEVER) this.sendKeepalive = now + KEEPALIVE_TIMEOUT;
    else this.needAnotherKeepalive = true;
  }

  /** Should be called after any type of authenticated packet is sent: keepalive, data, or handshake. */
  anyAuthenticatedPacketSent(): void {
    this.sendKeepalive = NEVER;
  }

  /** Should be called after any type of authenticated packet is received: keepalive, data, or handshake. */
  anyAuthenticatedPacketReceived(): void {
    this.newHandshake = NEVER;
  }

  /** Should be called after a handshake initiation message is sent. */
  handshakeInitiated(now: number, jitter: number): void {
    this.retransmitHandshake = now + REKEY_TIMEOUT + jitter;
  }

  /** Should be called after a handshake response is received, or the first data on a responder's session. */
  handshakeComplete(): void {
    this.retransmitHandshake = NEVER;
    this.handshakeAttempts = 0;
    this.sentLastMinuteHandshake = false;
  }

  /** Should be called after ephemeral keys are created: a session now exists that must expire. */
  sessionDerived(now: number): void {
    this.zeroKeyMaterial = now + KEY_ZEROING_TIME;
  }

  /** Should be called before any authenticated packet is sent or after one is received. */
  anyAuthenticatedPacketTraversal(now: number): void {
    if (this.persistentKeepaliveInterval > 0) {
      this.persistentKeepalive = now + this.persistentKeepaliveInterval;
    }
  }

  /** Stops every timer (the peer is being removed or the device goes down). */
  stop(): void {
    this.retransmitHandshake = this.sendKeepalive = this.newHandshake = NEVER;
    this.zeroKeyMaterial = this.persistentKeepalive = NEVER;
  }

  /** The earliest deadline, or Infinity when no timer is armed. */
  next(): number {
    return Math.min(
      this.retransmitHandshake,
      this.sendKeepalive,
      this.newHandshake,
      this.zeroKeyMaterial,
      this.persistentKeepalive,
    );
  }

  /** Fires every timer whose deadline has passed; each is disarmed before its handler runs. */
  expire<P>(now: number, handler: TimerHandler<P>, peer: P): void {
    if (this.retransmitHandshake <= now) {
      this.retransmitHandshake = NEVER;
      handler.expiredRetransmitHandshake(peer);
    }
    if (this.sendKeepalive <= now) {
      this.sendKeepalive = NEVER;
      handler.expiredSendKeepalive(peer);
      if (this.needAnotherKeepalive) {
        this.needAnotherKeepalive = false;
        this.sendKeepalive = now + KEEPALIVE_TIMEOUT;
      }
    }
    if (this.newHandshake <= now) {
      this.newHandshake = NEVER;
      handler.expiredNewHandshake(peer);
    }
    if (this.zeroKeyMaterial <= now) {
      this.zeroKeyMaterial = NEVER;
      handler.expiredZeroKeyMaterial(peer);
    }
    if (this.persistentKeepalive <= now) {
      this.persistentKeepalive = NEVER;
      handler.expiredSendPersistentKeepalive(peer);
    }
  }
}
