/**
 * The benchmark harness's own arithmetic (bench/harness.ts), which needs no root: which pairs a selection
 * runs, how a ping run is read, and the CPU time read from /proc that the CPU-seconds-per-GB figure rests on.
 */
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import process from "node:process";
import {
  allPairs,
  cpuSeconds,
  parseOptions,
  parsePing,
  selectPairs,
  UsageError,
} from "../../bench/harness.ts";

const names = (pairs: { name: string }[]) => pairs.map((p) => p.name);

Deno.test("bench: the idle-peers case runs on the pairs with one implementation on both sides", () => {
  const pairs = allPairs([null], true);
  const all = selectPairs(pairs, null, true);
  assert.deepEqual(names(all.scale), ["wireguard-go", "typetun", "typetun(baseline)"]);
  assert.equal(all.pairs.length, pairs.length);
  assert.ok(all.startup);

  // `--only scale` alone: the idle-peers case only, nothing else.
  const scaleOnly = selectPairs(pairs, ["scale"], false);
  assert.deepEqual(names(scaleOnly.pairs), []);
  assert.deepEqual(names(scaleOnly.scale), ["wireguard-go", "typetun", "typetun(baseline)"]);
  assert.equal(scaleOnly.startup, false);

  // Named rows narrow it down; mixed pairs never get it.
  assert.deepEqual(names(selectPairs(pairs, ["typetun"], true).scale), ["typetun", "typetun(baseline)"]);
  assert.deepEqual(names(selectPairs(pairs, ["mixed", "scale"], false).scale), []);
  assert.deepEqual(names(selectPairs(pairs, ["typetun→wireguard-go"], false).pairs), [
    "typetun→wireguard-go",
  ]);
  // Without --scale or "scale", no idle peers.
  assert.deepEqual(names(selectPairs(pairs, null, false).scale), []);
  assert.throws(() => selectPairs(pairs, ["sclae"], false), UsageError);
});

Deno.test("bench: options are checked before anything runs", () => {
  assert.equal(parseOptions(["--help"]), null);
  assert.throws(() => parseOptions(["--rounds", "0"]), /--rounds must be a whole number from 1 to 20/);
  assert.throws(() => parseOptions(["--udp-rate", "fast"]), /--udp-rate/);
  assert.throws(() => parseOptions(["--baseline", "/nonexistent/typetun"]), /no such file/);
  const o = parseOptions([
    "--rounds",
    "1",
    "--time",
    "1",
    "--only",
    "scale,typetun->wireguard-go",
    "--scale",
  ])!;
  assert.deepEqual([o.rounds, o.time, o.scale], [1, 1, true]);
  assert.deepEqual(o.only, ["scale", "typetun→wireguard-go"]);
});

Deno.test("bench: a ping run gives the median and mean of the answered pings and the share lost", () => {
  const out = `PING 10.250.0.2 (10.250.0.2) 56(84) bytes of data.
64 bytes from 10.250.0.2: icmp_seq=1 ttl=64 time=1.90 ms
64 bytes from 10.250.0.2: icmp_seq=2 ttl=64 time=0.300 ms
64 bytes from 10.250.0.2: icmp_seq=2 ttl=64 time=0.950 ms (DUP!)
64 bytes from 10.250.0.2: icmp_seq=4 ttl=64 time=0.400 ms

--- 10.250.0.2 ping statistics ---
4 packets transmitted, 3 received, +1 duplicates, 25% packet loss, time 151ms
rtt min/avg/max/mdev = 0.300/0.887/1.900/0.643 ms
`;
  const p = parsePing(out);
  assert.equal(p.sent, 4);
  assert.equal(p.medianMs, 0.4);
  assert.ok(Math.abs(p.avgMs! - 0.8667) < 1e-3, `mean ${p.avgMs}`);
  assert.equal(p.lossPercent, 25);
  assert.throws(
    () =>
      parsePing("PING x\n\n--- x ping statistics ---\n5 packets transmitted, 0 received, 100% packet loss\n"),
    /none of 5 answered/,
  );
  assert.throws(() => parsePing("", "ping: connect: Network is unreachable"), /Network is unreachable/);
});

Deno.test("bench: CPU seconds read from /proc/PID/stat follow the CPU a process burns", () => {
  const usage0 = process.cpuUsage(), proc0 = cpuSeconds(process.pid);
  const t0 = performance.now();
  let x = 0;
  while (performance.now() - t0 < 300) x += Math.sqrt(x + 1);
  const used = process.cpuUsage(usage0), proc = cpuSeconds(process.pid) - proc0;
  const rusage = (used.user + used.system) / 1e6;
  assert.ok(x > 0);
  // /proc counts in clock ticks (10 ms); getrusage in microseconds: they agree to a few ticks.
  assert.ok(rusage > 0.05, `the loop used ${rusage} s of CPU`);
  assert.ok(Math.abs(proc - rusage) < 0.05, `/proc says ${proc} s, getrusage ${rusage} s`);
  assert.ok(Number.isNaN(cpuSeconds(2 ** 22 + 1)), "a process that does not exist has no CPU time");
});
