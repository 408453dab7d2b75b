/**
 * wg-quick's state, shared by `typetun up` and `typetun down`: where a config is found, what `up` changed
 * outside the interface (the state file under /var/run/typetun), and the one take-down sequence that both
 * `down` and `up -f` on a signal run, in the current wg-quick's order (linux.bash cmd_down): PreDown hooks,
 * SaveConfig, deleting the default-route rules, deleting the interface (its addresses and routes go with it, and
 * the daemon exits), DNS, firewall rules, PostDown hooks.
 * @module
 */
import { spawnSync } from "node:child_process";
import {
  accessSync,
  constants,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { basename } from "node:path";
import { connect } from "node:net";
import process from "node:process";
import { ifNameToIndex } from "../ffi/libc.ts";
import { delLink, delRule, listAddresses, listRules, type Rule } from "../ffi/netlink.ts";
import { getMtu } from "../ffi/tun.ts";
import { formatConf } from "../lib/conf.ts";
import { ConfigError, type WgConfig } from "../lib/config.ts";
import { detectFormat } from "../lib/configfile.ts";
import { keyToHex } from "../lib/encoding.ts";
import { configFromDevice } from "../lib/setconf.ts";
import { formatToml } from "../lib/toml.ts";
import {
  defaultRouteTable,
  iptablesRemoval,
  nftRemoval,
  resolvconfPrefix,
  rulesToDelete,
} from "../lib/wg_quick.ts";
import { say } from "./log.ts";
import { worldAccessible } from "./keyfiles.ts";
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
  /** The default-route rules, deleted from here only when the daemon no longer says its fwmark. */
  rules: Rule[];
  /**
   * Older typetun's own firewall rules: iptables/ip6tables invocations (without -I/-D), and nftables tables
   * (`ip typetun-wg0`). `up` now writes wg-quick's, which the take-down finds by name; these stay for state
   * files written before.
   */
  firewall: { tool: string; args: string[] }[];
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
 * lost): rules and firewall rules are found as wg-quick finds them; DNS is the config's, as wg-quick unsets it.
 */
export function assumedState(ifname: string, config: string, cfg: WgConfig): UpState {
  const dns = cfg.dns.length && onPath("resolvconf") ? resolvconfName(ifname) : null;
  return { ifname, config, rules: [], firewall: [], dns };
}

/** resolvconf's record name for the interface (wg-quick's resolvconf_iface_prefix, lib/wg_quick.ts). */
export function resolvconfName(ifname: string): string {
  let order: string | null = null;
  try {
    order = readFileSync("/etc/resolvconf/interface-order", "utf8");
  } catch {
    // Not Debian's resolvconf: no prefix.
  }
  const tool = onPath("resolvconf");
  let link = false;
  try {
    link = tool !== null && lstatSync(tool).isSymbolicLink();
  } catch {
    // Gone meanwhile: not a link.
  }
  return resolvconfPrefix(order, link) + ifname;
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
  // wg-quick's test and text: only when its directory lets others in too, naming the file as resolved.
  if (worldAccessible(path)) say("warn", `Warning: \`${realpathSync(path)}' is world accessible`);
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
 * Runs a hook as wg-quick does (`%i` replaced by the interface name; a failure is an error). wg-quick evals it
 * in a subshell of its own bash, which runs with `set -e -o pipefail`, extglob and LC_ALL=C: so does this (with
 * `sh -e` where there is no bash), and `false; echo` fails here as it does there. No hooks need no shell;
 * hooks without one fail in one line before anything runs.
 */
export function runHooks(hooks: string[], ifname: string, what: string): void {
  if (!hooks.length) return;
  const bash = onPath("bash"), shell = bash ?? onPath("sh");
  if (!shell) throw new Error(`${what} hooks need a shell, and neither bash nor sh is in PATH`);
  const flags = bash ? ["-e", "-o", "pipefail", "-O", "extglob"] : ["-e"];
  for (const hook of hooks) {
    const cmd = hook.replaceAll("%i", ifname);
    step(cmd);
    const r = spawnSync(shell, [...flags, "-c", cmd], {
      stdio: "inherit",
      env: { ...process.env, LC_ALL: "C" },
    });
    if (r.status !== 0) throw new Error(`${what} hook failed (status ${r.status ?? r.signal}): ${cmd}`);
  }
}

/**
 * wg-quick's save_config: the running configuration plus the file's wg-quick settings, written atomically in
 * the spelling the file is read in. A configuration that spelling cannot carry (a hook a .conf line cannot
 * hold) is a ConfigError, and the file is left as it was.
 */
export async function saveConfig(path: string, ifname: string, cfg: WgConfig): Promise<void> {
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
  running.saveConfig = cfg.saveConfig; // true when down saves; `typetun save` keeps what the file says
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
 * Deletes the interface and what `up` changed outside it, as wg-quick's del_if and cmd_down do, each step tried
 * even if an earlier one failed: the default-route rules (when the device, still running, has a fwmark and a
 * /0, and Table is auto), the interface (the daemon exits), DNS, and wg-quick's firewall rules for the
 * interface, found by name. The state file goes first, so a foreground `up` whose daemon sees the interface
 * vanish knows it was taken down.
 * @param table the config's Table (undefined when not given)
 * @param failedUp for a failed `up`: DNS and firewall rules go first, as in wg-quick's del_if
 */
export async function undoUp(state: UpState, table: string | undefined, failedUp = false): Promise<void> {
  removeState(state.ifname);
  const attempt = (what: string, f: () => void) => {
    try {
      f();
    } catch (e) {
      say("error", `typetun: ${what}: ${(e as Error).message}`);
    }
  };
  const dnsAndFirewall = () => {
    if (state.dns) {
      attempt("resolvconf -d", () => {
        step(`resolvconf -d ${state.dns} -f`);
        spawnSync("resolvconf", ["-d", state.dns!, "-f"], { stdio: "inherit" });
      });
    }
    attempt("removing the firewall rules", () => removeFirewall(state));
  };
  // A failed `up` undoes as wg-quick's trap runs del_if: DNS and firewall first; `down` after the interface.
  if (failedUp) dnsAndFirewall();
  let device = null;
  if (ifNameToIndex(state.ifname)) {
    try {
      device = await uapiGet(state.ifname);
    } catch {
      // The daemon is gone: the rules `up` recorded are what there is to go by.
    }
  }
  if (device) {
    const mark = defaultRouteTable(
      table,
      device.fwmark,
      device.peers.flatMap((p) => p.allowedIps.map((c) => c.prefixLen)),
    );
    if (mark !== null) {
      for (const family of [4, 6] as const) {
        attempt("ip rule", () => {
          // wg-quick's loops: the rules looking up the table first, then main's suppress_prefixlength 0.
          const found = rulesToDelete(listRules(family), mark);
          for (
            const rule of [
              ...found.filter((r) => r.table === mark),
              ...found.filter((r) => r.table !== mark),
            ]
          ) {
            const what = rule.table === mark ? `table ${mark}` : "table main suppress_prefixlength 0";
            step(`ip -${family} rule delete ${what}`);
            delRule({
              family,
              table: rule.table,
              priority: rule.priority,
              ...(rule.table === mark ? {} : { suppressPrefixLength: 0 }),
            });
          }
        });
      }
    }
  } else {
    for (const rule of state.rules.toReversed()) {
      const what = rule.notFwmark !== undefined
        ? `not fwmark ${rule.notFwmark} table ${rule.table}`
        : "table main suppress_prefixlength 0";
      step(`ip -${rule.family} rule delete ${what}`);
      attempt("rule delete", () => delRule(rule));
    }
  }
  const index = ifNameToIndex(state.ifname);
  if (index) {
    step(`ip link delete dev ${state.ifname}`);
    attempt("deleting the interface", () => delLink(index));
  }
  if (!failedUp) dnsAndFirewall();
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

/**
 * wg-quick's remove_firewall: the nftables tables named for the interface (when `nft` is there) and the
 * iptables/ip6tables rules carrying its comment (when iptables is there), whoever brought the interface up;
 * then what an older typetun recorded in its state file.
 */
function removeFirewall(state: UpState): void {
  const out = (tool: string, args: string[]) => {
    const r = spawnSync(tool, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
    return r.status === 0 ? r.stdout : "";
  };
  const restore = (tool: string, args: string[], input: string) => {
    step(`${tool} ${args.join(" ")}`);
    const r = spawnSync(tool, args, { input, stdio: ["pipe", "inherit", "inherit"] });
    if (r.status !== 0) throw new Error(`${tool} ${args.join(" ")} failed (status ${r.status ?? r.signal})`);
  };
  if (onPath("nft")) {
    const script = nftRemoval(out("nft", ["list", "tables"]), state.ifname);
    if (script) restore("nft", ["-f", "-"], script);
  }
  if (onPath("iptables")) {
    for (const tool of ["iptables", "ip6tables"]) {
      const script = iptablesRemoval(out(`${tool}-save`, []), state.ifname);
      if (script) restore(`${tool}-restore`, ["-n"], script);
    }
  }
  for (const table of (state.nftables ?? []).toReversed()) {
    step(`nft delete table ${table}`);
    spawnSync("nft", ["delete", "table", ...table.split(" ")], { stdio: "inherit" });
  }
  for (const { tool, args } of state.firewall.toReversed()) {
    const del = [args[0]!, args[1]!, "-D", ...args.slice(2)];
    step(`${tool} ${del.join(" ")}`);
    spawnSync(tool, del, { stdio: "ignore" });
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
 * wg-quick's cmd_down, shared by `down` and by `up -f` when it is signalled: PreDown hooks, SaveConfig (when
 * the config says so and the device still runs), {@link undoUp}, PostDown hooks. A failing step is reported and
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
  try {
    runHooks(cfg.preDown, state.ifname, "PreDown");
  } catch (e) {
    report(e);
  }
  // After PreDown, as the current wg-quick does: what a PreDown hook changed is saved too.
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
  await undoUp(state, cfg.table);
  try {
    runHooks(cfg.postDown, state.ifname, "PostDown");
  } catch (e) {
    report(e);
  }
  return code;
}
