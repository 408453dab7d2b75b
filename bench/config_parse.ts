/**
 * How long the config parsers (lib/conf.ts, lib/toml.ts) take on big and hostile configuration files
 * (issue 11, section 3).
 *
 *   node_modules/.bin/deno run -A bench/config_parse.ts [case…]
 *
 * Prints one line per case: its name, input size, milliseconds, and the outcome (parsed, or the error). With
 * no arguments every case runs; the names select some (e.g. `toml-10000-peers bomb`).
 * @module
 */
import { parseConfig } from "../lib/configfile.ts";

/** A base64 key made of `i` (distinct per peer), as wg prints keys: 43 characters then `=`. */
function key(i: number): string {
  const digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  let s = "";
  for (let n = i, k = 0; k < 8; k++, n = Math.floor(n / 64)) s += digits[n % 64];
  return s.padEnd(42, "A") + "A=";
}

/** A file with `n` peers, each with a key, an endpoint and two allowed IPs, in either spelling. */
export function manyPeers(n: number, format: "conf" | "toml"): string {
  const head = format === "toml" ? "[[Peer]]" : "[Peer]";
  const q = (s: string) => format === "toml" ? `"${s}"` : s;
  let out = `[Interface]\nPrivateKey = ${q(key(0))}\nListenPort = 51820\n`;
  for (let i = 1; i <= n; i++) {
    const a = `10.${i >> 8 & 255}.${i & 255}.1/32`;
    const ips = format === "toml"
      ? `["${a}", "fd00::${i.toString(16)}/128"]`
      : `${a}, fd00::${i.toString(16)}/128`;
    out += `\n${head}\nPublicKey = ${q(key(i))}\nAllowedIPs = ${ips}\nEndpoint = ${q(`192.0.2.1:${i}`)}\n`;
  }
  return out;
}

/** Hostile inputs: each must fail fast with file:line, or parse fast. */
export const HOSTILE: Record<string, { format: "conf" | "toml"; text: () => string }> = {
  // The table-header regex used to run on lines inside multi-line strings and backtrack cubically.
  "bomb": { format: "toml", text: () => `[Interface]\nPostUp = """\n[${" ".repeat(5000)}x\n"""\n` },
  "bomb-50k": { format: "toml", text: () => `[Interface]\nPostUp = """\n[${" ".repeat(50000)}x\n"""\n` },
  "bomb-header": { format: "toml", text: () => `[${" ".repeat(50000)}x\n` },
  "bomb-key": { format: "toml", text: () => `[Interface]\n"${" ".repeat(50000)}x = 1\n` },
  "deep-array": { format: "toml", text: () => `[Interface]\nAddress = ${"[".repeat(100000)}\n` },
  "deep-inline": { format: "toml", text: () => `[Interface]\nAddress = ${"{a=".repeat(100000)}\n` },
  "deep-dotted": { format: "toml", text: () => `[Interface]\n${"a.".repeat(100000)}a = 1\n` },
  "unterminated-ml": { format: "toml", text: () => `[Interface]\nPostUp = """${"x\n".repeat(500000)}` },
  "unterminated": { format: "toml", text: () => `[Interface]\nPostUp = "${"x".repeat(5000000)}\n` },
  "huge-line-toml": { format: "toml", text: () => `[Interface]\nPostUp = "${"x".repeat(5000000)}"\n` },
  "huge-line-conf": { format: "conf", text: () => `[Interface]\nPostUp = ${"x".repeat(5000000)}\n` },
  "huge-header-conf": { format: "conf", text: () => `[${" ".repeat(5000000)}x\n` },
  "many-hash-conf": { format: "conf", text: () => `[Interface]\nPostUp = ${"#".repeat(5000000)}\n` },
  "many-tables": { format: "toml", text: () => `[Interface]\n${"[[Peer]]\n".repeat(100000)}` },
  "many-lines-conf": { format: "conf", text: () => `[Interface]\n${"\n".repeat(2000000)}MTU = 1\n` },
  "many-allowedips-conf": {
    format: "conf",
    text: () => `[Peer]\nPublicKey = ${key(1)}\nAllowedIPs = ${"10.0.0.1/32,".repeat(100000)}10.0.0.1/32x\n`,
  },
};

const CASES: Record<string, { format: "conf" | "toml"; text: () => string }> = {
  "conf-2000-peers": { format: "conf", text: () => manyPeers(2000, "conf") },
  "toml-2000-peers": { format: "toml", text: () => manyPeers(2000, "toml") },
  "conf-10000-peers": { format: "conf", text: () => manyPeers(10000, "conf") },
  "toml-10000-peers": { format: "toml", text: () => manyPeers(10000, "toml") },
  ...HOSTILE,
};

if (import.meta.main) {
  const wanted = Deno.args.length > 0 ? Deno.args : Object.keys(CASES);
  for (const name of wanted) {
    const c = CASES[name];
    if (!c) throw new Error(`unknown case ${name}; known: ${Object.keys(CASES).join(" ")}`);
    const text = c.text();
    const t0 = performance.now();
    let outcome: string;
    try {
      const cfg = parseConfig(text, { file: `x.${c.format}`, format: c.format });
      outcome = `parsed (${cfg.peers.length} peers)`;
    } catch (e) {
      outcome = `${(e as Error).name}: ${(e as Error).message.slice(0, 100).replace(/\s+/g, " ")}`;
    }
    const ms = performance.now() - t0;
    console.log(
      `${name.padEnd(22)} ${(text.length / 1024).toFixed(0).padStart(6)} KiB ${
        ms.toFixed(1).padStart(9)
      } ms  ${outcome}`,
    );
  }
}
