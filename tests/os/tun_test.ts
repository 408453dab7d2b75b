import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import process from "node:process";
import {
  addAddress,
  getMtu,
  ifIndex,
  isUp,
  MAX_PACKET,
  openTun,
  setIPv4Address,
  setMtu,
  setUp,
} from "../../ffi/tun.ts";
import { EBUSY, EIO, SysError } from "../../ffi/libc.ts";
import { pinned } from "../../ffi/runtime.ts";
import { UdpSocket } from "../../ffi/udp.ts";
import { POLLIN, PollSet } from "../../ffi/poll.ts";
import { addresses, ip, ipQuiet, isRoot, linkInfo, udp4Packet, udp6Packet, uniqueName } from "./_helpers.ts";

const ignore = !isRoot;

Deno.test({ name: "openTun creates the named interface and close removes it", ignore }, () => {
  const name = uniqueName("o");
  const tun = openTun(name);
  try {
    assert.equal(tun.name, name);
    assert.ok(tun.fd >= 0);
    const info = linkInfo(name);
    assert.ok(info, "ip link show finds the interface");
    assert.equal(info.ifindex, ifIndex(name));
  } finally {
    tun.close();
  }
  assert.equal(linkInfo(name), null, "the interface is gone with its last fd");
  tun.close(); // Idempotent.
});

Deno.test({ name: "openTun expands %d in the name", ignore }, () => {
  const tun = openTun("ttpct%d");
  try {
    assert.match(tun.name, /^ttpct\d+$/);
    assert.ok(linkInfo(tun.name));
  } finally {
    tun.close();
  }
});

Deno.test({ name: "MTU and the up flag are set and read back", ignore }, () => {
  const tun = openTun(uniqueName("m"));
  try {
    setMtu(tun.name, 1420);
    assert.equal(getMtu(tun.name), 1420);
    assert.equal(isUp(tun.name), false);
    setUp(tun.name, true);
    assert.equal(isUp(tun.name), true);
    let info = linkInfo(tun.name);
    assert.equal(info.mtu, 1420);
    assert.ok(info.flags.includes("UP"), `flags ${info.flags}`);
    setMtu(tun.name, MAX_PACKET);
    assert.equal(linkInfo(tun.name).mtu, MAX_PACKET);
    setUp(tun.name, false);
    info = linkInfo(tun.name);
    assert.ok(!info.flags.includes("UP"));
  } finally {
    tun.close();
  }
});

Deno.test({ name: "IPv4 and IPv6 addresses are added", ignore }, () => {
  const tun = openTun(uniqueName("a"));
  try {
    setUp(tun.name, true);
    setIPv4Address(tun.name, new Uint8Array([10, 201, 7, 1]), 24);
    addAddress(tun.name, 4, new Uint8Array([10, 202, 7, 1]), 16);
    addAddress(tun.name, 6, new Uint8Array([0xfd, 0x00, 0xab, 0xcd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]), 64);
    const got = addresses(tun.name);
    assert.ok(got.includes("10.201.7.1/24"), got.join(" "));
    assert.ok(got.includes("10.202.7.1/16"), got.join(" "));
    assert.ok(got.includes("fd00:abcd::1/64"), got.join(" "));
    assert.throws(
      () => addAddress(tun.name, 4, new Uint8Array([10, 202, 7, 1]), 16),
      (e: unknown) => e instanceof SysError && e.code === "EEXIST" && /already assigned/.test(e.message),
    );
  } finally {
    tun.close();
  }
});

/** Waits (bounded) for a packet on the TUN that `match` accepts; other packets (IPv6 ND, MLD) are skipped. */
function readMatching(
  tun: ReturnType<typeof openTun>,
  buf: Uint8Array,
  match: (n: number) => boolean,
): number {
  const set = new PollSet(1);
  set.add(tun.fd, POLLIN);
  const end = Date.now() + 3000;
  while (Date.now() < end) {
    set.poll(100);
    for (let n = tun.readAt(buf, 0, buf.length); n > 0; n = tun.readAt(buf, 0, buf.length)) {
      if (match(n)) return n;
    }
  }
  return 0;
}

Deno.test({ name: "UDP packets cross the TUN both ways, IPv4 and IPv6, up to 65,535 bytes", ignore }, () => {
  const tun = openTun(uniqueName("p"));
  const octet = 100 + (Deno.pid % 100);
  const local4 = new Uint8Array([10, 203, octet, 1]);
  const peer4 = new Uint8Array([10, 203, octet, 2]);
  const local6 = new Uint8Array([0xfd, 0, 0xee, octet, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
  const peer6 = new Uint8Array([0xfd, 0, 0xee, octet, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
  let s4: UdpSocket | null = null;
  let s6: UdpSocket | null = null;
  try {
    setMtu(tun.name, MAX_PACKET);
    addAddress(tun.name, 4, local4, 24);
    // A tentative IPv6 address (duplicate address detection running) cannot be used: turn DAD off here.
    spawnSync("sysctl", ["-qw", `net.ipv6.conf.${tun.name}.accept_dad=0`], { stdio: "ignore" });
    addAddress(tun.name, 6, local6, 64);
    setUp(tun.name, true);
    s4 = UdpSocket.bind(4, 0);
    s6 = UdpSocket.bind(6, 0);
    const buf = pinned(MAX_PACKET);
    // readAt/writeAt take buffers that do not move (see ffi/runtime.ts): packets are written from here.
    const out = pinned(MAX_PACKET);
    const write = (pkt: Uint8Array) => {
      out.set(pkt);
      return tun.writeAt(out, 0, pkt.length);
    };
    for (const size of [100, 60000]) {
      const payload = new Uint8Array(size).map((_, i) => (i * 7) & 0xff);
      // Host → TUN: the kernel routes our datagram into the interface; we read the IP packet.
      assert.equal(s4.sendTo(payload, size, peer4, 9999), size);
      const n4 = readMatching(tun, buf, (n) => n === 28 + size && buf[9] === 17);
      assert.equal(n4, 28 + size, `IPv4 packet of ${size} bytes read from the TUN`);
      assert.deepEqual(buf.subarray(16, 20), peer4);
      assert.deepEqual(buf.subarray(28, n4), payload);
      assert.equal(s6.sendTo(payload, size, peer6, 9999), size);
      const n6 = readMatching(tun, buf, (n) => n === 48 + size && buf[6] === 17);
      assert.equal(n6, 48 + size, `IPv6 packet of ${size} bytes read from the TUN`);
      assert.deepEqual(buf.subarray(24, 40), peer6);

      // TUN → host: a crafted packet from the peer arrives on our socket. A just-raised interface may drop the first IPv6 packets while addrconf finishes, so the crafted packet
      // is written again every 100 ms until it arrives (as a peer would retransmit).
      const reply4 = udp4Packet(peer4, 9999, local4, s4.port, payload);
      const reply6 = udp6Packet(peer6, 9999, local6, s6.port, payload);
      const set = new PollSet(1);
      for (const [s, reply] of [[s4, reply4], [s6, reply6]] as const) {
        set.clear();
        set.add(s.fd, POLLIN);
        let got = -1;
        for (let i = 0; i < 50 && got < 0; i++) {
          if (i % 5 === 0) assert.equal(write(reply), reply.length);
          set.poll(20);
          got = s.recvFrom(buf);
        }
        assert.equal(got, size, `IPv${s.family} datagram of ${size} bytes received`);
        assert.deepEqual(buf.subarray(0, size), payload);
        assert.equal((s.sourceName[2]! << 8) | s.sourceName[3]!, 9999);
      }
    }
    // A packet the kernel refuses (the interface is down) is reported as a negated errno, not thrown.
    setUp(tun.name, false);
    const valid = udp4Packet(peer4, 9999, local4, 9, new Uint8Array(4));
    assert.equal(write(valid), -EIO);
  } finally {
    s4?.close();
    s6?.close();
    tun.close();
  }
});

Deno.test({ name: "opening a TUN name that is in use fails with EBUSY and says so", ignore }, () => {
  const tun = openTun(uniqueName("b"));
  try {
    assert.throws(
      () => openTun(tun.name),
      (e: unknown) =>
        e instanceof SysError && e.errno === EBUSY &&
        e.message === `ioctl(TUNSETIFF ${tun.name}) failed: EBUSY: interface name in use`,
    );
  } finally {
    tun.close();
  }
});

Deno.test({ name: "a name taken by a non-TUN interface is refused with EINVAL", ignore }, () => {
  assert.throws(() => openTun("lo"), (e: unknown) => e instanceof SysError && e.code === "EINVAL");
});

Deno.test({ name: "without CAP_NET_ADMIN, openTun says what privilege is missing", ignore }, () => {
  const setpriv = spawnSync("setpriv", ["--version"], { stdio: "ignore" });
  if (setpriv.status !== 0) {
    console.log("skipped: setpriv (util-linux) is not installed");
    return;
  }
  const name = uniqueName("e");
  const script = new URL("./_open_tun.ts", import.meta.url).pathname;
  const r = spawnSync(
    "setpriv",
    ["--inh-caps=-all", "--bounding-set=-net_admin", "--", Deno.execPath(), "run", "-A", script, name],
    { encoding: "utf8", timeout: 30000 },
  );
  assert.equal(r.status, 1, r.stderr);
  assert.equal(r.stdout.trim(), `ioctl(TUNSETIFF ${name}) failed: EPERM: needs CAP_NET_ADMIN (run as root)`);
  assert.equal(linkInfo(name), null);
});

Deno.test({ name: "without /dev/net/tun, openTun says there is no TUN support", ignore }, () => {
  // A private mount namespace with an empty /dev/net, as in a container started without the device.
  const script = new URL("./_open_tun.ts", import.meta.url).pathname;
  // The runtime's path goes through the environment: Deno's child_process rewrites arguments equal to it.
  const shell = 'mount -t tmpfs none /dev/net && exec "$TT_RUNTIME" run -A "$TT_SCRIPT" tt0';
  const r = spawnSync("unshare", ["-m", "--propagation", "private", "sh", "-c", shell], {
    encoding: "utf8",
    timeout: 30000,
    env: { ...process.env, TT_RUNTIME: Deno.execPath(), TT_SCRIPT: script },
  });
  if (r.error !== undefined || /unshare|mount/.test(r.stderr)) {
    console.log(`skipped: cannot make a mount namespace here (${r.error ?? r.stderr.trim()})`);
    return;
  }
  assert.equal(
    r.stdout.trim(),
    "open(/dev/net/tun) failed: ENOENT: no TUN support (load the tun module / pass --device /dev/net/tun to the container)",
  );
});

Deno.test(
  { name: "a TUN moved to another namespace keeps working; its deletion there ends reads", ignore },
  () => {
    const tun = openTun(uniqueName("n"));
    const ns = `typetun-test-${Deno.pid}-mv`;
    try {
      ip("netns", "add", ns);
      ip("link", "set", tun.name, "netns", ns);
      assert.equal(linkInfo(tun.name), null);
      const buf = pinned(MAX_PACKET);
      assert.equal(tun.readAt(buf, 0, buf.length), 0);
      ip("-n", ns, "link", "del", tun.name);
      assert.throws(
        () => tun.readAt(buf, 0, buf.length),
        (e: unknown) => e instanceof SysError && /interface was deleted/.test(e.message),
      );
    } finally {
      tun.close();
      ipQuiet("netns", "del", ns);
    }
  },
);
