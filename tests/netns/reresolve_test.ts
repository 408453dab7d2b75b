/**
 * Endpoints named by DNS are resolved again while handshakes fail (issue 17). typetun's namespace resolves the
 * server's name from its own hosts file (`ip netns exec` bind-mounts /etc/netns/NAME/hosts over /etc/hosts, so
 * the daemon and the CLI run under it); the server (the current wireguard-go, else Debian's) then moves to
 * another address as a new process that knows nothing of the client, the hosts file is rewritten in place, and
 * the tunnel must come back by itself: the session's packets go unanswered, a new handshake is tried, its first
 * unanswered initiation makes the daemon look the name up again, and the next initiation goes to the new
 * address. Without re-resolution the client would knock at the old address until someone set it anew. Done twice: a bare daemon configured with
 * `typetun set … endpoint NAME:PORT`, and `typetun up` from a file with `Endpoint = NAME:PORT`.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cannotRun, inNs, type Lab, labTest, sh, sleep, tag, typetunCommand, wgKeys, wgSet } from "./_lab.ts";

const CURRENT_GO = new URL("../../../shared/tools/wireguard-go/wireguard-go", import.meta.url).pathname;
const GO = existsSync(CURRENT_GO) ? CURRENT_GO : "wireguard-go";
const skip = cannotRun("wg", "ping", ...(GO === CURRENT_GO ? [] : ["wireguard-go"]));
if (skip) console.log(`re-resolve tests skipped: ${skip}`);

const cli = typetunCommand().map((a) => `'${a}'`).join(" ");
const NAME = "wg-server.test";

function typetun(ns: string, args: string): string {
  const r = spawnSync("ip", ["netns", "exec", ns, "sh", "-c", `${cli} ${args}`], {
    encoding: "utf8",
    timeout: 60_000,
  });
  assert.equal(r.status, 0, `typetun ${args}: ${r.stderr}`);
  return r.stdout;
}

/** Pings `addr` from `ns` once a second until one answers; returns the seconds it took, or null after `max`. */
async function pingUntil(ns: string, addr: string, max: number): Promise<number | null> {
  const start = Date.now();
  while (Date.now() - start < max * 1000) {
    const r = spawnSync("ip", ["netns", "exec", ns, "ping", "-c", "1", "-W", "1", addr], { stdio: "ignore" });
    if (r.status === 0) return (Date.now() - start) / 1000;
    await sleep(200);
  }
  return null;
}

/** The client's view of the server's endpoint. */
const endpointOf = (ifname: string) => sh(`wg show ${ifname} endpoints`).trim().split("\t")[1] ?? "";

/**
 * The client namespace (its own hosts file naming the server at 192.168.78.2), the server's namespace with the
 * current wireguard-go at 192.168.78.2 port 51830, tunnel 10.78.0.1 (client) ↔ 10.78.0.2 (server).
 */
async function setup(lab: Lab, t: string, hostsDir: string) {
  const nsC = `rrc${t}`;
  mkdirSync(hostsDir, { recursive: true });
  writeFileSync(`${hostsDir}/hosts`, `127.0.0.1 localhost\n192.168.78.2 ${NAME}\n`);
  lab.ns(nsC);
  const nsS = lab.ns(`rrs${t}`);
  const [, vethS] = lab.veth(nsC, nsS, ["192.168.78.1", "fd78::1"], ["192.168.78.2", "fd78::2"]);
  const kc = wgKeys(), ks = wgKeys();
  const server = async (go: string) => {
    await lab.daemon(go, nsS, { WG_PROCESS_FOREGROUND: "1" }, [GO]);
    wgSet(go, ks.priv, `listen-port 51830 peer ${kc.pub} allowed-ips 10.78.0.1/32`);
    sh(`ip -n ${nsS} addr add 10.78.0.2/24 dev ${go} && ip -n ${nsS} link set ${go} up`);
  };
  await server(`rrg${t}`);
  /**
   * The server moves: a new server process at 192.168.78.3, which knows nothing of the client's endpoint (so
   * only the client can bring the tunnel back, as with a server that moved to another host), and the name
   * follows it (the hosts file rewritten in place: the bind mount in the client's namespace shows it).
   */
  const move = async () => {
    sh(`ip -n ${nsS} link del rrg${t}`); // wireguard-go exits with its interface
    sh(
      `ip -n ${nsS} addr del 192.168.78.2/24 dev ${vethS} && ip -n ${nsS} addr add 192.168.78.3/24 dev ${vethS}`,
    );
    await server(`rrh${t}`);
    writeFileSync(`${hostsDir}/hosts`, `127.0.0.1 localhost\n192.168.78.3 ${NAME}\n`);
  };
  return { nsC, kc, ks, move };
}

labTest("re-resolve: a bare daemon set with a name follows it when the server moves", skip, async (lab) => {
  const t = tag();
  const hostsDir = `/etc/netns/rrc${t}`;
  try {
    const { nsC, kc, ks, move } = await setup(lab, t, hostsDir);
    const tt = `rrt${t}`;
    await lab.daemon(tt, nsC);
    const key = `/tmp/typetun-rr-${t}.key`;
    writeFileSync(key, kc.priv + "\n", { mode: 0o600 });
    typetun(
      nsC,
      `set ${tt} private-key ${key} peer ${ks.pub} allowed-ips 10.78.0.2/32 endpoint ${NAME}:51830`,
    );
    rmSync(key);
    inNs(nsC, `ip addr add 10.78.0.1/24 dev ${tt} && ip link set ${tt} up`);
    assert.ok((await pingUntil(nsC, "10.78.0.2", 10)) !== null, "the tunnel works at first");
    assert.equal(endpointOf(tt), "192.168.78.2:51830");

    await move();
    // Worst case: KEEPALIVE_TIMEOUT + REKEY_TIMEOUT until a new handshake, REKEY_TIMEOUT until it counts as
    // failed (the lookup), REKEY_TIMEOUT until the next initiation: about 25 s, plus jitter and a slow machine.
    const took = await pingUntil(nsC, "10.78.0.2", 60);
    assert.ok(took !== null, "the tunnel came back after the name moved");
    assert.equal(endpointOf(tt), "192.168.78.3:51830");
    console.log(`  bare daemon + set: back after ${took!.toFixed(1)} s`);
  } finally {
    rmSync(hostsDir, { recursive: true, force: true });
  }
});

labTest("re-resolve: typetun up from a file with a named endpoint follows it too", skip, async (lab) => {
  const t = tag();
  const hostsDir = `/etc/netns/rrc${t}`;
  const dir = mkdtempSync("/tmp/typetun-rr-");
  const tt = `rru${t}`;
  let nsC = "";
  try {
    const s = await setup(lab, t, hostsDir);
    nsC = s.nsC;
    const conf = `${dir}/${tt}.conf`;
    writeFileSync(
      conf,
      `[Interface]\nPrivateKey = ${s.kc.priv}\nAddress = 10.78.0.1/24\n\n` +
        `[Peer]\nPublicKey = ${s.ks.pub}\nAllowedIPs = 10.78.0.2/32\nEndpoint = ${NAME}:51830\n`,
      { mode: 0o600 },
    );
    typetun(nsC, `up ${conf}`);
    assert.ok((await pingUntil(nsC, "10.78.0.2", 10)) !== null, "the tunnel works at first");
    assert.equal(endpointOf(tt), "192.168.78.2:51830");
    await s.move();
    const took = await pingUntil(nsC, "10.78.0.2", 60);
    assert.ok(took !== null, "the tunnel came back after the name moved");
    assert.equal(endpointOf(tt), "192.168.78.3:51830");
    console.log(`  typetun up: back after ${took!.toFixed(1)} s`);
  } finally {
    if (nsC) {
      spawnSync("ip", ["netns", "exec", nsC, "sh", "-c", `${cli} down ${dir}/${tt}.conf`], {
        timeout: 30_000,
      });
    }
    rmSync(dir, { recursive: true, force: true });
    rmSync(hostsDir, { recursive: true, force: true });
  }
});
