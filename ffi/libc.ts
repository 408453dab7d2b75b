/**
 * libc bindings, the constants and struct layouts they need, and errno turned into errors that say what to do.
 *
 * Layouts are those of 64-bit Linux (x86-64 and AArch64 agree on every structure used here). Each encoder
 * writes into a caller's buffer at an offset so structures can be laid out once and reused.
 * @module
 */

import { addressOf, errno, LIBC, openLibrary } from "./runtime.ts";

/** The bound C functions. Hot-path calls return `i32` (see ffi/runtime.ts for why that is exact). */
export const libc = openLibrary(LIBC, {
  open: { args: ["buffer", "i32", "i32"], result: "i32" },
  close: { args: ["i32"], result: "i32" },
  read: { args: ["i32", "buffer", "usize"], result: "i32" },
  write: { args: ["i32", "buffer", "usize"], result: "i32" },
  ioctl: { args: ["i32", "u64", "buffer"], result: "i32" },
  socket: { args: ["i32", "i32", "i32"], result: "i32" },
  bind: { args: ["i32", "buffer", "u32"], result: "i32" },
  getsockname: { args: ["i32", "buffer", "buffer"], result: "i32" },
  setsockopt: { args: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { args: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  sendto: { args: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "i32" },
  recvfrom: { args: ["i32", "buffer", "usize", "i32", "buffer", "buffer"], result: "i32" },
  // The timeout (struct timespec *) is always NULL, passed as NULL_ADDRESS (0n): declared `usize` rather
  // than `pointer` so no wrapper converts it, and a bigint so Deno keeps the call on V8's fast path (the
  // number 0 sent every call down the slow path: ~0.95 µs against ~0.7 µs per call measured here).
  recvmmsg: { args: ["i32", "buffer", "u32", "i32", "usize"], result: "i32" },
  sendmmsg: { args: ["i32", "buffer", "u32", "i32"], result: "i32" },
  poll: { args: ["buffer", "u64", "i32"], result: "i32" },
  poll_nonblocking: { name: "poll", args: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  eventfd: { args: ["u32", "i32"], result: "i32" },
  if_nametoindex: { args: ["buffer"], result: "u32" },
  if_indextoname: { args: ["u32", "buffer"], result: "pointer" },
});

/** Constants from the Linux headers (asm-generic values, shared by x86-64 and AArch64). */
export const O_RDWR = 0o2;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;

export const AF_INET = 2;
export const AF_INET6 = 10;
export const AF_NETLINK = 16;
export const SOCK_DGRAM = 2;
export const SOCK_RAW = 3;
export const SOCK_NONBLOCK = O_NONBLOCK;
export const SOCK_CLOEXEC = O_CLOEXEC;
export const EFD_NONBLOCK = O_NONBLOCK;
export const EFD_CLOEXEC = O_CLOEXEC;

export const SOL_SOCKET = 1;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_SNDBUFFORCE = 32;
export const SO_RCVBUFFORCE = 33;
export const SO_MARK = 36;
export const IPPROTO_IPV6 = 41;
export const IPV6_V6ONLY = 26;

export const MSG_DONTWAIT = 0x40;

/**
 * NULL for a `usize`/`u64` argument. A bigint: Deno's fast FFI path takes 64-bit arguments only as bigints (a
 * number sends the whole call down the slow path), and a module constant allocates nothing per call.
 */
export const NULL_ADDRESS = 0n;

/** UDP socket options and control messages (include/uapi/linux/udp.h; SOL_UDP is IPPROTO_UDP). */
export const SOL_UDP = 17;
/** Segment size for UDP GSO (Linux 4.18): a sockopt, or a cmsg with a u16 per sendmsg. */
export const UDP_SEGMENT = 103;
/** UDP GRO on receive (Linux 5.0): an int sockopt; coalesced reads then carry a cmsg with the int gso_size. */
export const UDP_GRO = 104;

export const POLLIN = 0x1;
export const POLLOUT = 0x4;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;
export const POLLNVAL = 0x20;

/** errno numbers and their names (asm-generic/errno-base.h and errno.h). */
export const errnoNames: Readonly<Record<number, string>> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  5: "EIO",
  6: "ENXIO",
  7: "E2BIG",
  9: "EBADF",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  17: "EEXIST",
  19: "ENODEV",
  22: "EINVAL",
  23: "ENFILE",
  24: "EMFILE",
  28: "ENOSPC",
  32: "EPIPE",
  34: "ERANGE",
  77: "EBADFD",
  88: "ENOTSOCK",
  89: "EDESTADDRREQ",
  90: "EMSGSIZE",
  92: "ENOPROTOOPT",
  93: "EPROTONOSUPPORT",
  95: "EOPNOTSUPP",
  97: "EAFNOSUPPORT",
  98: "EADDRINUSE",
  99: "EADDRNOTAVAIL",
  100: "ENETDOWN",
  101: "ENETUNREACH",
  104: "ECONNRESET",
  105: "ENOBUFS",
  107: "ENOTCONN",
  110: "ETIMEDOUT",
  111: "ECONNREFUSED",
  113: "EHOSTUNREACH",
};

export const EPERM = 1;
export const ENOENT = 2;
export const ESRCH = 3;
export const EINTR = 4;
export const EIO = 5;
export const ENXIO = 6;
export const EAGAIN = 11;
export const EACCES = 13;
export const EBUSY = 16;
export const EEXIST = 17;
export const ENODEV = 19;
export const EINVAL = 22;
export const EBADFD = 77;
export const EMSGSIZE = 90;
export const ENOPROTOOPT = 92;
export const EOPNOTSUPP = 95;
export const EAFNOSUPPORT = 97;
export const EADDRINUSE = 98;
export const EADDRNOTAVAIL = 99;
export const ENETUNREACH = 101;
export const ENOBUFS = 105;
export const ECONNREFUSED = 111;
export const EHOSTUNREACH = 113;

/** Short descriptions, used when the caller gives no more specific hint. */
const errnoText: Readonly<Record<number, string>> = {
  [EPERM]: "operation not permitted",
  [ENOENT]: "no such file or directory",
  [EINTR]: "interrupted system call",
  [EIO]: "input/output error",
  [EAGAIN]: "resource temporarily unavailable",
  [EACCES]: "permission denied",
  [EBUSY]: "device or resource busy",
  [EEXIST]: "file exists",
  [ENODEV]: "no such device",
  [EINVAL]: "invalid argument",
  [EMSGSIZE]: "message too long",
  [ENOPROTOOPT]: "protocol not available",
  [EOPNOTSUPP]: "operation not supported",
  [EAFNOSUPPORT]: "address family not supported",
  [EADDRINUSE]: "address already in use",
  [EADDRNOTAVAIL]: "cannot assign requested address",
  [ENETUNREACH]: "network is unreachable",
  [ENOBUFS]: "no buffer space available",
  [ECONNREFUSED]: "connection refused",
  [EHOSTUNREACH]: "no route to host",
};

/** The name of an errno value, e.g. `EPERM`, or `errno N` when unknown. */
export function errnoName(code: number): string {
  return errnoNames[code] ?? `errno ${code}`;
}

/** A failed libc call: which call, which errno, and what to do about it. */
export class SysError extends Error {
  override readonly name = "SysError";
  /** The errno value. */
  readonly errno: number;
  /** The errno name, e.g. `EBUSY`. */
  readonly code: string;
  /** The call, with its subject, e.g. `ioctl(TUNSETIFF wg0)`. */
  readonly call: string;
  /** What to do, or a plain description when nothing better is known. */
  readonly hint: string;

  constructor(call: string, code: number, hint?: string) {
    const h = hint ?? errnoText[code] ?? "unexpected error";
    super(`${call} failed: ${errnoName(code)}: ${h}`);
    this.errno = code;
    this.code = errnoName(code);
    this.call = call;
    this.hint = h;
  }
}

/**
 * Throws a {@link SysError} for the current errno if `result` is negative; returns `result` otherwise.
 * @param result a libc return value
 * @param call the call's name for the message
 * @param hints what to say for particular errno values
 */
export function check(result: number, call: string, hints?: Readonly<Record<number, string>>): number {
  if (result >= 0) return result;
  const e = errno();
  throw new SysError(call, e, hints?.[e]);
}

/** A NUL-terminated C string in a fresh buffer. */
export function cString(s: string): Uint8Array {
  const bytes = new TextEncoder().encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** Decodes a NUL-terminated string from a buffer region. */
export function fromCString(buf: Uint8Array, offset = 0, max = buf.length - offset): string {
  let end = offset;
  while (end < offset + max && buf[end] !== 0) end++;
  return new TextDecoder().decode(buf.subarray(offset, end));
}

/** `close(fd)`, ignoring errors other than reporting them (close can only fail for a bad fd). */
export function closeFd(fd: number): void {
  if (fd >= 0) libc.symbols.close(fd);
}

/** `setsockopt` with an int value; returns 0, or the errno on failure (for calls that have a fallback). */
export function trySetSockOptInt(fd: number, level: number, name: number, value: number): number {
  const v = new Int32Array([value]);
  return libc.symbols.setsockopt(fd, level, name, v, 4) < 0 ? errno() : 0;
}

/** `setsockopt` with an int value; throws a {@link SysError} naming `what` on failure. */
export function setSockOptInt(
  fd: number,
  level: number,
  name: number,
  value: number,
  what: string,
  hints?: Readonly<Record<number, string>>,
): void {
  const e = trySetSockOptInt(fd, level, name, value);
  if (e !== 0) throw new SysError(`setsockopt(${what})`, e, hints?.[e]);
}

/** `getsockopt` of an int value. */
export function getSockOptInt(fd: number, level: number, name: number, what: string): number {
  const v = new Int32Array(1);
  const len = new Uint32Array([4]);
  check(libc.symbols.getsockopt(fd, level, name, v, len), `getsockopt(${what})`);
  return v[0]!;
}

/** `if_nametoindex`: the interface index, or 0 if there is no such interface. */
export function ifNameToIndex(name: string): number {
  return libc.symbols.if_nametoindex(cString(name));
}

/** `if_indextoname`: the interface name, or null if there is no such interface. */
export function ifIndexToName(index: number): string | null {
  const buf = new Uint8Array(IFNAMSIZ);
  return libc.symbols.if_indextoname(index, buf) === 0n ? null : fromCString(buf);
}

// --- Socket addresses -----------------------------------------------------------------------------------

/** A socket address as bytes: family 4 or 6, the address (4 or 16 bytes, network order), the port. */
export interface SockAddr {
  family: 4 | 6;
  addr: Uint8Array;
  port: number;
}

/** sizeof(struct sockaddr_in). */
export const SOCKADDR_IN_SIZE = 16;
/** sizeof(struct sockaddr_in6). */
export const SOCKADDR_IN6_SIZE = 28;
/** sizeof(struct sockaddr_storage): room for any family. */
export const SOCKADDR_STORAGE_SIZE = 128;

/**
 * Writes `struct sockaddr_in` (family, port big-endian, address, zero padding) or `struct sockaddr_in6`
 * (family, port, flowinfo 0, address, scope id) at `offset`.
 * @returns the structure's length, to pass as socklen_t
 */
export function encodeSockAddr(
  buf: Uint8Array,
  offset: number,
  family: 4 | 6,
  addr: Uint8Array,
  port: number,
  scopeId = 0,
): number {
  const v = new DataView(buf.buffer, buf.byteOffset + offset);
  if (family === 4) {
    if (addr.length !== 4) throw new RangeError(`IPv4 address must be 4 bytes, got ${addr.length}`);
    buf.fill(0, offset, offset + SOCKADDR_IN_SIZE);
    v.setUint16(0, AF_INET, true);
    v.setUint16(2, port, false);
    buf.set(addr, offset + 4);
    return SOCKADDR_IN_SIZE;
  }
  if (addr.length !== 16) throw new RangeError(`IPv6 address must be 16 bytes, got ${addr.length}`);
  buf.fill(0, offset, offset + SOCKADDR_IN6_SIZE);
  v.setUint16(0, AF_INET6, true);
  v.setUint16(2, port, false);
  buf.set(addr, offset + 8);
  v.setUint32(24, scopeId, true);
  return SOCKADDR_IN6_SIZE;
}

/** The family (4, 6, or 0 for anything else) of the socket address at `offset`. Allocates nothing. */
export function sockAddrFamily(buf: Uint8Array, offset: number): 0 | 4 | 6 {
  const f = buf[offset]! | (buf[offset + 1]! << 8);
  return f === AF_INET ? 4 : f === AF_INET6 ? 6 : 0;
}

/** The port of the socket address at `offset` (same place for both families). Allocates nothing. */
export function sockAddrPort(buf: Uint8Array, offset: number): number {
  return (buf[offset + 2]! << 8) | buf[offset + 3]!;
}

/** Where the address bytes of the socket address at `offset` start (4 bytes for v4, 16 for v6). */
export function sockAddrAddrOffset(buf: Uint8Array, offset: number): number {
  return offset + (sockAddrFamily(buf, offset) === 6 ? 8 : 4);
}

/** Decodes the socket address at `offset` into a fresh object; null for families other than v4/v6. */
export function decodeSockAddr(buf: Uint8Array, offset: number): SockAddr | null {
  const family = sockAddrFamily(buf, offset);
  if (family === 0) return null;
  const at = sockAddrAddrOffset(buf, offset);
  return { family, addr: buf.slice(at, at + (family === 4 ? 4 : 16)), port: sockAddrPort(buf, offset) };
}

// --- struct ifreq ---------------------------------------------------------------------------------------

/** IFNAMSIZ: interface names are at most 15 bytes plus NUL. */
export const IFNAMSIZ = 16;
/** sizeof(struct ifreq): the name and a 24-byte union. */
export const IFREQ_SIZE = 40;

/** A zeroed `struct ifreq` with `ifr_name` set. */
export function ifreq(name: string): Uint8Array {
  const bytes = new TextEncoder().encode(name);
  if (bytes.length === 0 || bytes.length >= IFNAMSIZ) {
    throw new RangeError(`Interface name must be 1 to ${IFNAMSIZ - 1} bytes: "${name}"`);
  }
  const buf = new Uint8Array(IFREQ_SIZE);
  buf.set(bytes);
  return buf;
}

/** Offset of the ifreq union (ifr_flags, ifr_mtu, ifr_ifindex, ifr_addr…). */
export const IFR_UNION = IFNAMSIZ;

// --- iovec and mmsghdr ----------------------------------------------------------------------------------

/** sizeof(struct iovec): base pointer and length. */
export const IOVEC_SIZE = 16;
/** sizeof(struct mmsghdr): msghdr, the unsigned msg_len and padding to 8. */
export const MMSGHDR_SIZE = 64;

/** Offsets inside struct msghdr / mmsghdr. */
export const MSG_NAME = 0;
export const MSG_NAMELEN = 8;
export const MSG_IOV = 16;
export const MSG_IOVLEN = 24;
export const MSG_CONTROL = 32;
export const MSG_CONTROLLEN = 40;
export const MSG_FLAGS = 48;
export const MMSG_LEN = 56;

/**
 * Writes one `struct mmsghdr` at `offset` with a single iovec, an optional name buffer and an optional control
 * buffer (msg_controllen is left 0: set it per call to send or receive control messages).
 * @param view the mmsghdr array
 * @param offset where this entry starts
 * @param name address of the sockaddr buffer, or 0n
 * @param nameLen its size
 * @param iov address of the iovec
 * @param control address of the control buffer, or 0n
 */
export function encodeMmsghdr(
  view: DataView,
  offset: number,
  name: bigint,
  nameLen: number,
  iov: bigint,
  control = 0n,
): void {
  for (let i = 0; i < MMSGHDR_SIZE; i += 8) view.setBigUint64(offset + i, 0n, true);
  view.setBigUint64(offset + MSG_NAME, name, true);
  view.setUint32(offset + MSG_NAMELEN, nameLen, true);
  view.setBigUint64(offset + MSG_IOV, iov, true);
  view.setBigUint64(offset + MSG_IOVLEN, 1n, true);
  view.setBigUint64(offset + MSG_CONTROL, control, true);
}

/**
 * Sets a 64-bit size_t field (iov_len, msg_controllen) from a number below 2^32 with two 32-bit writes: a
 * BigInt would allocate.
 */
export function setSize(view: DataView, offset: number, n: number): void {
  view.setUint32(offset, n, true);
  view.setUint32(offset + 4, 0, true);
}

/**
 * An address split into its low and high 32-bit halves, once, so that pointers into a pinned buffer can be
 * written per packet with {@link setPointer} and no BigInt.
 */
export function addressHalves(addr: bigint): { lo: number; hi: number } {
  return { lo: Number(addr & 0xffffffffn), hi: Number(addr >> 32n) };
}

/**
 * Writes the pointer `base + add` (base given as its halves, see {@link addressHalves}) at `offset`, little
 * endian, as two 32-bit writes. `lo + add` stays far below 2^53, so the carry is exact. Allocates nothing.
 */
export function setPointer(view: DataView, offset: number, lo: number, hi: number, add: number): void {
  const sum = lo + add;
  const carry = Math.floor(sum / 0x100000000);
  view.setUint32(offset, sum - carry * 0x100000000, true);
  view.setUint32(offset + 4, hi + carry, true);
}

// --- Control messages (cmsg(3)) -------------------------------------------------------------------------

/** sizeof(struct cmsghdr) on 64-bit Linux: cmsg_len (size_t), cmsg_level (int), cmsg_type (int). */
export const CMSG_HDR_SIZE = 16;
/** Offsets inside struct cmsghdr; the data follows at CMSG_HDR_SIZE (already aligned to 8). */
export const CMSG_LEN_AT = 0;
export const CMSG_LEVEL_AT = 8;
export const CMSG_TYPE_AT = 12;

/** CMSG_ALIGN: control messages are aligned to sizeof(size_t), 8 bytes. */
export function cmsgAlign(n: number): number {
  return (n + 7) & ~7;
}

/** CMSG_LEN(n): the cmsg_len of a message carrying `n` data bytes (no trailing padding). */
export function cmsgLen(n: number): number {
  return CMSG_HDR_SIZE + n;
}

/** CMSG_SPACE(n): the bytes a message carrying `n` data bytes takes in a control buffer, padding included. */
export function cmsgSpace(n: number): number {
  return CMSG_HDR_SIZE + cmsgAlign(n);
}

/**
 * Looks for a control message of `level`/`type` in a received control buffer, walking as CMSG_NXTHDR does.
 * @param view the control buffer
 * @param offset where this message's control data starts
 * @param len msg_controllen as the kernel left it (bytes used)
 * @returns the offset of its data in `view`, or -1 when absent
 */
export function findCmsg(view: DataView, offset: number, len: number, level: number, type: number): number {
  let at = 0;
  while (at + CMSG_HDR_SIZE <= len) {
    const used = view.getUint32(offset + at + CMSG_LEN_AT, true);
    if (used < CMSG_HDR_SIZE || at + used > len) return -1;
    if (
      view.getInt32(offset + at + CMSG_LEVEL_AT, true) === level &&
      view.getInt32(offset + at + CMSG_TYPE_AT, true) === type
    ) return offset + at + CMSG_HDR_SIZE;
    at += cmsgAlign(used);
  }
  return -1;
}

export { addressOf };
