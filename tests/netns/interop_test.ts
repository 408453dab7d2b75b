/**
 * Interoperability with the reference peer, wireguard-go from Debian (root): typetun in one namespace,
 * wireguard-go in the other, joined by a veth pair and configured by the same `wg` commands. Each side
 * initiates in turn, with and without a preshared key; ping over IPv4 and IPv6, TCP both ways with the bytes
 * checked, and `wg show` on both sides agreeing.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { spawn } from "node:child_process";
import { cannotRun, inNs, Lab, labTest, sh, sleep, tag, waitExit, wgKeys, wgSet } from "./_lab.ts";

const skip = cannotRun("wg", "wireguard-go", "ncat", "ping");
if (skip) console.log(`interop tests skipped: ${skip}`);

function transfer(side: "rx" | "tx", ifname: string): number {
  const [, rx, tx] = sh(`wg show ${ifname} transfer`).trim().split(/\s+/).map(Number);
  return side === "rx" ? rx! : tx!;
}

/** Sends `bytes` random bytes over TCP from `fromNs` to `toAddr` in `toNs`; asserts they arrive intact. */
async function tcpIntact(fromNs: string, toNs: string, toAddr: string, port: number, bytes: number) {
  const data = `/tmp/typetun-interop-${tag()}.bin`, out = `${data}.out`;
  try {
    writeFileSync(data, randomBytes(bytes));
    const rx = spawn("ip", ["netns", "exec", toNs, "sh", "-c", `exec ncat -l ${port} --recv-only > ${out}`], {
      stdio: "ignore",
    });
    await sleep(300);
    inNs(fromNs, `ncat --send-only ${toAddr} ${port} < ${data}`, 60_000);
    assert.notEqual(await waitExit(rx, 10_000), null, "the receiver finished");
    const sum = (f: string) => createHash("sha256").update(readFileSync(f)).digest("hex");
    assert.equal(sum(out), sum(data), `${bytes} bytes from ${fromNs} arrived intact`);
  } finally {
    rmSync(data, { force: true });
    rmSync(out, { force: true });
  }
}

interface Pair {
  ns1: string;
  ns2: string;
  /** typetun's interface, in ns1. */
  tt: string;
  /** wireguard-go's interface, in ns2. */
  go: string;
  /** typetun's veth, in ns1. */
  veth1: string;
  k1: { priv: string; pub: string };
  k2: { priv: string; pub: string };
}

/**
 * typetun in ns1 (port 52001, tunnel 10.242.0.1), wireguard-go in ns2 (port 52002, 10.242.0.2), over a veth
 * (192.168.242.1 ↔ .2, fd00:242::1 ↔ ::2); each knows the other's endpoint.
 */
async function pair(lab: Lab, opts: { psk?: boolean; env?: Record<string, string> } = {}): Promise<Pair> {
  const t = tag();
  const ns1 = lab.ns(`ti1${t}`), ns2 = lab.ns(`ti2${t}`);
  const [veth1] = lab.veth(ns1, ns2, ["192.168.242.1", "fd00:242::1"], ["192.168.242.2", "fd00:242::2"]);
  const tt = `tti${t}`, go = `tgo${t}`;
  await lab.daemon(tt, ns1, opts.env);
  await lab.daemon(go, ns2, { LOG_LEVEL: "error" }, ["wireguard-go"]);
  const k1 = wgKeys(), k2 = wgKeys();
  const pskFile = `/tmp/typetun-psk-${t}`;
  writeFileSync(pskFile, sh("wg genpsk"), { mode: 0o600 });
  try {
    const pskArg = opts.psk ? `preshared-key ${pskFile}` : "";
    wgSet(
      tt,
      k1.priv,
      `listen-port 52001 peer ${k2.pub} ${pskArg} allowed-ips 10.242.0.2/32,fd10:242::2/128 endpoint 192.168.242.2:52002`,
    );
    wgSet(
      go,
      k2.priv,
      `listen-port 52002 peer ${k1.pub} ${pskArg} allowed-ips 10.242.0.1/32,fd10:242::1/128 endpoint 192.168.242.1:52001`,
    );
  } finally {
    rmSync(pskFile, { force: true });
  }
  for (const [ns, dev, n] of [[ns1, tt, 1], [ns2, go, 2]] as const) {
    sh(
      `ip -n ${ns} addr add 10.242.0.${n}/24 dev ${dev} && ip -n ${ns} addr add fd10:242::${n}/64 dev ${dev} nodad`,
    );
    sh(`ip -n ${ns} link set ${dev} up`);
  }
  return { ns1, ns2, tt, go, veth1: veth1!, k1, k2 };
}

const test = (name: string, fn: (lab: Lab) => Promise<void>) => labTest(name, skip, fn);

for (const initiator of ["typetun", "wireguard-go"] as const) {
  for (const psk of [false, true]) {
    const variant = psk ? "noble AEAD, no offloads" : "native AEAD, offloads";
    test(
      `interop: typetun (${variant}) ↔ wireguard-go, ${initiator} initiating, ${
        psk ? "with" : "without"
      } PSK`,
      async (lab) => {
        // typetun's two transport AEAD backends both meet wireguard-go: native without a PSK, noble with one; and
        // so do its two data planes: with the kernel's offloads (TSO/GRO, UDP GSO/GRO) and with one packet per call.
        const { ns1, ns2, tt, go } = await pair(lab, {
          psk,
          env: psk ? { TYPETUN_CRYPTO: "noble", TYPETUN_OFFLOAD: "0" } : { TYPETUN_CRYPTO: "native" },
        });
        // The first packet decides who initiates.
        if (initiator === "typetun") inNs(ns1, "ping -c 2 -i 0.3 -W 3 10.242.0.2");
        else inNs(ns2, "ping -c 2 -i 0.3 -W 3 10.242.0.1");
        inNs(ns1, "ping -c 2 -i 0.3 -W 3 fd10:242::2");
        inNs(ns2, "ping -c 2 -i 0.3 -W 3 fd10:242::1");
        await tcpIntact(ns1, ns2, "10.242.0.2", 7101, 20 * 1024 * 1024);
        await tcpIntact(ns2, ns1, "fd10:242::1", 7102, 20 * 1024 * 1024);

        // Both sides report a recent handshake, and agree on the transfer. A bulk transfer loses some datagrams
        // at socket buffers (more on a loaded machine), so over the whole run received ≤ sent; over a quiet
        // stretch of pings the two sides' counters move by exactly the same bytes.
        for (const dev of [tt, go]) {
          const hs = Number(sh(`wg show ${dev} latest-handshakes`).trim().split(/\s+/)[1]);
          assert.ok(Math.abs(hs - Date.now() / 1000) < 60, `${dev} shows a recent handshake`);
        }
        await sleep(300);
        const counters =
          () => [transfer("tx", tt), transfer("rx", go), transfer("tx", go), transfer("rx", tt)];
        const [ttSent, goReceived, goSent, ttReceived] = counters();
        assert.ok(goReceived! <= ttSent! && ttReceived! <= goSent!, `counters: ${counters()}`);
        let deltas: number[] = [];
        for (let attempt = 0; attempt < 3; attempt++) {
          const before = counters();
          inNs(ns1, "ping -c 10 -i 0.05 -W 2 10.242.0.2");
          await sleep(300);
          deltas = counters().map((c, i) => c - before[i]!);
          // (A keepalive in flight at a snapshot would shift one side by 32 bytes: then look again.)
          if (deltas[0] === deltas[1] && deltas[2] === deltas[3]) break;
        }
        assert.ok(deltas[0]! >= 10 * 84, `typetun sent ${deltas[0]} B for 10 pings`);
        assert.equal(deltas[1], deltas[0], "wireguard-go received exactly what typetun sent");
        assert.equal(deltas[3], deltas[2], "typetun received exactly what wireguard-go sent");
        assert.ok(transfer("rx", go) > 20 * 1024 * 1024);
      },
    );
  }
}

/**
 * Key rotation across implementations. typetun's protocol clock runs TIME_SCALE times fast (a test-only
 * setting), so REKEY_AFTER_TIME (120 s) passes every 3 s and REJECT_AFTER_TIME (180 s) every 4.5 s, while
 * wireguard-go keeps real time. As the initiator typetun rekeys on its own; as the responder to wireguard-go's
 * session its keypair expires first and it starts the next handshake. Either way wireguard-go must follow
 * without the TCP connection stalling.
 */
const TIME_SCALE = 40;
for (const initiator of ["typetun", "wireguard-go"] as const) {
  test(`interop: rekeys during a transfer, ${initiator} initiating, typetun's timers 40× fast`, async (lab) => {
    const { ns1, ns2, tt, go } = await pair(lab, { env: { TYPETUN_TEST_TIME_SCALE: String(TIME_SCALE) } });
    if (initiator === "typetun") inNs(ns1, "ping -c 1 -W 3 10.242.0.2");
    else inNs(ns2, "ping -c 1 -W 3 10.242.0.1");
    const server = spawn("ip", ["netns", "exec", ns2, "iperf3", "-s", "-1", "-B", "10.242.0.2"], {
      stdio: "ignore",
    });
    try {
      await sleep(300);
      const handshakes = new Set<string>();
      const client = spawn("ip", ["netns", "exec", ns1, "iperf3", "--json", "-t", "12", "-c", "10.242.0.2"], {
        stdio: ["ignore", "pipe", "ignore"],
      });
      let json = "";
      client.stdout!.on("data", (d) => (json += d.toString()));
      // wireguard-go's view of the session: each rekey shows as a new latest-handshake time (1 s resolution;
      // rekeys come 3 s apart).
      while ((await waitExit(client, 250)) === null) handshakes.add(sh(`wg show ${go} latest-handshakes`));
      const run = JSON.parse(json);
      assert.equal(run.error, undefined, `iperf3 finished: ${run.error}`);
      // Every one-second interval moved data: the connection never stalled across a rekey.
      const idle = run.intervals.filter((i: { sum: { bytes: number } }) => i.sum.bytes === 0).length;
      assert.equal(idle, 0, `${idle} one-second intervals without data`);
      assert.ok(handshakes.size >= 4, `wireguard-go saw ${handshakes.size - 1} rekeys in 12 s`);
      console.log(
        `${handshakes.size - 1} rekeys in 12 s, ${
          (run.end.sum_received.bits_per_second / 1e6).toFixed(0)
        } Mbit/s`,
      );
      const tx = transfer("tx", tt);
      assert.ok(tx > 10 * 1024 * 1024, `typetun sent ${tx} B`);
    } finally {
      if ((await waitExit(server, 3000)) === null) server.kill("SIGKILL");
    }
  });
}

/**
 * Roaming: typetun's side changes its outer address and listen port, first over IPv4 then moving to IPv6, and
 * wireguard-go learns the new endpoint from the first authenticated packet (paper 2.1).
 */
test("interop: wireguard-go follows typetun's new outer address and port", async (lab) => {
  const { ns1, ns2, tt, go, veth1, k1, k2 } = await pair(lab);
  inNs(ns1, "ping -c 1 -W 3 10.242.0.2");
  assert.equal(sh(`wg show ${go} endpoints`).trim(), `${k1.pub}\t192.168.242.1:52001`);

  // The primary address goes first: deleting it would take a secondary in the same subnet with it.
  sh(`ip -n ${ns1} addr del 192.168.242.1/24 dev ${veth1}`);
  sh(`ip -n ${ns1} addr add 192.168.242.11/24 dev ${veth1}`);
  wgSet(tt, null, "listen-port 52011");
  inNs(ns1, "ping -c 1 -W 3 10.242.0.2");
  assert.equal(sh(`wg show ${go} endpoints`).trim(), `${k1.pub}\t192.168.242.11:52011`);
  inNs(ns2, "ping -c 1 -W 3 10.242.0.1"); // and wireguard-go sends there

  wgSet(tt, null, `listen-port 52012 peer ${k2.pub} endpoint [fd00:242::2]:52002`);
  inNs(ns1, "ping -c 1 -W 3 fd10:242::2");
  assert.equal(sh(`wg show ${go} endpoints`).trim(), `${k1.pub}\t[fd00:242::1]:52012`);
  inNs(ns2, "ping -c 1 -W 3 fd10:242::1");
});
