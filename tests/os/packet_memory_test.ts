/** ffi/packet_memory.ts: the views it hands out (pinned memory, so under tests/os/). */
import assert from "node:assert/strict";
import { PacketMemory } from "../../ffi/packet_memory.ts";

Deno.test("packet memory hands out aligned, disjoint views of one ArrayBuffer, then buffers of their own", () => {
  const memory = new PacketMemory(4096);
  const a = memory.take(1000);
  const b = memory.take(100);
  const c = memory.take(2000);
  assert.equal(a.length, 1000);
  assert.equal(b.length, 100);
  assert.equal(c.length, 2000);
  // One backing store: lib/bytes.ts copies between them with copyWithin.
  assert.equal(a.buffer, b.buffer);
  assert.equal(b.buffer, c.buffer);
  for (const v of [a, b, c]) assert.equal(v.byteOffset % 64, 0);
  // Disjoint: writing all of one leaves the others as they were (zeroed).
  a.fill(0xaa);
  c.fill(0xcc);
  assert.ok(b.every((x) => x === 0));
  assert.ok(a.every((x) => x === 0xaa));
  assert.equal(memory.used, 1024 + 128 + 2048);
  // Full: still a working buffer, only not in the shared store.
  const d = memory.take(2000);
  assert.equal(d.length, 2000);
  assert.notEqual(d.buffer, a.buffer);
  assert.ok(d.every((x) => x === 0));
  assert.throws(() => memory.take(0), RangeError);
  assert.throws(() => new PacketMemory(10), RangeError);
});
