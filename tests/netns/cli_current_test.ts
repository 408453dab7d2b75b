/**
 * The CLI as the current wireguard-tools (v1.0.20260223) behave (root): `typetun` with no arguments is `show`
 * (as `wg` alone), `typetun strip` prints what `wg-quick strip` prints, byte for byte, and `typetun save`
 * writes back what `wg-quick save` writes for the same running interface.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import process from "node:process";
import { cannotRun, labTest, sh, tag, typetunCommand, wgKeys } from "./_lab.ts";
import { parseConf } from "../../lib/conf.ts";
import { sameConfig } from "../../lib/config.ts";

const TOOLS = new URL("../../../shared/tools/wireguard-tools/", import.meta.url).pathname;
const WG = `${TOOLS}wg`, WG_QUICK = `${TOOLS}wg-quick`;
const skip = cannotRun("bash") ?? (existsSync(WG_QUICK) ? null : `needs the current wg-quick at ${WG_QUICK}`);
if (skip) console.log(`current CLI tests skipped: ${skip}`);

const typetun = typetunCommand();

/** Runs typetun (in `ns` when given) with the current tools first on PATH; status and output. */
function run(args: string[], ns?: string, env: Record<string, string> = {}) {
  const argv = ns ? ["netns", "exec", ns, ...typetun, ...args] : [...typetun.slice(1), ...args];
  const r = spawnSync(ns ? "ip" : typetun[0]!, argv, {
    encoding: "utf8",
    timeout: 30_000,
    env: { ...process.env, PATH: `${TOOLS}:${process.env.PATH}`, ...env },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

labTest(
  "typetun with no arguments is show, as wg alone: every interface, nothing when there are none",
  skip,
  (lab) => {
    const t = tag();
    const ns = lab.ns(`tn${t}`);
    // A private /var/run/wireguard: only this test's interfaces are in it.
    const dir = `/tmp/typetun-${t}-run`;
    mkdirSync(dir, { recursive: true });
    try {
      const inPrivate = (cmd: string) =>
        sh(`ip netns exec ${ns} unshare -m sh -c 'mount --bind ${dir} /var/run/wireguard && ${cmd}'`);
      const none = inPrivate(`${typetun.join(" ")}; echo "status $?"`);
      const noneWg = inPrivate(`${WG}; echo "status $?"`);
      assert.equal(none, "status 0\n");
      assert.equal(none, noneWg);
      // One interface: the same as `typetun show` and as the current wg's output.
      const ifname = `tnw${t}`;
      const d = inPrivate(
        `(${typetun.join(" ")} ${ifname} >/dev/null 2>&1) && ${WG} set ${ifname} listen-port 51861 ` +
          `peer ${wgKeys().pub} allowed-ips 10.0.0.2/32 && ${typetun.join(" ")}; echo "status $?"; ` +
          `${WG}; rm -f /var/run/wireguard/${ifname}.sock`,
      );
      const [ours, theirs] = d.split("status 0\n");
      assert.match(ours!, new RegExp(`^interface: ${ifname}\\n`));
      assert.equal(ours, theirs);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    // Not root: wg's "Permission denied" per interface and status 1 (when there is an interface to refuse).
    const nobody = spawnSync("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", WG], {
      encoding: "utf8",
    });
    const ours = spawnSync("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", ...typetun], {
      encoding: "utf8",
    });
    assert.equal(ours.status, nobody.status);
    if (nobody.stderr !== "") assert.match(ours.stderr, /Unable to access interface .*: Permission denied/);
  },
);

labTest("typetun strip prints what the current wg-quick strip prints", skip, () => {
  const t = tag();
  const dir = `/tmp/typetun-${t}-strip`;
  mkdirSync(dir, { recursive: true });
  try {
    const k = wgKeys();
    const file = `${dir}/wgs${t}.conf`;
    writeFileSync(
      file,
      `# a comment\n[Interface]\n  PrivateKey = ${k.priv}   # trailing\nAddress = 10.0.0.1/24, fd00::1/64\n` +
        `dns = 1.1.1.1\nListenPort=51820\nMTU = 1420\nPostUp = iptables -A FORWARD -i %i -j ACCEPT # kept\n` +
        `SaveConfig = true\n\n[Peer]\nPublicKey = ${k.pub}\nAllowedIPs = 10.0.0.2/32, -10.0.9.0/24\n` +
        `\tEndpoint = 192.0.2.1:51820`, // no newline at the end
    );
    chmodSync(file, 0o600);
    const theirs = spawnSync("bash", [WG_QUICK, "strip", file], { encoding: "utf8" });
    const ours = run(["strip", file]);
    assert.equal(theirs.status, 0, theirs.stderr);
    assert.equal(ours.status, 0, ours.stderr);
    assert.equal(ours.stdout, theirs.stdout);
    // What it prints is what `wg syncconf` takes (wg-quick's keys are gone).
    assert.doesNotMatch(ours.stdout, /Address|MTU|PostUp|SaveConfig|dns/);
    // A file with a key file: printed as the .conf wg reads, with the key read from its file.
    writeFileSync(`${dir}/key`, `${k.priv}\n`, { mode: 0o600 });
    const withFile = `${dir}/wgf${t}.conf`;
    writeFileSync(withFile, `[Interface]\nPrivateKeyFile = ${dir}/key\nAddress = 10.0.0.1/24\n`, {
      mode: 0o600,
    });
    const r = run(["strip", withFile]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `[Interface]\nPrivateKey = ${k.priv}\n\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

labTest("typetun save writes back what wg-quick save writes, wg-quick keys kept", skip, async (lab) => {
  const t = tag();
  const ns = lab.ns(`tv${t}`);
  const ifname = `tvw${t}`;
  const dir = `/tmp/typetun-${t}-save`;
  mkdirSync(dir, { recursive: true });
  try {
    await lab.daemon(ifname, ns);
    const k = wgKeys(), peer = wgKeys();
    const file = `${dir}/${ifname}.conf`;
    const original = `[Interface]\nPrivateKey = ${k.priv}\nAddress = 10.250.0.1/24\nMTU = 1400\n` +
      `PostUp = echo up # %i\nPreDown = echo down\n\n[Peer]\nPublicKey = ${peer.pub}\nAllowedIPs = 10.250.0.2/32\n`;
    writeFileSync(file, original, { mode: 0o600 });
    // Running: the file's setup, then changes made with wg (a new peer, a keepalive, a port).
    sh(`ip netns exec ${ns} bash -c '${WG} setconf ${ifname} <(${typetun.join(" ")} strip ${file})'`);
    sh(`ip -n ${ns} addr add 10.250.0.1/24 dev ${ifname} && ip -n ${ns} link set ${ifname} mtu 1400 up`);
    const other = wgKeys().pub;
    sh(
      `${WG} set ${ifname} listen-port 51871 peer ${peer.pub} persistent-keepalive 25 peer ${other} allowed-ips 10.250.0.3/32`,
    );

    const ours = run(["save", file], ns);
    assert.equal(ours.status, 0, ours.stderr);
    const saved = readFileSync(file, "utf8");
    writeFileSync(file, original, { mode: 0o600 });
    const theirs = spawnSync("ip", ["netns", "exec", ns, "bash", WG_QUICK, "save", file], {
      encoding: "utf8",
      env: { ...process.env, PATH: `${TOOLS}:${process.env.PATH}` },
    });
    assert.equal(theirs.status, 0, theirs.stderr);
    const quick = readFileSync(file, "utf8");
    // wg-quick saves the kernel's IPv6 link-local address of the interface too; typetun leaves it out.
    const noLinkLocal = (s: string) => s.split("\n").filter((l) => !/^Address = fe80:/i.test(l)).join("\n");
    assert.ok(sameConfig(parseConf(saved), parseConf(noLinkLocal(quick))), `${saved}\n---\n${quick}`);
    assert.match(saved, /PostUp = echo up # %i\n/);
    assert.match(saved, /ListenPort = 51871\n/);
    assert.match(saved, new RegExp(`PublicKey = ${other.replace(/[+/]/g, ".")}`));
    assert.doesNotMatch(saved, /SaveConfig/);
    // Not a running interface: wg-quick's message.
    const missing = `${dir}/tvx${t}.conf`;
    writeFileSync(missing, original, { mode: 0o600 });
    const r = run(["save", missing], ns);
    assert.equal(r.status, 1);
    assert.match(r.stderr, new RegExp(`\`tvx${t}' is not a WireGuard interface`));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
