/**
 * The container image with a real runtime (podman): it is built once from the compiled binary (as
 * `npm run image` builds it, under a tag of its own), then two containers, each in a network namespace of the
 * test's joined by a veth, run the image's default command `up -f wg0` from a mounted config file. Root only;
 * skipped without podman.
 *
 * podman 4.3 on these machines needs the settings in containers.conf beside this file (runc, cgroupfs, ulimits
 * within the host's); CONTAINERS_CONF points at it unless the caller set it already.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { compile } from "../../scripts/compile.ts";
import { buildImage, IMAGE, packageVersion } from "../../scripts/image.ts";
import { cannotRun, inNs, Lab, sh, sleep, tag } from "../netns/_lab.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const BINARY = join(ROOT, "dist/typetun");
const CONTAINERS_CONF = new URL("./containers.conf", import.meta.url).pathname;
const env = { ...process.env, CONTAINERS_CONF: process.env.CONTAINERS_CONF ?? CONTAINERS_CONF };

/** Runs podman; returns its status and output, never throws (a bounded wait: 60 s). */
function podman(args: string[], timeoutMs = 60_000): { status: number | null; out: string; err: string } {
  const r = spawnSync("podman", args, { encoding: "utf8", env, timeout: timeoutMs });
  return { status: r.status, out: r.stdout ?? "", err: r.stderr ?? "" };
}

function keyPair(): { priv: string; pub: string } {
  const priv = spawnSync(BINARY, ["genkey"], { encoding: "utf8" }).stdout.trim();
  const pub = spawnSync(BINARY, ["pubkey"], { input: `${priv}\n`, encoding: "utf8" }).stdout.trim();
  return { priv, pub };
}

/** Writes a root-only file (a config holds a private key, and wg-quick warns about one others can read). */
function secret(path: string, text: string): string {
  writeFileSync(path, text, { mode: 0o600 });
  chmodSync(path, 0o600);
  return path;
}

interface Side {
  ns: string;
  outer: string;
  inner: string;
  keys: { priv: string; pub: string };
}

function config(me: Side, peer: Side, withEndpoint: boolean): string {
  return `[Interface]
PrivateKey = ${me.keys.priv}
Address = ${me.inner}/24
ListenPort = 51820

[Peer]
PublicKey = ${peer.keys.pub}
AllowedIPs = ${peer.inner}/32
${withEndpoint ? `Endpoint = ${peer.outer}:51820\n` : ""}`;
}

/** Whether the namespace has an interface of that name. */
function hasLink(ns: string, ifname: string): boolean {
  return spawnSync("ip", ["-n", ns, "link", "show", ifname], { stdio: "ignore" }).status === 0;
}

/** Pings from `ns` until one answer comes, for at most `ms`. */
async function pingsWithin(ns: string, addr: string, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    try {
      inNs(ns, `ping -c 1 -W 1 ${addr}`, 5_000);
      return true;
    } catch {
      await sleep(100);
    }
  }
  return false;
}

const skip = cannotRun("podman", "ping");

Deno.test({
  name: "container image: two containers tunnel, stop cleanly, and report a bad config line",
  ignore: skip !== null,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    if (!existsSync(BINARY)) compile(BINARY, ["deno", "bun"]);
    // A tag of the test's own, removed at the end; its layers are those of `npm run image`'s build.
    const image = `${IMAGE}:test-${tag()}`;
    const lab = new Lab();
    const dir = mkdtempSync(join(tmpdir(), "typetun-container-"));
    const containers: string[] = [];
    const run = (name: string, ns: string, conf: string, detach: boolean) => {
      containers.push(name);
      return podman([
        "run",
        ...(detach ? ["--detach"] : []),
        "--name",
        name,
        "--network",
        `ns:/run/netns/${ns}`,
        "--cap-add",
        "NET_ADMIN",
        "--device",
        "/dev/net/tun",
        // No systemd timer here: `podman healthcheck run` runs the check when the test asks.
        "--health-interval",
        "disable",
        "--volume",
        `${conf}:/etc/wireguard/wg0.conf:ro`,
        image,
      ]);
    };
    try {
      const built = buildImage({
        binary: BINARY,
        tags: [image],
        engine: "podman",
        version: packageVersion(),
      });
      console.log(
        `image ${image}: ${(built.size / 1e6).toFixed(1)} MB, libraries ${built.libraries.join(" ")}`,
      );

      const id = tag();
      const a: Side = { ns: lab.ns(`ct${id}a`), outer: "", inner: "10.244.0.1", keys: keyPair() };
      const b: Side = { ns: lab.ns(`ct${id}b`), outer: "", inner: "10.244.0.2", keys: keyPair() };
      a.outer = "192.168.244.1";
      b.outer = "192.168.244.2";
      lab.veth(a.ns, b.ns, [a.outer, "fd00:244::1"], [b.outer, "fd00:244::2"]);
      const confA = secret(join(dir, "a.conf"), config(a, b, true));
      const confB = secret(join(dir, "b.conf"), config(b, a, false));
      const nameA = `typetun-${id}a`, nameB = `typetun-${id}b`;

      await t.step("both containers bring wg0 up and the tunnel pings both ways", async () => {
        for (const [name, side, conf] of [[nameB, b, confB], [nameA, a, confA]] as const) {
          const r = run(name, side.ns, conf, true);
          assert.equal(r.status, 0, `podman run ${name}: ${r.err}`);
        }
        assert(await pingsWithin(a.ns, b.inner, 15_000), `no ping a -> b: ${podman(["logs", nameA]).err}`);
        inNs(b.ns, `ping -c 2 -W 2 ${a.inner}`);
        // It is the containers' tunnel: their interfaces sit in the namespaces, with the configured address.
        assert.match(sh(`ip -n ${a.ns} -4 addr show wg0`), /10\.244\.0\.1\/24/);
      });

      await t.step({
        name: "podman healthcheck run: healthy after the handshake",
        // The image's HEALTHCHECK runs `typetun health wg0`; a binary that has no such command yet skips this.
        ignore: !/\bhealth\b/.test(spawnSync(BINARY, ["help"], { encoding: "utf8" }).stdout ?? ""),
        fn: () => {
          const r = podman(["healthcheck", "run", nameA]);
          assert.equal(r.status, 0, `healthcheck: ${r.out}${r.err}`);
          assert.match(r.out + r.err, /healthy/);
        },
      });

      await t.step("podman stop: exit 0 within 2 s, and wg0 is gone", () => {
        const started = performance.now();
        const r = podman(["stop", "--time", "10", nameA]);
        const ms = performance.now() - started;
        assert.equal(r.status, 0, r.err);
        const code = podman(["inspect", "--format", "{{.State.ExitCode}}", nameA]).out.trim();
        assert.equal(code, "0", `exit code ${code}; log: ${podman(["logs", nameA]).err}`);
        assert(ms < 2000, `podman stop took ${ms.toFixed(0)} ms`);
        assert(!hasLink(a.ns, "wg0"), "wg0 is still there after the container stopped");
      });

      await t.step("a bad line: the container exits non-zero with file:line in its log", () => {
        const bad = config(a, b, true).replace("ListenPort = 51820", "ListenPort = 70000");
        const conf = secret(join(dir, "bad.conf"), bad);
        const name = `typetun-${id}x`;
        const r = run(name, a.ns, conf, false);
        assert(r.status !== 0 && r.status !== null, `status ${r.status}`);
        const log = podman(["logs", name]);
        assert.match(log.out + log.err, /\/etc\/wireguard\/wg0\.conf:4: .*ListenPort/);
        assert(!hasLink(a.ns, "wg0"), "a failed start left wg0 behind");
      });
    } finally {
      for (const c of containers) podman(["rm", "--force", "--time", "0", c]);
      podman(["rmi", "--force", image]);
      lab.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  },
});
