/**
 * Shared pieces of the OS tests: the root check, unique names, running `ip`, and checksummed packets.
 */
import { execFileSync, spawnSync } from "node:child_process";
import process from "node:process";

/** True when running as root; OS tests are ignored otherwise. */
export const isRoot = process.getuid?.() === 0;

let counter = 0;
/** A unique interface name (at most 15 bytes): `tt-<tag><pid><n>`. */
export function uniqueName(tag: string): string {
  const name = `tt${tag}${process.pid % 100000}${counter++}`;
  return name.slice(0, 15);
}

/** Runs `ip ARGS…` and returns its stdout; throws with stderr on failure. */
export function ip(...args: string[]): string {
  return execFileSync("ip", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

/** Runs `ip ARGS…`, ignoring failure (for cleanup). */
export function ipQuiet(...args: string[]): void {
  spawnSync("ip", args, { stdio: "ignore" });
}

/** `ip -j link show NAME`, parsed; null if the link does not exist. */
// deno-lint-ignore no-explicit-any
export function linkInfo(name: string): any | null {
  const r = spawnSync("ip", ["-j", "link", "show", name], { encoding: "utf8" });
  if (r.status !== 0) return null;
  return JSON.parse(r.stdout)[0] ?? null;
}

/** The addresses on an interface as `addr/prefix` strings, from `ip -j addr show`. */
export function addresses(name: string): string[] {
  const info = JSON.parse(ip("-j", "addr", "show", "dev", name))[0];
  // deno-lint-ignore no-explicit-any
  return (info?.addr_info ?? []).map((a: any) => `${a.local}/${a.prefixlen}`);
}

/** Polls `cond` every 10 ms until it holds or `ms` pass; returns whether it held. */
export async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return cond();
}

/** The Internet checksum (RFC 1071) of `bytes` added to `initial`. */
export function checksum(bytes: Uint8Array, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < bytes.length; i += 2) sum += (bytes[i]! << 8) | bytes[i + 1]!;
  if (bytes.length % 2 === 1) sum += bytes[bytes.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** An IPv4/UDP packet from `src:sport` to `dst:dport` carrying `payload` (UDP checksum 0: none). */
export function udp4Packet(
  src: Uint8Array,
  sport: number,
  dst: Uint8Array,
  dport: number,
  payload: Uint8Array,
): Uint8Array {
  const total = 20 + 8 + payload.length;
  const p = new Uint8Array(total);
  const v = new DataView(p.buffer);
  p[0] = 0x45;
  v.setUint16(2, total);
  p[8] = 64; // TTL
  p[9] = 17; // UDP
  p.set(src, 12);
  p.set(dst, 16);
  v.setUint16(10, checksum(p.subarray(0, 20)));
  v.setUint16(20, sport);
  v.setUint16(22, dport);
  v.setUint16(24, 8 + payload.length);
  p.set(payload, 28);
  return p;
}

/** An IPv6/UDP packet, with the mandatory UDP checksum over the pseudo-header. */
export function udp6Packet(
  src: Uint8Array,
  sport: number,
  dst: Uint8Array,
  dport: number,
  payload: Uint8Array,
): Uint8Array {
  const udpLen = 8 + payload.length;
  const p = new Uint8Array(40 + udpLen);
  const v = new DataView(p.buffer);
  p[0] = 0x60;
  v.setUint16(4, udpLen);
  p[6] = 17;
  p[7] = 64;
  p.set(src, 8);
  p.set(dst, 24);
  v.setUint16(40, sport);
  v.setUint16(42, dport);
  v.setUint16(44, udpLen);
  p.set(payload, 48);
  const pseudo = new Uint8Array(40);
  pseudo.set(src, 0);
  pseudo.set(dst, 16);
  new DataView(pseudo.buffer).setUint32(32, udpLen);
  pseudo[39] = 17;
  let sum = 0;
  for (let i = 0; i < 40; i += 2) sum += (pseudo[i]! << 8) | pseudo[i + 1]!;
  const c = checksum(p.subarray(40), sum);
  v.setUint16(46, c === 0 ? 0xffff : c);
  return p;
}
