/**
 * The daemon's side of the UAPI socket (/var/run/wireguard/IFNAME.sock): accepts configuration clients and
 * answers their requests, so that no client, buggy or stuck, can hurt the tunnel or the other clients.
 *
 * The data plane (DataPlane.run in daemon.ts) shares the main thread's event loop with this server: when busy
 * it yields every few rounds, and when idle it awaits an asynchronous poll. Whatever this server does in one
 * callback delays packets by that long, and whatever it buffers is the daemon's memory. Hence:
 * - framing in linear time, with a size limit per request (lib/uapi.ts's UapiReader, refused with EMSGSIZE;
 *   what the client still sends after a refusal is read and dropped, up to the limit, so it can read the errno);
 * - at most one request per connection per turn of the event loop (the next one waits for setImmediate), so
 *   a client that pipelines thousands of requests gets them answered in slices between the data plane's turns;
 * - backpressure: while a connection's replies are not being read (write() returned false) neither are its
 *   requests, and nothing more is queued for it; while its requests wait to be handled, it is not read either;
 * - in the middle of a request a connection is read at most once a millisecond, so a request trickled in tiny
 *   pieces arrives in a few large reads (each read costs the runtime a buffer and an event: at one read per
 *   16-byte piece, a trickling client grew the daemon by 50 MB of garbage in 4 s);
 * - at most {@link UAPI_MAX_CONNECTIONS} connections (a newcomer displaces the oldest idle one), and one that
 *   makes no progress (sends nothing and reads none of its replies) for {@link UAPI_IDLE_TIMEOUT_MS} is closed.
 *
 * wireguard-go has none of these limits: it keeps every connection, and a trickled set holds its device lock,
 * so another client's `wg show` waits for it (tests/netns/uapi_abuse_test.ts measures both).
 * @module
 */
import { chmodSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { performance } from "node:perf_hooks";
import process from "node:process";
import { clearTimeout, setImmediate, setTimeout } from "node:timers";
import { ENOANO, formatErrno, UAPI_MAX_REQUEST_BYTES, UapiReader, type UapiRequest } from "../lib/uapi.ts";
import type { Logger } from "./log.ts";

/**
 * Connections served at once. `wg` opens one per command and closes it at once, so even a script running
 * many in parallel needs few; 64 bound the file descriptors and buffers clients can pin.
 */
export const UAPI_MAX_CONNECTIONS = 64;
/**
 * A connection that sends nothing and reads nothing of its replies for this long is closed: idle, stuck in
 * the middle of a request, or not reading. `wg` finishes in milliseconds; 30 s leave a person typing into
 * `nc -U` time between lines. Divided by TYPETUN_TEST_TIME_SCALE, so tests can wait for it.
 */
export const UAPI_IDLE_TIMEOUT_MS = 30_000;
/** How long a connection in the middle of a request waits before it is read again (see above). */
const MID_REQUEST_READ_DELAY_MS = 1;

/** Answers one request with the reply's text (ending in `errno=N` and a blank line). */
export type UapiHandler = (req: UapiRequest) => string;

export interface UapiServerOptions {
  maxConnections?: number;
  idleTimeoutMs?: number;
  /** Passed to UapiReader (default UAPI_MAX_REQUEST_BYTES). */
  maxRequestBytes?: number;
}

/**
 * Listens on `path` (or serves `{ fd }`, a socket already bound and listening) half-open, with umask 077 while
 * the socket is created, as wireguard-go creates its UAPI socket: only root may connect. The capture socket
 * (cmd/capture_server.ts) is made the same way.
 */
export function listenPrivate(path: string | { fd: number }): Promise<Server> {
  return new Promise((resolve, reject) => {
    // Half-open: a client may send its requests and shut down its sending side, then read the replies.
    const server = createServer({ allowHalfOpen: true });
    const old = process.umask(0o077);
    server.once("error", (e) => {
      process.umask(old);
      reject(e);
    });
    server.listen(path, () => {
      process.umask(old);
      resolve(server);
    });
  });
}

/** The listening socket and the connections it serves. */
export class UapiServer {
  readonly #server: Server;
  readonly #log: Logger;
  readonly #conns = new Set<UapiConnection>();
  readonly #maxConnections: number;
  readonly idleTimeoutMs: number;
  readonly maxRequestBytes: number | undefined;
  #handler: UapiHandler | null = null;

  private constructor(server: Server, log: Logger, options: UapiServerOptions) {
    this.#server = server;
    this.#log = log;
    this.#maxConnections = options.maxConnections ?? UAPI_MAX_CONNECTIONS;
    this.idleTimeoutMs = options.idleTimeoutMs ?? UAPI_IDLE_TIMEOUT_MS;
    this.maxRequestBytes = options.maxRequestBytes;
    server.on("connection", (sock: Socket) => this.#accept(sock));
  }

  /**
   * Listens on `path`, private to root as wireguard-go makes it; connections are refused until
   * {@link serve} names the handler. `{ fd }` serves a socket that is already bound and listening (one a
   * supervisor handed in, WG_UAPI_FD), as it is.
   */
  static listen(
    path: string | { fd: number },
    log: Logger,
    options: UapiServerOptions = {},
  ): Promise<UapiServer> {
    return listenPrivate(path).then((server) => {
      try {
        if (typeof path === "string") chmodSync(path, 0o755 & ~0o077);
      } catch {
        // The umask already made it private.
      }
      return new UapiServer(server, log, options);
    });
  }

  /** Starts answering requests with `handler`. */
  serve(handler: UapiHandler): void {
    this.#handler = handler;
  }

  /** Connections open now. */
  get connections(): number {
    return this.#conns.size;
  }

  /** Stops listening and closes every connection. */
  close(): void {
    this.#server.close();
    for (const c of this.#conns) c.destroy();
  }

  get log(): Logger {
    return this.#log;
  }

  get handler(): UapiHandler | null {
    return this.#handler;
  }

  /** @internal called by a connection once it is closed */
  forget(c: UapiConnection): void {
    this.#conns.delete(c);
  }

  #accept(sock: Socket): void {
    if (!this.#handler) {
      sock.destroy();
      return;
    }
    if (this.#conns.size >= this.#maxConnections) {
      // Make room by closing the oldest connection that is between requests with nothing pending (the Set
      // iterates in insertion order), so idle clients cannot lock out `wg`; if every one is busy, refuse.
      let victim: UapiConnection | null = null;
      for (const c of this.#conns) {
        if (c.idle) {
          victim = c;
          break;
        }
      }
      if (!victim) {
        this.#log.debug(`UAPI: ${this.#conns.size} connections busy, refusing another`);
        sock.destroy();
        return;
      }
      this.#log.debug(`UAPI: ${this.#conns.size} connections open, closing the oldest idle one`);
      victim.destroy();
    }
    this.#conns.add(new UapiConnection(this, sock));
  }
}

/** One client: its reader, its pending work, and its idle timer. */
class UapiConnection {
  readonly #reader: UapiReader;
  /** A turn of the event loop is booked to handle the next request. */
  #scheduled = false;
  /** write() returned false: no more requests until the client reads and 'drain' comes. */
  #blocked = false;
  #closed = false;
  /** The client ended its side. */
  #eof = false;
  /**
   * No more requests will be read (the input ended, or a request was refused): what still arrives is dropped,
   * up to `#discardLeft` bytes, so a client still writing the request it was refused (`wg setconf` of a file
   * over the limit) can finish and read the errno, instead of failing on a closed socket.
   */
  #draining = false;
  #discardLeft: number;
  #lastProgress = performance.now();
  #timer: ReturnType<typeof setTimeout>;
  readonly #pump = () => this.#handleOne();
  readonly #resume = () => {
    if (!this.#closed) this.sock.resume();
  };

  constructor(readonly server: UapiServer, readonly sock: Socket) {
    this.#reader = new UapiReader({ maxRequestBytes: server.maxRequestBytes });
    this.#discardLeft = server.maxRequestBytes ?? UAPI_MAX_REQUEST_BYTES;
    // The reader takes the bytes as they come (it copies them; a set's body is decoded once complete).
    sock.on("data", (chunk: Uint8Array) => {
      this.#progress();
      if (this.#draining) {
        this.#discardLeft -= chunk.length;
        if (this.#discardLeft < 0) this.destroy();
        return;
      }
      this.#reader.feed(chunk);
      // Read no more until what this chunk completed has been handled (one request per turn).
      sock.pause();
      this.#schedule();
    });
    sock.on("end", () => {
      this.#eof = true;
      if (this.#draining) {
        if (this.sock.writableFinished) this.destroy(); // else once the replies are written (below)
        return;
      }
      this.#reader.finish();
      this.#schedule();
    });
    sock.on("drain", () => {
      this.#blocked = false;
      this.#progress();
      this.#schedule();
    });
    sock.on("error", () => this.destroy());
    sock.on("close", () => this.destroy());
    this.#timer = this.#arm(server.idleTimeoutMs);
  }

  /** Between requests with nothing received, nothing to handle, and no reply waiting to be read. */
  get idle(): boolean {
    return this.#reader.pending === 0 && !this.#scheduled && !this.#blocked && this.sock.writableLength === 0;
  }

  destroy(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#reader.discard(); // wipes what it held (a set carries keys) and gives back a grown buffer
    this.sock.destroy();
    this.server.forget(this);
  }

  #schedule(): void {
    if (this.#scheduled || this.#closed) return;
    this.#scheduled = true;
    setImmediate(this.#pump);
  }

  /** Handles at most one request, then books the next turn; reads more input once none is left. */
  #handleOne(): void {
    this.#scheduled = false;
    if (this.#closed || this.#blocked) return;
    const req = this.#reader.next();
    if (req === null) {
      if (this.#reader.done) {
        // The input ended or was not the protocol: end our side once the replies are written, and close when
        // the client has ended its side too (or sent more than we drop, or went idle).
        if (!this.#draining) {
          this.#draining = true;
          this.sock.end(() => {
            if (this.#eof) this.destroy();
          });
          this.sock.resume();
        }
      } else if (this.#reader.pending > 0) {
        // In the middle of a request: read again a moment later, so a request sent in small pieces is read in
        // a few large reads rather than one per piece.
        setTimeout(this.#resume, MID_REQUEST_READ_DELAY_MS);
      } else {
        this.sock.resume();
      }
      return;
    }
    if (req.op === "error") this.server.log.info(`UAPI request refused: ${req.message}`);
    let reply: string;
    try {
      reply = this.server.handler!(req);
    } catch (e) {
      // A bug in applying a request must not take the tunnel down: refuse it as wireguard-go refuses what it
      // cannot classify, and say so.
      this.server.log.error(`UAPI ${req.op} failed: ${e instanceof Error ? e.stack ?? e.message : e}`);
      reply = formatErrno(ENOANO);
    }
    this.#progress();
    if (this.#closed) return; // the handler stopped the daemon
    if (!this.sock.write(reply)) this.#blocked = true; // resumed by 'drain'
    else this.#schedule();
  }

  #progress(): void {
    this.#lastProgress = performance.now();
  }

  /**
   * Closes the connection once it made no progress for the idle timeout. One timer per connection, re-armed
   * only when it fires (progress just moves a timestamp), so a busy connection costs no timer churn.
   */
  #arm(ms: number): ReturnType<typeof setTimeout> {
    const t = setTimeout(() => {
      if (this.#closed) return;
      const quiet = performance.now() - this.#lastProgress;
      const limit = this.server.idleTimeoutMs;
      if (quiet >= limit) {
        this.server.log.debug(`UAPI: closing a connection idle for ${Math.round(quiet)} ms`);
        this.destroy();
      } else {
        this.#timer = this.#arm(limit - quiet);
      }
    }, Math.max(1, ms));
    // The daemon runs as long as its data plane does; a client's timer does not keep it alive.
    (t as { unref?: () => void }).unref?.();
    return t;
  }
}
