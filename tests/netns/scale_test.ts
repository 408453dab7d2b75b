/**
 * Scale in peers (issue 12, root): 10,000 idle peers configured on both sides of a pair must not slow down the
 * one active peer, nor the `wg` commands that configure and read them. Two daemons in two namespaces, joined by
 * a veth, with one active peer each; then, in the same test:
 * - TCP throughput (iperf3, the better of two 2 s runs, as other load on the machine only ever lowers it) and
 *   ping RTT (median of 20 pings 0.05 s apart) through the active peer;
 * - `wg addconf` of 10,000 more peers on each side (random keys, one /32 each, an endpoint): under 5 s a side;
 * - `wg show IF dump`: under 1 s, listing all 10,001 peers;
 * - throughput and RTT again: at least 85 % of the throughput, at most 1.5× the RTT of the first measurement.
 *
 * `TYPETUN_BIN=/path/to/wireguard-go` (or a wrapper around another checkout) measures another implementation
 * the same way; the figures are printed as one `scale:` JSON line before anything is asserted.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import process from "node:process";
import { cannotRun, inNs, type Lab, labTest, sh, sleep, tag, waitExit, wgKeys, wgSet } from "./_lab.ts";

const skip = cannotRun("wg", "iperf3", "ping");
if (skip) console.log(`scale test skipped: ${skip}`);

const EXTRA_PEERS = 10_000;

/** A `wg addconf` file of `n` peers with random public keys, one /32 each from 10.100.0.0/14, and endpoints. */
function idlePeers(n: number): string {
  const key = new Uint8Array(32);
  let out = "";
  for (let i = 0; i < n; i++) {
    crypto.getRandomValues(key);
    const pub = btoa(String.fromCharCode(...key));
    const ip = `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
    // TEST-NET-3 endpoints: never used, since these peers stay idle.
    out += `[Peer]\nPublicKey = ${pub}\nAllowedIPs = ${ip}/32\nEndpoint = 203.0.113.${i % 250 + 1}:${
      20000 + (i % 40000)
    }\n\n`;
  }
  return out;
}

/** TCP throughput from ns1 to `addr` in ns2, in Mbit/s, as the receiver counted it. */
async function throughput(ns1: string, ns2: string, addr: string, seconds: number): Promise<number> {
  const server = spawn("ip", ["netns", "exec", ns2, "iperf3", "-s", "-1", "-p", "5299"], { stdio: "ignore" });
  try {
    await sleep(300);
    const json = JSON.parse(inNs(ns1, `iperf3 -c ${addr} -p 5299 -t ${seconds} -J`, (seconds + 20) * 1000));
    return json.end.sum_received.bits_per_second / 1e6;
  } finally {
    if ((await waitExit(server, 3000)) === null) server.kill("SIGKILL");
  }
}

/** The better of two 2-second throughput runs. */
async function bestThroughput(ns1: string, ns2: string, addr: string): Promise<number> {
  const first = await throughput(ns1, ns2, addr, 2);
  return Math.max(first, await throughput(ns1, ns2, addr, 2));
}

/** The median RTT in ms of 20 pings 0.05 s apart from ns1 to `addr`. */
function rtt(ns1: string, addr: string): number {
  const out = inNs(ns1, `ping -c 20 -i 0.05 -W 2 ${addr}`);
  const times = [...out.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1])).sort((a, b) => a - b);
  assert.ok(times.length >= 18, `pings answered: ${times.length} of 20\n${out}`);
  return times[times.length >> 1]!;
}

function timed(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return (performance.now() - t0) / 1000;
}

labTest(
  `scale: ${EXTRA_PEERS} idle peers on both sides leave the active peer's traffic and wg fast`,
  skip,
  async (
    lab: Lab,
  ) => {
    const t = tag();
    const ns1 = lab.ns(`ts1${t}`), ns2 = lab.ns(`ts2${t}`);
    lab.veth(ns1, ns2, ["192.168.243.1", "fd00:243::1"], ["192.168.243.2", "fd00:243::2"]);
    const if1 = `tsa${t}`, if2 = `tsb${t}`;
    await lab.daemon(if1, ns1, { LOG_LEVEL: "error" });
    await lab.daemon(if2, ns2, { LOG_LEVEL: "error" });
    const k1 = wgKeys(), k2 = wgKeys();
    wgSet(
      if1,
      k1.priv,
      `listen-port 52101 peer ${k2.pub} allowed-ips 10.243.0.2/32 endpoint 192.168.243.2:52102`,
    );
    wgSet(
      if2,
      k2.priv,
      `listen-port 52102 peer ${k1.pub} allowed-ips 10.243.0.1/32 endpoint 192.168.243.1:52101`,
    );
    for (const [ns, dev, n] of [[ns1, if1, 1], [ns2, if2, 2]] as const) {
      sh(`ip -n ${ns} addr add 10.243.0.${n}/24 dev ${dev} && ip -n ${ns} link set ${dev} up`);
    }
    inNs(ns1, "ping -c 3 -i 0.2 -W 3 10.243.0.2");
    await throughput(ns1, ns2, "10.243.0.2", 1); // warm-up: handshake done, hot paths compiled

    const mbpsBefore = await bestThroughput(ns1, ns2, "10.243.0.2");
    const rttBefore = rtt(ns1, "10.243.0.2");

    const files = [1, 2].map((n) => `/tmp/typetun-scale-${t}-${n}.conf`);
    let addconf: number[];
    try {
      files.forEach((f) => writeFileSync(f, idlePeers(EXTRA_PEERS)));
      // wg runs in the test's namespace: the UAPI sockets are there (the daemons were started from it).
      addconf = [if1, if2].map((dev, i) => timed(() => sh(`wg addconf ${dev} ${files[i]}`, 60_000)));
    } finally {
      files.forEach((f) => rmSync(f, { force: true }));
    }
    let lines = 0;
    let dump = timed(() => lines = sh(`wg show ${if1} dump`).trim().split("\n").length);
    assert.equal(lines, 1 + 1 + EXTRA_PEERS, "wg show dump lists the interface and every peer");
    // The other side too: the slower of the two counts.
    dump = Math.max(dump, timed(() => sh(`wg show ${if2} dump`)));
    await sleep(200);
    const mbpsAfter = await bestThroughput(ns1, ns2, "10.243.0.2");
    const rttAfter = rtt(ns1, "10.243.0.2");

    const figures = {
      implementation: process.env.TYPETUN_BIN ?? "typetun (this checkout)",
      mbpsBefore: Math.round(mbpsBefore),
      mbpsAfter: Math.round(mbpsAfter),
      throughputKept: +(mbpsAfter / mbpsBefore).toFixed(2),
      rttBeforeMs: rttBefore,
      rttAfterMs: rttAfter,
      rttRatio: +(rttAfter / rttBefore).toFixed(2),
      addconfSeconds: addconf.map((s) => +s.toFixed(2)),
      dumpSeconds: +dump.toFixed(2),
    };
    console.log(`scale: ${JSON.stringify(figures)}`);
    assert.ok(mbpsAfter >= 0.85 * mbpsBefore, `throughput kept: ${mbpsAfter} of ${mbpsBefore} Mbit/s`);
    assert.ok(rttAfter <= 1.5 * rttBefore, `RTT ${rttAfter} ms, was ${rttBefore} ms`);
    for (const s of addconf) assert.ok(s < 5, `wg addconf of ${EXTRA_PEERS} peers took ${s} s`);
    assert.ok(dump < 1, `wg show dump took ${dump} s`);
  },
);
