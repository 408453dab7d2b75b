/**
 * cmd/poller.ts's idle wait: however it waits (Deno: blocking slices with timer turns between them; Bun: the
 * same in ffi/poll.ts), the event loop keeps running meanwhile (the UAPI socket, signals and timers are served
 * while the daemon idles), a wake ends the wait at once, and a quiet wait lasts its timeout.
 */
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { Poller } from "../../cmd/poller.ts";

Deno.test("poller: an idle wait lasts its timeout and leaves the event loop running", async () => {
  const poller = new Poller();
  let ticks = 0;
  const timer = setInterval(() => ticks++, 2);
  try {
    const t0 = performance.now();
    const woke = await poller.waitAsync(300);
    const took = performance.now() - t0;
    assert.equal(woke, false);
    assert.ok(took >= 290 && took < 1500, `waited ${took} ms`);
    // Every few milliseconds at the least: a 2 ms timer ran, at worst once per 5 ms slice.
    assert.ok(ticks >= 30, `${ticks} timer turns in ${took} ms`);
  } finally {
    clearInterval(timer);
    poller.close();
  }
});

Deno.test("poller: a wake from the event loop ends an idle wait at once", async () => {
  const poller = new Poller();
  try {
    const t0 = performance.now();
    const timer = setTimeout(() => poller.wake(), 50);
    const woke = await poller.waitAsync(2000);
    const took = performance.now() - t0;
    clearTimeout(timer);
    assert.equal(woke, true);
    assert.ok(took >= 45 && took < 500, `woke after ${took} ms`);
    // The wake was consumed: the next short wait finds nothing.
    assert.equal(await poller.waitAsync(20), false);
  } finally {
    poller.close();
  }
});
