/**
 * Scale in peers (issue 12, root): 10,000 idle peers configured on both sides of a pair must not slow down the
 * one active peer, nor the `wg` commands that configure and read them. Two daemons in two namespaces, joined by
 * a veth, with one active peer each. The test alternates phases without and with the extra peers, three of
 * each (`wg addconf` adds them, `wg syncconf` back to the saved configuration removes them), so that other load
 * on the machine, which comes and goes, falls on both sides of the comparison. In each phase: TCP throughput
 * (iperf3, 2 s) and 20 pings 0.05 s apart through the active peer. With the extra peers:
 * - the median throughput is at least 85 % of the median without (single runs here vary by up to 2×);
 * - the median RTT is at most 1.5× the median without;
 * - `wg addconf` of 10,000 peers (random keys, one /32 each, an endpoint) takes under 5 s a side;
 * - `wg show IF dump` takes under 1 s and lists all 10,001 peers.
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
/** Pairs of phases, without and with the extra peers. */
const CYCLES = 3;

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

/** The RTTs in ms of 20 pings 0.05 s apart from ns1 to `addr`. */
function pings(ns1: string, addr: string): number[] {
  const out = inNs(ns1, `ping -c 20 -i 0.05 -W 2 ${addr}`);
  const times = [...out.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  assert.ok(times.length >= 18, `pings answered: ${times.length} of 20\n${out}`);
  return times;
}

function median(xs: number[]): number {
  const s = xs.toSorted((a, b) => a - b);
  return s[s.length >> 1]!;
}

function timed(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return (performance.now() - t0) / 1000;
}

labTest(
  `scale: ${EXTRA_PEERS} idle peers on both sides leave the active peer's traffic and wg fast`,
  skip,
  async (lab: Lab) => {
    const t = tag();
    const ns1 = lab.ns(`ts1${t}`), ns2 = lab.ns(`ts2${t}`);
    lab.veth(ns1, ns2, ["192.168.243.1", "fd00:243::1"], ["192.168.243.2", "fd00:243::2"]);
    const devs = [`tsa${t}`, `tsb${t}`];
    await lab.daemon(devs[0]!, ns1, { LOG_LEVEL: "error" });
    await lab.daemon(devs[1]!, ns2, { LOG_LEVEL: "error" });
    const k1 = wgKeys(), k2 = wgKeys();
    wgSet(
      devs[0]!,
      k1.priv,
      `listen-port 52101 peer ${k2.pub} allowed-ips 10.243.0.2/32 endpoint 192.168.243.2:52102`,
    );
    wgSet(
      devs[1]!,
      k2.priv,
      `listen-port 52102 peer ${k1.pub} allowed-ips 10.243.0.1/32 endpoint 192.168.243.1:52101`,
    );
    for (const [ns, dev, n] of [[ns1, devs[0]!, 1], [ns2, devs[1]!, 2]] as const) {
      sh(`ip -n ${ns} addr add 10.243.0.${n}/24 dev ${dev} && ip -n ${ns} link set ${dev} up`);
    }
    inNs(ns1, "ping -c 3 -i 0.2 -W 3 10.243.0.2");
    await throughput(ns1, ns2, "10.243.0.2", 1); // warm-up: handshake done, hot paths compiled

    // wg runs in the test's namespace: the UAPI sockets are there (the daemons were started from it).
    const base = devs.map((_, i) => `/tmp/typetun-scale-${t}-base${i}.conf`);
    const extra = devs.map((_, i) => `/tmp/typetun-scale-${t}-extra${i}.conf`);
    const mbps = { without: [] as number[], with: [] as number[] };
    const rtts = { without: [] as number[], with: [] as number[] };
    const addconf: number[] = [];
    let dump = 0;
    try {
      devs.forEach((dev, i) => {
        writeFileSync(base[i]!, sh(`wg showconf ${dev}`), { mode: 0o600 });
        writeFileSync(extra[i]!, idlePeers(EXTRA_PEERS));
      });
      for (let n = 0; n < 2 * CYCLES; n++) {
        const phase = n % 2 === 0 ? "without" : "with";
        if (phase === "with") {
          devs.forEach((dev, i) => addconf.push(timed(() => sh(`wg addconf ${dev} ${extra[i]}`, 60_000))));
          let lines = 0;
          dump = Math.max(dump, timed(() => lines = sh(`wg show ${devs[0]} dump`).trim().split("\n").length));
          assert.equal(lines, 1 + 1 + EXTRA_PEERS, "wg show dump lists the interface and every peer");
          dump = Math.max(dump, timed(() => sh(`wg show ${devs[1]} dump`)));
        } else if (addconf.length > 0) {
          devs.forEach((dev, i) => sh(`wg syncconf ${dev} ${base[i]}`, 60_000));
          assert.equal(sh(`wg show ${devs[0]} peers`).trim().split("\n").length, 1, "back to one peer");
        }
        await sleep(200);
        mbps[phase].push(await throughput(ns1, ns2, "10.243.0.2", 2));
        rtts[phase].push(...pings(ns1, "10.243.0.2"));
      }
    } finally {
      [...base, ...extra].forEach((f) => rmSync(f, { force: true }));
    }

    const mbpsWithout = median(mbps.without), mbpsWith = median(mbps.with);
    const rttWithout = median(rtts.without), rttWith = median(rtts.with);
    const figures = {
      implementation: process.env.TYPETUN_BIN ?? "typetun (this checkout)",
      mbpsWithout: mbps.without.map(Math.round),
      mbpsWith: mbps.with.map(Math.round),
      throughputKept: +(mbpsWith / mbpsWithout).toFixed(2),
      rttWithoutMs: rttWithout,
      rttWithMs: rttWith,
      rttRatio: +(rttWith / rttWithout).toFixed(2),
      addconfSeconds: addconf.map((s) => +s.toFixed(2)),
      dumpSeconds: +dump.toFixed(2),
    };
    console.log(`scale: ${JSON.stringify(figures)}`);
    assert.ok(mbpsWith >= 0.85 * mbpsWithout, `throughput kept: ${mbpsWith} of ${mbpsWithout} Mbit/s`);
    assert.ok(rttWith <= 1.5 * rttWithout, `RTT ${rttWith} ms, was ${rttWithout} ms`);
    for (const s of addconf) assert.ok(s < 5, `wg addconf of ${EXTRA_PEERS} peers took ${s} s`);
    assert.ok(dump < 1, `wg show dump took ${dump} s`);
  },
);
