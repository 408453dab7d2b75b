/**
 * UDP sockets for the WireGuard listen port: one IPv4 and one IPv6 socket (IPV6_V6ONLY) on the same port,
 * non-blocking, with large buffers and an optional fwmark; single datagrams through sendto/recvfrom, and
 * batched I/O through sendmmsg/recvmmsg with {@link GsoSendBatch} and {@link GroRecvBatch}: each lays its
 * datagrams out in one preallocated (pinned) buffer, addressed by offset, so sending or receiving a batch
 * allocates nothing. Both work with the offloads below on or off.
 *
 * Port 0 means "any": the IPv4 socket is bound first and gets a random port, then the IPv6 socket is bound to
 * the same number; if that one is taken, both are closed and the pair is tried again (as wireguard-go does).
 *
 * Offloads, as newer wireguard-go uses them (both optional, asked for at bind):
 * - UDP GSO (UDP_SEGMENT, Linux 4.18, udp(7)): one sendmsg carries up to 64 KB of equal-size datagrams to one
 *   destination as one skb; the kernel (or the NIC) cuts it into datagrams on the way out, so the wire and the
 *   peer see ordinary datagrams. {@link GsoSendBatch} groups datagrams into such messages.
 * - UDP GRO (UDP_GRO, Linux 5.0): the kernel may hand over several datagrams of one flow as one buffer, with
 *   a UDP_GRO cmsg giving the segment size. {@link GroRecvBatch} splits them again.
 *
 * Sticky source addresses, as the kernel module and wireguard-go's StdNetBind keep them: every socket asks for
 * IP_PKTINFO / IPV6_RECVPKTINFO (ip(7), ipv6(7)), so {@link GroRecvBatch} tells which local address (and
 * interface) each datagram arrived at; {@link GsoSendBatch} sends a message from a given local address with an
 * IP_PKTINFO / IPV6_PKTINFO cmsg, and when that address is gone (EINVAL, EADDRNOTAVAIL, ENODEV) sends it again
 * without one and reports the owner of the source, which forgets it.
 * @module
 */

import {
  addressHalves,
  AF_INET,
  AF_INET6,
  check,
  closeFd,
  CMSG_HDR_SIZE,
  CMSG_LEN_AT,
  CMSG_LEVEL_AT,
  CMSG_TYPE_AT,
  cmsgLen,
  cmsgSpace,
  EACCES,
  EADDRINUSE,
  EADDRNOTAVAIL,
  EAFNOSUPPORT,
  EAGAIN,
  ECONNREFUSED,
  EINTR,
  EINVAL,
  EIO,
  EMSGSIZE,
  encodeMmsghdr,
  ENETUNREACH,
  ENODEV,
  ENOPROTOOPT,
  EOPNOTSUPP,
  EPERM,
  findCmsg,
  IOVEC_SIZE,
  IPPROTO_IPV6,
  IPV6_V6ONLY,
  libc,
  MMSG_LEN,
  MMSGHDR_SIZE,
  MSG_CONTROL,
  MSG_CONTROLLEN,
  MSG_DONTWAIT,
  MSG_FLAGS,
  MSG_NAME,
  MSG_NAMELEN,
  NULL_ADDRESS,
  setPointer,
  setSize,
  setSockOptInt,
  SO_MARK,
  SO_RCVBUF,
  SO_RCVBUFFORCE,
  SO_SNDBUF,
  SO_SNDBUFFORCE,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
  SOCKADDR_IN6_SIZE,
  SOCKADDR_IN_SIZE,
  SOCKADDR_STORAGE_SIZE,
  SOL_SOCKET,
  SOL_UDP,
  SysError,
  trySetSockOptInt,
  UDP_GRO,
  UDP_SEGMENT,
} from "./libc.ts";
import { addressOf, errno, pinned } from "./runtime.ts";
import type { PacketMemory } from "./packet_memory.ts";

/** Socket buffer size asked for (wireguard-go uses the same 7 MiB). */
export const SOCKET_BUFFER_SIZE = 7 << 20;
/** MSG_TRUNC in msg_flags: the datagram was longer than the buffer. */
export const MSG_TRUNC = 0x20;
const BIND_RETRIES = 32;
/** ip(7): IP_PKTINFO at level IPPROTO_IP (SOL_IP) asks for, and sends with, a struct in_pktinfo. */
export const IPPROTO_IP = 0;
export const IP_PKTINFO = 8;
/** ipv6(7): IPV6_RECVPKTINFO asks for an IPV6_PKTINFO cmsg (struct in6_pktinfo) on every received datagram. */
export const IPV6_RECVPKTINFO = 49;
export const IPV6_PKTINFO = 50;
/** struct in_pktinfo: int ipi_ifindex, in_addr ipi_spec_dst (the local address), in_addr ipi_addr. */
const IN_PKTINFO_SIZE = 12;
/** struct in6_pktinfo: in6_addr ipi6_addr, int ipi6_ifindex. */
const IN6_PKTINFO_SIZE = 20;
/** An empty address: no sticky source. */
const NO_LOCAL = new Uint8Array(0);
/** Bytes reserved per message for its socket address (sockaddr_in6 is 28). */
const NAME_STRIDE = 32;

const bindHints = (port: number): Readonly<Record<number, string>> => ({
  [EADDRINUSE]: `UDP port ${port} is already in use (choose another listen port)`,
  [EACCES]: `UDP port ${port} needs CAP_NET_BIND_SERVICE (run as root or use a port above 1023)`,
  [EADDRNOTAVAIL]: "address not available",
});
const markHints: Readonly<Record<number, string>> = {
  [EPERM]: "setting a fwmark needs CAP_NET_ADMIN (run as root)",
};

/**
 * Writes a socket address into `buf` at `offset` byte by byte (no DataView, no allocation).
 * @returns the socklen_t to pass
 */
function putSockAddr(buf: Uint8Array, offset: number, family: 4 | 6, addr: Uint8Array, port: number): number {
  const size = family === 4 ? SOCKADDR_IN_SIZE : SOCKADDR_IN6_SIZE;
  buf.fill(0, offset, offset + size);
  const af = family === 4 ? AF_INET : AF_INET6;
  buf[offset] = af & 0xff;
  buf[offset + 1] = af >> 8;
  buf[offset + 2] = port >> 8;
  buf[offset + 3] = port & 0xff;
  buf.set(addr, offset + (family === 4 ? 4 : 8));
  return size;
}

/**
 * Offloads to ask for at bind. Both are off unless asked for: with GRO on, a receive may return several
 * datagrams in one buffer, which {@link GroRecvBatch} splits (a plain {@link UdpSocket.recvFrom} would take
 * them for one datagram).
 */
export interface UdpOffloads {
  /** Send with UDP_SEGMENT when the kernel supports it (probed at bind). */
  readonly gso?: boolean;
  /** Turn UDP_GRO on (silently left off when the kernel refuses). */
  readonly gro?: boolean;
}

/** One non-blocking UDP socket of one family. */
export class UdpSocket {
  #fd: number;
  /** 4 or 6. */
  readonly family: 4 | 6;
  readonly #name = new Uint8Array(SOCKADDR_STORAGE_SIZE);
  readonly #nameLen = new Uint32Array(1);
  #gso = false;
  #gro = false;
  #pktinfo = false;

  constructor(fd: number, family: 4 | 6) {
    this.#fd = fd;
    this.family = family;
  }

  /**
   * Opens and binds a socket to the wildcard address on `port` (0 = any), with the offloads asked for.
   * @throws SysError EAFNOSUPPORT when the family is unavailable, EADDRINUSE when the port is taken
   */
  static bind(family: 4 | 6, port: number, offloads: UdpOffloads = {}): UdpSocket {
    const af = family === 4 ? AF_INET : AF_INET6;
    const fd = check(
      libc.symbols.socket(af, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0),
      `socket(AF_INET${family === 6 ? "6" : ""}, SOCK_DGRAM)`,
      { [EAFNOSUPPORT]: `IPv${family} is not available on this host` },
    );
    const sock = new UdpSocket(fd, family);
    try {
      if (family === 6) setSockOptInt(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY");
      const addr = new Uint8Array(SOCKADDR_STORAGE_SIZE);
      const len = putSockAddr(addr, 0, family, new Uint8Array(family === 4 ? 4 : 16), port);
      check(libc.symbols.bind(fd, addr, len), `bind(UDP IPv${family} port ${port})`, bindHints(port));
      sock.setBufferSizes(SOCKET_BUFFER_SIZE);
      if (offloads.gso) sock.enableGso();
      if (offloads.gro) sock.enableGro();
      sock.enablePktinfo();
    } catch (e) {
      sock.close();
      throw e;
    }
    return sock;
  }

  /** The descriptor, for the poll set; -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  /** The bound port (getsockname). */
  get port(): number {
    const buf = new Uint8Array(SOCKADDR_STORAGE_SIZE);
    const len = new Uint32Array([SOCKADDR_STORAGE_SIZE]);
    check(libc.symbols.getsockname(this.#fd, buf, len), "getsockname");
    return (buf[2]! << 8) | buf[3]!;
  }

  /**
   * Asks for `size`-byte receive and send buffers: first with the *FORCE options (which ignore
   * net.core.rmem_max/wmem_max, allowed with CAP_NET_ADMIN), then within the limits. Never throws for lack of
   * privilege.
   */
  setBufferSizes(size: number): void {
    if (trySetSockOptInt(this.#fd, SOL_SOCKET, SO_RCVBUFFORCE, size) !== 0) {
      trySetSockOptInt(this.#fd, SOL_SOCKET, SO_RCVBUF, size);
    }
    if (trySetSockOptInt(this.#fd, SOL_SOCKET, SO_SNDBUFFORCE, size) !== 0) {
      trySetSockOptInt(this.#fd, SOL_SOCKET, SO_SNDBUF, size);
    }
  }

  /**
   * Whether sends may carry a UDP_SEGMENT cmsg: asked for, known to the kernel, and not turned off since
   * (see {@link UdpSocket.disableGso}).
   */
  get gso(): boolean {
    return this.#gso;
  }

  /** Whether UDP_GRO is on: one receive may then return several datagrams of a flow, coalesced. */
  get gro(): boolean {
    return this.#gro;
  }

  /**
   * Turns GSO on if the kernel has it. getsockopt(UDP_SEGMENT) answers (the socket's default segment size, 0)
   * on kernels that know the option, and fails with ENOPROTOOPT before Linux 4.18: a probe that sends nothing.
   * The default stays 0; the segment size goes with each message as a cmsg.
   * @returns whether GSO is now on
   */
  enableGso(): boolean {
    const value = new Int32Array(1);
    const len = new Uint32Array([4]);
    this.#gso = libc.symbols.getsockopt(this.#fd, SOL_UDP, UDP_SEGMENT, value, len) === 0;
    return this.#gso;
  }

  /**
   * Stops using GSO on this socket for good: after EIO, which udp_send_skb() (net/ipv4/udp.c) returns when the
   * skb cannot be segmented with checksum offload (older kernels, or an xfrm route); wireguard-go does the same.
   */
  disableGso(): void {
    this.#gso = false;
  }

  /**
   * Turns UDP_GRO on (setsockopt SOL_UDP/UDP_GRO, Linux 5.0). A refusal leaves it off: datagrams then simply
   * arrive one by one.
   * @returns whether GRO is now on
   */
  enableGro(): boolean {
    this.#gro = trySetSockOptInt(this.#fd, SOL_UDP, UDP_GRO, 1) === 0;
    return this.#gro;
  }

  /**
   * Asks the kernel to say, with each received datagram, which local address it was sent to and on which
   * interface (IP_PKTINFO; IPV6_RECVPKTINFO), for sticky source addresses. A refusal leaves it off: replies
   * then leave from whatever address the routing table picks.
   * @returns whether it is now on
   */
  enablePktinfo(): boolean {
    this.#pktinfo = this.family === 4
      ? trySetSockOptInt(this.#fd, IPPROTO_IP, IP_PKTINFO, 1) === 0
      : trySetSockOptInt(this.#fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1) === 0;
    return this.#pktinfo;
  }

  /** Whether received datagrams carry their local address (see {@link UdpSocket.enablePktinfo}). */
  get pktinfo(): boolean {
    return this.#pktinfo;
  }

  /** Sets SO_MARK (the fwmark routing rules can match); 0 clears it. */
  setMark(mark: number): void {
    setSockOptInt(this.#fd, SOL_SOCKET, SO_MARK, mark >>> 0 | 0, "SO_MARK", markHints);
  }

  /**
   * Sends one datagram, the first `len` bytes of `buf`. Allocates nothing and never throws.
   * @returns bytes sent, or the negated errno (-EAGAIN when the buffer is full, -ENETUNREACH…)
   */
  sendTo(buf: Uint8Array, len: number, addr: Uint8Array, port: number): number {
    const nameLen = putSockAddr(this.#name, 0, this.family, addr, port);
    const n = libc.symbols.sendto(this.#fd, buf, len, 0, this.#name, nameLen);
    return n >= 0 ? n : -errno();
  }

  /**
   * Receives one datagram into `buf`. The source is then available through {@link UdpSocket.sourceName}.
   * @returns its length, or -1 when none is waiting
   */
  recvFrom(buf: Uint8Array): number {
    this.#nameLen[0] = SOCKADDR_STORAGE_SIZE;
    const n = libc.symbols.recvfrom(this.#fd, buf, buf.length, MSG_DONTWAIT, this.#name, this.#nameLen);
    if (n >= 0) return n;
    const e = errno();
    if (e === EAGAIN || e === EINTR || e === ECONNREFUSED) return -1;
    throw new SysError(`recvfrom(UDP IPv${this.family})`, e);
  }

  /** The raw sockaddr of the last {@link UdpSocket.recvFrom} (family at 0, port at 2, address at 4 or 8). */
  get sourceName(): Uint8Array {
    return this.#name;
  }

  /** Closes the socket. Idempotent. */
  close(): void {
    closeFd(this.#fd);
    this.#fd = -1;
  }
}

/**
 * The listen port: an IPv4 and an IPv6 socket on the same port number. Either may be null when the host lacks
 * that family (at least one exists).
 */
export class UdpBind {
  readonly v4: UdpSocket | null;
  readonly v6: UdpSocket | null;
  /** The bound port (the random one when 0 was asked for). */
  readonly port: number;
  /** The offloads asked for (each socket's `gso`/`gro` says what it got). */
  readonly offloads: UdpOffloads;

  private constructor(v4: UdpSocket | null, v6: UdpSocket | null, port: number, offloads: UdpOffloads) {
    this.v4 = v4;
    this.v6 = v6;
    this.port = port;
    this.offloads = offloads;
  }

  /**
   * Binds both families on `port` (0 = a random port free in both), applies `fwmark` when non-zero, and turns
   * on the offloads asked for where the kernel has them.
   * @throws SysError when the port is in use, or the fwmark cannot be set
   */
  static open(port: number, fwmark = 0, offloads: UdpOffloads = {}): UdpBind {
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new RangeError(`Invalid UDP port: ${port}`);
    }
    for (let attempt = 0;; attempt++) {
      let v4: UdpSocket | null = null;
      let v6: UdpSocket | null = null;
      try {
        v4 = bindOptional(4, port, offloads);
        const p = v4 !== null ? v4.port : port;
        v6 = bindOptional(6, p, offloads);
        if (v4 === null && v6 === null) {
          throw new SysError("socket(UDP)", EAFNOSUPPORT, "neither IPv4 nor IPv6 is available");
        }
        const bind = new UdpBind(v4, v6, v4 !== null ? p : v6!.port, offloads);
        if (fwmark !== 0) bind.setMark(fwmark);
        return bind;
      } catch (e) {
        v4?.close();
        v6?.close();
        const retry = port === 0 && e instanceof SysError && e.errno === EADDRINUSE && attempt < BIND_RETRIES;
        if (!retry) throw e;
      }
    }
  }

  /** Sets (or with 0 clears) the fwmark on both sockets. */
  setMark(mark: number): void {
    this.v4?.setMark(mark);
    this.v6?.setMark(mark);
  }

  /** The socket for a destination family, or null when that family is unavailable. */
  socket(family: 4 | 6): UdpSocket | null {
    return family === 4 ? this.v4 : this.v6;
  }

  /** Closes both sockets. Idempotent. */
  close(): void {
    this.v4?.close();
    this.v6?.close();
  }
}

function bindOptional(family: 4 | 6, port: number, offloads: UdpOffloads): UdpSocket | null {
  try {
    return UdpSocket.bind(family, port, offloads);
  } catch (e) {
    if (e instanceof SysError && e.errno === EAFNOSUPPORT) return null;
    throw e;
  }
}

// --- GSO and GRO batches ----------------------------------------------------------------------------------

/**
 * The largest payload of one GSO message: a UDP datagram over IPv4 holds at most 65535 − 20 (IP) − 8 (UDP)
 * bytes, and ip_append_data() (net/ipv4/ip_output.c) measures a GSO message against that limit as a whole,
 * refusing more with EMSGSIZE. IPv6 would allow 20 bytes more; one limit keeps both families alike.
 */
export const GSO_MAX_BYTES = 65507;
/**
 * Segments per GSO message. udp_send_skb() refuses more than UDP_MAX_SEGMENTS with EINVAL; that constant of
 * include/linux/udp.h was 64 (1 << 6) from Linux 4.18 and is 128 in newer kernels (the 6.18 kernel this was
 * written on accepts 128 segments and refuses 129). 64 holds on every kernel, and is wireguard-go's
 * udpSegmentMaxDatagrams.
 */
export const GSO_MAX_SEGMENTS = 64;
/**
 * The most datagrams one received message is split into: an skb coalesced by GRO holds at most
 * UDP_GRO_CNT_MAX (64, net/ipv4/udp_offload.c), and one a local GSO sender passes on unsegmented (loopback,
 * veth) at most UDP_MAX_SEGMENTS (128 on current kernels). Pieces beyond this are dropped.
 */
export const GRO_MAX_SEGMENTS = 128;
/** Control bytes per GSO message: one cmsghdr carrying the u16 segment size, CMSG_SPACE(2) = 24 on 64-bit. */
const GSO_CONTROL = cmsgSpace(2);
/** CMSG_SPACE of the source cmsgs: IP_PKTINFO 32, IPV6_PKTINFO 40. */
const PKTINFO4_SPACE = cmsgSpace(IN_PKTINFO_SIZE);
const PKTINFO6_SPACE = cmsgSpace(IN6_PKTINFO_SIZE);
/**
 * Control bytes per message sent: a source cmsg ending where the UDP_SEGMENT one begins, so that either,
 * both or neither make one contiguous control buffer: `[IPV6_PKTINFO 0..40 | IP_PKTINFO 8..40][UDP_SEGMENT
 * 40..64]`, msg_control pointing at the first one used.
 */
const SEND_PKTINFO_END = PKTINFO6_SPACE;
const SEND_CONTROL = SEND_PKTINFO_END + GSO_CONTROL;
/**
 * Control bytes per received message: the UDP_GRO cmsg needs CMSG_SPACE(sizeof(int)) = 24 and IPV6_PKTINFO
 * 40 (IP_PKTINFO 32); the rest is headroom before the kernel would cut them (MSG_CTRUNC).
 */
const GRO_CONTROL = 96;
/** Datagrams per sendmmsg when a GSO message is sent one datagram at a time. */
const SPLIT_BATCH = 64;

/**
 * Whether an errno from a GSO message means "not as one GSO message" rather than "not at all", so that its
 * datagrams are worth sending one by one: EIO (the skb cannot be segmented here: no checksum offload on older
 * kernels, an xfrm route), EINVAL (segment plus headers above the route's MTU, the segment limit, SO_NO_CHECK),
 * EMSGSIZE (the MTU check of newer kernels, udp_send_skb() in net/ipv4/udp.c), ENOPROTOOPT and EOPNOTSUPP (a
 * kernel or socket without UDP GSO).
 */
function refusesGso(e: number): boolean {
  return e === EIO || e === EINVAL || e === EMSGSIZE || e === ENOPROTOOPT || e === EOPNOTSUPP;
}

/** Whether a GSO refusal will repeat for every message on the socket, so GSO is turned off for good. */
function refusesGsoForGood(e: number): boolean {
  return e === EIO || e === ENOPROTOOPT || e === EOPNOTSUPP;
}

/**
 * Whether an errno from a message with a source cmsg may mean that the source address is no longer ours:
 * ENETUNREACH (ip_route_output_key_hash_rcu() finds no device with that IPv4 source; older kernels said
 * EINVAL), EINVAL (ip6_datagram_send_ctl() finds no such IPv6 address), EADDRNOTAVAIL, ENODEV (the interface
 * is gone). The kernel module and wireguard-go then forget the source and send again without it; when the
 * network really is unreachable, the retry fails as well and the next datagram from the peer sets it again.
 */
function refusesSource(e: number): boolean {
  return e === EINVAL || e === ENETUNREACH || e === EADDRNOTAVAIL || e === ENODEV;
}

/**
 * The C structures one sendmmsg or recvmmsg call takes, in pinned memory, laid out once: per message an
 * mmsghdr with one iovec of its own and, if asked for, its own sockaddr slot ({@link NAME_STRIDE} bytes,
 * msg_namelen `nameLen`) and control block (`control` bytes, msg_controllen left 0). What changes per call
 * (iovec bases and lengths, msg_namelen, msg_controllen, the cmsg data) the batches write in place.
 */
class MsgArrays {
  readonly headers: Uint8Array;
  readonly headerView: DataView;
  readonly iovecs: Uint8Array;
  readonly iovecView: DataView;
  /** Empty when the messages carry no addresses of their own. */
  readonly names: Uint8Array;
  /** Empty when the messages carry no control blocks. */
  readonly control: Uint8Array;
  readonly controlView: DataView;
  /** `headers` from entry i on, for a call that resumes mid-array: views made once, not per call. */
  readonly from: readonly Uint8Array[];

  constructor(count: number, options: { names: boolean; nameLen?: number; control: number }) {
    this.headers = pinned(count * MMSGHDR_SIZE);
    this.iovecs = pinned(count * IOVEC_SIZE);
    this.names = options.names ? pinned(count * NAME_STRIDE) : new Uint8Array(0);
    this.control = options.control > 0 ? pinned(count * options.control) : new Uint8Array(0);
    this.headerView = viewOf(this.headers);
    this.iovecView = viewOf(this.iovecs);
    this.controlView = viewOf(this.control);
    const iovAt = addressOf(this.iovecs);
    const namesAt = options.names ? addressOf(this.names) : 0n;
    const controlAt = options.control > 0 ? addressOf(this.control) : 0n;
    const from: Uint8Array[] = [];
    for (let m = 0; m < count; m++) {
      from.push(this.headers.subarray(m * MMSGHDR_SIZE));
      encodeMmsghdr(
        this.headerView,
        m * MMSGHDR_SIZE,
        options.names ? namesAt + BigInt(m * NAME_STRIDE) : 0n,
        options.nameLen ?? 0,
        iovAt + BigInt(m * IOVEC_SIZE),
        options.control > 0 ? controlAt + BigInt(m * options.control) : 0n,
      );
    }
    this.from = from;
  }
}

/**
 * Datagrams to send, laid out back to back in one pinned buffer and grouped into GSO messages: consecutive
 * datagrams to the same destination, from the same source, with the same length (the last of a group may be
 * shorter) go out as one sendmsg with a UDP_SEGMENT cmsg (udp(7)), and the kernel cuts them apart again. All
 * messages go out with sendmmsg, in runs of one family. Nothing is copied and nothing is allocated per
 * datagram or per call.
 *
 * Use, per datagram: `if (!batch.room(max)) batch.send(bind)`; write the datagram at `batch.cursor` in
 * `batch.data` (e.g. encrypt in place there); `batch.push(len, family, addr, port)`. Then `batch.send(bind)`.
 *
 * A datagram pushed with a `local` address leaves from it (IP_PKTINFO / IPV6_PKTINFO): the sticky source.
 * When the kernel refuses that address (it is gone), the message is sent again without it and
 * {@link GsoSendBatch.onSourceGone} is called with the `owner` given to push, once per message.
 *
 * On a socket without GSO (not asked for, not supported, or turned off after EIO) each message is sent as its
 * datagrams, one mmsghdr each, so callers need not care whether GSO is on.
 */
export class GsoSendBatch {
  /** The whole data buffer. Datagram i of a batch starts where `cursor` was when it was pushed. */
  readonly data: Uint8Array;
  /** Most messages per batch. */
  readonly maxMessages: number;
  /** Most segments per GSO message. */
  readonly maxSegments: number;
  /** Called with a message's owner (see push) when its source address was refused and dropped. */
  onSourceGone: ((owner: object) => void) | null = null;
  /** Messages whose source address the kernel refused (they were sent again without it). */
  sourceRefusals = 0;
  #cursor = 0;
  #messages = 0;
  #datagrams = 0;
  /** Set when a send met EAGAIN: the socket buffer is full, the rest of the run is dropped. */
  #stalled = false;
  // Per message: where it starts in `data`, its length, its segment size and count, family, and whether it
  // can take no more segments (its last one was shorter).
  readonly #start: Int32Array;
  readonly #total: Int32Array;
  readonly #segment: Int32Array;
  readonly #segments: Int32Array;
  readonly #family: Uint8Array;
  readonly #closed: Uint8Array;
  // Per message: the length of its source address (0 none, 4, 16; the cmsg holds the bytes), the interface
  // in that cmsg, and who to tell when the source is refused.
  readonly #localLen: Uint8Array;
  readonly #ifindex: Int32Array;
  readonly #owner: (object | null)[];
  /** Per message a sockaddr, an iovec, an mmsghdr, a source cmsg and a UDP_SEGMENT cmsg. */
  readonly #msgs: MsgArrays;
  /** Single-datagram mmsghdrs for sending messages one datagram at a time (addresses point into #msgs). */
  readonly #split: MsgArrays;
  /** For each entry of #split, the message its datagram belongs to. */
  readonly #splitOf: Int32Array;
  // Addresses of `data`, `names` and the control blocks as 32-bit halves, to write pointers without BigInt
  // (setPointer).
  readonly #dataLo: number;
  readonly #dataHi: number;
  readonly #namesLo: number;
  readonly #namesHi: number;
  readonly #controlLo: number;
  readonly #controlHi: number;

  /**
   * @param messages most GSO messages per batch (each holds up to `maxSegments` datagrams)
   * @param bytes size of the data buffer (default 64 KB per message)
   * @param maxSegments most datagrams per GSO message, at most {@link GSO_MAX_SEGMENTS} by default
   * @param memory where the datagram buffer is taken from: with the TUN's buffers in the same packet memory
   * (ffi/packet_memory.ts), a TSO segment is copied in with a memmove. Its own pinned buffer without one.
   */
  constructor(
    messages = 64,
    bytes = messages * 65536,
    maxSegments = GSO_MAX_SEGMENTS,
    memory?: PacketMemory,
  ) {
    if (!Number.isInteger(messages) || messages < 1 || messages > 1024) {
      throw new RangeError(`Invalid batch size: ${messages}`);
    }
    if (!Number.isInteger(bytes) || bytes < 1 || bytes > 2 ** 30) {
      throw new RangeError(`Invalid buffer size: ${bytes}`);
    }
    if (!Number.isInteger(maxSegments) || maxSegments < 1 || maxSegments > 128) {
      throw new RangeError(`Invalid segment limit: ${maxSegments}`);
    }
    this.maxMessages = messages;
    this.maxSegments = maxSegments;
    this.data = memory ? memory.take(bytes) : pinned(bytes);
    this.#start = new Int32Array(messages);
    this.#total = new Int32Array(messages);
    this.#segment = new Int32Array(messages);
    this.#segments = new Int32Array(messages);
    this.#family = new Uint8Array(messages);
    this.#closed = new Uint8Array(messages);
    this.#localLen = new Uint8Array(messages);
    this.#ifindex = new Int32Array(messages);
    this.#owner = new Array<object | null>(messages).fill(null);
    this.#msgs = new MsgArrays(messages, { names: true, control: SEND_CONTROL });
    this.#split = new MsgArrays(SPLIT_BATCH, { names: false, control: 0 });
    this.#splitOf = new Int32Array(SPLIT_BATCH);
    ({ lo: this.#dataLo, hi: this.#dataHi } = addressHalves(addressOf(this.data)));
    ({ lo: this.#namesLo, hi: this.#namesHi } = addressHalves(addressOf(this.#msgs.names)));
    ({ lo: this.#controlLo, hi: this.#controlHi } = addressHalves(addressOf(this.#msgs.control)));
    const control = this.#msgs.controlView;
    for (let m = 0; m < messages; m++) {
      // The cmsg header never changes; its u16 and msg_controllen are set per send. The kernel's
      // udp_cmsg_send() wants cmsg_len to be exactly CMSG_LEN(sizeof(__u16)) = 18.
      const gso = m * SEND_CONTROL + SEND_PKTINFO_END;
      setSize(control, gso + CMSG_LEN_AT, cmsgLen(2));
      control.setInt32(gso + CMSG_LEVEL_AT, SOL_UDP, true);
      control.setInt32(gso + CMSG_TYPE_AT, UDP_SEGMENT, true);
    }
  }

  /** Where the next datagram must be written in `data`. */
  get cursor(): number {
    return this.#cursor;
  }

  /** Messages queued (a message is one or more datagrams sent by one sendmsg). */
  get messages(): number {
    return this.#messages;
  }

  /** Datagrams queued. */
  get datagrams(): number {
    return this.#datagrams;
  }

  /**
   * Whether a datagram of up to `maxLen` bytes can be pushed: it fits in `data` at the cursor, and a message
   * slot is free should it not join the current message. If not, {@link GsoSendBatch.send} first.
   */
  room(maxLen: number): boolean {
    return this.#messages < this.maxMessages && this.#cursor + maxLen <= this.data.length;
  }

  /**
   * Queues the datagram written at `[cursor, cursor + len)` for `addr`:`port` and moves the cursor past it. It
   * joins the current message as one more GSO segment when it goes to the same destination from the same
   * source, is no longer than the message's segment size, and the message stays within {@link GSO_MAX_BYTES}
   * and `maxSegments`; a shorter datagram closes the message, since the kernel lets only the last segment be
   * shorter. Otherwise it starts a new message.
   * @param local the source address to send from (as long as `addr`), or empty to let routing choose
   * @param ifindex the interface `local` was seen on: sent only with an IPv6 link-local source, which needs
   *   it; otherwise routing picks the interface, as the kernel module's send4/send6 let it
   * @param owner told through {@link GsoSendBatch.onSourceGone} if `local` is refused
   * @throws RangeError when there is no room (see {@link GsoSendBatch.room})
   */
  push(
    len: number,
    family: 4 | 6,
    addr: Uint8Array,
    port: number,
    local: Uint8Array = NO_LOCAL,
    ifindex = 0,
    owner: object | null = null,
  ): void {
    const cursor = this.#cursor;
    if (cursor + len > this.data.length) throw new RangeError("GsoSendBatch: no room for the datagram");
    if (local.length !== addr.length) local = NO_LOCAL;
    if (family === 4 || local.length === 0 || local[0] !== 0xfe || (local[1]! & 0xc0) !== 0x80) ifindex = 0;
    const m = this.#messages - 1;
    if (
      m >= 0 && this.#closed[m] === 0 && len > 0 && len <= this.#segment[m]! &&
      this.#segments[m]! < this.maxSegments && this.#total[m]! + len <= GSO_MAX_BYTES &&
      this.#sameDestination(m, family, addr, port) && this.#sameSource(m, local, ifindex)
    ) {
      this.#total[m] = this.#total[m]! + len;
      this.#segments[m] = this.#segments[m]! + 1;
      if (len < this.#segment[m]!) this.#closed[m] = 1;
    } else {
      const n = this.#messages;
      if (n >= this.maxMessages) throw new RangeError("GsoSendBatch: no free message slot");
      const nameLen = putSockAddr(this.#msgs.names, n * NAME_STRIDE, family, addr, port);
      this.#msgs.headerView.setUint32(n * MMSGHDR_SIZE + MSG_NAMELEN, nameLen, true);
      this.#start[n] = cursor;
      this.#total[n] = len;
      this.#segment[n] = len;
      this.#segments[n] = 1;
      this.#family[n] = family;
      this.#closed[n] = len === 0 ? 1 : 0;
      this.#putSource(n, local, ifindex);
      this.#owner[n] = local.length > 0 ? owner : null;
      this.#messages = n + 1;
    }
    this.#cursor = cursor + len;
    this.#datagrams++;
  }

  /** Forgets what was queued. */
  clear(): void {
    for (let m = 0; m < this.#messages; m++) this.#owner[m] = null;
    this.#cursor = 0;
    this.#messages = 0;
    this.#datagrams = 0;
  }

  /**
   * Sends everything queued, each message on the socket of its family (in runs of one family, in order), and
   * empties the batch. A GSO message the kernel refuses as such is sent again one datagram at a time (and
   * after EIO, GSO is turned off on that socket); a message whose source address is refused is sent again
   * without it; a message refused outright (unreachable…) is skipped; EAGAIN (socket buffer full) drops the
   * rest of the run, as a full queue on a network would. Never throws.
   * @returns how many datagrams were sent
   */
  send(bind: UdpBind): number {
    let sent = 0;
    const n = this.#messages;
    for (let start = 0; start < n;) {
      const family = this.#family[start]! as 4 | 6;
      let end = start + 1;
      while (end < n && this.#family[end] === family) end++;
      const socket = bind.socket(family);
      if (socket !== null) sent += this.#sendRun(socket, start, end);
      start = end;
    }
    this.clear();
    return sent;
  }

  /**
   * sendmmsg(fd, headers, count, MSG_DONTWAIT): every send of the batch goes through here, so that a test can
   * stand in for the kernel's refusals (EIO for GSO cannot be provoked on every machine).
   * @returns messages sent, or the negated errno
   */
  protected sendmmsg(fd: number, headers: Uint8Array, count: number): number {
    const r = libc.symbols.sendmmsg(fd, headers, count, MSG_DONTWAIT);
    return r >= 0 ? r : -errno();
  }

  /** Whether message m goes to family/addr/port (compared with the sockaddr it was given). */
  #sameDestination(m: number, family: 4 | 6, addr: Uint8Array, port: number): boolean {
    if (this.#family[m] !== family) return false;
    const names = this.#msgs.names;
    const at = m * NAME_STRIDE;
    if (names[at + 2] !== port >> 8 || names[at + 3] !== (port & 0xff)) return false;
    const a = at + (family === 4 ? 4 : 8);
    for (let i = 0; i < addr.length; i++) if (names[a + i] !== addr[i]) return false;
    return true;
  }

  /** Where message m's source cmsg starts in the control blocks, and where its address bytes are. */
  #sourceAt(m: number, len: number): number {
    return m * SEND_CONTROL + SEND_PKTINFO_END - (len === 16 ? PKTINFO6_SPACE : PKTINFO4_SPACE);
  }

  /** Whether message m leaves from `local` (empty: no source) on `ifindex`. */
  #sameSource(m: number, local: Uint8Array, ifindex: number): boolean {
    const len = this.#localLen[m]!;
    if (len !== local.length || this.#ifindex[m] !== ifindex) return false;
    if (len === 0) return true;
    // The address sits in the cmsg data: ipi_spec_dst at 4 (IPv4), ipi6_addr at 0 (IPv6).
    const bytes = this.#msgs.control;
    const a = this.#sourceAt(m, len) + CMSG_HDR_SIZE + (len === 4 ? 4 : 0);
    for (let i = 0; i < len; i++) if (bytes[a + i] !== local[i]) return false;
    return true;
  }

  /** Writes message m's source cmsg: IP_PKTINFO (ifindex, spec_dst, addr) or IPV6_PKTINFO (addr, ifindex). */
  #putSource(m: number, local: Uint8Array, ifindex: number): void {
    const len = local.length;
    this.#localLen[m] = len;
    this.#ifindex[m] = ifindex;
    if (len === 0) return;
    const view = this.#msgs.controlView;
    const bytes = this.#msgs.control;
    const at = this.#sourceAt(m, len);
    const data = at + CMSG_HDR_SIZE;
    if (len === 4) {
      setSize(view, at + CMSG_LEN_AT, cmsgLen(IN_PKTINFO_SIZE));
      view.setInt32(at + CMSG_LEVEL_AT, IPPROTO_IP, true);
      view.setInt32(at + CMSG_TYPE_AT, IP_PKTINFO, true);
      view.setInt32(data, ifindex, true);
      for (let i = 0; i < 4; i++) bytes[data + 4 + i] = local[i]!;
      view.setUint32(data + 8, 0, true); // ipi_addr: ignored on send
    } else {
      setSize(view, at + CMSG_LEN_AT, cmsgLen(IN6_PKTINFO_SIZE));
      view.setInt32(at + CMSG_LEVEL_AT, IPPROTO_IPV6, true);
      view.setInt32(at + CMSG_TYPE_AT, IPV6_PKTINFO, true);
      for (let i = 0; i < 16; i++) bytes[data + i] = local[i]!;
      view.setInt32(data + 16, ifindex, true);
    }
  }

  /** The source was refused: message m goes without it from now on, and its owner forgets it. */
  #dropSource(m: number): void {
    this.#localLen[m] = 0;
    this.#ifindex[m] = 0;
    this.sourceRefusals++;
    const owner = this.#owner[m];
    this.#owner[m] = null;
    if (owner !== null && owner !== undefined) this.onSourceGone?.(owner);
  }

  /**
   * Points header `h` of `view` at message m's control: its source cmsg (if any) followed by the UDP_SEGMENT
   * one when `gso`.
   */
  #setControl(view: DataView, h: number, m: number, gso: boolean): void {
    const len = this.#localLen[m]!;
    const source = len === 16 ? PKTINFO6_SPACE : len === 4 ? PKTINFO4_SPACE : 0;
    setPointer(
      view,
      h + MSG_CONTROL,
      this.#controlLo,
      this.#controlHi,
      m * SEND_CONTROL + SEND_PKTINFO_END - source,
    );
    setSize(view, h + MSG_CONTROLLEN, source + (gso ? GSO_CONTROL : 0));
  }

  /** Sets message m's iovec and control for a GSO send. */
  #layout(m: number): void {
    setPointer(this.#msgs.iovecView, m * IOVEC_SIZE, this.#dataLo, this.#dataHi, this.#start[m]!);
    setSize(this.#msgs.iovecView, m * IOVEC_SIZE + 8, this.#total[m]!);
    const gso = this.#segments[m]! > 1; // one datagram: no GSO needed
    if (gso) {
      this.#msgs.controlView.setUint16(
        m * SEND_CONTROL + SEND_PKTINFO_END + CMSG_HDR_SIZE,
        this.#segment[m]!,
        true,
      );
    }
    this.#setControl(this.#msgs.headerView, m * MMSGHDR_SIZE, m, gso);
  }

  /** Sends messages start..end-1 (one family) on `socket`; returns the datagrams sent. */
  #sendRun(socket: UdpSocket, start: number, end: number): number {
    this.#stalled = false;
    if (!socket.gso) return this.#sendSplit(socket, start, end);
    for (let m = start; m < end; m++) this.#layout(m);
    let sent = 0;
    let at = start;
    // Each round sends at least one message, deals with one refused message, or drops one message's source
    // (at most once per message), so it ends within 2 × (end − start) rounds.
    while (at < end) {
      const r = this.sendmmsg(socket.fd, this.#msgs.from[at]!, end - at);
      if (r > 0) {
        for (let m = at; m < at + r; m++) sent += this.#segments[m]!;
        at += r;
        continue;
      }
      const e = -r;
      if (e === EAGAIN) break;
      if (this.#segments[at]! > 1 && refusesGso(e)) {
        // Sent one datagram at a time, where a refused source is also dealt with.
        if (refusesGsoForGood(e)) {
          socket.disableGso();
          return sent + this.#sendSplit(socket, at, end);
        }
        sent += this.#sendSplit(socket, at, at + 1);
        if (this.#stalled) break;
      } else if (this.#localLen[at] !== 0 && refusesSource(e)) {
        this.#dropSource(at);
        this.#layout(at);
        continue; // the same message again, from the address routing chooses
      }
      at++; // Refused (e.g. ENETUNREACH): go on with the next message.
    }
    return sent;
  }

  /** Sends messages start..end-1 one datagram per mmsghdr; returns the datagrams sent. Sets #stalled on EAGAIN. */
  #sendSplit(socket: UdpSocket, start: number, end: number): number {
    const iov = this.#split.iovecView;
    const hdr = this.#split.headerView;
    let sent = 0;
    let m = start;
    let segment = 0; // index of the next datagram inside message m
    while (m < end) {
      // Lay out up to SPLIT_BATCH datagrams, then send them.
      let count = 0;
      while (count < SPLIT_BATCH && m < end) {
        const size = this.#segment[m]!;
        const offset = this.#start[m]! + segment * size;
        const len = Math.min(size, this.#start[m]! + this.#total[m]! - offset);
        setPointer(iov, count * IOVEC_SIZE, this.#dataLo, this.#dataHi, offset);
        setSize(iov, count * IOVEC_SIZE + 8, len);
        const h = count * MMSGHDR_SIZE;
        setPointer(hdr, h + MSG_NAME, this.#namesLo, this.#namesHi, m * NAME_STRIDE);
        hdr.setUint32(
          h + MSG_NAMELEN,
          this.#msgs.headerView.getUint32(m * MMSGHDR_SIZE + MSG_NAMELEN, true),
          true,
        );
        this.#setControl(hdr, h, m, false);
        this.#splitOf[count] = m;
        count++;
        if (++segment >= this.#segments[m]!) {
          m++;
          segment = 0;
        }
      }
      let at = 0;
      while (at < count) {
        const r = this.sendmmsg(socket.fd, this.#split.from[at]!, count - at);
        if (r > 0) {
          sent += r;
          at += r;
          continue;
        }
        if (r === -EAGAIN) {
          this.#stalled = true;
          return sent;
        }
        const refused = this.#splitOf[at]!;
        if (this.#localLen[refused] !== 0 && refusesSource(-r)) {
          // Its source is gone: this and the message's other datagrams go without it (once per message).
          this.#dropSource(refused);
          for (let j = at; j < count; j++) {
            if (this.#splitOf[j] === refused) setSize(hdr, j * MMSGHDR_SIZE + MSG_CONTROLLEN, 0);
          }
          continue;
        }
        at++; // This datagram was refused: skip it.
      }
    }
    return sent;
  }
}

/**
 * Receives with recvmmsg into one pinned buffer, one slot of `slot` bytes per message, and splits messages
 * that UDP GRO coalesced (those with a UDP_GRO cmsg giving the segment size) back into their datagrams. After
 * {@link GroRecvBatch.recv} returns n, datagram i (0 ≤ i < n) is `data[offset(i), offset(i) + length(i))`
 * from `family(i)`, `address(i)`, `port(i)`, sent to our `local(i)` on interface `ifindex(i)` (when the
 * socket has PKTINFO on). Datagrams never overlap, so each may be decrypted in place. Nothing is allocated per
 * call; the views are overwritten by the next call. Works on sockets with or without GRO (without, every
 * message is one datagram).
 */
export class GroRecvBatch {
  /** The whole data buffer: message m's slot is `[m * slot, (m + 1) * slot)`. */
  readonly data: Uint8Array;
  /** Most messages per receive. */
  readonly maxMessages: number;
  /** Bytes per message slot: 65536 holds any UDP payload, coalesced or not. */
  readonly slot: number;
  /** Per message a sockaddr slot, an iovec over its data slot, an mmsghdr and room for control messages. */
  readonly #msgs: MsgArrays;
  // Per datagram: offset, length, the message it came in, whether it was cut.
  readonly #offset: Int32Array;
  readonly #length: Int32Array;
  readonly #message: Uint16Array;
  readonly #truncated: Uint8Array;
  // Per message: views of the source address bytes.
  readonly #addr4: readonly Uint8Array[];
  readonly #addr6: readonly Uint8Array[];
  // Per message: the local address it arrived at (copied out of its PKTINFO cmsg), its length (0 unknown) and
  // interface, and views of it.
  readonly #locals: Uint8Array;
  readonly #localLen: Uint8Array;
  readonly #ifindex: Int32Array;
  readonly #local4: readonly Uint8Array[];
  readonly #local6: readonly Uint8Array[];
  /** Messages the last recvmmsg filled (their msg_namelen and msg_controllen need restoring). */
  #used = 0;

  /**
   * @param messages most messages per recvmmsg
   * @param slot bytes per message (at least the largest datagram; 65536 for coalesced ones)
   * @param memory where the slots are taken from: with the coalescer's arena in the same packet memory
   * (ffi/packet_memory.ts), a segment is copied into a merged packet with a memmove.
   */
  constructor(messages = 64, slot = 65536, memory?: PacketMemory) {
    if (!Number.isInteger(messages) || messages < 1 || messages > 1024) {
      throw new RangeError(`Invalid batch size: ${messages}`);
    }
    if (!Number.isInteger(slot) || slot < 1 || slot > 1 << 20) throw new RangeError(`Invalid slot: ${slot}`);
    this.maxMessages = messages;
    this.slot = slot;
    this.data = memory ? memory.take(messages * slot) : pinned(messages * slot);
    this.#msgs = new MsgArrays(messages, { names: true, nameLen: NAME_STRIDE, control: GRO_CONTROL });
    const names = this.#msgs.names;
    const dataAt = addressOf(this.data);
    const a4: Uint8Array[] = [];
    const a6: Uint8Array[] = [];
    const l4: Uint8Array[] = [];
    const l6: Uint8Array[] = [];
    this.#locals = new Uint8Array(messages * 16);
    this.#localLen = new Uint8Array(messages);
    this.#ifindex = new Int32Array(messages);
    for (let m = 0; m < messages; m++) {
      this.#msgs.iovecView.setBigUint64(m * IOVEC_SIZE, dataAt + BigInt(m * slot), true);
      setSize(this.#msgs.iovecView, m * IOVEC_SIZE + 8, slot);
      setSize(this.#msgs.headerView, m * MMSGHDR_SIZE + MSG_CONTROLLEN, GRO_CONTROL);
      a4.push(names.subarray(m * NAME_STRIDE + 4, m * NAME_STRIDE + 8));
      a6.push(names.subarray(m * NAME_STRIDE + 8, m * NAME_STRIDE + 24));
      l4.push(this.#locals.subarray(m * 16, m * 16 + 4));
      l6.push(this.#locals.subarray(m * 16, m * 16 + 16));
    }
    this.#addr4 = a4;
    this.#addr6 = a6;
    this.#local4 = l4;
    this.#local6 = l6;
    const capacity = messages * GRO_MAX_SEGMENTS;
    this.#offset = new Int32Array(capacity);
    this.#length = new Int32Array(capacity);
    this.#message = new Uint16Array(capacity);
    this.#truncated = new Uint8Array(capacity);
  }

  /**
   * Receives what is waiting on `socket`, without blocking, and splits coalesced messages.
   * @returns the number of datagrams (0 when none)
   * @throws SysError on errors other than "nothing waiting" (EAGAIN, EINTR, ECONNREFUSED)
   */
  recv(socket: UdpSocket): number {
    // recvmsg(2): the kernel overwrites msg_namelen and msg_controllen with the sizes it used; restore them for
    // the messages it filled last time.
    const hdr = this.#msgs.headerView;
    for (let m = 0; m < this.#used; m++) {
      hdr.setUint32(m * MMSGHDR_SIZE + MSG_NAMELEN, NAME_STRIDE, true);
      setSize(hdr, m * MMSGHDR_SIZE + MSG_CONTROLLEN, GRO_CONTROL);
    }
    this.#used = 0;
    const n = libc.symbols.recvmmsg(
      socket.fd,
      this.#msgs.headers,
      this.maxMessages,
      MSG_DONTWAIT,
      NULL_ADDRESS,
    );
    if (n < 0) {
      const e = errno();
      if (e === EAGAIN || e === EINTR || e === ECONNREFUSED) return 0;
      throw new SysError(`recvmmsg(UDP IPv${socket.family})`, e);
    }
    this.#used = n;
    const capacity = this.#offset.length;
    let d = 0;
    for (let m = 0; m < n && d < capacity; m++) {
      const h = m * MMSGHDR_SIZE;
      const len = hdr.getUint32(h + MMSG_LEN, true);
      const cut = (hdr.getInt32(h + MSG_FLAGS, true) & MSG_TRUNC) !== 0 ? 1 : 0;
      const base = m * this.slot;
      // udp_cmsg_recv() (include/net/udp.h) adds SOL_UDP/UDP_GRO with the int gso_size to coalesced skbs.
      const at = findCmsg(
        this.#msgs.controlView,
        m * GRO_CONTROL,
        hdr.getUint32(h + MSG_CONTROLLEN, true),
        SOL_UDP,
        UDP_GRO,
      );
      const size = at < 0 ? 0 : this.#msgs.controlView.getInt32(at, true);
      this.#readLocal(m, socket.family, hdr.getUint32(h + MSG_CONTROLLEN, true));
      if (size <= 0 || len <= size) {
        this.#put(d++, base, len, m, cut);
        continue;
      }
      // Segments of `size` bytes, the last one possibly shorter; only the last can have been cut.
      for (let off = 0; off < len && d < capacity; off += size) {
        const piece = Math.min(size, len - off);
        this.#put(d++, base + off, piece, m, off + piece === len ? cut : 0);
      }
    }
    return d;
  }

  /**
   * Copies the local address and interface of message m out of its IP_PKTINFO (ipi_ifindex at 0, ipi_spec_dst
   * at 4: the local address replies should leave from, as wireguard-go takes it) or IPV6_PKTINFO (ipi6_addr
   * at 0, ipi6_ifindex at 16) cmsg; none found leaves it unknown.
   */
  #readLocal(m: number, family: 4 | 6, controlLen: number): void {
    const view = this.#msgs.controlView;
    const at = family === 4
      ? findCmsg(view, m * GRO_CONTROL, controlLen, IPPROTO_IP, IP_PKTINFO)
      : findCmsg(view, m * GRO_CONTROL, controlLen, IPPROTO_IPV6, IPV6_PKTINFO);
    if (at < 0) {
      this.#localLen[m] = 0;
      this.#ifindex[m] = 0;
      return;
    }
    const control = this.#msgs.control;
    const to = m * 16;
    if (family === 4) {
      for (let i = 0; i < 4; i++) this.#locals[to + i] = control[at + 4 + i]!;
      this.#ifindex[m] = view.getInt32(at, true);
    } else {
      for (let i = 0; i < 16; i++) this.#locals[to + i] = control[at + i]!;
      this.#ifindex[m] = view.getInt32(at + 16, true);
    }
    this.#localLen[m] = family === 4 ? 4 : 16;
  }

  #put(d: number, offset: number, len: number, message: number, cut: number): void {
    this.#offset[d] = offset;
    this.#length[d] = len;
    this.#message[d] = message;
    this.#truncated[d] = cut;
  }

  /** Messages the last {@link GroRecvBatch.recv} received (datagrams before splitting). */
  get messages(): number {
    return this.#used;
  }

  /** Where datagram `i` starts in `data`. */
  offset(i: number): number {
    return this.#offset[i]!;
  }

  /** Length of datagram `i`. */
  length(i: number): number {
    return this.#length[i]!;
  }

  /** Whether datagram `i` was longer than its slot and was cut (MSG_TRUNC). */
  truncated(i: number): boolean {
    return this.#truncated[i] === 1;
  }

  /** Source family of datagram `i`: 4 or 6 (0 if neither). */
  family(i: number): 0 | 4 | 6 {
    const at = this.#message[i]! * NAME_STRIDE;
    const af = this.#msgs.names[at]! | (this.#msgs.names[at + 1]! << 8);
    return af === AF_INET ? 4 : af === AF_INET6 ? 6 : 0;
  }

  /** Source port of datagram `i`. */
  port(i: number): number {
    const at = this.#message[i]! * NAME_STRIDE;
    return (this.#msgs.names[at + 2]! << 8) | this.#msgs.names[at + 3]!;
  }

  /** Source address bytes of datagram `i` (4 or 16), a view the next receive overwrites. */
  address(i: number): Uint8Array {
    const m = this.#message[i]!;
    return this.family(i) === 6 ? this.#addr6[m]! : this.#addr4[m]!;
  }

  /**
   * Our address datagram `i` was sent to (4 or 16 bytes), or an empty array when the socket does not report
   * it; a view the next receive overwrites.
   */
  local(i: number): Uint8Array {
    const m = this.#message[i]!;
    const len = this.#localLen[m];
    return len === 4 ? this.#local4[m]! : len === 16 ? this.#local6[m]! : NO_LOCAL;
  }

  /** The interface datagram `i` arrived on (0 when unknown). */
  ifindex(i: number): number {
    return this.#ifindex[this.#message[i]!]!;
  }
}

function viewOf(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}
