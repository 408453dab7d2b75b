/**
 * TUN offloads: the `virtio_net_hdr` that precedes each packet on a TUN opened with `IFF_VNET_HDR`, the Internet
 * checksum (RFC 1071), a segmenter for the TCP super-packets the kernel hands over when TSO is on (what
 * `tcp_gso_segment` would have done), and a coalescer that merges consecutive TCP segments into one
 * super-packet the kernel accepts on write (what `tcp_gro_receive` does for a NIC) — as wireguard-go does
 * (tun/offload_linux.go, tun/tcp_offload_linux.go).
 *
 * Pure: no I/O. Nothing here allocates per packet. Copies within one ArrayBuffer are a `copyWithin` (memmove);
 * copies across buffers and checksums read whole 32-bit words through a cached `Uint32Array` over the
 * caller's ArrayBuffer, fastest when both ends sit at the same offset modulo 4. So a caller that reads the
 * TUN into the same ArrayBuffer as its packet slots, and gives the coalescer an arena there too, copies
 * at memmove speed.
 * @module
 */

import { IPV4_DST, IPV4_HEADER_LEN, IPV4_SRC, IPV6_DST, IPV6_HEADER_LEN, IPV6_SRC } from "./ip.ts";

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

const IPPROTO_TCP = 6;
/** TCP flags (RFC 9293 section 3.1). */
const TCP_FIN = 0x01;
const TCP_PSH = 0x08;
const TCP_ACK = 0x10;
const TCP_CWR = 0x80;
/** Offset of the checksum inside the TCP header: the csum_offset of every TCP super-packet. */
const TCP_CHECK = 16;
/** The largest IP packet (IPv4 total length, and the limit kept for IPv6 too). */
const IP_MAX = 65535;

// ---- Word access --------------------------------------------------------------------------------------
// The checksum and copies read 32-bit words through a Uint32Array over the whole ArrayBuffer, indexed by
// absolute byte position / 4. Views are cached for the two most recent buffers (a copy touches two), so a
// new view is made only when the caller switches buffers.

const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;

let wordsKey0: ArrayBufferLike | null = null;
let words0: Uint32Array<ArrayBufferLike> = new Uint32Array(0);
let wordsKey1: ArrayBufferLike | null = null;
let words1: Uint32Array<ArrayBufferLike> = new Uint32Array(0);

function wordsOf(ab: ArrayBufferLike): Uint32Array<ArrayBufferLike> {
  if (ab === wordsKey0) return words0;
  if (ab !== wordsKey1) {
    wordsKey1 = ab;
    words1 = new Uint32Array(ab, 0, ab.byteLength >>> 2);
  }
  // Most recent first.
  const k = wordsKey0, w = words0;
  wordsKey0 = wordsKey1;
  words0 = words1;
  wordsKey1 = k;
  words1 = w;
  return words0;
}

let bytesKey: ArrayBufferLike | null = null;
let bytesView: Uint8Array<ArrayBufferLike> = new Uint8Array(0);

function bytesOf(ab: ArrayBufferLike): Uint8Array<ArrayBufferLike> {
  if (ab !== bytesKey) {
    bytesKey = ab;
    bytesView = new Uint8Array(ab);
  }
  return bytesView;
}

/** Swaps the two bytes of a 16-bit value: a one's complement sum taken at an odd offset is byte-swapped. */
function swab16(x: number): number {
  return ((x & 0xff) << 8) | (x >>> 8);
}

/** Folds a non-negative sum (any size up to 2^53) to 16 bits with end-around carry. */
function fold(s: number): number {
  while (s > 0xffffffff) s = (s % 0x10000) + Math.floor(s / 0x10000);
  s = (s & 0xffff) + (s >>> 16);
  s = (s & 0xffff) + (s >>> 16);
  return (s & 0xffff) + (s >>> 16);
}

// ---- Internet checksum (RFC 1071) ---------------------------------------------------------------------

/**
 * The one's complement sum of `len` bytes at `off` (16-bit big-endian words; an odd last byte is padded with
 * zero, RFC 1071 section 4.1), added to `sum`. The kernel's `csum_partial`, folded.
 * @param sum a previous partial sum (e.g. a pseudo-header), 0 to start
 * @returns the folded sum, 0 to 0xffff, not complemented
 */
export function csumPartial(buf: Uint8Array, off: number, len: number, sum: number): number {
  // RFC 1071 section 2 (B): the sum is byte-order independent up to a final swap. Words are read little
  // endian at 4-aligned absolute positions, so first everything is summed in the "byte at an even absolute
  // address counts ×1, odd ×256" order, then swapped into the region's own order if the region starts even.
  const base = buf.byteOffset;
  const start = base + off;
  const end = start + len;
  let p = start;
  let t = 0;
  while (p < end && (p & 3) !== 0) {
    t += (p & 1) === 0 ? buf[p - base]! : buf[p - base]! << 8;
    p++;
  }
  const wEnd = end & ~3;
  if (p < wEnd) {
    const w = wordsOf(buf.buffer);
    // Two accumulators of 16-bit halves stay below 2^31 (small integers for the JIT) for up to 128 KiB.
    let lo = 0, hi = 0;
    for (let k = p >>> 2, e = wEnd >>> 2; k < e; k++) {
      const x = w[k]!;
      lo += x & 0xffff;
      hi += x >>> 16;
    }
    const ws = fold(lo + hi);
    t += LITTLE_ENDIAN ? ws : swab16(ws);
    p = wEnd;
  }
  while (p < end) {
    t += (p & 1) === 0 ? buf[p - base]! : buf[p - base]! << 8;
    p++;
  }
  t = fold(t);
  if ((start & 1) === 0) t = swab16(t);
  return fold(t + sum);
}

/** The checksum to store: the complement of the folded sum (the kernel's `csum_fold`). */
export function csumFold(sum: number): number {
  return ~fold(sum) & 0xffff;
}

/**
 * The IPv4 pseudo-header sum (RFC 9293 section 3.1, RFC 768): source and destination address of the IPv4
 * header at `ipOff`, zero, protocol, and the transport length `len`. Folded, not complemented.
 */
export function pseudoHeaderSum4(buf: Uint8Array, ipOff: number, proto: number, len: number): number {
  const a = ipOff + IPV4_SRC;
  const s = ((buf[a]! << 8) | buf[a + 1]!) + ((buf[a + 2]! << 8) | buf[a + 3]!) +
    ((buf[a + 4]! << 8) | buf[a + 5]!) + ((buf[a + 6]! << 8) | buf[a + 7]!);
  return fold(s + proto + len);
}

/**
 * The IPv6 pseudo-header sum (RFC 8200 section 8.1): the addresses of the IPv6 header at `ipOff`, the
 * upper-layer length `len` and the next header `proto`. Folded, not complemented.
 */
export function pseudoHeaderSum6(buf: Uint8Array, ipOff: number, proto: number, len: number): number {
  let s = proto + (len >>> 16) + (len & 0xffff);
  for (let a = ipOff + IPV6_SRC, e = ipOff + IPV6_HEADER_LEN; a < e; a += 2) {
    s += (buf[a]! << 8) | buf[a + 1]!;
  }
  return fold(s);
}

/** Recomputes the IPv4 header checksum of the header at `off` (`ip_send_check`). */
function ipSendCheck(buf: Uint8Array, off: number, ihl: number): void {
  buf[off + 10] = 0;
  buf[off + 11] = 0;
  let s = 0;
  for (let i = off, e = off + ihl; i < e; i += 2) s += (buf[i]! << 8) | buf[i + 1]!;
  const c = csumFold(s);
  buf[off + 10] = c >>> 8;
  buf[off + 11] = c;
}

// ---- Copies -------------------------------------------------------------------------------------------

/**
 * Copies `n` bytes without allocating (no `subarray`): within one ArrayBuffer by `copyWithin` on a cached view
 * of the whole buffer (a memmove, about 4× faster than the loops below); across buffers by 32-bit words when
 * both ends share their alignment modulo 4, by shifted word pairs when they do not (little-endian hosts),
 * else byte by byte.
 */
export function copyBytes(src: Uint8Array, srcOff: number, dst: Uint8Array, dstOff: number, n: number): void {
  if (n <= 0) return;
  const sa = src.byteOffset + srcOff;
  const da = dst.byteOffset + dstOff;
  if (src.buffer === dst.buffer) {
    if (sa !== da) bytesOf(dst.buffer).copyWithin(da, sa, sa + n);
    return;
  }
  let i = 0;
  // Byte by byte until the destination is word-aligned.
  while (i < n && ((da + i) & 3) !== 0) {
    dst[dstOff + i] = src[srcOff + i]!;
    i++;
  }
  const words = (n - i) >>> 2;
  if (words > 0) {
    const dw = wordsOf(dst.buffer);
    const sw = wordsOf(src.buffer);
    const dk = (da + i) >>> 2;
    const shift = (sa + i) & 3;
    let sk = (sa + i) >>> 2;
    if (shift === 0) {
      for (let k = 0; k < words; k++) dw[dk + k] = sw[sk + k]!;
      i += words << 2;
    } else if (LITTLE_ENDIAN) {
      // Each destination word is the high bytes of one source word and the low bytes of the next; stop
      // before a read past the last whole word of the source buffer.
      const r = shift << 3, l = 32 - r;
      let k = 0;
      const lastWord = sw.length - 1;
      for (; k < words && sk < lastWord; k++, sk++) dw[dk + k] = (sw[sk]! >>> r) | (sw[sk + 1]! << l);
      i += k << 2;
    }
  }
  for (; i < n; i++) dst[dstOff + i] = src[srcOff + i]!;
}

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
   * (UDP fragmentation offload, IPv6 routing or fragment headers under TSO, header lengths out of range)
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
    // TSO. hdr_len is not trusted (wireguard-go notes the kernel may set it to the whole first packet on the
    // forwarding path): the IP and TCP header lengths come from the packet itself.
    const kind = gsoType & ~VIRTIO_NET_HDR_GSO_ECN;
    const version = buf[pkt]! >>> 4;
    let iph: number, next: number;
    if (kind === VIRTIO_NET_HDR_GSO_TCPV4 && version === 4) {
      iph = (buf[pkt]! & 0x0f) << 2;
      if (iph < 20 || pktLen < iph + 20 || buf[pkt + 9] !== IPPROTO_TCP) return 0;
      if (((buf[pkt + 6]! & 0x3f) | buf[pkt + 7]!) !== 0) return 0; // a fragment is no TSO packet
      this.#v6 = false;
    } else if (kind === VIRTIO_NET_HDR_GSO_TCPV6 && version === 6) {
      // Hop-by-hop and destination options are copied into every segment as ipv6_gso_segment does; a routing
      // header with segments left would change the pseudo-header's destination (RFC 8200 section 8.1), and
      // a fragment header cannot precede a super-packet, so both are refused.
      iph = 40;
      next = buf[pkt + 6]!;
      for (let n = 0; next !== IPPROTO_TCP; n++) {
        if (n === 8 || pktLen < iph + 8) return 0;
        if (next !== 0 && next !== 60 && !(next === 43 && buf[pkt + iph + 3] === 0)) return 0;
        next = buf[pkt + iph]!;
        iph += (buf[pkt + iph + 1]! + 1) << 3;
      }
      if (pktLen < iph + 20) return 0;
      this.#v6 = true;
    } else {
      return 0; // VIRTIO_NET_HDR_GSO_UDP (UFO), unknown types, or a type that does not match the packet
    }
    const thl = (buf[pkt + iph + 12]! >>> 4) << 2;
    const hdrs = iph + thl;
    const gso = le16(buf, off + VNET_GSO_SIZE);
    if (thl < 20 || hdrs > pktLen || gso === 0) return 0;
    const tcp = pkt + iph;
    this.#iph = iph;
    this.#hdrs = hdrs;
    this.#gso = gso;
    this.#seq = ((buf[tcp + 4]! << 24) | (buf[tcp + 5]! << 16) | (buf[tcp + 6]! << 8) | buf[tcp + 7]!) >>> 0;
    this.#id = (buf[pkt + 4]! << 8) | buf[pkt + 5]!;
    this.#tcpFlags = buf[tcp + 13]!;
    // The addresses' share of the pseudo-header, computed once; each segment adds its own TCP length.
    this.#pseudo = this.#v6
      ? pseudoHeaderSum6(buf, pkt, IPPROTO_TCP, 0)
      : pseudoHeaderSum4(buf, pkt, IPPROTO_TCP, 0);
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
    // CWR on the first only. Every field the segments differ in is written from values saved by begin(),
    // so the source headers may already have been overwritten by an in-place segment 0.
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

// ---- Coalescing (the write direction) -----------------------------------------------------------------

/** Packets a {@link Coalescer} tracks between flushes, by default. */
export const COALESCE_MAX_PACKETS = 256;

/**
 * Merges consecutive TCP segments of one flow into super-packets for one TUN write each, following the rules
 * of the kernel's `tcp_gro_receive` / `inet_gro_receive` / `ipv6_gro_receive` (and wireguard-go's tcpGRO):
 * only IPv4 without options or fragmentation and IPv6 without extension headers; same addresses and ports,
 * the next sequence number, the same ACK number, window, TCP options (timestamps included) and header
 * flags; the same TTL / hop limit, TOS / traffic class and DF (IPv6: the same flow label); for IPv4 without
 * DF, IDs counting up by one; flags ACK only, PSH allowed on the last; equal payload sizes except a shorter
 * last one; at most 65,535 bytes. A packet of a flow that cannot join that flow's group closes it, so the
 * order within a flow is kept; outputs come in the order their first packets were added.
 *
 * A merged group is built in the coalescer's arena, with a vnet header asking the kernel for
 * segmentation (TCPV4/TCPV6, gso_size = the segment payload) and for the checksum (NEEDS_CSUM, the TCP
 * checksum field holding the pseudo-header sum, as CHECKSUM_PARTIAL expects). Every other packet is written
 * in place with a vnet header put in the 10 bytes before it, flagged DATA_VALID: the AEAD already
 * authenticated it, which is why the kernel's WireGuard marks decrypted packets CHECKSUM_UNNECESSARY
 * (drivers/net/wireguard/receive.c, wg_packet_consume_data_done). tun.c (tun_get_user) reads only
 * NEEDS_CSUM and the GSO fields today, so for a TUN that flag is informational and the kernel still checks
 * those packets' checksums; it is what the packet is.
 *
 * Checksums are not verified before merging (wireguard-go does verify): as with the kernel's WireGuard,
 * whose CHECKSUM_UNNECESSARY makes tcp4_gro_receive / tcp6_gro_receive skip validation, the bytes are the
 * ones the peer authenticated, and the merged packet's checksum is recomputed by the kernel if it leaves
 * the host again.
 */
export class Coalescer {
  /** When false, every packet is output singly (offload off: the TUN takes no GSO packets). */
  coalesce = true;
  /** How many packets may be added between flushes. */
  readonly capacity: number;

  #n = 0;
  #flushed = false;
  readonly #bufs: (Uint8Array | null)[];
  readonly #off: Int32Array;
  readonly #len: Int32Array;
  /** Next packet of the same group, -1 at the end. */
  readonly #next: Int32Array;
  /** 1 for a packet that starts an output (a single packet or a group's first). */
  readonly #head: Uint8Array;
  // Group state, indexed by the group's first packet.
  readonly #tail: Int32Array;
  readonly #segs: Int32Array;
  readonly #total: Int32Array;
  readonly #gso: Int32Array;
  readonly #nextSeq: Uint32Array;
  readonly #closed: Uint8Array;
  readonly #psh: Uint8Array;
  readonly #iph: Uint8Array;
  readonly #thl: Uint8Array;
  // Flow table: hash slot → the first packet of the flow's open group, valid if stamped with this round.
  readonly #slotHead: Int32Array;
  readonly #slotGen: Int32Array;
  #gen = 1;
  // Outputs of the last flush.
  #outCount = 0;
  readonly #outBuf: Uint8Array[];
  readonly #outOff: Int32Array;
  readonly #outLen: Int32Array;
  readonly #outSegs: Int32Array;
  #arena: Uint8Array;

  /**
   * @param capacity how many packets may be added between flushes
   * @param arena where merged packets are built (they are written to the TUN from there, so it must be
   * pinned, see ffi/runtime.ts). A view into the same ArrayBuffer as the slots the packets arrive in makes
   * every copy a memmove. Without one, or when one flush needs more room, the coalescer allocates its own.
   */
  constructor(capacity = COALESCE_MAX_PACKETS, arena?: Uint8Array) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 65536) {
      throw new RangeError(`Invalid coalescer capacity: ${capacity}`);
    }
    this.capacity = capacity;
    this.#bufs = new Array<Uint8Array | null>(capacity).fill(null);
    this.#off = new Int32Array(capacity);
    this.#len = new Int32Array(capacity);
    this.#next = new Int32Array(capacity);
    this.#head = new Uint8Array(capacity);
    this.#tail = new Int32Array(capacity);
    this.#segs = new Int32Array(capacity);
    this.#total = new Int32Array(capacity);
    this.#gso = new Int32Array(capacity);
    this.#nextSeq = new Uint32Array(capacity);
    this.#closed = new Uint8Array(capacity);
    this.#psh = new Uint8Array(capacity);
    this.#iph = new Uint8Array(capacity);
    this.#thl = new Uint8Array(capacity);
    let slots = 16;
    while (slots < capacity * 2) slots *= 2;
    this.#slotHead = new Int32Array(slots);
    this.#slotGen = new Int32Array(slots);
    this.#outBuf = new Array<Uint8Array>(capacity);
    this.#outOff = new Int32Array(capacity);
    this.#outLen = new Int32Array(capacity);
    this.#outSegs = new Int32Array(capacity);
    // Room for a few full super-packets; grows (rarely) when one flush needs more.
    this.#arena = arena ?? new Uint8Array(new ArrayBuffer(4 * (IP_MAX + VNET_HDR_LEN + 8)));
    this.#outBuf.fill(this.#arena);
  }

  /** Packets added since the last flush. */
  get count(): number {
    return this.#flushed ? 0 : this.#n;
  }

  /** True when no packet can be added before a {@link flush}. */
  get full(): boolean {
    return !this.#flushed && this.#n === this.capacity;
  }

  /**
   * Adds a decrypted IP packet `buf[off..off+len)`. The 10 bytes before it must be free for a vnet header,
   * and the packet's bytes must stay untouched until the outputs of the next {@link flush} are written.
   * The outputs of the previous flush are invalid from here on.
   * @returns false (and takes nothing) when {@link full}: flush first
   * @throws RangeError when `off` leaves no room for the vnet header
   */
  add(buf: Uint8Array, off: number, len: number): boolean {
    if (this.#flushed) this.#reset();
    if (this.#n === this.capacity) return false;
    if (off < VNET_HDR_LEN) {
      throw new RangeError(`Coalescer.add needs ${VNET_HDR_LEN} free bytes before the packet`);
    }
    const i = this.#n++;
    this.#bufs[i] = buf;
    this.#off[i] = off;
    this.#len[i] = len;
    this.#next[i] = -1;
    this.#head[i] = 1;
    this.#segs[i] = 1;
    this.#closed[i] = 1;
    if (!this.coalesce || len < 40) return true;
    // Parse: TCP over IPv4 (not a fragment) or over IPv6 without extension headers.
    const version = buf[off]! >>> 4;
    let iph: number;
    let candidate: boolean;
    if (version === 4) {
      iph = (buf[off]! & 0x0f) << 2;
      if (iph < 20 || buf[off + 9] !== IPPROTO_TCP || ((buf[off + 6]! & 0x3f) | buf[off + 7]!) !== 0) {
        return true;
      }
      candidate = iph === 20 && ((buf[off + 2]! << 8) | buf[off + 3]!) === len;
    } else if (version === 6) {
      if (len < 60 || buf[off + 6] !== IPPROTO_TCP) return true;
      iph = 40;
      candidate = ((buf[off + 4]! << 8) | buf[off + 5]!) === len - 40;
    } else {
      return true;
    }
    const tcp = off + iph;
    if (iph + 20 > len) return true;
    const thl = (buf[tcp + 12]! >>> 4) << 2;
    if (thl < 20 || iph + thl > len) return true;
    const flags = buf[tcp + 13]!;
    const payload = len - iph - thl;
    candidate = candidate && (flags === TCP_ACK || flags === (TCP_ACK | TCP_PSH)) && payload > 0;

    // The flow's open group, if any.
    const slot = this.#hash(buf, off, tcp, version) & (this.#slotHead.length - 1);
    let g = this.#slotGen[slot] === this.#gen ? this.#slotHead[slot]! : -1;
    if (g >= 0 && !this.#sameFlow(g, buf, off, tcp, version)) g = -1;
    if (!candidate) {
      if (g >= 0) this.#slotGen[slot] = 0; // it closes the flow's group: nothing after it may join
      return true;
    }
    const seq = ((buf[tcp + 4]! << 24) | (buf[tcp + 5]! << 16) | (buf[tcp + 6]! << 8) | buf[tcp + 7]!) >>> 0;
    if (g >= 0 && this.#canAppend(g, buf, off, iph, thl, seq, payload)) {
      this.#next[this.#tail[g]!] = i;
      this.#tail[g] = i;
      this.#head[i] = 0;
      this.#segs[g]++;
      this.#total[g] += payload;
      this.#nextSeq[g] = seq + payload;
      if ((flags & TCP_PSH) !== 0 || payload < this.#gso[g]!) this.#closed[g] = 1;
      if ((flags & TCP_PSH) !== 0) this.#psh[g] = 1;
      return true;
    }
    // A new group, which becomes the flow's open one.
    this.#tail[i] = i;
    this.#total[i] = len;
    this.#gso[i] = payload;
    this.#nextSeq[i] = seq + payload;
    this.#closed[i] = (flags & TCP_PSH) !== 0 ? 1 : 0;
    this.#psh[i] = 0;
    this.#iph[i] = iph;
    this.#thl[i] = thl;
    this.#slotHead[slot] = i;
    this.#slotGen[slot] = this.#gen;
    return true;
  }

  /**
   * Ends the round: puts vnet headers on the packets and builds the merged ones.
   * @returns the number of outputs, each ready for one TUN write: {@link outBuf}, {@link outOff}, {@link outLen}
   */
  flush(): number {
    if (this.#flushed) return this.#outCount;
    this.#flushed = true;
    const n = this.#n;
    let need = 0;
    for (let i = 0; i < n; i++) {
      if (this.#head[i] === 1 && this.#segs[i]! > 1) need += this.#total[i]! + VNET_HDR_LEN + 3;
    }
    if (need > this.#arena.length) {
      this.#arena = new Uint8Array(new ArrayBuffer(Math.max(need, 2 * this.#arena.length)));
    }
    const arena = this.#arena;
    let pos = 0, out = 0;
    for (let i = 0; i < n; i++) {
      if (this.#head[i] !== 1) continue;
      const buf = this.#bufs[i]!, off = this.#off[i]!, len = this.#len[i]!;
      if (this.#segs[i] === 1) {
        writeVnetHdr(
          buf,
          off - VNET_HDR_LEN,
          VIRTIO_NET_HDR_F_DATA_VALID,
          VIRTIO_NET_HDR_GSO_NONE,
          0,
          0,
          0,
          0,
        );
        this.#outBuf[out] = buf;
        this.#outOff[out] = off - VNET_HDR_LEN;
        this.#outLen[out] = len + VNET_HDR_LEN;
        this.#outSegs[out] = 1;
        out++;
        continue;
      }
      // Start the packet at the first segment's alignment modulo 4 so its bytes copy word by word.
      pos += ((buf.byteOffset + off) - (arena.byteOffset + pos + VNET_HDR_LEN)) & 3;
      const o = pos + VNET_HDR_LEN;
      const len2 = this.#build(i, arena, o);
      this.#outBuf[out] = arena;
      this.#outOff[out] = pos;
      this.#outLen[out] = len2 + VNET_HDR_LEN;
      this.#outSegs[out] = this.#segs[i]!;
      out++;
      pos = o + len2;
    }
    return this.#outCount = out;
  }

  /** The buffer holding output `i` of the last flush. */
  outBuf(i: number): Uint8Array {
    return this.#outBuf[i]!;
  }

  /** Where output `i` starts (at its vnet header). */
  outOff(i: number): number {
    return this.#outOff[i]!;
  }

  /** Output `i`'s length, vnet header included. */
  outLen(i: number): number {
    return this.#outLen[i]!;
  }

  /** How many packets output `i` stands for (1 unless merged). */
  outSegments(i: number): number {
    return this.#outSegs[i]!;
  }

  /** Forgets the packets added and the outputs (the buffers' contents are left as they are). */
  #reset(): void {
    this.#flushed = false;
    this.#n = 0;
    this.#outCount = 0;
    if (++this.#gen > 0x3fffffff) {
      this.#gen = 1;
      this.#slotGen.fill(0);
    }
  }

  /** Copies group `h` (headers once, then every payload) to `dst` at `o` and fixes it up; returns its length. */
  #build(h: number, dst: Uint8Array, o: number): number {
    const src = this.#bufs[h]!, so = this.#off[h]!;
    const iph = this.#iph[h]!, hdrs = iph + this.#thl[h]!;
    copyBytes(src, so, dst, o, hdrs);
    let w = o + hdrs;
    for (let p = h; p !== -1; p = this.#next[p]!) {
      const pl = this.#len[p]! - hdrs;
      copyBytes(this.#bufs[p]!, this.#off[p]! + hdrs, dst, w, pl);
      w += pl;
    }
    const total = w - o;
    const v6 = iph === 40;
    if (v6) {
      dst[o + 4] = (total - 40) >>> 8;
      dst[o + 5] = total - 40;
    } else {
      dst[o + 2] = total >>> 8;
      dst[o + 3] = total;
      ipSendCheck(dst, o, iph);
    }
    const tcp = o + iph;
    if (this.#psh[h] === 1) dst[tcp + 13] = dst[tcp + 13]! | TCP_PSH;
    // CHECKSUM_PARTIAL: the field holds the pseudo-header sum, uncomplemented; the kernel adds the rest
    // (skb_checksum_help / the NIC) only if the packet leaves the host again.
    const ps = v6
      ? pseudoHeaderSum6(dst, o, IPPROTO_TCP, total - iph)
      : pseudoHeaderSum4(dst, o, IPPROTO_TCP, total - iph);
    dst[tcp + TCP_CHECK] = ps >>> 8;
    dst[tcp + TCP_CHECK + 1] = ps;
    writeVnetHdr(
      dst,
      o - VNET_HDR_LEN,
      VIRTIO_NET_HDR_F_NEEDS_CSUM,
      v6 ? VIRTIO_NET_HDR_GSO_TCPV6 : VIRTIO_NET_HDR_GSO_TCPV4,
      hdrs,
      this.#gso[h]!,
      iph,
      TCP_CHECK,
    );
    return total;
  }

  /** A hash of the addresses' last bytes and the ports; collisions only cost a missed merge. */
  #hash(buf: Uint8Array, off: number, tcp: number, version: number): number {
    // IPv4: the addresses; IPv6: their last 4 bytes.
    const a = off + (version === 4 ? IPV4_SRC : IPV6_DST - 4);
    const b = off + (version === 4 ? IPV4_DST : IPV6_HEADER_LEN - 4);
    const s = (buf[a]! << 24) | (buf[a + 1]! << 16) | (buf[a + 2]! << 8) | buf[a + 3]!;
    const d = (buf[b]! << 24) | (buf[b + 1]! << 16) | (buf[b + 2]! << 8) | buf[b + 3]!;
    const p = (buf[tcp]! << 24) | (buf[tcp + 1]! << 16) | (buf[tcp + 2]! << 8) | buf[tcp + 3]!;
    let h = Math.imul(s ^ Math.imul(d, 0x9e3779b1), 0x85ebca6b) ^ p;
    h = Math.imul(h ^ (h >>> 15), 0xc2b2ae35);
    return (h ^ (h >>> 13)) >>> 0;
  }

  /** Whether the packet has the addresses and ports of group `g`'s first packet. */
  #sameFlow(g: number, buf: Uint8Array, off: number, tcp: number, version: number): boolean {
    const hb = this.#bufs[g]!, ho = this.#off[g]!;
    if (hb[ho]! >>> 4 !== version) return false;
    const from = version === 4 ? IPV4_SRC : IPV6_SRC, to = version === 4 ? IPV4_HEADER_LEN : IPV6_HEADER_LEN;
    for (let k = from; k < to; k++) if (hb[ho + k] !== buf[off + k]) return false;
    const ht = ho + this.#iph[g]!;
    return hb[ht] === buf[tcp] && hb[ht + 1] === buf[tcp + 1] && hb[ht + 2] === buf[tcp + 2] &&
      hb[ht + 3] === buf[tcp + 3];
  }

  /** The merge rules against group `g` (same flow already established). */
  #canAppend(
    g: number,
    buf: Uint8Array,
    off: number,
    iph: number,
    thl: number,
    seq: number,
    payload: number,
  ): boolean {
    if (this.#closed[g] === 1 || iph !== this.#iph[g] || thl !== this.#thl[g]) return false;
    if (seq !== this.#nextSeq[g] || payload > this.#gso[g]! || this.#total[g]! + payload > IP_MAX) {
      return false;
    }
    const hb = this.#bufs[g]!, ho = this.#off[g]!;
    if (iph === 20) {
      // inet_gro_receive: TOS, TTL and DF must match; without DF the IDs must count up.
      if (hb[ho + 1] !== buf[off + 1] || hb[ho + 8] !== buf[off + 8] || hb[ho + 6] !== buf[off + 6]) {
        return false;
      }
      if ((buf[off + 6]! & 0x40) === 0) {
        const id = (hb[ho + 4]! << 8) | hb[ho + 5]!;
        if (((buf[off + 4]! << 8) | buf[off + 5]!) !== ((id + this.#segs[g]!) & 0xffff)) return false;
      }
    } else {
      // ipv6_gro_receive: version, traffic class and flow label (the first word) and the hop limit.
      if (
        hb[ho] !== buf[off] || hb[ho + 1] !== buf[off + 1] || hb[ho + 2] !== buf[off + 2] ||
        hb[ho + 3] !== buf[off + 3] || hb[ho + 7] !== buf[off + 7]
      ) return false;
    }
    // tcp_gro_receive: the ACK number, the flag word except CWR/FIN/PSH (data offset, reserved bits, flags
    // and window) and every option word must match.
    const ht = ho + iph, t = off + iph;
    for (let k = 8; k < 13; k++) if (hb[ht + k] !== buf[t + k]) return false;
    if (hb[ht + 14] !== buf[t + 14] || hb[ht + 15] !== buf[t + 15]) return false;
    for (let k = 20; k < thl; k++) if (hb[ht + k] !== buf[t + k]) return false;
    return true;
  }
}
