/**
 * The data loop: packet device ⇄ Device ⇄ datagram transport, written against four small interfaces so that
 * it reads in one direction and runs without root against in-memory doubles (cmd/channel.ts).
 *
 * - {@link PacketDevice}: reads and writes IP packets in slots the caller owns. The TUN adapter
 *   (cmd/tun_device.ts) hides the vnet header, TSO splitting and GRO merging, as wireguard-go's tun.Device.
 * - {@link DatagramTransport}: batched send and receive; the UDP adapter (cmd/udp_transport.ts) hides GSO/GRO.
 *   Its send batch is the Device's one sink: data, handshakes, cookie replies and keepalives leave through it.
 * - {@link LoopClock} (cmd/clock.ts) and {@link Waker}.
 *
 * Outbound, each packet is read straight into the send batch, DATA_HEADER_LEN bytes after the place the batch
 * gives out, and encrypted there; the Device hands the datagram to the sink in that place, so nothing is
 * copied. Inbound, each datagram is decrypted in place in the receive batch and handed to the packet device,
 * which may merge it with others before one write.
 *
 * The loop runs on the main thread. When idle it waits asynchronously (the JavaScript event loop keeps serving
 * the UAPI socket and signals meanwhile); when busy it serves the sources synchronously in bounded rounds and
 * yields to the event loop every ROUNDS_PER_YIELD rounds, so `wg show` and SIGTERM are served at full load.
 * @module
 */
import { performance } from "node:perf_hooks";
import { setImmediate } from "node:timers";
import type { Source } from "../lib/cookie.ts";
import { type DatagramSink, type Device, isDrop, Verdict } from "../lib/device.ts";
import { DATA_HEADER_LEN, DATA_OVERHEAD } from "../lib/messages.ts";
import type { LoopClock } from "./clock.ts";
import { Level, type Logger } from "./log.ts";

/** Rounds of serving before the event loop gets a turn, even if packets keep coming. */
export const ROUNDS_PER_YIELD = 8;
/**
 * After traffic, how long the loop waits synchronously for more before it goes back to the event loop. A reply
 * (a ping's, a TCP ACK) usually comes within that time and is then served without a turn of the event loop in
 * between (on Deno, a zero wait still goes through its off-thread poll, about 0.1 ms to wake from). The event
 * loop is held for at most that long.
 */
export const LINGER_MS = 1;
/** The longest idle wait: timers added meanwhile are found within a second even without a wake. */
const IDLE_WAIT_MS = 1000;
/**
 * Under load, the longest time between two yields that let pending I/O through. A setImmediate yield costs
 * microseconds, but Deno serves sockets (the UAPI's) only now and then across them: measured here, a client
 * waited a second to be answered. An asynchronous wait (a poll on another thread, about 50 µs) always lets
 * them through; one every 10 ms costs under 1 % of the loop's time.
 */
const IO_TURN_MS = 10;

/** A source and sink of IP packets: a TUN, or an in-memory channel. */
export interface PacketDevice {
  /** Whether a read may find a packet (the last wait saw the device readable). */
  readonly readable: boolean;
  /** The largest packet a read can return: a read slot leaves this much room. */
  readonly maxPacket: number;
  /** The device's MTU, as it last learnt it (it follows `ip link set IF mtu N`). */
  readonly mtu: number;
  /**
   * Reads the next IP packet into `buf[off, off+room)`.
   * @returns its length; 0 when none waits or this round's share of reads is spent (the next call starts a
   * new round), so one direction cannot starve the other
   * @throws an Error saying why, when the device is gone (the loop stops with its message)
   */
  read(buf: Uint8Array, off: number, room: number): number;
  /**
   * Takes an IP packet `buf[off, off+len)` for writing. The DATA_HEADER_LEN bytes before `off` are the
   * device's to use, and the bytes must stay untouched until {@link flush}.
   */
  write(buf: Uint8Array, off: number, len: number): void;
  /** Writes what {@link write} took; a packet refused is dropped, as a network would. */
  flush(): void;
  /** Takes in what changed about the device since the last round; returns why the loop must stop, or null. */
  update(): string | null;
}

/** Datagrams to and from the network: UDP sockets, or an in-memory channel. */
export interface DatagramTransport {
  /** Whether a receive may find datagrams (the last wait saw a socket readable). */
  readonly readable: boolean;
  /** The Device's sink: a send batch that {@link flush} sends. */
  readonly sink: DatagramSink;
  /** The send batch's buffer, where {@link reserve} gives out places. */
  readonly sendBuffer: Uint8Array;
  /**
   * Makes room for a datagram of up to `room` bytes in the send batch (sending what it holds if need be).
   * @returns where to build it in {@link sendBuffer}; a datagram built there and handed to the sink in place
   * (inPlace) is taken without a copy
   */
  reserve(room: number): number;
  /** Sends what the batch holds, in order. */
  flush(): void;
  /**
   * Receives a batch of datagrams: datagram i is `receiveBuffer[offset(i), offset(i) + length(i))` from
   * `source(i)`, valid until the next receive. Datagrams never overlap, so each may be decrypted in place.
   * @returns how many; 0 when none waits or this round's share is spent (the next call starts a new round)
   */
  receive(): number;
  readonly receiveBuffer: Uint8Array;
  offset(i: number): number;
  length(i: number): number;
  /** The source of datagram i: a view the next call overwrites. */
  source(i: number): Source;
}

/** What the loop waits on between rounds, and how the control plane wakes it. */
export interface Waker {
  /** Wakes the loop from a wait (now or the next one): after a UAPI change, to stop. */
  wake(): void;
  /** Waits synchronously up to `ms` (0: only looks) for a source to become readable or a wake. */
  wait(ms: number): boolean;
  /** The same, letting the event loop run meanwhile, its pending I/O included (also with `ms` 0). */
  waitAsync(ms: number): Promise<boolean>;
}

/**
 * Sees the encrypted datagrams, for `typetun capture --outer`: each one received, before it is decrypted in
 * place, and each one the Device sends. `buf[off, off+len)` and the address are valid only during the call.
 */
export interface DatagramTap {
  received(buf: Uint8Array, off: number, len: number, from: Source): void;
  sent(buf: Uint8Array, off: number, len: number, to: Source): void;
}

/** The Device's sink while a tap is set: shows each datagram to the tap, then hands it on unchanged. */
export class TappedSink implements DatagramSink {
  constructor(readonly next: DatagramSink, readonly tap: DatagramTap) {}
  send(buf: Uint8Array, off: number, len: number, to: Source, inPlace: boolean): void {
    this.tap.sent(buf, off, len, to);
    this.next.send(buf, off, len, to, inPlace);
  }
}

export interface DataPlaneOptions {
  device: Device;
  packets: PacketDevice;
  transport: DatagramTransport;
  clock: LoopClock;
  waker: Waker;
  log: Logger;
}

/**
 * The loop. Construct it, then `await run()` until {@link DataPlane.stop}. It connects the Device's sink to the
 * transport's send batch. Allocates nothing per packet.
 */
export class DataPlane {
  readonly device: Device;
  readonly packets: PacketDevice;
  readonly transport: DatagramTransport;
  readonly clock: LoopClock;
  readonly waker: Waker;
  readonly log: Logger;
  /** Room reserved per packet read: the largest packet and what a data message adds to it. */
  readonly #slot: number;
  #stopped: string | null = null;
  #tap: DatagramTap | null = null;

  constructor(opts: DataPlaneOptions) {
    this.device = opts.device;
    this.packets = opts.packets;
    this.transport = opts.transport;
    this.clock = opts.clock;
    this.waker = opts.waker;
    this.log = opts.log;
    this.#slot = opts.packets.maxPacket + DATA_OVERHEAD;
    this.device.sink = opts.transport.sink;
  }

  /** What sees the encrypted datagrams (a capture with --outer); null, the default, costs one test per batch. */
  get tap(): DatagramTap | null {
    return this.#tap;
  }

  set tap(tap: DatagramTap | null) {
    this.#tap = tap;
    this.device.sink = tap === null ? this.transport.sink : new TappedSink(this.transport.sink, tap);
  }

  /** Why the loop stopped or is stopping, null while it runs. */
  get stopped(): string | null {
    return this.#stopped;
  }

  /** Asks the loop to stop after its current round; the first reason is kept and logged. */
  stop(why: string): void {
    if (this.#stopped !== null) return;
    this.#stopped = why;
    this.log.info(`Shutting down: ${why}`);
    this.waker.wake();
  }

  /** Runs until stopped. */
  async run(): Promise<void> {
    let rounds = 0;
    let lingered = true;
    let ioTurn = performance.now();
    while (this.#stopped === null) {
      const busy = this.round();
      if (this.#stopped !== null) break;
      if (busy) {
        lingered = false;
        // Full load: give the event loop (UAPI socket, signals) a turn every few rounds.
        if (++rounds >= ROUNDS_PER_YIELD) {
          rounds = 0;
          const t = performance.now();
          if (t - ioTurn >= IO_TURN_MS) {
            ioTurn = t;
            await this.waker.waitAsync(0);
          } else {
            await new Promise<void>((r) => setImmediate(r));
          }
        }
        continue;
      }
      // Traffic just stopped: wait a moment synchronously first. What this catches continues the busy count,
      // so the event loop still gets its turn every ROUNDS_PER_YIELD busy rounds.
      if (!lingered) {
        lingered = true;
        if (this.waker.wait(LINGER_MS)) continue;
      }
      rounds = 0;
      const next = this.device.nextDeadline();
      this.clock.tick();
      const timeout = next === Infinity ? IDLE_WAIT_MS : Math.min(IDLE_WAIT_MS, this.clock.msUntil(next));
      await this.waker.waitAsync(timeout);
      ioTurn = performance.now();
    }
  }

  /** One round: looks at every source without waiting and serves what is ready; true if any packet moved. */
  round(): boolean {
    this.waker.wait(0);
    const now = this.clock.tick();
    const why = this.packets.update();
    if (why !== null) {
      this.stop(why);
      return false;
    }
    if (this.packets.mtu !== this.device.mtu) this.device.mtu = this.packets.mtu;
    let moved = false;
    if (this.packets.readable) moved = this.#outbound() || moved;
    if (this.transport.readable) moved = this.#inbound() || moved;
    if (this.device.nextDeadline() <= now) this.device.tick();
    this.transport.flush();
    return moved;
  }

  /** Packets read straight into the send batch, each encrypted in place there by the Device. */
  #outbound(): boolean {
    const t = this.transport, p = this.packets, device = this.device;
    let moved = false;
    for (;;) {
      const at = t.reserve(this.#slot) + DATA_HEADER_LEN;
      let len: number;
      try {
        len = p.read(t.sendBuffer, at, p.maxPacket);
      } catch (e) {
        this.stop(e instanceof Error ? e.message : `reading the packet device failed: ${e}`);
        break;
      }
      if (len === 0) break;
      moved = true;
      device.handlePlaintext(t.sendBuffer, at, len);
    }
    t.flush();
    return moved;
  }

  /** Datagrams received in batches, each decrypted in place; packets go to the packet device. */
  #inbound(): boolean {
    const t = this.transport, p = this.packets, device = this.device, out = device.out;
    let moved = false;
    for (let n = t.receive(); n > 0; n = t.receive()) {
      moved = true;
      const buf = t.receiveBuffer, tap = this.#tap;
      if (tap !== null) {
        for (let i = 0; i < n; i++) tap.received(buf, t.offset(i), t.length(i), t.source(i));
      }
      for (let i = 0; i < n; i++) {
        const v = device.handleDatagram(buf, t.offset(i), t.length(i), t.source(i));
        if (v === Verdict.Deliver) p.write(buf, out.offset, out.length);
        else if (this.log.level >= Level.Debug && isDrop(v)) {
          this.log.debug(`Dropped a datagram from port ${t.source(i).port}: ${Verdict[v]}`);
        }
      }
      // The next receive overwrites the batch: what the packet device holds of it is written first.
      p.flush();
    }
    return moved;
  }
}
