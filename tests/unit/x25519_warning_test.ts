import assert from "node:assert/strict";
import { nobleX25519 } from "../../lib/crypto.ts";
import { selectX25519, x25519Warning } from "../../cmd/crypto.ts";

Deno.test("the daemon's X25519 warning: said for noble's (not constant-time), with how to get libsodium's", () => {
  const fallback = x25519Warning(nobleX25519, undefined)!;
  assert.match(fallback, /not constant-time/);
  assert.match(fallback, /install it \(Debian: libsodium23\)/);
  const chosen = x25519Warning(selectX25519("noble"), "noble")!;
  assert.match(chosen, /not constant-time/);
  assert.match(chosen, /unset TYPETUN_CRYPTO=noble/);
  const native = { ...nobleX25519, name: "native (libsodium)" };
  assert.equal(x25519Warning(native, undefined), null, "nothing to say about a native X25519");
  assert.equal(x25519Warning(native, "native"), null);
});
