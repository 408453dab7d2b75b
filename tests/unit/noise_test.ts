import assert from "node:assert/strict";
import { dh, dhGenerate, dhPublic, isZero } from "../../lib/crypto.ts";
import {
  INITIATION_EPHEMERAL,
  INITIATIONS_PER_SECOND,
  MESSAGE_INITIATION_LEN,
  MESSAGE_RESPONSE_LEN,
  readU32,
  RESPONSE_EPHEMERAL,
} from "../../lib/messages.ts";
import {
  beginSession,
  consumeInitiation,
  consumeResponse,
  createInitiation,
  createResponse,
  Handshake,
  HandshakeState,
  type StaticIdentity,
} from "../../lib/noise.ts";
import { seededRng } from "./_harness.ts";

const rng = seededRng(1234);
const WALL = 1_700_000_000_000;

function identity(): StaticIdentity {
  const privateKey = dhGenerate(rng);
  return { privateKey, publicKey: dhPublic(privateKey) };
}

/** Initiator I and responder R, each with a Handshake for the other. */
function setup(psk?: Uint8Array) {
  const i = identity(), r = identity();
  const hsI = new Handshake(r.publicKey);
  const hsR = new Handshake(i.publicKey);
  hsI.precompute(i);
  hsR.precompute(r);
  if (psk) hsI.presharedKey = psk.slice(), hsR.presharedKey = psk.slice();
  return { i, r, hsI, hsR };
}

/** A point of order 8 on Curve25519 (and the all-zero point): DH with them yields all zeros. */
const LOW_ORDER = [
  new Uint8Array(32),
  Uint8Array.from([1, ...new Array(31).fill(0)]),
  Uint8Array.from(
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800".match(/../g)!.map((h) =>
      parseInt(h, 16)
    ),
  ),
];

function fullHandshake(psk?: Uint8Array) {
  const s = setup(psk);
  const init = createInitiation(s.hsI, s.i, 0x11111111, WALL, rng)!;
  assert.equal(init.length, MESSAGE_INITIATION_LEN);
  assert.equal(s.hsI.state, HandshakeState.CreatedInitiation);
  const got = consumeInitiation(init, s.r, (pub) => (isSame(pub, s.i.publicKey) ? s.hsR : undefined), 0);
  assert.equal(got, s.hsR);
  assert.equal(s.hsR.remoteIndex, 0x11111111);
  const resp = createResponse(s.hsR, 0x22222222, rng)!;
  assert.equal(resp.length, MESSAGE_RESPONSE_LEN);
  assert.equal(readU32(resp, 8), 0x11111111, "receiver index is the initiator's sender index");
  const kpR = beginSession(s.hsR, 5)!;
  assert.equal(consumeResponse(resp, s.i, (idx) => (idx === 0x11111111 ? s.hsI : undefined)), s.hsI);
  const kpI = beginSession(s.hsI, 6)!;
  return { ...s, kpI, kpR, init, resp };
}

function isSame(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, k) => v === b[k]);
}

Deno.test("both sides derive mirrored transport keys, with and without a preshared key", () => {
  const plain = fullHandshake();
  const withPsk = fullHandshake(new Uint8Array(32).fill(9));
  for (const { kpI, kpR } of [plain, withPsk]) {
    assert.deepEqual(kpI.sendKey, kpR.receiveKey);
    assert.deepEqual(kpI.receiveKey, kpR.sendKey);
    assert.notDeepEqual(kpI.sendKey, kpI.receiveKey);
    assert.equal(kpI.isInitiator, true);
    assert.equal(kpR.isInitiator, false);
    assert.equal(kpI.localIndex, kpR.remoteIndex);
    assert.equal(kpI.remoteIndex, kpR.localIndex);
    assert.equal(kpI.birth, 6);
  }
  assert.notDeepEqual(plain.kpI.sendKey, withPsk.kpI.sendKey);
});

Deno.test("beginSession wipes the handshake secrets and refuses to run twice", () => {
  const { hsI, hsR } = fullHandshake();
  for (const hs of [hsI, hsR]) {
    assert.equal(hs.state, HandshakeState.Zeroed);
    assert.equal(hs.ephemeralPrivate, null);
    assert.ok(isZero(hs.chainingKey) && isZero(hs.hash));
    assert.equal(beginSession(hs, 0), null);
  }
});

Deno.test("a preshared key on one side only fails the response", () => {
  const s = setup();
  s.hsR.presharedKey = new Uint8Array(32).fill(3);
  const init = createInitiation(s.hsI, s.i, 1, WALL, rng)!;
  assert.ok(consumeInitiation(init, s.r, () => s.hsR, 0), "the initiation does not involve the PSK");
  const resp = createResponse(s.hsR, 2, rng)!;
  assert.equal(consumeResponse(resp, s.i, () => s.hsI), null);
  assert.equal(s.hsI.state, HandshakeState.CreatedInitiation, "a failed response leaves the state alone");
});

Deno.test("an initiation for another responder, or from an unknown peer, fails", () => {
  const s = setup();
  const init = createInitiation(s.hsI, s.i, 1, WALL, rng)!;
  const other = identity();
  const hsO = new Handshake(s.i.publicKey);
  hsO.precompute(other);
  assert.equal(consumeInitiation(init, other, () => hsO, 0), null, "wrong responder key");
  assert.equal(consumeInitiation(init, s.r, () => undefined, 0), null, "unknown initiator");
  // A handshake for a different static key than the one inside the initiation cannot decrypt the timestamp.
  const hsWrong = new Handshake(other.publicKey);
  hsWrong.precompute(s.r);
  assert.equal(consumeInitiation(init, s.r, () => hsWrong, 0), null);
  assert.equal(s.hsR.state, HandshakeState.Zeroed);
  assert.ok(consumeInitiation(init, s.r, () => s.hsR, 0), "the right responder accepts it");
});

Deno.test("timestamps: a replay or an older initiation fails; flood limit per peer", () => {
  const s = setup();
  // Timestamps are rounded down to 2^24 ns (about 16.8 ms), as the kernel does: space them 20 ms apart.
  const older = createInitiation(s.hsI, s.i, 1, WALL - 20, rng)!;
  const first = createInitiation(s.hsI, s.i, 2, WALL, rng)!;
  const sameGrain = createInitiation(s.hsI, s.i, 5, WALL + 1, rng)!;
  const later = createInitiation(s.hsI, s.i, 3, WALL + 20, rng)!;
  const latest = createInitiation(s.hsI, s.i, 4, WALL + 40, rng)!;
  const find = () => s.hsR;
  assert.ok(consumeInitiation(first, s.r, find, 1000));
  assert.equal(consumeInitiation(first, s.r, find, 2000), null, "replay");
  assert.equal(consumeInitiation(older, s.r, find, 2000), null, "older");
  assert.equal(consumeInitiation(sameGrain, s.r, find, 2000), null, "the same rounded timestamp");
  assert.equal(consumeInitiation(later, s.r, find, 1000 + 1000 / INITIATIONS_PER_SECOND - 1), null, "flood");
  assert.ok(consumeInitiation(later, s.r, find, 1000 + 1000 / INITIATIONS_PER_SECOND), "after the interval");
  assert.ok(consumeInitiation(latest, s.r, find, 5000));
  assert.equal(s.hsR.remoteIndex, 4);
});

Deno.test("low-order ephemeral keys are refused on both messages", () => {
  for (const lo of LOW_ORDER) {
    assert.equal(dh(dhGenerate(rng), lo), null, "DH with a low-order point is refused");
    const s = setup();
    const init = createInitiation(s.hsI, s.i, 1, WALL, rng)!;
    const bad = init.slice();
    bad.set(lo, INITIATION_EPHEMERAL);
    assert.equal(consumeInitiation(bad, s.r, () => s.hsR, 0), null);
    assert.ok(consumeInitiation(init, s.r, () => s.hsR, 0));
    const resp = createResponse(s.hsR, 2, rng)!;
    const badResp = resp.slice();
    badResp.set(lo, RESPONSE_EPHEMERAL);
    assert.equal(consumeResponse(badResp, s.i, () => s.hsI), null);
    assert.ok(consumeResponse(resp, s.i, () => s.hsI));
  }
});

Deno.test("a low-order peer static key yields no handshake at all", () => {
  const i = identity();
  for (const lo of LOW_ORDER) {
    const hs = new Handshake(lo);
    hs.precompute(i);
    assert.equal(hs.precomputedStaticStatic, null);
    assert.equal(createInitiation(hs, i, 1, WALL, rng), null);
  }
});

Deno.test("out-of-order calls fail: response without initiation, response to the wrong index", () => {
  const s = setup();
  assert.equal(createResponse(s.hsR, 1, rng), null);
  const init = createInitiation(s.hsI, s.i, 7, WALL, rng)!;
  consumeInitiation(init, s.r, () => s.hsR, 0);
  const resp = createResponse(s.hsR, 8, rng)!;
  assert.equal(createResponse(s.hsR, 9, rng), null, "one response per initiation");
  const wrong = resp.slice();
  wrong[8]! ^= 1; // receiver index 7 -> 6
  assert.equal(consumeResponse(wrong, s.i, () => s.hsI), null, "the index must match the handshake's");
  assert.ok(consumeResponse(resp, s.i, () => s.hsI));
  assert.equal(consumeResponse(resp, s.i, () => s.hsI), null, "consumed once");
});

Deno.test("every initiation is different (fresh ephemeral), even at the same time", () => {
  const s = setup();
  const a = createInitiation(s.hsI, s.i, 1, WALL, rng)!;
  const b = createInitiation(s.hsI, s.i, 1, WALL, rng)!;
  assert.notDeepEqual(a.subarray(8, 40), b.subarray(8, 40));
});
