/**
 * A connected Unix stream socket written with non-blocking send(2) (unix(7)): what a packet capture streams
 * through. Written synchronously, so a busy data loop can empty its capture queue between rounds without
 * waiting for the runtime's event loop to poll (node:net's writes complete only then); a full socket buffer is
 * EAGAIN, reported as 0 bytes sent, never a wait.
 * @module
 */
import {
  EAGAIN,
  EINTR,
  SO_SNDBUF,
  SO_SNDBUFFORCE,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOL_SOCKET,
  SysError,
} from "./libc.ts";
import { errno, LIBC, openLibrary } from "./runtime.ts";

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const MSG_DONTWAIT = 0x40;
/** No SIGPIPE when the reader is gone: EPIPE instead (send(2)). */
const MSG_NOSIGNAL = 0x4000;
/** sizeof(struct sockaddr_un): sun_family and 108 bytes of path. */
const SOCKADDR_UN_LEN = 110;

const lib = openLibrary(LIBC, {
  socket: { args: ["i32", "i32", "i32"], result: "i32" },
  connect: { args: ["i32", "buffer", "u32"], result: "i32" },
  send: { args: ["i32", "buffer", "usize", "i32"], result: "isize" },
  setsockopt: { args: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  close: { args: ["i32"], result: "i32" },
}).symbols;

export class UnixStream {
  #fd: number;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /** Connects to the stream socket at `path` (a listening one connects at once, without blocking). */
  static connect(path: string): UnixStream {
    const name = new TextEncoder().encode(path);
    if (name.length >= SOCKADDR_UN_LEN - 2) {
      throw new SysError(`connect(${path})`, 36, "the path is too long");
    }
    const addr = new Uint8Array(SOCKADDR_UN_LEN);
    addr[0] = AF_UNIX; // sun_family, host order (little endian here)
    addr.set(name, 2);
    const fd = lib.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new SysError("socket(AF_UNIX)", errno());
    if (lib.connect(fd, addr, 2 + name.length + 1) < 0) {
      const e = errno();
      lib.close(fd);
      throw new SysError(`connect(${path})`, e);
    }
    return new UnixStream(fd);
  }

  /**
   * Asks for a send buffer of `bytes` (the kernel doubles it); as root beyond net.core.wmem_max
   * (SO_SNDBUFFORCE). Best effort: the default buffer still works.
   */
  setSendBuffer(bytes: number): void {
    const v = Int32Array.of(bytes);
    if (lib.setsockopt(this.#fd, SOL_SOCKET, SO_SNDBUFFORCE, v, 4) < 0) {
      lib.setsockopt(this.#fd, SOL_SOCKET, SO_SNDBUF, v, 4);
    }
  }

  /**
   * Sends what fits of `buf[off, off+len)` without waiting.
   * @returns the bytes sent, 0 when the socket's buffer is full
   * @throws SysError when the reader is gone (EPIPE, ECONNRESET) or the socket is closed
   */
  send(buf: Uint8Array, off: number, len: number): number {
    if (this.#fd < 0) throw new SysError("send", 9);
    for (;;) {
      const n = lib.send(this.#fd, off === 0 ? buf : buf.subarray(off), len, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n >= 0) return n;
      const e = errno();
      if (e === EAGAIN) return 0;
      if (e !== EINTR) throw new SysError("send", e);
    }
  }

  close(): void {
    if (this.#fd < 0) return;
    lib.close(this.#fd);
    this.#fd = -1;
  }
}
