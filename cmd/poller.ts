/**
 * The data loop's waker over file descriptors: one poll set holding the TUN, the UDP sockets, the netlink
 * socket and an eventfd. The adapters register their descriptors and ask for their slots' readiness after
 * each wait; the control plane (UAPI, signals) makes the eventfd readable to wake a wait.
 * @module
 */
import { POLLIN, PollSet, Waker as EventFd } from "../ffi/poll.ts";
import type { Waker } from "./dataplane.ts";

/** Descriptors a poller holds at most: TUN, UDP IPv4 and IPv6, netlink, eventfd, and room to spare. */
const CAPACITY = 8;

export class Poller implements Waker {
  readonly #set = new PollSet(CAPACITY);
  readonly #eventfd = new EventFd();
  readonly #wakeSlot: number;

  constructor() {
    this.#wakeSlot = this.#set.add(this.#eventfd.fd, POLLIN);
  }

  /** Adds a descriptor to wait on for reading (-1: a slot kept empty); returns its slot. */
  watch(fd: number): number {
    return this.#set.add(fd, POLLIN);
  }

  /** Puts another descriptor in a slot (-1 empties it). */
  replace(slot: number, fd: number): void {
    this.#set.set(slot, fd, POLLIN);
  }

  /** Whether the slot's descriptor was readable (or failed, which a read reports) at the last wait. */
  readable(slot: number): boolean {
    return this.#set.readable(slot);
  }

  wake(): void {
    this.#eventfd.wake();
  }

  wait(ms: number): boolean {
    return this.#after(this.#set.poll(ms));
  }

  async waitAsync(ms: number): Promise<boolean> {
    return this.#after(await this.#set.pollAsync(ms));
  }

  close(): void {
    this.#eventfd.close();
  }

  #after(n: number): boolean {
    if (n > 0 && this.#set.readable(this.#wakeSlot)) this.#eventfd.drain();
    return n > 0;
  }
}
