/**
 * What UDP offload on the TUN (USO, issue 17) does for UDP inside the tunnel, measured where it applies: a
 * sender that uses UDP GSO itself (UDP_SEGMENT, as QUIC stacks and current iperf3 --gsro do), so its kernel hands
 * the TUN one super-packet per 64 datagrams when the TUN took USO, and per-datagram packets when it did not. A
 * typetun pair in two namespaces over a veth (MTU 1420 tunnel); A sends for `--time` seconds as fast as it can,
 * B counts what arrives. Rounds alternate between the binaries given.
 *
 * Usage (root): deno run -A bench/uso.ts --bin NEW [--baseline OLD] [--rounds 3] [--time 5] [--size 1392]
 */
import { spawn, spawnSync } from "node:child_process";
import { parseArgs } from "node:util";
import { writeFileSync } from "node:fs";
import process from "node:process";
import { Lab, sh, tag, wgKeys, wgSet } from "../tests/netns/_lab.ts";
import { median } from "./_measure.ts";

const { values } = parseArgs({
  options: {
    bin: { type: "string" },
    baseline: { type: "string" },
    rounds: { type: "string", default: "3" },
    time: { type: "string", default: "5" },
    size: { type: "string", default: "1392" },
  },
});
if (!values.bin) {
  console.error(
    "usage: deno run -A bench/uso.ts --bin PATH [--baseline PATH] [--rounds N] [--time S] [--size B]",
  );
  process.exit(2);
}
const seconds = Number(values.time), size = Number(values.size), rounds = Number(values.rounds);

/** The sender and receiver, run in the namespaces by this same runtime. */
const worker = `
import { GroRecvBatch, GsoSendBatch, UdpBind } from "${new URL("../ffi/udp.ts", import.meta.url).pathname}";
import { POLLIN, PollSet } from "${new URL("../ffi/poll.ts", import.meta.url).pathname}";
const [role, seconds, size] = [Deno.args[0], Number(Deno.args[1]), Number(Deno.args[2])];
if (role === "recv") {
  const bind = UdpBind.open(5999, 0, { gro: true });
  const batch = new GroRecvBatch(64, 65536), set = new PollSet(1);
  set.add(bind.v4.fd, POLLIN);
  let n = 0, bytes = 0, first = 0, last = 0;
  const end = Date.now() + (seconds + 3) * 1000;
  while (Date.now() < end) {
    set.poll(50);
    const r = batch.recv(bind.v4);
    if (r > 0) { if (!first) first = Date.now(); last = Date.now(); }
    for (let i = 0; i < r; i++) { n++; bytes += batch.length(i); }
  }
  console.log(JSON.stringify({ n, bytes, ms: last - first }));
} else {
  const bind = UdpBind.open(0, 0, { gso: true });
  const batch = new GsoSendBatch(8, 8 * 65536);
  const to = new Uint8Array([10, 79, 0, 2]);
  let sent = 0;
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    for (let m = 0; m < 8 * 46; m++) { batch.push(size, 4, to, 5999); }
    sent += batch.send(bind);
  }
  console.log(JSON.stringify({ sent }));
}
`;
const workerFile = `/tmp/typetun-uso-bench-${process.pid}.ts`;
writeFileSync(workerFile, worker);

async function round(bin: string): Promise<{ mbps: number; loss: number; uso: string }> {
  const lab = new Lab();
  try {
    const t = tag();
    const a = lab.ns(`uba${t}`), b = lab.ns(`ubb${t}`);
    lab.veth(a, b, ["192.168.79.1", "fd79::1"], ["192.168.79.2", "fd79::2"]);
    const wa = `uwa${t}`, wb = `uwb${t}`;
    const da = await lab.daemon(wa, a, {}, [bin]);
    await lab.daemon(wb, b, {}, [bin]);
    const ka = wgKeys(), kb = wgKeys();
    wgSet(
      wa,
      ka.priv,
      `listen-port 51801 peer ${kb.pub} allowed-ips 10.79.0.2/32 endpoint 192.168.79.2:51802`,
    );
    wgSet(wb, kb.priv, `listen-port 51802 peer ${ka.pub} allowed-ips 10.79.0.1/32`);
    sh(`ip -n ${a} addr add 10.79.0.1/24 dev ${wa} && ip -n ${a} link set ${wa} mtu 1420 up`);
    sh(`ip -n ${b} addr add 10.79.0.2/24 dev ${wb} && ip -n ${b} link set ${wb} mtu 1420 up`);
    sh(`ip netns exec ${a} ping -c 2 -W 2 10.79.0.2`);
    const recv = spawn("ip", [
      "netns",
      "exec",
      b,
      process.execPath,
      "run",
      "-A",
      workerFile,
      "recv",
      `${seconds}`,
      `${size}`,
    ]);
    let out = "";
    recv.stdout!.on("data", (d) => (out += d));
    await new Promise((r) => setTimeout(r, 1500));
    const s = spawnSync("ip", [
      "netns",
      "exec",
      a,
      process.execPath,
      "run",
      "-A",
      workerFile,
      "send",
      `${seconds}`,
      `${size}`,
    ], {
      encoding: "utf8",
    });
    await new Promise((r) => recv.on("exit", r));
    const { sent } = JSON.parse(s.stdout);
    const got = JSON.parse(out);
    const log = lab.logs.get(da) ?? "";
    return {
      mbps: (got.bytes * 8) / (got.ms / 1000) / 1e6,
      loss: 100 * (1 - got.n / sent),
      uso: /USO (on|off)/.exec(log)?.[1] ?? "?",
    };
  } finally {
    lab.cleanup();
  }
}

const bins = [["typetun", values.bin], ...(values.baseline ? [["baseline", values.baseline]] : [])] as const;
const results = new Map<string, { mbps: number; loss: number }[]>();
for (let r = 1; r <= rounds; r++) {
  for (const [name, bin] of bins) {
    const res = await round(bin!);
    console.log(
      `round ${r}/${rounds} ${name} (USO ${res.uso}): ${res.mbps.toFixed(0)} Mbit/s received, ${
        res.loss.toFixed(1)
      }% lost`,
    );
    results.set(name, [...(results.get(name) ?? []), res]);
  }
}
for (const [name, rs] of results) {
  console.log(
    `${name}: median ${median(rs.map((x) => x.mbps)).toFixed(0)} Mbit/s, ${
      median(rs.map((x) => x.loss)).toFixed(1)
    }% lost`,
  );
}
