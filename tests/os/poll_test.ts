import assert from "node:assert/strict";
import { POLLIN, PollSet, Waker } from "../../ffi/poll.ts";
import { nonblockingCalls, runtimeName } from "../../ffi/runtime.ts";

// eventfd needs no privilege: these tests run for any user.

Deno.test("sync poll times out with 0 and reports a woken eventfd", () => {
  const waker = new Waker();
  try {
    const set = new PollSet(2);
    const slot = set.add(waker.fd, POLLIN);
    assert.equal(set.poll(0), 0);
    waker.wake();
    waker.wake();
    assert.equal(set.poll(0), 1);
    assert.ok(set.readable(slot));
    assert.equal(waker.drain(), true);
    assert.equal(waker.drain(), false);
    assert.equal(set.poll(10), 0);
  } finally {
    waker.close();
  }
});

Deno.test("async poll lets a setTimeout fire while it waits, and a wake ends it", async () => {
  assert.equal(runtimeName, "deno");
  assert.equal(nonblockingCalls, true);
  const waker = new Waker();
  try {
    const set = new PollSet(1);
    set.add(waker.fd, POLLIN);
    let fired = 0;
    const started = performance.now();
    const timer = setTimeout(() => {
      fired = performance.now() - started;
      waker.wake();
    }, 50);
    const n = await set.pollAsync(5000);
    clearTimeout(timer);
    const elapsed = performance.now() - started;
    assert.equal(n, 1);
    assert.ok(fired > 0 && fired < 1000, `timer fired at ${fired} ms`);
    assert.ok(elapsed < 1000, `woken after ${elapsed} ms`);
    assert.ok(waker.drain());
  } finally {
    waker.close();
  }
});

Deno.test("async poll times out", async () => {
  const waker = new Waker();
  try {
    const set = new PollSet(1);
    set.add(waker.fd, POLLIN);
    const t0 = performance.now();
    assert.equal(await set.pollAsync(30), 0);
    assert.ok(performance.now() - t0 >= 25);
  } finally {
    waker.close();
  }
});

Deno.test("a full PollSet refuses more slots", () => {
  const set = new PollSet(1);
  set.add(0, POLLIN);
  assert.throws(() => set.add(1, POLLIN), RangeError);
});
