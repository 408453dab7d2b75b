/**
 * Word-wise access to caller-owned buffers without allocating per call: a cached `Uint32Array` (and
 * `Uint8Array`) over a whole ArrayBuffer, indexed by absolute byte position, and the copy built on it.
 * Shared by the Internet checksum (lib/checksum.ts) and the TUN offloads (lib/gso.ts, lib/gro.ts).
 *
 * Copies within one ArrayBuffer are a `copyWithin` (memmove); copies across buffers read whole 32-bit words,
 * fastest when both ends sit at the same offset modulo 4. So a caller that reads the TUN into the same
 * ArrayBuffer as its packet slots, and gives the coalescer an arena there too, copies at memmove speed.
 * @module
 */

// The views are cached for the two most recent buffers (a copy touches two), so a new view is made only when
// the caller switches buffers.

/** Whether this host stores a Uint32 little endian (x86-64, AArch64). */
export const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;

let wordsKey0: ArrayBufferLike | null = null;
let words0: Uint32Array<ArrayBufferLike> = new Uint32Array(0);
let wordsKey1: ArrayBufferLike | null = null;
let words1: Uint32Array<ArrayBufferLike> = new Uint32Array(0);

/** A Uint32Array over the whole of `ab` (its last 0-3 bytes excluded), cached. */
export function wordsOf(ab: ArrayBufferLike): Uint32Array<ArrayBufferLike> {
  if (ab === wordsKey0) return words0;
  if (ab !== wordsKey1) {
    wordsKey1 = ab;
    words1 = new Uint32Array(ab, 0, ab.byteLength >>> 2);
  }
  // Most recent first.
  const k = wordsKey0, w = words0;
  wordsKey0 = wordsKey1;
  words0 = words1;
  wordsKey1 = k;
  words1 = w;
  return words0;
}

let bytesKey: ArrayBufferLike | null = null;
let bytesView: Uint8Array<ArrayBufferLike> = new Uint8Array(0);

/** A Uint8Array over the whole of `ab`, cached. */
function bytesOf(ab: ArrayBufferLike): Uint8Array<ArrayBufferLike> {
  if (ab !== bytesKey) {
    bytesKey = ab;
    bytesView = new Uint8Array(ab);
  }
  return bytesView;
}

/**
 * Copies `n` bytes without allocating (no `subarray`): within one ArrayBuffer by `copyWithin` on a cached view
 * of the whole buffer (a memmove, about 4× faster than the loops below); across buffers by 32-bit words when
 * both ends share their alignment modulo 4, by shifted word pairs when they do not (little-endian hosts),
 * else byte by byte.
 */
export function copyBytes(src: Uint8Array, srcOff: number, dst: Uint8Array, dstOff: number, n: number): void {
  if (n <= 0) return;
  const sa = src.byteOffset + srcOff;
  const da = dst.byteOffset + dstOff;
  if (src.buffer === dst.buffer) {
    if (sa !== da) bytesOf(dst.buffer).copyWithin(da, sa, sa + n);
    return;
  }
  let i = 0;
  // Byte by byte until the destination is word-aligned.
  while (i < n && ((da + i) & 3) !== 0) {
    dst[dstOff + i] = src[srcOff + i]!;
    i++;
  }
  const words = (n - i) >>> 2;
  if (words > 0) {
    const dw = wordsOf(dst.buffer);
    const sw = wordsOf(src.buffer);
    const dk = (da + i) >>> 2;
    const shift = (sa + i) & 3;
    let sk = (sa + i) >>> 2;
    if (shift === 0) {
      for (let k = 0; k < words; k++) dw[dk + k] = sw[sk + k]!;
      i += words << 2;
    } else if (LITTLE_ENDIAN) {
      // Each destination word is the high bytes of one source word and the low bytes of the next; stop
      // before a read past the last whole word of the source buffer.
      const r = shift << 3, l = 32 - r;
      let k = 0;
      const lastWord = sw.length - 1;
      for (; k < words && sk < lastWord; k++, sk++) dw[dk + k] = (sw[sk]! >>> r) | (sw[sk + 1]! << l);
      i += k << 2;
    }
  }
  for (; i < n; i++) dst[dstOff + i] = src[srcOff + i]!;
}
