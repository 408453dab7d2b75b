/**
 * `typetun capture` end to end (root): a typetun pair in two namespaces. Captures during a ping and a TCP
 * transfer are read back by Debian's tcpdump (from a file and from a shell pipe) and by lib/pcapng.ts's reader
 * (each packet on its peer's interface, with its direction); --outer shows the UDP datagrams to the peer's
 * endpoint port; --peer limits to one peer; a reader that stops reading (a SIGSTOPped client, a raw client that
 * never reads) does not slow the tunnel and its losses are counted; captures beyond the limit are refused; the
 * capture socket is private, ignored by `wg show` and removed with the daemon.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import process from "node:process";
import { keyFromBase64 } from "../../lib/encoding.ts";
import {
  BLOCK_EPB,
  BLOCK_IDB,
  BLOCK_ISB,
  INBOUND,
  ISB_OSDROP,
  optionInt64,
  OUTBOUND,
  readBlocks,
  readEnhancedPacket,
  readInterfaceDescription,
  readOptions,
} from "../../lib/pcapng.ts";
import {
  cannotRun,
  inNs,
  type Lab,
  labTest,
  sh,
  sleep,
  tag,
  typetunCommand,
  waitExit,
  wgKeys,
  wgSet,
} from "./_lab.ts";

const skip = cannotRun("wg", "ping", "tcpdump", "iperf3", "ncat");
if (skip) console.log(`capture tests skipped: ${skip}`);

const cli = typetunCommand();

/** Two namespaces, a veth, a typetun daemon in each, peered (side 1 initiates); pinged once. */
async function pair(lab: Lab) {
  const t = tag();
  const ns1 = lab.ns(`tc1${t}`), ns2 = lab.ns(`tc2${t}`);
  lab.veth(ns1, ns2, ["192.168.244.1", "fd00:244::1"], ["192.168.244.2", "fd00:244::2"]);
  const wg1 = `tcw1${t}`, wg2 = `tcw2${t}`;
  const d1 = await lab.daemon(wg1, ns1);
  const d2 = await lab.daemon(wg2, ns2);
  const k1 = wgKeys(), k2 = wgKeys();
  wgSet(
    wg1,
    k1.priv,
    `listen-port 51831 peer ${k2.pub} allowed-ips 10.244.0.2/32 endpoint 192.168.244.2:51832`,
  );
  wgSet(wg2, k2.priv, `listen-port 51832 peer ${k1.pub} allowed-ips 10.244.0.1/32`);
  for (const [ns, wg, n] of [[ns1, wg1, 1], [ns2, wg2, 2]] as const) {
    sh(`ip -n ${ns} addr add 10.244.0.${n}/24 dev ${wg} && ip -n ${ns} link set ${wg} up`);
  }
  inNs(ns1, "ping -c 1 -W 5 10.244.0.2");
  return { ns1, ns2, wg1, wg2, d1, d2, k1, k2 };
}

/** Starts `typetun capture ARGS`; stdout is piped (or ignored), stderr collected. */
function startCapture(lab: Lab, args: string[], stdout: "pipe" | "ignore" = "ignore") {
  const child = spawn(cli[0]!, [...cli.slice(1), "capture", ...args], { stdio: ["ignore", stdout, "pipe"] });
  lab.children.push(child);
  let err = "";
  child.stderr!.on("data", (d) => (err += d.toString()));
  return { child, stderr: () => err };
}

/** Waits until the daemon's log says `n` captures were started in all. */
async function started(lab: Lab, daemon: ChildProcess, n: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if ((lab.logs.get(daemon)!.match(/Capture started/g) ?? []).length >= n) return;
    await sleep(50);
  }
  throw new Error(`capture ${n} did not start: ${lab.logs.get(daemon)}`);
}

/**
 * Ends a capture client as Ctrl-C does; returns its exit code and stderr. The signal goes through kill(1):
 * Deno's ChildProcess.kill reports a child it signalled as killed, even one that handled the signal and exited.
 */
async function interrupt(c: { child: ChildProcess; stderr: () => string }) {
  sh(`kill -INT ${c.child.pid}`);
  const code = await waitExit(c.child, 15_000);
  return { code, stderr: c.stderr() };
}

function tcpdump(file: string, filter = ""): string {
  const r = spawnSync("sh", ["-c", `tcpdump -n -e -r ${file} ${filter}`], {
    encoding: "utf8",
    timeout: 30_000,
  });
  assert.equal(r.status, 0, `tcpdump -r: ${r.stderr}`);
  return r.stdout;
}

/** The first 6 bytes of a base64 key as tcpdump prints a link-layer address. */
function keyPrefix(b64: string): string {
  return Array.from(keyFromBase64(b64)!.subarray(0, 6), (x) => x.toString(16).padStart(2, "0")).join(":");
}

/** iperf3 through the tunnel, ns1 → ns2, for `seconds`: bits per second received. */
function iperf(ns1: string, ns2: string, seconds: number): number {
  const server = spawn("ip", ["netns", "exec", ns2, "iperf3", "-s", "-1", "-B", "10.244.0.2"], {
    stdio: "ignore",
  });
  try {
    sh("sleep 0.3");
    const out = inNs(ns1, `iperf3 --json -t ${seconds} -c 10.244.0.2`, (seconds + 30) * 1000);
    return JSON.parse(out).end.sum_received.bits_per_second;
  } finally {
    server.kill("SIGKILL");
  }
}

/** ping -c N: the replies received and the largest RTT in ms. */
function pingStats(ns: string, n: number): { received: number; maxMs: number } {
  const out = inNs(ns, `ping -c ${n} -i 0.2 -W 5 10.244.0.2 || true`, 60_000);
  const received = Number(/(\d+) received/.exec(out)?.[1] ?? 0);
  const max = /= [\d.]+\/[\d.]+\/([\d.]+)\//.exec(out);
  return { received, maxMs: max ? Number(max[1]) : Infinity };
}

/**
 * A capture client that never reads: it asks for a capture (control connection) and accepts the daemon's data
 * connection, and reads neither. Returns what to close.
 */
async function rawCapture(ifname: string, options: string, dir: string): Promise<[Server, Socket, Socket]> {
  const path = `${dir}/raw${tag()}.sock`;
  const accepted: Socket[] = [];
  const server = createServer({ pauseOnConnect: true }, (c) => {
    c.on("error", () => {});
    accepted.push(c);
  });
  await new Promise<void>((r) => server.listen(path, () => r()));
  const control = connect(`/var/run/wireguard/${ifname}.capture`);
  control.on("error", () => {});
  control.write(`capture${options} data=${path} token=${"ab".repeat(16)}\n`);
  for (let i = 0; i < 100 && accepted.length === 0; i++) await sleep(50);
  assert.equal(accepted.length, 1, "the daemon connects to the data socket");
  return [server, control, accepted[0]!];
}

labTest(
  "capture: ping and TCP read back by tcpdump with peer and direction; --outer; --peer; a shell pipe",
  skip,
  async (lab) => {
    const { ns1, ns2, wg1, d1, k2 } = await pair(lab);
    const file = `/tmp/typetun-capture-${tag()}.pcapng`, outerFile = `${file}.outer`;
    try {
      // The capture socket: private, not an interface to wg, beside the UAPI socket.
      const path = `/var/run/wireguard/${wg1}.capture`;
      assert.equal(statSync(path).mode & 0o777, statSync(`/var/run/wireguard/${wg1}.sock`).mode & 0o777);
      assert.equal(statSync(path).mode & 0o077, 0, "root only");
      assert.ok(!sh("wg show interfaces").includes(".capture"), "wg does not list the capture socket");
      assert.ok(sh("wg show interfaces").includes(wg1));

      // A capture to a file and an --outer one run at once during a ping.
      const c1 = startCapture(lab, [wg1, "-w", file]);
      const c2 = startCapture(lab, [wg1, "--outer", "-w", outerFile]);
      await started(lab, d1, 2);
      inNs(ns1, "ping -c 3 -i 0.2 -W 5 10.244.0.2");
      for (const r of [await interrupt(c1), await interrupt(c2)]) {
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stderr, /\d+ packets captured\n0 packets dropped by typetun/);
      }
      assert.equal(statSync(file).mode & 0o777, 0o600, "the capture file is private");

      // tcpdump reads it: three requests out, three replies in, each marked with the peer's key.
      const icmp = tcpdump(file, "icmp").trim().split("\n");
      const prefix = keyPrefix(k2.pub);
      const requests = icmp.filter((l) => /Out .*ICMP echo request/.test(l) && l.includes(prefix));
      const replies = icmp.filter((l) => /In .*ICMP echo reply/.test(l) && l.includes(prefix));
      assert.equal(requests.length, 3, icmp.join("\n"));
      assert.equal(replies.length, 3, icmp.join("\n"));
      assert.ok(requests.every((l) => l.includes("10.244.0.1 > 10.244.0.2")));

      // The pcapng itself: the peer's interface is named by its key, the directions are in epb_flags.
      const blocks = readBlocks(readFileSync(file));
      const ifaces = blocks.filter((b) => b.type === BLOCK_IDB).map((b) => readInterfaceDescription(b.body));
      assert.deepEqual(ifaces.map((i) => i.name), [wg1, k2.pub]);
      const packets = blocks.filter((b) => b.type === BLOCK_EPB).map((b) => readEnhancedPacket(b.body));
      const icmpOf = (p: { data: Uint8Array }) => p.data[20 + 9] === 1 ? p.data[20 + 20] : -1; // SLL2, IPv4, type
      assert.equal(
        packets.filter((p) => p.iface === 1 && p.direction === OUTBOUND && icmpOf(p) === 8).length,
        3,
      );
      assert.equal(
        packets.filter((p) => p.iface === 1 && p.direction === INBOUND && icmpOf(p) === 0).length,
        3,
      );
      const isb = blocks.at(-1)!;
      assert.equal(isb.type, BLOCK_ISB, "the stream ends with the statistics");
      assert.equal(optionInt64(readOptions(isb.body, 12).get(ISB_OSDROP)![0]!), 0);

      // --outer: the datagrams to and from the peer's endpoint port, as UDP, besides the plaintext.
      const udp = tcpdump(outerFile, "udp").trim().split("\n");
      assert.ok(
        udp.filter((l) => /Out .*0\.0\.0\.0\.51831 > 192\.168\.244\.2\.51832: UDP, length 128/.test(l))
          .length >= 3,
        udp.join("\n"),
      );
      assert.ok(
        udp.filter((l) => /In .*192\.168\.244\.2\.51832 > 0\.0\.0\.0\.51831: UDP, length 128/.test(l))
          .length >= 3,
        udp.join("\n"),
      );
      assert.equal(tcpdump(outerFile, "icmp").trim().split("\n").length, 6);

      // A TCP transfer, captured through a shell pipe into tcpdump (which reads stdin as it comes).
      const size = 4 * 1024 * 1024;
      const pipe = spawn("sh", [
        "-c",
        `${cli.join(" ")} capture ${wg1} | tcpdump -n -r - 'tcp port 5399' > ${file}.txt`,
      ], {
        stdio: ["ignore", "ignore", "pipe"],
        detached: true,
      });
      lab.children.push(pipe);
      let pipeErr = "";
      pipe.stderr!.on("data", (d) => (pipeErr += d.toString()));
      await started(lab, d1, 3);
      const rx = spawn(
        "ip",
        ["netns", "exec", ns2, "sh", "-c", "exec ncat -l 5399 --recv-only > /dev/null"],
        { stdio: "ignore" },
      );
      lab.children.push(rx);
      await sleep(300);
      inNs(ns1, `head -c ${size} /dev/zero | ncat --send-only 10.244.0.2 5399`, 60_000);
      await waitExit(rx, 10_000);
      await sleep(300);
      // Ctrl-C reaches the whole pipeline; tcpdump -r ends at the end of its input.
      const capturePid =
        sh(`pgrep -P ${pipe.pid} -f 'capture ${wg1}' || pgrep -f 'capture ${wg1}$'`).trim().split("\n")[0];
      process.kill(Number(capturePid), "SIGINT");
      assert.equal(await waitExit(pipe, 15_000), 0, pipeErr);
      assert.match(pipeErr, /(\d+) packets captured\n(\d+) packets dropped by typetun/);
      const [, got, lost] = /(\d+) packets captured\n(\d+) packets dropped/.exec(pipeErr)!.map(Number);
      const lines = readFileSync(`${file}.txt`, "utf8").trim().split("\n");
      // Data one way, ACKs the other; everything the capture kept is there (tcpdump counts only TCP here).
      const data = lines.filter((l) => /10\.244\.0\.1\.\d+ > 10\.244\.0\.2\.5399: .*length [1-9]/.test(l));
      const bytes = data.reduce((n, l) => n + Number(/length (\d+)/.exec(l)![1]), 0);
      assert.ok(
        lines.some((l) => /10\.244\.0\.2\.5399 > 10\.244\.0\.1\.\d+: Flags \[\.\]/.test(l)),
        "ACKs back",
      );
      if (lost === 0) assert.ok(bytes >= size, `${bytes} bytes of TCP data captured, ${size} sent`);
      else assert.ok(got! + lost! >= size / 1500, `${got} captured + ${lost} lost`);
      console.log(
        `  TCP ${size} B: ${got} packets captured, ${lost} dropped, ${bytes} data bytes seen by tcpdump`,
      );

      // A reader that stops after N packets (tcpdump -c 2) ends the capture, which exits 0 at its next write.
      const short = spawn("bash", [
        "-c",
        `${
          cli.join(" ")
        } capture ${wg1} | tcpdump -c 2 -n -r - 'icmp'; echo "capture exited \${PIPESTATUS[0]}" >&2`,
      ], { stdio: ["ignore", "pipe", "pipe"] });
      lab.children.push(short);
      let shortOut = "", shortErr = "";
      short.stdout!.on("data", (d) => (shortOut += d.toString()));
      short.stderr!.on("data", (d) => (shortErr += d.toString()));
      await started(lab, d1, 4);
      inNs(ns1, "ping -c 4 -i 0.3 -W 5 10.244.0.2");
      assert.notEqual(await waitExit(short, 15_000), null, shortErr);
      assert.equal(shortOut.trim().split("\n").length, 2, shortOut);
      assert.match(shortErr, /capture exited 0/);

      // --peer: an unknown key is refused clearly; the capture of the one peer holds only its packets.
      const bad = startCapture(lab, [wg1, "--peer", wgKeys().pub, "-w", `${file}.x`]);
      assert.equal(await waitExit(bad.child, 15_000), 1);
      assert.match(bad.stderr(), new RegExp(`${wg1} has no peer `));
      const p = startCapture(lab, [wg1, "--peer", k2.pub, "-w", `${file}.peer`]);
      await started(lab, d1, 5);
      inNs(ns1, "ping -c 2 -i 0.2 -W 5 10.244.0.2");
      assert.equal((await interrupt(p)).code, 0);
      assert.equal(tcpdump(`${file}.peer`, "icmp").trim().split("\n").length, 4);
    } finally {
      for (const f of [file, outerFile, `${file}.txt`, `${file}.x`, `${file}.peer`]) {
        rmSync(f, { force: true });
      }
    }
  },
);

labTest(
  "capture: a reader that stops reading does not slow the tunnel; losses are counted; limits; cleanup",
  skip,
  async (lab) => {
    const { ns1, ns2, wg1, d1 } = await pair(lab);
    const file = `/tmp/typetun-capture-${tag()}.pcapng`;
    const dir = mkdtempSync("/tmp/typetun-capture-test-");
    const raws: (Socket | Server)[] = [];
    try {
      const before = iperf(ns1, ns2, 3);
      // A client that is stopped (SIGSTOP) and three raw clients that never read: every capture slot is taken.
      const stopped = startCapture(lab, [wg1, "-w", file]);
      await started(lab, d1, 1);
      sh(`kill -STOP ${stopped.child.pid}`);
      for (let i = 0; i < 3; i++) raws.push(...await rawCapture(wg1, i === 0 ? " outer" : "", dir));
      await started(lab, d1, 4);
      // A fifth is refused, saying why.
      const fifth = startCapture(lab, [wg1, "-w", `${file}.5`]);
      assert.equal(await waitExit(fifth.child, 15_000), 1);
      assert.match(fifth.stderr(), /4 captures of .* are running already/);

      const during = iperf(ns1, ns2, 3);
      const ping = pingStats(ns1, 10);
      console.log(
        `  iperf3 ${(before / 1e6).toFixed(0)} Mbit/s without capture, ${
          (during / 1e6).toFixed(0)
        } Mbit/s with ` +
          `4 stuck readers; ping ${ping.received}/10, max ${ping.maxMs} ms`,
      );
      // A tunnel that waited for its readers would stall at the first full socket buffer.
      assert.equal(ping.received, 10);
      assert.ok(ping.maxMs < 1000, `ping max ${ping.maxMs} ms`);
      assert.ok(
        during > 20e6 && during > before / 10,
        `${during} bit/s with stuck readers, ${before} without`,
      );

      // The stopped client resumes and is interrupted: it reports the packets the daemon dropped for it.
      sh(`kill -CONT ${stopped.child.pid}`);
      await sleep(200);
      const r = await interrupt(stopped);
      assert.equal(
        r.code,
        0,
        `${r.stderr} ${sh(`ps -o stat,pid,cmd -p ${stopped.child.pid} || true`)} ${lab.logs.get(d1)}`,
      );
      const lost = Number(/(\d+) packets dropped by typetun/.exec(r.stderr)?.[1]);
      assert.ok(lost > 0, r.stderr);
      assert.doesNotThrow(
        () => readBlocks(readFileSync(file)),
        "the file is whole pcapng despite the losses",
      );
      assert.match(tcpdump(file, "-c 1"), /ethertype IPv4/);

      // Disconnecting ends a capture: the slots free up.
      for (const s of raws) if ("destroy" in s) s.destroy();
      for (let i = 0; i < 100 && (lab.logs.get(d1)!.match(/Capture ended/g) ?? []).length < 4; i++) {
        await sleep(50);
      }
      assert.equal((lab.logs.get(d1)!.match(/Capture ended/g) ?? []).length, 4, lab.logs.get(d1));

      // The daemon removes its capture socket when it exits.
      sh(`kill -TERM ${d1.pid}`);
      assert.equal(await waitExit(d1, 15_000), 0);
      assert.ok(!existsSync(`/var/run/wireguard/${wg1}.capture`));
    } finally {
      for (const s of raws) {
        if ("destroy" in s) s.destroy();
        else s.close();
      }
      for (const f of [file, `${file}.5`, dir]) rmSync(f, { force: true, recursive: true });
    }
  },
);
