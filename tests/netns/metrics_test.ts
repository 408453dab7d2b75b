/**
 * Health and metrics end to end (root): typetun daemons in two namespaces joined by a veth, one started as the
 * daemon with TYPETUN_METRICS, the other by `up -f --metrics`. `/metrics` counts what `wg show` counts,
 * `/healthz` and `typetun health` turn healthy with the handshake and unhealthy when the peer's daemon is
 * killed; `typetun health` reads wireguard-go as well; a bad --metrics value is refused before anything exists.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import process from "node:process";
import {
  cannotRun,
  have,
  inNs,
  type Lab,
  labTest,
  sh,
  sleep,
  tag,
  typetunCommand,
  wgKeys,
  wgSet,
} from "./_lab.ts";

const skip = cannotRun("wg", "ping", "curl");
if (skip) console.log(`metrics tests skipped: ${skip}`);

const cli = typetunCommand();

/** Runs `typetun ARGS` (in `ns` if given) with `env`; returns its status and output. */
function typetun(ns: string | null, args: string[], env: Record<string, string> = {}) {
  const argv = ns ? ["netns", "exec", ns, ...cli, ...args] : [...cli.slice(1), ...args];
  const r = spawnSync(ns ? "ip" : cli[0]!, argv, {
    encoding: "utf8",
    timeout: 30_000,
    env: { ...process.env, ...env },
  });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** An HTTP GET from inside `ns`: status and body. */
function http(ns: string, url: string): { status: number; body: string } {
  const out = inNs(ns, `curl -sS -g --max-time 10 -w '\\n%{http_code}' '${url}'`);
  const nl = out.lastIndexOf("\n");
  return { status: Number(out.slice(nl + 1)), body: out.slice(0, nl) };
}

/** The value of the one sample of `name` whose labels include every `labels` pair (as written). */
function sample(text: string, name: string, ...labels: string[]): number {
  const found = text.split("\n").filter((l) =>
    l.startsWith(`${name}{`) && labels.every((p) => l.slice(name.length).includes(p))
  );
  assert.equal(found.length, 1, `one ${name} ${labels.join(",")} in:\n${text}`);
  return Number(found[0]!.slice(found[0]!.lastIndexOf(" ") + 1));
}

/** `wg show IF FIELD` as public key → numbers, read twice so a keepalive in between is seen. */
function wgNumbers(ifname: string, field: string): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const line of sh(`wg show ${ifname} ${field}`).trim().split("\n")) {
    const [key, ...rest] = line.split("\t");
    out.set(key!, rest.map(Number));
  }
  return out;
}

/** Compares /metrics with `wg show` at a quiet moment (the same before and after the scrape), up to 5 tries. */
async function assertCountersMatch(
  ns: string,
  url: string,
  ifname: string,
  peerKey: string,
): Promise<string> {
  for (let i = 0; i < 5; i++) {
    const before = wgNumbers(ifname, "transfer").get(peerKey)!;
    const hsBefore = wgNumbers(ifname, "latest-handshakes").get(peerKey)!;
    const m = http(ns, url);
    const after = wgNumbers(ifname, "transfer").get(peerKey)!;
    if (before.join() !== after.join()) {
      await sleep(200);
      continue;
    }
    assert.equal(m.status, 200);
    const key = `public_key="${peerKey}"`;
    assert.deepEqual(
      [
        sample(m.body, "wireguard_received_bytes_total", key),
        sample(m.body, "wireguard_sent_bytes_total", key),
      ],
      after,
      `${ifname}: /metrics rx, tx as wg show transfer`,
    );
    assert.ok(after[0]! > 0 && after[1]! > 0);
    assert.equal(sample(m.body, "wireguard_latest_handshake_seconds", key), hsBefore[0]);
    return m.body;
  }
  throw new Error(`${ifname}'s counters never stood still`);
}

/** Starts `typetun up -f ARGS` in `ns`, owned by the lab, and waits until it has finished bringing it up. */
async function upForeground(lab: Lab, ns: string, ifname: string, args: string[]): Promise<ChildProcess> {
  const child = spawn("ip", ["netns", "exec", ns, ...cli, "up", "-f", ...args], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let err = "";
  child.stderr!.on("data", (d) => (err += d.toString()));
  lab.children.push(child);
  lab.sockets.push(`/var/run/wireguard/${ifname}.sock`, `/var/run/typetun/${ifname}.json`);
  for (let i = 0; i < 300; i++) {
    if (existsSync(`/var/run/typetun/${ifname}.json`)) return child;
    if (child.exitCode !== null) break;
    await sleep(50);
  }
  throw new Error(`up -f ${ifname} did not come up: ${err}`);
}

labTest(
  "metrics: /metrics counts what wg show counts; /healthz and `typetun health` follow the handshake and the peer's death",
  skip,
  async (lab) => {
    const t = tag();
    const nsA = lab.ns(`ma${t}`), nsB = lab.ns(`mb${t}`);
    lab.veth(nsA, nsB, ["192.168.246.1", "fd00:246::1"], ["192.168.246.2", "fd00:246::2"]);
    const wgA = `mwa${t}`, wgB = `mwb${t}`;
    const ka = wgKeys(), kb = wgKeys();
    const dir = mkdtempSync("/tmp/typetun-metrics-");
    try {
      // B: `up -f --metrics` from a file (its daemon runs in the same process); B knows no endpoint of A.
      const conf = `${dir}/${wgB}.conf`;
      writeFileSync(
        conf,
        `[Interface]\nPrivateKey = ${kb.priv}\nListenPort = 51862\nAddress = 10.246.0.2/24\n\n` +
          `[Peer]\nPublicKey = ${ka.pub}\nAllowedIPs = 10.246.0.1/32\n`,
        { mode: 0o600 },
      );
      const upB = await upForeground(lab, nsB, wgB, ["--metrics", "[::1]:9586", conf]);
      // A: the daemon, the address from the environment; A initiates.
      await lab.daemon(wgA, nsA, { TYPETUN_METRICS: "127.0.0.1:9586" });
      wgSet(
        wgA,
        ka.priv,
        `listen-port 51861 peer ${kb.pub} allowed-ips 10.246.0.2/32 endpoint 192.168.246.2:51862`,
      );
      sh(`ip -n ${nsA} addr add 10.246.0.1/24 dev ${wgA} && ip -n ${nsA} link set ${wgA} up`);
      const urlA = "http://127.0.0.1:9586", urlB = "http://[::1]:9586";

      // Before any handshake: A's peer has an endpoint and no handshake; B's peer has no endpoint to watch.
      const early = http(nsA, `${urlA}/healthz`);
      assert.equal(early.status, 503);
      assert.equal(early.body, `unhealthy: peer ${kb.pub} (192.168.246.2:51862): no handshake yet\n`);
      const earlyCli = typetun(null, ["health", wgA]);
      assert.equal(earlyCli.status, 1);
      assert.equal(
        earlyCli.stderr,
        `unhealthy: ${wgA}: peer ${kb.pub} (192.168.246.2:51862): no handshake yet\n`,
      );
      assert.deepEqual(http(nsB, `${urlB}/healthz`), {
        status: 200,
        body: "healthy: no peer has an endpoint: nothing to watch\n",
      });

      inNs(nsA, "ping -c 3 -i 0.2 -W 3 10.246.0.2");

      const mA = await assertCountersMatch(nsA, `${urlA}/metrics`, wgA, kb.pub);
      const mB = await assertCountersMatch(nsB, `${urlB}/metrics`, wgB, ka.pub);
      const ifA = `interface="${wgA}"`;
      assert.ok(sample(mA, "typetun_handshakes_initiated_total", ifA) >= 1);
      assert.ok(sample(mA, "typetun_handshakes_completed_total", ifA) >= 1);
      assert.equal(sample(mA, "typetun_handshakes_failed_total", ifA), 0);
      assert.ok(sample(mB, "typetun_handshakes_completed_total", `interface="${wgB}"`) >= 1);
      assert.ok(sample(mA, "typetun_keypairs", ifA) >= 1);
      assert.equal(sample(mA, "typetun_under_load", ifA), 0);
      assert.equal(sample(mA, "typetun_cookie_replies_sent_total", ifA), 0);
      assert.equal(sample(mA, "typetun_packets_dropped_total", ifA, `reason="replay"`), 0);
      const vnet = sample(mA, "typetun_offload_enabled", ifA, `offload="tun_vnet_header"`);
      assert.ok(vnet === 0 || vnet === 1);
      assert.match(mA, new RegExp(`allowed_ips="10\\.246\\.0\\.2/32"`));

      // Healthy both ways now.
      assert.equal(http(nsA, `${urlA}/healthz`).status, 200);
      const ok = typetun(null, ["health", wgA]);
      assert.equal(ok.status, 0, ok.stderr);
      assert.equal(
        ok.stdout,
        `healthy: ${wgA}: the peer with an endpoint completed a handshake within 180 s\n`,
      );
      assert.equal(typetun(null, ["health", wgB]).status, 0, "B learnt A's endpoint and handshook");

      // B's daemon dies; A's handshake ages past a small limit.
      upB.kill("SIGKILL");
      const last = wgNumbers(wgA, "latest-handshakes").get(kb.pub)![0]! * 1000;
      await sleep(Math.max(0, last + 3000 - Date.now()));
      const stale = http(nsA, `${urlA}/healthz?max-handshake-age=2`);
      assert.equal(stale.status, 503);
      assert.match(
        stale.body,
        new RegExp(
          `^unhealthy: peer ${escape(kb.pub)} \\(192\\.168\\.246\\.2:51862\\): ` +
            `latest handshake \\d+ seconds ago \\(\\S+Z\\), more than 2 s\\n$`,
        ),
      );
      assert.equal(http(nsA, `${urlA}/healthz`).status, 200, "within the default 180 s still");
      const staleCli = typetun(null, ["health", wgA, "--max-handshake-age", "2"]);
      assert.equal(staleCli.status, 1);
      assert.equal(staleCli.stdout, "");
      assert.match(
        staleCli.stderr,
        new RegExp(`^unhealthy: ${wgA}: peer ${escape(kb.pub)} .* more than 2 s\\n$`),
      );
      const gone = typetun(null, ["health", wgB]);
      assert.equal(gone.status, 1);
      assert.match(gone.stderr, new RegExp(`^unhealthy: ${wgB}: the daemon does not answer: \\S.*\\n$`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

/** A public key as a regular expression (base64 has + and /). */
function escape(s: string): string {
  return s.replace(/[+/=]/g, (c) => `\\${c}`);
}

labTest(
  "metrics: `typetun health` reads wireguard-go's UAPI",
  skip ?? (have("wireguard-go") ? null : "needs wireguard-go"),
  async (lab) => {
    const t = tag();
    const nsA = lab.ns(`mc${t}`), nsB = lab.ns(`md${t}`);
    lab.veth(nsA, nsB, ["192.168.247.1", "fd00:247::1"], ["192.168.247.2", "fd00:247::2"]);
    const wgA = `mwc${t}`, wgB = `mwd${t}`;
    const dA = await lab.daemon(wgA, nsA);
    await lab.daemon(wgB, nsB, { LOG_LEVEL: "error" }, ["wireguard-go"]);
    const { a } = joinPairAt(wgA, nsA, wgB, nsB);
    const before = typetun(null, ["health", wgB]);
    assert.equal(before.status, 0, before.stderr);
    assert.match(before.stdout, /no peer has an endpoint/);
    inNs(nsA, "ping -c 2 -i 0.2 -W 3 10.247.0.2");
    const after = typetun(null, ["health", wgB]);
    assert.equal(after.status, 0, after.stderr);
    assert.match(after.stdout, /the peer with an endpoint completed a handshake within 180 s/);
    dA.kill("SIGKILL");
    await sleep(2100);
    const stale = typetun(null, ["health", wgB, "--max-handshake-age", "1"]);
    assert.equal(stale.status, 1);
    assert.match(
      stale.stderr,
      new RegExp(
        `^unhealthy: ${wgB}: peer ${escape(a.pub)} \\(192\\.168\\.247\\.1:51871\\): latest handshake .*\\n$`,
      ),
    );
  },
);

/** `a` (typetun, initiating) and `b` peered over 192.168.247.0/24, tunnel 10.247.0.0/24. */
function joinPairAt(wgA: string, nsA: string, wgB: string, nsB: string) {
  const a = wgKeys(), b = wgKeys();
  wgSet(
    wgA,
    a.priv,
    `listen-port 51871 peer ${b.pub} allowed-ips 10.247.0.2/32 endpoint 192.168.247.2:51872`,
  );
  wgSet(wgB, b.priv, `listen-port 51872 peer ${a.pub} allowed-ips 10.247.0.1/32`);
  sh(`ip -n ${nsA} addr add 10.247.0.1/24 dev ${wgA} && ip -n ${nsA} link set ${wgA} up`);
  sh(`ip -n ${nsB} addr add 10.247.0.2/24 dev ${wgB} && ip -n ${nsB} link set ${wgB} up`);
  return { a, b };
}

labTest(
  "metrics: a bad --metrics value or a taken port is refused before the interface exists",
  skip,
  async (lab) => {
    const t = tag();
    const ns = lab.ns(`me${t}`);
    const ifname = `mwe${t}`;
    const noLink = () =>
      spawnSync("ip", ["-n", ns, "link", "show", ifname], { stdio: "ignore" }).status !== 0;

    const flag = typetun(ns, ["-f", ifname, "--metrics", "127.0.0.1"]);
    assert.equal(flag.status, 1);
    assert.equal(
      flag.stderr,
      `typetun: --metrics "127.0.0.1": not ADDR:PORT with a decimal port; expected ADDR:PORT, such as ` +
        `127.0.0.1:9586, [::1]:9586 or :9586\n`,
    );
    const env = typetun(ns, ["-f", ifname], { TYPETUN_METRICS: "localhost:9586" });
    assert.equal(env.status, 1);
    assert.match(
      env.stderr,
      /^typetun: mwe\S+: --metrics "localhost:9586": "localhost" is not an IP address;/,
    );
    const dir = mkdtempSync("/tmp/typetun-metrics-");
    try {
      const conf = `${dir}/${ifname}.conf`;
      writeFileSync(conf, `[Interface]\nPrivateKey = ${wgKeys().priv}\n`, { mode: 0o600 });
      const up = typetun(ns, ["up", "--metrics", "127.0.0.1:http", conf]);
      assert.equal(up.status, 1);
      assert.match(up.stderr, /--metrics "127\.0\.0\.1:http": not ADDR:PORT/);
      assert.ok(noLink(), "nothing was brought up");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }

    // A port another process holds: the second daemon says so and creates nothing.
    const first = `mwf${t}`;
    await lab.daemon(first, ns, { TYPETUN_METRICS: "127.0.0.1:9587" });
    const taken = typetun(ns, ["-f", ifname, "--metrics", "127.0.0.1:9587"]);
    assert.equal(taken.status, 1);
    assert.equal(taken.stderr, `typetun: ${ifname}: --metrics 127.0.0.1:9587: address already in use\n`);
    assert.ok(noLink(), "no interface for the refused daemon");
    assert.ok(!existsSync(`/var/run/wireguard/${ifname}.sock`));
    assert.equal(http(ns, "http://127.0.0.1:9587/metrics").status, 200, "the first one still serves");
  },
);
