/**
 * `typetun capture INTERFACE [-w FILE] [--peer PUBLIC-KEY] [--outer]`: streams the tunnel's packets as pcapng
 * (lib/pcapng.ts) to FILE or to stdout, so that `typetun capture wg0 | tcpdump -r -` works. The daemon serves
 * them on /var/run/wireguard/INTERFACE.capture (cmd/capture_server.ts); this client asks, passes the stream
 * through, and at the end (SIGINT, SIGTERM, or its reader closing the pipe) asks the daemon to stop, takes the
 * rest of the stream and reports on stderr, as tcpdump does, how many packets it captured and how many the
 * daemon dropped because they were read too slowly.
 * @module
 */
import { randomBytes } from "node:crypto";
import { chmodSync, closeSync, existsSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { Writable } from "node:stream";
import { parseArgs } from "node:util";
import { keyFromBase64 } from "../lib/encoding.ts";
import { PcapngScanner } from "../lib/pcapng.ts";
import { capturePath } from "./capture_server.ts";
import { socketPath } from "./uapi_client.ts";

export const CAPTURE_USAGE = `Usage: typetun capture INTERFACE [-w FILE] [--peer PUBLIC-KEY] [--outer]

  Streams the packets of INTERFACE's tunnel as pcapng to FILE (or to stdout, e.g. into tcpdump -r -) until
  interrupted: the plaintext packets in both directions, each on an interface named after its peer's public
  key, with its direction; tcpdump -e shows the direction (In/Out) and the key's first 6 bytes as the
  link-layer address.
    -w FILE             write to FILE (created private, mode 0600); "-" is stdout
    --peer PUBLIC-KEY   only this peer's packets (and, with --outer, the datagrams of its endpoint)
    --outer             the encrypted UDP datagrams as well, given IP/UDP headers (our address shows as
                        0.0.0.0 or ::, since the socket listens on all of them)
  A reader too slow for the tunnel loses packets, never the tunnel: the count is printed at the end.
`;

/** How long to wait for the rest of the stream once the capture is asked to stop. */
const STOP_TIMEOUT_MS = 5000;

export async function captureMain(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        write: { type: "string", short: "w" },
        peer: { type: "string" },
        outer: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
      allowPositionals: true,
    });
  } catch (e) {
    process.stderr.write(`typetun capture: ${(e as Error).message}\n${CAPTURE_USAGE}`);
    return 1;
  }
  if (parsed.values.help) {
    process.stdout.write(CAPTURE_USAGE);
    return 0;
  }
  if (parsed.positionals.length !== 1) {
    process.stderr.write(CAPTURE_USAGE);
    return 1;
  }
  const ifname = parsed.positionals[0]!;
  if (!/^[^/\s]{1,15}$/.test(ifname)) {
    process.stderr.write(`typetun capture: "${ifname}" is not an interface name\n`);
    return 1;
  }
  const { peer, outer, write: file } = parsed.values;
  if (peer !== undefined && keyFromBase64(peer) === null) {
    process.stderr.write(`typetun capture: --peer "${peer}" is not a public key (44 characters of base64)\n`);
    return 1;
  }
  const toStdout = file === undefined || file === "-";
  if (toStdout && process.stdout.isTTY) {
    process.stderr.write(
      `typetun capture: not writing a binary capture to a terminal: pipe it (typetun capture ${ifname} | ` +
        `tcpdump -r -) or use -w FILE\n`,
    );
    return 1;
  }
  const path = capturePath(ifname);
  if (!existsSync(path)) {
    process.stderr.write(
      existsSync(socketPath(ifname))
        ? `typetun capture: ${ifname} has no capture socket (${path}): its daemon is not typetun, or too old\n`
        : `typetun capture: ${ifname}: No such device (no daemon serves it)\n`,
    );
    return 1;
  }
  let out: Writable;
  try {
    out = toStdout ? process.stdout : openFile(file!);
  } catch (e) {
    process.stderr.write(`typetun capture: ${file}: ${(e as Error).message}\n`);
    return 1;
  }
  return await run(path, `${outer ? " outer" : ""}${peer ? ` peer=${peer}` : ""}`, out, !toStdout);
}

/** FILE as a stream written synchronously: a file takes what it is given at once, without a thread pool. */
function openFile(file: string): Writable {
  // The capture holds the tunnel's plaintext: private, as the daemon's socket is.
  const fd = openSync(file, "w", 0o600);
  return new Writable({
    highWaterMark: 1 << 20,
    write(chunk: Uint8Array, _encoding, done) {
      try {
        writeSync(fd, chunk);
        done();
      } catch (e) {
        done(e as Error);
      }
    },
    final(done) {
      closeSync(fd);
      done();
    },
  });
}

/**
 * The socket the daemon sends the packets to: in a directory of its own that others may pass through but not
 * read (the daemon may run as another user after --user), open to anyone, so the token tells the daemon's
 * connection from others.
 */
async function dataSocket(): Promise<{ server: Server; path: string; dir: string }> {
  const base = /\s/.test(tmpdir()) ? "/tmp" : tmpdir();
  const dir = mkdtempSync(join(base, "typetun-capture-"));
  chmodSync(dir, 0o711);
  const path = join(dir, "data.sock");
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => resolve());
  });
  chmodSync(path, 0o666);
  return { server, path, dir };
}

/** Streams the capture into `out` until stopped; reports and returns the exit code. */
async function run(control: string, options: string, out: Writable, closeOut: boolean): Promise<number> {
  let data: Awaited<ReturnType<typeof dataSocket>>;
  try {
    data = await dataSocket();
  } catch (e) {
    process.stderr.write(`typetun capture: cannot make a socket for the packets: ${(e as Error).message}\n`);
    return 1;
  }
  const token = randomBytes(16).toString("hex");
  try {
    return await stream(
      control,
      `capture${options} data=${data.path} token=${token}\n`,
      token,
      data.server,
      out,
      closeOut,
    );
  } finally {
    data.server.close();
    rmSync(data.dir, { recursive: true, force: true });
  }
}

function stream(
  path: string,
  request: string,
  token: string,
  dataServer: Server,
  out: Writable,
  closeOut: boolean,
): Promise<number> {
  return new Promise((resolve) => {
    const scanner = new PcapngScanner();
    const sock = connect(path);
    let stream: Socket | null = null;
    let reply = "", started = false, stopping = false, failed = false, finished = false, readerGone = false;
    let stopTimer: ReturnType<typeof setTimeout> | undefined;

    /** Asks the daemon to stop; the rest of the stream and its statistics follow. */
    const stop = () => {
      if (stopping) return;
      stopping = true;
      if (!sock.destroyed) sock.end();
      stopTimer = setTimeout(() => {
        stream?.destroy();
        sock.destroy();
      }, STOP_TIMEOUT_MS);
    };
    const onSignal = () => stop();
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);

    const finish = (code: number) => {
      if (finished) return;
      finished = true;
      clearTimeout(stopTimer);
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      sock.destroy();
      stream?.destroy();
      const report = () => {
        if (started) {
          process.stderr.write(`${scanner.packets} packets captured\n`);
          if (scanner.dropped !== null) {
            process.stderr.write(`${scanner.dropped} packets dropped by typetun (read too slowly)\n`);
          } else if (!stopping) {
            process.stderr.write("the capture ended early: the daemon stopped\n");
          } else {
            process.stderr.write("the daemon did not say how many packets were dropped\n");
          }
        }
        resolve(code);
      };
      if (closeOut) out.end(report);
      else report();
    };

    // The reader closed its end (tcpdump -c N exited): stop as if interrupted.
    out.on("error", () => {
      readerGone = true;
      stop();
    });

    const pass = (chunk: Uint8Array) => {
      if (failed || readerGone) return;
      try {
        scanner.push(chunk);
      } catch (e) {
        process.stderr.write(`typetun capture: the daemon's stream is broken: ${(e as Error).message}\n`);
        failed = true;
        stop();
        return;
      }
      if (!out.write(chunk)) {
        stream!.pause();
        out.once("drain", () => stream?.resume());
      }
    };

    // The daemon's connection to the data socket begins with the token's line; any other is not its.
    dataServer.on("connection", (conn: Socket) => {
      if (stream !== null) return conn.destroy();
      let head = new Uint8Array(0);
      const onData = (d: Uint8Array) => {
        const joined = new Uint8Array(head.length + d.length);
        joined.set(head);
        joined.set(d, head.length);
        const nl = joined.indexOf(10);
        if (nl < 0) {
          head = joined;
          if (head.length > 80) conn.destroy();
          return;
        }
        conn.off("data", onData);
        if (new TextDecoder().decode(joined.subarray(0, nl)) !== token || stream !== null) {
          return conn.destroy();
        }
        stream = conn;
        started = true;
        conn.on("data", pass);
        conn.on("end", () => finish(failed ? 1 : 0));
        conn.on("close", () => finish(failed ? 1 : 0));
        if (nl + 1 < joined.length) pass(joined.subarray(nl + 1));
      };
      conn.on("data", onData);
      conn.on("error", () => conn.destroy());
    });

    sock.on("connect", () => sock.write(request));
    sock.setEncoding("utf8");
    sock.on("data", (d: string) => {
      reply += d;
      if (reply.startsWith("error")) return;
      if (reply.length > 1000) sock.destroy();
    });
    sock.on("error", (e: NodeJS.ErrnoException) => {
      if (!started) {
        const why = e.code === "EACCES" ? "Permission denied (run as root)" : e.message;
        process.stderr.write(`typetun capture: ${path}: ${why}\n`);
        failed = true;
      }
    });
    sock.on("close", () => {
      if (reply.startsWith("error")) {
        process.stderr.write(`typetun capture: ${reply.trim().replace(/^error: /, "")}\n`);
        return finish(1);
      }
      // The daemon went away, or ended the capture: the data stream ends by itself (or never began).
      if (!started) {
        if (!failed) process.stderr.write(`typetun capture: ${path}: the daemon closed the connection\n`);
        finish(1);
      }
    });
  });
}
