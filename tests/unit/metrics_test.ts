import assert from "node:assert/strict";
import { DROP_REASONS, Verdict } from "../../lib/device.ts";
import { keyToBase64 } from "../../lib/encoding.ts";
import { Endpoint, parseCidr } from "../../lib/ip.ts";
import {
  dropReasonName,
  escapeLabelValue,
  formatMetrics,
  formatValue,
  type MetricsSnapshot,
  snapshotDevice,
} from "../../lib/metrics.ts";
import { REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX } from "../../lib/messages.ts";
import { MetricsServer, parseMaxAge, parseMetricsAddress } from "../../cmd/metrics.ts";
import { connect, deliver, drain, elapse, ipv4Packet, packetAB, pair, peerOf, send } from "./_harness.ts";

/**
 * An independent reader of the text format 0.0.4, strict where the format is: every sample belongs to a family
 * whose HELP and TYPE came first and once, families are contiguous, labels are `name="value"` with only `\\`,
 * `\"` and `\n` escapes. Returns the samples with their labels unescaped.
 */
function readExposition(text: string) {
  assert.ok(text.endsWith("\n"), "ends with a line feed");
  const types = new Map<string, string>();
  const helps = new Map<string, string>();
  const samples: { name: string; labels: [string, string][]; value: number }[] = [];
  const seen: string[] = [];
  for (const line of text.slice(0, -1).split("\n")) {
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (meta) {
      const [, kind, name, rest] = meta;
      const map = kind === "HELP" ? helps : types;
      assert.ok(!map.has(name!), `one ${kind} for ${name}`);
      if (kind === "TYPE") assert.match(rest!, /^(counter|gauge)$/);
      map.set(name!, rest!);
      if (seen.at(-1) !== name) {
        assert.ok(!seen.includes(name!), `${name} is contiguous`);
        seen.push(name!);
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$/.exec(line);
    assert.ok(m, `a sample line: ${JSON.stringify(line)}`);
    const [, name, body, value] = m;
    assert.equal(seen.at(-1), name, `${name} follows its own HELP and TYPE`);
    assert.ok(types.has(name!) && helps.has(name!));
    const labels: [string, string][] = [];
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/y;
    let at = 0;
    while (at < body!.length) {
      re.lastIndex = at;
      const l = re.exec(body!);
      assert.ok(l, `labels of ${JSON.stringify(line)}`);
      labels.push([l[1]!, l[2]!.replace(/\\([\\"n])/g, (_, c) => (c === "n" ? "\n" : c))]);
      at = re.lastIndex;
    }
    assert.ok(/^(-?[0-9]+(\.[0-9]+)?(e[+-]?[0-9]+)?|NaN|[+-]Inf)$/.test(value!), `value ${value}`);
    samples.push({ name: name!, labels, value: Number(value!.replace("Inf", "Infinity")) });
  }
  return { types, helps, samples };
}

const KEY1 = new Uint8Array(32).fill(1);
const KEY2 = new Uint8Array(32).map((_, i) => i * 7);

function snapshot(over: Partial<MetricsSnapshot> = {}): MetricsSnapshot {
  return {
    interface: "wg0",
    peers: [
      {
        publicKey: KEY1,
        presharedKey: null,
        endpoint: new Endpoint(4, new Uint8Array([192, 0, 2, 1]), 51820),
        persistentKeepalive: 0,
        lastHandshakeMs: 1_700_000_123_999,
        rxBytes: 1234,
        txBytes: 5678,
        allowedIps: [parseCidr("10.0.0.2/32")!, parseCidr("fd00::/64")!],
      },
      {
        publicKey: KEY2,
        presharedKey: null,
        endpoint: null,
        persistentKeepalive: 0,
        lastHandshakeMs: 0,
        rxBytes: 0,
        txBytes: 0,
        allowedIps: [],
      },
    ],
    drops: [{ reason: "no_route", count: 3 }, { reason: "replay", count: 0 }],
    handshakesInitiated: 7,
    handshakesCompleted: 5,
    handshakesFailed: 2,
    cookieRepliesSent: 1,
    underLoad: true,
    keypairs: 3,
    offloads: [{ offload: "tun_tso", enabled: true }, { offload: "udp4_gso", enabled: false }],
    ...over,
  };
}

Deno.test("metrics: prometheus_wireguard_exporter's families, labels in its order, values from the peers", () => {
  const text = formatMetrics(snapshot());
  const { types, helps, samples } = readExposition(text);
  assert.equal(types.get("wireguard_sent_bytes_total"), "counter");
  assert.equal(types.get("wireguard_received_bytes_total"), "counter");
  assert.equal(types.get("wireguard_latest_handshake_seconds"), "gauge");
  assert.equal(helps.get("wireguard_sent_bytes_total"), "Bytes sent to the peer");
  assert.equal(helps.get("wireguard_received_bytes_total"), "Bytes received from the peer");
  // The exporter's exact lines, so a dashboard's queries and a diff against its output both hold.
  const k1 = keyToBase64(KEY1), k2 = keyToBase64(KEY2);
  for (
    const line of [
      `wireguard_sent_bytes_total{interface="wg0",public_key="${k1}",allowed_ips="10.0.0.2/32,fd00::/64"} 5678`,
      `wireguard_received_bytes_total{interface="wg0",public_key="${k1}",allowed_ips="10.0.0.2/32,fd00::/64"} 1234`,
      `wireguard_latest_handshake_seconds{interface="wg0",public_key="${k1}",allowed_ips="10.0.0.2/32,fd00::/64"} 1700000123`,
      `wireguard_latest_handshake_seconds{interface="wg0",public_key="${k2}",allowed_ips="(none)"} 0`,
    ]
  ) assert.ok(text.includes(`\n${line}\n`), `has ${line}`);
  const byName = (n: string) => samples.filter((s) => s.name === n);
  assert.equal(byName("wireguard_sent_bytes_total").length, 2, "one sample per peer");
  for (const s of byName("wireguard_received_bytes_total")) {
    assert.deepEqual(s.labels.map(([k]) => k), ["interface", "public_key", "allowed_ips"]);
  }
});

Deno.test("metrics: typetun_ families carry the interface, drop reasons, handshakes, load, keypairs, offloads", () => {
  const { types, samples } = readExposition(formatMetrics(snapshot()));
  const value = (name: string, extra?: [string, string]) => {
    const s = samples.filter((s) =>
      s.name === name && s.labels[0]![0] === "interface" && s.labels[0]![1] === "wg0" &&
      (!extra || s.labels.some(([k, v]) => k === extra[0] && v === extra[1]))
    );
    assert.equal(s.length, 1, `${name} ${extra ?? ""}`);
    return s[0]!.value;
  };
  assert.equal(value("typetun_packets_dropped_total", ["reason", "no_route"]), 3);
  assert.equal(value("typetun_packets_dropped_total", ["reason", "replay"]), 0);
  assert.equal(value("typetun_handshakes_initiated_total"), 7);
  assert.equal(value("typetun_handshakes_completed_total"), 5);
  assert.equal(value("typetun_handshakes_failed_total"), 2);
  assert.equal(value("typetun_cookie_replies_sent_total"), 1);
  assert.equal(value("typetun_under_load"), 1);
  assert.equal(value("typetun_keypairs"), 3);
  assert.equal(value("typetun_offload_enabled", ["offload", "tun_tso"]), 1);
  assert.equal(value("typetun_offload_enabled", ["offload", "udp4_gso"]), 0);
  for (const [name, type] of types) {
    assert.equal(type, name.endsWith("_total") ? "counter" : "gauge", `${name}'s type matches its name`);
  }
  assert.equal(value("typetun_under_load"), 1);
  const calm = readExposition(formatMetrics(snapshot({ underLoad: false, peers: [] })));
  assert.equal(calm.samples.find((s) => s.name === "typetun_under_load")!.value, 0);
  assert.ok(!calm.samples.some((s) => s.name.startsWith("wireguard_")), "no peers, no peer samples");
  assert.ok(calm.types.has("wireguard_sent_bytes_total"), "but the families are declared");
});

Deno.test("metrics: label values are escaped as the text format says, and read back the same", () => {
  assert.equal(escapeLabelValue(`a"b\\c\nd`), `a\\"b\\\\c\\nd`);
  assert.equal(escapeLabelValue("wg-ü0 {x}=,"), "wg-ü0 {x}=,", "nothing else is escaped");
  const odd = `w"g\\0\n`;
  const text = formatMetrics(snapshot({ interface: odd }));
  const { samples } = readExposition(text);
  assert.ok(samples.length > 10);
  for (const s of samples) assert.equal(s.labels[0]![1], odd, `${s.name} round-trips the interface name`);
  assert.equal(formatValue(NaN), "NaN");
  assert.equal(formatValue(Infinity), "+Inf");
  assert.equal(formatValue(-Infinity), "-Inf");
  assert.equal(formatValue(2 ** 53), "9007199254740992");
  assert.equal(formatValue(1e21), "1e+21");
});

Deno.test("metrics: every drop reason has its own snake_case label value", () => {
  const names = DROP_REASONS.map(dropReasonName);
  assert.equal(new Set(names).size, DROP_REASONS.length);
  for (const n of names) assert.match(n, /^[a-z]+(_[a-z0-9]+)*$/);
  assert.equal(dropReasonName(Verdict.DropNoRoute), "no_route");
  assert.equal(dropReasonName(Verdict.DropCookieSent), "cookie_sent");
  assert.ok(!names.includes("send") && !names.includes("deliver"), "only drops");
});

Deno.test("metrics: a device's counters follow its handshakes, drops and keypairs", () => {
  const { a, b, clock } = pair();
  const at = (side: typeof a) => snapshotDevice(side.device, "wg0", []);
  assert.deepEqual(
    [at(a).handshakesInitiated, at(a).handshakesCompleted, at(a).keypairs, at(a).underLoad],
    [0, 0, 0, false],
  );
  connect(a, b, clock);
  const sa = at(a), sb = at(b);
  assert.equal(sa.handshakesInitiated, 1);
  assert.equal(sa.handshakesCompleted, 1, "A consumed the response");
  assert.equal(sb.handshakesInitiated, 0);
  assert.equal(sb.handshakesCompleted, 1, "B's session was confirmed by A's data");
  assert.equal(sa.keypairs, 1);
  assert.equal(sb.keypairs, 1);
  assert.equal(sa.handshakesFailed + sb.handshakesFailed, 0);
  const peer = sa.peers[0]!;
  assert.equal(peer.txBytes, peerOf(a, b).txBytes);
  assert.equal(peer.lastHandshakeMs, clock.wall());

  // A drop is counted under its reason's name.
  send(a, ipv4Packet("10.0.0.1", "10.9.9.9", new Uint8Array(8)));
  const noRoute = at(a).drops.find((d) => d.reason === "no_route")!;
  assert.equal(noRoute.count, 1);

  // B goes silent: each initiation that is not answered in time is a failed handshake.
  clock.advance(200_000); // past REJECT_AFTER_TIME: the next packet needs a new handshake
  send(a, packetAB(1));
  drain(a);
  assert.equal(at(a).handshakesInitiated, 2);
  elapse(clock, a, b, 3 * (REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX) - 1, () => null);
  const failed = at(a).handshakesFailed;
  assert.ok(failed >= 2 && failed <= 3, `2 or 3 timed out initiations, not ${failed}`);
  assert.equal(at(a).handshakesInitiated, 2 + failed);
  assert.equal(at(a).handshakesCompleted, 1);
  // Past REKEY_ATTEMPT_TIME the timers give up: every initiation since the first handshake failed, the last too.
  elapse(clock, a, b, 120_000, () => null);
  const s = at(a);
  assert.ok(
    s.handshakesInitiated >= 18,
    `about 90 s of attempts 5 s apart, not ${s.handshakesInitiated - 1}`,
  );
  assert.equal(s.handshakesFailed, s.handshakesInitiated - 1);
  assert.equal(s.handshakesCompleted, 1);
});

Deno.test("metrics: cookie replies and the under-load gauge", () => {
  const { a, b, clock } = pair({ optsB: { underLoadThreshold: 0 } });
  send(a, packetAB(1));
  const [init] = drain(a);
  deliver(b, init!, a.endpoint);
  const s = snapshotDevice(b.device, "wg0", []);
  assert.equal(s.cookieRepliesSent, 1);
  assert.equal(s.underLoad, true);
  assert.equal(s.drops.find((d) => d.reason === "cookie_sent")!.count, 1);
  clock.advance(1001);
  assert.equal(snapshotDevice(b.device, "wg0", []).underLoad, false, "a second after the last flood");
});

Deno.test("metrics: --metrics addresses, good and bad", () => {
  assert.deepEqual(parseMetricsAddress("127.0.0.1:9586"), { host: "127.0.0.1", port: 9586 });
  assert.deepEqual(parseMetricsAddress("[::1]:9586"), { host: "::1", port: 9586 });
  assert.deepEqual(parseMetricsAddress(":9586"), { host: null, port: 9586 });
  assert.deepEqual(parseMetricsAddress("0.0.0.0:80"), { host: "0.0.0.0", port: 80 });
  for (
    const [bad, why] of [
      ["9586", /not ADDR:PORT/],
      ["127.0.0.1", /not ADDR:PORT/],
      ["127.0.0.1:", /not ADDR:PORT/],
      ["127.0.0.1:65536", /not ADDR:PORT/],
      ["127.0.0.1:0", /1 to 65535/],
      ["::1:9586", /brackets/],
      ["localhost:9586", /"localhost" is not an IP address/],
      ["300.1.1.1:9586", /not an IP address/],
      ["", /not ADDR:PORT/],
    ] as const
  ) {
    assert.throws(() => parseMetricsAddress(bad), (e: Error) => {
      assert.match(e.message, why);
      assert.match(e.message, /expected ADDR:PORT, such as 127\.0\.0\.1:9586/);
      return true;
    });
  }
  assert.equal(parseMaxAge("180"), 180_000);
  assert.equal(parseMaxAge("0.5"), 500);
  for (const bad of ["0", "-1", "", "1e3", "abc", "1.", " 5"]) assert.equal(parseMaxAge(bad), null, bad);
});

Deno.test({
  name: "metrics: the HTTP server answers /metrics and /healthz, 503 until the device exists",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const server = await MetricsServer.listen({ host: "127.0.0.1", port: 0 });
    const url = (p: string) => `http://127.0.0.1:${server.port}${p}`;
    const get = async (p: string, init?: RequestInit) => {
      const r = await fetch(url(p), init);
      return { status: r.status, type: r.headers.get("content-type"), body: await r.text() };
    };
    try {
      assert.equal((await get("/metrics")).status, 503);
      assert.match((await get("/healthz")).body, /^starting/);
      let healthy = true;
      const asked: (number | undefined)[] = [];
      server.source = {
        metrics: () => formatMetrics(snapshot()),
        health: (ms) => {
          asked.push(ms);
          return { healthy, reason: healthy ? "fine" : "peer X: no handshake yet" };
        },
      };
      const m = await get("/metrics");
      assert.equal(m.status, 200);
      assert.equal(m.type, "text/plain; version=0.0.4; charset=utf-8");
      assert.equal(m.body, formatMetrics(snapshot()));
      assert.deepEqual(await get("/healthz"), {
        status: 200,
        type: "text/plain; charset=utf-8",
        body: "healthy: fine\n",
      });
      healthy = false;
      const h = await get("/healthz?max-handshake-age=2.5");
      assert.equal(h.status, 503);
      assert.equal(h.body, "unhealthy: peer X: no handshake yet\n");
      assert.deepEqual(asked, [undefined, 2500]);
      assert.equal((await get("/healthz?max-handshake-age=soon")).status, 400);
      assert.equal((await get("/")).status, 404);
      assert.equal((await get("/metrics", { method: "POST", body: "x" })).status, 405);
      const head = await get("/metrics", { method: "HEAD" });
      assert.equal(head.status, 200);
      assert.equal(head.body, "");
    } finally {
      server.close();
    }
    // The port is free again: a second server may take it.
    const again = await MetricsServer.listen({ host: "127.0.0.1", port: server.port });
    again.close();
  },
});

Deno.test({
  name: "metrics: a port in use is refused with the address and the reason",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const first = await MetricsServer.listen({ host: "127.0.0.1", port: 0 });
    try {
      await assert.rejects(
        MetricsServer.listen({ host: "127.0.0.1", port: first.port }),
        new RegExp(`--metrics 127\\.0\\.0\\.1:${first.port}: address already in use`),
      );
    } finally {
      first.close();
    }
  },
});

Deno.test("metrics: a peer's labels follow a change of its allowed IPs from one scrape to the next", () => {
  const { a, b } = pair();
  const scrape = () => formatMetrics(snapshotDevice(a.device, "wg0", []));
  const key = `public_key="${keyToBase64(b.publicKey)}"`;
  assert.ok(scrape().includes(`{interface="wg0",${key},allowed_ips="10.0.0.2/32,fd00::2/128"} 0\n`));
  assert.equal(scrape(), scrape(), "the same figures, the same text");
  a.device.apply({
    replacePeers: false,
    peers: [{
      publicKey: b.publicKey,
      remove: false,
      updateOnly: true,
      replaceAllowedIps: true,
      allowedIps: [parseCidr("10.7.0.0/16")!],
    }],
  });
  const after = scrape();
  assert.ok(after.includes(`{interface="wg0",${key},allowed_ips="10.7.0.0/16"} 0\n`), after);
  assert.ok(!after.includes("10.0.0.2/32"));
});
