/**
 * Packet memory: one pinned ArrayBuffer that a data plane's big buffers (the TUN read buffer, the
 * coalescer's arena, the UDP send and receive batches) are carved out of. lib/bytes.ts copies between views
 * of the same ArrayBuffer with `copyWithin`, a native memmove (about 30 ns for 1,400 bytes under Bun), and
 * between different ones with a JavaScript word loop (230–400 ns). The copies left on the packet path (a TSO
 * segment from the TUN read into the UDP send batch, a decrypted segment from the UDP receive batch into a
 * merged packet) are between these buffers; before they shared one backing store, that loop was the
 * largest JavaScript cost in issue 13's profile.
 *
 * The pages of the buffer are touched only as they are used: room to spare costs address space, not memory.
 * @module
 */

import { pinned } from "./runtime.ts";

/** Buffers start at multiples of this (a cache line). */
const ALIGN = 64;

/** A bump allocator over one pinned ArrayBuffer; what it hands out lives as long as the whole. */
export class PacketMemory {
  readonly #whole: Uint8Array;
  #used = 0;

  /** @param size bytes in all; a request beyond them gets a buffer of its own (see {@link take}) */
  constructor(size: number) {
    if (!Number.isInteger(size) || size < ALIGN || size > 1 << 30) {
      throw new RangeError(`Invalid packet memory size: ${size}`);
    }
    this.#whole = pinned(size);
  }

  /** Bytes handed out so far (alignment included). */
  get used(): number {
    return this.#used;
  }

  /**
   * A zeroed, pinned buffer of `size` bytes in this memory, never overlapping another. When the memory is
   * full, a pinned buffer of its own: everything still works, only copies to and from it are slower.
   */
  take(size: number): Uint8Array {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`Invalid buffer size: ${size}`);
    const whole = this.#whole;
    if (this.#used + size > whole.length) return pinned(size);
    const view = new Uint8Array(whole.buffer, whole.byteOffset + this.#used, size);
    this.#used = Math.min(whole.length, (this.#used + size + ALIGN - 1) & ~(ALIGN - 1));
    return view;
  }
}
