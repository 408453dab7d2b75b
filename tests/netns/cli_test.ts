/**
 * typetun's own `show`, `showconf`, `set`, `setconf`, `addconf` and `syncconf` against the stock `wg` (root):
 * on a typetun daemon and on a wireguard-go daemon, the same commands must print the same bytes and leave the
 * interface in the same state. Also `show all`, `show interfaces`, and the errors for unknown interfaces.
 *
 * Two things make a plain byte comparison unfair, and are handled here: wireguard-go answers a get with its
 * peers in random order (a Go map), so against it the peers are compared as a set; and "N seconds ago" moves
 * on, so a comparison is retried until `wg` prints the same thing before and after typetun did. Other tests
 * may run daemons at the same time: the listings are compared on this test's interfaces only.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import process from "node:process";
import { cannotRun, inNs, Lab, sh, tag, typetunCommand, wgKeys, wgSet } from "./_lab.ts";

const skip = cannotRun("wg", "wireguard-go", "ping");
if (skip) console.log(`CLI namespace tests skipped: ${skip}`);
const opts = { ignore: skip !== null, sanitizeOps: false, sanitizeResources: false };

interface Run {
  stdout: string;
  stderr: string;
  status: number | null;
}

function run(cmd: string[], env: Record<string, string> = {}): Run {
  const r = spawnSync(cmd[0]!, cmd.slice(1), {
    encoding: "utf8",
    timeout: 60_000,
    env: { ...process.env, WG_COLOR_MODE: "never", WG_HIDE_KEYS: "", ...env },
  });
  return { stdout: r.stdout, stderr: r.stderr, status: r.status };
}

const typetun = (args: string[], env?: Record<string, string>) => run([...typetunCommand(), ...args], env);
const wg = (args: string[], env?: Record<string, string>) => run(["wg", ...args], env);

type Daemon = "typetun" | "wireguard-go";
const DAEMONS: Daemon[] = ["typetun", "wireguard-go"];

function start(lab: Lab, ifname: string, ns: string, daemon: Daemon) {
  return lab.daemon(
    ifname,
    ns,
    { LOG_LEVEL: "error" },
    daemon === "typetun" ? typetunCommand() : ["wireguard-go"],
  );
}

/**
 * Output with peers in a canonical order, for wireguard-go, whose order changes from one get to the next:
 * blank-line-separated blocks after the first (pretty show, showconf) or lines (fields, dump) are sorted.
 */
function canonical(out: string, daemon: Daemon): string {
  if (daemon === "typetun") return out;
  if (out.includes("\n\n")) {
    const [head, ...blocks] = out.replace(/\n$/, "").split("\n\n");
    return [head, ...blocks.sort()].join("\n\n") + "\n";
  }
  return out.split("\n").sort().join("\n");
}

/** typetun's output equals wg's, retried while wg's own output changes between two calls. */
function sameAsWg(args: string[], daemon: Daemon, env: Record<string, string> = {}): string {
  for (let attempt = 0;; attempt++) {
    const before = wg(args, env), ours = typetun(args, env), after = wg(args, env);
    assert.equal(before.status, 0, `wg ${args.join(" ")}: ${before.stderr}`);
    const w = canonical(before.stdout, daemon);
    if (w !== canonical(after.stdout, daemon) && attempt < 5) continue;
    assert.equal(ours.stderr, "", `typetun ${args.join(" ")} wrote to stderr`);
    assert.equal(ours.status, 0);
    assert.equal(canonical(ours.stdout, daemon), w, `typetun ${args.join(" ")} (${JSON.stringify(env)})`);
    return ours.stdout;
  }
}

const FIELDS = [
  "public-key",
  "private-key",
  "listen-port",
  "fwmark",
  "peers",
  "preshared-keys",
  "endpoints",
  "allowed-ips",
  "latest-handshakes",
  "transfer",
  "persistent-keepalive",
  "dump",
];

for (const daemon of DAEMONS) {
  Deno.test({
    name: `cli: show, its fields, dump and showconf print what wg prints (${daemon} daemon)`,
    ...opts,
    fn: async () => {
      const lab = new Lab();
      const dir = mkdtempSync("/tmp/typetun-cli-");
      try {
        const t = tag();
        const ns1 = lab.ns(`tc1${t}`), ns2 = lab.ns(`tc2${t}`);
        lab.veth(ns1, ns2, ["192.168.243.1", "fd00:243::1"], ["192.168.243.2", "fd00:243::2"]);
        const a = `tca${t}`, b = `tcb${t}`;
        await start(lab, a, ns1, daemon);
        await start(lab, b, ns2, "typetun");
        const ka = wgKeys(), kb = wgKeys(), k3 = wgKeys(), k4 = wgKeys();
        const psk = `${dir}/psk`;
        writeFileSync(psk, sh("wg genpsk"), { mode: 0o600 });
        wgSet(
          a,
          ka.priv,
          `listen-port 52101 fwmark 0x2a peer ${kb.pub} preshared-key ${psk} endpoint 192.168.243.2:52102 ` +
            `allowed-ips 10.243.0.2/32,fd10:243::2/128 ` +
            // An IPv4-compatible address: glibc's inet_ntop prints it as ::10.0.0.1, and so must we.
            `peer ${k3.pub} endpoint [2001:db8::1]:51820 persistent-keepalive 3725 allowed-ips ::a00:1/128,10.9.0.0/16 ` +
            `peer ${k4.pub}`,
        );
        wgSet(b, kb.priv, `listen-port 52102 peer ${ka.pub} preshared-key ${psk} allowed-ips 10.243.0.1/32`);
        for (const [ns, dev, n] of [[ns1, a, 1], [ns2, b, 2]] as const) {
          sh(`ip -n ${ns} addr add 10.243.0.${n}/24 dev ${dev} && ip -n ${ns} link set ${dev} up`);
        }
        // A handshake and some traffic, so that "latest handshake" and "transfer" are printed too.
        inNs(ns1, "ping -c 2 -i 0.3 -W 3 10.243.0.2");

        const pretty = sameAsWg(["show", a], daemon);
        assert.match(pretty, /latest handshake: (Now|.* ago)\n/);
        assert.match(pretty, /transfer: .* received, .* sent\n/);
        assert.match(pretty, /persistent keepalive: every 1 hour, 2 minutes, 5 seconds\n/);
        assert.match(pretty, /allowed ips: ::10\.0\.0\.1\/128, 10\.9\.0\.0\/16\n/);
        assert.match(pretty, /fwmark: 0x2a\n/);
        sameAsWg(["show", a], daemon, { WG_COLOR_MODE: "always" });
        sameAsWg(["show", a], daemon, { WG_HIDE_KEYS: "never" });
        for (const f of FIELDS) sameAsWg(["show", a, f], daemon);
        const conf = sameAsWg(["showconf", a], daemon);
        assert.match(conf, /^FwMark = 0x2a$/m);

        // --json agrees with the dump, numbers as numbers.
        const json = JSON.parse(typetun(["show", a, "--json"], { WG_HIDE_KEYS: "never" }).stdout);
        const dump = wg(["show", a, "dump"]).stdout.trim().split("\n").map((l) => l.split("\t"));
        assert.equal(json.name, a);
        assert.deepEqual([json.privateKey, json.publicKey, json.listenPort, json.fwmark], [
          dump[0]![0],
          dump[0]![1],
          52101,
          0x2a,
        ]);
        assert.equal(json.peers.length, 3);
        for (const row of dump.slice(1)) {
          const p = json.peers.find((x: { publicKey: string }) => x.publicKey === row[0]);
          assert.ok(p, `peer ${row[0]} in --json`);
          assert.equal(p.presharedKey ?? "(none)", row[1]);
          assert.equal(p.endpoint ?? "(none)", row[2]);
          assert.equal(p.allowedIps.join(",") || "(none)", row[3]);
          assert.ok(Math.abs(p.latestHandshake - Number(row[4])) <= 1);
          assert.equal(typeof p.rxBytes, "number");
          assert.equal(p.persistentKeepalive || "off", row[7] === "off" ? "off" : Number(row[7]));
        }
        const hidden = JSON.parse(typetun(["show", a, "--json"]).stdout);
        assert.equal(hidden.privateKey, "(hidden)");
      } finally {
        lab.cleanup();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  });

  Deno.test({
    name: `cli: set, setconf, addconf and syncconf change the interface as wg's do (${daemon} daemon)`,
    ...opts,
    fn: async () => {
      const lab = new Lab();
      const dir = mkdtempSync("/tmp/typetun-cli-");
      try {
        const t = tag();
        // The same daemon twice, in two namespaces so that both can use the same ports: typetun's CLI
        // configures one, wg the other, and the two must end up configured alike after every step.
        const ours = `tcs${t}`, theirs = `tcw${t}`;
        await start(lab, ours, lab.ns(`tcs${t}`), daemon);
        await start(lab, theirs, lab.ns(`tcw${t}`), daemon);
        const [k, p1, p2, p3, p4, p5] = [wgKeys(), wgKeys(), wgKeys(), wgKeys(), wgKeys(), wgKeys()];
        const file = (name: string, text: string) => {
          writeFileSync(`${dir}/${name}`, text, { mode: 0o600 });
          return `${dir}/${name}`;
        };
        const key = file("private.key", `${k.priv}\n`);
        const psk = file("psk", sh("wg genpsk"));
        const pskText = sh(`cat ${psk}`).trim();

        const step = (ourArgs: string[], wgArgs = ourArgs, status = 0) => {
          const a = typetun(ourArgs.map((x) => x === "IF" ? ours : x));
          const b = wg(wgArgs.map((x) => x === "IF" ? theirs : x));
          assert.deepEqual(
            [a.status, b.status],
            [status, status],
            `${ourArgs.join(" ")}: ${a.stderr} / ${b.stderr}`,
          );
          const conf = (ifname: string) => canonical(wg(["showconf", ifname]).stdout, daemon);
          assert.equal(conf(ours), conf(theirs), `after ${ourArgs.join(" ")}`);
          return { a, b };
        };

        step([
          "set",
          "IF",
          "listen-port",
          "52200",
          "fwmark",
          "0x10",
          "private-key",
          key,
          "peer",
          p1.pub,
          "preshared-key",
          psk,
          "endpoint",
          "192.0.2.1:51820",
          "persistent-keepalive",
          "25",
          "allowed-ips",
          "10.1.0.0/24, fd01::/64",
          "peer",
          p2.pub,
          "allowed-ips",
          "10.2.0.1",
          "endpoint",
          "[2001:db8::1]:1234",
        ]);
        step([
          "set",
          "IF",
          "peer",
          p1.pub,
          "persistent-keepalive",
          "off",
          "allowed-ips",
          "10.1.1.0/24",
          "peer",
          p2.pub,
          "remove",
        ]);
        // Host names resolve as wg resolves them; an empty allowed-ips list removes them all.
        step(["set", "IF", "peer", p1.pub, "endpoint", "localhost:5555", "allowed-ips", ""]);
        step(["set", "IF", "fwmark", "off", "private-key", "/dev/null", "peer", p3.pub]);
        // Bad arguments: the same message and status as wg, and nothing changes.
        for (
          const bad of [["foo"], ["peer", p1.pub, "fwmark", "1"], ["peer", "nope"], ["listen-port", "x"]]
        ) {
          const { a, b } = step(["set", "IF", ...bad], ["set", "IF", ...bad], 1);
          assert.equal(a.stderr, b.stderr);
        }

        const conf1 = file(
          "one.conf",
          `[Interface]\nPrivateKey = ${k.priv}\nListenPort = 52202\n\n[Peer]\nPublicKey = ${p1.pub}\n` +
            `PresharedKey = ${pskText}\nAllowedIPs = 10.1.0.0/24\nAllowedIPs = fd01::/64\n` +
            `PersistentKeepalive = 15\nEndpoint = 192.0.2.7:1\n\n[Peer]\nPublicKey = ${p4.pub}\n`,
        );
        step(["setconf", "IF", conf1]);
        const conf2 = file(
          "two.conf",
          `[Peer]\nPublicKey = ${p5.pub}\nAllowedIPs = 10.5.0.0/16\n[peer]\npublickey = ${p1.pub}\n` +
            `endpoint = 198.51.100.1:1\n`,
        );
        step(["addconf", "IF", conf2]);
        // syncconf: p4 goes, p1 and p5 stay. The TOML spelling has the same effect as the .conf file.
        const three =
          `[Interface]\nPrivateKey = ${k.priv}\nListenPort = 52203\n\n[Peer]\nPublicKey = ${p1.pub}\n` +
          `PresharedKey = ${pskText}\nAllowedIPs = 10.1.0.0/24\nPersistentKeepalive = 15\n\n` +
          `[Peer]\nPublicKey = ${p5.pub}\nAllowedIPs = 10.5.0.0/16\n`;
        const conf3 = file("three.conf", three);
        const toml3 = file(
          "three.toml",
          sh(`${typetunCommand().join(" ")} convert ${conf3} --to toml`),
        );
        step(["syncconf", "IF", toml3], ["syncconf", "IF", conf3]);
        assert.equal(
          wg(["show", ours, "peers"]).stdout.trim().split("\n").sort().join(","),
          [p1.pub, p5.pub].sort().join(","),
        );
        // setconf of a file without peers removes them all.
        step(["setconf", "IF", file("empty.conf", "[Interface]\nListenPort = 52204\n")]);

        // A wg-quick file is refused, as wg refuses it (our message names the line), and changes nothing.
        const quick = file("quick.conf", `[Interface]\nListenPort = 52205\nAddress = 10.0.0.1/24\n`);
        const { a } = step(["setconf", "IF", quick], ["setconf", "IF", quick], 1);
        assert.equal(
          a.stderr,
          `${quick}:3: Address is a wg-quick key, not a WireGuard one (typetun convert --strip FILE drops them)\n`,
        );
        const typo = file(
          "typo.conf",
          `[Interface]\nListenPort = 52205\n[Peer]\nPublicKey = ${p1.pub}\nAllowedIP = 10.0.0.0/8\n`,
        );
        const r = typetun(["setconf", ours, typo]);
        assert.equal(r.status, 1);
        assert.equal(r.stderr, `${typo}:5: unknown key "AllowedIP" in [Peer]\n`);

        // What the current wireguard-tools syncconf also does (setconf.c, sync_conf; newer than Debian's wg):
        // a preshared key or keepalive the file no longer mentions is turned off on a peer that stays.
        typetun(["setconf", ours, conf3]);
        assert.match(
          wg(["show", ours, "preshared-keys"]).stdout,
          new RegExp(`${escape(p1.pub)}\t${escape(pskText)}`),
        );
        const bare = file("bare.conf", `[Interface]\nListenPort = 52206\n[Peer]\nPublicKey = ${p1.pub}\n`);
        assert.equal(typetun(["syncconf", ours, bare]).status, 0);
        assert.equal(
          wg(["show", ours, "dump"]).stdout.split("\n")[1],
          `${p1.pub}\t(none)\t(none)\t(none)\t0\t0\t0\toff`,
        );
      } finally {
        lab.cleanup();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  });
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

Deno.test({
  name: "cli: show all, show interfaces, and errors for an interface that does not exist",
  ...opts,
  fn: async () => {
    const lab = new Lab();
    try {
      const t = tag();
      const ns = lab.ns(`tcl${t}`);
      const names = [`tcl${t}a`, `tcl${t}b`, `tcl${t}c`];
      await start(lab, names[0]!, ns, "typetun");
      await start(lab, names[1]!, ns, "wireguard-go");
      await start(lab, names[2]!, ns, "typetun");
      wgSet(names[0]!, wgKeys().priv, `listen-port 52301 peer ${wgKeys().pub} allowed-ips 10.0.0.0/8`);
      wgSet(names[1]!, null, `listen-port 52302`);
      const mine = (s: string) => names.some((n) => s.startsWith(n) || s.startsWith(`interface: ${n}\n`));

      // `show interfaces`: the same names in the same (directory) order.
      const listed = (out: string) => out.trim().split(" ").filter((n) => names.includes(n));
      const ifs = typetun(["show", "interfaces"]);
      assert.equal(ifs.status, 0);
      assert.deepEqual(listed(ifs.stdout), listed(wg(["show", "interfaces"]).stdout));
      assert.deepEqual([...listed(ifs.stdout)].sort(), [...names].sort());

      // `show` and `show all`: the blocks of these interfaces, as wg prints them.
      for (const args of [["show"], ["show", "all"]]) {
        const blocks = (out: string) =>
          out.split(/\n(?=interface: )/).filter(mine).map((b) => b.replace(/\n+$/, ""));
        const ours = typetun(args);
        assert.equal(ours.status, 0);
        assert.deepEqual(blocks(ours.stdout), blocks(wg(args).stdout));
        assert.equal(blocks(ours.stdout).length, 3);
      }
      // Fields under `all` carry the interface name first.
      for (const f of ["dump", "listen-port", "peers", "allowed-ips"]) {
        const lines = (out: string) => out.split("\n").filter(mine);
        assert.deepEqual(lines(typetun(["show", "all", f]).stdout), lines(wg(["show", "all", f]).stdout), f);
      }
      const all = JSON.parse(typetun(["show", "all", "--json"]).stdout) as {
        name: string;
        listenPort: number;
      }[];
      assert.deepEqual(
        all.filter((i) => names.includes(i.name)).map((i) => [i.name, i.listenPort]).sort(),
        [[names[0], 52301], [names[1], 52302], [
          names[2],
          Number(wg(["show", names[2]!, "listen-port"]).stdout),
        ]].sort(),
      );

      // An interface that does not exist: the kernel's answer, ENODEV (wg here, without the kernel module,
      // says "Protocol not supported" instead, but fails the same way).
      const missing = `tcx${t}`;
      for (
        const [args, msg] of [
          [["show", missing], "Unable to access interface: No such device\n"],
          [["show", missing, "dump"], "Unable to access interface: No such device\n"],
          [["showconf", missing], "Unable to access interface: No such device\n"],
          [["set", missing, "listen-port", "1"], "Unable to modify interface: No such device\n"],
        ] as const
      ) {
        const r = typetun([...args]);
        assert.deepEqual([r.status, r.stdout, r.stderr], [1, "", msg], args.join(" "));
        assert.equal(wg([...args]).status, 1);
      }
      // A field wg does not know.
      const bad = typetun(["show", names[0]!, "bogus"]);
      assert.equal(bad.status, 1);
      assert.equal(
        bad.stderr,
        wg(["show", names[0]!, "bogus"]).stderr.replace(/^Usage: \S*wg /m, "Usage: typetun "),
      );
      // Every subcommand explains itself.
      for (const cmd of ["show", "showconf", "set", "setconf", "addconf", "syncconf", "convert"]) {
        const h = typetun([cmd, "--help"]);
        assert.equal(h.status, 0, cmd);
        assert.match(h.stdout, new RegExp(`^Usage: typetun ${cmd} `), cmd);
      }
    } finally {
      lab.cleanup();
    }
  },
});
