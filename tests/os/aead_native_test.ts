/**
 * The native ChaCha20-Poly1305 (ffi/aead.ts) with each library that loads here, the transport AEAD on top of
 * it (cmd/crypto.ts) against nobleAead, two Devices using it, the TYPETUN_CRYPTO selection (with the libraries
 * hidden in a private mount namespace when root), and the same checks under Bun (aead_bun_smoke.ts).
 */
import assert from "node:assert/strict";
import { existsSync, realpathSync } from "node:fs";
import { spawnSync } from "node:child_process";
import process from "node:process";
import { nobleAead } from "../../lib/crypto.ts";
import { LIBCRYPTO, LIBSODIUM, type NativeAeadLibrary, openChaCha20Poly1305 } from "../../ffi/aead.ts";
import {
  aeadBackendName,
  compiledAead,
  compiledAeadWanted,
  nativeTransportAead,
  parseCryptoChoice,
  selectAead,
} from "../../cmd/crypto.ts";
import { openCompiledLibcrypto } from "../../ffi/aead_cc.ts";
import {
  agreesWithNoble,
  badArgumentsRefused,
  deviceExchange,
  rfcVectors,
  tamperRejected,
  transportRejects,
} from "./_aead_checks.ts";

function loadable(library: NativeAeadLibrary): boolean {
  try {
    openChaCha20Poly1305(library).close();
    return true;
  } catch {
    return false;
  }
}

// In the order openChaCha20Poly1305 tries them.
const libraries = (["libcrypto", "libsodium"] as const).map((name) => ({ name, ok: loadable(name) }));

for (const { name, ok } of libraries) {
  Deno.test(
    { name: `${name}: RFC 8439 section 2.8.2 and A.5, in place with a detached tag`, ignore: !ok },
    () => {
      const c = openChaCha20Poly1305(name);
      try {
        assert.equal(c.library, name);
        rfcVectors(c);
        tamperRejected(c);
        badArgumentsRefused(c);
      } finally {
        c.close();
      }
    },
  );

  Deno.test(
    { name: `native (${name}) matches nobleAead for every length 0..1500, both ways`, ignore: !ok },
    () => {
      const c = openChaCha20Poly1305(name);
      try {
        const aead = nativeTransportAead(c);
        assert.equal(aead.name, `native (${name})`);
        agreesWithNoble(aead, 1500, 1);
        transportRejects(aead);
      } finally {
        c.close();
      }
    },
  );

  Deno.test(
    { name: `native (${name}): two Devices exchange data, also with a noble peer`, ignore: !ok },
    () => {
      const c = openChaCha20Poly1305(name);
      try {
        const aead = nativeTransportAead(c);
        deviceExchange(aead, aead);
        deviceExchange(aead, nobleAead);
        deviceExchange(nobleAead, aead);
      } finally {
        c.close();
      }
    },
  );
}

Deno.test("openChaCha20Poly1305 with no choice prefers libcrypto (the faster here), then libsodium", () => {
  const first = libraries.find((l) => l.ok);
  if (!first) {
    assert.throws(() => openChaCha20Poly1305(), /no native ChaCha20-Poly1305.*install/);
    return;
  }
  const c = openChaCha20Poly1305();
  assert.equal(c.library, first.name);
  c.close();
});

Deno.test("TYPETUN_CRYPTO: parsing and selection", () => {
  assert.equal(parseCryptoChoice(undefined), undefined);
  assert.equal(parseCryptoChoice(""), undefined);
  assert.equal(parseCryptoChoice(" Native "), "native");
  assert.throws(
    () => parseCryptoChoice("fast"),
    /TYPETUN_CRYPTO must be one of noble, native, libsodium, libcrypto/,
  );
  assert.deepEqual(selectAead("noble"), { aead: nobleAead, name: "noble" });
  assert.match(aeadBackendName("fast"), /^unavailable: TYPETUN_CRYPTO must be one of/);
  const any = libraries.find((l) => l.ok);
  const auto = selectAead("");
  assert.equal(auto.name, any ? `native (${any.name})` : "noble");
  assert.equal(auto.aead.name, auto.name);
  if (any) {
    assert.equal(selectAead("native").name, `native (${any.name})`);
    assert.equal(selectAead("native").aead, selectAead(undefined).aead, "each library is opened once");
  }
  for (const { name, ok } of libraries) {
    if (ok) assert.equal(selectAead(name).name, `native (${name})`);
    else assert.throws(() => selectAead(name), new RegExp(`TYPETUN_CRYPTO=${name}: no native`));
  }
});

/**
 * Runs `cmd/crypto.ts`'s selection in a child whose mount namespace has the given libraries replaced by an
 * empty file (dlopen then fails as if they were not installed); the host's files are untouched.
 */
function selectWithout(hidden: string[], choice: string): { status: number | null; out: string } {
  const script = new URL("../../cmd/crypto.ts", import.meta.url).href;
  const code = `import { selectAead } from ${JSON.stringify(script)};
    try { console.log("selected " + selectAead(${JSON.stringify(choice)}).name); }
    catch (e) { console.log("error " + e.message); Deno.exit(3); }`;
  const mounts = hidden.map((p) => `mount --bind /dev/null ${realpathSync(p)}`).join(" && ");
  // The runtime and the code go through the environment: Deno's child_process rewrites arguments that follow
  // its own executable's path (as for `node` scripts).
  const r = spawnSync(
    "unshare",
    [
      "--mount",
      "--propagation",
      "private",
      "sh",
      "-c",
      `${mounts} && exec "$SELECT_RUNTIME" eval "$SELECT_CODE"`,
    ],
    {
      encoding: "utf8",
      timeout: 60000,
      cwd: new URL("../..", import.meta.url).pathname,
      env: { ...process.env, SELECT_RUNTIME: Deno.execPath(), SELECT_CODE: code },
    },
  );
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

const libPath = (soname: string) =>
  [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
  ]
    .map((d) => `${d}/${soname}`).find((p) => existsSync(p));

Deno.test({
  name:
    "TYPETUN_CRYPTO: without libcrypto the default is libsodium; without both, noble, and `native` is an error",
  ignore: process.getuid?.() !== 0 || !existsSync("/usr/bin/unshare") || !libPath(LIBSODIUM) ||
    !libPath(LIBCRYPTO) || !libraries.every((l) => l.ok),
}, () => {
  const sodium = libPath(LIBSODIUM)!, libcrypto = libPath(LIBCRYPTO)!;
  let r = selectWithout([libcrypto], "");
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /selected native \(libsodium\)/);
  r = selectWithout([sodium, libcrypto], "");
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /selected noble/);
  r = selectWithout([sodium, libcrypto], "native");
  assert.equal(r.status, 3, r.out);
  assert.match(
    r.out,
    /error TYPETUN_CRYPTO=native: no native ChaCha20-Poly1305 \(libcrypto\.so\.3: .*libsodium\.so\.23/,
  );
  assert.match(r.out, /install OpenSSL 3 \(Debian: libssl3\) or libsodium \(Debian: libsodium23\)/);
});

const bun = new URL("../../node_modules/.bin/bun", import.meta.url).pathname;
const smoke = new URL("./aead_bun_smoke.ts", import.meta.url).pathname;

Deno.test({
  name: "the native AEAD passes the same checks under Bun (aead_bun_smoke.ts)",
  ignore: !existsSync(bun),
}, () => {
  const r = spawnSync(bun, ["run", smoke], { encoding: "utf8", timeout: 120000 });
  assert.equal(r.status, 0, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  assert.match(r.stdout, /runtime bun/);
  for (const { name, ok } of libraries) {
    if (ok) assert.match(r.stdout, new RegExp(`${name}: vectors, tampering, noble agreement, devices: ok`));
  }
  if (libraries.find((l) => l.name === "libcrypto")!.ok) {
    assert.match(
      r.stdout,
      /libcrypto \(compiled helper\): vectors, tampering, noble agreement, keys, devices: ok/,
    );
  }
  assert.match(r.stdout, /aead bun smoke ok/);
});

Deno.test("Deno cannot compile the one-call helper: it says why, and the four-call libcrypto stays", () => {
  assert.throws(() => openCompiledLibcrypto(), /cannot compile C \(Deno\)/);
  assert.equal(compiledAead({ aead: nobleAead, name: "noble" }), null, "nothing to upgrade for noble");
  if (!libraries.find((l) => l.name === "libcrypto")!.ok) return;
  const four = selectAead("libcrypto");
  const r = compiledAead(four);
  assert.ok(r !== null && "reason" in r);
  assert.match(r.reason, /cannot compile C \(Deno\)/);
});

Deno.test("TYPETUN_CC: 0 or 1", () => {
  assert.equal(compiledAeadWanted(undefined), true);
  assert.equal(compiledAeadWanted("1"), true);
  assert.equal(compiledAeadWanted("0"), false);
  assert.throws(() => compiledAeadWanted("yes"), /TYPETUN_CC must be 0 or 1, not "yes"/);
});
