/**
 * The cross-platform configuration protocol ("UAPI", https://www.wireguard.com/xplatform/): the text that
 * `wg(8)` exchanges with a userspace implementation over `/var/run/wireguard/IFNAME.sock`.
 *
 * A request is `get=1` and a blank line, or `set=1`, `key=value` lines and a blank line. A get reply is the
 * `key=value` lines of the configuration; every reply ends with `errno=N` and a blank line. This module only
 * turns text into values and back: the device applies a {@link DeviceUpdate} and describes itself as a
 * {@link DeviceInfo}, and the CLI uses the same functions from the client side.
 *
 * Each key is handled as wireguard-go handles it (device/uapi.go), with one deliberate difference: a set
 * request is parsed completely before anything is applied, so a bad line anywhere leaves the configuration
 * unchanged. wireguard-go applies each line as it reads it and stops at the first bad one.
 * @module
 */

import { isZero } from "./crypto.ts";
import { type Cidr, type Endpoint, formatCidr, parseCidr, parseEndpoint, splitHostPort } from "./ip.ts";
import { NOISE_PUBLIC_KEY_LEN } from "./messages.ts";
import { keyFromHex, keyToHex } from "./encoding.ts";
import { formatRules, parseRules, type Rules } from "./filter.ts";
import type { AllowedIpChange } from "./allowedips.ts";

// ---- Errno values (Linux <errno.h>) ----
// wireguard-go ipc/uapi_unix.go: IpcErrorIO = -EIO, IpcErrorProtocol = -EPROTO, IpcErrorInvalid = -EINVAL,
// IpcErrorPortInUse = -EADDRINUSE, IpcErrorUnknown = -55 ("ENOANO"). Results here carry the positive number;
// formatErrno() writes it negated, as wireguard-go does and as wg(8) expects: after a set it reads
// `errno=%d` into ret and sets `errno = -ret` (wireguard-tools src/ipc-uapi.h).

/** Writing the reply failed. */
export const EIO = 5;
/** A value is malformed, or a key is unknown or not allowed where it appears. */
export const EINVAL = 22;
/** wireguard-go's code for an error it cannot classify. */
export const ENOANO = 55;
/** The request is not the protocol: an unknown operation, or a line without `=`. */
export const EPROTO = 71;
/** The listen port cannot be bound (wireguard-go also uses it when setting the fwmark fails). */
export const EADDRINUSE = 98;

// ---- Types the device implements ----

/** One `public_key=` section of a set request. */
export interface PeerUpdate {
  /** 32 bytes. */
  publicKey: Uint8Array;
  /** `remove=true`: delete the peer (the other fields of the section are then ignored). */
  remove: boolean;
  /** `update_only=true`: change the peer only if it already exists, never create it. */
  updateOnly: boolean;
  /** 32 bytes; all-zero means "remove the preshared key". */
  presharedKey?: Uint8Array;
  endpoint?: Endpoint;
  /**
   * typetun's own key `endpoint_name=HOST:PORT`: the DNS name the endpoint was resolved from, which the daemon
   * resolves again while handshakes to the peer go unanswered (cmd/reresolve.ts); empty (null) forgets it, and so
   * does an `endpoint=` line. The CLI sends it in a request of its own after the one with the endpoint, and
   * `get=1` never prints it, so wg(8) and wireguard-go see nothing new.
   */
  endpointName?: string | null;
  /** Seconds, 0 = off, at most 65535. */
  persistentKeepalive?: number;
  /** `replace_allowed_ips=true`: drop the peer's allowed IPs before adding `allowedIps`. */
  replaceAllowedIps: boolean;
  /**
   * Prefixes to add, or with `op: "-"` to remove (`allowed_ip=-PREFIX`), applied in order. Those given before
   * `replace_allowed_ips` in the section are already left out.
   */
  allowedIps: AllowedIpChange[];
  /**
   * typetun's own keys `allow_inbound=` / `allow_outbound=` (lib/filter.ts syntax): the peer's packet filter.
   * wg(8) never sends them and `get=1` never prints them, so `wg show`/`showconf` are unchanged; null is `any`.
   */
  allowInbound?: Rules;
  allowOutbound?: Rules;
}

/** A whole set request. Peers appear in request order; the same key may appear in several sections. */
export interface DeviceUpdate {
  /** All-zero means "remove the private key". */
  privateKey?: Uint8Array;
  /** 0 means "pick a free port". */
  listenPort?: number;
  /** 0 = off. */
  fwmark?: number;
  /** `replace_peers=true`: remove every peer before applying `peers`. */
  replacePeers: boolean;
  peers: PeerUpdate[];
}

/**
 * A set request that adds one peer (or updates it) with `endpoint` and exactly `allowedIps`: how the in-process
 * pairs (the warm-up, the demo, the unit tests) wire two devices to each other.
 */
export function addPeerUpdate(
  publicKey: Uint8Array,
  endpoint: Endpoint,
  allowedIps: Cidr[],
  presharedKey?: Uint8Array,
): DeviceUpdate {
  const peer: PeerUpdate = {
    publicKey,
    remove: false,
    updateOnly: false,
    endpoint,
    replaceAllowedIps: true,
    allowedIps,
  };
  if (presharedKey) peer.presharedKey = presharedKey;
  return { replacePeers: false, peers: [peer] };
}

export interface PeerInfo {
  publicKey: Uint8Array;
  presharedKey: Uint8Array | null;
  endpoint: Endpoint | null;
  persistentKeepalive: number;
  /** Wall clock, milliseconds since the epoch; 0 = never. */
  lastHandshakeMs: number;
  rxBytes: number;
  txBytes: number;
  allowedIps: Cidr[];
}

export interface DeviceInfo {
  privateKey: Uint8Array | null;
  /** 0 = not bound. */
  listenPort: number;
  /** 0 = off. */
  fwmark: number;
  peers: PeerInfo[];
}

/** A value, or the errno (positive, Linux numbering) and a message for the log. */
export type UapiResult<T> = { ok: true; value: T } | { ok: false; errno: number; message: string };
type UapiError = { ok: false; errno: number; message: string };

// ---- set ----

const DEVICE_KEYS = new Set(["private_key", "listen_port", "fwmark", "replace_peers"]);
const PEER_KEYS = new Set([
  "public_key",
  "remove",
  "update_only",
  "preshared_key",
  "endpoint",
  "persistent_keepalive_interval",
  "replace_allowed_ips",
  "allowed_ip",
  "protocol_version",
  "allow_inbound",
  "allow_outbound",
  "endpoint_name",
]);

/**
 * Parses the body of a set request: the lines after `set=1`, up to the blank line that ends the request
 * (which may be included). Lines before the first `public_key` configure the device; each `public_key` starts
 * a peer section. Never throws. Reads the body line by line where it lies, in one pass, keeping nothing but
 * the update: a 10,000-peer `wg addconf` is parsed in time and memory proportional to its size.
 *
 * @param body `key=value` lines separated by `\n`
 * @returns the whole update, or the errno of the first bad line: EPROTO for a line without `=`, EINVAL for
 *   everything else (as wireguard-go)
 * @example
 * ```ts
 * const r = parseSet("listen_port=51820\nreplace_peers=true\n");
 * if (r.ok) console.log(r.value.listenPort); // 51820
 * ```
 */
export function parseSet(body: string): UapiResult<DeviceUpdate> {
  const update: DeviceUpdate = { replacePeers: false, peers: [] };
  let peer: PeerUpdate | null = null;
  let ended = false;
  let lineNo = 0;
  for (let start = 0; start <= body.length; lineNo++) {
    let end = body.indexOf("\n", start);
    if (end < 0) end = body.length;
    const from = start;
    start = end + 1;
    if (end === from) {
      ended = true; // the blank line that ends the request (or the end after the last newline)
      continue;
    }
    if (ended) return fail(EPROTO, `Line ${lineNo + 1}: text after the blank line that ends the request`);
    const eq = body.indexOf("=", from);
    if (eq < 0 || eq > end) {
      return fail(EPROTO, `Line ${lineNo + 1}: expected key=value, got ${quote(body.slice(from, end))}`);
    }
    const key = body.slice(from, eq);
    const value = body.slice(eq + 1, end);
    if (key === "public_key") {
      const publicKey = keyFromHex(value);
      if (!publicKey) return fail(EINVAL, `Line ${lineNo + 1}: public_key is not ${2 * KEY_LEN} hex digits`);
      peer = { publicKey, remove: false, updateOnly: false, replaceAllowedIps: false, allowedIps: [] };
      update.peers.push(peer);
      continue;
    }
    const problem = peer ? peerLine(peer, key, value) : deviceLine(update, key, value);
    if (problem) return fail(problem.errno, `Line ${lineNo + 1}: ${problem.message}`);
  }
  return { ok: true, value: update };
}

function deviceLine(u: DeviceUpdate, key: string, value: string): UapiError | null {
  switch (key) {
    case "private_key": {
      const k = keyFromHex(value);
      if (!k) return fail(EINVAL, `private_key is not ${2 * KEY_LEN} hex digits`);
      u.privateKey = k;
      return null;
    }
    case "listen_port": {
      const port = parseUint(value, 0xffff);
      if (port === null) return fail(EINVAL, `invalid listen_port ${quote(value)}`);
      u.listenPort = port;
      return null;
    }
    case "fwmark": {
      const mark = parseUint(value, 0xffffffff);
      if (mark === null) return fail(EINVAL, `invalid fwmark ${quote(value)}`);
      u.fwmark = mark;
      return null;
    }
    case "replace_peers":
      if (value !== "true") return fail(EINVAL, `invalid replace_peers ${quote(value)} (only "true")`);
      u.replacePeers = true;
      return null;
  }
  if (PEER_KEYS.has(key)) return fail(EINVAL, `peer key ${key} before any public_key`);
  return fail(EINVAL, `invalid UAPI device key ${quote(key)}`);
}

function peerLine(p: PeerUpdate, key: string, value: string): UapiError | null {
  switch (key) {
    case "remove":
      if (value !== "true") return fail(EINVAL, `invalid remove ${quote(value)} (only "true")`);
      p.remove = true;
      return null;
    case "update_only":
      if (value !== "true") return fail(EINVAL, `invalid update_only ${quote(value)} (only "true")`);
      p.updateOnly = true;
      return null;
    case "preshared_key": {
      const k = keyFromHex(value);
      if (!k) return fail(EINVAL, `preshared_key is not ${2 * KEY_LEN} hex digits`);
      p.presharedKey = k;
      return null;
    }
    case "endpoint": {
      const ep = parseEndpoint(value);
      if (!ep) return fail(EINVAL, `invalid endpoint ${quote(value)} (IPv4:port or [IPv6]:port)`);
      p.endpoint = ep;
      return null;
    }
    case "endpoint_name": {
      const hp = splitHostPort(value);
      if (value !== "" && (!hp || !/^[A-Za-z0-9._-]{1,253}$/.test(hp.host))) {
        return fail(EINVAL, `invalid endpoint_name ${quote(value)} (HOST:PORT, a DNS name)`);
      }
      p.endpointName = value === "" ? null : value;
      return null;
    }
    case "persistent_keepalive_interval": {
      const secs = parseUint(value, 0xffff);
      if (secs === null) return fail(EINVAL, `invalid persistent_keepalive_interval ${quote(value)}`);
      p.persistentKeepalive = secs;
      return null;
    }
    case "replace_allowed_ips":
      if (value !== "true") return fail(EINVAL, `invalid replace_allowed_ips ${quote(value)} (only "true")`);
      // wireguard-go empties the peer's list when it reads this line, so earlier allowed_ip lines go too.
      p.replaceAllowedIps = true;
      p.allowedIps = [];
      return null;
    case "allowed_ip": {
      // `-PREFIX` removes the prefix from this peer (current wireguard-go, device/uapi.go); a prefix the peer
      // does not own is no error and changes nothing. wireguard-go knows no `+`.
      const remove = value.startsWith("-");
      const cidr = parseAllowedIp(remove ? value.slice(1) : value);
      if (!cidr) return fail(EINVAL, `invalid allowed_ip ${quote(value)} ([-]address/length)`);
      p.allowedIps.push(remove ? { ...cidr, op: "-" } : cidr);
      return null;
    }
    case "protocol_version":
      if (value !== "1") return fail(EINVAL, `unsupported protocol_version ${quote(value)} (only "1")`);
      return null;
    case "allow_inbound":
    case "allow_outbound":
      try {
        const rules = parseRules(value);
        if (key === "allow_inbound") p.allowInbound = rules;
        else p.allowOutbound = rules;
      } catch (e) {
        return fail(EINVAL, `invalid ${key}: ${(e as Error).message}`);
      }
      return null;
  }
  if (DEVICE_KEYS.has(key)) return fail(EINVAL, `device key ${key} after a public_key`);
  return fail(EINVAL, `invalid UAPI peer key ${quote(key)}`);
}

/**
 * The body of a set request for `update`, in the order wg(8) writes it (wireguard-tools ipc-uapi.h), so that
 * parseSet() gives `update` back. The caller frames it: `"set=1\n" + body + "\n"`.
 */
export function formatSet(update: DeviceUpdate): string {
  let out = "";
  if (update.privateKey) out += `private_key=${keyToHex(update.privateKey)}\n`;
  if (update.listenPort !== undefined) out += `listen_port=${update.listenPort}\n`;
  if (update.fwmark !== undefined) out += `fwmark=${update.fwmark}\n`;
  if (update.replacePeers) out += "replace_peers=true\n";
  for (const p of update.peers) {
    out += `public_key=${keyToHex(p.publicKey)}\n`;
    if (p.remove) out += "remove=true\n";
    if (p.updateOnly) out += "update_only=true\n";
    if (p.presharedKey) out += `preshared_key=${keyToHex(p.presharedKey)}\n`;
    if (p.endpoint) out += `endpoint=${p.endpoint.toString()}\n`;
    if (p.endpointName !== undefined) out += `endpoint_name=${p.endpointName ?? ""}\n`;
    if (p.persistentKeepalive !== undefined) {
      out += `persistent_keepalive_interval=${p.persistentKeepalive}\n`;
    }
    if (p.replaceAllowedIps) out += "replace_allowed_ips=true\n";
    for (const c of p.allowedIps) out += `allowed_ip=${c.op === "-" ? "-" : ""}${formatCidr(c)}\n`;
    if (p.allowInbound !== undefined) out += `allow_inbound=${formatRules(p.allowInbound)}\n`;
    if (p.allowOutbound !== undefined) out += `allow_outbound=${formatRules(p.allowOutbound)}\n`;
  }
  return out;
}

// ---- get ----

/**
 * The `key=value` lines of a get reply, without the closing `errno=0` and blank line. Order and conditions
 * are wireguard-go's: private_key (if set), listen_port and fwmark (if nonzero), then per peer public_key,
 * preshared_key (all zeros when there is none), protocol_version=1, endpoint (if known),
 * last_handshake_time_sec/nsec, tx_bytes, rx_bytes, persistent_keepalive_interval and one allowed_ip per prefix.
 */
export function formatGet(info: DeviceInfo): string {
  let out = "";
  if (info.privateKey && !isZero(info.privateKey)) out += `private_key=${keyToHex(info.privateKey)}\n`;
  if (info.listenPort !== 0) out += `listen_port=${info.listenPort}\n`;
  if (info.fwmark !== 0) out += `fwmark=${info.fwmark}\n`;
  for (const p of info.peers) {
    out += `public_key=${keyToHex(p.publicKey)}\n`;
    out += `preshared_key=${keyToHex(p.presharedKey ?? ZERO_KEY)}\n`;
    out += "protocol_version=1\n";
    if (p.endpoint) out += `endpoint=${p.endpoint.toString()}\n`;
    const ms = Math.max(0, p.lastHandshakeMs);
    const sec = Math.floor(ms / 1000);
    out += `last_handshake_time_sec=${decimal(sec)}\n`;
    out += `last_handshake_time_nsec=${Math.min(999_999_999, Math.floor((ms - sec * 1000) * 1e6))}\n`;
    out += `tx_bytes=${decimal(p.txBytes)}\n`;
    out += `rx_bytes=${decimal(p.rxBytes)}\n`;
    out += `persistent_keepalive_interval=${p.persistentKeepalive}\n`;
    for (const c of p.allowedIps) out += `allowed_ip=${formatCidr(c)}\n`;
  }
  return out;
}

/**
 * Parses a whole get reply (what follows `get=1`, up to and including `errno=N`), as a client such as the CLI
 * receives it from typetun, wireguard-go or boringtun. Like wg(8), it ignores keys it does not know and reports
 * EPROTO for a malformed value or a missing errno line; a nonzero errno comes back as the error.
 */
export function parseGet(reply: string): UapiResult<DeviceInfo> {
  const info: DeviceInfo = { privateKey: null, listenPort: 0, fwmark: 0, peers: [] };
  let peer: PeerInfo | null = null;
  const lines = reply.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line === "") break;
    const eq = line.indexOf("=");
    if (eq < 0) return fail(EPROTO, `Line ${i + 1}: expected key=value, got ${quote(line)}`);
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1);
    if (key === "errno") {
      if (!/^-?[0-9]{1,10}$/.test(value)) return fail(EPROTO, `Line ${i + 1}: invalid errno ${quote(value)}`);
      const errno = Math.abs(Number(value));
      return errno === 0 ? { ok: true, value: info } : fail(errno, `The interface replied errno=${value}`);
    }
    let bad = false;
    if (key === "public_key") {
      const k = keyFromHex(value);
      if (!k) bad = true;
      else {
        peer = {
          publicKey: k,
          presharedKey: null,
          endpoint: null,
          persistentKeepalive: 0,
          lastHandshakeMs: 0,
          rxBytes: 0,
          txBytes: 0,
          allowedIps: [],
        };
        info.peers.push(peer);
      }
    } else if (!peer) {
      if (key === "private_key") {
        const k = keyFromHex(value);
        if (!k) bad = true;
        else info.privateKey = isZero(k) ? null : k;
      } else if (key === "listen_port") {
        const n = parseUint(value, 0xffff);
        if (n === null) bad = true;
        else info.listenPort = n;
      } else if (key === "fwmark") {
        const n = parseUint(value, 0xffffffff);
        if (n === null) bad = true;
        else info.fwmark = n;
      }
    } else {
      bad = !getPeerLine(peer, key, value);
    }
    if (bad) return fail(EPROTO, `Line ${i + 1}: invalid ${key} ${quote(value)}`);
  }
  return fail(EPROTO, "The reply has no errno line");
}

/** Applies one peer line of a get reply; false if its value is malformed. Unknown keys are ignored. */
function getPeerLine(p: PeerInfo, key: string, value: string): boolean {
  switch (key) {
    case "preshared_key": {
      const k = keyFromHex(value);
      if (k) p.presharedKey = isZero(k) ? null : k;
      return k !== null;
    }
    case "endpoint":
      p.endpoint = parseEndpoint(value);
      return p.endpoint !== null;
    case "allowed_ip": {
      const c = parseAllowedIp(value);
      if (c) p.allowedIps.push(c);
      return c !== null;
    }
  }
  const n = parseUint(value, Number.MAX_SAFE_INTEGER);
  switch (key) {
    case "persistent_keepalive_interval":
      if (n === null || n > 0xffff) return false;
      p.persistentKeepalive = n;
      return true;
    case "last_handshake_time_sec": // sec and nsec may come in either order
      if (n === null) return false;
      p.lastHandshakeMs = n * 1000 + (p.lastHandshakeMs % 1000);
      return true;
    case "last_handshake_time_nsec":
      if (n === null) return false;
      p.lastHandshakeMs = p.lastHandshakeMs - (p.lastHandshakeMs % 1000) + Math.min(999, Math.floor(n / 1e6));
      return true;
    case "rx_bytes":
      if (n === null) return false;
      p.rxBytes = n;
      return true;
    case "tx_bytes":
      if (n === null) return false;
      p.txBytes = n;
      return true;
  }
  return true;
}

/**
 * The status line that ends every reply. `errno` is given positive (as in {@link UapiResult}) and written
 * negated, as wireguard-go writes it (`errno=-22` for EINVAL); 0 is success.
 */
export function formatErrno(errno: number): string {
  const n = Math.abs(Math.trunc(errno));
  return n === 0 ? "errno=0\n\n" : `errno=-${n}\n\n`;
}

// ---- Framing requests on the socket ----

export type UapiRequest =
  | { op: "get" }
  | { op: "set"; body: string }
  /** typetun's extension `get=connections`: its per-connection statistics and filters (lib/connstats.ts). */
  | { op: "connections" }
  /** The stream is not the protocol. Reply formatErrno(errno) if you like, then close: framing is lost. */
  | { op: "error"; errno: number; message: string };

/**
 * The errno of a request longer than the reader's limit. wireguard-go has no limit (it reads lines with a
 * bufio.Reader until the blank line), so there is no number to copy; EMSGSIZE makes `wg` print "Message too
 * long", which says what went wrong, where EPROTO ("Protocol error") would not.
 */
export const EMSGSIZE = 90;

/**
 * The default limit of one request, 4 MiB. The largest request a user sends is `wg setconf` of a big
 * configuration: per peer `public_key=` (76 bytes), `preshared_key=` (79), an endpoint (about 30),
 * `persistent_keepalive_interval=25` (33), `replace_allowed_ips=true` (25) and two allowed IPs (about 50), so
 * about 290 bytes; 10,000 peers are 2.9 MB (tested), and 4 MiB leave room for about 420 bytes a peer. The limit
 * also bounds what one request costs the event loop that the data plane shares: parseSet() of a body of short
 * lines takes up to 13 times the body's size in memory and 30 ms a MiB, and a client that never ends its
 * request and then hangs up gets it parsed (end of input ends a set, as in wireguard-go). At 8 MiB that was
 * 270 ms and 100 MB at once.
 */
export const UAPI_MAX_REQUEST_BYTES = 4 << 20;

const NL = 10;
const GET_REQUEST = new TextEncoder().encode("get=1\n\n");
const SET_LINE = new TextEncoder().encode("set=1\n");
/** Only typetun's own CLI sends it; wireguard-go closes the connection on it, as on any unknown operation. */
export const CONNECTIONS_REQUEST_TEXT = "get=connections\n\n";
const CONNECTIONS_REQUEST = new TextEncoder().encode(CONNECTIONS_REQUEST_TEXT);
/** What a reader holds between requests; a buffer grown for a big request is given back once it is done. */
const SMALL_BUFFER = 4096;
/**
 * Buffers that big requests grew, wiped, kept for the next big request: at most two. Without them a client
 * sending request after too-long request made the daemon allocate and drop megabytes each time, and the C
 * library kept the freed memory (the resident size grew by 100 MB in 4 s); with them it allocates nothing.
 */
const spares: Uint8Array<ArrayBuffer>[] = [];
const MAX_SPARES = 2;
/** Keeps a leading byte-order mark as text (the default drops it): the body is given back as it was sent. */
const utf8 = new TextDecoder("utf-8", { ignoreBOM: true });
const utf8Encoder = new TextEncoder();

/** A request framed but not yet returned; a set's body is the stream's bytes from `from` to `to`. */
type Framed =
  | { op: "get" | "connections"; end: number }
  | { op: "set"; from: number; to: number; end: number }
  | { op: "error"; errno: number; message: string };

/**
 * Splits what a client writes to the UAPI socket into requests, as wireguard-go's IpcHandle reads them:
 * `get=1\n\n`, or `set=1\n` followed by lines up to a blank line. Any number of requests may share a
 * connection, and chunks may split them anywhere (also inside a UTF-8 character: a set's body is decoded
 * whole, once it is complete). Feed it the bytes as received, or text.
 *
 * Linear time and little memory: received bytes are appended to one buffer (grown by doubling, compacted when
 * at least half of it was consumed), each byte is scanned once when it arrives (a blank line split between two
 * chunks is caught by remembering whether the last byte was a newline), and a set's body is decoded once,
 * when it is returned. Nothing already received is copied per chunk or scanned again, and a request sent a
 * byte at a time costs no more than one sent at once: no string per chunk is kept, so a client cannot fill
 * the heap with garbage for the collector to find later.
 *
 * Pull requests one at a time with {@link next} (a server handles one per turn of the event loop) or all at
 * once with {@link push}. After an `error` request the reader frames nothing more. wireguard-go answers a
 * `get=1` line followed by anything but a blank line with EINVAL, and closes the connection without a reply on
 * an unknown operation; here that is an error request with EPROTO, so the server decides whether to reply
 * before closing. A request longer than `maxRequestBytes` is an error request with {@link EMSGSIZE}.
 */
export class UapiReader {
  /** Bytes received and not yet returned: `#buf[#start..#length)`; `#buf[0]` is stream position `#base`. */
  #buf = new Uint8Array(SMALL_BUFFER);
  #start = 0;
  #length = 0;
  #base = 0;
  /** Requests framed and not yet returned, from `#framedHead` on. */
  #framed: (Framed | undefined)[] = [];
  #framedHead = 0;
  /** The stream position where the request being received starts. */
  #request = 0;
  /** In a set's body: where the body starts, how far it was scanned, and whether that byte was a newline. */
  #inSet = false;
  #bodyFrom = 0;
  #scanned = 0;
  #lastNl = false;
  /** No more input is framed: an error was framed, or the input ended. */
  #stopped = false;
  readonly #maxRequestBytes: number;

  /** @param options.maxRequestBytes a request longer than this is an error (default {@link UAPI_MAX_REQUEST_BYTES}) */
  constructor(options: { maxRequestBytes?: number } = {}) {
    this.#maxRequestBytes = options.maxRequestBytes ?? UAPI_MAX_REQUEST_BYTES;
  }

  /** True once no more input will be framed: after an error, or the end of input. */
  get done(): boolean {
    return this.#stopped;
  }

  /** Bytes received and not yet returned as requests (0 between requests). */
  get pending(): number {
    return this.#length - this.#start;
  }

  /** Adds received bytes or text; returns the requests it completed, in order. */
  push(chunk: Uint8Array | string): UapiRequest[] {
    this.feed(chunk);
    return this.#drain();
  }

  /**
   * The client closed its sending side; returns the requests still pending. A set cut short by the end of
   * input is still a request, because wireguard-go's line scanner treats end of input like the blank line;
   * anything else pending is dropped.
   */
  end(): UapiRequest[] {
    this.finish();
    return this.#drain();
  }

  /** Adds received bytes or text; the requests it completes are then returned by {@link next}. */
  feed(chunk: Uint8Array | string): void {
    if (this.#stopped || chunk.length === 0) return;
    if (typeof chunk === "string") {
      this.#reserve(3 * chunk.length); // UTF-8 takes at most 3 bytes per UTF-16 unit
      this.#length += utf8Encoder.encodeInto(chunk, this.#buf.subarray(this.#length)).written;
    } else {
      this.#reserve(chunk.length);
      this.#buf.set(chunk, this.#length);
      this.#length += chunk.length;
    }
    this.#frame();
  }

  /**
   * The end of input (the client closed its sending side): a set cut short is then a request (see
   * {@link end}); the requests still pending are returned by {@link next}.
   */
  finish(): void {
    if (this.#stopped) return;
    if (this.#inSet) {
      const end = this.#base + this.#length;
      this.#framed.push({ op: "set", from: this.#bodyFrom, to: end, end });
    }
    this.#stopped = true;
    this.#inSet = false;
  }

  /** The next complete request, or null until more input arrives. */
  next(): UapiRequest | null {
    if (this.#framedHead === this.#framed.length) return null;
    const f = this.#framed[this.#framedHead]!;
    this.#framed[this.#framedHead++] = undefined;
    if (this.#framedHead === this.#framed.length) {
      this.#framed = [];
      this.#framedHead = 0;
    }
    if (f.op === "error") {
      this.#release(this.#base + this.#length);
      return f;
    }
    const req: UapiRequest = f.op !== "set"
      ? { op: f.op }
      : { op: "set", body: utf8.decode(this.#buf.subarray(f.from - this.#base, f.to - this.#base)) };
    this.#release(f.end);
    return req;
  }

  /** Frames what the bytes received since the last call complete. */
  #frame(): void {
    const buf = this.#buf;
    const received = this.#base + this.#length;
    while (!this.#stopped) {
      if (this.#inSet) {
        // The body ends at the first "\n\n", counting the newline of "set=1" itself (an empty body).
        let j = this.#scanned - this.#base;
        let nl = this.#lastNl;
        const end = this.#length;
        for (; j < end; j++) {
          if (buf[j] !== NL) nl = false;
          else if (nl) break;
          else nl = true;
        }
        this.#scanned = this.#base + j;
        this.#lastNl = nl;
        if (j === end) break;
        const blank = this.#base + j; // the blank line's newline
        this.#inSet = false;
        if (blank + 1 - this.#request > this.#maxRequestBytes) break; // refused below
        this.#framed.push({ op: "set", from: this.#bodyFrom, to: blank, end: blank + 1 });
        this.#request = blank + 1;
        continue;
      }
      // An operation line: "get=1\n" and a blank line, or "set=1\n".
      const at = this.#request - this.#base;
      const have = received - this.#request;
      if (have === 0) break;
      const get = matching(buf, at, have, GET_REQUEST);
      if (get === GET_REQUEST.length) {
        this.#framed.push({ op: "get", end: this.#request + get });
        this.#request += get;
        continue;
      }
      const set = matching(buf, at, have, SET_LINE);
      if (set === SET_LINE.length) {
        this.#inSet = true;
        this.#bodyFrom = this.#scanned = this.#request + set;
        this.#lastNl = true;
        continue;
      }
      const conns = matching(buf, at, have, CONNECTIONS_REQUEST);
      if (conns === CONNECTIONS_REQUEST.length) {
        this.#framed.push({ op: "connections", end: this.#request + conns });
        this.#request += conns;
        continue;
      }
      if (get === have || set === have || conns === have) break; // can still become an operation line
      if (get === GET_REQUEST.length - 1) {
        this.#stop(EINVAL, "Trailing text after get=1 (expected a blank line)");
      } else {
        let e = at;
        while (e < this.#length && e < at + 80 && buf[e] !== NL) e++;
        this.#stop(EPROTO, `Invalid UAPI operation ${quote(utf8.decode(buf.subarray(at, e)))}`);
      }
    }
    if (!this.#stopped && received - this.#request > this.#maxRequestBytes) {
      this.#stop(EMSGSIZE, `Request longer than ${this.#maxRequestBytes} bytes`);
    }
  }

  #drain(): UapiRequest[] {
    const out: UapiRequest[] = [];
    for (let r = this.next(); r !== null; r = this.next()) out.push(r);
    return out;
  }

  /** Frames an error: nothing after it is read, and the bytes no framed request needs are dropped at once. */
  #stop(errno: number, message: string): void {
    this.#framed.push({ op: "error", errno, message });
    this.#stopped = true;
    this.#inSet = false;
    let keep = this.#base + this.#start;
    for (let k = this.#framedHead; k < this.#framed.length; k++) {
      const f = this.#framed[k]!;
      if (f.op !== "error") keep = f.end;
    }
    const length = keep - this.#base;
    this.#buf.fill(0, length, this.#length); // the refused text may hold keys
    this.#length = length;
    if (this.#length === this.#start) this.#release(keep);
  }

  /** Forgets everything pending (the connection is gone) and wipes it; the reader frames nothing more. */
  discard(): void {
    this.#framed = [];
    this.#framedHead = 0;
    this.#stopped = true;
    this.#inSet = false;
    this.#release(this.#base + this.#length);
  }

  /** Everything before stream position `pos` has been returned. */
  #release(pos: number): void {
    this.#start = pos - this.#base;
    if (this.#start < this.#length) return;
    // Nothing left: wipe what was received (set requests carry keys), start over at the front, and give back
    // a buffer a big request grew.
    this.#buf.fill(0, 0, this.#length);
    this.#base = pos;
    this.#start = this.#length = 0;
    if (this.#buf.length > SMALL_BUFFER) {
      spare(this.#buf);
      this.#buf = new Uint8Array(SMALL_BUFFER);
    }
  }

  /** Makes room for `n` more bytes: moves the unreturned bytes to the front, or grows the buffer. */
  #reserve(n: number): void {
    const kept = this.#length - this.#start;
    if (this.#length + n <= this.#buf.length) return;
    if (kept + n <= this.#buf.length >> 1) {
      // At least half of the buffer was returned: moving the rest costs no more than what was returned.
      this.#buf.copyWithin(0, this.#start, this.#length);
      this.#buf.fill(0, kept, this.#length);
    } else {
      // Doubling, but never much past what the limit lets a request hold.
      const size = Math.min(2 * this.#buf.length, this.#maxRequestBytes + SMALL_BUFFER);
      const grown = takeSpare(kept + n) ?? new Uint8Array(Math.max(size, kept + n));
      grown.set(this.#buf.subarray(this.#start, this.#length));
      this.#buf.fill(0, 0, this.#length);
      if (this.#buf.length > SMALL_BUFFER) spare(this.#buf);
      this.#buf = grown;
    }
    this.#base += this.#start;
    this.#length = kept;
    this.#start = 0;
  }
}

/** Keeps a wiped buffer for the next big request, if there is room. */
function spare(buf: Uint8Array<ArrayBuffer>): void {
  if (spares.length < MAX_SPARES) spares.push(buf);
}

/** The smallest spare buffer of at least `n` bytes, taken from the spares; null if none is big enough. */
function takeSpare(n: number): Uint8Array<ArrayBuffer> | null {
  let best = -1;
  for (let i = 0; i < spares.length; i++) {
    if (spares[i]!.length >= n && (best < 0 || spares[i]!.length < spares[best]!.length)) best = i;
  }
  return best < 0 ? null : spares.splice(best, 1)[0]!;
}

/** How many of the first `have` bytes at `buf[at]` match `pattern` (stops at the first difference). */
function matching(buf: Uint8Array, at: number, have: number, pattern: Uint8Array): number {
  const n = Math.min(have, pattern.length);
  let i = 0;
  while (i < n && buf[at + i] === pattern[i]) i++;
  return i;
}

// ---- Keys ----

const KEY_LEN = NOISE_PUBLIC_KEY_LEN;
const ZERO_KEY = new Uint8Array(KEY_LEN);

// ---- Small helpers ----

/** Decimal digits only (leading zeros allowed, no sign), at most `max`; like Go's strconv.ParseUint. */
function parseUint(s: string, max: number): number | null {
  if (!/^[0-9]+$/.test(s)) return null;
  const n = Number(s);
  return n <= max ? n : null;
}

/** `address/length` as Go's netip.ParsePrefix takes it: the length is required, without leading zeros or zone. */
function parseAllowedIp(s: string): Cidr | null {
  const slash = s.indexOf("/");
  if (slash < 0 || s.includes("%") || !/^(0|[1-9][0-9]{0,2})$/.test(s.slice(slash + 1))) return null;
  return parseCidr(s);
}

/** A non-negative integer in plain decimal, even beyond 2^53 (where String() would switch to exponents). */
function decimal(n: number): string {
  return Number.isFinite(n) && n > 0 ? BigInt(Math.floor(n)).toString() : "0";
}

function quote(s: string): string {
  return JSON.stringify(s.length > 80 ? `${s.slice(0, 80)}…` : s);
}

function fail(errno: number, message: string): UapiError {
  return { ok: false, errno, message };
}
