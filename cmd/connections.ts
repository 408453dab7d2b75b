/**
 * Per-connection statistics and per-peer filters, wired to the daemon and the CLI:
 * - in the daemon, {@link Connections} owns lib/connstats.ts's ConnStats and lib/filter.ts's PacketFilter,
 *   installs them as the device's packet hooks only while they have something to do, applies the filter keys of
 *   a UAPI set, and answers typetun's `get=connections` request;
 * - `typetun show IF connections [--json]` asks for it and prints the connections by bytes.
 * @module
 */
import process from "node:process";
import {
  byBytes,
  type ConnectionsReply,
  ConnStats,
  DEFAULT_CONNECTION_CAPACITY,
  endpointText,
  formatConnectionMetrics,
  formatConnections,
  parseConnections,
} from "../lib/connstats.ts";
import type { Device } from "../lib/device.ts";
import { keyToBase64, keyToHex } from "../lib/encoding.ts";
import { formatRules, PacketFilter } from "../lib/filter.ts";
import { CONNECTIONS_REQUEST_TEXT, type DeviceUpdate } from "../lib/uapi.ts";
import { InterfaceError, uapiRequest } from "./uapi_client.ts";

/**
 * How many connections the statistics keep, from `TYPETUN_CONNECTIONS`: unset or `on` is the default
 * capacity, a number of at least 16 that capacity, `0` or `off` turns the statistics off (the filter works
 * either way).
 */
export function connectionCapacityFromEnv(value = process.env.TYPETUN_CONNECTIONS): number {
  if (value === undefined || value === "" || value === "on" || value === "1") {
    return DEFAULT_CONNECTION_CAPACITY;
  }
  if (value === "0" || value === "off") return 0;
  const n = Number(value);
  if (!/^[0-9]+$/.test(value) || n < 16 || n > 1 << 24) {
    throw new Error(
      `TYPETUN_CONNECTIONS must be on, off, or a capacity from 16 to ${1 << 24}, not "${value}"`,
    );
  }
  return n;
}

/** The daemon's statistics and filter. */
export class Connections {
  readonly stats: ConnStats | null;
  readonly filter: PacketFilter;

  constructor(readonly device: Device, capacity: number) {
    this.stats = capacity > 0 ? new ConnStats(capacity) : null;
    this.filter = new PacketFilter(device.clock);
    this.#install();
  }

  /** After `device.apply(update)`: the filter keys of the update, and forgetting removed peers. */
  applied(update: DeviceUpdate): void {
    for (const u of update.peers) {
      if (u.remove || (u.allowInbound === undefined && u.allowOutbound === undefined)) continue;
      const peer = this.device.peer(u.publicKey);
      if (peer) this.filter.set(peer, u.allowInbound, u.allowOutbound);
    }
    this.filter.prune();
    this.stats?.prune();
    this.#install();
  }

  /**
   * Puts the hooks first in the device's list (others, such as capture, stay behind them): the filter before
   * the statistics, so what it drops is not counted, and only while some peer has rules.
   */
  #install(): void {
    const hooks = this.device.hooks;
    for (const h of [this.filter, this.stats]) {
      const i = h ? hooks.indexOf(h) : -1;
      if (i >= 0) hooks.splice(i, 1);
    }
    if (this.stats) hooks.unshift(this.stats);
    if (this.filter.active) hooks.unshift(this.filter);
  }

  /** The answer to `get=connections`, without its errno line. */
  reply(): string {
    return formatConnections(this.report());
  }

  report(): ConnectionsReply {
    const filters = [];
    for (const peer of this.device.peers.values()) {
      const r = this.filter.rulesOf(peer);
      if (!r) continue;
      filters.push({
        publicKey: peer.publicKey,
        allowInbound: formatRules(r.inbound),
        allowOutbound: formatRules(r.outbound),
        droppedInbound: r.droppedInbound,
        droppedOutbound: r.droppedOutbound,
      });
    }
    return { statistics: this.stats?.report() ?? null, filters };
  }

  /** The busiest connections for /metrics (nothing when the statistics are off). */
  metrics(ifname: string): string {
    return this.stats ? formatConnectionMetrics(ifname, this.stats.report()) : "";
  }
}

// ---- typetun show IF connections ----

/** Asks the daemon of `ifname` for its connections; an implementation without the extension is an error. */
export async function fetchConnections(ifname: string): Promise<ConnectionsReply> {
  let reply: string;
  try {
    reply = await uapiRequest(ifname, CONNECTIONS_REQUEST_TEXT);
  } catch (e) {
    if (e instanceof InterfaceError) throw e;
    throw new Error(`${ifname}: ${(e as Error).message}`);
  }
  // wireguard-go and boringtun close the connection on an operation they do not know.
  if (reply === "") throw new Error(`${ifname} does not report connections (it is not served by typetun)`);
  return parseConnections(reply);
}

/**
 * The peers (hex keys) the daemon of `ifname` filters, for syncconf and reload: a get does not show typetun's
 * filters, so without this a filter the file dropped from every peer would stay (lib/setconf.ts syncUpdate).
 * A daemon that is not typetun's (wireguard-go closes the connection on `get=connections`, and logs "invalid
 * UAPI operation") has no filters: the empty set, so syncconf goes on as wg's.
 */
export async function runningFilters(ifname: string): Promise<Set<string>> {
  try {
    return new Set((await fetchConnections(ifname)).filters.map((f) => keyToHex(f.publicKey)));
  } catch {
    return new Set();
  }
}

/** The text of `typetun show IF connections`. */
export function formatConnectionTable(r: ConnectionsReply): string {
  const lines: string[] = [];
  const s = r.statistics;
  if (!s) {
    lines.push("statistics: off (start the daemon with TYPETUN_CONNECTIONS=on)");
  } else {
    lines.push(`connections: ${s.connections.length} of ${s.capacity}, ${s.evicted} evicted`);
    const rows = [["proto", "local", "remote", "peer", "tx packets", "tx bytes", "rx packets", "rx bytes"]];
    for (const c of [...s.connections].sort(byBytes)) {
      rows.push([
        c.proto,
        endpointText(c.local, c.localPort),
        endpointText(c.remote, c.remotePort),
        keyToBase64(c.publicKey).slice(0, 8) + "…",
        String(c.txPackets),
        String(c.txBytes),
        String(c.rxPackets),
        String(c.rxBytes),
      ]);
    }
    const width = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    for (const row of rows) {
      lines.push(
        row.map((v, i) => (i >= 4 ? v.padStart(width[i]!) : v.padEnd(width[i]!))).join("  ").trimEnd(),
      );
    }
    for (const p of s.peers) {
      lines.push(
        `peer ${keyToBase64(p.publicKey)}: tx ${p.txPackets} packets ${p.txBytes} bytes, ` +
          `rx ${p.rxPackets} packets ${p.rxBytes} bytes`,
      );
    }
  }
  for (const f of r.filters) {
    lines.push(
      `filter ${keyToBase64(f.publicKey)}: inbound ${f.allowInbound} (${f.droppedInbound} dropped), ` +
        `outbound ${f.allowOutbound} (${f.droppedOutbound} dropped)`,
    );
  }
  return lines.join("\n") + "\n";
}

/** `--json`: the reply with keys in base64, connections by bytes from the most. */
export function connectionsJson(r: ConnectionsReply): unknown {
  const b64 = <T extends { publicKey: Uint8Array }>(x: T) => ({ ...x, publicKey: keyToBase64(x.publicKey) });
  const s = r.statistics;
  return {
    statistics: s
      ? {
        capacity: s.capacity,
        evicted: s.evicted,
        peers: s.peers.map(b64),
        connections: [...s.connections].sort(byBytes).map(b64),
      }
      : null,
    filters: r.filters.map(b64),
  };
}

/** `typetun show IF connections [--json]`. */
export async function showConnections(ifname: string, json: boolean): Promise<number> {
  let r: ConnectionsReply;
  try {
    r = await fetchConnections(ifname);
  } catch (e) {
    process.stderr.write(`Unable to access interface: ${(e as Error).message}\n`);
    return 1;
  }
  process.stdout.write(json ? JSON.stringify(connectionsJson(r), null, 2) + "\n" : formatConnectionTable(r));
  return 0;
}
