/**
 * A TUN handed in by a supervisor (WG_TUN_FD, ffi/tun.ts adoptTun, root): with the vnet header it gets the
 * offloads openTun asks for, USO included on Linux ≥ 6.2 (UDP inside the tunnel in GSO runs, as current
 * wireguard-go does for a descriptor it is given), and none when they are not wanted.
 */
import assert from "node:assert/strict";
import { release } from "node:os";
import { adoptTun, openTun } from "../../ffi/tun.ts";
import { isRoot, uniqueName } from "./_helpers.ts";

const [major, minor] = release().split(".").map(Number) as [number, number];
const hasUso = major > 6 || (major === 6 && minor >= 2);

Deno.test({
  name: `an adopted TUN gets TSO and USO as an opened one (USO on Linux ≥ 6.2; this is ${release()})`,
  ignore: !isRoot,
}, () => {
  // The supervisor attached it with IFF_VNET_HDR and asked for no USO: adoptTun must ask for it itself.
  const tun = openTun(uniqueName("a"), { vnetHdr: true, uso: false });
  try {
    assert.ok(tun.offload && !tun.uso);
    const adopted = adoptTun(tun.fd, { vnetHdr: true });
    assert.equal(adopted.name, tun.name);
    assert.equal(adopted.offload, true);
    assert.equal(adopted.uso, hasUso);
    // USO can be declined alone, as with openTun.
    const tso = adoptTun(tun.fd, { vnetHdr: true, uso: false });
    assert.ok(tso.offload && !tso.uso);
  } finally {
    tun.close(); // the adopted Tuns share this descriptor
  }
});
