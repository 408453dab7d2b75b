/**
 * `convert`: a configuration file from one spelling to the other (.conf ↔ TOML), on stdout.
 * @module
 */
import { readFileSync } from "node:fs";
import process from "node:process";
import { parseArgs } from "node:util";
import { ConfigError } from "../lib/config.ts";
import { convertConfig } from "../lib/configfile.ts";

const USAGE = `Usage: typetun convert <file> [--to toml|conf] [--strip]
`;

const HELP = `${USAGE}
Prints a WireGuard configuration file in the other format: a wg/wg-quick .conf file as TOML, or TOML as a
.conf file. The input format comes from the file's extension (.conf, .toml), else from its content.
  --to toml|conf   the output format (default: the other one; the same one normalises the file)
  --strip          leave out wg-quick's keys (Address, DNS, MTU, Table, PreUp, PostUp, PreDown, PostDown,
                   SaveConfig), as wg-quick strip does: what is left is what typetun/wg setconf accept

The TOML form has an [Interface] table and a [[Peer]] array of tables with the .conf key names (matched
case-insensitively). Values may be typed or written as in a .conf file:
  [Interface]
  Address = ["10.0.0.1/24", "fd00::1/64"]
  ListenPort = 51820
  PrivateKey = "..."
  PostUp = ["iptables -A FORWARD -i %i -j ACCEPT"]

  [[Peer]]
  PublicKey = "..."
  AllowedIPs = ["10.0.0.2/32"]       # or "10.0.0.2/32, fd00::2/128"
  Endpoint = "vpn.example.com:51820"
  PersistentKeepalive = 25

The output always reads back as the same configuration. What the target format cannot carry unchanged is
refused with an error naming the key: a .conf line cannot hold a hook command that spans lines or begins or
ends with whitespace. A # inside a hook is kept (as current wg-quick keeps it; older wg-quick cut the command
there). Name the output *.conf or *.toml: a file without either extension is recognised by its content.
`;

/** `typetun convert FILE [--to toml|conf] [--strip]`. */
export function convertMain(args: string[]): number {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { to: { type: "string" }, strip: { type: "boolean" }, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
    });
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${USAGE}`);
    return 1;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (positionals.length !== 1 || (values.to !== undefined && values.to !== "toml" && values.to !== "conf")) {
    process.stderr.write(USAGE);
    return 1;
  }
  const path = positionals[0]!;
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    process.stderr.write(`${path}: ${(e as Error).message}\n`);
    return 1;
  }
  let out;
  try {
    out = convertConfig(text, {
      file: path,
      to: values.to as "toml" | "conf" | undefined,
      strip: values.strip ?? false,
    });
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    process.stderr.write(`${e.message}\n`);
    return 1;
  }
  process.stdout.write(out.text);
  return 0;
}
