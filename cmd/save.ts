/**
 * `typetun save IF` and `typetun strip FILE|IF`: wg-quick's `save` and `strip` (wg-quick(8); linux.bash
 * cmd_save, cmd_strip, parse_options).
 * @module
 */
import process from "node:process";
import { readFileSync } from "node:fs";
import { ConfigError, stripQuick, WG_QUICK_KEYS } from "../lib/config.ts";
import { formatConf } from "../lib/conf.ts";
import { detectFormat, parseConfig } from "../lib/configfile.ts";
import { readKeyFiles } from "./keyfiles.ts";
import { locateConfig, readConfig, saveConfig } from "./quick.ts";
import { listInterfaces } from "./uapi_client.ts";

const SAVE_USAGE = `Usage: typetun save [ CONFIG_FILE | INTERFACE ]\n`;
const STRIP_USAGE = `Usage: typetun strip [ CONFIG_FILE | INTERFACE ]\n`;

const SAVE_HELP = `${SAVE_USAGE}
Writes the running configuration of the interface back to its config file (as wg-quick save): the peers,
keys and ports as the daemon has them now, the interface's addresses, and the file's own DNS, MTU, Table,
hooks and SaveConfig. A key the file takes from a key file stays in that file. INTERFACE alone means
/etc/wireguard/INTERFACE.conf (or .toml).
`;

const STRIP_HELP = `${STRIP_USAGE}
Prints the config file without wg-quick's keys (Address, DNS, MTU, Table, PreUp, PostUp, PreDown, PostDown,
SaveConfig), as wg-quick strip does, for \`wg syncconf\` or \`typetun syncconf\`:
  typetun syncconf wg0 <(typetun strip wg0)
A .conf file that wg(8) reads once stripped is printed line by line as wg-quick prints it (comments stay). A
TOML file, or one with typetun's own keys (PrivateKeyFile, PresharedKeyFile, Via, AllowInbound, AllowOutbound),
is printed as the .conf that wg(8) reads: key files are read, and typetun's filter keys left out.
`;

/** `typetun save IF|FILE`. */
export async function saveMain(args: string[]): Promise<number> {
  if (args.length === 1 && (args[0] === "--help" || args[0] === "-h")) {
    process.stdout.write(SAVE_HELP);
    return 0;
  }
  if (args.length !== 1) {
    process.stderr.write(SAVE_USAGE);
    return 1;
  }
  try {
    const { path, ifname } = locateConfig(args[0]!);
    const cfg = readConfig(path);
    // wg-quick checks `wg show interfaces` first: the interface must be a running WireGuard one.
    if (!(await listInterfaces()).includes(ifname)) {
      throw new Error(`\`${ifname}' is not a WireGuard interface`);
    }
    await saveConfig(path, ifname, cfg);
    return 0;
  } catch (e) {
    process.stderr.write(`typetun: ${(e as Error).message}\n`);
    return 1;
  }
}

/** `typetun strip FILE|IF`. */
export function stripMain(args: string[]): number {
  if (args.length === 1 && (args[0] === "--help" || args[0] === "-h")) {
    process.stdout.write(STRIP_HELP);
    return 0;
  }
  if (args.length !== 1) {
    process.stderr.write(STRIP_USAGE);
    return 1;
  }
  try {
    const { path } = locateConfig(args[0]!);
    const text = readFileSync(path, "utf8");
    // Validated whole first (a bad file prints nothing), with wg-quick's warning for a file others can read.
    const cfg = readConfig(path);
    const lines = stripLines(text);
    if (detectFormat(path, text) === "conf" && wgReads(lines, path)) {
      process.stdout.write(lines);
      return 0;
    }
    const wgOnly = stripQuick(readKeyFiles(cfg, path));
    wgOnly.privateKeyFile = undefined;
    for (const p of wgOnly.peers) p.presharedKeyFile = undefined;
    const out = formatConf(wgOnly, { file: path });
    process.stdout.write(out.endsWith("\n\n") ? out : `${out}\n`); // ends as wg-quick's echo ends it
    return 0;
  } catch (e) {
    process.stderr.write(`typetun: ${(e as Error).message}\n`);
    return 1;
  }
}

const QUICK_KEYS = new Set<string>(WG_QUICK_KEYS.map((k) => k.toLowerCase()));

/**
 * wg-quick's strip, line for line (parse_options, then `echo "$WG_CONFIG"`): each line as bash's `read -r`
 * gives it (spaces and tabs trimmed at both ends), without the [Interface] lines whose key is a wg-quick key
 * (case-insensitive, as under nocasematch), comments kept, and the extra newline of `echo`.
 */
export function stripLines(text: string): string {
  let inInterface = false;
  let out = "";
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop(); // the newline that ends the last line
  for (const raw of lines) {
    const line = raw.replace(/^[ \t]+|[ \t]+$/g, "");
    const hash = line.indexOf("#");
    const stripped = hash < 0 ? line : line.slice(0, hash);
    const eq = stripped.indexOf("=");
    const key = (eq < 0 ? stripped : stripped.slice(0, eq)).trim().toLowerCase();
    if (key.startsWith("[")) inInterface = false;
    if (key === "[interface]") inInterface = true;
    if (inInterface && QUICK_KEYS.has(key) && key !== "via") continue;
    out += `${line}\n`;
  }
  return `${out}\n`;
}

/** Whether wg(8) would take the stripped text: nothing of typetun's own is left in it. */
function wgReads(stripped: string, path: string): boolean {
  try {
    const cfg = parseConfig(stripped, { file: path, format: "conf", wgOnly: true });
    return cfg.peers.every((p) => p.allowInbound === undefined && p.allowOutbound === undefined);
  } catch (e) {
    if (e instanceof ConfigError) return false;
    throw e;
  }
}
