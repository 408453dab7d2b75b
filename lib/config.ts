/**
 * WireGuard configuration files, as `wg setconf` (wg(8), CONFIGURATION FILE FORMAT) and `wg-quick` (wg-quick(8),
 * CONFIGURATION) read them, in two spellings:
 *
 * - the INI-like `.conf` file: `[Interface]` and `[Peer]` sections, `Key = Value` lines, keys and section names
 *   case-insensitive, `#` starting a comment anywhere on a line;
 * - TOML with the same names: an `[Interface]` table and a `[[Peer]]` array of tables. Table and key names are
 *   matched case-insensitively against the `.conf` names (`[interface]`, `[[peer]]`, `listenport` all work);
 *   output always uses the `.conf` spelling. Values may be typed (`ListenPort = 51820`, `FwMark = 0x10`,
 *   `AllowedIPs = ["10.0.0.2/32", "fd00::2/128"]`, `SaveConfig = true`, `PostUp = ["cmd one", "cmd two"]`) or
 *   be the same strings a `.conf` file holds (`AllowedIPs = "10.0.0.2/32, fd00::2/128"`, `FwMark = "off"`).
 *
 * Both parse into one {@link WgConfig}, which formats back out in either spelling and turns into a UAPI set
 * request ({@link configToUpdate}, then lib/uapi.ts's formatSet). Host names in endpoints are kept as written:
 * resolving them is I/O and belongs to cmd/. Every problem is a {@link ConfigError} naming file and line.
 * @module
 */

import { parse as parseTomlText, TomlError } from "smol-toml";
import {
  type Cidr,
  Endpoint,
  type Family,
  formatAddress,
  parseAddress,
  parseCidr,
  splitHostPort,
} from "./ip.ts";
import { keyFromBase64, keyToBase64, keyToHex } from "./encoding.ts";
import type { DeviceInfo, DeviceUpdate, PeerUpdate } from "./uapi.ts";

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

export interface PeerConfig {
  publicKey: Uint8Array;
  presharedKey?: Uint8Array;
  endpoint?: EndpointSpec;
  /** Seconds; 0 = off. Undefined when the file does not say (syncconf then turns a running one off). */
  persistentKeepalive?: number;
  /** A `[Peer]` section always replaces the peer's allowed IPs, even when this is empty (wg(8) setconf). */
  allowedIps: Cidr[];
}

/** One configuration file. Undefined fields were not given; lists are empty when not given. */
export interface WgConfig {
  privateKey?: Uint8Array;
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

const INTERFACE_KEYS = ["PrivateKey", "ListenPort", "FwMark"] as const;
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
] as const;
const PEER_KEYS = ["PublicKey", "PresharedKey", "AllowedIPs", "Endpoint", "PersistentKeepalive"] as const;

type Section = "Interface" | "Peer";
const CANONICAL = new Map<string, { name: string; section: Section }>();
for (const k of [...INTERFACE_KEYS, ...WG_QUICK_KEYS]) {
  CANONICAL.set(k.toLowerCase(), { name: k, section: "Interface" });
}
for (const k of PEER_KEYS) CANONICAL.set(k.toLowerCase(), { name: k, section: "Peer" });
const QUICK = new Set<string>(WG_QUICK_KEYS);
/** Keys whose values are lists (comma-separated in a .conf line, accumulated over repeated lines). */
const LIST_KEYS = new Set(["AllowedIPs", "Address", "DNS"]);
const HOOK_KEYS = new Set(["PreUp", "PostUp", "PreDown", "PostDown"]);
const NUMBER_KEYS = new Set(["ListenPort", "FwMark", "MTU", "PersistentKeepalive"]);

/** True if the configuration uses any wg-quick-only key. */
export function hasQuickKeys(cfg: WgConfig): boolean {
  return cfg.addresses.length > 0 || cfg.dns.length > 0 || cfg.dnsSearch.length > 0 ||
    cfg.mtu !== undefined ||
    cfg.table !== undefined || cfg.preUp.length > 0 || cfg.postUp.length > 0 || cfg.preDown.length > 0 ||
    cfg.postDown.length > 0 || cfg.saveConfig;
}

/** The configuration without its wg-quick keys: what `wg-quick strip` prints, and what wg(8) accepts. */
export function stripQuick(cfg: WgConfig): WgConfig {
  return {
    ...emptyConfig(),
    privateKey: cfg.privateKey,
    listenPort: cfg.listenPort,
    fwmark: cfg.fwmark,
    peers: cfg.peers,
  };
}

// ---- Parsing ----

export interface ParseOptions {
  /** The name errors show; default "(config)". */
  file?: string;
  /** Reject the wg-quick keys, as `wg setconf` does (it reports them as unrecognized lines). */
  wgOnly?: boolean;
}

/**
 * Which spelling a file uses: by its extension (`.toml`, `.conf`), else by its content. A `[[...]]` header
 * means TOML. A quoted value or a list value (`[` followed by a quote, `]` or the end of the line; an
 * endpoint's `[2001:db8::1]:51820` is not one) means TOML if the whole text reads as TOML: a .conf hook
 * command may begin with a quote too (`PostUp = "$HOME/up.sh" %i`), and such a file is no TOML.
 */
export function detectFormat(name: string, text: string): ConfigFormat {
  if (/\.toml$/i.test(name)) return "toml";
  if (/\.conf$/i.test(name)) return "conf";
  let quoted = false;
  for (const raw of text.split("\n")) {
    const line = raw.replace(/#.*/, "").trim();
    if (/^\[\[/.test(line)) return "toml";
    quoted ||= /^[^=]+=\s*(["']|\[\s*$|\[\s*["'\]])/.test(line);
  }
  if (!quoted) return "conf";
  try {
    parseTomlText(text);
    return "toml";
  } catch {
    return "conf";
  }
}

/** Parses either spelling ({@link detectFormat} decides when `format` is not given). Throws ConfigError. */
export function parseConfig(text: string, options: ParseOptions & { format?: ConfigFormat } = {}): WgConfig {
  const format = options.format ?? detectFormat(options.file ?? "", text);
  return format === "toml" ? parseToml(text, options) : parseConf(text, options);
}

/**
 * Parses a `.conf` file. Lines are read as wg(8)'s config.c reads them: everything from `#` on is a comment,
 * section names and keys are case-insensitive, repeated `AllowedIPs`, `Address` and `DNS` lines add to the list,
 * a repeated single-valued key replaces the earlier value. Whitespace is removed from the values of wg's own keys
 * (wg strips every space of a line), and wg-quick splits `Address` and `DNS` at commas and spaces.
 *
 * The hook commands (PreUp, PostUp, PreDown, PostDown) are read as current wg-quick reads them (linux.bash
 * parse_options, `unstripped_value`; v1.0.20260223 here): everything after the first `=`, `#` included (the
 * shell decides what a `#` means: `--comment 'wg#1'` stays whole, ` # note` is a shell comment), trimmed at
 * both ends. Older wg-quick (Debian 12's v1.0.20210914) cut hooks at the first `#` as well. wg-quick trims
 * bash's `[[:space:]]`, which depends on the locale; this trims every space JavaScript knows (ASCII and
 * Unicode, no-break spaces too), exactly what {@link confHookProblem} refuses to write, so whatever a .conf
 * file holds can be written back as .conf.
 */
export function parseConf(text: string, options: ParseOptions = {}): WgConfig {
  const b = new Builder(options.file ?? "(config)", options.wgOnly ?? false);
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    const raw = lines[i]!;
    const hash = raw.indexOf("#");
    const line = (hash < 0 ? raw : raw.slice(0, hash)).trim();
    if (line === "") continue;
    if (line.startsWith("[")) {
      b.section(line.replace(/\s+/g, ""), lineNo);
      continue;
    }
    const eq = line.indexOf("=");
    if (eq < 0) b.fail(lineNo, `expected "Key = Value", got ${quote(line)}`);
    const key = line.slice(0, eq).trim();
    // The first `=` of the line is the first of its comment-free part, as `eq` lies before any `#`.
    const value = HOOK_KEYS.has(CANONICAL.get(key.toLowerCase())?.name ?? "")
      ? raw.slice(raw.indexOf("=") + 1).trim()
      : line.slice(eq + 1).trim();
    b.set(key, value, lineNo);
  }
  return b.finish();
}

/** Parses the TOML spelling (see the module comment). Throws ConfigError, also for TOML syntax errors. */
export function parseToml(text: string, options: ParseOptions = {}): WgConfig {
  const file = options.file ?? "(config)";
  let doc: Record<string, unknown>;
  try {
    doc = parseTomlText(text) as Record<string, unknown>;
  } catch (e) {
    if (e instanceof TomlError) {
      const what = e.message.split("\n")[0]!.replace(/^Invalid TOML document: /, "");
      throw new ConfigError(file, e.line, `TOML: ${what}`);
    }
    throw e;
  }
  const locate = new TomlLocator(text);
  const b = new Builder(file, options.wgOnly ?? false);
  for (const [name, value] of Object.entries(doc)) {
    const lower = name.toLowerCase();
    if (lower === "interface" && isTable(value)) {
      b.section("[Interface]", locate.line(name, null, null));
      tomlKeys(b, value, (key) => locate.line(name, null, key));
    } else if (lower === "peer" && Array.isArray(value) && value.every(isTable)) {
      value.forEach((peer, i) => {
        b.section("[Peer]", locate.line(name, i, null));
        tomlKeys(b, peer as Record<string, unknown>, (key) => locate.line(name, i, key));
      });
    } else if (lower === "interface" || lower === "peer") {
      const want = lower === "peer" ? "an array of tables ([[Peer]])" : "a table ([Interface])";
      b.fail(locate.line(name, null, null), `${quote(name)} must be ${want}`);
    } else {
      b.fail(
        locate.line(name, null, null) || locate.line(null, null, name),
        `unknown section ${quote(name)} (expected [Interface] or [[Peer]])`,
      );
    }
  }
  return b.finish();
}

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

/** Feeds one TOML table's keys to the builder, turning typed values into the strings a .conf line holds. */
function tomlKeys(b: Builder, table: Record<string, unknown>, lineOf: (key: string) => number): void {
  for (const [key, value] of Object.entries(table)) {
    const line = lineOf(key);
    const name = CANONICAL.get(key.toLowerCase())?.name ?? key;
    const strings = (v: unknown[]): string[] =>
      v.map((x) => typeof x === "string" ? x : b.fail(line, `${quote(key)} must be a list of strings`));
    if (typeof value === "string") {
      b.set(key, value, line);
    } else if (Array.isArray(value) && HOOK_KEYS.has(name)) {
      for (const cmd of strings(value)) b.set(key, cmd, line); // one command per element, commas and all
    } else if (Array.isArray(value) && LIST_KEYS.has(name)) {
      b.set(key, strings(value).join(","), line, true);
    } else if ((typeof value === "number" || typeof value === "bigint") && NUMBER_KEYS.has(name)) {
      if (typeof value === "number" && !Number.isInteger(value)) {
        b.fail(line, `bad number ${value} for ${name} (an integer)`);
      }
      b.set(key, value.toString(), line);
    } else if (typeof value === "boolean" && name === "SaveConfig") {
      b.set(key, String(value), line);
    } else if (!CANONICAL.has(key.toLowerCase())) {
      b.set(key, "", line); // reports the unknown key
    } else {
      const want = NUMBER_KEYS.has(name)
        ? "an integer or a string"
        : LIST_KEYS.has(name) || HOOK_KEYS.has(name)
        ? "a string or a list of strings"
        : name === "SaveConfig"
        ? "true or false"
        : "a string";
      b.fail(line, `${quote(key)} must be ${want}`);
    }
  }
}

/**
 * The lines of TOML tables and keys, for error messages (the parsed document carries no positions). One pass
 * over the text, in linear time whatever it holds: it follows `[table]` and `[[array]]` headers, counts array
 * elements, and skips values (strings, multi-line strings, arrays and inline tables spanning lines, comments)
 * so that nothing inside a value is mistaken for a header or a key. It runs only on text smol-toml accepted,
 * but stays linear on any input (no regular expression, no recursion, every character looked at once).
 */
class TomlLocator {
  /** `table \0 element \0 key` → the first line. element is the array index, or `*` for any. */
  readonly #lines = new Map<string, number>();
  #table: string | null = null;
  #element = "*";
  readonly #counts = new Map<string, number>();
  #i = 0;
  #line = 1;

  constructor(private readonly text: string) {
    this.#scan();
  }

  /** The line of `key` in `table` (its `index`th element for an array of tables; null = top level), else of
   * the table's header; 0 if neither is found. */
  line(table: string | null, index: number | null, key: string | null): number {
    const el = index === null ? "*" : String(index);
    return (key !== null ? this.#lines.get(locatorKey(table, el, key)) : undefined) ??
      this.#lines.get(locatorKey(table, el, "")) ?? 0;
  }

  #record(table: string | null, key: string): void {
    for (const el of this.#element === "*" ? ["*"] : [this.#element, "*"]) {
      const k = locatorKey(table, el, key);
      if (!this.#lines.has(k)) this.#lines.set(k, this.#line);
    }
  }

  #scan(): void {
    const t = this.text;
    while (this.#i < t.length) {
      const c = t[this.#i]!;
      if (c === " " || c === "\t" || c === "\r") this.#i++;
      else if (c === "\n") this.#newline();
      else if (c === "#") this.#toEol();
      else if (c === "[") this.#header();
      else {
        const path = this.#keyPath();
        if (path.first !== null) this.#record(this.#table, path.first);
        if (t[this.#i] === "=") {
          this.#i++;
          this.#value();
        } else {
          this.#toEol(); // not TOML; smol-toml has already said so
        }
      }
    }
  }

  #newline(): void {
    this.#i++;
    this.#line++;
  }

  /** To the end of the line, leaving the newline. */
  #toEol(): void {
    const nl = this.text.indexOf("\n", this.#i);
    this.#i = nl < 0 ? this.text.length : nl;
  }

  /** `[a.b]` or `[[a.b]]`: the table is `a`; `b` is recorded as a key of it (a sub-table's line). */
  #header(): void {
    const t = this.text;
    const array = t[this.#i + 1] === "[";
    this.#i += array ? 2 : 1;
    const path = this.#keyPath();
    this.#toEol();
    if (path.first === null) return;
    const table = path.first;
    if (path.second === null) {
      this.#table = table;
      if (array) {
        const n = (this.#counts.get(table) ?? -1) + 1;
        this.#counts.set(table, n);
        this.#element = String(n);
      } else {
        this.#element = "*";
      }
      this.#record(table, "");
    } else {
      // A sub-table of the last element (TOML 1.0, "Array of Tables"): its keys are not this table's.
      this.#table = `${table}.${path.second}`;
      this.#record(table, path.second);
    }
  }

  /** A dotted key up to `=` or `]`: its first two parts (null when absent), unquoted. */
  #keyPath(): { first: string | null; second: string | null } {
    const t = this.text;
    let first: string | null = null, second: string | null = null, n = 0;
    while (this.#i < t.length) {
      while (t[this.#i] === " " || t[this.#i] === "\t") this.#i++;
      const c = t[this.#i];
      let part: string | null;
      if (c === '"' || c === "'") {
        const start = this.#i;
        this.#string();
        const raw = t.slice(start, this.#i);
        part = c === "'" ? raw.slice(1, -1) : unquoteBasic(raw);
      } else {
        const start = this.#i;
        while (this.#i < t.length && isBareKeyChar(t.charCodeAt(this.#i))) this.#i++;
        if (this.#i === start) break;
        part = t.slice(start, this.#i);
      }
      if (n === 0) first = part;
      else if (n === 1) second = part;
      n++;
      while (t[this.#i] === " " || t[this.#i] === "\t") this.#i++;
      if (t[this.#i] !== ".") break;
      this.#i++;
    }
    return { first, second };
  }

  /** Skips a value: a scalar, a string of any kind, or arrays and inline tables nested to any depth. */
  #value(): void {
    const t = this.text;
    let depth = 0;
    while (this.#i < t.length) {
      const c = t[this.#i]!;
      if (c === '"' || c === "'") this.#string();
      else if (c === "[" || c === "{") {
        depth++;
        this.#i++;
      } else if (c === "]" || c === "}") {
        if (depth > 0) depth--;
        this.#i++;
      } else if (c === "#") this.#toEol();
      else if (c === "\n") {
        if (depth === 0) return;
        this.#newline();
      } else this.#i++;
    }
  }

  /** Skips a string at the cursor: basic or literal, single- or multi-line (counting its lines). */
  #string(): void {
    const t = this.text;
    const q = t[this.#i]!;
    const multi = t[this.#i + 1] === q && t[this.#i + 2] === q;
    this.#i += multi ? 3 : 1;
    while (this.#i < t.length) {
      const c = t[this.#i]!;
      if (c === "\\" && q === '"') {
        if (t[this.#i + 1] === "\n") this.#line++;
        this.#i += 2;
      } else if (c === "\n") {
        if (!multi) return; // unterminated; the newline ends the line
        this.#newline();
      } else if (c === q && (!multi || (t[this.#i + 1] === q && t[this.#i + 2] === q))) {
        this.#i += multi ? 3 : 1;
        // Up to two more quotes may close a multi-line string (TOML 1.0: `""""" ` ends with two quotes inside).
        if (multi) { for (let k = 0; k < 2 && t[this.#i] === q; k++) this.#i++; }
        return;
      } else this.#i++;
    }
  }
}

function locatorKey(table: string | null, element: string, key: string): string {
  return `${table === null ? "" : `[${table}]`}\0${element}\0${key}`;
}

/** TOML 1.0 bare keys: A-Za-z0-9_- */
function isBareKeyChar(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x5f ||
    c === 0x2d;
}

/** A TOML basic string's text, quotes included, to its value (as JSON reads it; raw when it cannot). */
function unquoteBasic(raw: string): string {
  try {
    return JSON.parse(raw.replace(/\\U([0-9A-Fa-f]{8})/g, (_, h) => String.fromCodePoint(parseInt(h, 16))));
  } catch {
    return raw.slice(1, -1);
  }
}

/** Collects sections and keys from either spelling and checks them. */
class Builder {
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
      case "AllowedIPs":
        if (v === "" && (joined || value === "")) return; // `AllowedIPs =` is an empty list, as in wg(8)
        for (const item of v.split(",")) {
          const c = parseAllowedIp(item);
          if (!c) this.fail(line, `bad CIDR ${quote(item)} in AllowedIPs (expected address/length)`);
          peer!.allowedIps.push(c);
        }
        return;
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
    this.cfg.peers.forEach((p, i) => {
      const lines = this.#peerLines[i]!;
      if (lines.key === 0) this.fail(lines.section, "[Peer] section without a PublicKey");
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

// ---- Formatting ----

/** Where {@link formatConf} and {@link formatToml} name the configuration in their errors. */
export interface FormatOptions {
  /** The name errors show (the input file when converting); default "(config)". */
  file?: string;
}

/**
 * The `.conf` spelling. The WireGuard part is byte for byte what `wg showconf` prints; the wg-quick keys come
 * first in [Interface], in the order wg-quick's save_config writes them (one Address and one DNS line each).
 *
 * A hook command a `.conf` line cannot carry unchanged is refused with a ConfigError naming the key and why
 * ({@link confHookProblem}), rather than written in a way that reads back as something else: parseConf of the
 * result always equals the input (for a configuration that came from parseConfig).
 */
export function formatConf(cfg: WgConfig, options: FormatOptions = {}): string {
  for (const [k, cmds] of hooks(cfg)) {
    cmds.forEach((c, i) => {
      const problem = confHookProblem(c);
      if (problem) {
        const which = cmds.length > 1 ? `${k} command ${i + 1}` : k;
        throw new ConfigError(
          options.file ?? "(config)",
          0,
          `${which} ${quote(c)} cannot be written to a .conf file: ${problem}`,
        );
      }
    });
  }
  let out = "[Interface]\n";
  for (const a of cfg.addresses) out += `Address = ${formatInterfaceAddress(a)}\n`;
  for (const d of [...cfg.dns, ...cfg.dnsSearch]) out += `DNS = ${d}\n`;
  if (cfg.mtu !== undefined) out += `MTU = ${cfg.mtu}\n`;
  if (cfg.table !== undefined) out += `Table = ${cfg.table}\n`;
  if (cfg.saveConfig) out += "SaveConfig = true\n";
  for (const [k, cmds] of hooks(cfg)) for (const c of cmds) out += `${k} = ${c}\n`;
  if (cfg.listenPort !== undefined) out += `ListenPort = ${cfg.listenPort}\n`;
  if (cfg.fwmark !== undefined) out += `FwMark = ${cfg.fwmark ? `0x${cfg.fwmark.toString(16)}` : "off"}\n`;
  if (cfg.privateKey) out += `PrivateKey = ${keyToBase64(cfg.privateKey)}\n`;
  out += "\n";
  cfg.peers.forEach((p, i) => {
    out += `[Peer]\nPublicKey = ${keyToBase64(p.publicKey)}\n`;
    if (p.presharedKey) out += `PresharedKey = ${keyToBase64(p.presharedKey)}\n`;
    if (p.allowedIps.length > 0) out += `AllowedIPs = ${p.allowedIps.map(formatCidrLikeWg).join(", ")}\n`;
    if (p.endpoint) out += `Endpoint = ${formatEndpointSpec(p.endpoint)}\n`;
    if (p.persistentKeepalive !== undefined) {
      out += `PersistentKeepalive = ${p.persistentKeepalive || "off"}\n`;
    }
    if (i < cfg.peers.length - 1) out += "\n";
  });
  return out;
}

/**
 * Why a hook command cannot be a `.conf` value, or null if it can. A value is the rest of one line, trimmed
 * (wg-quick and parseConf alike), so it cannot hold a line break nor begin or end with whitespace (any that
 * parseConf trims, which covers what bash trims in any locale); the file is UTF-8 text read by bash, so no NUL
 * and no lone UTF-16 surrogate. A `#` is fine: parseConf and current wg-quick keep it in hooks.
 */
export function confHookProblem(cmd: string): string | null {
  if (cmd === "") return "it is empty";
  if (cmd.includes("\n")) {
    return "it holds a line break, and a .conf value ends at the end of its line (the rest would be read " +
      "as further lines of the file); put the commands in a script, or give each its own line in a TOML list";
  }
  if (/^\s/.test(cmd)) return "it begins with whitespace, which .conf readers (wg-quick too) trim";
  if (/\s$/.test(cmd)) return "it ends with whitespace, which .conf readers (wg-quick too) trim";
  if (cmd.includes("\0")) return "it holds a NUL character, which a shell cannot run";
  if (LONE_SURROGATE.test(cmd)) {
    return "it is not valid Unicode (a lone UTF-16 surrogate cannot be written as UTF-8)";
  }
  return null;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * The TOML spelling, in the same order as {@link formatConf}, with typed values. TOML strings hold any text
 * (line breaks and edge whitespace escaped), so only a hook that is not valid Unicode is refused.
 */
export function formatToml(cfg: WgConfig, options: FormatOptions = {}): string {
  for (const [k, cmds] of hooks(cfg)) {
    const bad = cmds.find((c) => LONE_SURROGATE.test(c));
    if (bad !== undefined) {
      const problem = "it is not valid Unicode (a lone UTF-16 surrogate)";
      throw new ConfigError(
        options.file ?? "(config)",
        0,
        `${k} ${quote(bad)} cannot be written to TOML: ${problem}`,
      );
    }
  }
  const list = (xs: string[]) => `[${xs.map(tomlString).join(", ")}]`;
  let out = "[Interface]\n";
  if (cfg.addresses.length > 0) out += `Address = ${list(cfg.addresses.map(formatInterfaceAddress))}\n`;
  if (cfg.dns.length + cfg.dnsSearch.length > 0) out += `DNS = ${list([...cfg.dns, ...cfg.dnsSearch])}\n`;
  if (cfg.mtu !== undefined) out += `MTU = ${cfg.mtu}\n`;
  if (cfg.table !== undefined) out += `Table = ${tomlString(cfg.table)}\n`;
  if (cfg.saveConfig) out += "SaveConfig = true\n";
  for (const [k, cmds] of hooks(cfg)) if (cmds.length > 0) out += `${k} = ${list(cmds)}\n`;
  if (cfg.listenPort !== undefined) out += `ListenPort = ${cfg.listenPort}\n`;
  if (cfg.fwmark !== undefined) out += `FwMark = ${cfg.fwmark ? `0x${cfg.fwmark.toString(16)}` : 0}\n`;
  if (cfg.privateKey) out += `PrivateKey = ${tomlString(keyToBase64(cfg.privateKey))}\n`;
  for (const p of cfg.peers) {
    out += `\n[[Peer]]\nPublicKey = ${tomlString(keyToBase64(p.publicKey))}\n`;
    if (p.presharedKey) out += `PresharedKey = ${tomlString(keyToBase64(p.presharedKey))}\n`;
    if (p.allowedIps.length > 0) out += `AllowedIPs = ${list(p.allowedIps.map(formatCidrLikeWg))}\n`;
    if (p.endpoint) out += `Endpoint = ${tomlString(formatEndpointSpec(p.endpoint))}\n`;
    if (p.persistentKeepalive !== undefined) out += `PersistentKeepalive = ${p.persistentKeepalive}\n`;
  }
  return out;
}

/**
 * What `typetun convert` does, without the I/O: parse `text` in its spelling, optionally strip the wg-quick
 * keys, and write it in the other spelling (or `to`). Throws ConfigError for a bad input, and for a hook the
 * output spelling cannot carry unchanged: the output always parses back to the same configuration.
 */
export function convertConfig(
  text: string,
  options: { file?: string; from?: ConfigFormat; to?: ConfigFormat; strip?: boolean } = {},
): { from: ConfigFormat; to: ConfigFormat; text: string } {
  const file = options.file ?? "(config)";
  const from = options.from ?? detectFormat(file, text);
  let cfg = parseConfig(text, { file, format: from });
  if (options.strip) cfg = stripQuick(cfg);
  const to = options.to ?? (from === "toml" ? "conf" : "toml");
  return { from, to, text: to === "toml" ? formatToml(cfg, { file }) : formatConf(cfg, { file }) };
}

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
    x: { family: number; addr: Uint8Array; prefixLen: number },
  ) => [x.family, bytes(x.addr), x.prefixLen];
  return JSON.stringify([
    bytes(c.privateKey),
    c.listenPort ?? null,
    c.fwmark ?? null,
    c.peers.map((p) => [
      bytes(p.publicKey),
      bytes(p.presharedKey),
      p.endpoint ? [p.endpoint.host, p.endpoint.port] : null,
      p.persistentKeepalive ?? null,
      p.allowedIps.map(cidr),
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
  ]);
}

function hooks(cfg: WgConfig): [string, string[]][] {
  return [["PreUp", cfg.preUp], ["PostUp", cfg.postUp], ["PreDown", cfg.preDown], ["PostDown", cfg.postDown]];
}

/** A TOML basic string: JSON's escapes are TOML's, plus DEL, which TOML also requires escaped. */
function tomlString(s: string): string {
  return JSON.stringify(s).replaceAll("\x7f", "\\u007F");
}

// ---- To and from the UAPI ----

/**
 * The configuration of a running interface (a UAPI get), as `wg showconf` reads it: zero values (port,
 * fwmark, keepalive) and absent keys are left out.
 */
export function configFromDevice(info: DeviceInfo): WgConfig {
  const cfg = emptyConfig();
  if (info.privateKey) cfg.privateKey = info.privateKey;
  if (info.listenPort) cfg.listenPort = info.listenPort;
  if (info.fwmark) cfg.fwmark = info.fwmark;
  for (const p of info.peers) {
    const peer: PeerConfig = { publicKey: p.publicKey, allowedIps: p.allowedIps };
    if (p.presharedKey) peer.presharedKey = p.presharedKey;
    if (p.endpoint) peer.endpoint = { host: formatAddressLikeWg(p.endpoint.addr), port: p.endpoint.port };
    if (p.persistentKeepalive) peer.persistentKeepalive = p.persistentKeepalive;
    cfg.peers.push(peer);
  }
  return cfg;
}

/**
 * The set request a file makes, as wg(8) builds it (config.c, config_read_init and process_line):
 * - `set` (`setconf`, and `wg-quick up`): the file is the whole configuration: replace_peers, and the private
 *   key, listen port and fwmark are always sent, as zero/0/0 when the file has none;
 * - `add` (`addconf`): only what the file says; peers are added or updated.
 * Every peer replaces its allowed IPs. wg-quick keys are ignored (the caller applies them).
 *
 * @param resolve the endpoint for a spec; the default takes IP literals and throws on host names, so cmd/
 *   resolves names first and passes a lookup.
 */
export function configToUpdate(
  cfg: WgConfig,
  mode: "set" | "add",
  resolve: (e: EndpointSpec) => Endpoint = literalOnly,
): DeviceUpdate {
  const u: DeviceUpdate = { replacePeers: mode === "set", peers: [] };
  if (mode === "set") {
    u.privateKey = cfg.privateKey ?? new Uint8Array(32);
    u.listenPort = cfg.listenPort ?? 0;
    u.fwmark = cfg.fwmark ?? 0;
  } else {
    if (cfg.privateKey) u.privateKey = cfg.privateKey;
    if (cfg.listenPort !== undefined) u.listenPort = cfg.listenPort;
    if (cfg.fwmark !== undefined) u.fwmark = cfg.fwmark;
  }
  for (const p of cfg.peers) {
    const peer: PeerUpdate = {
      publicKey: p.publicKey,
      remove: false,
      updateOnly: false,
      replaceAllowedIps: true,
      allowedIps: [...p.allowedIps],
    };
    if (p.presharedKey) peer.presharedKey = p.presharedKey;
    if (p.endpoint) peer.endpoint = resolve(p.endpoint);
    if (p.persistentKeepalive !== undefined) peer.persistentKeepalive = p.persistentKeepalive;
    u.peers.push(peer);
  }
  return u;
}

function literalOnly(e: EndpointSpec): Endpoint {
  const ep = literalEndpoint(e);
  if (!ep) throw new Error(`endpoint ${formatEndpointSpec(e)} needs name resolution`);
  return ep;
}

/**
 * Turns a `set` update into what `wg syncconf` sends (wireguard-tools setconf.c, sync_conf): instead of
 * replacing every peer (which would drop their sessions), running peers missing from the file are removed,
 * and a running peer's preshared key or persistent keepalive that the file no longer mentions is turned off.
 * Unchanged peers keep their sessions. A file without peers keeps replace_peers and so removes them all.
 */
export function syncUpdate(update: DeviceUpdate, running: DeviceInfo): DeviceUpdate {
  if (update.peers.length === 0 || running.peers.length === 0) return update;
  const removals: PeerUpdate[] = [];
  const peers = update.peers.map((p) => ({ ...p }));
  const byKey = new Map(peers.map((p) => [keyToHex(p.publicKey), p]));
  for (const r of running.peers) {
    const filePeer = byKey.get(keyToHex(r.publicKey));
    if (!filePeer) {
      removals.push({
        publicKey: r.publicKey,
        remove: true,
        updateOnly: false,
        replaceAllowedIps: false,
        allowedIps: [],
      });
      continue;
    }
    if (r.presharedKey && !filePeer.presharedKey) filePeer.presharedKey = new Uint8Array(32);
    if (r.persistentKeepalive && filePeer.persistentKeepalive === undefined) filePeer.persistentKeepalive = 0;
  }
  return { ...update, replacePeers: false, peers: [...removals, ...peers] };
}

function quote(s: string): string {
  return JSON.stringify(s.length > 80 ? `${s.slice(0, 80)}…` : s);
}
