/**
 * Interoperability with the reference peer, wireguard-go from Debian (root): typetun in one namespace,
 * wireguard-go in the other, joined by a veth pair and configured by the same `wg` commands. Each side
 * initiates in turn, with and without a preshared key; ping over IPv4 and IPv6, TCP both ways with the bytes
 * checked, and `wg show` on both sides agreeing.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { spawn } from "node:child_process";
import { cannotRun, inNs, Lab, sh, sleep, tag, waitExit, wgKeys, wgSet } from "./_lab.ts";

const skip = cannotRun("wg", "wireguard-go", "ncat", "ping");
if (skip) console.log(`interop tests skipped: ${skip}`);

function transfer(side: "rx" | "tx", ifname: string): number {
  const [, rx, tx] = sh(`wg show ${ifname} transfer`).trim().split(/\s+/).map(Number);
  return side === "rx" ? rx! : tx!;
}

/** Sends `bytes` random bytes over TCP from `fromNs` to `toAddr` in `toNs`; asserts they arrive intact. */
async function tcpIntact(fromNs: string, toNs: string, toAddr: string, port: number, bytes: number) {
  const data = `/tmp/typetun-interop-${tag()}.bin`, out = `${data}.out`;
  try {
    writeFileSync(data, randomBytes(bytes));
    const rx = spawn("ip", ["netns", "exec", toNs, "sh", "-c", `exec ncat -l ${port} --recv-only > ${out}`], {
      stdio: "ignore",
    });
    await sleep(300);
    inNs(fromNs, `ncat --send-only ${toAddr} ${port} < ${data}`, 60_000);
    assert.notEqual(await waitExit(rx, 10_000), null, "the receiver finished");
    const sum = (f: string) => createHash("sha256").update(readFileSync(f)).digest("hex");
    assert.equal(sum(out), sum(data), `${bytes} bytes from ${fromNs} arrived intact`);
  } finally {
    rmSync(data, { force: true });
    rmSync(out, { force: true });
  }
}

for (const initiator of ["typetun", "wireguard-go"] as const) {
  for (const psk of [false, true]) {
    Deno.test({
      name: `interop: typetun ↔ wireguard-go, ${initiator} initiating, ${
        psk ? "with" : "without"
      } preshared key`,
      ignore: skip !== null,
      sanitizeOps: false,
      sanitizeResources: false,
      fn: async () => {
        const lab = new Lab();
        try {
          const t = tag();
          const ns1 = lab.ns(`ti1${t}`), ns2 = lab.ns(`ti2${t}`);
          lab.veth(ns1, ns2, ["192.168.242.1", "fd00:242::1"], ["192.168.242.2", "fd00:242::2"]);
          const tt = `tti${t}`, go = `tgo${t}`;
          await lab.daemon(tt, ns1);
          await lab.daemon(go, ns2, { LOG_LEVEL: "error" }, ["wireguard-go"]);
          const k1 = wgKeys(), k2 = wgKeys();
          const pskFile = `/tmp/typetun-psk-${t}`;
          writeFileSync(pskFile, sh("wg genpsk"), { mode: 0o600 });
          const pskArg = psk ? `preshared-key ${pskFile}` : "";
          wgSet(
            tt,
            k1.priv,
            `listen-port 52001 peer ${k2.pub} ${pskArg} allowed-ips 10.242.0.2/32,fd10:242::2/128 endpoint 192.168.242.2:52002`,
          );
          wgSet(
            go,
            k2.priv,
            `listen-port 52002 peer ${k1.pub} ${pskArg} allowed-ips 10.242.0.1/32,fd10:242::1/128 endpoint 192.168.242.1:52001`,
          );
          rmSync(pskFile, { force: true });
          for (const [ns, dev, n] of [[ns1, tt, 1], [ns2, go, 2]] as const) {
            sh(
              `ip -n ${ns} addr add 10.242.0.${n}/24 dev ${dev} && ip -n ${ns} addr add fd10:242::${n}/64 dev ${dev} nodad`,
            );
            sh(`ip -n ${ns} link set ${dev} up`);
          }
          // The first packet decides who initiates.
          if (initiator === "typetun") inNs(ns1, "ping -c 2 -i 0.3 -W 3 10.242.0.2");
          else inNs(ns2, "ping -c 2 -i 0.3 -W 3 10.242.0.1");
          inNs(ns1, "ping -c 2 -i 0.3 -W 3 fd10:242::2");
          inNs(ns2, "ping -c 2 -i 0.3 -W 3 fd10:242::1");
          await tcpIntact(ns1, ns2, "10.242.0.2", 7101, 20 * 1024 * 1024);
          await tcpIntact(ns2, ns1, "fd10:242::1", 7102, 20 * 1024 * 1024);

          // Both sides report a recent handshake, and agree on the transfer: what one received, the other sent,
          // less what was lost on the way (under a bulk TCP transfer some datagrams overflow a socket buffer).
          for (const dev of [tt, go]) {
            const hs = Number(sh(`wg show ${dev} latest-handshakes`).trim().split(/\s+/)[1]);
            assert.ok(Math.abs(hs - Date.now() / 1000) < 60, `${dev} shows a recent handshake`);
          }
          await sleep(300);
          for (const [from, to] of [[tt, go], [go, tt]]) {
            const sent = transfer("tx", from!), received = transfer("rx", to!);
            assert.ok(
              received <= sent && received >= 0.9 * sent,
              `${from} sent ${sent} B, ${to} received ${received} B`,
            );
          }
          assert.ok(transfer("rx", go) > 20 * 1024 * 1024);
        } finally {
          lab.cleanup();
        }
      },
    });
  }
}
