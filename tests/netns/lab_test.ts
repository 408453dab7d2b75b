/**
 * `typetun lab` end to end (root): a lab file goes up, its checks pass, and `lab down` leaves no namespace,
 * daemon or socket behind, also when `lab up` was killed with SIGKILL half-way, and with two labs at once.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import process from "node:process";
import { cannotRun, sleep, tag, typetunCommand } from "./_lab.ts";

const skip = cannotRun("wireguard-go", "ping", "wg");
const LAB_DIR = "/run/typetun/lab";
/** The example the roaming test brings up (the examples test leaves it to that one). */
const ROAMING = "road-warrior.toml";

/** A site-to-site pair through a router: `a` runs typetun, `b` wireguard-go; a knows b's endpoint. */
function s2s(name: string): string {
  return `name = "${name}"

[node.a]
routes = ["0.0.0.0/0 via 192.0.2.1"]
[node.r]
forward = true
[node.b]
routes = ["0.0.0.0/0 via 198.51.100.1"]

[[link]]
ends = ["a:eth0", "r:eth0"]
addresses = [["192.0.2.2/24"], ["192.0.2.1/24"]]

[[link]]
ends = ["r:eth1", "b:eth0"]
addresses = [["198.51.100.1/24"], ["198.51.100.2/24"]]

[[wireguard]]
node = "a"
name = "wg0"
addresses = ["10.10.0.1/24", "fd10::1/64"]
listen_port = 51820

[[wireguard.peer]]
to = "b:wg0"
endpoint = "b:eth0"
preshared_key = true

[[wireguard]]
node = "b"
name = "wg0"
addresses = ["10.10.0.2/24", "fd10::2/64"]
implementation = "wireguard-go"

[[wireguard.peer]]
to = "a:wg0"

[[check]]
from = "a"
ping = "10.10.0.2"
expect = "reach"

[[check]]
from = "b"
ping = "fd10::1"
expect = "reach"

[[check]]
from = "a"
ping = "10.99.0.1"
expect = "blocked"
`;
}

const dir = skip ? "" : mkdtempSync("/tmp/typetun-lab-test-");

function labFile(name: string, text = s2s(name)): string {
  const f = `${dir}/${name}.toml`;
  writeFileSync(f, text);
  return f;
}

function lab(...args: string[]): { status: number; out: string; err: string } {
  const [cmd, ...pre] = typetunCommand();
  const r = spawnSync(cmd!, [...pre, "lab", ...args], { encoding: "utf8", timeout: 60_000 });
  return { status: r.status ?? -1, out: r.stdout, err: r.stderr };
}

function namespacesOf(name: string): string[] {
  return spawnSync("ip", ["netns", "list"], { encoding: "utf8" }).stdout.split("\n")
    .map((l) => l.split(" ")[0]!).filter((n) => n.startsWith(`${name}-`));
}

function pidsOf(name: string): number[] {
  try {
    const s = JSON.parse(readFileSync(`${LAB_DIR}/${name}/state.json`, "utf8"));
    return s.wireguards.map((w: { pid: number | null }) => w.pid).filter((p: number | null) => p);
  } catch {
    return [];
  }
}

/** The lab's namespaces, daemons and state (with its sockets) are all gone. */
function assertGone(name: string, pids: number[]): void {
  assert.deepEqual(namespacesOf(name), [], "namespaces left");
  for (const pid of pids) assert(!existsSync(`/proc/${pid}`), `daemon ${pid} left running`);
  assert(!existsSync(`${LAB_DIR}/${name}`), "state directory (and its sockets) left");
}

/** Whatever the test made, removed even when it failed: down, then anything of the lab's by hand. */
function cleanup(name: string, pids: number[]): void {
  lab("down", name);
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch { /* gone */ }
  }
  for (const ns of namespacesOf(name)) spawnSync("ip", ["netns", "del", ns]);
  rmSync(`${LAB_DIR}/${name}`, { recursive: true, force: true });
}

function labTest(name: string, fn: () => Promise<void> | void): void {
  Deno.test({ name, ignore: skip !== null, sanitizeOps: false, sanitizeResources: false, fn });
}

labTest(
  "lab: a site-to-site pair (typetun and wireguard-go) through a router: up, check, exec, show, down",
  () => {
    const name = `l${tag()}`;
    const file = labFile(name);
    let pids: number[] = [];
    try {
      const up = lab("up", file);
      pids = pidsOf(name);
      assert.deepEqual(up.status, 0, up.err);
      assert.deepEqual(pids.length, 2);
      assert.deepEqual(namespacesOf(name).sort(), [`${name}-a`, `${name}-b`, `${name}-r`]);
      // A second lab of the same name is refused while the first runs.
      const again = lab("up", file);
      assert.deepEqual(again.status, 1);
      assert.match(again.err, /already running/);

      const check = lab("check", name);
      assert.deepEqual(check.status, 0, check.out + check.err);
      assert.match(check.out, /^pass +a +10\.10\.0\.2 +reach +[0-9.]+ ms$/m);
      assert.match(check.out, /^pass +b +fd10::1 +reach +[0-9.]+ ms$/m);
      assert.match(check.out, /^pass +a +10\.99\.0\.1 +blocked +-$/m);

      // The node's own wg sees its interface (the socket directory is mounted where wg looks).
      const wg = lab("exec", name, "a", "--", "wg", "show", "wg0", "latest-handshakes");
      assert.deepEqual(wg.status, 0, wg.err);
      assert.match(wg.out, /^\S+=\t[1-9][0-9]*$/m);
      assert.deepEqual(lab("exec", name, "b", "--", "sh", "-c", "exit 7").status, 7);

      const show = JSON.parse(lab("show", name, "--json").out);
      assert.deepEqual(show.wireguards.map((w: { implementation: string }) => w.implementation), [
        "typetun",
        "wireguard-go",
      ]);
      const peer = show.wireguards[0].peers[0];
      assert(peer.latestHandshakeMs > 0 && peer.rxBytes > 0 && peer.txBytes > 0, JSON.stringify(peer));
      assert.match(lab("show", name, "--dot").out, /"a" -- "b" \[style=dashed, color=green/);
      assert.match(readFileSync(`${LAB_DIR}/${name}/a-wg0.conf`, "utf8"), /^PresharedKey = /m);

      const down = lab("down", name);
      assert.deepEqual(down.status, 0, down.err);
      assertGone(name, pids);
      const second = lab("down", file);
      assert.deepEqual(second.status, 0);
      assert.match(second.out, /nothing to do/);
    } finally {
      cleanup(name, pids);
    }
  },
);

labTest("lab: two labs of the same shape run at once, and a failing check fails lab check", async () => {
  const [n1, n2] = [`l${tag()}`, `l${tag()}`];
  // The second expects the tunnel blocked, which it is not: lab check must say so.
  const f2 = labFile(
    n2,
    s2s(n2).replace(/ping = "10.10.0.2"\nexpect = "reach"/, `ping = "10.10.0.2"\nexpect = "blocked"`),
  );
  const f1 = labFile(n1);
  let p1: number[] = [], p2: number[] = [];
  try {
    // Both at the same time: names, sockets and ports must not collide.
    const [cmd, ...pre] = typetunCommand();
    const ups = [f1, f2].map((f) => spawn(cmd!, [...pre, "lab", "up", f], { stdio: "ignore" }));
    const codes = await Promise.all(ups.map((c) => new Promise<number | null>((r) => c.on("exit", r))));
    p1 = pidsOf(n1), p2 = pidsOf(n2);
    assert.deepEqual(codes, [0, 0]);
    assert.deepEqual(lab("check", n1).status, 0);
    const c2 = lab("check", n2);
    assert.deepEqual(c2.status, 1, c2.out);
    assert.match(c2.out, /^FAIL +a +10\.10\.0\.2 +blocked/m);
    assert.match(lab("list").out, new RegExp(`^${n1}\t.*\n${n2}\t`, "m"));
    assert.deepEqual(lab("down", n1).status, 0);
    assertGone(n1, p1);
    // The other lab is untouched.
    assert.equal(
      JSON.parse(lab("show", n2, "--json").out).wireguards.filter((w: { running: boolean }) => w.running)
        .length,
      2,
    );
    assert.deepEqual(namespacesOf(n2).length, 3);
    assert.deepEqual(lab("down", f2).status, 0);
    assertGone(n2, p2);
  } finally {
    cleanup(n1, p1);
    cleanup(n2, p2);
  }
});

/** Starts `lab up` and sends it `signal` once its first daemon is recorded (before any peer is configured). */
async function interruptUp(name: string, signal: "SIGKILL" | "SIGINT") {
  const [cmd, ...pre] = typetunCommand();
  const up = spawn(cmd!, [...pre, "lab", "up", labFile(name)], { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  up.stderr!.on("data", (d) => (err += d.toString()));
  const exit = new Promise<[number | null, string | null]>((r) => up.once("exit", (c, s) => r([c, s])));
  for (let i = 0; i < 400 && pidsOf(name).length === 0 && up.exitCode === null; i++) await sleep(10);
  const pids = pidsOf(name);
  up.kill(signal);
  const [code, sig] = await exit;
  return { pids, code, signal: sig, err };
}

labTest("lab: SIGKILL of lab up half-way, then lab down leaves nothing", async () => {
  const name = `l${tag()}`;
  let pids: number[] = [];
  try {
    const r = await interruptUp(name, "SIGKILL");
    pids = pidsOf(name);
    assert(pids.length > 0, `killed before any daemon started: ${r.err}`);
    assert(namespacesOf(name).length > 0);
    const down = lab("down", name);
    assert.equal(down.status, 0, down.err);
    assertGone(name, pids);
    assert.match(lab("down", name).out, /nothing to do/);
  } finally {
    cleanup(name, pids);
  }
});

labTest("lab: Ctrl-C during lab up undoes what was made", async () => {
  const name = `l${tag()}`;
  let pids: number[] = [];
  try {
    const r = await interruptUp(name, "SIGINT");
    pids = r.pids;
    assert(pids.length > 0, `interrupted before any daemon started: ${r.err}`);
    // Undone, then ended by the signal or with status 1 (Deno re-raises SIGINT once no listener is left).
    assert(r.code === 1 || r.signal === "SIGINT", `exit ${r.code} ${r.signal}: ${r.err}`);
    assert.match(r.err, /interrupted/);
    assertGone(name, pids);
  } finally {
    cleanup(name, pids);
  }
});

labTest(
  "lab: every example in examples/labs comes up, passes its checks and goes down without a trace",
  () => {
    const examples = new URL("../../examples/labs/", import.meta.url).pathname;
    for (const f of readdirSync(examples).filter((n) => n.endsWith(".toml") && n !== ROAMING).sort()) {
      // Under a name of this test's own, so a lab of the example's name someone runs is left alone.
      const name = `l${tag()}`;
      const text = readFileSync(examples + f, "utf8").replace(/^name = ".*"$/m, `name = "${name}"`);
      const file = labFile(name, text);
      let pids: number[] = [];
      try {
        const up = lab("up", file);
        pids = pidsOf(name);
        assert.equal(up.status, 0, `${f}: ${up.err}`);
        const check = lab("check", name);
        assert.equal(check.status, 0, `${f}:\n${check.out}`);
        assert.match(check.out, /^([0-9]+)\/\1 checks pass$/m);
        assert.equal(lab("down", name).status, 0);
        assertGone(name, pids);
      } finally {
        cleanup(name, pids);
      }
    }
  },
);

labTest("lab: the road warrior behind NAT roams to a new address and the office follows it", async () => {
  const name = `l${tag()}`;
  const examples = new URL("../../examples/labs/", import.meta.url).pathname;
  const file = labFile(
    name,
    readFileSync(examples + ROAMING, "utf8").replace(/^name = ".*"$/m, `name = "${name}"`),
  );
  let pids: number[] = [];
  const officeSees = () =>
    JSON.parse(lab("show", name, "--json").out).wireguards.find((w: { node: string }) => w.node === "office")
      .peers[0].endpoint as string | null;
  try {
    assert.equal(lab("up", file).status, 0);
    pids = pidsOf(name);
    assert.equal(lab("check", name).status, 0);
    assert.match(officeSees() ?? "", /^203\.0\.113\.2:/);
    // The laptop moves to another address and the router now maps it to its second outside address.
    const home = `${name}-home`, laptop = `${name}-laptop`;
    spawnSync("ip", ["netns", "exec", home, "nft", "flush", "table", "ip", "typetun_lab_nat"]);
    const snat = "add rule ip typetun_lab_nat post oifname eth1 snat to 203.0.113.3".split(" ");
    assert.equal(spawnSync("ip", ["netns", "exec", home, "nft", ...snat]).status, 0);
    for (
      const cmd of [
        "addr del 192.168.1.2/24 dev eth0",
        "addr add 192.168.1.7/24 dev eth0",
        "route add default via 192.168.1.1",
      ]
    ) {
      assert.equal(spawnSync("ip", ["-n", laptop, ...cmd.split(" ")]).status, 0, cmd);
    }
    // The next keepalive (every second) comes from the new address; the office answers there.
    for (let i = 0; i < 50 && !/^203\.0\.113\.3:/.test(officeSees() ?? ""); i++) await sleep(100);
    assert.match(officeSees() ?? "", /^203\.0\.113\.3:/);
    const check = lab("check", name);
    assert.equal(check.status, 0, check.out);
    assert.equal(lab("down", name).status, 0);
    assertGone(name, pids);
  } finally {
    cleanup(name, pids);
  }
});

if (!skip) {
  globalThis.addEventListener("unload", () => rmSync(dir, { recursive: true, force: true }));
}
