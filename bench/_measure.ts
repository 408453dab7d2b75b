/**
 * Small helpers the namespace benchmarks share: the median of a list, a process's CPU time from /proc, and one
 * measured iperf3 TCP run.
 * @module
 */
import { readFileSync } from "node:fs";
import { inNs } from "../tests/netns/_lab.ts";

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** User + system CPU seconds of a process so far (/proc/PID/stat fields 14 and 15, in ticks of 1/100 s). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * One iperf3 TCP run of `seconds` from namespace `ns` to `host`:`port`: Gbit/s received, and how much `cpu` (the
 * daemons' CPU seconds) grew per GB received, which is steadier than throughput on a machine whose cores are shared.
 */
export function tcpRound(
  ns: string,
  host: string,
  port: number,
  seconds: number,
  cpu: () => number,
): { gbps: number; cpuPerGb: number } {
  const cpu0 = cpu();
  const out = JSON.parse(inNs(ns, `iperf3 -c ${host} -p ${port} -t ${seconds} -J`, (seconds + 30) * 1000));
  return {
    gbps: out.end.sum_received.bits_per_second / 1e9,
    cpuPerGb: (cpu() - cpu0) / (out.end.sum_received.bytes / 1e9),
  };
}
