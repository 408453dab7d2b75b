/**
 * Multihop against the current wireguard-go as both relays (root): the client is one typetun process, `up -f
 * wg0.conf --via entry.conf`, one TUN; E (entry relay) forwards and masquerades, X (exit relay) forwards to the
 * target T (tests/netns/_multihop.ts). Ping and a checksummed TCP transfer reach T; E's side towards the client
 * carries only WireGuard to E's port, and E's own tunnel only the inner WireGuard to X (never the ping or the
 * TCP); X sees the client at E's forwarded address; both hops rekey with typetun's clock sped up; `typetun show`
 * lists the hop, `wg show` only wg0.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { spawn } from "node:child_process";
import process from "node:process";
import { cannotRun, inNs, labTest, sh, sleep, tag, typetunCommand, waitExit } from "./_lab.ts";
import { multihopTopology, WG, WIREGUARD_GO } from "./_multihop.ts";

const skip = cannotRun("ncat", "ping", "iptables", "tcpdump", "iperf3") ??
  (existsSync(WIREGUARD_GO) ? null : `needs ${WIREGUARD_GO}`);
if (skip) console.log(`multihop tests skipped: ${skip}`);

/** typetun's clock 40× fast: REKEY_AFTER_TIME (120 s) every 3 s, REJECT_AFTER_TIME (180 s) every 4.5 s. */
const TIME_SCALE = 40;

/** Starts tcpdump in `ns` on `dev` writing to a file; the returned function stops it and gives its lines. */
async function capture(ns: string, dev: string): Promise<() => Promise<string[]>> {
  const file = `/tmp/typetun-mh-${tag()}.pcap`;
  const p = spawn("ip", ["netns", "exec", ns, "tcpdump", "-i", dev, "-nn", "-U", "-w", file], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let err = "";
  p.stderr!.on("data", (d) => (err += d.toString()));
  for (let i = 0; i < 50 && !err.includes("listening"); i++) await sleep(100);
  return async () => {
    p.kill("SIGINT");
    if ((await waitExit(p, 5000)) === null) p.kill("SIGKILL");
    try {
      return sh(`tcpdump -nn -r ${file} 2>/dev/null`).split("\n").filter((l) => l.trim() !== "");
    } finally {
      rmSync(file, { force: true });
    }
  };
}

labTest(
  "multihop: through two wireguard-go relays, ping and TCP reach the target; E sees only outer traffic, X sees E's address; both hops rekey",
  skip,
  async (lab) => {
    const topo = await multihopTopology(lab, {
      via: true,
      env: { TYPETUN_TEST_TIME_SCALE: String(TIME_SCALE) },
    });
    const { c, e, x, t, wgE, wgX, ifname } = topo;
    try {
      // The MTU leaves room for two layers over IPv4: the way to E (1500) less 80, less 60 for the hop.
      assert.match(inNs(c, `ip link show ${ifname}`), /mtu 1360 /);
      const outer = await capture(e, topo.eToC);
      const inside = await capture(e, wgE);

      inNs(c, "ping -c 3 -i 0.3 -W 5 192.168.73.2");

      // A TCP transfer to T, checksummed.
      const data = `/tmp/typetun-mh-${tag()}.bin`, out = `${data}.out`;
      try {
        writeFileSync(data, randomBytes(4 << 20));
        const rx = spawn("ip", ["netns", "exec", t, "sh", "-c", `exec ncat -l 5001 --recv-only > ${out}`], {
          stdio: "ignore",
        });
        lab.children.push(rx);
        await sleep(300);
        inNs(c, `ncat --send-only 192.168.73.2 5001 < ${data}`, 60_000);
        assert.notEqual(await waitExit(rx, 10_000), null, "the receiver finished");
        const sum = (f: string) => createHash("sha256").update(readFileSync(f)).digest("hex");
        assert.equal(sum(out), sum(data), "4 MiB arrived intact at the target");
      } finally {
        rmSync(data, { force: true });
        rmSync(out, { force: true });
      }

      // E towards the client: WireGuard to and from E's port only (ARP and neighbour discovery aside).
      const outerLines = (await outer()).filter((l) => !/ARP|ICMP6/.test(l));
      assert.ok(outerLines.length > 100, `E saw the client's traffic (${outerLines.length} packets)`);
      const notWg = outerLines.filter((l) =>
        !/192\.168\.71\.\d+\.\d+ > 192\.168\.71\.\d+\.\d+: UDP/.test(l) ||
        !/\.51820[ :]/.test(l)
      );
      assert.deepEqual(notWg.slice(0, 5), [], "only UDP to or from E's port 51820 between client and E");
      // Inside E's tunnel: only the inner WireGuard between the hop's address and X; never the ping or the TCP.
      const innerLines = (await inside()).filter((l) => l.includes(" IP"));
      assert.ok(
        innerLines.length > 100,
        `E's tunnel carried the inner tunnel (${innerLines.length} packets)`,
      );
      const notInner = innerLines.filter((l) =>
        !/IP 10\.64\.0\.2\.\d+ > 192\.168\.72\.2\.51821: UDP|IP 192\.168\.72\.2\.51821 > 10\.64\.0\.2\.\d+: UDP/
          .test(l)
      );
      assert.deepEqual(notInner.slice(0, 5), [], "E's tunnel saw only WireGuard between the hop and X");

      // X knows the client at E's forwarded (masqueraded) address.
      const [, endpoint] = sh(`${WG} show ${wgX} endpoints`).trim().split(/\s+/);
      assert.match(endpoint!, /^192\.168\.72\.1:\d+$/, `X sees the client at E's address (${endpoint})`);
      assert.match(sh(`${WG} show ${wgE} endpoints`), /192\.168\.71\.1:\d+/);

      // `wg show` sees wg0 as usual (and no hop); `typetun show` adds the hop with its peer and counters.
      const wgShow = sh(`${WG} show ${ifname}`);
      assert.match(wgShow, new RegExp(`interface: ${ifname}`));
      assert.match(sh(`${WG} show interfaces`), new RegExp(ifname));
      assert.doesNotMatch(sh(`${WG} show interfaces`), /hop/);
      const [cmd, ...args] = typetunCommand();
      const show = sh(`WG_COLOR_MODE=never ${cmd} ${args.join(" ")} show ${ifname}`);
      assert.match(show, /\nhop: 1\n/);
      const hopPart = show.slice(show.indexOf("\nhop: 1\n"));
      assert.match(
        hopPart,
        /peer: .*\n {2}endpoint: 192\.168\.71\.2:51820\n {2}allowed ips: 192\.168\.72\.0\/24/,
      );
      assert.match(hopPart, /latest handshake: (Now|.* ago)/);
      assert.match(hopPart, /transfer: .* received, [\d.]+ MiB sent/);
      const json = JSON.parse(sh(`${cmd} ${args.join(" ")} show ${ifname} --json`));
      assert.equal(json.hops.length, 1);
      assert.ok(json.hops[0].peers[0].txBytes > 4 << 20, "the hop carried the transfer");

      // Both hops rekey during traffic: each relay's latest handshake moves (wireguard-go, 1 s resolution).
      const seenE = new Set<string>(), seenX = new Set<string>();
      const flood = spawn(
        "ip",
        ["netns", "exec", c, "ping", "-q", "-i", "0.05", "-w", "11", "192.168.73.2"],
        {
          stdio: "ignore",
        },
      );
      lab.children.push(flood);
      while ((await waitExit(flood, 250)) === null) {
        seenE.add(sh(`${WG} show ${wgE} latest-handshakes`));
        seenX.add(sh(`${WG} show ${wgX} latest-handshakes`));
      }
      assert.ok(seenE.size >= 3, `the entry hop rekeyed (${seenE.size - 1} new handshakes in 11 s)`);
      assert.ok(seenX.size >= 3, `wg0 rekeyed with the exit through the hop (${seenX.size - 1} in 11 s)`);
      inNs(c, "ping -c 2 -W 5 192.168.73.2");

      // SIGHUP reads the hop file again and syncs the hop through its own UAPI (here: a keepalive added).
      const entryFile = `${topo.dir}/entry.conf`;
      writeFileSync(entryFile, readFileSync(entryFile, "utf8") + "PersistentKeepalive = 7\n", {
        mode: 0o600,
      });
      process.kill(topo.up.pid!, "SIGHUP");
      for (let i = 0;; i++) {
        const j = JSON.parse(sh(`${cmd} ${args.join(" ")} show ${ifname} --json`));
        // The step line too (it reaches the log through a pipe, maybe after the change).
        if (
          j.hops[0].peers[0].persistentKeepalive === 7 && /syncconf .* hop 1 .*entry\.conf/.test(topo.log())
        ) {
          break;
        }
        assert.ok(i < 100, `the reload reached the hop:\n${topo.log()}`);
        await sleep(100);
      }
      inNs(c, "ping -c 2 -W 5 192.168.73.2");

      // A hop's UAPI socket is not *.sock, so `wg show` lists only the interface; both go with the interface.
      assert.ok(existsSync(`/var/run/wireguard/${ifname}.hop1.uapi`));
      // process.kill, not child.kill: after child.kill Deno reports the signal even when the child exited with a
      // status (tests/netns/env_test.ts).
      process.kill(topo.up.pid!, "SIGTERM");
      assert.equal(await waitExit(topo.up, 15_000), 0, `up -f exits 0 on SIGTERM:\n${topo.log()}`);
      assert.ok(!existsSync(`/var/run/wireguard/${ifname}.hop1.uapi`), "the hop socket is gone");
      assert.match(topo.log(), /hop 1 \(.*entry\.conf\): \d+ packets dropped/);
      void x;
    } finally {
      topo.done();
    }
  },
);

labTest(
  "multihop: an inner endpoint outside the hop's AllowedIPs stops up before any change",
  skip,
  async (lab) => {
    const dir = `/tmp/typetun-mh-${tag()}`;
    sh(`mkdir -p ${dir}`);
    try {
      const k = () => sh("wg genkey").trim();
      const pub = sh(`echo ${k()} | wg pubkey`).trim();
      writeFileSync(
        `${dir}/entry.conf`,
        `[Interface]\nPrivateKey = ${k()}\nAddress = 10.64.0.2/32\n[Peer]\nPublicKey = ${pub}\n` +
          `Endpoint = 192.0.2.1:51820\nAllowedIPs = 10.0.0.0/24\n`,
        { mode: 0o600 },
      );
      const name = `mhb${tag()}`;
      writeFileSync(
        `${dir}/${name}.conf`,
        `[Interface]\nPrivateKey = ${k()}\nAddress = 10.10.0.2/32\n[Peer]\nPublicKey = ${pub}\n` +
          `Endpoint = 198.51.100.7:51821\nAllowedIPs = 10.10.0.0/24\n`,
        { mode: 0o600 },
      );
      const [cmd, ...args] = typetunCommand();
      const ns = lab.ns(`mhb${tag()}`);
      const r = spawn("ip", [
        "netns",
        "exec",
        ns,
        cmd!,
        ...args,
        "up",
        `${dir}/${name}.conf`,
        "--via",
        `${dir}/entry.conf`,
      ], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      lab.children.push(r);
      let err = "";
      r.stderr!.on("data", (d) => (err += d.toString()));
      assert.equal(await waitExit(r, 30_000), 1);
      assert.match(
        err,
        /the endpoint 198\.51\.100\.7:51821 of peer .* is not in the AllowedIPs of the hop around it/,
      );
      assert.match(err, /entry\.conf: 10\.0\.0\.0\/24/);
      assert.doesNotMatch(inNs(ns, "ip link"), new RegExp(name), "no interface was made");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

labTest(
  "multihop: up in the background (the daemon gets the hops from TYPETUN_VIA), then down",
  skip,
  async (lab) => {
    const topo = await multihopTopology(lab, { via: true, background: true });
    try {
      assert.equal(await waitExit(topo.up, 10_000), 0, topo.log());
      inNs(topo.c, "ping -c 2 -W 5 192.168.73.2");
      const [cmd, ...args] = typetunCommand();
      assert.match(sh(`WG_COLOR_MODE=never ${cmd} ${args.join(" ")} show ${topo.ifname}`), /\nhop: 1\n/);
      // The daemon refuses an inner endpoint the hop cannot carry, as `up` does (wg says EINVAL).
      assert.throws(
        () =>
          sh(
            `${WG} set ${topo.ifname} peer ${topo.hopKey} endpoint 198.51.100.9:51820 allowed-ips 10.99.0.1/32`,
          ),
        /Invalid argument/,
      );
      assert.doesNotMatch(
        sh(`${WG} show ${topo.ifname} peers`),
        new RegExp(topo.hopKey.replace(/[+/]/g, ".")),
      );
      inNs(topo.c, `${cmd} ${args.join(" ")} down ${topo.dir}/${topo.ifname}.conf`);
      for (let i = 0; i < 50 && existsSync(`/var/run/wireguard/${topo.ifname}.hop1.uapi`); i++) {
        await sleep(
          100,
        );
      }
      assert.ok(!existsSync(`/var/run/wireguard/${topo.ifname}.hop1.uapi`), "down took the hop socket too");
      assert.ok(!existsSync(`/var/run/wireguard/${topo.ifname}.sock`));
    } finally {
      topo.done();
    }
  },
);
