/**
 * The receive-side replay filter for transport data (paper section 5.4.6): the RFC 6479 sliding window, sized
 * as the Linux kernel sizes it (COUNTER_BITS_TOTAL bits of ring, of which COUNTER_WINDOW_SIZE are usable).
 *
 * Counters are 64-bit on the wire. JavaScript numbers are exact only up to 2^53 and BigInt allocates, so the
 * counter travels as its two unsigned 32-bit halves and is compared as the pair (hi, lo).
 * @module
 */
import {
  COUNTER_BITS_TOTAL,
  COUNTER_WINDOW_SIZE,
  REJECT_AFTER_MESSAGES_HI,
  REJECT_AFTER_MESSAGES_LO,
} from "./messages.ts";

/** The ring is kept in 32-bit words (the kernel uses machine words; the window is the same either way). */
const WORD_BITS = 32;
const WORD_SHIFT = 5;
const RING_WORDS = COUNTER_BITS_TOTAL / WORD_BITS;
const RING_MASK = RING_WORDS - 1;
const TWO_32 = 2 ** 32;
/** Word indices are counters shifted right by WORD_SHIFT, so the high half contributes 2^(32-5) per unit. */
const TWO_27 = 2 ** (32 - WORD_SHIFT);

/**
 * One session's replay window. `validate` is called only after the packet authenticated (RFC 6479 section 1:
 * an attacker must not be able to move the window with forged packets), and it records the counter as seen.
 *
 * Like the kernel, the state is the greatest accepted counter plus one (zero meaning "nothing yet"), so a fresh
 * window needs no special case for counter 0.
 */
export class ReplayCounter {
  /** Greatest accepted counter + 1, as two unsigned 32-bit halves. */
  #hi = 0;
  #lo = 0;
  /** Bit (n mod COUNTER_BITS_TOTAL) is set when counter n - 1 has been accepted (n = counter + 1). */
  readonly #ring = new Uint32Array(RING_WORDS);

  /** Forgets everything: used when the session's keys are installed. */
  reset(): void {
    this.#hi = 0;
    this.#lo = 0;
    this.#ring.fill(0);
  }

  /**
   * True if the counter (given as its unsigned 32-bit halves, as read from the wire) is acceptable, and records
   * it. False for counters at or beyond REJECT_AFTER_MESSAGES, older than the window, or already seen.
   * Allocates nothing.
   */
  validate(lo: number, hi: number): boolean {
    // Coerce to u32 so that whatever a caller passes, the arithmetic below stays within its proofs.
    let nLo = lo >>> 0;
    let nHi = hi >>> 0;

    // Paper section 6.1: no message may carry a counter >= REJECT_AFTER_MESSAGES (2^64 - 2^13 - 1).
    if (
      nHi > REJECT_AFTER_MESSAGES_HI || (nHi === REJECT_AFTER_MESSAGES_HI && nLo >= REJECT_AFTER_MESSAGES_LO)
    ) {
      return false;
    }

    // n = counter + 1. It cannot overflow 64 bits, because counter < 2^64 - 2^13 - 1 here.
    if (nLo === 0xffffffff) {
      nLo = 0;
      nHi++;
    } else {
      nLo++;
    }

    const cHi = this.#hi;
    const cLo = this.#lo;
    const ahead = nHi > cHi || (nHi === cHi && nLo > cLo);

    if (!ahead) {
      // Too old when n + COUNTER_WINDOW_SIZE < c. The difference c - n is computed as a double: each term is
      // exact (a u32 difference times 2^32, and a u32 difference), and their sum is exact below 2^53. Above that
      // it may round, but only to another value far above COUNTER_WINDOW_SIZE, so the comparison is unaffected.
      const behind = (cHi - nHi) * TWO_32 + (cLo - nLo);
      if (behind > COUNTER_WINDOW_SIZE) return false;
    } else {
      // The window slides forward: clear the ring words between the old top word and the new one (RFC 6479
      // section 2.3), at most the whole ring. The distance in words is again a double that can only round when
      // it is already far larger than the ring.
      const wordsAhead = (nHi - cHi) * TWO_27 + ((nLo >>> WORD_SHIFT) - (cLo >>> WORD_SHIFT));
      const top = wordsAhead < RING_WORDS ? wordsAhead : RING_WORDS;
      // The ring index of a counter depends only on its low bits, and RING_WORDS divides 2^27.
      const current = cLo >>> WORD_SHIFT;
      for (let i = 1; i <= top; i++) this.#ring[(current + i) & RING_MASK] = 0;
      this.#hi = nHi;
      this.#lo = nLo;
    }

    const index = (nLo >>> WORD_SHIFT) & RING_MASK;
    const bit = 1 << (nLo & (WORD_BITS - 1));
    const word = this.#ring[index]!;
    if ((word & bit) !== 0) return false;
    this.#ring[index] = word | bit;
    return true;
  }
}
