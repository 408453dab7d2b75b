/**
 * The datagram transport over UDP sockets (ffi/udp.ts): one IPv4 and one IPv6 socket on the listen port, a
 * send batch (sendmmsg, consecutive datagrams to one endpoint as one UDP GSO message) and a receive batch
 * (recvmmsg, UDP GRO messages split back into datagrams). GSO and GRO stay inside: the loop sees datagrams.
 *
 * Sticky source addresses: a received datagram's Source carries the local address it was sent to (PKTINFO),
 * which the Device keeps with the peer's Endpoint; datagrams to that Endpoint leave from that address. When the
 * kernel refuses it (the address was removed), the batch sends without it and the Endpoint forgets it.
 *
 * The send batch is the Device's sink. A datagram the Device built in place, at the place {@link reserve}
 * gave out, is queued where it lies; any other (a handshake, a cookie reply, a staged packet) is copied in.
 * @module
 */
import type { Source } from "../lib/cookie.ts";
import { copyBytes } from "../lib/bytes.ts";
import type { DatagramSink } from "../lib/device.ts";
import { Endpoint } from "../lib/ip.ts";
import { DATA_OVERHEAD } from "../lib/messages.ts";
import { MAX_PACKET } from "../ffi/tun.ts";
import type { PacketMemory } from "../ffi/packet_memory.ts";
import { GroRecvBatch, GsoSendBatch, UdpBind, type UdpSocket } from "../ffi/udp.ts";
import type { DatagramTransport } from "./dataplane.ts";
import type { Poller } from "./poller.ts";

/** UDP messages sent per batch before it is flushed. */
const SEND_MESSAGES = 64;
/**
 * The send batch's bytes: 1 MB of datagrams, plus one largest slot, since the loop reserves that much for each
 * packet it reads (the daemon's resident memory grows by these batches under load).
 */
const SEND_BYTES = (1 << 20) + MAX_PACKET + DATA_OVERHEAD;
/**
 * UDP messages per receive. With GRO one message holds up to 64 KB of datagrams, so 16 are up to a thousand
 * datagrams (1 MB).
 */
const RECV_MESSAGES = 16;
/**
 * Room for the largest IP packet and what a data message adds to it; rounded up to a multiple of 16 so every
 * receive slot starts aligned (typed-array copies between aligned offsets are faster).
 */
const RECV_SLOT = (MAX_PACKET + DATA_OVERHEAD + 15) & ~15;

/** Packet memory the batches take (alignment included): for sizing a {@link PacketMemory}. */
export const UDP_MEMORY_BYTES = SEND_BYTES + RECV_MESSAGES * RECV_SLOT + 2 * 64;

export class UdpTransport implements DatagramTransport, DatagramSink {
  #bind: UdpBind;
  readonly #poller: Poller;
  readonly #slot4: number;
  readonly #slot6: number;
  readonly #send: GsoSendBatch;
  readonly #recv: GroRecvBatch;
  readonly #src: { addr: Uint8Array; port: number; local: Uint8Array; ifindex: number } = {
    addr: new Uint8Array(4),
    port: 0,
    local: new Uint8Array(0),
    ifindex: 0,
  };
  /** Which socket the next receive looks at in this round: 0 IPv4, 1 IPv6, 2 none left. */
  #turn = 0;

  /**
   * @param memory where the send and receive batches are taken from: the packet memory the TunDevice's
   * buffers come from too, so that copies between them are memmoves (ffi/packet_memory.ts)
   */
  constructor(bind: UdpBind, poller: Poller, memory?: PacketMemory) {
    this.#send = new GsoSendBatch(SEND_MESSAGES, SEND_BYTES, undefined, memory);
    this.#recv = new GroRecvBatch(RECV_MESSAGES, RECV_SLOT, memory);
    this.#bind = bind;
    this.#poller = poller;
    this.#slot4 = poller.watch(bind.v4?.fd ?? -1);
    this.#slot6 = poller.watch(bind.v6?.fd ?? -1);
    this.#send.onSourceGone = forgetSource;
  }

  /** The sockets (their port, offloads, fwmark). */
  get bind(): UdpBind {
    return this.#bind;
  }

  /** Switches to new sockets (listen port change); the old ones are closed. */
  rebind(next: UdpBind): void {
    if (next === this.#bind) return;
    this.flush();
    this.#bind.close();
    this.#bind = next;
    this.#poller.replace(this.#slot4, next.v4?.fd ?? -1);
    this.#poller.replace(this.#slot6, next.v6?.fd ?? -1);
    this.#turn = 0;
  }

  close(): void {
    this.#bind.close();
  }

  get readable(): boolean {
    return this.#poller.readable(this.#slot4) || this.#poller.readable(this.#slot6);
  }

  get sink(): DatagramSink {
    return this;
  }

  get sendBuffer(): Uint8Array {
    return this.#send.data;
  }

  reserve(room: number): number {
    if (!this.#send.room(room)) this.#send.send(this.#bind);
    return this.#send.cursor;
  }

  send(buf: Uint8Array, off: number, len: number, to: Source, inPlace: boolean): void {
    const batch = this.#send;
    if (!inPlace || buf !== batch.data || off !== batch.cursor) {
      if (!batch.room(len)) batch.send(this.#bind);
      copyBytes(buf, off, batch.data, batch.cursor, len);
    }
    batch.push(len, to.addr.length === 4 ? 4 : 6, to.addr, to.port, to.local, to.ifindex, to);
  }

  flush(): void {
    if (this.#send.messages > 0) this.#send.send(this.#bind);
  }

  receive(): number {
    while (this.#turn < 2) {
      const v6 = this.#turn++ === 1;
      const sock: UdpSocket | null = v6 ? this.#bind.v6 : this.#bind.v4;
      if (sock === null || !this.#poller.readable(v6 ? this.#slot6 : this.#slot4)) continue;
      const n = this.#recv.recv(sock);
      if (n > 0) return n;
    }
    this.#turn = 0;
    return 0;
  }

  get receiveBuffer(): Uint8Array {
    return this.#recv.data;
  }

  offset(i: number): number {
    return this.#recv.offset(i);
  }

  /** A datagram cut short (longer than its slot) counts as empty: the Device drops it as malformed. */
  length(i: number): number {
    return this.#recv.truncated(i) ? 0 : this.#recv.length(i);
  }

  source(i: number): Source {
    const src = this.#src;
    src.addr = this.#recv.address(i);
    src.port = this.#recv.port(i);
    src.local = this.#recv.local(i);
    src.ifindex = this.#recv.ifindex(i);
    return src;
  }
}

/** A peer's sticky source was refused by the kernel (the address is gone): routing chooses from now on. */
function forgetSource(owner: object): void {
  if (owner instanceof Endpoint) owner.clearLocal();
}
