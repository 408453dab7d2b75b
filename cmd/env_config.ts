/**
 * A configuration from the environment, for a container started with no file at all (`typetun up -f wg0`
 * with no /etc/wireguard/wg0.conf, or `--env`). The variables carry the .conf keys, in upper case with
 * underscores; peers are numbered. Values are what the .conf line would hold, and go through the same checks
 * (lib/config.ts's Builder), so they mean exactly what they mean in a file.
 *
 *   WG_PRIVATE_KEY or WG_PRIVATE_KEY_FILE (one of them is what says "configure from the environment"),
 *   WG_LISTEN_PORT, WG_FWMARK, WG_ADDRESS, WG_DNS, WG_MTU, WG_TABLE;
 *   for each peer N (any decimal number; peers are taken in numeric order): WG_PEER_<N>_PUBLIC_KEY (required),
 *   WG_PEER_<N>_PRESHARED_KEY or WG_PEER_<N>_PRESHARED_KEY_FILE, WG_PEER_<N>_ENDPOINT,
 *   WG_PEER_<N>_ALLOWED_IPS, WG_PEER_<N>_PERSISTENT_KEEPALIVE, WG_PEER_<N>_ALLOW_INBOUND,
 *   WG_PEER_<N>_ALLOW_OUTBOUND.
 *
 * There are no hook variables: a container image has no shell to run them. Errors name the variable.
 * @module
 */
import process from "node:process";
import { Builder, ConfigError, type WgConfig } from "../lib/config.ts";
import { keyToBase64 } from "../lib/encoding.ts";
import { readKeyFiles } from "./keyfiles.ts";
import { say } from "./log.ts";

/** The variables of [Interface], with the .conf key each carries. */
export const ENV_INTERFACE: Readonly<Record<string, string>> = {
  WG_PRIVATE_KEY: "PrivateKey",
  WG_PRIVATE_KEY_FILE: "PrivateKeyFile",
  WG_LISTEN_PORT: "ListenPort",
  WG_FWMARK: "FwMark",
  WG_ADDRESS: "Address",
  WG_DNS: "DNS",
  WG_MTU: "MTU",
  WG_TABLE: "Table",
};

/** The suffixes of a peer's variables (`WG_PEER_<N>_` + suffix), with the .conf key each carries. */
export const ENV_PEER: Readonly<Record<string, string>> = {
  PUBLIC_KEY: "PublicKey",
  PRESHARED_KEY: "PresharedKey",
  PRESHARED_KEY_FILE: "PresharedKeyFile",
  ENDPOINT: "Endpoint",
  ALLOWED_IPS: "AllowedIPs",
  PERSISTENT_KEEPALIVE: "PersistentKeepalive",
  // typetun's per-peer filters (lib/filter.ts): a container without iptables or nft can still filter.
  ALLOW_INBOUND: "AllowInbound",
  ALLOW_OUTBOUND: "AllowOutbound",
};

/** Other programs' WG_ variables (wg, wg-quick, wireguard-go): no typo of ours. */
const OTHERS = new Set([
  "WG_PROCESS_FOREGROUND",
  "WG_QUICK_USERSPACE_IMPLEMENTATION",
  "WG_ENDPOINT_RESOLUTION_RETRIES",
  "WG_COLOR_MODE",
  "WG_HIDE_KEYS",
  "WG_SUDO",
  "WG_TUN_NAME_FILE",
  "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD",
]);

type Env = Readonly<Record<string, string | undefined>>;

/** True if the environment holds a configuration (a private key or its file). */
export function envHasConfig(env: Env): boolean {
  return env.WG_PRIVATE_KEY !== undefined || env.WG_PRIVATE_KEY_FILE !== undefined;
}

/**
 * The configuration the environment describes. Throws a ConfigError whose message starts with the variable
 * to blame (`WG_PEER_2_ENDPOINT: bad endpoint ...`). `warnings` lists WG_ variables that mean nothing here
 * (most likely misspelt).
 */
export function configFromEnv(env: Env): { config: WgConfig; warnings: string[] } {
  const b = new Builder("(environment)", false);
  const warnings: string[] = [];
  const set = (variable: string, key: string, value: string) => {
    try {
      // Line 1: the Builder takes line 0 for "not given"; every message is re-made without it.
      b.set(key, value, 1);
    } catch (e) {
      if (e instanceof ConfigError) throw new ConfigError(variable, 0, e.problem);
      throw e;
    }
  };
  const peers = new Map<bigint, [variable: string, suffix: string][]>();
  const names = Object.keys(env).filter((k) => k.startsWith("WG_") && env[k] !== undefined).sort();
  for (const name of names) {
    const m = /^WG_PEER_([0-9]+)_(.+)$/.exec(name);
    if (m) {
      if (!(m[2]! in ENV_PEER)) {
        const known = Object.keys(ENV_PEER).map((s) => `WG_PEER_${m[1]}_${s}`).join(", ");
        throw new ConfigError(name, 0, `unknown peer variable (expected one of ${known})`);
      }
      const n = BigInt(m[1]!);
      peers.set(n, [...(peers.get(n) ?? []), [name, m[2]!]]);
    } else if (!(name in ENV_INTERFACE) && !OTHERS.has(name)) {
      warnings.push(`${name} is not a typetun variable: ignored`);
    }
  }
  b.section("[Interface]", 0);
  for (const [variable, key] of Object.entries(ENV_INTERFACE)) {
    const value = env[variable];
    if (value !== undefined) set(variable, key, value);
  }
  if (env.WG_PRIVATE_KEY !== undefined && env.WG_PRIVATE_KEY_FILE !== undefined) {
    throw new ConfigError(
      "WG_PRIVATE_KEY_FILE",
      0,
      "both WG_PRIVATE_KEY and WG_PRIVATE_KEY_FILE are set (use one)",
    );
  }
  const seen = new Map<string, string>();
  for (const n of [...peers.keys()].sort((a, c) => (a < c ? -1 : a > c ? 1 : 0))) {
    const vars = new Map(peers.get(n)!.map(([variable, suffix]) => [suffix, variable]));
    const prefix = `WG_PEER_${n}_`;
    const pub = vars.get("PUBLIC_KEY");
    if (!pub) {
      throw new ConfigError(`${prefix}PUBLIC_KEY`, 0, `not set, but ${[...vars.values()].join(", ")} is`);
    }
    if (vars.has("PRESHARED_KEY") && vars.has("PRESHARED_KEY_FILE")) {
      throw new ConfigError(
        `${prefix}PRESHARED_KEY_FILE`,
        0,
        `both ${prefix}PRESHARED_KEY and it are set (use one)`,
      );
    }
    b.section("[Peer]", 0);
    for (const [suffix, key] of Object.entries(ENV_PEER)) {
      const variable = vars.get(suffix);
      if (variable !== undefined) set(variable, key, env[variable]!);
    }
    const peer = b.cfg.peers[b.cfg.peers.length - 1]!;
    const hex = keyToBase64(peer.publicKey);
    const first = seen.get(hex);
    if (first) throw new ConfigError(pub, 0, `the same public key as ${first}`);
    seen.set(hex, pub);
    if (peer.presharedKeyFile) {
      peer.presharedKeyFile = { ...peer.presharedKeyFile, line: 0, where: vars.get("PRESHARED_KEY_FILE") };
    }
  }
  const config = b.finish();
  if (config.privateKeyFile) {
    config.privateKeyFile = { ...config.privateKeyFile, line: 0, where: "WG_PRIVATE_KEY_FILE" };
  }
  return { config, warnings };
}

/**
 * The environment's configuration with its key files read (relative names from the working directory),
 * warnings written as key-file warnings are. What `typetun up --env` (or `up` without a file) applies.
 */
export function readEnvConfig(env: Env, warn?: (line: string) => void): WgConfig {
  const { config, warnings } = configFromEnv(env);
  for (const w of warnings) (warn ?? ((line: string) => say("warn", line)))(`Warning: ${w}`);
  return readKeyFiles(config, `${process.cwd()}/(environment)`, warn);
}
