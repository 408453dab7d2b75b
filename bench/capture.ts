/**
 * What `typetun capture` costs a bulk transfer (issue 16, part 4): iperf3 TCP through a typetun pair while
 * nobody captures, while `typetun capture IF -w /dev/null` runs on the sender, and the same with `--outer`.
 * With `--baseline DIR` (a source tree without the capture code, see below) a second pair runs from it over the
 * same veth, to show that the capture code costs nothing while nobody captures. The variants rotate in each
 * round, so the machine's other load falls on all alike. Reports each one's median throughput, the daemons' CPU
 * seconds per GB, and what the captures wrote and dropped.
 *
 *   deno run -A bench/capture.ts [--rounds N] [--time S] [--baseline DIR]
 *
 * A baseline tree: `git archive HEAD | tar -x -C DIR`, `ln -s $PWD/node_modules DIR/`, then take the capture
 * edits out of DIR/cmd/dataplane.ts and DIR/cmd/daemon.ts (the tap and the CaptureServer lines).
 * Root, iperf3 and wg are needed. Traffic stays in the two namespaces, which are deleted at the end, with every
 * process started killed by PID.
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import process from "node:process";
import { parseArgs } from "node:util";
import {
  cannotRun,
  inNs,
  joinPair,
  Lab,
  sh,
  sleep,
  tag,
  typetunCommand,
  waitExit,
} from "../tests/netns/_lab.ts";
import { cpuSeconds, median, tcpRound } from "./_measure.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    rounds: { type: "string", default: "4" },
    time: { type: "string", default: "6" },
    baseline: { type: "string" },
  },
});
const rounds = Number(values.rounds), seconds = Number(values.time);
const skip = cannotRun("wg", "iperf3");
if (skip) {
  console.error(`bench/capture.ts: ${skip}`);
  process.exit(1);
}

interface Round {
  gbps: number;
  cpuPerGb: number;
  captured?: number;
  dropped?: number;
}

const lab = new Lab();
const stop = () => {
  lab.cleanup();
  process.exit(130);
};
process.on("SIGINT", stop);
try {
  const t = tag();
  const nsA = lab.ns(`ca${t}`), nsB = lab.ns(`cb${t}`);
  lab.veth(nsA, nsB, ["192.168.247.1", "fd00:247::1"], ["192.168.247.2", "fd00:247::2"]);
  const cli = typetunCommand();
  const baseCmd = values.baseline ? [process.execPath, "run", "-A", `${values.baseline}/main.ts`] : null;
  const pairs = [
    { name: "current", cmd: cli, inner: "10.247.0", ports: [51871, 51872] },
    ...(baseCmd ? [{ name: "baseline", cmd: baseCmd, inner: "10.246.0", ports: [51873, 51874] }] : []),
  ].map((p, i) => ({
    ...p,
    a: { ns: nsA, wg: `c${i}a${t}`, port: p.ports[0]! },
    b: { ns: nsB, wg: `c${i}b${t}`, port: p.ports[1]! },
  }));
  const cpuOf: Record<string, () => number> = {};
  for (const p of pairs) {
    const env = { LOG_LEVEL: "error" };
    const daemons = [await lab.daemon(p.a.wg, nsA, env, p.cmd), await lab.daemon(p.b.wg, nsB, env, p.cmd)];
    cpuOf[p.name] = () => daemons.reduce((sum, d) => sum + cpuSeconds(d.pid!), 0);
    joinPair(p.a, p.b, "192.168.247.2", p.inner);
    inNs(nsA, `ping -c 3 -i 0.2 -W 3 ${p.inner}.2`);
  }
  const server = spawn("ip", ["netns", "exec", nsB, "iperf3", "-s", "-p", "5247"], { stdio: "ignore" });
  lab.children.push(server);
  await sleep(500);
  for (const p of pairs) inNs(nsA, `iperf3 -c ${p.inner}.2 -p 5247 -t 3 -J > /dev/null`, 60_000);

  const variants = [
    ...(baseCmd ? [{ label: "baseline (no capture code)", pair: "baseline", capture: null }] : []),
    { label: "nobody captures", pair: "current", capture: null },
    { label: "capture -w /dev/null", pair: "current", capture: [] as string[] },
    { label: "capture --outer -w /dev/null", pair: "current", capture: ["--outer"] },
  ];
  const results = new Map(variants.map((v) => [v.label, [] as Round[]]));
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < variants.length; k++) {
      const v = variants[(r + k) % variants.length]!;
      const p = pairs.find((p) => p.name === v.pair)!;
      let client: ChildProcess | null = null, err = "";
      if (v.capture) {
        client = spawn(cli[0]!, [...cli.slice(1), "capture", p.a.wg, ...v.capture, "-w", "/dev/null"], {
          stdio: ["ignore", "ignore", "pipe"],
        });
        lab.children.push(client);
        client.stderr!.on("data", (d) => (err += d.toString()));
        await sleep(1500); // the client's runtime starts
      }
      const round: Round = tcpRound(nsA, `${p.inner}.2`, 5247, seconds, cpuOf[p.name]!);
      if (client) {
        sh(`kill -INT ${client.pid}`);
        await waitExit(client, 20_000);
        round.captured = Number(/(\d+) packets captured/.exec(err)?.[1] ?? NaN);
        round.dropped = Number(/(\d+) packets dropped/.exec(err)?.[1] ?? NaN);
      }
      results.get(v.label)!.push(round);
      console.log(
        `round ${r + 1}: ${v.label.padEnd(30)} ${round.gbps.toFixed(3)} Gbit/s, ${
          round.cpuPerGb.toFixed(2)
        } CPU s/GB` +
          (client ? `, ${round.captured} captured, ${round.dropped} dropped` : ""),
      );
      await sleep(500);
    }
  }
  console.log(`\nTCP through typetun, ${rounds} rounds × ${seconds} s per variant, interleaved (medians):`);
  for (const [label, rs] of results) {
    const cap = rs[0]?.captured === undefined
      ? ""
      : `, captured ${median(rs.map((x) => x.captured!))} packets, dropped ${
        median(rs.map((x) => x.dropped!))
      }`;
    console.log(
      `  ${label.padEnd(30)} ${median(rs.map((x) => x.gbps)).toFixed(3)} Gbit/s, ` +
        `${median(rs.map((x) => x.cpuPerGb)).toFixed(2)} CPU s/GB${cap}  (${
          rs.map((x) => x.gbps.toFixed(2))
        })`,
    );
  }
} finally {
  lab.cleanup();
}
