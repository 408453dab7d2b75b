/**
 * The multihop topology, for tests/netns/multihop_test.ts and bench/multihop.ts: four namespaces in a row,
 *
 *   client C ──192.168.71/24── entry relay E ──192.168.72/24── exit relay X ──192.168.73/24── target T
 *
 * The relays are the current wireguard-go (../shared/tools/wireguard-go), configured with wg. E forwards and
 * masquerades what leaves towards X; X forwards to T, which routes the exit tunnel's subnet back through X.
 * - E's tunnel: wgE 10.64.0.1/24 port 51820; the client's hop is 10.64.0.2, and may reach 192.168.72.0/24.
 * - X's tunnel: wgX 10.10.0.1/24 port 51821; the client's wg0 is 10.10.0.2, and reaches 10.10.0.0/24 and T's
 *   subnet through it.
 * With `via`, the client runs `typetun up -f wg0.conf --via entry.conf` (one process, one TUN); without, wg0
 * goes straight to X (its packets forwarded by E unencrypted by E's tunnel): one hop, for comparison.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import process from "node:process";
import { inNs, type Lab, sh, sleep, tag, typetunCommand, wgKeys } from "./_lab.ts";

const TOOLS = new URL("../../../shared/tools/", import.meta.url).pathname;
/** The current wireguard-go and wg (Debian's wg if the current one is missing: both speak the same UAPI). */
export const WIREGUARD_GO = `${TOOLS}wireguard-go/wireguard-go`;
export const WG = existsSync(`${TOOLS}wireguard-tools/wg`) ? `${TOOLS}wireguard-tools/wg` : "wg";

export interface Topology {
  c: string;
  e: string;
  x: string;
  t: string;
  /** The relays' interfaces (wireguard-go), in E and X. */
  wgE: string;
  wgX: string;
  /** The client's interface (typetun), in C. */
  ifname: string;
  /** E's veth towards C (outer traffic only), and towards X. */
  eToC: string;
  eToX: string;
  /** The client's `up -f` process (with `background`, `up` itself, which exits once the tunnel is up). */
  up: ChildProcess;
  /** Where the config files are (removed by `done`). */
  dir: string;
  /** The client's wg0 and hop public keys, as the relays know them. */
  clientKey: string;
  hopKey: string;
  log(): string;
  done(): void;
}

function wgSetConf(ifname: string, priv: string, rest: string): void {
  const f = `/tmp/typetun-mh-key-${tag()}`;
  writeFileSync(f, priv + "\n", { mode: 0o600 });
  try {
    sh(`${WG} set ${ifname} private-key ${f} ${rest}`);
  } finally {
    rmSync(f, { force: true });
  }
}

export async function multihopTopology(
  lab: Lab,
  opts: { via: boolean; env?: Record<string, string>; background?: boolean },
): Promise<Topology> {
  const t0 = tag();
  const c = lab.ns(`mhc${t0}`), e = lab.ns(`mhe${t0}`), x = lab.ns(`mhx${t0}`), t = lab.ns(`mht${t0}`);
  const [, eToC] = lab.veth(c, e, ["192.168.71.1", "fd00:71::1"], ["192.168.71.2", "fd00:71::2"]);
  const [eToX] = lab.veth(e, x, ["192.168.72.1", "fd00:72::1"], ["192.168.72.2", "fd00:72::2"]);
  lab.veth(x, t, ["192.168.73.1", "fd00:73::1"], ["192.168.73.2", "fd00:73::2"]);
  for (const ns of [e, x]) inNs(ns, "sysctl -qw net.ipv4.ip_forward=1");
  inNs(e, `iptables -t nat -A POSTROUTING -o ${eToX} -j MASQUERADE`);
  inNs(t, "ip route add 10.10.0.0/24 via 192.168.73.1");
  if (!opts.via) inNs(c, "ip route add 192.168.72.0/24 via 192.168.71.2");

  const wgE = `mhE${t0}`, wgX = `mhX${t0}`;
  await lab.daemon(wgE, e, { LOG_LEVEL: "error" }, [WIREGUARD_GO]);
  await lab.daemon(wgX, x, { LOG_LEVEL: "error" }, [WIREGUARD_GO]);
  const kE = wgKeys(), kX = wgKeys(), kHop = wgKeys(), kC = wgKeys();
  wgSetConf(wgE, kE.priv, `listen-port 51820 peer ${kHop.pub} allowed-ips 10.64.0.2/32`);
  wgSetConf(wgX, kX.priv, `listen-port 51821 peer ${kC.pub} allowed-ips 10.10.0.2/32`);
  inNs(e, `ip addr add 10.64.0.1/24 dev ${wgE} && ip link set ${wgE} up`);
  inNs(x, `ip addr add 10.10.0.1/24 dev ${wgX} && ip link set ${wgX} up`);

  const dir = mkdtempSync("/tmp/typetun-mh-");
  const ifname = `mh${t0}`;
  const entry = `${dir}/entry.conf`, conf = `${dir}/${ifname}.conf`;
  writeFileSync(
    entry,
    `[Interface]\nPrivateKey = ${kHop.priv}\nAddress = 10.64.0.2/32\n\n[Peer]\nPublicKey = ${kE.pub}\n` +
      `Endpoint = 192.168.71.2:51820\nAllowedIPs = 192.168.72.0/24\n`,
    { mode: 0o600 },
  );
  writeFileSync(
    conf,
    `[Interface]\nPrivateKey = ${kC.priv}\nAddress = 10.10.0.2/32\n\n[Peer]\nPublicKey = ${kX.pub}\n` +
      `Endpoint = 192.168.72.2:51821\nAllowedIPs = 10.10.0.0/24, 192.168.73.0/24\n`,
    { mode: 0o600 },
  );
  const [cmd, ...args] = typetunCommand();
  const upArgs = ["up", ...(opts.background ? [] : ["-f"]), conf, ...(opts.via ? ["--via", entry] : [])];
  const up = spawn("ip", ["netns", "exec", c, cmd!, ...args, ...upArgs], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, LOG_LEVEL: "info", ...opts.env },
  });
  lab.children.push(up);
  lab.sockets.push(`/var/run/wireguard/${ifname}.sock`, `/var/run/wireguard/${ifname}.hop1.uapi`);
  let log = "";
  up.stdout!.on("data", (d) => (log += d.toString()));
  up.stderr!.on("data", (d) => (log += d.toString()));
  // `up` adds the routes of AllowedIPs last: once T's subnet is routed into the tunnel, it is up.
  for (let i = 0;; i++) {
    if (up.exitCode !== null && (!opts.background || up.exitCode !== 0)) {
      throw new Error(`typetun up exited (${up.exitCode}):\n${log}`);
    }
    if (inNs(c, "ip route").includes(`192.168.73.0/24 dev ${ifname}`)) break;
    if (i > 300) throw new Error(`typetun up did not finish in 30 s:\n${log}`);
    await sleep(100);
  }
  return {
    c,
    e,
    x,
    t,
    wgE,
    wgX,
    ifname,
    eToC,
    eToX,
    up,
    dir,
    clientKey: kC.pub,
    hopKey: kHop.pub,
    log: () => log,
    done: () => rmSync(dir, { recursive: true, force: true }),
  };
}
