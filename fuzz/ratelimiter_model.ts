/**
 * A reference for lib/ratelimiter.ts: the same token bucket per source (the kernel's ratelimiter.c, as the
 * module describes it) kept in a Map instead of an open-addressing table. Sources are keyed as the limiter
 * keys them: IPv4 by address (also when written as ::ffff:a.b.c.d), IPv6 by its /64.
 * @module
 */
import { PACKET_COST, RATELIMITER_ENTRY_TTL, TOKEN_MAX } from "../lib/ratelimiter.ts";

interface Bucket {
  last: number;
  tokens: number;
}

export class RateLimiterModel {
  readonly #buckets = new Map<string, Bucket>();
  #lastGc = -Infinity;

  constructor(readonly maxEntries: number) {}

  get size(): number {
    return this.#buckets.size;
  }

  allow(addr: Uint8Array, now: number): boolean {
    const key = keyOf(addr);
    if (key === null) return false;
    if (now - this.#lastGc >= RATELIMITER_ENTRY_TTL) this.gc(now);
    const b = this.#buckets.get(key);
    if (b) {
      const tokens = Math.min(TOKEN_MAX, b.tokens + Math.max(0, now - b.last));
      b.last = now;
      const ok = tokens >= PACKET_COST;
      b.tokens = ok ? tokens - PACKET_COST : tokens;
      return ok;
    }
    if (this.#buckets.size >= this.maxEntries) return false;
    this.#buckets.set(key, { last: now, tokens: TOKEN_MAX - PACKET_COST });
    return true;
  }

  gc(now: number): void {
    this.#lastGc = now;
    for (const [k, b] of this.#buckets) if (now - b.last > RATELIMITER_ENTRY_TTL) this.#buckets.delete(k);
  }

  clear(): void {
    this.#buckets.clear();
  }
}

function keyOf(a: Uint8Array): string | null {
  if (a.length === 4) return `4:${a.join(".")}`;
  if (a.length !== 16) return null;
  const mapped = a.subarray(0, 10).every((x) => x === 0) && a[10] === 0xff && a[11] === 0xff;
  return mapped ? `4:${a.subarray(12).join(".")}` : `6:${a.subarray(0, 8).join(":")}`;
}
