/**
 * contrib/systemd/typetun@.service (root): the unit parses (`systemd-analyze verify`, when installed), and its
 * command lines do what they promise when run as systemd would run them for an instance (systemd itself does not
 * run here): ExecStart brings the tunnel up from /etc/wireguard/IF.conf, ExecReload applies a changed file
 * with syncconf without dropping the running session (same latest handshake, counters kept), and SIGTERM
 * (systemctl stop) takes it down.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import process from "node:process";
import { cannotRun, inNs, labTest, sh, sleep, tag, typetunCommand, waitExit, wgKeys, wgSet } from "./_lab.ts";

const UNIT = new URL("../../contrib/systemd/typetun@.service", import.meta.url).pathname;
const BIN = "/usr/local/bin/typetun";
const skip = cannotRun("wg", "ping", "bash");

/** The unit's `Key=` lines of the [Service] section. */
function serviceLine(unit: string, key: string): string {
  const m = new RegExp(`^${key}=(.*)$`, "m").exec(unit);
  if (!m) throw new Error(`no ${key}= in the unit`);
  return m[1]!;
}

/** A command line of the unit for instance `ifname`, with the binary as this test runs typetun. */
function commandLine(unit: string, key: string, ifname: string): string {
  return serviceLine(unit, key).replaceAll(BIN, typetunCommand().join(" ")).replaceAll("%i", ifname);
}

Deno.test({
  name: "typetun@.service parses (systemd-analyze verify)",
  ignore: spawnSync("sh", ["-c", "command -v systemd-analyze"]).status !== 0,
  fn: () => {
    const dir = mkdtempSync("/tmp/typetun-unit-");
    try {
      // verify wants an instance and an executable binary: the runtime stands in for /usr/local/bin/typetun.
      const unit = readFileSync(UNIT, "utf8").replaceAll(BIN, typetunCommand()[0]!);
      writeFileSync(`${dir}/typetun@wg0.service`, unit);
      const r = spawnSync("systemd-analyze", ["verify", `${dir}/typetun@wg0.service`], { encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr, "", "no warnings (an unknown key is only a warning)");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
});

labTest("typetun@.service: ExecStart, ExecReload keeps the session, SIGTERM stops", skip, async (lab) => {
  const unit = readFileSync(UNIT, "utf8");
  assert.equal(serviceLine(unit, "Type"), "exec");
  const t = tag();
  const ns1 = lab.ns(`tu1${t}`), ns2 = lab.ns(`tu2${t}`);
  lab.veth(ns1, ns2, ["192.168.247.1", "fd00:247::1"], ["192.168.247.2", "fd00:247::2"]);
  const ifname = `tuw${t}`, peerIf = `tup${t}`;
  const ka = wgKeys(), kb = wgKeys(), kc = wgKeys();
  mkdirSync("/etc/wireguard", { recursive: true });
  const conf = `/etc/wireguard/${ifname}.conf`;
  const head = `[Interface]\nPrivateKey = ${ka.priv}\nListenPort = 51881\nAddress = 10.247.0.1/24\n` +
    `PostUp = true\n\n[Peer]\nPublicKey = ${kb.pub}\nAllowedIPs = 10.247.0.2/32\nEndpoint = 192.168.247.2:51882\n`;
  writeFileSync(conf, head, { mode: 0o600 });
  try {
    await lab.daemon(peerIf, ns2);
    wgSet(peerIf, kb.priv, `listen-port 51882 peer ${ka.pub} allowed-ips 10.247.0.1/32`);
    sh(`ip -n ${ns2} addr add 10.247.0.2/24 dev ${peerIf} && ip -n ${ns2} link set ${peerIf} up`);

    // ExecStart, in ns1, as systemd starts it (Type=exec: the process is the service).
    const start = commandLine(unit, "ExecStart", ifname);
    const service = spawn("ip", ["netns", "exec", ns1, "sh", "-c", `exec ${start}`], {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, WG_ENDPOINT_RESOLUTION_RETRIES: "infinity" },
    });
    lab.children.push(service);
    lab.logs.set(service, "");
    service.stderr!.on("data", (d) => lab.logs.set(service, lab.logs.get(service) + d.toString()));
    lab.sockets.push(`/var/run/wireguard/${ifname}.sock`);
    for (let i = 0; i < 200 && !existsSync(`/var/run/wireguard/${ifname}.sock`); i++) await sleep(50);
    for (let i = 0; i < 100; i++) {
      try {
        sh(`ip -n ${ns1} -br addr show ${ifname} | grep -q 10.247.0.1`);
        break;
      } catch {
        await sleep(100);
      }
    }
    inNs(ns1, "ping -c 3 -i 0.2 -W 3 10.247.0.2");
    const handshake = sh(`wg show ${ifname} latest-handshakes`);
    const transfer = sh(`wg show ${ifname} transfer`).trim().split(/\s+/).slice(1).map(Number);
    assert.ok(transfer[0]! > 0 && transfer[1]! > 0);

    // The file changes: a keepalive for the peer and a second peer. Then systemctl reload's command.
    writeFileSync(
      conf,
      head + `PersistentKeepalive = 25\n\n[Peer]\nPublicKey = ${kc.pub}\nAllowedIPs = 10.247.0.3/32\n`,
      { mode: 0o600 },
    );
    const reload = spawnSync("sh", ["-c", commandLine(unit, "ExecReload", ifname)], { encoding: "utf8" });
    assert.equal(reload.status, 0, reload.stderr);
    assert.equal(
      sh(`wg show ${ifname} peers`).split("\n").filter(Boolean).sort().join(" "),
      [kb.pub, kc.pub].sort().join(" "),
    );
    assert.match(
      sh(`wg show ${ifname} persistent-keepalive`),
      new RegExp(`${kb.pub.replace(/[+/]/g, ".")}\\t25`),
    );
    // The session went on: the same handshake, counters not reset, and traffic without a new handshake.
    assert.equal(
      sh(`wg show ${ifname} latest-handshakes`).split("\n").find((l) => l.startsWith(kb.pub)),
      handshake.trim(),
    );
    const after = sh(`wg show ${ifname} transfer`).split("\n").find((l) => l.startsWith(kb.pub))!.split(/\s+/)
      .slice(1).map(Number);
    assert.ok(after[0]! >= transfer[0]! && after[1]! >= transfer[1]!, `${after} after ${transfer}`);
    inNs(ns1, "ping -c 2 -i 0.2 -W 3 10.247.0.2");
    assert.equal(
      sh(`wg show ${ifname} latest-handshakes`).split("\n").find((l) => l.startsWith(kb.pub)),
      handshake.trim(),
    );

    // systemctl stop: SIGTERM to the service; the interface goes.
    // process.kill: after child.kill, Deno reports the signal as the cause of any exit (tests/netns/env_test.ts).
    process.kill(service.pid!, "SIGTERM");
    assert.equal(await waitExit(service, 20_000), 0, lab.logs.get(service));
    assert.throws(() => sh(`ip -n ${ns1} link show ${ifname}`, 5000));
  } finally {
    rmSync(conf, { force: true });
  }
});
