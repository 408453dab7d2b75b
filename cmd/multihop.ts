/**
 * Multihop: WireGuard inside WireGuard in one process (`typetun up wg0.conf --via entry.conf`), as Mullvad's
 * gotatun does with its in-process UDP channel. wg0 keeps its one TUN; its datagrams never reach a socket.
 * A {@link HopTransport} is wg0's datagram transport: it wraps each datagram in IP/UDP (lib/udp_tunnel.ts),
 * from the hop's own `Address` and wg0's listen port to the inner peer's endpoint, and hands that packet to the
 * hop's Device as plaintext, which encrypts it for the relay onto the transport below: the UDP sockets, or the
 * next hop out. On the way in, the hop's Device decrypts, and a UDP packet to the hop's address and port is
 * given to wg0's Device as a datagram from the packet's source; anything else the hop receives is dropped and
 * counted by reason ({@link HopTransport.dropped}).
 *
 * Hops are given outermost first: the first `--via` is the entry relay, the one the UDP socket talks to, and
 * each next one is carried inside it; wg0 is the innermost. Nothing is copied on the data path: the loop
 * reserves room in the UDP send batch for every layer's headers, the packet is read there, and each layer
 * encrypts in place in front of the one inside it. Received datagrams are decrypted layer by layer in the
 * receive batch. Only datagrams not built in place (handshakes, staged packets) are copied, as the UDP
 * transport copies them.
 * @module
 */
import { readdirSync, unlinkSync } from "node:fs";
import { isAbsolute, resolve } from "node:path";
import process from "node:process";
import type { Source } from "../lib/cookie.ts";
import { type Clock, type DatagramSink, Device, DROP_REASONS, Verdict } from "../lib/device.ts";
import { dropReasonName, type HopSnapshot } from "../lib/metrics.ts";
import type { Rng, TransportAead, X25519 } from "../lib/crypto.ts";
import { AllowedIps } from "../lib/allowedips.ts";
import { copyBytes } from "../lib/bytes.ts";
import {
  type EndpointSpec,
  formatCidrLikeWg,
  formatEndpointSpec,
  formatInterfaceAddress,
  type WgConfig,
} from "../lib/config.ts";
import { type Endpoint } from "../lib/ip.ts";
import { DATA_HEADER_LEN, NOISE_AUTHTAG_LEN } from "../lib/messages.ts";
import { configToUpdate } from "../lib/setconf.ts";
import {
  type DeviceUpdate,
  EINVAL,
  formatErrno,
  formatGet,
  parseSet,
  type UapiRequest,
} from "../lib/uapi.ts";
import {
  Decap,
  DECAP_COUNT,
  decapsulate,
  encapsulate,
  UDP4_OVERHEAD,
  UDP6_OVERHEAD,
  type UdpPayload,
} from "../lib/udp_tunnel.ts";
import { keyToBase64 } from "../lib/encoding.ts";
import { type DatagramTap, type DatagramTransport, TappedSink, type Waker } from "./dataplane.ts";
import type { LoopClock } from "./clock.ts";
import type { Logger } from "./log.ts";

/**
 * What a hop adds to its inner datagram, counted into the MTU of the tunnel inside it: the hop's IP and UDP
 * headers and a WireGuard data message's header and tag. 80 bytes when the inner peer's endpoint is IPv6,
 * 60 when IPv4 (wg-quick's 80 assumes IPv6).
 */
export function hopOverhead(family: 4 | 6): number {
  return (family === 4 ? UDP4_OVERHEAD : UDP6_OVERHEAD) + DATA_HEADER_LEN + NOISE_AUTHTAG_LEN;
}

/**
 * The MTU inside a chain of hops: `outer` is the entry hop's own MTU, `families` the endpoint family carried
 * by each layer inside it (the second hop's peer, …, then wg0's peer).
 */
export function multihopMtu(outer: number, families: (4 | 6)[]): number {
  return families.reduce((mtu, f) => mtu - hopOverhead(f), outer);
}

/**
 * Room a hop asks of the transport below beyond what is asked of it: its data header, the largest IP/UDP
 * header, padding to 16 and the tag, and the 20 bytes by which an IPv6 header outgrows an IPv4 one (a datagram
 * built for one family and sent to the other is moved by that much).
 */
const HOP_ROOM = DATA_HEADER_LEN + UDP6_OVERHEAD + 15 + NOISE_AUTHTAG_LEN + (UDP6_OVERHEAD - UDP4_OVERHEAD);

/** The device inside a hop, whose listen port is the UDP source port of what it sends. */
export interface HopUpper {
  readonly listenPort: number;
}

/**
 * A datagram transport for the device inside a hop, on top of the hop's Device and the transport below it.
 * Implements the loop's DatagramTransport (cmd/dataplane.ts) and is that device's sink.
 */
export class HopTransport implements DatagramTransport, DatagramSink {
  readonly hop: Device;
  readonly lower: DatagramTransport;
  /** The device inside (set once the chain is built). */
  upper: HopUpper;
  /** The hop's own address per family (its `Address`), the source of what it sends; null if it has none. */
  local4: Uint8Array | null;
  local6: Uint8Array | null;
  /** Packets the hop delivered that were not a UDP datagram for us, by lib/udp_tunnel.ts's Decap reason. */
  readonly dropped = new Float64Array(DECAP_COUNT);
  /** Datagrams to an endpoint of a family the hop has no address of. */
  unroutable = 0;
  /** What sees the datagrams received from below before the hop decrypts them (`capture --outer`). */
  tap: DatagramTap | null = null;
  #id = 0;
  /** Where the last reserve's room starts in the send batch, and the IP/UDP header length it was laid for. */
  #base = -1;
  #hdr: number;
  readonly #payload: UdpPayload = { offset: 0, length: 0, family: 4, srcOffset: 0, srcPort: 0 };
  #offsets = new Int32Array(64);
  #lengths = new Int32Array(64);
  #srcOffsets = new Int32Array(64);
  #ports = new Uint16Array(64);
  #families = new Uint8Array(64);
  readonly #a4 = new Uint8Array(4);
  readonly #a6 = new Uint8Array(16);
  readonly #src: { addr: Uint8Array; port: number } = { addr: this.#a4, port: 0 };

  constructor(hop: Device, lower: DatagramTransport, upper: HopUpper, addresses: Uint8Array[]) {
    this.hop = hop;
    this.lower = lower;
    this.upper = upper;
    this.local4 = addresses.find((a) => a.length === 4) ?? null;
    this.local6 = addresses.find((a) => a.length === 16) ?? null;
    this.#hdr = this.local4 ? UDP4_OVERHEAD : UDP6_OVERHEAD;
    hop.sink = lower.sink;
  }

  /**
   * Shows `tap` the datagrams below this hop: those received, before the hop decrypts them, and those the hop
   * sends; null takes it away (then nothing is looked at but one test per received batch).
   */
  setTap(tap: DatagramTap | null): void {
    this.tap = tap;
    this.hop.sink = tap === null ? this.lower.sink : new TappedSink(this.lower.sink, tap);
  }

  get readable(): boolean {
    return this.lower.readable;
  }

  get sink(): DatagramSink {
    return this;
  }

  get sendBuffer(): Uint8Array {
    return this.lower.sendBuffer;
  }

  get receiveBuffer(): Uint8Array {
    return this.lower.receiveBuffer;
  }

  /**
   * Room for a datagram of `room` bytes, laid out so that the hop's headers fit in front of it and the hop's
   * data message starts where the transport below gave out its place: built there, it passes every layer in
   * place. The header length is the one last used (a tunnel's peers are usually all of one family).
   */
  reserve(room: number): number {
    this.#base = this.lower.reserve(room + HOP_ROOM);
    return this.#base + DATA_HEADER_LEN + this.#hdr;
  }

  /** A datagram from the device inside: wrapped in IP/UDP and encrypted by the hop, in place when it can be. */
  send(buf: Uint8Array, off: number, len: number, to: Source, inPlace: boolean): void {
    const v4 = to.addr.length === 4;
    const local = v4 ? this.local4 : this.local6;
    if (local === null) {
      this.unroutable++;
      return;
    }
    const hdr = v4 ? UDP4_OVERHEAD : UDP6_OVERHEAD;
    const sb = this.lower.sendBuffer;
    let at: number;
    if (inPlace && buf === sb && this.#base >= 0 && off === this.#base + DATA_HEADER_LEN + this.#hdr) {
      at = this.#base + DATA_HEADER_LEN + hdr;
      // Laid out for the other family: moved by 20 bytes within the room reserved for it.
      if (hdr !== this.#hdr) {
        sb.copyWithin(at, off, off + len);
        this.#hdr = hdr;
      }
    } else {
      at = this.lower.reserve(len + HOP_ROOM) + DATA_HEADER_LEN + hdr;
      copyBytes(buf, off, sb, at, len);
    }
    this.#base = -1;
    this.#id = (this.#id + 1) & 0xffff;
    const start = encapsulate(sb, at, len, local, this.upper.listenPort, to.addr, to.port, this.#id);
    this.hop.handlePlaintext(sb, start, at + len - start);
  }

  /** Runs the hop's timers when due, then sends what the batches below hold. */
  flush(): void {
    const hop = this.hop;
    if (hop.nextDeadline() <= hop.clock.now()) hop.tick();
    this.lower.flush();
  }

  /**
   * Receives from below, lets the hop decrypt, and keeps the UDP datagrams for us: each is described in place
   * in the receive batch (its payload after the IP/UDP headers). Batches that hold none (handshakes only) are
   * passed over, so 0 still means the round's share is spent.
   */
  receive(): number {
    const lower = this.lower, hop = this.hop, out = hop.out, p = this.#payload;
    for (;;) {
      const n = lower.receive();
      if (n === 0) return 0;
      if (n > this.#offsets.length) this.#grow(n);
      const buf = lower.receiveBuffer;
      const port = this.upper.listenPort, tap = this.tap;
      if (tap !== null) {
        for (let i = 0; i < n; i++) tap.received(buf, lower.offset(i), lower.length(i), lower.source(i));
      }
      let k = 0;
      for (let i = 0; i < n; i++) {
        if (hop.handleDatagram(buf, lower.offset(i), lower.length(i), lower.source(i)) !== Verdict.Deliver) {
          continue;
        }
        const d = decapsulate(buf, out.offset, out.length, this.local4, this.local6, port, p);
        if (d !== Decap.Ok) {
          this.dropped[d]!++;
          continue;
        }
        this.#offsets[k] = p.offset;
        this.#lengths[k] = p.length;
        this.#srcOffsets[k] = p.srcOffset;
        this.#ports[k] = p.srcPort;
        this.#families[k] = p.family;
        k++;
      }
      if (k > 0) return k;
    }
  }

  offset(i: number): number {
    return this.#offsets[i]!;
  }

  length(i: number): number {
    return this.#lengths[i]!;
  }

  /** The inner datagram's source, from its IP and UDP headers (which the inner decryption leaves alone). */
  source(i: number): Source {
    const src = this.#src, buf = this.lower.receiveBuffer, at = this.#srcOffsets[i]!;
    const a = this.#families[i] === 4 ? this.#a4 : this.#a6;
    for (let j = 0; j < a.length; j++) a[j] = buf[at + j]!;
    src.addr = a;
    src.port = this.#ports[i]!;
    return src;
  }

  /** Drops counted so far, over all reasons. */
  get droppedTotal(): number {
    let n = this.unroutable;
    for (let i = 0; i < this.dropped.length; i++) n += this.dropped[i]!;
    return n;
  }

  #grow(n: number): void {
    this.#offsets = new Int32Array(n);
    this.#lengths = new Int32Array(n);
    this.#srcOffsets = new Int32Array(n);
    this.#ports = new Uint16Array(n);
    this.#families = new Uint8Array(n);
  }
}

/**
 * The loop's waker, with the hops' timers added: the loop sizes its idle wait by wg0's next deadline, and this
 * shortens it to a hop's, so hop handshakes and keepalives are on time (the hops' timers run in
 * {@link HopTransport.flush}, every round).
 */
export class HopWaker implements Waker {
  constructor(readonly inner: Waker, readonly hops: readonly Device[], readonly clock: LoopClock) {}

  wake(): void {
    this.inner.wake();
  }

  wait(ms: number): boolean {
    return this.inner.wait(this.#clamp(ms));
  }

  waitAsync(ms: number): Promise<boolean> {
    return this.inner.waitAsync(this.#clamp(ms));
  }

  #clamp(ms: number): number {
    let next = Infinity;
    for (const d of this.hops) next = Math.min(next, d.nextDeadline());
    return next === Infinity ? ms : Math.min(ms, this.clock.msUntil(next));
  }
}

/** A hop as its file gives it: the configuration (key files read) and its peers' endpoints, resolved. */
export interface HopSpec {
  path: string;
  cfg: WgConfig;
  endpoints: Map<EndpointSpec, Endpoint>;
}

/**
 * Checks a chain of hops (outermost first) and, when given, the tunnel inside them: every hop has a private
 * key, an `Address` and a peer; and every endpoint of a layer inside is within the AllowedIPs of a peer of the
 * hop around it, which has an address of that family. Throws an Error naming the files and values at fault.
 */
export function checkHops(hops: HopSpec[], inner?: HopSpec): void {
  for (const h of hops) {
    if (!h.cfg.privateKey) throw new Error(`${h.path}: a hop needs a PrivateKey (or PrivateKeyFile)`);
    if (h.cfg.addresses.length === 0) {
      throw new Error(`${h.path}: a hop needs an Address (its own address inside the outer tunnel)`);
    }
    if (h.cfg.peers.length === 0) throw new Error(`${h.path}: a hop needs a [Peer] (the relay)`);
    if (h === hops[0] && !h.cfg.peers.some((p) => p.endpoint)) {
      throw new Error(`${h.path}: the entry hop's peer needs an Endpoint (the entry relay)`);
    }
  }
  const layers = inner ? [...hops, inner] : hops;
  for (let i = 1; i < layers.length; i++) {
    const outer = layers[i - 1]!, layer = layers[i]!;
    const routes = new AllowedIps<string>();
    for (const p of outer.cfg.peers) {
      for (const c of p.allowedIps) if (c.op !== "-") routes.insert(c, keyToBase64(p.publicKey));
    }
    for (const p of layer.cfg.peers) {
      if (!p.endpoint) continue;
      const ep = layer.endpoints.get(p.endpoint)!;
      const shown = formatEndpointSpec(p.endpoint);
      if (!routes.lookup(ep.family, ep.addr, 0)) {
        const allowed = outer.cfg.peers.flatMap((q) => q.allowedIps.map(formatCidrLikeWg)).join(", ") ||
          "none";
        throw new Error(
          `${layer.path}: the endpoint ${shown} of peer ${
            keyToBase64(p.publicKey)
          } is not in the AllowedIPs of ` +
            `the hop around it (${outer.path}: ${allowed}), so its packets could not go through that hop`,
        );
      }
      if (!outer.cfg.addresses.some((a) => a.family === ep.family)) {
        throw new Error(
          `${layer.path}: the endpoint ${shown} is IPv${ep.family}, and the hop around it (${outer.path}) has ` +
            `no IPv${ep.family} Address to send from`,
        );
      }
    }
  }
}

/**
 * The hop files the bare daemon is given: `TYPETUN_VIA`, absolute paths separated by ":" (outermost first),
 * which `typetun -f --via FILE IF` and `typetun up --via FILE` set.
 */
export function viaFromEnv(value = process.env.TYPETUN_VIA): string[] {
  if (value === undefined || value === "") return [];
  return value.split(":").map((p) => {
    if (p === "") throw new Error(`TYPETUN_VIA: an empty file name in "${value}"`);
    return p;
  });
}

/** The value of TYPETUN_VIA for these files (made absolute: the daemon may run elsewhere). */
export function viaToEnv(paths: string[]): string {
  return paths.map((p) => {
    const abs = isAbsolute(p) ? p : resolve(p);
    if (abs.includes(":")) throw new Error(`--via ${p}: a hop file's path may not hold ":"`);
    return abs;
  }).join(":");
}

/** Reads hop files (wg-quick .conf or TOML, key files too), resolves their endpoints, and checks the chain. */
export async function readHops(paths: string[]): Promise<HopSpec[]> {
  if (paths.length === 0) return [];
  // Loaded only for hops: `show` and a daemon without them do not pay for the config and DNS code.
  const [{ readKeyFiles }, { readConfig }, { resolveEndpoint }] = await Promise.all([
    import("./keyfiles.ts"),
    import("./quick.ts"),
    import("./set.ts"),
  ]);
  const hops: HopSpec[] = [];
  for (const path of paths) {
    const cfg = readKeyFiles(readConfig(path), path);
    if (cfg.via && cfg.via.length > 0) throw new Error(`${path}: a hop file cannot itself have Via`);
    const endpoints = new Map<EndpointSpec, Endpoint>();
    for (const p of cfg.peers) if (p.endpoint) endpoints.set(p.endpoint, await resolveEndpoint(p.endpoint));
    hops.push({ path, cfg, endpoints });
  }
  checkHops(hops);
  return hops;
}

/** The family each layer inside the entry hop carries (the largest overhead if a layer has both). */
export function innerFamilies(hops: HopSpec[], inner?: HopSpec): (4 | 6)[] {
  const layers = inner ? [...hops.slice(1), inner] : hops.slice(1);
  return layers.map((l) => {
    const eps = l.cfg.peers.flatMap((p) => p.endpoint ? [l.endpoints.get(p.endpoint)!] : []);
    return eps.length > 0 && eps.every((e) => e.family === 4) ? 4 : 6;
  });
}

/**
 * The figures of hops (outermost first) for /metrics (lib/metrics.ts formatHopMetrics): each one's relay peer,
 * its device's drops, and its own: `unwrap_` + the reason a packet from the relay was not a datagram for the
 * tunnel inside (`unwrap_not_udp`, `unwrap_not_for_us`, …), and `no_hop_address` for a datagram of a family
 * the hop has no Address of.
 */
export function hopSnapshots(devices: readonly Device[], transports: readonly HopTransport[]): HopSnapshot[] {
  return devices.map((d, i) => {
    const t = transports[i]!;
    const drops = DROP_REASONS.map((v) => ({ reason: dropReasonName(v), count: d.verdicts[v]! }));
    for (let r = Decap.Ok + 1; r < DECAP_COUNT; r++) {
      drops.push({ reason: `unwrap_${snake(Decap[r]!)}`, count: t.dropped[r]! });
    }
    drops.push({ reason: "no_hop_address", count: t.unroutable });
    return { hop: i + 1, peers: d.info().peers, drops };
  });
}

/** `NotForUs` → `not_for_us`. */
function snake(name: string): string {
  return name.replace(/[A-Z]/g, (c, at) => (at ? "_" : "") + c.toLowerCase());
}

/**
 * The name under which hop N of interface IF answers UAPI requests inside the daemon's own process
 * (cmd/uapi_client.ts serveInProcess): `up -f`'s reload reaches the hop through it, also after `--user`, when
 * the hop sockets are root's.
 */
export function hopUapiName(ifname: string, n: number): string {
  return `${ifname}.hop${n}`;
}

/**
 * SIGHUP under `up -f` with hops: the hop files read again (`paths`, outermost first, the ones `up` started
 * with), checked as a chain around `inner` (wg0's new configuration), and turned into what `wg syncconf` would
 * send each hop: keys and peers change, unchanged peers keep their sessions. Nothing is applied here: the
 * caller sends `updates` (to {@link hopUapiName}) before wg0's own, so that wg0's new endpoints already fit the
 * hops. What a hop's UAPI cannot change (Address, MTU, ListenPort, FwMark: the transports and sockets were
 * built with them) is left as it runs and listed in `notes`. Throws, changing nothing, when a file is bad or
 * the chain does not hold.
 */
export async function prepareHopReload(
  ifname: string,
  paths: string[],
  first: HopSpec[],
  inner: HopSpec,
): Promise<{ updates: { name: string; update: DeviceUpdate }[]; notes: string[] }> {
  const hops = await readHops(paths);
  checkHops(hops, inner);
  const [{ uapiGet }, { syncUpdate }] = await Promise.all([
    import("./uapi_client.ts"),
    import("../lib/setconf.ts"),
  ]);
  const updates = [], notes = [];
  for (let i = 0; i < hops.length; i++) {
    const { cfg, endpoints, path } = hops[i]!, was = first[i]!.cfg, name = hopUapiName(ifname, i + 1);
    const update = configToUpdate(cfg, "set", (e) => endpoints.get(e)!);
    delete update.listenPort; // the hop's UAPI refuses them: they are the socket's, or the source port's
    delete update.fwmark;
    updates.push({ name, update: syncUpdate(update, await uapiGet(name)) });
    const fixed = (c: WgConfig) =>
      JSON.stringify([c.addresses.map(formatInterfaceAddress), c.mtu, c.listenPort, c.fwmark]);
    if (fixed(cfg) !== fixed(was)) {
      notes.push(
        `hop ${i + 1} (${path}): Address, MTU, ListenPort or FwMark changed: they apply at the next \`up'`,
      );
    }
  }
  return { updates, notes };
}

/** Where hop N (1 = entry) of interface IF serves its UAPI: not `*.sock`, so `wg show` does not list it. */
export function hopSocketPath(dir: string, ifname: string, n: number): string {
  return `${dir}/${ifname}.hop${n}.uapi`;
}

/** The hop sockets of an interface present in `dir`, by hop number. */
export function listHopSockets(dir: string, ifname: string): { n: number; path: string }[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const prefix = `${ifname}.hop`;
  return names.flatMap((f) => {
    const m = f.startsWith(prefix) ? /^(\d+)\.uapi$/.exec(f.slice(prefix.length)) : null;
    return m ? [{ n: Number(m[1]), path: `${dir}/${f}` }] : [];
  }).sort((a, b) => a.n - b.n);
}

export interface MultihopOptions {
  clock: Clock & LoopClock;
  rng: Rng;
  aead: TransportAead;
  x25519: X25519;
  /** The UDP transport, under the entry hop. */
  udp: DatagramTransport;
  /** The loop's waker (the poll set). */
  waker: Waker;
  /** wg0's Device: the innermost hop's upper. */
  inner: HopUpper;
  /** wg0's real socket port: the source port of what the middle hops send (unless their ListenPort says). */
  port: number;
  /** The MTU of a hop whose file gives none (wireguard-go's 1420). */
  defaultMtu: number;
}

/** The hops of one daemon: their Devices (outermost first), transports, and the waker for the loop. */
export class Multihop {
  readonly devices: Device[] = [];
  readonly transports: HopTransport[] = [];
  readonly waker: HopWaker;
  #closers: (() => void)[] = [];

  constructor(readonly hops: HopSpec[], o: MultihopOptions) {
    let lower = o.udp;
    for (let i = 0; i < hops.length; i++) {
      const { cfg, endpoints } = hops[i]!;
      const mtu = cfg.mtu ?? multihopMtu(o.defaultMtu, innerFamilies(hops.slice(0, i + 1)));
      const d = new Device({ clock: o.clock, rng: o.rng, mtu, aead: o.aead, x25519: o.x25519 });
      const update = configToUpdate(cfg, "set", (e) => endpoints.get(e)!);
      delete update.fwmark;
      update.listenPort = i === 0 ? o.port : cfg.listenPort || o.port;
      d.apply(update);
      this.devices.push(d);
      // The upper of this hop is the next hop in, or wg0 for the innermost.
      const upper: HopUpper = i + 1 < hops.length ? { listenPort: 0 } : o.inner;
      const t = new HopTransport(d, lower, upper, cfg.addresses.map((a) => a.addr));
      this.transports.push(t);
      lower = t;
    }
    // Each middle hop's listen port is the source port of what it sends through the hop around it.
    for (let i = 0; i + 1 < hops.length; i++) {
      const next = this.devices[i + 1]!;
      this.transports[i]!.upper = next;
    }
    this.waker = new HopWaker(o.waker, this.devices, o.clock);
  }

  /** The entry hop's Device: its datagrams are the ones on the wire, and its listen port the socket's. */
  get outerDevice(): Device {
    return this.devices[0]!;
  }

  /**
   * `capture --outer` on a multihop interface: what goes on the wire is the entry hop's datagrams (wg0's are
   * inside them), so the tap sees those, received before the entry hop decrypts them and sent as it encrypts
   * them; null takes it away.
   */
  setOuterTap(tap: DatagramTap | null): void {
    this.transports[0]!.setTap(tap);
  }

  /** wg0's transport: the innermost hop. */
  get transport(): HopTransport {
    return this.transports[this.transports.length - 1]!;
  }

  /**
   * Serves each hop's UAPI (get, and set of keys and peers) on {@link hopSocketPath}, for `typetun show`.
   * `listen` is the UAPI server's (cmd/uapi_server.ts), passed in to keep this file free of sockets.
   */
  async serve(
    dir: string,
    ifname: string,
    log: Logger,
    listen: (path: string, handle: (req: UapiRequest) => string, n: number) => Promise<() => void>,
    changed: () => void,
  ): Promise<void> {
    for (let i = 0; i < this.devices.length; i++) {
      const d = this.devices[i]!, t = this.transports[i]!, path = hopSocketPath(dir, ifname, i + 1);
      try {
        unlinkSync(path); // a leftover of a daemon that died
      } catch {
        // None.
      }
      const close = await listen(path, (req: UapiRequest) => {
        if (req.op === "error") return formatErrno(req.errno);
        if (req.op === "get") return formatGet(d.info()) + formatErrno(0);
        if (req.op !== "set") return formatErrno(EINVAL); // typetun's own requests are wg0's
        const parsed = parseSet(req.body);
        if (!parsed.ok) return formatErrno(parsed.errno);
        if (parsed.value.listenPort !== undefined || parsed.value.fwmark !== undefined) {
          log.error(`hop ${i + 1}: listen-port and fwmark are wg0's (the UDP socket's), not a hop's`);
          return formatErrno(EINVAL);
        }
        d.apply(parsed.value);
        t.flush();
        changed();
        return formatErrno(0);
      }, i + 1);
      this.#closers.push(() => {
        close();
        try {
          unlinkSync(path);
        } catch {
          // Already gone.
        }
      });
    }
  }

  /**
   * Why a UAPI set of wg0 (`wg set`, `wg setconf`) must be refused, or null: a peer endpoint that the innermost
   * hop cannot carry (outside its peers' AllowedIPs, or of a family it has no Address of). `up` checks its file
   * the same way before it starts; this keeps the bare daemon as strict.
   */
  refuse(body: string): string | null {
    const parsed = parseSet(body);
    if (!parsed.ok) return null; // the set itself reports it
    const n = this.devices.length,
      hop = this.devices[n - 1]!,
      t = this.transport,
      path = this.hops[n - 1]!.path;
    for (const p of parsed.value.peers) {
      const ep = p.endpoint;
      if (!ep) continue;
      const who = `the endpoint ${ep} of peer ${keyToBase64(p.publicKey)}`;
      if (!hop.allowedIps.lookup(ep.family, ep.addr, 0)) {
        return `${who} is not in the AllowedIPs of hop ${n} (${path}), so its packets could not go through it`;
      }
      if (!(ep.family === 4 ? t.local4 : t.local6)) {
        return `${who}: hop ${n} (${path}) has no IPv${ep.family} Address`;
      }
    }
    return null;
  }

  /** Closes the hop sockets. */
  close(): void {
    for (const c of this.#closers.splice(0)) c();
  }

  /** Each hop's figures for /metrics ({@link hopSnapshots}). */
  snapshots(): HopSnapshot[] {
    return hopSnapshots(this.devices, this.transports);
  }

  /** One line per hop for the log at exit: what it dropped. */
  summary(): string[] {
    return this.transports.map((t, i) =>
      `hop ${i + 1} (${this.hops[i]!.path}): ${t.droppedTotal} packets dropped (` +
      `${
        Array.from(t.dropped).map((n, r) => n ? `${Decap[r]} ${n}` : "").filter(Boolean).join(", ") || "none"
      }` +
      (t.unroutable ? `, ${t.unroutable} unroutable` : "") + ")"
    );
  }
}
