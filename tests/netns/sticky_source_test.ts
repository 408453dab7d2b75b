/**
 * Sticky source address (issue 17): typetun answers from the address its peer wrote to. The responder's
 * namespace has two addresses on one interface; the initiator (the current wireguard-go, the Debian one if that
 * is missing) talks to the second. Without sticky sources the replies would leave from the first (the one
 * routing picks) and the initiator would roam to it. Asserted three ways: the initiator's endpoint (`wg show`)
 * stays the second address, traffic flows, and a capture of the responder's outgoing datagrams shows the second
 * address as their source. IPv4 and IPv6; then the second address is removed and the tunnel carries on from the
 * first (the send with the gone source is refused, the source forgotten, the datagram sent again).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { cannotRun, inNs, type Lab, labTest, sh, sleep, tag, waitExit, wgKeys, wgSet } from "./_lab.ts";

const CURRENT_GO = new URL("../../../shared/tools/wireguard-go/wireguard-go", import.meta.url).pathname;
const GO = existsSync(CURRENT_GO) ? CURRENT_GO : "wireguard-go";
const skip = cannotRun("wg", "tcpdump", "ping", ...(GO === CURRENT_GO ? [] : ["wireguard-go"]));
if (skip) console.log(`sticky source test skipped: ${skip}`);

/** The initiator's (wireguard-go's) view of the responder's endpoint. */
function endpointOf(ifname: string): string {
  return sh(`wg show ${ifname} endpoints`).trim().split("\t")[1] ?? "";
}

/** Starts tcpdump in `ns` on `dev` for UDP from `port`; returns it and a function that stops it and parses sources. */
async function capture(ns: string, dev: string, port: number): Promise<() => Promise<string[]>> {
  const child: ChildProcess = spawn(
    "ip",
    ["netns", "exec", ns, "tcpdump", "-l", "-n", "-i", dev, "-c", "200", `udp and src port ${port}`],
    { stdio: ["ignore", "pipe", "ignore"] },
  );
  let out = "";
  child.stdout!.on("data", (d) => (out += d.toString()));
  await sleep(700); // tcpdump needs a moment before it captures
  return async () => {
    await sleep(300);
    child.kill("SIGINT");
    if ((await waitExit(child, 5000)) === null) child.kill("SIGKILL");
    // "12:00:00.000000 IP 192.168.77.3.51820 > 192.168.77.1.51821: UDP, length 128" (IP6 for IPv6).
    return out.split("\n").filter((l) => / IP6? /.test(l)).map((l) => l.split(" ")[2]!.replace(/\.\d+$/, ""));
  };
}

async function setup(lab: Lab) {
  const t = tag();
  const nsA = lab.ns(`ssa${t}`), nsB = lab.ns(`ssb${t}`);
  // A (initiator) .1 / ::10; B (responder) first .2 / ::11, second .3 / ::20. Routing picks B's first address
  // towards A: the older one for IPv4, and for IPv6 the longer common prefix with fd77::10 (RFC 6724 rule 8).
  const [, vethB] = lab.veth(nsA, nsB, ["192.168.77.1", "fd77::10"], ["192.168.77.2", "fd77::11"]);
  sh(
    `ip -n ${nsB} addr add 192.168.77.3/24 dev ${vethB} && ip -n ${nsB} addr add fd77::20/64 dev ${vethB} nodad`,
  );
  const go = `ssg${t}`, tt = `sst${t}`;
  await lab.daemon(go, nsA, { WG_PROCESS_FOREGROUND: "1" }, [GO]);
  await lab.daemon(tt, nsB);
  const ka = wgKeys(), kb = wgKeys();
  wgSet(go, ka.priv, `listen-port 51821 peer ${kb.pub} allowed-ips 10.77.0.2/32`);
  wgSet(tt, kb.priv, `listen-port 51820 peer ${ka.pub} allowed-ips 10.77.0.1/32`);
  sh(`ip -n ${nsA} addr add 10.77.0.1/24 dev ${go} && ip -n ${nsA} link set ${go} up`);
  sh(`ip -n ${nsB} addr add 10.77.0.2/24 dev ${tt} && ip -n ${nsB} link set ${tt} up`);
  return { nsA, nsB, go, tt, vethB, peerB: kb.pub };
}

labTest(
  "sticky source: replies leave from the address the peer wrote to (IPv4, IPv6, address removed)",
  skip,
  async (lab) => {
    const { nsA, nsB, go, tt, vethB, peerB } = await setup(lab);
    for (const [second, first] of [["192.168.77.3", "192.168.77.2"], ["[fd77::20]", "[fd77::11]"]]) {
      wgSet(go, null, `peer ${peerB} endpoint ${second}:51820`);
      const stop = await capture(nsB, vethB, 51820);
      inNs(nsA, "ping -c 5 -i 0.2 -W 2 10.77.0.2", 20_000); // throws when a ping is lost
      inNs(nsB, "ping -c 3 -i 0.2 -W 2 10.77.0.1", 20_000); // the responder's own traffic, too
      const sources = await stop();
      assert.equal(endpointOf(go), `${second}:51820`, "the initiator did not roam to the first address");
      assert.ok(sources.length >= 5, `captured the responder's datagrams: ${sources.join(" ")}`);
      const want = second.replace(/[[\]]/g, "");
      assert.deepEqual([...new Set(sources)], [want], `all from ${want}, none from ${first}`);
    }
    // IPv4 again, then the second address goes away: B's next datagrams are refused with it, sent from the
    // first instead, and A follows (roaming).
    wgSet(go, null, `peer ${peerB} endpoint 192.168.77.3:51820`);
    inNs(nsA, "ping -c 2 -i 0.2 -W 2 10.77.0.2", 20_000);
    assert.equal(endpointOf(go), "192.168.77.3:51820");
    sh(`ip -n ${nsB} addr del 192.168.77.3/24 dev ${vethB}`);
    inNs(nsB, "ping -c 3 -i 0.2 -W 2 10.77.0.1", 20_000);
    assert.equal(
      endpointOf(go),
      "192.168.77.2:51820",
      "B now sends from its first address, and A roamed there",
    );
    inNs(nsA, "ping -c 2 -i 0.2 -W 2 10.77.0.2", 20_000);
    void tt;
  },
);
