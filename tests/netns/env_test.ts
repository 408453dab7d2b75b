/**
 * A container's life without a config file (root): `typetun up -f IFNAME` configured from the environment
 * only, keys in key files; SIGHUP applies a changed file as `wg syncconf` does (the running session stays);
 * SIGTERM takes the tunnel down and exits 0 within 2 s; LOG_FORMAT=json writes one JSON object per line.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import process from "node:process";
import { cannotRun, inNs, Lab, labTest, sh, sleep, tag, typetunCommand, waitExit, wgKeys } from "./_lab.ts";

const skip = cannotRun("wg", "ping");
if (skip) console.log(`environment/signal tests skipped: ${skip}`);

/** Starts `typetun up -f ARGS` in `ns` with `env`, and waits until the tunnel is up. */
async function upForeground(
  lab: Lab,
  ns: string,
  ifname: string,
  args: string[],
  env: Record<string, string>,
): Promise<ChildProcess> {
  const [cmd, ...pre] = typetunCommand();
  const child = spawn("ip", ["netns", "exec", ns, cmd!, ...pre, "up", "-f", ...args], {
    stdio: ["ignore", "ignore", "pipe"],
    // Only what the test gives: no WG_ variable of the caller's leaks in.
    env: { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", HOME: "/root", ...env },
  });
  lab.children.push(child);
  lab.logs.set(child, "");
  child.stderr!.on("data", (d) => lab.logs.set(child, lab.logs.get(child) + d.toString()));
  lab.sockets.push(`/var/run/wireguard/${ifname}.sock`);
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) break;
    // `up` writes its state file once all but the PostUp hooks is done.
    if (existsSync(`/var/run/typetun/${ifname}.json`)) return child;
    await sleep(50);
  }
  throw new Error(`up -f ${ifname} did not come up: ${lab.logs.get(child)}`);
}

const linkGone = (ns: string, ifname: string) => !inNs(ns, "ip -br link").includes(ifname);

/** SIGTERM: exit status and how long it took. */
async function terminate(child: ChildProcess): Promise<{ code: number | null; ms: number }> {
  const start = performance.now();
  // process.kill, not child.kill: after child.kill, Deno's child_process reports the signal as the cause of
  // the exit even when the child handled it and exited with a status (as tests/netns/quick_test.ts notes).
  process.kill(child.pid!, "SIGTERM");
  const code = await waitExit(child, 5000);
  return { code, ms: performance.now() - start };
}

const test = (name: string, fn: (lab: Lab, dir: string, t: string) => Promise<void>) =>
  labTest(name, skip, async (lab) => {
    const dir = mkdtempSync("/tmp/typetun-env-");
    try {
      await fn(lab, dir, tag());
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

test(
  "env: a pair configured from the environment only pings, and SIGTERM ends it with 0 in 2 s",
  async (lab, dir, t) => {
    const ns1 = lab.ns(`ea${t}`), ns2 = lab.ns(`eb${t}`);
    lab.veth(ns1, ns2, ["192.168.245.1", "fd00:245::1"], ["192.168.245.2", "fd00:245::2"]);
    const k1 = wgKeys(), k2 = wgKeys(), psk = sh("wg genpsk").trim();
    for (const [name, text] of [["k1", k1.priv], ["k2", k2.priv], ["psk", psk]]) {
      writeFileSync(`${dir}/${name}`, `${text}\n`, { mode: 0o600 });
    }
    const if1 = `ea${t}`, if2 = `eb${t}`;
    // Side 1 without a file (none exists under /etc/wireguard), side 2 with an explicit --env.
    const a = await upForeground(lab, ns1, if1, [if1], {
      WG_PRIVATE_KEY_FILE: `${dir}/k1`,
      WG_LISTEN_PORT: "51831",
      WG_ADDRESS: "10.245.0.1/24, fd45::1/64",
      WG_PEER_1_PUBLIC_KEY: k2.pub,
      WG_PEER_1_PRESHARED_KEY_FILE: `${dir}/psk`,
      WG_PEER_1_ALLOWED_IPS: "10.245.0.2/32, fd45::2/128",
      WG_PEER_1_ENDPOINT: "192.168.245.2:51832",
    });
    const b = await upForeground(lab, ns2, if2, ["--env", if2], {
      WG_PRIVATE_KEY: k2.priv,
      WG_LISTEN_PORT: "51832",
      WG_ADDRESS: "10.245.0.2/24",
      WG_PEER_7_PUBLIC_KEY: k1.pub,
      WG_PEER_7_PRESHARED_KEY_FILE: `${dir}/psk`,
      WG_PEER_7_ALLOWED_IPS: "10.245.0.1/32",
      WG_PEER_7_PERSISTENT_KEEPALIVE: "25",
    });
    inNs(ns1, "ping -c 2 -i 0.2 -W 5 10.245.0.2");
    inNs(ns2, "ping -c 2 -i 0.2 -W 5 10.245.0.1");
    assert.equal(inNs(ns1, `wg show ${if1} preshared-keys`).trim(), `${k2.pub}\t${psk}`);
    assert.equal(inNs(ns2, `wg show ${if2} persistent-keepalive`).trim(), `${k1.pub}\t25`);
    assert.match(inNs(ns1, "ip -br addr"), /fd45::1\/64/);
    for (const [child, ns, ifname] of [[a, ns1, if1], [b, ns2, if2]] as const) {
      const { code, ms } = await terminate(child);
      assert.equal(code, 0, `exit status of up -f ${ifname}: ${lab.logs.get(child)}`);
      assert.ok(ms < 2000, `SIGTERM took ${ms.toFixed(0)} ms`);
      assert.ok(linkGone(ns, ifname), `${ifname} still there`);
    }
  },
);

test("env: a bad variable is named, and nothing is left behind", async (lab, _dir, t) => {
  const ns = lab.ns(`ec${t}`);
  const ifname = `ec${t}`;
  const [cmd, ...pre] = typetunCommand();
  const child = spawn("ip", ["netns", "exec", ns, cmd!, ...pre, "up", "-f", "--env", ifname], {
    stdio: ["ignore", "ignore", "pipe"],
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      WG_PRIVATE_KEY: wgKeys().priv,
      WG_PEER_1_PUBLIC_KEY: wgKeys().pub,
      WG_PEER_1_ENDPOINT: "192.0.2.1",
    },
  });
  lab.children.push(child);
  let err = "";
  child.stderr!.on("data", (d) => (err += d.toString()));
  assert.equal(await waitExit(child, 15_000), 1);
  assert.match(err, /^typetun: WG_PEER_1_ENDPOINT: bad endpoint "192.0.2.1"/m);
  assert.ok(linkGone(ns, ifname));
});

test("SIGHUP applies an added peer without dropping the session; LOG_FORMAT=json", async (lab, dir, t) => {
  const ns1 = lab.ns(`ha${t}`), ns2 = lab.ns(`hb${t}`);
  lab.veth(ns1, ns2, ["192.168.246.1", "fd00:246::1"], ["192.168.246.2", "fd00:246::2"]);
  const k1 = wgKeys(), k2 = wgKeys(), k3 = wgKeys();
  const if1 = `ha${t}`, if2 = `hb${t}`;
  writeFileSync(`${dir}/k1`, `${k1.priv}\n`, { mode: 0o600 });
  const conf = `${dir}/${if1}.conf`;
  const peer2 = `[Peer]\nPublicKey = ${k2.pub}\nAllowedIPs = 10.246.0.2/32\nEndpoint = 192.168.246.2:51842\n`;
  writeFileSync(
    conf,
    `[Interface]\nPrivateKeyFile = k1\nListenPort = 51841\nAddress = 10.246.0.1/24\n\n${peer2}`,
    { mode: 0o600 },
  );
  const a = await upForeground(lab, ns1, if1, [conf], { LOG_FORMAT: "json", LOG_LEVEL: "info" });
  const b = await upForeground(lab, ns2, if2, ["--env", if2], {
    WG_PRIVATE_KEY: k2.priv,
    WG_LISTEN_PORT: "51842",
    WG_ADDRESS: "10.246.0.2/24",
    WG_PEER_1_PUBLIC_KEY: k1.pub,
    WG_PEER_1_ALLOWED_IPS: "10.246.0.1/32",
  });
  inNs(ns1, "ping -c 1 -W 5 10.246.0.2");
  const handshake = () => inNs(ns1, `wg show ${if1} latest-handshakes`).trim();
  const before = handshake();
  assert.match(before, new RegExp(`^${k2.pub.replace(/[+/]/g, "\\$&")}\t[1-9][0-9]+$`));
  // A handshake time has a resolution of a second: wait into the next one, so a new handshake would show.
  await sleep(1100);
  writeFileSync(
    conf,
    `[Interface]\nPrivateKeyFile = k1\nListenPort = 51841\nAddress = 10.246.0.1/24\n\n${peer2}\n` +
      `[Peer]\nPublicKey = ${k3.pub}\nAllowedIPs = 10.246.0.3/32\n`,
  );
  process.kill(a.pid!, "SIGHUP");
  let peers = "";
  for (let i = 0; i < 100 && !peers.includes(k3.pub); i++) {
    await sleep(50);
    peers = inNs(ns1, `wg show ${if1} peers`);
  }
  assert.ok(peers.includes(k3.pub), `peer not added after SIGHUP: ${lab.logs.get(a)}`);
  assert.equal(inNs(ns1, `wg show ${if1} listen-port`).trim(), "51841");
  inNs(ns1, "ping -c 1 -W 5 10.246.0.2");
  assert.equal(handshake().split("\n").find((l) => l.startsWith(k2.pub)), before, "the session was redone");
  assert.equal(a.exitCode, null, "SIGHUP ended the process");

  for (const [child, ns, ifname] of [[a, ns1, if1], [b, ns2, if2]] as const) {
    const { code, ms } = await terminate(child);
    assert.equal(code, 0, `exit status of up -f ${ifname}: ${lab.logs.get(child)}`);
    assert.ok(ms < 2000, `SIGTERM took ${ms.toFixed(0)} ms`);
    assert.ok(linkGone(ns, ifname), `${ifname} still there`);
  }
  // Every line of side 1's log is one JSON object with the four fields.
  const lines = lab.logs.get(a)!.trim().split("\n");
  assert.ok(lines.length >= 3, lab.logs.get(a));
  for (const line of lines) {
    const o = JSON.parse(line);
    assert.deepEqual(Object.keys(o), ["time", "level", "interface", "message"], line);
    assert.ok(!Number.isNaN(Date.parse(o.time)), line);
    assert.equal(o.interface, if1, line);
  }
  assert.ok(lines.some((l) => JSON.parse(l).message.includes(`syncconf ${if1}`)), lab.logs.get(a));
});
