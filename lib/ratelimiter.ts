/**
 * Per-source rate limiting of handshake messages under load, as the Linux kernel's ratelimiter.c does it
 * (paper section 5.3 asks for it: handshakes cost a Curve25519 operation each, so one source must not be able
 * to monopolise the CPU once cookies have proven that it owns its address).
 *
 * A token bucket per source: PACKETS_PER_SECOND on average, bursts of up to PACKETS_BURSTABLE. IPv4 sources are
 * keyed by the whole address; IPv6 sources by their /64, because a single host usually owns a whole /64 and
 * could otherwise rotate through it. Entries idle for more than a second are forgotten.
 *
 * The table is an open-addressing hash table over typed arrays, so a lookup allocates nothing and the memory is
 * fixed when the limiter is made.
 * @module
 */

/** Rate and burst, as the kernel's enum in ratelimiter.c. */
export const PACKETS_PER_SECOND = 20;
export const PACKETS_BURSTABLE = 5;
/** Tokens are measured in milliseconds: one packet costs the time it takes to earn it. */
export const PACKET_COST = 1000 / PACKETS_PER_SECOND;
/** The burst is part of the bucket's capacity, not of the rate (the kernel's comment: "quasi-inspired by nft_limit"). */
export const TOKEN_MAX = PACKET_COST * PACKETS_BURSTABLE;
/** Entries not used for this long are dropped by the garbage collection, which runs about this often. */
export const RATELIMITER_ENTRY_TTL = 1000;

/**
 * The kernel sizes its table from RAM (xt_hashlimit's formula): 8192 buckets and 8 entries per bucket, so 65536
 * entries, on hosts with more than 1 GiB, shared by every interface. One userspace interface gets an eighth of
 * that by default: 8192 sources active within one second. Past the bound, new sources are refused (as in the
 * kernel), while known ones keep their buckets.
 */
export const DEFAULT_MAX_ENTRIES = 8192;

const EMPTY = 0;

export interface RateLimiterOptions {
  /** How many sources are tracked at once (default DEFAULT_MAX_ENTRIES). */
  maxEntries?: number;
  /**
   * A secret 32-bit value from the caller's RNG for the hash. The kernel keys its hash with siphash so that
   * remote parties cannot choose sources that collide; here a seeded mix plays that part.
   */
  seed?: number;
}

export class RateLimiter {
  readonly #maxEntries: number;
  readonly #mask: number;
  readonly #seed: number;
  /** Per slot: 0 when empty, else the family (4 or 6). */
  readonly #family: Uint8Array;
  /** Per slot: the key as two 32-bit words (IPv4: address and 0; IPv6: the /64 prefix). */
  readonly #keyA: Uint32Array;
  readonly #keyB: Uint32Array;
  /** Per slot: when the bucket was last touched, and its tokens then (both in milliseconds). */
  readonly #last: Float64Array;
  readonly #tokens: Float64Array;
  #size = 0;
  #lastGc = -Infinity;

  constructor(options: RateLimiterOptions = {}) {
    const max = options.maxEntries ?? DEFAULT_MAX_ENTRIES;
    if (!Number.isInteger(max) || max < 1 || max > 2 ** 24) {
      throw new RangeError(`Cannot create rate limiter: maxEntries ${max} is out of range`);
    }
    this.#maxEntries = max;
    // At most half full, so probe sequences stay short and there is always an empty slot to stop at.
    let capacity = 16;
    while (capacity < 2 * max) capacity *= 2;
    this.#mask = capacity - 1;
    this.#seed = (options.seed ?? 0) >>> 0;
    this.#family = new Uint8Array(capacity);
    this.#keyA = new Uint32Array(capacity);
    this.#keyB = new Uint32Array(capacity);
    this.#last = new Float64Array(capacity);
    this.#tokens = new Float64Array(capacity);
  }

  /** Number of sources being tracked. */
  get size(): number {
    return this.#size;
  }

  /**
   * Whether a handshake message from `addr` (4 or 16 bytes, network order) may be processed at `now` (a
   * monotonic clock in milliseconds). Spends a token when it says yes. Addresses of another length are refused.
   */
  allow(addr: Uint8Array, now: number): boolean {
    let family: number, a: number, b: number;
    if (addr.length === 4) {
      family = 4;
      a = readBE32(addr, 0);
      b = 0;
    } else if (addr.length === 16) {
      if (isV4Mapped(addr)) {
        // A dual-stack socket reports IPv4 sources as ::ffff:a.b.c.d; keying those by /64 would put every IPv4
        // source in one bucket.
        family = 4;
        a = readBE32(addr, 12);
        b = 0;
      } else {
        family = 6;
        a = readBE32(addr, 0);
        b = readBE32(addr, 4);
      }
    } else {
      return false;
    }

    // The kernel collects garbage from a timer once a second; doing it here as well means a caller that never
    // calls gc() still does not fill the table with long-gone sources.
    if (now - this.#lastGc >= RATELIMITER_ENTRY_TTL) this.gc(now);

    const slot = this.#find(family, a, b);
    if (this.#family[slot] !== EMPTY) {
      // Refill for the time elapsed (never negative, should the clock be stepped back), capped at the burst.
      const elapsed = now > this.#last[slot]! ? now - this.#last[slot]! : 0;
      let tokens = this.#tokens[slot]! + elapsed;
      if (tokens > TOKEN_MAX) tokens = TOKEN_MAX;
      this.#last[slot] = now;
      const ok = tokens >= PACKET_COST;
      this.#tokens[slot] = ok ? tokens - PACKET_COST : tokens;
      return ok;
    }

    if (this.#size >= this.#maxEntries) return false;
    this.#family[slot] = family;
    this.#keyA[slot] = a;
    this.#keyB[slot] = b;
    this.#last[slot] = now;
    // A new source starts with a full bucket and spends its first packet right away.
    this.#tokens[slot] = TOKEN_MAX - PACKET_COST;
    this.#size++;
    return true;
  }

  /** Forgets sources idle for more than RATELIMITER_ENTRY_TTL. Meant to be called about once a second. */
  gc(now: number): void {
    this.#lastGc = now;
    if (this.#size === 0) return;
    const mask = this.#mask;
    // Start just after an empty slot (there is one: the table is at most half full), so that no run of occupied
    // slots wraps around the start of the scan; then backward-shift deletion only moves entries that the scan
    // has not reached yet.
    let start = 0;
    while (this.#family[start] !== EMPTY) start++;
    let i = (start + 1) & mask;
    for (let n = 0; n < mask; n++) {
      if (this.#family[i] !== EMPTY && now - this.#last[i]! > RATELIMITER_ENTRY_TTL) {
        this.#delete(i);
        // Slot i may now hold an entry moved back from later in its run: look at it again.
        n--;
        continue;
      }
      i = (i + 1) & mask;
    }
  }

  /** Forgets every source (the kernel's gc with no work item, used on teardown). */
  clear(): void {
    this.#family.fill(EMPTY);
    this.#size = 0;
  }

  #hash(family: number, a: number, b: number): number {
    // Two rounds of MurmurHash3's 32-bit finaliser over the seeded key words: cheap, and without the seed the
    // slot of an address cannot be predicted.
    let h = fmix32((a ^ this.#seed) >>> 0);
    h = fmix32((h ^ b ^ Math.imul(family, 0x9e3779b1) ^ Math.imul(this.#seed, 0x85ebca6b)) >>> 0);
    return h & this.#mask;
  }

  /** The slot holding the key, or the empty slot where it would go (linear probing). */
  #find(family: number, a: number, b: number): number {
    const mask = this.#mask;
    let i = this.#hash(family, a, b);
    for (;;) {
      const f = this.#family[i]!;
      if (f === EMPTY || (f === family && this.#keyA[i] === a && this.#keyB[i] === b)) return i;
      i = (i + 1) & mask;
    }
  }

  /** Empties slot i, moving later entries of its run back so that every lookup still finds them (Knuth 6.4 R). */
  #delete(i: number): void {
    const mask = this.#mask;
    let hole = i;
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const f = this.#family[j]!;
      if (f === EMPTY) break;
      const home = this.#hash(f, this.#keyA[j]!, this.#keyB[j]!);
      // The entry at j may fill the hole only if its home slot is not cyclically within (hole, j].
      const stays = hole <= j ? hole < home && home <= j : hole < home || home <= j;
      if (stays) continue;
      this.#family[hole] = f;
      this.#keyA[hole] = this.#keyA[j]!;
      this.#keyB[hole] = this.#keyB[j]!;
      this.#last[hole] = this.#last[j]!;
      this.#tokens[hole] = this.#tokens[j]!;
      hole = j;
    }
    this.#family[hole] = EMPTY;
    this.#size--;
  }
}

function readBE32(b: Uint8Array, off: number): number {
  return ((b[off]! << 24) | (b[off + 1]! << 16) | (b[off + 2]! << 8) | b[off + 3]!) >>> 0;
}

/** ::ffff:0:0/96 (RFC 4291 section 2.5.5.2). */
function isV4Mapped(b: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
