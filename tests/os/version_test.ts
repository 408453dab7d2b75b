/** `typetun version` names the runtime and the transport AEAD the daemon would use, per TYPETUN_CRYPTO. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import process from "node:process";

const main = new URL("../../main.ts", import.meta.url).pathname;

function version(crypto: string): { status: number | null; stdout: string } {
  const r = spawnSync(process.execPath, ["run", "-A", main, "version"], {
    encoding: "utf8",
    env: { ...process.env, TYPETUN_CRYPTO: crypto },
  });
  return { status: r.status, stdout: r.stdout };
}

Deno.test("typetun version names the runtime and the AEAD backend", () => {
  const noble = version("noble");
  assert.equal(noble.status, 0);
  assert.match(noble.stdout, /^typetun v\d+\.\d+\.\d+ \(deno [\d.]+, transport AEAD: noble\)\n$/);
  assert.match(version("native").stdout, /transport AEAD: (native \((libsodium|libcrypto)\)|unavailable)/);
  assert.match(version("bogus").stdout, /transport AEAD: unavailable: TYPETUN_CRYPTO/);
});
