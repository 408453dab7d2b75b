/**
 * Misbehaving UAPI clients must not hurt the tunnel or other clients (issue 11, section 2). Against side 1 of an
 * established pair of daemons, one abusive client at a time runs for a few seconds while side 1 pings side 2
 * through the tunnel every 0.1 s and another client asks for the configuration (a get, what `wg show` does)
 * again and again. For each abusive client:
 * - at least 90 % of the pings are answered within 20 ms (also in the second after the client leaves);
 * - every get is answered within 2 s;
 * - the daemon's resident memory grows by less than 100 MB.
 *
 * The abusive clients run in a process of their own (this file, started with TYPETUN_UAPI_ABUSE set), so that
 * their busy loops do not delay the measuring side. Side 1 runs with TYPETUN_TEST_TIME_SCALE, which shortens
 * the UAPI idle timeout to a few seconds. `TYPETUN_BIN=/path/to/wireguard-go` measures another implementation
 * the same way (its results are printed; its failures are its own).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { performance } from "node:perf_hooks";
import process from "node:process";
import { parseGet, UAPI_MAX_REQUEST_BYTES } from "../../lib/uapi.ts";
import { uapiRequest } from "../../cmd/uapi_client.ts";
import { UAPI_IDLE_TIMEOUT_MS, UAPI_MAX_CONNECTIONS } from "../../cmd/uapi_server.ts";
import { cannotRun, inNs, joinPair, type Lab, labTest, sh, sleep, tag } from "./_lab.ts";

/** How long each abusive client runs, and how long the pings go on after it left. */
const ABUSE_MS = 4000;
const AFTER_MS = 1500;
const TIME_SCALE = 10;
const IDLE_MS = UAPI_IDLE_TIMEOUT_MS / TIME_SCALE;
/** The test stops a client early once the daemon passes this, to spare the machine (the old code did). */
const RSS_EMERGENCY_KB = 1_500_000;

type Kind = "pipeline" | "trickle" | "idle";
interface ClientReport {
  /** Connections the client opened, and how many of them the daemon closed. */
  opened: number;
  closedByDaemon: number;
  /** Bytes the client wrote. */
  written: number;
  /** `errno=` lines the client read (only the trickler reads). */
  errnos: string[];
  /** For the idle client: connections the daemon closed within a second of opening them, and in all. */
  closedWithin1s: number;
  lastCloseMs: number;
}

// ---- The abusive clients (run as `TYPETUN_UAPI_ABUSE=KIND deno run -A THIS_FILE SOCKET MS`) ----

async function abusiveClient(kind: Kind, path: string, ms: number): Promise<ClientReport> {
  const report: ClientReport = {
    opened: 0,
    closedByDaemon: 0,
    written: 0,
    errnos: [],
    closedWithin1s: 0,
    lastCloseMs: 0,
  };
  const t0 = performance.now();
  const deadline = t0 + ms;
  const open = (onData?: (s: string) => void) => {
    const sock = connect(path);
    report.opened++;
    const opened = performance.now();
    const s = { sock, closed: false };
    if (onData) {
      sock.setEncoding("utf8");
      sock.on("data", onData);
    } else {
      sock.pause(); // never reads a reply
    }
    sock.on("error", () => {});
    sock.on("close", () => {
      s.closed = true;
      if (performance.now() < deadline) {
        report.closedByDaemon++;
        if (performance.now() - opened < 1000) report.closedWithin1s++;
        report.lastCloseMs = performance.now() - t0;
      }
    });
    return s;
  };
  /** Until the socket drains or closes, at most 100 ms (so the deadline is kept). */
  const waitDrain = (sock: Socket) =>
    new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(t);
        sock.off("drain", done);
        sock.off("close", done);
        resolve();
      };
      const t = setTimeout(done, 100);
      sock.on("drain", done);
      sock.on("close", done);
    });

  if (kind === "pipeline") {
    // `get=1\n\n` as fast as the socket takes it, never reading a reply; a new connection when one is closed.
    const block = "get=1\n\n".repeat(8192);
    while (performance.now() < deadline) {
      const c = open();
      while (!c.closed && performance.now() < deadline) {
        report.written += block.length;
        if (!c.sock.write(block)) await waitDrain(c.sock);
      }
      c.sock.destroy();
    }
  } else if (kind === "trickle") {
    // An endless `set=1` request in 16-byte pieces, each its own write; replies are read.
    const text = "fwmark=0\n".repeat(16); // 144 characters: nine 16-byte pieces
    while (performance.now() < deadline) {
      let buffered = "";
      const c = open((d) => {
        buffered += d;
        for (const m of buffered.matchAll(/^errno=(-?\d+)$/gm)) report.errnos.push(m[1]!);
        buffered = buffered.slice(buffered.lastIndexOf("\n") + 1);
      });
      c.sock.write("set=1\n");
      let at = 0;
      while (!c.closed && performance.now() < deadline) {
        for (let i = 0; i < 64 && !c.closed; i++) {
          const piece = text.slice(at, at + 16);
          at = (at + 16) % text.length;
          report.written += piece.length;
          if (!c.sock.write(piece)) await waitDrain(c.sock);
        }
        await new Promise((r) => setImmediate(r));
      }
      c.sock.destroy();
    }
  } else {
    // 200 connections that send nothing, held until the end. They read, or they would not see EOF.
    const conns = Array.from({ length: 200 }, () => open(() => {}));
    while (performance.now() < deadline) await sleep(50);
    for (const c of conns) c.sock.destroy();
  }
  return report;
}

if (process.env.TYPETUN_UAPI_ABUSE) {
  const [path, ms] = process.argv.slice(2);
  const report = await abusiveClient(process.env.TYPETUN_UAPI_ABUSE as Kind, path!, Number(ms));
  process.stdout.write(JSON.stringify(report) + "\n");
  process.exit(0);
}

// ---- The measuring side ----

const skip = cannotRun("wg", "ping");
if (skip) console.log(`namespace tests skipped: ${skip}`);

/** Side 1 (with the test time scale) and side 2, peered, with a ping already answered. */
async function pair(lab: Lab) {
  const t = tag();
  const ns1 = lab.ns(`tu1${t}`), ns2 = lab.ns(`tu2${t}`);
  lab.veth(ns1, ns2, ["192.168.243.1", "fd00:243::1"], ["192.168.243.2", "fd00:243::2"]);
  const wg1 = `tuw1${t}`, wg2 = `tuw2${t}`;
  const [d1] = await Promise.all([
    lab.daemon(wg1, ns1, { TYPETUN_TEST_TIME_SCALE: String(TIME_SCALE), LOG_LEVEL: "error" }),
    lab.daemon(wg2, ns2, { LOG_LEVEL: "error" }),
  ]);
  joinPair({ ns: ns1, wg: wg1, port: 51831 }, { ns: ns2, wg: wg2, port: 51832 }, "192.168.243.2");
  // The handshake, and a few packets for the JIT, before anything is measured.
  inNs(ns1, "ping -c 5 -i 0.1 -W 3 10.243.0.2");
  return { ns1, wg1, pid: d1.pid! };
}

function rssKb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : 0;
}

function fds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Runs a child to its end; resolves with its stdout. */
function collect(child: ChildProcess): Promise<string> {
  let out = "";
  child.stdout!.on("data", (d) => (out += d.toString()));
  return new Promise((resolve) => child.on("close", () => resolve(out)));
}

interface Measured {
  sent: number;
  /** RTTs of the answered pings, in ms. */
  rtts: number[];
  /** Milliseconds each get took (Infinity: no answer within 2 s, or an error). */
  gets: number[];
  rssBeforeKb: number;
  rssMaxKb: number;
  /** The largest RSS while the abusive client ran (rssMaxKb includes the time after it left). */
  rssDuringKb: number;
  fdsBefore: number;
  fdsMax: number;
  stoppedEarly: boolean;
  client: ClientReport;
}

async function underAbuse(lab: Lab, kind: Kind): Promise<Measured> {
  const { ns1, wg1, pid } = await pair(lab);
  const sock = `/var/run/wireguard/${wg1}.sock`;
  const count = (ABUSE_MS + AFTER_MS) / 100;
  const rssBeforeKb = rssKb(pid), fdsBefore = fds(pid);
  const ping = spawn("ip", [
    "netns",
    "exec",
    ns1,
    "ping",
    "-n",
    "-i",
    "0.1",
    "-c",
    String(count),
    "-W",
    "1",
    "10.243.0.2",
  ], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  lab.children.push(ping);
  const pingOut = collect(ping);
  const client = spawn(process.execPath, [
    "run",
    "-A",
    new URL(import.meta.url).pathname,
    sock,
    String(ABUSE_MS),
  ], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, TYPETUN_UAPI_ABUSE: kind },
  });
  lab.children.push(client);
  const clientOut = collect(client);
  let pinging = true;
  void pingOut.then(() => (pinging = false));

  let rssMaxKb = rssBeforeKb, rssDuringKb = rssBeforeKb, fdsMax = fdsBefore, stoppedEarly = false;
  const sampler = (async () => {
    while (pinging) {
      const rss = rssKb(pid);
      rssMaxKb = Math.max(rssMaxKb, rss);
      if (client.exitCode === null) rssDuringKb = Math.max(rssDuringKb, rss);
      fdsMax = Math.max(fdsMax, fds(pid));
      if (rssMaxKb > RSS_EMERGENCY_KB && client.exitCode === null) {
        stoppedEarly = true;
        client.kill("SIGKILL");
      }
      await sleep(100);
    }
  })();
  const gets: number[] = [];
  await sleep(300); // the client is under way
  while (pinging) {
    const t0 = performance.now();
    try {
      const info = parseGet(await uapiRequest(wg1, "get=1\n\n", 2000));
      assert.ok(info.ok && info.value.peers.length === 1, "the get describes the device");
      gets.push(performance.now() - t0);
    } catch {
      gets.push(Infinity);
    }
    await sleep(150);
  }
  await sampler;
  const out = await clientOut;
  const report: ClientReport = out.trim()
    ? JSON.parse(out.trim().split("\n").at(-1)!)
    : { opened: 0, closedByDaemon: 0, written: 0, errnos: [], closedWithin1s: 0, lastCloseMs: 0 };
  const rtts = [...(await pingOut).matchAll(/icmp_seq=\d+ .*time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  return {
    sent: count,
    rtts,
    gets,
    rssBeforeKb,
    rssMaxKb,
    rssDuringKb,
    fdsBefore,
    fdsMax,
    stoppedEarly,
    client: report,
  };
}

function summary(kind: Kind, m: Measured): string {
  const sorted = [...m.rtts].sort((a, b) => a - b);
  const q = (f: number) =>
    sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(f * sorted.length))]! : NaN;
  const good = m.rtts.filter((r) => r < 20).length;
  const answered = m.gets.filter(Number.isFinite);
  return `[${kind}] pings: ${good}/${m.sent} answered within 20 ms (${m.rtts.length} answered; RTT median ` +
    `${q(0.5).toFixed(2)} ms, p90 ${q(0.9).toFixed(2)} ms, max ${q(1).toFixed(2)} ms); gets: ` +
    `${answered.length}/${m.gets.length} answered, slowest ${Math.max(0, ...m.gets).toFixed(0)} ms; RSS ` +
    `${(m.rssBeforeKb / 1024).toFixed(0)} -> max ${(m.rssDuringKb / 1024).toFixed(0)} MiB while the client ` +
    `ran, ${(m.rssMaxKb / 1024).toFixed(0)} MiB in all` +
    `${
      m.stoppedEarly ? " (client stopped early: RSS passed the emergency limit)" : ""
    }; fds ${m.fdsBefore} -> ` +
    `max ${m.fdsMax}; client: ${JSON.stringify({ ...m.client, errnos: [...new Set(m.client.errnos)] })}`;
}

/** What every abusive client must leave intact. */
function assertUnhurt(m: Measured): void {
  const good = m.rtts.filter((r) => r < 20).length;
  assert.ok(good >= 0.9 * m.sent, `${good} of ${m.sent} pings answered within 20 ms`);
  assert.ok(m.gets.length >= 5, `the other client asked ${m.gets.length} times`);
  assert.ok(m.gets.every((ms) => ms < 2000), `every get answered within 2 s (${m.gets.map(Math.round)})`);
  assert.ok(!m.stoppedEarly && m.rssMaxKb - m.rssBeforeKb < 100 * 1024, "RSS grew by less than 100 MB");
}

labTest("uapi abuse: a client pipelining get=1 and never reading the replies", skip, async (lab) => {
  const m = await underAbuse(lab, "pipeline");
  console.log(summary("pipeline", m));
  assertUnhurt(m);
  // Backpressure, then the idle timeout: the daemon stopped reading it and closed it, again and again.
  assert.ok(m.client.closedByDaemon >= 1, "the daemon closed a connection whose replies were never read");
});

labTest("uapi abuse: a client trickling an endless set=1 in 16-byte pieces", skip, async (lab) => {
  const m = await underAbuse(lab, "trickle");
  console.log(summary("trickle", m));
  assertUnhurt(m);
  // Either the request reached the size limit (refused with EMSGSIZE) or the client was still sending; never
  // another answer, since the request never ended.
  for (const e of m.client.errnos) assert.equal(e, "-90", "only ever refused as too long");
});

labTest("uapi abuse: 200 connections that send nothing", skip, async (lab) => {
  const m = await underAbuse(lab, "idle");
  console.log(summary("idle", m));
  assertUnhurt(m);
  // The cap: beyond it, each newcomer displaced the oldest idle connection at once ...
  // A displaced connection's descriptor closes a turn of the event loop later, so on a loaded machine a burst
  // of accepts runs ahead of those closes for a moment (CI once saw 90 over the count before): the bound is
  // well below the 200 the client holds open, not the cap to the descriptor.
  assert.ok(m.fdsMax - m.fdsBefore <= 2 * UAPI_MAX_CONNECTIONS, `far fewer than 200 held (${m.fdsMax} fds)`);
  assert.ok(
    m.client.closedWithin1s >= 200 - UAPI_MAX_CONNECTIONS,
    `${m.client.closedWithin1s} closed at once`,
  );
  // ... and the idle timeout closed the rest.
  assert.equal(m.client.closedByDaemon, 200, "every idle connection was closed before the client gave up");
  assert.ok(m.client.lastCloseMs < IDLE_MS + 1500, `the last one after ${m.client.lastCloseMs} ms`);
});

labTest(
  "uapi limit: wg setconf of 10,000 peers goes through; one over the limit says Message too long",
  skip,
  async (lab) => {
    const t = tag();
    const ns = lab.ns(`tu3${t}`);
    const wg = `tuw3${t}`;
    await lab.daemon(wg, ns, { LOG_LEVEL: "error" });
    const conf = `/tmp/typetun-${t}.conf`;
    /** A configuration of `n` peers (random keys, an endpoint, a keepalive and two allowed IPs each). */
    const write = (n: number) => {
      const lines = ["[Interface]", "ListenPort = 51840"];
      for (let i = 0; i < n; i++) {
        lines.push(
          "[Peer]",
          `PublicKey = ${randomBytes(32).toString("base64")}`,
          `PresharedKey = ${randomBytes(32).toString("base64")}`,
          `Endpoint = 192.0.2.${i % 250}:${20000 + (i % 40000)}`,
          "PersistentKeepalive = 25",
          `AllowedIPs = 10.${(i >> 8) & 0xff}.${i & 0xff}.0/24, fd00:${i.toString(16)}::/64`,
        );
      }
      writeFileSync(conf, lines.join("\n") + "\n");
    };
    try {
      write(10_000);
      sh(`wg setconf ${wg} ${conf}`, 60_000);
      assert.equal(sh(`wg show ${wg} peers`).trim().split("\n").length, 10_000, "all 10,000 peers are there");

      // About 300 bytes a peer: 15,000 peers are over the limit. wg writes it all, then reads the errno.
      write(Math.ceil(UAPI_MAX_REQUEST_BYTES / 280));
      let err = "";
      try {
        sh(`wg setconf ${wg} ${conf}`, 60_000);
      } catch (e) {
        err = String((e as { stderr?: string }).stderr);
      }
      assert.match(err, /Message too long/, "wg reports the refusal");
      assert.equal(sh(`wg show ${wg} peers`).trim().split("\n").length, 10_000, "nothing changed");
    } finally {
      rmSync(conf, { force: true });
    }
  },
);
