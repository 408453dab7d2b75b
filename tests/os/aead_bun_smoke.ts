/**
 * The native AEAD under Bun: `bun run tests/os/aead_bun_smoke.ts`. Runs the checks of _aead_checks.ts with
 * each library that loads (fewer lengths than the Deno test, every one of them still compared with noble).
 * Prints one line per library and "aead bun smoke ok" at the end; exits non-zero on the first failure.
 * Run by aead_native_test.ts; uses only node: APIs so it also runs under Deno.
 */
import { nobleAead } from "../../lib/crypto.ts";
import { type NativeAeadLibrary, openChaCha20Poly1305 } from "../../ffi/aead.ts";
import { runtimeName } from "../../ffi/runtime.ts";
import { compiledAead, nativeTransportAead, selectAead } from "../../cmd/crypto.ts";
import { openCompiledLibcrypto } from "../../ffi/aead_cc.ts";
import assert from "node:assert/strict";
import {
  agreesWithNoble,
  alternatingKeys,
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

// The one-call helper Bun compiles (ffi/aead_cc.ts): the same checks, and keys that change between messages.
let compiled;
try {
  compiled = openCompiledLibcrypto();
} catch (e) {
  console.log(`libcrypto (compiled helper): not available here (${e instanceof Error ? e.message : e})`);
}
if (compiled) {
  try {
    assert.equal(compiled.calls, 1);
    rfcVectors(compiled);
    tamperRejected(compiled);
    badArgumentsRefused(compiled);
    const aead = nativeTransportAead(compiled);
    assert.equal(aead.name, "native (libcrypto, compiled)");
    agreesWithNoble(aead, 1500, 7);
    transportRejects(aead);
    alternatingKeys(aead);
    const fourCalls = nativeTransportAead(openChaCha20Poly1305("libcrypto"));
    deviceExchange(aead, fourCalls);
    deviceExchange(aead, nobleAead);
    // What cmd/crypto.ts hands the daemon once it is up.
    const upgraded = compiledAead({ aead: fourCalls, name: fourCalls.name });
    assert.ok(upgraded !== null && "aead" in upgraded, `compiledAead: ${JSON.stringify(upgraded)}`);
    assert.equal(upgraded.name, "native (libcrypto, compiled)");
    assert.equal(compiledAead(upgraded), null, "nothing to upgrade twice");
    console.log("libcrypto (compiled helper): vectors, tampering, noble agreement, keys, devices: ok");
  } finally {
    compiled.close();
  }
}

console.log("aead bun smoke ok");
