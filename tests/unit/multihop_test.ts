/**
 * Multihop (cmd/multihop.ts) on the real data loop with the in-memory doubles, no root: a client whose wg0 (A)
 * is carried by a hop (H) to a relay (R, a plain Device whose loop forwards and masquerades as a kernel
 * would), which reaches the exit (B). The relay's forwarding is written here, with its own header code.
 */
import assert from "node:assert/strict";
import { ChannelWaker, type DatagramChannel, MemoryNetwork, PacketChannel } from "../../cmd/channel.ts";
import type { LoopClock } from "../../cmd/clock.ts";
import { type DatagramTransport, DataPlane, type Waker } from "../../cmd/dataplane.ts";
import { Level, Logger } from "../../cmd/log.ts";
import {
  checkHops,
  hopOverhead,
  hopSnapshots,
  type HopSpec,
  HopTransport,
  HopWaker,
  innerFamilies,
  multihopMtu,
} from "../../cmd/multihop.ts";
import { dhGenerate, dhPublic } from "../../lib/crypto.ts";
import { Device } from "../../lib/device.ts";
import { Endpoint, parseAddress, parseCidr } from "../../lib/ip.ts";
import { formatConf, parseConf } from "../../lib/conf.ts";
import { formatToml, parseToml } from "../../lib/toml.ts";
import { Decap } from "../../lib/udp_tunnel.ts";
import { REKEY_AFTER_TIME } from "../../lib/messages.ts";
import { keyToBase64 } from "../../lib/encoding.ts";
import { formatHopMetrics } from "../../lib/metrics.ts";
import {
  BLOCK_EPB,
  BLOCK_IDB,
  OUTBOUND,
  readBlocks,
  readEnhancedPacket,
  readInterfaceDescription,
} from "../../lib/pcapng.ts";
import { capturePath, CaptureServer } from "../../cmd/capture_server.ts";
import { mkdtempSync, rmSync } from "node:fs";
import { capture } from "./_capture.ts";
import { FakeClock, ipv4Packet, seededRng } from "./_harness.ts";

class TestClock extends FakeClock implements LoopClock {
  tick(): number {
    return this.t;
  }
  msUntil(t: number): number {
    return Math.max(0, Math.ceil(t - this.t));
  }
}

const quiet = () => new Logger(Level.Silent, "test");

function sum16(bytes: Uint8Array, init = 0): number {
  let s = init;
  for (let i = 0; i < bytes.length; i += 2) s += (bytes[i]! << 8) | (bytes[i + 1] ?? 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** An IP/UDP packet as the relay's kernel would build one: test code, independent of lib/udp_tunnel.ts. */
function udpPacket(
  src: Uint8Array,
  sport: number,
  dst: Uint8Array,
  dport: number,
  data: Uint8Array,
): Uint8Array {
  const v4 = src.length === 4, ihl = v4 ? 20 : 40;
  const p = new Uint8Array(ihl + 8 + data.length);
  const ulen = 8 + data.length;
  if (v4) {
    p.set([0x45, 0, p.length >> 8, p.length & 0xff, 0, 0, 0, 0, 63, 17], 0);
    p.set(src, 12);
    p.set(dst, 16);
    const c = ~sum16(p.subarray(0, 20)) & 0xffff;
    p[10] = c >> 8;
    p[11] = c & 0xff;
  } else {
    p.set([0x60, 0, 0, 0, ulen >> 8, ulen & 0xff, 17, 63], 0);
    p.set(src, 8);
    p.set(dst, 24);
  }
  p.set([sport >> 8, sport & 0xff, dport >> 8, dport & 0xff, ulen >> 8, ulen & 0xff], ihl);
  p.set(data, ihl + 8);
  const pseudo = new Uint8Array(src.length * 2 + 8);
  pseudo.set(src, 0);
  pseudo.set(dst, src.length);
  pseudo.set([0, 0, ulen >> 8, ulen & 0xff, 0, 0, 0, 17], src.length * 2);
  const c = (~sum16(p.subarray(ihl), sum16(pseudo)) & 0xffff) || 0xffff;
  p[ihl + 6] = c >> 8;
  p[ihl + 7] = c & 0xff;
  return p;
}

/**
 * A relay's kernel, forwarding for its tunnel: UDP the relay's Device delivers (from a hop) leaves from `nat`
 * (masquerade); what comes back there goes into the tunnel to the hop's address, to the port it came from.
 */
function masquerade(
  net: MemoryNetwork,
  relayPackets: PacketChannel,
  nat: Endpoint,
  hopAddrs: Uint8Array[],
  waker: ChannelWaker,
  forwarded = () => {},
): void {
  let hopPort = 0;
  relayPackets.onWrite = (p) => {
    const v4 = p[0]! >> 4 === 4, ihl = v4 ? (p[0]! & 15) * 4 : 40;
    if ((v4 ? p[9] : p[6]) !== 17) return; // the kernel would answer pings itself; not needed here
    const dst = p.slice(v4 ? 16 : 24, v4 ? 20 : 40);
    hopPort = (p[ihl]! << 8) | p[ihl + 1]!;
    const dport = (p[ihl + 2]! << 8) | p[ihl + 3]!;
    const ulen = (p[ihl + 4]! << 8) | p[ihl + 5]!;
    forwarded();
    net.carry(p.slice(ihl + 8, ihl + ulen), nat, { addr: dst, port: dport });
  };
  net.attach(nat, waker).arrive = (data, from) => {
    const hopAddr = hopAddrs.find((x) => x.length === from.addr.length)!;
    relayPackets.put(udpPacket(from.addr, from.port, hopAddr, hopPort, data));
  };
}

interface World {
  clock: TestClock;
  a: Device;
  h: Device;
  r: Device;
  b: Device;
  hop: HopTransport;
  clientUdp: DatagramChannel;
  relayPackets: PacketChannel;
  clientPackets: PacketChannel;
  exitPackets: PacketChannel;
  loops: DataPlane[];
  /** What the relay forwarded out (to B's address), and the endpoints B saw A at. */
  forwarded: number;
  settle(): void;
}

/**
 * Client A (wg0 10.10.0.1, port 51000) inside hop H (10.64.0.2 / fd00:64::2) → relay R at 192.0.2.2:2000,
 * which forwards to B (10.10.0.2) at `exit` port 3000 from its own outside address 203.0.113.1 (or
 * 2001:db8:ff::1), port 40000.
 */
function world(exitFamily: 4 | 6 = 4): World {
  const clock = new TestClock();
  const rng = seededRng(7);
  const dev = () => {
    const d = new Device({ clock, rng });
    d.setPrivateKey(dhGenerate(rng));
    return d;
  };
  const a = dev(), h = dev(), r = dev(), b = dev();
  const pub = (d: Device) => dhPublic(d.identity!.privateKey);
  const exitAddr = parseAddress(exitFamily === 4 ? "198.51.100.2" : "2001:db8::2")!;
  const natAddr = parseAddress(exitFamily === 4 ? "203.0.113.1" : "2001:db8:ff::1")!;
  const hopAddrs = [parseAddress("10.64.0.2")!, parseAddress("fd00:64::2")!];
  const peer = (publicKey: Uint8Array, allowed: string[], endpoint?: Endpoint) => ({
    publicKey,
    remove: false,
    updateOnly: false,
    replaceAllowedIps: true,
    allowedIps: allowed.map((c) => parseCidr(c)!),
    ...(endpoint ? { endpoint } : {}),
  });
  a.listenPort = 51000;
  a.apply({
    replacePeers: false,
    peers: [peer(pub(b), ["10.10.0.2/32"], new Endpoint(exitFamily, exitAddr, 3000))],
  });
  h.apply({
    replacePeers: false,
    peers: [
      peer(pub(r), ["198.51.100.0/24", "2001:db8::/64"], new Endpoint(4, parseAddress("192.0.2.2")!, 2000)),
    ],
  });
  r.listenPort = 2000;
  r.apply({ replacePeers: false, peers: [peer(pub(h), ["10.64.0.0/24", "fd00:64::/64"])] });
  b.listenPort = 3000;
  b.apply({ replacePeers: false, peers: [peer(pub(a), ["10.10.0.1/32"])] });

  const net = new MemoryNetwork();
  const wc = new ChannelWaker(), wr = new ChannelWaker(), wb = new ChannelWaker();
  const clientUdp = net.attach(new Endpoint(4, parseAddress("192.0.2.1")!, 1000), wc);
  const hop = new HopTransport(h, clientUdp, a, hopAddrs);
  const clientPackets = new PacketChannel(wc);
  const relayPackets = new PacketChannel(wr);
  const exitPackets = new PacketChannel(wb);
  const loops = [
    new DataPlane({
      device: a,
      packets: clientPackets,
      transport: hop,
      clock,
      waker: new HopWaker(wc, [h], clock),
      log: quiet(),
    }),
    new DataPlane({
      device: r,
      packets: relayPackets,
      transport: net.attach(new Endpoint(4, parseAddress("192.0.2.2")!, 2000), wr),
      clock,
      waker: wr,
      log: quiet(),
    }),
    new DataPlane({
      device: b,
      packets: exitPackets,
      transport: net.attach(new Endpoint(exitFamily, exitAddr, 3000), wb),
      clock,
      waker: wb,
      log: quiet(),
    }),
  ];
  const w: World = {
    clock,
    a,
    h,
    r,
    b,
    hop,
    clientUdp,
    relayPackets,
    clientPackets,
    exitPackets,
    loops,
    forwarded: 0,
    settle() {
      for (let i = 0; i < 100; i++) {
        let moved = false;
        for (const l of loops) moved = l.round() || moved;
        if (!moved) return;
      }
      throw new Error("the loops did not settle");
    },
  };
  masquerade(net, relayPackets, new Endpoint(exitFamily, natAddr, 40000), hopAddrs, wr, () => w.forwarded++);
  return w;
}

for (const family of [4, 6] as const) {
  Deno.test(`multihop: wg0 reaches its peer through a hop and back (IPv${family} inside the hop)`, () => {
    const w = world(family);
    const ping = ipv4Packet("10.10.0.1", "10.10.0.2", new Uint8Array(100).fill(0xab));
    w.clientPackets.put(ping);
    w.settle();
    assert.equal(w.exitPackets.written.length, 1, "the packet came out at the exit");
    assert.deepEqual(w.exitPackets.written[0], ping);
    // B sees A at the relay's outside address, and A's listen port never left the tunnel.
    const seen = w.b.info().peers[0]!.endpoint!;
    assert.equal(seen.toString(), family === 4 ? "203.0.113.1:40000" : "[2001:db8:ff::1]:40000");
    const pong = ipv4Packet("10.10.0.2", "10.10.0.1", new Uint8Array(300).fill(0xcd));
    w.exitPackets.put(pong);
    w.settle();
    assert.deepEqual(w.clientPackets.written, [pong]);
    assert.ok(w.h.info().peers[0]!.lastHandshakeMs > 0, "the hop handshook with the relay");
    assert.ok(w.a.info().peers[0]!.lastHandshakeMs > 0, "wg0 handshook with the exit, through the hop");

    // With sessions up, data is built where the loop reserved it and passes both layers in place.
    const before = { inPlace: w.clientUdp.inPlace, copied: w.clientUdp.copied };
    for (let i = 0; i < 20; i++) {
      w.clientPackets.put(ipv4Packet("10.10.0.1", "10.10.0.2", new Uint8Array(1000 + i)));
    }
    w.settle();
    assert.equal(w.exitPackets.written.length, 21);
    assert.equal(w.clientUdp.inPlace - before.inPlace, 20, "every data packet sent in place");
    assert.equal(w.clientUdp.copied - before.copied, 0, "nothing copied");
    assert.equal(w.hop.droppedTotal, 0);
  });
}

Deno.test("multihop: the hop drops and counts what is not UDP for wg0's address and port", () => {
  const w = world(4);
  w.clientPackets.put(ipv4Packet("10.10.0.1", "10.10.0.2", new Uint8Array(10)));
  w.settle();
  const hop = parseAddress("10.64.0.2")!, relay = parseAddress("198.51.100.9")!;
  const icmp = udpPacket(relay, 1, hop, 51000, new Uint8Array(8));
  icmp[9] = 1; // an ICMP packet (its checksums no longer matter: it is refused on the protocol)
  const badSum = udpPacket(relay, 9, hop, 51000, new Uint8Array(40).fill(1));
  badSum[28 + 5]! ^= 0xff;
  w.relayPackets.put(
    icmp,
    udpPacket(relay, 9, hop, 51001, new Uint8Array(40)), // another port
    udpPacket(relay, 9, parseAddress("10.64.0.3")!, 51000, new Uint8Array(40)), // another address
    badSum,
  );
  w.settle();
  assert.equal(w.hop.dropped[Decap.NotUdp], 1);
  assert.equal(w.hop.dropped[Decap.NotForUs], 2);
  assert.equal(w.hop.dropped[Decap.BadChecksum], 1);
  assert.equal(w.hop.droppedTotal, 4);
  assert.equal(w.clientPackets.written.length, 0, "nothing reached wg0");

  // /metrics shows the hop: its relay peer's bytes and handshake, and its drops by reason, under `hop`.
  const text = formatHopMetrics("wg0", hopSnapshots([w.h], [w.hop]));
  const relayLabels = `interface="wg0",hop="1",public_key="${keyToBase64(w.h.info().peers[0]!.publicKey)}",` +
    `allowed_ips="198.51.100.0/24,2001:db8::/64"`;
  const value = (series: string) => {
    const line = text.split("\n").find((l) => l.startsWith(series + " "));
    assert.ok(line, `${series} in\n${text}`);
    return Number(line.slice(series.length + 1));
  };
  const peer = w.h.info().peers[0]!;
  assert.ok(peer.txBytes > 0 && peer.rxBytes > 0);
  assert.equal(value(`typetun_hop_sent_bytes_total{${relayLabels}}`), peer.txBytes);
  assert.equal(value(`typetun_hop_received_bytes_total{${relayLabels}}`), peer.rxBytes);
  assert.equal(
    value(`typetun_hop_latest_handshake_seconds{${relayLabels}}`),
    Math.floor(peer.lastHandshakeMs / 1000),
  );
  assert.equal(
    value(`typetun_hop_packets_dropped_total{interface="wg0",hop="1",reason="unwrap_not_udp"}`),
    1,
  );
  assert.equal(
    value(`typetun_hop_packets_dropped_total{interface="wg0",hop="1",reason="unwrap_not_for_us"}`),
    2,
  );
  assert.equal(
    value(`typetun_hop_packets_dropped_total{interface="wg0",hop="1",reason="unwrap_bad_checksum"}`),
    1,
  );
  assert.equal(value(`typetun_hop_packets_dropped_total{interface="wg0",hop="1",reason="no_route"}`), 0);
  assert.match(text, /^# TYPE typetun_hop_sent_bytes_total counter$/m);
  assert.equal(formatHopMetrics("wg0", []), "", "nothing without hops");
});

Deno.test("multihop: the hop rekeys on its own timers, which the waker waits for", () => {
  const w = world(4);
  w.clientPackets.put(ipv4Packet("10.10.0.1", "10.10.0.2", new Uint8Array(10)));
  w.settle();
  const first = w.h.handshakesCompleted;
  assert.ok(first >= 1);
  const waker = new HopWaker(new ChannelWaker(), [w.h], w.clock);
  let waited = -1;
  (waker.inner as ChannelWaker).waitAsync = (ms: number) => {
    waited = ms;
    return Promise.resolve(false);
  };
  waker.waitAsync(60_000);
  assert.ok(waited >= 0 && waited < 60_000, `a hop deadline shortens the wait (${waited} ms)`);
  // Traffic for longer than REKEY_AFTER_TIME: the hop, as initiator, starts a new handshake.
  for (let t = 0; t < REKEY_AFTER_TIME + 20_000; t += 5_000) {
    w.clock.advance(5_000);
    w.clientPackets.put(ipv4Packet("10.10.0.1", "10.10.0.2", new Uint8Array(10)));
    w.settle();
  }
  assert.ok(w.h.handshakesCompleted > first, "the hop rekeyed");
  assert.ok(w.exitPackets.written.length > 20, "and traffic kept flowing");
});

Deno.test("multihop: an endpoint outside the hop's AllowedIPs is refused with the files named", () => {
  const key = keyToBase64(dhPublic(dhGenerate(seededRng(3))));
  const spec = (path: string, text: string, eps: [string, string][] = []): HopSpec => {
    const cfg = parseConf(text, { file: path });
    const endpoints = new Map();
    for (const p of cfg.peers) {
      const e = eps.find(([h]) => p.endpoint?.host === h);
      if (p.endpoint && e) endpoints.set(p.endpoint, new Endpoint(4, parseAddress(e[1])!, p.endpoint.port));
    }
    return { path, cfg, endpoints };
  };
  const priv = keyToBase64(dhGenerate(seededRng(4)));
  const entry = spec(
    "entry.conf",
    `[Interface]\nPrivateKey = ${priv}\nAddress = 10.64.0.2/32\n[Peer]\nPublicKey = ${key}\n` +
      `AllowedIPs = 10.0.0.0/24\nEndpoint = 192.0.2.2:51820\n`,
    [["192.0.2.2", "192.0.2.2"]],
  );
  const inner = (ep: string) =>
    spec(
      "wg0.conf",
      `[Interface]\nPrivateKey = ${priv}\n[Peer]\nPublicKey = ${key}\nAllowedIPs = 0.0.0.0/0\nEndpoint = ${ep}:51820\n`,
      [[ep, ep]],
    );
  checkHops([entry], inner("10.0.0.5"));
  assert.throws(
    () => checkHops([entry], inner("10.0.1.5")),
    /wg0\.conf: the endpoint 10\.0\.1\.5:51820 .* not in the AllowedIPs of the hop around it \(entry\.conf: 10\.0\.0\.0\/24\)/,
  );
  const noAddress = spec("bad.conf", `[Interface]\nPrivateKey = ${priv}\n[Peer]\nPublicKey = ${key}\n`);
  assert.throws(() => checkHops([noAddress]), /bad\.conf: a hop needs an Address/);
  // MTU: 1420 at the entry, 80 per IPv6 layer, 60 per IPv4 one.
  assert.equal(hopOverhead(6), 80);
  assert.equal(hopOverhead(4), 60);
  assert.deepEqual(innerFamilies([entry], inner("10.0.0.5")), [4]);
  assert.equal(multihopMtu(1420, innerFamilies([entry], inner("10.0.0.5"))), 1360);
  assert.equal(multihopMtu(1420, [6, 4]), 1280);
});

Deno.test("multihop: Via in .conf and TOML (hop files, outermost first), refused by wg's own spelling", () => {
  const priv = keyToBase64(dhGenerate(seededRng(5)));
  const conf = parseConf(
    `[Interface]\nPrivateKey = ${priv}\nVia = entry.conf\nVia = middle.toml, last hop.conf\n`,
  );
  assert.deepEqual(conf.via, ["entry.conf", "middle.toml", "last hop.conf"]);
  assert.deepEqual(parseConf(formatConf(conf)).via, conf.via);
  assert.deepEqual(parseToml(formatToml(conf)).via, conf.via);
  const toml = parseToml(
    `[Interface]\nPrivateKey = "${priv}"\nvia = ["/etc/wireguard/entry.conf", "b.conf"]\n`,
  );
  assert.deepEqual(toml.via, ["/etc/wireguard/entry.conf", "b.conf"]);
  assert.throws(
    () => parseConf(`[Interface]\nVia = entry.conf\n`, { wgOnly: true }),
    /Via is a wg-quick key/,
  );
  assert.throws(() => parseToml(`[Interface]\nVia = ["a\\tb"]\n`), /bad Via/);
  assert.throws(() => parseConf(`[Peer]\nVia = entry.conf\n`), /belongs in \[Interface\]/);
});

Deno.test("multihop: a chain of two hops, the first given the outermost; in place through both layers", () => {
  const clock = new TestClock();
  const rng = seededRng(11);
  const dev = (port: number) => {
    const d = new Device({ clock, rng });
    d.setPrivateKey(dhGenerate(rng));
    d.listenPort = port;
    return d;
  };
  const a = dev(51000), h1 = dev(0), h2 = dev(1000), r1 = dev(2000), r2 = dev(3000), b = dev(4000);
  const pub = (d: Device) => dhPublic(d.identity!.privateKey);
  const ep = (s: string, port: number) => new Endpoint(4, parseAddress(s)!, port);
  const link = (d: Device, peerOf: Device, allowed: string, endpoint?: Endpoint) =>
    d.apply({
      replacePeers: false,
      peers: [{
        publicKey: pub(peerOf),
        remove: false,
        updateOnly: false,
        replaceAllowedIps: true,
        allowedIps: [parseCidr(allowed)!],
        ...(endpoint ? { endpoint } : {}),
      }],
    });
  link(h1, r1, "198.51.100.0/24", ep("192.0.2.2", 2000)); // the entry relay; the next relay is behind it
  link(r1, h1, "10.64.0.0/24");
  link(h2, r2, "203.0.113.0/24", ep("198.51.100.2", 3000)); // the second relay; the exit is behind it
  link(r2, h2, "10.65.0.0/24");
  link(a, b, "10.10.0.2/32", ep("203.0.113.2", 4000));
  link(b, a, "10.10.0.1/32");

  const net = new MemoryNetwork();
  const wc = new ChannelWaker(), w1 = new ChannelWaker(), w2 = new ChannelWaker(), wb = new ChannelWaker();
  const udp = net.attach(ep("192.0.2.1", 1000), wc);
  const t1 = new HopTransport(h1, udp, h2, [parseAddress("10.64.0.2")!]);
  const t2 = new HopTransport(h2, t1, a, [parseAddress("10.65.0.2")!]);
  const [pa, p1, p2, pb] = [wc, w1, w2, wb].map((w) => new PacketChannel(w));
  const loop = (device: Device, packets: PacketChannel, transport: DatagramTransport, waker: Waker) =>
    new DataPlane({ device, packets, transport, clock, waker, log: quiet() });
  const loops = [
    loop(a, pa!, t2, new HopWaker(wc, [h1, h2], clock)),
    loop(r1, p1!, net.attach(ep("192.0.2.2", 2000), w1), w1),
    loop(r2, p2!, net.attach(ep("198.51.100.2", 3000), w2), w2),
    loop(b, pb!, net.attach(ep("203.0.113.2", 4000), wb), wb),
  ];
  masquerade(net, p1!, ep("198.51.100.1", 40000), [parseAddress("10.64.0.2")!], w1);
  masquerade(net, p2!, ep("203.0.113.1", 41000), [parseAddress("10.65.0.2")!], w2);
  const settle = () => {
    for (let i = 0; i < 200; i++) {
      let moved = false;
      for (const l of loops) moved = l.round() || moved;
      if (!moved) return;
    }
    throw new Error("the loops did not settle");
  };
  const ping = ipv4Packet("10.10.0.1", "10.10.0.2", new Uint8Array(64).fill(1));
  pa!.put(ping);
  settle();
  assert.deepEqual(pb!.written, [ping]);
  // Each relay sees the one before it at its forwarded address.
  assert.equal(r2.info().peers[0]!.endpoint!.toString(), "198.51.100.1:40000");
  assert.equal(b.info().peers[0]!.endpoint!.toString(), "203.0.113.1:41000");
  const pong = ipv4Packet("10.10.0.2", "10.10.0.1", new Uint8Array(64).fill(2));
  pb!.put(pong);
  settle();
  assert.deepEqual(pa!.written, [pong]);
  const before = { inPlace: udp.inPlace, copied: udp.copied };
  for (let i = 0; i < 10; i++) pa!.put(ipv4Packet("10.10.0.1", "10.10.0.2", new Uint8Array(1200)));
  settle();
  assert.equal(pb!.written.length, 11);
  assert.equal(udp.inPlace - before.inPlace, 10, "sent in place through both hops");
  assert.equal(udp.copied - before.copied, 0);
  // Three WireGuard layers on the wire: each pads to 16 and adds 32, each hop adds IP/UDP (28) first.
  const pad = (n: number) => (n + 15) & ~15;
  assert.equal(udp.batches.at(-1)!.at(-1)!.length, pad(pad(pad(1220) + 32 + 28) + 32 + 28) + 32); // 1392
});

Deno.test({
  name:
    "multihop: capture --outer shows the entry hop's datagrams (those on the wire), not wg0's inside them",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const w = world(4);
    w.h.listenPort = 1000; // the client socket's port, as the daemon gives the entry hop
    const dir = mkdtempSync("/tmp/typetun-mhcap-");
    const server = await CaptureServer.listen(capturePath("mh0", dir), w.loops[0]!, "mh0", 0, quiet(), {
      outerDevice: w.h,
      setOuterTap: (t) => w.hop.setTap(t),
    });
    try {
      const c = await capture(server.path, dir, " outer");
      assert.equal(c.reply(), "ok\n");
      assert.equal(w.loops[0]!.tap, null, "wg0's own datagrams are not tapped");
      w.clientPackets.put(ipv4Packet("10.10.0.1", "10.10.0.2", new Uint8Array(100)));
      w.settle();
      w.exitPackets.put(ipv4Packet("10.10.0.2", "10.10.0.1", new Uint8Array(100)));
      w.settle();
      assert.equal(w.clientPackets.written.length, 1, "the reply came back");
      const stream = await c.stop();
      assert.equal(w.hop.tap, null, "the tap goes with the capture");
      const blocks = readBlocks(stream.subarray(stream.indexOf(10) + 1));
      const relayKey = keyToBase64(w.h.info().peers[0]!.publicKey);
      const names = blocks.filter((x) => x.type === BLOCK_IDB).map((x) =>
        readInterfaceDescription(x.body).name
      );
      assert.ok(names.includes(relayKey), `the relay is an interface (${names})`);
      const eps = blocks.filter((x) => x.type === BLOCK_EPB).map((x) => readEnhancedPacket(x.body));
      // IPv4 after the 20-byte SLL2 header: source, destination, then the UDP ports.
      const relayIface = names.indexOf(relayKey);
      const udp = eps.filter((p) => p.iface === relayIface).map((p) => {
        const d = p.data.subarray(20), port = (at: number) => (d[at]! << 8) | d[at + 1]!;
        return `${p.direction === OUTBOUND ? "out" : "in"} ${d.subarray(12, 16).join(".")}:${port(20)} > ` +
          `${d.subarray(16, 20).join(".")}:${port(22)}`;
      });
      const plain = eps.length - udp.length;
      assert.ok(udp.length >= 4, `handshakes and data both ways on the wire: ${udp.join(", ")}`);
      assert.deepEqual(plain, 2, "and the two plaintext packets");
      for (const line of udp) {
        assert.match(
          line,
          /^(out 0\.0\.0\.0:1000 > 192\.0\.2\.2:2000|in 192\.0\.2\.2:2000 > 0\.0\.0\.0:1000)$/,
        );
      }
      assert.ok(udp.some((l) => l.startsWith("out")) && udp.some((l) => l.startsWith("in")));
    } finally {
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  },
});
