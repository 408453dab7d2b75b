/**
 * The daemon, called as wireguard-go is: `typetun [-f|--foreground] IFNAME`. It creates the TUN interface,
 * serves the cross-platform UAPI on /var/run/wireguard/IFNAME.sock, and moves packets between the TUN, the UDP
 * sockets and lib/'s Device until it is signalled or the interface is deleted.
 *
 * The event loop runs on the main thread. When idle it waits in an asynchronous poll (the JavaScript event
 * loop keeps serving the UAPI socket and signals meanwhile); when busy it drains the descriptors synchronously
 * in bounded batches and yields to the event loop after each round, so `wg show` and SIGTERM are served even
 * at full load. The UAPI handler wakes the poll through an eventfd after a change.
 * @module
 */
import { spawn } from "node:child_process";
import { mkdirSync, unlinkSync } from "node:fs";
import { connect } from "node:net";
import process from "node:process";
import { performance } from "node:perf_hooks";
import { setImmediate } from "node:timers";
import { type Clock, Device, Verdict } from "../lib/device.ts";
import type { X25519 } from "../lib/crypto.ts";
import { DATA_HEADER_LEN, NOISE_AUTHTAG_LEN } from "../lib/messages.ts";
import { Coalescer } from "../lib/gro.ts";
import { Segmenter, VNET_HDR_LEN } from "../lib/gso.ts";
import { EADDRINUSE, formatErrno, formatGet, parseSet, type UapiRequest } from "../lib/uapi.ts";
import { errnoName, SysError } from "../ffi/libc.ts";
import { LinkMonitor } from "../ffi/netlink.ts";
import { PollSet, Waker } from "../ffi/poll.ts";
import { pinned, runtimeName } from "../ffi/runtime.ts";
import { ifIndex, MAX_PACKET, openTun, setMtu, type Tun } from "../ffi/tun.ts";
import { GroRecvBatch, GsoSendBatch, UdpBind, type UdpSocket } from "../ffi/udp.ts";
import { type AeadSelection, selectAead, selectX25519, x25519Warning } from "./crypto.ts";
import { systemRng } from "./keys.ts";
import { Level, levelFromEnv, Logger } from "./log.ts";
import { UAPI_IDLE_TIMEOUT_MS, UapiServer } from "./uapi_server.ts";

export const SOCKET_DIR = "/var/run/wireguard";
/** wireguard-go's default MTU: 1500 minus the largest overhead (IPv6 40 + UDP 8 + WireGuard 32). */
export const DEFAULT_MTU = 1420;
/** TUN reads, or UDP messages sent, per batch before the loop turns to the other descriptors. */
const BATCH = 64;
/**
 * UDP messages per receive. With GRO one message holds up to 64 KB of datagrams, so 16 are up to a thousand
 * datagrams; the batch buffers are what the daemon's resident memory grows by under load (1 MB each way).
 */
const RECV_BATCH = 16;
const SEND_BYTES = 1 << 20;
/**
 * Room for the largest IP packet, the data header in front of it, and padding and tag behind it; rounded up to
 * a multiple of 16 so every receive slot starts aligned (typed-array copies between aligned offsets are faster).
 */
const SLOT = (DATA_HEADER_LEN + MAX_PACKET + 16 + NOISE_AUTHTAG_LEN + 15) & ~15;
/** Rounds of draining before the event loop gets a turn, even if packets keep coming. */
const ROUNDS_PER_YIELD = 8;
/**
 * After traffic, how long the loop waits synchronously for more before it waits asynchronously. On Deno the
 * asynchronous wait is a poll on another thread, and waking from it costs about 0.1 ms, which a reply (a ping's,
 * a TCP ACK) would otherwise pay at every hop; a 1 ms synchronous poll catches it at once. The event loop is
 * held for at most that long.
 */
const LINGER_MS = 1;

const USAGE = `Usage: typetun [-f/--foreground] INTERFACE-NAME\n`;

/**
 * Whether to use the kernel's offloads: a TUN with a vnet header that hands over TCP super-packets (TSO) and
 * takes coalesced ones (GRO), and UDP sockets sending and receiving runs of datagrams as one (UDP GSO/GRO).
 * On by default, as in wireguard-go since 0.0.20230223; `TYPETUN_OFFLOAD=0` turns them off (one packet per
 * system call, as before), for comparison or a kernel that misbehaves.
 */
export function offloadsWanted(value = process.env.TYPETUN_OFFLOAD): boolean {
  if (value === undefined || value === "" || value === "1") return true;
  if (value === "0") return false;
  throw new Error(`TYPETUN_OFFLOAD must be 0 or 1, not "${value}"`);
}

/** Entry point for `typetun [-f] IFNAME`. */
export async function daemonMain(args: string[]): Promise<number> {
  let foreground = process.env.WG_PROCESS_FOREGROUND === "1";
  const names: string[] = [];
  for (const a of args) {
    if (a === "-f" || a === "--foreground") foreground = true;
    else names.push(a);
  }
  if (names.length !== 1 || !/^[^/\s]{1,15}$/.test(names[0]!) || names[0] === "." || names[0] === "..") {
    process.stderr.write(USAGE);
    return 1;
  }
  const name = names[0]!;
  if (!foreground) return await startInBackground(name);
  const log = new Logger(levelFromEnv(process.env.LOG_LEVEL), name);
  return await serve(name, log, process.env.TYPETUN_READY_FD === "stdout");
}

/** The command that runs this program again: the runtime and script when run from source, or the binary. */
export function selfCommand(argv1 = process.argv[1]): [string, string[]] {
  const script = argv1 ?? "";
  // Compiled binaries embed the script and their argv[1] names no real file: Bun's is a virtual /$bunfs/
  // path, Deno's is the binary itself (in older releases, the script's place under /tmp/deno-compile-NAME/).
  const compiled = script.startsWith("/$bunfs/") || script.includes("/deno-compile-");
  if (!compiled && /\.(ts|js)$/.test(script)) {
    return [process.execPath, runtimeName === "deno" ? ["run", "-A", script] : [script]];
  }
  return [process.execPath, []];
}

/**
 * Without -f, wireguard-go returns once the interface exists and keeps serving in the background. We start
 * ourselves again in the foreground, detached, and wait for it to report "ready" (or an error) on a pipe.
 */
function startInBackground(name: string): Promise<number> {
  const [cmd, pre] = selfCommand();
  const child = spawn(cmd, [...pre, "-f", name], {
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, TYPETUN_READY_FD: "stdout", WG_PROCESS_FOREGROUND: "1" },
  });
  return new Promise((resolve) => {
    let out = "", err = "";
    const done = (code: number) => {
      child.stdout!.removeAllListeners();
      child.stderr!.removeAllListeners();
      child.stdout!.destroy();
      child.stderr!.destroy();
      child.unref();
      resolve(code);
    };
    child.stderr!.on("data", (d) => (err += d.toString()));
    child.stdout!.on("data", (d) => {
      out += d.toString();
      if (out.includes("ready\n")) done(0);
    });
    child.on("exit", (code) => {
      process.stderr.write(err || `typetun: the daemon for ${name} exited with status ${code}\n`);
      done(code || 1);
    });
  });
}

/**
 * For tests only: `TYPETUN_TEST_TIME_SCALE=20` makes the protocol's clock run 20 times faster, so the paper's
 * timers (rekey after 120 s, reject after 180 s, …) fire in seconds while the constants stay as written; the
 * UAPI idle timeout shrinks with it (to no less than a second). The wall clock (handshake timestamps,
 * last-handshake time) is never scaled.
 */
export function timeScale(value = process.env.TYPETUN_TEST_TIME_SCALE): number {
  if (value === undefined || value === "") return 1;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 1 || n > 1000) {
    throw new Error(`TYPETUN_TEST_TIME_SCALE must be a number from 1 to 1000, not "${value}"`);
  }
  return n;
}

let TIME_SCALE = 1;
/**
 * The protocol clock reads a time taken once per round of the loop (and before each UAPI request), not once per
 * packet: a round lasts microseconds, far below any timer's resolution, and at 64-byte packets reading the clock
 * per packet was a tenth of the time spent.
 */
let monotonicNow = 0;
const tickClock = () => (monotonicNow = performance.now() * TIME_SCALE);
const clock: Clock = { now: () => monotonicNow, wall: () => Date.now() };

/** Refuses a name whose UAPI socket answers (a live daemon), removes one that does not (a stale socket). */
async function claimSocket(path: string): Promise<void> {
  const live = await new Promise<boolean>((resolve) => {
    const s = connect(path);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", (e: NodeJS.ErrnoException) => resolve(e.code === "EACCES"));
  });
  if (live) throw new Error(`${path} is in use: another process already serves this interface`);
  try {
    unlinkSync(path);
  } catch {
    // No stale socket to remove.
  }
}

/** Runs the daemon in the foreground until a signal or the interface's deletion; returns the exit code. */
export async function serve(name: string, log: Logger, reportReady: boolean): Promise<number> {
  const sockPath = `${SOCKET_DIR}/${name}.sock`;
  let tun: Tun, bind: UdpBind, links: LinkMonitor, waker: Waker, server: UapiServer, transport: AeadSelection;
  let x25519: X25519;
  try {
    TIME_SCALE = timeScale();
    // Before the interface exists: TYPETUN_CRYPTO=native without a library is refused with nothing to undo.
    transport = selectAead();
    x25519 = selectX25519();
    const offload = offloadsWanted();
    await claimSocket(sockPath);
    tun = openTun(name, { vnetHdr: offload });
    setMtu(tun.name, DEFAULT_MTU);
    bind = UdpBind.open(0, 0, { gso: offload, gro: offload });
    links = new LinkMonitor();
    waker = new Waker();
    mkdirSync(SOCKET_DIR, { recursive: true, mode: 0o755 });
    // Tests shorten the idle timeout with the clock, but never below a second (a `wg` command needs less).
    const idleTimeoutMs = Math.max(1000, UAPI_IDLE_TIMEOUT_MS / TIME_SCALE);
    server = await UapiServer.listen(sockPath, log, { idleTimeoutMs });
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    process.stderr.write(`typetun: ${name}: ${msg}\n`);
    if (reportReady) process.stdout.write(`error\n`);
    return 1;
  }
  tickClock();
  const device = new Device({ clock, rng: systemRng, mtu: DEFAULT_MTU, aead: transport.aead, x25519 });
  device.listenPort = bind.port;
  const index = ifIndex(tun.name);
  if (TIME_SCALE !== 1) {
    log.error(
      `TYPETUN_TEST_TIME_SCALE: the protocol clock runs ${TIME_SCALE}× fast, and UAPI clients idle out ` +
        `${TIME_SCALE}× sooner (tests only)`,
    );
  }
  log.info(`Interface ${tun.name} created (ifindex ${index}), UDP port ${bind.port}, UAPI on ${sockPath}`);
  log.info(`Transport AEAD: ${transport.name}; X25519: ${x25519.name}`);
  const dhWarning = x25519Warning(x25519);
  if (dhWarning) log.error(dhWarning);
  const udpOffloads = [bind.v4, bind.v6].map((u) =>
    u && `IPv${u.family} GSO ${onOff(u.gso)} GRO ${onOff(u.gro)}`
  );
  log.info(
    `Offloads: TUN ${tun.vnetHdr ? `vnet header, TSO ${onOff(tun.offload)}` : "off"}; UDP ` +
      udpOffloads.filter(Boolean).join(", "),
  );

  let stopping = false;
  let exitCode = 0;
  const stop = (why: string, code = 0) => {
    if (stopping) return;
    stopping = true;
    exitCode = code;
    log.info(`Shutting down: ${why}`);
    waker.wake();
  };
  const onSignal = (sig: string) => () => stop(`received ${sig}`);
  process.on("SIGINT", onSignal("SIGINT"));
  process.on("SIGTERM", onSignal("SIGTERM"));

  const loop = new DataPlane(device, tun, bind, links, waker, index, log, stop);
  server.serve((req) => {
    const reply = handleUapi(req, device, loop);
    // A change may have queued handshakes or keepalives, or moved a deadline; a get changes nothing.
    if (req.op === "set") waker.wake();
    return reply;
  });
  if (reportReady) {
    // Started in the background: the parent reads this line and exits, taking the pipes with it. From here on
    // the daemon has no terminal to talk to (as wireguard-go's detached child), so logging stops.
    process.stdout.write("ready\n");
    process.stdout.on("error", () => {});
    process.stderr.on("error", () => {});
    log.level = Level.Silent;
  }

  try {
    await loop.run(() => stopping);
  } catch (e) {
    log.error(`Data plane failed: ${e instanceof Error ? e.message : e}`);
    exitCode = 1;
  }
  server.close();
  try {
    unlinkSync(sockPath);
  } catch {
    // Already gone.
  }
  loop.bind.close();
  tun.close();
  links.close();
  waker.close();
  process.removeAllListeners("SIGINT");
  process.removeAllListeners("SIGTERM");
  return exitCode;
}

const onOff = (on: boolean) => (on ? "on" : "off");

/** One UAPI request against the running device (cmd-side effects: rebinding the port, the fwmark). */
function handleUapi(req: UapiRequest, device: Device, loop: DataPlane): string {
  tickClock();
  if (req.op === "error") return formatErrno(req.errno);
  if (req.op === "get") return formatGet(device.info()) + formatErrno(0);
  const parsed = parseSet(req.body);
  if (!parsed.ok) {
    loop.log.error(`UAPI set refused: ${parsed.message}`);
    return formatErrno(parsed.errno);
  }
  const update = parsed.value;
  // Sockets first: if the port is taken nothing else changes (the whole set is refused, as one operation).
  if (update.listenPort !== undefined || update.fwmark !== undefined) {
    const port = update.listenPort ?? device.listenPort;
    const mark = update.fwmark ?? device.fwmark;
    try {
      if (port !== device.listenPort) loop.rebind(UdpBind.open(port, mark, loop.bind.offloads));
      else if (mark !== device.fwmark) loop.bind.setMark(mark);
    } catch (e) {
      loop.log.error(`UAPI set refused: ${e instanceof Error ? e.message : e}`);
      return formatErrno(EADDRINUSE);
    }
    update.listenPort = loop.bind.port;
  }
  device.apply(update);
  loop.flushOutbox();
  return formatErrno(0);
}

/**
 * The packet loop: TUN ⇄ Device ⇄ UDP. Preallocated buffers; no allocation per data packet.
 *
 * Outbound, a TUN read (a TSO super-packet of up to 64 KB when offloads are on) is cut into IP packets
 * written straight into the send batch, each encrypted in place there; consecutive datagrams to one endpoint
 * then leave as one UDP GSO message. Inbound, a UDP GRO message is split into datagrams, each decrypted in
 * place, and consecutive TCP segments of a flow are merged into one TUN write. Either way the kernel's
 * network stack handles one large packet where it would handle dozens of small ones: that, not the
 * cryptography, was where most of the time went (issue #6's profile).
 */
class DataPlane {
  readonly #poll = new PollSet(5);
  readonly #recv = new GroRecvBatch(RECV_BATCH, SLOT);
  readonly #send = new GsoSendBatch(BATCH, SEND_BYTES);
  /** A TUN read: vnet header, then the packet (without offloads, a zero header is kept in front). */
  readonly #tunRead = pinned(VNET_HDR_LEN + MAX_PACKET);
  /** Where a TUN read goes: at 0 with a vnet header, after the (zero) header room without. */
  readonly #tunReadAt: number;
  readonly #segmenter = new Segmenter();
  readonly #coalescer = new Coalescer();
  readonly #src: { addr: Uint8Array; port: number } = { addr: new Uint8Array(4), port: 0 };
  bind: UdpBind;

  constructor(
    readonly device: Device,
    readonly tun: Tun,
    bind: UdpBind,
    readonly links: LinkMonitor,
    readonly waker: Waker,
    readonly ifindex: number,
    readonly log: Logger,
    readonly stop: (why: string, code?: number) => void,
  ) {
    this.bind = bind;
    this.#tunReadAt = tun.vnetHdr ? 0 : VNET_HDR_LEN;
    // A TUN without a vnet header takes no GSO packets: each decrypted packet is written as it is.
    this.#coalescer.coalesce = tun.vnetHdr;
    this.#poll.add(tun.fd, 1);
    this.#poll.add(bind.v4?.fd ?? -1, 1);
    this.#poll.add(bind.v6?.fd ?? -1, 1);
    this.#poll.add(waker.fd, 1);
    this.#poll.add(links.fd, 1);
  }

  /** Switches to new sockets (listen port change); the old ones are closed. */
  rebind(next: UdpBind): void {
    if (next === this.bind) return;
    this.bind.close();
    this.bind = next;
    this.device.listenPort = next.port;
    this.#poll.set(1, next.v4?.fd ?? -1, 1);
    this.#poll.set(2, next.v6?.fd ?? -1, 1);
  }

  async run(stopping: () => boolean): Promise<void> {
    let rounds = 0;
    let lingered = true;
    while (!stopping()) {
      const busy = this.#round();
      if (stopping()) break;
      if (busy) {
        lingered = false;
        // Full load: give the event loop (UAPI socket, signals) a turn every few rounds.
        if (++rounds >= ROUNDS_PER_YIELD) {
          rounds = 0;
          await new Promise<void>((r) => setImmediate(r));
        }
        continue;
      }
      // Traffic just stopped: wait a moment synchronously first. What this catches continues the busy count,
      // so the event loop still gets its turn every ROUNDS_PER_YIELD busy rounds.
      if (!lingered) {
        lingered = true;
        if (this.#poll.poll(LINGER_MS) > 0) continue;
      }
      rounds = 0;
      const next = this.device.nextDeadline();
      const timeout = next === Infinity
        ? 1000
        : Math.max(0, Math.min(1000, Math.ceil((next - tickClock()) / TIME_SCALE)));
      await this.#poll.pollAsync(timeout);
    }
  }

  /** Polls without waiting and serves whatever is ready; true if any packet moved. */
  #round(): boolean {
    this.#poll.poll(0);
    tickClock();
    let moved = false;
    if (this.#poll.readable(3)) this.waker.drain();
    if (this.#poll.readable(4) && !this.#linkEvents()) return false;
    if (this.#poll.readable(0)) moved = this.#fromTun() || moved;
    if (this.#poll.readable(1) && this.bind.v4) moved = this.#fromUdp(this.bind.v4) || moved;
    if (this.#poll.readable(2) && this.bind.v6) moved = this.#fromUdp(this.bind.v6) || moved;
    if (this.device.nextDeadline() <= clock.now()) this.device.tick();
    this.flushOutbox();
    return moved;
  }

  /**
   * Follows our interface's link events: its deletion (not a move to another namespace) stops the daemon;
   * a new MTU (`ip link set IF mtu N`) becomes the padding limit, as wireguard-go follows its TUN's MTU.
   * Returns false once stopping.
   */
  #linkEvents(): boolean {
    for (const e of this.links.read()) {
      if (e.index !== this.ifindex) continue;
      if (e.type === "del" && !e.moved) {
        this.stop(`interface ${this.tun.name} was deleted`);
        return false;
      }
      if (e.type === "new" && e.mtu !== null && e.mtu !== this.device.mtu) {
        this.log.debug(`MTU of ${this.tun.name} is now ${e.mtu}`);
        this.device.mtu = e.mtu;
      }
    }
    return true;
  }

  /** Reads up to BATCH TUN packets; each IP packet in them is encrypted in place in the send batch. */
  #fromTun(): boolean {
    const send = this.#send;
    const seg = this.#segmenter;
    const buf = this.#tunRead;
    let read = 0;
    for (; read < BATCH; read++) {
      let len: number;
      try {
        len = this.tun.readAt(buf, this.#tunReadAt, buf.length - this.#tunReadAt);
      } catch (e) {
        // EBADFD: the interface is gone (also after it was moved to another namespace and deleted there).
        this.stop(`reading the TUN failed: ${e instanceof SysError ? e.hint : e}`);
        break;
      }
      if (len === 0) break;
      const count = seg.begin(buf, 0, this.#tunReadAt + len);
      for (let i = 0; i < count; i++) {
        // Room for the data header, the packet, its padding (to 16) and the tag.
        if (!send.room(DATA_HEADER_LEN + seg.length(i) + 15 + NOISE_AUTHTAG_LEN)) send.send(this.bind);
        const at = send.cursor + DATA_HEADER_LEN;
        const plain = seg.segment(i, send.data, at);
        if (this.device.handlePlaintext(send.data, at, plain) !== Verdict.Send) continue;
        const ep = this.device.out.endpoint!;
        send.push(this.device.out.length, ep.family, ep.addr, ep.port);
      }
    }
    send.send(this.bind);
    return read > 0;
  }

  /** Receives up to BATCH UDP messages from one socket; decrypted packets go to the TUN. */
  #fromUdp(sock: UdpSocket): boolean {
    const recv = this.#recv;
    const gro = this.#coalescer;
    const n = recv.recv(sock);
    const src = this.#src;
    for (let i = 0; i < n; i++) {
      if (recv.truncated(i)) continue;
      src.addr = recv.address(i);
      src.port = recv.port(i);
      const v = this.device.handleDatagram(recv.data, recv.offset(i), recv.length(i), src);
      if (v === Verdict.Deliver) {
        if (gro.full) this.#writeTun();
        gro.add(recv.data, this.device.out.offset, this.device.out.length);
      } else if (v > Verdict.Handled && this.log.level >= Level.Debug) {
        this.log.debug(`Dropped a datagram from port ${src.port}: ${Verdict[v]}`);
      }
    }
    this.#writeTun();
    return recv.messages > 0;
  }

  /** Writes what the coalescer holds to the TUN (without a vnet header, each packet without its header). */
  #writeTun(): void {
    const gro = this.#coalescer;
    const skip = this.tun.vnetHdr ? 0 : VNET_HDR_LEN;
    const n = gro.flush();
    for (let i = 0; i < n; i++) {
      const r = this.tun.writeAt(gro.outBuf(i), gro.outOff(i) + skip, gro.outLen(i) - skip);
      if (r < 0 && gro.outSegments(i) > 1 && gro.coalesce) {
        // A kernel that refuses our GSO packets would otherwise drop every merged run: stop merging.
        gro.coalesce = false;
        this.log.error(`The TUN refused a coalesced packet (${errnoName(-r)}); writing packets singly`);
      }
    }
  }

  /** Sends what the device queued outside the hot path (handshakes, keepalives, staged packets). */
  flushOutbox(): void {
    const box = this.device.outbox;
    for (let i = 0; i < box.length; i++) {
      const d = box[i]!;
      const sock = this.bind.socket(d.endpoint.family);
      if (sock) sock.sendTo(d.data, d.data.length, d.endpoint.addr, d.endpoint.port);
    }
    box.length = 0;
  }
}
