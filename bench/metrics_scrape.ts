/**
 * What `--metrics` and a Prometheus scrape every second cost a bulk transfer (issue 14): iperf3 TCP through
 * typetun, three ways: a pair without `--metrics`, a pair whose daemons serve it but nobody asks, and the same
 * pair with both daemons scraped once a second (curl, as a Prometheus would: one connection per scrape). Both
 * pairs run side by side over one veth (the idle one costs nothing) and the rounds rotate the three, so the
 * machine's other load falls on all alike. Reports each one's median throughput and daemon CPU seconds per GB,
 * every round's figure, and how long the scrapes took during the transfers (the event loop serves them between
 * data-plane rounds).
 *
 *   deno run -A bench/metrics_scrape.ts [--rounds N] [--time S]
 *
 * Root, iperf3, wg and curl are needed; TYPETUN_BIN selects a binary (default: this runtime on main.ts).
 * Traffic stays in the two namespaces, which are deleted at the end, with every process started killed by PID.
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import process from "node:process";
import { parseArgs } from "node:util";
import { cannotRun, inNs, joinPair, Lab, sleep, tag } from "../tests/netns/_lab.ts";
import { cpuSeconds, median, tcpRound } from "./_measure.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { rounds: { type: "string", default: "4" }, time: { type: "string", default: "8" } },
});
const rounds = Number(values.rounds), seconds = Number(values.time);
const skip = cannotRun("wg", "iperf3", "curl");
if (skip) {
  console.error(`bench/metrics_scrape.ts: ${skip}`);
  process.exit(1);
}

const METRICS = "127.0.0.1:9586";
interface Round {
  gbps: number;
  cpuPerGb: number;
}

/** Scrapes /metrics in `ns` once a second until stopped; collects each scrape's time in ms. */
function scraper(ns: string, times: number[]): ChildProcess {
  const loop =
    `while :; do curl -s -o /dev/null -w '%{time_total}\\n' http://${METRICS}/metrics; sleep 1; done`;
  const child = spawn("ip", ["netns", "exec", ns, "sh", "-c", loop], { stdio: ["ignore", "pipe", "ignore"] });
  child.stdout!.on("data", (d: Buffer) => {
    for (const l of d.toString().split("\n")) if (l) times.push(Number(l) * 1000);
  });
  return child;
}

const lab = new Lab();
const stop = () => {
  lab.cleanup();
  process.exit(130);
};
process.on("SIGINT", stop);
try {
  const t = tag();
  const nsA = lab.ns(`sa${t}`), nsB = lab.ns(`sb${t}`);
  lab.veth(nsA, nsB, ["192.168.248.1", "fd00:248::1"], ["192.168.248.2", "fd00:248::2"]);
  // Two pairs over the same veth: one whose daemons serve --metrics, one whose daemons do not.
  const env = { TYPETUN_METRICS: METRICS, LOG_LEVEL: "error" };
  const pairs = [
    { name: "with", env, inner: "10.248.0", ports: [51881, 51882] },
    { name: "without", env: { LOG_LEVEL: "error" }, inner: "10.249.0", ports: [51883, 51884] },
  ].map((p, i) => ({
    ...p,
    a: { ns: nsA, wg: `s${i}a${t}`, port: p.ports[0]! },
    b: { ns: nsB, wg: `s${i}b${t}`, port: p.ports[1]! },
  }));
  const cpuOf: Record<string, () => number> = {};
  for (const p of pairs) {
    const daemons = [await lab.daemon(p.a.wg, nsA, p.env), await lab.daemon(p.b.wg, nsB, p.env)];
    cpuOf[p.name] = () => daemons.reduce((sum, d) => sum + cpuSeconds(d.pid!), 0);
    joinPair(p.a, p.b, "192.168.248.2", p.inner);
    inNs(nsA, `ping -c 3 -i 0.2 -W 3 ${p.inner}.2`);
  }
  const server = spawn("ip", ["netns", "exec", nsB, "iperf3", "-s", "-p", "5248"], { stdio: "ignore" });
  lab.children.push(server);
  await sleep(500);
  // A first transfer through each warms the JIT, so no column pays for it.
  for (const p of pairs) inNs(nsA, `iperf3 -c ${p.inner}.2 -p 5248 -t 3 -J > /dev/null`, 60_000);

  const variants = [
    { label: "no --metrics", pair: "without", scrape: false },
    { label: "--metrics, not scraped", pair: "with", scrape: false },
    { label: "--metrics, scraped 1/s", pair: "with", scrape: true },
  ];
  const results = new Map(variants.map((v) => [v.label, [] as Round[]]));
  const scrapeMs: number[] = [];
  for (let r = 0; r < rounds; r++) {
    // Each round starts with another variant, so none always runs first or last.
    for (let k = 0; k < variants.length; k++) {
      const v = variants[(r + k) % variants.length]!;
      const p = pairs.find((p) => p.name === v.pair)!;
      const scrapers = v.scrape ? [scraper(nsA, scrapeMs), scraper(nsB, scrapeMs)] : [];
      scrapers.forEach((s) => lab.children.push(s));
      const round = tcpRound(nsA, `${p.inner}.2`, 5248, seconds, cpuOf[p.name]!);
      for (const s of scrapers) s.kill("SIGKILL");
      results.get(v.label)!.push(round);
      console.log(
        `round ${r + 1}: ${v.label.padEnd(24)} ${round.gbps.toFixed(3)} Gbit/s, ${
          round.cpuPerGb.toFixed(2)
        } CPU s/GB`,
      );
      await sleep(500);
    }
  }
  console.log(`\nTCP through typetun, ${rounds} rounds × ${seconds} s per variant, interleaved (medians):`);
  for (const [label, rs] of results) {
    console.log(
      `  ${label.padEnd(24)} ${median(rs.map((x) => x.gbps)).toFixed(3)} Gbit/s, ` +
        `${median(rs.map((x) => x.cpuPerGb)).toFixed(2)} CPU s/GB  (${rs.map((x) => x.gbps.toFixed(2))})`,
    );
  }
  console.log(
    `  ${scrapeMs.length} scrapes during the transfers took median ${median(scrapeMs).toFixed(1)} ms, ` +
      `max ${Math.max(...scrapeMs).toFixed(1)} ms`,
  );
} finally {
  lab.cleanup();
}
