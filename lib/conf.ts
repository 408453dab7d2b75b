/**
 * The INI-like `.conf` spelling of a configuration, as wg(8) and wg-quick(8) read it: `[Interface]` and `[Peer]`
 * sections, `Key = Value` lines, keys and section names case-insensitive, `#` starting a comment anywhere on a
 * line (except in hook commands, see {@link parseConf}).
 * @module
 */

import {
  Builder,
  CANONICAL,
  ConfigError,
  type FormatOptions,
  HOOK_KEYS,
  hookLists,
  INTERFACE_OUT,
  LONE_SURROGATE,
  type OutValue,
  type ParseOptions,
  PEER_OUT,
  quote,
  type WgConfig,
  writeKeys,
} from "./config.ts";

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

/**
 * The `.conf` spelling. The WireGuard part is byte for byte what `wg showconf` prints; the wg-quick keys come
 * first in [Interface], in the order wg-quick's save_config writes them (one Address and one DNS line each).
 *
 * A hook command a `.conf` line cannot carry unchanged is refused with a ConfigError naming the key and why
 * ({@link confHookProblem}), rather than written in a way that reads back as something else: parseConf of the
 * result always equals the input (for a configuration that came from parseConfig).
 */
export function formatConf(cfg: WgConfig, options: FormatOptions = {}): string {
  for (const [k, cmds] of hookLists(cfg)) {
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
  let out = `[Interface]\n${writeKeys(INTERFACE_OUT, cfg, confLine)}\n`;
  cfg.peers.forEach((p, i) => {
    out += `[Peer]\n${writeKeys(PEER_OUT, p, confLine)}`;
    if (i < cfg.peers.length - 1) out += "\n";
  });
  return out;
}

/** One key as .conf lines: a list one line per item unless it is written on one line. */
function confLine(key: string, v: OutValue): string {
  switch (v.kind) {
    case "text":
      return `${key} = ${v.text}\n`;
    case "list":
      return v.oneLine ? `${key} = ${v.items.join(", ")}\n` : v.items.map((x) => `${key} = ${x}\n`).join("");
    case "number":
      return `${key} = ${v.n === 0 && v.zeroIsOff ? "off" : v.hex ? `0x${v.n.toString(16)}` : v.n}\n`;
    case "true":
      return `${key} = true\n`;
  }
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
