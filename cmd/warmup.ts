/**
 * Warming the packet path at start. A JavaScript engine runs new code in its interpreter and compiles it
 * only once it has run often: V8 and JavaScriptCore optimize a function after some thousands of calls. Left
 * alone, the daemon's first thousands of packets (a user's first seconds, and all of any low-rate traffic: a
 * shell, DNS, a game) take that slow path: measured before this module, the first pings through a fresh tunnel
 * took 3× as long as the same pings after some bulk traffic (issue 13).
 *
 * So right after start, the daemon pushes traffic through a private pair of Devices joined back to back, with
 * the code the real packets will run: lib/'s Device (handshake, allowed-IPs, encapsulation, the replay
 * window), the chosen transport AEAD and X25519, the data loop (cmd/dataplane.ts) and the TUN adapter
 * (cmd/tun_device.ts, over an in-memory file in place of /dev/net/tun). Datagrams travel on cmd/channel.ts's
 * in-memory network. Nothing of it is reachable from outside the process: the pair has its own throwaway keys,
 * its own clock and no socket, and is dropped when done.
 *
 * It runs in short synchronous slices with a turn of the event loop between them, so the UAPI and the real
 * loop are served meanwhile (a slice holds them for at most {@link WarmupOptions.sliceMs}).
 * @module
 */
import process from "node:process";
import { performance } from "node:perf_hooks";
import { dhGenerate, dhPublic, type Rng, type TransportAead, type X25519 } from "../lib/crypto.ts";
import { Device } from "../lib/device.ts";
import { Endpoint, parseCidr } from "../lib/ip.ts";
import { VNET_HDR_LEN } from "../lib/gso.ts";
import { addPeerUpdate } from "../lib/uapi.ts";
import { UdpBind, type UdpOffloads } from "../ffi/udp.ts";
import { PacketMemory } from "../ffi/packet_memory.ts";
import { ChannelWaker, MemoryNetwork } from "./channel.ts";
import { RoundClock } from "./clock.ts";
import { type DatagramTransport, DataPlane, type Waker } from "./dataplane.ts";
import { Level, Logger } from "./log.ts";
import { Poller } from "./poller.ts";
import { TUN_MEMORY_BYTES, TunDevice, type TunFile } from "./tun_device.ts";
import { UDP_MEMORY_BYTES, UdpTransport } from "./udp_transport.ts";

export interface WarmupOptions {
  /** The backends the daemon uses: the code to warm is theirs. */
  aead: TransportAead;
  x25519: X25519;
  rng: Rng;
  /**
   * When given, the pair's datagrams go through real UDP sockets on loopback with these offloads (as the
   * daemon's), so that the UDP adapter and poll set are warmed too; else through cmd/channel.ts's in-memory
   * network (no descriptors at all).
   */
  udp?: UdpOffloads;
  /** As the daemon's TUN: with a vnet header (and TSO) or without, so the same branches run. */
  vnetHdr: boolean;
  offload: boolean;
  mtu: number;
  /** Packets to move in each direction (the default is enough for the engines to optimize the path). */
  packets?: number;
  /** The longest synchronous slice, in ms. */
  sliceMs?: number;
  /** The most time spent inside slices in all, in ms: on a slow machine warming stops there. */
  budgetMs?: number;
  /** Stops warming at the next slice when it returns true (e.g. the daemon is shutting down). */
  cancelled?: () => boolean;
  /**
   * Whether the daemon has work of its own waiting (a packet on its TUN or socket, a wake-up): checked between
   * the pair's rounds, it ends the slice at once, so a real packet that comes during the warm-up waits for one
   * round of the pair (tens of µs), not for the rest of a slice (up to {@link WarmupOptions.sliceMs}).
   */
  pending?: () => boolean;
}

export interface WarmupResult {
  /** Packets delivered, each way. */
  delivered: [number, number];
  /** Time spent in slices (ms), and slices run. */
  busyMs: number;
  slices: number;
}

/**
 * Enough for JavaScriptCore's and V8's optimizing tiers to take the per-packet functions: with it the bench's
 * cold ping (40 pings 50 ms apart right after the first handshake) fell from 0.74 to 0.37 ms, as low as after
 * a bulk transfer; it costs about 100 ms of CPU once, in slices.
 */
export const WARMUP_PACKETS = 6000;
const WARMUP_SLICE_MS = 2;
/** The daemon starts warming at its first configuration, or this long after its UAPI listens if none came. */
export const WARMUP_DELAY_MS = 1000;
const WARMUP_BUDGET_MS = 400;
/**
 * Slices after which a pair on loopback UDP that has delivered nothing moves to the in-memory network (a
 * handshake and the first packets take one or two).
 */
const UDP_GIVE_UP_SLICES = 5;
/** Packets put in per side per round of the pair: a ping's pace and a bulk burst both occur. */
const BURST = 16;

/** Private addresses of the pair: inside the two Devices only, never on any interface. */
const ADDR_A = [10, 255, 255, 1];
const ADDR_B = [10, 255, 255, 2];

/** An IPv4 packet of `len` bytes from `src` to `dst`: an ICMP echo (proto 1) or UDP (17); checksums unset. */
function ipv4(src: number[], dst: number[], len: number, proto: number, vnet: boolean): Uint8Array {
  const h = vnet ? VNET_HDR_LEN : 0; // virtio_net_hdr all zero: GSO_NONE, no checksum to complete
  const p = new Uint8Array(h + len);
  p[h] = 0x45;
  p[h + 2] = len >> 8;
  p[h + 3] = len & 0xff;
  p[h + 8] = 64;
  p[h + 9] = proto;
  p.set(src, h + 12);
  p.set(dst, h + 16);
  if (proto === 1) p[h + 20] = 8; // echo request
  else {
    p[h + 20] = 0x9c; // ports 40000 → 40001
    p[h + 21] = 0x40;
    p[h + 22] = 0x9c;
    p[h + 23] = 0x41;
    p[h + 24] = (len - 20) >> 8;
    p[h + 25] = (len - 20) & 0xff;
  }
  return p;
}

/** The TUN's file in memory: hands out `left` packets cycling over templates, and swallows writes. */
class MemoryTunFile implements TunFile {
  readonly name = "warmup";
  left = 0;
  /** Packets handed out, and written. */
  served = 0;
  written = 0;
  #i = 0;
  constructor(readonly vnetHdr: boolean, readonly offload: boolean, readonly templates: Uint8Array[]) {}

  readAt(buf: Uint8Array, off: number, len: number): number {
    if (this.left === 0) return 0;
    this.left--;
    this.served++;
    const p = this.templates[this.#i]!;
    this.#i = (this.#i + 1) % this.templates.length;
    if (p.length > len) return 0;
    buf.set(p, off);
    return p.length;
  }

  writeAt(_buf: Uint8Array, _off: number, len: number): number {
    this.written++;
    return len;
  }
}

interface Side {
  device: Device;
  file: MemoryTunFile;
  loop: DataPlane;
  publicKey: Uint8Array;
  endpoint: Endpoint;
  /** Releases the sockets and descriptors, if any. */
  close(): void;
}

/** Builds the pair: two Devices peered with each other, each with its loop, TUN adapter and channel. */
function makePair(opts: WarmupOptions): [Side, Side] {
  const net = new MemoryNetwork();
  const clock = new RoundClock();
  const log = new Logger(Level.Silent, "warmup");
  const make = (own: number[], other: number[], port: number): Side => {
    const device = new Device({ clock, rng: opts.rng, mtu: opts.mtu, aead: opts.aead, x25519: opts.x25519 });
    const privateKey = dhGenerate(opts.rng);
    device.setPrivateKey(privateKey);
    device.listenPort = port;
    let transport: DatagramTransport, waker: Waker, endpoint: Endpoint, close = () => {};
    let memory: PacketMemory | undefined;
    const file = new MemoryTunFile(opts.vnetHdr, opts.offload, [
      ipv4(own, other, 84, 1, opts.vnetHdr), // a ping
      ipv4(own, other, opts.mtu, 17, opts.vnetHdr), // a full-sized datagram
    ]);
    if (opts.udp) {
      // Bound on a random port of every address for the warm-up's length; the peer is on loopback. A
      // datagram from elsewhere meets a Device with throwaway keys, and is dropped.
      const bind = UdpBind.open(0, 0, opts.udp);
      const poller = new Poller();
      try {
        // Packet memory shared with the TunDevice, as the daemon's: the copies train on the memmove path.
        memory = new PacketMemory(TUN_MEMORY_BYTES + UDP_MEMORY_BYTES);
        transport = new UdpTransport(bind, poller, memory);
      } catch (e) {
        bind.close();
        poller.close();
        throw e;
      }
      waker = poller;
      endpoint = new Endpoint(4, new Uint8Array([127, 0, 0, 1]), bind.port);
      close = () => {
        bind.close();
        poller.close();
      };
    } else {
      const channels = new ChannelWaker();
      channels.watch(() => file.left > 0);
      endpoint = new Endpoint(4, new Uint8Array([127, 0, 0, 1]), port);
      transport = net.attach(endpoint, channels);
      waker = channels;
    }
    const packets = new TunDevice({
      file,
      ready: () => file.left > 0,
      ifindex: 0,
      links: null,
      mtu: opts.mtu,
      log,
      memory,
    });
    const loop = new DataPlane({ device, packets, transport, clock, waker, log });
    return { device, file, loop, publicKey: dhPublic(privateKey, opts.x25519), endpoint, close };
  };
  const a = make(ADDR_A, ADDR_B, 1);
  let b: Side;
  try {
    b = make(ADDR_B, ADDR_A, 2);
  } catch (e) {
    a.close();
    throw e;
  }
  const link = (x: Side, y: Side, addr: number[]) =>
    x.device.apply(addPeerUpdate(y.publicKey, y.endpoint, [parseCidr(`${addr.join(".")}/32`)!]));
  link(a, b, ADDR_B);
  link(b, a, ADDR_A);
  return [a, b];
}

/** `TYPETUN_WARMUP`: unset or 1 warms the path at start, 0 leaves it cold (to compare, or to save the CPU). */
export function warmupWanted(value = process.env.TYPETUN_WARMUP): boolean {
  if (value === undefined || value === "" || value === "1") return true;
  if (value === "0") return false;
  throw new Error(`TYPETUN_WARMUP must be 0 or 1, not "${value}"`);
}

/**
 * Moves {@link WarmupOptions.packets} packets each way through a private pair, in slices, and drops the pair.
 * @returns what moved and the time it took (for the log, and for tests)
 */
export async function warmUp(opts: WarmupOptions): Promise<WarmupResult> {
  const want = opts.packets ?? WARMUP_PACKETS;
  const sliceMs = opts.sliceMs ?? WARMUP_SLICE_MS;
  const budgetMs = opts.budgetMs ?? WARMUP_BUDGET_MS;
  let [a, b] = makePair(opts);
  let busyMs = 0, slices = 0;
  try {
    while (b.file.written < want || a.file.written < want) {
      if (opts.cancelled?.() || busyMs >= budgetMs) break;
      if (opts.udp && slices === UDP_GIVE_UP_SLICES && a.file.written === 0 && b.file.written === 0) {
        // Nothing came through loopback: in a fresh network namespace `lo` is down. The in-memory network
        // warms all but the UDP adapter.
        a.close();
        b.close();
        [a, b] = makePair({ ...opts, udp: undefined });
      }
      const start = performance.now();
      let now = start;
      do {
        // Both sides send at once, as a ping and its reply or a transfer and its ACKs do; B only once A's first
        // packets arrived (A's handshake done), as two initiations that cross would each void the other's.
        if (a.file.left === 0) a.file.left = Math.min(BURST, want - a.file.served);
        if (b.file.left === 0 && b.file.written > 0) b.file.left = Math.min(BURST, want - b.file.served);
        // The rounds of each loop until the pair is quiet (a handshake takes a few), bounded.
        for (let i = 0; i < 8; i++) {
          const moved = a.loop.round();
          if (!b.loop.round() && !moved) break;
        }
        now = performance.now();
      } while (
        now - start < sliceMs && (b.file.written < want || a.file.written < want) && !opts.pending?.()
      );
      busyMs += now - start;
      slices++;
      // A timer, not setImmediate: Bun and Deno run immediates before they look at sockets, so a chain of them
      // kept the UAPI socket unanswered until the whole warm-up was done (start → UAPI answer took 250 ms).
      await new Promise<void>((resolve) => setTimeout(resolve, 0));
    }
  } finally {
    a.close();
    b.close();
  }
  return { delivered: [b.file.written, a.file.written], busyMs, slices };
}
