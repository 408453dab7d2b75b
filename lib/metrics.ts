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
  return NEEDS_ESCAPE.test(v) ? v.replace(/[\\"\n]/g, (c) => (c === "\n" ? "\\n" : `\\${c}`)) : v;
}
const NEEDS_ESCAPE = /[\\"\n]/;

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

/** Builds one exposition: each family's HELP and TYPE once, then its samples. */
class Exposition {
  #out: string[] = [];

  family(name: string, type: "counter" | "gauge", help: string): this {
    this.#out.push(`# HELP ${name} ${escapeHelp(help)}\n# TYPE ${name} ${type}\n`);
    return this;
  }

  /** A sample; `labelText` is `{name="value",...}`, values escaped. */
  sample(name: string, labelText: string, value: number): this {
    this.#out.push(`${name}${labelText} ${formatValue(value)}\n`);
    return this;
  }

  toString(): string {
    return this.#out.join("");
  }
}

/**
 * `public_key="...",allowed_ips="..."` of a peer. Made once per key and per list of allowed IPs: a device hands
 * out the same key object and, until the peer's allowed IPs change, the same list at every scrape, so a scrape
 * of many peers does not encode them all again.
 */
const peerLabelCache = new WeakMap<Uint8Array, { ips: readonly unknown[]; text: string }>();

function peerLabelText(p: PeerInfo): string {
  const hit = peerLabelCache.get(p.publicKey);
  if (hit && hit.ips === p.allowedIps) return hit.text;
  // Allowed IPs as `wg show dump` lists them, which the exporter passes on as they are.
  const ips = p.allowedIps.length ? p.allowedIps.map(formatCidrLikeWg).join(",") : "(none)";
  const text = `public_key="${escapeLabelValue(keyToBase64(p.publicKey))}",allowed_ips="${
    escapeLabelValue(ips)
  }"`;
  peerLabelCache.set(p.publicKey, { ips: p.allowedIps, text });
  return text;
}

/** The text a scrape of `/metrics` returns (content type `text/plain; version=0.0.4`). */
export function formatMetrics(s: MetricsSnapshot): string {
  const e = new Exposition();
  const iface = `interface="${escapeLabelValue(s.interface)}"`;
  const only = `{${iface}}`;
  const peerText = s.peers.map((p) => `{${iface},${peerLabelText(p)}}`);

  e.family("wireguard_sent_bytes_total", "counter", "Bytes sent to the peer");
  s.peers.forEach((p, i) => e.sample("wireguard_sent_bytes_total", peerText[i]!, p.txBytes));
  e.family("wireguard_received_bytes_total", "counter", "Bytes received from the peer");
  s.peers.forEach((p, i) => e.sample("wireguard_received_bytes_total", peerText[i]!, p.rxBytes));
  e.family(
    "wireguard_latest_handshake_seconds",
    "gauge",
    "UNIX timestamp seconds of the last handshake",
  );
  s.peers.forEach((p, i) =>
    e.sample("wireguard_latest_handshake_seconds", peerText[i]!, Math.floor(p.lastHandshakeMs / 1000))
  );

  e.family("typetun_packets_dropped_total", "counter", "Packets and datagrams dropped, by reason");
  for (const d of s.drops) {
    e.sample("typetun_packets_dropped_total", `{${iface},reason="${escapeLabelValue(d.reason)}"}`, d.count);
  }
  e.family("typetun_handshakes_initiated_total", "counter", "Handshake initiations sent, retries included");
  e.sample("typetun_handshakes_initiated_total", only, s.handshakesInitiated);
  e.family("typetun_handshakes_completed_total", "counter", "Handshakes completed (a session confirmed)");
  e.sample("typetun_handshakes_completed_total", only, s.handshakesCompleted);
  e.family(
    "typetun_handshakes_failed_total",
    "counter",
    "Handshake initiations that got no response within REKEY_TIMEOUT",
  );
  e.sample("typetun_handshakes_failed_total", only, s.handshakesFailed);
  e.family("typetun_cookie_replies_sent_total", "counter", "Cookie replies sent while under load");
  e.sample("typetun_cookie_replies_sent_total", only, s.cookieRepliesSent);
  e.family("typetun_under_load", "gauge", "Whether the device is under load and demands cookies (0 or 1)");
  e.sample("typetun_under_load", only, s.underLoad ? 1 : 0);
  e.family("typetun_keypairs", "gauge", "Session keypairs in use over all peers");
  e.sample("typetun_keypairs", only, s.keypairs);
  e.family("typetun_offload_enabled", "gauge", "Whether an offload is in use (0 or 1)");
  for (const o of s.offloads) {
    e.sample(
      "typetun_offload_enabled",
      `{${iface},offload="${escapeLabelValue(o.offload)}"}`,
      o.enabled ? 1 : 0,
    );
  }
  return e.toString();
}

/**
 * One hop of a multihop interface (cmd/multihop.ts), 1 being the entry: its relay peer's figures and what it
 * dropped. `drops` are the hop device's own reasons (as {@link MetricsSnapshot.drops}) and the hop's: packets
 * its relay sent that were not a UDP datagram for the tunnel inside (`not_udp`, `not_for_us`, …).
 */
export interface HopSnapshot {
  hop: number;
  peers: readonly PeerInfo[];
  drops: readonly { reason: string; count: number }[];
}

/**
 * The series of a multihop interface's hops, labelled `interface` and `hop` (then `public_key` and
 * `allowed_ips` for the relay peer): typetun_hop_sent_bytes_total, typetun_hop_received_bytes_total,
 * typetun_hop_latest_handshake_seconds and typetun_hop_packets_dropped_total. They are not wireguard_* series,
 * so a dashboard that sums an interface's traffic does not count wg0's bytes again in their hops'. Nothing
 * without hops.
 */
export function formatHopMetrics(ifname: string, hops: readonly HopSnapshot[]): string {
  if (hops.length === 0) return "";
  const e = new Exposition();
  const iface = `interface="${escapeLabelValue(ifname)}"`;
  const peerRows = hops.flatMap((h) =>
    h.peers.map((p) => ({ p, labels: `{${iface},hop="${h.hop}",${peerLabelText(p)}}` }))
  );
  e.family("typetun_hop_sent_bytes_total", "counter", "Bytes a hop sent to its relay peer");
  for (const { p, labels } of peerRows) e.sample("typetun_hop_sent_bytes_total", labels, p.txBytes);
  e.family("typetun_hop_received_bytes_total", "counter", "Bytes a hop received from its relay peer");
  for (const { p, labels } of peerRows) e.sample("typetun_hop_received_bytes_total", labels, p.rxBytes);
  e.family(
    "typetun_hop_latest_handshake_seconds",
    "gauge",
    "UNIX timestamp seconds of a hop's last handshake with its relay peer",
  );
  for (const { p, labels } of peerRows) {
    e.sample("typetun_hop_latest_handshake_seconds", labels, Math.floor(p.lastHandshakeMs / 1000));
  }
  e.family("typetun_hop_packets_dropped_total", "counter", "Packets and datagrams a hop dropped, by reason");
  for (const h of hops) {
    for (const d of h.drops) {
      e.sample(
        "typetun_hop_packets_dropped_total",
        `{${iface},hop="${h.hop}",reason="${escapeLabelValue(d.reason)}"}`,
        d.count,
      );
    }
  }
  return e.toString();
}
