/**
 * `typetun demo`: shows a tunnel working. As root: two network namespaces joined by a veth, a config file for
 * each side, `typetun up` in both, the handshake, ping, a short iperf3 and `typetun show`, then everything torn
 * down (also on Ctrl-C). Otherwise the in-process version: two devices back to back in memory, a handshake,
 * encrypted packets both ways, and what each side saw.
 * @module
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import process from "node:process";
import { performance } from "node:perf_hooks";
import { dhGenerate, dhPublic } from "../lib/crypto.ts";
import { type Clock, Device, Verdict } from "../lib/device.ts";
import { Endpoint, parseCidr } from "../lib/ip.ts";
import { DATA_HEADER_LEN } from "../lib/messages.ts";
import { keyToBase64 } from "../lib/encoding.ts";
import { addPeerUpdate } from "../lib/uapi.ts";
import { selectAead } from "./crypto.ts";
import { selfCommand } from "./daemon.ts";
import { systemRng } from "./keys.ts";

const clock: Clock = { now: () => performance.now(), wall: () => Date.now() };

function say(line: string): void {
  process.stdout.write(line + "\n");
}

interface Node {
  name: string;
  device: Device;
  endpoint: Endpoint;
  publicKey: Uint8Array;
}

function makeNode(name: string, last: number): Node {
  const device = new Device({ clock, rng: systemRng, aead: selectAead().aead });
  const key = dhGenerate(systemRng);
  device.setPrivateKey(key);
  return {
    name,
    device,
    endpoint: new Endpoint(4, new Uint8Array([192, 0, 2, last]), 51820),
    publicKey: dhPublic(key),
  };
}

function peerWith(x: Node, y: Node, allowed: string): void {
  x.device.apply(addPeerUpdate(y.publicKey, y.endpoint, [parseCidr(allowed)!]));
}

/** Carries every queued datagram across; returns how many handshake messages moved. */
function carry(x: Node, y: Node): number {
  let handshakes = 0;
  for (let round = 0; round < 10; round++) {
    let moved = 0;
    for (const [from, to] of [[x, y], [y, x]] as const) {
      for (const d of from.device.outbox.splice(0)) {
        moved++;
        if (d.data[0] !== 4) handshakes++;
        to.device.handleDatagram(d.data, 0, d.data.length, from.endpoint);
      }
    }
    if (!moved) break;
  }
  return handshakes;
}

/** An IPv4/UDP-shaped packet of `size` bytes from `src` to `dst`. */
function packet(buf: Uint8Array, off: number, size: number, src: number, dst: number): void {
  buf.fill(0, off, off + size);
  buf[off] = 0x45;
  buf[off + 2] = size >> 8;
  buf[off + 3] = size & 0xff;
  buf[off + 9] = 17;
  buf.set([10, 0, 0, src], off + 12);
  buf.set([10, 0, 0, dst], off + 16);
}

/** `typetun demo`: the namespace demo as root (with `ip` present), the in-process one otherwise. */
export async function demoMain(): Promise<number> {
  if (process.getuid?.() !== 0 || !have("ip")) {
    say("Not root (or no `ip` command): showing the in-process demo instead of two network namespaces.\n");
    return inProcessDemo();
  }
  return await netnsDemo();
}

function have(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}

/** Runs a command; returns stdout, or throws with its stderr. */
function run(argv: string[], input?: string): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: "utf8", input, timeout: 60_000 });
  if (r.status !== 0) throw new Error(`${argv.join(" ")}: ${(r.stderr || r.error?.message || "").trim()}`);
  return r.stdout;
}

async function netnsDemo(): Promise<number> {
  const [cmd, pre] = selfCommand();
  const self = (ns: string, ...args: string[]) => run(["ip", "netns", "exec", ns, cmd, ...pre, ...args]);
  const id = process.pid.toString(36);
  const sides = ["a", "b"].map((x, i) => ({
    ns: `typetun-demo-${x}-${id}`,
    ifname: `demo${x}${id}`.slice(0, 15),
    outer: `198.51.100.${i + 1}`,
    inner: `10.99.0.${i + 1}`,
    key: dhGenerate(systemRng),
  }));
  const dir = mkdtempSync("/tmp/typetun-demo-");
  let cleaned = false;
  const cleanup = () => {
    if (cleaned) return;
    cleaned = true;
    for (const s of sides) {
      spawnSync("ip", ["netns", "exec", s.ns, cmd, ...pre, "down", `${dir}/${s.ifname}.conf`], {
        stdio: "ignore",
      });
      spawnSync("ip", ["netns", "del", s.ns], { stdio: "ignore" });
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const onSignal = () => {
    cleanup();
    process.exit(130);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    say("typetun demo: two network namespaces joined by a veth, and a WireGuard tunnel between them");
    for (const s of sides) run(["ip", "netns", "add", s.ns]);
    const [a, b] = sides as [typeof sides[0], typeof sides[0]];
    run([
      "ip",
      "link",
      "add",
      `dva${id}`,
      "netns",
      a.ns,
      "type",
      "veth",
      "peer",
      "name",
      `dvb${id}`,
      "netns",
      b.ns,
    ]);
    for (const [s, dev] of [[a, `dva${id}`], [b, `dvb${id}`]] as const) {
      run(["ip", "-n", s.ns, "addr", "add", `${s.outer}/24`, "dev", dev]);
      run(["ip", "-n", s.ns, "link", "set", dev, "up"]);
      run(["ip", "-n", s.ns, "link", "set", "lo", "up"]);
    }
    for (const [me, other] of [[a, b], [b, a]] as const) {
      const file = `${dir}/${me.ifname}.conf`;
      writeFileSync(
        file,
        `[Interface]\nPrivateKey = ${keyToBase64(me.key)}\nListenPort = 51820\nAddress = ${me.inner}/24\n\n` +
          `[Peer]\nPublicKey = ${keyToBase64(dhPublic(other.key))}\nAllowedIPs = ${other.inner}/32\n` +
          `Endpoint = ${other.outer}:51820\n`,
        { mode: 0o600 },
      );
      const t0 = performance.now();
      self(me.ns, "up", file);
      say(`  up       ${me.ifname} in ${me.ns}: ${me.inner} (${(performance.now() - t0).toFixed(0)} ms)`);
    }
    const t1 = performance.now();
    run(["ip", "netns", "exec", a.ns, "ping", "-c", "1", "-W", "3", b.inner]);
    const first = (performance.now() - t1).toFixed(0);
    const hs = self(a.ns, "show", a.ifname, "latest-handshakes").trim().split(/\s+/)[1];
    say(
      `  handshake ${
        hs && hs !== "0" ? "done" : "NOT done"
      }: the first ping (which started it) answered in ${first} ms`,
    );
    const ping = run(["ip", "netns", "exec", a.ns, "ping", "-c", "5", "-i", "0.2", "-W", "3", b.inner]);
    const received = /(\d+) received/.exec(ping)?.[1] ?? "?";
    const rtt = /= [\d.]+\/([\d.]+)\//.exec(ping)?.[1] ?? "?";
    say(`  ping     ${a.inner} → ${b.inner}: ${received}/5 replies, average RTT ${rtt} ms`);
    if (have("iperf3")) {
      const server = ["ip", "netns", "exec", b.ns, "iperf3", "-s", "-1", "-D", "-B", b.inner];
      run(server);
      await new Promise((r) => setTimeout(r, 300));
      const out = JSON.parse(
        run(["ip", "netns", "exec", a.ns, "iperf3", "-c", b.inner, "-t", "3", "--json"]),
      );
      const mbps = (out.end.sum_received.bits_per_second / 1e6).toFixed(0);
      say(`  iperf3   TCP ${a.inner} → ${b.inner} for 3 s: ${mbps} Mbit/s`);
    } else {
      say("  iperf3   not installed: no throughput figure");
    }
    say(`  typetun show ${a.ifname}:`);
    for (const line of self(a.ns, "show", a.ifname).trimEnd().split("\n")) say(`    ${line}`.trimEnd());
    cleanup();
    say("  down     both sides; namespaces deleted");
    return received === "5" ? 0 : 1;
  } catch (e) {
    process.stderr.write(`typetun demo: ${(e as Error).message}\n`);
    return 1;
  } finally {
    cleanup();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

export function inProcessDemo(): number {
  const a = makeNode("alice", 1);
  const b = makeNode("bob", 2);
  peerWith(a, b, "10.0.0.2/32");
  peerWith(b, a, "10.0.0.1/32");
  say(
    `typetun demo (in process): alice ${keyToBase64(a.publicKey).slice(0, 8)}… ↔ bob ${
      keyToBase64(b.publicKey).slice(0, 8)
    }…`,
  );

  const buf = new Uint8Array(DATA_HEADER_LEN + 1500 + 32);
  const t0 = performance.now();
  packet(buf, DATA_HEADER_LEN, 84, 1, 2);
  if (a.device.handlePlaintext(buf, DATA_HEADER_LEN, 84) !== Verdict.Queued) {
    throw new Error("expected a handshake");
  }
  const messages = carry(a, b);
  say(`handshake: ${messages} messages (initiation, response), ${(performance.now() - t0).toFixed(1)} ms`);

  const n = 20_000, size = 1420;
  let delivered = 0;
  const t1 = performance.now();
  for (let i = 0; i < n; i++) {
    const [from, to, s, d] = i % 2 ? [b, a, 2, 1] : [a, b, 1, 2];
    packet(buf, DATA_HEADER_LEN, size, s, d);
    if (from.device.handlePlaintext(buf, DATA_HEADER_LEN, size) !== Verdict.Send) continue;
    const o = from.device.out;
    if (to.device.handleDatagram(buf, o.offset, o.length, from.endpoint) === Verdict.Deliver) delivered++;
  }
  const secs = (performance.now() - t1) / 1000;
  say(`data: ${delivered}/${n} packets of ${size} bytes encrypted and decrypted, both directions`);
  say(
    `      ${
      (n * size * 8 / secs / 1e6).toFixed(0)
    } Mbit/s through both ends on one core (${a.device.aead.name} AEAD)`,
  );
  for (const node of [a, b]) {
    const p = node.device.info().peers[0]!;
    say(
      `${node.name}: peer ${
        keyToBase64(p.publicKey).slice(0, 8)
      }… transfer ${p.rxBytes} B received, ${p.txBytes} B sent`,
    );
  }
  say("Run as root for the real thing: two network namespaces joined by a typetun tunnel.");
  return delivered === n ? 0 : 1;
}
