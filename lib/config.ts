/**
 * WireGuard configuration files, as `wg setconf` (wg(8), CONFIGURATION FILE FORMAT) and `wg-quick` (wg-quick(8),
 * CONFIGURATION) read them: the model both spellings parse into ({@link WgConfig}), the keys they share, the
 * {@link Builder} both parsers feed, values (addresses, endpoints) read and written as wg does, and the table
 * of keys both formatters write from ({@link INTERFACE_OUT}, {@link PEER_OUT}).
 *
 * The spellings: lib/conf.ts (the INI-like `.conf` file) and lib/toml.ts (TOML with the same names);
 * lib/configfile.ts picks one. lib/setconf.ts turns a configuration into a UAPI set request and back.
 * Host names in endpoints are kept as written: resolving them is I/O and belongs to cmd/. Every problem is a
 * {@link ConfigError} naming file and line.
 * @module
 */

import { keyFromBase64, keyToBase64, keyToHex } from "./encoding.ts";
import type { AllowedIpChange } from "./allowedips.ts";
import { formatRules, parseRules, type Rules } from "./filter.ts";
import {
  type Cidr,
  Endpoint,
  type Family,
  formatAddress,
  parseAddress,
  parseCidr,
  splitHostPort,
} from "./ip.ts";

// ---- The model ----

/** An endpoint as written: an IP literal or a host name (resolved by the caller), and a port. */
export interface EndpointSpec {
  /** A host name, an IPv4 address, or an IPv6 address without brackets. */
  host: string;
  port: number;
}

/** An interface address for wg-quick's `Address`: unlike an allowed IP, its host bits are kept (10.0.0.1/24). */
export interface InterfaceAddress {
  family: Family;
  addr: Uint8Array;
  prefixLen: number;
}

/**
 * A key kept in a file of its own (systemd-networkd's `PrivateKeyFile=`, `PresharedKeyFile=`): the file holds
 * the base64 key, so the configuration itself holds no secret (Docker and Podman secrets land in /run/secrets).
 * The configuration keeps the reference; cmd/ reads the file ({@link resolveKeyFiles}).
 */
export interface KeyFileRef {
  /** As written; a relative path is taken from the configuration file's directory. */
  path: string;
  /** Where the reference is written, for errors; 0 when not from a file line. */
  line: number;
  /** What errors name instead of the configuration file (the environment variable that gave the path). */
  where?: string;
}

export interface PeerConfig {
  publicKey: Uint8Array;
  presharedKey?: Uint8Array;
  presharedKeyFile?: KeyFileRef;
  endpoint?: EndpointSpec;
  /** Seconds; 0 = off. Undefined when the file does not say (syncconf then turns a running one off). */
  persistentKeepalive?: number;
  /**
   * A `[Peer]` section replaces the peer's allowed IPs, even when this is empty (wg(8) setconf), unless an
   * entry is written `+PREFIX` or `-PREFIX` (`op`): then, as current wg(8), the entries add and remove one by
   * one and the peer's other prefixes stay.
   */
  allowedIps: AllowedIpChange[];
  /**
   * Set when `allowedIps` has signed entries and a plain `AllowedIPs` line came after the last line with one:
   * current wg(8) then replaces the list after all (config.c: each line decides, the last one wins), and sends
   * the entries after `replace_allowed_ips=true`, the removals too. Undefined otherwise.
   */
  replaceAllowedIps?: true;
  /**
   * typetun's per-peer packet filter (lib/filter.ts): the connections the peer may open to us and we to it;
   * null is `any`, undefined not given. wg(8) knows neither key: `convert --strip` drops them.
   */
  allowInbound?: Rules;
  allowOutbound?: Rules;
}

/** One configuration file. Undefined fields were not given; lists are empty when not given. */
export interface WgConfig {
  privateKey?: Uint8Array;
  privateKeyFile?: KeyFileRef;
  listenPort?: number;
  /** 0 = off. */
  fwmark?: number;
  peers: PeerConfig[];
  // The wg-quick(8) keys of [Interface]; wg(8) itself rejects them (see WG_QUICK_KEYS).
  addresses: InterfaceAddress[];
  /** DNS servers (IP addresses, canonical text). */
  dns: string[];
  /** DNS entries that are not IP addresses: wg-quick hands them to resolvconf as search domains. */
  dnsSearch: string[];
  mtu?: number;
  /** `off`, `auto`, or a routing table number or name. */
  table?: string;
  /**
   * typetun's multihop (cmd/multihop.ts): wg-quick files of the hops this tunnel is carried through,
   * outermost (the entry relay) first. Relative paths are taken from the config file's directory.
   */
  via?: string[];
  preUp: string[];
  postUp: string[];
  preDown: string[];
  postDown: string[];
  saveConfig: boolean;
}

export type ConfigFormat = "conf" | "toml";

/** A problem in a configuration file; `message` reads `wg0.conf:7: unknown key "Adress" in [Interface]`. */
export class ConfigError extends Error {
  override name = "ConfigError";
  /**
   * @param file the name to show (the path as given)
   * @param line 1-based; 0 when no single line is to blame
   * @param problem what is wrong, without the location
   */
  constructor(readonly file: string, readonly line: number, readonly problem: string) {
    super(line > 0 ? `${file}:${line}: ${problem}` : `${file}: ${problem}`);
  }
}

export function emptyConfig(): WgConfig {
  return {
    peers: [],
    addresses: [],
    dns: [],
    dnsSearch: [],
    preUp: [],
    postUp: [],
    preDown: [],
    postDown: [],
    saveConfig: false,
  };
}

// ---- Keys ----

const INTERFACE_KEYS = ["PrivateKey", "PrivateKeyFile", "ListenPort", "FwMark"] as const;
/**
 * The [Interface] keys that only wg-quick(8) understands: it takes them out before handing the rest to
 * `wg setconf` (`wg-quick strip` prints what is left), and wg(8) refuses them as unrecognized lines.
 */
export const WG_QUICK_KEYS = [
  "Address",
  "DNS",
  "MTU",
  "Table",
  "PreUp",
  "PostUp",
  "PreDown",
  "PostDown",
  "SaveConfig",
  "Via",
] as const;
const PEER_KEYS = [
  "PublicKey",
  "PresharedKey",
  "PresharedKeyFile",
  "AllowedIPs",
  "Endpoint",
  "PersistentKeepalive",
  "AllowInbound",
  "AllowOutbound",
] as const;
/**
 * Keys that name a file holding a key (systemd-networkd's names). wg(8) knows neither, so `wg setconf`'s
 * spelling (`wgOnly`) refuses them as it refuses the wg-quick keys.
 */
export const KEY_FILE_KEYS = new Set(["PrivateKeyFile", "PresharedKeyFile"]);

export type Section = "Interface" | "Peer";
export const CANONICAL = new Map<string, { name: string; section: Section }>();
for (const k of [...INTERFACE_KEYS, ...WG_QUICK_KEYS]) {
  CANONICAL.set(k.toLowerCase(), { name: k, section: "Interface" });
}
for (const k of PEER_KEYS) CANONICAL.set(k.toLowerCase(), { name: k, section: "Peer" });
const QUICK = new Set<string>(WG_QUICK_KEYS);
/** Keys whose values are lists (comma-separated in a .conf line, accumulated over repeated lines). */
export const LIST_KEYS = new Set(["AllowedIPs", "Address", "DNS", "Via"]);
export const HOOK_KEYS = new Set(["PreUp", "PostUp", "PreDown", "PostDown"]);
export const NUMBER_KEYS = new Set(["ListenPort", "FwMark", "MTU", "PersistentKeepalive"]);

/** True if the configuration uses any wg-quick-only key. */
export function hasQuickKeys(cfg: WgConfig): boolean {
  return cfg.addresses.length > 0 || cfg.dns.length > 0 || cfg.dnsSearch.length > 0 ||
    cfg.mtu !== undefined ||
    cfg.table !== undefined || cfg.preUp.length > 0 || cfg.postUp.length > 0 || cfg.preDown.length > 0 ||
    cfg.postDown.length > 0 || cfg.saveConfig || (cfg.via?.length ?? 0) > 0;
}

/** The configuration without its wg-quick keys: what `wg-quick strip` prints, and what wg(8) accepts. */
export function stripQuick(cfg: WgConfig): WgConfig {
  return {
    ...emptyConfig(),
    privateKey: cfg.privateKey,
    privateKeyFile: cfg.privateKeyFile,
    listenPort: cfg.listenPort,
    fwmark: cfg.fwmark,
    // typetun's filter keys go too: what is left is what wg(8) accepts.
    peers: cfg.peers.map(({ allowInbound: _i, allowOutbound: _o, ...p }) => p),
  };
}

// ---- Parsing ----

export interface ParseOptions {
  /** The name errors show; default "(config)". */
  file?: string;
  /** Reject the wg-quick keys, as `wg setconf` does (it reports them as unrecognized lines). */
  wgOnly?: boolean;
}

/** Collects sections and keys from either spelling and checks them. */
export class Builder {
  readonly cfg = emptyConfig();
  #section: Section | null = null;
  #peer: PeerConfig | null = null;
  /** Per peer: the line of its section header and of its PublicKey (0 = none yet). */
  readonly #peerLines: { section: number; key: number }[] = [];
  readonly #quickSeen = new Set<string>();

  constructor(readonly file: string, readonly wgOnly: boolean) {}

  fail(line: number, problem: string): never {
    throw new ConfigError(this.file, line, problem);
  }

  /** A `[Name]` header, whitespace already removed. */
  section(header: string, line: number): void {
    const name = header.toLowerCase();
    if (name === "[interface]") {
      this.#section = "Interface";
      this.#peer = null;
    } else if (name === "[peer]") {
      this.#section = "Peer";
      this.#peer = { publicKey: new Uint8Array(0), allowedIps: [] };
      this.cfg.peers.push(this.#peer);
      this.#peerLines.push({ section: line, key: 0 });
    } else {
      this.fail(line, `unknown section ${quote(header)} (expected [Interface] or [Peer])`);
    }
  }

  /**
   * One key with its value as a .conf line holds it. `joined` says a TOML list was joined with commas, so an
   * empty string means an empty list.
   */
  set(key: string, value: string, line: number, joined = false): void {
    const known = CANONICAL.get(key.toLowerCase());
    if (this.#section === null) {
      this.fail(line, `key ${quote(key)} outside a section ([Interface] or [Peer])`);
    }
    if (!known || known.section !== this.#section) {
      const hint = known ? ` (it belongs in [${known.section}])` : "";
      this.fail(line, `unknown key ${quote(key)} in [${this.#section}]${hint}`);
    }
    const name = known.name;
    if (KEY_FILE_KEYS.has(name)) {
      if (this.wgOnly) {
        this.fail(line, `${name} is a typetun key, not a WireGuard one (wg(8) takes the key itself)`);
      }
      // A path may hold spaces: only its ends are trimmed (wg's removal of every space is for keys).
      const path = value.trim();
      if (path === "" || path.includes("\0")) this.fail(line, `${name} needs a file name`);
      const ref = { path, line };
      if (name === "PrivateKeyFile") this.cfg.privateKeyFile = ref;
      else this.#peer!.presharedKeyFile = ref;
      return;
    }
    if (QUICK.has(name)) {
      if (this.wgOnly) {
        this.fail(
          line,
          `${name} is a wg-quick key, not a WireGuard one (typetun convert --strip FILE drops them)`,
        );
      }
      this.#quick(name, value, line);
      return;
    }
    // wg(8) removes every space from the line before reading it (config.c, config_read_line).
    const v = value.replace(/\s+/g, "");
    const peer = this.#peer;
    switch (name) {
      case "PrivateKey":
        this.cfg.privateKey = this.#key(name, v, line);
        return;
      case "ListenPort":
        this.cfg.listenPort = this.#uint(name, v, 0xffff, line, false);
        return;
      case "FwMark":
        this.cfg.fwmark = this.#fwmark(v, line);
        return;
      case "PublicKey": {
        peer!.publicKey = this.#key(name, v, line);
        this.#peerLines[this.#peerLines.length - 1]!.key = line;
        return;
      }
      case "PresharedKey":
        peer!.presharedKey = this.#key(name, v, line);
        return;
      case "AllowedIPs": {
        const ips = peer!.allowedIps;
        let signed = false;
        // `AllowedIPs =` is an empty list, as in wg(8).
        if (!(v === "" && (joined || value === ""))) {
          for (const item of v.split(",")) {
            // Current wg(8) (v1.0.20260223) takes `+PREFIX` and `-PREFIX` (config.c, parse_allowedips).
            const op = item[0] === "+" || item[0] === "-" ? item[0] : undefined;
            const c = parseAllowedIp(op ? item.slice(1) : item);
            if (!c) this.fail(line, `bad CIDR ${quote(item)} in AllowedIPs (expected address/length)`);
            ips.push(op ? { ...c, op } : c);
            signed ||= op !== undefined;
          }
        }
        // As current wg(8): a line with a signed entry makes the update incremental, a plain line after it
        // makes it replace the list again (the last line decides).
        if (signed) delete peer!.replaceAllowedIps;
        else if (ips.some((c) => c.op !== undefined)) peer!.replaceAllowedIps = true;
        return;
      }
      case "Endpoint": {
        const ep = parseEndpointSpec(v);
        if (!ep) {
          this.fail(line, `bad endpoint ${quote(v)} (expected host:port, IPv4:port or [IPv6]:port)`);
        }
        peer!.endpoint = ep;
        return;
      }
      case "PersistentKeepalive":
        peer!.persistentKeepalive = this.#uint(name, v, 0xffff, line, true);
        return;
      case "AllowInbound":
      case "AllowOutbound": {
        // typetun's filter keys: `typetun setconf`/`up` send them (as allow_inbound=/allow_outbound=); wg(8)
        // refuses the line, so a file with them is for typetun only.
        let rules: Rules;
        try {
          rules = parseRules(v);
        } catch (e) {
          this.fail(line, `bad ${name}: ${(e as Error).message}`);
        }
        if (name === "AllowInbound") peer!.allowInbound = rules;
        else peer!.allowOutbound = rules;
        return;
      }
    }
  }

  #quick(name: string, value: string, line: number): void {
    const cfg = this.cfg;
    const items = value.split(/[\s,]+/).filter((s) => s !== "");
    switch (name) {
      case "Address":
        for (const item of items) {
          const a = parseInterfaceAddress(item);
          if (!a) this.fail(line, `bad CIDR ${quote(item)} in Address (expected address or address/length)`);
          cfg.addresses.push(a);
        }
        return;
      case "DNS":
        for (const item of items) {
          // wg-quick: entries that look like IP addresses are servers, the rest search domains.
          if (/^[0-9.]+$|:/.test(item)) {
            const a = item.includes("%") ? null : parseAddress(item);
            if (!a) this.fail(line, `bad DNS server ${quote(item)} (not an IP address)`);
            cfg.dns.push(formatAddress(a));
          } else if (/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?$/.test(item) && item.length <= 253) {
            cfg.dnsSearch.push(item);
          } else {
            this.fail(line, `bad DNS search domain ${quote(item)}`);
          }
        }
        return;
      case "MTU":
        // Linux refuses less than 68 (RFC 791: every host must take a 68-byte datagram unfragmented).
        cfg.mtu = this.#uint(name, value, 0xffff, line, false);
        if (cfg.mtu < 68) this.fail(line, `bad number ${quote(value)} for MTU (68-65535)`);
        return;
      case "Table":
        if (!/^[A-Za-z0-9_.-]+$/.test(value)) {
          this.fail(line, `bad Table ${quote(value)} (off, auto, or a routing table number or name)`);
        }
        cfg.table = value;
        return;
      case "Via":
        // Paths, one per line or comma-separated (spaces inside a path stay).
        for (const item of value.split(",").map((x) => x.trim()).filter((x) => x !== "")) {
          // What a .conf line cannot carry back (a comment sign, control characters) is refused in both
          // spellings.
          // deno-lint-ignore no-control-regex -- control characters are what is refused
          if (/[\x00-\x1f\x7f#]/.test(item)) {
            this.fail(line, `bad Via ${quote(item)} (a file name without # or control characters)`);
          }
          (cfg.via ??= []).push(item);
        }
        return;
      case "SaveConfig": {
        // wg-quick's read_bool: exactly true or false (compared case-insensitively, under nocasematch).
        const b = value.toLowerCase();
        if (b !== "true" && b !== "false") this.fail(line, `bad SaveConfig ${quote(value)} (true or false)`);
        cfg.saveConfig = b === "true";
        return;
      }
      default: {
        if (value === "") this.fail(line, `empty ${name} command`);
        // bash drops NUL bytes from what it reads and cannot pass one in an argument: no shell runs this.
        if (value.includes("\0")) {
          this.fail(line, `${name} command holds a NUL character, which a shell cannot run`);
        }
        // Text read from a file is never this; a string handed in may be, and it cannot be written out again.
        if (LONE_SURROGATE.test(value)) {
          this.fail(line, `${name} command is not valid Unicode (a lone UTF-16 surrogate)`);
        }
        const list = name === "PreUp"
          ? cfg.preUp
          : name === "PostUp"
          ? cfg.postUp
          : name === "PreDown"
          ? cfg.preDown
          : cfg.postDown;
        list.push(value);
      }
    }
  }

  #key(name: string, v: string, line: number): Uint8Array {
    const k = keyFromBase64(v);
    if (!k) this.fail(line, `bad key for ${name}: must be 32 bytes of base64 (44 characters ending in "=")`);
    return k;
  }

  /** Decimal, 0..max; `off` means 0 where wg(8) allows it (PersistentKeepalive). */
  #uint(name: string, v: string, max: number, line: number, offAllowed: boolean): number {
    if (offAllowed && v.toLowerCase() === "off") return 0;
    if (!/^[0-9]+$/.test(v) || Number(v) > max) {
      const what = name === "ListenPort" ? "port" : "number";
      this.fail(line, `bad ${what} ${quote(v)} for ${name} (0-${max}${offAllowed ? " or off" : ""})`);
    }
    return Number(v);
  }

  /** wg(8) parse_fwmark: `off`, decimal, or hex with a `0x` prefix, at most 0xffffffff. */
  #fwmark(v: string, line: number): number {
    if (v.toLowerCase() === "off") return 0;
    const n = /^0x[0-9a-fA-F]+$/.test(v) ? parseInt(v.slice(2), 16) : /^[0-9]+$/.test(v) ? Number(v) : NaN;
    if (!(n <= 0xffffffff)) this.fail(line, `bad number ${quote(v)} for FwMark (0-0xffffffff or off)`);
    return n;
  }

  finish(): WgConfig {
    const seen = new Map<string, number>();
    const both = (k: string, f: KeyFileRef) => this.fail(f.line, `both ${k} and ${k}File given (use one)`);
    if (this.cfg.privateKey && this.cfg.privateKeyFile) both("PrivateKey", this.cfg.privateKeyFile);
    this.cfg.peers.forEach((p, i) => {
      const lines = this.#peerLines[i]!;
      if (lines.key === 0) this.fail(lines.section, "[Peer] section without a PublicKey");
      if (p.presharedKey && p.presharedKeyFile) both("PresharedKey", p.presharedKeyFile);
      const hex = keyToHex(p.publicKey);
      const first = seen.get(hex);
      if (first !== undefined) {
        this.fail(
          lines.key,
          `duplicate peer public key ${keyToBase64(p.publicKey)} (first at line ${first})`,
        );
      }
      seen.set(hex, lines.key);
    });
    return this.cfg;
  }
}

/** An allowed IP as wg(8) reads it: address, optionally `/length` (a host route without it); no zone. */

function parseAllowedIp(s: string): Cidr | null {
  if (s.includes("%") || !/^[^/]+(\/[0-9]{1,3})?$/.test(s)) return null;
  return parseCidr(s);
}

/** An interface address: address, optionally `/length` (32 or 128 without it); the host bits stay. */
export function parseInterfaceAddress(s: string): InterfaceAddress | null {
  const m = /^([^/%]+)(?:\/([0-9]{1,3}))?$/.exec(s);
  const addr = m ? parseAddress(m[1]!) : null;
  if (!addr) return null;
  const prefixLen = m![2] === undefined ? addr.length * 8 : Number(m![2]);
  if (prefixLen > addr.length * 8) return null;
  return { family: addr.length === 4 ? 4 : 6, addr, prefixLen };
}

export function formatInterfaceAddress(a: InterfaceAddress): string {
  return `${formatAddressLikeWg(a.addr)}/${a.prefixLen}`;
}

/**
 * Splits an endpoint as wg(8) does (config.c, parse_endpoint): `[host]:port`, else the host is everything
 * before the last colon, so an unbracketed IPv6 address works too. The host must be an IP literal or a DNS
 * name; the port decimal, 0-65535. Null if it is neither.
 */
export function parseEndpointSpec(s: string): EndpointSpec | null {
  const hp = splitHostPort(s);
  if (!hp) return null;
  const { host, port } = hp;
  if (hp.bracketed) {
    if (!host.includes(":") || !parseAddress(host)) return null; // brackets are for IPv6 literals
  } else if (host.includes(":") || /^[0-9.]+$/.test(host)) {
    if (host.includes("%") || !parseAddress(host)) return null;
  } else if (
    !/^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$/.test(host)
  ) {
    return null; // not a DNS name either (this also refuses an empty host)
  }
  const addr = parseAddress(host);
  return { host: addr ? formatAddressLikeWg(addr) : host, port };
}

/** `host:port`, or `[v6]:port` when the host is an IPv6 address, as wg(8) prints endpoints. */
export function formatEndpointSpec(e: EndpointSpec): string {
  return e.host.includes(":") ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`;
}

/** The endpoint if its host is an IP literal; null for a host name (which cmd/ resolves). */
export function literalEndpoint(e: EndpointSpec): Endpoint | null {
  const addr = parseAddress(e.host);
  return addr ? new Endpoint(addr.length === 4 ? 4 : 6, addr, e.port) : null;
}

/**
 * An address as wg(8) prints it, through glibc's inet_ntop: RFC 5952, except that an IPv6 address whose first
 * 96 bits are zero and whose 7th group is not (so not `::`, `::1`) is printed in the deprecated IPv4-compatible
 * form `::a.b.c.d` (glibc resolv/inet_ntop.c, inet_ntop6; `wg show` prints ::a00:1 as ::10.0.0.1).
 */
export function formatAddressLikeWg(a: Uint8Array): string {
  if (a.length === 16 && a.subarray(0, 12).every((b) => b === 0) && (a[12]! | a[13]!) !== 0) {
    return `::${a[12]}.${a[13]}.${a[14]}.${a[15]}`;
  }
  return formatAddress(a);
}

export function formatCidrLikeWg(c: Cidr): string {
  return `${formatAddressLikeWg(c.addr)}/${c.prefixLen}`;
}

// ---- Formatting: one table of keys for both spellings ----

/** Where {@link formatConf} and {@link formatToml} name the configuration in their errors. */
export interface FormatOptions {
  /** The name errors show (the input file when converting); default "(config)". */
  file?: string;
}

/** A value to write, typed so that each spelling writes it its own way. */
export type OutValue =
  /** A string: as it is in a .conf line, quoted in TOML. */
  | { kind: "text"; text: string }
  /** A list: one line per item in .conf (or all on one line, joined by ", "), an array in TOML. */
  | { kind: "list"; items: string[]; oneLine?: boolean }
  /** An integer; `hex` writes it as 0x…, `zeroIsOff` writes 0 as "off" in .conf (TOML keeps the number). */
  | { kind: "number"; n: number; hex?: boolean; zeroIsOff?: boolean }
  /** A flag that is written only when set. */
  | { kind: "true" };

type Out<T> = readonly (readonly [key: string, value: (x: T) => OutValue | null])[];

const text = (s: string | undefined): OutValue | null => s === undefined ? null : { kind: "text", text: s };
const list = (items: string[], oneLine = false): OutValue | null =>
  items.length > 0 ? { kind: "list", items, oneLine } : null;
const num = (n: number | undefined, o: { hex?: boolean; zeroIsOff?: boolean } = {}): OutValue | null =>
  n === undefined ? null : { kind: "number", n, ...o };
const key = (k: Uint8Array | undefined): OutValue | null => k ? { kind: "text", text: keyToBase64(k) } : null;

/**
 * The [Interface] keys in the order both spellings write them: the wg-quick keys first, in the order
 * wg-quick's save_config writes them, then what `wg showconf` prints.
 */
export const INTERFACE_OUT: Out<WgConfig> = [
  ["Address", (c) => list(c.addresses.map(formatInterfaceAddress))],
  ["DNS", (c) => list([...c.dns, ...c.dnsSearch])],
  ["MTU", (c) => num(c.mtu)],
  ["Table", (c) => text(c.table)],
  ["Via", (c) => list(c.via ?? [])],
  ["SaveConfig", (c) => c.saveConfig ? { kind: "true" } : null],
  ["PreUp", (c) => list(c.preUp)],
  ["PostUp", (c) => list(c.postUp)],
  ["PreDown", (c) => list(c.preDown)],
  ["PostDown", (c) => list(c.postDown)],
  ["ListenPort", (c) => num(c.listenPort)],
  ["FwMark", (c) => num(c.fwmark, { hex: true, zeroIsOff: true })],
  // A key read from a file is not written out: the reference is (the secret stays in its file).
  ["PrivateKey", (c) => c.privateKeyFile ? null : key(c.privateKey)],
  ["PrivateKeyFile", (c) => text(c.privateKeyFile?.path)],
];

/** The [Peer] keys, in the order `wg showconf` prints them. */
export const PEER_OUT: Out<PeerConfig> = [
  ["PublicKey", (p) => key(p.publicKey)],
  ["PresharedKey", (p) => p.presharedKeyFile ? null : key(p.presharedKey)],
  ["PresharedKeyFile", (p) => text(p.presharedKeyFile?.path)],
  ["AllowedIPs", allowedIpsOut],
  ["Endpoint", (p) => p.endpoint ? text(formatEndpointSpec(p.endpoint)) : null],
  ["PersistentKeepalive", (p) => num(p.persistentKeepalive, { zeroIsOff: true })],
  ["AllowInbound", (p) => p.allowInbound === undefined ? null : text(formatRules(p.allowInbound))],
  ["AllowOutbound", (p) => p.allowOutbound === undefined ? null : text(formatRules(p.allowOutbound))],
];

/**
 * AllowedIPs on one line, signs as read; a list that replaces after all ({@link PeerConfig.replaceAllowedIps})
 * on two: up to its last signed entry, then the plain ones after it, so that it reads back the same.
 */
function allowedIpsOut(p: PeerConfig): OutValue | null {
  const items = p.allowedIps.map((c) => (c.op ?? "") + formatCidrLikeWg(c));
  if (!p.replaceAllowedIps) return list(items, true);
  const cut = p.allowedIps.findLastIndex((c) => c.op !== undefined) + 1;
  return { kind: "list", items: [items.slice(0, cut).join(", "), items.slice(cut).join(", ")] };
}

/** Writes the keys of `table` that `x` has, each through `line` (which spells one key and its value). */
export function writeKeys<T>(table: Out<T>, x: T, line: (key: string, value: OutValue) => string): string {
  let out = "";
  for (const [k, get] of table) {
    const v = get(x);
    if (v !== null) out += line(k, v);
  }
  return out;
}

/** The hook commands by key, for the formatters' checks of what their spelling can carry. */
export function hookLists(cfg: WgConfig): [string, string[]][] {
  return [["PreUp", cfg.preUp], ["PostUp", cfg.postUp], ["PreDown", cfg.preDown], ["PostDown", cfg.postDown]];
}

/** A string with a lone UTF-16 surrogate: not valid Unicode, so no file can hold it. */
export const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * True if two configurations mean the same: the same keys with the same values, lists in the same order
 * (whatever order the fields were set in, and whichever spelling they came from).
 */
export function sameConfig(a: WgConfig, b: WgConfig): boolean {
  return canonical(a) === canonical(b);
}

function canonical(c: WgConfig): string {
  const bytes = (k: Uint8Array | undefined) => k === undefined ? null : Array.from(k);
  const cidr = (
    x: { family: number; addr: Uint8Array; prefixLen: number; op?: string },
  ) => [x.family, bytes(x.addr), x.prefixLen, ...(x.op ? [x.op] : [])];
  return JSON.stringify([
    bytes(c.privateKey),
    c.privateKeyFile?.path ?? null,
    c.listenPort ?? null,
    c.fwmark ?? null,
    c.peers.map((p) => [
      bytes(p.publicKey),
      bytes(p.presharedKey),
      p.presharedKeyFile?.path ?? null,
      p.endpoint ? [p.endpoint.host, p.endpoint.port] : null,
      p.persistentKeepalive ?? null,
      p.allowedIps.map(cidr),
      p.replaceAllowedIps ?? false,
      p.allowInbound === undefined ? null : formatRules(p.allowInbound),
      p.allowOutbound === undefined ? null : formatRules(p.allowOutbound),
    ]),
    c.addresses.map(cidr),
    c.dns,
    c.dnsSearch,
    c.mtu ?? null,
    c.table ?? null,
    c.preUp,
    c.postUp,
    c.preDown,
    c.postDown,
    c.saveConfig,
    c.via ?? [],
  ]);
}

/** A value for an error message: quoted, and cut at 80 characters. */
export function quote(s: string): string {
  return JSON.stringify(s.length > 80 ? `${s.slice(0, 80)}…` : s);
}

// ---- Keys in files ----

/**
 * The key a key file holds, as wg(8) reads one (config.c, parse_keyfile): base64 with whitespace around it;
 * an empty file is the zero key (no key). Returns the key, or why the text is not one.
 */
export function keyFromFileText(text: string): Uint8Array | string {
  const t = text.trim();
  if (t === "") return new Uint8Array(32);
  const k = keyFromBase64(t);
  if (k) return k;
  if (/\s/.test(t)) return "trailing characters after the key";
  return 'not a key: must be 32 bytes of base64 (44 characters ending in "=")';
}

/**
 * The configuration with the keys its key files hold filled in (the references stay, so the result can still
 * be written out without the secret). `read` does the I/O: it returns the file's text or throws an Error whose
 * message says why not. Errors are ConfigErrors naming the configuration's line and the key file.
 */
export function resolveKeyFiles(cfg: WgConfig, file: string, read: (path: string) => string): WgConfig {
  const load = (name: string, ref: KeyFileRef): Uint8Array => {
    let text: string;
    try {
      text = read(ref.path);
    } catch (e) {
      throw new ConfigError(
        ref.where ?? file,
        ref.line,
        `${name} ${quote(ref.path)}: ${(e as Error).message}`,
      );
    }
    const k = keyFromFileText(text);
    if (typeof k === "string") {
      throw new ConfigError(ref.where ?? file, ref.line, `${name} ${quote(ref.path)}: ${k}`);
    }
    return k;
  };
  const out: WgConfig = { ...cfg, peers: cfg.peers.map((p) => ({ ...p })) };
  if (cfg.privateKeyFile) out.privateKey = load("PrivateKeyFile", cfg.privateKeyFile);
  for (const p of out.peers) {
    if (p.presharedKeyFile) p.presharedKey = load("PresharedKeyFile", p.presharedKeyFile);
  }
  return out;
}
