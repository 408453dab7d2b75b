/**
 * The TOML spelling of a configuration: an `[Interface]` table and a `[[Peer]]` array of tables, with the
 * `.conf` names. Table and key names are matched case-insensitively against the `.conf` names (`[interface]`,
 * `[[peer]]`, `listenport` all work); output always uses the `.conf` spelling. Values may be typed
 * (`ListenPort = 51820`, `FwMark = 0x10`, `AllowedIPs = ["10.0.0.2/32", "fd00::2/128"]`, `SaveConfig = true`,
 * `PostUp = ["cmd one", "cmd two"]`) or be the same strings a `.conf` file holds
 * (`AllowedIPs = "10.0.0.2/32, fd00::2/128"`, `FwMark = "off"`).
 * @module
 */

import { parse as parseTomlText, TomlError } from "smol-toml";
import { keyToBase64 } from "./encoding.ts";
import {
  Builder,
  CANONICAL,
  ConfigError,
  type FormatOptions,
  HOOK_KEYS,
  hookLists,
  INTERFACE_OUT,
  LIST_KEYS,
  LONE_SURROGATE,
  NUMBER_KEYS,
  type OutValue,
  type ParseOptions,
  PEER_OUT,
  quote,
  type WgConfig,
  writeKeys,
} from "./config.ts";

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

/**
 * The TOML spelling, in the same order as lib/conf.ts's formatConf, with typed values. TOML strings hold any
 * text (line breaks and edge whitespace escaped), so only a hook that is not valid Unicode is refused.
 */
export function formatToml(cfg: WgConfig, options: FormatOptions = {}): string {
  for (const [k, cmds] of hookLists(cfg)) {
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
  // One TOML array is one AllowedIPs line: it cannot say "signed entries, then a plain line that replaces".
  const split = cfg.peers.find((p) => p.replaceAllowedIps);
  if (split) {
    throw new ConfigError(
      options.file ?? "(config)",
      0,
      `the AllowedIPs of peer ${keyToBase64(split.publicKey)} (signed entries, then a plain line, which ` +
        `replaces the list) cannot be written to TOML, where one array is one line`,
    );
  }
  let out = `[Interface]\n${writeKeys(INTERFACE_OUT, cfg, tomlLine)}`;
  for (const p of cfg.peers) out += `\n[[Peer]]\n${writeKeys(PEER_OUT, p, tomlLine)}`;
  return out;
}

/** One key as a TOML line: strings quoted, lists as arrays, numbers as numbers (0 stays 0). */
function tomlLine(key: string, v: OutValue): string {
  switch (v.kind) {
    case "text":
      return `${key} = ${tomlString(v.text)}\n`;
    case "list":
      return `${key} = [${v.items.map(tomlString).join(", ")}]\n`;
    case "number":
      return `${key} = ${v.hex && v.n !== 0 ? `0x${v.n.toString(16)}` : v.n}\n`;
    case "true":
      return `${key} = true\n`;
  }
}

/** A TOML basic string: JSON's escapes are TOML's, plus DEL, which TOML also requires escaped. */
function tomlString(s: string): string {
  return JSON.stringify(s).replaceAll("\x7f", "\\u007F");
}
