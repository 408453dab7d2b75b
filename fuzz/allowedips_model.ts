/**
 * A reference for lib/allowedips.ts: a list of (prefix, owner) scanned linearly for the longest prefix that
 * contains the address. A prefix has one owner, the last to insert it; each owner's prefixes are listed in
 * the order they became its own.
 * @module
 */
import type { Cidr } from "../lib/ip.ts";

interface Entry<T> {
  family: 4 | 6;
  key: Uint8Array;
  prefixLen: number;
  peer: T;
}

export class AllowedIpsModel<T> {
  /** In the order each prefix got its current owner. */
  #entries: Entry<T>[] = [];

  insert(c: Cidr, peer: T): void {
    const key = masked(c.addr, c.prefixLen);
    const i = this.#find(c.family, key, c.prefixLen);
    if (i >= 0 && this.#entries[i]!.peer === peer) return;
    if (i >= 0) this.#entries.splice(i, 1);
    this.#entries.push({ family: c.family, key, prefixLen: c.prefixLen, peer });
  }

  remove(c: Cidr, peer: T): boolean {
    const i = this.#find(c.family, masked(c.addr, c.prefixLen), c.prefixLen);
    if (i < 0 || this.#entries[i]!.peer !== peer) return false;
    this.#entries.splice(i, 1);
    return true;
  }

  removeByPeer(peer: T): void {
    this.#entries = this.#entries.filter((e) => e.peer !== peer);
  }

  clear(): void {
    this.#entries = [];
  }

  lookup(family: 4 | 6, addr: Uint8Array): T | undefined {
    let best: Entry<T> | undefined;
    for (const e of this.#entries) {
      if (e.family !== family || (best && best.prefixLen >= e.prefixLen)) continue;
      if (equal(masked(addr, e.prefixLen), e.key)) best = e;
    }
    return best?.peer;
  }

  entriesForPeer(peer: T): Cidr[] {
    return this.#entries.filter((e) => e.peer === peer).map((e) => ({
      family: e.family,
      addr: e.key,
      prefixLen: e.prefixLen,
    }));
  }

  #find(family: 4 | 6, key: Uint8Array, prefixLen: number): number {
    return this.#entries.findIndex((e) =>
      e.family === family && e.prefixLen === prefixLen && equal(e.key, key)
    );
  }
}

/** The address with every bit from `prefixLen` on cleared, bit by bit. */
export function masked(addr: Uint8Array, prefixLen: number): Uint8Array {
  const out = new Uint8Array(addr.length);
  for (let bit = 0; bit < prefixLen && bit < addr.length * 8; bit++) {
    if (addr[bit >> 3]! & (0x80 >> (bit & 7))) out[bit >> 3]! |= 0x80 >> (bit & 7);
  }
  return out;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
