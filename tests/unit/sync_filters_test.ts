/**
 * syncconf and `up -f`'s SIGHUP reload against a typetun daemon served in this process (cmd/uapi_client.ts
 * serveInProcess, the path `up -f` itself uses): a filter the new file drops from every peer is cleared. A get
 * does not show filters, so the CLI asks `get=connections` first; a daemon without that request (wireguard-go)
 * still gets its syncconf.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { Device } from "../../lib/device.ts";
import { dhGenerate, dhPublic } from "../../lib/crypto.ts";
import { keyToBase64 } from "../../lib/encoding.ts";
import { formatErrno, formatGet, parseSet, type UapiRequest } from "../../lib/uapi.ts";
import { parseConfig } from "../../lib/configfile.ts";
import { Connections } from "../../cmd/connections.ts";
import { setconfMain } from "../../cmd/set.ts";
import { reload } from "../../cmd/up.ts";
import { serveInProcess } from "../../cmd/uapi_client.ts";
import { FakeClock, seededRng } from "./_harness.ts";

const priv = keyToBase64(dhGenerate(seededRng(41)));
const P1 = keyToBase64(dhPublic(dhGenerate(seededRng(42))));
const P2 = keyToBase64(dhPublic(dhGenerate(seededRng(43))));

/**
 * A device with the daemon's statistics and filters behind the in-process UAPI of `ifname`, as cmd/daemon.ts
 * wires them; `typetun: false` answers `get=connections` as wireguard-go does (nothing: it closes).
 */
function daemon(ifname: string, typetun = true) {
  const device = new Device({ clock: new FakeClock(), rng: seededRng(7) });
  const connections = new Connections(device, 64);
  const sets: string[] = [];
  const withdraw = serveInProcess(ifname, (req: UapiRequest) => {
    if (req.op === "error") return formatErrno(req.errno);
    if (req.op === "get") return formatGet(device.info()) + formatErrno(0);
    if (req.op === "connections") return typetun ? connections.reply() + formatErrno(0) : "";
    sets.push(req.body);
    const parsed = parseSet(req.body);
    if (!parsed.ok) return formatErrno(parsed.errno);
    device.apply(parsed.value);
    connections.applied(parsed.value);
    return formatErrno(0);
  });
  const filters = () =>
    connections.report().filters.map((f) =>
      `${keyToBase64(f.publicKey)} ${f.allowInbound} ${f.allowOutbound}`
    );
  return { device, filters, sets, withdraw };
}

const conf = (filtered: boolean) =>
  `[Interface]\nPrivateKey = ${priv}\n[Peer]\nPublicKey = ${P1}\nAllowedIPs = 10.0.0.1/32\n` +
  (filtered ? "AllowInbound = tcp/22\nAllowOutbound = udp/53\n" : "") +
  `[Peer]\nPublicKey = ${P2}\nAllowedIPs = 10.0.0.2/32\n`;

Deno.test("syncconf of a file without filters clears the filter the daemon had", async () => {
  const dir = mkdtempSync("/tmp/typetun-syncf-");
  const d = daemon("tsf0");
  try {
    writeFileSync(`${dir}/a.conf`, conf(true));
    writeFileSync(`${dir}/b.conf`, conf(false));
    assert.equal(await setconfMain("setconf", ["tsf0", `${dir}/a.conf`]), 0);
    assert.deepEqual(d.filters(), [`${P1} tcp/22 udp/53`]);
    assert.equal(await setconfMain("syncconf", ["tsf0", `${dir}/b.conf`]), 0);
    assert.deepEqual(d.filters(), [], "the filter the file dropped is gone");
    assert.equal(d.device.info().peers.length, 2, "the peers stay");
    // Only the filtered peer is sent `any`; the other's update carries no typetun key.
    assert.match(d.sets.at(-1)!, /allow_inbound=any\nallow_outbound=any\n/);
    assert.equal(d.sets.at(-1)!.match(/allow_/g)!.length, 2);
  } finally {
    d.withdraw();
    rmSync(dir, { recursive: true });
  }
});

Deno.test("syncconf against a daemon without get=connections (wireguard-go) sends no typetun keys", async () => {
  const dir = mkdtempSync("/tmp/typetun-syncf-");
  const d = daemon("tsf1", false);
  try {
    writeFileSync(`${dir}/b.conf`, conf(false));
    assert.equal(await setconfMain("setconf", ["tsf1", `${dir}/b.conf`]), 0);
    assert.equal(await setconfMain("syncconf", ["tsf1", `${dir}/b.conf`]), 0);
    assert.doesNotMatch(d.sets.at(-1)!, /allow_/);
    assert.equal(d.device.info().peers.length, 2);
  } finally {
    d.withdraw();
    rmSync(dir, { recursive: true });
  }
});

Deno.test("up -f's reload (SIGHUP) of a file without filters clears the filter the daemon had", async () => {
  const d = daemon("tsf2");
  try {
    const first = parseConfig(conf(true), { format: "conf" });
    let text = conf(true);
    const load = () => parseConfig(text, { format: "conf" });
    await reload("tsf2", "test.conf", load, first);
    assert.deepEqual(d.filters(), [`${P1} tcp/22 udp/53`]);
    text = conf(false);
    await reload("tsf2", "test.conf", load, first);
    assert.deepEqual(d.filters(), []);
    assert.equal(d.device.info().peers.length, 2);
  } finally {
    d.withdraw();
  }
});
