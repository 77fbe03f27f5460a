/*
 * Growth of heaps placed in a buffer: kmalloc(4000) and kmalloc(8000) in a loop whose refills grow
 * the heap from 1 MiB towards 11 MiB, on a heap of its own, at an offset of a caller's growable
 * SharedArrayBuffer and at an offset of a shared WebAssembly.Memory. Every block must lie inside
 * the heap (offset..size) and inside the handle's views, none may be handed out twice, every
 * block keeps what was written to it, and validate() passes before and after they are freed.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Heap } from "../../src/index.js";
import { MiB } from "../support/util.js";
import { WA } from "../support/wasm.js";

const PLACEMENTS: ReadonlyArray<{ name: string; make: () => Heap }> = [
  { name: "a heap of its own", make: () => Heap.create({ size: 1 * MiB, maxSize: 11 * MiB }) },
  {
    name: "a caller's growable SharedArrayBuffer at offset 256 KiB",
    make: () => {
      const offset = 64 * 4096;
      const Sab = SharedArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => SharedArrayBuffer;
      return Heap.create({ buffer: new Sab(offset + 1 * MiB, { maxByteLength: offset + 11 * MiB }), offset, size: 1 * MiB, maxSize: 11 * MiB });
    },
  },
  {
    name: "a shared WebAssembly.Memory at offset 256 KiB",
    make: () => {
      const memory = new WA.Memory({ initial: 20, maximum: 400, shared: true });
      return Heap.create({ memory, offset: 4 * 65536, maxSize: 11 * MiB });
    },
  },
];

describe("growth of placed heaps", () => {
  for (const p of PLACEMENTS) {
    for (const size of [4000, 8000]) {
      test(`${p.name}: kmalloc(${size}) until the heap is full, every block inside the heap, none twice`, () => {
        const h = p.make();
        const start = h.size;
        const seen = new Set<number>();
        const live: number[] = [];
        for (;;) {
          const a = h.kmalloc(size);
          if (a === 0) break;
          assert.ok(a >= h.offset + 4096 && a + size <= h.size && a + size <= h.u8.length, `block ${a} (+${size}) lies outside the heap (${h.offset}..${h.size}, views ${h.u8.length} B)`);
          assert.ok(!seen.has(a), `block ${a} handed out twice`);
          seen.add(a);
          live.push(a);
          h.i32[a >> 2] = live.length;
          h.i32[(a + size - 4) >> 2] = -live.length;
        }
        assert.equal(h.size, h.maxSize, `the heap grew to its maxSize (from ${start})`);
        // 4000 B objects: 8 a slab of order 3; 8000 B: 4 a slab of order 3 (every 2^3-page block of the zone).
        const perBlock = size === 4000 ? 8 : 4;
        assert.ok(live.length >= perBlock * 300, `only ${live.length} blocks`);
        live.forEach((a, i) => {
          assert.equal(h.i32[a >> 2], i + 1, `block ${a} lost its first word`);
          assert.equal(h.i32[(a + size - 4) >> 2], -(i + 1), `block ${a} lost its last word`);
        });
        h.validate();
        for (const a of live) h.kfree(a);
        h.shrink();
        h.validate();
        const s = h.stats();
        assert.equal(s.freePages, s.totalPages);
        console.log(`# ${p.name}, kmalloc(${size}): ${live.length} blocks, heap ${start >> 10} -> ${h.size >> 10} KiB`);
      });
    }
  }
});
