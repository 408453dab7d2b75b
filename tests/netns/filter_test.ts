/**
 * Per-peer packet filters and per-connection statistics on a typetun pair (root): side B filters side A with
 * `AllowInbound = tcp/8022` and `AllowOutbound = udp/5353, tcp/9000` from its wg-quick file (so `up` carries
 * the keys to the daemon). Allowed and denied connections both ways, replies to B's outbound connections,
 * an ICMP port unreachable answering B's UDP, fragmented datagrams and their fragmented replies, IPv4 and
 * IPv6; then `typetun show IF connections` after a transfer shows the bytes that crossed.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { spawn, spawnSync } from "node:child_process";
import { cannotRun, inNs, type Lab, labTest, sleep, tag, typetunCommand, wgKeys } from "./_lab.ts";

const skip = cannotRun("wg", "ping", "ncat");
if (skip) console.log(`filter tests skipped: ${skip}`);

const cli = typetunCommand().map((a) => `'${a}'`).join(" ");

function typetun(ns: string, args: string): { status: number; stdout: string; stderr: string } {
  const r = spawnSync("ip", ["netns", "exec", ns, "sh", "-c", `${cli} ${args}`], {
    encoding: "utf8",
    timeout: 30_000,
  });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Whether a TCP connection from `ns` to `host`:`port` gets through within 3 s (something listens there). */
function tcpConnects(ns: string, host: string, port: number): boolean {
  const r = spawnSync("ip", ["netns", "exec", ns, "ncat", "-w", "3", "-z", host, String(port)], {
    timeout: 10_000,
  });
  return r.status === 0;
}

/** Keeps `ncat -lk` listening on TCP `port` in `ns`, discarding what it receives; the lab's cleanup kills it. */
function listen(lab: Lab, ns: string, port: number): void {
  lab.children.push(
    spawn("ip", ["netns", "exec", ns, "ncat", "-l", "-k", String(port)], { stdio: "ignore" }),
  );
}

function pair(lab: Lab, dir: string, t: string) {
  const nsA = lab.ns(`pa${t}`), nsB = lab.ns(`pb${t}`);
  lab.veth(nsA, nsB, ["192.168.247.1", "fd00:247::1"], ["192.168.247.2", "fd00:247::2"]);
  const kA = wgKeys(), kB = wgKeys();
  const ifA = `pa${t}`, ifB = `pb${t}`;
  writeFileSync(
    `${dir}/${ifA}.conf`,
    `[Interface]\nPrivateKey = ${kA.priv}\nAddress = 10.247.0.1/24, fd47::1/64\n\n[Peer]\nPublicKey = ${kB.pub}\n` +
      `AllowedIPs = 10.247.0.2/32, fd47::2/128\nEndpoint = 192.168.247.2:51863\n`,
    { mode: 0o600 },
  );
  writeFileSync(
    `${dir}/${ifB}.conf`,
    `[Interface]\nPrivateKey = ${kB.priv}\nListenPort = 51863\nAddress = 10.247.0.2/24, fd47::2/64\n\n` +
      `[Peer]\nPublicKey = ${kA.pub}\nAllowedIPs = 10.247.0.1/32, fd47::1/128\n` +
      `AllowInbound = tcp/8022\nAllowOutbound = udp/5353, tcp/9000\n`,
    { mode: 0o600 },
  );
  for (const [ns, ifname] of [[nsB, ifB], [nsA, ifA]] as const) {
    const up = typetun(ns, `up ${dir}/${ifname}.conf`);
    assert.equal(up.status, 0, up.stderr);
  }
  return { nsA, nsB, ifA, ifB };
}

interface Conn {
  proto: string;
  local: string;
  localPort: number;
  remote: string;
  remotePort: number;
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
}

function connections(ns: string, ifname: string) {
  const r = typetun(ns, `show ${ifname} connections --json`);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as {
    statistics: { connections: Conn[]; evicted: number } | null;
    filters: {
      allowInbound: string;
      allowOutbound: string;
      droppedInbound: number;
      droppedOutbound: number;
    }[];
  };
}

const withPair = (name: string, fn: (lab: Lab, p: ReturnType<typeof pair>) => Promise<void>) =>
  labTest(name, skip, async (lab) => {
    const dir = mkdtempSync("/tmp/typetun-filter-");
    const t = tag();
    try {
      await fn(lab, pair(lab, dir, t));
    } finally {
      // `up` leaves its daemons in the background, outside the lab's children: take them down by name.
      for (const side of ["a", "b"]) typetun(`p${side}${t}`, `down ${dir}/p${side}${t}.conf`);
      rmSync(dir, { recursive: true, force: true });
    }
  });

withPair("filter: allowed and denied connections both ways, replies, ICMP errors, IPv6", async (lab, p) => {
  const { nsA, nsB, ifB } = p;
  for (const port of [8022, 8023]) listen(lab, nsB, port);
  for (const port of [9000, 9001]) listen(lab, nsA, port);
  await sleep(300);
  // The first packet from A starts the handshake; the filter sees only what the session carries.
  inNs(nsA, "ping -c 1 -W 2 10.247.0.2 || true");
  const f = connections(nsB, ifB).filters;
  assert.deepEqual(f.map((x) => [x.allowInbound, x.allowOutbound]), [["tcp/8022", "udp/5353,tcp/9000"]]);

  for (const [a, b] of [["10.247.0.1", "10.247.0.2"], ["fd47::1", "fd47::2"]]) {
    assert.ok(tcpConnects(nsA, b!, 8022), `A → B tcp/8022 allowed inbound (${b})`);
    assert.ok(!tcpConnects(nsA, b!, 8023), `A → B tcp/8023 denied inbound (${b})`);
    assert.ok(tcpConnects(nsB, a!, 9000), `B → A tcp/9000 allowed outbound, its replies pass (${a})`);
    assert.ok(!tcpConnects(nsB, a!, 9001), `B → A tcp/9001 denied outbound (${a})`);
    const ping = spawnSync("ip", ["netns", "exec", nsA, "ping", "-c", "1", "-W", "1", b!], { timeout: 5000 });
    assert.notEqual(ping.status, 0, `A's ping to B denied inbound (${b})`);
    const ping2 = spawnSync("ip", ["netns", "exec", nsB, "ping", "-c", "1", "-W", "1", a!], {
      timeout: 5000,
    });
    assert.notEqual(ping2.status, 0, `B's ping to A denied outbound (${a})`);
    // B's UDP to a port where A has nothing: A's port unreachable reaches B (icmp is not allowed inbound, but
    // the error quotes B's allowed connection), and ncat reports the refusal.
    const udp = spawnSync("ip", [
      "netns",
      "exec",
      nsB,
      "sh",
      "-c",
      `(echo hi; sleep 1) | ncat -u -w 2 ${a} 5353`,
    ], {
      encoding: "utf8",
      timeout: 10_000,
    });
    assert.match(
      udp.stderr,
      /Connection refused/,
      `ICMP port unreachable passes back to B (${a}): ${JSON.stringify(connections(nsB, ifB))}`,
    );
  }
  // Fragments: B's 3000-byte datagram to A's UDP echo leaves in fragments, and so does the echo; the later
  // fragments pass because their datagram's first one did (tunnel MTU 1420).
  for (const a of ["10.247.0.1", "fd47::1"]) {
    // One UDP echo per family (ncat's UDP listener answers one peer).
    const echo = spawn("ip", ["netns", "exec", nsA, "ncat", "-l", "-u", "-e", "/bin/cat", a, "5353"], {
      stdio: "ignore",
    });
    lab.children.push(echo);
    await sleep(300);
    const echoed = inNs(nsB, `(head -c 3000 /dev/zero; sleep 1) | ncat -u -w 2 ${a} 5353 | wc -c`, 10_000);
    assert.equal(echoed.trim(), "3000", `a fragmented datagram and its fragmented echo (${a})`);
    echo.kill();
  }
  const after = connections(nsB, ifB).filters[0]!;
  assert.ok(after.droppedInbound >= 4, `drops counted inbound: ${after.droppedInbound}`);
  assert.ok(after.droppedOutbound >= 4, `drops counted outbound: ${after.droppedOutbound}`);
  // DropFiltered is a drop reason of `show`'s verdicts too: wg's own view is unchanged (no filter keys in get).
  const wgShow = inNs(nsB, `wg showconf ${ifB}`);
  assert.doesNotMatch(wgShow, /Allow(In|Out)bound|allow_/);
});

withPair("connections: show IF connections counts the bytes of a transfer", async (lab, p) => {
  const { nsA, nsB, ifA, ifB } = p;
  listen(lab, nsB, 8022);
  await sleep(300);
  const size = 3_000_000;
  // A sends `size` bytes to B's allowed port, over IPv6.
  inNs(nsA, `head -c ${size} /dev/zero | ncat -w 5 --send-only fd47::2 8022`, 30_000);
  await sleep(300);
  const find = (list: Conn[], port: number) =>
    list.find((c) => c.proto === "tcp" && (c.localPort === port || c.remotePort === port));
  const atB = find(connections(nsB, ifB).statistics!.connections, 8022)!;
  const atA = find(connections(nsA, ifA).statistics!.connections, 8022)!;
  assert.ok(atB && atA, "the connection is listed on both sides");
  assert.equal(atB.local, "fd47::2");
  assert.equal(atB.remote, "fd47::1");
  // Every packet is an IPv6 header (40) and a TCP header (20 to 60) around its share of the payload.
  for (
    const [c, bytes, packets] of [[atB, atB.rxBytes, atB.rxPackets], [
      atA,
      atA.txBytes,
      atA.txPackets,
    ]] as const
  ) {
    assert.ok(
      bytes >= size + 60 * packets && bytes <= size + 100 * packets,
      `${bytes} bytes in ${packets} packets`,
    );
    assert.ok(c.txPackets > 0 && c.rxPackets > 0, "acknowledgements counted the other way");
  }
  assert.equal(atB.rxBytes, atA.txBytes, "both ends count the same packets");
  // The text form lists it first (the most bytes).
  const text = typetun(nsB, `show ${ifB} connections`).stdout;
  assert.match(text.split("\n")[2]!, /^tcp\s+\[fd47::2\]:8022\s+\[fd47::1\]:\d+/);
});
