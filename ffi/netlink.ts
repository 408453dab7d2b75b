/**
 * rtnetlink (netlink(7), rtnetlink(7)): adding and removing addresses, routes and policy rules, reading routes
 * and link MTUs (what `typetun up` needs, as wg-quick gets them from `ip`), and watching links so the daemon
 * notices its interface being deleted.
 *
 * A message is a 16-byte `nlmsghdr` {len u32, type u16, flags u16, seq u32, pid u32}, a fixed family header
 * (`ifinfomsg`, `ifaddrmsg`, `rtmsg`) and attributes {len u16, type u16, data} padded to 4 bytes. Requests
 * carry NLM_F_ACK and the kernel answers with NLMSG_ERROR whose first field is 0 or a negated errno.
 * @module
 */

import {
  AF_INET,
  AF_INET6,
  AF_NETLINK,
  check,
  closeFd,
  EAFNOSUPPORT,
  EAGAIN,
  EEXIST,
  EINTR,
  EINVAL,
  ENETUNREACH,
  ENOBUFS,
  ENODEV,
  ENOENT,
  EPERM,
  ESRCH,
  libc,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_RAW,
  SysError,
} from "./libc.ts";
import { errno } from "./runtime.ts";

export const NETLINK_ROUTE = 0;
/** Multicast group bit for link events (RTMGRP_LINK). */
export const RTMGRP_LINK = 1;

export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLM_F_REQUEST = 0x1;
export const NLM_F_ACK = 0x4;
/** NLM_F_ROOT | NLM_F_MATCH: a dump of every object of the type. */
export const NLM_F_DUMP = 0x300;
const NLM_F_MULTI = 0x2;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;

export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_NEWADDR = 20;
export const RTM_NEWROUTE = 24;
export const RTM_DELROUTE = 25;
export const RTM_GETLINK = 18;
export const RTM_GETADDR = 22;
export const RTM_GETROUTE = 26;
export const RTM_NEWRULE = 32;
export const RTM_DELRULE = 33;
export const RTM_GETRULE = 34;

const NLMSGHDR_SIZE = 16;
const IFINFOMSG_SIZE = 16;
const IFADDRMSG_SIZE = 8;
const RTMSG_SIZE = 12;
const FIB_RULE_HDR_SIZE = 12;
const SOCKADDR_NL_SIZE = 12;

const IFLA_IFNAME = 3;
const IFLA_MTU = 4;
const IFLA_NEW_NETNSID = 45;
const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
const RTA_DST = 1;
const RTA_OIF = 4;
const RTA_PRIORITY = 6;
const RTA_METRICS = 8;
const RTAX_LOCK = 1;
const RTAX_MTU = 2;
const RTA_TABLE = 15;
const FRA_IIFNAME = 3;
const FRA_PRIORITY = 6;
const FRA_OIFNAME = 17;
const FRA_FWMARK = 10;
const FRA_TABLE = 15;
const FRA_SUPPRESS_PREFIXLEN = 14;
const FIB_RULE_INVERT = 0x2;
const FR_ACT_TO_TBL = 1;

/** The main routing table. */
export const RT_TABLE_MAIN = 254;
const RT_TABLE_UNSPEC = 0;
const RTPROT_BOOT = 3;
const RT_SCOPE_UNIVERSE = 0;
const RT_SCOPE_LINK = 253;
const RT_SCOPE_NOWHERE = 255;
const RTN_UNICAST = 1;

const align4 = (n: number) => (n + 3) & ~3;

function sockaddrNl(groups: number): Uint8Array {
  const a = new Uint8Array(SOCKADDR_NL_SIZE);
  const v = new DataView(a.buffer);
  v.setUint16(0, AF_NETLINK, true);
  v.setUint32(8, groups, true);
  return a;
}

/** Builds one netlink request: header, fixed part, attributes. */
class MessageBuilder {
  readonly buf = new Uint8Array(512);
  readonly view = new DataView(this.buf.buffer);
  length: number;

  constructor(type: number, flags: number, seq: number, fixed: number) {
    this.view.setUint16(4, type, true);
    this.view.setUint16(6, flags, true);
    this.view.setUint32(8, seq, true);
    this.length = NLMSGHDR_SIZE + align4(fixed);
  }

  attr(type: number, data: Uint8Array): this {
    const at = this.length;
    this.view.setUint16(at, 4 + data.length, true);
    this.view.setUint16(at + 2, type, true);
    this.buf.set(data, at + 4);
    this.length = at + align4(4 + data.length);
    return this;
  }

  attrU32(type: number, value: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, value, true);
    return this.attr(type, b);
  }

  finish(): Uint8Array {
    this.view.setUint32(0, this.length, true);
    return this.buf.subarray(0, this.length);
  }
}

let seq = 1;

/** One message of a reply: its type, and a view from its fixed header on (after the nlmsghdr). */
interface Reply {
  type: number;
  body: DataView;
}

/**
 * Sends one request on a fresh rtnetlink socket and collects the kernel's answer: for an acknowledged request
 * nothing (the NLMSG_ERROR with 0), for a dump or a get every message up to NLMSG_DONE or the single reply.
 * @throws SysError naming `call` with the errno the kernel returned
 */
function transact(msg: MessageBuilder, call: string, hints: Readonly<Record<number, string>>): Reply[] {
  const fd = check(
    libc.symbols.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE),
    "socket(AF_NETLINK)",
  );
  try {
    const bytes = msg.finish();
    const kernel = sockaddrNl(0);
    check(libc.symbols.sendto(fd, bytes, bytes.length, 0, kernel, SOCKADDR_NL_SIZE), `sendto(${call})`);
    const reply = new Uint8Array(65536);
    const from = new Uint8Array(SOCKADDR_NL_SIZE);
    const fromLen = new Uint32Array([SOCKADDR_NL_SIZE]);
    const mySeq = new DataView(bytes.buffer, bytes.byteOffset).getUint32(8, true);
    const out: Reply[] = [];
    // rtnetlink answers synchronously, so the reply is queued by the time sendto returns; a dump comes in
    // several datagrams. Bounded: a routing table of a million routes would need fewer rounds than this.
    for (let tries = 0; tries < 100_000; tries++) {
      const n = check(libc.symbols.recvfrom(fd, reply, reply.length, 0, from, fromLen), `recvfrom(${call})`);
      const v = new DataView(reply.buffer);
      for (let at = 0; at + NLMSGHDR_SIZE <= n;) {
        const len = v.getUint32(at, true);
        if (len < NLMSGHDR_SIZE || at + len > n) break;
        const type = v.getUint16(at + 4, true), flags = v.getUint16(at + 6, true);
        if (v.getUint32(at + 8, true) === mySeq) {
          if (type === NLMSG_ERROR) {
            const err = -v.getInt32(at + NLMSGHDR_SIZE, true);
            if (err === 0) return out;
            throw new SysError(call, err, hints[err]);
          }
          if (type === NLMSG_DONE) return out;
          out.push({ type, body: new DataView(reply.slice(at + NLMSGHDR_SIZE, at + len).buffer) });
          if (!(flags & NLM_F_MULTI)) return out;
        }
        at += align4(len);
      }
    }
    throw new SysError(call, EAGAIN, "no complete answer from the kernel");
  } finally {
    closeFd(fd);
  }
}

function request(msg: MessageBuilder, call: string, hints: Readonly<Record<number, string>>): void {
  transact(msg, call, hints);
}

/** Calls `f(type, offset, length)` for each attribute of a message body, from `start`. */
function eachAttr(body: DataView, start: number, f: (type: number, at: number, len: number) => void): void {
  for (let a = start; a + 4 <= body.byteLength;) {
    const alen = body.getUint16(a, true);
    if (alen < 4 || a + alen > body.byteLength) break;
    f(body.getUint16(a + 2, true) & 0x3fff, a + 4, alen - 4);
    a += align4(alen);
  }
}

const NEEDS_NET_ADMIN = "needs CAP_NET_ADMIN (run as root)";

function familyCode(family: 4 | 6, addr: Uint8Array, prefixLen: number): number {
  const bytes = family === 4 ? 4 : 16;
  if (addr.length !== bytes) {
    throw new RangeError(`IPv${family} address must be ${bytes} bytes, got ${addr.length}`);
  }
  if (prefixLen < 0 || prefixLen > bytes * 8) {
    throw new RangeError(`IPv${family} prefix length must be 0 to ${bytes * 8}: ${prefixLen}`);
  }
  return family === 4 ? AF_INET : AF_INET6;
}

function addressMessage(
  type: number,
  flags: number,
  index: number,
  family: 4 | 6,
  addr: Uint8Array,
  prefix: number,
) {
  const m = new MessageBuilder(type, NLM_F_REQUEST | NLM_F_ACK | flags, seq++, IFADDRMSG_SIZE);
  const at = NLMSGHDR_SIZE;
  m.buf[at] = familyCode(family, addr, prefix);
  m.buf[at + 1] = prefix;
  m.buf[at + 3] = RT_SCOPE_UNIVERSE;
  m.view.setUint32(at + 4, index, true);
  return m.attr(IFA_LOCAL, addr).attr(IFA_ADDRESS, addr);
}

/**
 * Adds an address to the interface with index `index`, like `ip addr add ADDR/PREFIX dev IF`.
 * @throws SysError EEXIST when it is already there
 */
export function addAddress(index: number, family: 4 | 6, addr: Uint8Array, prefixLen: number): void {
  request(
    addressMessage(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, index, family, addr, prefixLen),
    `netlink(RTM_NEWADDR ifindex ${index})`,
    { [EPERM]: NEEDS_NET_ADMIN, [EEXIST]: "address already assigned", [ENODEV]: "no such interface" },
  );
}

/** An address of an interface, as `ip address show dev IF` lists it. */
export interface InterfaceAddr {
  family: 4 | 6;
  addr: Uint8Array;
  prefixLen: number;
}

/** The addresses of the interface `index` (RTM_GETADDR dump), IPv4 first, in the kernel's order. */
export function listAddresses(index: number): InterfaceAddr[] {
  const out: InterfaceAddr[] = [];
  for (const family of [4, 6] as const) {
    const m = new MessageBuilder(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq++, IFADDRMSG_SIZE);
    m.buf[NLMSGHDR_SIZE] = family === 4 ? AF_INET : AF_INET6;
    for (const r of transact(m, "netlink(RTM_GETADDR dump)", {})) {
      if (
        r.type !== RTM_NEWADDR || r.body.byteLength < IFADDRMSG_SIZE || r.body.getUint32(4, true) !== index
      ) {
        continue;
      }
      const a: InterfaceAddr = {
        family,
        addr: new Uint8Array(family === 4 ? 4 : 16),
        prefixLen: r.body.getUint8(1),
      };
      let local: Uint8Array | null = null;
      eachAttr(r.body, IFADDRMSG_SIZE, (type, at, len) => {
        const bytes = new Uint8Array(r.body.buffer, at, len);
        if (len !== a.addr.length) return;
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on point-to-point links.
        if (type === IFA_LOCAL) local = bytes;
        else if (type === IFA_ADDRESS) a.addr.set(bytes);
      });
      if (local) a.addr.set(local);
      out.push(a);
    }
  }
  return out;
}

/** Deletes the interface `index`, like `ip link delete dev IF` (a TUN's owner then sees it go). */
export function delLink(index: number): void {
  const m = new MessageBuilder(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, seq++, IFINFOMSG_SIZE);
  m.view.setInt32(NLMSGHDR_SIZE + 4, index, true);
  request(m, `netlink(RTM_DELLINK ifindex ${index})`, {
    [EPERM]: NEEDS_NET_ADMIN,
    [ENODEV]: "no such interface",
  });
}

/** Options for {@link addRoute} and {@link delRoute}. */
export interface RouteOptions {
  /** Routing table id (default main, 254); ids above 255 are carried in RTA_TABLE. */
  table?: number;
  /** Route metric (RTA_PRIORITY). */
  metric?: number;
}

function routeMessage(
  type: number,
  flags: number,
  index: number,
  family: 4 | 6,
  dst: Uint8Array,
  prefixLen: number,
  options: RouteOptions,
) {
  const table = options.table ?? RT_TABLE_MAIN;
  const m = new MessageBuilder(type, NLM_F_REQUEST | NLM_F_ACK | flags, seq++, RTMSG_SIZE);
  const at = NLMSGHDR_SIZE;
  m.buf[at] = familyCode(family, dst, prefixLen);
  m.buf[at + 1] = prefixLen;
  m.buf[at + 4] = table < 256 ? table : RT_TABLE_UNSPEC;
  m.buf[at + 5] = RTPROT_BOOT;
  // A device route without a gateway is link-scoped in IPv4; deletion matches any scope.
  m.buf[at + 6] = type === RTM_DELROUTE ? RT_SCOPE_NOWHERE : family === 4 ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE;
  m.buf[at + 7] = RTN_UNICAST;
  if (prefixLen > 0) m.attr(RTA_DST, dst.subarray(0, dst.length));
  m.attrU32(RTA_OIF, index).attrU32(RTA_TABLE, table);
  if (options.metric !== undefined) m.attrU32(RTA_PRIORITY, options.metric);
  return m;
}

/**
 * Adds a route to `dst/prefixLen` through the interface `index`, like `ip route add DST dev IF table T`.
 * @throws SysError EEXIST when the same route exists
 */
export function addRoute(
  index: number,
  family: 4 | 6,
  dst: Uint8Array,
  prefixLen: number,
  options: RouteOptions = {},
): void {
  request(
    routeMessage(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, index, family, dst, prefixLen, options),
    `netlink(RTM_NEWROUTE ifindex ${index})`,
    {
      [EPERM]: NEEDS_NET_ADMIN,
      [EEXIST]: "route already exists",
      [ENODEV]: "no such interface",
      [EINVAL]: "invalid route",
    },
  );
}

/** Removes a route added by {@link addRoute}. */
export function delRoute(
  index: number,
  family: 4 | 6,
  dst: Uint8Array,
  prefixLen: number,
  options: RouteOptions = {},
): void {
  request(
    routeMessage(RTM_DELROUTE, 0, index, family, dst, prefixLen, options),
    `netlink(RTM_DELROUTE ifindex ${index})`,
    { [EPERM]: NEEDS_NET_ADMIN, [ESRCH]: "no such route", [ENODEV]: "no such interface" },
  );
}

/** A route as `ip route show` lists it: destination, output interface and table. */
export interface Route {
  family: 4 | 6;
  dst: Uint8Array;
  prefixLen: number;
  /** Output interface index; 0 when the route has none (e.g. unreachable, or multipath). */
  oif: number;
  table: number;
  /** The route's own MTU (`ip route … mtu N`), 0 when it has none or it is locked (`mtu lock N`). */
  mtu: number;
}

/**
 * The MTU a route carries in RTA_METRICS (RTAX_MTU), as `ip route` prints `mtu N`; 0 when it has none. A locked
 * one (`mtu lock N`, its bit in RTAX_LOCK) counts as none: wg-quick reads `mtu N` from `ip route` text, which
 * prints `mtu lock N` then.
 */
function routeMtu(body: DataView, at: number, len: number): number {
  let mtu = 0, lock = 0;
  eachAttr(new DataView(body.buffer, body.byteOffset + at, len), 0, (type, a, l) => {
    if (l < 4) return;
    const v = body.getUint32(at + a, true);
    if (type === RTAX_MTU) mtu = v;
    else if (type === RTAX_LOCK) lock = v;
  });
  return lock & (1 << RTAX_MTU) ? 0 : mtu;
}

/** Every route of a family in every table, like `ip route show table all` (rtnetlink RTM_GETROUTE dump). */
export function listRoutes(family: 4 | 6): Route[] {
  const m = new MessageBuilder(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq++, RTMSG_SIZE);
  m.buf[NLMSGHDR_SIZE] = family === 4 ? AF_INET : AF_INET6;
  const routes: Route[] = [];
  for (const r of transact(m, "netlink(RTM_GETROUTE dump)", {})) {
    if (r.type !== RTM_NEWROUTE || r.body.byteLength < RTMSG_SIZE) continue;
    const route: Route = {
      family,
      dst: new Uint8Array(family === 4 ? 4 : 16),
      prefixLen: r.body.getUint8(1),
      oif: 0,
      table: r.body.getUint8(4),
      mtu: 0,
    };
    eachAttr(r.body, RTMSG_SIZE, (type, at, len) => {
      if (type === RTA_DST && len === route.dst.length) {
        route.dst.set(new Uint8Array(r.body.buffer, at, len));
      } else if (type === RTA_OIF && len >= 4) route.oif = r.body.getUint32(at, true);
      else if (type === RTA_TABLE && len >= 4) route.table = r.body.getUint32(at, true);
      else if (type === RTA_METRICS) route.mtu = routeMtu(r.body, at, len);
    });
    routes.push(route);
  }
  return routes;
}

/**
 * The interface the kernel would send a packet to `dst` through, like `ip route get DST` (0 if none).
 * @throws SysError ENETUNREACH when there is no route
 */
export function routeGet(family: 4 | 6, dst: Uint8Array): number {
  return routeLookup(family, dst).oif;
}

/**
 * What `ip route get DST` answers: the output interface (0 if none) and the MTU of the route, or of the path
 * MTU the kernel learnt for `dst` (0 if neither; a locked route MTU counts as none, see routeMtu).
 * @throws SysError ENETUNREACH when there is no route
 */
export function routeLookup(family: 4 | 6, dst: Uint8Array): { oif: number; mtu: number } {
  const m = new MessageBuilder(RTM_GETROUTE, NLM_F_REQUEST, seq++, RTMSG_SIZE);
  m.buf[NLMSGHDR_SIZE] = familyCode(family, dst, family === 4 ? 32 : 128);
  m.buf[NLMSGHDR_SIZE + 1] = family === 4 ? 32 : 128;
  m.attr(RTA_DST, dst);
  let oif = 0, mtu = 0;
  for (const r of transact(m, "netlink(RTM_GETROUTE)", { [ENETUNREACH]: "network is unreachable" })) {
    if (r.type !== RTM_NEWROUTE) continue;
    eachAttr(r.body, RTMSG_SIZE, (type, at, len) => {
      if (type === RTA_OIF && len >= 4) oif = r.body.getUint32(at, true);
      else if (type === RTA_METRICS) mtu = routeMtu(r.body, at, len);
    });
  }
  return { oif, mtu };
}

/** The MTU of the interface `index` (RTM_GETLINK), like `ip link show` prints it. */
export function linkMtu(index: number): number {
  const m = new MessageBuilder(RTM_GETLINK, NLM_F_REQUEST, seq++, IFINFOMSG_SIZE);
  m.view.setInt32(NLMSGHDR_SIZE + 4, index, true);
  let mtu = 0;
  for (const r of transact(m, `netlink(RTM_GETLINK ifindex ${index})`, { [ENODEV]: "no such interface" })) {
    if (r.type !== RTM_NEWLINK) continue;
    eachAttr(r.body, IFINFOMSG_SIZE, (type, at, len) => {
      if (type === IFLA_MTU && len >= 4) mtu = r.body.getUint32(at, true);
    });
  }
  if (!mtu) throw new SysError(`netlink(RTM_GETLINK ifindex ${index})`, EAGAIN, "the kernel sent no MTU");
  return mtu;
}

/**
 * A policy routing rule (ip-rule(8)) sending lookups to `table`: optionally only for packets whose fwmark is
 * not `notFwmark` (`not fwmark M`), optionally ignoring routes with a prefix no longer than
 * `suppressPrefixLength` (`suppress_prefixlength N`, which lets the main table's default route be skipped).
 */
export interface Rule {
  family: 4 | 6;
  table: number;
  notFwmark?: number;
  suppressPrefixLength?: number;
  priority?: number;
}

function ruleMessage(type: number, flags: number, rule: Rule): MessageBuilder {
  const m = new MessageBuilder(type, NLM_F_REQUEST | NLM_F_ACK | flags, seq++, FIB_RULE_HDR_SIZE);
  const at = NLMSGHDR_SIZE;
  m.buf[at] = rule.family === 4 ? AF_INET : AF_INET6;
  m.buf[at + 4] = rule.table < 256 ? rule.table : RT_TABLE_UNSPEC;
  m.buf[at + 7] = FR_ACT_TO_TBL;
  m.attrU32(FRA_TABLE, rule.table);
  if (rule.notFwmark !== undefined) {
    m.view.setUint32(at + 8, FIB_RULE_INVERT, true);
    m.attrU32(FRA_FWMARK, rule.notFwmark);
  }
  if (rule.suppressPrefixLength !== undefined) m.attrU32(FRA_SUPPRESS_PREFIXLEN, rule.suppressPrefixLength);
  if (rule.priority !== undefined) m.attrU32(FRA_PRIORITY, rule.priority);
  return m;
}

/** Adds a policy routing rule, like `ip rule add`. @throws SysError EEXIST when the same rule exists */
export function addRule(rule: Rule): void {
  request(ruleMessage(RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, rule), "netlink(RTM_NEWRULE)", {
    [EPERM]: NEEDS_NET_ADMIN,
    [EEXIST]: "rule already exists",
    [EAFNOSUPPORT]: `IPv${rule.family} is not supported here`,
  });
}

/** Removes a rule added by {@link addRule}, like `ip rule del` with the same selectors. */
export function delRule(rule: Rule): void {
  request(ruleMessage(RTM_DELRULE, 0, rule), "netlink(RTM_DELRULE)", {
    [EPERM]: NEEDS_NET_ADMIN,
    [ENOENT]: "no such rule",
  });
}

/**
 * The rules of a family, like `ip -4 rule show` (RTM_GETRULE dump), in the kernel's order, as far as
 * {@link Rule} describes them: `other` is set when a rule has selectors it does not model (from, to, iif, oif,
 * a plain `fwmark`, …), so that such a rule is never taken for one of wg-quick's.
 */
export function listRules(family: 4 | 6): (Rule & { other: boolean })[] {
  const m = new MessageBuilder(RTM_GETRULE, NLM_F_REQUEST | NLM_F_DUMP, seq++, FIB_RULE_HDR_SIZE);
  m.buf[NLMSGHDR_SIZE] = family === 4 ? AF_INET : AF_INET6;
  const out: (Rule & { other: boolean })[] = [];
  for (const r of transact(m, "netlink(RTM_GETRULE dump)", {})) {
    if (r.type !== RTM_NEWRULE || r.body.byteLength < FIB_RULE_HDR_SIZE) continue;
    const invert = (r.body.getUint32(8, true) & FIB_RULE_INVERT) !== 0;
    const rule: Rule & { other: boolean } = {
      family,
      table: r.body.getUint8(4),
      other: r.body.getUint8(1) !== 0 || r.body.getUint8(2) !== 0 || r.body.getUint8(3) !== 0,
    };
    let mark: number | undefined;
    eachAttr(r.body, FIB_RULE_HDR_SIZE, (type, at, len) => {
      if (len < 4 && type !== FRA_IIFNAME && type !== FRA_OIFNAME) return;
      const v = len >= 4 ? r.body.getUint32(at, true) : 0;
      if (type === FRA_TABLE) rule.table = v;
      else if (type === FRA_PRIORITY) rule.priority = v;
      else if (type === FRA_FWMARK) mark = v;
      // The kernel always sends it; 0xffffffff (-1) means none.
      else if (type === FRA_SUPPRESS_PREFIXLEN && v !== 0xffffffff) rule.suppressPrefixLength = v;
      else if (type === FRA_IIFNAME || type === FRA_OIFNAME) rule.other = true;
    });
    if (mark !== undefined && mark !== 0) {
      if (invert) rule.notFwmark = mark;
      else rule.other = true;
    }
    out.push(rule);
  }
  return out;
}

/** A link event: the interface `index` appeared or changed ("new"), or went away ("del"). */
export interface LinkEvent {
  type: "new" | "del";
  index: number;
  /** The interface name, when the kernel included it. */
  name: string | null;
  /** Interface flags (IFF_UP, IFF_RUNNING…). */
  flags: number;
  /** The MTU, when the kernel included it (it does in RTM_NEWLINK, also after `ip link set IF mtu N`). */
  mtu: number | null;
  /**
   * For "del": the interface was moved to another network namespace (`ip link set IF netns NS`) rather than
   * deleted; the kernel marks this with IFLA_NEW_NETNSID. A TUN fd keeps working after such a move.
   */
  moved: boolean;
}

/**
 * An rtnetlink socket subscribed to link events, non-blocking, to put in the poll set (`fd`, POLLIN).
 * If the socket's queue overflows, `overflowed` becomes true: events were lost, so recheck the interface
 * (e.g. with `if_indextoname`).
 */
export class LinkMonitor {
  #fd: number;
  readonly #buf = new Uint8Array(32768);
  readonly #from = new Uint8Array(SOCKADDR_NL_SIZE);
  readonly #fromLen = new Uint32Array(1);
  /** Set when events were lost (ENOBUFS). */
  overflowed = false;

  constructor() {
    this.#fd = check(
      libc.symbols.socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE),
      "socket(AF_NETLINK)",
    );
    const addr = sockaddrNl(RTMGRP_LINK);
    if (libc.symbols.bind(this.#fd, addr, SOCKADDR_NL_SIZE) < 0) {
      const e = errno();
      closeFd(this.#fd);
      throw new SysError("bind(AF_NETLINK RTMGRP_LINK)", e);
    }
  }

  /** The descriptor, for the poll set; -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  /** Reads every queued event without blocking; an empty list when there are none. */
  read(): LinkEvent[] {
    const events: LinkEvent[] = [];
    for (let round = 0; round < 64; round++) {
      this.#fromLen[0] = SOCKADDR_NL_SIZE;
      const n = libc.symbols.recvfrom(this.#fd, this.#buf, this.#buf.length, 0, this.#from, this.#fromLen);
      if (n < 0) {
        const e = errno();
        if (e === EAGAIN || e === EINTR) break;
        if (e === ENOBUFS) {
          this.overflowed = true;
          continue;
        }
        throw new SysError("recvfrom(AF_NETLINK)", e);
      }
      if (n === 0) break;
      this.#parse(n, events);
    }
    return events;
  }

  #parse(n: number, out: LinkEvent[]): void {
    const b = this.#buf;
    const v = new DataView(b.buffer);
    for (let at = 0; at + NLMSGHDR_SIZE <= n;) {
      const len = v.getUint32(at, true);
      if (len < NLMSGHDR_SIZE || at + len > n) break;
      const type = v.getUint16(at + 4, true);
      if ((type === RTM_NEWLINK || type === RTM_DELLINK) && len >= NLMSGHDR_SIZE + IFINFOMSG_SIZE) {
        const fixed = at + NLMSGHDR_SIZE;
        const event: LinkEvent = {
          type: type === RTM_NEWLINK ? "new" : "del",
          index: v.getInt32(fixed + 4, true),
          name: null,
          flags: v.getUint32(fixed + 8, true),
          mtu: null,
          moved: false,
        };
        for (let a = fixed + IFINFOMSG_SIZE; a + 4 <= at + len;) {
          const alen = v.getUint16(a, true);
          if (alen < 4) break;
          const atype = v.getUint16(a + 2, true) & 0x3fff; // Without NLA_F_NESTED / NLA_F_NET_BYTEORDER.
          if (atype === IFLA_IFNAME) {
            let end = a + 4;
            while (end < a + alen && b[end] !== 0) end++;
            event.name = new TextDecoder().decode(b.subarray(a + 4, end));
          } else if (atype === IFLA_MTU && alen >= 8) {
            event.mtu = v.getUint32(a + 4, true);
          } else if (atype === IFLA_NEW_NETNSID) {
            event.moved = true;
          }
          a += align4(alen);
        }
        out.push(event);
      }
      at += align4(len);
    }
  }

  /** Closes the socket. Idempotent. */
  close(): void {
    closeFd(this.#fd);
    this.#fd = -1;
  }
}
