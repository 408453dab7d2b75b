/**
 * poll(2) over a preallocated `struct pollfd` array, synchronously (for draining under load) and asynchronously
 * (for waiting when idle without stopping the JavaScript event loop), and an eventfd wake-up.
 *
 * The asynchronous wait: on Deno, `poll` runs as a nonblocking FFI call on another thread and the promise
 * settles when it returns. bun:ffi has no such calls, so on Bun the wait is cut into blocking slices of at most
 * {@link BUN_SLICE_MS} ms with a turn of the event loop (setImmediate) between them: timers and sockets are
 * served within that bound, and a packet is still noticed at once because each slice is a real poll.
 * @module
 */

import {
  check,
  closeFd,
  EAGAIN,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EINTR,
  libc,
  POLLERR,
  POLLHUP,
  POLLIN,
  POLLNVAL,
  POLLOUT,
  SysError,
} from "./libc.ts";
import { errno, nonblockingCalls, pinned } from "./runtime.ts";

export { POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT };

/** sizeof(struct pollfd): int fd, short events, short revents. */
export const POLLFD_SIZE = 8;
/** On Bun, the longest the event loop is held by one slice of an asynchronous poll. */
export const BUN_SLICE_MS = 5;

/** A fixed-capacity set of descriptors to poll; slots are filled in order with {@link PollSet.add}. */
export class PollSet {
  readonly #bytes: Uint8Array;
  readonly #i32: Int32Array;
  readonly #i16: Int16Array;
  #count = 0;
  /** `#count` as the bigint poll's `nfds_t` takes: a number would send every call down Deno's slow FFI path. */
  #nfds = 0n;

  constructor(capacity: number) {
    // Off-heap, so a poll running on another thread (Deno nonblocking) sees a buffer that never moves.
    this.#bytes = pinned(capacity * POLLFD_SIZE);
    this.#i32 = new Int32Array(this.#bytes.buffer, 0, capacity * 2);
    this.#i16 = new Int16Array(this.#bytes.buffer, 0, capacity * 4);
  }

  /** How many slots are in use. */
  get count(): number {
    return this.#count;
  }

  /** Adds a descriptor with the events to wait for (POLLIN, POLLOUT); returns its slot. */
  add(fd: number, events: number): number {
    const slot = this.#count;
    if (slot * POLLFD_SIZE >= this.#bytes.length) throw new RangeError(`PollSet is full (${slot} slots)`);
    this.#count++;
    this.#nfds = BigInt(this.#count);
    this.set(slot, fd, events);
    return slot;
  }

  /** Replaces a slot's descriptor and events (a negative fd makes poll skip the slot). */
  set(slot: number, fd: number, events: number): void {
    this.#i32[slot * 2] = fd;
    this.#i16[slot * 4 + 2] = events;
    this.#i16[slot * 4 + 3] = 0;
  }

  /** Empties the set. */
  clear(): void {
    this.#count = 0;
    this.#nfds = 0n;
  }

  /** The events that occurred on a slot in the last poll (POLLIN, POLLERR…). */
  revents(slot: number): number {
    return this.#i16[slot * 4 + 3]! & 0xffff;
  }

  /** Whether a slot became readable (or hung up / failed, which a read will report). */
  readable(slot: number): boolean {
    return (this.#i16[slot * 4 + 3]! & (POLLIN | POLLERR | POLLHUP | POLLNVAL)) !== 0;
  }

  /**
   * Waits synchronously, blocking the thread. Allocates nothing.
   * @param timeoutMs 0 to only check, -1 to wait without limit
   * @returns how many slots have events; 0 on timeout or when interrupted by a signal
   */
  poll(timeoutMs: number): number {
    const n = libc.symbols.poll(this.#bytes, this.#nfds, timeoutMs);
    if (n >= 0) return n;
    const e = errno();
    if (e === EINTR) return 0;
    throw new SysError("poll", e);
  }

  /**
   * Waits without blocking the JavaScript event loop (see the module notes for how, per runtime).
   * @param timeoutMs -1 to wait without limit
   * @returns how many slots have events; 0 on timeout
   */
  async pollAsync(timeoutMs: number): Promise<number> {
    if (nonblockingCalls) {
      const n = await libc.symbols.poll_nonblocking(this.#bytes, this.#nfds, timeoutMs);
      // errno belongs to the thread that ran the call; a synchronous check reports the real state or error.
      return n >= 0 ? n : this.poll(0);
    }
    const deadline = timeoutMs < 0 ? Infinity : performance.now() + timeoutMs;
    for (;;) {
      const left = deadline - performance.now();
      const n = this.poll(
        left === Infinity ? BUN_SLICE_MS : Math.max(0, Math.min(BUN_SLICE_MS, Math.ceil(left))),
      );
      if (n > 0 || left <= BUN_SLICE_MS) return n;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }
}

/**
 * A wake-up descriptor (eventfd): add `fd` to a poll set with POLLIN; `wake()` makes it readable from any
 * thread or Worker of the process (pass the fd number and use {@link Waker.fromFd}); `drain()` resets it.
 */
export class Waker {
  #fd: number;
  readonly #owned: boolean;
  readonly #one = new BigUint64Array([1n]);
  readonly #sink = new BigUint64Array(1);

  constructor(fd?: number) {
    this.#owned = fd === undefined;
    this.#fd = fd ?? check(libc.symbols.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), "eventfd");
  }

  /** A Waker for an eventfd created elsewhere in the process (it will not close it). */
  static fromFd(fd: number): Waker {
    return new Waker(fd);
  }

  /** The descriptor to poll for POLLIN. */
  get fd(): number {
    return this.#fd;
  }

  /** Makes the descriptor readable. Never blocks; allocates nothing. */
  wake(): void {
    // EAGAIN only when the counter is about to overflow, and then it is readable already.
    libc.symbols.write(this.#fd, this.#one, 8);
  }

  /** Consumes pending wake-ups; returns whether there were any. */
  drain(): boolean {
    const n = libc.symbols.read(this.#fd, this.#sink, 8);
    if (n === 8) return true;
    const e = errno();
    if (n < 0 && e !== EAGAIN && e !== EINTR) throw new SysError("read(eventfd)", e);
    return false;
  }

  /** Closes the descriptor if this Waker created it. Idempotent. */
  close(): void {
    if (this.#owned) closeFd(this.#fd);
    this.#fd = -1;
  }
}
