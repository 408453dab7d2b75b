/**
 * Per-connection statistics: packets and bytes of the plaintext traffic per connection (protocol, addresses,
 * ports, as lib/tuple.ts reads them) and per peer, in both directions, as Tailscale's tstun extracts them
 * (`ExtractStatistics`). A {@link PacketHook} of the device; the table is bounded (lib/conntrack.ts): when it
 * is full the least recently used connection is evicted, and counted.
 *
 * Directions are the tunnel's: tx is what went out to the peer (read from the TUN), rx what came from it.
 * A connection's local side is this host's. Bytes are IP packet lengths, as the TUN sees them. Later fragments
 * carry no ports: they are counted under their protocol and addresses with ports 0.
 *
 * Nothing is allocated per packet: the tuple, the key and the counters are preallocated.
 * @module
 */
import { ConnTable } from "./conntrack.ts";
import type { PacketHook, Peer } from "./device.ts";
import { keyFromHex, keyToBase64, keyToHex } from "./encoding.ts";
import { formatAddress } from "./ip.ts";
import { escapeLabelValue } from "./metrics.ts";
import {
  Fragment,
  IPPROTO_ICMP,
  IPPROTO_TCP,
  IPPROTO_UDP,
  KEY_WORDS,
  parseTuple,
  Tuple,
  writeKey,
} from "./tuple.ts";

/** Connections kept by default: about 0.5 MB of tables (48 bytes of key and 32 of counters each, and links). */
export const DEFAULT_CONNECTION_CAPACITY = 4096;

/** Recent connections remembered each way (a power of 2). */
const LAST_FLOWS = 8;

/** Counter slots per connection and per peer. */
const TX_PACKETS = 0, TX_BYTES = 1, RX_PACKETS = 2, RX_BYTES = 3, SLOTS = 4;

/** Packets and bytes each way. */
export interface Counts {
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
}

/** One connection as reported. */
export interface ConnectionRecord extends Counts {
  /** The peer's public key (32 bytes). */
  publicKey: Uint8Array;
  /** "tcp", "udp", "icmp" or the protocol number. */
  proto: string;
  local: string;
  localPort: number;
  remote: string;
  remotePort: number;
}

/** Everything the statistics know, at one moment. */
export interface ConnectionsReport {
  capacity: number;
  evicted: number;
  peers: (Counts & { publicKey: Uint8Array })[];
  connections: ConnectionRecord[];
}

export class ConnStats implements PacketHook {
  readonly table: ConnTable;
  /** SLOTS counters per connection entry. */
  readonly #counts: Float64Array;
  readonly #tuple = new Tuple();
  readonly #key = new Uint32Array(KEY_WORDS);
  /** Peers by id (the id is in each connection's key); ids of removed peers are reused. */
  readonly #peers: (Peer | null)[] = [];
  readonly #ids = new Map<Peer, number>();
  #peerCounts = new Float64Array(0);
  /** The last peer looked up: traffic comes in runs, so most packets skip the map. */
  #lastPeer: Peer | null = null;
  #lastId = 0;
  /**
   * Recent connections each way (see {@link LastFlow}), LAST_FLOWS of them, a packet's place chosen by the low
   * bytes of its ports: a flow's packets come back to its place, and a few flows interleaved mostly keep theirs.
   */
  readonly #lastOut = Array.from({ length: LAST_FLOWS }, () => new LastFlow());
  readonly #lastIn = Array.from({ length: LAST_FLOWS }, () => new LastFlow());

  constructor(capacity = DEFAULT_CONNECTION_CAPACITY) {
    this.table = new ConnTable(capacity);
    this.#counts = new Float64Array(capacity * SLOTS);
  }

  outbound(peer: Peer, buf: Uint8Array, off: number, len: number): boolean {
    this.#count(peer, buf, off, len, true);
    return true;
  }

  inbound(peer: Peer, buf: Uint8Array, off: number, len: number): boolean {
    this.#count(peer, buf, off, len, false);
    return true;
  }

  #count(peer: Peer, buf: Uint8Array, off: number, len: number, out: boolean): void {
    const slot = out ? TX_PACKETS : RX_PACKETS;
    // The ports' low bytes (IPv4 with no options, IPv6 with no extension headers; other packets miss anyway).
    const ports = off + (buf[off]! >> 4 === 4 ? 20 : 40);
    const last =
      (out ? this.#lastOut : this.#lastIn)[(buf[ports + 1]! ^ buf[ports + 3]!) & (LAST_FLOWS - 1)]!;
    const counts = this.#counts;
    if (last.peer === peer && last.matches(buf, off, len)) {
      // The same connection as the last packet this way: its entry is still its own (see LastFlow).
      const pc = this.#peerCounts, p = last.peerId * SLOTS + slot, i = last.entry;
      pc[p]!++;
      pc[p + 1]! += len;
      this.table.touch(i);
      counts[i * SLOTS + slot]!++;
      counts[i * SLOTS + slot + 1]! += len;
      return;
    }
    const id = peer === this.#lastPeer ? this.#lastId : this.#idOf(peer);
    const pc = this.#peerCounts;
    pc[id * SLOTS + slot]!++;
    pc[id * SLOTS + slot + 1]! += len;
    const t = this.#tuple;
    if (!parseTuple(t, buf, off, len)) return; // counted for the peer only: it names no connection
    const key = this.#key;
    writeKey(t, out, id, key);
    const table = this.table;
    let i = table.find(key);
    if (i < 0) {
      i = table.insert(key);
      counts.fill(0, i * SLOTS, i * SLOTS + SLOTS);
      // The entry may be an evicted one's, reused: a packet that matches the old connection must miss now.
      for (let f = 0; f < LAST_FLOWS; f++) {
        if (this.#lastOut[f]!.entry === i) this.#lastOut[f]!.forget();
        if (this.#lastIn[f]!.entry === i) this.#lastIn[f]!.forget();
      }
    } else {
      table.touch(i);
    }
    counts[i * SLOTS + slot]!++;
    counts[i * SLOTS + slot + 1]! += len;
    last.remember(peer, id, i, buf, off, t);
  }

  #idOf(peer: Peer): number {
    let id = this.#ids.get(peer);
    if (id === undefined) {
      id = this.#peers.indexOf(null);
      if (id < 0) id = this.#peers.length;
      this.#peers[id] = peer;
      this.#ids.set(peer, id);
      if (this.#peerCounts.length < this.#peers.length * SLOTS) {
        const grown = new Float64Array(Math.max(16, this.#peers.length * 2) * SLOTS);
        grown.set(this.#peerCounts);
        this.#peerCounts = grown;
      }
      this.#peerCounts.fill(0, id * SLOTS, id * SLOTS + SLOTS);
    }
    this.#lastPeer = peer;
    this.#lastId = id;
    return id;
  }

  /** Forgets the peers that were removed from the device (`dead`) and their connections; after a UAPI set. */
  prune(): void {
    const gone = new Set<number>();
    for (const [peer, id] of this.#ids) {
      if (!peer.dead) continue;
      gone.add(id);
      this.#ids.delete(peer);
      this.#peers[id] = null;
    }
    if (gone.size === 0) return;
    this.#lastPeer = null;
    for (const f of [...this.#lastOut, ...this.#lastIn]) f.forget(); // entries move when others are removed
    const table = this.table, counts = this.#counts;
    for (let i = table.size - 1; i >= 0; i--) {
      if (!gone.has(table.keys[i * KEY_WORDS + 1]!)) continue;
      table.remove(i, (from, to) => counts.copyWithin(to * SLOTS, from * SLOTS, from * SLOTS + SLOTS));
    }
  }

  /** The statistics now, connections by bytes (both ways) from the most; peers that are gone are left out. */
  report(): ConnectionsReport {
    const peers: ConnectionsReport["peers"] = [];
    this.#peers.forEach((p, id) => {
      if (p && !p.dead) peers.push({ publicKey: p.publicKey, ...this.#countsAt(this.#peerCounts, id) });
    });
    const connections: ConnectionRecord[] = [];
    const keys = this.table.keys;
    for (const i of this.table.entries()) {
      const k = i * KEY_WORDS;
      const peer = this.#peers[keys[k + 1]!];
      if (!peer || peer.dead) continue;
      const family = keys[k]! >>> 8;
      connections.push({
        publicKey: peer.publicKey,
        proto: protoName(keys[k]! & 0xff),
        local: addressText(family, keys, k + 2),
        localPort: keys[k + 10]!,
        remote: addressText(family, keys, k + 6),
        remotePort: keys[k + 11]!,
        ...this.#countsAt(this.#counts, i),
      });
    }
    connections.sort(byBytes);
    return { capacity: this.table.capacity, evicted: this.table.evicted, peers, connections };
  }

  #countsAt(a: Float64Array, i: number): Counts {
    return {
      txPackets: a[i * SLOTS + TX_PACKETS]!,
      txBytes: a[i * SLOTS + TX_BYTES]!,
      rxPackets: a[i * SLOTS + RX_PACKETS]!,
      rxBytes: a[i * SLOTS + RX_BYTES]!,
    };
  }
}

/**
 * The connection the last packet one way was counted under, and the header bytes that name it, so that the next
 * packet of a bulk transfer (the same connection, packet after packet: data one way, acknowledgements the
 * other) is counted with a few 32-bit compares, before any parsing or hashing. Only whole TCP and UDP datagrams
 * with no options (IPv4) or extension headers (IPv6) are remembered: their key follows from contiguous words —
 * the addresses and the ports, IPv4 bytes 12-23, IPv6 bytes 8-43 — and a packet that compares equal there, with
 * the same header shape and a transport header as complete as parseTuple demands, has the same key. The entry
 * number is forgotten when the table hands it to another connection (eviction) or moves entries (prune).
 */
class LastFlow {
  peer: Peer | null = null;
  peerId = 0;
  entry = -1;
  /** 4 or 6; 0 when nothing is remembered. */
  family = 0;
  proto = 0;
  /** What the smaller of the packet's length and its IP length must reach: IP and transport headers. */
  minLen = 0;
  /** Words of the addresses and ports, as the packet has them (signed, as `|` makes them). */
  readonly words = new Int32Array(9);

  forget(): void {
    this.peer = null;
    this.entry = -1;
    this.family = 0;
  }

  /** Remembers entry `i` for the packet at `buf[off…]` of peer `id`, parsed into `t`, if its shape allows. */
  remember(peer: Peer, id: number, i: number, buf: Uint8Array, off: number, t: Tuple): void {
    const b0 = buf[off]!;
    const plain = (t.proto === IPPROTO_TCP || t.proto === IPPROTO_UDP) && t.fragment === Fragment.None &&
      (t.family === 4 ? b0 === 0x45 : buf[off + 6] === t.proto);
    if (!plain) {
      this.forget();
      return;
    }
    this.peer = peer;
    this.peerId = id;
    this.entry = i;
    this.family = t.family;
    this.proto = t.proto;
    const at = off + (t.family === 4 ? 12 : 8), n = t.family === 4 ? 3 : 9;
    this.minLen = (t.family === 4 ? 20 : 40) + (t.proto === IPPROTO_TCP ? 20 : 8);
    for (let w = 0; w < n; w++) this.words[w] = word32(buf, at + 4 * w);
  }

  /** Whether the packet at `buf[off, off+len)` is of the remembered connection (the peer compared apart). */
  matches(buf: Uint8Array, off: number, len: number): boolean {
    if (off < 0 || off + len > buf.length) return false;
    const words = this.words;
    let total: number;
    if (this.family === 4) {
      // Version 4 with no options, not a fragment (offset 0, no more fragments; DF may be set).
      if (
        buf[off] !== 0x45 || buf[off + 9] !== this.proto || ((buf[off + 6]! & 0x3f) | buf[off + 7]!) !== 0
      ) {
        return false;
      }
      if (
        word32(buf, off + 12) !== words[0] || word32(buf, off + 16) !== words[1] ||
        word32(buf, off + 20) !== words[2]
      ) return false;
      total = (buf[off + 2]! << 8) | buf[off + 3]!;
    } else if (this.family === 6) {
      if (buf[off]! >> 4 !== 6 || buf[off + 6] !== this.proto) return false;
      for (let w = 0; w < 9; w++) if (word32(buf, off + 8 + 4 * w) !== words[w]) return false;
      total = 40 + ((buf[off + 4]! << 8) | buf[off + 5]!);
    } else {
      return false;
    }
    return (total < len ? total : len) >= this.minLen;
  }
}

/** The big-endian word at `b[i]`, signed (compared, never shown). */
function word32(b: Uint8Array, i: number): number {
  return (b[i]! << 24) | (b[i + 1]! << 16) | (b[i + 2]! << 8) | b[i + 3]!;
}

/** Orders connections by bytes both ways, the most first. */
export function byBytes(a: Counts, b: Counts): number {
  return b.txBytes + b.rxBytes - (a.txBytes + a.rxBytes);
}

export function protoName(p: number): string {
  return p === IPPROTO_TCP ? "tcp" : p === IPPROTO_UDP ? "udp" : p === IPPROTO_ICMP ? "icmp" : String(p);
}

function addressText(family: number, words: Uint32Array, at: number): string {
  const bytes = new Uint8Array(family === 4 ? 4 : 16);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (words[at + (i >> 2)]! >>> (24 - 8 * (i & 3))) & 0xff;
  return formatAddress(bytes);
}

// ---- The UAPI extension `get=connections` ----

/** A peer's filter as reported: its rules in lib/filter.ts syntax and what they dropped. */
export interface FilterReport {
  publicKey: Uint8Array;
  allowInbound: string;
  allowOutbound: string;
  droppedInbound: number;
  droppedOutbound: number;
}

/** What `get=connections` answers: the statistics (null when off) and the filters. */
export interface ConnectionsReply {
  statistics: ConnectionsReport | null;
  filters: FilterReport[];
}

/**
 * The `key=value` lines answering typetun's `get=connections` (without the closing errno line): device lines
 * first (`statistics=on|off`, `connection_capacity=`, `connections_evicted=`), then a `public_key=` section
 * per peer that has statistics or a filter: `allow_inbound=`, `allow_outbound=`, `filtered_inbound=`,
 * `filtered_outbound=`, the peer's `tx_packets=`, `tx_bytes=`, `rx_packets=`, `rx_bytes=`, and one
 * `connection=PROTO LOCAL LPORT REMOTE RPORT TX_PACKETS TX_BYTES RX_PACKETS RX_BYTES` line per connection,
 * by bytes from the most.
 */
export function formatConnections(r: ConnectionsReply): string {
  const s = r.statistics;
  let out = `statistics=${s ? "on" : "off"}\n`;
  if (s) out += `connection_capacity=${s.capacity}\nconnections_evicted=${s.evicted}\n`;
  const sections = new Map<string, string>();
  const section = (k: Uint8Array) => {
    const hex = keyToHex(k);
    if (!sections.has(hex)) sections.set(hex, `public_key=${hex}\n`);
    return hex;
  };
  for (const f of r.filters) {
    const hex = section(f.publicKey);
    sections.set(
      hex,
      sections.get(hex)! + `allow_inbound=${f.allowInbound}\nallow_outbound=${f.allowOutbound}\n` +
        `filtered_inbound=${f.droppedInbound}\nfiltered_outbound=${f.droppedOutbound}\n`,
    );
  }
  for (const p of s?.peers ?? []) {
    const hex = section(p.publicKey);
    sections.set(
      hex,
      sections.get(hex)! + `tx_packets=${p.txPackets}\ntx_bytes=${p.txBytes}\n` +
        `rx_packets=${p.rxPackets}\nrx_bytes=${p.rxBytes}\n`,
    );
  }
  for (const c of s?.connections ?? []) {
    const hex = section(c.publicKey);
    sections.set(
      hex,
      sections.get(hex)! + `connection=${c.proto} ${c.local} ${c.localPort} ${c.remote} ${c.remotePort} ` +
        `${c.txPackets} ${c.txBytes} ${c.rxPackets} ${c.rxBytes}\n`,
    );
  }
  for (const text of sections.values()) out += text;
  return out;
}

/** Reads a `get=connections` reply (up to and including `errno=`); throws an Error saying what is wrong. */
export function parseConnections(reply: string): ConnectionsReply {
  let stats: ConnectionsReport | null = null;
  let statsOn = false, capacity = 0, evicted = 0, errno: number | null = null;
  const peers = new Map<string, Counts & { publicKey: Uint8Array; seen: boolean }>();
  const filters = new Map<string, FilterReport>();
  const connections: ConnectionRecord[] = [];
  let key: Uint8Array | null = null;
  let hex = "";
  const num = (v: string, what: string) => {
    if (!/^[0-9]+$/.test(v)) throw new Error(`bad ${what} ${JSON.stringify(v)} in the connections reply`);
    return Number(v);
  };
  const peerCounts = () => {
    let p = peers.get(hex);
    if (!p) {
      peers.set(
        hex,
        p = { publicKey: key!, txPackets: 0, txBytes: 0, rxPackets: 0, rxBytes: 0, seen: false },
      );
    }
    p.seen = true;
    return p;
  };
  const filter = () => {
    let f = filters.get(hex);
    if (!f) {
      filters.set(
        hex,
        f = {
          publicKey: key!,
          allowInbound: "any",
          allowOutbound: "any",
          droppedInbound: 0,
          droppedOutbound: 0,
        },
      );
    }
    return f;
  };
  for (const line of reply.split("\n")) {
    if (line === "") continue;
    const eq = line.indexOf("=");
    if (eq < 0) throw new Error(`bad line ${JSON.stringify(line)} in the connections reply`);
    const k = line.slice(0, eq), v = line.slice(eq + 1);
    if (k === "errno") {
      errno = Number(v);
      break;
    }
    if (k === "statistics") statsOn = v === "on";
    else if (k === "connection_capacity") capacity = num(v, k);
    else if (k === "connections_evicted") evicted = num(v, k);
    else if (k === "public_key") {
      key = keyFromHex(v);
      if (!key) throw new Error(`bad public_key in the connections reply`);
      hex = v;
    } else if (key === null) {
      continue; // a device key this version does not know
    } else if (k === "allow_inbound") filter().allowInbound = v;
    else if (k === "allow_outbound") filter().allowOutbound = v;
    else if (k === "filtered_inbound") filter().droppedInbound = num(v, k);
    else if (k === "filtered_outbound") filter().droppedOutbound = num(v, k);
    else if (k === "tx_packets" || k === "tx_bytes" || k === "rx_packets" || k === "rx_bytes") {
      const field = k === "tx_packets"
        ? "txPackets"
        : k === "tx_bytes"
        ? "txBytes"
        : k === "rx_packets"
        ? "rxPackets"
        : "rxBytes";
      peerCounts()[field] = num(v, k);
    } else if (k === "connection") {
      const f = v.split(" ");
      if (f.length !== 9) throw new Error(`bad connection ${JSON.stringify(v)} in the connections reply`);
      connections.push({
        publicKey: key,
        proto: f[0]!,
        local: f[1]!,
        localPort: num(f[2]!, "port"),
        remote: f[3]!,
        remotePort: num(f[4]!, "port"),
        txPackets: num(f[5]!, "count"),
        txBytes: num(f[6]!, "count"),
        rxPackets: num(f[7]!, "count"),
        rxBytes: num(f[8]!, "count"),
      });
    }
  }
  if (errno === null) throw new Error("the connections reply has no errno line");
  if (errno !== 0) throw new Error(`the daemon answered errno=${errno}`);
  if (statsOn) {
    stats = {
      capacity,
      evicted,
      peers: [...peers.values()].filter((p) => p.seen).map(({ seen: _, ...p }) => p),
      connections: connections.sort(byBytes),
    };
  }
  return { statistics: stats, filters: [...filters.values()] };
}

/** How many connections metrics expose by default: the busiest, so a scrape stays small. */
export const METRICS_TOP_CONNECTIONS = 10;

/**
 * Prometheus families for the busiest connections and the table itself: `typetun_connection_sent_bytes_total`
 * and `typetun_connection_received_bytes_total` (labels interface, public_key, protocol, local, remote, with
 * `address:port`), and `typetun_connections` / `typetun_connections_evicted_total`. Appended to the device's
 * exposition (lib/metrics.ts). A connection that falls out of the top N disappears from the series.
 */
export function formatConnectionMetrics(
  ifname: string,
  r: ConnectionsReport,
  top = METRICS_TOP_CONNECTIONS,
): string {
  const iface = `interface="${escapeLabelValue(ifname)}"`;
  let out =
    "# HELP typetun_connections Connections in the statistics table\n# TYPE typetun_connections gauge\n";
  out += `typetun_connections{${iface}} ${r.connections.length}\n`;
  out += "# HELP typetun_connections_evicted_total Connections evicted from the full statistics table\n";
  out +=
    `# TYPE typetun_connections_evicted_total counter\ntypetun_connections_evicted_total{${iface}} ${r.evicted}\n`;
  const busiest = r.connections.slice(0, top);
  const label = (c: ConnectionRecord) =>
    `{${iface},public_key="${escapeLabelValue(keyToBase64(c.publicKey))}",protocol="${c.proto}",local="${
      escapeLabelValue(endpointText(c.local, c.localPort))
    }",remote="${escapeLabelValue(endpointText(c.remote, c.remotePort))}"}`;
  for (
    const [name, help, get] of [
      [
        "typetun_connection_sent_bytes_total",
        "Plaintext bytes sent to the peer on a connection (the busiest)",
        (c: ConnectionRecord) => c.txBytes,
      ],
      [
        "typetun_connection_received_bytes_total",
        "Plaintext bytes received from the peer on a connection (the busiest)",
        (c: ConnectionRecord) => c.rxBytes,
      ],
    ] as const
  ) {
    out += `# HELP ${name} ${help}\n# TYPE ${name} counter\n`;
    for (const c of busiest) out += `${name}${label(c)} ${get(c)}\n`;
  }
  return out;
}

/** `10.0.0.1:22`, `[fd00::1]:22`. */
export function endpointText(addr: string, port: number): string {
  return addr.includes(":") ? `[${addr}]:${port}` : `${addr}:${port}`;
}
