/**
 * A reference for lib/replay.ts: the kernel's counter_validate (drivers/net/wireguard/receive.c) restated with
 * BigInt and no ring. The state is the greatest accepted counter + 1 (`top`) and one bitmap over the
 * COUNTER_BITS_TOTAL values below and at it (bit d: counter top - 1 - d was accepted). A counter is accepted
 * when it is below REJECT_AFTER_MESSAGES, not more than COUNTER_WINDOW_SIZE behind `top`, and not yet seen.
 * (The kernel clears its ring a word at a time as the window slides; for counters inside the window that is
 * the same as shifting this bitmap.)
 * @module
 */
import { COUNTER_BITS_TOTAL, COUNTER_WINDOW_SIZE } from "../lib/messages.ts";

/** 2^64 - 2^13 - 1 (paper section 6.1). */
export const REJECT_AFTER_MESSAGES = 2n ** 64n - 2n ** 13n - 1n;
const BITS = BigInt(COUNTER_BITS_TOTAL);
const WINDOW = BigInt(COUNTER_WINDOW_SIZE);
const MASK = (1n << BITS) - 1n;

export class ReplayModel {
  top = 0n;
  bitmap = 0n;

  reset(): void {
    this.top = 0n;
    this.bitmap = 0n;
  }

  validate(counter: bigint): boolean {
    if (counter >= REJECT_AFTER_MESSAGES) return false;
    const n = counter + 1n;
    if (n > this.top) {
      const shift = n - this.top;
      this.bitmap = shift >= BITS ? 0n : (this.bitmap << shift) & MASK;
      this.top = n;
      this.bitmap |= 1n;
      return true;
    }
    const behind = this.top - n;
    if (behind > WINDOW) return false;
    const bit = 1n << behind;
    if ((this.bitmap & bit) !== 0n) return false;
    this.bitmap |= bit;
    return true;
  }
}
