/**
 * `show` and `showconf`: what `wg show` and `wg showconf` print (wg(8); wireguard-tools show.c, showconf.c,
 * terminal.c), read over the UAPI so they work against any userspace implementation. Plus `show --json`.
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { formatConf } from "../lib/conf.ts";
import { formatAddressLikeWg, formatCidrLikeWg } from "../lib/config.ts";
import { configFromDevice } from "../lib/setconf.ts";
import { dhPublic } from "../lib/crypto.ts";
import type { Endpoint } from "../lib/ip.ts";
import { type DeviceInfo, type PeerInfo } from "../lib/uapi.ts";
import { keyToBase64 } from "../lib/encoding.ts";
import { InterfaceError, listInterfaces, SOCKET_DIR, uapiGet } from "./uapi_client.ts";

const FIELDS = [
  "public-key",
  "private-key",
  "listen-port",
  "fwmark",
  "peers",
  "preshared-keys",
  "endpoints",
  "allowed-ips",
  "latest-handshakes",
  "transfer",
  "persistent-keepalive",
  "dump",
];

const SHOW_USAGE =
  `Usage: typetun show { <interface> | all | interfaces } [public-key | private-key | listen-port | fwmark | peers | preshared-keys | endpoints | allowed-ips | latest-handshakes | transfer | persistent-keepalive | dump]
`;

const SHOW_HELP = `${SHOW_USAGE}       typetun show [<interface> | all] --json

Shows the current configuration and device information of userspace WireGuard interfaces (typetun,
wireguard-go, boringtun), as wg show does. Without an interface, or with "all", every interface.
"interfaces" lists their names. A field name prints just that field, tab-separated, one line per peer;
"dump" prints everything, tab-separated. The environment variables WG_COLOR_MODE (always, never, auto)
and WG_HIDE_KEYS (never: print private and preshared keys) work as for wg.

typetun show <interface> connections [--json] prints typetun's per-connection statistics (packets and
bytes each way, by bytes from the most, and per peer) and the peers' packet filters with their drop counts.

An interface carried through hops (typetun up --via) is followed by each hop ("hop: 1" is the entry),
with its peer, latest handshake and transfer, read from the hop's own socket (IF.hopN.uapi).

--json prints one object per interface (an array of them for "all"; peers in the interface's order):
  { "name": "wg0", "publicKey": "base64" | null, "privateKey": "(hidden)" | "base64" | null,
    "listenPort": 51820, "fwmark": 0,
    "peers": [ { "publicKey": "base64", "presharedKey": "(hidden)" | "base64" | null,
                 "endpoint": "192.0.2.1:51820" | null, "allowedIps": ["10.0.0.2/32"],
                 "latestHandshake": 1700000000 (seconds since the epoch, 0 = never),
                 "rxBytes": 0, "txBytes": 0, "persistentKeepalive": 0 (seconds, 0 = off) } ] }
  Keys are hidden as in the pretty output unless WG_HIDE_KEYS=never; null means not set.
`;

const SHOWCONF_USAGE = `Usage: typetun showconf <interface>
`;

const SHOWCONF_HELP = `${SHOWCONF_USAGE}
Prints the current configuration of an interface in the format of a configuration file, as wg showconf:
what typetun setconf, wg setconf and the [Interface]/[Peer] part of wg-quick read.
`;

// ---- Terminal (wireguard-tools terminal.c) ----

const RESET = "\x1b[0m", BOLD = "\x1b[1m", RED = "\x1b[31m", GREEN = "\x1b[32m", YELLOW = "\x1b[33m";
const CYAN = "\x1b[36m";

/** Colours as wg decides: WG_COLOR_MODE=always or never, else only when stdout is a terminal. */
function colorMode(): boolean {
  const mode = process.env.WG_COLOR_MODE;
  if (mode === "always") return true;
  if (mode === "never") return false;
  return process.stdout.isTTY === true;
}

/** wg prints through a filter that drops every escape sequence when colours are off. */
function stripAnsi(s: string): string {
  // deno-lint-ignore no-control-regex -- the escape character is what is being removed
  return s.replace(/\x1b\[[^A-Za-z]*[A-Za-z]?/g, "");
}

// ---- Pretty output (show.c, pretty_print) ----

/** wg's pretty_time: "1 year, 2 days, 1 minute, 5 seconds"; the units are cyan. */
function prettyTime(left: number): string {
  const parts: string[] = [];
  const unit = (n: number, name: string) => {
    if (n) parts.push(`${n} ${CYAN}${name}${n === 1 ? "" : "s"}${RESET}`);
  };
  unit(Math.floor(left / (365 * 86400)), "year");
  left %= 365 * 86400;
  unit(Math.floor(left / 86400), "day");
  left %= 86400;
  unit(Math.floor(left / 3600), "hour");
  left %= 3600;
  unit(Math.floor(left / 60), "minute");
  unit(left % 60, "second");
  return parts.join(", ");
}

function ago(sec: number, now: number): string {
  if (now === sec) return "Now";
  if (now < sec) return `(${RED}System clock wound backward; connection problems may ensue.${RESET})`;
  return `${prettyTime(now - sec)} ago`;
}

/**
 * printf("%.2f") of b / 2^shift, rounding as glibc does: exactly, ties to even. (toFixed rounds ties away
 * from zero, and quotients of powers of two hit ties: 1152 B is 1.125 KiB, which wg prints as 1.12.)
 */
function fixed2(b: number, shift: number): string {
  const num = BigInt(b) * 100n, den = 1n << BigInt(shift);
  let q = num / den;
  const twice = (num % den) * 2n;
  if (twice > den || (twice === den && q % 2n === 1n)) q++;
  const s = q.toString().padStart(3, "0");
  return `${s.slice(0, -2)}.${s.slice(-2)}`;
}

function bytes(b: number): string {
  if (b < 1024) return `${b} ${CYAN}B${RESET}`;
  const units = ["KiB", "MiB", "GiB"];
  for (let i = 0; i < units.length; i++) {
    if (b < 2 ** (10 * (i + 2))) return `${fixed2(b, 10 * (i + 1))} ${CYAN}${units[i]}${RESET}`;
  }
  return `${fixed2(b, 40)} ${CYAN}TiB${RESET}`;
}

function showKeys(): boolean {
  return process.env.WG_HIDE_KEYS === "never";
}

function masked(key: Uint8Array): string {
  return showKeys() ? keyToBase64(key) : "(hidden)";
}

function endpointText(e: Endpoint): string {
  const host = formatAddressLikeWg(e.addr);
  return e.family === 6 ? `[${host}]:${e.port}` : `${host}:${e.port}`;
}

function seconds(p: PeerInfo): number {
  return Math.floor(p.lastHandshakeMs / 1000);
}

/**
 * Peers as wg's pretty output orders them (show.c, peer_cmp): most recent handshake first, peers without
 * one last, otherwise in the interface's order (glibc's qsort is a stable merge sort for arrays this size).
 */
export function sortPeers(peers: PeerInfo[]): PeerInfo[] {
  return [...peers].sort((a, b) => {
    if (!a.lastHandshakeMs && b.lastHandshakeMs) return 1;
    if (!b.lastHandshakeMs && a.lastHandshakeMs) return -1;
    return b.lastHandshakeMs - a.lastHandshakeMs;
  });
}

/** `wg show IFNAME` for one interface, with colour codes (stripped by the caller when colours are off). */
export function prettyPrint(name: string, info: DeviceInfo, nowSec: number, kind = "interface"): string {
  let out = RESET;
  out += `${GREEN}${BOLD}${kind}${RESET}: ${GREEN}${name}${RESET}\n`;
  if (info.privateKey) {
    out += `  ${BOLD}public key${RESET}: ${keyToBase64(dhPublic(info.privateKey))}\n`;
    out += `  ${BOLD}private key${RESET}: ${masked(info.privateKey)}\n`;
  }
  if (info.listenPort) out += `  ${BOLD}listening port${RESET}: ${info.listenPort}\n`;
  if (info.fwmark) out += `  ${BOLD}fwmark${RESET}: 0x${info.fwmark.toString(16)}\n`;
  const peers = sortPeers(info.peers);
  if (peers.length > 0) out += "\n";
  peers.forEach((p, i) => {
    out += `${YELLOW}${BOLD}peer${RESET}: ${YELLOW}${keyToBase64(p.publicKey)}${RESET}\n`;
    if (p.presharedKey) out += `  ${BOLD}preshared key${RESET}: ${masked(p.presharedKey)}\n`;
    if (p.endpoint) out += `  ${BOLD}endpoint${RESET}: ${endpointText(p.endpoint)}\n`;
    out += `  ${BOLD}allowed ips${RESET}: `;
    out += p.allowedIps.length === 0
      ? "(none)\n"
      : p.allowedIps.map((c) => `${formatAddressLikeWg(c.addr)}${CYAN}/${RESET}${c.prefixLen}`).join(", ") +
        "\n";
    if (seconds(p)) out += `  ${BOLD}latest handshake${RESET}: ${ago(seconds(p), nowSec)}\n`;
    if (p.rxBytes || p.txBytes) {
      out += `  ${BOLD}transfer${RESET}: ${bytes(p.rxBytes)} received, ${bytes(p.txBytes)} sent\n`;
    }
    if (p.persistentKeepalive) {
      out += `  ${BOLD}persistent keepalive${RESET}: every ${prettyTime(p.persistentKeepalive)}\n`;
    }
    if (i < peers.length - 1) out += "\n";
  });
  return out;
}

// ---- Fields and dump (show.c, ugly_print and dump_print) ----

function maybeKey(key: Uint8Array | null): string {
  return key ? keyToBase64(key) : "(none)";
}

function fwmarkText(fwmark: number): string {
  return fwmark ? `0x${fwmark.toString(16)}` : "off";
}

/** `wg show IFNAME FIELD` (tab-separated; `prefix` is "IFNAME\t" under `show all`). */
export function fieldPrint(field: string, info: DeviceInfo, prefix: string): string {
  const pub = info.privateKey ? dhPublic(info.privateKey) : null;
  const perPeer = (f: (p: PeerInfo) => string) =>
    info.peers.map((p) => `${prefix}${keyToBase64(p.publicKey)}\t${f(p)}\n`).join("");
  switch (field) {
    case "public-key":
      return `${prefix}${maybeKey(pub)}\n`;
    case "private-key":
      return `${prefix}${maybeKey(info.privateKey)}\n`;
    case "listen-port":
      return `${prefix}${info.listenPort}\n`;
    case "fwmark":
      return `${prefix}${fwmarkText(info.fwmark)}\n`;
    case "peers":
      return info.peers.map((p) => `${prefix}${keyToBase64(p.publicKey)}\n`).join("");
    case "preshared-keys":
      return perPeer((p) => maybeKey(p.presharedKey));
    case "endpoints":
      return perPeer((p) => p.endpoint ? endpointText(p.endpoint) : "(none)");
    case "allowed-ips":
      return perPeer((p) => p.allowedIps.length ? p.allowedIps.map(formatCidrLikeWg).join(" ") : "(none)");
    case "latest-handshakes":
      return perPeer((p) => `${seconds(p)}`);
    case "transfer":
      return perPeer((p) => `${p.rxBytes}\t${p.txBytes}`);
    case "persistent-keepalive":
      return perPeer((p) => p.persistentKeepalive ? `${p.persistentKeepalive}` : "off");
    case "dump": {
      let out = `${prefix}${maybeKey(info.privateKey)}\t${maybeKey(pub)}\t${info.listenPort}\t`;
      out += `${fwmarkText(info.fwmark)}\n`;
      return out + perPeer((p) =>
        [
          maybeKey(p.presharedKey),
          p.endpoint ? endpointText(p.endpoint) : "(none)",
          p.allowedIps.length ? p.allowedIps.map(formatCidrLikeWg).join(",") : "(none)",
          seconds(p),
          p.rxBytes,
          p.txBytes,
          p.persistentKeepalive || "off",
        ].join("\t")
      );
    }
  }
  throw new Error(`unknown field ${field}`);
}

/** The `--json` object for one interface (documented in SHOW_HELP). */
export function jsonInterface(name: string, info: DeviceInfo): Record<string, unknown> {
  const secret = (k: Uint8Array | null) => k ? (showKeys() ? keyToBase64(k) : "(hidden)") : null;
  return {
    name,
    publicKey: info.privateKey ? keyToBase64(dhPublic(info.privateKey)) : null,
    privateKey: secret(info.privateKey),
    listenPort: info.listenPort,
    fwmark: info.fwmark,
    peers: info.peers.map((p) => ({
      publicKey: keyToBase64(p.publicKey),
      presharedKey: secret(p.presharedKey),
      endpoint: p.endpoint ? endpointText(p.endpoint) : null,
      allowedIps: p.allowedIps.map(formatCidrLikeWg),
      latestHandshake: seconds(p),
      rxBytes: p.rxBytes,
      txBytes: p.txBytes,
      persistentKeepalive: p.persistentKeepalive,
    })),
  };
}

// ---- Commands ----

function write(s: string): void {
  process.stdout.write(colorMode() ? s : stripAnsi(s));
}

/** `typetun show [--json] [IFNAME | all | interfaces] [FIELD]`. */
export async function showMain(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { json: { type: "boolean" }, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
    });
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${SHOW_USAGE}`);
    return 1;
  }
  const { values, positionals } = parsed;
  if (values.help || (positionals.length === 1 && positionals[0] === "help")) {
    process.stdout.write(SHOW_HELP);
    return 0;
  }
  const [target = "all", field] = positionals;
  if (positionals.length > 2 || (target === "interfaces" && (field !== undefined || values.json))) {
    process.stderr.write(SHOW_USAGE);
    return 1;
  }
  // typetun's own: the per-connection statistics and filters (cmd/connections.ts), of one interface.
  if (field === "connections" && target !== "all" && target !== "interfaces") {
    return (await import("./connections.ts")).showConnections(target, values.json === true);
  }
  if (field !== undefined && (values.json || !FIELDS.includes(field))) {
    process.stderr.write(values.json ? SHOW_USAGE : `Invalid parameter: \`${field}'\n${SHOW_USAGE}`);
    return 1;
  }

  if (target === "interfaces") {
    const names = await listInterfaces();
    if (names.length > 0) process.stdout.write(names.join(" ") + "\n");
    return 0;
  }

  if (target !== "all") {
    let info: DeviceInfo;
    try {
      info = await uapiGet(target);
    } catch (e) {
      process.stderr.write(`Unable to access interface: ${(e as Error).message}\n`);
      return 1;
    }
    const hops = field ? [] : await hopInfos(target);
    if (values.json) {
      const hopJson = hops.length
        ? { hops: hops.map((h) => jsonInterface(`${target} hop ${h.n}`, h.info)) }
        : {};
      process.stdout.write(JSON.stringify({ ...jsonInterface(target, info), ...hopJson }, null, 2) + "\n");
    } else if (field) process.stdout.write(fieldPrint(field, info, ""));
    else {
      const now = Math.floor(Date.now() / 1000);
      write(
        prettyPrint(target, info, now) +
          hops.map((h) => "\n" + prettyPrint(`${h.n}`, h.info, now, "hop")).join(""),
      );
    }
    return 0;
  }

  // `all`, as show_main does it: an interface that cannot be read is reported and skipped; the exit status
  // is 1 only when there were interfaces and none could be read.
  const names = await listInterfaces();
  let status = names.length > 0 ? 1 : 0;
  const json: Record<string, unknown>[] = [];
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    let info: DeviceInfo;
    try {
      info = await uapiGet(name);
    } catch (e) {
      if (!(e instanceof InterfaceError)) throw e;
      process.stderr.write(`Unable to access interface ${name}: ${e.message}\n`);
      continue;
    }
    if (values.json) json.push(jsonInterface(name, info));
    else if (field) process.stdout.write(fieldPrint(field, info, `${name}\t`));
    else {
      const now = Math.floor(Date.now() / 1000);
      const hops = (await hopInfos(name)).map((h) => "\n" + prettyPrint(`${h.n}`, h.info, now, "hop")).join(
        "",
      );
      write(prettyPrint(name, info, now) + hops + (i < names.length - 1 ? "\n" : ""));
    }
    status = 0;
  }
  if (values.json) process.stdout.write(JSON.stringify(json, null, 2) + "\n");
  return status;
}

/**
 * The hops an interface is carried through (multihop, cmd/multihop.ts), entry first, each read from its own
 * UAPI socket beside the interface's; none for an interface without hops (or not typetun's).
 */
async function hopInfos(ifname: string): Promise<{ n: number; info: DeviceInfo }[]> {
  const { listHopSockets } = await import("./multihop.ts");
  const out: { n: number; info: DeviceInfo }[] = [];
  for (const h of listHopSockets(SOCKET_DIR, ifname)) {
    try {
      out.push({ n: h.n, info: await uapiGet(ifname, h.path) });
    } catch {
      // A hop socket left by a daemon that died: nothing to show.
    }
  }
  return out;
}

/** `typetun showconf IFNAME`. */
export async function showconfMain(args: string[]): Promise<number> {
  if (args.length === 1 && (args[0] === "--help" || args[0] === "-h")) {
    process.stdout.write(SHOWCONF_HELP);
    return 0;
  }
  if (args.length !== 1) {
    process.stderr.write(SHOWCONF_USAGE);
    return 1;
  }
  let info: DeviceInfo;
  try {
    info = await uapiGet(args[0]!);
  } catch (e) {
    process.stderr.write(`Unable to access interface: ${(e as Error).message}\n`);
    return 1;
  }
  process.stdout.write(formatConf(configFromDevice(info)));
  return 0;
}
