/**
 * `typetun down CONFIG|IFNAME`: what wg-quick(8) down does. SaveConfig writes the running configuration back
 * to the file; PreDown hooks; then what `up` changed outside the interface is undone from its state file
 * (policy rules, firewall rules, DNS), the interface is deleted (its addresses and routes go with it, and the
 * daemon exits); PostDown hooks.
 * @module
 */
import { spawnSync } from "node:child_process";
import { existsSync, renameSync, writeFileSync } from "node:fs";
import process from "node:process";
import { parseArgs } from "node:util";
import { ifNameToIndex } from "../ffi/libc.ts";
import { delLink, delRule, listAddresses, type Rule } from "../ffi/netlink.ts";
import { getMtu } from "../ffi/tun.ts";
import { configFromDevice, formatConf, formatToml, type WgConfig } from "../lib/config.ts";
import { socketPath, uapiGet } from "./uapi_client.ts";
import { loadState, locateConfig, readConfig, removeState, runHooks, step, type UpState } from "./up.ts";

export const DOWN_USAGE = `Usage: typetun down CONFIG_FILE | INTERFACE

  Takes down what \`typetun up\` (or wg-quick up) brought up from the same file: saves the configuration
  back if SaveConfig = true, runs PreDown and PostDown hooks, removes rules, firewall rules and DNS, and
  deletes the interface.
`;

/** Undoes what `up` recorded and deletes the interface; each step is tried even if an earlier one failed. */
export function teardown(state: UpState): void {
  const attempt = (what: string, f: () => void) => {
    try {
      f();
    } catch (e) {
      process.stderr.write(`typetun: ${what}: ${(e as Error).message}\n`);
    }
  };
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
  // The daemon notices the deletion and removes its socket; wait for that, briefly, so `down` returns with
  // the interface really gone.
  const sock = socketPath(state.ifname);
  const until = Date.now() + 3000;
  while (existsSync(sock) && Date.now() < until) {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
  }
  removeState(state.ifname);
}

/**
 * The rules wg-quick's add_default leaves when no state file says otherwise (the interface was brought up
 * by wg-quick itself, or the state was lost): for its fwmark table, in both families.
 */
function defaultRules(fwmark: number): Rule[] {
  if (!fwmark) return [];
  return ([4, 6] as const).flatMap((family) => [
    { family, table: fwmark, notFwmark: fwmark },
    { family, table: 254, suppressPrefixLength: 0 },
  ]);
}

/** wg-quick's save_config: the running configuration plus the file's wg-quick settings, written atomically. */
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
  const text = path.endsWith(".toml") ? formatToml(running) : formatConf(running);
  step(`typetun showconf ${ifname} > ${path}`);
  writeFileSync(`${path}.tmp`, text, { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}

export async function downMain(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { help: { type: "boolean", short: "h" } }, allowPositionals: true });
  } catch (e) {
    process.stderr.write(`typetun down: ${(e as Error).message}\n${DOWN_USAGE}`);
    return 1;
  }
  if (parsed.values.help) {
    process.stdout.write(DOWN_USAGE);
    return 0;
  }
  if (parsed.positionals.length !== 1) {
    process.stderr.write(DOWN_USAGE);
    return 1;
  }
  let ifname: string, path: string, cfg: WgConfig;
  try {
    ({ ifname, path } = locateConfig(parsed.positionals[0]!));
    cfg = readConfig(path);
    if (!ifNameToIndex(ifname) || !existsSync(socketPath(ifname))) {
      throw new Error(`\`${ifname}' is not a WireGuard interface`);
    }
  } catch (e) {
    process.stderr.write(`typetun: ${(e as Error).message}\n`);
    return 1;
  }
  let code = 0;
  const state = loadState(ifname) ??
    { ifname, config: path, rules: defaultRules((await uapiGet(ifname)).fwmark), firewall: [], dns: null };
  try {
    if (cfg.saveConfig) await saveConfig(path, ifname, cfg);
    runHooks(cfg.preDown, ifname, "PreDown");
  } catch (e) {
    process.stderr.write(`typetun: ${(e as Error).message}\n`);
    code = 1;
  }
  teardown(state);
  try {
    runHooks(cfg.postDown, ifname, "PostDown");
  } catch (e) {
    process.stderr.write(`typetun: ${(e as Error).message}\n`);
    code = 1;
  }
  return code;
}
