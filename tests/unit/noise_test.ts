import assert from "node:assert/strict";
import { dh, dhGenerate, dhPublic, isZero, nobleX25519, type X25519 } from "../../lib/crypto.ts";
import {
  INITIATION_EPHEMERAL,
  INITIATION_STATIC,
  INITIATIONS_PER_SECOND,
  MESSAGE_INITIATION_LEN,
  MESSAGE_RESPONSE_LEN,
  readU32,
  RESPONSE_EMPTY,
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
import { connect, pair, seededRng } from "./_harness.ts";

const rng = seededRng(1234);
const WALL = 1_700_000_000_000;

/** noble's X25519, recording the shared secrets it hands out while `secrets` is set (see recordingDh). */
const recorder: X25519 & { secrets: Uint8Array[] | null } = {
  name: "recording",
  secrets: null,
  sharedSecret(priv, pub) {
    const out = nobleX25519.sharedSecret(priv, pub);
    if (out) this.secrets?.push(out);
    return out;
  },
  publicKey: nobleX25519.publicKey,
};

function identity(): StaticIdentity {
  const privateKey = dhGenerate(rng);
  return { privateKey, publicKey: dhPublic(privateKey), x25519: recorder };
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

// ---------------------------------------------------------------- key material is wiped

Deno.test("chaining keys are wiped once used: when the next message replaces them, and after the session keys", () => {
  const s = setup();
  const init = createInitiation(s.hsI, s.i, 1, WALL, rng)!;
  const initiatorAfterInit = s.hsI.chainingKey;
  assert.ok(consumeInitiation(init, s.r, () => s.hsR, 0));
  const responderAfterInit = s.hsR.chainingKey;
  const resp = createResponse(s.hsR, 2, rng)!;
  assert.ok(isZero(responderAfterInit), "the responder's, replaced by its response");
  const responderAfterResp = s.hsR.chainingKey;
  assert.ok(beginSession(s.hsR, 0));
  assert.ok(isZero(responderAfterResp), "the responder's, used for the session keys");
  assert.ok(consumeResponse(resp, s.i, () => s.hsI));
  assert.ok(isZero(initiatorAfterInit), "the initiator's, replaced by the response");
  const initiatorAfterResp = s.hsI.chainingKey;
  assert.ok(beginSession(s.hsI, 0));
  assert.ok(isZero(initiatorAfterResp), "the initiator's, used for the session keys");
});

/** Runs `fn` with the identities' X25519 recording every shared secret it hands out. */
function recordingDh<T>(fn: (secrets: Uint8Array[]) => T): T {
  const secrets: Uint8Array[] = [];
  recorder.secrets = secrets;
  try {
    return fn(secrets);
  } finally {
    recorder.secrets = null;
  }
}

Deno.test("failed messages wipe the DH results they made and leave the handshake as it was", () => {
  const s = setup();
  const init = createInitiation(s.hsI, s.i, 1, WALL, rng)!;
  const badStatic = init.slice();
  badStatic[INITIATION_STATIC]! ^= 1;
  const cases: [string, () => Handshake | null][] = [
    ["the static key does not decrypt", () => consumeInitiation(badStatic, s.r, () => s.hsR, 0)],
    ["unknown peer", () => consumeInitiation(init, s.r, () => undefined, 0)],
  ];
  for (const [why, run] of cases) {
    recordingDh((secrets) => {
      assert.equal(run(), null, why);
      assert.equal(secrets.length, 1, `${why}: es was computed`);
      assert.ok(secrets.every(isZero), `${why}: es is wiped`);
    });
    assert.equal(s.hsR.state, HandshakeState.Zeroed, why);
  }
  assert.ok(consumeInitiation(init, s.r, () => s.hsR, 0));
  const kept = s.hsR.chainingKey.slice();
  recordingDh((secrets) => {
    assert.equal(consumeInitiation(init, s.r, () => s.hsR, 1000), null, "a replay");
    assert.ok(secrets.length === 1 && secrets.every(isZero), "a replay: es is wiped");
  });
  assert.deepEqual(s.hsR.chainingKey, kept, "the replay did not touch the consumed initiation");

  // A response that fails to authenticate (anyone knowing our public key can give it a valid mac1) must not
  // cost the initiator its handshake: the real response still completes it.
  const resp = createResponse(s.hsR, 2, rng)!;
  const forged = resp.slice();
  forged[RESPONSE_EMPTY]! ^= 1;
  const initiatorKey = s.hsI.chainingKey.slice();
  recordingDh((secrets) => {
    assert.equal(consumeResponse(forged, s.i, () => s.hsI), null);
    assert.ok(secrets.length === 2 && secrets.every(isZero), "ee and se are wiped");
  });
  assert.deepEqual(s.hsI.chainingKey, initiatorKey);
  assert.equal(s.hsI.state, HandshakeState.CreatedInitiation);
  assert.ok(consumeResponse(resp, s.i, () => s.hsI));
});

Deno.test("a replaced preshared key is wiped; wipe() clears the preshared key and the static-static DH", () => {
  const s = setup();
  const caller = new Uint8Array(32).fill(7);
  s.hsI.setPresharedKey(caller);
  const first = s.hsI.presharedKey;
  assert.notEqual(first, caller, "the handshake keeps its own copy");
  s.hsI.setPresharedKey(new Uint8Array(32).fill(8));
  assert.ok(isZero(first), "the replaced one is wiped");
  assert.ok(caller.every((b) => b === 7), "the caller's buffer is the caller's");
  const psk = s.hsI.presharedKey, ss = s.hsI.precomputedStaticStatic!;
  createInitiation(s.hsI, s.i, 1, WALL, rng);
  const eph = s.hsI.ephemeralPrivate!;
  s.hsI.wipe();
  assert.ok(isZero(psk) && isZero(ss) && isZero(eph));
  assert.equal(s.hsI.precomputedStaticStatic, null);
  assert.equal(createInitiation(s.hsI, s.i, 2, WALL, rng), null, "nothing left to make a handshake with");
});

Deno.test("the X25519 given to a Device computes every DH and public key of its handshakes", () => {
  let shared = 0, pub = 0;
  const counting: X25519 = {
    name: "counting",
    sharedSecret: (k, p) => (shared++, nobleX25519.sharedSecret(k, p)),
    publicKey: (k) => (pub++, nobleX25519.publicKey(k)),
  };
  const s = pair({ x25519: counting });
  assert.equal(s.a.device.x25519, counting);
  connect(s.a, s.b, s.clock);
  // Static-static (precomputed) on each side; es by each; ee and se by each. Static and ephemeral public keys.
  assert.equal(shared, 2 + 2 + 4);
  assert.equal(pub, 2 + 2);
  // One whose DH always fails: no handshake completes, so nothing went around it.
  const refusing: X25519 = { name: "refusing", sharedSecret: () => null, publicKey: nobleX25519.publicKey };
  const t = pair({ x25519: refusing });
  assert.throws(() => connect(t.a, t.b, t.clock), /handshake did not complete/);
  assert.equal(pair().a.device.x25519, nobleX25519, "noble's by default");
});
