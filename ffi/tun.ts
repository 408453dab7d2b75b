/**
 * TUN devices and the interface settings made through `ioctl` on a socket (netdevice(7)).
 *
 * `openTun` opens `/dev/net/tun` non-blocking and attaches it to an interface with `TUNSETIFF`
 * (`IFF_TUN | IFF_NO_PI`: each read or write is one bare IP packet, up to 65,535 bytes).
 * Addresses are added through rtnetlink (ffi/netlink.ts), which handles IPv4 and IPv6 alike and allows several
 * per interface; `setIPv4Address` is the classic ioctl way for the single primary IPv4 address.
 * @module
 */

import {
  AF_INET,
  check,
  closeFd,
  cString,
  EAGAIN,
  EINTR,
  encodeSockAddr,
  fromCString,
  IFNAMSIZ,
  IFR_UNION,
  ifreq,
  libc,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDWR,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SysError,
} from "./libc.ts";
import { errno } from "./runtime.ts";
import { addAddress as netlinkAddAddress } from "./netlink.ts";

/** The largest packet a TUN device carries. */
export const MAX_PACKET = 65535;

/** TUN flags (linux/if_tun.h). */
export const IFF_TUN = 0x0001;
export const IFF_NO_PI = 0x1000;
export const IFF_MULTI_QUEUE = 0x0100;
/** `_IOW('T', 202, int)`. */
export const TUNSETIFF = 0x400454ca;

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
const EBADFD = 77;

const openHints: Readonly<Record<number, string>> = {
  2: "no TUN support (load the tun module / pass --device /dev/net/tun to the container)",
  19: "no TUN support (load the tun module / pass --device /dev/net/tun to the container)",
  6: "no TUN support (load the tun module / pass --device /dev/net/tun to the container)",
  1: "cannot open /dev/net/tun: " + NEEDS_NET_ADMIN,
  13: "cannot open /dev/net/tun: " + NEEDS_NET_ADMIN,
};

const setIffHints: Readonly<Record<number, string>> = {
  1: NEEDS_NET_ADMIN,
  13: NEEDS_NET_ADMIN,
  16: "interface name in use",
  22: "invalid interface name, or the name belongs to an interface that is not a TUN device of this kind",
};

const ifHints: Readonly<Record<number, string>> = {
  1: NEEDS_NET_ADMIN,
  13: NEEDS_NET_ADMIN,
  19: "no such interface",
  22: "invalid value for this interface",
};

/** Options for {@link openTun}. */
export interface TunOptions {
  /** Attach as one queue of a multi-queue device (`IFF_MULTI_QUEUE`). */
  multiQueue?: boolean;
}

/** An open TUN queue: one fd, non-blocking, reading and writing bare IP packets. */
export class Tun {
  #fd: number;
  /** The interface name the kernel gave (it expands a `%d` in the requested name). */
  readonly name: string;

  constructor(fd: number, name: string) {
    this.#fd = fd;
    this.name = name;
  }

  /** The file descriptor, for the poll set; -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  /**
   * Reads one packet into `buf` (give it {@link MAX_PACKET} bytes). Allocates nothing.
   * @returns the packet length, or 0 when no packet is waiting
   * @throws SysError for anything but "nothing to read" (EAGAIN, EINTR)
   */
  read(buf: Uint8Array): number {
    const n = libc.symbols.read(this.#fd, buf, buf.length);
    if (n >= 0) return n;
    const e = errno();
    if (e === EAGAIN || e === EINTR) return 0;
    throw new SysError(`read(TUN ${this.name})`, e, e === EBADFD ? "the interface was deleted" : undefined);
  }

  /**
   * Writes one packet, the first `len` bytes of `buf`. Allocates nothing and never throws: a packet the
   * kernel refuses (queue full, interface down, malformed) is simply dropped, as a network would.
   * @returns `len` when written, or the negated errno (-EAGAIN, -EIO, -EINVAL…) when dropped
   */
  write(buf: Uint8Array, len: number): number {
    const n = libc.symbols.write(this.#fd, buf, len);
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
  const flags = IFF_TUN | IFF_NO_PI | (options.multiQueue ? IFF_MULTI_QUEUE : 0);
  new DataView(req.buffer).setUint16(IFR_UNION, flags, true);
  if (libc.symbols.ioctl(fd, TUNSETIFF, req) < 0) {
    const e = errno();
    closeFd(fd);
    throw new SysError(`ioctl(TUNSETIFF ${name})`, e, setIffHints[e]);
  }
  return new Tun(fd, fromCString(req, 0, IFNAMSIZ));
}

// One datagram socket serves every interface ioctl; it is opened on first use and kept.
let ctlFd = -1;
function controlSocket(): number {
  if (ctlFd < 0) {
    ctlFd = check(libc.symbols.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), "socket(AF_INET, control)");
  }
  return ctlFd;
}

/** Closes the shared control socket (tests use this to check for fd leaks; it reopens on demand). */
export function closeControlSocket(): void {
  closeFd(ctlFd);
  ctlFd = -1;
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
