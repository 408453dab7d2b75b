/**
 * `up -f`'s SIGHUP reload with hops (cmd/up.ts reload, cmd/multihop.ts prepareHopReload), against wg0 and its
 * hop served in this process as the daemon serves them (serveInProcess, the hop under hopUapiName): the hop
 * file is read again and synced through the hop's own UAPI before wg0, so a new wg0 endpoint that only the new
 * hop file covers goes through; a chain that does not hold changes nothing.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { Device } from "../../lib/device.ts";
import { dhGenerate, dhPublic } from "../../lib/crypto.ts";
import { formatCidr } from "../../lib/ip.ts";
import { keyToBase64 } from "../../lib/encoding.ts";
import { EINVAL, formatErrno, formatGet, parseSet, type UapiRequest } from "../../lib/uapi.ts";
import { parseConfig } from "../../lib/configfile.ts";
import { hopUapiName, readHops } from "../../cmd/multihop.ts";
import { reload } from "../../cmd/up.ts";
import { serveInProcess } from "../../cmd/uapi_client.ts";
import { FakeClock, seededRng } from "./_harness.ts";

const key = (n: number) => dhGenerate(seededRng(n));
const [wgKey, hopKey, exitPub, relayPub] = [
  keyToBase64(key(51)),
  keyToBase64(key(52)),
  keyToBase64(dhPublic(key(53))),
  keyToBase64(dhPublic(key(54))),
];

/** A Device behind the in-process UAPI `name`; `hop`: listen-port and fwmark refused, as a hop's handler does. */
function serve(name: string, hop: boolean) {
  const device = new Device({ clock: new FakeClock(), rng: seededRng(9) });
  const withdraw = serveInProcess(name, (req: UapiRequest) => {
    if (req.op === "error") return formatErrno(req.errno);
    if (req.op === "get") return formatGet(device.info()) + formatErrno(0);
    if (req.op !== "set") return formatErrno(EINVAL);
    const parsed = parseSet(req.body);
    if (!parsed.ok) return formatErrno(parsed.errno);
    if (hop && (parsed.value.listenPort !== undefined || parsed.value.fwmark !== undefined)) {
      return formatErrno(EINVAL);
    }
    device.apply(parsed.value);
    return formatErrno(0);
  });
  const peers = () =>
    device.info().peers.map((p) =>
      `${keyToBase64(p.publicKey)} ${p.allowedIps.map(formatCidr).join(",")} ${
        p.endpoint ?? "-"
      } ${p.persistentKeepalive}`
    );
  return { device, peers, withdraw };
}

const hopConf = (allowed: string, keepalive = 0) =>
  `[Interface]\nPrivateKey = ${hopKey}\nAddress = 10.64.0.2/24\n[Peer]\nPublicKey = ${relayPub}\n` +
  `Endpoint = 192.0.2.2:2000\nAllowedIPs = ${allowed}\n` +
  (keepalive ? `PersistentKeepalive = ${keepalive}\n` : "");
const wgConf = (endpoint: string) =>
  `[Interface]\nPrivateKey = ${wgKey}\n[Peer]\nPublicKey = ${exitPub}\nEndpoint = ${endpoint}\n` +
  `AllowedIPs = 10.10.0.2/32\n`;

Deno.test("reload with hops: the hop file is synced through the hop's UAPI before wg0", async () => {
  const dir = mkdtempSync("/tmp/typetun-hopreload-");
  const wg0 = serve("tmr0", false), hop = serve(hopUapiName("tmr0", 1), true);
  try {
    const hopPath = `${dir}/hop.conf`;
    writeFileSync(hopPath, hopConf("198.51.100.0/24"), { mode: 0o600 });
    let text = wgConf("198.51.100.7:3000");
    const load = () => parseConfig(text, { format: "conf" });
    const first = load();
    const hops = await readHops([hopPath]);
    // The first reload on empty devices sets everything, as `up` would have.
    await reload("tmr0", "wg0.conf", load, first, hops);
    assert.deepEqual(hop.peers(), [`${relayPub} 198.51.100.0/24 192.0.2.2:2000 0`]);
    assert.deepEqual(wg0.peers(), [`${exitPub} 10.10.0.2/32 198.51.100.7:3000 0`]);

    // The exit moves to an address only the new hop file routes: both change, the hop first.
    writeFileSync(hopPath, hopConf("198.51.100.0/24, 203.0.113.0/24", 25), { mode: 0o600 });
    text = wgConf("203.0.113.9:3000");
    await reload("tmr0", "wg0.conf", load, first, hops);
    assert.deepEqual(hop.peers(), [`${relayPub} 198.51.100.0/24,203.0.113.0/24 192.0.2.2:2000 25`]);
    assert.deepEqual(wg0.peers(), [`${exitPub} 10.10.0.2/32 203.0.113.9:3000 0`]);

    // A chain that does not hold (the exit outside the hop's AllowedIPs) changes nothing, hop or wg0.
    writeFileSync(hopPath, hopConf("198.51.100.0/24"), { mode: 0o600 });
    await reload("tmr0", "wg0.conf", load, first, hops);
    assert.deepEqual(hop.peers(), [`${relayPub} 198.51.100.0/24,203.0.113.0/24 192.0.2.2:2000 25`]);
    assert.deepEqual(wg0.peers(), [`${exitPub} 10.10.0.2/32 203.0.113.9:3000 0`]);
  } finally {
    wg0.withdraw();
    hop.withdraw();
    rmSync(dir, { recursive: true });
  }
});
