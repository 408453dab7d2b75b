/**
 * libsodium's X25519 (ffi/x25519.ts) behind lib/'s DH (cmd/crypto.ts nativeX25519): RFC 7748's vectors, the same
 * results as noble for random keys, low-order points refused, and a handshake between two Devices with it.
 */
import assert from "node:assert/strict";
import { dh, dhPublic, nobleX25519 } from "../../lib/crypto.ts";
import { openX25519 } from "../../ffi/x25519.ts";
import { nativeX25519, selectX25519 } from "../../cmd/crypto.ts";
import { connect, pair } from "../unit/_harness.ts";

const hex = (s: string) => Uint8Array.from(s.match(/../g)!.map((b) => parseInt(b, 16)));

let loadable = true;
try {
  openX25519().close();
} catch {
  loadable = false;
}
const ignore = !loadable;

Deno.test({
  name: "x25519 native: RFC 7748 section 6.1 keys and shared secret",
  ignore,
  fn() {
    const x = nativeX25519(openX25519());
    const alice = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    const bob = hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
    const alicePub = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
    const bobPub = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
    const shared = hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    assert.deepEqual(x.publicKey(alice), alicePub);
    assert.deepEqual(x.publicKey(bob), bobPub);
    assert.deepEqual(x.sharedSecret(alice, bobPub), shared);
    assert.deepEqual(x.sharedSecret(bob, alicePub), shared);
  },
});

Deno.test({
  name: "x25519 native: agrees with noble on random keys; low-order points and bad lengths give no DH",
  ignore,
  fn() {
    const x = nativeX25519(openX25519());
    for (let i = 0; i < 50; i++) {
      const k = crypto.getRandomValues(new Uint8Array(32));
      const p = nobleX25519.publicKey(crypto.getRandomValues(new Uint8Array(32)));
      assert.deepEqual(x.publicKey(k), nobleX25519.publicKey(k));
      assert.deepEqual(x.sharedSecret(k, p), nobleX25519.sharedSecret(k, p));
    }
    const k = crypto.getRandomValues(new Uint8Array(32));
    // u = 0 and u = 1 are points of low order: every scalar maps them to zero (RFC 7748 section 7).
    for (const u of [new Uint8Array(32), Uint8Array.of(1, ...new Array(31).fill(0))]) {
      assert.equal(x.sharedSecret(k, u), null);
      assert.equal(nobleX25519.sharedSecret(k, u), null);
    }
    assert.equal(x.sharedSecret(k, new Uint8Array(31)), null);
    assert.throws(() => openX25519().scalarMultBase(new Uint8Array(32), new Uint8Array(16)), RangeError);
  },
});

Deno.test({
  name: "x25519 native: selected unless TYPETUN_CRYPTO=noble; two Devices complete a handshake with it",
  ignore,
  fn() {
    assert.equal(selectX25519("noble"), nobleX25519);
    assert.equal(selectX25519(undefined).name, "native (libsodium)");
    const x = selectX25519(undefined);
    const k = crypto.getRandomValues(new Uint8Array(32));
    assert.deepEqual(dhPublic(k, x), nobleX25519.publicKey(k));
    assert.equal(dh(k, new Uint8Array(32), x), null);
    // Keys, handshake and the first packet all through libsodium's X25519 (connect throws if it fails).
    const { a, b, clock } = pair({ x25519: x });
    assert.equal(a.device.x25519, x);
    connect(a, b, clock);
  },
});
