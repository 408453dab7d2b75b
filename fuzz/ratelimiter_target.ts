/**
 * The per-source rate limiter (lib/ratelimiter.ts) against its Map model: the same sources at the same times
 * to both, the same answers and the same number of tracked sources, which must stay within the bound. Small
 * tables and small pools of sources make the hash table fill up, collide and delete in the middle of runs.
 * @module
 */
import { RateLimiter } from "../lib/ratelimiter.ts";
import type { Prng } from "./prng.ts";
import { RateLimiterModel } from "./ratelimiter_model.ts";
import { check, type Target } from "./target.ts";

export function rateLimiterTarget(p: Prng): Target {
  let impl!: RateLimiter;
  let model!: RateLimiterModel;
  let pool: Uint8Array[] = [];
  let now = 0;
  let input: Uint8Array = new Uint8Array(0);
  let allowed = 0;

  const fresh = () => {
    const max = p.pick([1, 2, 3, 8, 16, 64, 300]);
    impl = new RateLimiter({ maxEntries: max, seed: p.u32() });
    model = new RateLimiterModel(max);
    pool = [];
    const n = p.int(1, 2 * max + 4);
    for (let i = 0; i < n; i++) pool.push(source());
    now = p.below(1e9);
  };

  const source = (): Uint8Array => {
    switch (p.below(5)) {
      case 0:
        return p.bytes(4);
      case 1: { // IPv4-mapped IPv6
        const a = new Uint8Array(16);
        a[10] = a[11] = 0xff;
        a.set(p.bytes(4), 12);
        return a;
      }
      case 2: // bad lengths are refused
        return p.bytes(p.pick([0, 3, 5, 15, 17]));
      default:
        return p.bytes(16);
    }
  };

  fresh();
  return {
    get input() {
      return input;
    },
    step() {
      if (p.chance(0.0002)) fresh();
      switch (p.below(64)) {
        case 0:
          now += p.int(0, 3000);
          impl.gc(now);
          model.gc(now);
          break;
        case 1:
          if (p.chance(0.05)) {
            impl.clear();
            model.clear();
          }
          break;
        case 2:
          pool[p.below(pool.length)] = source();
          break;
        case 3: // the clock may be stepped back; the buckets must not refill from that
          now -= p.below(2000);
          break;
        default: {
          now += p.chance(0.7) ? p.below(60) : p.below(1500);
          let addr = p.pick(pool);
          // Another host of the same IPv6 /64 shares its bucket.
          if (addr.length === 16 && addr[10] !== 0xff && p.chance(0.2)) {
            addr = addr.slice();
            addr.set(p.bytes(8), 8);
          }
          input = addr;
          const want = model.allow(addr, now);
          const got = impl.allow(addr, now);
          if (got) allowed++;
          check(got === want, () => `allow at ${now}: lib ${got}, model ${want}`);
        }
      }
      check(impl.size === model.size, () => `size: lib ${impl.size}, model ${model.size}`);
      check(impl.size <= model.maxEntries, `more sources tracked than the bound ${model.maxEntries}`);
    },
    stats: () => ({ allowed }),
  };
}
