/**
 * What per-connection statistics and per-peer filters (issue 16) cost a bulk transfer: iperf3 TCP through
 * typetun three ways — statistics off (TYPETUN_CONNECTIONS=off) and no filter, statistics on and no filter,
 * statistics on and both daemons filtering the other peer (B: `allow_inbound=tcp/5248`, A:
 * `allow_outbound=tcp/5248`, so every packet goes through the rule check or the connection state) — and a
 * fourth pair set up as the first (off), a control: what two identical pairs differ by is the noise floor
 * the other differences must rise above. The pairs run side by side over one veth (the idle ones cost nothing)
 * and the rounds rotate them, so the machine's other load falls on all alike. Reports each one's median
 * throughput and daemon CPU seconds per GB.
 *
 *   deno run -A bench/connections.ts [--rounds N] [--time S]
 *
 * Root, iperf3, wg and ncat are needed; TYPETUN_BIN selects a binary (default: this runtime on main.ts).
 * Traffic stays in the two namespaces, which are deleted at the end, with every process started killed by PID.
 * @module
 */
import { spawn } from "node:child_process";
import process from "node:process";
import { parseArgs } from "node:util";
import { cannotRun, inNs, joinPair, Lab, sleep, tag } from "../tests/netns/_lab.ts";
import { cpuSeconds, median, tcpRound } from "./_measure.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { rounds: { type: "string", default: "4" }, time: { type: "string", default: "8" } },
});
const rounds = Number(values.rounds), seconds = Number(values.time);
const skip = cannotRun("wg", "iperf3", "ncat");
if (skip) {
  console.error(`bench/connections.ts: ${skip}`);
  process.exit(1);
}

interface Round {
  gbps: number;
  cpuPerGb: number;
}
/** A typetun-only UAPI set for one peer, sent to the daemon's socket as the CLI would (ncat -U). */
function setFilter(ns: string, ifname: string, peerBase64: string, line: string): void {
  const hex = Buffer.from(peerBase64, "base64").toString("hex");
  const reply = inNs(
    ns,
    `printf 'set=1\\npublic_key=${hex}\\n${line}\\n\\n' | ncat -i 1 -U /var/run/wireguard/${ifname}.sock || true`,
  );
  if (!reply.includes("errno=0")) throw new Error(`${ifname}: ${line} refused: ${reply}`);
}

const lab = new Lab();
const stop = () => {
  lab.cleanup();
  process.exit(130);
};
process.on("SIGINT", stop);
try {
  const t = tag();
  const nsA = lab.ns(`qa${t}`), nsB = lab.ns(`qb${t}`);
  lab.veth(nsA, nsB, ["192.168.249.1", "fd00:249::1"], ["192.168.249.2", "fd00:249::2"]);
  const quiet = { LOG_LEVEL: "error" };
  const pairs = [
    { name: "off", env: { ...quiet, TYPETUN_CONNECTIONS: "off" }, inner: "10.251.0", filter: false },
    { name: "on", env: { ...quiet, TYPETUN_CONNECTIONS: "on" }, inner: "10.252.0", filter: false },
    { name: "filter", env: { ...quiet, TYPETUN_CONNECTIONS: "on" }, inner: "10.253.0", filter: true },
    { name: "control", env: { ...quiet, TYPETUN_CONNECTIONS: "off" }, inner: "10.254.0", filter: false },
  ].map((p, i) => ({
    ...p,
    a: { ns: nsA, wg: `c${i}a${t}`, port: 51891 + 2 * i },
    b: { ns: nsB, wg: `c${i}b${t}`, port: 51892 + 2 * i },
  }));
  const cpuOf: Record<string, () => number> = {};
  for (const p of pairs) {
    const daemons = [await lab.daemon(p.a.wg, nsA, p.env), await lab.daemon(p.b.wg, nsB, p.env)];
    cpuOf[p.name] = () => daemons.reduce((sum, d) => sum + cpuSeconds(d.pid!), 0);
    const keys = joinPair(p.a, p.b, "192.168.249.2", p.inner);
    if (p.filter) {
      setFilter(nsB, p.b.wg, keys.a.pub, "allow_inbound=tcp/5248");
      setFilter(nsA, p.a.wg, keys.b.pub, "allow_outbound=tcp/5248");
    }
    inNs(nsA, `ping -c 3 -i 0.2 -W 3 ${p.inner}.2 || true`);
  }
  const server = spawn("ip", ["netns", "exec", nsB, "iperf3", "-s", "-p", "5248"], { stdio: "ignore" });
  lab.children.push(server);
  await sleep(500);
  // A first transfer through each warms the JIT, so no column pays for it.
  for (const p of pairs) inNs(nsA, `iperf3 -c ${p.inner}.2 -p 5248 -t 3 -J > /dev/null`, 60_000);

  const variants = [
    { label: "statistics off", pair: "off" },
    { label: "statistics on", pair: "on" },
    { label: "statistics on + filter", pair: "filter" },
    { label: "statistics off, control", pair: "control" },
  ];
  const results = new Map(variants.map((v) => [v.label, [] as Round[]]));
  for (let r = 0; r < rounds; r++) {
    // Each round starts with another variant, so none always runs first or last.
    for (let k = 0; k < variants.length; k++) {
      const v = variants[(r + k) % variants.length]!;
      const p = pairs.find((p) => p.name === v.pair)!;
      const round = tcpRound(nsA, `${p.inner}.2`, 5248, seconds, cpuOf[p.name]!);
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
  // The filtered pair's B side: what the statistics and the filter saw.
  const f = pairs.find((p) => p.name === "filter")!;
  console.log(
    inNs(
      nsB,
      `printf 'get=connections\\n\\n' | (ncat -i 1 -U /var/run/wireguard/${f.b.wg}.sock || true) | head -12`,
    ),
  );
} finally {
  lab.cleanup();
}
