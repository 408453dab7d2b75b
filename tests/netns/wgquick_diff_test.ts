/**
 * The differential test of `typetun up`/`down` against the current wg-quick (wireguard-tools v1.0.20260223,
 * ../shared/tools/wireguard-tools/wg-quick, or WG_QUICK): for each config, the real script brings it up in one
 * namespace (with typetun as its WG_QUICK_USERSPACE_IMPLEMENTATION, and the current wg), `typetun up` in an
 * identical other one; then both leave the same addresses, links, routes in every table, rules, nftables
 * ruleset, iptables rules, src_valid_mark, hook side effects, `wg showconf`, and ran the same steps in the same
 * order. After `down` both are back to where they started. Only what must differ is normalized: the interface
 * name (the UAPI socket directory is shared between namespaces, so the two need different names), interface
 * indexes and the kernel's random IPv6 link-local addresses. No resolvconf is installed here: wg-quick then
 * fails at DNS and undoes everything, and so must typetun.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import process from "node:process";
import { cannotRun, type Lab, labTest, sh, tag, typetunCommand } from "./_lab.ts";

const WG_QUICK = process.env.WG_QUICK ??
  new URL("../../../shared/tools/wireguard-tools/wg-quick", import.meta.url).pathname;
const TOOLS = WG_QUICK.slice(0, WG_QUICK.lastIndexOf("/"));

const skip = cannotRun("bash", "nft", "iptables-save", "ip6tables-save", "sysctl") ??
  (existsSync(WG_QUICK) && existsSync(`${TOOLS}/wg`)
    ? null
    : `needs the current wg-quick and wg (${WG_QUICK})`);
if (skip) console.log(`wg-quick differential tests skipped: ${skip}`);

/** A config, written with `IF` for the interface name and `DIR` for the test's directory. */
interface Case {
  name: string;
  conf: string;
  /** Both must fail (and leave nothing behind). */
  fails?: boolean;
  /** Hide nft from both (PATH without it): wg-quick then uses iptables-restore. */
  noNft?: boolean;
  /** Take down crosswise: typetun down what wg-quick brought up, and wg-quick down what typetun did. */
  crossDown?: boolean;
  /** Extra underlay setup, run in both namespaces. */
  setup?: string[];
  /** The file is readable by others (its directory is): both warn, naming it. */
  worldReadable?: boolean;
  /** SaveConfig: the files both wrote back on down say the same (line order aside). */
  saves?: boolean;
  /** What the user sees after up, beyond both being equal: a pattern per snapshot part. */
  expect?: Record<string, RegExp>;
}

const KEY = "GHuMjRHZqbsZrb2gYJwYJpl6G8Y3m1KymphZ6iP0rX4=";
const PEER = ["xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=", "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="];
const PEER3 = "gN65BkIKy1eCE9pP1wdc8ROUtkHLF2PfAqYdyYBz6EA=";
const HOOKS = `PreUp = echo "pre %i $(ip -o link show dev %i | wc -l) # kept" >> DIR/hooks-%i
PostUp = echo "post %i" >> DIR/hooks-%i # a comment for the shell
PreDown = echo "predown %i a#b" >> DIR/hooks-%i
PostDown = echo "postdown %i $(ip -o link show dev %i 2>/dev/null | wc -l)" >> DIR/hooks-%i`;

const CASES: Case[] = [
  {
    name: "plain addresses and routes, from a file others can read",
    worldReadable: true,
    conf: `[Interface]
PrivateKey = ${KEY}
ListenPort = 51901
Address = 10.70.0.1/24, fd70::1/64
Address = 10.71.0.1

[Peer]
PublicKey = ${PEER[0]}
AllowedIPs = 10.70.0.0/24, 10.80.0.0/16, fd80::/48, 10.81.1.1/32
Endpoint = 192.168.50.2:51820
PersistentKeepalive = 25

[Peer]
PublicKey = ${PEER[1]}
AllowedIPs = 10.82.0.0/24
`,
  },
  {
    name: "default route, IPv4 and IPv6 (policy rules, nftables)",
    expect: {
      rules4:
        /32764:\tfrom all lookup main suppress_prefixlength 0\n32765:\tnot from all fwmark 0xca6c lookup 51820\n/,
      rules6: /not from all fwmark 0xca6c lookup 51820/,
      nft: /table ip6 wg-quick-IF [^]*ip6 daddr fe80::LL[^]*table ip wg-quick-IF /,
      sysctl: /src_valid_mark = 1/,
    },
    conf: `[Interface]
PrivateKey = ${KEY}
ListenPort = 51902
Address = 10.70.0.1/24, fd70::1/64

[Peer]
PublicKey = ${PEER[0]}
AllowedIPs = 0.0.0.0/0, ::/0
Endpoint = 192.168.50.2:51820
`,
  },
  {
    name: "default route, taken down crosswise (typetun down after wg-quick up, and back)",
    crossDown: true,
    conf: `[Interface]
PrivateKey = ${KEY}
ListenPort = 51915
Address = 10.70.0.1/24, fd70::1/64

[Peer]
PublicKey = ${PEER[0]}
AllowedIPs = 0.0.0.0/0, ::/0
Endpoint = 192.168.50.2:51820
`,
  },
  {
    name: "default route: table 51820 taken, src_valid_mark already 1, IPv4 only",
    setup: ["ip route add 10.99.0.0/24 dev u0 table 51820", "sysctl -q net.ipv4.conf.all.src_valid_mark=1"],
    conf: `[Interface]
PrivateKey = ${KEY}
ListenPort = 51917
Address = 10.70.0.1/24

[Peer]
PublicKey = ${PEER[0]}
AllowedIPs = 0.0.0.0/0
Endpoint = 192.168.50.2:51820
`,
    // The next free table is the fwmark; no sysctl step (both print the same steps, checked above).
    expect: { rules4: /not from all fwmark 0xca6d lookup 51821/, showconf: /FwMark = 0xca6d/ },
  },
  {
    name: "a PostUp hook fails halfway (set -e): both undo everything, default route included",
    fails: true,
    conf: `[Interface]
PrivateKey = ${KEY}
ListenPort = 51916
Address = 10.70.0.1/24, fd70::1/64
PostUp = echo "first %i" >> DIR/hooks-%i; false; echo "after false %i" >> DIR/hooks-%i

[Peer]
PublicKey = ${PEER[0]}
AllowedIPs = 0.0.0.0/0, ::/0
Endpoint = 192.168.50.2:51820
`,
    expect: { hooks: /^first IF\n$/ },
  },
  {
    name: "default route without nft (iptables-restore)",
    expect: { iptables: /-A PREROUTING -d 10\.70\.0\.1\/32 ! -i IF .*"wg-quick\(8\) rule for IF" -j DROP/ },
    noNft: true,
    crossDown: true,
    conf: `[Interface]
PrivateKey = ${KEY}
ListenPort = 51903
Address = 10.70.0.1/24, fd70::1/64

[Peer]
PublicKey = ${PEER[0]}
AllowedIPs = 0.0.0.0/0, ::/0, 10.90.0.0/24
Endpoint = 192.168.50.2:51820
`,
  },
  {
    name: "Table = off",
    conf: `[Interface]
PrivateKey = ${KEY}
ListenPort = 51904
Address = 10.70.0.1/24
Table = off

[Peer]
PublicKey = ${PEER[0]}
AllowedIPs = 0.0.0.0/0, 10.80.0.0/16
Endpoint = 192.168.50.2:51820
`,
  },
  {
    name: "Table = 1234",
    conf: `[Interface]
PrivateKey = ${KEY}
ListenPort = 51905
Address = 10.70.0.1/24, fd70::1/64
Table = 1234

[Peer]
PublicKey = ${PEER[0]}
AllowedIPs = 0.0.0.0/0, ::/0, 10.70.0.0/24, 10.80.0.0/16
Endpoint = 192.168.50.2:51820
`,
  },
  {
    name: "Table = main",
    conf: `[Interface]
PrivateKey = ${KEY}
ListenPort = 51906
Address = 10.70.0.1/24
Table = main

[Peer]
PublicKey = ${PEER[0]}
AllowedIPs = 10.80.0.0/16, 10.81.0.0/24
`,
  },
  {
    name: "explicit MTU, FwMark, and hooks with # (PreUp sees the interface)",
    // The PreUp line counted the interface, and its `#` reached the shell inside the quotes.
    expect: { hooks: /^pre IF 1 # kept\npost IF\n$/, links: /IF: .* mtu 1280 /, showconf: /FwMark = 0x1234/ },
    conf: `[Interface]
PrivateKey = ${KEY}
ListenPort = 51907
FwMark = 0x1234
Address = 10.70.0.1/24
MTU = 1280
${HOOKS}

[Peer]
PublicKey = ${PEER[0]}
AllowedIPs = 10.80.0.0/16
Endpoint = 192.168.50.2:51820
`,
  },
  {
    name: "PreUp sets the private key and adds a peer; addconf keeps them",
    expect: {
      showconf: new RegExp(`PrivateKey = ${KEY.replaceAll("+", "\\+")}[^]*${PEER3.replaceAll("+", "\\+")}`),
    },
    conf: `[Interface]
ListenPort = 51908
Address = 10.70.0.1/24
PreUp = wg set %i private-key DIR/key peer ${PEER3} allowed-ips 10.85.0.0/24

[Peer]
PublicKey = ${PEER[0]}
AllowedIPs = 10.80.0.0/16
`,
  },
  {
    name: "automatic MTU: the smallest of several endpoint routes",
    // 1500 (u0), 1400 (w0), 1380 (a route's mtu): 1380 - 80.
    expect: { links: /IF: .* mtu 1300 / },
    setup: [
      "ip link add w0 type veth peer name w1",
      "ip link set w0 mtu 1400 && ip link set w1 mtu 1400",
      "ip addr add 192.168.60.1/24 dev w0 && ip link set w0 up && ip link set w1 up",
      "ip route add 198.51.100.0/24 dev u0 mtu 1380",
      "ip route add 203.0.113.0/24 dev u0 mtu lock 1300",
    ],
    conf: `[Interface]
PrivateKey = ${KEY}
ListenPort = 51909
Address = 10.70.0.1/24

[Peer]
PublicKey = ${PEER[0]}
AllowedIPs = 10.80.0.0/16
Endpoint = 192.168.50.2:51820

[Peer]
PublicKey = ${PEER[1]}
AllowedIPs = 10.81.0.0/16
Endpoint = 192.168.60.2:51820

[Peer]
PublicKey = ${PEER3}
AllowedIPs = 10.82.0.0/16
Endpoint = 198.51.100.7:51820
`,
  },
  {
    name: "automatic MTU: a locked route MTU reads as its device's (as wg-quick's regex does)",
    expect: { links: /IF: .* mtu 1420 / },
    setup: ["ip route add 203.0.113.0/24 dev u0 mtu lock 1300"],
    conf: `[Interface]
PrivateKey = ${KEY}
ListenPort = 51910
Address = 10.70.0.1/24

[Peer]
PublicKey = ${PEER[0]}
AllowedIPs = 10.80.0.0/16
Endpoint = 203.0.113.9:51820
`,
  },
  {
    name: "automatic MTU: no endpoint, the default route's",
    expect: { links: /IF: .* mtu 1360 / },
    setup: ["ip route add default dev u0 mtu 1440"],
    conf: `[Interface]
PrivateKey = ${KEY}
ListenPort = 51911
Address = 10.70.0.1/24

[Peer]
PublicKey = ${PEER[0]}
AllowedIPs = 10.80.0.0/16
`,
  },
  {
    name: "DNS without resolvconf: both fail and undo everything",
    fails: true,
    conf: `[Interface]
PrivateKey = ${KEY}
ListenPort = 51912
Address = 10.70.0.1/24
DNS = 10.70.0.53, example.com
${HOOKS}

[Peer]
PublicKey = ${PEER[0]}
AllowedIPs = 0.0.0.0/0
Endpoint = 192.168.50.2:51820
`,
  },
  {
    name: "SaveConfig: down writes the running configuration back, a peer added at run time too",
    saves: true,
    conf: `[Interface]
PrivateKey = ${KEY}
ListenPort = 51914
Address = 10.70.0.1/24, fd70::1/64
MTU = 1400
Table = 1234
SaveConfig = true
PostUp = wg set %i peer ${PEER3} allowed-ips 10.85.0.0/24 persistent-keepalive 15
PostDown = echo "postdown %i" >> DIR/hooks-%i

[Peer]
PublicKey = ${PEER[0]}
AllowedIPs = 10.80.0.0/16
Endpoint = 192.168.50.2:51820
`,
  },
  {
    name: "DNS with only a search domain sets nothing (wg-quick needs a server)",
    conf: `[Interface]
PrivateKey = ${KEY}
ListenPort = 51913
Address = 10.70.0.1/24
DNS = example.com

[Peer]
PublicKey = ${PEER[0]}
AllowedIPs = 10.80.0.0/16
`,
  },
];

/** The same underlay in each namespace: a veth pair (u0 ↔ u1) with addresses, as an uplink. */
function underlay(ns: string, extra: string[]): void {
  for (
    const cmd of [
      // No duplicate address detection: link-local addresses are not "tentative" in one listing and not the next.
      "sysctl -q net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0",
      "ip link add u0 type veth peer name u1",
      "ip addr add 192.168.50.1/24 dev u0 && ip addr add fd50::1/64 dev u0 nodad",
      "ip link set u0 up && ip link set u1 up",
      // A fresh namespace starts at 0; both sides then start alike.
      "sysctl -q net.ipv4.conf.all.src_valid_mark=0",
      ...extra,
    ]
  ) sh(`ip netns exec ${ns} sh -c '${cmd}'`);
}

/** What a namespace looks like, with the interface name as IF and the random parts normalized. */
function snapshot(ns: string, ifname: string, dir: string): Record<string, string> {
  const run = (cmd: string) =>
    spawnSync("ip", ["netns", "exec", ns, "sh", "-c", cmd], { encoding: "utf8", timeout: 30_000 }).stdout ??
      "";
  const norm = (s: string) =>
    s.replaceAll(ifname, "IF")
      .replace(/fe80::[0-9a-f:]+/g, "fe80::LL")
      .replace(/^\d+: /gm, "N: ")
      .replace(/@if\d+/g, "@ifN")
      .replace(/^# .*\n/gm, "")
      .replace(/\[\d+:\d+\]/g, "[0:0]")
      .replace(/counter packets \d+ bytes \d+/g, "counter");
  const sorted = (s: string) => s.split("\n").filter((l) => l).sort().join("\n");
  const hooks = `${dir}/hooks-${ifname}`;
  return {
    addresses: norm(run("ip -o address show")),
    links: norm(run("ip -o link show")).replace(/link\/ether \S+ brd \S+/g, "link/ether MAC"),
    routes4: sorted(norm(run("ip -4 route show table all"))),
    routes6: sorted(norm(run("ip -6 route show table all"))),
    rules4: norm(run("ip -4 rule show")),
    rules6: norm(run("ip -6 rule show")),
    nft: norm(run("nft list ruleset")),
    iptables: norm(run("iptables-save")),
    ip6tables: norm(run("ip6tables-save")),
    sysctl: norm(run("sysctl net.ipv4.conf.all.src_valid_mark net.ipv4.ip_forward")),
    hooks: existsSync(hooks) ? norm(readFileSync(hooks, "utf8")) : "",
    showconf: run(`${TOOLS}/wg showconf ${ifname} 2>/dev/null`),
  };
}

/**
 * The `[#]` steps a run printed, in order, in one spelling: typetun's own commands as wg's, a script on
 * standard input as on a /dev/fd, the implementation as `typetun`; wg-quick's attempt at the kernel module
 * (and its notice) goes; an address wg-quick passes on without a prefix length is printed with /32 or /128.
 */
function steps(stderr: string, ifname: string, conf: string): string[] {
  return stderr.split("\n")
    .filter((l) => (l.startsWith("[#] ") || l.startsWith("Warning: `")) && !l.includes("type wireguard"))
    .map((l) =>
      l.replaceAll(conf, "CONF").replaceAll(ifname, "IF")
        .replace(/^\[#\] \S*typetun-impl /, "[#] typetun ")
        .replace(/^\[#\] typetun (addconf|set|showconf) /, "[#] wg $1 ")
        .replace(/\/dev\/fd\/\d+/g, "-")
        .replace(/^\[#\] wg addconf IF \S+$/, "[#] wg addconf IF -")
        .replace(/^(\[#\] ip -[46] address add [^/ ]+)\/(32|128) /, "$1 ")
        .replace(/^\[#\] wg showconf IF > CONF$/, "[#] wg showconf IF")
    );
}

function diff(
  what: string,
  a: Record<string, string>,
  b: Record<string, string>,
  expected = "wg-quick's",
  actual = "typetun's",
): void {
  for (const k of Object.keys(a)) {
    assert.equal(b[k], a[k], `${what}: ${k} differs (expected: ${expected}, actual: ${actual})`);
  }
}

for (const c of CASES) {
  labTest(`wg-quick vs typetun up/down: ${c.name}`, skip, (lab: Lab) => {
    const t = tag();
    const dir = mkdtempSync("/tmp/typetun-wqdiff-");
    // Names of one length, so that columns line up alike in every listing.
    const side = { a: { ns: `wqa${t}`, ifname: `wqa${t}` }, b: { ns: `wqb${t}`, ifname: `wqb${t}` } };
    try {
      writeFileSync(`${dir}/key`, `${KEY}\n`, { mode: 0o600 });
      // wg-quick runs the implementation by name, as it runs wireguard-go: a wrapper that starts typetun.
      const impl = `${dir}/typetun-impl`;
      writeFileSync(impl, `#!/bin/sh\nexec ${typetunCommand().map((a) => `'${a}'`).join(" ")} "$@"\n`, {
        mode: 0o755,
      });
      let path = process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin";
      if (c.noNft) {
        // Every tool but nft.
        const bin = `${dir}/bin`;
        mkdirSync(bin);
        for (const d of ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]) {
          if (!existsSync(d)) continue;
          for (const f of readdirSync(d)) {
            if (f !== "nft" && !existsSync(`${bin}/${f}`)) symlinkSync(`${d}/${f}`, `${bin}/${f}`);
          }
        }
        path = bin;
      }
      // Hooks call `wg`: the current one on both sides, as wg-quick puts its own directory first.
      path = `${TOOLS}:${path}`;
      const conf = { a: "", b: "" };
      for (const s of ["a", "b"] as const) {
        lab.ns(side[s].ns);
        underlay(side[s].ns, c.setup ?? []);
        mkdirSync(`${dir}/${s}`);
        conf[s] = `${dir}/${s}/${side[s].ifname}.conf`;
        writeFileSync(conf[s], c.conf.replaceAll("DIR", dir), { mode: c.worldReadable ? 0o644 : 0o600 });
        lab.sockets.push(`/var/run/wireguard/${side[s].ifname}.sock`);
      }
      const before = {
        a: snapshot(side.a.ns, side.a.ifname, dir),
        b: snapshot(side.b.ns, side.b.ifname, dir),
      };
      diff("before", before.a, before.b);

      const wgQuick = (s: "a" | "b", verb: string) =>
        spawnSync("ip", ["netns", "exec", side[s].ns, "bash", WG_QUICK, verb, conf[s]], {
          encoding: "utf8",
          timeout: 60_000,
          // The daemon goes to the background with its output closed: pipes end when wg-quick does.
          env: { ...process.env, PATH: path, WG_QUICK_USERSPACE_IMPLEMENTATION: impl },
        });
      const typetun = (s: "a" | "b", verb: string) =>
        spawnSync("ip", ["netns", "exec", side[s].ns, ...typetunCommand(), verb, conf[s]], {
          encoding: "utf8",
          timeout: 60_000,
          env: { ...process.env, PATH: path },
        });

      const upA = wgQuick("a", "up"), upB = typetun("b", "up");
      const log = `wg-quick:\n${upA.stderr}\ntypetun:\n${upB.stderr}`;
      assert.equal(upB.status !== 0, upA.status !== 0, `exit status ${upA.status} vs ${upB.status}\n${log}`);
      assert.equal(upA.status !== 0, c.fails === true, log);
      if (c.worldReadable) assert.match(upB.stderr, /Warning: `.*' is world accessible/);
      assert.deepEqual(
        steps(upB.stderr, side.b.ifname, conf.b),
        steps(upA.stderr, side.a.ifname, conf.a),
        `up: the same steps in the same order\n${log}`,
      );
      const upped = {
        a: snapshot(side.a.ns, side.a.ifname, dir),
        b: snapshot(side.b.ns, side.b.ifname, dir),
      };
      diff("after up", upped.a, upped.b);
      for (const [k, re] of Object.entries(c.expect ?? {})) assert.match(upped.b[k]!, re, k);
      if (c.fails) {
        // Nothing stays but src_valid_mark (wg-quick never puts it back) and what the PreUp hook wrote.
        for (const s of ["a", "b"] as const) {
          const ignore = { sysctl: "", hooks: "" };
          diff(
            "after a failed up",
            { ...before[s], ...ignore },
            { ...upped[s], ...ignore },
            "before",
            "after",
          );
        }
        return;
      }
      assert.notEqual(upped.b.showconf, "", "the interface is up");

      const downA = c.crossDown ? typetun("a", "down") : wgQuick("a", "down");
      const downB = c.crossDown ? wgQuick("b", "down") : typetun("b", "down");
      const downLog = `a:\n${downA.stderr}\nb:\n${downB.stderr}`;
      assert.equal(downA.status, 0, downLog);
      assert.equal(downB.status, 0, downLog);
      if (!c.crossDown) {
        assert.deepEqual(
          steps(downB.stderr, side.b.ifname, conf.b),
          steps(downA.stderr, side.a.ifname, conf.a),
          `down: the same steps in the same order\n${downLog}`,
        );
      }
      const after = {
        a: snapshot(side.a.ns, side.a.ifname, dir),
        b: snapshot(side.b.ns, side.b.ifname, dir),
      };
      diff("after down", after.a, after.b);
      if (c.saves) {
        // wg-quick also saves the TUN's own IPv6 link-local address (from `ip -brief address`); typetun not.
        const saved = (s: "a" | "b") =>
          readFileSync(conf[s], "utf8").replaceAll(side[s].ifname, "IF").split("\n")
            .filter((l) => l.trim() && !/^Address = fe80:/.test(l)).map((l) => l.trim()).sort().join("\n");
        assert.equal(
          saved("b"),
          saved("a"),
          `${readFileSync(conf.a, "utf8")}\n${readFileSync(conf.b, "utf8")}`,
        );
        assert.match(saved("b"), new RegExp(PEER3.replaceAll("+", "\\+")));
      }
      // Everything is gone again; src_valid_mark stays as wg-quick leaves it, and the hooks wrote their lines.
      for (const s of ["a", "b"] as const) {
        // iptables leaves its tables behind, empty: wg-quick's rules are what must be gone.
        const fw: Record<string, string> = c.noNft ? { nft: "", iptables: "", ip6tables: "" } : {};
        const ignore = { sysctl: "", hooks: "", ...fw };
        diff(
          "down undid up",
          { ...before[s], ...ignore },
          { ...after[s], ...ignore },
          "before up",
          "after down",
        );
        assert.doesNotMatch(after[s].nft + after[s].iptables + after[s].ip6tables, /wg-quick|IF/);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
      for (const s of ["a", "b"] as const) rmSync(`/var/run/typetun/${side[s].ifname}.json`, { force: true });
    }
  });
}
