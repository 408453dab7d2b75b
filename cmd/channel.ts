/**
 * In-memory implementations of the data loop's interfaces: a packet device, a datagram transport on an
 * in-memory network, and a waker. They run the real loop (cmd/dataplane.ts) without root or descriptors: in
 * tests now, and later where one device's datagrams become another's packets (WireGuard in WireGuard).
 *
 * They keep the contracts the real adapters keep (round shares, reserve-then-build-in-place, batches sent in
 * order on flush) and count what a test wants to see: in-place and copied sends, and the batches.
 * @module
 */
import type { Source } from "../lib/cookie.ts";
import type { DatagramSink } from "../lib/device.ts";
import { Endpoint } from "../lib/ip.ts";
import type { DatagramTransport, PacketDevice, Waker } from "./dataplane.ts";

/** Reads (and receives) per round before a channel says its share is spent. */
const PER_ROUND = 64;

/**
 * A waker over in-memory sources: a wait reports whether a source holds something or a wake came. A
 * synchronous wait cannot block a JavaScript thread, so it only looks; an asynchronous one ends on a wake
 * (channels wake their waker when something arrives) or at its timeout.
 */
export class ChannelWaker implements Waker {
  readonly #sources: (() => boolean)[] = [];
  #woken = false;
  #resolve: (() => void) | null = null;
  /** Waits so far, and asynchronous ones among them (to see that the loop idles rather than spins). */
  waits = 0;
  asyncWaits = 0;

  /** Adds a source's readiness. */
  watch(ready: () => boolean): void {
    this.#sources.push(ready);
  }

  wake(): void {
    this.#woken = true;
    const r = this.#resolve;
    this.#resolve = null;
    r?.();
  }

  wait(_ms: number): boolean {
    this.waits++;
    const woken = this.#woken;
    this.#woken = false;
    return woken || this.#sources.some((s) => s());
  }

  waitAsync(ms: number): Promise<boolean> {
    this.asyncWaits++;
    // A timer, not a resolved promise or setImmediate: the event loop's I/O gets its turn, as a poll gives it.
    if (this.wait(0)) return new Promise((resolve) => setTimeout(() => resolve(true), 0));
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#resolve = null;
        resolve(false);
      }, ms);
      this.#resolve = () => {
        clearTimeout(timer);
        this.#woken = false;
        resolve(true);
      };
    });
  }
}

/** A packet device in memory: packets put in are read out, packets written are kept (or passed on). */
export class PacketChannel implements PacketDevice {
  readonly maxPacket: number;
  mtu: number;
  /** Packets waiting to be read. */
  readonly inbox: Uint8Array[] = [];
  /** Packets written, in order (unless `onWrite` takes them). */
  readonly written: Uint8Array[] = [];
  /** Flushes that wrote something. */
  flushes = 0;
  /** When set, written packets go here instead of `written` (e.g. into another channel). */
  onWrite: ((packet: Uint8Array) => void) | null = null;
  /** Set to make the loop stop at its next round, with this reason. */
  gone: string | null = null;
  readonly #waker: ChannelWaker;
  readonly #pending: Uint8Array[] = [];
  #reads = 0;

  constructor(waker: ChannelWaker, opts: { mtu?: number; maxPacket?: number } = {}) {
    this.#waker = waker;
    this.mtu = opts.mtu ?? 1420;
    this.maxPacket = opts.maxPacket ?? 65535;
    waker.watch(() => this.inbox.length > 0);
  }

  /** Puts packets in to be read (as the kernel would route them into a TUN), and wakes the loop. */
  put(...packets: Uint8Array[]): void {
    this.inbox.push(...packets);
    this.#waker.wake();
  }

  get readable(): boolean {
    return this.inbox.length > 0;
  }

  read(buf: Uint8Array, off: number, room: number): number {
    if (this.#reads === PER_ROUND) return this.#reads = 0;
    const p = this.inbox.shift();
    if (p === undefined) return this.#reads = 0;
    this.#reads++;
    if (p.length > room) return this.read(buf, off, room); // too large for any slot: dropped
    buf.set(p, off);
    return p.length;
  }

  write(buf: Uint8Array, off: number, len: number): void {
    this.#pending.push(buf.slice(off, off + len));
  }

  flush(): void {
    if (this.#pending.length === 0) return;
    this.flushes++;
    for (const p of this.#pending.splice(0)) {
      if (this.onWrite) this.onWrite(p);
      else this.written.push(p);
    }
  }

  update(): string | null {
    return this.gone;
  }
}

/** Endpoints attached to one in-memory network, by "address:port". */
export class MemoryNetwork {
  readonly #hosts = new Map<string, DatagramChannel>();
  /** When set, decides per datagram whether it arrives (false drops it), and may look at it. */
  filter: ((data: Uint8Array, from: Endpoint, to: Endpoint) => boolean) | null = null;

  /** A transport for `local` on this network; its datagrams reach whichever channel holds their destination. */
  attach(local: Endpoint, waker: ChannelWaker, opts: DatagramChannelOptions = {}): DatagramChannel {
    const c = new DatagramChannel(this, local, waker, opts);
    this.#hosts.set(key(local.addr, local.port), c);
    return c;
  }

  /** Carries one datagram (copied) to its destination, if anyone is attached there. */
  carry(data: Uint8Array, from: Endpoint, to: Source): void {
    const dst = this.#hosts.get(key(to.addr, to.port));
    if (!dst || (this.filter && !this.filter(data, from, dst.local))) return;
    dst.arrive(data, from);
  }
}

function key(addr: Uint8Array, port: number): string {
  return `${addr.join(".")}:${port}`;
}

export interface DatagramChannelOptions {
  /** Bytes of the send batch (1 MB by default): a small one makes batch boundaries fall mid-round. */
  sendBytes?: number;
  /** Datagrams per receive (64 by default). */
  perReceive?: number;
}

/** A datagram transport on a {@link MemoryNetwork}: a send batch carried over on flush, an inbox received. */
export class DatagramChannel implements DatagramTransport, DatagramSink {
  readonly local: Endpoint;
  readonly sendBuffer: Uint8Array;
  readonly receiveBuffer: Uint8Array;
  /** Datagrams taken where they were built, and datagrams copied in. */
  inPlace = 0;
  copied = 0;
  /** Every batch sent, in order: the datagrams of each flush (copies). */
  readonly batches: Uint8Array[][] = [];
  readonly #net: MemoryNetwork;
  readonly #waker: ChannelWaker;
  #cursor = 0;
  readonly #queued: { off: number; len: number; to: Endpoint }[] = [];
  readonly #inbox: { data: Uint8Array; from: Endpoint }[] = [];
  readonly #slots: { off: number; len: number; from: Endpoint }[] = [];
  readonly #src: { addr: Uint8Array; port: number } = { addr: new Uint8Array(4), port: 0 };
  readonly #perReceive: number;
  #gave = false;

  constructor(net: MemoryNetwork, local: Endpoint, waker: ChannelWaker, opts: DatagramChannelOptions = {}) {
    this.#net = net;
    this.local = local;
    this.#waker = waker;
    this.#perReceive = opts.perReceive ?? PER_ROUND;
    this.sendBuffer = new Uint8Array(opts.sendBytes ?? 1 << 20);
    this.receiveBuffer = new Uint8Array(1 << 20);
    waker.watch(() => this.#inbox.length > 0);
  }

  /** Datagrams waiting to be received. */
  get waiting(): number {
    return this.#inbox.length;
  }

  /** A datagram arriving from the network; wakes the loop. */
  arrive(data: Uint8Array, from: Endpoint): void {
    this.#inbox.push({ data: data.slice(), from });
    this.#waker.wake();
  }

  get readable(): boolean {
    return this.#inbox.length > 0;
  }

  get sink(): DatagramSink {
    return this;
  }

  reserve(room: number): number {
    if (this.#cursor + room > this.sendBuffer.length) this.flush();
    return this.#cursor;
  }

  send(buf: Uint8Array, off: number, len: number, to: Source, inPlace: boolean): void {
    if (inPlace && buf === this.sendBuffer && off === this.#cursor) {
      this.inPlace++;
    } else {
      if (this.#cursor + len > this.sendBuffer.length) this.flush();
      this.sendBuffer.set(buf.subarray(off, off + len), this.#cursor);
      this.copied++;
    }
    const addr = to.addr.slice();
    this.#queued.push({ off: this.#cursor, len, to: new Endpoint(addr.length === 4 ? 4 : 6, addr, to.port) });
    this.#cursor += len;
  }

  flush(): void {
    if (this.#queued.length === 0) return;
    const batch: Uint8Array[] = [];
    for (const q of this.#queued.splice(0)) {
      const data = this.sendBuffer.slice(q.off, q.off + q.len);
      batch.push(data);
      this.#net.carry(data, this.local, q.to);
    }
    this.batches.push(batch);
    this.#cursor = 0;
  }

  receive(): number {
    // One batch per round, as a socket's recvmmsg: the next call ends the round.
    if (this.#gave || this.#inbox.length === 0) {
      this.#gave = false;
      return 0;
    }
    this.#gave = true;
    this.#slots.length = 0;
    let at = 0;
    while (this.#inbox.length > 0 && this.#slots.length < this.#perReceive) {
      const d = this.#inbox[0]!;
      if (at + d.data.length > this.receiveBuffer.length) break;
      this.#inbox.shift();
      this.receiveBuffer.set(d.data, at);
      this.#slots.push({ off: at, len: d.data.length, from: d.from });
      at += (d.data.length + 15) & ~15;
    }
    return this.#slots.length;
  }

  offset(i: number): number {
    return this.#slots[i]!.off;
  }

  length(i: number): number {
    return this.#slots[i]!.len;
  }

  source(i: number): Source {
    const from = this.#slots[i]!.from;
    this.#src.addr = from.addr;
    this.#src.port = from.port;
    return this.#src;
  }
}
