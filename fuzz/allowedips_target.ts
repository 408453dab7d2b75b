/**
 * Allowed IPs (lib/allowedips.ts) against a linear longest-prefix scan: random inserts, removals and peer
 * removals over prefixes that nest and share bits, then lookups of addresses inside and beside them, read at
 * an offset inside a larger buffer as the device reads packet headers. Both must name the same peer, and list
 * the same prefixes per peer in the same order.
 * @module
 */
import { AllowedIps } from "../lib/allowedips.ts";
import type { Cidr } from "../lib/ip.ts";
import { AllowedIpsModel } from "./allowedips_model.ts";
import type { Prng } from "./prng.ts";
import { check, type Target } from "./target.ts";

/** What the target needs of an allowed-IPs table, so a test can hand it a broken one. */
export interface AllowedIpsTable {
  insert(c: Cidr, peer: number): void;
  remove(c: Cidr, peer: number): boolean;
  removeByPeer(peer: number): void;
  lookup(family: 4 | 6, bytes: Uint8Array, offset: number): number | undefined;
  entriesForPeer(peer: number): Cidr[];
  clear(): void;
}

const PEERS = 5;

export function allowedIpsTarget(
  p: Prng,
  make: () => AllowedIpsTable = () => new AllowedIps<number>(),
): Target {
  let impl = make();
  const model = new AllowedIpsModel<number>();
  let known: Cidr[] = [];
  let input: Uint8Array = new Uint8Array(0);
  let found = 0;

  // Addresses from a few base prefixes, so prefixes nest and branch instead of scattering.
  const bases4 = [p.bytes(4), p.bytes(4), new Uint8Array(4), new Uint8Array([255, 255, 255, 255])];
  const bases6 = [p.bytes(16), p.bytes(16), new Uint8Array(16)];
  const address = (family: 4 | 6): Uint8Array => {
    const a = p.pick(family === 4 ? bases4 : bases6).slice();
    // Keep a random number of leading bits, randomise the rest.
    const keep = p.below(a.length * 8 + 1);
    for (let bit = keep; bit < a.length * 8; bit++) {
      if (p.chance(0.5)) a[bit >> 3]! ^= 0x80 >> (bit & 7);
    }
    return a;
  };
  const cidr = (): Cidr => {
    if (known.length > 0 && p.chance(0.3)) {
      const k = p.pick(known);
      // The same prefix, or one bit more or less, or the same with other host bits.
      const bits = k.family === 4 ? 32 : 128;
      const prefixLen = Math.max(0, Math.min(bits, k.prefixLen + p.int(-1, 1)));
      const addr = k.addr.slice();
      if (p.chance(0.3)) addr[addr.length - 1]! ^= 1;
      return { family: k.family, addr, prefixLen };
    }
    const family = p.chance(0.5) ? 4 : 6;
    const bits = family === 4 ? 32 : 128;
    const prefixLen = p.chance(0.2) ? p.pick([0, bits, bits - 1, 1]) : p.below(bits + 1);
    return { family, addr: address(family), prefixLen };
  };
  const sameEntries = (peer: number) => {
    const a = impl.entriesForPeer(peer).map(show).join(" ");
    const b = model.entriesForPeer(peer).map(show).join(" ");
    check(a === b, () => `entries of peer ${peer}: lib [${a}], model [${b}]`);
  };

  return {
    get input() {
      return input;
    },
    step() {
      const r = p.below(100);
      if (r < 30) {
        const c = cidr();
        const peer = p.int(1, PEERS);
        input = c.addr;
        impl.insert(c, peer);
        model.insert(c, peer);
        if (known.length < 64) known.push(c);
        else known[p.below(known.length)] = c;
      } else if (r < 38) {
        const c = cidr();
        const peer = p.int(1, PEERS);
        input = c.addr;
        const a = impl.remove(c, peer), b = model.remove(c, peer);
        check(a === b, () => `remove ${show(c)} of peer ${peer}: lib ${a}, model ${b}`);
      } else if (r < 40) {
        const peer = p.int(1, PEERS);
        impl.removeByPeer(peer);
        model.removeByPeer(peer);
        sameEntries(peer);
      } else if (r === 40 && p.chance(0.05)) {
        if (p.chance(0.5)) impl.clear();
        else impl = make();
        model.clear();
        known = [];
      } else if (r < 44) {
        sameEntries(p.int(1, PEERS));
      } else {
        const family = p.chance(0.5) ? 4 : 6;
        const inPrefix = known.length > 0 && p.chance(0.6);
        const base = inPrefix ? p.pick(known) : null;
        let addr = address(family);
        if (base && base.family === family) {
          // Keep the prefix's bits, randomise the host part.
          addr = base.addr.slice();
          for (let bit = base.prefixLen; bit < addr.length * 8; bit++) {
            if (p.chance(0.5)) addr[bit >> 3]! ^= 0x80 >> (bit & 7);
          }
        }
        const off = p.below(24);
        const buf = p.bytes(off + addr.length + p.below(8));
        buf.set(addr, off);
        input = buf;
        const got = impl.lookup(family, buf, off);
        const want = model.lookup(family, addr);
        if (got !== undefined) found++;
        check(
          got === want,
          () => `lookup ${show({ family, addr, prefixLen: addr.length * 8 })}: lib ${got}, model ${want}`,
        );
        // A buffer too short for the address matches nothing.
        const short = impl.lookup(family, buf.subarray(0, off + addr.length - 1), off);
        check(short === undefined, "lookup read past the end of a short buffer");
      }
    },
    stats: () => ({ found }),
  };
}

function show(c: Cidr): string {
  const a = c.family === 4
    ? [...c.addr].join(".")
    : [...c.addr].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${a}/${c.prefixLen}`;
}
