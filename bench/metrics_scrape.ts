/**
 * What a Prometheus scrape every second costs a bulk transfer (issue 14): iperf3 TCP through a typetun pair
 * whose daemons both serve `--metrics`, in rounds that alternate "no scraper" and "both daemons scraped once a
 * second" (curl, as a Prometheus would: one connection per scrape), so that the machine's other load falls on
 * both. Reports the median throughput of each, every round's figure, and how long the scrapes took while the
 * transfer ran (the event loop serves them between data-plane rounds).
 *
 *   deno run -A bench/metrics_scrape.ts [--rounds N] [--time S]
 *
 * Root, iperf3, wg and curl are needed; TYPETUN_BIN selects a binary (default: this runtime on main.ts).
 * Traffic stays in the two namespaces, which are deleted at the end, with every process started killed by PID.
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import process from "node:process";
import { parseArgs } from "node:util";
import { cannotRun, inNs, Lab, sleep, tag } from "../tests/netns/_lab.ts";
import { joinPair } from "../tests/netns/_lab.ts";

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
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** User + system CPU seconds of a process so far (/proc/PID/stat fields 14 and 15, in ticks of 1/100 s). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
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
  const a = { ns: nsA, wg: `swa${t}`, port: 51881 }, b = { ns: nsB, wg: `swb${t}`, port: 51882 };
  const env = { TYPETUN_METRICS: METRICS, LOG_LEVEL: "error" };
  const daemons = [await lab.daemon(a.wg, nsA, env), await lab.daemon(b.wg, nsB, env)];
  const cpu = () => daemons.reduce((sum, d) => sum + cpuSeconds(d.pid!), 0);
  joinPair(a, b, "192.168.248.2", "10.248.0");
  inNs(nsA, "ping -c 3 -i 0.2 -W 3 10.248.0.2");
  const server = spawn("ip", ["netns", "exec", nsB, "iperf3", "-s", "-p", "5248"], { stdio: "ignore" });
  lab.children.push(server);
  await sleep(500);
  // A first transfer warms the JIT, so neither column pays for it.
  inNs(nsA, `iperf3 -c 10.248.0.2 -p 5248 -t 3 -J > /dev/null`, 60_000);

  const plain: Round[] = [], scraped: Round[] = [], scrapeMs: number[] = [];
  for (let r = 0; r < rounds; r++) {
    for (const withScraper of r % 2 ? [true, false] : [false, true]) {
      const scrapers = withScraper ? [scraper(nsA, scrapeMs), scraper(nsB, scrapeMs)] : [];
      scrapers.forEach((s) => lab.children.push(s));
      const cpu0 = cpu();
      const out = JSON.parse(
        inNs(nsA, `iperf3 -c 10.248.0.2 -p 5248 -t ${seconds} -J`, (seconds + 30) * 1000),
      );
      // The daemons' CPU time per GB received: steadier than throughput on a machine whose cores are shared.
      const round = {
        gbps: out.end.sum_received.bits_per_second / 1e9,
        cpuPerGb: (cpu() - cpu0) / (out.end.sum_received.bytes / 1e9),
      };
      for (const s of scrapers) s.kill("SIGKILL");
      (withScraper ? scraped : plain).push(round);
      console.log(
        `round ${r + 1}: ${withScraper ? "scraped 1/s" : "no scraper "}  ${round.gbps.toFixed(3)} Gbit/s, ` +
          `${round.cpuPerGb.toFixed(2)} CPU s/GB`,
      );
      await sleep(500);
    }
  }
  const row = (label: string, rs: Round[]) =>
    console.log(
      `  ${label.padEnd(24)} median ${median(rs.map((x) => x.gbps)).toFixed(3)} Gbit/s, ` +
        `${median(rs.map((x) => x.cpuPerGb)).toFixed(2)} CPU s/GB  (${rs.map((x) => x.gbps.toFixed(2))})`,
    );
  console.log(`\nTCP through typetun, ${rounds} × ${seconds} s each, interleaved:`);
  row("no scraper:", plain);
  row("/metrics of both, 1/s:", scraped);
  const m = (rs: Round[]) => median(rs.map((x) => x.gbps));
  console.log(
    `  difference: ${(100 * (m(scraped) - m(plain)) / m(plain)).toFixed(1)} %; ` +
      `${scrapeMs.length} scrapes during the transfers took median ${median(scrapeMs).toFixed(1)} ms, ` +
      `max ${Math.max(...scrapeMs).toFixed(1)} ms`,
  );
} finally {
  lab.cleanup();
}
