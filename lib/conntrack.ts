/**
 * A bounded table of connections, keyed by the words lib/tuple.ts writes, for per-connection statistics and
 * the packet filter's state. Like the kernel's nf_conntrack table it has a fixed size; unlike it, a full table
 * makes room by evicting the least recently used entry (and counts it) instead of refusing the new one, so a
 * flood of new connections cannot freeze the entries of the busy ones for long.
 *
 * Everything is preallocated at construction: keys in one Uint32Array, hash chains and the recency list in
 * Int32Arrays, so a lookup or an insertion allocates nothing. Callers keep their values in their own arrays,
 * indexed by the entry number this table hands out (0 to capacity-1).
 * @module
 */
import { KEY_WORDS } from "./tuple.ts";

const NONE = -1;

export class ConnTable {
  readonly capacity: number;
  /** Entries in use. */
  size = 0;
  /** Entries pushed out to make room for new ones, since the start. */
  evicted = 0;
  /** Entry i's key is `keys[i*KEY_WORDS, (i+1)*KEY_WORDS)`. */
  readonly keys: Uint32Array;
  readonly #buckets: Int32Array;
  readonly #mask: number;
  /** Next entry in the same bucket. */
  readonly #chain: Int32Array;
  readonly #bucketOf: Int32Array;
  /** The recency list: #head is the most recently used entry, #tail the least. */
  readonly #newer: Int32Array;
  readonly #older: Int32Array;
  #head = NONE;
  #tail = NONE;
  /**
   * The entry found or inserted last. A bulk transfer is one connection packet after packet (its data one way,
   * its acknowledgements the other, under one key), so comparing with it first skips the hash and the chain.
   */
  #last = NONE;

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 1 << 24) {
      throw new RangeError(`connection table capacity must be 1 to ${1 << 24}, not ${capacity}`);
    }
    this.capacity = capacity;
    this.keys = new Uint32Array(capacity * KEY_WORDS);
    let buckets = 1;
    while (buckets < capacity) buckets <<= 1;
    this.#buckets = new Int32Array(buckets).fill(NONE);
    this.#mask = buckets - 1;
    this.#chain = new Int32Array(capacity);
    this.#bucketOf = new Int32Array(capacity);
    this.#newer = new Int32Array(capacity);
    this.#older = new Int32Array(capacity);
  }

  /** The entry holding `key`, or -1. Does not change its recency (see {@link touch}). */
  find(key: Uint32Array): number {
    const keys = this.keys;
    const last = this.#last;
    if (last !== NONE && sameKey(keys, last * KEY_WORDS, key)) return last;
    for (let i = this.#buckets[hash(key) & this.#mask]!; i !== NONE; i = this.#chain[i]!) {
      if (sameKey(keys, i * KEY_WORDS, key)) return (this.#last = i);
    }
    return NONE;
  }

  /** Marks entry `i` as the most recently used. */
  touch(i: number): void {
    if (this.#head === i) return;
    this.#unlink(i);
    this.#pushHead(i);
  }

  /**
   * Adds `key` (not already present) as the most recently used entry and returns its number; when the table
   * is full, the least recently used entry is evicted and its number reused. The caller resets its values.
   */
  insert(key: Uint32Array): number {
    let i: number;
    if (this.size < this.capacity) {
      i = this.size++;
    } else {
      i = this.#tail;
      this.#unchain(i);
      this.#unlink(i);
      this.evicted++;
    }
    this.keys.set(key, i * KEY_WORDS);
    const b = hash(key) & this.#mask;
    this.#bucketOf[i] = b;
    this.#chain[i] = this.#buckets[b]!;
    this.#buckets[b] = i;
    this.#pushHead(i);
    this.#last = i;
    return i;
  }

  /**
   * Removes entry `i`; the last entry moves into its number, and `moved(from, to)` lets the caller move its
   * values along (entry numbers stay dense, so a new entry always takes number `size`).
   */
  remove(i: number, moved: (from: number, to: number) => void): void {
    this.#last = NONE;
    this.#unchain(i);
    this.#unlink(i);
    const last = --this.size;
    if (i === last) return;
    // Move `last` into `i`: its key, its chain link and its place in the recency list.
    this.keys.copyWithin(i * KEY_WORDS, last * KEY_WORDS, (last + 1) * KEY_WORDS);
    const b = this.#bucketOf[last]!;
    this.#bucketOf[i] = b;
    this.#chain[i] = this.#chain[last]!;
    if (this.#buckets[b] === last) this.#buckets[b] = i;
    else {
      let j = this.#buckets[b]!;
      while (this.#chain[j] !== last) j = this.#chain[j]!;
      this.#chain[j] = i;
    }
    const newer = this.#newer[last]!, older = this.#older[last]!;
    this.#newer[i] = newer;
    this.#older[i] = older;
    if (newer === NONE) this.#head = i;
    else this.#older[newer] = i;
    if (older === NONE) this.#tail = i;
    else this.#newer[older] = i;
    moved(last, i);
  }

  /** Entry numbers from the most to the least recently used (allocates: for reports, not for packets). */
  entries(): number[] {
    const out: number[] = [];
    for (let i = this.#head; i !== NONE; i = this.#older[i]!) out.push(i);
    return out;
  }

  /** Forgets every entry (the eviction count stays). */
  clear(): void {
    this.#buckets.fill(NONE);
    this.size = 0;
    this.#head = this.#tail = this.#last = NONE;
  }

  #unchain(i: number): void {
    const b = this.#bucketOf[i]!;
    if (this.#buckets[b] === i) {
      this.#buckets[b] = this.#chain[i]!;
      return;
    }
    let j = this.#buckets[b]!;
    while (this.#chain[j] !== i) j = this.#chain[j]!;
    this.#chain[j] = this.#chain[i]!;
  }

  #unlink(i: number): void {
    const newer = this.#newer[i]!, older = this.#older[i]!;
    if (newer === NONE) this.#head = older;
    else this.#older[newer] = older;
    if (older === NONE) this.#tail = newer;
    else this.#newer[older] = newer;
  }

  #pushHead(i: number): void {
    this.#newer[i] = NONE;
    this.#older[i] = this.#head;
    if (this.#head !== NONE) this.#newer[this.#head] = i;
    this.#head = i;
    if (this.#tail === NONE) this.#tail = i;
  }
}

/** Whether `keys[at, at+KEY_WORDS)` is `key`. */
function sameKey(keys: Uint32Array, at: number, key: Uint32Array): boolean {
  for (let w = 0; w < KEY_WORDS; w++) if (keys[at + w] !== key[w]) return false;
  return true;
}

/** A multiplicative hash of the key words (FNV-1a's structure over 32-bit words, with a final mix). */
function hash(key: Uint32Array): number {
  let h = 0x811c9dc5;
  for (let w = 0; w < KEY_WORDS; w++) h = Math.imul(h ^ key[w]!, 0x01000193);
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  return (h ^ (h >>> 12)) >>> 0;
}
