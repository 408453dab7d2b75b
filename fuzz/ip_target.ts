/**
 * Address text (lib/ip.ts): every valid way to write an address must parse back to its bytes (IPv6 in any
 * RFC 4291 form: any case, leading zeros, any zero run compressed, a dotted IPv4 tail), formatting is
 * canonical (what parses formats to a fixed point), prefixes and endpoints survive format → parse, and
 * mutated text never throws.
 * @module
 */
import {
  formatAddress,
  formatCidr,
  parseAddress,
  parseCidr,
  parseEndpoint,
  splitHostPort,
} from "../lib/ip.ts";
import { Endpoint } from "../lib/ip.ts";
import { masked } from "./allowedips_model.ts";
import { equal } from "./device_world.ts";
import type { Prng } from "./prng.ts";
import { check, hex, mutate, type Target } from "./target.ts";

export function ipTarget(p: Prng): Target {
  let input = "";
  let parsed = 0;

  const address = (v6: boolean): Uint8Array => {
    const a = p.bytes(v6 ? 16 : 4);
    // Zero groups are where the interesting forms are.
    if (v6) { for (let g = 0; g < 8; g++) if (p.chance(0.5)) a[2 * g] = a[2 * g + 1] = 0; }
    if (v6 && p.chance(0.1)) a.set([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
    return a;
  };
  /** One of the many valid texts for an IPv6 address. */
  const writeV6 = (a: Uint8Array): string => {
    const groups = Array.from({ length: 8 }, (_, i) => (a[2 * i]! << 8) | a[2 * i + 1]!);
    const tail = p.chance(0.2);
    const words = groups.map((g) => {
      let s = g.toString(16).padStart(p.int(1, 4), "0");
      if (p.chance(0.3)) s = s.toUpperCase();
      return s;
    });
    if (tail) words.splice(6, 2, `${a[12]}.${a[13]}.${a[14]}.${a[15]}`);
    const n = words.length;
    // Compress one run of zero groups (not necessarily the longest), or none.
    const zeros: [number, number][] = [];
    for (let i = 0; i < n; i++) {
      for (let j = i; j < n && (tail && j === 6 ? false : groups[j] === 0); j++) zeros.push([i, j + 1]);
    }
    if (zeros.length === 0 || p.chance(0.2)) return words.join(":");
    const [i, j] = p.pick(zeros);
    return `${words.slice(0, i).join(":")}::${words.slice(j).join(":")}`;
  };

  return {
    get input() {
      return input;
    },
    step() {
      const v6 = p.chance(0.7);
      const a = address(v6);
      input = v6 ? writeV6(a) : [...a].join(".");
      if (p.chance(0.3)) input = new TextDecoder().decode(mutate(p, new TextEncoder().encode(input)));
      else {
        const got = parseAddress(input);
        check(got !== null && equal(got, a), () => `"${input}" parsed as ${got && hex(got)}, not ${hex(a)}`);
      }
      const got = parseAddress(input);
      if (got) {
        parsed++;
        const text = formatAddress(got);
        const again = parseAddress(text);
        check(
          again !== null && equal(again, got),
          () => `"${text}" (formatted from "${input}") does not parse back`,
        );
        check(formatAddress(again) === text, `formatting "${text}" is not canonical`);
      }
      // Prefixes and endpoints, from the same bytes.
      const prefixLen = p.below(a.length * 8 + 1);
      const cidr = parseCidr(formatCidr({ family: v6 ? 6 : 4, addr: masked(a, prefixLen), prefixLen }));
      check(
        cidr !== null && cidr.prefixLen === prefixLen && equal(cidr.addr, masked(a, prefixLen)),
        "a prefix did not survive format → parse",
      );
      const ep = new Endpoint(v6 ? 6 : 4, a, p.below(65536));
      const back = parseEndpoint(ep.toString());
      check(
        back !== null && back.port === ep.port && equal(back.addr, a),
        () => `endpoint ${ep} did not parse back`,
      );
      // Whatever the text, these never throw.
      parseCidr(`${input}/${p.below(140)}`);
      splitHostPort(`${input}:${p.below(70000)}`);
      parseEndpoint(`[${input}]:${p.below(70000)}`);
    },
    stats: () => ({ parsed }),
  };
}
