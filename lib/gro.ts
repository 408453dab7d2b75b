/**
 * The write direction of the TUN offloads: a coalescer that merges consecutive TCP segments into one
 * super-packet the kernel accepts on write, as `tcp_gro_receive` does for a NIC (and wireguard-go's
 * tun/tcp_offload_linux.go), and, when the TUN took USO (Linux 6.2), consecutive UDP datagrams of a flow, as
 * `udp_gro_receive` does and as current wireguard-go does (udpGRO in tun/offload_linux.go). The vnet header it
 * writes is defined in lib/gso.ts.
 *
 * Pure: no I/O. Nothing here allocates per packet (copies go through lib/bytes.ts).
 * @module
 */

import { copyBytes } from "./bytes.ts";
import { ipSendCheck, pseudoHeaderSum4, pseudoHeaderSum6 } from "./checksum.ts";
import { IPV4_DST, IPV4_HEADER_LEN, IPV4_SRC, IPV6_DST, IPV6_HEADER_LEN, IPV6_SRC } from "./ip.ts";
import {
  IP_MAX,
  IPPROTO_TCP,
  IPPROTO_UDP,
  TCP_ACK,
  TCP_CHECK,
  TCP_PSH,
  UDP_CHECK,
  UDP_HEADER_LEN,
  UDP_LEN_AT,
  VIRTIO_NET_HDR_F_DATA_VALID,
  VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_NONE,
  VIRTIO_NET_HDR_GSO_TCPV4,
  VIRTIO_NET_HDR_GSO_TCPV6,
  VIRTIO_NET_HDR_GSO_UDP_L4,
  VNET_HDR_LEN,
  writeVnetHdr,
} from "./gso.ts";

// ---- Coalescing (the write direction) -----------------------------------------------------------------

/** Packets a {@link Coalescer} tracks between flushes, by default. */
export const COALESCE_MAX_PACKETS = 256;
/**
 * Datagrams per merged UDP packet at most: what the kernel's own UDP GRO puts in one skb (UDP_GRO_CNT_MAX,
 * net/ipv4/udp_offload.c), which every kernel that segments a USO packet handles.
 */
export const UDP_COALESCE_MAX_SEGMENTS = 64;

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
 *
 * UDP datagrams (with {@link coalesceUdp}) merge by `udp_gro_receive_segment`'s rules, which are
 * wireguard-go's too: the same addresses and ports, the IP header rules above, the UDP length equal to what
 * the IP header says, equal payload sizes except a shorter last one (which closes the group), at most
 * {@link UDP_COALESCE_MAX_SEGMENTS} datagrams and 65,535 bytes. The merged packet asks for USO
 * (VIRTIO_NET_HDR_GSO_UDP_L4, gso_size = the datagram payload) with the UDP checksum left to the kernel
 * (NEEDS_CSUM at offset 6): each datagram comes out of `__udp_gso_segment` with its own length and checksum,
 * and, for IPv4, IDs counting up from the first.
 */
export class Coalescer {
  /** When false, every packet is output singly (offload off: the TUN takes no GSO packets). */
  coalesce = true;
  /** When false, UDP datagrams are output singly (the TUN did not take TUN_F_USO4/USO6, before Linux 6.2). */
  coalesceUdp = false;
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
  /** 1 for a UDP group (its "thl" is the UDP header's 8 bytes). */
  readonly #udp: Uint8Array;
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
    this.#udp = new Uint8Array(capacity);
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
    if (!this.coalesce || len < 28) return true;
    // Parse: TCP or UDP over IPv4 (not a fragment) or over IPv6 without extension headers.
    const version = buf[off]! >>> 4;
    let iph: number;
    let candidate: boolean;
    if (version === 4) {
      iph = (buf[off]! & 0x0f) << 2;
      if (iph < 20 || ((buf[off + 6]! & 0x3f) | buf[off + 7]!) !== 0) return true;
      candidate = iph === 20 && ((buf[off + 2]! << 8) | buf[off + 3]!) === len;
      if (buf[off + 9] === IPPROTO_UDP) return this.#addUdp(i, buf, off, len, iph, version, candidate);
      if (len < 40 || buf[off + 9] !== IPPROTO_TCP) return true;
    } else if (version === 6) {
      if (len < 48) return true;
      iph = 40;
      candidate = ((buf[off + 4]! << 8) | buf[off + 5]!) === len - 40;
      if (buf[off + 6] === IPPROTO_UDP) return this.#addUdp(i, buf, off, len, iph, version, candidate);
      if (len < 60 || buf[off + 6] !== IPPROTO_TCP) return true;
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
    this.#udp[i] = 0;
    this.#slotHead[slot] = i;
    this.#slotGen[slot] = this.#gen;
    return true;
  }

  /** {@link add} for a UDP datagram, packet `i`, whose IP header (`iph` bytes, `version`) is parsed. */
  #addUdp(
    i: number,
    buf: Uint8Array,
    off: number,
    len: number,
    iph: number,
    version: number,
    candidate: boolean,
  ): boolean {
    if (!this.coalesceUdp || iph + UDP_HEADER_LEN > len) return true;
    const udp = off + iph;
    const payload = len - iph - UDP_HEADER_LEN;
    candidate = candidate && ((buf[udp + UDP_LEN_AT]! << 8) | buf[udp + UDP_LEN_AT + 1]!) === len - iph &&
      payload > 0;
    const slot = this.#hash(buf, off, udp, version) & (this.#slotHead.length - 1);
    let g = this.#slotGen[slot] === this.#gen ? this.#slotHead[slot]! : -1;
    if (g >= 0 && !this.#sameFlow(g, buf, off, udp, version)) g = -1;
    if (!candidate) {
      if (g >= 0) this.#slotGen[slot] = 0; // it closes the flow's group: nothing after it may join
      return true;
    }
    if (
      g >= 0 && this.#closed[g] === 0 && iph === this.#iph[g] && payload <= this.#gso[g]! &&
      this.#total[g]! + payload <= IP_MAX && this.#segs[g]! < UDP_COALESCE_MAX_SEGMENTS &&
      this.#ipHeadersMatch(g, buf, off, iph)
    ) {
      this.#next[this.#tail[g]!] = i;
      this.#tail[g] = i;
      this.#head[i] = 0;
      this.#segs[g]++;
      this.#total[g] += payload;
      if (payload < this.#gso[g]!) this.#closed[g] = 1; // only the last datagram may be shorter
      return true;
    }
    this.#tail[i] = i;
    this.#total[i] = len;
    this.#gso[i] = payload;
    this.#closed[i] = 0;
    this.#psh[i] = 0;
    this.#iph[i] = iph;
    this.#thl[i] = UDP_HEADER_LEN;
    this.#udp[i] = 1;
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
    if (this.#udp[h] === 1) {
      // The UDP length of the whole, and the pseudo-header sum for the kernel to complete per datagram.
      const udp = o + iph, udpLen = total - iph;
      dst[udp + UDP_LEN_AT] = udpLen >>> 8;
      dst[udp + UDP_LEN_AT + 1] = udpLen;
      const us = v6
        ? pseudoHeaderSum6(dst, o, IPPROTO_UDP, udpLen)
        : pseudoHeaderSum4(dst, o, IPPROTO_UDP, udpLen);
      dst[udp + UDP_CHECK] = us >>> 8;
      dst[udp + UDP_CHECK + 1] = us;
      writeVnetHdr(
        dst,
        o - VNET_HDR_LEN,
        VIRTIO_NET_HDR_F_NEEDS_CSUM,
        VIRTIO_NET_HDR_GSO_UDP_L4,
        hdrs,
        this.#gso[h]!,
        iph,
        UDP_CHECK,
      );
      return total;
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

  /** A hash of the protocol, the addresses' last bytes and the ports; collisions only cost a missed merge. */
  #hash(buf: Uint8Array, off: number, tcp: number, version: number): number {
    // IPv4: the addresses; IPv6: their last 4 bytes.
    const a = off + (version === 4 ? IPV4_SRC : IPV6_DST - 4);
    const b = off + (version === 4 ? IPV4_DST : IPV6_HEADER_LEN - 4);
    const s = (buf[a]! << 24) | (buf[a + 1]! << 16) | (buf[a + 2]! << 8) | buf[a + 3]!;
    const d = (buf[b]! << 24) | (buf[b + 1]! << 16) | (buf[b + 2]! << 8) | buf[b + 3]!;
    const p = (buf[tcp]! << 24) | (buf[tcp + 1]! << 16) | (buf[tcp + 2]! << 8) | buf[tcp + 3]!;
    // The protocol too, so that TCP and UDP between the same ports keep their own open groups.
    const proto = buf[off + (version === 4 ? 9 : 6)]!;
    let h = Math.imul(s ^ Math.imul(d ^ proto, 0x9e3779b1), 0x85ebca6b) ^ p;
    h = Math.imul(h ^ (h >>> 15), 0xc2b2ae35);
    return (h ^ (h >>> 13)) >>> 0;
  }

  /** Whether the packet has the protocol, addresses and ports of group `g`'s first packet. */
  #sameFlow(g: number, buf: Uint8Array, off: number, tcp: number, version: number): boolean {
    const hb = this.#bufs[g]!, ho = this.#off[g]!;
    if (hb[ho]! >>> 4 !== version) return false;
    const proto = version === 4 ? 9 : 6;
    if (hb[ho + proto] !== buf[off + proto]) return false;
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
    if (this.#udp[g] === 1 || !this.#ipHeadersMatch(g, buf, off, iph)) return false;
    // tcp_gro_receive: the ACK number, the flag word except CWR/FIN/PSH (data offset, reserved bits, flags
    // and window) and every option word must match.
    const hb = this.#bufs[g]!, ho = this.#off[g]!;
    const ht = ho + iph, t = off + iph;
    for (let k = 8; k < 13; k++) if (hb[ht + k] !== buf[t + k]) return false;
    if (hb[ht + 14] !== buf[t + 14] || hb[ht + 15] !== buf[t + 15]) return false;
    for (let k = 20; k < thl; k++) if (hb[ht + k] !== buf[t + k]) return false;
    return true;
  }

  /** The IP header rules of a merge with group `g`, for TCP and UDP alike. */
  #ipHeadersMatch(g: number, buf: Uint8Array, off: number, iph: number): boolean {
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
    return true;
  }
}
