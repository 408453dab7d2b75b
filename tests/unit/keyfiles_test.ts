import assert from "node:assert/strict";
import { parseConf } from "../../lib/conf.ts";
import { keyToBase64 } from "../../lib/encoding.ts";
import { readKeyFiles, worldAccessible } from "../../cmd/keyfiles.ts";

const KEY = keyToBase64(new Uint8Array(32).fill(7));

Deno.test("key files are read from disk, relative to the config, with wg-quick's world-accessible warning", () => {
  const dir = Deno.makeTempDirSync();
  try {
    Deno.chmodSync(dir, 0o755);
    Deno.writeTextFileSync(`${dir}/private`, `${KEY}\n`, { mode: 0o600 });
    Deno.chmodSync(`${dir}/private`, 0o600);
    Deno.writeTextFileSync(`${dir}/psk`, `${KEY}\n`);
    Deno.chmodSync(`${dir}/psk`, 0o644);
    const conf =
      `[Interface]\nPrivateKeyFile = ${dir}/private\n[Peer]\nPublicKey = ${KEY}\nPresharedKeyFile = psk\n`;
    const warnings: string[] = [];
    const cfg = readKeyFiles(parseConf(conf), `${dir}/wg0.conf`, (w) => warnings.push(w));
    assert.equal(keyToBase64(cfg.privateKey!), KEY);
    assert.equal(keyToBase64(cfg.peers[0]!.presharedKey!), KEY);
    // The text `wg-quick up` prints for its config file, here for the key file others can read.
    assert.deepEqual(warnings, [`Warning: \`${Deno.realPathSync(dir)}/psk' is world accessible`]);
    // A world-readable file in a directory others cannot enter is not world accessible (wg-quick's test).
    Deno.chmodSync(dir, 0o700);
    assert.equal(worldAccessible(`${dir}/psk`), false);
    Deno.chmodSync(dir, 0o755);
    assert.equal(worldAccessible(`${dir}/psk`), true);
    assert.equal(worldAccessible(`${dir}/private`), false);
    Deno.removeSync(`${dir}/psk`);
    assert.throws(
      () => readKeyFiles(parseConf(conf, { file: `${dir}/wg0.conf` }), `${dir}/wg0.conf`, () => {}),
      new RegExp(`wg0\\.conf:5: PresharedKeyFile "psk": no such file$`),
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
