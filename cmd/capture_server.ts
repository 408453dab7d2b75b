/**
 * The daemon's side of `typetun capture` (cmd/capture.ts): a Unix socket beside the UAPI's,
 * /var/run/wireguard/IFNAME.capture, private to root as the UAPI socket is (`wg` lists only `*.sock`, so it
 * does not take this one for an interface). A client sends one request line and reads a pcapng stream
 * (lib/pcapng.ts) of the tunnel's packets until it half-closes the connection; the stream then ends with an
 * Interface Statistics Block saying how many packets it lost.
 *
 * Request: `capture [outer] [peer=BASE64-PUBLIC-KEY]\n`. Reply: the stream, or one line `error: ...` and the end.
 *
 * Cost. With nobody capturing, nothing is installed: the Device's hook list is empty and the data plane has no
 * tap. While someone captures, the plaintext packets come from a {@link PacketHook} (which always lets them
 * through) and, with `outer`, the encrypted datagrams from the data plane's {@link DatagramTap}. Each is encoded
 * straight into the capture's bounded {@link CaptureQueue} and the hook returns; the socket is written from the
 * event loop, one chunk at a time, each only after the previous one was taken by the kernel. A reader that does
 * not keep up fills the queue, and further packets are counted as dropped: the tunnel never waits for it.
 * @module
 */
import { unlinkSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { performance } from "node:perf_hooks";
import process from "node:process";
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
import type { PacketHook } from "../lib/device.ts";
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
import type { DatagramTap, DataPlane } from "./dataplane.ts";
import type { Logger } from "./log.ts";

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
interface Request {
  outer: boolean;
  peer: Uint8Array | null;
}

/** Parses a request line; a string is the error to send back. */
export function parseCaptureRequest(line: string): Request | string {
  const words = line.trim().split(/\s+/);
  if (words[0] !== "capture") return `not a capture request: "${line.slice(0, 40)}"`;
  const req: Request = { outer: false, peer: null };
  for (const w of words.slice(1)) {
    if (w === "outer") req.outer = true;
    else if (w.startsWith("peer=")) {
      req.peer = keyFromBase64(w.slice(5));
      if (req.peer === null) return `not a public key: "${w.slice(5, 60)}"`;
    } else return `unknown capture option "${w.slice(0, 40)}"`;
  }
  return req;
}

/** One client's capture: its filter, its interfaces (one per peer met) and its queue. */
class Capture {
  readonly queue = new CaptureQueue(QUEUE_CHUNKS, CHUNK_BYTES);
  /** Packets written to the queue (the interface blocks aside). */
  packets = 0;
  readonly startMicros = nowMicros();
  readonly outer: boolean;
  /** --peer: only this key's packets and datagrams; null for all. */
  readonly #key: Uint8Array | null;
  /** The Peer last found to have #key (a peer removed and added again is another object). */
  #peer: Peer | null = null;
  /** Each peer's interface in the stream; interface 0 is the tunnel itself (datagrams of no known peer). */
  readonly #ifaces = new Map<Peer, number>();
  #writing = false;
  #scheduled = false;
  #ending = false;
  #closed = false;
  readonly #flushNow = () => this.#flush();
  readonly #written = (e?: Error | null) => this.#afterWrite(e);

  constructor(
    readonly sock: Socket,
    req: Request,
    readonly ifname: string,
    readonly ifindex: number,
    peers: Iterable<Peer>,
  ) {
    this.outer = req.outer;
    this.#key = req.peer;
    // The stream's head, then an interface per peer known now (libpcap opens a stream only once it has read
    // the first interface; later peers get theirs when they first appear).
    this.#append(sectionHeader(`typetun capture of ${ifname}`));
    this.#append(interfaceDescription(ifname, `typetun ${ifname}: datagrams of no known peer`));
    for (const p of peers) if (this.wants(p)) this.#iface(p);
    this.#wake();
  }

  /** Whether the filter lets a packet of `peer` (null: of no known peer) through. */
  wants(peer: Peer | null): boolean {
    const key = this.#key;
    if (key === null || peer === this.#peer) return true;
    if (peer === null) return false;
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
    this.queue.commit(len);
    this.packets++;
    this.#wake();
  }

  /** Schedules a write, unless one is under way or scheduled (the data plane only ever sets a flag). */
  #wake(): void {
    if (this.#scheduled || this.#writing || this.#closed) return;
    this.#scheduled = true;
    setImmediate(this.#flushNow);
  }

  #flush(): void {
    this.#scheduled = false;
    if (this.#writing || this.#closed) return;
    const chunk = this.queue.take();
    if (chunk !== null) {
      this.#writing = true;
      this.sock.write(chunk, this.#written);
    } else if (this.#ending) {
      this.#closed = true;
      const end = nowMicros();
      const dropped = this.queue.dropped;
      this.sock.end(interfaceStatistics(0, {
        startMicros: this.startMicros,
        endMicros: end,
        received: this.packets + dropped,
        dropped,
      }));
    }
  }

  #afterWrite(e?: Error | null): void {
    this.#writing = false;
    this.queue.release();
    if (e) this.close();
    else this.#flush();
  }

  /** No more packets: what the queue holds is written, then the statistics, then the connection ends. */
  finish(): void {
    this.#ending = true;
    this.#wake();
  }

  close(): void {
    this.#closed = true;
    this.sock.destroy();
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
  #outer = 0;
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
  ) {
    this.#server = server;
    this.path = path;
    this.#loop = loop;
    this.#ifname = ifname;
    this.#ifindex = ifindex;
    this.#log = log;
    server.on("connection", (sock: Socket) => this.#accept(sock));
  }

  /** Listens on `path` (a leftover socket there is replaced), private to root as the UAPI socket. */
  static listen(
    path: string,
    loop: DataPlane,
    ifname: string,
    ifindex: number,
    log: Logger,
  ): Promise<CaptureServer> {
    try {
      unlinkSync(path); // the daemon owns the interface's name (its UAPI socket) by now
    } catch {
      // None left over.
    }
    return new Promise((resolve, reject) => {
      const server = createServer({ allowHalfOpen: true });
      const old = process.umask(0o077);
      server.once("error", (e) => {
        process.umask(old);
        reject(e);
      });
      server.listen(path, () => {
        process.umask(old);
        resolve(new CaptureServer(server, path, loop, ifname, ifindex, log));
      });
    });
  }

  /** Captures running now. */
  get captures(): number {
    return this.#captures.length;
  }

  /** Stops listening, ends every capture (its statistics are not sent: the daemon is going) and removes the socket. */
  close(): void {
    this.#server.close();
    for (const c of this.#captures) c.close();
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
      if (this.#captures.length >= MAX_CAPTURES) {
        return refuse(`${MAX_CAPTURES} captures of ${this.#ifname} are running already; stop one first`);
      }
      const peers = [...this.#loop.device.peers.values()];
      if (req.peer !== null && !peers.some((p) => sameKey(p.publicKey, req.peer!))) {
        return refuse(`${this.#ifname} has no peer ${keyToBase64(req.peer)}`);
      }
      capture = new Capture(sock, req, this.#ifname, this.#ifindex, peers);
      this.#captures = [...this.#captures, capture];
      this.#install();
      this.#log.info(
        `Capture started${req.outer ? " (with outer datagrams)" : ""}` +
          (req.peer ? ` for peer ${keyToBase64(req.peer)}` : "") + `: ${this.#captures.length} running`,
      );
    });
    const stop = (how: "end" | "close") => {
      clearTimeout(timer);
      if (capture === null) {
        if (how === "end") sock.end();
        return;
      }
      const c = capture;
      capture = null;
      if (!this.#captures.includes(c)) return;
      this.#captures = this.#captures.filter((x) => x !== c);
      this.#install();
      const lost = c.queue.dropped;
      this.#log.info(`Capture ended: ${c.packets} packets, ${lost} dropped (a slow reader)`);
      if (how === "end") c.finish();
      else c.close();
    };
    // The client half-closes to stop: it still reads the rest and the statistics.
    sock.on("end", () => stop("end"));
    sock.on("close", () => {
      this.#conns.delete(sock);
      stop("close");
    });
    sock.on("error", () => sock.destroy());
  }

  /** Puts the hook and the tap in place while captures want them, and takes them away when none does. */
  #install(): void {
    const hooks = this.#loop.device.hooks;
    const at = hooks.indexOf(this);
    if (this.#captures.length > 0 && at < 0) hooks.push(this);
    else if (this.#captures.length === 0 && at >= 0) hooks.splice(at, 1);
    this.#outer = this.#captures.filter((c) => c.outer).length;
    const tap = this.#outer > 0 ? this : null;
    if (this.#loop.tap !== tap) this.#loop.tap = tap;
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
    const peer = this.#peerAt(remote), port = this.#loop.device.listenPort;
    for (let i = 0; i < captures.length; i++) {
      const c = captures[i]!;
      if (c.outer && c.wants(peer)) c.datagram(peer, buf, off, len, remote, port, direction, micros);
    }
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
      const device = this.#loop.device, now = performance.now();
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
