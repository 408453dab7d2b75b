/**
 * Configuration files (lib/config.ts, conf.ts, toml.ts): random configurations written in either
 * spelling, often mutated as text, or hostile text outright. For every input: parseConfig either returns a
 * configuration or throws a ConfigError naming the file (nothing else escapes), in bounded time; a
 * configuration that parses converts to both spellings (or is refused with a ConfigError), and the
 * conversion parses back to the same configuration (convert must never change a config's meaning).
 * @module
 */
import { formatConf } from "../lib/conf.ts";
import { ConfigError, emptyConfig, type WgConfig } from "../lib/config.ts";
import { parseConfig } from "../lib/configfile.ts";
import { formatToml } from "../lib/toml.ts";
import type { Prng } from "./prng.ts";
import { check, mutate, type Target } from "./target.ts";

const FILE = "fuzz.conf";
/** Generous: a 10,000-peer file must parse in under a second; hostile inputs here are at most ~100 KB. */
const MAX_PARSE_MS = 2000;

export function configTarget(p: Prng): Target {
  let input = "";
  let parsed = 0, converted = 0;

  const hook = (): string =>
    p.pick([
      "iptables -A FORWARD -i %i -j ACCEPT",
      "echo 'wg#1' # comment?",
      "\tindented\t",
      " spaced ",
      "line one\nline two",
      "x\n[Peer]\nAllowedIPs = 0.0.0.0/0",
      'quote " and \\ backslash',
      "unicode ✓ é 😀",
      "",
      "a = b",
      "[Interface]",
      "trailing\r",
      "\u00a0nbsp",
      "del\x7f",
      String.fromCharCode(...p.bytes(p.size(12)).map((b) => (b % 95) + 32)),
    ]);
  const key = () => p.bytes(32);
  const config = (): WgConfig => {
    const c = emptyConfig();
    if (p.chance(0.8)) c.privateKey = key();
    if (p.chance(0.5)) c.listenPort = p.pick([0, 1, 51820, 65535]);
    if (p.chance(0.3)) c.fwmark = p.pick([0, 1, 0xffffffff, 0x10]);
    for (let i = p.size(3); i > 0; i--) {
      c.addresses.push(
        p.chance(0.5)
          ? { family: 4, addr: p.bytes(4), prefixLen: p.below(33) }
          : { family: 6, addr: p.bytes(16), prefixLen: p.below(129) },
      );
    }
    for (let i = p.size(2); i > 0; i--) c.dns.push(p.pick(["1.1.1.1", "2606:4700::1111", "10.0.0.1"]));
    for (let i = p.size(2); i > 0; i--) c.dnsSearch.push(p.pick(["example.com", "corp.local", "a-b.c"]));
    if (p.chance(0.3)) c.mtu = p.pick([1280, 1420, 9000]);
    if (p.chance(0.2)) c.table = p.pick(["off", "auto", "1234", "main"]);
    for (const list of [c.preUp, c.postUp, c.preDown, c.postDown]) {
      for (let i = p.size(2); i > 0; i--) list.push(hook());
    }
    c.saveConfig = p.chance(0.1);
    for (let i = p.chance(0.01) ? 2000 : p.size(4); i > 0; i--) {
      c.peers.push({
        publicKey: key(),
        ...(p.chance(0.3) ? { presharedKey: key() } : {}),
        ...(p.chance(0.5)
          ? {
            endpoint: {
              host: p.pick(["192.0.2.1", "2001:db8::1", "vpn.example.com", "::ffff:1.2.3.4"]),
              port: p.below(65536),
            },
          }
          : {}),
        ...(p.chance(0.4) ? { persistentKeepalive: p.pick([0, 25, 65535]) } : {}),
        allowedIps: Array.from(
          { length: p.size(3) },
          () =>
            p.chance(0.5)
              ? { family: 4 as const, addr: new Uint8Array(4), prefixLen: 0 }
              : { family: 6 as const, addr: p.bytes(16).map((b, j) => (j < 8 ? b : 0)), prefixLen: 64 },
        ),
      });
    }
    return c;
  };
  const hostile = (): string =>
    p.pick([
      `[Interface]\nPostUp = """\n[${" ".repeat(p.int(1, 5000))}x\n"""\n`,
      `${"[".repeat(p.int(1, 3000))}`,
      `[Interface]\n${"a=".repeat(p.int(1, 3000))}\n`,
      `${"#".repeat(p.int(1, 3000))}\n[Peer]\n`,
      `PostUp = ${'"'.repeat(p.int(1, 2000))}\n`,
      `[[Peer]]\n`.repeat(p.int(1, 500)),
      "\0\ufeff[Interface]\r\nPrivateKey = \r\n",
    ]);

  const parse = (text: string, format: "conf" | "toml"): WgConfig | null => {
    const t0 = performance.now();
    try {
      return parseConfig(text, { file: FILE, format });
    } catch (e) {
      check(e instanceof ConfigError, () => `parse threw ${e instanceof Error ? e.stack : e}`);
      check(e.message.startsWith(`${FILE}:`), () => `error without the file name: ${e.message}`);
      return null;
    } finally {
      const ms = performance.now() - t0;
      check(ms < MAX_PARSE_MS, () => `parsing ${text.length} characters took ${Math.round(ms)} ms`);
    }
  };
  /** Writes in one spelling; null when refused with a ConfigError. */
  const write = (cfg: WgConfig, format: "conf" | "toml"): string | null => {
    try {
      return format === "conf" ? formatConf(cfg) : formatToml(cfg);
    } catch (e) {
      check(e instanceof ConfigError, () => `format threw ${e instanceof Error ? e.stack : e}`);
      return null;
    }
  };

  return {
    get input() {
      return input;
    },
    step() {
      const format = p.chance(0.5) ? "conf" : "toml";
      const r = p.below(10);
      if (r < 1) input = hostile();
      else {
        input = write(config(), format) ?? "";
        if (r < 6) input = new TextDecoder().decode(mutate(p, new TextEncoder().encode(input)));
      }
      const cfg = parse(input, format);
      if (!cfg) return;
      parsed++;
      for (const to of ["conf", "toml"] as const) {
        const text = write(cfg, to);
        if (text === null) continue;
        const back = parse(text, to);
        check(back !== null, () => `the ${to} written for a ${format} input does not parse:\n${text}`);
        const a = canonical(cfg), b = canonical(back);
        check(a === b, () => `${format} → ${to} changed the configuration:\n${a}\n${b}\nwritten:\n${text}`);
        converted++;
      }
    },
    stats: () => ({ parsed, converted }),
  };
}

/** A configuration as comparable text: bytes as hex, object keys sorted (parsers may set them in any order). */
function canonical(c: WgConfig): string {
  return JSON.stringify(c, (_k, v) => {
    if (v instanceof Uint8Array) return [...v].map((b) => b.toString(16).padStart(2, "0")).join("");
    if (v && typeof v === "object" && !Array.isArray(v)) {
      return Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : 1)));
    }
    return v;
  });
}
