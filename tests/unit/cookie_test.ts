import assert from "node:assert/strict";
import { blake2s } from "@noble/hashes/blake2.js";
import { blake2sInto, dhGenerate, dhPublic } from "../../lib/crypto.ts";
import { CookieChecker, CookieGenerator, type Source } from "../../lib/cookie.ts";
import {
  COOKIE_SECRET_LATENCY,
  COOKIE_SECRET_MAX_AGE,
  MESSAGE_COOKIE_LEN,
  MESSAGE_INITIATION_LEN,
  MESSAGE_RESPONSE_LEN,
} from "../../lib/messages.ts";
import { seededRng } from "./_harness.ts";

const rng = seededRng(99);
const SRC: Source = { addr: new Uint8Array([192, 0, 2, 1]), port: 1000 };

/** A responder's checker and an initiator's generator for it. */
function setup() {
  const pub = dhPublic(dhGenerate(rng));
  const checker = new CookieChecker();
  checker.setPublicKey(pub);
  return { pub, checker, gen: new CookieGenerator(pub) };
}

/** What a responder makes of a message's MACs (the kernel's cookie_mac_state), mac2 checked when under load. */
enum MacState {
  InvalidMac,
  ValidMacButNoCookie,
  ValidMacWithCookie,
}
function validate(
  checker: CookieChecker,
  m: Uint8Array,
  src: Source,
  underLoad: boolean,
  now: number,
): MacState {
  if (!checker.checkMac1(m, 0, m.length)) return MacState.InvalidMac;
  if (!underLoad || !checker.checkMac2(m, src, now)) return MacState.ValidMacButNoCookie;
  return MacState.ValidMacWithCookie;
}

function message(len = MESSAGE_INITIATION_LEN, sender = 0x01020304): Uint8Array {
  const m = new Uint8Array(len);
  rng(m);
  m[0] = len === MESSAGE_INITIATION_LEN ? 1 : 2;
  m[1] = m[2] = m[3] = 0;
  m[4] = sender & 0xff;
  m[5] = (sender >>> 8) & 0xff;
  m[6] = (sender >>> 16) & 0xff;
  m[7] = sender >>> 24;
  return m;
}

Deno.test("mac1: valid for the right key, invalid after any change or for another key", () => {
  for (const len of [MESSAGE_INITIATION_LEN, MESSAGE_RESPONSE_LEN]) {
    const { checker, gen } = setup();
    const m = message(len);
    gen.addMacs(m, 0);
    assert.equal(validate(checker, m, SRC, false, 0), MacState.ValidMacButNoCookie);
    for (let i = 0; i < len - 16; i++) {
      const t = m.slice();
      t[i]! ^= 0x40;
      assert.equal(validate(checker, t, SRC, false, 0), MacState.InvalidMac, `byte ${i}`);
    }
    const other = setup();
    assert.equal(validate(other.checker, m, SRC, false, 0), MacState.InvalidMac);
    // Without a cookie, mac2 is zero.
    assert.ok(m.subarray(len - 16).every((b) => b === 0));
  }
});

Deno.test("cookie round trip: reply, consume, then mac2 validates under load", () => {
  const { checker, gen } = setup();
  const m1 = message();
  gen.addMacs(m1, 0);
  assert.equal(validate(checker, m1, SRC, true, 0), MacState.ValidMacButNoCookie);
  const reply = checker.createReply(m1, SRC, 0, rng);
  assert.equal(reply.length, MESSAGE_COOKIE_LEN);
  assert.equal(reply[0], 3);
  assert.deepEqual(reply.subarray(4, 8), m1.subarray(4, 8), "addressed to the message's sender index");
  assert.ok(gen.consumeReply(reply, 10));
  assert.equal(gen.consumeReply(reply, 10), false, "a reply is consumed once");
  const m2 = message();
  gen.addMacs(m2, 20);
  assert.ok(m2.subarray(MESSAGE_INITIATION_LEN - 16).some((b) => b !== 0), "mac2 is set");
  assert.equal(validate(checker, m2, SRC, true, 30), MacState.ValidMacWithCookie);
  assert.equal(
    validate(checker, m2, SRC, false, 30),
    MacState.ValidMacButNoCookie,
    "mac2 unchecked if not asked",
  );
  // The cookie is bound to the source address and port.
  assert.equal(validate(checker, m2, { addr: SRC.addr, port: 1001 }, true, 30), MacState.ValidMacButNoCookie);
  assert.equal(
    validate(checker, m2, { addr: new Uint8Array([192, 0, 2, 9]), port: 1000 }, true, 30),
    MacState.ValidMacButNoCookie,
  );
  // A tampered mac2 is not a cookie (mac1 still valid).
  const t = m2.slice();
  t[MESSAGE_INITIATION_LEN - 1]! ^= 1;
  assert.equal(validate(checker, t, SRC, true, 30), MacState.ValidMacButNoCookie);
});

Deno.test("a cookie reply is bound to the message it answers and to the responder's key", () => {
  const { checker, gen } = setup();
  const m1 = message();
  gen.addMacs(m1, 0);
  const reply1 = checker.createReply(m1, SRC, 0, rng);
  const m2 = message();
  gen.addMacs(m2, 1); // a newer message was sent meanwhile
  assert.equal(gen.consumeReply(reply1, 2), false, "a reply to an older message is not accepted");
  const other = setup();
  const foreign = other.checker.createReply(m2, SRC, 0, rng);
  assert.equal(gen.consumeReply(foreign, 2), false, "a reply from another key does not decrypt");
  for (let i = 8; i < MESSAGE_COOKIE_LEN; i++) {
    const r = checker.createReply(m2, SRC, 0, rng);
    r[i]! ^= 1;
    assert.equal(gen.consumeReply(r, 2), false, `byte ${i}`);
  }
  assert.ok(gen.consumeReply(checker.createReply(m2, SRC, 0, rng), 2));
  const fresh = new CookieGenerator(setup().pub);
  assert.equal(fresh.consumeReply(reply1, 0), false, "nothing sent, nothing to accept");
});

Deno.test("cookie lifetimes: the secret rotates every two minutes; the sender stops using it a bit earlier", () => {
  const { checker, gen } = setup();
  const m1 = message();
  gen.addMacs(m1, 0);
  assert.ok(gen.consumeReply(checker.createReply(m1, SRC, 0, rng), 0));
  const at = (now: number) => {
    const m = message();
    gen.addMacs(m, now);
    return m;
  };
  const justBefore = COOKIE_SECRET_MAX_AGE - COOKIE_SECRET_LATENCY - 1;
  const m = at(justBefore);
  assert.ok(m.subarray(MESSAGE_INITIATION_LEN - 16).some((b) => b !== 0));
  assert.equal(validate(checker, m, SRC, true, justBefore), MacState.ValidMacWithCookie);
  const stale = at(COOKIE_SECRET_MAX_AGE - COOKIE_SECRET_LATENCY);
  assert.ok(stale.subarray(MESSAGE_INITIATION_LEN - 16).every((b) => b === 0), "the sender drops its cookie");
  // The responder refuses cookies made under a secret older than COOKIE_SECRET_MAX_AGE.
  assert.equal(validate(checker, m, SRC, true, COOKIE_SECRET_MAX_AGE), MacState.ValidMacWithCookie);
  assert.equal(validate(checker, m, SRC, true, COOKIE_SECRET_MAX_AGE + 1), MacState.ValidMacButNoCookie);
  // A new reply brings a cookie under a new secret, and the old one is worthless.
  const m3 = message();
  gen.addMacs(m3, COOKIE_SECRET_MAX_AGE + 1);
  assert.ok(
    gen.consumeReply(checker.createReply(m3, SRC, COOKIE_SECRET_MAX_AGE + 1, rng), COOKIE_SECRET_MAX_AGE + 1),
  );
  const m4 = at(COOKIE_SECRET_MAX_AGE + 2);
  assert.equal(validate(checker, m4, SRC, true, COOKIE_SECRET_MAX_AGE + 2), MacState.ValidMacWithCookie);
  assert.equal(validate(checker, m, SRC, true, COOKIE_SECRET_MAX_AGE + 2), MacState.ValidMacButNoCookie);
});

Deno.test("a checker without a key accepts nothing", () => {
  const { gen } = setup();
  const c = new CookieChecker();
  c.setPublicKey(null);
  const m = message();
  gen.addMacs(m, 0);
  assert.equal(validate(c, m, SRC, false, 0), MacState.InvalidMac);
});

Deno.test("mac1 is checked in place, at any offset of a larger buffer, without touching the bytes", () => {
  const { checker, gen } = setup();
  const m = message();
  gen.addMacs(m, 0);
  const buf = new Uint8Array(1000).fill(0xcc);
  buf.set(m, 333);
  const copy = buf.slice();
  assert.ok(checker.checkMac1(buf, 333, m.length));
  assert.equal(checker.checkMac1(buf, 332, m.length), false, "a shifted window is junk");
  assert.deepEqual(buf, copy);
});

Deno.test("BLAKE2s over a buffer range: RFC 7693's vector, and noble's result for every key and input length", () => {
  const abc = new Uint8Array(32);
  blake2sInto(new Uint8Array(0), new TextEncoder().encode("abc"), 0, 3, abc, 32);
  assert.equal(
    Array.from(abc, (b) => b.toString(16).padStart(2, "0")).join(""),
    "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982", // RFC 7693 appendix B
  );
  const buf = new Uint8Array(300);
  rng(buf);
  for (let keyLen = 0; keyLen <= 32; keyLen += 4) {
    const key = new Uint8Array(keyLen);
    rng(key);
    for (let len = 0; len <= 200; len += len < 70 ? 1 : 13) {
      for (const outLen of [16, 32]) {
        const want = blake2s(buf.subarray(7, 7 + len), { key: keyLen ? key : undefined, dkLen: outLen });
        const got = new Uint8Array(outLen);
        blake2sInto(key, buf, 7, len, got, outLen);
        assert.deepEqual(got, want, `key ${keyLen} bytes, input ${len} bytes, output ${outLen} bytes`);
      }
    }
  }
});
