/**
 * `typetun up CONFIG|IFNAME [-f]`: what wg-quick(8) does with the same file, with typetun as the daemon and
 * netlink instead of `ip`. In the current wg-quick's order (wireguard-tools v1.0.20260223, linux.bash cmd_up):
 * the daemon, PreUp hooks (the interface exists, so a hook may configure it), the WireGuard settings as
 * `wg addconf` (what a hook set stays), the addresses, the MTU (given, or the smallest towards the endpoints),
 * link up, DNS through resolvconf, a route per allowed IP the device holds (Table = auto | off | main |
 * number), the default-route case with fwmark policy routing and wg-quick's firewall rules, PostUp hooks.
 * The pure decisions are lib/wg_quick.ts's. `down` finds the rules and firewall rules as wg-quick does, so
 * either tool takes down what the other brought up; a state file keeps DNS and the rules for when the daemon
 * is already gone. Addresses and routes go with the interface.
 *
 * A config error stops everything before the first change. A failure after it undoes what was done.
 * @module
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import process from "node:process";
import { parseArgs } from "node:util";
import { dirname, resolve as resolvePath } from "node:path";
import {
  addAddress,
  addRoute,
  addRule,
  linkMtu,
  listAddresses,
  listRoutes,
  routeLookup,
} from "../ffi/netlink.ts";
import { ifIndex, setMtu, setUp } from "../ffi/tun.ts";
import { ifNameToIndex } from "../ffi/libc.ts";
import { type EndpointSpec, formatCidrLikeWg, formatInterfaceAddress, type WgConfig } from "../lib/config.ts";
import { configToUpdate, syncUpdate } from "../lib/setconf.ts";
import { type Cidr, type Endpoint, formatAddress } from "../lib/ip.ts";
import { chooseMtu, iptablesScript, nftScript, routeOrder } from "../lib/wg_quick.ts";
import { daemonMain, serve } from "./daemon.ts";
import { levelFromEnv, Logger, say, setLogInterface } from "./log.ts";
import {
  loadState,
  locateConfig,
  onPath,
  readConfig,
  resolvconfName,
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
import { runningFilters } from "./connections.ts";
import {
  checkHops,
  type HopSpec,
  innerFamilies,
  multihopMtu,
  prepareHopReload,
  readHops,
  viaToEnv,
} from "./multihop.ts";

/** wg-quick's first table and fwmark for the default-route case (0xca6c). */
const FIRST_DEFAULT_TABLE = 51820;

export const UP_USAGE =
  `Usage: typetun up [-f/--foreground] [--metrics ADDR:PORT] [--via HOP.conf]... CONFIG_FILE | INTERFACE

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

  --via HOP.conf (repeatable; or Via = in [Interface]) carries the tunnel inside other WireGuard tunnels in
  the same process (multihop): the first is the entry relay, each next one goes inside the one before. A hop
  file is a wg-quick file whose Address is the hop's own address in its tunnel; its peer's AllowedIPs must
  cover the endpoint of the tunnel inside it.
`;

const ipFamily = (f: 4 | 6) => `ip -${f}`;

/** Resolves every peer's endpoint (names as wg resolves them) before anything changes. */
async function resolveEndpoints(cfg: WgConfig): Promise<Map<EndpointSpec, Endpoint>> {
  const out = new Map<EndpointSpec, Endpoint>();
  for (const p of cfg.peers) if (p.endpoint) out.set(p.endpoint, await resolveEndpoint(p.endpoint));
  return out;
}

/**
 * wg-quick's set_mtu_up without MTU =: for each endpoint the device holds (`wg show IF endpoints`), the MTU of
 * the route to it (`ip route get`: the route's or the learnt path MTU, else its device's); if none, the first
 * default route's; chooseMtu takes the smallest, less 80.
 */
async function autoMtu(ifname: string, endpoints?: Iterable<Endpoint>): Promise<number> {
  const pathMtu = (r: { oif: number; mtu: number }) => r.mtu || (r.oif ? linkMtu(r.oif) : 0);
  const paths: number[] = [];
  // Behind hops (multihop) the endpoints on the wire are the entry hop's, given here.
  for (const endpoint of endpoints ?? (await uapiGet(ifname)).peers.map((p) => p.endpoint)) {
    if (!endpoint) continue;
    try {
      paths.push(pathMtu(routeLookup(endpoint.family, endpoint.addr)));
    } catch {
      // No route to this endpoint (yet): it does not count.
    }
  }
  let def: number | undefined;
  if (!paths.some((m) => m > 0)) {
    // `ip route show default`: the main table's IPv4 default routes; wg-quick reads the first line.
    const first = listRoutes(4).find((r) => r.prefixLen === 0 && r.table === 254);
    if (first) def = pathMtu(first);
  }
  return chooseMtu(paths, def);
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
async function addDefault(ifname: string, index: number, c: Cidr, state: UpState): Promise<void> {
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
  // wg-quick's anti-spoofing and connmark rules, for every address the interface has of this family (as
  // `ip -o addr show dev`, so also one a hook added): nothing from outside may claim them, and replies to the
  // tunnel's own UDP keep its mark. With nftables when `nft` is there (a table `wg-quick-IF` per family), else
  // iptables-restore; the same names and comments as wg-quick, so `down` of either finds them.
  const addrs = listAddresses(index).filter((a) => a.family === family).map((a) => formatAddress(a.addr));
  if (have("nft")) {
    run("nft", ["-f", "-"], nftScript(family, ifname, addrs, table)); // one transaction: all of it or none
    return;
  }
  const tool = family === 4 ? "iptables" : "ip6tables";
  if (!have(`${tool}-restore`)) {
    // wg-quick fails here; a container image has neither tool, and its host's firewall is not ours to skip.
    say(
      "warn",
      `Warning: neither nft nor ${tool}-restore found: the default route works without wg-quick's firewall rules`,
    );
    return;
  }
  run(`${tool}-restore`, ["-n"], iptablesScript(ifname, addrs, table));
}

/**
 * wg-quick's set_dns: only with DNS servers (search domains alone set nothing), through resolvconf. Without
 * resolvconf wg-quick fails (and undoes the rest): so does a file here; a configuration from the environment
 * (a container, which has no resolvconf) only warns.
 */
function setDns(cfg: WgConfig, ifname: string, state: UpState, fromEnv: boolean): void {
  if (!cfg.dns.length) return;
  if (!have("resolvconf") && fromEnv) {
    say(
      "warn",
      `Warning: DNS = ${[...cfg.dns, ...cfg.dnsSearch].join(", ")} not applied: resolvconf is not installed`,
    );
    return;
  }
  const lines = cfg.dns.map((d) => `nameserver ${d}\n`).join("") +
    (cfg.dnsSearch.length ? `search ${cfg.dnsSearch.join(" ")}\n` : "");
  const name = resolvconfName(ifname);
  // Without resolvconf this says so after the step, and `up` undoes what it did, as wg-quick.
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
        via: { type: "string", multiple: true },
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
  let load: () => WgConfig, source: string, user: RunAs | undefined, hops: HopSpec[];
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
    // Multihop (cmd/multihop.ts): --via, or Via in the file (relative to it), outermost first. The daemon,
    // here or in the background, reads them from TYPETUN_VIA.
    const via = parsed.values.via ?? [];
    if (via.length > 0 && cfg.via?.length) {
      throw new Error(`hops given both with --via and with Via in ${path}`);
    }
    const viaFiles = via.length > 0 ? via : (cfg.via ?? []).map((p) => resolvePath(dirname(path), p));
    hops = await readHops(viaFiles);
    if (hops.length > 0) {
      checkHops(hops, { path: source, cfg, endpoints });
      process.env.TYPETUN_VIA = viaToEnv(viaFiles);
    }
  } catch (e) {
    say("error", `typetun: ${(e as Error).message}`);
    return 1;
  }

  const state: UpState = { ifname, config: path, rules: [], firewall: [], dns: null };
  let daemon: Promise<number> | null = null;
  try {
    step(`typetun ${foreground ? "-f " : ""}${ifname}`);
    if (foreground) {
      const log = new Logger(levelFromEnv(process.env.LOG_LEVEL ?? "error"), ifname);
      daemon = serve(ifname, log, false);
      await waitForSocket(ifname, daemon);
    } else if ((await daemonMain(user ? ["--user", user.name, ifname] : [ifname])) !== 0) {
      throw new Error(`the daemon for ${ifname} did not start`);
    }
    const index = ifIndex(ifname);
    // The current wg-quick runs PreUp once the interface exists, and applies the file with `wg addconf`: only
    // what it says, so a key or peer a hook set (`PreUp = wg set %i private-key /path`) stays.
    runHooks(cfg.preUp, ifname, "PreUp");
    step(`typetun addconf ${ifname} ${source}`);
    await uapiSet(ifname, configToUpdate(cfg, "add", (e) => endpoints.get(e)!));
    for (const a of cfg.addresses) {
      step(`${ipFamily(a.family)} address add ${formatInterfaceAddress(a)} dev ${ifname}`);
      addAddress(index, a.family, a.addr, a.prefixLen);
    }
    // Behind hops: the way to the entry relay, less each hop's overhead (80 bytes per IPv6 layer, 60 per IPv4).
    const mtu = cfg.mtu ?? (hops.length === 0 ? await autoMtu(ifname) : multihopMtu(
      hops[0]!.cfg.mtu ?? await autoMtu(ifname, hops[0]!.endpoints.values()),
      innerFamilies(hops, { path: source, cfg, endpoints }),
    ));
    step(`ip link set mtu ${mtu} up dev ${ifname}`);
    setMtu(ifname, mtu);
    setUp(ifname, true);
    setDns(cfg, ifname, state, source === "(environment)");
    if (table !== "off") {
      // The allowed IPs the device holds (`wg show IF allowed-ips`: a hook's too), most specific first.
      const held = new Map<string, Cidr>();
      for (const p of (await uapiGet(ifname)).peers) {
        for (const c of p.allowedIps) held.set(formatCidrLikeWg(c), c);
      }
      for (const c of routeOrder([...held.keys()]).map((k) => held.get(k)!)) {
        const route = `${ipFamily(c.family)} route add ${formatCidrLikeWg(c)} dev ${ifname}`;
        if (table !== "auto") {
          step(`${route} table ${cfg.table}`); // as written: `main`, or a name from rt_tables
          addRoute(index, c.family, c.addr, c.prefixLen, { table });
        } else if (c.prefixLen === 0) {
          await addDefault(ifname, index, c, state);
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
    await undoUp(state, cfg.table, true);
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
    if (!signalled) reloading = reloading.then(() => reload(ifname, source, load, cfg, hops));
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
 * With hops (multihop), their files are read again too, and each hop is synced through its own UAPI before
 * wg0 (cmd/multihop.ts prepareHopReload), so wg0's new endpoints fit them; the list of hop files stays the one
 * `up` started with.
 */
export async function reload(
  ifname: string,
  source: string,
  load: () => WgConfig,
  first: WgConfig,
  hops: HopSpec[] = [],
): Promise<void> {
  try {
    const cfg = load();
    const endpoints = await resolveEndpoints(cfg);
    const update = configToUpdate(cfg, "set", (e) => endpoints.get(e)!);
    if (cfg.listenPort === undefined) delete update.listenPort;
    if (cfg.fwmark === undefined) delete update.fwmark;
    // Everything is read and checked before the first change.
    const hopReload = hops.length === 0 ? null : await prepareHopReload(
      ifname,
      hops.map((h) => h.path),
      hops,
      { path: source, cfg, endpoints },
    );
    const sync = syncUpdate(update, await uapiGet(ifname), await runningFilters(ifname));
    for (const [i, { name, update }] of (hopReload?.updates ?? []).entries()) {
      step(`typetun syncconf ${ifname} hop ${i + 1} ${hops[i]!.path}`);
      await uapiSet(name, update);
    }
    step(`typetun syncconf ${ifname} ${source}`);
    await uapiSet(ifname, sync);
    for (const note of hopReload?.notes ?? []) step(note);
    if (JSON.stringify(cfg.via ?? []) !== JSON.stringify(first.via ?? [])) {
      step(`${source}: Via changed: the hops are chosen at the next \`up'`);
    }
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
