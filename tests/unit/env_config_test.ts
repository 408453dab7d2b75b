import assert from "node:assert/strict";
import { parseConf } from "../../lib/conf.ts";
import { ConfigError, resolveKeyFiles, sameConfig } from "../../lib/config.ts";
import { keyToBase64 } from "../../lib/encoding.ts";
import { configFromEnv, envHasConfig } from "../../cmd/env_config.ts";

const K = (fill: number) => keyToBase64(new Uint8Array(32).fill(fill));

Deno.test("env: the variables mean what the same .conf keys mean", () => {
  const env = {
    WG_PRIVATE_KEY: K(1),
    WG_LISTEN_PORT: "51820",
    WG_FWMARK: "0x20",
    WG_ADDRESS: "10.0.0.1/24, fd00::1/64",
    WG_DNS: "10.0.0.53 example.com",
    WG_MTU: "1380",
    WG_TABLE: "off",
    // Numbered, taken in numeric order (10 after 2).
    WG_PEER_10_PUBLIC_KEY: K(4),
    WG_PEER_10_ALLOWED_IPS: "10.0.0.4/32",
    WG_PEER_2_PUBLIC_KEY: K(2),
    WG_PEER_2_PRESHARED_KEY: K(3),
    WG_PEER_2_ENDPOINT: "[2001:db8::2]:51820",
    WG_PEER_2_ALLOWED_IPS: "10.0.0.2/32, fd00::2/128",
    WG_PEER_2_PERSISTENT_KEEPALIVE: "25",
    HOME: "/root",
    WG_PROCESS_FOREGROUND: "1",
  };
  assert.ok(envHasConfig(env));
  const { config, warnings } = configFromEnv(env);
  assert.deepEqual(warnings, []);
  const conf = parseConf(`[Interface]
PrivateKey = ${K(1)}
ListenPort = 51820
FwMark = 0x20
Address = 10.0.0.1/24, fd00::1/64
DNS = 10.0.0.53, example.com
MTU = 1380
Table = off
[Peer]
PublicKey = ${K(2)}
PresharedKey = ${K(3)}
Endpoint = [2001:db8::2]:51820
AllowedIPs = 10.0.0.2/32, fd00::2/128
PersistentKeepalive = 25
[Peer]
PublicKey = ${K(4)}
AllowedIPs = 10.0.0.4/32
`);
  assert.ok(sameConfig(config, conf));
  assert.equal(envHasConfig({ HOME: "/", WG_LISTEN_PORT: "1" }), false);
});

Deno.test("env: key files, errors naming the variable", () => {
  const { config } = configFromEnv({
    WG_PRIVATE_KEY_FILE: "/run/secrets/wg_private_key",
    WG_PEER_1_PUBLIC_KEY: K(2),
    WG_PEER_1_PRESHARED_KEY_FILE: "/run/secrets/psk",
  });
  assert.equal(config.privateKeyFile?.path, "/run/secrets/wg_private_key");
  const read = (p: string) => {
    if (p === "/run/secrets/psk") throw new Error("no such file");
    return K(1);
  };
  assert.throws(
    () => resolveKeyFiles(config, "(environment)", read),
    (e) =>
      e instanceof ConfigError &&
      e.message === `WG_PEER_1_PRESHARED_KEY_FILE: PresharedKeyFile "/run/secrets/psk": no such file`,
  );
  const bad = (env: Record<string, string>, message: RegExp) =>
    assert.throws(() => configFromEnv(env), (e) => e instanceof ConfigError && message.test(e.message));
  bad({ WG_PRIVATE_KEY: "nope" }, /^WG_PRIVATE_KEY: bad key for PrivateKey/);
  bad({ WG_PRIVATE_KEY: K(1), WG_LISTEN_PORT: "65536" }, /^WG_LISTEN_PORT: bad port "65536" for ListenPort/);
  bad({ WG_PRIVATE_KEY: K(1), WG_ADDRESS: "10.0.0.300/24" }, /^WG_ADDRESS: bad CIDR "10.0.0.300\/24"/);
  bad({ WG_PRIVATE_KEY: K(1), WG_PRIVATE_KEY_FILE: "/k" }, /^WG_PRIVATE_KEY_FILE: both WG_PRIVATE_KEY and/);
  bad(
    { WG_PRIVATE_KEY: K(1), WG_PEER_3_ENDPOINT: "192.0.2.1:51820" },
    /^WG_PEER_3_PUBLIC_KEY: not set, but WG_PEER_3_ENDPOINT is/,
  );
  bad(
    { WG_PRIVATE_KEY: K(1), WG_PEER_3_PUBLIC_KEY: K(2), WG_PEER_3_ENDPOINT: "192.0.2.1" },
    /^WG_PEER_3_ENDPOINT: bad endpoint "192.0.2.1"/,
  );
  bad(
    { WG_PRIVATE_KEY: K(1), WG_PEER_1_PUBLIC_KEY: K(2), WG_PEER_1_ALLOWEDIPS: "10.0.0.2/32" },
    /^WG_PEER_1_ALLOWEDIPS: unknown peer variable \(expected one of WG_PEER_1_PUBLIC_KEY, /,
  );
  bad(
    { WG_PRIVATE_KEY: K(1), WG_PEER_1_PUBLIC_KEY: K(2), WG_PEER_2_PUBLIC_KEY: K(2) },
    /^WG_PEER_2_PUBLIC_KEY: the same public key as WG_PEER_1_PUBLIC_KEY$/,
  );
  assert.deepEqual(configFromEnv({ WG_PRIVATE_KEY: K(1), WG_ADRESS: "10.0.0.1/24" }).warnings, [
    "WG_ADRESS is not a typetun variable: ignored",
  ]);
});

Deno.test("env: WG_PEER_<N>_ALLOW_INBOUND and _ALLOW_OUTBOUND are the peer's filters, as in a file", () => {
  const { config, warnings } = configFromEnv({
    WG_PRIVATE_KEY: K(1),
    WG_PEER_1_PUBLIC_KEY: K(2),
    WG_PEER_1_ALLOWED_IPS: "10.0.0.2/32",
    WG_PEER_1_ALLOW_INBOUND: "tcp/22, icmp",
    WG_PEER_1_ALLOW_OUTBOUND: "udp/53, tcp/443@10.1.0.0/16",
    WG_PEER_2_PUBLIC_KEY: K(3),
    WG_PEER_2_ALLOW_OUTBOUND: "none",
  });
  assert.deepEqual(warnings, []);
  const conf = parseConf(`[Interface]
PrivateKey = ${K(1)}
[Peer]
PublicKey = ${K(2)}
AllowedIPs = 10.0.0.2/32
AllowInbound = tcp/22, icmp
AllowOutbound = udp/53, tcp/443@10.1.0.0/16
[Peer]
PublicKey = ${K(3)}
AllowOutbound = none
`);
  assert.ok(sameConfig(config, conf));
  assert.notEqual(config.peers[0]!.allowInbound, undefined);
  assert.equal(config.peers[1]!.allowInbound, undefined);
  // A bad rule names the variable.
  assert.throws(
    () =>
      configFromEnv({
        WG_PRIVATE_KEY: K(1),
        WG_PEER_1_PUBLIC_KEY: K(2),
        WG_PEER_1_ALLOW_INBOUND: "tcp/99999",
      }),
    (e: Error) => e instanceof ConfigError && e.message.startsWith("WG_PEER_1_ALLOW_INBOUND: "),
  );
});
