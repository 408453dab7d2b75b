/**
 * The packet device over a TUN (ffi/tun.ts): IP packets in and out, with the kernel's offloads hidden, as
 * wireguard-go's tun.Device hides them (tun/tun_linux.go).
 *
 * With a vnet header (IFF_VNET_HDR and TUNSETOFFLOAD), a read may be a TCP super-packet of up to 64 KB (TSO),
 * or with USO (Linux 6.2) a UDP one: it is cut into the IP packets it stands for (lib/gso.ts), handed out one
 * per read. Writes go through a coalescer (lib/gro.ts) that merges consecutive TCP segments of a flow, and with
 * USO consecutive UDP datagrams of a flow, into one write. Either way the kernel's
 * network stack handles one large packet where it would handle dozens of small ones: that, not the
 * cryptography, was where most of the time went (issue #6's profile). Without a vnet header, packets are read
 * straight into the caller's slot and written as they are.
 * @module
 */
import { Coalescer } from "../lib/gro.ts";
import { Segmenter, VIRTIO_NET_HDR_GSO_UDP_L4, VNET_HDR_LEN } from "../lib/gso.ts";
import { errnoName, SysError } from "../ffi/libc.ts";
import type { LinkEvent } from "../ffi/netlink.ts";
import type { PacketMemory } from "../ffi/packet_memory.ts";
import { pinned } from "../ffi/runtime.ts";
import { MAX_PACKET } from "../ffi/tun.ts";
import type { PacketDevice } from "./dataplane.ts";
import type { Logger } from "./log.ts";

/** What the adapter needs of a TUN file descriptor: ffi/tun.ts's Tun, or a test's stand-in. */
export interface TunFile {
  readonly name: string;
  /** Every read returns, and every write must start with, a virtio_net_hdr. */
  readonly vnetHdr: boolean;
  /** The kernel took TUNSETOFFLOAD: reads may be super-packets, and writes may be coalesced. */
  readonly offload: boolean;
  /** The kernel also took USO (TUN_F_USO4/USO6): UDP super-packets both ways. Absent means no. */
  readonly uso?: boolean;
  /** Reads one packet (vnet header first, if any); 0 when none waits; throws when the device is gone. */
  readAt(buf: Uint8Array, off: number, len: number): number;
  /** Writes one packet (vnet header first, if any); its length, or the negated errno. */
  writeAt(buf: Uint8Array, off: number, len: number): number;
}

/** The interface's link events (ffi/netlink.ts's LinkMonitor), read when `ready` says so. */
export interface LinkSource {
  ready(): boolean;
  read(): LinkEvent[];
}

export interface TunDeviceOptions {
  file: TunFile;
  /** Whether the last wait saw the file readable. */
  ready: () => boolean;
  /** The interface's index, to pick its events out of `links`. */
  ifindex: number;
  links: LinkSource | null;
  /** The MTU set on the interface. */
  mtu: number;
  log: Logger;
  /**
   * Where the read buffer and the coalescer's arena are taken from. Pass the packet memory the UDP batches
   * use (UdpTransport's), so that the segmenter's copies into the send batch and the coalescer's copies out
   * of the receive batch are memmoves (ffi/packet_memory.ts). Without one, buffers of their own.
   */
  memory?: PacketMemory;
}

/** Kernel reads per round: a round ends after this many, even if packets keep coming. */
const READS_PER_ROUND = 64;
/**
 * The coalescer's arena: room for one flush of COALESCE_MAX_PACKETS full-size segments (about 390 KB) with
 * some to spare. A flush that needs more makes the coalescer allocate its own, outside packet memory.
 */
const ARENA_BYTES = 512 * 1024;
/** Packet memory a TunDevice takes (alignment included): for sizing a {@link PacketMemory}. */
export const TUN_MEMORY_BYTES = VNET_HDR_LEN + MAX_PACKET + ARENA_BYTES + 2 * 64;

export class TunDevice implements PacketDevice {
  readonly maxPacket = MAX_PACKET;
  mtu: number;
  /** Reads the segmenter refused (malformed, or an offload kind we do not take) and writes the kernel refused. */
  malformedReads = 0;
  refusedWrites = 0;
  readonly #file: TunFile;
  readonly #ready: () => boolean;
  readonly #ifindex: number;
  readonly #links: LinkSource | null;
  readonly #log: Logger;
  /**
   * A kernel read with its vnet header (with one only). It and the coalescer's arena come from
   * opts.memory when given (see there).
   */
  readonly #read: Uint8Array;
  readonly #segmenter = new Segmenter();
  readonly #coalescer: Coalescer;
  /** Packets of the last kernel read and the next one to hand out. */
  #count = 0;
  #next = 0;
  #reads = 0;

  constructor(opts: TunDeviceOptions) {
    this.#file = opts.file;
    this.#ready = opts.ready;
    this.#ifindex = opts.ifindex;
    this.#links = opts.links;
    this.#log = opts.log;
    this.mtu = opts.mtu;
    const take = (n: number) => opts.memory ? opts.memory.take(n) : pinned(n);
    this.#read = take(VNET_HDR_LEN + MAX_PACKET);
    this.#coalescer = new Coalescer(undefined, take(ARENA_BYTES));
    // Merged writes need the kernel's TSO on the TUN; without it every packet is written singly.
    this.#coalescer.coalesce = opts.file.vnetHdr && opts.file.offload;
    this.#coalescer.coalesceUdp = this.#coalescer.coalesce && opts.file.uso === true;
  }

  get name(): string {
    return this.#file.name;
  }

  /** Whether decrypted TCP segments are still merged (false after the kernel refused a merged write). */
  get coalescing(): boolean {
    return this.#coalescer.coalesce;
  }

  /** Whether decrypted UDP datagrams are still merged (USO; false after the kernel refused a merged one). */
  get coalescingUdp(): boolean {
    return this.#coalescer.coalesceUdp;
  }

  get readable(): boolean {
    return this.#next < this.#count || this.#ready();
  }

  read(buf: Uint8Array, off: number, room: number): number {
    const file = this.#file;
    if (!file.vnetHdr) {
      if (this.#reads === READS_PER_ROUND) return this.#reads = 0;
      const n = this.#readFile(buf, off, room);
      this.#reads = n === 0 ? 0 : this.#reads + 1;
      return n;
    }
    const seg = this.#segmenter;
    for (;;) {
      while (this.#next < this.#count) {
        const i = this.#next++;
        if (seg.length(i) > room) continue; // never with a slot of maxPacket; dropped if it were
        const n = seg.segment(i, buf, off);
        if (n > 0) return n;
      }
      if (this.#reads === READS_PER_ROUND) return this.#reads = 0;
      const n = this.#readFile(this.#read, 0, this.#read.length);
      if (n === 0) return this.#reads = 0;
      this.#reads++;
      this.#count = seg.begin(this.#read, 0, n);
      this.#next = 0;
      if (this.#count === 0) this.malformedReads++;
    }
  }

  #readFile(buf: Uint8Array, off: number, len: number): number {
    try {
      return this.#file.readAt(buf, off, len);
    } catch (e) {
      // EBADFD: the interface is gone (also after it was moved to another namespace and deleted there).
      throw new Error(`reading the TUN failed: ${e instanceof SysError ? e.hint : e}`);
    }
  }

  write(buf: Uint8Array, off: number, len: number): void {
    if (!this.#file.vnetHdr) {
      if (this.#file.writeAt(buf, off, len) < 0) this.refusedWrites++;
      return;
    }
    if (this.#coalescer.full) this.flush();
    this.#coalescer.add(buf, off, len);
  }

  flush(): void {
    const gro = this.#coalescer;
    if (gro.count === 0) return;
    const n = gro.flush();
    for (let i = 0; i < n; i++) {
      const r = this.#file.writeAt(gro.outBuf(i), gro.outOff(i), gro.outLen(i));
      if (r >= 0) continue;
      this.refusedWrites++;
      if (gro.outSegments(i) > 1 && gro.outBuf(i)[gro.outOff(i) + 1] === VIRTIO_NET_HDR_GSO_UDP_L4) {
        // Only the UDP merges are refused (a kernel that announced USO but cannot take it): keep TCP's.
        if (gro.coalesceUdp) {
          gro.coalesceUdp = false;
          this.#log.error(
            `The TUN refused a coalesced UDP packet (${errnoName(-r)}); writing datagrams singly`,
          );
        }
      } else if (gro.outSegments(i) > 1 && gro.coalesce) {
        // A kernel that refuses our GSO packets would otherwise drop every merged run: stop merging.
        gro.coalesce = false;
        this.#log.error(`The TUN refused a coalesced packet (${errnoName(-r)}); writing packets singly`);
      }
    }
  }

  /**
   * Follows the interface's link events: its deletion (not a move to another namespace) stops the loop; a new
   * MTU (`ip link set IF mtu N`) becomes the padding limit, as wireguard-go follows its TUN's MTU.
   */
  update(): string | null {
    if (!this.#links?.ready()) return null;
    for (const e of this.#links.read()) {
      if (e.index !== this.#ifindex) continue;
      if (e.type === "del" && !e.moved) return `interface ${this.name} was deleted`;
      if (e.type === "new" && e.mtu !== null && e.mtu !== this.mtu) {
        this.#log.debug(`MTU of ${this.name} is now ${e.mtu}`);
        this.mtu = e.mtu;
      }
    }
    return null;
  }
}
