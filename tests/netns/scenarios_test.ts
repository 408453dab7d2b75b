/**
 * WireGuard's own namespace scenarios (the netns test that wireguard-go ships, after the kernel's), written
 * for typetun and run for every pairing of typetun and wireguard-go (root).
 *
 * Topology: both daemons start in $ns0 and talk over its loopback (127.0.0.1 / ::1); right after creation
 * each interface moves into its own namespace ($ns1, $ns2), where its addresses live. The UDP sockets stay in
 * $ns0. Then: interface counters, ping and iperf3 TCP/UDP over IPv4 and IPv6 with IPv4 as the outer transport
 * and then IPv6, a 34,736-byte MTU, roaming of address and port, the cryptokey-routing filter, and NAT with
 * persistent keepalive in a routed topology.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { cannotRun, inNs, Lab, sh, sleep, tag, typetunCommand, waitExit, wgKeys } from "./_lab.ts";

const skip = cannotRun("wg", "wireguard-go", "iperf3", "ncat", "ping", "ss", "iptables");
if (skip) console.log(`netns scenarios skipped: ${skip}`);

type Impl = "typetun" | "wireguard-go";
const PAIRINGS: [Impl, Impl][] = [["typetun", "typetun"], ["typetun", "wireguard-go"], [
  "wireguard-go",
  "typetun",
]];

const command = (impl: Impl) => impl === "typetun" ? typetunCommand() : ["wireguard-go"];
const env = (impl: Impl): Record<string, string> => impl === "typetun" ? {} : { LOG_LEVEL: "error" };

/** The tunnel addresses, as in netns.sh. */
const V4 = ["", "192.168.241.1", "192.168.241.2"];
const V6 = ["", "fd00::1", "fd00::2"];

/** wireguard-go's default MTU is 1420, typetun's too; netns.sh's big MTU is 34816 - 1500 + that. */
const ORIG_MTU = 1420;
const BIG_MTU = 34816 - 1500 + ORIG_MTU;

interface Side {
  ns: string;
  ifname: string;
  priv: string;
  pub: string;
  port: number;
}

/** `wg set` for the interface of `side`, with its private key (through a file, as wg wants) if asked. */
function wg(side: Side, args: string, withKey = false): void {
  if (!withKey) return void sh(`wg set ${side.ifname} ${args}`);
  sh(
    `f=$(mktemp) && echo ${side.priv} > $f && wg set ${side.ifname} private-key $f ${args}; r=$?; rm -f $f; exit $r`,
  );
}

function endpoints(side: Side): string {
  return sh(`wg show ${side.ifname} endpoints`).trim();
}

function linkStats(side: Side): { rx: number; tx: number } {
  const [link] = JSON.parse(sh(`ip -j -s -n ${side.ns} link show dev ${side.ifname}`));
  return { rx: link.stats64.rx.bytes, tx: link.stats64.tx.bytes };
}

/** Pings from `ns`, retrying a few times: IPv6 on a fresh TUN may drop the first packets until addrconf. */
async function ping(ns: string, addr: string, extra = "-c 10 -f -W 1"): Promise<void> {
  let err: unknown;
  for (let i = 0; i < 3; i++) {
    try {
      inNs(ns, `ping ${extra} ${addr}`, 20_000);
      return;
    } catch (e) {
      err = e;
      await sleep(300);
    }
  }
  throw err;
}

/** Waits until something in `ns` listens on `port` (TCP or UDP), at most 5 s. */
async function waitListening(ns: string, proto: "t" | "u", port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (sh(`ss -N ${ns} -${proto}lnH 'sport = ${port}'`).trim()) return;
    await sleep(50);
  }
  throw new Error(`nothing listens on ${proto === "t" ? "TCP" : "UDP"} port ${port} in ${ns}`);
}

interface IperfResult {
  mbps: number;
  lostPercent?: number;
}

/** One iperf3 run through the tunnel: a one-shot server in `serverNs` on `addr`, the client in `clientNs`. */
async function iperf(
  clientNs: string,
  serverNs: string,
  addr: string,
  udp: boolean,
  secs = 2,
): Promise<IperfResult> {
  const server = spawn("ip", ["netns", "exec", serverNs, "iperf3", "-s", "-1", "-B", addr], {
    stdio: "ignore",
  });
  try {
    await waitListening(serverNs, "t", 5201);
    const out = inNs(
      clientNs,
      `iperf3 -Z --json -t ${secs} ${udp ? "-u -b 0" : ""} -c ${addr}`,
      (secs + 20) * 1000,
    );
    const end = JSON.parse(out).end;
    // For UDP, the rate that arrived (iperf3 ≥ 3.8 reports it as sum_received), and the loss.
    if (udp) {
      return { mbps: (end.sum_received ?? end.sum).bits_per_second / 1e6, lostPercent: end.sum.lost_percent };
    }
    return { mbps: end.sum_received.bits_per_second / 1e6 };
  } finally {
    if ((await waitExit(server, 3000)) === null) server.kill("SIGKILL");
  }
}

/** A UDP listener (`ncat -l -u`) in `ns` and what it has received so far. */
async function udpListener(ns: string, port: number): Promise<{ child: ChildProcess; got: () => string }> {
  const child = spawn("ip", ["netns", "exec", ns, "ncat", "-l", "-u", "-p", String(port)], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  let got = "";
  child.stdout!.on("data", (d) => (got += d.toString()));
  await waitListening(ns, "u", port);
  return { child, got: () => got };
}

async function received(got: () => string, want: string, ms: number): Promise<boolean> {
  for (let waited = 0; waited < ms; waited += 50) {
    if (got().includes(want)) return true;
    await sleep(50);
  }
  return got().includes(want);
}

/** Starts both daemons in `ns0`, moves the interfaces into ns1/ns2, addresses them and configures the peers. */
async function loopbackTopology(lab: Lab, impls: [Impl, Impl], t: string): Promise<[Side, Side, string]> {
  const ns0 = lab.ns(`sc0${t}`);
  const sides = [1, 2].map((i): Side => {
    const k = wgKeys();
    return { ns: lab.ns(`sc${i}${t}`), ifname: `sc${i}${t}`, priv: k.priv, pub: k.pub, port: i * 10000 };
  }) as [Side, Side];
  for (const [i, side] of sides.entries()) {
    await lab.daemon(side.ifname, ns0, env(impls[i]!), command(impls[i]!));
    sh(`ip -n ${ns0} link set ${side.ifname} netns ${side.ns}`);
  }
  configurePeers(sides);
  return [sides[0], sides[1], ns0];
}

/** netns.sh's configure_peers: addresses, keys, ports, a preshared key and each other's allowed IPs. */
function configurePeers([a, b]: [Side, Side]): void {
  const psk = `/tmp/typetun-psk-${tag()}`;
  writeFileSync(psk, sh("wg genpsk"), { mode: 0o600 });
  try {
    for (const [i, me, other] of [[1, a, b], [2, b, a]] as const) {
      sh(`ip -n ${me.ns} addr add ${V4[i]}/24 dev ${me.ifname}`);
      sh(`ip -n ${me.ns} addr add ${V6[i]}/112 dev ${me.ifname} nodad`);
      const o = 3 - i;
      wg(
        me,
        `listen-port ${me.port} peer ${other.pub} preshared-key ${psk} allowed-ips ${V4[o]}/32,${V6[o]}/128`,
        true,
      );
      sh(`ip -n ${me.ns} link set ${me.ifname} up`);
    }
  } finally {
    rmSync(psk, { force: true });
  }
}

for (const impls of PAIRINGS) {
  Deno.test({
    name: `netns scenarios: ${impls[0]} (side 1) ↔ ${impls[1]} (side 2)`,
    ignore: skip !== null,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async (ctx) => {
      const lab = new Lab();
      const throughput: string[] = [];
      try {
        const t = tag();
        const [s1, s2, ns0] = await loopbackTopology(lab, impls, t);
        wg(s1, `peer ${s2.pub} endpoint 127.0.0.1:${s2.port}`);
        wg(s2, `peer ${s1.pub} endpoint 127.0.0.1:${s1.port}`);

        await ctx.step("interface counters count the first pings", async () => {
          await ping(s2.ns, V4[1]!);
          const c = linkStats(s2);
          assert.ok(c.rx >= 840 && c.rx < 2500, `side 2 received ${c.rx} bytes for 10 pings`);
          assert.ok(c.tx >= 840 && c.tx < 2500, `side 2 sent ${c.tx} bytes for 10 pings`);
        });

        const traffic = async (outer: string, mtu: number) => {
          const label = `${outer} outer, MTU ${mtu}`;
          for (const [from, i] of [[s2, 1], [s1, 2]] as const) {
            if (mtu === ORIG_MTU) {
              await ping(from.ns, V4[i]!);
              await ping(from.ns, V6[i]!);
            } else {
              // As large as the MTU allows, with fragmentation forbidden, so the big packet really crosses.
              await ping(from.ns, V4[i]!, `-c 3 -i 0.2 -W 2 -M do -s ${mtu - 28}`);
              await ping(from.ns, V6[i]!, `-c 3 -i 0.2 -W 2 -M do -s ${mtu - 48}`);
            }
          }
          const tcp4 = await iperf(s1.ns, s2.ns, V4[2]!, false);
          const tcp6 = await iperf(s2.ns, s1.ns, V6[1]!, false);
          const udp4 = await iperf(s2.ns, s1.ns, V4[1]!, true);
          const udp6 = await iperf(s1.ns, s2.ns, V6[2]!, true);
          for (const r of [tcp4, tcp6, udp4, udp6]) assert.ok(r.mbps > 0, `iperf3 moved data (${label})`);
          throughput.push(
            `${label}: TCP v4 1→2 ${tcp4.mbps.toFixed(0)}, TCP v6 2→1 ${tcp6.mbps.toFixed(0)}, ` +
              `UDP v4 2→1 ${udp4.mbps.toFixed(0)} (${udp4.lostPercent!.toFixed(1)}% lost), ` +
              `UDP v6 1→2 ${udp6.mbps.toFixed(0)} (${udp6.lostPercent!.toFixed(1)}% lost) Mbit/s`,
          );
        };
        const setMtu = (mtu: number) => {
          for (const s of [s1, s2]) sh(`ip -n ${s.ns} link set ${s.ifname} mtu ${mtu}`);
        };

        for (const outer of ["IPv4", "IPv6"]) {
          await ctx.step(`ping, TCP and UDP over IPv4 and IPv6, ${outer} outer`, async () => {
            if (outer === "IPv6") {
              wg(s1, `peer ${s2.pub} endpoint [::1]:${s2.port}`);
              wg(s2, `peer ${s1.pub} endpoint [::1]:${s1.port}`);
            }
            await traffic(outer, ORIG_MTU);
          });
          await ctx.step(`MTU ${BIG_MTU}: big pings both ways, TCP and UDP, ${outer} outer`, async () => {
            setMtu(BIG_MTU);
            try {
              await traffic(outer, BIG_MTU);
            } finally {
              setMtu(ORIG_MTU);
            }
          });
        }

        await ctx.step("interface counters grew with the traffic", () => {
          for (const s of [s1, s2]) {
            const c = linkStats(s);
            assert.ok(c.rx > 10_000_000 && c.tx > 10_000_000, `${s.ifname} counters ${JSON.stringify(c)}`);
          }
        });

        await ctx.step("roaming: side 1's outer IPv4 address and port change, side 2 follows", async () => {
          sh(`ip -n ${ns0} -4 addr del 127.0.0.1/8 dev lo`);
          sh(`ip -n ${ns0} -4 addr add 127.212.121.99/8 dev lo`);
          wg(s1, `listen-port 9999`);
          wg(s1, `peer ${s2.pub} endpoint 127.0.0.1:${s2.port}`);
          await ping(s1.ns, V6[2]!, "-c 1 -W 1");
          assert.equal(endpoints(s2), `${s1.pub}\t127.212.121.99:9999`);
        });

        await ctx.step("roaming: side 1 moves to IPv6 and another port, side 2 follows", async () => {
          wg(s1, `listen-port 9998`);
          wg(s1, `peer ${s2.pub} endpoint [::1]:${s2.port}`);
          await ping(s1.ns, V4[2]!, "-c 1 -W 1");
          assert.equal(endpoints(s2), `${s1.pub}\t[::1]:9998`);
        });

        await ctx.step(
          "cryptokey routing filter: a more specific allowed IP on another peer wins",
          async () => {
            wg(s1, `peer ${s2.pub} allowed-ips 192.168.241.0/24`);
            const send = () => inNs(s2.ns, `echo X | ncat -u --send-only ${V4[1]} 1111`);
            let l = await udpListener(s1.ns, 1111);
            send();
            assert.ok(await received(l.got, "X", 1000), "side 2's packet arrives while it owns the /24");
            l.child.kill();

            const moreSpecific = wgKeys().pub;
            wg(s1, `peer ${moreSpecific} allowed-ips ${V4[2]}/32`);
            wg(s2, `listen-port 9997`);
            l = await udpListener(s1.ns, 1111);
            send();
            assert.equal(
              await received(l.got, "X", 1000),
              false,
              "side 2's packet is dropped: its source is not its own",
            );
            wg(s1, `peer ${moreSpecific} remove`);
            // The dropped packet was still authenticated, so side 1 learnt side 2's new port from it.
            assert.equal(endpoints(s1), `${s2.pub}\t[::1]:9997`);
            send();
            assert.ok(
              await received(l.got, "X", 1000),
              "with that peer removed, side 2's packets flow again",
            );
            l.child.kill();
          },
        );
      } finally {
        lab.cleanup();
        if (throughput.length) console.log(`iperf3 ${impls[0]} ↔ ${impls[1]}:\n  ${throughput.join("\n  ")}`);
      }
    },
  });

  Deno.test({
    name: `netns scenarios: NAT with persistent keepalive, ${impls[0]} behind it ↔ ${impls[1]}`,
    ignore: skip !== null,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const lab = new Lab();
      try {
        const t = tag();
        // ns1 (side 1) → ns0 (a router that SNATs 192.168.1.0/24 to 10.0.0.1) → ns2 (side 2).
        const ns0 = lab.ns(`nat0${t}`);
        const sides = [1, 2].map((i): Side => {
          const k = wgKeys();
          return {
            ns: lab.ns(`nat${i}${t}`),
            ifname: `nt${i}${t}`,
            priv: k.priv,
            pub: k.pub,
            port: i * 10000,
          };
        }) as [Side, Side];
        const [s1, s2] = sides;
        for (const [i, side] of sides.entries()) {
          await lab.daemon(side.ifname, side.ns, env(impls[i]!), command(impls[i]!));
        }
        configurePeers(sides);
        sh(`ip -n ${ns0} link add rc${t} type veth peer name c${t} netns ${s1.ns}`);
        sh(`ip -n ${ns0} link add rs${t} type veth peer name s${t} netns ${s2.ns}`);
        sh(`ip -n ${ns0} addr add 192.168.1.1/24 dev rc${t} && ip -n ${ns0} link set rc${t} up`);
        sh(`ip -n ${ns0} addr add 10.0.0.1/24 dev rs${t} && ip -n ${ns0} link set rs${t} up`);
        sh(`ip -n ${s1.ns} addr add 192.168.1.100/24 dev c${t} && ip -n ${s1.ns} link set c${t} up`);
        sh(`ip -n ${s1.ns} route add default via 192.168.1.1`);
        sh(`ip -n ${s2.ns} addr add 10.0.0.100/24 dev s${t} && ip -n ${s2.ns} link set s${t} up`);
        inNs(ns0, "echo 1 > /proc/sys/net/ipv4/ip_forward");
        inNs(ns0, "iptables -t nat -A POSTROUTING -s 192.168.1.0/24 -d 10.0.0.0/24 -j SNAT --to 10.0.0.1");
        // Conntrack forgets an idle UDP mapping after 2 s: only the keepalive keeps the path open.
        inNs(ns0, "echo 2 > /proc/sys/net/netfilter/nf_conntrack_udp_timeout");
        inNs(ns0, "echo 2 > /proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream");

        wg(s1, `peer ${s2.pub} endpoint 10.0.0.100:${s2.port} persistent-keepalive 1`);
        await ping(s1.ns, V4[2]!, "-c 1 -W 1");
        await ping(s2.ns, V4[1]!, "-c 1 -W 1");
        assert.equal(endpoints(s2), `${s1.pub}\t10.0.0.1:${s1.port}`, "side 2 sees side 1 behind the NAT");
        // Longer than the conntrack timeout: without the keepalive, side 2 could no longer reach side 1.
        await sleep(3000);
        inNs(s2.ns, `ping -c 1 -W 1 ${V4[1]}`);
      } finally {
        lab.cleanup();
      }
    },
  });
}
