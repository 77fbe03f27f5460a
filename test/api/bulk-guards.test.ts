/*
 * Bulk calls are all or nothing: EDEADLK from a handler holding a lock comes before the first object
 * is freed or taken. Their `out` may not lie over the heap's metadata, another heap's header or free
 * memory; inside a live allocation of the heap it works.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Heap } from "../../src/index.js";
import { errCode } from "../support/common.js";

const MiB = 1 << 20;


describe("bulk calls from a handler holding the zone lock", () => {
  for (const which of ["kfreeBulk", "freeBulk", "allocBulk"] as const) {
    test(`${which}: EDEADLK before anything changes, then it works outside`, () => {
      const heap = Heap.create({ size: 8 * MiB, cpus: 2 });
      const c = heap.createCache("c", 64);
      const objs = Array.from({ length: 300 }, () => (which === "kfreeBulk" ? heap.kmalloc(64) : c.alloc()));
      const name = which === "kfreeBulk" ? "kmalloc-64" : "c";
      const active = (): number => heap.stats().slabs.find((s) => s.name === name)!.activeObjects;
      const call = (): void => {
        if (which === "kfreeBulk") heap.kfreeBulk(objs);
        else if (which === "freeBulk") c.freeBulk(objs);
        else assert.equal(c.allocBulk(300, []), 300);
      };
      let res = "handler not run";
      let before = -1;
      let after = -1;
      heap.trace.on("mm_page_alloc_zone_locked", () => {
        if (before >= 0) return;
        before = active();
        res = errCode(call);
        after = active();
      });
      const p = heap.allocPages(9); // from the zone: the handler runs with the zone lock held
      heap.trace.clear();
      assert.equal(res, "EDEADLK");
      assert.equal(before, 300);
      assert.equal(after, 300);
      assert.equal(errCode(call), "no error");
      assert.equal(active(), which === "allocBulk" ? 600 : 0);
      heap.freePages(p, 9);
      heap.validate();
    });
  }
});

describe("a bulk call's out over the heap's own buffer", () => {
  test("over the header, the per-CPU blocks, the descriptors: EINVAL, nothing taken, the magic intact", () => {
    const heap = Heap.create({ size: 4 * MiB, cpus: 2 });
    const c = heap.createCache("c", 40);
    const magic = heap.u32[0];
    const free = heap.stats().freePages;
    const zone = heap.stats().totalPages; // pages of the zone; the metadata lies below it
    for (const at of [0, 4096, (heap.size - zone * 4096) - 8]) {
      const view = new Uint32Array(heap.buffer, at, 2);
      assert.equal(errCode(() => heap.allocPagesBulk(2, view)), "EINVAL", `allocPagesBulk at ${at}`);
      assert.equal(errCode(() => c.allocBulk(2, view)), "EINVAL", `allocBulk at ${at}`);
    }
    assert.equal(heap.u32[0], magic);
    assert.equal(heap.stats().freePages, free);
    assert.equal(c.stats().activeObjects, 0);
    heap.validate();
  });

  test("over free memory: EINVAL; inside an allocArray or a page block: it works; past an allocation's end: EINVAL", () => {
    const heap = Heap.create({ size: 4 * MiB, cpus: 2 });
    const c = heap.createCache("c", 40);
    const p = heap.allocPages(0);
    heap.freePages(p, 0);
    heap.shrink();
    assert.equal(errCode(() => heap.allocPagesBulk(1, new Uint32Array(heap.buffer, p, 1))), "EINVAL");
    const arr = heap.allocArray(Uint32Array, 4)!;
    assert.equal(heap.allocPagesBulk(4, arr), 4);
    for (const a of arr) heap.freePages(a, 0);
    assert.equal(c.allocBulk(4, arr), 4);
    c.freeBulk(arr);
    const fit = heap.ksize(arr.byteOffset) >> 2; // entries the allocation really holds
    assert.equal(errCode(() => c.allocBulk(fit + 1, new Uint32Array(heap.buffer, arr.byteOffset, fit + 1))), "EINVAL");
    assert.equal(c.stats().activeObjects, 0);
    const block = heap.allocPages(1);
    const out = new Uint32Array(heap.buffer, block + 4096, 1024);
    assert.equal(heap.allocPagesBulk(1024 - 800, out), 224);
    for (let i = 0; i < 224; i++) heap.freePages(out[i]!, 0);
    assert.equal(errCode(() => heap.allocPagesBulk(2, new Uint32Array(heap.buffer, block + 8192 - 4, 2))), "EINVAL");
    heap.freePages(block, 1);
    heap.freeArray(arr);
    heap.validate();
  });

  test("over another heap's header in the same buffer: EINVAL, that heap untouched", () => {
    const buf = new SharedArrayBuffer(8 * MiB);
    const b = Heap.create({ buffer: buf, offset: 0, size: 4 * MiB, cpus: 2 });
    const a = Heap.create({ buffer: buf, offset: 4 * MiB, cpus: 2 });
    const magic = b.u32[0];
    assert.equal(errCode(() => a.allocPagesBulk(1, new Uint32Array(buf, 0, 1))), "EINVAL");
    assert.equal(errCode(() => a.allocPagesBulk(1, new Uint32Array(buf, 8, 1))), "EINVAL");
    assert.equal(b.u32[0], magic);
    const h = Heap.attach(buf);
    assert.equal(h.offset, 0);
    h.detach();
    b.validate();
    a.validate();
  });
});
