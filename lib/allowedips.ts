/**
 * Allowed IPs: the table behind cryptokey routing (paper section 2). Outgoing, the destination address of a
 * packet picks the peer to encrypt it for; incoming, the source address of a decrypted packet must map back to
 * the peer that sent it. Both are longest-prefix matches over IPv4 and IPv6 prefixes.
 *
 * Like the kernel's allowedips.c, each family is a path-compressed binary trie: a node holds a prefix and, when
 * some peer owns exactly that prefix, the peer; nodes without a peer exist only where two branches part. Each
 * peer also keeps the set of its nodes, so removing a peer does not walk the whole trie, and the list of its
 * prefixes that `wg show` reads is built once per change, not once per request.
 * @module
 */
import type { Cidr, Family } from "./ip.ts";

/**
 * An allowed IP as a change: a prefix to add, or, with `op: "-"`, one to take away from the peer (UAPI
 * `allowed_ip=-PREFIX`, `wg set ... allowed-ips -PREFIX`, current wireguard-tools and wireguard-go). `op: "+"`
 * adds too; it only records that the entry was written `+PREFIX`, which makes a `wg set` argument or a config
 * file's AllowedIPs incremental (the peer's other prefixes stay) and is written back as it was read.
 */
export type AllowedIpChange = Cidr & { readonly op?: "+" | "-" };

/** True if any entry carries a `+` or `-`: the list changes the peer's prefixes instead of replacing them. */
export function isIncremental(list: readonly AllowedIpChange[]): boolean {
  return list.some((c) => c.op !== undefined);
}

class Node<T> {
  /** The prefix, host bits cleared; 4 or 16 bytes. */
  readonly key: Uint8Array;
  /** Prefix length in bits. */
  readonly cidr: number;
  /** The owner of exactly this prefix, or undefined for a branching node. */
  peer: T | undefined = undefined;
  parent: Node<T> | null = null;
  /** Children by the bit that follows the prefix (bit number `cidr`, counted from the most significant). */
  zero: Node<T> | null = null;
  one: Node<T> | null = null;

  constructor(key: Uint8Array, cidr: number) {
    this.key = key;
    this.cidr = cidr;
  }
}

export class AllowedIps<T> {
  #root4: Node<T> | null = null;
  #root6: Node<T> | null = null;
  /** Every node a peer owns, in the order the prefixes were given to it. */
  readonly #byPeer = new Map<T, Set<Node<T>>>();
  /** Each peer's prefixes as entriesForPeer() gives them, made on first request after a change. */
  readonly #lists = new Map<T, Cidr[]>();

  /**
   * Routes the prefix to `peer`, taking it from any peer that had it (a prefix has one owner; the last insert
   * wins). Host bits beyond the prefix length are ignored, as `wg` ignores them in 10.0.0.1/24.
   */
  insert(c: Cidr, peer: T): void {
    if (peer === undefined) throw new TypeError("Cannot insert allowed IP: peer is undefined");
    const bits = checkCidr(c);
    const key = maskKey(c.addr, c.prefixLen);
    const cidr = c.prefixLen;

    let parent: Node<T> | null = null;
    let node = this.#root(bits);
    // Descend while the node's prefix is a proper prefix of the new one.
    while (node && node.cidr <= cidr && commonBits(node.key, key, node.cidr) === node.cidr) {
      if (node.cidr === cidr) {
        this.#own(node, peer);
        return;
      }
      parent = node;
      node = bitAt(key, node.cidr) ? node.one : node.zero;
    }

    const fresh = new Node<T>(key, cidr);
    this.#own(fresh, peer);
    if (node) {
      const common = commonBits(node.key, key, Math.min(node.cidr, cidr));
      if (common === cidr) {
        // The new prefix contains the existing subtree: it goes in between.
        this.#setChild(fresh, bitAt(node.key, cidr), node);
        this.#replace(parent, bits, node, fresh);
      } else {
        // The two prefixes part at bit `common`: a branching node holds them both.
        const branch = new Node<T>(maskKey(key, common), common);
        this.#setChild(branch, bitAt(key, common), fresh);
        this.#setChild(branch, bitAt(node.key, common), node);
        this.#replace(parent, bits, node, branch);
      }
    } else if (parent) {
      this.#setChild(parent, bitAt(key, parent.cidr), fresh);
    } else {
      this.#setRoot(bits, fresh);
    }
  }

  /** Removes the prefix if `peer` owns it; true if it did. */
  remove(c: Cidr, peer: T): boolean {
    const bits = checkCidr(c);
    const key = maskKey(c.addr, c.prefixLen);
    let node = this.#root(bits);
    while (node && node.cidr < c.prefixLen && commonBits(node.key, key, node.cidr) === node.cidr) {
      node = bitAt(key, node.cidr) ? node.one : node.zero;
    }
    if (!node || node.cidr !== c.prefixLen || node.peer !== peer || peer === undefined) return false;
    if (commonBits(node.key, key, node.cidr) !== node.cidr) return false;
    this.#disown(node);
    this.#prune(node, bits);
    return true;
  }

  /** Removes every prefix the peer owns. Costs time in proportion to that peer's prefixes only. */
  removeByPeer(peer: T): void {
    const nodes = this.#byPeer.get(peer);
    if (!nodes) return;
    this.#byPeer.delete(peer);
    this.#lists.delete(peer);
    for (const node of nodes) {
      node.peer = undefined;
      this.#prune(node, node.key.length * 8);
    }
  }

  /**
   * The peer owning the longest prefix that contains the address at `bytes[offset..]` (4 bytes for IPv4, 16
   * for IPv6), or undefined. Reads the address where it lies, so a packet header needs no copy; a buffer too
   * short to hold the address matches nothing.
   */
  lookup(family: Family, bytes: Uint8Array, offset: number): T | undefined {
    const len = family === 4 ? 4 : 16;
    if (!(offset >= 0) || offset + len > bytes.length) return undefined;
    let node = family === 4 ? this.#root4 : this.#root6;
    let found: T | undefined = undefined;
    // Bits [0, matched) are known to agree with the current node's ancestors; only the rest need checking.
    let matched = 0;
    while (node) {
      const cidr = node.cidr;
      const key = node.key;
      // Compare whole bytes from the first one not yet known to match, then the remaining high bits.
      let i = matched >> 3;
      const full = cidr >> 3;
      for (; i < full; i++) if (key[i] !== bytes[offset + i]) return found;
      const rest = cidr & 7;
      if (rest !== 0 && ((key[full]! ^ bytes[offset + full]!) & (0xff00 >> rest) & 0xff) !== 0) return found;
      matched = cidr;
      if (node.peer !== undefined) found = node.peer;
      if (cidr === len * 8) break;
      node = (bytes[offset + (cidr >> 3)]! >> (7 - (cidr & 7))) & 1 ? node.one : node.zero;
    }
    return found;
  }

  /**
   * The prefixes the peer owns, in the order it was given them (as `wg show allowed-ips` lists them). The list
   * is kept until the peer's prefixes change, so a `get` of many peers costs no rebuilding: the caller reads
   * it and must not modify it.
   */
  entriesForPeer(peer: T): Cidr[] {
    const cached = this.#lists.get(peer);
    if (cached) return cached;
    const nodes = this.#byPeer.get(peer);
    if (!nodes) return [];
    const out: Cidr[] = [];
    for (const n of nodes) {
      out.push({ family: n.key.length === 4 ? 4 : 6, addr: n.key.slice(), prefixLen: n.cidr });
    }
    this.#lists.set(peer, out);
    return out;
  }

  /** Removes everything. */
  clear(): void {
    this.#root4 = null;
    this.#root6 = null;
    this.#byPeer.clear();
    this.#lists.clear();
  }

  #root(bits: number): Node<T> | null {
    return bits === 32 ? this.#root4 : this.#root6;
  }

  #setRoot(bits: number, node: Node<T> | null): void {
    if (node) node.parent = null;
    if (bits === 32) this.#root4 = node;
    else this.#root6 = node;
  }

  #setChild(parent: Node<T>, bit: number, child: Node<T> | null): void {
    if (bit) parent.one = child;
    else parent.zero = child;
    if (child) child.parent = parent;
  }

  /** Puts `next` where `old` hangs from `parent` (or from the root when there is no parent). */
  #replace(parent: Node<T> | null, bits: number, old: Node<T>, next: Node<T> | null): void {
    if (!parent) this.#setRoot(bits, next);
    else this.#setChild(parent, parent.one === old ? 1 : 0, next);
  }

  #own(node: Node<T>, peer: T): void {
    if (node.peer === peer) return;
    this.#disown(node);
    node.peer = peer;
    this.#lists.delete(peer);
    let set = this.#byPeer.get(peer);
    if (!set) this.#byPeer.set(peer, set = new Set());
    set.add(node);
  }

  #disown(node: Node<T>): void {
    if (node.peer === undefined) return;
    const set = this.#byPeer.get(node.peer);
    this.#lists.delete(node.peer);
    if (set) {
      set.delete(node);
      if (set.size === 0) this.#byPeer.delete(node.peer);
    }
    node.peer = undefined;
  }

  /**
   * After a node lost its peer: a node with no peer is kept only while it joins two subtrees, so remove it
   * (or splice its one child into its place), then do the same for its parent, which may have become a
   * branching node with a single child.
   */
  #prune(node: Node<T>, bits: number): void {
    let n: Node<T> | null = node;
    while (n && n.peer === undefined) {
      if (n.zero && n.one) return;
      const parent: Node<T> | null = n.parent;
      const child: Node<T> | null = n.zero ?? n.one;
      this.#replace(parent, bits, n, child);
      n.parent = n.zero = n.one = null;
      // Only a childless removal can leave the parent with one child and no reason to exist.
      n = child ? null : parent;
    }
  }
}

function checkCidr(c: Cidr): number {
  const bits = c.family === 4 ? 32 : c.family === 6 ? 128 : 0;
  if (bits === 0 || c.addr.length * 8 !== bits) {
    throw new TypeError(`Cannot use prefix: address of ${c.addr.length} bytes for IPv${c.family}`);
  }
  if (!Number.isInteger(c.prefixLen) || c.prefixLen < 0 || c.prefixLen > bits) {
    throw new RangeError(`Cannot use prefix: length ${c.prefixLen} is out of range for IPv${c.family}`);
  }
  return bits;
}

/** A copy of `addr` with the bits from `cidr` on cleared. */
function maskKey(addr: Uint8Array, cidr: number): Uint8Array {
  const out = addr.slice();
  const full = cidr >> 3;
  if (full < out.length) {
    out[full]! &= (0xff00 >> (cidr & 7)) & 0xff;
    out.fill(0, full + 1);
  }
  return out;
}

/** Bit number `i` of the key, counting from the most significant bit of the first byte. */
function bitAt(key: Uint8Array, i: number): number {
  return (key[i >> 3]! >> (7 - (i & 7))) & 1;
}

/** How many leading bits `a` and `b` share, up to `max`. */
function commonBits(a: Uint8Array, b: Uint8Array, max: number): number {
  const bytes = (max + 7) >> 3;
  for (let i = 0; i < bytes; i++) {
    const x = a[i]! ^ b[i]!;
    if (x !== 0) return Math.min(max, i * 8 + Math.clz32(x) - 24);
  }
  return max;
}
