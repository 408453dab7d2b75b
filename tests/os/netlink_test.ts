import assert from "node:assert/strict";
import { addRoute, delRoute, LinkMonitor } from "../../ffi/netlink.ts";
import { SysError } from "../../ffi/libc.ts";
import { ifIndex, openTun, setUp } from "../../ffi/tun.ts";
import { POLLIN, PollSet } from "../../ffi/poll.ts";
import { ip, ipQuiet, isRoot, uniqueName } from "./_helpers.ts";

const ignore = !isRoot;

/** Reads link events (bounded in time) until `done` says so. */
function readUntil(monitor: LinkMonitor, done: (deleted: boolean, moved: boolean) => boolean, index: number) {
  const set = new PollSet(1);
  set.add(monitor.fd, POLLIN);
  let deleted = false;
  let moved = false;
  const end = Date.now() + 2000;
  while (Date.now() < end && !done(deleted, moved)) {
    set.poll(50);
    for (const e of monitor.read()) {
      if (e.type === "del" && e.index === index) e.moved ? (moved = true) : (deleted = true);
    }
  }
  return { deleted, moved };
}

Deno.test({ name: "the link monitor reports an MTU change and `ip link del` of the TUN", ignore }, () => {
  const monitor = new LinkMonitor();
  const tun = openTun(uniqueName("d"));
  try {
    const index = ifIndex(tun.name);
    assert.equal(monitor.read().some((e) => e.type === "del" && e.index === index), false);
    ip("link", "set", tun.name, "mtu", "34700");
    let mtu: number | null = null;
    for (let i = 0; i < 50 && mtu === null; i++) {
      mtu = monitor.read().find((e) => e.type === "new" && e.index === index)?.mtu ?? null;
      if (mtu === null) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
    assert.equal(mtu, 34700, "an MTU change is reported with the new MTU");
    ip("link", "del", tun.name);
    const r = readUntil(monitor, (d) => d, index);
    assert.equal(r.deleted, true);
    assert.equal(r.moved, false);
  } finally {
    tun.close();
    monitor.close();
  }
});

Deno.test({ name: "moving the TUN to another namespace is reported as moved, not deleted", ignore }, () => {
  const monitor = new LinkMonitor();
  const tun = openTun(uniqueName("v"));
  const ns = `typetun-test-${Deno.pid}-nl`;
  try {
    const index = ifIndex(tun.name);
    ip("netns", "add", ns);
    ip("link", "set", tun.name, "netns", ns);
    const r = readUntil(monitor, (_d, m) => m, index);
    assert.equal(r.moved, true);
    assert.equal(r.deleted, false);
  } finally {
    tun.close();
    monitor.close();
    ipQuiet("netns", "del", ns);
  }
});

Deno.test({ name: "routes are added to and removed from a table, IPv4 and IPv6", ignore }, () => {
  const tun = openTun(uniqueName("r"));
  const table = 51820 + (Deno.pid % 1000);
  try {
    setUp(tun.name, true);
    const index = ifIndex(tun.name);
    const v4 = new Uint8Array([10, 204, 0, 0]);
    const v6 = new Uint8Array([0xfd, 0, 0xcc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    addRoute(index, 4, v4, 16, { table });
    addRoute(index, 6, v6, 48, { table, metric: 7 });
    addRoute(index, 4, new Uint8Array(4), 0, { table }); // A default route.
    const routes4 = JSON.parse(ip("-j", "-4", "route", "show", "table", String(table)));
    // deno-lint-ignore no-explicit-any
    const dsts4 = routes4.map((r: any) => `${r.dst} ${r.dev}`);
    assert.ok(dsts4.includes(`10.204.0.0/16 ${tun.name}`), dsts4.join(", "));
    assert.ok(dsts4.includes(`default ${tun.name}`), dsts4.join(", "));
    const routes6 = JSON.parse(ip("-j", "-6", "route", "show", "table", String(table)));
    // deno-lint-ignore no-explicit-any
    assert.ok(routes6.some((r: any) => r.dst === "fd00:cc00::/48" && r.dev === tun.name && r.metric === 7));
    assert.throws(
      () => addRoute(index, 4, v4, 16, { table }),
      (e: unknown) => e instanceof SysError && e.code === "EEXIST",
    );
    delRoute(index, 4, v4, 16, { table });
    delRoute(index, 6, v6, 48, { table, metric: 7 });
    delRoute(index, 4, new Uint8Array(4), 0, { table });
    assert.equal(JSON.parse(ip("-j", "-4", "route", "show", "table", String(table))).length, 0);
    assert.equal(JSON.parse(ip("-j", "-6", "route", "show", "table", String(table))).length, 0);
  } finally {
    tun.close();
  }
});

Deno.test({ name: "a route in the main table is added and deleted", ignore }, () => {
  const tun = openTun(uniqueName("t"));
  try {
    setUp(tun.name, true);
    const index = ifIndex(tun.name);
    const dst = new Uint8Array([10, 205, 1, 0]);
    addRoute(index, 4, dst, 24);
    assert.match(ip("-4", "route", "show", "10.205.1.0/24"), new RegExp(`dev ${tun.name}`));
    delRoute(index, 4, dst, 24);
    assert.equal(ip("-4", "route", "show", "10.205.1.0/24").trim(), "");
  } finally {
    tun.close();
  }
});
