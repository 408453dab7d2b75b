/**
 * The daemon, called as wireguard-go is: `typetun [-f|--foreground] IFNAME`. It creates the TUN interface,
 * serves the cross-platform UAPI on /var/run/wireguard/IFNAME.sock, and moves packets between the TUN, the UDP
 * sockets and lib/'s Device until it is signalled or the interface is deleted.
 *
 * The packet loop is cmd/dataplane.ts, here wired to its adapters: the TUN (cmd/tun_device.ts), the UDP
 * sockets (cmd/udp_transport.ts), a poll set with an eventfd (cmd/poller.ts) and the round clock
 * (cmd/clock.ts). It runs on the main thread and shares the event loop with the UAPI server; the UAPI handler
 * wakes the loop after a change.
 * @module
 */
import { spawn } from "node:child_process";
import { mkdirSync, unlinkSync } from "node:fs";
import { connect } from "node:net";
import process from "node:process";
import type { X25519 } from "../lib/crypto.ts";
import { Device } from "../lib/device.ts";
import { EADDRINUSE, EINVAL, formatErrno, formatGet, parseSet, type UapiRequest } from "../lib/uapi.ts";
import { LinkMonitor } from "../ffi/netlink.ts";
import { runtimeName } from "../ffi/runtime.ts";
import { adoptTun, ifIndex, openTun, setMtu, type Tun } from "../ffi/tun.ts";
import { UdpBind } from "../ffi/udp.ts";
import { PacketMemory } from "../ffi/packet_memory.ts";
import { RoundClock } from "./clock.ts";
import { DataPlane } from "./dataplane.ts";
import { Poller } from "./poller.ts";
import { TUN_MEMORY_BYTES, TunDevice } from "./tun_device.ts";
import { UDP_MEMORY_BYTES, UdpTransport } from "./udp_transport.ts";
import { connectionCapacityFromEnv, Connections } from "./connections.ts";
import {
  type AeadSelection,
  compiledAead,
  compiledAeadWanted,
  selectAead,
  selectX25519,
  x25519Warning,
} from "./crypto.ts";
import { systemRng } from "./keys.ts";
import { daemonMetricsSource, metricsAddressFromEnv, MetricsServer, parseMetricsAddress } from "./metrics.ts";
import { Level, levelFromEnv, Logger } from "./log.ts";
import { becomeUser, lookupUser, type RunAs } from "./privilege.ts";
import { serveInProcess } from "./uapi_client.ts";
import { handedFd, stdioPassing, watchSocketFile } from "./handoff.ts";
import { UAPI_IDLE_TIMEOUT_MS, UapiServer } from "./uapi_server.ts";
import { EndpointResolver } from "./reresolve.ts";
import { capturePath, CaptureServer } from "./capture_server.ts";
import { warmUp, WARMUP_DELAY_MS, warmupWanted } from "./warmup.ts";
import {
  type HopSpec,
  hopUapiName,
  innerFamilies,
  Multihop,
  multihopMtu,
  readHops,
  viaFromEnv,
  viaToEnv,
} from "./multihop.ts";

export const SOCKET_DIR = "/var/run/wireguard";
/** wireguard-go's default MTU: 1500 minus the largest overhead (IPv6 40 + UDP 8 + WireGuard 32). */
export const DEFAULT_MTU = 1420;

const USAGE =
  `Usage: typetun [-f/--foreground] [--metrics ADDR:PORT] [--user NAME|UID] [--via HOP.conf]... INTERFACE-NAME\n`;

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
  let user: RunAs | undefined;
  const names: string[] = [];
  const via: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "-f" || a === "--foreground") foreground = true;
    else if (a === "--user" || a.startsWith("--user=")) {
      const value = a === "--user" ? args[++i] : a.slice("--user=".length);
      if (value === undefined) {
        process.stderr.write(USAGE);
        return 1;
      }
      try {
        user = lookupUser(value);
      } catch (e) {
        process.stderr.write(`typetun: ${(e as Error).message}\n`);
        return 1;
      }
    } else if (a === "--metrics" || a.startsWith("--metrics=")) {
      const value = a === "--metrics" ? args[++i] : a.slice("--metrics=".length);
      if (value === undefined) {
        process.stderr.write(USAGE);
        return 1;
      }
      try {
        parseMetricsAddress(value);
      } catch (e) {
        process.stderr.write(`typetun: ${(e as Error).message}\n`);
        return 1;
      }
      // The environment is how the address reaches serve(), here or in the background child.
      process.env.TYPETUN_METRICS = value;
    } else if (a === "--via" || a.startsWith("--via=")) {
      // Multihop (cmd/multihop.ts): hop files, outermost first; they reach serve() as TYPETUN_VIA.
      const value = a === "--via" ? args[++i] : a.slice("--via=".length);
      if (value === undefined) {
        process.stderr.write(USAGE);
        return 1;
      }
      via.push(value);
    } else names.push(a);
  }
  if (names.length !== 1 || !/^[^/\s]{1,15}$/.test(names[0]!) || names[0] === "." || names[0] === "..") {
    process.stderr.write(USAGE);
    return 1;
  }
  const name = names[0]!;
  if (via.length > 0) {
    try {
      process.env.TYPETUN_VIA = viaToEnv(via);
    } catch (e) {
      process.stderr.write(`typetun: ${(e as Error).message}\n`);
      return 1;
    }
  }
  if (!foreground) return await startInBackground(name, user ? ["--user", user.name] : []);
  const log = new Logger(levelFromEnv(process.env.LOG_LEVEL), name);
  return await serve(name, log, process.env.TYPETUN_READY_FD === "stdout", { user });
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
function startInBackground(name: string, extra: string[] = []): Promise<number> {
  const [cmd, pre] = selfCommand();
  let stdio;
  try {
    // WG_TUN_FD and WG_UAPI_FD pass on to the daemon at the same numbers.
    stdio = stdioPassing(["ignore", "pipe", "pipe"]);
  } catch (e) {
    process.stderr.write(`typetun: ${(e as Error).message}\n`);
    return Promise.resolve(1);
  }
  const child = spawn(cmd, [...pre, "-f", ...extra, name], {
    detached: true,
    stdio,
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
export async function serve(
  name: string,
  log: Logger,
  reportReady: boolean,
  options: { user?: RunAs } = {},
): Promise<number> {
  let sockPath = `${SOCKET_DIR}/${name}.sock`;
  // Descriptors a supervisor handed in (WG_TUN_FD, WG_UAPI_FD; cmd/handoff.ts), as wireguard-go takes them.
  let uapiFd: number | null = null;
  let tun: Tun, bind: UdpBind, links: LinkMonitor, server: UapiServer, transport: AeadSelection;
  let scale: number, x25519: X25519, warmup: boolean, connCapacity: number;
  let metrics: MetricsServer | null = null;
  let hops: HopSpec[] = [], mtu = DEFAULT_MTU;
  try {
    scale = timeScale();
    // Multihop: the hop files are read and checked before anything is created.
    hops = await readHops(viaFromEnv());
    // wg0 inside its hops: the entry hop's MTU less each layer's overhead (IPv6 for wg0's own, unknown yet).
    if (hops.length > 0) mtu = multihopMtu(hops[0]!.cfg.mtu ?? DEFAULT_MTU, [...innerFamilies(hops), 6]);
    connCapacity = connectionCapacityFromEnv();
    const metricsAt = metricsAddressFromEnv();
    // Before the interface exists: TYPETUN_CRYPTO=native without a library is refused with nothing to undo.
    transport = selectAead();
    x25519 = selectX25519();
    const offload = offloadsWanted();
    warmup = warmupWanted();
    compiledAeadWanted(); // TYPETUN_CC: a bad value is refused here
    const tunFd = handedFd("WG_TUN_FD");
    uapiFd = handedFd("WG_UAPI_FD");
    const adopted = tunFd === null ? null : adoptTun(tunFd, { vnetHdr: offload });
    // wireguard-go names the socket after the interface the descriptor is attached to.
    if (adopted) sockPath = `${SOCKET_DIR}/${adopted.name}.sock`;
    if (uapiFd === null) await claimSocket(sockPath);
    // Before the interface: an address in use is refused with nothing to undo.
    if (metricsAt) metrics = await MetricsServer.listen(metricsAt);
    tun = adopted ?? openTun(name, { vnetHdr: offload });
    setMtu(tun.name, mtu);
    // With hops, the socket is the entry hop's: its ListenPort and FwMark.
    const entry = hops[0]?.cfg;
    bind = UdpBind.open(entry?.listenPort ?? 0, entry?.fwmark ?? 0, { gso: offload, gro: offload });
    links = new LinkMonitor();
    if (uapiFd === null) mkdirSync(SOCKET_DIR, { recursive: true, mode: 0o755 });
    // Tests shorten the idle timeout with the clock, but never below a second (a `wg` command needs less).
    const idleTimeoutMs = Math.max(1000, UAPI_IDLE_TIMEOUT_MS / scale);
    server = await UapiServer.listen(uapiFd === null ? sockPath : { fd: uapiFd }, log, { idleTimeoutMs });
    // Taken: hooks and other children started from here on do not see them.
    delete process.env.WG_TUN_FD;
    delete process.env.WG_UAPI_FD;
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    metrics?.close();
    process.stderr.write(`typetun: ${name}: ${msg}\n`);
    if (reportReady) process.stdout.write(`error\n`);
    return 1;
  }
  const clock = new RoundClock(scale);
  const device = new Device({ clock, rng: systemRng, mtu, aead: transport.aead, x25519 });
  device.listenPort = bind.port;
  // Per-connection statistics and per-peer filters: packet hooks of the device (cmd/connections.ts).
  const connections = new Connections(device, connCapacity);
  // Endpoint names (UAPI endpoint_name=) looked up again while handshakes fail (cmd/reresolve.ts).
  new EndpointResolver(device, log);
  const index = ifIndex(tun.name);
  if (scale !== 1) {
    log.error(
      `TYPETUN_TEST_TIME_SCALE: the protocol clock runs ${scale}× fast, and UAPI clients idle out ` +
        `${scale}× sooner (tests only)`,
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
    `Offloads: TUN ${
      tun.vnetHdr ? `vnet header, TSO ${onOff(tun.offload)}, USO ${onOff(tun.uso)}` : "off"
    }; UDP ` +
      udpOffloads.filter(Boolean).join(", "),
  );

  const poller = new Poller();
  const tunSlot = poller.watch(tun.fd);
  const linkSlot = poller.watch(links.fd);
  // One packet memory for the TUN's and the sockets' buffers: copies between them are memmoves.
  const memory = new PacketMemory(TUN_MEMORY_BYTES + UDP_MEMORY_BYTES);
  const packets = new TunDevice({
    file: tun,
    ready: () => poller.readable(tunSlot),
    ifindex: index,
    links: { ready: () => poller.readable(linkSlot), read: () => links.read() },
    mtu,
    log,
    memory,
  });
  const udp = new UdpTransport(bind, poller, memory);
  // Multihop: wg0's datagrams go through the hops' Devices (cmd/multihop.ts), not to the socket.
  const multihop = hops.length === 0 ? null : new Multihop(hops, {
    clock,
    rng: systemRng,
    aead: transport.aead,
    x25519,
    udp,
    waker: poller,
    inner: device,
    port: bind.port,
    defaultMtu: DEFAULT_MTU,
  });
  const loop = new DataPlane({
    device,
    packets,
    transport: multihop?.transport ?? udp,
    clock,
    waker: multihop?.waker ?? poller,
    log,
  });
  if (multihop) {
    log.info(`Multihop through ${hops.map((h) => h.path).join(" → ")}; hop UAPI as ${name}.hopN.uapi`);
    const idleTimeoutMs = Math.max(1000, UAPI_IDLE_TIMEOUT_MS / scale);
    await multihop.serve(SOCKET_DIR, name, log, async (path, handle, n) => {
      const s = await UapiServer.listen(path, log, { idleTimeoutMs });
      s.serve(handle);
      // `up -f`'s reload reaches the hop from this process, also after --user (cmd/multihop.ts).
      const withdraw = serveInProcess(hopUapiName(name, n), handle);
      return () => {
        s.close();
        withdraw();
      };
    }, () => poller.wake());
  }
  if (metrics) {
    metrics.source = daemonMetricsSource(tun.name, loop, tun, udp, scale, connections, multihop);
    log.info(`Metrics on http://${process.env.TYPETUN_METRICS}/metrics and /healthz`);
  }
  // `typetun capture` (cmd/capture_server.ts), beside the UAPI socket; without it the daemon still runs.
  const listening = CaptureServer.listen(capturePath(name, SOCKET_DIR), loop, tun.name, index, log, multihop);
  const capture = await listening.catch((e) => {
    log.error(`No capture socket (typetun capture will not work): ${e instanceof Error ? e.message : e}`);
    return null;
  });
  const onSignal = (sig: string) => () => loop.stop(`received ${sig}`);
  process.on("SIGINT", onSignal("SIGINT"));
  process.on("SIGTERM", onSignal("SIGTERM"));

  // The JIT optimizes the packet path only after thousands of packets: warm it on a private pair
  // (cmd/warmup.ts), in slices between the loop's turns, so the first real packets run fast. It starts once the
  // first configuration is applied (or WARMUP_DELAY_MS after the UAPI listens): a daemon that is starting up,
  // or another one started next to it, does not compete with it for the CPU.
  // On Bun, libcrypto's AEAD then moves to one compiled call per message (cmd/crypto.ts compiledAead): the
  // compile takes a few ms, which start → UAPI does not wait for.
  const upgradeAead = () => {
    const r = compiledAead(transport);
    if (r === null) return;
    if ("reason" in r) return log.info(`Transport AEAD stays ${transport.name}: ${r.reason}`);
    transport = r;
    device.aead = r.aead;
    log.info(`Transport AEAD: ${r.name}`);
  };
  let warmupTimer: ReturnType<typeof setTimeout> | null = null;
  const startWarmup = () => {
    if (warmupTimer === null) return;
    clearTimeout(warmupTimer);
    warmupTimer = null;
    upgradeAead();
    if (!warmup) return;
    warmUp({
      aead: transport.aead,
      x25519,
      rng: systemRng,
      udp: bind.offloads,
      vnetHdr: tun.vnetHdr,
      offload: tun.offload,
      mtu: DEFAULT_MTU,
      cancelled: () => loop.stopped !== null,
      pending: () => poller.pending(),
    }).then(
      (r) =>
        log.debug(`Warmed the packet path: ${r.delivered[0]} packets each way, ${r.busyMs.toFixed(0)} ms`),
      (e) => log.error(`Warming the packet path failed (only the first packets are slower): ${e}`),
    );
  };
  warmupTimer = setTimeout(startWarmup, WARMUP_DELAY_MS);

  const handle = (req: UapiRequest) => {
    if (warmupTimer !== null && req.op === "set") setTimeout(startWarmup, 0);
    // Multihop: an inner endpoint the hops cannot carry is refused, with the reason in the log.
    const refused = multihop && req.op === "set" ? multihop.refuse(req.body) : null;
    if (refused) {
      log.error(`UAPI set refused: ${refused}`);
      return formatErrno(EINVAL);
    }
    const reply = handleUapi(req, loop, udp, connections, multihop !== null);
    // A change may have queued handshakes or keepalives, or moved a deadline; a get changes nothing.
    if (req.op === "set") poller.wake();
    return reply;
  };
  server.serve(handle);
  // As wireguard-go: deleting the socket file stops the daemon (inotify, no polling; cmd/handoff.ts).
  const unwatch = watchSocketFile(sockPath, (why) => loop.stop(why));
  // `up -f` talks to this daemon from the same process (reload, SaveConfig), also after --user.
  const withdraw = serveInProcess(name, handle);
  // --user: what needs root is done (the TUN, the sockets, the UAPI socket); CAP_NET_ADMIN is all that stays.
  let dropFailed = false;
  if (options.user) {
    const { name: who, uid, gid } = options.user;
    try {
      becomeUser(options.user);
      log.info(`Running as user ${who} (uid ${uid}, gid ${gid}) with CAP_NET_ADMIN only`);
    } catch (e) {
      log.error(`--user ${who}: ${e instanceof Error ? e.message : e}`);
      if (reportReady) process.stdout.write("error\n");
      dropFailed = true;
      loop.stop("could not change user");
    }
  }
  if (reportReady && !dropFailed) {
    // Started in the background: the parent reads this line and exits, taking the pipes with it. From here on
    // the daemon has no terminal to talk to (as wireguard-go's detached child), so logging stops.
    process.stdout.write("ready\n");
    process.stdout.on("error", () => {});
    process.stderr.on("error", () => {});
    log.level = Level.Silent;
  }

  let exitCode = dropFailed ? 1 : 0;
  try {
    await loop.run();
  } catch (e) {
    log.error(`Data plane failed: ${e instanceof Error ? e.message : e}`);
    exitCode = 1;
  }
  withdraw();
  unwatch();
  server.close();
  capture?.close();
  if (multihop) {
    multihop.close();
    for (const line of multihop.summary()) log.info(line);
  }
  if (warmupTimer !== null) clearTimeout(warmupTimer);
  metrics?.close();
  try {
    // An inherited socket's file belongs to whoever bound it (wireguard-go leaves it too).
    if (uapiFd === null) unlinkSync(sockPath);
  } catch {
    // Already gone.
  }
  udp.close();
  tun.close();
  links.close();
  poller.close();
  process.removeAllListeners("SIGINT");
  process.removeAllListeners("SIGTERM");
  return exitCode;
}

const onOff = (on: boolean) => (on ? "on" : "off");

/** One UAPI request against the running device (cmd-side effects: rebinding the port, the fwmark). */
function handleUapi(
  req: UapiRequest,
  loop: DataPlane,
  udp: UdpTransport,
  connections: Connections,
  hops = false,
): string {
  const device = loop.device;
  loop.clock.tick();
  if (req.op === "error") return formatErrno(req.errno);
  if (req.op === "get") return formatGet(device.info()) + formatErrno(0);
  if (req.op === "connections") return connections.reply() + formatErrno(0);
  const parsed = parseSet(req.body);
  if (!parsed.ok) {
    loop.log.error(`UAPI set refused: ${parsed.message}`);
    return formatErrno(parsed.errno);
  }
  const update = parsed.value;
  // Behind hops wg0's port is only the source port inside the entry hop's tunnel: no socket to rebind.
  if (hops && update.listenPort !== undefined) update.listenPort = update.listenPort || device.listenPort;
  // Sockets first: if the port is taken nothing else changes (the whole set is refused, as one operation).
  if ((!hops && update.listenPort !== undefined) || update.fwmark !== undefined) {
    const port = update.listenPort ?? device.listenPort;
    const mark = update.fwmark ?? device.fwmark;
    try {
      if (!hops && port !== device.listenPort) udp.rebind(UdpBind.open(port, mark, udp.bind.offloads));
      else if (mark !== device.fwmark) udp.bind.setMark(mark);
    } catch (e) {
      loop.log.error(`UAPI set refused: ${e instanceof Error ? e.message : e}`);
      return formatErrno(EADDRINUSE);
    }
    if (!hops) update.listenPort = udp.bind.port;
  }
  device.apply(update);
  connections.applied(update);
  // What the change sent (a keepalive when persistent keepalive is turned on) leaves now, not at the next round.
  loop.transport.flush();
  return formatErrno(0);
}
