/**
 * `--user` (root): the daemon, and `up -f`, give up root once set up and keep only CAP_NET_ADMIN. The
 * process then runs as the user (/proc/PID/status), the tunnel works, a fwmark change works (SO_MARK needs
 * CAP_NET_ADMIN: boringtun's drop lost it), a new port above 1023 works and one below says what it needs, and
 * SIGTERM still takes `up -f`'s tunnel down.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import {
  appendFileSync,
  chownSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import process from "node:process";
import { cannotRun, inNs, labTest, sh, sleep, tag, typetunCommand, waitExit, wgKeys, wgSet } from "./_lab.ts";

const skip = cannotRun("wg", "ping") ??
  (/^nobody:x:65534:/m.test(readFileSync("/etc/passwd", "utf8")) ? null : "needs user nobody (65534)");
if (skip) console.log(`privilege tests skipped: ${skip}`);

/** The fields of /proc/PID/status that say who a process is and what it may do. */
function status(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(`/proc/${pid}/status`, "utf8").split("\n")) {
    const m = /^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapAmb):\s*(.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!.trim().replace(/\s+/g, " ");
  }
  return out;
}

/** CAP_NET_ADMIN (12) alone, as /proc prints a capability set. */
const NET_ADMIN = "0000000000001000";

labTest(
  "--user: the daemon runs as nobody with CAP_NET_ADMIN only; tunnel, fwmark, port changes",
  skip,
  async (lab) => {
    const t = tag();
    const ns1 = lab.ns(`pa${t}`), ns2 = lab.ns(`pb${t}`);
    lab.veth(ns1, ns2, ["192.168.247.1", "fd00:247::1"], ["192.168.247.2", "fd00:247::2"]);
    const if1 = `pa${t}`, if2 = `pb${t}`;
    const k1 = wgKeys(), k2 = wgKeys();
    const a = await lab.daemon(if1, ns1, {}, [...typetunCommand(), "--user", "nobody"]);
    await lab.daemon(if2, ns2);
    // The drop comes right after the UAPI socket exists: wait for its log line.
    for (let i = 0; i < 100 && !lab.logs.get(a)!.includes("Running as user"); i++) await sleep(20);
    const st = status(a.pid!);
    assert.equal(st.Uid, "65534 65534 65534 65534", lab.logs.get(a));
    assert.equal(st.Gid, "65534 65534 65534 65534");
    assert.equal(st.Groups, "");
    assert.equal(st.CapEff, NET_ADMIN);
    assert.equal(st.CapPrm, NET_ADMIN);
    assert.equal(st.CapInh, "0000000000000000");
    assert.equal(st.CapAmb, "0000000000000000");
    // Every other thread of the runtime has no capability left at all.
    for (const tid of Deno.readDirSync(`/proc/${a.pid}/task`)) {
      if (Number(tid.name) === a.pid) continue;
      const eff =
        /^CapPrm:\s*(\S+)/m.exec(readFileSync(`/proc/${a.pid}/task/${tid.name}/status`, "utf8"))![1];
      assert.equal(eff, "0000000000000000", `thread ${tid.name} keeps ${eff}`);
    }

    wgSet(
      if1,
      k1.priv,
      `listen-port 51851 peer ${k2.pub} allowed-ips 10.247.0.2/32 endpoint 192.168.247.2:51852`,
    );
    wgSet(if2, k2.priv, `listen-port 51852 peer ${k1.pub} allowed-ips 10.247.0.1/32`);
    inNs(ns1, `ip addr add 10.247.0.1/24 dev ${if1} && ip link set ${if1} up`);
    inNs(ns2, `ip addr add 10.247.0.2/24 dev ${if2} && ip link set ${if2} up`);
    inNs(ns1, "ping -c 2 -i 0.2 -W 5 10.247.0.2");

    // SO_MARK after the drop (CAP_NET_ADMIN), on the socket in use.
    inNs(ns1, `wg set ${if1} fwmark 0x42`);
    assert.equal(inNs(ns1, `wg show ${if1} fwmark`).trim(), "0x42");
    inNs(ns1, "ping -c 1 -W 5 10.247.0.2");
    // A new port: above 1023 it binds (with the mark kept); below, the error says which capability it needs.
    inNs(ns1, `wg set ${if1} listen-port 40051`);
    assert.equal(inNs(ns1, `wg show ${if1} listen-port`).trim(), "40051");
    assert.equal(inNs(ns1, `wg show ${if1} fwmark`).trim(), "0x42");
    inNs(ns1, "ping -c 1 -W 5 10.247.0.2");
    assert.throws(() => inNs(ns1, `wg set ${if1} listen-port 80`));
    for (let i = 0; i < 50 && !lab.logs.get(a)!.includes("UAPI set refused"); i++) await sleep(20);
    assert.match(lab.logs.get(a)!, /UAPI set refused: .*UDP port 80 needs CAP_NET_BIND_SERVICE/);
    assert.equal(inNs(ns1, `wg show ${if1} listen-port`).trim(), "40051");
  },
);

labTest(
  "--user: up -f drops after setup, and SIGTERM still takes everything down, exit 0 in 2 s",
  skip,
  async (lab) => {
    const t = tag();
    const ns = lab.ns(`pc${t}`);
    const ifname = `pc${t}`;
    const dir = mkdtempSync("/tmp/typetun-priv-");
    try {
      const k = wgKeys();
      const conf = `${dir}/${ifname}.conf`;
      writeFileSync(
        conf,
        `[Interface]\nPrivateKey = ${k.priv}\nAddress = 10.248.0.1/24\n\n` +
          `[Peer]\nPublicKey = ${wgKeys().pub}\nAllowedIPs = 10.249.0.0/16\n`,
        { mode: 0o600 },
      );
      const [cmd, ...pre] = typetunCommand();
      const child = spawn("ip", ["netns", "exec", ns, cmd!, ...pre, "up", "-f", "--user", "65534", conf], {
        stdio: ["ignore", "ignore", "pipe"],
      });
      lab.children.push(child);
      // Left behind by design: the process, no longer root, cannot remove them from root's directories.
      lab.sockets.push(`/var/run/wireguard/${ifname}.sock`, `/var/run/typetun/${ifname}.json`);
      let err = "";
      child.stderr!.on("data", (d) => (err += d.toString()));
      for (let i = 0; i < 200 && !err.includes("keeping CAP_NET_ADMIN only"); i++) await sleep(50);
      await sleep(100);
      const st = status(child.pid!);
      assert.equal(st.Uid, "65534 65534 65534 65534", err);
      assert.equal(st.CapEff, NET_ADMIN);
      assert.equal(st.CapPrm, NET_ADMIN);
      assert.match(inNs(ns, "ip route"), /10\.249\.0\.0\/16 dev/);
      inNs(ns, `wg set ${ifname} fwmark 0x43`);
      assert.equal(inNs(ns, `wg show ${ifname} fwmark`).trim(), "0x43");
      // A reload (SIGHUP) after the drop: the file is the user's now, and `up` handed it the UAPI socket.
      chownSync(dir, 65534, 65534);
      chownSync(conf, 65534, 65534);
      const added = wgKeys().pub;
      appendFileSync(conf, `\n[Peer]\nPublicKey = ${added}\nAllowedIPs = 10.250.0.0/16\n`);
      process.kill(child.pid!, "SIGHUP");
      const peers = () => inNs(ns, `wg show ${ifname} peers`);
      for (let i = 0; i < 100 && !peers().includes(added); i++) await sleep(50);
      assert.ok(peers().includes(added), `the reload as user 65534 added the peer: ${err}`);
      const start = performance.now();
      process.kill(child.pid!, "SIGTERM");
      assert.equal(await waitExit(child, 5000), 0, err);
      const ms = performance.now() - start;
      assert.ok(ms < 2000, `SIGTERM took ${ms.toFixed(0)} ms`);
      assert.ok(!inNs(ns, "ip -br link").includes(ifname), "the interface is still there");
      assert.ok(!existsSync(`/proc/${child.pid}`) || sh(`cat /proc/${child.pid}/status`).includes("zombie"));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
