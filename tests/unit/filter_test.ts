import assert from "node:assert/strict";
import { Verdict } from "../../lib/device.ts";
import { FilterSyntaxError, formatRules, PacketFilter, parseRules, UDP_TIMEOUT } from "../../lib/filter.ts";
import { IPPROTO_UDP } from "../../lib/tuple.ts";
import { parseSet } from "../../lib/uapi.ts";
import { parseConfig } from "../../lib/configfile.ts";
import { formatConf } from "../../lib/conf.ts";
import { stripQuick } from "../../lib/config.ts";
import { configToUpdate, syncUpdate } from "../../lib/setconf.ts";
import { formatSet } from "../../lib/uapi.ts";
import { connect, deliver, FakeClock, pair, peerOf, send } from "./_harness.ts";
import { echo, icmpError, ipPacket, tcp, udp } from "./_packets.ts";

// ---- syntax ----

Deno.test("filter syntax: protocols, ports, ranges, prefixes, any and none", () => {
  assert.equal(parseRules("any"), null);
  assert.deepEqual(parseRules(" none "), []);
  const r = parseRules("tcp/22, ICMP, udp/8000-8100@10.0.0.0/24, any@fd00::/64, tcp")!;
  assert.equal(r.length, 5);
  assert.deepEqual(r.slice(0, 2).map((x) => [x.proto, x.portLo, x.portHi, x.prefix]), [
    [6, 22, 22, null],
    [1, 0, 65535, null],
  ]);
  assert.equal(r[2]!.portHi, 8100);
  assert.equal(r[2]!.prefix!.prefixLen, 24);
  assert.equal(r[3]!.prefix!.family, 6);
  assert.equal(formatRules(r), "tcp/22,icmp,udp/8000-8100@10.0.0.0/24,any@fd00::/64,tcp");
  assert.deepEqual(parseRules(formatRules(r)), r);
  assert.equal(formatRules(null), "any");
  assert.equal(formatRules([]), "none");
});

Deno.test("filter syntax: errors say what is wrong", () => {
  const cases: [string, RegExp][] = [
    ["", /empty rule list/],
    ["sctp/22", /bad rule "sctp\/22"/],
    ["icmp/8", /only tcp and udp have ports/],
    ["tcp/70000", /bad port range/],
    ["tcp/90-80", /bad port range/],
    ["tcp/22@10.0.0.0/33", /bad prefix "10.0.0.0\/33"/],
    ["tcp/22,", /bad rule ""/],
    ["tcp//22", /bad rule/],
  ];
  for (const [text, want] of cases) {
    assert.throws(
      () => parseRules(text),
      (e: Error) => e instanceof FilterSyntaxError && want.test(e.message),
      text,
    );
  }
});

Deno.test("filter keys in .conf, TOML and the UAPI; strip drops them; setconf and syncconf carry them", () => {
  const key = "hIA3ikjlSOAo0qqrI+rXaS3ZH04Tk+7PQ3Sa5fQnnxU=";
  const conf = `[Interface]\nPrivateKey = ${key}\n[Peer]\nPublicKey = ${key}\nAllowedIPs = 10.0.0.2/32\n` +
    `AllowInbound = tcp/22, icmp\nAllowOutbound = none\n`;
  const cfg = parseConfig(conf, { file: "wg0.conf" });
  assert.equal(formatRules(cfg.peers[0]!.allowInbound!), "tcp/22,icmp");
  assert.deepEqual(cfg.peers[0]!.allowOutbound, []);
  const toml = parseConfig(
    `[Interface]\nPrivateKey = "${key}"\n[[Peer]]\nPublicKey = "${key}"\nAllowedIPs = ["10.0.0.2/32"]\n` +
      `AllowInbound = "tcp/22, icmp"\nAllowOutbound = "none"\n`,
    { file: "wg0.toml", format: "toml" },
  );
  assert.deepEqual(toml.peers[0]!.allowInbound, cfg.peers[0]!.allowInbound);
  assert.match(formatConf(cfg), /AllowInbound = tcp\/22,icmp\nAllowOutbound = none\n/);
  assert.doesNotMatch(formatConf(stripQuick(cfg)), /Allow(In|Out)bound/);
  assert.throws(
    () => parseConfig(conf.replace("tcp/22", "tcp/x"), { file: "wg0.conf" }),
    /wg0.conf:6: bad AllowInbound: bad rule "tcp\/x"/,
  );
  // setconf sends them as typetun's UAPI keys, and parseSet reads them back.
  const body = formatSet(configToUpdate(cfg, "set"));
  assert.match(body, /allow_inbound=tcp\/22,icmp\nallow_outbound=none\n/);
  const parsed = parseSet(body);
  assert.ok(parsed.ok);
  assert.equal(formatRules(parsed.value.peers[0]!.allowInbound!), "tcp/22,icmp");
  const bad = parseSet(`public_key=${"ab".repeat(32)}\nallow_inbound=tcp/abc\n`);
  assert.ok(!bad.ok && bad.errno === 22 && /invalid allow_inbound/.test(bad.message));
  // A file without filter keys sends none (wg-compatible); syncconf clears a filter the daemon reports.
  const plain = configToUpdate(parseConfig(conf.replace(/AllowIn.*\n|AllowOut.*\n/g, ""), {}), "set");
  assert.doesNotMatch(formatSet(plain), /allow_/);
  const running = {
    privateKey: null,
    listenPort: 0,
    fwmark: 0,
    peers: [{
      publicKey: plain.peers[0]!.publicKey,
      presharedKey: null,
      endpoint: null,
      persistentKeepalive: 0,
      lastHandshakeMs: 0,
      rxBytes: 0,
      txBytes: 0,
      allowedIps: [],
    }],
  };
  assert.doesNotMatch(formatSet(syncUpdate(plain, running)), /allow_/);
  const hex = Array.from(plain.peers[0]!.publicKey, (b) => b.toString(16).padStart(2, "0")).join("");
  assert.match(
    formatSet(syncUpdate(plain, running, new Set([hex]))),
    /allow_inbound=any\nallow_outbound=any\n/,
  );
});

// ---- semantics, on the in-memory device pair ----

/** A and B with a session; B filters A with `inbound`/`outbound`. */
function filtered(inbound: string, outbound: string, capacity?: number, filterClock?: FakeClock) {
  const { a, b, clock } = pair();
  connect(a, b, clock);
  const filter = new PacketFilter(filterClock ?? b.device.clock, capacity);
  filter.set(peerOf(b, a), parseRules(inbound), parseRules(outbound));
  b.device.hooks.push(filter);
  /** A packet from A to B: B's verdict on it. */
  const fromA = (p: Uint8Array) => {
    const r = send(a, p);
    assert.equal(r.verdict, Verdict.Send);
    return deliver(b, r.datagram!, a.endpoint);
  };
  /** A packet from B to A: B's verdict (Send, or dropped by the filter), and A's if sent. */
  const fromB = (p: Uint8Array) => {
    const r = send(b, p);
    if (r.verdict === Verdict.Send) assert.equal(deliver(a, r.datagram!, b.endpoint), Verdict.Deliver);
    return r.verdict;
  };
  return { a, b, clock, filter, fromA, fromB };
}

const DELIVER = Verdict.Deliver, SEND = Verdict.Send, FILTERED = Verdict.DropFiltered;

Deno.test("filter: inbound rules allow only what they name; drops are counted under DropFiltered", () => {
  const { a, b, filter, fromA } = filtered("tcp/22, icmp", "any");
  assert.equal(fromA(tcp("10.0.0.1", 40000, "10.0.0.2", 22)), DELIVER);
  assert.equal(fromA(tcp("10.0.0.1", 40000, "10.0.0.2", 23)), FILTERED);
  assert.equal(fromA(udp("10.0.0.1", 40000, "10.0.0.2", 22)), FILTERED);
  assert.equal(fromA(echo("10.0.0.1", "10.0.0.2", 1)), DELIVER);
  assert.equal(b.device.verdicts[Verdict.DropFiltered], 2);
  assert.equal(filter.rulesOf(peerOf(b, a))!.droppedInbound, 2);
});

Deno.test("filter: replies to an allowed outbound connection pass inbound; unsolicited traffic does not", () => {
  const { fromA, fromB } = filtered("none", "udp/53, tcp/443");
  assert.equal(fromB(udp("10.0.0.2", 5000, "10.0.0.1", 53)), SEND);
  assert.equal(fromA(udp("10.0.0.1", 53, "10.0.0.2", 5000)), DELIVER, "the reply");
  assert.equal(fromA(udp("10.0.0.1", 53, "10.0.0.2", 5001)), FILTERED, "another port");
  assert.equal(fromB(udp("10.0.0.2", 5000, "10.0.0.1", 54)), FILTERED, "outbound to a port not allowed");
  assert.equal(fromB(tcp("10.0.0.2", 33000, "10.0.0.1", 443)), SEND);
  assert.equal(fromA(tcp("10.0.0.1", 443, "10.0.0.2", 33000, { flags: 0x12 })), DELIVER, "SYN-ACK");
  assert.equal(fromA(tcp("10.0.0.1", 443, "10.0.0.2", 33001, { flags: 0x12 })), FILTERED);
  // And the other way: a connection the peer opened (allowed inbound) is answered although outbound is `none`.
  const t2 = filtered("tcp/22", "none");
  assert.equal(t2.fromA(tcp("10.0.0.1", 40000, "10.0.0.2", 22)), DELIVER);
  assert.equal(t2.fromB(tcp("10.0.0.2", 22, "10.0.0.1", 40000, { flags: 0x12 })), SEND);
  assert.equal(t2.fromB(tcp("10.0.0.2", 22, "10.0.0.1", 40001, { flags: 0x12 })), FILTERED);
  assert.equal(t2.fromB(echo("10.0.0.2", "10.0.0.1", 9)), FILTERED);
});

Deno.test("filter: pings out are answered; an echo id not sent is not", () => {
  const { fromA, fromB } = filtered("tcp/22", "icmp");
  assert.equal(fromB(echo("10.0.0.2", "10.0.0.1", 77)), SEND);
  assert.equal(fromA(echo("10.0.0.1", "10.0.0.2", 77, true)), DELIVER);
  assert.equal(fromA(echo("10.0.0.1", "10.0.0.2", 78, true)), FILTERED);
  assert.equal(fromA(echo("10.0.0.1", "10.0.0.2", 1)), FILTERED, "a ping from the peer");
});

Deno.test("filter: ICMP errors about a known connection pass, others do not (IPv4 and IPv6)", () => {
  for (const [us, them] of [["10.0.0.2", "10.0.0.1"], ["fd00::2", "fd00::1"]]) {
    const { fromA, fromB } = filtered("tcp/22", "udp");
    const sent = udp(us!, 5000, them!, 9999, { payload: 20 });
    assert.equal(fromB(sent), SEND);
    assert.equal(fromA(icmpError(them!, us!, sent)), DELIVER, `port unreachable ${us}`);
    const never = udp(us!, 5000, them!, 7777, { payload: 20 });
    assert.equal(fromA(icmpError(them!, us!, never)), FILTERED, `about a connection never made ${us}`);
    // An error we send about the peer's allowed inbound connection passes outbound too.
    const theirs = tcp(them!, 41000, us!, 22);
    assert.equal(fromA(theirs), DELIVER);
    const t2 = filtered("tcp/22", "none");
    assert.equal(t2.fromA(theirs), DELIVER);
    assert.equal(t2.fromB(icmpError(us!, them!, theirs)), SEND);
    assert.equal(t2.fromB(icmpError(us!, them!, tcp(them!, 41001, us!, 22))), FILTERED);
  }
});

Deno.test("filter: IPv6 rules and prefixes", () => {
  const { fromA, fromB } = filtered("tcp/22@fd00::2/128", "udp/53@10.0.0.0/8");
  assert.equal(fromA(tcp("fd00::1", 40000, "fd00::2", 22)), DELIVER);
  assert.equal(fromA(tcp("10.0.0.1", 40000, "10.0.0.2", 22)), FILTERED, "the prefix is IPv6 only");
  assert.equal(fromB(udp("10.0.0.2", 1, "10.0.0.1", 53)), SEND);
  assert.equal(fromB(udp("fd00::2", 1, "fd00::1", 53)), FILTERED);
});

Deno.test("filter: later fragments pass only after their datagram's first fragment passed", () => {
  for (const [us, them] of [["10.0.0.2", "10.0.0.1"], ["fd00::2", "fd00::1"]]) {
    const { fromA, fromB } = filtered("none", "udp/53");
    const later = (src: string, dst: string, id: number) =>
      ipPacket(src, dst, IPPROTO_UDP, new Uint8Array(48), { fragOffset: 10, fragId: id });
    assert.equal(fromB(udp(us!, 5000, them!, 53, { moreFragments: true, fragId: 7, payload: 72 })), SEND);
    assert.equal(fromB(later(us!, them!, 7)), SEND);
    assert.equal(fromB(later(us!, them!, 8)), FILTERED, "a datagram whose first fragment was not seen");
    assert.equal(fromB(udp(us!, 5000, them!, 54, { moreFragments: true, fragId: 9, payload: 72 })), FILTERED);
    assert.equal(fromB(later(us!, them!, 9)), FILTERED, "the first fragment was dropped");
    // The fragmented reply: its first fragment matches the connection, then its later ones pass.
    assert.equal(fromA(later(them!, us!, 3)), FILTERED, "before its first fragment");
    assert.equal(fromA(udp(them!, 53, us!, 5000, { moreFragments: true, fragId: 3, payload: 72 })), DELIVER);
    assert.equal(fromA(later(them!, us!, 3)), DELIVER);
  }
});

Deno.test("filter: connection state is bounded (least recent evicted, counted) and expires when idle", () => {
  // The filter's own clock, so that the sessions need no rekeying while its state ages.
  const clock = new FakeClock();
  const { filter, fromA, fromB } = filtered("none", "udp", 4, clock);
  for (let port = 1; port <= 5; port++) {
    assert.equal(fromB(udp("10.0.0.2", 6000 + port, "10.0.0.1", 53)), SEND);
  }
  assert.equal(filter.state.size, 4);
  assert.equal(filter.state.evicted, 1);
  assert.equal(fromA(udp("10.0.0.1", 53, "10.0.0.2", 6001)), FILTERED, "the evicted, least recent one");
  assert.equal(fromA(udp("10.0.0.1", 53, "10.0.0.2", 6005)), DELIVER);
  clock.advance(UDP_TIMEOUT + 1);
  assert.equal(fromA(udp("10.0.0.1", 53, "10.0.0.2", 6005)), FILTERED, "idle past the UDP timeout");
});

Deno.test("filter: malformed packets of a filtered peer are dropped; an unfiltered peer is not looked at", () => {
  const { a, b, filter, fromA } = filtered("any", "none");
  // A TCP packet whose header is cut short.
  const cut = tcp("10.0.0.1", 1, "10.0.0.2", 2).subarray(0, 30);
  cut[3] = 30;
  assert.equal(fromA(cut), FILTERED);
  // Both directions `any`: no filter for the peer, and none at all for the device.
  filter.set(peerOf(b, a), undefined, null);
  assert.equal(filter.active, false);
  assert.equal(fromA(cut), DELIVER);
});
