/**
 * Prometheus metrics of a device, in the text exposition format 0.0.4: formatting only, no I/O (the HTTP
 * server is cmd/metrics.ts).
 *
 * The per-peer families carry the names, labels and types of prometheus_wireguard_exporter, so dashboards made
 * for kernel WireGuard work unchanged: `wireguard_sent_bytes_total`, `wireguard_received_bytes_total` and
 * `wireguard_latest_handshake_seconds`, labelled `interface`, `public_key`, `allowed_ips` in that order. What
 * only typetun knows is under `typetun_`: drops by reason, handshakes, cookie replies, load, keypairs, offloads.
 *
 * A scrape costs one pass over the peers and the drop reasons, whatever the traffic: every figure is a counter
 * the device keeps anyway.
 * @module
 */
import { formatCidrLikeWg } from "./config.ts";
import { type Device, DROP_REASONS, Verdict } from "./device.ts";
import { keyToBase64 } from "./encoding.ts";
import type { PeerInfo } from "./uapi.ts";

/** One offload and whether it is in use, e.g. `{ offload: "tun_tso", enabled: true }`. */
export interface OffloadState {
  offload: string;
  enabled: boolean;
}

/** Everything one scrape reports: a device's figures at one moment. */
export interface MetricsSnapshot {
  interface: string;
  peers: readonly PeerInfo[];
  /** Packets and datagrams dropped, by reason name (see {@link dropReasonName}). */
  drops: readonly { reason: string; count: number }[];
  handshakesInitiated: number;
  handshakesCompleted: number;
  handshakesFailed: number;
  cookieRepliesSent: number;
  underLoad: boolean;
  keypairs: number;
  offloads: readonly OffloadState[];
}

/** A drop reason as a label value: Verdict.DropNoRoute → `no_route`. */
export function dropReasonName(v: Verdict): string {
  return Verdict[v]!.replace(/^Drop/, "").replace(/[A-Z]/g, (c, at) => (at ? "_" : "") + c.toLowerCase());
}

/** The figures of `device` now; `offloads` come from the I/O side, which alone knows them. */
export function snapshotDevice(
  device: Device,
  ifname: string,
  offloads: readonly OffloadState[],
): MetricsSnapshot {
  return {
    interface: ifname,
    peers: device.info().peers,
    drops: DROP_REASONS.map((v) => ({ reason: dropReasonName(v), count: device.verdicts[v]! })),
    handshakesInitiated: device.handshakesInitiated,
    handshakesCompleted: device.handshakesCompleted,
    handshakesFailed: device.handshakesFailed,
    // Under load, every handshake message without a valid mac2 gets a cookie reply and this verdict, and
    // nothing else sends one: the verdict's counter is the count of cookie replies.
    cookieRepliesSent: device.verdicts[Verdict.DropCookieSent]!,
    underLoad: device.underLoad,
    keypairs: device.keypairCount(),
    offloads,
  };
}

/**
 * A label value as the text format wants it: backslash, double quote and line feed escaped
 * (`\\`, `\"`, `\n`); everything else, any UTF-8, as it is.
 */
export function escapeLabelValue(v: string): string {
  return v.replace(/[\\"\n]/g, (c) => (c === "\n" ? "\\n" : `\\${c}`));
}

/** HELP text escapes only backslash and line feed. */
function escapeHelp(v: string): string {
  return v.replace(/[\\\n]/g, (c) => (c === "\n" ? "\\n" : "\\\\"));
}

/** A sample value: Go's float syntax, with the special values spelled as the format says. */
export function formatValue(n: number): string {
  if (Number.isNaN(n)) return "NaN";
  if (n === Infinity) return "+Inf";
  if (n === -Infinity) return "-Inf";
  return String(n);
}

/** `{a="x",b="y"}` from label pairs in order. */
function labels(pairs: readonly (readonly [string, string])[]): string {
  return `{${pairs.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(",")}}`;
}

/** Builds one exposition: each family's HELP and TYPE once, then its samples. */
class Exposition {
  #out: string[] = [];

  family(name: string, type: "counter" | "gauge", help: string): this {
    this.#out.push(`# HELP ${name} ${escapeHelp(help)}\n# TYPE ${name} ${type}\n`);
    return this;
  }

  sample(name: string, pairs: readonly (readonly [string, string])[], value: number): this {
    this.#out.push(`${name}${labels(pairs)} ${formatValue(value)}\n`);
    return this;
  }

  toString(): string {
    return this.#out.join("");
  }
}

/** The text a scrape of `/metrics` returns (content type `text/plain; version=0.0.4`). */
export function formatMetrics(s: MetricsSnapshot): string {
  const e = new Exposition();
  const iface = ["interface", s.interface] as const;
  const peerLabels = s.peers.map((p) =>
    [
      iface,
      ["public_key", keyToBase64(p.publicKey)],
      // As `wg show dump` lists them, which the exporter passes on as they are.
      ["allowed_ips", p.allowedIps.length ? p.allowedIps.map(formatCidrLikeWg).join(",") : "(none)"],
    ] as const
  );

  e.family("wireguard_sent_bytes_total", "counter", "Bytes sent to the peer");
  s.peers.forEach((p, i) => e.sample("wireguard_sent_bytes_total", peerLabels[i]!, p.txBytes));
  e.family("wireguard_received_bytes_total", "counter", "Bytes received from the peer");
  s.peers.forEach((p, i) => e.sample("wireguard_received_bytes_total", peerLabels[i]!, p.rxBytes));
  e.family(
    "wireguard_latest_handshake_seconds",
    "gauge",
    "UNIX timestamp seconds of the last handshake",
  );
  s.peers.forEach((p, i) =>
    e.sample("wireguard_latest_handshake_seconds", peerLabels[i]!, Math.floor(p.lastHandshakeMs / 1000))
  );

  e.family("typetun_packets_dropped_total", "counter", "Packets and datagrams dropped, by reason");
  for (const d of s.drops) e.sample("typetun_packets_dropped_total", [iface, ["reason", d.reason]], d.count);
  e.family("typetun_handshakes_initiated_total", "counter", "Handshake initiations sent, retries included");
  e.sample("typetun_handshakes_initiated_total", [iface], s.handshakesInitiated);
  e.family("typetun_handshakes_completed_total", "counter", "Handshakes completed (a session confirmed)");
  e.sample("typetun_handshakes_completed_total", [iface], s.handshakesCompleted);
  e.family(
    "typetun_handshakes_failed_total",
    "counter",
    "Handshake initiations that got no response within REKEY_TIMEOUT",
  );
  e.sample("typetun_handshakes_failed_total", [iface], s.handshakesFailed);
  e.family("typetun_cookie_replies_sent_total", "counter", "Cookie replies sent while under load");
  e.sample("typetun_cookie_replies_sent_total", [iface], s.cookieRepliesSent);
  e.family("typetun_under_load", "gauge", "Whether the device is under load and demands cookies (0 or 1)");
  e.sample("typetun_under_load", [iface], s.underLoad ? 1 : 0);
  e.family("typetun_keypairs", "gauge", "Session keypairs in use over all peers");
  e.sample("typetun_keypairs", [iface], s.keypairs);
  e.family("typetun_offload_enabled", "gauge", "Whether an offload is in use (0 or 1)");
  for (const o of s.offloads) {
    e.sample("typetun_offload_enabled", [iface, ["offload", o.offload]], o.enabled ? 1 : 0);
  }
  return e.toString();
}
