/**
 * The daemon's side of `typetun capture` (cmd/capture.ts): a Unix socket beside the UAPI's,
 * /var/run/wireguard/IFNAME.capture, private to root as the UAPI socket is (`wg` lists only `*.sock`, so it
 * does not take this one for an interface). It is the capture's control connection; the packets go to a stream
 * socket the client listens on, which the daemon connects to (ffi/unix_stream.ts) and writes with non-blocking
 * send(2) from the JavaScript thread, so the stream does not wait for the event loop, which a busy data plane
 * turns only every few milliseconds (through node:net the capture moved about 10 MB/s).
 *
 * Request: `capture [outer] [peer=BASE64-PUBLIC-KEY] data=PATH token=HEX\n`. Reply: `ok` or `error: ...`. The
 * data stream is the token's line, then pcapng (lib/pcapng.ts). The client half-closes the control connection
 * to stop; the stream then ends with an Interface Statistics Block saying how many packets were dropped, and
 * both connections close. The token lets the client tell the daemon's connection from anyone else's (its data
 * socket is open to the daemon, which may run as another user after --user).
 *
 * Cost. With nobody capturing, nothing is installed: the Device's hook list is empty and the data plane has no
 * tap. While someone captures, the plaintext packets come from a {@link PacketHook} (which always lets them
 * through) and, with `outer`, the encrypted datagrams from the data plane's {@link DatagramTap}. Each is encoded
 * straight into the capture's bounded {@link CaptureQueue}; once a chunk's worth waits, the hook sends it
 * itself (send(2) with MSG_DONTWAIT never waits), and the rest goes on the next turn of the event loop. A
 * reader that does not keep up fills the socket and then the queue, and further packets are counted as
 * dropped: the tunnel never waits for it. (Sending only from the event loop lost packets at 50 Mbit/s: under
 * load its turns come tens of milliseconds apart.)
 * @module
 */
import { unlinkSync } from "node:fs";
import type { Server, Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { setImmediate } from "node:timers";
import { copyBytes } from "../lib/bytes.ts";
import {
  CaptureQueue,
  PACKET_HOST,
  PACKET_OUTGOING,
  SLL2_HEADER_LEN,
  udpHeadersLength,
  writeSll2Header,
  writeUdpHeaders,
} from "../lib/capture.ts";
import type { Source } from "../lib/cookie.ts";
import type { Device, PacketHook } from "../lib/device.ts";
import { keyFromBase64, keyToBase64 } from "../lib/encoding.ts";
import type { Peer } from "../lib/peer.ts";
import {
  beginEnhancedPacket,
  endEnhancedPacket,
  epbLength,
  INBOUND,
  interfaceDescription,
  interfaceStatistics,
  OUTBOUND,
  sectionHeader,
} from "../lib/pcapng.ts";
import { UnixStream } from "../ffi/unix_stream.ts";
import type { DatagramTap, DataPlane } from "./dataplane.ts";
import type { Logger } from "./log.ts";
import { listenPrivate } from "./uapi_server.ts";

/**
 * Where `--outer` taps when the tunnel's own datagrams do not reach the socket (multihop, cmd/multihop.ts: the
 * entry hop's are the ones on the wire): its Device (peers and listen port) and how to set the tap.
 */
export interface OuterTap {
  readonly outerDevice: Device;
  setOuterTap(tap: DatagramTap | null): void;
}

/** Captures served at once; one more is refused with a message saying so. */
export const MAX_CAPTURES = 4;
/**
 * Each capture's queue: 16 chunks of 128 KB (2 MB, about 1,400 full-size packets, 40 ms of the tunnel at
 * 3 Gbit/s). A chunk is one write to the socket.
 */
const QUEUE_CHUNKS = 16;
const CHUNK_BYTES = 128 * 1024;
/** A request line longer than this, or not sent within REQUEST_TIMEOUT_MS, closes the connection. */
const MAX_REQUEST = 256;
const REQUEST_TIMEOUT_MS = 5000;
/** Connections open at once, requests not yet sent included. */
const MAX_CONNECTIONS = 2 * MAX_CAPTURES;
/** The peers' endpoints are looked at again at most this often when a datagram matches none of them. */
const PEER_REFRESH_MS = 1000;
/** The data socket's send buffer asked for: what the kernel holds for a reader besides the queue. */
const SEND_BUFFER = 1 << 20;
/** When the data socket is full, how long until the next try if no packet comes meanwhile. */
const RETRY_MS = 5;

const NO_KEY = new Uint8Array(0);
const ANY4 = new Uint8Array(4);
const ANY6 = new Uint8Array(16);

/** The capture socket of an interface whose UAPI socket is in `dir`. */
export function capturePath(ifname: string, dir = "/var/run/wireguard"): string {
  return `${dir}/${ifname}.capture`;
}

/** Microseconds since the epoch, to the microsecond (pcapng's default if_tsresol). */
function nowMicros(): number {
  return Math.floor((performance.timeOrigin + performance.now()) * 1000);
}

/** What a client asked for. */
export interface CaptureRequest {
  outer: boolean;
  peer: Uint8Array | null;
  /** The client's data socket, and the line to write first on it. */
  data: string;
  token: string;
}

/** Parses a request line; a string is the error to send back. */
export function parseCaptureRequest(line: string): CaptureRequest | string {
  const words = line.trim().split(/\s+/);
  if (words[0] !== "capture") return `not a capture request: "${line.slice(0, 40)}"`;
  const req: CaptureRequest = { outer: false, peer: null, data: "", token: "" };
  for (const w of words.slice(1)) {
    if (w === "outer") req.outer = true;
    else if (w.startsWith("peer=")) {
      req.peer = keyFromBase64(w.slice(5));
      if (req.peer === null) return `not a public key: "${w.slice(5, 60)}"`;
    } else if (w.startsWith("data=/")) req.data = w.slice(5);
    else if (/^token=[0-9a-f]{16,64}$/.test(w)) req.token = w.slice(6);
    else return `unknown capture option "${w.slice(0, 40)}"`;
  }
  if (req.data === "" || req.token === "") return "a capture request needs data=PATH and token=HEX";
  return req;
}

/** One client's capture: its filter, its interfaces (one per peer met) and its queue. */
class Capture {
  readonly queue = new CaptureQueue(QUEUE_CHUNKS, CHUNK_BYTES);
  /** Packets written to the queue (the interface blocks aside). */
  packets = 0;
  /** send(2) calls that moved bytes, and the bytes. */
  writes = 0;
  bytes = 0;
  /** Times the data socket was full. */
  full = 0;
  readonly startMicros = nowMicros();
  readonly outer: boolean;
  /** --peer: only this key's packets and datagrams; null for all. */
  readonly #key: Uint8Array | null;
  /** The Peer last found to have #key (a peer removed and added again is another object). */
  #peer: Peer | null = null;
  /** Each peer's interface in the stream; interface 0 is the tunnel itself (datagrams of no known peer). */
  readonly #ifaces = new Map<Peer, number>();
  /** The chunk being sent, and how much of it is sent. */
  #chunk: Uint8Array | null = null;
  #sent = 0;
  #scheduled = false;
  /** The data socket was full: the next try waits for #retry. */
  #blocked = false;
  #retry: ReturnType<typeof setTimeout> | undefined;
  /** Stopping: no more packets; the statistics are queued once the rest is sent. */
  #ending = false;
  #statsQueued = false;
  #closed = false;
  readonly #flushNow = () => this.#flush();
  readonly #unblock = () => {
    this.#blocked = false;
    this.#flush();
  };

  /**
   * @param control the client's control connection
   * @param stream the client's data socket, where the pcapng goes
   * @param onClosed called once when the capture is over (the client went away, or its stream was ended)
   */
  constructor(
    readonly control: Socket,
    readonly stream: UnixStream,
    req: CaptureRequest,
    readonly ifname: string,
    readonly ifindex: number,
    peers: Iterable<Peer>,
    readonly onClosed: (c: Capture) => void,
  ) {
    this.outer = req.outer;
    this.#key = req.peer;
    // The token's line, the stream's head, then an interface per peer known now (libpcap opens a stream only
    // once it has read the first interface; later peers get theirs when they first appear).
    this.#append(new TextEncoder().encode(`${req.token}\n`));
    this.#append(sectionHeader(`typetun capture of ${ifname}`));
    this.#append(interfaceDescription(ifname, `typetun ${ifname}: datagrams of no known peer`));
    for (const p of peers) if (this.wants(p)) this.#iface(p);
    this.#wake();
  }

  /** Whether the filter lets a packet of `peer` (null: of no known peer) through. */
  wants(peer: Peer | null): boolean {
    const key = this.#key;
    if (key === null) return true;
    if (peer === null) return false;
    if (peer === this.#peer) return true;
    const pk = peer.publicKey;
    for (let i = 0; i < 32; i++) if (pk[i] !== key[i]) return false;
    this.#peer = peer;
    return true;
  }

  /** A plaintext IP packet `buf[off, off+len)` of `peer`, going `direction`. */
  packet(peer: Peer, buf: Uint8Array, off: number, len: number, direction: number, micros: number): void {
    const iface = this.#iface(peer);
    if (iface < 0) return;
    const cap = SLL2_HEADER_LEN + len, need = epbLength(cap);
    const q = this.queue, at = q.reserve(need);
    if (at < 0) return;
    const b = q.buffer, data = beginEnhancedPacket(b, at, iface, micros, cap);
    copyBytes(buf, off, b, data + SLL2_HEADER_LEN, len);
    writeSll2Header(
      b,
      data,
      this.ifindex,
      direction === INBOUND ? PACKET_HOST : PACKET_OUTGOING,
      peer.publicKey,
    );
    endEnhancedPacket(b, at, cap, direction);
    this.#commit(need);
  }

  /**
   * An encrypted datagram `buf[off, off+len)` between `remote` and our listen port, given IP and UDP headers.
   * Our address is the unspecified one (0.0.0.0 or ::): the socket is bound to all addresses and does not say
   * which one a datagram used.
   */
  datagram(
    peer: Peer | null,
    buf: Uint8Array,
    off: number,
    len: number,
    remote: Source,
    port: number,
    direction: number,
    micros: number,
  ): void {
    const iface = peer === null ? 0 : this.#iface(peer);
    if (iface < 0) return;
    const v4 = remote.addr.length === 4, hdr = udpHeadersLength(v4 ? 4 : 6);
    const cap = SLL2_HEADER_LEN + hdr + len, need = epbLength(cap);
    const q = this.queue, at = q.reserve(need);
    if (at < 0) return;
    const b = q.buffer, data = beginEnhancedPacket(b, at, iface, micros, cap);
    const ip = data + SLL2_HEADER_LEN;
    copyBytes(buf, off, b, ip + hdr, len);
    const local = v4 ? ANY4 : ANY6;
    if (direction === INBOUND) writeUdpHeaders(b, ip, remote.addr, remote.port, local, port, len);
    else writeUdpHeaders(b, ip, local, port, remote.addr, remote.port, len);
    const type = direction === INBOUND ? PACKET_HOST : PACKET_OUTGOING;
    writeSll2Header(b, data, 0, type, peer === null ? NO_KEY : peer.publicKey);
    endEnhancedPacket(b, at, cap, direction);
    this.#commit(need);
  }

  /** The interface of `peer`, declared in the stream the first time; -1 if the queue had no room for it. */
  #iface(peer: Peer): number {
    const known = this.#ifaces.get(peer);
    if (known !== undefined) return known;
    const key = keyToBase64(peer.publicKey);
    if (!this.#append(interfaceDescription(key, `peer ${key} of ${this.ifname}`))) return -1;
    const n = this.#ifaces.size + 1;
    this.#ifaces.set(peer, n);
    return n;
  }

  /** Appends a whole block; false (counted as a drop) if the queue is full. */
  #append(block: Uint8Array): boolean {
    const q = this.queue, at = q.reserve(block.length);
    if (at < 0) return false;
    q.buffer.set(block, at);
    q.commit(block.length);
    this.#wake();
    return true;
  }

  #commit(len: number): void {
    const q = this.queue;
    q.commit(len);
    this.packets++;
    // A chunk's worth waiting: sent now, from the data plane's own call (send(2) does not wait), since the
    // event loop's next turn may be far under load; the rest on that turn.
    if (q.pending >= CHUNK_BYTES && !this.#blocked) this.#flush();
    else this.#wake();
  }

  /** Schedules a flush on the next turn of the event loop (the data plane only ever tests two flags). */
  #wake(): void {
    if (this.#scheduled || this.#closed || this.#blocked) return;
    this.#scheduled = true;
    setImmediate(this.#flushNow);
  }

  /**
   * Sends what the queue holds, oldest first, until the socket is full (then tries again after RETRY_MS). Once
   * stopping and empty: the statistics, then the end.
   */
  #flush(): void {
    this.#scheduled = false;
    if (this.#closed || this.#blocked) return;
    const q = this.queue;
    try {
      for (;;) {
        if (this.#chunk === null) {
          this.#chunk = q.take();
          this.#sent = 0;
          if (this.#chunk === null) break;
        }
        const c = this.#chunk, n = this.stream.send(c, this.#sent, c.length - this.#sent);
        if (n === 0) {
          // Full: no more tries (each a system call) until RETRY_MS has passed.
          this.full++;
          this.#blocked = true;
          this.#retry = setTimeout(this.#unblock, RETRY_MS);
          return;
        }
        this.writes++;
        this.bytes += n;
        this.#sent += n;
        if (this.#sent === c.length) {
          this.#chunk = null;
          q.release();
        }
      }
    } catch {
      // The reader is gone (EPIPE, ECONNRESET): so is the capture.
      this.close();
      return;
    }
    if (!this.#ending || q.pending > 0) return;
    if (!this.#statsQueued) {
      const dropped = q.dropped;
      this.#statsQueued = this.#append(interfaceStatistics(0, {
        startMicros: this.startMicros,
        endMicros: nowMicros(),
        received: this.packets + dropped,
        dropped,
      }));
      return; // #append woke the next flush
    }
    this.close();
  }

  /** No more packets: what the queue holds is sent, then the statistics, then both connections end. */
  finish(): void {
    this.#ending = true;
    this.#wake();
  }

  /** Ends the capture now: closes the data socket and the control connection. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#retry);
    this.stream.close();
    this.control.end();
    this.onClosed(this);
  }
}

/**
 * Listens on the capture socket and serves captures of one data plane. Installs its hook and tap only while
 * at least one capture runs.
 */
export class CaptureServer implements PacketHook, DatagramTap {
  readonly #server: Server;
  readonly #loop: DataPlane;
  readonly #log: Logger;
  readonly path: string;
  readonly #ifname: string;
  readonly #ifindex: number;
  readonly #conns = new Set<Socket>();
  /** The captures running; the packet path reads it by index. */
  #captures: Capture[] = [];
  /** Those and the ones still sending what they held when asked to stop. */
  readonly #live = new Set<Capture>();
  #outer = 0;
  /** Multihop: the entry hop, where --outer taps instead of the data plane; null otherwise. */
  readonly #outerTap: OuterTap | null;
  #tapped = false;
  /** The peers, for finding the one a datagram's address belongs to. */
  #peers: Peer[] = [];
  #peersAt = -Infinity;

  private constructor(
    server: Server,
    path: string,
    loop: DataPlane,
    ifname: string,
    ifindex: number,
    log: Logger,
    outerTap: OuterTap | null,
  ) {
    this.#server = server;
    this.#outerTap = outerTap;
    this.path = path;
    this.#loop = loop;
    this.#ifname = ifname;
    this.#ifindex = ifindex;
    this.#log = log;
    server.on("connection", (sock: Socket) => this.#accept(sock));
  }

  /**
   * Listens on `path` (a leftover socket there is replaced), private to root as the UAPI socket. `outerTap`:
   * where --outer taps when not the data plane (multihop).
   */
  static listen(
    path: string,
    loop: DataPlane,
    ifname: string,
    ifindex: number,
    log: Logger,
    outerTap: OuterTap | null = null,
  ): Promise<CaptureServer> {
    try {
      unlinkSync(path); // the daemon owns the interface's name (its UAPI socket) by now
    } catch {
      // None left over.
    }
    return listenPrivate(path).then((server) =>
      new CaptureServer(server, path, loop, ifname, ifindex, log, outerTap)
    );
  }

  /** Captures running now. */
  get captures(): number {
    return this.#captures.length;
  }

  /** Stops listening, ends every capture (its statistics are not sent: the daemon is going) and removes the socket. */
  close(): void {
    this.#server.close();
    for (const c of [...this.#live]) c.close();
    this.#captures = [];
    this.#install();
    for (const s of this.#conns) s.destroy();
    try {
      unlinkSync(this.path);
    } catch {
      // Gone already, or not ours to remove any more (after --user).
    }
  }

  #accept(sock: Socket): void {
    if (this.#conns.size >= MAX_CONNECTIONS) {
      sock.end(`error: too many connections to the capture socket of ${this.#ifname}\n`);
      return;
    }
    this.#conns.add(sock);
    let line = "";
    let capture: Capture | null = null;
    const timer = setTimeout(() => sock.destroy(), REQUEST_TIMEOUT_MS);
    const refuse = (why: string) => {
      clearTimeout(timer);
      sock.end(`error: ${why}\n`);
    };
    sock.on("data", (d: Uint8Array) => {
      if (capture !== null) return; // nothing more is expected; the client's end stops the capture
      line += new TextDecoder().decode(d);
      const nl = line.indexOf("\n");
      if (nl < 0) {
        if (line.length > MAX_REQUEST) refuse("request too long");
        return;
      }
      clearTimeout(timer);
      const req = parseCaptureRequest(line.slice(0, nl));
      if (typeof req === "string") return refuse(req);
      if (this.#live.size >= MAX_CAPTURES) {
        return refuse(`${MAX_CAPTURES} captures of ${this.#ifname} are running already; stop one first`);
      }
      const peers = [...this.#loop.device.peers.values()];
      if (req.peer !== null && !peers.some((p) => sameKey(p.publicKey, req.peer!))) {
        return refuse(`${this.#ifname} has no peer ${keyToBase64(req.peer)}`);
      }
      let stream: UnixStream;
      try {
        stream = UnixStream.connect(req.data);
      } catch (e) {
        return refuse(`cannot connect to the capture's data socket: ${e instanceof Error ? e.message : e}`);
      }
      stream.setSendBuffer(SEND_BUFFER);
      capture = new Capture(sock, stream, req, this.#ifname, this.#ifindex, peers, (c) => this.#ended(c));
      this.#captures = [...this.#captures, capture];
      this.#live.add(capture);
      this.#install();
      sock.write("ok\n");
      this.#log.info(
        `Capture started${req.outer ? " (with outer datagrams)" : ""}` +
          (req.peer ? ` for peer ${keyToBase64(req.peer)}` : "") + `: ${this.#captures.length} running`,
      );
    });
    // The client half-closes to stop: the rest of the stream and the statistics follow. A client that goes
    // away ends its capture at once.
    sock.on("end", () => {
      clearTimeout(timer);
      if (capture !== null) this.#stop(capture);
      else sock.end();
    });
    sock.on("close", () => {
      clearTimeout(timer);
      this.#conns.delete(sock);
      capture?.close();
    });
    sock.on("error", () => sock.destroy());
  }

  /** A capture asked to stop: it takes no more packets and sends what it holds. */
  #stop(c: Capture): void {
    this.#remove(c);
    c.finish();
  }

  /** A capture is over. */
  #ended(c: Capture): void {
    this.#remove(c);
    this.#live.delete(c);
    this.#log.info(
      `Capture ended: ${c.packets} packets, ${c.queue.dropped} dropped (read too slowly); ` +
        `${c.bytes} bytes in ${c.writes} sends, the socket full ${c.full} times`,
    );
  }

  #remove(c: Capture): void {
    if (!this.#captures.includes(c)) return;
    this.#captures = this.#captures.filter((x) => x !== c);
    this.#install();
  }

  /** Puts the hook and the tap in place while captures want them, and takes them away when none does. */
  #install(): void {
    const hooks = this.#loop.device.hooks;
    const at = hooks.indexOf(this);
    if (this.#captures.length > 0 && at < 0) hooks.push(this);
    else if (this.#captures.length === 0 && at >= 0) hooks.splice(at, 1);
    this.#outer = this.#captures.filter((c) => c.outer).length;
    const tap = this.#outer > 0 ? this : null;
    if (this.#outerTap) {
      if (this.#tapped !== (tap !== null)) this.#outerTap.setOuterTap(tap);
      this.#tapped = tap !== null;
    } else if (this.#loop.tap !== tap) this.#loop.tap = tap;
  }

  // ------------------------------------------------------------------ the packet path (the data plane calls)

  outbound(peer: Peer, buf: Uint8Array, off: number, len: number): boolean {
    this.#plaintext(peer, buf, off, len, OUTBOUND);
    return true;
  }

  inbound(peer: Peer, buf: Uint8Array, off: number, len: number): boolean {
    this.#plaintext(peer, buf, off, len, INBOUND);
    return true;
  }

  #plaintext(peer: Peer, buf: Uint8Array, off: number, len: number, direction: number): void {
    const captures = this.#captures, micros = nowMicros();
    for (let i = 0; i < captures.length; i++) {
      const c = captures[i]!;
      if (c.wants(peer)) c.packet(peer, buf, off, len, direction, micros);
    }
  }

  received(buf: Uint8Array, off: number, len: number, from: Source): void {
    this.#datagram(buf, off, len, from, INBOUND);
  }

  sent(buf: Uint8Array, off: number, len: number, to: Source): void {
    this.#datagram(buf, off, len, to, OUTBOUND);
  }

  #datagram(buf: Uint8Array, off: number, len: number, remote: Source, direction: number): void {
    if (len === 0) return; // cut short by the transport: nothing to show
    const captures = this.#captures, micros = nowMicros();
    const peer = this.#peerAt(remote), port = this.#device.listenPort;
    for (let i = 0; i < captures.length; i++) {
      const c = captures[i]!;
      if (c.outer && c.wants(peer)) c.datagram(peer, buf, off, len, remote, port, direction, micros);
    }
  }

  /** The Device whose datagrams are on the wire: wg0's, or with hops the entry hop's. */
  get #device(): Device {
    return this.#outerTap?.outerDevice ?? this.#loop.device;
  }

  /** The peer whose endpoint is `remote`, or null (a datagram of no known peer: a probe, a roaming peer's first). */
  #peerAt(remote: Source): Peer | null {
    for (let pass = 0; pass < 2; pass++) {
      const peers = this.#peers;
      for (let i = 0; i < peers.length; i++) {
        const e = peers[i]!.endpoint;
        if (e !== null && e.matches(remote.addr, remote.port)) return peers[i]!;
      }
      // Peers added or removed since: look again, at most once a PEER_REFRESH_MS.
      const device = this.#device, now = performance.now();
      if (device.peers.size === peers.length && now - this.#peersAt < PEER_REFRESH_MS) return null;
      this.#peers = [...device.peers.values()];
      this.#peersAt = now;
    }
    return null;
  }
}

function sameKey(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
