/**
 * Giving up root after setup while keeping one capability (capabilities(7)), as a daemon that has opened
 * what needs root does: PR_SET_KEEPCAPS, no supplementary groups, setresgid, setresuid, then capset leaving
 * only the kept capabilities in the effective and permitted sets (and in no others).
 *
 * Capabilities belong to threads. glibc's setgroups, setresgid and setresuid change every thread of the
 * process (nptl's setxid broadcast), but PR_SET_KEEPCAPS and capset change only the calling thread. So the
 * calling thread (the JavaScript thread, where every synchronous FFI call runs: the one that later sets
 * SO_MARK and binds sockets) keeps its permitted set across the uid change, and every other thread of the
 * runtime, whose keep-caps flag is off, loses all its capabilities when its uids become non-zero.
 * @module
 */
import { check, EPERM } from "./libc.ts";
import { LIBC, openLibrary } from "./runtime.ts";

const lib = openLibrary(LIBC, {
  prctl: { args: ["i32", "u64", "u64", "u64", "u64"], result: "i32" },
  setgroups: { args: ["usize", "buffer"], result: "i32" },
  setresgid: { args: ["u32", "u32", "u32"], result: "i32" },
  setresuid: { args: ["u32", "u32", "u32"], result: "i32" },
  capget: { args: ["buffer", "buffer"], result: "i32" },
  capset: { args: ["buffer", "buffer"], result: "i32" },
});

/** linux/prctl.h */
const PR_SET_KEEPCAPS = 8;
const PR_CAP_AMBIENT = 47;
const PR_CAP_AMBIENT_RAISE = 2;
/** linux/capability.h: 64-bit capability sets, two 32-bit halves. */
const LINUX_CAPABILITY_VERSION_3 = 0x20080522;

/** Capability numbers (linux/capability.h). */
export const CAP_NET_BIND_SERVICE = 10;
export const CAP_NET_ADMIN = 12;

/** The calling thread's capability sets, as 64-bit masks. */
export interface CapSets {
  effective: bigint;
  permitted: bigint;
  inheritable: bigint;
}

/** struct __user_cap_header_struct { u32 version; int pid; } for the calling thread. */
function capHeader(): Uint8Array {
  const h = new Uint8Array(8);
  new DataView(h.buffer).setUint32(0, LINUX_CAPABILITY_VERSION_3, true);
  return h;
}

/** Reads the calling thread's capabilities (capget). */
export function capGet(): CapSets {
  const data = new Uint8Array(24); // struct __user_cap_data_struct[2]: effective, permitted, inheritable
  check(lib.symbols.capget(capHeader(), data), "capget");
  const v = new DataView(data.buffer);
  const get = (o: number) => BigInt(v.getUint32(o, true)) | (BigInt(v.getUint32(o + 12, true)) << 32n);
  return { effective: get(0), permitted: get(4), inheritable: get(8) };
}

/** Sets the calling thread's capabilities (capset). */
export function capSet(sets: CapSets): void {
  const data = new Uint8Array(24);
  const v = new DataView(data.buffer);
  const put = (o: number, m: bigint) => {
    v.setUint32(o, Number(m & 0xffffffffn), true);
    v.setUint32(o + 12, Number(m >> 32n), true);
  };
  put(0, sets.effective);
  put(4, sets.permitted);
  put(8, sets.inheritable);
  check(lib.symbols.capset(capHeader(), data), "capset");
}

/**
 * Becomes `uid`/`gid` with no supplementary groups, keeping only `keep` (capability numbers) effective and
 * permitted. With `ambient`, they are also inheritable and ambient, so programs this thread starts (hooks,
 * nft, iptables) have them too; without it, they have none. Needs root (CAP_SETUID, CAP_SETGID) and every
 * kept capability. Irreversible.
 * @throws SysError naming the step that failed
 */
export function dropPrivileges(uid: number, gid: number, keep: readonly number[], ambient = false): void {
  const mask = keep.reduce((m, c) => m | (1n << BigInt(c)), 0n);
  const hint = { [EPERM]: "needs root (CAP_SETUID and CAP_SETGID) to change user" };
  check(lib.symbols.prctl(PR_SET_KEEPCAPS, 1n, 0n, 0n, 0n), "prctl(PR_SET_KEEPCAPS)");
  check(lib.symbols.setgroups(0, new Uint8Array(4)), "setgroups([])", hint);
  check(lib.symbols.setresgid(gid, gid, gid), `setresgid(${gid})`, hint);
  check(lib.symbols.setresuid(uid, uid, uid), `setresuid(${uid})`, hint);
  capSet({ effective: mask, permitted: mask, inheritable: ambient ? mask : 0n });
  if (ambient) {
    for (const c of keep) {
      check(
        lib.symbols.prctl(PR_CAP_AMBIENT, BigInt(PR_CAP_AMBIENT_RAISE), BigInt(c), 0n, 0n),
        "PR_CAP_AMBIENT",
      );
    }
  }
  check(lib.symbols.prctl(PR_SET_KEEPCAPS, 0n, 0n, 0n, 0n), "prctl(PR_SET_KEEPCAPS)");
}
