/**
 * cmd/warmup.ts: the private pair moves the packets asked for in both directions, through the real Device,
 * loop and TUN adapter, lets the event loop run between its slices, stops when cancelled or out of budget, and
 * leaves no descriptor behind when it used loopback sockets. (That it makes the first pings fast is shown by
 * the bench's cold-ping column, `deno task bench`, not here.)
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import process from "node:process";
import { selectAead, selectX25519 } from "../../cmd/crypto.ts";
import { systemRng } from "../../cmd/keys.ts";
import { warmUp, warmupWanted } from "../../cmd/warmup.ts";

const base = {
  aead: selectAead().aead,
  x25519: selectX25519(),
  rng: systemRng,
  mtu: 1420,
  budgetMs: 10_000,
};

for (const vnetHdr of [true, false]) {
  Deno.test(`warmUp moves the packets each way over the in-memory network (vnet header ${vnetHdr})`, async () => {
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    try {
      const r = await warmUp({ ...base, vnetHdr, offload: vnetHdr, packets: 3000, sliceMs: 1 });
      assert.deepEqual(r.delivered, [3000, 3000]);
      assert.ok(r.slices >= 2, `one slice of ${r.busyMs} ms`);
      // Other timers ran while it warmed: it does not hold the event loop for its whole length.
      assert.ok(ticks >= Math.min(r.slices - 1, 5), `${ticks} ticks in ${r.slices} slices`);
    } finally {
      clearInterval(timer);
    }
  });
}

Deno.test("warmUp over loopback UDP sockets moves the packets and closes every descriptor it opened", async () => {
  const fds = () => readdirSync("/proc/self/fd").length;
  const before = fds();
  const r = await warmUp({
    ...base,
    vnetHdr: true,
    offload: true,
    udp: { gso: true, gro: true },
    packets: 2000,
  });
  assert.deepEqual(r.delivered, [2000, 2000]);
  assert.equal(fds(), before);
});

Deno.test("warmUp stops when cancelled and when its time budget is spent", async () => {
  let calls = 0;
  const cancelled = await warmUp({
    ...base,
    vnetHdr: true,
    offload: true,
    packets: 1_000_000,
    sliceMs: 1,
    cancelled: () => ++calls > 3,
  });
  assert.equal(cancelled.slices, 3);
  assert.ok(cancelled.delivered[0] < 1_000_000);
  const spent = await warmUp({ ...base, vnetHdr: false, offload: false, packets: 1_000_000, budgetMs: 20 });
  assert.ok(spent.delivered[0] > 0 && spent.delivered[0] < 1_000_000, `${spent.delivered}`);
  assert.ok(spent.busyMs >= 20 && spent.busyMs < 200, `${spent.busyMs} ms`);
});

Deno.test("TYPETUN_WARMUP: unset or 1 warms, 0 does not, anything else is refused", () => {
  assert.equal(warmupWanted(undefined), true);
  assert.equal(warmupWanted(""), true);
  assert.equal(warmupWanted("1"), true);
  assert.equal(warmupWanted("0"), false);
  assert.throws(() => warmupWanted("yes"), /TYPETUN_WARMUP must be 0 or 1, not "yes"/);
});

Deno.test("warmUp where loopback is down (a fresh network namespace) moves the packets in memory instead", () => {
  // A child in a network namespace of its own, whose `lo` is down: `unshare -n` as root, else with a user
  // namespace (-r) where the kernel allows it; skipped where neither works.
  const root = process.getuid?.() === 0;
  const warmup = new URL("../../cmd/warmup.ts", import.meta.url).href;
  const code = `import { warmUp } from ${JSON.stringify(warmup)};
    import { selectAead, selectX25519 } from ${
    JSON.stringify(new URL("../../cmd/crypto.ts", import.meta.url).href)
  };
    import { systemRng } from ${JSON.stringify(new URL("../../cmd/keys.ts", import.meta.url).href)};
    const r = await warmUp({ aead: selectAead().aead, x25519: selectX25519(), rng: systemRng, mtu: 1420,
      vnetHdr: true, offload: true, udp: { gso: true, gro: true }, packets: 500, budgetMs: 10000 });
    console.log("delivered " + r.delivered.join(" "));`;
  const r = spawnSync("unshare", [root ? "-n" : "-rn", Deno.execPath(), "eval", code], {
    encoding: "utf8",
    timeout: 60_000,
  });
  if (r.status !== 0 && /unshare/.test(r.stderr) && !/delivered/.test(r.stdout)) {
    console.log(`skipped: ${r.stderr.trim()}`);
    return;
  }
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /delivered 500 500/);
});

Deno.test("warmUp ends a slice at once when the daemon has work of its own pending", async () => {
  const long = { ...base, vnetHdr: false, offload: false, packets: 2000, sliceMs: 10_000 };
  const alone = await warmUp(long);
  assert.deepEqual(alone.delivered, [2000, 2000]);
  assert.equal(alone.slices, 1, "one long slice when nothing else waits");
  let asked = 0;
  const busy = await warmUp({ ...long, pending: () => ++asked > 0 });
  assert.deepEqual(busy.delivered, [2000, 2000], "it still finishes, a round of the pair per slice");
  assert.ok(busy.slices > 20, `${busy.slices} slices`);
  assert.ok(asked >= busy.slices - 1, `asked ${asked} times in ${busy.slices} slices`);
});
