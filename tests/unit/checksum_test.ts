/** The Internet checksum (lib/checksum.ts) and the word-wise copy (lib/bytes.ts) against a naive reference. */
import assert from "node:assert/strict";
import { copyBytes } from "../../lib/bytes.ts";
import { csumFold, csumPartial, pseudoHeaderSum4, pseudoHeaderSum6 } from "../../lib/checksum.ts";
import { naiveSum, pseudo, randomBytes, tcpPacket } from "./_offload.ts";

// ---- Checksum and copy helpers ----

Deno.test("csumPartial agrees with a naive RFC 1071 sum at every alignment and length", () => {
  const block = randomBytes(70000);
  for (const viewOffset of [0, 1, 2, 3, 5]) {
    const buf = new Uint8Array(block.buffer, viewOffset, 69000);
    for (const off of [0, 1, 2, 3, 6, 7]) {
      for (const len of [0, 1, 2, 3, 4, 5, 7, 8, 9, 20, 31, 40, 1400, 1401, 65535]) {
        const initial = (off * 7919 + len) & 0xffff;
        const want = naiveSum(buf.subarray(off, off + len), initial);
        // 0 and 0xffff are the same number in one's complement (+0 and -0); fold both to compare.
        const got = csumPartial(buf, off, len, initial);
        assert.equal(got % 0xffff, want % 0xffff, `view+${viewOffset} off ${off} len ${len}`);
      }
    }
  }
  // RFC 1071 section 3's worked example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
  assert.equal(csumPartial(Uint8Array.of(0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7), 0, 8, 0), 0xddf2);
  assert.equal(csumFold(0xddf2), 0x220d);
});

Deno.test("pseudo-header sums match the naive ones (IPv4 and IPv6)", () => {
  const p4 = tcpPacket({ seq: 1, payload: randomBytes(10) });
  assert.equal(pseudoHeaderSum4(p4, 0, 6, 1234), naiveSum([], pseudo(false, p4, 6, 1234)));
  const p6 = tcpPacket({ v6: true, seq: 1, payload: randomBytes(10) });
  assert.equal(pseudoHeaderSum6(p6, 0, 6, 70000), naiveSum([], pseudo(true, p6, 6, 70000)));
});

Deno.test("copyBytes copies across buffers at any alignment and within one buffer like memmove", () => {
  const src = randomBytes(5000);
  for (const so of [0, 1, 2, 3]) {
    for (const d of [0, 1, 2, 3]) {
      for (const n of [0, 1, 3, 4, 5, 17, 1400, 4000]) {
        const dst = new Uint8Array(4100);
        copyBytes(src, so, dst, d, n);
        assert.deepEqual(dst.subarray(d, d + n), src.subarray(so, so + n));
        assert.ok(dst.subarray(0, d).every((x) => x === 0) && dst.subarray(d + n).every((x) => x === 0));
      }
    }
  }
  // The last bytes of a buffer whose length is not a multiple of 4 (no whole word to read past them).
  const odd = randomBytes(4099);
  const dst = new Uint8Array(4100);
  copyBytes(odd, 1, dst, 0, 4098);
  assert.deepEqual(dst.subarray(0, 4098), odd.subarray(1));
  // Overlapping ranges of one buffer, through views that do not contain each other.
  for (const [a, b] of [[10, 13], [13, 10]]) {
    const block = randomBytes(3000);
    const ref = block.slice();
    const srcView = block.subarray(a, a + 2000);
    const dstView = block.subarray(b, b + 2000);
    copyBytes(srcView, 0, dstView, 0, 2000);
    assert.deepEqual(block.subarray(b, b + 2000), ref.subarray(a, a + 2000));
  }
  const whole = randomBytes(3000);
  const ref = whole.slice();
  copyBytes(whole.subarray(0, 1000), 5, whole.subarray(2000), 7, 900);
  assert.deepEqual(whole.subarray(2007, 2907), ref.subarray(5, 905));
});
