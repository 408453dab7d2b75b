/**
 * Multihop throughput (issue 16): iperf3 TCP from the client to the target of tests/netns/_multihop.ts, with
 * the current wireguard-go as both relays, two ways:
 * - two hops: `typetun up -f wg0.conf --via entry.conf` (wg0 inside the entry hop, one process, one TUN);
 * - one hop: the same wg0 straight to the exit relay, its UDP forwarded by the entry relay unencrypted by
 *   a tunnel of its own (the same path and the same processes on it, one WireGuard layer less).
 * Both topologies stand side by side (separate namespaces) and the rounds alternate, so the machine's other
 * load falls on both alike. Reports each round and the median in Mbit/s.
 *
 *   nice -n 10 deno run -A bench/multihop.ts [--rounds N] [--time S]
 *
 * Root, iperf3, iptables, ncat and ../shared/tools/wireguard-go are needed; TYPETUN_BIN selects a binary
 * (default: this runtime on main.ts). Namespaces are deleted and processes killed by PID at the end.
 * @module
 */
import { spawnSync } from "node:child_process";
import process from "node:process";
import { parseArgs } from "node:util";
import { cannotRun, inNs, Lab, sleep } from "../tests/netns/_lab.ts";
import { multihopTopology, type Topology } from "../tests/netns/_multihop.ts";
import { median } from "./_measure.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { rounds: { type: "string", default: "3" }, time: { type: "string", default: "8" } },
});
const rounds = Number(values.rounds), seconds = Number(values.time);
const skip = cannotRun("iperf3", "iptables", "ping");
if (skip) {
  console.error(`bench/multihop.ts: ${skip}`);
  process.exit(1);
}

/** One iperf3 run from the client to the target; Mbit/s received. */
function iperf(topo: Topology): number {
  const server = spawnSync("ip", ["netns", "exec", topo.t, "iperf3", "-s", "-D", "-1", "-B", "192.168.73.2"]);
  if (server.status !== 0) throw new Error(`iperf3 -s: ${server.stderr}`);
  spawnSync("sleep", ["0.3"]);
  const r = spawnSync(
    "ip",
    ["netns", "exec", topo.c, "iperf3", "--json", "-t", String(seconds), "-c", "192.168.73.2"],
    { encoding: "utf8", timeout: (seconds + 30) * 1000 },
  );
  const run = JSON.parse(r.stdout);
  if (run.error) throw new Error(`iperf3: ${run.error}`);
  return run.end.sum_received.bits_per_second / 1e6;
}

const lab = new Lab();
try {
  const one = await multihopTopology(lab, { via: false });
  const two = await multihopTopology(lab, { via: true });
  for (const t of [one, two]) inNs(t.c, "ping -c 2 -W 5 192.168.73.2");
  await sleep(500);
  const results: Record<string, number[]> = { "one hop": [], "two hops": [] };
  for (let i = 0; i < rounds; i++) {
    for (const [name, topo] of [["one hop", one], ["two hops", two]] as const) {
      const mbps = iperf(topo);
      results[name]!.push(mbps);
      console.log(`round ${i + 1}: ${name}: ${mbps.toFixed(0)} Mbit/s`);
    }
  }
  for (const [name, xs] of Object.entries(results)) {
    console.log(
      `${name}: median ${median(xs).toFixed(0)} Mbit/s (${xs.map((x) => x.toFixed(0)).join(", ")})`,
    );
  }
  one.done();
  two.done();
} finally {
  lab.cleanup();
}
