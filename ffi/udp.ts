/**
 * UDP sockets for the WireGuard listen port: one IPv4 and one IPv6 socket (IPV6_V6ONLY) on the same port,
 * non-blocking, with large buffers and an optional fwmark, and batched I/O through recvmmsg/sendmmsg over
 * preallocated rings, so receiving or sending a batch allocates nothing.
 *
 * Port 0 means "any": the IPv4 socket is bound first and gets a random port, then the IPv6 socket is bound to
 * the same number; if that one is taken, both are closed and the pair is tried again (as wireguard-go does).
 * @module
 */

import {
  AF_INET,
  AF_INET6,
  check,
  closeFd,
  EAFNOSUPPORT,
  EAGAIN,
  ECONNREFUSED,
  EINTR,
  encodeMmsghdr,
  IOVEC_SIZE,
  IPPROTO_IPV6,
  IPV6_V6ONLY,
  libc,
  MMSG_LEN,
  MMSGHDR_SIZE,
  MSG_DONTWAIT,
  MSG_FLAGS,
  MSG_NAMELEN,
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
  SysError,
  trySetSockOptInt,
} from "./libc.ts";
import { addressOf, errno, pinned } from "./runtime.ts";

/** Socket buffer size asked for (wireguard-go uses the same 7 MiB). */
export const SOCKET_BUFFER_SIZE = 7 << 20;
/** MSG_TRUNC in msg_flags: the datagram was longer than the buffer. */
export const MSG_TRUNC = 0x20;
const EADDRINUSE = 98;
const BIND_RETRIES = 32;
/** Bytes reserved per message for its socket address (sockaddr_in6 is 28). */
const NAME_STRIDE = 32;

const bindHints = (port: number): Readonly<Record<number, string>> => ({
  98: `UDP port ${port} is already in use (choose another listen port)`,
  13: `UDP port ${port} needs CAP_NET_BIND_SERVICE (run as root or use a port above 1023)`,
  99: "address not available",
});
const markHints: Readonly<Record<number, string>> = {
  1: "setting a fwmark needs CAP_NET_ADMIN (run as root)",
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

/** One non-blocking UDP socket of one family. */
export class UdpSocket {
  #fd: number;
  /** 4 or 6. */
  readonly family: 4 | 6;
  readonly #name = new Uint8Array(SOCKADDR_STORAGE_SIZE);
  readonly #nameLen = new Uint32Array(1);

  constructor(fd: number, family: 4 | 6) {
    this.#fd = fd;
    this.family = family;
  }

  /**
   * Opens and binds a socket to the wildcard address on `port` (0 = any).
   * @throws SysError EAFNOSUPPORT when the family is unavailable, EADDRINUSE when the port is taken
   */
  static bind(family: 4 | 6, port: number): UdpSocket {
    const af = family === 4 ? AF_INET : AF_INET6;
    const fd = check(
      libc.symbols.socket(af, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0),
      `socket(AF_INET${family === 6 ? "6" : ""}, SOCK_DGRAM)`,
      { 97: `IPv${family} is not available on this host` },
    );
    const sock = new UdpSocket(fd, family);
    try {
      if (family === 6) setSockOptInt(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY");
      const addr = new Uint8Array(SOCKADDR_STORAGE_SIZE);
      const len = putSockAddr(addr, 0, family, new Uint8Array(family === 4 ? 4 : 16), port);
      check(libc.symbols.bind(fd, addr, len), `bind(UDP IPv${family} port ${port})`, bindHints(port));
      sock.setBufferSizes(SOCKET_BUFFER_SIZE);
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

  private constructor(v4: UdpSocket | null, v6: UdpSocket | null, port: number) {
    this.v4 = v4;
    this.v6 = v6;
    this.port = port;
  }

  /**
   * Binds both families on `port` (0 = a random port free in both), and applies `fwmark` when non-zero.
   * @throws SysError when the port is in use, or the fwmark cannot be set
   */
  static open(port: number, fwmark = 0): UdpBind {
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new RangeError(`Invalid UDP port: ${port}`);
    }
    for (let attempt = 0;; attempt++) {
      let v4: UdpSocket | null = null;
      let v6: UdpSocket | null = null;
      try {
        v4 = bindOptional(4, port);
        const p = v4 !== null ? v4.port : port;
        v6 = bindOptional(6, p);
        if (v4 === null && v6 === null) {
          throw new SysError("socket(UDP)", EAFNOSUPPORT, "neither IPv4 nor IPv6 is available");
        }
        const bind = new UdpBind(v4, v6, v4 !== null ? p : v6!.port);
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

  /**
   * Moves to another port: binds the new pair first, and only then closes this one, so a failure leaves the
   * current sockets working. Returns `this` when the port does not change.
   */
  rebind(port: number, fwmark = 0): UdpBind {
    if (port === this.port && port !== 0) {
      this.setMark(fwmark);
      return this;
    }
    const next = UdpBind.open(port, fwmark);
    this.close();
    return next;
  }

  /** Closes both sockets. Idempotent. */
  close(): void {
    this.v4?.close();
    this.v6?.close();
  }
}

function bindOptional(family: 4 | 6, port: number): UdpSocket | null {
  try {
    return UdpSocket.bind(family, port);
  } catch (e) {
    if (e instanceof SysError && e.errno === EAFNOSUPPORT) return null;
    throw e;
  }
}

/**
 * A ring of `count` message slots, each with a data buffer of `size` bytes, a socket address and the
 * `iovec`/`mmsghdr` entries pointing at them, all allocated once. Used for both directions.
 */
class MessageRing {
  /** Capacity in messages. */
  readonly count: number;
  /** Size of each slot's data buffer. */
  readonly size: number;
  /** Each slot's data buffer (views into one block). */
  readonly packets: readonly Uint8Array[];
  protected readonly names: Uint8Array;
  protected readonly headers: Uint8Array;
  /** `headers` from slot i on, preallocated so a partial send needs no new view. */
  protected readonly headersFrom: readonly Uint8Array[];
  protected readonly headerView: DataView;
  protected readonly iovecView: DataView;
  readonly #data: Uint8Array;
  readonly #iovecs: Uint8Array;

  constructor(count: number, size: number) {
    if (!Number.isInteger(count) || count < 1 || count > 1024) {
      throw new RangeError(`Invalid batch size: ${count}`);
    }
    this.count = count;
    this.size = size;
    this.#data = pinned(count * size);
    this.names = pinned(count * NAME_STRIDE);
    this.#iovecs = pinned(count * IOVEC_SIZE);
    this.headers = pinned(count * MMSGHDR_SIZE);
    this.headerView = new DataView(this.headers.buffer, this.headers.byteOffset, this.headers.byteLength);
    this.iovecView = new DataView(this.#iovecs.buffer, this.#iovecs.byteOffset, this.#iovecs.byteLength);
    const dataAt = addressOf(this.#data);
    const namesAt = addressOf(this.names);
    const iovAt = addressOf(this.#iovecs);
    const packets: Uint8Array[] = [];
    const headersFrom: Uint8Array[] = [];
    for (let i = 0; i < count; i++) {
      packets.push(this.#data.subarray(i * size, (i + 1) * size));
      headersFrom.push(this.headers.subarray(i * MMSGHDR_SIZE));
      this.iovecView.setBigUint64(i * IOVEC_SIZE, dataAt + BigInt(i * size), true);
      this.iovecView.setBigUint64(i * IOVEC_SIZE + 8, BigInt(size), true);
      encodeMmsghdr(
        this.headerView,
        i * MMSGHDR_SIZE,
        namesAt + BigInt(i * NAME_STRIDE),
        NAME_STRIDE,
        iovAt + BigInt(i * IOVEC_SIZE),
      );
    }
    this.packets = packets;
    this.headersFrom = headersFrom;
  }

  /** Sets slot `i`'s iovec length (two 32-bit writes: a BigInt would allocate). */
  protected setLength(i: number, len: number): void {
    this.iovecView.setUint32(i * IOVEC_SIZE + 8, len, true);
    this.iovecView.setUint32(i * IOVEC_SIZE + 12, 0, true);
  }
}

/**
 * Receives up to `count` datagrams per call with recvmmsg. After {@link RecvBatch.recv} returns n, slots 0..n-1
 * hold the messages: `packets[i]` (the first `length(i)` bytes), and the source as `family(i)`, `port(i)` and
 * `address(i)` (a preallocated view of the 4 or 16 address bytes inside the ring). Nothing is allocated per
 * call; the views are overwritten by the next call.
 */
export class RecvBatch extends MessageRing {
  readonly #addr4: readonly Uint8Array[];
  readonly #addr6: readonly Uint8Array[];
  #last = 0;

  constructor(count = 64, size = 65536) {
    super(count, size);
    const a4: Uint8Array[] = [];
    const a6: Uint8Array[] = [];
    for (let i = 0; i < count; i++) {
      a4.push(this.names.subarray(i * NAME_STRIDE + 4, i * NAME_STRIDE + 8));
      a6.push(this.names.subarray(i * NAME_STRIDE + 8, i * NAME_STRIDE + 24));
    }
    this.#addr4 = a4;
    this.#addr6 = a6;
  }

  /**
   * Receives what is waiting on `socket`, without blocking.
   * @returns the number of messages (0 when none)
   */
  recv(socket: UdpSocket): number {
    // The kernel overwrites msg_namelen with the actual address size; restore the slots it used.
    for (let i = 0; i < this.#last; i++) {
      this.headerView.setUint32(i * MMSGHDR_SIZE + MSG_NAMELEN, NAME_STRIDE, true);
    }
    this.#last = 0;
    const n = libc.symbols.recvmmsg(socket.fd, this.headers, this.count, MSG_DONTWAIT, 0);
    if (n >= 0) return (this.#last = n);
    const e = errno();
    if (e === EAGAIN || e === EINTR || e === ECONNREFUSED) return 0;
    throw new SysError(`recvmmsg(UDP IPv${socket.family})`, e);
  }

  /** Length of message `i`. */
  length(i: number): number {
    return this.headerView.getUint32(i * MMSGHDR_SIZE + MMSG_LEN, true);
  }

  /** Whether message `i` was longer than the slot and was cut. */
  truncated(i: number): boolean {
    return (this.headerView.getInt32(i * MMSGHDR_SIZE + MSG_FLAGS, true) & MSG_TRUNC) !== 0;
  }

  /** Source family of message `i`: 4 or 6 (0 if neither). */
  family(i: number): 0 | 4 | 6 {
    const at = i * NAME_STRIDE;
    const af = this.names[at]! | (this.names[at + 1]! << 8);
    return af === AF_INET ? 4 : af === AF_INET6 ? 6 : 0;
  }

  /** Source port of message `i`. */
  port(i: number): number {
    const at = i * NAME_STRIDE;
    return (this.names[at + 2]! << 8) | this.names[at + 3]!;
  }

  /** Source address bytes of message `i` (4 or 16), as a view that the next receive overwrites. */
  address(i: number): Uint8Array {
    return this.family(i) === 6 ? this.#addr6[i]! : this.#addr4[i]!;
  }

  /** The raw socket-address bytes region of all slots (`NAME_STRIDE` = 32 bytes per slot). */
  get rawNames(): Uint8Array {
    return this.names;
  }
}

/**
 * Sends up to `count` datagrams per call with sendmmsg. Fill slot i's `packets[i]` (in place, e.g. encrypt
 * into it) and call `set(i, len, family, addr, port)`, then `send(bind, n)`. Nothing is allocated per call.
 */
export class SendBatch extends MessageRing {
  readonly #families: Uint8Array;

  constructor(count = 64, size = 65536) {
    super(count, size);
    this.#families = new Uint8Array(count);
  }

  /** Sets slot `i` to send the first `len` bytes of `packets[i]` to `addr`:`port`. */
  set(i: number, len: number, family: 4 | 6, addr: Uint8Array, port: number): void {
    const nameLen = putSockAddr(this.names, i * NAME_STRIDE, family, addr, port);
    this.headerView.setUint32(i * MMSGHDR_SIZE + MSG_NAMELEN, nameLen, true);
    this.setLength(i, len);
    this.#families[i] = family;
  }

  /**
   * Sends slots `0..n-1`, each on the socket of its family, in runs of the same family. A message the kernel
   * refuses (unreachable, buffer full) is skipped. Never throws.
   * @returns how many were sent
   */
  send(bind: UdpBind, n: number): number {
    let sent = 0;
    for (let start = 0; start < n;) {
      const family = this.#families[start]! as 4 | 6;
      let end = start + 1;
      while (end < n && this.#families[end] === family) end++;
      const socket = bind.socket(family);
      if (socket !== null) sent += this.sendRange(socket, start, end);
      start = end;
    }
    return sent;
  }

  /**
   * Sends slots `start..end-1` on one socket (all must be of its family).
   * @returns how many were sent
   */
  sendRange(socket: UdpSocket, start: number, end: number): number {
    let sent = 0;
    let at = start;
    // Each round sends at least one message or skips one refused message, so it ends within end-start rounds.
    while (at < end) {
      const r = libc.symbols.sendmmsg(socket.fd, this.headersFrom[at]!, end - at, MSG_DONTWAIT);
      if (r > 0) {
        sent += r;
        at += r;
        continue;
      }
      if (errno() === EAGAIN) break; // The socket buffer is full: drop the rest, as a network would.
      at++; // This message was refused (e.g. ENETUNREACH): skip it.
    }
    return sent;
  }
}
