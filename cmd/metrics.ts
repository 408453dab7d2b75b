/**
 * The daemon's metrics endpoint, `--metrics ADDR:PORT` (or `TYPETUN_METRICS=ADDR:PORT`): an HTTP server on the
 * main thread's event loop serving
 * - `/metrics`: Prometheus text format 0.0.4 (lib/metrics.ts formats it);
 * - `/healthz`: the health verdict of lib/health.ts, 200 or 503 with its one line;
 *   `?max-handshake-age=SECONDS` sets the age (default REJECT_AFTER_TIME, divided by TYPETUN_TEST_TIME_SCALE).
 *
 * Like the UAPI server, it shares the event loop with the data plane, which serves it between rounds
 * (cmd/dataplane.ts): a scrape never waits on packets and packets wait only for one formatting, whose cost
 * grows with the number of peers and not with traffic.
 * @module
 */
import type { Connections } from "./connections.ts";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import process from "node:process";
import { DEFAULT_MAX_HANDSHAKE_AGE, handshakeHealth, type HealthVerdict } from "../lib/health.ts";
import { parseAddress, splitHostPort } from "../lib/ip.ts";
import {
  formatHopMetrics,
  formatMetrics,
  type HopSnapshot,
  type OffloadState,
  snapshotDevice,
} from "../lib/metrics.ts";
import type { Tun } from "../ffi/tun.ts";
import type { DataPlane } from "./dataplane.ts";
import type { UdpTransport } from "./udp_transport.ts";

/** The port prometheus_wireguard_exporter listens on, used in the examples. */
export const EXAMPLE_METRICS_ADDRESS = "127.0.0.1:9586";

/** Where to listen: an IP literal (null: every address) and a port. */
export interface MetricsAddress {
  host: string | null;
  port: number;
}

/**
 * Parses `ADDR:PORT`: `127.0.0.1:9586`, `[::1]:9586`, or `:9586` for every address. Throws an Error whose
 * message says what is wrong and what is expected.
 */
export function parseMetricsAddress(value: string): MetricsAddress {
  const hp = splitHostPort(value);
  const fail = (why: string) =>
    new Error(
      `--metrics "${value}": ${why}; expected ADDR:PORT, such as ${EXAMPLE_METRICS_ADDRESS}, [::1]:9586 or :9586`,
    );
  if (!hp) throw fail("not ADDR:PORT with a decimal port");
  if (hp.port === 0) throw fail("the port must be 1 to 65535");
  if (hp.host === "" && !hp.bracketed) return { host: null, port: hp.port };
  if (!hp.bracketed && hp.host.includes(":")) throw fail("an IPv6 address must be in brackets");
  if (!parseAddress(hp.host)) throw fail(`"${hp.host}" is not an IP address`);
  return { host: hp.host, port: hp.port };
}

/** TYPETUN_METRICS (how `up` and `--metrics` hand the address to the daemon), or null when unset. */
export function metricsAddressFromEnv(value = process.env.TYPETUN_METRICS): MetricsAddress | null {
  return value === undefined || value === "" ? null : parseMetricsAddress(value);
}

/** What the server reports; null until the device exists. */
export interface MetricsSource {
  metrics(): string;
  /** `maxAgeMs` undefined: the source's default. */
  health(maxAgeMs?: number): HealthVerdict;
}

/**
 * The figures of a running daemon: its loop's device and the offloads of its TUN and UDP sockets, its busiest
 * connections, and its hops when it has some (cmd/multihop.ts Multihop.snapshots).
 */
export function daemonMetricsSource(
  ifname: string,
  loop: DataPlane,
  tun: Tun,
  udp: UdpTransport,
  timeScale: number,
  connections: Connections | null = null,
  hops: { snapshots(): HopSnapshot[] } | null = null,
): MetricsSource {
  const offloads = (): OffloadState[] => {
    const out: OffloadState[] = [
      { offload: "tun_vnet_header", enabled: tun.vnetHdr },
      { offload: "tun_tso", enabled: tun.offload },
    ];
    // Read at each scrape: a change of listen port rebinds the sockets, and GSO is dropped after EIO.
    for (const u of [udp.bind.v4, udp.bind.v6]) {
      if (!u) continue;
      out.push({ offload: `udp${u.family}_gso`, enabled: u.gso }, {
        offload: `udp${u.family}_gro`,
        enabled: u.gro,
      });
    }
    return out;
  };
  return {
    metrics() {
      loop.clock.tick(); // the loop may be idle: "under load" compares with the time now
      return formatMetrics(snapshotDevice(loop.device, ifname, offloads())) +
        (connections?.metrics(ifname) ?? "") + (hops ? formatHopMetrics(ifname, hops.snapshots()) : "");
    },
    health(maxAgeMs = DEFAULT_MAX_HANDSHAKE_AGE / timeScale) {
      return handshakeHealth(loop.device.info().peers, loop.clock.wall(), maxAgeMs);
    },
  };
}

/** The HTTP server of `/metrics` and `/healthz`. */
export class MetricsServer {
  /** Set once the device exists; until then both paths answer 503. */
  source: MetricsSource | null = null;
  readonly #server: Server;

  private constructor(server: Server) {
    this.#server = server;
  }

  /** Listens on `addr`; rejects with an Error that names the address (in use, not on this host, …). */
  static listen(addr: MetricsAddress): Promise<MetricsServer> {
    const server = createServer();
    const self = new MetricsServer(server);
    server.on("request", (req, res) => self.#handle(req, res));
    const shown = addr.host === null
      ? `:${addr.port}`
      : addr.host.includes(":")
      ? `[${addr.host}]:${addr.port}`
      : `${addr.host}:${addr.port}`;
    return new Promise((resolve, reject) => {
      server.once("error", (e: NodeJS.ErrnoException) => {
        const why = e.code === "EADDRINUSE"
          ? "address already in use"
          : e.code === "EADDRNOTAVAIL"
          ? "no such address on this host"
          : e.code === "EACCES"
          ? "permission denied (a port below 1024 needs CAP_NET_BIND_SERVICE)"
          : e.message;
        reject(new Error(`--metrics ${shown}: ${why}`));
      });
      server.listen({ host: addr.host ?? undefined, port: addr.port }, () => {
        server.removeAllListeners("error");
        server.on("error", () => {}); // per-connection trouble is node's to handle; the tunnel goes on
        resolve(self);
      });
    });
  }

  /** The port listened on (the one asked for, or the one given for port 0). */
  get port(): number {
    const a = this.#server.address();
    return typeof a === "object" && a ? a.port : 0;
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? "/", "http://metrics.invalid");
    const head = req.method === "HEAD";
    const reply = (status: number, type: string, body: string, extra: Record<string, string> = {}) => {
      res.writeHead(status, { "content-type": type, "cache-control": "no-store", ...extra });
      res.end(head ? undefined : body);
    };
    const text = "text/plain; charset=utf-8";
    if (req.method !== "GET" && !head) return reply(405, text, "only GET and HEAD\n", { allow: "GET, HEAD" });
    if (url.pathname !== "/metrics" && url.pathname !== "/healthz") {
      return reply(404, text, "not found: the paths are /metrics and /healthz\n");
    }
    const source = this.source;
    if (!source) return reply(503, text, "starting: the interface is not up yet\n");
    if (url.pathname === "/metrics") {
      return reply(200, "text/plain; version=0.0.4; charset=utf-8", source.metrics());
    }
    const age = url.searchParams.get("max-handshake-age");
    const maxAgeMs = age === null ? undefined : parseMaxAge(age);
    if (maxAgeMs === null) {
      return reply(400, text, `max-handshake-age "${age}": not a positive number of seconds\n`);
    }
    const v = source.health(maxAgeMs);
    reply(v.healthy ? 200 : 503, text, `${v.healthy ? "healthy" : "unhealthy"}: ${v.reason}\n`);
  }

  /** Stops listening and ends open connections (a scraper's keep-alive must not hold the daemon). */
  close(): void {
    this.#server.close();
    (this.#server as { closeAllConnections?: () => void }).closeAllConnections?.();
  }
}

/** A positive number of seconds (fractions allowed) as ms, or null. */
export function parseMaxAge(s: string): number | null {
  if (!/^[0-9]+(\.[0-9]+)?$/.test(s)) return null;
  const ms = Number(s) * 1000;
  return ms > 0 && Number.isFinite(ms) ? ms : null;
}
