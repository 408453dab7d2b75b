/** Keys as text (lib/encoding.ts): hex for the UAPI, base64 for config files and `wg genkey`. */
import assert from "node:assert/strict";
import { isZero } from "../../lib/crypto.ts";
import { keyFromBase64, keyFromHex, keyToBase64, keyToHex } from "../../lib/encoding.ts";

function key(fill: number): Uint8Array {
  return new Uint8Array(32).fill(fill);
}
function hex(fill: number): string {
  return keyToHex(key(fill));
}
/** Bytes 0..31: a key whose encodings are easy to check by eye. */
const COUNTING = Uint8Array.from({ length: 32 }, (_, i) => i);

Deno.test("keys as hex", async (t) => {
  await t.step("encodes lowercase and decodes either case", () => {
    const h = keyToHex(COUNTING);
    assert.equal(h, "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
    assert.deepEqual(keyFromHex(h), COUNTING);
    assert.deepEqual(keyFromHex(h.toUpperCase()), COUNTING);
    assert.equal(keyToHex(key(0xff)), "f".repeat(64));
  });
  await t.step("round trips random keys", () => {
    for (let i = 0; i < 200; i++) {
      const k = crypto.getRandomValues(new Uint8Array(32));
      const h = keyToHex(k);
      assert.match(h, /^[0-9a-f]{64}$/);
      assert.deepEqual(keyFromHex(h), k);
    }
  });
  await t.step("rejects anything but exactly 64 hex digits", () => {
    const h = hex(0xab);
    for (
      const bad of [
        "",
        h.slice(1),
        h + "0",
        h.slice(0, 63) + "g",
        h.slice(0, 63) + "G",
        h.slice(0, 63) + " ",
        h.slice(0, 63) + "/", // just below '0'
        h.slice(0, 63) + ":", // just above '9'
        h.slice(0, 63) + "@", // just below 'A'
        h.slice(0, 63) + "`", // just below 'a'
        h.slice(0, 63) + "\u00e1",
        h.slice(0, 63) + "\u0661", // Arabic-Indic digit one
        "0x" + h.slice(2),
      ]
    ) assert.equal(keyFromHex(bad), null, JSON.stringify(bad));
  });
});

Deno.test("keys as base64", async (t) => {
  await t.step("matches btoa and round trips", () => {
    assert.equal(keyToBase64(COUNTING), "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
    for (let i = 0; i < 200; i++) {
      const k = crypto.getRandomValues(new Uint8Array(32));
      const b = keyToBase64(k);
      assert.equal(b, btoa(String.fromCharCode(...k)));
      assert.deepEqual(keyFromBase64(b), k);
    }
    assert.deepEqual(keyFromBase64(keyToBase64(key(0xff))), key(0xff));
  });
  await t.step("rejects wrong length, padding, characters and non-canonical tails", () => {
    const b = keyToBase64(COUNTING);
    for (
      const bad of [
        "",
        b.slice(0, 43), // no padding
        b + "=",
        b.slice(0, 42) + "==", // 31 bytes
        b.slice(0, 43) + "A", // no '='
        "A" + b.slice(1, 42) + "-=", // URL-safe alphabet
        "*" + b.slice(1),
        " " + b.slice(1),
        b.slice(0, 42) + "9=", // '8' → '9' sets the unused low bits
        b.slice(0, 20) + "=" + b.slice(21),
        btoa("x".repeat(33)), // 33 bytes
      ]
    ) assert.equal(keyFromBase64(bad), null, JSON.stringify(bad));
  });
  await t.step("an all-zero key is no key (isZero)", () => {
    assert.equal(isZero(key(0)), true);
    const k = key(0);
    k[31] = 1;
    assert.equal(isZero(k), false);
  });
});
