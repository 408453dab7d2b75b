/**
 * Removing single allowed IPs (`allowed_ip=-PREFIX`, `wg set ... allowed-ips -PREFIX`, `+`/`-` in config files),
 * sets that fail applying nothing, and syncconf dropping preshared keys and keepalives. The expected UAPI text
 * is what the current wg (wireguard-tools v1.0.20260223) sent to a recording socket for the same input, and the
 * expected tables what the current wireguard-go (v0.0.20250522) showed after the same requests.
 */
import assert from "node:assert/strict";
import { Device } from "../../lib/device.ts";
import { formatCidr } from "../../lib/ip.ts";
import { EINVAL, EPROTO, formatGet, formatSet, parseSet } from "../../lib/uapi.ts";
import { keyToBase64, keyToHex } from "../../lib/encoding.ts";
import { dhGenerate, dhPublic } from "../../lib/crypto.ts";
import { formatConf, parseConf } from "../../lib/conf.ts";
import { formatToml } from "../../lib/toml.ts";
import { configToUpdate, syncUpdate } from "../../lib/setconf.ts";
import { parseAllowedIps, parseSetArgs, UsageError } from "../../cmd/set.ts";
import { FakeClock, seededRng } from "./_harness.ts";

const K1 = dhPublic(dhGenerate(seededRng(21)));
const K2 = dhPublic(dhGenerate(seededRng(22)));
const K3 = dhPublic(dhGenerate(seededRng(23)));
const hex = keyToHex;

function device(): { dev: Device; set: (text: string) => void; table: () => string[] } {
  const dev = new Device({ clock: new FakeClock(), rng: seededRng(7) });
  const set = (text: string) => {
    const r = parseSet(text);
    if (!r.ok) assert.fail(r.message);
    dev.apply(r.value);
  };
  // As `wg show IF allowed-ips` prints it: one line per peer, in the order the peers were added.
  const table = () =>
    dev.info().peers.map((p) =>
      `${keyToBase64(p.publicKey)}\t${
        p.allowedIps.length ? p.allowedIps.map(formatCidr).join(" ") : "(none)"
      }`
    );
  return { dev, set, table };
}

Deno.test("UAPI allowed_ip=-PREFIX parses, formats back, and refuses what wireguard-go refuses", () => {
  const r = parseSet(`public_key=${hex(K1)}\nallowed_ip=10.0.1.0/24\nallowed_ip=-10.0.0.0/24\n`);
  assert.ok(r.ok);
  assert.deepEqual(r.value.peers[0]!.allowedIps.map((c) => [c.op ?? "", formatCidr(c)]), [
    ["", "10.0.1.0/24"],
    ["-", "10.0.0.0/24"],
  ]);
  assert.equal(r.value.peers[0]!.replaceAllowedIps, false);
  assert.equal(
    formatSet(r.value),
    `public_key=${hex(K1)}\nallowed_ip=10.0.1.0/24\nallowed_ip=-10.0.0.0/24\n`,
  );
  for (const bad of ["+10.0.0.0/24", "-", "--10.0.0.0/24", "-10.0.0.0", "- 10.0.0.0/24"]) {
    const b = parseSet(`public_key=${hex(K1)}\nallowed_ip=${bad}\n`);
    assert.ok(!b.ok, bad);
    assert.equal(b.errno, EINVAL, bad);
  }
});

Deno.test("allowed_ip=-PREFIX on a device behaves as the current wireguard-go", () => {
  const { set, table } = device();
  set(
    `public_key=${hex(K1)}\nallowed_ip=10.0.0.0/24\nallowed_ip=10.0.1.0/24\nallowed_ip=10.1.0.0/16\n` +
      `public_key=${hex(K2)}\nallowed_ip=10.2.0.0/24\n`,
  );
  set(`public_key=${hex(K1)}\nallowed_ip=-10.0.0.0/24\n`);
  assert.deepEqual(table(), [
    `${keyToBase64(K1)}\t10.0.1.0/24 10.1.0.0/16`,
    `${keyToBase64(K2)}\t10.2.0.0/24`,
  ]);
  // Another peer's prefix and one nobody has: nothing changes, no error. Host bits are ignored (10.1.0.5/16).
  set(`public_key=${hex(K1)}\nallowed_ip=-10.2.0.0/24\nallowed_ip=-10.9.0.0/24\nallowed_ip=-10.1.0.5/16\n`);
  assert.deepEqual(table(), [`${keyToBase64(K1)}\t10.0.1.0/24`, `${keyToBase64(K2)}\t10.2.0.0/24`]);
  // In order: remove then add keeps it, add then remove drops it.
  set(`public_key=${hex(K1)}\nallowed_ip=-10.0.1.0/24\nallowed_ip=10.0.1.0/24\n`);
  set(`public_key=${hex(K1)}\nallowed_ip=10.0.3.0/24\nallowed_ip=-10.0.3.0/24\n`);
  assert.deepEqual(table(), [`${keyToBase64(K1)}\t10.0.1.0/24`, `${keyToBase64(K2)}\t10.2.0.0/24`]);
  // A removal names a peer, and the section creates it (as any section does), with no allowed IPs.
  set(`public_key=${hex(K3)}\nallowed_ip=-10.5.0.0/24\n`);
  assert.deepEqual(table()[2], `${keyToBase64(K3)}\t(none)`);
  // IPv6 too.
  set(`public_key=${hex(K2)}\nallowed_ip=fd00::/64\nallowed_ip=::/0\n`);
  set(`public_key=${hex(K2)}\nallowed_ip=-::/0\n`);
  assert.deepEqual(table()[1], `${keyToBase64(K2)}\t10.2.0.0/24 fd00::/64`);
});

Deno.test("a set request that fails applies nothing", () => {
  const { dev, set } = device();
  set(
    `private_key=${"11".repeat(32)}\nlisten_port=4000\npublic_key=${hex(K1)}\nallowed_ip=10.0.0.0/24\n` +
      `persistent_keepalive_interval=0\n`,
  );
  const before = formatGet(dev.info());
  const bodies = [
    // A valid change of every kind, then one bad line (Debian's and current wireguard-go apply the first part).
    `private_key=${"22".repeat(32)}\nfwmark=9\nreplace_peers=true\npublic_key=${hex(K2)}\n` +
    `allowed_ip=10.7.0.0/24\npublic_key=${hex(K1)}\nallowed_ip=-10.0.0.0/24\nallowed_ip=bogus\n`,
    `public_key=${hex(K1)}\nremove=true\npublic_key=${hex(K2)}\nendpoint=192.0.2.1:1\nlisten_port=5\n`,
    `public_key=${hex(K1)}\nreplace_allowed_ips=true\npublic_key=${hex(K2)}\nno equals sign\n`,
    `listen_port=4001\npublic_key=${hex(K1)}\npersistent_keepalive_interval=70000\n`,
    `public_key=${hex(K1)}\npreshared_key=${"33".repeat(32)}\nallowed_ip=-10.0.0.0/24\npublic_key=zz\n`,
  ];
  for (const body of bodies) {
    const r = parseSet(body);
    assert.ok(!r.ok, body);
    assert.ok(r.errno === EINVAL || r.errno === EPROTO);
    assert.equal(formatGet(dev.info()), before, body);
  }
});

Deno.test("typetun set allowed-ips takes + and - as current wg does", async () => {
  const b64 = keyToBase64(K1);
  const one = async (...args: string[]) => (await parseSetArgs(["peer", b64, ...args])).peers[0]!;
  const show = (p: { allowedIps: { op?: string }[] }) =>
    p.allowedIps.map((c) => (c.op === "-" ? "-" : "") + formatCidr(c as never));
  // What current wg sends (recorded): allowed-ips -10.0.0.0/24 → allowed_ip=-10.0.0.0/24 and no replace.
  let p = await one("allowed-ips", "-10.0.0.0/24");
  assert.equal(p.replaceAllowedIps, false);
  assert.deepEqual(show(p), ["-10.0.0.0/24"]);
  p = await one("allowed-ips", "+10.0.1.0/24,-10.0.0.0/24,10.0.2.0/24");
  assert.equal(p.replaceAllowedIps, false);
  assert.deepEqual(show(p), ["10.0.1.0/24", "-10.0.0.0/24", "10.0.2.0/24"]);
  p = await one("allowed-ips", "- 10.0.0.0/24 , 10.0.1.0/24");
  assert.deepEqual([p.replaceAllowedIps, show(p)], [false, ["-10.0.0.0/24", "10.0.1.0/24"]]);
  p = await one("allowed-ips", "10.0.1.0/24,10.0.2.0/24");
  assert.equal(p.replaceAllowedIps, true);
  // The last allowed-ips argument decides.
  p = await one("allowed-ips", "10.0.0.0/24", "allowed-ips", "-10.0.1.0/24");
  assert.equal(p.replaceAllowedIps, false);
  p = await one("allowed-ips", "-10.0.1.0/24", "allowed-ips", "10.0.0.0/24");
  assert.equal(p.replaceAllowedIps, true);
  assert.equal(
    formatSet({ replacePeers: false, peers: [p] }),
    `public_key=${hex(K1)}\nreplace_allowed_ips=true\nallowed_ip=-10.0.1.0/24\nallowed_ip=10.0.0.0/24\n`,
  );
  // wg's messages for what it refuses.
  for (
    const [arg, msg] of [
      ["+", "Unable to parse IP address: `'"],
      ["-", "Unable to parse IP address: `'"],
      ["--10.0.0.0/24", "Unable to parse IP address: `-10.0.0.0'"],
      ["+-10.0.0.0/24", "Unable to parse IP address: `-10.0.0.0'"],
      ["10.0.0.0/24,,-10.0.1.0/24", "Unable to parse IP address: `'"],
    ]
  ) {
    assert.throws(
      () => parseAllowedIps(arg!),
      (e: Error) => e instanceof UsageError && e.message === msg,
      arg,
    );
  }
});

Deno.test("config files: + and - AllowedIPs make the peer's update incremental, as current wg's", () => {
  const text = `[Interface]\nListenPort = 5000\n[Peer]\nPublicKey = ${keyToBase64(K1)}\n` +
    `AllowedIPs = -10.0.0.0/24, +10.0.1.0/24\n[Peer]\nPublicKey = ${keyToBase64(K2)}\n` +
    `AllowedIPs = 10.0.5.0/24\nAllowedIPs = -10.0.6.0/24\n[Peer]\nPublicKey = ${keyToBase64(K3)}\n` +
    `AllowedIPs = 10.0.7.0/24\n`;
  const cfg = parseConf(text);
  // Recorded from current wg: `wg addconf` and `wg setconf` of this file.
  const peers = `public_key=${hex(K1)}\nallowed_ip=-10.0.0.0/24\nallowed_ip=10.0.1.0/24\n` +
    `public_key=${hex(K2)}\nallowed_ip=10.0.5.0/24\nallowed_ip=-10.0.6.0/24\n` +
    `public_key=${hex(K3)}\nreplace_allowed_ips=true\nallowed_ip=10.0.7.0/24\n`;
  assert.equal(formatSet(configToUpdate(cfg, "add")), `listen_port=5000\n${peers}`);
  assert.equal(
    formatSet(configToUpdate(cfg, "set")),
    `private_key=${"00".repeat(32)}\nlisten_port=5000\nfwmark=0\nreplace_peers=true\n${peers}`,
  );
  // The signs are written back as they were read (showconf-style, one line per peer).
  const out = formatConf(cfg);
  assert.match(out, /AllowedIPs = -10\.0\.0\.0\/24, \+10\.0\.1\.0\/24\n/);
  assert.match(out, /AllowedIPs = 10\.0\.5\.0\/24, -10\.0\.6\.0\/24\n/);
  assert.equal(formatSet(configToUpdate(parseConf(out), "add")), `listen_port=5000\n${peers}`);
  assert.throws(
    () => parseConf(`[Peer]\nPublicKey = ${keyToBase64(K1)}\nAllowedIPs = +-10.0.0.0/24\n`),
    /bad CIDR/,
  );
});

Deno.test("config files: a plain AllowedIPs line after a signed one replaces the list again, as current wg's", () => {
  // Each AllowedIPs line decides, the last one wins; within one line, one signed entry makes it incremental.
  const text = `[Interface]\nListenPort = 5000\n[Peer]\nPublicKey = ${keyToBase64(K1)}\n` +
    `AllowedIPs = -10.0.6.0/24\nAllowedIPs = 10.0.5.0/24\n[Peer]\nPublicKey = ${keyToBase64(K2)}\n` +
    `AllowedIPs = -10.0.6.0/24, 10.0.5.0/24\n[Peer]\nPublicKey = ${keyToBase64(K3)}\n` +
    `AllowedIPs = 10.0.1.0/24\nAllowedIPs = +10.0.2.0/24\nAllowedIPs = 10.0.3.0/24\n`;
  const cfg = parseConf(text);
  // Recorded from current wg (v1.0.20260223): `wg addconf` of this file to a socket that logs what it reads
  // (/var/run/wireguard/NAME.sock answering errno=0), with these keys put in.
  const peers =
    `public_key=${hex(K1)}\nreplace_allowed_ips=true\nallowed_ip=-10.0.6.0/24\nallowed_ip=10.0.5.0/24\n` +
    `public_key=${hex(K2)}\nallowed_ip=-10.0.6.0/24\nallowed_ip=10.0.5.0/24\n` +
    `public_key=${hex(K3)}\nreplace_allowed_ips=true\nallowed_ip=10.0.1.0/24\nallowed_ip=10.0.2.0/24\n` +
    `allowed_ip=10.0.3.0/24\n`;
  assert.equal(formatSet(configToUpdate(cfg, "add")), `listen_port=5000\n${peers}`);
  // Applied to peers that had other prefixes: K1's list is replaced, K2 keeps its others.
  const { set, table } = device();
  set(`public_key=${hex(K1)}\nallowed_ip=10.9.1.0/24\npublic_key=${hex(K2)}\nallowed_ip=10.9.2.0/24\n`);
  const [k1, k2] = peers.split(/(?=public_key=)/);
  set(k1!);
  assert.deepEqual(table(), [`${keyToBase64(K1)}\t10.0.5.0/24`, `${keyToBase64(K2)}\t10.9.2.0/24`]);
  set(k2!); // 10.0.5.0/24 moves to K2
  assert.deepEqual(table(), [`${keyToBase64(K1)}\t(none)`, `${keyToBase64(K2)}\t10.9.2.0/24 10.0.5.0/24`]);
  // Written back as .conf it reads back the same (the signed part, then the plain line); TOML cannot say it.
  const out = formatConf(cfg);
  assert.match(out, /AllowedIPs = -10\.0\.6\.0\/24\nAllowedIPs = 10\.0\.5\.0\/24\n/);
  assert.equal(formatSet(configToUpdate(parseConf(out), "add")), `listen_port=5000\n${peers}`);
  assert.throws(() => formatToml(cfg), /cannot be written to TOML/);
  // A signed line after the plain one makes it incremental again.
  const again = parseConf(
    `[Peer]\nPublicKey = ${keyToBase64(K1)}\nAllowedIPs = -10.0.6.0/24\n` +
      `AllowedIPs = 10.0.5.0/24\nAllowedIPs = +10.0.7.0/24\n`,
  );
  assert.equal(configToUpdate(again, "add").peers[0]!.replaceAllowedIps, false);
});

Deno.test("syncconf turns off the preshared key and keepalive the file dropped (current wg's request)", () => {
  const { dev, set } = device();
  const psk = "99".repeat(32);
  set(
    `listen_port=5000\npublic_key=${hex(K1)}\npreshared_key=${psk}\nendpoint=1.2.3.4:5\n` +
      `persistent_keepalive_interval=25\nallowed_ip=10.0.1.0/24\n` +
      `public_key=${
        hex(K2)
      }\npreshared_key=${psk}\npersistent_keepalive_interval=25\nallowed_ip=10.0.2.0/24\n` +
      `public_key=${hex(K3)}\nallowed_ip=10.0.3.0/24\n`,
  );
  const file = `[Peer]\nPublicKey = ${keyToBase64(K1)}\n[Peer]\nPublicKey = ${keyToBase64(K2)}\n` +
    `PresharedKey = ${keyToBase64(new Uint8Array(32).fill(0x99))}\nPersistentKeepalive = 25\n` +
    `AllowedIPs = -10.0.2.0/24\n[Peer]\nPublicKey = ${keyToBase64(K3)}\n`;
  const update = syncUpdate(configToUpdate(parseConf(file), "set"), dev.info());
  // Byte for byte what `wg syncconf` (v1.0.20260223) sent for this file and this running configuration.
  assert.equal(
    formatSet(update),
    `private_key=${"00".repeat(32)}\nlisten_port=0\nfwmark=0\n` +
      `public_key=${hex(K1)}\npreshared_key=${"00".repeat(32)}\npersistent_keepalive_interval=0\n` +
      `replace_allowed_ips=true\n` +
      `public_key=${
        hex(K2)
      }\npreshared_key=${psk}\npersistent_keepalive_interval=25\nallowed_ip=-10.0.2.0/24\n` +
      `public_key=${hex(K3)}\nreplace_allowed_ips=true\n`,
  );
  dev.apply(update);
  const peers = dev.info().peers;
  assert.equal(peers[0]!.presharedKey, null);
  assert.equal(peers[0]!.persistentKeepalive, 0);
  assert.deepEqual(peers[1]!.allowedIps, []);
  assert.equal(peers[1]!.persistentKeepalive, 25);
});
