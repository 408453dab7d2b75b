/**
 * wg-quick's state, shared by `typetun up` and `typetun down`: where a config is found, what `up` changed
 * outside the interface (the state file under /var/run/typetun), and the one take-down sequence that both
 * `down` and `up -f` on a signal run, in wg-quick's order (linux.bash cmd_down): SaveConfig, PreDown hooks,
 * undoing rules, firewall rules and DNS, deleting the interface (its addresses and routes go with it, and the
 * daemon exits), PostDown hooks.
 * @module
 */
import { spawnSync } from "node:child_process";
import {
  accessSync,
  constants,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { basename } from "node:path";
import { connect } from "node:net";
import process from "node:process";
import { ifNameToIndex } from "../ffi/libc.ts";
import { delLink, delRule, listAddresses, type Rule } from "../ffi/netlink.ts";
import { getMtu } from "../ffi/tun.ts";
import { formatConf } from "../lib/conf.ts";
import { ConfigError, type WgConfig } from "../lib/config.ts";
import { detectFormat } from "../lib/configfile.ts";
import { keyToHex } from "../lib/encoding.ts";
import { configFromDevice } from "../lib/setconf.ts";
import { formatToml } from "../lib/toml.ts";
import { say } from "./log.ts";
import { readConfigFile } from "./set.ts";
import { socketPath, uapiGet } from "./uapi_client.ts";

const CONFIG_DIR = "/etc/wireguard";
const STATE_DIR = "/var/run/typetun";
/** How long a take-down waits for the daemon to notice its interface is gone and remove its socket. */
const SOCKET_GONE_MS = 3000;

/** What `up` changed outside the interface, for the take-down to undo. */
export interface UpState {
  ifname: string;
  config: string;
  rules: Rule[];
  /** iptables/ip6tables invocations (without -I/-D) that the take-down deletes again. */
  firewall: { tool: string; args: string[] }[];
  /** nftables tables (`ip typetun-wg0`) that the take-down deletes (absent in older state files). */
  nftables?: string[];
  /** The resolvconf record name, when DNS was set. */
  dns: string | null;
}

function statePath(ifname: string): string {
  return `${STATE_DIR}/${ifname}.json`;
}

/** Records what `up` did; written once everything but the PostUp hooks is in place. */
export function saveState(state: UpState): void {
  mkdirSync(STATE_DIR, { recursive: true, mode: 0o700 });
  writeFileSync(statePath(state.ifname), JSON.stringify(state), { mode: 0o600 });
}

export function loadState(ifname: string): UpState | null {
  try {
    return JSON.parse(readFileSync(statePath(ifname), "utf8"));
  } catch {
    return null;
  }
}

function removeState(ifname: string): void {
  try {
    unlinkSync(statePath(ifname));
  } catch {
    // Never written (up failed early) or already removed.
  }
}

/**
 * The state to undo when no state file says (the interface was brought up by wg-quick itself, or the state was
 * lost): the rules wg-quick's add_default leaves for its fwmark table, in both families.
 */
export function assumedState(ifname: string, config: string, fwmark: number): UpState {
  const rules: Rule[] = !fwmark ? [] : ([4, 6] as const).flatMap((family) => [
    { family, table: fwmark, notFwmark: fwmark },
    { family, table: 254, suppressPrefixLength: 0 },
  ]);
  return { ifname, config, rules, firewall: [], dns: null };
}

/** Finds the config as wg-quick does: a path as given, or /etc/wireguard/NAME.conf (typetun: also .toml). */
export function locateConfig(arg: string): { path: string; ifname: string } {
  let path = arg;
  if (!arg.includes("/") && !/\.(conf|toml)$/.test(arg)) {
    path = [`${CONFIG_DIR}/${arg}.conf`, `${CONFIG_DIR}/${arg}.toml`].find((p) => existsSync(p)) ??
      `${CONFIG_DIR}/${arg}.conf`;
  }
  const ifname = basename(path).replace(/\.(conf|toml)$/, "");
  if (!/^[a-zA-Z0-9_=+.-]{1,15}$/.test(ifname) || ifname === basename(path)) {
    throw new Error(`The config file must be a valid interface name, followed by .conf or .toml: ${path}`);
  }
  return { path, ifname };
}

/** Reads and parses a config, with wg-quick's warning about a file others can read (it holds a private key). */
export function readConfig(path: string): WgConfig {
  if (!existsSync(path)) throw new Error(`\`${path}' does not exist`);
  const cfg = readConfigFile(path);
  if (statSync(path).mode & 0o007) say("warn", `Warning: \`${path}' is world accessible`);
  return cfg;
}

/** Says what is being done, as wg-quick prints each command it runs. */
export function step(what: string): void {
  say("info", `[#] ${what}`);
}

/**
 * The path of an executable `name` in PATH, or null: what the shell's `command -v` answers, found without a
 * shell, since a distroless container image has none.
 */
export function onPath(
  name: string,
  path = process.env.PATH ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
): string | null {
  for (const dir of path.split(":")) {
    // An empty entry means the current directory, as in the shell.
    const file = `${dir || "."}/${name}`;
    try {
      if (statSync(file).isFile()) {
        accessSync(file, constants.X_OK);
        return file;
      }
    } catch {
      // Not here, or not executable: the next directory.
    }
  }
  return null;
}

/**
 * Runs a hook as wg-quick does (through bash, else sh, `%i` replaced by the interface name); a failure is an
 * error. No hooks need no shell; hooks without one fail in one line before anything runs.
 */
export function runHooks(hooks: string[], ifname: string, what: string): void {
  if (!hooks.length) return;
  const shell = onPath("bash") ?? onPath("sh");
  if (!shell) throw new Error(`${what} hooks need a shell, and neither bash nor sh is in PATH`);
  for (const hook of hooks) {
    const cmd = hook.replaceAll("%i", ifname);
    step(cmd);
    const r = spawnSync(shell, ["-c", cmd], { stdio: "inherit" });
    if (r.status !== 0) throw new Error(`${what} hook failed (status ${r.status ?? r.signal}): ${cmd}`);
  }
}

/**
 * wg-quick's save_config: the running configuration plus the file's wg-quick settings, written atomically in
 * the spelling the file is read in. A configuration that spelling cannot carry (a hook a .conf line cannot
 * hold) is a ConfigError, and the file is left as it was.
 */
async function saveConfig(path: string, ifname: string, cfg: WgConfig): Promise<void> {
  const running = configFromDevice(await uapiGet(ifname));
  const index = ifNameToIndex(ifname);
  // The link-local address the kernel gave the TUN is its own, not the config's.
  running.addresses = listAddresses(index)
    .filter((a) => !(a.family === 6 && a.addr[0] === 0xfe && (a.addr[1]! & 0xc0) === 0x80));
  running.dns = cfg.dns;
  running.dnsSearch = cfg.dnsSearch;
  if (cfg.mtu !== undefined) running.mtu = getMtu(ifname);
  running.table = cfg.table;
  running.preUp = cfg.preUp;
  running.postUp = cfg.postUp;
  running.preDown = cfg.preDown;
  running.postDown = cfg.postDown;
  running.saveConfig = true;
  // Keys that came from files stay there: the saved file names them again rather than holding the secret.
  running.privateKeyFile = cfg.privateKeyFile;
  for (const p of running.peers) {
    const mine = cfg.peers.find((c) => keyToHex(c.publicKey) === keyToHex(p.publicKey));
    if (mine?.presharedKeyFile) p.presharedKeyFile = mine.presharedKeyFile;
  }
  let current = "";
  try {
    current = readFileSync(path, "utf8");
  } catch {
    // Removed since: written anew, in the spelling its name says.
  }
  const text = detectFormat(path, current) === "toml"
    ? formatToml(running, { file: path })
    : formatConf(running, { file: path });
  step(`typetun showconf ${ifname} > ${path}`);
  writeFileSync(`${path}.tmp`, text, { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}

/**
 * Undoes what `up` recorded and deletes the interface; each step is tried even if an earlier one failed. The
 * state file goes first, so a foreground `up` whose daemon sees the interface vanish knows it was taken down.
 */
export async function undoUp(state: UpState): Promise<void> {
  removeState(state.ifname);
  const attempt = (what: string, f: () => void) => {
    try {
      f();
    } catch (e) {
      say("error", `typetun: ${what}: ${(e as Error).message}`);
    }
  };
  for (const table of (state.nftables ?? []).toReversed()) {
    attempt("nft delete table", () => {
      step(`nft delete table ${table}`);
      const r = spawnSync("nft", ["delete", "table", ...table.split(" ")], { stdio: "inherit" });
      if (r.status !== 0) throw new Error(`status ${r.status ?? r.signal}`);
    });
  }
  for (const { tool, args } of state.firewall.toReversed()) {
    attempt(`${tool} -D`, () => {
      const del = [args[0]!, args[1]!, "-D", ...args.slice(2)];
      step(`${tool} ${del.join(" ")}`);
      const r = spawnSync(tool, del, { stdio: "ignore" });
      if (r.status !== 0) throw new Error(`status ${r.status}`);
    });
  }
  for (const rule of state.rules.toReversed()) {
    const what = rule.notFwmark !== undefined
      ? `not fwmark ${rule.notFwmark} table ${rule.table}`
      : "table main suppress_prefixlength 0";
    step(`ip -${rule.family} rule delete ${what}`);
    attempt("rule delete", () => delRule(rule));
  }
  if (state.dns) {
    attempt("resolvconf -d", () => {
      step(`resolvconf -d ${state.dns} -f`);
      spawnSync("resolvconf", ["-d", state.dns!, "-f"], { stdio: "inherit" });
    });
  }
  const index = ifNameToIndex(state.ifname);
  if (index) {
    step(`ip link delete dev ${state.ifname}`);
    attempt("deleting the interface", () => delLink(index));
  }
  // The daemon notices the deletion and removes its socket; wait for that, briefly, so the take-down returns
  // with the interface really gone. Asynchronously: under `up -f` the daemon runs in this very process.
  const sock = socketPath(state.ifname);
  const until = Date.now() + SOCKET_GONE_MS;
  // A daemon that runs as another user (--user) cannot remove its socket from root's directory: it is gone
  // when nobody answers on it any more.
  while (existsSync(sock) && Date.now() < until && await answers(sock)) {
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** True if a process listens on the Unix socket. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/**
 * wg-quick's cmd_down, shared by `down` and by `up -f` when it is signalled: SaveConfig (when the config says
 * so and the device still runs), PreDown hooks, {@link undoUp}, PostDown hooks. A failing step is reported and
 * the rest still runs: the interface is always deleted.
 * @param path the config file SaveConfig writes
 * @param running false when the daemon has already stopped: nothing is left to save
 * @returns 0, or 1 if a step failed
 */
export async function takeDown(
  cfg: WgConfig,
  path: string,
  state: UpState,
  running: boolean,
): Promise<number> {
  let code = 0;
  const report = (e: unknown) => {
    say("error", `typetun: ${(e as Error).message}`);
    code = 1;
  };
  if (cfg.saveConfig) {
    if (!running) {
      say("error", `typetun: SaveConfig: ${state.ifname} is already gone; ${path} was left as it was`);
    } else {
      try {
        await saveConfig(path, state.ifname, cfg);
      } catch (e) {
        // A ConfigError's problem names the hook and why; anything else (the daemon not answering) as it is.
        const why = e instanceof ConfigError ? e.problem : (e as Error).message;
        report(new Error(`SaveConfig: ${path} was left as it was: ${why}`));
      }
    }
  }
  try {
    runHooks(cfg.preDown, state.ifname, "PreDown");
  } catch (e) {
    report(e);
  }
  await undoUp(state);
  try {
    runHooks(cfg.postDown, state.ifname, "PostDown");
  } catch (e) {
    report(e);
  }
  return code;
}
