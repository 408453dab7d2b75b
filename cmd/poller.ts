/**
 * The data loop's waker over file descriptors: one poll set holding the TUN, the UDP sockets, the netlink
 * socket and an eventfd. The adapters register their descriptors and ask for their slots' readiness after
 * each wait; the control plane (UAPI, signals) makes the eventfd readable to wake a wait.
 * @module
 */
import { performance } from "node:perf_hooks";
import { setImmediate } from "node:timers";
import { BUN_SLICE_MS, POLLIN, PollSet, Waker as EventFd } from "../ffi/poll.ts";
import { nonblockingCalls } from "../ffi/runtime.ts";
import { pollOnThread, threadPollAvailable } from "../ffi/thread_poll.ts";
import type { Waker } from "./dataplane.ts";

/** Descriptors a poller holds at most: TUN, UDP IPv4 and IPv6, netlink, eventfd, and room to spare. */
const CAPACITY = 8;
/**
 * For this long after the poller is made, idle waits are cut into 1 ms slices instead of BUN_SLICE_MS: at start
 * the UAPI's first requests come (a client's connection, its request, the reply each need a turn of the event
 * loop), and 5 ms slices added about 15 ms to the time until the UAPI answers (68 → 53 ms for dist/typetun).
 */
export const START_SLICES_MS = 1000;
const START_SLICE_MS = 1;
/**
 * After this long without a readable descriptor the tunnel counts as quiet, and an idle wait goes back to one
 * poll on another thread (Deno's asynchronous poll; on Bun, ffi/thread_poll.ts): the first packet after a quiet
 * spell pays its wake-up (~0.1 ms on Deno, ~0.04 ms median on Bun), but a quiet daemon does not wake 200 times a
 * second (sliced waits cost a daemon with no traffic about 1.7 % of a core). Replies
 * and the packets of a slow exchange (a shell, pings 0.5 s apart) come within this and keep the fast wake-up.
 */
export const QUIET_AFTER_MS = 3000;

/**
 * On Bun, whether a quiet wait can run on a thread of its own (ffi/thread_poll.ts, compiled at the first quiet
 * wait, never at start): undefined until asked, false where the helper cannot be compiled (the waits then stay
 * sliced, as before).
 */
let threadPoll: boolean | undefined;

export class Poller implements Waker {
  readonly #set = new PollSet(CAPACITY);
  readonly #eventfd = new EventFd();
  readonly #wakeSlot: number;
  readonly #shortSlicesUntil = performance.now() + START_SLICES_MS;
  #lastReady = performance.now();
  readonly #quietAfterMs: number;
  /** The descriptors of the set, slot by slot, for a wait on another thread (which polls a copy). */
  readonly #fds = new Int32Array(CAPACITY);
  #count = 0;

  /** @param options.quietAfterMs see QUIET_AFTER_MS (tests shorten it) */
  constructor(options: { quietAfterMs?: number } = {}) {
    this.#quietAfterMs = options.quietAfterMs ?? QUIET_AFTER_MS;
    this.#wakeSlot = this.#watch(this.#eventfd.fd);
  }

  /** Adds a descriptor to wait on for reading (-1: a slot kept empty); returns its slot. */
  watch(fd: number): number {
    return this.#watch(fd);
  }

  #watch(fd: number): number {
    const slot = this.#set.add(fd, POLLIN);
    this.#fds[slot] = fd;
    this.#count = slot + 1;
    return slot;
  }

  /** Puts another descriptor in a slot (-1 empties it). */
  replace(slot: number, fd: number): void {
    this.#set.set(slot, fd, POLLIN);
    this.#fds[slot] = fd;
  }

  /** Whether the slot's descriptor was readable (or failed, which a read reports) at the last wait. */
  readable(slot: number): boolean {
    return this.#set.readable(slot);
  }

  /**
   * Whether a descriptor is readable right now (a poll that does not wait). It refreshes what
   * {@link readable} reports, which the loop's next wait refreshes again anyway.
   */
  pending(): boolean {
    return this.#set.poll(0) > 0;
  }

  wake(): void {
    this.#eventfd.wake();
  }

  wait(ms: number): boolean {
    return this.#after(this.#set.poll(ms));
  }

  /**
   * Waits without holding the event loop for long: a wait with a timeout is cut into blocking polls of at most
   * BUN_SLICE_MS (1 ms in the first START_SLICES_MS), with a turn of the event loop between them. Bun has no
   * other way (ffi/poll.ts); on Deno it replaces Deno's own asynchronous poll, which runs on another thread
   * and cost about 0.1 ms to wake from per packet that ends an idle spell, four times per ping through a pair
   * of daemons. Deno's turn is a timer (not setImmediate), which lets it serve its sockets and signals. A zero
   * wait still goes through the asynchronous poll: the loop uses it to let pending I/O in.
   */
  async waitAsync(ms: number): Promise<boolean> {
    if (ms <= 0) return this.#after(await this.#set.pollAsync(ms));
    if (performance.now() - this.#lastReady > this.#quietAfterMs) {
      if (nonblockingCalls) return this.#after(await this.#set.pollAsync(ms));
      // Bun: one poll on a thread of its own instead of 200 slices a second; which descriptor woke it is
      // learnt by polling the set once more without waiting.
      threadPoll ??= threadPollAvailable();
      if (threadPoll) {
        // A timer that holds the event loop meanwhile: with nothing else referenced (no socket, no timer), Bun
        // 1.4.5 spun a whole core while the callback was pending (1 s of CPU in a 1 s wait).
        const hold = setTimeout(() => {}, Math.min(ms + 1000, 0x7fffffff));
        try {
          const n = await pollOnThread(this.#fds, this.#count, Math.min(ms, 0x7fffffff));
          return this.#after(n > 0 ? this.#set.poll(0) : 0);
        } finally {
          clearTimeout(hold);
        }
      }
    }
    const deadline = performance.now() + ms;
    for (;;) {
      const now = performance.now();
      const left = deadline - now;
      const slice = now < this.#shortSlicesUntil ? START_SLICE_MS : BUN_SLICE_MS;
      const n = this.#set.poll(Math.max(0, Math.min(slice, Math.ceil(left))));
      if (n > 0 || left <= slice) return this.#after(n);
      await new Promise<void>((resolve) => nonblockingCalls ? setTimeout(resolve, 0) : setImmediate(resolve));
    }
  }

  close(): void {
    this.#eventfd.close();
  }

  #after(n: number): boolean {
    if (n === 0) return false;
    this.#lastReady = performance.now();
    if (this.#set.readable(this.#wakeSlot)) this.#eventfd.drain();
    return true;
  }
}
