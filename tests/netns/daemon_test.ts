/**
 * The daemon end to end (root): two typetun daemons in two namespaces joined by a veth pair, configured with
 * the stock `wg` tool; a 100 MB TCP transfer checked by checksum; the control plane under load; shutdown on
 * SIGTERM and on interface deletion; refusal of a second daemon; the error without CAP_NET_ADMIN.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createHash, randomBytes } from "node:crypto";
import { performance } from "node:perf_hooks";
import process from "node:process";
import { cannotRun, inNs, Lab, sh, sleep, tag, typetunCommand, waitExit, wgKeys, wgSet } from "./_lab.ts";

const skip = cannotRun("wg", "ncat", "ping");
const opts = { ignore: skip !== null, sanitizeOps: false, sanitizeResources: false };
if (skip) console.log(`namespace tests skipped: ${skip}`);

/** Two namespaces, a veth between them, a typetun daemon in each, peered with `wg set`. */
async function twoPeers(lab: Lab) {
  const t = tag();
  const ns1 = lab.ns(`tt1${t}`), ns2 = lab.ns(`tt2${t}`);
  lab.veth(ns1, ns2, ["192.168.241.1", "fd00:241::1"], ["192.168.241.2", "fd00:241::2"]);
  const wg1 = `ttw1${t}`, wg2 = `ttw2${t}`;
  const d1 = await lab.daemon(wg1, ns1);
  const d2 = await lab.daemon(wg2, ns2);
  const k1 = wgKeys(), k2 = wgKeys();
  wgSet(
    wg1,
    k1.priv,
    `listen-port 51821 peer ${k2.pub} allowed-ips 10.241.0.2/32,fd10:241::2/128 endpoint 192.168.241.2:51822`,
  );
  wgSet(wg2, k2.priv, `listen-port 51822 peer ${k1.pub} allowed-ips 10.241.0.1/32,fd10:241::1/128`);
  for (const [ns, wg, n] of [[ns1, wg1, 1], [ns2, wg2, 2]] as const) {
    sh(
      `ip -n ${ns} addr add 10.241.0.${n}/24 dev ${wg} && ip -n ${ns} addr add fd10:241::${n}/64 dev ${wg} nodad`,
    );
    sh(`ip -n ${ns} link set ${wg} up`);
  }
  return { ns1, ns2, wg1, wg2, d1, d2, k1, k2 };
}

function wgShow(ifname: string, field: string): string {
  return sh(`wg show ${ifname} ${field}`).trim();
}

function linkStats(ns: string, ifname: string): { rx: number; tx: number } {
  const j = JSON.parse(sh(`ip -n ${ns} -j -s link show ${ifname}`))[0];
  return { rx: j.stats64.rx.bytes, tx: j.stats64.tx.bytes };
}

/** Starts a TCP receiver in `ns` writing to `out`; resolves when the sender closes. */
function receiver(ns: string, port: number, out: string) {
  const child = spawn("ip", ["netns", "exec", ns, "sh", "-c", `exec ncat -l ${port} --recv-only > ${out}`], {
    stdio: "ignore",
  });
  return child;
}

Deno.test({
  name:
    "daemon: two namespaces, wg-configured, ping v4/v6, 100 MB TCP intact, wg show and SIGTERM under load",
  ...opts,
  fn: async (t) => {
    const lab = new Lab();
    const data = `/tmp/typetun-${tag()}.bin`, out = `${data}.out`;
    try {
      const { ns1, ns2, wg1, wg2, d1, k2 } = await twoPeers(lab);

      await t.step("handshake and ping over IPv4 and IPv6 inside the tunnel", () => {
        inNs(ns1, "ping -c 2 -i 0.2 -W 3 10.241.0.2");
        inNs(ns1, "ping -c 2 -i 0.2 -W 3 fd10:241::2");
        inNs(ns2, "ping -c 1 -W 3 10.241.0.1");
        const hs = Number(wgShow(wg1, "latest-handshakes").split(/\s+/)[1]);
        assert.ok(Math.abs(hs - Date.now() / 1000) < 30, `latest handshake is recent (${hs})`);
        // The responder learned the initiator's endpoint from its handshake (it had none configured).
        assert.match(wgShow(wg2, "endpoints"), /192\.168\.241\.1:51821/);
      });

      await t.step("a 100 MB TCP transfer arrives intact; wg show and ip -s link count it", async () => {
        writeFileSync(data, randomBytes(100 * 1024 * 1024));
        const before = linkStats(ns2, wg2);
        const rx = receiver(ns2, 7001, out);
        await sleep(300);
        inNs(ns1, `ncat --send-only 10.241.0.2 7001 < ${data}`, 120_000);
        assert.notEqual(await waitExit(rx, 10_000), null, "the receiver finished");
        const sum = (f: string) => createHash("sha256").update(readFileSync(f)).digest("hex");
        assert.equal(sum(out), sum(data), "the bytes arrived intact");
        const [, rxBytes, txBytes] = wgShow(wg2, "transfer").split(/\s+/).map(Number);
        assert.ok(rxBytes! > 100 * 1024 * 1024, `wg show counts what was received (${rxBytes})`);
        assert.ok(txBytes! > 0);
        const after = linkStats(ns2, wg2);
        // What the daemon writes into the TUN is what the interface receives.
        assert.ok(after.rx - before.rx > 100 * 1024 * 1024, "the interface's own counters grew");
      });

      await t.step(
        "wg show answers and SIGTERM exits within a second while a bulk transfer runs",
        async () => {
          const rx = receiver(ns2, 7002, "/dev/null");
          await sleep(300);
          const tx = spawn("ip", [
            "netns",
            "exec",
            ns1,
            "sh",
            "-c",
            "head -c 2000000000 /dev/zero | ncat --send-only 10.241.0.2 7002",
          ], {
            detached: true,
            stdio: "ignore",
          });
          try {
            await sleep(1500);
            const before = Number(wgShow(wg1, "transfer").split(/\s+/)[2]);
            for (let i = 0; i < 3; i++) {
              const t0 = performance.now();
              assert.match(wgShow(wg1, "peers"), new RegExp(k2.pub.replace(/[+/]/g, "\\$&")));
              assert.ok(performance.now() - t0 < 1000, "wg show answered within a second under load");
            }
            const during = Number(wgShow(wg1, "transfer").split(/\s+/)[2]);
            assert.ok(during > before, "the transfer was running while wg show answered");
            const t0 = performance.now();
            d1.kill("SIGTERM");
            // Deno's child_process reports the signal it sent rather than the exit status, so "cleanly" is read
            // off the daemon's own log and its removed socket.
            assert.notEqual(await waitExit(d1, 1500), null, "the daemon exited");
            assert.match(lab.logs.get(d1)!, /Shutting down: received SIGTERM/);
            assert.ok(performance.now() - t0 < 1500);
            assert.ok(!existsSync(`/var/run/wireguard/${wg1}.sock`), "its socket was removed");
          } finally {
            // The sender is a pipeline: kill its whole process group.
            try {
              process.kill(-tx.pid!, "SIGKILL");
            } catch {
              // Already gone.
            }
            rx.kill("SIGKILL");
          }
        },
      );
    } finally {
      lab.cleanup();
      rmSync(data, { force: true });
      rmSync(out, { force: true });
    }
  },
});

Deno.test({
  name: "daemon: deleting the interface ends it; a second daemon on the same name is refused",
  ...opts,
  fn: async () => {
    const lab = new Lab();
    try {
      const t = tag();
      const ns = lab.ns(`tt3${t}`);
      const name = `ttd${t}`;
      const d = await lab.daemon(name, ns);
      const [cmd, ...args] = typetunCommand();
      const second = spawnSync("ip", ["netns", "exec", ns, cmd!, ...args, "-f", name], {
        encoding: "utf8",
        timeout: 20_000,
      });
      assert.equal(second.status, 1);
      assert.match(second.stderr, /in use|another process/);
      assert.equal(second.stderr.trim().split("\n").length, 1, "one line");
      sh(`ip -n ${ns} link del ${name}`);
      assert.equal(await waitExit(d, 2000), 0, "the daemon ended within 2 s");
      assert.ok(!existsSync(`/var/run/wireguard/${name}.sock`), "its socket was removed");
    } finally {
      lab.cleanup();
    }
  },
});

Deno.test({
  name:
    "daemon: in the background (no -f) it returns once the interface exists; moved to another netns it keeps working",
  ...opts,
  fn: async () => {
    const lab = new Lab();
    const t = tag();
    const name = `ttb${t}`;
    try {
      const ns = lab.ns(`tt4${t}`);
      const [cmd, ...args] = typetunCommand();
      const r = spawnSync(cmd!, [...args, name], {
        encoding: "utf8",
        timeout: 20_000,
        env: { ...process.env, LOG_LEVEL: "error" },
      });
      assert.equal(r.status, 0, r.stderr);
      assert.ok(existsSync(`/var/run/wireguard/${name}.sock`));
      sh(`ip link set ${name} netns ${ns}`);
      await sleep(300);
      // Still serving after the move: the UAPI answers and the socket is there.
      assert.match(sh(`wg show ${name} listen-port`), /^\d+\s*$/);
      sh(`ip -n ${ns} link del ${name}`);
      for (let i = 0; i < 40 && existsSync(`/var/run/wireguard/${name}.sock`); i++) await sleep(50);
      assert.ok(
        !existsSync(`/var/run/wireguard/${name}.sock`),
        "it exited after the deletion in the other namespace",
      );
    } finally {
      // Started in the background by typetun itself, so found by its unique interface name.
      spawnSync("pkill", ["-f", `-f ${name}$`], { stdio: "ignore" });
      rmSync(`/var/run/wireguard/${name}.sock`, { force: true });
      lab.cleanup();
    }
  },
});

Deno.test({
  name: "daemon: without CAP_NET_ADMIN it fails with one line naming the missing privilege",
  ignore: skip !== null || spawnSync("sh", ["-c", "command -v setpriv"]).status !== 0,
  fn: () => {
    const [cmd, ...args] = typetunCommand();
    const r = spawnSync("setpriv", [
      "--inh-caps=-net_admin",
      "--bounding-set=-net_admin",
      cmd!,
      ...args,
      "-f",
      `ttp${tag()}`,
    ], {
      encoding: "utf8",
      timeout: 20_000,
    });
    assert.equal(r.status, 1);
    assert.equal(r.stderr.trim().split("\n").length, 1, `one line: ${r.stderr}`);
    assert.match(r.stderr, /CAP_NET_ADMIN/);
  },
});

Deno.test({
  name: "daemon: wg set (every option), showconf, setconf and syncconf round trip; a taken port is refused",
  ...opts,
  fn: async () => {
    const lab = new Lab();
    const t = tag();
    const name = `tts${t}`;
    const conf = `/tmp/typetun-${t}.conf`;
    try {
      await lab.daemon(name, null);
      const me = wgKeys(), peer = wgKeys();
      const psk = sh("wg genpsk").trim();
      wgSet(
        name,
        me.priv,
        `listen-port 41007 fwmark 0x1234 peer ${peer.pub} allowed-ips 10.1.0.0/16,fd01::/64 ` +
          `endpoint [::1]:5555 persistent-keepalive 25`,
      );
      sh(
        `f=$(mktemp) && echo ${psk} > $f && wg set ${name} peer ${peer.pub} preshared-key $f; r=$?; rm -f $f; exit $r`,
      );
      const shown = sh(`wg showconf ${name}`);
      writeFileSync(conf, shown, { mode: 0o600 });
      assert.match(shown, new RegExp(`PrivateKey = ${me.priv.replace(/[+/]/g, "\\$&")}`));
      assert.match(shown, /FwMark = 0x1234/);
      assert.match(shown, /AllowedIPs = 10\.1\.0\.0\/16, fd01::\/64/);
      assert.match(shown, /Endpoint = \[::1\]:5555/);
      assert.match(shown, /PersistentKeepalive = 25/);
      assert.match(shown, new RegExp(`PresharedKey = ${psk.replace(/[+/]/g, "\\$&")}`));
      sh(`wg set ${name} peer ${peer.pub} remove`);
      assert.equal(sh(`wg show ${name} peers`).trim(), "");
      sh(`wg setconf ${name} ${conf}`);
      assert.equal(sh(`wg showconf ${name}`), shown, "setconf restores exactly what showconf printed");
      sh(`wg set ${name} peer ${wgKeys().pub} allowed-ips 10.2.0.0/16`);
      sh(`wg syncconf ${name} ${conf}`);
      assert.equal(sh(`wg showconf ${name}`), shown, "syncconf removes the extra peer");
      // A port another socket holds: wg reports the daemon's EADDRINUSE, and nothing changes.
      const holder = spawn("ncat", ["-u", "-l", "127.0.0.1", "41999"], { stdio: "ignore" });
      try {
        await sleep(300);
        const r = spawnSync("wg", ["set", name, "listen-port", "41999"], { encoding: "utf8" });
        assert.notEqual(r.status, 0);
        assert.match(r.stderr, /Address already in use/);
        assert.equal(sh(`wg showconf ${name}`), shown);
      } finally {
        holder.kill("SIGKILL");
      }
    } finally {
      lab.cleanup();
      rmSync(conf, { force: true });
    }
  },
});
