/**
 * The compiled executable, dist/typetun (issue #5): the key commands byte-compatible with `wg`, and (root) a
 * real tunnel between two namespaces whose daemons are that binary, one in the foreground and one started in
 * the background as wireguard-go is (the binary re-executes itself, which is what differs once compiled).
 *
 * A missing or out-of-date binary is built here with scripts/compile.ts rather than skipped, so CI always
 * tests the executable it ships.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import process from "node:process";
import { compile } from "../../scripts/compile.ts";
import { selfCommand } from "../../cmd/daemon.ts";
import { cannotRun, have, inNs, joinPair, Lab, sh, sleep, tag } from "./_lab.ts";

const ROOT = resolve(new URL("../..", import.meta.url).pathname);
const BIN = join(ROOT, "dist/typetun");

/** The newest modification time of the sources the binary is built from. */
function newestSource(): number {
  let newest = statSync(join(ROOT, "main.ts")).mtimeMs;
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.ts$/.test(e.name)) newest = Math.max(newest, statSync(p).mtimeMs);
    }
  };
  for (const d of ["cmd", "lib", "ffi"]) walk(join(ROOT, d));
  return newest;
}

let checked = false;
/** dist/typetun, built first if it is missing or older than the sources. */
function binary(): string {
  if (!checked && (!existsSync(BIN) || statSync(BIN).mtimeMs < newestSource())) {
    const { builder, failures } = compile(BIN, ["deno", "bun"]);
    console.log(`built ${BIN} with ${builder}${failures.length ? ` (${failures.join("; ")})` : ""}`);
  }
  checked = true;
  return BIN;
}

function run(args: string[], input?: string) {
  return spawnSync(BIN, args, { encoding: "utf8", input, timeout: 20_000 });
}

const KEY = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=\n$/;

Deno.test("binary: genkey, genpsk and pubkey agree with wg byte for byte; bad input is refused", {
  ignore: !have("wg"),
}, () => {
  binary();
  for (let i = 0; i < 5; i++) {
    const priv = run(["genkey"]);
    assert.equal(priv.status, 0, priv.stderr);
    assert.match(priv.stdout, KEY, "a base64 key of 32 bytes and a newline");
    const ours = run(["pubkey"], priv.stdout);
    assert.equal(ours.status, 0, ours.stderr);
    const theirs = spawnSync("wg", ["pubkey"], { encoding: "utf8", input: priv.stdout });
    assert.equal(ours.stdout, theirs.stdout, "the same public key as wg pubkey");
    // The other way round: a key from wg, read by us.
    const wgPriv = sh("wg genkey");
    assert.equal(
      run(["pubkey"], wgPriv).stdout,
      spawnSync("wg", ["pubkey"], { input: wgPriv }).stdout.toString(),
    );
  }
  const psk = run(["genpsk"]);
  assert.equal(psk.status, 0, psk.stderr);
  assert.match(psk.stdout, KEY);
  assert.equal(Buffer.from(psk.stdout.trim(), "base64").length, 32);
  const genkeys = new Set(Array.from({ length: 3 }, () => run(["genkey"]).stdout));
  assert.equal(genkeys.size, 3, "every key is new");
  for (const bad of ["not a key\n", "", "AAAA\n", `${"A".repeat(44)}\n`]) {
    const r = run(["pubkey"], bad);
    assert.notEqual(r.status, 0, `pubkey of ${JSON.stringify(bad)} fails`);
    assert.equal(r.stdout, "");
    assert.match(r.stderr, /not the correct length or format/);
  }
  // With no arguments it is `show`, as `wg` alone is (issue 17); the usage is `help`'s.
  const bare = run([]), show = run(["show"]);
  assert.equal(bare.status, show.status, bare.stderr);
  assert.equal(bare.stderr, show.stderr);
  assert.doesNotMatch(bare.stderr, /Usage: typetun/);
  const usage = run(["help"]);
  assert.equal(usage.status, 0);
  assert.match(usage.stdout, /Usage: typetun/);
});

Deno.test("binary: selfCommand starts a compiled binary as itself, a script through its runtime", () => {
  assert.deepEqual(selfCommand("/$bunfs/root/typetun"), [process.execPath, []]);
  assert.deepEqual(selfCommand("/tmp/deno-compile-typetun/work/main/main.ts"), [process.execPath, []]);
  assert.deepEqual(selfCommand(process.execPath), [process.execPath, []]);
  assert.deepEqual(selfCommand("/src/typetun/main.ts"), [process.execPath, [
    "run",
    "-A",
    "/src/typetun/main.ts",
  ]]);
});

const skip = cannotRun("wg", "ping");
if (skip) console.log(`binary tunnel test skipped: ${skip}`);

/** The PID of the daemon serving `ifname` that typetun started in the background: `BIN -f IFNAME`. */
function backgroundPid(ifname: string): number | null {
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const argv = readFileSync(`/proc/${d}/cmdline`, "utf8").split("\0").filter(Boolean);
      if (argv.at(-1) === ifname && argv.at(-2) === "-f" && argv[0] === BIN) return Number(d);
    } catch {
      // Exited while we looked.
    }
  }
  return null;
}

Deno.test({
  name:
    "binary: a tunnel between dist/typetun daemons (foreground and background), ping both ways, handshake",
  ignore: skip !== null,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const bin = binary();
    const lab = new Lab();
    const t = tag();
    const wg1 = `tbf${t}`, wg2 = `tbb${t}`;
    try {
      const ns1 = lab.ns(`tb1${t}`), ns2 = lab.ns(`tb2${t}`);
      lab.veth(ns1, ns2, ["192.168.243.1", "fd00:243::1"], ["192.168.243.2", "fd00:243::2"]);
      await lab.daemon(wg1, ns1, {}, [bin]);
      // The background start returns once the interface exists and its UAPI socket serves.
      const t0 = performance.now();
      const bg = spawnSync("ip", ["netns", "exec", ns2, bin, wg2], {
        encoding: "utf8",
        timeout: 20_000,
        env: { ...process.env, LOG_LEVEL: "error" },
      });
      const started = performance.now() - t0;
      assert.equal(bg.status, 0, `background start: ${bg.stderr}`);
      lab.sockets.push(`/var/run/wireguard/${wg2}.sock`);
      assert.ok(backgroundPid(wg2) !== null, "the detached daemon runs as the binary itself");
      console.log(`background start returned after ${started.toFixed(0)} ms`);

      const keys = joinPair(
        { ns: ns1, wg: wg1, port: 51831 },
        { ns: ns2, wg: wg2, port: 51832 },
        "192.168.243.2",
      );
      const k1 = keys.a, k2 = keys.b;
      inNs(ns1, "ping -c 3 -i 0.2 -W 3 10.243.0.2");
      inNs(ns2, "ping -c 3 -i 0.2 -W 3 10.243.0.1");
      for (const [wg, peer] of [[wg1, k2.pub], [wg2, k1.pub]] as const) {
        const [pub, when] = sh(`wg show ${wg} latest-handshakes`).trim().split(/\s+/);
        assert.equal(pub, peer);
        assert.ok(Math.abs(Number(when) - Date.now() / 1000) < 30, `${wg}: a recent handshake (${when})`);
        const [, rx, tx] = sh(`wg show ${wg} transfer`).trim().split(/\s+/).map(Number);
        assert.ok(rx! > 0 && tx! > 0, `${wg} counted traffic both ways (${rx}/${tx})`);
      }
      assert.match(
        sh(`wg show ${wg2} endpoints`),
        /192\.168\.243\.1:51831/,
        "the responder learned the endpoint",
      );

      // Deleting its interface ends the background daemon, as wireguard-go's does.
      sh(`ip -n ${ns2} link del ${wg2}`);
      for (let i = 0; i < 60 && backgroundPid(wg2) !== null; i++) await sleep(50);
      assert.equal(backgroundPid(wg2), null, "the background daemon exited after its interface was deleted");
    } finally {
      const pid = backgroundPid(wg2);
      if (pid !== null) process.kill(pid, "SIGKILL");
      lab.cleanup();
      rmSync(`/var/run/wireguard/${wg2}.sock`, { force: true });
    }
  },
});
