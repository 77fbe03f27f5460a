/*
 * Typed views over allocations (allocArray / freeArray), strings (allocString / readString),
 * kmalloc's alignment, and Symbol.dispose.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { GFP, Heap, HeapError, STRING_HEADER } from "../../../src/index.js";
import { errCode, MiB } from "../../support/util.js";

const CTORS = [Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array, Float32Array, Float64Array, BigInt64Array, BigUint64Array] as const;

test("allocArray: every typed-array constructor, aligned to its element, over the heap's memory; freeArray frees it", () => {
  const heap = Heap.create({ size: 8 * MiB, cpus: 2 });
  for (const Ctor of CTORS) {
    for (const n of [1, 3, 17, 1000, 5000]) {
      const v = heap.allocArray(Ctor, n)!;
      assert.ok(v instanceof Ctor, Ctor.name);
      assert.equal(v.length, n);
      assert.equal((v.buffer as unknown), heap.buffer);
      assert.equal(v.byteOffset % Ctor.BYTES_PER_ELEMENT, 0, `${Ctor.name} x ${n} aligned`);
      assert.equal(v.byteOffset % 8, 0, "kmalloc: 8-byte aligned at least");
      (v as unknown as { fill(x: unknown): void }).fill(typeof v[0] === "bigint" ? 0n : 0);
      heap.u8[v.byteOffset] = 1; // a byte written through heap.u8 is the view's
      assert.notEqual(Number(v[0]), 0, `${Ctor.name}: heap.u8[addr] is the view's first byte`);
      assert.ok(heap.ksize(v.byteOffset) >= v.byteLength);
      heap.freeArray(v);
    }
  }
  // The same view can not be freed twice; kfree of its address sees it free.
  const v = heap.allocArray(Float64Array, 8)!;
  heap.freeArray(v);
  assert.ok(["EDOUBLEFREE", "EINVAL"].includes(errCode(() => heap.freeArray(v))));
  heap.shrink();
  heap.validate();
  assert.equal(heap.stats().freePages, heap.stats().totalPages);
});

test("kmalloc's alignment: 8 bytes at least; power-of-two sizes up to 4 KiB at their size; above 8 KiB a page", () => {
  const heap = Heap.create({ size: 16 * MiB, cpus: 2 });
  const got: number[] = [];
  for (let size = 1; size <= 20000; size += size < 64 ? 1 : 37) {
    const a = heap.kmalloc(size);
    assert.equal(a % 8, 0, `kmalloc(${size})`);
    if (size > 8192) assert.equal(a % 4096, 0, `kmalloc(${size}) is page-aligned`);
    got.push(a);
  }
  for (let s = 8; s <= 4096; s *= 2) {
    const a = heap.kmalloc(s);
    assert.equal(a % s, 0, `kmalloc(${s}) is aligned to ${s}`);
    got.push(a);
  }
  heap.kfreeBulk(got);
  heap.validate();
});

test("allocArray returns null and allocString 0 when memory runs out; bad arguments are EINVAL and change nothing", () => {
  const heap = Heap.create({ size: 1 * MiB, cpus: 1 });
  const before = heap.stats().freePages;
  const huge = heap.allocArray(Float64Array, 256 << 10); // 2 MiB in a 1 MiB heap
  assert.equal(huge, null);
  // Above the largest kmalloc (4 MiB) it is a bad size, not a lack of memory.
  assert.equal(errCode(() => heap.allocArray(Float64Array, 1 << 20)), "EINVAL");
  assert.equal(heap.allocString("x".repeat(3 << 20)), 0);
  const bad: [string, () => unknown][] = [
    ["a plain Array", () => heap.allocArray(Array as never, 4)],
    ["DataView", () => heap.allocArray(DataView as never, 4)],
    ["a function", () => heap.allocArray((() => 0) as never, 4)],
    ["n = 0", () => heap.allocArray(Float64Array, 0)],
    ["n = -1", () => heap.allocArray(Float64Array, -1)],
    ["n = 1.5", () => heap.allocArray(Float64Array, 1.5)],
    ["n = NaN", () => heap.allocArray(Float64Array, NaN)],
    ["n as a string", () => heap.allocArray(Float64Array, "4" as never)],
    ["n too large", () => heap.allocArray(Float64Array, 2 ** 29)],
    ["a bad gfp", () => heap.allocArray(Float64Array, 4, 1 << 30)],
    ["freeArray of a number", () => heap.freeArray(42 as never)],
    ["freeArray of a plain array", () => heap.freeArray([1, 2] as never)],
    ["freeArray of a view of another buffer", () => heap.freeArray(new Float64Array(new SharedArrayBuffer(1 << 20), 4096 * 64, 4))],
    ["freeArray of a view of an ArrayBuffer", () => heap.freeArray(new Uint8Array(64))],
    ["freeArray of the whole heap", () => heap.freeArray(heap.u8)],
    ["allocString of a number", () => heap.allocString(5 as never)],
    ["allocString of null", () => heap.allocString(null as never)],
    ["readString of 0", () => heap.readString(0)],
    ["readString of a string", () => heap.readString("0x10" as never)],
    ["readString outside the heap", () => heap.readString(1 << 30)],
  ];
  for (const [what, fn] of bad) assert.equal(errCode(fn), "EINVAL", what);
  // A view inside an allocation (a subarray) and an allocation that is not a string.
  const v = heap.allocArray(Int32Array, 64)!;
  assert.equal(errCode(() => heap.freeArray(v.subarray(8))), "EINVAL");
  v.fill(-1);
  assert.equal(errCode(() => heap.readString(v.byteOffset)), "EINVAL", "a length word of 2^32 - 1");
  v[0] = 0;
  v[1] = 1;
  assert.equal(errCode(() => heap.readString(v.byteOffset)), "EINVAL", "no NUL where the length says");
  v[0] = 1000;
  assert.equal(errCode(() => heap.readString(v.byteOffset)), "EINVAL", "a length past the allocation");
  heap.freeArray(v);
  heap.shrink();
  assert.equal(heap.stats().freePages, before);
  heap.validate();
});

test("allocString / readString: length, UTF-8 and a NUL; any text round-trips, in any agent's handle", () => {
  const heap = Heap.create({ size: 8 * MiB, cpus: 2 });
  const other = Heap.attach(heap.buffer);
  const texts = ["", "a", "héllo wörld", "✓ 日本語 😀 \u0000 inside", "x".repeat(70_000), "é".repeat(40_000)];
  for (const t of texts) {
    const a = heap.allocString(t);
    assert.notEqual(a, 0);
    const utf8 = new TextEncoder().encode(t);
    assert.equal(heap.u32[a >> 2], utf8.length, "the length word");
    assert.deepEqual(heap.u8.slice(a + STRING_HEADER, a + STRING_HEADER + utf8.length), utf8, "the UTF-8 bytes");
    assert.equal(heap.u8[a + STRING_HEADER + utf8.length], 0, "the NUL");
    assert.equal(other.readString(a), t);
    other.kfree(a);
  }
  // A lone surrogate is not UTF-8: it is stored as U+FFFD, as TextEncoder does.
  const a = heap.allocString("a\uD800b");
  assert.equal(heap.readString(a), "a\uFFFDb");
  heap.kfree(a);
  other.detach();
  heap.shrink();
  heap.validate();
  assert.equal(heap.stats().freePages, heap.stats().totalPages);
});

test("Symbol.dispose detaches the handle (so `using` works), once", () => {
  const heap = Heap.create({ size: 4 * MiB, cpus: 2 });
  const dispose = (Symbol as { dispose?: symbol }).dispose;
  if (dispose === undefined) {
    console.log("# this Node has no Symbol.dispose: skipped");
    return;
  }
  const other = Heap.attach(heap.buffer) as unknown as Record<symbol, () => void> & Heap;
  const a = other.kmalloc(100);
  other[dispose]!();
  assert.equal(other.attached, false);
  other[dispose]!(); // a second dispose is a no-op
  assert.equal(heap.stats().attached, 1);
  assert.throws(() => other.kmalloc(8), (e: unknown) => e instanceof HeapError && e.code === "EDETACHED");
  heap.kfree(a);
  heap.validate();
});

test("readString: a freed string is 'not a live allocation'; a zeroed block reads \"\" whatever its cache once ksize has room for the length and the NUL", () => {
  for (const debug of [false, true]) {
    const h = Heap.create({ size: 4 << 20, cpus: 1, debug });
    if (!debug) {
      const z = h.allocString("x");
      h.kfree(z);
      assert.throws(() => h.readString(z), (e: HeapError) => e.code === "EINVAL" && e.message === `EINVAL: readString: 0x${z.toString(16)} is not a live allocation: it was freed`);
    }
    for (const n of [4, 5, 12, 100]) {
      const c = h.createCache(`zeroed${n}`, n);
      for (const addr of [c.alloc(GFP.ZERO), h.kzalloc(n)]) {
        if (h.ksize(addr) >= 5) assert.equal(h.readString(addr), "", `${n} bytes, debug ${debug}`);
        else
          assert.throws(
            () => h.readString(addr),
            (e: HeapError) => e.message === `EINVAL: readString: 0x${addr.toString(16)} is not a string from allocString (an allocation of ${h.ksize(addr)} bytes, too small for the length word and the NUL)`,
          );
      }
    }
    h.detach();
  }
});
