/**
 * What the current wireguard-tools (v1.0.20260223) and wireguard-go (v0.0.20250522) do that Debian's do not,
 * against the daemon (root): removing single allowed IPs with `wg set ... allowed-ips -PREFIX` (the same
 * `wg show` as the current wireguard-go), a set that fails changing nothing, `wg syncconf` dropping preshared
 * keys and keepalives; and wireguard-go's conventions with a supervisor: WG_TUN_FD and WG_UAPI_FD hand in a TUN
 * and a listening UAPI socket (foreground and background), and deleting the socket file stops the daemon.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { release } from "node:os";
import { Buffer } from "node:buffer";
import process from "node:process";
import { cannotRun, inNs, Lab, labTest, sh, sleep, tag, typetunCommand, waitExit, wgKeys } from "./_lab.ts";
import { openTun } from "../../ffi/tun.ts";
import { closeFd, cString } from "../../ffi/libc.ts";
import { errno, LIBC, openLibrary } from "../../ffi/runtime.ts";

const WG = new URL("../../../shared/tools/wireguard-tools/wg", import.meta.url).pathname;
const GO = new URL("../../../shared/tools/wireguard-go/wireguard-go", import.meta.url).pathname;
const skip = cannotRun("ping") ?? (existsSync(WG) ? null : `needs the current wg at ${WG}`) ??
  (existsSync(GO) ? null : `needs the current wireguard-go at ${GO}`);
if (skip) console.log(`current-tools tests skipped: ${skip}`);

const wg = (args: string) => sh(`${WG} ${args}`);
/**
 * `wg show IF allowed-ips`, one line per peer, sorted: wg orders peers by latest handshake, and ties come in the
 * order the daemon lists them, which in wireguard-go is a Go map's (random).
 */
const table = (ifname: string) =>
  wg(`show ${ifname} allowed-ips`).split("\n").filter(Boolean).sort().join("\n");

/** One UAPI request on the interface's socket; the whole reply. */
function uapi(ifname: string, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(`/var/run/wireguard/${ifname}.sock`);
    let out = "";
    s.on("data", (d) => {
      out += d.toString();
      if (/errno=-?\d+\n\n$/.test(out)) {
        s.destroy();
        resolve(out);
      }
    });
    s.on("error", reject);
    s.write(request);
  });
}

/** The configuration part of a get (no handshake times or counters, which differ between implementations). */
async function config(ifname: string): Promise<string> {
  const r = await uapi(ifname, "get=1\n\n");
  return r.split("\n").filter((l) => !/^(last_handshake|rx_bytes|tx_bytes|errno)/.test(l)).join("\n");
}

labTest(
  "wg set allowed-ips -PREFIX and +/- mixes: typetun shows what the current wireguard-go shows",
  skip,
  async (lab) => {
    const t = tag();
    const ns = lab.ns(`tc${t}`);
    const tt = `tct${t}`, go = `tcg${t}`;
    await lab.daemon(tt, ns);
    await lab.daemon(go, ns, {}, [GO]);
    const k1 = wgKeys().pub, k2 = wgKeys().pub, k3 = wgKeys().pub;
    const steps = [
      `peer ${k1} allowed-ips 10.0.0.0/24,10.0.1.0/24,10.1.0.0/16,fd00::/64 peer ${k2} allowed-ips 10.2.0.0/24`,
      `peer ${k1} allowed-ips -10.0.0.0/24`,
      `peer ${k1} allowed-ips -10.2.0.0/24,-10.9.0.0/24,-10.1.0.5/16`, // another's, nobody's, host bits
      `peer ${k1} allowed-ips +10.0.3.0/24,-10.0.1.0/24,10.0.4.0/24`,
      `peer ${k1} allowed-ips -10.0.4.0/24,+10.0.4.0/24 peer ${k2} allowed-ips +10.0.5.0/24,-10.0.5.0/24`,
      `peer ${k3} allowed-ips -10.5.0.0/24`, // creates the peer, with nothing
      `peer ${k2} allowed-ips "- fd00::/64 , 10.2.1.0/24"`,
      `peer ${k1} allowed-ips 10.8.0.0/24`, // no sign: replaces again
    ];
    for (const s of steps) {
      wg(`set ${tt} ${s}`);
      wg(`set ${go} ${s}`);
      assert.equal(table(tt), table(go), s);
    }
    assert.equal(
      table(tt),
      [`${k1}\t10.8.0.0/24`, `${k2}\t10.2.0.0/24 10.2.1.0/24`, `${k3}\t(none)`].sort().join("\n"),
    );
    // typetun's own CLI sends the same.
    const cmd = typetunCommand().join(" ");
    sh(`${cmd} set ${tt} peer ${k1} allowed-ips +10.9.0.0/24,-10.8.0.0/24`);
    wg(`set ${go} peer ${k1} allowed-ips +10.9.0.0/24,-10.8.0.0/24`);
    assert.equal(table(tt), table(go));
    // Config files with +/- entries, through the current wg's addconf, and typetun's.
    const file = `/tmp/typetun-${t}.conf`;
    writeFileSync(file, `[Peer]\nPublicKey = ${k2}\nAllowedIPs = -10.2.0.0/24, +10.3.0.0/24\n`);
    try {
      wg(`addconf ${tt} ${file}`);
      sh(`${cmd} addconf ${go} ${file}`);
      assert.equal(table(tt), table(go));
      assert.match(
        wg(`show ${tt} allowed-ips`),
        new RegExp(`${k2.replace(/[+/]/g, ".")}\\t10.2.1.0/24 10.3.0.0/24`),
      );
    } finally {
      rmSync(file, { force: true });
    }
  },
);

labTest(
  "a set that fails changes nothing (a bad line, a port in use); wireguard-go applies the first part",
  skip,
  async (lab) => {
    const t = tag();
    const ns = lab.ns(`tf${t}`);
    const tt = `tft${t}`, go = `tfg${t}`;
    await lab.daemon(tt, ns);
    await lab.daemon(go, ns, {}, [GO]);
    const k1 = wgKeys().pub;
    const hex1 = Buffer.from(k1, "base64").toString("hex");
    for (const i of [tt, go]) wg(`set ${i} listen-port 0 peer ${k1} allowed-ips 10.0.0.0/24`);
    const before = await config(tt);
    const bad = `set=1\npublic_key=${hex1}\nallowed_ip=-10.0.0.0/24\nallowed_ip=10.7.0.0/24\n` +
      `persistent_keepalive_interval=25\nallowed_ip=bogus\n\n`;
    assert.equal(await uapi(tt, bad), "errno=-22\n\n");
    assert.equal(await config(tt), before);
    // Current wireguard-go: the same errno, but the lines before the bad one took effect.
    assert.equal(await uapi(go, bad), "errno=-22\n\n");
    assert.match(wg(`show ${go} allowed-ips`), /10\.7\.0\.0\/24/);
    // A port in use (taken by wireguard-go in the same namespace): nothing else in the request changes.
    const goPort = wg(`show ${go} listen-port`).trim();
    const taken = `set=1\nprivate_key=${
      "11".repeat(32)
    }\npublic_key=${hex1}\nremove=true\nlisten_port=${goPort}\n\n`;
    // A device key after public_key is a bad line too; send listen_port first, as wg does.
    const inUse = `set=1\nlisten_port=${goPort}\nprivate_key=${
      "11".repeat(32)
    }\npublic_key=${hex1}\nremove=true\n\n`;
    assert.equal(await uapi(tt, taken), "errno=-22\n\n");
    assert.equal(await uapi(tt, inUse), "errno=-98\n\n");
    assert.equal(await config(tt), before);
    assert.equal(wg(`show ${tt} peers`).trim(), k1);
  },
);

labTest(
  "wg syncconf drops the preshared key and keepalive the file dropped, and keeps the session",
  skip,
  async (lab) => {
    const t = tag();
    const ns1 = lab.ns(`ts1${t}`), ns2 = lab.ns(`ts2${t}`);
    lab.veth(ns1, ns2, ["192.168.243.1", "fd00:243::1"], ["192.168.243.2", "fd00:243::2"]);
    const a = `tsa${t}`, b = `tsb${t}`;
    await lab.daemon(a, ns1);
    await lab.daemon(b, ns2);
    const ka = wgKeys(), kb = wgKeys();
    const psk = sh(`${WG} genpsk`).trim();
    const files = [`/tmp/typetun-${t}-a.conf`, `/tmp/typetun-${t}-b.conf`, `/tmp/typetun-${t}-a2.conf`];
    try {
      writeFileSync(
        files[0]!,
        `[Interface]\nPrivateKey = ${ka.priv}\nListenPort = 51843\n[Peer]\nPublicKey = ${kb.pub}\n` +
          `PresharedKey = ${psk}\nPersistentKeepalive = 25\nAllowedIPs = 10.243.0.2/32\n` +
          `Endpoint = 192.168.243.2:51844\n`,
      );
      writeFileSync(
        files[1]!,
        `[Interface]\nPrivateKey = ${kb.priv}\nListenPort = 51844\n[Peer]\nPublicKey = ${ka.pub}\n` +
          `PresharedKey = ${psk}\nAllowedIPs = 10.243.0.1/32\n`,
      );
      // b first: a's keepalive sends its first initiation at once.
      wg(`setconf ${b} ${files[1]}`);
      wg(`setconf ${a} ${files[0]}`);
      for (const [ns, i, n] of [[ns1, a, 1], [ns2, b, 2]] as const) {
        sh(`ip -n ${ns} addr add 10.243.0.${n}/24 dev ${i} && ip -n ${ns} link set ${i} up`);
      }
      inNs(ns1, "ping -c 2 -i 0.2 -W 3 10.243.0.2");
      const hs = wg(`show ${a} latest-handshakes`);
      // The file without the preshared key and keepalive: current wg removes both (old wg left them).
      writeFileSync(
        files[2]!,
        `[Interface]\nPrivateKey = ${ka.priv}\nListenPort = 51843\n[Peer]\nPublicKey = ${kb.pub}\n` +
          `AllowedIPs = 10.243.0.2/32, 10.243.9.0/24\nEndpoint = 192.168.243.2:51844\n`,
      );
      wg(`syncconf ${a} ${files[2]}`);
      assert.equal(wg(`show ${a} preshared-keys`), `${kb.pub}\t(none)\n`);
      assert.equal(wg(`show ${a} persistent-keepalive`), `${kb.pub}\toff\n`);
      assert.equal(wg(`show ${a} allowed-ips`), `${kb.pub}\t10.243.0.2/32 10.243.9.0/24\n`);
      // The session survived: same handshake time.
      assert.equal(wg(`show ${a} latest-handshakes`), hs);
    } finally {
      for (const f of files) rmSync(f, { force: true });
    }
  },
);

// ---- A supervisor's descriptors ----

const sys = openLibrary(LIBC, {
  socket: { args: ["i32", "i32", "i32"], result: "i32" },
  bind: { args: ["i32", "buffer", "u32"], result: "i32" },
  listen: { args: ["i32", "i32"], result: "i32" },
});

/** A bound, listening unix stream socket, as a supervisor makes it; its descriptor. */
function listeningUnixSocket(path: string): number {
  const fd = sys.symbols.socket(1, /* AF_UNIX */ 1, /* SOCK_STREAM */ 0);
  if (fd < 0) throw new Error(`socket: errno ${errno()}`);
  const addr = new Uint8Array(110);
  new DataView(addr.buffer).setUint16(0, 1, true);
  addr.set(cString(path), 2);
  rmSync(path, { force: true });
  if (sys.symbols.bind(fd, addr, 110) < 0 || sys.symbols.listen(fd, 16) < 0) {
    throw new Error(`bind/listen ${path}: errno ${errno()}`);
  }
  return fd;
}

/**
 * Opens a TUN and the UAPI socket as a supervisor would and starts typetun with them as descriptors 3 and 4
 * (WG_TUN_FD=3, WG_UAPI_FD=4), in the foreground or not; then closes its own copies.
 */
function startHandedOff(lab: Lab, ifname: string, foreground: boolean) {
  // Attached with the vnet header and TSO only: the daemon asks for USO itself, as it does for a TUN it opens.
  const tun = openTun(ifname, { vnetHdr: true, uso: false });
  const sock = `/var/run/wireguard/${ifname}.sock`;
  sh("mkdir -p /var/run/wireguard");
  const uapiFd = listeningUnixSocket(sock);
  lab.sockets.push(sock);
  const [cmd, ...args] = typetunCommand();
  const child = spawn(cmd!, [...args, ...(foreground ? ["-f"] : []), ifname], {
    stdio: ["ignore", "ignore", "pipe", tun.fd, uapiFd],
    env: { ...process.env, LOG_LEVEL: "info", WG_TUN_FD: "3", WG_UAPI_FD: "4", WG_PROCESS_FOREGROUND: "" },
  });
  lab.children.push(child);
  lab.logs.set(child, "");
  child.stderr!.on("data", (d) => lab.logs.set(child, lab.logs.get(child) + d.toString()));
  tun.close();
  closeFd(uapiFd);
  return { child, sock };
}

async function waitAnswers(ifname: string, lab: Lab): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      if ((await uapi(ifname, "get=1\n\n")).endsWith("errno=0\n\n")) return;
    } catch {
      // Not yet.
    }
    await sleep(50);
  }
  throw new Error(`${ifname} does not answer: ${[...lab.logs.values()].join("\n")}`);
}

labTest(
  "WG_TUN_FD and WG_UAPI_FD: a handed-in TUN and UAPI socket, foreground and background",
  skip,
  async (lab) => {
    const t = tag();
    const ns1 = lab.ns(`th1${t}`), ns2 = lab.ns(`th2${t}`);
    const a = `tha${t}`, b = `thb${t}`, c = `thc${t}`;
    const pa = 40000 + Math.floor(Math.random() * 20000), pb = pa + 1;
    // Daemons in this namespace talk over loopback; their interfaces are moved into ns1 and ns2.
    const fg = startHandedOff(lab, a, true);
    await waitAnswers(a, lab);
    await lab.daemon(b, null);
    const ka = wgKeys(), kb = wgKeys();
    const kf = `/tmp/typetun-${t}.key`;
    try {
      writeFileSync(kf, `${ka.priv}\n`);
      wg(
        `set ${a} private-key ${kf} listen-port ${pa} peer ${kb.pub} allowed-ips 10.244.0.2/32 endpoint 127.0.0.1:${pb}`,
      );
      writeFileSync(kf, `${kb.priv}\n`);
      wg(`set ${b} private-key ${kf} listen-port ${pb} peer ${ka.pub} allowed-ips 10.244.0.1/32`);
    } finally {
      rmSync(kf, { force: true });
    }
    for (const [ns, i, n] of [[ns1, a, 1], [ns2, b, 2]] as const) {
      sh(
        `ip link set ${i} netns ${ns} && ip -n ${ns} addr add 10.244.0.${n}/24 dev ${i} && ip -n ${ns} link set ${i} up`,
      );
    }
    inNs(ns1, "ping -c 3 -i 0.2 -W 3 10.244.0.2");
    assert.match(wg(`show ${a}`), /latest handshake/);
    assert.match(lab.logs.get(fg.child)!, new RegExp(`Interface ${a} created`));
    // The handed-in TUN got the offloads of one the daemon opens (USO since Linux 6.2).
    const [major, minor] = release().split(".").map(Number) as [number, number];
    const uso = major > 6 || (major === 6 && minor >= 2);
    assert.match(lab.logs.get(fg.child)!, uso ? /Offloads: TUN vnet header, TSO on, USO on/ : /TSO on/);

    // The socket file belongs to the supervisor; deleting it stops the daemon, which closes the TUN.
    rmSync(fg.sock);
    assert.notEqual(await waitExit(fg.child, 10_000), null, "the daemon exits when its socket is deleted");
    assert.equal(fg.child.exitCode, 0);
    assert.throws(() => sh(`ip -n ${ns1} link show ${a}`, 5000));

    // Started in the background: the parent passes the descriptors on and returns once the daemon is up.
    const bg = startHandedOff(lab, c, false);
    assert.equal(await waitExit(bg.child, 20_000), 0, lab.logs.get(bg.child));
    await waitAnswers(c, lab);
    sh(`ip link set ${c} netns ${ns1}`);
    assert.match(wg(`show ${c}`), new RegExp(`interface: ${c}`));
    // No PID to kill: the socket's deletion is how it stops (the interface goes with it).
    rmSync(bg.sock);
    let gone = false;
    for (let i = 0; i < 100 && !gone; i++) {
      await sleep(100);
      try {
        sh(`ip -n ${ns1} link show ${c}`, 5000);
      } catch {
        gone = true;
      }
    }
    assert.ok(gone, "the background daemon exited when its socket was deleted");
  },
);

labTest("the daemon exits when its UAPI socket file is deleted, as wireguard-go", skip, async (lab) => {
  const t = tag();
  const ns = lab.ns(`td${t}`);
  const tt = `tdt${t}`, go = `tdg${t}`;
  const d = await lab.daemon(tt, ns);
  const g = await lab.daemon(go, ns, {}, [GO]);
  rmSync(`/var/run/wireguard/${tt}.sock`);
  rmSync(`/var/run/wireguard/${go}.sock`);
  assert.equal(await waitExit(d, 10_000), 0, lab.logs.get(d));
  assert.notEqual(await waitExit(g, 10_000), null);
  // "does not exist" when it went before the watch began (the test deletes it as soon as it appears).
  assert.match(lab.logs.get(d)!, /Shutting down: the UAPI socket \S+ (was deleted|does not exist)/);
  assert.throws(() => sh(`ip -n ${ns} link show ${tt}`, 5000));
});
