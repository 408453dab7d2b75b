/**
 * The default-route case's firewall rules (root): with `nft` present, `up` puts wg-quick's rules in one
 * nftables table per interface and family (`wg-quick-IF`, as wg-quick names it), and `down` deletes it;
 * without `nft`, iptables-restore with wg-quick's comment. tests/netns/wgquick_diff_test.ts compares them
 * with what the current wg-quick leaves.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import process from "node:process";
import { cannotRun, inNs, type Lab, labTest, tag, typetunCommand, wgKeys } from "./_lab.ts";

const skip = cannotRun("wg", "ping", "nft", "iptables", "iptables-save");
if (skip) console.log(`firewall tests skipped: ${skip}`);

const cli = typetunCommand().map((a) => `'${a}'`).join(" ");

function typetun(
  ns: string,
  args: string,
  path = process.env.PATH ?? "",
): { status: number; stderr: string } {
  const r = spawnSync("ip", ["netns", "exec", ns, "sh", "-c", `${cli} ${args}`], {
    encoding: "utf8",
    timeout: 30_000,
    env: { ...process.env, PATH: path },
  });
  return { status: r.status ?? -1, stderr: r.stderr };
}

/** Side 1 sends everything (0.0.0.0/0, ::/0) through the tunnel to side 2. */
function defaultRoutePair(lab: Lab, dir: string, t: string) {
  const ns1 = lab.ns(`fa${t}`), ns2 = lab.ns(`fb${t}`);
  lab.veth(ns1, ns2, ["192.168.248.1", "fd00:248::1"], ["192.168.248.2", "fd00:248::2"]);
  const k1 = wgKeys(), k2 = wgKeys();
  const if1 = `fa${t}`, if2 = `fb${t}`;
  const file1 = `${dir}/${if1}.conf`, file2 = `${dir}/${if2}.conf`;
  writeFileSync(
    file1,
    `[Interface]\nPrivateKey = ${k1.priv}\nAddress = 10.248.0.1/24, fd48::1/64\n\n[Peer]\nPublicKey = ${k2.pub}\n` +
      `AllowedIPs = 0.0.0.0/0, ::/0\nEndpoint = 192.168.248.2:51862\n`,
    { mode: 0o600 },
  );
  writeFileSync(
    file2,
    `[Interface]\nPrivateKey = ${k2.priv}\nListenPort = 51862\nAddress = 10.248.0.2/24, fd48::2/64\n\n` +
      `[Peer]\nPublicKey = ${k1.pub}\nAllowedIPs = 10.248.0.1/32, fd48::1/128\n`,
    { mode: 0o600 },
  );
  return { ns1, ns2, if1, file1, file2 };
}

const withDir = (name: string, fn: (lab: Lab, dir: string, t: string) => void) =>
  labTest(name, skip, (lab) => {
    const dir = mkdtempSync("/tmp/typetun-fw-");
    try {
      fn(lab, dir, tag());
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

withDir("firewall: nftables, a table per interface and family, deleted by down", (lab, dir, t) => {
  const { ns1, ns2, if1, file1, file2 } = defaultRoutePair(lab, dir, t);
  assert.equal(typetun(ns2, `up ${file2}`).status, 0);
  const up = typetun(ns1, `up ${file1}`);
  assert.equal(up.status, 0, up.stderr);
  assert.match(up.stderr, /\[#\] nft -f -/);
  const v4 = inNs(ns1, `nft list table ip wg-quick-${if1}`);
  assert.match(v4, new RegExp(`iifname != "${if1}" ip daddr 10\\.248\\.0\\.1 fib saddr type != local drop`));
  // The fwmark up chose (51820 = 0xca6c) is saved in the connection's mark, and restored on the replies.
  assert.match(v4, /meta l4proto udp meta mark 0x0000ca6c ct mark set meta mark/);
  assert.match(v4, /meta l4proto udp meta mark set ct mark/);
  assert.match(
    inNs(ns1, `nft list table ip6 wg-quick-${if1}`),
    /ip6 daddr fd48::1 fib saddr type != local drop/,
  );
  // nft took the place of iptables.
  assert.doesNotMatch(inNs(ns1, "iptables-save 2>/dev/null || true"), /wg-quick\(8\) rule/);
  // Everything goes into the tunnel, and the tunnel's own datagrams (marked) still leave by the veth.
  inNs(ns1, "ping -c 2 -i 0.2 -W 3 10.248.0.2");
  inNs(ns1, "ping -c 1 -W 3 fd48::2");

  const down = typetun(ns1, `down ${file1}`);
  assert.equal(down.status, 0, down.stderr);
  assert.match(down.stderr, /\[#\] nft -f -/);
  assert.doesNotMatch(inNs(ns1, "nft list tables"), /wg-quick-/);
  assert.equal(typetun(ns2, `down ${file2}`).status, 0);
});

withDir("firewall: without nft, iptables rules, removed by down", (lab, dir, t) => {
  const { ns1, ns2, if1, file1, file2 } = defaultRoutePair(lab, dir, t);
  // A PATH with iptables but no nft.
  const bin = `${dir}/bin`;
  Deno.mkdirSync(bin);
  for (
    const tool of [
      "iptables",
      "ip6tables",
      "iptables-save",
      "ip6tables-save",
      "iptables-restore",
      "ip6tables-restore",
    ]
  ) {
    const where = spawnSync("sh", ["-c", `command -v ${tool}`], { encoding: "utf8" }).stdout.trim();
    if (where) symlinkSync(where, `${bin}/${tool}`);
  }
  const path = `${bin}:/usr/bin:/bin`;
  assert.notEqual(spawnSync("sh", ["-c", "command -v nft"], { env: { PATH: path } }).status, 0);
  assert.equal(typetun(ns2, `up ${file2}`).status, 0);
  const up = typetun(ns1, `up ${file1}`, path);
  assert.equal(up.status, 0, up.stderr);
  assert.match(inNs(ns1, "iptables-save"), new RegExp(`wg-quick\\(8\\) rule for ${if1}`));
  assert.doesNotMatch(inNs(ns1, "nft list tables"), /wg-quick-/);
  inNs(ns1, "ping -c 2 -i 0.2 -W 3 10.248.0.2");
  assert.equal(typetun(ns1, `down ${file1}`, path).status, 0);
  assert.doesNotMatch(inNs(ns1, "iptables-save"), /wg-quick\(8\) rule/);
  assert.equal(typetun(ns2, `down ${file2}`).status, 0);
});
