/** The capture's bounded queue (lib/capture.ts CaptureQueue): order, bounds, drops, taking a partial chunk. */
import assert from "node:assert/strict";
import { CaptureQueue } from "../../lib/capture.ts";

/** Appends a record of `len` bytes all equal to `tag`; false when dropped. */
function put(q: CaptureQueue, len: number, tag: number): boolean {
  const at = q.reserve(len);
  if (at < 0) return false;
  q.buffer.fill(tag, at, at + len);
  q.commit(len);
  return true;
}

/** Takes and releases everything, returning the record tags in order (each record `len` bytes). */
function drain(q: CaptureQueue, len: number): number[] {
  const tags: number[] = [];
  for (let c = q.take(); c !== null; c = q.take()) {
    assert.equal(c.length % len, 0);
    for (let i = 0; i < c.length; i += len) {
      assert.ok(c.subarray(i, i + len).every((x) => x === c[i]), "a record is whole");
      tags.push(c[i]!);
    }
    q.release();
  }
  return tags;
}

Deno.test("CaptureQueue keeps records in order across chunks and gives them back whole", () => {
  const q = new CaptureQueue(4, 100);
  for (let i = 0; i < 9; i++) assert.ok(put(q, 30, i)); // 3 per chunk: chunks 0, 1 full, 2 partly
  assert.equal(q.pending, 9 * 30);
  assert.deepEqual(drain(q, 30), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
  assert.equal(q.pending, 0);
  assert.equal(q.records, 9);
  assert.equal(q.dropped, 0);
});

Deno.test("CaptureQueue is bounded: when every chunk holds data, records are dropped and counted", () => {
  const q = new CaptureQueue(3, 100);
  let kept = 0;
  for (let i = 0; i < 20; i++) if (put(q, 50, i)) kept++;
  assert.equal(kept, 6); // 3 chunks × 2 records
  assert.equal(q.dropped, 14);
  assert.equal(q.pending, 300);
  // Taking the oldest chunk frees no room until it is released (it is being written).
  const c = q.take()!;
  assert.equal(c.length, 100);
  assert.equal(put(q, 50, 99), false);
  q.release();
  assert.ok(put(q, 50, 100));
  assert.deepEqual(drain(q, 50), [2, 3, 4, 5, 100]);
});

Deno.test("CaptureQueue: several chunks can be taken at once and are released oldest first", () => {
  const q = new CaptureQueue(4, 100);
  for (let i = 0; i < 7; i++) assert.ok(put(q, 40, i)); // chunks: [0 1] [2 3] [4 5] [6]
  const a = q.take()!, b = q.take()!, c = q.take()!;
  assert.deepEqual([a[0], b[0], c[0]], [0, 2, 4]);
  assert.equal(q.taken, 3);
  // The chunk being filled cannot be taken while it is the only free one: records still need a place.
  assert.equal(q.take(), null);
  assert.equal(q.pending, 40);
  assert.ok(put(q, 40, 7));
  assert.equal(put(q, 40, 8), false, "full: three chunks being written, one being filled");
  q.release(); // a, the oldest
  assert.equal(a[0], 0, "released bytes are untouched until new records come");
  const d = q.take()!; // the fill chunk [6 7], records move on to the released one
  assert.deepEqual([d[0], d[40]], [6, 7]);
  assert.ok(put(q, 40, 9));
  q.release();
  q.release();
  q.release();
  assert.equal(q.taken, 0);
  assert.deepEqual(drain(q, 40), [9]);
  assert.equal(q.dropped, 1);
});

Deno.test("CaptureQueue: a partly filled chunk can be taken; records go on in the next one meanwhile", () => {
  const q = new CaptureQueue(2, 100);
  assert.ok(put(q, 10, 1));
  const c = q.take()!;
  assert.equal(c.length, 10);
  assert.ok(put(q, 10, 2), "the next chunk takes records while the first is written");
  assert.equal(c[0], 1, "the taken bytes stay untouched");
  q.release();
  assert.deepEqual(drain(q, 10), [2]);
  // Empty again: nothing to take, and the ring goes round many times without losing a record.
  assert.equal(q.take(), null);
  const got: number[] = [];
  for (let i = 0; i < 50; i++) {
    assert.ok(put(q, 40, i % 250));
    assert.ok(put(q, 40, (i + 1) % 250));
    got.push(...drain(q, 40));
  }
  assert.equal(got.length, 100);
  assert.equal(q.dropped, 0);
});

Deno.test("CaptureQueue refuses a record larger than a chunk, and fewer than two chunks", () => {
  const q = new CaptureQueue(2, 64);
  assert.equal(q.reserve(65), -1);
  assert.equal(q.dropped, 1);
  assert.ok(put(q, 64, 7));
  assert.throws(() => new CaptureQueue(1, 64), /two chunks/);
});
