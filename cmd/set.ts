/**
 * `set`, `setconf`, `addconf`, `syncconf`: what `wg set` and friends do (wg(8); wireguard-tools set.c,
 * setconf.c, config.c), sent over the UAPI so they work against any userspace implementation. Messages for bad
 * arguments are wg's own.
 * @module
 */
import { lookup } from "node:dns/promises";
import { readFileSync } from "node:fs";
import process from "node:process";
import { setTimeout as sleep } from "node:timers/promises";
import {
  ConfigError,
  type EndpointSpec,
  formatCidrLikeWg,
  formatEndpointSpec,
  literalEndpoint,
  parseEndpointSpec,
  type WgConfig,
} from "../lib/config.ts";
import { detectFormat, parseConfig } from "../lib/configfile.ts";
import { configToUpdate, syncUpdate } from "../lib/setconf.ts";
import { type Cidr, Endpoint, parseCidr } from "../lib/ip.ts";
import { type AllowedIpChange, isIncremental } from "../lib/allowedips.ts";
import { type DeviceUpdate, type PeerUpdate } from "../lib/uapi.ts";
import { keyFromBase64 } from "../lib/encoding.ts";
import { systemErrorText, uapiGet, uapiSet } from "./uapi_client.ts";
import { runningFilters } from "./connections.ts";

const SET_USAGE =
  `Usage: typetun set <interface> [listen-port <port>] [fwmark <mark>] [private-key <file path>] [peer <base64 public key> [remove] [preshared-key <file path>] [endpoint <ip>:<port>] [persistent-keepalive <interval seconds>] [allowed-ips [+|-]<ip1>/<cidr1>[,[+|-]<ip2>/<cidr2>]...] ]...
`;

const SET_HELP = `${SET_USAGE}
Changes the configuration of an interface, as wg set: keys are read from files (an empty file, such as
/dev/null, removes the key), "fwmark off" and "persistent-keepalive off" turn those off, "allowed-ips"
replaces the peer's list (an empty list removes them all) unless an entry starts with + (add it) or - (remove
it): then the other allowed IPs stay, as with current wg. "remove" removes the peer. Endpoints may name a
host; it is resolved once, now (WG_ENDPOINT_RESOLUTION_RETRIES, default 15, or "infinity", as for wg).
`;

const CONF_USAGE = (cmd: string) => `Usage: typetun ${cmd} <interface> <configuration filename>\n`;

const CONF_HELP: Record<string, string> = {
  setconf:
    "Sets the configuration to the file's: peers not in it are removed, and the private key, listen\n" +
    "port and fwmark are reset when the file does not give them.",
  addconf: "Adds the file's configuration: its peers are added or updated, other peers stay.",
  syncconf: "Makes the configuration match the file without disturbing what is already as the file says:\n" +
    "peers not in the file are removed, the others updated in place (their sessions continue).",
};

function confHelp(cmd: string): string {
  return `${CONF_USAGE(cmd)}
${CONF_HELP[cmd]}
The file is a wg(8) configuration file ([Interface]: PrivateKey, ListenPort, FwMark; [Peer]: PublicKey,
PresharedKey, AllowedIPs, Endpoint, PersistentKeepalive), or the same in TOML (.toml, or detected from the
content; see typetun convert --help). wg-quick's keys (Address, DNS, MTU, Table, Pre/PostUp/Down, SaveConfig)
are refused, as wg refuses them: typetun convert --strip FILE prints the file without them.
`;
}

/** A bad argument or file (wg's wording): the message is printed as it is and the command fails. */
export class UsageError extends Error {}

// ---- Reading values as wg(8) does (config.c) ----

/**
 * A key file as wg reads it (config.c, parse_keyfile): 44 base64 characters followed by nothing but
 * whitespace; an empty file (or /dev/null) means the all-zero key, which removes the key.
 */
export function readKeyFile(path: string): Uint8Array {
  let data: Uint8Array;
  try {
    data = readFileSync(path);
  } catch (e) {
    throw new UsageError(`fopen: ${systemErrorText(e)}`);
  }
  if (data.length === 0) return new Uint8Array(32);
  if (data.length < 44) throw new UsageError("Invalid length key in key file");
  for (const c of data.subarray(44)) {
    // char_is_space: space, \t, \n, \v, \f, \r
    if (!(c === 0x20 || (c >= 0x09 && c <= 0x0d))) {
      throw new UsageError(`Found trailing character in key file: \`${String.fromCharCode(c)}'`);
    }
  }
  return parseKey(new TextDecoder().decode(data.subarray(0, 44)));
}

function parseKey(s: string): Uint8Array {
  const k = keyFromBase64(s);
  if (!k) throw new UsageError(`Key is not the correct length or format: \`${s}'`);
  return k;
}

function parsePort(s: string): number {
  if (s === "") throw new UsageError("Unable to parse empty port");
  // wg lets getaddrinfo read it; a number is what it takes here (no service names).
  if (!/^[0-9]+$/.test(s)) throw new UsageError(`Servname not supported for ai_socktype: \`${s}'`);
  // wg passes 70000 on as 4464 (glibc's getaddrinfo truncates it to 16 bits); refusing it is kinder.
  if (Number(s) > 65535) throw new UsageError(`Could not parse port: \`${s}'`);
  return Number(s);
}

function parseFwmark(s: string): number {
  if (s.toLowerCase() === "off") return 0;
  const n = /^0x[0-9a-fA-F]+$/.test(s) ? parseInt(s.slice(2), 16) : /^[0-9]+$/.test(s) ? Number(s) : NaN;
  if (!(n <= 0xffffffff)) throw new UsageError(`Fwmark is neither 0/off nor 0-0xffffffff: \`${s}'`);
  return n;
}

function parseKeepalive(s: string): number {
  if (s.toLowerCase() === "off") return 0;
  if (!/^[0-9]+$/.test(s) || Number(s) > 65535) {
    throw new UsageError(`Persistent keepalive interval is neither 0/off nor 1-65535: \`${s}'`);
  }
  return Number(s);
}

/**
 * `allowed-ips` as current wg reads it (config.c, parse_allowedips, v1.0.20260223): spaces removed,
 * comma-separated, may be empty; an entry may start with `+` (add) or `-` (remove), and one such entry makes
 * the whole argument incremental (no replace_allowed_ips).
 */
export function parseAllowedIps(s: string): AllowedIpChange[] {
  const v = s.replace(/\s+/g, "");
  if (v === "") return [];
  return v.split(",").map((entry) => {
    const op = entry[0] === "+" || entry[0] === "-" ? entry[0] : undefined;
    const item = op ? entry.slice(1) : entry;
    const slash = item.indexOf("/");
    const ip = slash < 0 ? item : item.slice(0, slash);
    if (ip.includes("%") || !parseCidr(ip)) throw new UsageError(`Unable to parse IP address: \`${ip}'`);
    const c = slash < 0 || /^[0-9]+$/.test(item.slice(slash + 1)) ? parseCidr(item) : null;
    if (!c) throw new UsageError(`AllowedIP is not in the correct format: \`${item}'`);
    return op ? { ...c, op } : c;
  });
}

/** Current wg's warning for a prefix written with host bits (they are ignored: 10.0.0.5/24 is 10.0.0.0/24). */
export function warnHostBits(list: readonly Cidr[]): void {
  for (const c of list) {
    const bits = c.addr.length * 8;
    for (let i = c.prefixLen; i < bits; i++) {
      if (c.addr[i >> 3]! & (0x80 >> (i & 7))) {
        process.stderr.write(`Warning: AllowedIP has nonzero host part: ${formatCidrLikeWg(c)}\n`);
        break;
      }
    }
  }
}

/** An `endpoint` argument, with wg's messages for the ways it can be malformed (config.c, parse_endpoint). */
function endpointArg(value: string): EndpointSpec {
  if (value === "") throw new UsageError("Unable to parse empty endpoint");
  if (value.startsWith("[") && !value.includes("]")) {
    throw new UsageError(`Unable to find matching brace of endpoint: \`${value}'`);
  }
  const port = value.startsWith("[")
    ? value.slice(value.indexOf("]") + 1)
    : value.slice(value.lastIndexOf(":"));
  if (!value.includes(":") || port === ":" || (value.startsWith("[") && !port.startsWith(":"))) {
    throw new UsageError(`Unable to find port of endpoint: \`${value}'`);
  }
  const spec = parseEndpointSpec(value);
  // getaddrinfo would refuse what is neither an address nor a host name, or a port that is not one.
  if (!spec) throw new UsageError(`Name or service not known: \`${value}'`);
  return spec;
}

/**
 * Resolves an endpoint as wg does (config.c, parse_endpoint): through getaddrinfo, taking its first answer;
 * temporary failures are retried with growing pauses (1 s, ×1.2, at most 20 s), WG_ENDPOINT_RESOLUTION_RETRIES
 * times (default 15, or "infinity"); a name that does not exist fails at once.
 */
export async function resolveEndpoint(spec: EndpointSpec): Promise<Endpoint> {
  const literal = literalEndpoint(spec);
  if (literal) return literal;
  const env = process.env.WG_ENDPOINT_RESOLUTION_RETRIES;
  let retries = env === undefined ? 15 : env === "infinity" ? -1 : /^[0-9]+$/.test(env) ? Number(env) : NaN;
  if (Number.isNaN(retries)) {
    throw new UsageError(`Unable to parse WG_ENDPOINT_RESOLUTION_RETRIES: \`${env}'`);
  }
  const text = formatEndpointSpec(spec);
  for (let timeout = 1000;; timeout = Math.min(20_000, Math.floor(timeout * 6 / 5))) {
    try {
      const { address } = await lookup(spec.host, { verbatim: true });
      const ep = literalEndpoint({ host: address, port: spec.port });
      if (!ep) throw new UsageError(`Neither IPv4 nor IPv6 address found: \`${text}'`);
      return ep;
    } catch (e) {
      if (e instanceof UsageError) throw e;
      const code = (e as NodeJS.ErrnoException).code;
      const permanent = code === "ENOTFOUND" || code === "EAI_FAIL" || code === "EAI_NODATA" ||
        code === "ENODATA";
      const reason = code === "EAI_AGAIN"
        ? "Temporary failure in name resolution"
        : "Name or service not known";
      if (permanent || (retries >= 0 && retries-- === 0)) throw new UsageError(`${reason}: \`${text}'`);
      process.stderr.write(
        `${reason}: \`${text}'. Trying again in ${(timeout / 1000).toFixed(2)} seconds...\n`,
      );
      await sleep(timeout);
    }
  }
}

/**
 * The set request for a configuration file (see lib/setconf.ts configToUpdate), with host names resolved:
 * `set` for setconf and wg-quick up, `add` for addconf.
 */
export async function updateFromConfig(cfg: WgConfig, mode: "set" | "add"): Promise<DeviceUpdate> {
  const resolved = new Map<EndpointSpec, Endpoint>();
  for (const p of cfg.peers) if (p.endpoint) resolved.set(p.endpoint, await resolveEndpoint(p.endpoint));
  return configToUpdate(cfg, mode, (e) => resolved.get(e)!);
}

// ---- set ----

/** Parses `wg set` arguments after the interface name, as config.c's config_read_cmd does. */
export async function parseSetArgs(argv: string[]): Promise<DeviceUpdate> {
  const u: DeviceUpdate = { replacePeers: false, peers: [] };
  let peer: PeerUpdate | null = null;
  for (let i = 0; i < argv.length;) {
    const a = argv[i]!, value = argv[i + 1];
    const has = value !== undefined;
    if (a === "listen-port" && has && !peer) u.listenPort = parsePort(value);
    else if (a === "fwmark" && has && !peer) u.fwmark = parseFwmark(value);
    else if (a === "private-key" && has && !peer) u.privateKey = readKeyFile(value);
    else if (a === "peer" && has) {
      peer = {
        publicKey: parseKey(value),
        remove: false,
        updateOnly: false,
        replaceAllowedIps: false,
        allowedIps: [],
      };
      u.peers.push(peer);
    } else if (a === "remove" && peer) {
      peer.remove = true;
      i += 1;
      continue;
    } else if (a === "endpoint" && has && peer) {
      const spec = endpointArg(value);
      peer.endpoint = await resolveEndpoint(spec);
      // A name goes to the daemon too (endpoint_name=), which resolves it again while handshakes fail.
      if (!literalEndpoint(spec)) peer.endpointName = formatEndpointSpec(spec);
    } else if (a === "allowed-ips" && has && peer) {
      // As wg: the last allowed-ips argument of a peer decides; `+`/`-` in it makes the change incremental.
      const list = parseAllowedIps(value);
      warnHostBits(list);
      peer.replaceAllowedIps = !isIncremental(list);
      peer.allowedIps.push(...list);
    } else if (a === "persistent-keepalive" && has && peer) peer.persistentKeepalive = parseKeepalive(value);
    else if (a === "preshared-key" && has && peer) peer.presharedKey = readKeyFile(value);
    else throw new UsageError(`Invalid argument: ${a}`);
    i += 2;
  }
  // A removed peer's section says only that (wg's userspace_set_device writes remove=true and moves on).
  u.peers = u.peers.map((p) =>
    p.remove
      ? { publicKey: p.publicKey, remove: true, updateOnly: false, replaceAllowedIps: false, allowedIps: [] }
      : p
  );
  return u;
}

/** `typetun set IFNAME ...`. */
export async function setMain(args: string[]): Promise<number> {
  if (args.length === 1 && (args[0] === "--help" || args[0] === "-h")) {
    process.stdout.write(SET_HELP);
    return 0;
  }
  if (args.length < 2) {
    process.stderr.write(SET_USAGE);
    return 1;
  }
  const [ifname, ...rest] = args;
  let update: DeviceUpdate;
  try {
    update = await parseSetArgs(rest);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`${e.message}\n`);
    return 1;
  }
  return await apply(ifname!, update);
}

async function apply(ifname: string, update: DeviceUpdate): Promise<number> {
  try {
    await uapiSet(ifname, update);
    return 0;
  } catch (e) {
    process.stderr.write(`Unable to modify interface: ${(e as Error).message}\n`);
    return 1;
  }
}

// ---- setconf, addconf, syncconf ----

/** Reads and parses a configuration file for setconf/addconf/syncconf (wg-quick keys refused). */
export function readConfigFile(path: string, options: { wgOnly?: boolean } = {}): WgConfig {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new UsageError(`fopen: ${systemErrorText(e)}`);
  }
  return parseConfig(text, { file: path, format: detectFormat(path, text), wgOnly: options.wgOnly });
}

/** `typetun setconf|addconf|syncconf IFNAME FILE`. */
export async function setconfMain(cmd: "setconf" | "addconf" | "syncconf", args: string[]): Promise<number> {
  if (args.length === 1 && (args[0] === "--help" || args[0] === "-h")) {
    process.stdout.write(confHelp(cmd));
    return 0;
  }
  if (args.length !== 2) {
    process.stderr.write(CONF_USAGE(cmd));
    return 1;
  }
  const [ifname, path] = args as [string, string];
  let update: DeviceUpdate;
  try {
    const cfg = readConfigFile(path, { wgOnly: true });
    for (const p of cfg.peers) warnHostBits(p.allowedIps);
    update = await updateFromConfig(cfg, cmd === "addconf" ? "add" : "set");
  } catch (e) {
    if (!(e instanceof UsageError || e instanceof ConfigError)) throw e;
    process.stderr.write(`${e.message}\n`);
    return 1;
  }
  if (cmd === "syncconf" && update.peers.length > 0) {
    try {
      update = syncUpdate(update, await uapiGet(ifname), await runningFilters(ifname));
    } catch (e) {
      process.stderr.write(`Unable to retrieve current interface configuration: ${(e as Error).message}\n`);
      return 1;
    }
  }
  return await apply(ifname, update);
}
