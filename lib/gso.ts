/**
 * The read direction of the TUN offloads: the `virtio_net_hdr` that precedes each packet on a TUN opened with
 * `IFF_VNET_HDR`, and a segmenter for the TCP super-packets the kernel hands over when TSO is on (what
 * `tcp_gso_segment` would have done) and the UDP ones when USO is on (Linux 6.2, `__udp_gso_segment`), which
 * also completes the checksum of a single NEEDS_CSUM packet — as wireguard-go does (tun/offload_linux.go). The
 * write direction, GRO, is lib/gro.ts.
 *
 * Pure: no I/O. Nothing here allocates per packet (copies go through lib/bytes.ts).
 * @module
 */

import { copyBytes } from "./bytes.ts";
import { csumFold, csumPartial, ipSendCheck, pseudoHeaderSum4, pseudoHeaderSum6 } from "./checksum.ts";

// ---- struct virtio_net_hdr (include/uapi/linux/virtio_net.h) -------------------------------------------
// u8 flags, u8 gso_type, then __virtio16 hdr_len, gso_size, csum_start, csum_offset. A TUN uses the host's
// byte order for these unless TUNSETVNETBE/LE says otherwise: little endian on x86-64 and AArch64.

/** sizeof(struct virtio_net_hdr): the TUN default (TUNSETVNETHDRSZ is never set to the 12-byte variant). */
export const VNET_HDR_LEN = 10;
/** flags: the checksum at csum_start + csum_offset is to be completed (the skb is CHECKSUM_PARTIAL). */
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
/** flags: the checksum was already verified (CHECKSUM_UNNECESSARY). */
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
/** UDP segmentation (USO, Linux 6.2): datagrams of gso_size payload bytes, each with its own UDP header. */
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;
/** gso_type bit: the TCP flow uses ECN (the segments after the first must not repeat CWR). */
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

// Field offsets inside the header.
const VNET_FLAGS = 0;
const VNET_GSO_TYPE = 1;
const VNET_GSO_SIZE = 4;
const VNET_CSUM_START = 6;
const VNET_CSUM_OFFSET = 8;

/** Writes a virtio_net_hdr at `off` (10 bytes, little-endian 16-bit fields). */
export function writeVnetHdr(
  buf: Uint8Array,
  off: number,
  flags: number,
  gsoType: number,
  hdrLen: number,
  gsoSize: number,
  csumStart: number,
  csumOffset: number,
): void {
  buf[off] = flags;
  buf[off + 1] = gsoType;
  buf[off + 2] = hdrLen;
  buf[off + 3] = hdrLen >>> 8;
  buf[off + 4] = gsoSize;
  buf[off + 5] = gsoSize >>> 8;
  buf[off + 6] = csumStart;
  buf[off + 7] = csumStart >>> 8;
  buf[off + 8] = csumOffset;
  buf[off + 9] = csumOffset >>> 8;
}

/** Reads the little-endian u16 at `off`. */
function le16(buf: Uint8Array, off: number): number {
  return buf[off]! | (buf[off + 1]! << 8);
}

// ---- TCP fields the offloads touch (lib/gro.ts too) -------------------------------------------------------

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
/** The UDP header's length, and where its length and checksum fields sit in it. */
export const UDP_HEADER_LEN = 8;
export const UDP_LEN_AT = 4;
export const UDP_CHECK = 6;
/** TCP flags (RFC 9293 section 3.1). */
const TCP_FIN = 0x01;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
const TCP_CWR = 0x80;
/** Offset of the checksum inside the TCP header: the csum_offset of every TCP super-packet. */
export const TCP_CHECK = 16;
/** The largest IP packet (IPv4 total length, and the limit kept for IPv6 too). */
export const IP_MAX = 65535;

// ---- Segmentation (the read direction) ----------------------------------------------------------------

const MODE_COPY = 0;
const MODE_CSUM = 1;
const MODE_TSO = 2;

/**
 * Splits what one TUN read returned (vnet header + packet) into the IP packets it stands for, as the kernel's
 * `skb_gso_segment` → `inet_gso_segment`/`ipv6_gso_segment` → `tcp_gso_segment` would, or completes the
 * checksum of a single CHECKSUM_PARTIAL packet as `skb_checksum_help` would. Reused for every packet; holds
 * a reference to the source buffer between {@link begin} and the last {@link segment}.
 */
export class Segmenter {
  #src: Uint8Array = new Uint8Array(0);
  #pkt = 0;
  #pktLen = 0;
  #mode = MODE_COPY;
  #count = 0;
  #v6 = false;
  #iph = 0;
  #hdrs = 0;
  #gso = 0;
  #seq = 0;
  #id = 0;
  #tcpFlags = 0;
  #pseudo = 0;
  #csumStart = 0;
  #csumOffset = 0;
  #gsoType = 0;
  /** The super-packet is UDP (USO) rather than TCP. */
  #udp = false;

  /** The number of packets of the last {@link begin}. */
  get count(): number {
    return this.#count;
  }

  /** The gso_type of the last {@link begin} (ECN bit included), VIRTIO_NET_HDR_GSO_NONE for a single packet. */
  get gsoType(): number {
    return this.#gsoType;
  }

  /** The gso_size of the last super-packet (payload bytes per segment), 0 for a single packet. */
  get gsoSize(): number {
    return this.#mode === MODE_TSO ? this.#gso : 0;
  }

  /** The length of segment `i` of the last {@link begin}, 0 if there is no such segment. */
  length(i: number): number {
    if (i < 0 || i >= this.#count) return 0;
    if (this.#mode !== MODE_TSO) return this.#pktLen;
    const payload = this.#pktLen - this.#hdrs;
    const from = i * this.#gso;
    return this.#hdrs + Math.min(this.#gso, payload - from);
  }

  /**
   * Parses the vnet header at `buf[off..off+10)` and the packet after it (`len` counts both).
   * @returns the number of IP packets it yields (≥ 1), or 0 when it is malformed or of an unsupported kind
   * (UDP fragmentation offload, IPv6 routing or fragment headers under TSO/USO, header lengths out of range)
   */
  begin(buf: Uint8Array, off: number, len: number): number {
    this.#count = 0;
    if (off < 0 || len < VNET_HDR_LEN + 1 || off + len > buf.length) return 0;
    const pkt = off + VNET_HDR_LEN;
    const pktLen = len - VNET_HDR_LEN;
    const flags = buf[off + VNET_FLAGS]!;
    const gsoType = buf[off + VNET_GSO_TYPE]!;
    this.#src = buf;
    this.#pkt = pkt;
    this.#pktLen = pktLen;
    this.#gsoType = gsoType;
    if (gsoType === VIRTIO_NET_HDR_GSO_NONE) {
      if ((flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) !== 0) {
        const start = le16(buf, off + VNET_CSUM_START);
        const at = le16(buf, off + VNET_CSUM_OFFSET);
        if (start + at + 2 > pktLen) return 0;
        this.#csumStart = start;
        this.#csumOffset = at;
        this.#mode = MODE_CSUM;
      } else {
        this.#mode = MODE_COPY;
      }
      return this.#count = 1;
    }
    // TSO or USO. hdr_len is not trusted (wireguard-go notes the kernel may set it to the whole first packet
    // on the forwarding path): the IP and transport header lengths come from the packet itself.
    const kind = gsoType & ~VIRTIO_NET_HDR_GSO_ECN;
    const version = buf[pkt]! >>> 4;
    const udp = kind === VIRTIO_NET_HDR_GSO_UDP_L4;
    const proto = udp ? IPPROTO_UDP : IPPROTO_TCP;
    const l4Min = udp ? UDP_HEADER_LEN : 20;
    let iph: number, next: number;
    if ((kind === VIRTIO_NET_HDR_GSO_TCPV4 || udp) && version === 4) {
      iph = (buf[pkt]! & 0x0f) << 2;
      if (iph < 20 || pktLen < iph + l4Min || buf[pkt + 9] !== proto) return 0;
      if (((buf[pkt + 6]! & 0x3f) | buf[pkt + 7]!) !== 0) return 0; // a fragment is no TSO/USO packet
      this.#v6 = false;
    } else if ((kind === VIRTIO_NET_HDR_GSO_TCPV6 || udp) && version === 6) {
      // Hop-by-hop and destination options are copied into every segment as ipv6_gso_segment does; a routing
      // header with segments left would change the pseudo-header's destination (RFC 8200 section 8.1), and
      // a fragment header cannot precede a super-packet, so both are refused.
      iph = 40;
      next = buf[pkt + 6]!;
      for (let n = 0; next !== proto; n++) {
        if (n === 8 || pktLen < iph + 8) return 0;
        if (next !== 0 && next !== 60 && !(next === 43 && buf[pkt + iph + 3] === 0)) return 0;
        next = buf[pkt + iph]!;
        iph += (buf[pkt + iph + 1]! + 1) << 3;
      }
      if (pktLen < iph + l4Min) return 0;
      this.#v6 = true;
    } else {
      return 0; // VIRTIO_NET_HDR_GSO_UDP (UFO), unknown types, or a type that does not match the packet
    }
    const thl = udp ? UDP_HEADER_LEN : (buf[pkt + iph + 12]! >>> 4) << 2;
    const hdrs = iph + thl;
    const gso = le16(buf, off + VNET_GSO_SIZE);
    if (thl < l4Min || hdrs > pktLen || gso === 0) return 0;
    const tcp = pkt + iph;
    this.#udp = udp;
    this.#iph = iph;
    this.#hdrs = hdrs;
    this.#gso = gso;
    this.#seq = udp
      ? 0
      : ((buf[tcp + 4]! << 24) | (buf[tcp + 5]! << 16) | (buf[tcp + 6]! << 8) | buf[tcp + 7]!) >>> 0;
    this.#id = (buf[pkt + 4]! << 8) | buf[pkt + 5]!;
    this.#tcpFlags = udp ? 0 : buf[tcp + 13]!;
    // The addresses' share of the pseudo-header, computed once; each segment adds its own transport length.
    this.#pseudo = this.#v6 ? pseudoHeaderSum6(buf, pkt, proto, 0) : pseudoHeaderSum4(buf, pkt, proto, 0);
    this.#mode = MODE_TSO;
    const payload = pktLen - hdrs;
    return this.#count = payload <= gso ? 1 : Math.ceil(payload / gso);
  }

  /**
   * Writes IP packet `i` of the last {@link begin} into `dst` at `dstOff`. `dst` may be the source buffer,
   * even at the very place of the packet (`dstOff` = `off + 10`), which makes a single packet or the first
   * segment free of copies; segments may be taken in any order.
   * @returns its length, or 0 if `i` is out of range or `dst` too short
   */
  segment(i: number, dst: Uint8Array, dstOff: number): number {
    if (i < 0 || i >= this.#count) return 0;
    const n = this.length(i);
    if (dstOff < 0 || dstOff + n > dst.length) return 0;
    const src = this.#src, pkt = this.#pkt;
    if (this.#mode !== MODE_TSO) {
      copyBytes(src, pkt, dst, dstOff, n);
      if (this.#mode === MODE_CSUM) {
        // skb_checksum_help (net/core/dev.c): the field holds the pseudo-header sum; fold in everything
        // from csum_start and store the complement, 0 sent as 0xffff (CSUM_MANGLED_0: for UDP 0 means none).
        const start = dstOff + this.#csumStart;
        const at = start + this.#csumOffset;
        const c = csumFold(csumPartial(dst, start, n - this.#csumStart, 0)) || 0xffff;
        dst[at] = c >>> 8;
        dst[at + 1] = c;
      }
      return n;
    }
    // tcp_gso_segment (net/ipv4/tcp_offload.c): every segment carries a copy of the headers and gso_size
    // bytes of payload; sequence numbers advance by gso_size; FIN and PSH stay on the last segment only and
    // CWR on the first only (UDP: see below). Every field the segments differ in is written from values saved
    // by begin(), so the source headers may already have been overwritten by an in-place segment 0.
    const iph = this.#iph, hdrs = this.#hdrs, gso = this.#gso;
    const payloadLen = n - hdrs;
    copyBytes(src, pkt, dst, dstOff, hdrs);
    copyBytes(src, pkt + hdrs + i * gso, dst, dstOff + hdrs, payloadLen);
    if (this.#v6) {
      const pl = n - 40;
      dst[dstOff + 4] = pl >>> 8;
      dst[dstOff + 5] = pl;
    } else {
      // inet_gso_segment: total length per segment and IDs counting up from the super-packet's.
      const id = (this.#id + i) & 0xffff;
      dst[dstOff + 2] = n >>> 8;
      dst[dstOff + 3] = n;
      dst[dstOff + 4] = id >>> 8;
      dst[dstOff + 5] = id;
      ipSendCheck(dst, dstOff, iph);
    }
    if (this.#udp) {
      // __udp_gso_segment (net/ipv4/udp_offload.c): each datagram gets its own UDP length and a full checksum
      // (0 sent as 0xffff: for UDP over IPv4, 0 would mean "no checksum", and IPv6 forbids it).
      const udp = dstOff + iph;
      const udpLen = n - iph;
      dst[udp + UDP_LEN_AT] = udpLen >>> 8;
      dst[udp + UDP_LEN_AT + 1] = udpLen;
      dst[udp + UDP_CHECK] = 0;
      dst[udp + UDP_CHECK + 1] = 0;
      const uc = csumFold(csumPartial(dst, udp, udpLen, this.#pseudo + udpLen)) || 0xffff;
      dst[udp + UDP_CHECK] = uc >>> 8;
      dst[udp + UDP_CHECK + 1] = uc;
      return n;
    }
    const tcp = dstOff + iph;
    const seq = (this.#seq + i * gso) >>> 0;
    dst[tcp + 4] = seq >>> 24;
    dst[tcp + 5] = seq >>> 16;
    dst[tcp + 6] = seq >>> 8;
    dst[tcp + 7] = seq;
    let flags = this.#tcpFlags;
    if (i !== this.#count - 1) flags &= ~(TCP_FIN | TCP_PSH);
    if (i !== 0) flags &= ~TCP_CWR;
    dst[tcp + 13] = flags;
    dst[tcp + TCP_CHECK] = 0;
    dst[tcp + TCP_CHECK + 1] = 0;
    const tcpLen = n - iph;
    const c = csumFold(csumPartial(dst, tcp, tcpLen, this.#pseudo + tcpLen));
    dst[tcp + TCP_CHECK] = c >>> 8;
    dst[tcp + TCP_CHECK + 1] = c;
    return n;
  }
}
