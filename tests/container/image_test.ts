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
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { compile } from "../../scripts/compile.ts";
import { buildImage, IMAGE, IMAGE_USER, packageVersion } from "../../scripts/image.ts";
import { cannotRun, have, inNs, Lab, sh, sleep, tag } from "../netns/_lab.ts";

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
  /** The private key file on the host, mounted where Docker and Podman put secrets. */
  keyFile: string;
}

const KEY_IN_CONTAINER = "/run/secrets/wg0.key";
/** Where the server serves its metrics, inside its namespace. */
const METRICS_PORT = 9586;
/** The server's handshake age limit for its health check, in seconds. */
const MAX_AGE = 6;

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");

/** The server: listens, forwards, knows the client only by its key. */
function serverConfig(me: Side, client: Side): string {
  return `[Interface]
PrivateKeyFile = ${KEY_IN_CONTAINER}
Address = ${me.inner}/24
ListenPort = 51820

[Peer]
PublicKey = ${client.keys.pub}
AllowedIPs = ${client.inner}/32
`;
}

/** The client: everything through the tunnel (wg-quick's default-route case, fwmark and rules). */
function clientConfig(me: Side, server: Side): string {
  return `[Interface]
PrivateKeyFile = ${KEY_IN_CONTAINER}
Address = ${me.inner}/24

[Peer]
PublicKey = ${server.keys.pub}
AllowedIPs = 0.0.0.0/0
Endpoint = ${server.outer}:51820
`;
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

/** Waits for wg-quick's default-route rule (`not fwmark 51820 lookup 51820`) in `ns`, for at most `ms`. */
async function defaultRouteWithin(ns: string, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (/lookup 51820/.test(sh(`ip -n ${ns} -4 rule`))) return true;
    await sleep(50);
  }
  return false;
}

const skip = cannotRun("podman", "ping");

Deno.test({
  name:
    "container image: a server and a default-route client (files or environment), health, stop, bad configs",
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
    /**
     * Runs the image's default command (`up -f wg0`) in `side`'s namespace, its key mounted where secrets go,
     * from a mounted config (or, with `conf` null, from `opts.env` alone).
     */
    const run = (
      name: string,
      side: Side,
      conf: string | null,
      opts: { detach: boolean; sysctl?: string; env?: Record<string, string>; extra?: string[] },
    ) => {
      containers.push(name);
      return podman([
        "run",
        ...(opts.detach ? ["--detach"] : []),
        "--name",
        name,
        "--network",
        `ns:/run/netns/${side.ns}`,
        // The capabilities the README says it needs: NET_ADMIN, and SETUID and SETGID to become the image's
        // user after setup (the process then keeps NET_ADMIN alone).
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_ADMIN,SETUID,SETGID",
        "--device",
        "/dev/net/tun",
        ...(opts.sysctl ? ["--sysctl", opts.sysctl] : []),
        // No systemd timer here: `podman healthcheck run` runs the check when the test asks.
        "--health-interval",
        "disable",
        ...(conf ? ["--volume", `${conf}:/etc/wireguard/wg0.conf:ro`] : []),
        "--volume",
        `${side.keyFile}:${KEY_IN_CONTAINER}:ro`,
        ...Object.entries(opts.env ?? {}).flatMap(([k, v]) => ["--env", `${k}=${v}`]),
        ...(opts.extra ?? []),
        image,
      ]);
    };
    const health = (name: string) => {
      const r = podman(["healthcheck", "run", name]);
      const status = podman(["inspect", "--format", "{{.State.Health.Status}}", name]).out.trim();
      const log = podman(["inspect", "--format", "{{json .State.Health.Log}}", name]).out;
      const last = (JSON.parse(log || "[]") as { Output: string }[] | null)?.at(-1)?.Output ?? "";
      return { status: r.status, health: status, output: last };
    };
    const logs = (name: string) => {
      const r = podman(["logs", name]);
      return r.out + r.err;
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

      await t.step("the image: up -f --user typetun wg0 by default, a HEALTHCHECK, and no shell", () => {
        const config = JSON.parse(podman(["image", "inspect", "--format", "{{json .Config}}", image]).out);
        assert.deepEqual(config.Entrypoint, ["typetun"]);
        assert.deepEqual(config.Cmd, ["up", "-f", "--user", IMAGE_USER.name, "wg0"]);
        const health = JSON.parse(
          podman(["image", "inspect", "--format", "{{json .HealthCheck}}", image]).out,
        );
        assert.deepEqual(health.Test, ["CMD", "typetun", "health", "wg0"]);
        const inImage = (entrypoint: string, ...args: string[]) =>
          podman(["run", "--rm", "--network", "none", "--entrypoint", entrypoint, image, ...args]);
        // The binary runs there (so a failure below is the shell's absence, not a broken image).
        assert.match(inImage("typetun", "version").out, /typetun/);
        for (const shell of ["/bin/sh", "/bin/bash", "/usr/bin/sh"]) {
          const r = inImage(shell, "-c", "true");
          assert.equal(r.status, 127, `${shell} in the image: status ${r.status} ${r.err}`);
          assert.match(r.err, /no such file or directory/i);
        }
      });

      // server (a) <-veth-> client (b); behind the server, a host (x) that the client reaches through the tunnel.
      const id = tag();
      const side = (ns: string, outer: string, inner: string): Side => {
        const keys = keyPair();
        return {
          ns: lab.ns(ns),
          outer,
          inner,
          keys,
          keyFile: secret(join(dir, `${ns}.key`), `${keys.priv}\n`),
        };
      };
      const a = side(`ct${id}a`, "192.168.244.1", "10.244.0.1");
      const b = side(`ct${id}b`, "192.168.244.2", "10.244.0.2");
      const x = lab.ns(`ct${id}x`);
      lab.veth(a.ns, b.ns, [a.outer, "fd00:244::1"], [b.outer, "fd00:244::2"]);
      lab.veth(a.ns, x, ["172.31.244.1", "fd00:245::1"], ["172.31.244.2", "fd00:245::2"]);
      sh(`ip -n ${x} route add default via 172.31.244.1`);
      const confA = secret(join(dir, "a.conf"), serverConfig(a, b));
      const confB = secret(join(dir, "b.conf"), clientConfig(b, a));
      const nameA = `typetun-${id}a`, nameB = `typetun-${id}b`;

      await t.step("server and client come up from files and keys mounted; pings both ways", async () => {
        // The server's health check allows handshakes of at most MAX_AGE s, so a gone peer shows within the test.
        let r = run(nameA, a, confA, {
          detach: true,
          sysctl: "net.ipv4.ip_forward=1",
          extra: [
            "--health-cmd",
            JSON.stringify(["typetun", "health", "wg0", "--max-handshake-age", `${MAX_AGE}`]),
          ],
          env: { TYPETUN_METRICS: `127.0.0.1:${METRICS_PORT}` },
        });
        assert.equal(r.status, 0, `podman run ${nameA}: ${r.err}`);
        r = run(nameB, b, confB, { detach: true, sysctl: "net.ipv4.conf.all.src_valid_mark=1" });
        assert.equal(r.status, 0, `podman run ${nameB}: ${r.err}`);
        assert(await pingsWithin(b.ns, a.inner, 15_000), `no ping client -> server: ${logs(nameB)}`);
        inNs(a.ns, `ping -c 2 -W 2 ${b.inner}`);
        // It is the containers' tunnel: their interfaces sit in the namespaces, with the configured address.
        assert.match(sh(`ip -n ${a.ns} -4 addr show wg0`), /10\.244\.0\.1\/24/);
        // The sysctl given to the container is taken as set, not warned about.
        assert.doesNotMatch(logs(nameB), /could not set/);
      });

      await t.step("the client's default route goes through the server, which forwards", async () => {
        // The client's main table knows only the veth's subnet: x is reached through wg0 or not at all.
        // `up` adds the default route's rules last: the tunnel answers before they are in place.
        assert(await defaultRouteWithin(b.ns, 10_000), `no default-route rule: ${logs(nameB)}`);
        const out = inNs(b.ns, "ping -c 1 -W 2 172.31.244.2");
        assert.match(out, /ttl=63/);
      });

      // The image's HEALTHCHECK runs `typetun health wg0`; a binary that has no such command yet skips these.
      const noHealth = !/\bhealth\b/.test(spawnSync(BINARY, ["help"], { encoding: "utf8" }).stdout ?? "");

      await t.step({
        name: "podman healthcheck run: healthy after the handshake",
        ignore: noHealth,
        fn: () => {
          // The client with the image's own check, the server with its shorter age.
          for (const name of [nameB, nameA]) {
            const h = health(name);
            assert.equal(h.status, 0, `healthcheck ${name}: ${h.output}`);
            assert.equal(h.health, "healthy", h.output);
          }
        },
      });

      await t.step(
        "after setup the daemon is the image's user with CAP_NET_ADMIN only; a fwmark change works",
        () => {
          const pid = podman(["inspect", "--format", "{{.State.Pid}}", nameA]).out.trim();
          const status = readFileSync(`/proc/${pid}/status`, "utf8");
          const uid = IMAGE_USER.uid;
          assert.match(status, new RegExp(`^Uid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}$`, "m"));
          assert.match(status, new RegExp(`^Gid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}$`, "m"));
          // CAP_NET_ADMIN is bit 12, and nothing else is left.
          assert.match(status, /^CapEff:\s+0000000000001000$/m);
          assert.match(status, /^CapPrm:\s+0000000000001000$/m);
          const set = podman(["exec", nameA, "typetun", "set", "wg0", "fwmark", "0x1234"]);
          assert.equal(set.status, 0, set.err);
          assert.equal(podman(["exec", nameA, "typetun", "show", "wg0", "fwmark"]).out.trim(), "0x1234");
          inNs(b.ns, `ping -c 1 -W 2 ${a.inner}`);
          inNs(a.ns, `ping -c 1 -W 2 ${b.inner}`);
        },
      );

      await t.step({
        name: "the server's /metrics counts the bytes `typetun show` does",
        ignore: noHealth || !have("curl"),
        fn: () => {
          // `show ... transfer` is "KEY\tRX\tTX"; the exporter's names say sent/received the same way.
          const pub = b.keys.pub;
          for (let attempt = 0;; attempt++) {
            const before = podman(["exec", nameA, "typetun", "show", "wg0", "transfer"]).out.trim();
            const metrics = inNs(a.ns, `curl -sf http://127.0.0.1:${METRICS_PORT}/metrics`);
            const after = podman(["exec", nameA, "typetun", "show", "wg0", "transfer"]).out.trim();
            // A keepalive between the two readings moves the counters: read again.
            if (before !== after && attempt < 3) continue;
            const [key, rx, tx] = before.split("\t");
            assert.equal(key, pub);
            assert(Number(rx) > 0 && Number(tx) > 0, before);
            const value = (name: string) =>
              new RegExp(`^${name}\\{[^}]*public_key="${escape(pub)}"[^}]*\\} (\\d+)$`, "m").exec(metrics)
                ?.[1];
            assert.equal(value("wireguard_received_bytes_total"), rx, metrics);
            assert.equal(value("wireguard_sent_bytes_total"), tx, metrics);
            break;
          }
        },
      });

      await t.step("podman stop: exit 0 within 2 s; wg0 and the client's rules are gone", () => {
        assert.match(sh(`ip -n ${b.ns} -4 rule`), /lookup 51820/);
        const started = performance.now();
        const r = podman(["stop", "--time", "10", nameB]);
        const ms = performance.now() - started;
        assert.equal(r.status, 0, r.err);
        const code = podman(["inspect", "--format", "{{.State.ExitCode}}", nameB]).out.trim();
        assert.equal(code, "0", `exit code ${code}; log: ${logs(nameB)}`);
        assert(ms < 2000, `podman stop took ${ms.toFixed(0)} ms`);
        assert(!hasLink(b.ns, "wg0"), "wg0 is still there after the container stopped");
        assert.doesNotMatch(sh(`ip -n ${b.ns} -4 rule`), /lookup 51820|suppress_prefixlength/);
      });

      await t.step({
        name: "podman healthcheck run: unhealthy once the peer is gone, naming it",
        ignore: noHealth,
        fn: async () => {
          let h = health(nameA);
          for (let i = 0; i < 4 * MAX_AGE && h.health !== "unhealthy"; i++) {
            await sleep(500);
            h = health(nameA);
          }
          assert.notEqual(h.status, 0);
          assert.equal(h.health, "unhealthy", h.output);
          assert.match(h.output, new RegExp(`peer ${escape(b.keys.pub)} .*latest handshake`));
        },
      });

      await t.step(
        "configured from the environment alone: the client again, through the server",
        async () => {
          const name = `typetun-${id}e`;
          const r = run(name, b, null, {
            detach: true,
            sysctl: "net.ipv4.conf.all.src_valid_mark=1",
            env: {
              WG_PRIVATE_KEY_FILE: KEY_IN_CONTAINER,
              WG_ADDRESS: `${b.inner}/24`,
              WG_PEER_1_PUBLIC_KEY: a.keys.pub,
              WG_PEER_1_ENDPOINT: `${a.outer}:51820`,
              WG_PEER_1_ALLOWED_IPS: "0.0.0.0/0",
            },
          });
          try {
            assert.equal(r.status, 0, `podman run ${name}: ${r.err}`);
            assert(await pingsWithin(b.ns, a.inner, 15_000), `no ping client -> server: ${logs(name)}`);
            // Through the server again, once `up` has put the default route's rules in place.
            assert(await defaultRouteWithin(b.ns, 10_000), `no default-route rule: ${logs(name)}`);
            assert.match(inNs(b.ns, "ping -c 1 -W 2 172.31.244.2"), /ttl=63/);
            inNs(a.ns, `ping -c 1 -W 2 ${b.inner}`);
            if (!noHealth) assert.equal(health(nameA).health, "healthy", "the server did not recover");
            const stop = podman(["stop", "--time", "10", name]);
            assert.equal(stop.status, 0, stop.err);
            const code = podman(["inspect", "--format", "{{.State.ExitCode}}", name]).out.trim();
            assert.equal(code, "0", logs(name));
            assert(!hasLink(b.ns, "wg0"), "wg0 is still there after the container stopped");
          } finally {
            // Whatever failed above, the steps after this one find the client's namespace free.
            podman(["rm", "--force", "--time", "0", name]);
          }
        },
      );

      await t.step("a bad line: the container exits non-zero with file:line in its log", () => {
        const bad = clientConfig(b, a).replace("AllowedIPs = 0.0.0.0/0", "AllowedIPs = 0.0.0.0/33");
        const conf = secret(join(dir, "bad.conf"), bad);
        const name = `typetun-${id}x`;
        const r = run(name, b, conf, { detach: false });
        assert(r.status !== 0 && r.status !== null, `status ${r.status}`);
        assert.match(logs(name), /\/etc\/wireguard\/wg0\.conf:7: .*0\.0\.0\.0\/33/);
        assert(!hasLink(b.ns, "wg0"), "a failed start left wg0 behind");
      });

      await t.step("hooks in an image without a shell: one line, exit non-zero, nothing changed", () => {
        const hooked = clientConfig(b, a).replace("[Peer]", "PostUp = echo up\n\n[Peer]");
        const conf = secret(join(dir, "hooked.conf"), hooked);
        const name = `typetun-${id}h`;
        const r = run(name, b, conf, { detach: false });
        assert(r.status !== 0 && r.status !== null, `status ${r.status}`);
        const lines = logs(name).trim().split("\n");
        assert.equal(lines.length, 1, lines.join("\n"));
        assert.match(lines[0]!, /hooks.*no shell/);
        assert(!hasLink(b.ns, "wg0"), "a refused start left wg0 behind");
      });
    } finally {
      for (const c of containers) podman(["rm", "--force", "--time", "0", c]);
      podman(["rmi", "--force", image]);
      lab.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  },
});
