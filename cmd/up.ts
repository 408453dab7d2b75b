/**
 * `typetun up CONFIG|IFNAME [-f]`: what wg-quick(8) does with the same file, with typetun as the daemon and
 * netlink instead of `ip`. In wg-quick's order: PreUp hooks, the daemon, the WireGuard settings, the
 * addresses, the MTU (given, or computed as wg-quick does), link up, DNS through resolvconf, a route per
 * allowed IP (Table = auto | off | main | number), the default-route case with fwmark policy routing, PostUp
 * hooks. What it changed outside the interface (rules, firewall rules, DNS) is recorded in a state file so
 * `down` undoes exactly that; addresses and routes go with the interface.
 *
 * A config error stops everything before the first change. A failure after it undoes what was done.
 * @module
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import process from "node:process";
import { parseArgs } from "node:util";
import { addAddress, addRoute, addRule, linkMtu, listRoutes, routeGet } from "../ffi/netlink.ts";
import { ifIndex, setMtu, setUp } from "../ffi/tun.ts";
import { ifNameToIndex } from "../ffi/libc.ts";
import {
  type EndpointSpec,
  formatCidrLikeWg,
  formatInterfaceAddress,
  type InterfaceAddress,
  type WgConfig,
} from "../lib/config.ts";
import { configToUpdate, syncUpdate } from "../lib/setconf.ts";
import { type Cidr, Endpoint, formatAddress } from "../lib/ip.ts";
import { daemonMain, serve } from "./daemon.ts";
import { levelFromEnv, Logger, say, setLogInterface } from "./log.ts";
import {
  loadState,
  locateConfig,
  onPath,
  readConfig,
  runHooks,
  saveState,
  step,
  takeDown,
  undoUp,
  type UpState,
} from "./quick.ts";
import { envHasConfig, readEnvConfig } from "./env_config.ts";
import { readKeyFiles } from "./keyfiles.ts";
import { becomeUser, lookupUser, type RunAs } from "./privilege.ts";
import { metricsAddressFromEnv, parseMetricsAddress } from "./metrics.ts";
import { resolveEndpoint } from "./set.ts";
import { uapiGet, uapiSet } from "./uapi_client.ts";

/** wg-quick's first table and fwmark for the default-route case (0xca6c). */
const FIRST_DEFAULT_TABLE = 51820;
/** wg-quick takes the MTU of the way to the endpoints and leaves room for IPv6 + UDP + WireGuard (80 bytes). */
const MTU_OVERHEAD = 80;

export const UP_USAGE = `Usage: typetun up [-f/--foreground] [--metrics ADDR:PORT] CONFIG_FILE | INTERFACE

  CONFIG_FILE is a wg-quick(8) .conf file (or the same keys in .toml) whose name, without the extension, is
  the interface name; INTERFACE alone means /etc/wireguard/INTERFACE.conf (or .toml). With -f the daemon
  stays in the foreground (containers, systemd) and a signal takes the tunnel down again. With --metrics (or
  TYPETUN_METRICS=ADDR:PORT) the daemon serves Prometheus metrics at /metrics and its health at /healthz.

  With no such file, or with --env, the configuration comes from the environment: WG_PRIVATE_KEY or
  WG_PRIVATE_KEY_FILE, WG_ADDRESS, WG_LISTEN_PORT, WG_DNS, WG_MTU, WG_FWMARK, WG_TABLE, and for each peer N
  WG_PEER_<N>_PUBLIC_KEY, _ENDPOINT, _ALLOWED_IPS, _PRESHARED_KEY(_FILE), _PERSISTENT_KEEPALIVE.
  Under -f, SIGTERM or SIGINT takes the tunnel down and exits; SIGHUP applies the changed configuration
  (as wg syncconf: sessions of unchanged peers stay). --user NAME|UID runs the daemon as that user once the
  tunnel is up, with CAP_NET_ADMIN only.
`;

const ipFamily = (f: 4 | 6) => `ip -${f}`;

/** Resolves every peer's endpoint (names as wg resolves them) before anything changes. */
async function resolveEndpoints(cfg: WgConfig): Promise<Map<EndpointSpec, Endpoint>> {
  const out = new Map<EndpointSpec, Endpoint>();
  for (const p of cfg.peers) if (p.endpoint) out.set(p.endpoint, await resolveEndpoint(p.endpoint));
  return out;
}

/** wg-quick's MTU: the largest MTU on the way to any endpoint, else the default route's, else 1500; less 80. */
export function computeMtu(endpoints: Iterable<Endpoint>): number {
  let mtu = 0;
  for (const ep of endpoints) {
    try {
      const oif = routeGet(ep.family, ep.addr);
      if (oif) mtu = Math.max(mtu, linkMtu(oif));
    } catch {
      // No route to this endpoint (yet): it does not count.
    }
  }
  if (!mtu) {
    const def = listRoutes(4).find((r) => r.prefixLen === 0 && r.table === 254 && r.oif);
    if (def) mtu = linkMtu(def.oif);
  }
  return (mtu || 1500) - MTU_OVERHEAD;
}

/** Parses `Table =`: auto (the default), off, main, a number, or a name from /etc/iproute2/rt_tables. */
export function parseTable(value: string | undefined): number | "auto" | "off" {
  if (value === undefined || value === "auto") return "auto";
  if (value === "off") return "off";
  if (value === "main") return 254;
  if (/^\d+$/.test(value) && Number(value) > 0 && Number(value) < 2 ** 32) return Number(value);
  for (const f of ["/etc/iproute2/rt_tables", "/usr/share/iproute2/rt_tables"]) {
    try {
      for (const line of readFileSync(f, "utf8").split("\n")) {
        const [id, name] = line.trim().split(/\s+/);
        if (name === value && /^\d+$/.test(id!)) return Number(id);
      }
    } catch {
      // No such file here.
    }
  }
  throw new Error(`Table = ${value}: not auto, off, main, a number or a table named in rt_tables`);
}

/** wg-quick adds no route that one through the interface in the main table already covers. */
function covered(c: Cidr, index: number): boolean {
  return listRoutes(c.family).some((r) =>
    r.oif === index && r.table === 254 && sameNetwork(c, r.dst, r.prefixLen)
  );
}

function sameNetwork(c: Cidr, dst: Uint8Array, prefixLen: number): boolean {
  if (prefixLen > c.prefixLen) return false;
  for (let bit = 0; bit < prefixLen; bit++) {
    const m = 0x80 >> (bit & 7);
    if ((c.addr[bit >> 3]! & m) !== (dst[bit >> 3]! & m)) return false;
  }
  return true;
}

/** Whether a tool is installed; the container image has none of them, and no shell to ask. */
function have(cmd: string): boolean {
  return onPath(cmd) !== null;
}

function run(tool: string, args: string[], input?: string): void {
  step(`${tool} ${args.join(" ")}`);
  const r = spawnSync(tool, args, {
    input,
    stdio: [input === undefined ? "ignore" : "pipe", "inherit", "inherit"],
  });
  if ((r.error as NodeJS.ErrnoException | undefined)?.code === "ENOENT") {
    throw new Error(`${tool} is not installed (or not in PATH)`);
  }
  if (r.status !== 0) throw new Error(`${tool} ${args.join(" ")} failed (status ${r.status ?? r.signal})`);
}

/**
 * The default-route case (AllowedIPs 0.0.0.0/0 or ::/0, wg-quick's add_default): the tunnel's own packets
 * carry a fwmark and keep using the main table; everything else goes to a table holding only the default
 * route through the tunnel, while more specific routes of the main table still win (suppress_prefixlength 0).
 */
async function addDefault(
  cfg: WgConfig,
  ifname: string,
  index: number,
  c: Cidr,
  state: UpState,
): Promise<void> {
  let table = (await uapiGet(ifname)).fwmark;
  if (!table) {
    table = FIRST_DEFAULT_TABLE;
    const used = new Set([...listRoutes(4), ...listRoutes(6)].map((r) => r.table));
    while (used.has(table)) table++;
    step(`typetun set ${ifname} fwmark ${table}`);
    await uapiSet(ifname, { replacePeers: false, fwmark: table, peers: [] });
  }
  const family = c.family;
  step(`${ipFamily(family)} rule add not fwmark ${table} table ${table}`);
  addRule({ family, table, notFwmark: table });
  state.rules.push({ family, table, notFwmark: table });
  step(`${ipFamily(family)} rule add table main suppress_prefixlength 0`);
  addRule({ family, table: 254, suppressPrefixLength: 0 });
  state.rules.push({ family, table: 254, suppressPrefixLength: 0 });
  step(`${ipFamily(family)} route add ${formatCidrLikeWg(c)} dev ${ifname} table ${table}`);
  addRoute(index, family, c.addr, 0, { table });
  if (family === 4) {
    const sysctl = "/proc/sys/net/ipv4/conf/all/src_valid_mark";
    // A container's /proc/sys is read-only: there it is set beforehand (`--sysctl`), and is no news.
    let set = false;
    try {
      set = readFileSync(sysctl, "utf8").trim() === "1";
    } catch {
      // Unreadable: try to write it.
    }
    if (!set) {
      step("sysctl -q net.ipv4.conf.all.src_valid_mark=1");
      try {
        writeFileSync(sysctl, "1");
      } catch {
        say(
          "warn",
          "Warning: could not set net.ipv4.conf.all.src_valid_mark=1 (in a container: pass it with --sysctl)",
        );
      }
    }
  }
  // wg-quick's anti-spoofing and connmark rules: nothing from outside may claim the tunnel's addresses, and
  // replies to the tunnel's own UDP keep its mark. With nftables when `nft` is there (as wg-quick: one table
  // per interface and family, which `down` deletes whole), else with iptables.
  if (have("nft")) {
    const script = nftRules(family, ifname, cfg.addresses.filter((a) => a.family === family), table);
    const { pf, name } = nftTable(family, ifname);
    run("nft", ["-f", "-"], script); // one transaction: all of the table or none
    (state.nftables ??= []).push(`${pf} ${name}`);
    return;
  }
  const tool = family === 4 ? "iptables" : "ip6tables";
  if (!have(tool)) {
    say(
      "warn",
      `Warning: neither nft nor ${tool} found: the default route works without wg-quick's firewall rules`,
    );
    return;
  }
  const comment = ["-m", "comment", "--comment", `typetun rule for ${ifname}`];
  const rules: string[][] = [];
  for (const a of cfg.addresses.filter((a) => a.family === family)) {
    const addr = new Endpoint(family, a.addr, 0).toString().replace(/:0$/, "").replace(/^\[|\]$/g, "");
    rules.push(
      ["-t", "raw", "PREROUTING", "!", "-i", ifname, "-d", addr, "-m", "addrtype", "!", "--src-type", "LOCAL"]
        .concat(comment, ["-j", "DROP"]),
    );
  }
  rules.push(
    ["-t", "mangle", "POSTROUTING", "-m", "mark", "--mark", String(table), "-p", "udp"]
      .concat(comment, ["-j", "CONNMARK", "--save-mark"]),
  );
  rules.push(
    ["-t", "mangle", "PREROUTING", "-p", "udp"].concat(comment, ["-j", "CONNMARK", "--restore-mark"]),
  );
  for (const args of rules) {
    run(tool, [args[0]!, args[1]!, "-I", ...args.slice(2)]);
    state.firewall.push({ tool, args });
  }
}

/** The nftables table of an interface's firewall rules, per family (wg-quick names its own `wg-quick-IF`). */
export function nftTable(family: 4 | 6, ifname: string): { pf: "ip" | "ip6"; name: string } {
  return { pf: family === 4 ? "ip" : "ip6", name: `typetun-${ifname}` };
}

/**
 * The nft script of wg-quick's add_default (linux.bash), for one family: a table holding a raw-priority
 * prerouting chain that drops packets for the tunnel's addresses arriving from elsewhere (unless from a local
 * address), and mangle-priority chains that save the fwmark of the tunnel's own UDP in the connection's mark
 * and restore it on the replies, so they match the `not fwmark` rule and stay out of the tunnel.
 */
export function nftRules(family: 4 | 6, ifname: string, addresses: InterfaceAddress[], mark: number): string {
  const { pf, name } = nftTable(family, ifname);
  let out = `add table ${pf} ${name}\n` +
    `add chain ${pf} ${name} preraw { type filter hook prerouting priority -300; }\n` +
    `add chain ${pf} ${name} premangle { type filter hook prerouting priority -150; }\n` +
    `add chain ${pf} ${name} postmangle { type filter hook postrouting priority -150; }\n`;
  for (const a of addresses) {
    out += `add rule ${pf} ${name} preraw iifname != ${JSON.stringify(ifname)} ${pf} daddr ` +
      `${formatAddress(a.addr)} fib saddr type != local drop\n`;
  }
  out += `add rule ${pf} ${name} postmangle meta l4proto udp mark ${mark} ct mark set mark\n` +
    `add rule ${pf} ${name} premangle meta l4proto udp meta mark set ct mark\n`;
  return out;
}

/** resolvconf's record name: wg-quick prefixes "tun." when resolvconf orders interfaces by such names. */
function resolvconfName(ifname: string): string {
  try {
    const order = readFileSync("/etc/resolvconf/interface-order", "utf8");
    if (/^tun\.\*/m.test(order)) return `tun.${ifname}`;
  } catch {
    // Not Debian's resolvconf: no prefix.
  }
  return ifname;
}

function setDns(cfg: WgConfig, ifname: string, state: UpState): void {
  if (!cfg.dns.length && !cfg.dnsSearch.length) return;
  if (!have("resolvconf")) {
    const all = [...cfg.dns, ...cfg.dnsSearch].join(", ");
    say("warn", `Warning: DNS = ${all} not applied: resolvconf is not installed`);
    return;
  }
  const lines = cfg.dns.map((d) => `nameserver ${d}\n`).join("") +
    (cfg.dnsSearch.length ? `search ${cfg.dnsSearch.join(" ")}\n` : "");
  const name = resolvconfName(ifname);
  run("resolvconf", ["-a", name, "-m", "0", "-x"], lines);
  state.dns = name;
}

/** Brings the tunnel up; returns once it is up (or, with -f, once it is down again). */
export async function upMain(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        foreground: { type: "boolean", short: "f" },
        help: { type: "boolean", short: "h" },
        metrics: { type: "string" },
        env: { type: "boolean" },
        user: { type: "string" },
      },
      allowPositionals: true,
    });
  } catch (e) {
    process.stderr.write(`typetun up: ${(e as Error).message}\n${UP_USAGE}`);
    return 1;
  }
  if (parsed.values.help) {
    process.stdout.write(UP_USAGE);
    return 0;
  }
  if (parsed.positionals.length !== 1) {
    process.stderr.write(UP_USAGE);
    return 1;
  }
  const foreground = parsed.values.foreground === true || process.env.WG_PROCESS_FOREGROUND === "1";

  // Everything that can fail on the config alone is checked before the first change.
  let ifname: string, path: string, cfg: WgConfig, endpoints: Map<EndpointSpec, Endpoint>, table;
  let load: () => WgConfig, source: string, user: RunAs | undefined;
  try {
    // The daemon, in this process or the one it starts, takes the address from the environment.
    if (parsed.values.metrics !== undefined) {
      parseMetricsAddress(parsed.values.metrics);
      process.env.TYPETUN_METRICS = parsed.values.metrics;
    } else metricsAddressFromEnv();
    ({ ifname, path } = locateConfig(parsed.positionals[0]!));
    setLogInterface(ifname);
    if (parsed.values.user !== undefined) user = lookupUser(parsed.values.user);
    // No file at all (a container): the WG_ variables (cmd/env_config.ts), or --env whatever files exist.
    const fromEnv = parsed.values.env === true || (!existsSync(path) && envHasConfig(process.env));
    source = fromEnv ? "(environment)" : path;
    load = fromEnv ? () => readEnvConfig(process.env) : () => readKeyFiles(readConfig(path), path);
    cfg = load();
    table = parseTable(cfg.table);
    const hooks = cfg.preUp.length + cfg.postUp.length + cfg.preDown.length + cfg.postDown.length;
    if (hooks && !onPath("bash") && !onPath("sh")) {
      throw new Error(
        `${path} has PreUp/PostUp/PreDown/PostDown hooks, and no shell (bash or sh) is in PATH`,
      );
    }
    if (ifNameToIndex(ifname)) throw new Error(`\`${ifname}' already exists`);
    endpoints = await resolveEndpoints(cfg);
  } catch (e) {
    say("error", `typetun: ${(e as Error).message}`);
    return 1;
  }

  const state: UpState = { ifname, config: path, rules: [], firewall: [], dns: null };
  let daemon: Promise<number> | null = null;
  try {
    runHooks(cfg.preUp, ifname, "PreUp");
    step(`typetun ${foreground ? "-f " : ""}${ifname}`);
    if (foreground) {
      const log = new Logger(levelFromEnv(process.env.LOG_LEVEL ?? "error"), ifname);
      daemon = serve(ifname, log, false);
      await waitForSocket(ifname, daemon);
    } else if ((await daemonMain(user ? ["--user", user.name, ifname] : [ifname])) !== 0) {
      throw new Error(`the daemon for ${ifname} did not start`);
    }
    const index = ifIndex(ifname);
    step(`typetun setconf ${ifname} ${source}`);
    await uapiSet(ifname, configToUpdate(cfg, "set", (e) => endpoints.get(e)!));
    for (const a of cfg.addresses) {
      step(`${ipFamily(a.family)} address add ${formatInterfaceAddress(a)} dev ${ifname}`);
      addAddress(index, a.family, a.addr, a.prefixLen);
    }
    const mtu = cfg.mtu ?? computeMtu(endpoints.values());
    step(`ip link set mtu ${mtu} up dev ${ifname}`);
    setMtu(ifname, mtu);
    setUp(ifname, true);
    setDns(cfg, ifname, state);
    if (table !== "off") {
      const cidrs = cfg.peers.flatMap((p) => p.allowedIps).sort((a, b) => b.prefixLen - a.prefixLen);
      for (const c of cidrs) {
        const route = `${ipFamily(c.family)} route add ${formatCidrLikeWg(c)} dev ${ifname}`;
        if (table !== "auto") {
          step(`${route} table ${table}`);
          addRoute(index, c.family, c.addr, c.prefixLen, { table });
        } else if (c.prefixLen === 0) {
          await addDefault(cfg, ifname, index, c, state);
        } else if (!covered(c, index)) {
          step(route);
          addRoute(index, c.family, c.addr, c.prefixLen);
        }
      }
    }
    saveState(state);
    runHooks(cfg.postUp, ifname, "PostUp");
    if (foreground && user) {
      // Root's part is done; CAP_NET_ADMIN stays for fwmark and port changes, and for the take-down (rules,
      // the interface), whose programs (hooks, nft, iptables) get it too. The daemon runs in this process.
      step(`drop to user ${user.name} (uid ${user.uid}, gid ${user.gid}), keeping CAP_NET_ADMIN only`);
      becomeUser(user, true);
    }
  } catch (e) {
    say("error", `typetun: ${(e as Error).message}`);
    await undoUp(state);
    if (daemon) await daemon;
    return 1;
  }
  if (!daemon) return 0;
  // Foreground: serve until a signal or the interface's deletion. A signal takes the tunnel down as `down`
  // does, while the daemon still runs (SaveConfig reads it, PreDown hooks see the interface).
  let signalled: Promise<number> | null = null;
  takeOverSignals(() => signalled ??= takeDown(cfg, path, state, true));
  // SIGHUP reloads, one reload at a time (a second signal during one runs another after it).
  let reloading = Promise.resolve();
  const onHup = () => {
    if (!signalled) reloading = reloading.then(() => reload(ifname, source, load, cfg));
  };
  process.on("SIGHUP", onHup);
  const code = await daemon;
  process.removeListener("SIGHUP", onHup); // a listener would keep the process alive
  await reloading;
  // Deleted from outside: by `down` (which removed the state file first, and did the rest), or by hand.
  const down = signalled ?? (loadState(ifname) ? takeDown(cfg, path, state, false) : Promise.resolve(0));
  const downCode = await down;
  return code || downCode;
}

/**
 * SIGHUP under `up -f`: what `systemctl reload wg-quick@IF` does (`wg syncconf IF <(wg-quick strip IF)`),
 * from the file or the environment read again (key files too). Peers are added, changed and removed;
 * unchanged peers keep their sessions (lib/setconf.ts syncUpdate). Unlike `wg syncconf`, a ListenPort or FwMark
 * the file does not give is left as it runs: `up` may have chosen the fwmark (the default-route case), and a
 * new random port would make every peer find us again. What only wg-quick applies (addresses, routes, DNS, MTU,
 * hooks) is not redone: a reload that changes it says so. A bad file changes nothing and is reported.
 */
async function reload(ifname: string, source: string, load: () => WgConfig, first: WgConfig): Promise<void> {
  try {
    const cfg = load();
    const endpoints = await resolveEndpoints(cfg);
    const update = configToUpdate(cfg, "set", (e) => endpoints.get(e)!);
    if (cfg.listenPort === undefined) delete update.listenPort;
    if (cfg.fwmark === undefined) delete update.fwmark;
    step(`typetun syncconf ${ifname} ${source}`);
    await uapiSet(ifname, syncUpdate(update, await uapiGet(ifname)));
    const quick = (c: WgConfig) =>
      JSON.stringify([
        stripToQuick(c),
        c.peers.flatMap((p) => p.allowedIps.map(formatCidrLikeWg)).sort(),
      ]);
    if (quick(cfg) !== quick(first)) {
      step(
        `${source}: Address, DNS, MTU, Table, hooks or the routes of AllowedIPs changed: ` +
          `they apply at the next \`up'`,
      );
    }
  } catch (e) {
    say("error", `typetun: reload of ${ifname} failed, nothing changed: ${(e as Error).message}`);
  }
}

/** The wg-quick part of a configuration, for telling whether a reload changed it. */
function stripToQuick(c: WgConfig): unknown[] {
  return [c.addresses.map(formatInterfaceAddress), c.dns, c.dnsSearch, c.mtu, c.table, c.preUp, c.postUp];
}

/**
 * The in-process daemon stops at SIGINT or SIGTERM at once, and closing its TUN deletes the interface: too
 * early for SaveConfig and PreDown. So `up -f` holds the signals back from the daemon: the first one runs
 * `takeDown` (whose deletion of the interface stops the daemon), then reaches the daemon too, in case the
 * deletion failed; a second one reaches the daemon at once.
 */
function takeOverSignals(onSignal: () => Promise<number>): void {
  const daemon = (["SIGINT", "SIGTERM"] as const).map((sig) => {
    const listeners = process.listeners(sig);
    for (const l of listeners) process.removeListener(sig, l);
    return { sig, listeners };
  });
  let taken = false;
  for (const { sig, listeners } of daemon) {
    process.on(sig, () => {
      const pass = () => listeners.forEach((l) => (l as (s: string) => void)(sig));
      if (taken) return pass();
      taken = true;
      onSignal().finally(pass);
    });
  }
}

/** Waits until the in-process daemon answers on its socket, or fails if it ended first. */
async function waitForSocket(ifname: string, daemon: Promise<number>): Promise<void> {
  let ended = false;
  daemon.then(() => (ended = true));
  for (let i = 0; i < 200 && !ended; i++) {
    try {
      await uapiGet(ifname);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  throw new Error(`the daemon for ${ifname} did not start`);
}
