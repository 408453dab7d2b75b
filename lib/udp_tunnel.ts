/**
 * UDP in IP, built and taken apart in place: how one WireGuard device's datagrams travel as plaintext packets
 * of another (multihop, cmd/multihop.ts). The kernel's name for sending this way is `udp_tunnel_xmit_skb`; the
 * headers are RFC 791 (IPv4), RFC 8200 (IPv6) and RFC 768 (UDP), with the checksum of RFC 1071
 * (lib/checksum.ts).
 *
 * {@link encapsulate} writes the IP and UDP headers into the bytes in front of a payload; {@link decapsulate}
 * checks a received packet (version, lengths, protocol, fragments, destination address and port, checksums)
 * and says where its payload is. Pure: no I/O, nothing allocated per packet.
 * @module
 */
import { csumFold, csumPartial, ipSendCheck, pseudoHeaderSum4, pseudoHeaderSum6 } from "./checksum.ts";
import { IPPROTO_UDP, UDP_HEADER_LEN } from "./gso.ts";
import { IPV4_DST, IPV4_HEADER_LEN, IPV4_SRC, IPV6_DST, IPV6_HEADER_LEN, IPV6_SRC } from "./ip.ts";

/** What the headers add: 28 bytes over IPv4, 48 over IPv6. */
export const UDP4_OVERHEAD = IPV4_HEADER_LEN + UDP_HEADER_LEN;
export const UDP6_OVERHEAD = IPV6_HEADER_LEN + UDP_HEADER_LEN;
/** The time to live / hop limit of the packets built here (Linux's default, net.ipv4.ip_default_ttl). */
const TTL = 64;

/** The bytes the headers take for a destination of this address length (4 or 16). */
export function overheadFor(addr: Uint8Array): number {
  return addr.length === 4 ? UDP4_OVERHEAD : UDP6_OVERHEAD;
}

/**
 * Writes an IP header and a UDP header from `src:srcPort` to `dst:dstPort` in the bytes just before the
 * payload `buf[off, off+len)`, with the UDP checksum (also over IPv4, where it is optional, so a flipped bit
 * on the way is caught before the WireGuard layer spends an AEAD open on it) and, for IPv4, the header
 * checksum. The addresses must be of one family.
 * @param id the IPv4 identification (RFC 6864: unique per source, destination and protocol while a packet
 *   may be fragmented on the way; DF is not set, as the kernel's UDP tunnels do not)
 * @param df set IPv4's Don't Fragment flag (as Linux sends plain UDP; lib/capture.ts's synthesized headers)
 * @returns where the packet starts: `off - 28` (IPv4) or `off - 48` (IPv6); it is `len + that` bytes long
 */
export function encapsulate(
  buf: Uint8Array,
  off: number,
  len: number,
  src: Uint8Array,
  srcPort: number,
  dst: Uint8Array,
  dstPort: number,
  id: number,
  df = false,
): number {
  const v4 = dst.length === 4;
  if (src.length !== dst.length) throw new Error("encapsulate: source and destination of different families");
  const ip = off - (v4 ? UDP4_OVERHEAD : UDP6_OVERHEAD);
  const udp = off - UDP_HEADER_LEN;
  const udpLen = len + UDP_HEADER_LEN;
  if (v4) {
    const total = udpLen + IPV4_HEADER_LEN;
    if (total > 0xffff) throw new Error(`encapsulate: ${len} bytes do not fit an IPv4 packet`);
    buf[ip] = 0x45; // version 4, IHL 5 (no options)
    buf[ip + 1] = 0;
    buf[ip + 2] = total >>> 8;
    buf[ip + 3] = total;
    buf[ip + 4] = id >>> 8;
    buf[ip + 5] = id;
    buf[ip + 6] = df ? 0x40 : 0; // flags (DF or none) and fragment offset 0
    buf[ip + 7] = 0;
    buf[ip + 8] = TTL;
    buf[ip + 9] = IPPROTO_UDP;
    buf.set(src, ip + IPV4_SRC);
    buf.set(dst, ip + IPV4_DST);
    ipSendCheck(buf, ip, IPV4_HEADER_LEN);
  } else {
    if (udpLen > 0xffff) throw new Error(`encapsulate: ${len} bytes do not fit an IPv6 packet`);
    buf[ip] = 0x60; // version 6, traffic class and flow label 0
    buf[ip + 1] = 0;
    buf[ip + 2] = 0;
    buf[ip + 3] = 0;
    buf[ip + 4] = udpLen >>> 8;
    buf[ip + 5] = udpLen;
    buf[ip + 6] = IPPROTO_UDP;
    buf[ip + 7] = TTL;
    buf.set(src, ip + IPV6_SRC);
    buf.set(dst, ip + IPV6_DST);
  }
  buf[udp] = srcPort >>> 8;
  buf[udp + 1] = srcPort;
  buf[udp + 2] = dstPort >>> 8;
  buf[udp + 3] = dstPort;
  buf[udp + 4] = udpLen >>> 8;
  buf[udp + 5] = udpLen;
  buf[udp + 6] = 0;
  buf[udp + 7] = 0;
  const pseudo = v4
    ? pseudoHeaderSum4(buf, ip, IPPROTO_UDP, udpLen)
    : pseudoHeaderSum6(buf, ip, IPPROTO_UDP, udpLen);
  // A computed 0 is sent as 0xffff: 0 means "no checksum" (RFC 768), which IPv6 forbids (RFC 8200 8.1).
  const c = csumFold(csumPartial(buf, udp, udpLen, pseudo)) || 0xffff;
  buf[udp + 6] = c >>> 8;
  buf[udp + 7] = c;
  return ip;
}

/** What {@link decapsulate} decided about a packet. */
export enum Decap {
  /** A UDP datagram for us: its payload is described in the result. */
  Ok,
  /** Not a whole IPv4/IPv6 packet: bad version, header or lengths. */
  Malformed,
  /** An IPv4 fragment, or IPv6 with extension headers: not reassembled here. */
  Fragment,
  /** Not UDP. */
  NotUdp,
  /** UDP to another address or port than ours. */
  NotForUs,
  /** A bad IPv4 header checksum or UDP checksum (or an IPv6 UDP datagram without one). */
  BadChecksum,
}
export const DECAP_COUNT = Decap.BadChecksum + 1;

/** Where a decapsulated payload is and whom it came from; reused by the caller, never reallocated here. */
export interface UdpPayload {
  offset: number;
  length: number;
  family: 4 | 6;
  /** Where the source address is in the buffer (4 or 16 bytes by family). */
  srcOffset: number;
  srcPort: number;
}

/**
 * Checks the IP packet `buf[off, off+len)` (a decrypted WireGuard payload, so it may carry padding after the
 * IP total length) and, if it is a UDP datagram to `local4`/`local6` port `port` with good checksums, fills
 * `out` with where its payload lies. `local4` or `local6` null means we have no address of that family.
 */
export function decapsulate(
  buf: Uint8Array,
  off: number,
  len: number,
  local4: Uint8Array | null,
  local6: Uint8Array | null,
  port: number,
  out: UdpPayload,
): Decap {
  if (len < 1) return Decap.Malformed;
  const version = buf[off]! >>> 4;
  let udp: number, ipEnd: number;
  if (version === 4) {
    if (len < IPV4_HEADER_LEN) return Decap.Malformed;
    const ihl = (buf[off]! & 0x0f) * 4;
    const total = (buf[off + 2]! << 8) | buf[off + 3]!;
    if (ihl < IPV4_HEADER_LEN || total < ihl || total > len) return Decap.Malformed;
    // More fragments, or a fragment offset: a piece of a datagram (RFC 791 3.2).
    if ((buf[off + 6]! & 0x20) !== 0 || (((buf[off + 6]! & 0x1f) << 8) | buf[off + 7]!) !== 0) {
      return Decap.Fragment;
    }
    if (buf[off + 9] !== IPPROTO_UDP) return Decap.NotUdp;
    if (csumFold(csumPartial(buf, off, ihl, 0)) !== 0) return Decap.BadChecksum;
    if (local4 === null || !equalAt(buf, off + IPV4_DST, local4)) return Decap.NotForUs;
    udp = off + ihl;
    ipEnd = off + total;
    out.family = 4;
    out.srcOffset = off + IPV4_SRC;
  } else if (version === 6) {
    if (len < IPV6_HEADER_LEN) return Decap.Malformed;
    const payloadLen = (buf[off + 4]! << 8) | buf[off + 5]!;
    if (IPV6_HEADER_LEN + payloadLen > len) return Decap.Malformed;
    const next = buf[off + 6]!;
    // Hop-by-hop, routing, fragment, destination options: a tunnel peer sends none of them.
    if (next === 0 || next === 43 || next === 44 || next === 60) return Decap.Fragment;
    if (next !== IPPROTO_UDP) return Decap.NotUdp;
    if (local6 === null || !equalAt(buf, off + IPV6_DST, local6)) return Decap.NotForUs;
    udp = off + IPV6_HEADER_LEN;
    ipEnd = udp + payloadLen;
    out.family = 6;
    out.srcOffset = off + IPV6_SRC;
  } else {
    return Decap.Malformed;
  }
  if (ipEnd - udp < UDP_HEADER_LEN) return Decap.Malformed;
  const udpLen = (buf[udp + 4]! << 8) | buf[udp + 5]!;
  if (udpLen < UDP_HEADER_LEN || udpLen > ipEnd - udp) return Decap.Malformed;
  if (((buf[udp + 2]! << 8) | buf[udp + 3]!) !== port) return Decap.NotForUs;
  const sum = (buf[udp + 6]! << 8) | buf[udp + 7]!;
  if (sum === 0) {
    if (version === 6) return Decap.BadChecksum; // mandatory over IPv6 (RFC 8200 8.1)
  } else {
    const pseudo = version === 4
      ? pseudoHeaderSum4(buf, off, IPPROTO_UDP, udpLen)
      : pseudoHeaderSum6(buf, off, IPPROTO_UDP, udpLen);
    if (csumFold(csumPartial(buf, udp, udpLen, pseudo)) !== 0) return Decap.BadChecksum;
  }
  out.srcPort = (buf[udp]! << 8) | buf[udp + 1]!;
  out.offset = udp + UDP_HEADER_LEN;
  out.length = udpLen - UDP_HEADER_LEN;
  return Decap.Ok;
}

function equalAt(buf: Uint8Array, at: number, addr: Uint8Array): boolean {
  for (let i = 0; i < addr.length; i++) if (buf[at + i] !== addr[i]) return false;
  return true;
}
