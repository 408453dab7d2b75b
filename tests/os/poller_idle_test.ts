/**
 * cmd/poller.ts's idle wait: however it waits (Deno: blocking slices with timer turns between them, Deno's
 * asynchronous poll once quiet; Bun: the same slices, a poll on a thread of its own once quiet, checked by
 * poller_bun_smoke.ts), the event loop keeps running meanwhile (the UAPI socket, signals and timers are served
 * while the daemon idles), a wake ends the wait at once, and a quiet wait lasts its timeout.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { performance } from "node:perf_hooks";
import process from "node:process";
import { Poller } from "../../cmd/poller.ts";
import { nonblockingCalls } from "../../ffi/runtime.ts";

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

Deno.test({
  name: "poller: a quiet daemon sleeps in Deno's asynchronous poll, costing no CPU while it idles",
  ignore: !nonblockingCalls,
  fn: async () => {
    const poller = new Poller({ quietAfterMs: 50 });
    try {
      await poller.waitAsync(100); // nothing readable: from here on the poller counts as quiet
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      assert.equal(await poller.waitAsync(1000), false);
      const took = performance.now() - t0;
      const cpu = process.cpuUsage(cpu0);
      const cpuMs = (cpu.user + cpu.system) / 1000;
      // Sliced waits wake 200 times a second (about 17 ms of CPU a second measured on a daemon); one
      // asynchronous poll wakes once.
      assert.ok(took >= 990, `waited ${took} ms`);
      assert.ok(cpuMs < 8, `${cpuMs.toFixed(1)} ms of CPU in a quiet 1 s wait`);
      // A wake ends the quiet wait at once, and the next waits are fast slices again.
      const timer = setTimeout(() => poller.wake(), 30);
      const t1 = performance.now();
      assert.equal(await poller.waitAsync(2000), true);
      clearTimeout(timer);
      assert.ok(performance.now() - t1 < 500);
    } finally {
      poller.close();
    }
  },
});

const bun = new URL("../../node_modules/.bin/bun", import.meta.url).pathname;

Deno.test({
  name:
    "poller under Bun: a quiet wait runs on a thread of its own (a few ms of CPU a second), woken at once",
  ignore: !existsSync(bun),
  fn: () => {
    const smoke = new URL("./poller_bun_smoke.ts", import.meta.url).pathname;
    const r = spawnSync(bun, ["run", smoke], { encoding: "utf8", timeout: 60_000 });
    assert.equal(r.status, 0, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
    assert.match(r.stdout, /poller bun smoke ok/);
  },
});
