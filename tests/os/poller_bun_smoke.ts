/**
 * cmd/poller.ts's quiet wait under Bun: `bun run tests/os/poller_bun_smoke.ts`, run by poller_idle_test.ts.
 * Once quiet, a wait runs on a thread of its own (ffi/thread_poll.ts): a 1 s wait costs a few ms of CPU, not the
 * 200 slices a second of before; a wake from the event loop ends it at once, and a descriptor that becomes
 * readable is reported in its slot. Prints "poller bun smoke ok" at the end; exits non-zero on a failure.
 */
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import process from "node:process";
import { Poller } from "../../cmd/poller.ts";
import { Waker as EventFd } from "../../ffi/poll.ts";
import { runtimeName } from "../../ffi/runtime.ts";

assert.equal(runtimeName, "bun");
const poller = new Poller({ quietAfterMs: 50 });
const other = new EventFd();
const slot = poller.watch(other.fd);
try {
  assert.equal(await poller.waitAsync(100), false); // nothing readable: from here on the poller counts as quiet
  assert.equal(await poller.waitAsync(50), false); // the first quiet wait compiles the thread's helper
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  assert.equal(await poller.waitAsync(1000), false);
  const took = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const cpuMs = (cpu.user + cpu.system) / 1000;
  assert.ok(took >= 990 && took < 3000, `waited ${took} ms`);
  // Sliced waits cost about 17 ms of CPU a second; the thread's wait wakes once.
  assert.ok(cpuMs < 8, `${cpuMs.toFixed(1)} ms of CPU in a quiet 1 s wait`);
  console.log(`quiet 1 s wait: ${cpuMs.toFixed(1)} ms of CPU`);

  // A wake from the event loop (the UAPI's) ends a quiet wait at once.
  let timer = setTimeout(() => poller.wake(), 30);
  let t1 = performance.now();
  assert.equal(await poller.waitAsync(2000), true);
  clearTimeout(timer);
  assert.ok(performance.now() - t1 < 500, `woke after ${performance.now() - t1} ms`);

  // Quiet again; a watched descriptor becoming readable ends the wait and shows in its slot.
  assert.equal(await poller.waitAsync(80), false);
  timer = setTimeout(() => other.wake(), 30);
  t1 = performance.now();
  assert.equal(await poller.waitAsync(2000), true);
  clearTimeout(timer);
  assert.ok(performance.now() - t1 < 500);
  assert.equal(poller.readable(slot), true, "the readable descriptor's slot");
  other.drain();
  console.log("poller bun smoke ok");
} finally {
  poller.close();
  other.close();
}
