/**
 * TUN devices and the interface settings made through `ioctl` on a socket (netdevice(7)).
 *
 * `openTun` opens `/dev/net/tun` non-blocking and attaches it to an interface with `TUNSETIFF`
 * (`IFF_TUN | IFF_NO_PI`: each read or write is one bare IP packet, up to 65,535 bytes). With `vnetHdr` it adds
 * `IFF_VNET_HDR`: every packet is then preceded by a 10-byte `struct virtio_net_hdr`, and `TUNSETOFFLOAD`
 * lets the kernel hand over TCP super-packets (TSO) and take coalesced ones (GRO), and on Linux 6.2 and later
 * UDP ones too (USO); lib/gso.ts splits them and lib/gro.ts builds them.
 * Addresses are added through rtnetlink (ffi/netlink.ts), which handles IPv4 and IPv6 alike and allows several
 * per interface; `setIPv4Address` is the classic ioctl way for the single primary IPv4 address.
 * @module
 */

import {
  addressHalves,
  AF_INET,
  check,
  closeFd,
  cString,
  EACCES,
  EAGAIN,
  EBADFD,
  EBUSY,
  EINTR,
  EINVAL,
  encodeSockAddr,
  ENODEV,
  ENOENT,
  ENXIO,
  EPERM,
  fromCString,
  IFNAMSIZ,
  IFR_UNION,
  ifreq,
  libc,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDWR,
  setPointer,
  setSize,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SysError,
} from "./libc.ts";
import { addressOf, errno, LIBC, openLibrary, pinned } from "./runtime.ts";
import { addAddress as netlinkAddAddress } from "./netlink.ts";

/** The largest packet a TUN device carries. */
export const MAX_PACKET = 65535;

/** TUN flags (linux/if_tun.h). */
export const IFF_TUN = 0x0001;
export const IFF_NO_PI = 0x1000;
export const IFF_MULTI_QUEUE = 0x0100;
/** Each packet is preceded by a `struct virtio_net_hdr` (linux/if_tun.h). */
export const IFF_VNET_HDR = 0x4000;
/** `_IOW('T', 202, int)`. */
export const TUNSETIFF = 0x400454ca;
/** `_IOR('T', 210, unsigned int)`: the name and flags of the interface a TUN descriptor is attached to. */
export const TUNGETIFF = 0x800454d2;
const IFF_TAP = 0x0002;
const F_SETFD = 2, F_GETFL = 3, F_SETFL = 4, FD_CLOEXEC = 1;
/** `_IOW('T', 208, unsigned int)`: which offloads the reader can take (linux/if_tun.h). */
export const TUNSETOFFLOAD = 0x400454d0;
/** TUNSETOFFLOAD bits: partial checksums, TSO for IPv4 and IPv6, TSO with ECN. */
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
/** TUNSETOFFLOAD bits of Linux 6.2: UDP segmentation offload (VIRTIO_NET_HDR_GSO_UDP_L4) for IPv4 and IPv6. */
export const TUN_F_USO4 = 0x20;
export const TUN_F_USO6 = 0x40;
/** sizeof(struct virtio_net_hdr), the TUN default (TUNSETVNETHDRSZ is left alone). */
export const VNET_HDR_SIZE = 10;

/** Interface ioctls (linux/sockios.h). */
export const SIOCGIFFLAGS = 0x8913;
export const SIOCSIFFLAGS = 0x8914;
export const SIOCSIFADDR = 0x8916;
export const SIOCSIFNETMASK = 0x891c;
export const SIOCGIFMTU = 0x8921;
export const SIOCSIFMTU = 0x8922;
export const SIOCGIFINDEX = 0x8933;
/** Interface flags (linux/if.h). */
export const IFF_UP = 0x1;
export const IFF_RUNNING = 0x40;

const NEEDS_NET_ADMIN = "needs CAP_NET_ADMIN (run as root)";

// readv/writev(2) put one packet anywhere in a buffer without a new view per call, and take only 32-bit
// arguments (read/write's size_t would want a bigint on Deno's fast call path). TUNSETOFFLOAD takes its
// argument by value (tun.c, __tun_chr_ioctl passes `arg` to set_offload), which libc.ts's ioctl, declared
// with a pointer argument, cannot pass. Bound here so this module needs nothing new from libc.ts.
const vio = openLibrary(LIBC, {
  readv: { args: ["i32", "buffer", "i32"], result: "i32" },
  writev: { args: ["i32", "buffer", "i32"], result: "i32" },
  ioctlValue: { name: "ioctl", args: ["i32", "u64", "u64"], result: "i32" },
  // fcntl(2) with an int argument (F_GETFL, F_SETFL, F_SETFD), for a TUN descriptor handed in (adoptTun).
  fcntl: { args: ["i32", "i32", "i32"], result: "i32" },
});

/** One `struct iovec` {iov_base, iov_len}, shared by every readAt/writeAt of this thread. */
const iovec = pinned(16);
const iovecView = new DataView(iovec.buffer, iovec.byteOffset, 16);

// Base addresses of the ArrayBuffers seen by readAt/writeAt, as 32-bit halves so that a call computes
// base + offset with number arithmetic and makes no BigInt. A handful of entries covers a data plane (one
// ring block per direction, the coalescer's buffer); a miss costs one addressOf. The buffers must not move:
// use pinned() or a `new ArrayBuffer`-backed array of at least 64 bytes (see ffi/runtime.ts).
const ADDR_CACHE = 8;
const addrKeys: (ArrayBufferLike | null)[] = new Array(ADDR_CACHE).fill(null);
const addrLo = new Float64Array(ADDR_CACHE);
const addrHi = new Float64Array(ADDR_CACHE);
let addrNext = 0;

/**
 * Points the iovec at `buf[off..off+len)` (setPointer and setSize: 32-bit writes, no BigInt).
 * @returns false when the range is not inside `buf`
 */
function setIovec(buf: Uint8Array, off: number, len: number): boolean {
  if (off < 0 || len < 0 || off + len > buf.length) return false;
  const ab = buf.buffer;
  let k = 0;
  while (k < ADDR_CACHE && addrKeys[k] !== ab) k++;
  if (k === ADDR_CACHE) {
    k = addrNext;
    addrNext = (addrNext + 1) % ADDR_CACHE;
    const { lo, hi } = addressHalves(addressOf(buf) - BigInt(buf.byteOffset));
    addrKeys[k] = ab;
    addrLo[k] = lo;
    addrHi[k] = hi;
  }
  setPointer(iovecView, 0, addrLo[k]!, addrHi[k]!, buf.byteOffset + off);
  setSize(iovecView, 8, len);
  return true;
}

const NO_TUN = "no TUN support (load the tun module / pass --device /dev/net/tun to the container)";
const openHints: Readonly<Record<number, string>> = {
  [ENOENT]: NO_TUN,
  [ENODEV]: NO_TUN,
  [ENXIO]: NO_TUN,
  [EPERM]: "cannot open /dev/net/tun: " + NEEDS_NET_ADMIN,
  [EACCES]: "cannot open /dev/net/tun: " + NEEDS_NET_ADMIN,
};

const setIffHints: Readonly<Record<number, string>> = {
  [EPERM]: NEEDS_NET_ADMIN,
  [EACCES]: NEEDS_NET_ADMIN,
  [EBUSY]: "interface name in use",
  [EINVAL]:
    "invalid interface name, or the name belongs to an interface that is not a TUN device of this kind",
};

const ifHints: Readonly<Record<number, string>> = {
  [EPERM]: NEEDS_NET_ADMIN,
  [EACCES]: NEEDS_NET_ADMIN,
  [ENODEV]: "no such interface",
  [EINVAL]: "invalid value for this interface",
};

/** Options for {@link openTun}. */
export interface TunOptions {
  /** Attach as one queue of a multi-queue device (`IFF_MULTI_QUEUE`). */
  multiQueue?: boolean;
  /**
   * Precede every packet with a `struct virtio_net_hdr` (`IFF_VNET_HDR`) and ask for checksum and TSO
   * offloads (`TUNSETOFFLOAD`); see {@link Tun.vnetHdr} and {@link Tun.offload}.
   */
  vnetHdr?: boolean;
  /** With `vnetHdr`, also ask for UDP segmentation offload (default true; see {@link Tun.uso}). */
  uso?: boolean;
}

/**
 * An open TUN queue: one fd, non-blocking, reading and writing bare IP packets — or, with {@link vnetHdr},
 * a 10-byte virtio_net_hdr followed by the packet, in both directions.
 */
export class Tun {
  #fd: number;
  /** The interface name the kernel gave (it expands a `%d` in the requested name). */
  readonly name: string;
  /** Every read returns, and every write must start with, a virtio_net_hdr ({@link VNET_HDR_SIZE} bytes). */
  readonly vnetHdr: boolean;
  /**
   * The kernel accepted TUNSETOFFLOAD: reads may be TCP super-packets (up to 64 KiB, gso_type TCPV4/TCPV6)
   * or carry partial checksums (NEEDS_CSUM), and writes may be coalesced TCP. False without the vnet header,
   * or when the kernel refused (then headers are still read and written, all of them plain).
   */
  readonly offload: boolean;
  /**
   * The kernel also took TUN_F_USO4 | TUN_F_USO6 (Linux 6.2): reads may be UDP super-packets (gso_type
   * UDP_L4), and writes may be coalesced UDP.
   */
  readonly uso: boolean;

  constructor(fd: number, name: string, vnetHdr = false, offload = false, uso = false) {
    this.#fd = fd;
    this.name = name;
    this.vnetHdr = vnetHdr;
    this.offload = offload;
    this.uso = offload && uso;
  }

  /** The file descriptor, for the poll set; -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  /**
   * Reads one packet (with its vnet header, if any) into `buf[off..off+len)` with readv(2). Allocates nothing.
   * `buf` must be pinned (see the address cache above). With offloads give it 65,535 + 10 bytes: a TSO
   * super-packet fills them.
   * @returns the length read, or 0 when no packet is waiting
   * @throws SysError for anything but "nothing to read" (EAGAIN, EINTR), and RangeError when the range is
   * not inside `buf`
   */
  readAt(buf: Uint8Array, off: number, len: number): number {
    if (!setIovec(buf, off, len)) {
      throw new RangeError(`readAt: ${off}+${len} outside a ${buf.length}-byte buffer`);
    }
    const n = vio.symbols.readv(this.#fd, iovec, 1);
    if (n >= 0) return n;
    const e = errno();
    if (e === EAGAIN || e === EINTR) return 0;
    throw new SysError(`readv(TUN ${this.name})`, e, e === EBADFD ? "the interface was deleted" : undefined);
  }

  /**
   * Writes `buf[off..off+len)` as one packet (vnet header first, if any) with writev(2), without a view or a
   * BigInt per call. `buf` must be pinned. Allocates nothing and never throws: a packet the kernel refuses
   * (queue full, interface down, malformed) is simply dropped, as a network would.
   * @returns `len` when written, or the negated errno when dropped (-EINVAL also for a range outside `buf`)
   */
  writeAt(buf: Uint8Array, off: number, len: number): number {
    if (!setIovec(buf, off, len)) return -EINVAL;
    const n = vio.symbols.writev(this.#fd, iovec, 1);
    return n >= 0 ? n : -errno();
  }

  /** Closes the fd; a non-persistent TUN interface disappears with its last fd. Idempotent. */
  close(): void {
    closeFd(this.#fd);
    this.#fd = -1;
  }
}

/**
 * Creates (or attaches to) the TUN interface `name`.
 *
 * With `vnetHdr`, the flags add `IFF_VNET_HDR` and `TUNSETOFFLOAD` asks for `TUN_F_CSUM | TUN_F_TSO4 |
 * TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6`, as current wireguard-go does (tun/tun_linux.go); a kernel before 6.2
 * refuses the USO bits (EINVAL), and is then asked without them ({@link Tun.uso} false). A kernel that refuses
 * the offloads altogether leaves the device with plain vnet headers: {@link Tun.offload} is then false.
 * @param name interface name, at most 15 bytes; may contain `%d` for the kernel to number it
 * @returns the open device, with the actual name
 * @throws SysError naming the call, the errno and what to do (no TUN support, needs CAP_NET_ADMIN, name in use)
 */
export function openTun(name: string, options: TunOptions = {}): Tun {
  const req = ifreq(name);
  const fd = check(
    libc.symbols.open(cString("/dev/net/tun"), O_RDWR | O_NONBLOCK | O_CLOEXEC, 0),
    "open(/dev/net/tun)",
    openHints,
  );
  const vnetHdr = options.vnetHdr === true;
  const flags = IFF_TUN | IFF_NO_PI | (options.multiQueue ? IFF_MULTI_QUEUE : 0) |
    (vnetHdr ? IFF_VNET_HDR : 0);
  new DataView(req.buffer).setUint16(IFR_UNION, flags, true);
  if (libc.symbols.ioctl(fd, TUNSETIFF, req) < 0) {
    const e = errno();
    closeFd(fd);
    throw new SysError(`ioctl(TUNSETIFF ${name})`, e, setIffHints[e]);
  }
  const { offload, uso } = vnetHdr ? setOffloads(fd, options.uso !== false) : { offload: false, uso: false };
  return new Tun(fd, fromCString(req, 0, IFNAMSIZ), vnetHdr, offload, uso);
}

/**
 * TUNSETOFFLOAD with checksums and TSO, and USO first when `uso` (the bits were added in Linux 6.2, and an
 * older kernel refuses the whole request with EINVAL, so it is made again without them).
 */
function setOffloads(fd: number, uso: boolean): { offload: boolean; uso: boolean } {
  const tcp = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
  if (uso && vio.symbols.ioctlValue(fd, TUNSETOFFLOAD, tcp | TUN_F_USO4 | TUN_F_USO6) === 0) {
    return { offload: true, uso: true };
  }
  return { offload: vio.symbols.ioctlValue(fd, TUNSETOFFLOAD, tcp) === 0, uso: false };
}

/**
 * Takes over a TUN descriptor that another process opened and attached (wireguard-go's `WG_TUN_FD`, as a
 * supervisor hands it in): the interface is not opened by name. The name and flags come from `TUNGETIFF`; the
 * descriptor is made non-blocking and close-on-exec. It must be `IFF_TUN | IFF_NO_PI` (bare IP packets); if it
 * was attached with `IFF_VNET_HDR`, packets carry the header and `TUNSETOFFLOAD` is asked for when
 * `options.vnetHdr` (offloads wanted) is set, as wireguard-go's CreateTUNFromFile does: TSO and USO, as
 * {@link openTun} asks (USO unless `options.uso` is false, and again without it on a kernel before 6.2).
 * @throws SysError when `fd` is not an open TUN descriptor, Error when it is a TAP or carries packet info
 */
export function adoptTun(fd: number, options: TunOptions = {}): Tun {
  const req = ifreq("tun"); // the kernel writes the name over it
  if (libc.symbols.ioctl(fd, TUNGETIFF, req) < 0) {
    throw new SysError(`ioctl(TUNGETIFF fd ${fd})`, errno(), "the descriptor is not an attached TUN device");
  }
  const flags = new DataView(req.buffer).getUint16(IFR_UNION, true);
  const name = fromCString(req, 0, IFNAMSIZ);
  if (flags & IFF_TAP || !(flags & IFF_TUN)) throw new Error(`fd ${fd} (${name}) is a TAP device, not a TUN`);
  if (!(flags & IFF_NO_PI)) {
    throw new Error(`fd ${fd} (${name}) was attached without IFF_NO_PI (packets would carry packet info)`);
  }
  const fl = vio.symbols.fcntl(fd, F_GETFL, 0);
  if (
    fl < 0 || vio.symbols.fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
    vio.symbols.fcntl(fd, F_SETFD, FD_CLOEXEC) < 0
  ) {
    throw new SysError(`fcntl(fd ${fd})`, errno());
  }
  const vnetHdr = (flags & IFF_VNET_HDR) !== 0;
  // The same request as openTun's: USO too, unless refused (before Linux 6.2) or not wanted.
  const { offload, uso } = vnetHdr && options.vnetHdr === true
    ? setOffloads(fd, options.uso !== false)
    : { offload: false, uso: false };
  return new Tun(fd, name, vnetHdr, offload, uso);
}

// One datagram socket serves every interface ioctl; it is opened on first use and kept.
let ctlFd = -1;
function controlSocket(): number {
  if (ctlFd < 0) {
    ctlFd = check(libc.symbols.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), "socket(AF_INET, control)");
  }
  return ctlFd;
}

function ifIoctl(name: string, request: number, what: string, req: Uint8Array): void {
  if (libc.symbols.ioctl(controlSocket(), request, req) < 0) {
    const e = errno();
    throw new SysError(`ioctl(${what} ${name})`, e, ifHints[e]);
  }
}

function getInt(name: string, request: number, what: string): number {
  const req = ifreq(name);
  ifIoctl(name, request, what, req);
  return new DataView(req.buffer).getInt32(IFR_UNION, true);
}

/** The interface's MTU. */
export function getMtu(name: string): number {
  return getInt(name, SIOCGIFMTU, "SIOCGIFMTU");
}

/** Sets the interface's MTU (a TUN accepts 68 to 65,535). */
export function setMtu(name: string, mtu: number): void {
  const req = ifreq(name);
  new DataView(req.buffer).setInt32(IFR_UNION, mtu, true);
  ifIoctl(name, SIOCSIFMTU, "SIOCSIFMTU", req);
}

/** The interface's index (as `ip link` shows it). */
export function ifIndex(name: string): number {
  return getInt(name, SIOCGIFINDEX, "SIOCGIFINDEX");
}

/** The interface flags (IFF_UP, IFF_RUNNING…). */
export function getFlags(name: string): number {
  const req = ifreq(name);
  ifIoctl(name, SIOCGIFFLAGS, "SIOCGIFFLAGS", req);
  return new DataView(req.buffer).getUint16(IFR_UNION, true);
}

/** Whether the interface is administratively up. */
export function isUp(name: string): boolean {
  return (getFlags(name) & IFF_UP) !== 0;
}

/** Brings the interface up or down (read-modify-write of its flags). */
export function setUp(name: string, up: boolean): void {
  const req = ifreq(name);
  ifIoctl(name, SIOCGIFFLAGS, "SIOCGIFFLAGS", req);
  const v = new DataView(req.buffer);
  const flags = v.getUint16(IFR_UNION, true);
  v.setUint16(IFR_UNION, up ? flags | IFF_UP : flags & ~IFF_UP, true);
  ifIoctl(name, SIOCSIFFLAGS, "SIOCSIFFLAGS", req);
}

/**
 * Sets the primary IPv4 address and netmask with SIOCSIFADDR + SIOCSIFNETMASK (replacing any previous primary
 * address). To add several addresses, or IPv6 ones, use {@link addAddress}.
 */
export function setIPv4Address(name: string, addr: Uint8Array, prefixLen: number): void {
  if (prefixLen < 0 || prefixLen > 32) {
    throw new RangeError(`IPv4 prefix length must be 0 to 32: ${prefixLen}`);
  }
  const req = ifreq(name);
  encodeSockAddr(req, IFR_UNION, 4, addr, 0);
  ifIoctl(name, SIOCSIFADDR, "SIOCSIFADDR", req);
  const mask = new Uint8Array(4);
  for (let i = 0; i < 4; i++) mask[i] = 0xff & (0xff << Math.max(0, 8 - Math.max(0, prefixLen - 8 * i)));
  encodeSockAddr(req, IFR_UNION, 4, mask, 0);
  ifIoctl(name, SIOCSIFNETMASK, "SIOCSIFNETMASK", req);
}

/**
 * Adds an IPv4 or IPv6 address with its prefix length to the interface (rtnetlink RTM_NEWADDR).
 * @throws SysError with EEXIST when the address is already there
 */
export function addAddress(name: string, family: 4 | 6, addr: Uint8Array, prefixLen: number): void {
  netlinkAddAddress(ifIndex(name), family, addr, prefixLen);
}
