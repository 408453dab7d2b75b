/**
 * `typetun up` / `typetun down` from wg-quick files (root): in two namespaces joined by a veth, each side
 * brought up from its own file (one .conf, one .toml). Addresses, MTU, routes, policy rules and hooks are
 * there after `up` and gone after `down`; SaveConfig writes the file back; `up -f` stays in the foreground
 * and a signal takes the tunnel down; every config error names file and line and leaves nothing behind.
 */
import assert from "node:assert/strict";
import process from "node:process";
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cannotRun, inNs, Lab, labTest, sh, sleep, tag, typetunCommand, waitExit, wgKeys } from "./_lab.ts";

const skip = cannotRun("wg", "ping");
if (skip) console.log(`up/down tests skipped: ${skip}`);

const cli = typetunCommand().map((a) => `'${a}'`).join(" ");

/** Runs `typetun ARGS` in a namespace; returns status and output instead of throwing. */
function typetun(ns: string, args: string): { status: number; stdout: string; stderr: string } {
  const r = spawnSync("ip", ["netns", "exec", ns, "sh", "-c", `${cli} ${args}`], {
    encoding: "utf8",
    timeout: 30_000,
  });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function upOk(ns: string, file: string): string {
  const r = typetun(ns, `up ${file}`);
  assert.equal(r.status, 0, `typetun up ${file}: ${r.stderr}`);
  return r.stderr;
}

interface Json {
  [k: string]: unknown;
}
const ipJson = (ns: string, args: string): Json[] => JSON.parse(sh(`ip -j -n ${ns} ${args}`) || "[]");
const linkExists = (ns: string, ifname: string) => ipJson(ns, "link show").some((l) => l.ifname === ifname);

const test = (name: string, fn: (lab: Lab, dir: string, t: string) => Promise<void> | void) =>
  labTest(name, skip, async (lab) => {
    const dir = mkdtempSync("/tmp/typetun-quick-");
    try {
      await fn(lab, dir, tag());
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

/** Two namespaces over a veth (192.168.243.1 ↔ .2), with keys for each side. */
function twoSides(lab: Lab, t: string) {
  const ns1 = lab.ns(`qa${t}`), ns2 = lab.ns(`qb${t}`);
  lab.veth(ns1, ns2, ["192.168.243.1", "fd00:243::1"], ["192.168.243.2", "fd00:243::2"]);
  return { ns1, ns2, k1: wgKeys(), k2: wgKeys() };
}

test(
  "up/down: from a .conf and a .toml file, addresses, MTU, routes and hooks, then gone",
  async (lab, dir, t) => {
    const { ns1, ns2, k1, k2 } = twoSides(lab, t);
    const if1 = `ua${t}`, if2 = `ub${t}`;
    const conf = `${dir}/${if1}.conf`, toml = `${dir}/${if2}.toml`;
    writeFileSync(
      conf,
      `[Interface]
# side 1
PrivateKey = ${k1.priv}
ListenPort = 51821
Address = 10.243.0.1/24, fd43::1/64
SaveConfig = true
PostUp = echo up %i > ${dir}/postup
PostDown = echo down %i > ${dir}/postdown

[Peer]
PublicKey = ${k2.pub}
AllowedIPs = 10.243.0.2/32, fd43::2/128, 10.244.0.0/16
Endpoint = 192.168.243.2:51822
`,
      { mode: 0o600 },
    );
    writeFileSync(
      toml,
      `[Interface]
PrivateKey = "${k2.priv}"
ListenPort = 51822
Address = ["10.243.0.2/24", "fd43::2/64"]
MTU = 1380

[[Peer]]
PublicKey = "${k1.pub}"
AllowedIPs = ["10.243.0.1/32", "fd43::1/128"]
Endpoint = "192.168.243.1:51821"
`,
      { mode: 0o600 },
    );
    const log = upOk(ns1, conf);
    assert.match(
      log,
      new RegExp(`\\[#\\] ip -4 address add 10.243.0.1/24 dev ${if1}`),
      "up says what it does",
    );
    upOk(ns2, toml);

    // Addresses, MTU (wg-quick's: the veth's 1500 less 80; or as given), link up.
    const [link1] = ipJson(ns1, `addr show dev ${if1}`);
    const addrs = (link1!.addr_info as Json[]).map((a) => `${a.local}/${a.prefixlen}`);
    assert.ok(addrs.includes("10.243.0.1/24") && addrs.includes("fd43::1/64"), `addresses: ${addrs}`);
    assert.equal(link1!.mtu, 1420);
    assert.equal(ipJson(ns2, `link show dev ${if2}`)[0]!.mtu, 1380);
    assert.ok((link1!.flags as string[]).includes("UP"));
    // A route for the allowed IPs no address route covers.
    assert.ok(
      ipJson(ns1, `route show dev ${if1}`).some((r) => r.dst === "10.244.0.0/16"),
      "route for 10.244/16",
    );
    assert.equal(readFileSync(`${dir}/postup`, "utf8"), `up ${if1}\n`, "PostUp ran with %i replaced");

    inNs(ns1, "ping -c 2 -i 0.2 -W 3 10.243.0.2");
    for (let i = 0;; i++) {
      try {
        inNs(ns2, "ping -c 1 -W 2 fd43::1");
        break;
      } catch (e) {
        if (i === 5) throw e;
        await sleep(300);
      }
    }
    const shown = typetun(ns1, `show ${if1} endpoints`);
    assert.equal(shown.stdout, `${k2.pub}\t192.168.243.2:51822\n`);

    // A peer added at run time is saved on down (SaveConfig = true).
    const extra = wgKeys().pub;
    sh(`wg set ${if1} peer ${extra} allowed-ips 10.245.0.0/16`);
    const down = typetun(ns1, `down ${conf}`);
    assert.equal(down.status, 0, down.stderr);
    assert.equal(linkExists(ns1, if1), false, "the interface is gone");
    assert.equal(existsSync(`/var/run/wireguard/${if1}.sock`), false, "its socket is gone");
    assert.equal(readFileSync(`${dir}/postdown`, "utf8"), `down ${if1}\n`, "PostDown ran");
    assert.equal(
      ipJson(ns1, "route show").some((r) => String(r.dst).startsWith("10.24")),
      false,
      "routes gone",
    );
    const saved = readFileSync(conf, "utf8");
    for (
      const want of [
        `PrivateKey = ${k1.priv}`,
        "Address = 10.243.0.1/24",
        "Address = fd43::1/64",
        "SaveConfig = true",
        `PostUp = echo up %i > ${dir}/postup`,
        `PublicKey = ${extra}`,
        "AllowedIPs = 10.245.0.0/16",
      ]
    ) assert.ok(saved.includes(want), `saved config has "${want}":\n${saved}`);
    assert.ok(!saved.includes("fe80"), "the kernel's link-local address is not saved");

    // The saved file brings the same tunnel up again.
    upOk(ns1, conf);
    inNs(ns1, "ping -c 1 -W 3 10.243.0.2");
    assert.equal(typetun(ns1, `down ${if1}.conf`).status, 1, "a name that is not found is an error");
    assert.equal(typetun(ns1, `down ${conf}`).status, 0);
    assert.equal(typetun(ns2, `down ${toml}`).status, 0);
    const again = typetun(ns2, `down ${toml}`);
    assert.equal(again.status, 1);
    assert.match(again.stderr, new RegExp(`\`${if2}' is not a WireGuard interface`));
  },
);

test("up/down: the default route through the tunnel with fwmark policy routing", (lab, dir, t) => {
  const { ns1, ns2, k1, k2 } = twoSides(lab, t);
  const if1 = `da${t}`, if2 = `db${t}`;
  const file1 = `${dir}/${if1}.conf`, file2 = `${dir}/${if2}.conf`;
  writeFileSync(
    file1,
    `[Interface]\nPrivateKey = ${k1.priv}\nAddress = 10.246.0.1/24\n\n[Peer]\nPublicKey = ${k2.pub}\n` +
      `AllowedIPs = 0.0.0.0/0, ::/0\nEndpoint = 192.168.243.2:51832\n`,
    { mode: 0o600 },
  );
  writeFileSync(
    file2,
    `[Interface]\nPrivateKey = ${k2.priv}\nListenPort = 51832\nAddress = 10.246.0.2/24\n\n[Peer]\n` +
      `PublicKey = ${k1.pub}\nAllowedIPs = 10.246.0.1/32\n`,
    { mode: 0o600 },
  );
  upOk(ns2, file2);
  upOk(ns1, file1);
  const rules = sh(`ip -n ${ns1} rule`) + sh(`ip -n ${ns1} -6 rule`);
  assert.match(rules, /not from all fwmark 0xca6c lookup 51820/);
  assert.match(rules, /from all lookup main suppress_prefixlength 0/);
  assert.match(sh(`ip -n ${ns1} route show table 51820`), new RegExp(`default dev ${if1}`));
  assert.equal(sh(`wg show ${if1} fwmark`).trim(), "0xca6c");
  // Everything goes into the tunnel, yet the tunnel's own datagrams (marked) still leave through the veth.
  inNs(ns1, "ping -c 2 -i 0.2 -W 3 10.246.0.2");
  inNs(ns1, "ping -c 1 -W 1 192.0.2.1 || true"); // routed into the tunnel; the peer drops it (not allowed)
  assert.ok(Number(sh(`wg show ${if1} transfer`).trim().split(/\s+/)[2]) > 0);

  assert.equal(typetun(ns1, `down ${file1}`).status, 0);
  const after = sh(`ip -n ${ns1} rule`) + sh(`ip -n ${ns1} -6 rule`);
  assert.doesNotMatch(after, /fwmark 0xca6c|suppress_prefixlength/, "down removed the rules");
  assert.equal(sh(`ip -n ${ns1} route show table 51820`).trim(), "");
  if (cannotRun("iptables") === null) {
    assert.doesNotMatch(
      inNs(ns1, "iptables-save 2>/dev/null || true") + inNs(ns1, "nft list tables 2>/dev/null || true"),
      /wg-quick/,
      "firewall rules removed",
    );
  }
  assert.equal(typetun(ns2, `down ${file2}`).status, 0);
});

test("up -f: stays in the foreground; SIGTERM takes the tunnel down", async (lab, dir, t) => {
  const { ns1, k1, k2 } = twoSides(lab, t);
  const ifname = `fa${t}`;
  const file = `${dir}/${ifname}.conf`;
  writeFileSync(
    file,
    `[Interface]\nPrivateKey = ${k1.priv}\nAddress = 10.247.0.1/24\nPostDown = echo gone %i > ${dir}/postdown\n\n` +
      `[Peer]\nPublicKey = ${k2.pub}\nAllowedIPs = 10.248.0.0/16\n`,
    { mode: 0o600 },
  );
  const [cmd, ...args] = typetunCommand();
  const child = spawn("ip", ["netns", "exec", ns1, cmd!, ...args, "up", "-f", file], { stdio: "ignore" });
  lab.children.push(child);
  for (let i = 0; i < 100 && !ipJson(ns1, "route show").some((r) => r.dst === "10.248.0.0/16"); i++) {
    await sleep(50);
  }
  assert.ok(linkExists(ns1, ifname), "the interface is up");
  assert.equal(child.exitCode, null, "up -f is still running");
  child.kill("SIGTERM");
  await waitExit(child, 5000);
  for (let i = 0; i < 40 && linkExists(ns1, ifname); i++) await sleep(50);
  assert.equal(linkExists(ns1, ifname), false, "the interface is gone after SIGTERM");
  assert.equal(readFileSync(`${dir}/postdown`, "utf8"), `gone ${ifname}\n`, "PostDown ran");
});

test("up -f: SIGTERM saves the config when SaveConfig = true, as down does", async (lab, dir, t) => {
  const { ns1, k1, k2 } = twoSides(lab, t);
  const ifname = `fs${t}`;
  const file = `${dir}/${ifname}.conf`;
  writeFileSync(
    file,
    `[Interface]\nPrivateKey = ${k1.priv}\nAddress = 10.249.0.1/24\nSaveConfig = true\n` +
      `PostUp = touch ${dir}/up\nPreDown = ip -o link show %i > ${dir}/predown\n\n` +
      `[Peer]\nPublicKey = ${k2.pub}\nAllowedIPs = 10.250.0.0/16\n`,
    { mode: 0o600 },
  );
  const [cmd, ...args] = typetunCommand();
  const child = spawn("ip", ["netns", "exec", ns1, cmd!, ...args, "up", "-f", file], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  lab.children.push(child);
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr += d));
  for (let i = 0; i < 200 && !existsSync(`${dir}/up`); i++) await sleep(50);
  assert.ok(linkExists(ns1, ifname), "the interface is up");
  // A peer added at run time: SaveConfig writes it to the file when the tunnel goes down.
  const extra = wgKeys().pub;
  inNs(ns1, `wg set ${ifname} peer ${extra} allowed-ips 10.251.0.0/16`);
  // process.kill, not child.kill: after child.kill, Deno's child_process reports the signal as the cause of
  // the exit even when the child handled it and exited with a status.
  process.kill(child.pid!, "SIGTERM");
  assert.equal(await waitExit(child, 10_000), 0, `up -f exits with status 0: ${stderr}`);
  assert.equal(linkExists(ns1, ifname), false, "the interface is gone after SIGTERM");
  assert.match(
    readFileSync(`${dir}/predown`, "utf8"),
    new RegExp(`: ${ifname}:`),
    "PreDown saw the interface",
  );
  const saved = readFileSync(file, "utf8");
  for (
    const want of [
      `PrivateKey = ${k1.priv}`,
      "Address = 10.249.0.1/24",
      "SaveConfig = true",
      `PreDown = ip -o link show %i > ${dir}/predown`,
      `PublicKey = ${k2.pub}`,
      `PublicKey = ${extra}`,
      "AllowedIPs = 10.251.0.0/16",
    ]
  ) assert.ok(saved.includes(want), `saved config has "${want}":\n${saved}`);
});

test("up: config errors name the file and line and change nothing", (lab, dir, t) => {
  const ns = lab.ns(`qe${t}`);
  const { priv, pub } = wgKeys();
  const ifname = `e${t}`;
  const file = `${dir}/${ifname}.conf`;
  const cases: [string, string, RegExp][] = [
    [
      "unknown key",
      `[Interface]\nPrivateKey = ${priv}\nAdress = 10.0.0.1/24\n`,
      /:3: .*unknown key.*Adress/i,
    ],
    ["bad key", `[Interface]\nPrivateKey = abc\n`, /:2: .*(key|base64)/i],
    [
      "bad CIDR",
      `[Interface]\nPrivateKey = ${priv}\n[Peer]\nPublicKey = ${pub}\nAllowedIPs = 10.0.0.0/33\n`,
      /:5: /,
    ],
    ["bad endpoint", `[Peer]\nPublicKey = ${pub}\nEndpoint = 10.0.0.1\n`, /:3: .*endpoint/i],
    ["duplicate peer", `[Peer]\nPublicKey = ${pub}\n[Peer]\nPublicKey = ${pub}\n`, /:4: .*duplicate/i],
    ["bad address", `[Interface]\nAddress = 10.0.0.300/24\n`, /:2: /],
  ];
  for (const [what, text, message] of cases) {
    writeFileSync(file, text, { mode: 0o600 });
    const r = typetun(ns, `up ${file}`);
    assert.equal(r.status, 1, `${what}: fails`);
    assert.match(r.stderr, new RegExp(`${ifname}\\.conf`), `${what}: names the file: ${r.stderr}`);
    assert.match(r.stderr, message, `${what}: says what is wrong: ${r.stderr}`);
    assert.equal(linkExists(ns, ifname), false, `${what}: no interface left`);
    assert.equal(existsSync(`/var/run/wireguard/${ifname}.sock`), false, `${what}: no daemon left`);
    assert.equal(sh(`ip -n ${ns} route show`).trim(), "", `${what}: no route left`);
  }
  // A file others may read still works, with wg-quick's warning, when its directory lets them in too.
  writeFileSync(file, `[Interface]\nPrivateKey = ${priv}\n`, { mode: 0o644 });
  chmodSync(file, 0o644);
  chmodSync(dir, 0o755);
  const r = typetun(ns, `up ${file}`);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /Warning: .* is world accessible/);
  const twice = typetun(ns, `up ${file}`);
  assert.equal(twice.status, 1);
  assert.match(twice.stderr, /already exists/);
  assert.equal(typetun(ns, `down ${file}`).status, 0);
});

Deno.test({
  name: "demo: as root, a tunnel between two namespaces, brought up with `typetun up`, then nothing left",
  ignore: cannotRun("ping") !== null,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () => {
    const r = spawnSync(typetunCommand()[0]!, [...typetunCommand().slice(1), "demo"], {
      encoding: "utf8",
      timeout: 60_000,
    });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /handshake done/);
    assert.match(r.stdout, /5\/5 replies/);
    assert.match(r.stdout, /latest handshake: /);
    assert.ok(r.stdout.split("\n").length < 25, "the output is short");
    assert.doesNotMatch(sh("ip netns list"), /typetun-demo-/, "its namespaces are gone");
  },
});
