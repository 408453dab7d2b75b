/**
 * The per-peer timers of the WireGuard paper, section 6, and all their policy, as the kernel's timers.c holds it:
 *
 * - retransmit handshake: an initiation got no response within REKEY_TIMEOUT (+ jitter): send another, and
 *   give up after MAX_TIMER_HANDSHAKES attempts (REKEY_ATTEMPT_TIME).
 * - send keepalive: we received data and sent nothing back for KEEPALIVE_TIMEOUT (passive keepalive).
 * - new handshake: we sent data and heard nothing for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (+ jitter).
 * - zero key material: no new handshake for 3 × REJECT_AFTER_TIME: forget every key.
 * - persistent keepalive: nothing sent or received for the configured interval (for NAT mappings).
 *
 * Timers here are deadlines, not OS timers. The hooks are named after the kernel's wg_timers_* functions and say
 * when they must be called; the expiry handlers after its wg_expired_*. What a timer makes the device do (send a
 * packet, drop what waited, forget keys) goes through {@link TimerActions}.
 *
 * The device's peers wait in a {@link TimerQueue}, a binary min-heap keyed by each peer's earliest deadline, so
 * that finding the next deadline, and the peers whose timers expired, costs nothing per idle peer. The key is
 * allowed to be early: arming a deadline earlier than the key moves the peer up the heap at once, while
 * disarming or postponing one (what every packet sent or received does) leaves the key alone; a peer that
 * reaches the top with an early key is put back at its true deadline. So the hot path never touches the heap.
 * @module
 */
import { KEEPALIVE_TIMEOUT, KEY_ZEROING_TIME, MAX_TIMER_HANDSHAKES, REKEY_TIMEOUT } from "./messages.ts";

const NEVER = Infinity;
/**
 * The pauses between re-resolutions of an endpoint name while handshakes fail: from one REKEY_TIMEOUT,
 * doubling, to five minutes (the contrib reresolve-dns.sh of wireguard-tools runs every 30 s from a timer;
 * doubling reacts faster at first and asks a resolver less often for a peer that is long gone).
 */
export const RESOLVE_BACKOFF_MIN = REKEY_TIMEOUT;
export const RESOLVE_BACKOFF_MAX = 300_000;

/** A source of the random REKEY_TIMEOUT jitter (0 to REKEY_TIMEOUT_JITTER_MAX ms), drawn only when needed. */
export interface Jitter {
  jitter(): number;
}

/** What the timers make the device do for a peer (the kernel's wg_packet_send_* and friends). */
export interface TimerActions<P> extends Jitter {
  /** Sends a handshake initiation; `isRetry` keeps the attempt count (the kernel's send_queued_handshake). */
  sendInitiation(peer: P, isRetry: boolean): void;
  /** Sends a keepalive, or what waited for a session instead. */
  sendKeepalive(peer: P): void;
  /** Drops the packets that waited for a session. */
  purgeStaged(peer: P): void;
  /** Forgets every keypair and the handshake in progress. */
  zeroKeyMaterial(peer: P): void;
}

export class Timers<P = unknown> {
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
  /** Wall-clock time (ms since the epoch) of the last completed handshake, 0 if none, for `wg show`. */
  lastHandshakeWall = 0;
  /** When the endpoint's name may be resolved again, and the pause after that (see resolveDue). */
  resolveNext = -NEVER;
  resolveInterval = RESOLVE_BACKOFF_MIN;
  /** Where this peer sits in its queue's heap (-1: not in it), and its key there (never after next()). */
  heapIndex = -1;
  heapKey = NEVER;
  readonly #queue: TimerQueue<P> | null;

  /**
   * @param owner what the actions are called with (the peer)
   * @param queue the device's queue, told when a deadline is armed; null for timers nobody polls but the caller
   */
  constructor(readonly owner: P, queue: TimerQueue<P> | null = null) {
    this.#queue = queue;
  }

  /** A deadline was armed at `at`: only an earlier one than the heap key moves the peer in the heap. */
  #armed(at: number): void {
    if (at < this.heapKey) this.#queue?.lower(this, at);
  }

  /** Should be called after an authenticated data packet is sent (wg_timers_data_sent). The jitter is drawn
   * only when the timer gets armed: the hot path passes a source of it, not a number drawn per packet. */
  dataSent(now: number, jitter: number | Jitter): void {
    if (this.newHandshake !== NEVER) return;
    const j = typeof jitter === "number" ? jitter : jitter.jitter();
    this.#armed(this.newHandshake = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + j);
  }

  /** Should be called after an authenticated data packet is received (wg_timers_data_received). */
  dataReceived(now: number): void {
    if (this.sendKeepalive === NEVER) this.#armed(this.sendKeepalive = now + KEEPALIVE_TIMEOUT);
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

  /** Should be called whenever an initiation is asked for: a fresh request (not a retransmission) starts a new
   * series of attempts (as the kernel's wg_packet_send_queued_handshake_initiation). */
  initiationRequested(isRetry: boolean): void {
    if (!isRetry) this.handshakeAttempts = 0;
  }

  /** Should be called after a handshake initiation message is sent. */
  handshakeInitiated(now: number, jitter: number): void {
    this.#armed(this.retransmitHandshake = now + REKEY_TIMEOUT + jitter);
  }

  /**
   * Should be called after a handshake response is received, or the first data on a responder's session
   * (wg_timers_handshake_complete); `wall` is the wall-clock time, for `latest handshake`.
   */
  handshakeComplete(wall: number): void {
    this.resolveNext = -NEVER;
    this.resolveInterval = RESOLVE_BACKOFF_MIN;
    this.retransmitHandshake = NEVER;
    this.handshakeAttempts = 0;
    this.sentLastMinuteHandshake = false;
    this.lastHandshakeWall = wall;
  }

  /**
   * Whether to resolve the endpoint's name again now, asked when an initiation went unanswered for
   * REKEY_TIMEOUT. Yes at the first such failure, then after pauses doubling from RESOLVE_BACKOFF_MIN to
   * RESOLVE_BACKOFF_MAX (so at most once per handshake attempt, and a peer that is simply down costs a lookup
   * every few minutes); a completed handshake starts over. Not a deadline of its own: it rides on the
   * retransmissions, which already stop when the handshake is given up.
   */
  resolveDue(now: number): boolean {
    if (now < this.resolveNext) return false;
    this.resolveNext = now + this.resolveInterval;
    this.resolveInterval = Math.min(RESOLVE_BACKOFF_MAX, this.resolveInterval * 2);
    return true;
  }

  /** Should be called after ephemeral keys are created: a session now exists that must expire. */
  sessionDerived(now: number): void {
    this.#armed(this.zeroKeyMaterial = now + KEY_ZEROING_TIME);
  }

  /** Should be called before any authenticated packet is sent or after one is received. */
  anyAuthenticatedPacketTraversal(now: number): void {
    if (this.persistentKeepaliveInterval > 0) {
      this.#armed(this.persistentKeepalive = now + this.persistentKeepaliveInterval);
    }
  }

  /** Stops every timer and leaves the queue (the peer is being removed or the device goes down). */
  stop(): void {
    this.retransmitHandshake = this.sendKeepalive = this.newHandshake = NEVER;
    this.zeroKeyMaterial = this.persistentKeepalive = NEVER;
    this.#queue?.remove(this);
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
  expire(now: number, actions: TimerActions<P>): void {
    if (this.retransmitHandshake <= now) {
      this.retransmitHandshake = NEVER;
      this.#expiredRetransmitHandshake(now, actions);
    }
    if (this.sendKeepalive <= now) {
      this.sendKeepalive = NEVER;
      this.#expiredSendKeepalive(now, actions);
    }
    if (this.newHandshake <= now) {
      this.newHandshake = NEVER;
      actions.sendInitiation(this.owner, false); // wg_expired_new_handshake
    }
    if (this.zeroKeyMaterial <= now) {
      this.zeroKeyMaterial = NEVER;
      actions.zeroKeyMaterial(this.owner); // wg_expired_zero_key_material
    }
    if (this.persistentKeepalive <= now) {
      this.persistentKeepalive = NEVER;
      // wg_expired_send_persistent_keepalive: the interval may have been turned off since it was armed.
      if (this.persistentKeepaliveInterval > 0) actions.sendKeepalive(this.owner);
    }
  }

  /** wg_expired_retransmit_handshake: try again, or after REKEY_ATTEMPT_TIME give up (paper 6.4). */
  #expiredRetransmitHandshake(now: number, actions: TimerActions<P>): void {
    if (this.handshakeAttempts > MAX_TIMER_HANDSHAKES) {
      // Give up: no keepalive is owed for a session that is not coming, what waited is dropped, and the keys
      // that are left die in time even if nothing else armed their zeroing.
      this.sendKeepalive = NEVER;
      actions.purgeStaged(this.owner);
      if (this.zeroKeyMaterial === NEVER) this.#armed(this.zeroKeyMaterial = now + KEY_ZEROING_TIME);
      return;
    }
    this.handshakeAttempts++;
    actions.sendInitiation(this.owner, true);
  }

  /** wg_expired_send_keepalive: and if data arrived meanwhile, another keepalive is owed later. */
  #expiredSendKeepalive(now: number, actions: TimerActions<P>): void {
    actions.sendKeepalive(this.owner);
    if (this.needAnotherKeepalive) {
      this.needAnotherKeepalive = false;
      this.#armed(this.sendKeepalive = now + KEEPALIVE_TIMEOUT);
    }
  }
}

/**
 * The peers of a device ordered by their earliest timer deadline: a binary min-heap of their {@link Timers},
 * each knowing its position, so arming is O(log n) and the next deadline O(1) amortised, whatever the number
 * of idle peers. Keys may be early (see the module comment); {@link next} and {@link expire} correct them.
 */
export class TimerQueue<P> {
  readonly #heap: Timers<P>[] = [];
  /** Scratch for expire(): the peers due this round, taken out of the heap first so each fires once. */
  readonly #due: Timers<P>[] = [];

  /** How many peers have a timer (or an early key) in the queue. */
  get size(): number {
    return this.#heap.length;
  }

  /** Sets `t`'s key to `key`, which is not later than its current one, inserting it if it is not queued. */
  lower(t: Timers<P>, key: number): void {
    t.heapKey = key;
    if (t.heapIndex < 0) {
      t.heapIndex = this.#heap.length;
      this.#heap.push(t);
    }
    this.#up(t.heapIndex);
  }

  /** Takes `t` out of the queue, if it is in it. */
  remove(t: Timers<P>): void {
    const i = t.heapIndex;
    if (i < 0) return;
    const last = this.#heap.pop()!;
    t.heapIndex = -1;
    t.heapKey = NEVER;
    if (last === t) return;
    this.#heap[i] = last;
    last.heapIndex = i;
    this.#up(i);
    this.#down(last.heapIndex);
  }

  /** The earliest armed deadline of any peer (monotonic ms), Infinity if none. */
  next(): number {
    for (;;) {
      const top = this.#heap[0];
      if (!top) return NEVER;
      const at = top.next();
      if (at === top.heapKey) return at;
      this.#reset(top, at); // an early key: put the peer where its true deadline is, and look again
    }
  }

  /** Fires the expired timers of every peer that has any, each peer once, the earliest first. */
  expire(now: number, actions: TimerActions<P>): void {
    const due = this.#due;
    while (this.#heap.length > 0 && this.#heap[0]!.heapKey <= now) due.push(this.#pop());
    for (let i = 0; i < due.length; i++) {
      const t = due[i]!;
      if (t.next() <= now) t.expire(now, actions);
      this.#reset(t, t.next());
    }
    due.length = 0;
  }

  /** Puts `t` in the queue at exactly `key` (or out of it, for Infinity). */
  #reset(t: Timers<P>, key: number): void {
    if (key === NEVER) return this.remove(t);
    if (t.heapIndex < 0) return this.lower(t, key);
    const up = key < t.heapKey;
    t.heapKey = key;
    if (up) this.#up(t.heapIndex);
    else this.#down(t.heapIndex);
  }

  #pop(): Timers<P> {
    const top = this.#heap[0]!;
    this.remove(top);
    return top;
  }

  #up(i: number): void {
    const heap = this.#heap;
    const t = heap[i]!;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = heap[parent]!;
      if (p.heapKey <= t.heapKey) break;
      heap[i] = p;
      p.heapIndex = i;
      i = parent;
    }
    heap[i] = t;
    t.heapIndex = i;
  }

  #down(i: number): void {
    const heap = this.#heap;
    const n = heap.length;
    const t = heap[i]!;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && heap[child + 1]!.heapKey < heap[child]!.heapKey) child++;
      const c = heap[child]!;
      if (c.heapKey >= t.heapKey) break;
      heap[i] = c;
      c.heapIndex = i;
      i = child;
    }
    heap[i] = t;
    t.heapIndex = i;
  }
}
