/**
 * A configuration file in either spelling (lib/conf.ts, lib/toml.ts): which one a file uses, parsing by it,
 * and converting between them.
 * @module
 */

import { parse as parseTomlText } from "smol-toml";
import { formatConf, parseConf } from "./conf.ts";
import { type ConfigFormat, type ParseOptions, stripQuick, type WgConfig } from "./config.ts";
import { formatToml, parseToml } from "./toml.ts";

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
