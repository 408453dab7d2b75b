import assert from "node:assert/strict";
import { Verdict } from "../../lib/device.ts";
import {
  KEEPALIVE_TIMEOUT,
  KEY_ZEROING_TIME,
  MAX_TIMER_HANDSHAKES,
  REJECT_AFTER_TIME,
  REKEY_AFTER_TIME,
  REKEY_ATTEMPT_TIME,
  REKEY_TIMEOUT,
  REKEY_TIMEOUT_JITTER_MAX,
} from "../../lib/messages.ts";
import { type TimerActions, TimerQueue, Timers } from "../../lib/timers.ts";
import {
  connect,
  deliver,
  drain,
  elapse,
  ofType,
  packetAB,
  packetBA,
  pair,
  peerOf,
  pump,
  seededRng,
  send,
} from "./_harness.ts";

const JITTER = REKEY_TIMEOUT_JITTER_MAX;

/** A pair with a session (A initiated) and every timer the handshake armed run out. */
function settled() {
  const s = pair();
  connect(s.a, s.b, s.clock);
  elapse(s.clock, s.a, s.b, 2 * (KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + JITTER));
  assert.ok(peerOf(s.a, s.b).current && peerOf(s.b, s.a).current);
  return s;
}

Deno.test("the settled pair is idle: only key zeroing is pending", () => {
  const { a, b, clock } = settled();
  const za = peerOf(a, b).timers.zeroKeyMaterial;
  assert.equal(a.device.nextDeadline(), za);
  assert.ok(za > clock.now() + REJECT_AFTER_TIME);
});

// ---------------------------------------------------------------- handshake retransmission

Deno.test("a lost response: the initiation is retransmitted after REKEY_TIMEOUT plus jitter", () => {
  const { a, b, clock } = pair();
  send(a, packetAB(1));
  const [first] = drain(a);
  assert.equal(first![0], 1);
  clock.advance(REKEY_TIMEOUT - 1);
  a.device.tick();
  assert.equal(a.device.outbox.length, 0, "not before REKEY_TIMEOUT");
  const deadline = a.device.nextDeadline();
  assert.ok(deadline >= clock.now() + 1 && deadline < clock.now() + 1 + JITTER, "jitter is below 333 ms");
  clock.advance(1 + JITTER);
  a.device.tick();
  const [retry] = drain(a);
  assert.equal(retry![0], 1);
  assert.notDeepEqual(retry!.subarray(4, 40), first!.subarray(4, 40), "new sender index and ephemeral");
  // The retry completes the handshake and the staged packet arrives.
  deliver(b, retry!, a.endpoint);
  pump(a, b);
  assert.deepEqual(b.delivered, [packetAB(1)]);
  // A late response to the first initiation is useless now.
  assert.equal(
    deliver(b, first!, a.endpoint),
    Verdict.DropHandshake,
    "the first initiation's timestamp is older",
  );
});

Deno.test("giving up after REKEY_ATTEMPT_TIME: MAX_TIMER_HANDSHAKES + 2 initiations, staged packets dropped", () => {
  const { a, b, clock } = pair();
  const start = clock.now();
  send(a, packetAB(1));
  const times: number[] = [];
  for (let i = 0; i < 1000 && clock.now() < start + 3 * REKEY_ATTEMPT_TIME; i++) {
    for (const d of drain(a)) if (d[0] === 1) times.push(clock.now() - start);
    const next = a.device.nextDeadline();
    if (next === Infinity || next > start + 3 * REKEY_ATTEMPT_TIME) break;
    clock.t = next;
    a.device.tick();
  }
  // The kernel: attempts are counted on each retransmission; when the count exceeds MAX_TIMER_HANDSHAKES the
  // peer gives up. That is the first initiation plus MAX_TIMER_HANDSHAKES + 1 retries.
  assert.equal(times.length, MAX_TIMER_HANDSHAKES + 2);
  for (let i = 1; i < times.length; i++) {
    const gap = times[i]! - times[i - 1]!;
    assert.ok(gap >= REKEY_TIMEOUT && gap < REKEY_TIMEOUT + JITTER, `gap ${gap}`);
  }
  assert.ok(times.at(-1)! >= REKEY_ATTEMPT_TIME);
  assert.equal(peerOf(a, b).staged.length, 0, "staged packets are dropped");
  // Only the (armed-on-give-up) key zeroing timer is left, and it sends nothing.
  clock.t = a.device.nextDeadline();
  a.device.tick();
  assert.equal(a.device.outbox.length, 0);
  assert.equal(a.device.nextDeadline(), Infinity);
  // A later session does not deliver the packet that was given up on.
  send(a, packetAB(2));
  pump(a, b);
  assert.deepEqual(b.delivered, [packetAB(2)]);
});

Deno.test("new data restarts the attempts: a busy sender keeps trying", () => {
  const { a, clock } = pair();
  let inits = 0;
  for (let t = 0; t < 2 * REKEY_ATTEMPT_TIME; t += 1000) {
    send(a, packetAB(t & 0xff));
    clock.advance(1000);
    a.device.tick();
    inits += ofType(drain(a), 1).length;
  }
  assert.ok(inits > MAX_TIMER_HANDSHAKES + 2, `${inits} initiations`);
});

// ---------------------------------------------------------------- rekey and reject

Deno.test("rekey after REKEY_AFTER_TIME when the initiator sends; never by the responder", () => {
  const { a, b, clock } = pair();
  connect(a, b, clock);
  elapse(clock, a, b, REKEY_AFTER_TIME - 1);
  const oldA = peerOf(a, b).current;
  assert.equal(send(a, packetAB(1)).verdict, Verdict.Send);
  assert.equal(a.device.outbox.length, 0, "not yet");
  clock.advance(1);
  assert.equal(send(b, packetBA(2)).verdict, Verdict.Send);
  assert.equal(b.device.outbox.length, 0, "the responder does not rekey by time");
  const r = send(a, packetAB(3));
  assert.equal(r.verdict, Verdict.Send, "the old session still carries this packet");
  assert.equal(ofType(drain(a), 1).length, 1, "and a new handshake starts");
  clock.advance(REKEY_TIMEOUT);
  a.device.sendInitiation(peerOf(a, b), false); // the rekey handshake, again (the first was discarded)
  pump(a, b);
  assert.notEqual(peerOf(a, b).current, oldA);
  assert.equal(peerOf(a, b).previous, oldA);
});

Deno.test("an initiator that only receives rekeys once, near REJECT_AFTER_TIME", () => {
  const { a, b, clock } = pair();
  connect(a, b, clock);
  elapse(clock, a, b, REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT - 1);
  deliver(a, send(b, packetBA(1)).datagram!, b.endpoint);
  assert.equal(ofType(drain(a), 1).length, 0);
  clock.advance(1);
  deliver(a, send(b, packetBA(2)).datagram!, b.endpoint);
  assert.equal(ofType(drain(a), 1).length, 1, "the last-minute handshake");
  clock.advance(REKEY_TIMEOUT);
  deliver(a, send(b, packetBA(3)).datagram!, b.endpoint);
  assert.equal(ofType(drain(a), 1).length, 0, "only once");
});

Deno.test("after REJECT_AFTER_TIME: the sender re-stages and initiates, the receiver drops as expired", () => {
  const { a, b, clock } = pair();
  connect(a, b, clock);
  const late = send(a, packetAB(1)).datagram!;
  elapse(clock, a, b, REJECT_AFTER_TIME - 1);
  assert.equal(send(b, packetBA(2)).verdict, Verdict.Send, "still valid just before");
  drain(b);
  clock.advance(1);
  assert.equal(deliver(b, late, a.endpoint), Verdict.DropExpired);
  assert.deepEqual(b.delivered, []);
  const p = packetAB(3);
  assert.equal(send(a, p).verdict, Verdict.Queued);
  assert.equal(ofType(a.device.outbox.map((d) => d.data), 1).length, 1);
  const q = packetBA(4);
  assert.equal(send(b, q).verdict, Verdict.Queued);
  assert.equal(ofType(b.device.outbox.map((d) => d.data), 1).length, 1);
  // Both initiated at once; the retransmission timers sort it out.
  elapse(clock, a, b, 2 * (REKEY_TIMEOUT + JITTER));
  assert.deepEqual(b.delivered, [p]);
  assert.deepEqual(a.delivered.slice(-1), [q]);
});

// ---------------------------------------------------------------- keepalives

Deno.test("passive keepalive: KEEPALIVE_TIMEOUT after receiving data with nothing sent back", () => {
  const { a, b, clock } = settled();
  assert.equal(deliver(b, send(a, packetAB(1)).datagram!, a.endpoint), Verdict.Deliver);
  clock.advance(KEEPALIVE_TIMEOUT - 1);
  b.device.tick();
  assert.equal(b.device.outbox.length, 0);
  clock.advance(1);
  b.device.tick();
  const [ka] = drain(b);
  assert.equal(ka!.length, 32);
  assert.equal(ka![0], 4);
  assert.equal(deliver(a, ka!, b.endpoint), Verdict.Handled, "a keepalive is consumed, not delivered");
  assert.deepEqual(a.delivered, []);
  clock.advance(KEEPALIVE_TIMEOUT * 3);
  b.device.tick();
  assert.equal(b.device.outbox.length, 0, "one keepalive only");
});

Deno.test("passive keepalive is not sent when B answered with data", () => {
  const { a, b, clock } = settled();
  deliver(b, send(a, packetAB(1)).datagram!, a.endpoint);
  clock.advance(1000);
  deliver(a, send(b, packetBA(1)).datagram!, b.endpoint);
  clock.advance(KEEPALIVE_TIMEOUT);
  b.device.tick();
  assert.equal(b.device.outbox.length, 0);
});

Deno.test("new-handshake timer: data sent and nothing heard for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT", () => {
  const { a, b, clock } = settled();
  send(a, packetAB(1));
  clock.advance(KEEPALIVE_TIMEOUT + REKEY_TIMEOUT - 1);
  a.device.tick();
  assert.equal(a.device.outbox.length, 0);
  clock.advance(1 + JITTER);
  a.device.tick();
  const out = drain(a);
  assert.equal(out.length, 1);
  assert.equal(out[0]![0], 1, "an initiation");
  assert.ok(peerOf(a, b).current, "while the old session is kept");
});

Deno.test("new-handshake timer is disarmed by any authenticated reply (a keepalive)", () => {
  const { a, b, clock } = settled();
  deliver(b, send(a, packetAB(1)).datagram!, a.endpoint);
  let initiations = 0;
  elapse(clock, a, b, KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + JITTER + 1, (_from, d) => {
    if (d[0] === 1) initiations++;
    return d;
  });
  // B's passive keepalive reached A in time, so no handshake was started.
  assert.equal(initiations, 0);
  assert.equal(peerOf(a, b).timers.newHandshake, Infinity);
});

Deno.test("persistent keepalive: one at once when turned on, then every interval", () => {
  const { a, b, clock } = settled();
  const on = (secs: number) =>
    a.device.apply({
      replacePeers: false,
      peers: [{
        publicKey: b.publicKey,
        remove: false,
        updateOnly: true,
        persistentKeepalive: secs,
        replaceAllowedIps: false,
        allowedIps: [],
      }],
    });
  on(25);
  const now = drain(a);
  assert.equal(now.length, 1);
  assert.equal(now[0]!.length, 32, "a keepalive right away");
  const sent: number[] = [];
  const start = clock.now();
  // (75 s, so that the session stays younger than REKEY_AFTER_TIME and no rekey handshake mixes in.)
  elapse(clock, a, b, 75_000, (from, d) => {
    if (from === a && d.length === 32) sent.push(clock.now() - start);
    return d;
  });
  assert.deepEqual(sent, [25_000, 50_000, 75_000]);
  on(0);
  assert.equal(a.device.outbox.length, 0, "turning it off sends nothing");
  sent.length = 0;
  drain(b);
  elapse(clock, a, b, 100_000, (from, d) => {
    if (from === a && d.length === 32) sent.push(clock.now());
    return d;
  });
  assert.deepEqual(sent, [], "and none after");
});

Deno.test("persistent keepalive is postponed by any authenticated traffic, sent or received", () => {
  const { a, b, clock } = settled();
  a.device.apply({
    replacePeers: false,
    peers: [{
      publicKey: b.publicKey,
      remove: false,
      updateOnly: true,
      persistentKeepalive: 25,
      replaceAllowedIps: false,
      allowedIps: [],
    }],
  });
  pump(a, b);
  const t0 = clock.now();
  clock.advance(10_000);
  deliver(b, send(a, packetAB(1)).datagram!, a.endpoint); // A sends data at t0 + 10 s
  const sent: number[] = [];
  elapse(clock, a, b, 40_000, (from, d) => {
    if (from === a && d.length === 32) sent.push(clock.now() - t0);
    return d;
  });
  // B's passive keepalive reached A at t0 + 20 s; 25 s after that, A's persistent keepalive.
  assert.deepEqual(sent, [45_000]);
});

Deno.test("persistent keepalive without a session starts a handshake", () => {
  const { a, b } = pair();
  a.device.apply({
    replacePeers: false,
    peers: [{
      publicKey: b.publicKey,
      remove: false,
      updateOnly: true,
      persistentKeepalive: 5,
      replaceAllowedIps: false,
      allowedIps: [],
    }],
  });
  assert.equal(ofType(a.device.outbox.map((d) => d.data), 1).length, 1);
  pump(a, b);
  assert.ok(peerOf(a, b).current);
  assert.deepEqual(b.delivered, [], "the keepalive is not delivered");
});

// ---------------------------------------------------------------- key zeroing

Deno.test("key zeroing: after KEY_ZEROING_TIME without a handshake every key is gone", () => {
  const { a, b, clock } = pair();
  connect(a, b, clock);
  const kps = [...peerOf(a, b).keypairs(), ...peerOf(b, a).keypairs()];
  assert.equal(kps.length, 2);
  elapse(clock, a, b, KEY_ZEROING_TIME - 1);
  assert.ok(peerOf(a, b).current, "still there just before");
  elapse(clock, a, b, 1);
  for (const [x, y] of [[a, b], [b, a]] as const) {
    const p = peerOf(x, y);
    assert.equal(p.current, null);
    assert.equal(p.previous, null);
    assert.equal(p.next, null);
  }
  for (const kp of kps) {
    assert.ok(kp.sendKey.every((v) => v === 0) && kp.receiveKey.every((v) => v === 0), "keys are zeroed");
  }
  assert.equal(a.device.nextDeadline(), Infinity);
  assert.equal(b.device.nextDeadline(), Infinity);
  // A new session can still be made.
  clock.advance(REKEY_TIMEOUT);
  send(a, packetAB(2));
  pump(a, b);
  assert.deepEqual(b.delivered, [packetAB(2)]);
});

// ---------------------------------------------------------------- the Timers class alone

class Recorder implements TimerActions<string> {
  log: string[] = [];
  sendInitiation(p: string, isRetry: boolean) {
    this.log.push(`${isRetry ? "retransmit" : "newHandshake"} ${p}`);
  }
  sendKeepalive(p: string) {
    this.log.push("keepalive " + p);
  }
  purgeStaged(p: string) {
    this.log.push("purge " + p);
  }
  zeroKeyMaterial(p: string) {
    this.log.push("zero " + p);
  }
  jitter() {
    return 0;
  }
}

Deno.test("Timers: deadlines, one-shot arming, and the second passive keepalive", () => {
  const t = new Timers("p");
  const r = new Recorder();
  assert.equal(t.next(), Infinity);
  t.dataSent(0, 100);
  t.dataSent(5000, 100);
  assert.equal(t.newHandshake, KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + 100, "armed by the first data only");
  t.anyAuthenticatedPacketReceived();
  assert.equal(t.newHandshake, Infinity);
  t.dataReceived(0);
  t.dataReceived(3000);
  assert.equal(t.sendKeepalive, KEEPALIVE_TIMEOUT);
  t.expire(KEEPALIVE_TIMEOUT - 1, r);
  assert.deepEqual(r.log, []);
  t.expire(KEEPALIVE_TIMEOUT, r);
  assert.deepEqual(r.log, ["keepalive p"]);
  assert.equal(t.sendKeepalive, 2 * KEEPALIVE_TIMEOUT, "data arrived meanwhile: another keepalive later");
  t.anyAuthenticatedPacketSent();
  assert.equal(t.sendKeepalive, Infinity);

  t.handshakeInitiated(100, 7);
  assert.equal(t.retransmitHandshake, 100 + REKEY_TIMEOUT + 7);
  t.handshakeAttempts = 3;
  t.sentLastMinuteHandshake = true;
  t.handshakeComplete(1234);
  assert.equal(t.lastHandshakeWall, 1234);
  assert.equal(t.retransmitHandshake, Infinity);
  assert.equal(t.handshakeAttempts, 0);
  assert.equal(t.sentLastMinuteHandshake, false);

  t.sessionDerived(10);
  assert.equal(t.zeroKeyMaterial, 10 + KEY_ZEROING_TIME);
  t.anyAuthenticatedPacketTraversal(10);
  assert.equal(t.persistentKeepalive, Infinity, "off when the interval is 0");
  t.persistentKeepaliveInterval = 25_000;
  t.anyAuthenticatedPacketTraversal(10);
  assert.equal(t.persistentKeepalive, 25_010);
  assert.equal(t.next(), 25_010);
  r.log = [];
  t.handshakeInitiated(0, 0);
  t.dataSent(0, 0);
  t.expire(10 + KEY_ZEROING_TIME, r);
  assert.deepEqual(r.log, ["retransmit p", "newHandshake p", "zero p", "keepalive p"]);
  assert.equal(t.next(), Infinity, "each timer is one-shot");
  t.handshakeInitiated(0, 0);
  t.stop();
  assert.equal(t.next(), Infinity);
});

// ---------------------------------------------------------------- the queue of deadlines

/** Applies one random timer hook to `t` (the same choice, given the same `op`, for any Timers). */
function randomHook<P>(t: Timers<P>, op: number, now: number, arg: number): void {
  switch (op) {
    case 0:
      return t.dataSent(now, arg % REKEY_TIMEOUT_JITTER_MAX);
    case 1:
      return t.dataReceived(now);
    case 2:
      return t.anyAuthenticatedPacketSent();
    case 3:
      return t.anyAuthenticatedPacketReceived();
    case 4:
      return t.handshakeInitiated(now, arg % REKEY_TIMEOUT_JITTER_MAX);
    case 5:
      return t.handshakeComplete(now);
    case 6:
      return t.sessionDerived(now);
    case 7:
      t.persistentKeepaliveInterval = (arg % 3) * 7_000;
      return t.anyAuthenticatedPacketTraversal(now);
    default:
      return t.stop();
  }
}

Deno.test("TimerQueue: next deadline and expiries as a scan of every peer finds them, over random operations", () => {
  const rng = seededRng(77);
  const word = () => {
    const b = new Uint8Array(4);
    rng(b);
    return new DataView(b.buffer).getUint32(0);
  };
  const N = 300;
  const queue = new TimerQueue<string>();
  const queued = Array.from({ length: N }, (_, i) => new Timers(`${i}`, queue));
  const naive = Array.from({ length: N }, (_, i) => new Timers(`${i}`));
  const fromQueue = new Recorder(), fromScan = new Recorder();
  let now = 0;
  for (let round = 0; round < 3000; round++) {
    // A few hooks on random peers, the same on both sides; then time passes and both fire what expired.
    for (let k = word() % 8; k > 0; k--) {
      const i = word() % N, op = word() % 9, arg = word();
      randomHook(queued[i]!, op, now, arg);
      randomHook(naive[i]!, op, now, arg);
    }
    const scan = Math.min(...naive.map((t) => t.next()));
    assert.equal(queue.next(), scan, `round ${round}: the next deadline`);
    now += word() % 4 === 0 && scan !== Infinity ? scan - now : word() % 3000;
    queue.expire(now, fromQueue);
    for (const t of naive) if (t.next() <= now) t.expire(now, fromScan);
    assert.deepEqual(fromQueue.log.sort(), fromScan.log.sort(), `round ${round}: the same timers fired`);
    fromQueue.log = [];
    fromScan.log = [];
    for (let i = 0; i < N; i++) assert.equal(queued[i]!.next(), naive[i]!.next());
  }
  for (const t of queued) t.stop();
  assert.equal(queue.size, 0, "stopped timers leave the queue");
  assert.equal(queue.next(), Infinity);
});

Deno.test("TimerQueue: a postponed deadline is not fired early, and an earlier one is not missed", () => {
  const queue = new TimerQueue<string>();
  const r = new Recorder();
  const a = new Timers("a", queue), b = new Timers("b", queue);
  a.persistentKeepaliveInterval = 25_000;
  a.anyAuthenticatedPacketTraversal(0); // due at 25 s
  b.dataReceived(0); // keepalive due at 10 s
  assert.equal(queue.next(), KEEPALIVE_TIMEOUT);
  b.anyAuthenticatedPacketSent(); // disarmed: the queue's key for b is now early
  a.anyAuthenticatedPacketTraversal(20_000); // postponed to 45 s
  assert.equal(queue.next(), 45_000, "the true earliest deadline");
  queue.expire(44_999, r);
  assert.deepEqual(r.log, []);
  b.handshakeInitiated(30_000, 0); // earlier than a's: moves up
  assert.equal(queue.next(), 30_000 + REKEY_TIMEOUT);
  queue.expire(45_000, r);
  assert.deepEqual(r.log.sort(), ["keepalive a", "retransmit b"]);
  assert.equal(queue.next(), Infinity, "both one-shot; a's persistent keepalive is re-armed by what is sent");
});

Deno.test("a device with 300 peers: each one's persistent keepalive fires at its own deadline", () => {
  const { a, clock } = pair();
  const N = 300;
  const start = clock.now();
  const peers = [];
  for (let i = 0; i < N; i++) {
    const key = new Uint8Array(32);
    new DataView(key.buffer).setUint32(0, i + 1);
    key[31] = 0x55;
    const p = a.device.addPeer(key)!;
    p.endpoint = a.endpoint;
    p.persistentKeepalive = 1 + (i % 60); // seconds
    p.timers.anyAuthenticatedPacketTraversal(start);
    peers.push(p);
  }
  // With no session, a keepalive starts a handshake: the time of each peer's first initiation is when its
  // persistent keepalive fired.
  const first = new Map<number, number>();
  for (let rounds = 0; first.size < N && rounds < 10_000; rounds++) {
    const next = a.device.nextDeadline();
    if (next > start + 61_000) break;
    clock.t = next;
    a.device.tick();
    drain(a);
    peers.forEach((p, i) => {
      if (!first.has(i) && p.lastSentHandshake !== -Infinity) first.set(i, p.lastSentHandshake - start);
    });
  }
  assert.equal(first.size, N, "every peer's keepalive fired");
  for (const [i, at] of first) assert.equal(at, (1 + (i % 60)) * 1000, `peer ${i}`);
});
