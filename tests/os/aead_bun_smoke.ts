/**
 * The native AEAD under Bun: `bun run tests/os/aead_bun_smoke.ts`. Runs the checks of _aead_checks.ts with
 * each library that loads (fewer lengths than the Deno test, every one of them still compared with noble).
 * Prints one line per library and "aead bun smoke ok" at the end; exits non-zero on the first failure.
 * Run by aead_native_test.ts; uses only node: APIs so it also runs under Deno.
 */
import { nobleAead } from "../../lib/crypto.ts";
import { type NativeAeadLibrary, openChaCha20Poly1305 } from "../../ffi/aead.ts";
import { runtimeName } from "../../ffi/runtime.ts";
import { nativeTransportAead, selectAead } from "../../cmd/crypto.ts";
import {
  agreesWithNoble,
  badArgumentsRefused,
  deviceExchange,
  rfcVectors,
  tamperRejected,
  transportRejects,
} from "./_aead_checks.ts";

console.log(`runtime ${runtimeName}, default backend: ${selectAead("").name}`);

for (const name of ["libsodium", "libcrypto"] as NativeAeadLibrary[]) {
  let c;
  try {
    c = openChaCha20Poly1305(name);
  } catch (e) {
    console.log(`${name}: not loadable here (${e instanceof Error ? e.message : e})`);
    continue;
  }
  try {
    rfcVectors(c);
    tamperRejected(c);
    badArgumentsRefused(c);
    const aead = nativeTransportAead(c);
    agreesWithNoble(aead, 1500, 7);
    transportRejects(aead);
    deviceExchange(aead, aead);
    deviceExchange(aead, nobleAead);
    console.log(`${name}: vectors, tampering, noble agreement, devices: ok`);
  } finally {
    c.close();
  }
}

console.log("aead bun smoke ok");
