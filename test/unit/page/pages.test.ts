import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { GFP, Heap } from "../../../src/index.js";
import { PCP_LIST_MAX_ORDER } from "../../../src/core/layout.js";
import { Rng, withSeed } from "../../support/rng.js";
import { code, unchanged } from "../../support/check.js";

const MiB = 1 << 20;



describe("heap lifecycle", () => {
  test("create and attach check their input", () => {
    assert.equal(code(() => Heap.create({ size: -1 })), "EINVAL");
    assert.equal(code(() => Heap.create({ size: 1.5 * MiB + 0.5 })), "EINVAL");
    assert.equal(code(() => Heap.create({ cpus: 0 })), "EINVAL");
    assert.equal(code(() => Heap.create({ size: 64 * 1024, cpus: 64 })), "EINVAL");
    assert.equal(code(() => Heap.create({ size: 8 * MiB, maxSize: 4 * MiB })), "EINVAL");
    assert.equal(code(() => Heap.create({ debug: { nonsense: true } as never })), "EINVAL");
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    assert.equal(h.size, 4 * MiB);
    assert.equal(h.pageSize, 4096);
    assert.equal(h.cpu, 0);
    assert.equal(h.u8.length, 4 * MiB);
    assert.equal(h.f64.length, MiB / 2);
    h.detach();
  });

  test("attach refuses buffers that are not heaps: EBADHEAP", () => {
    const rnd = new SharedArrayBuffer(1 * MiB);
    new Uint32Array(rnd).forEach((_, i, a) => (a[i] = Math.imul(i + 1, 2654435761)));
    assert.equal(code(() => Heap.attach(rnd)), "EBADHEAP");
    assert.equal(code(() => Heap.attach(new SharedArrayBuffer(1 * MiB))), "EBADHEAP");
    assert.equal(code(() => Heap.attach(new ArrayBuffer(1 * MiB) as unknown as SharedArrayBuffer)), "EBADHEAP");
    assert.equal(code(() => Heap.attach(new SharedArrayBuffer(16))), "EBADHEAP");
    const h = Heap.create({ size: 2 * MiB, cpus: 2 });
    // Another layout version.
    const copy = new SharedArrayBuffer(h.buffer.byteLength);
    new Uint8Array(copy).set(new Uint8Array(h.buffer));
    new Uint32Array(copy)[1]! += 1;
    assert.equal(code(() => Heap.attach(copy)), "EBADHEAP");
    // A truncated copy.
    const short = new SharedArrayBuffer(h.buffer.byteLength / 2);
    new Uint8Array(short).set(new Uint8Array(h.buffer, 0, short.byteLength));
    assert.equal(code(() => Heap.attach(short)), "EBADHEAP");
    h.detach();
  });

  test("slots: attach claims, ENOCPU when full, detach frees the slot for reuse, EDETACHED after", () => {
    const h = Heap.create({ size: 2 * MiB, cpus: 2 });
    const b = Heap.attach(h.buffer);
    assert.equal(b.cpu, 1);
    assert.equal(code(() => Heap.attach(h.buffer)), "ENOCPU");
    const p = b.allocPages(0);
    b.freePages(p, 0); // leaves the page cached in slot 1's pcp list
    assert.ok(h.stats().pcp[1]! > 0);
    b.detach();
    assert.equal(h.stats().pcp[1], 0, "detach drains the slot's pcp lists");
    assert.equal(code(() => b.allocPages(0)), "EDETACHED");
    assert.equal(code(() => b.kmalloc(8)), "EDETACHED");
    assert.equal(code(() => b.kfree(0)), "EDETACHED");
    assert.equal(code(() => b.stats()), "EDETACHED");
    assert.equal(code(() => b.detach()), "EDETACHED");
    const c = Heap.attach(h.buffer);
    assert.equal(c.cpu, 1, "the freed slot is reused");
    c.detach();
    h.validate();
    h.detach();
  });
});

describe("buddy allocator", () => {
  test("split and merge, with exact stats", () => {
    const h = Heap.create({ size: 8 * MiB, cpus: 2 });
    const s0 = h.stats();
    assert.equal(s0.freePages, s0.totalPages);
    assert.equal(s0.buddy.reduce((a, n, o) => a + (n << o), 0), s0.totalPages);
    // A block of order O (the lowest above the pcp list orders 0..PCP_LIST_MAX_ORDER) splits the
    // smallest free block of order >= O that exists: one block at each order from O up to below
    // it remains.
    const O = PCP_LIST_MAX_ORDER + 1;
    const pages = 1 << O;
    let from = O;
    while (s0.buddy[from] === 0) from++;
    const a = h.allocPages(O);
    assert.equal(a % (pages * 4096), 0, "blocks are aligned to their size");
    const s1 = h.stats();
    assert.equal(s1.freePages, s0.totalPages - pages);
    assert.equal(s1.buddy[from], s0.buddy[from]! - 1);
    for (let o = O; o < from; o++) assert.equal(s1.buddy[o], s0.buddy[o]! + 1, `order ${o}`);
    if (from > O) {
      const b = h.allocPages(O); // its buddy: no further split
      assert.equal(b ^ a, pages * 4096, "the second block is the first one's buddy");
      assert.equal(h.stats().buddy[O], s0.buddy[O]);
      h.validate();
      h.freePages(b, O);
    }
    h.freePages(a, O); // merges all the way up
    assert.deepEqual(h.stats().buddy, s0.buddy);
    assert.equal(h.stats().freePages, s0.totalPages);
    h.validate();
    h.detach();
  });

  test("pcp lists: refill a batch in one zone-lock hold, drain past high", () => {
    const h = Heap.create({ size: 8 * MiB, cpus: 2 });
    const s0 = h.stats();
    const batch = s0.pcpBatch;
    assert.equal(s0.pcpHigh, 4 * batch);
    const p = h.allocPages(0);
    let s = h.stats();
    assert.equal(s.pcp[0], batch - 1, "a refill moves `batch` pages to the pcp list");
    assert.equal(s.freePages, s0.totalPages - batch);
    assert.equal(s.vmstat.pcpRefill, 1);
    h.freePages(p, 0);
    assert.equal(h.stats().pcp[0], batch);
    // Free more than high pages: the list drains a batch back each time it passes high.
    const pages: number[] = [];
    for (let i = 0; i < 6 * batch; i++) pages.push(h.allocPages(0));
    for (const q of pages) h.freePages(q, 0);
    s = h.stats();
    assert.ok(s.pcp[0]! <= s.pcpHigh, `pcp ${s.pcp[0]} stays at or below high ${s.pcpHigh}`);
    assert.ok(s.vmstat.pcpDrain >= 1);
    h.validate();
    h.shrink();
    s = h.stats();
    assert.equal(s.pcp[0], 0);
    assert.equal(s.freePages, s.totalPages);
    assert.deepEqual(s.buddy, s0.buddy);
    h.detach();
  });

  test("bad input throws and leaves the heap exactly as it was", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    const a = h.allocPages(2);
    const b = h.allocPages(5);
    const k = h.kmalloc(64);
    for (const order of [-1, 11, 1.5, NaN, "1" as unknown as number]) unchanged(h, "EINVAL", () => h.allocPages(order));
    unchanged(h, "EINVAL", () => h.allocPages(0, 1 << 12));
    unchanged(h, "EINVAL", () => h.freePages(a, 3)); // wrong order
    unchanged(h, "EINVAL", () => h.freePages(a + 4096, 0)); // a tail page
    unchanged(h, "EINVAL", () => h.freePages(a + 8, 2)); // not a page address
    unchanged(h, "EINVAL", () => h.freePages(0, 0)); // the header
    unchanged(h, "EINVAL", () => h.freePages(h.size, 0)); // outside the heap
    unchanged(h, "EINVAL", () => h.freePages(k & ~4095, 0)); // a slab page
    h.freePages(b, 5);
    unchanged(h, "EDOUBLEFREE", () => h.freePages(b, 5)); // already free
    unchanged(h, "EDOUBLEFREE", () => h.freePages(b + 4096 * 8, 3)); // inside a free block
    h.freePages(a, 2);
    unchanged(h, "EDOUBLEFREE", () => h.freePages(a, 2)); // free on the pcp list
    h.kfree(k);
    h.validate();
    h.detach();
  });

  test("GFP flags: ZERO, FAST_TRY, ATOMIC reserve, KERNEL direct reclaim", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    const s0 = h.stats();
    // ZERO
    const p = h.allocPages(1);
    h.u8.fill(0xee, p, p + 8192);
    h.freePages(p, 1);
    const z = h.allocPages(1, GFP.ZERO);
    assert.ok(h.u8.subarray(z, z + 8192).every((x) => x === 0));
    h.freePages(z, 1);
    h.shrink();
    // FAST_TRY: the pcp list only, never the zone.
    assert.equal(h.allocPages(0, GFP.FAST_TRY), 0, "empty pcp list: FAST_TRY fails");
    assert.equal(h.stats().vmstat.fastTryFail, 1);
    assert.equal(h.stats().freePages, s0.totalPages, "FAST_TRY did not touch the zone");
    h.freePages(h.allocPages(0), 0);
    const f = h.allocPages(0, GFP.FAST_TRY);
    assert.notEqual(f, 0, "FAST_TRY takes a cached page");
    h.freePages(f, 0);
    assert.equal(h.allocPages(4, GFP.FAST_TRY), 0, "orders above the pcp lists fail under FAST_TRY");
    // Exhaust with NOWAIT: stops at the min watermark.
    const held: number[] = [];
    for (let q; (q = h.allocPages(0, GFP.NOWAIT)) !== 0; ) held.push(q);
    const left = h.stats().freePages + h.stats().pcp.reduce((a, b) => a + b, 0);
    assert.ok(left >= s0.watermarks.min - 1, `NOWAIT leaves the reserve (${left} pages left, min ${s0.watermarks.min})`);
    // KERNEL drains the pcp lists (direct reclaim) before giving up.
    for (let q; (q = h.allocPages(0)) !== 0; ) held.push(q);
    assert.ok(h.stats().vmstat.directReclaim >= 1);
    // ATOMIC may dip below min.
    const atomic = h.allocPages(0, GFP.ATOMIC);
    assert.notEqual(atomic, 0, "GFP.ATOMIC uses the reserve");
    held.push(atomic);
    assert.ok(h.stats().vmstat.allocFail >= 1);
    assert.equal(h.allocPages(0, GFP.NOWAIT | GFP.NOWARN), 0);
    h.validate();
    for (const q of held) h.freePages(q, 0);
    h.shrink();
    assert.equal(h.stats().freePages, s0.totalPages);
    h.validate();
    h.detach();
  });

  test("allocPagesBulk fills the array and counts", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    const out = new Uint32Array(100);
    assert.equal(h.allocPagesBulk(100, out), 100);
    assert.equal(new Set(out).size, 100);
    for (const p of out) assert.equal(p % 4096, 0);
    const arr: number[] = [];
    assert.equal(h.allocPagesBulk(10, arr, GFP.ZERO), 10);
    assert.equal(code(() => h.allocPagesBulk(200, out)), "EINVAL");
    assert.equal(code(() => h.allocPagesBulk(-1, arr)), "EINVAL");
    h.validate();
    for (const p of out) h.freePages(p, 0);
    for (const p of arr) h.freePages(p, 0);
    h.shrink();
    assert.equal(h.stats().freePages, h.stats().totalPages);
    h.detach();
  });

  test("seeded random allocPages/freePages with validate() after every step", () => {
    const rng = new Rng();
    withSeed(rng, () => {
      const h = Heap.create({ size: 4 * MiB, cpus: 2 });
      const live: { addr: number; order: number; sig: number }[] = [];
      for (let step = 0; step < 3000; step++) {
        if (live.length === 0 || rng.next() < 0.55) {
          const order = rng.next() < 0.8 ? rng.range(0, 3) : rng.range(4, 7);
          const gfp = rng.pick([GFP.KERNEL, GFP.NOWAIT, GFP.ATOMIC, GFP.ZERO]);
          const addr = h.allocPages(order, gfp);
          if (addr !== 0) {
            assert.equal(addr % (4096 << order), 0);
            const sig = rng.range(1, 0x7fffffff);
            for (let p = addr; p < addr + (4096 << order); p += 4096) h.i32[p >> 2] = sig;
            live.push({ addr, order, sig });
          }
        } else {
          const i = rng.range(0, live.length - 1);
          const b = live[i]!;
          live[i] = live[live.length - 1]!;
          live.pop();
          for (let p = b.addr; p < b.addr + (4096 << b.order); p += 4096) assert.equal(h.i32[p >> 2], b.sig, "a block was overwritten");
          h.freePages(b.addr, b.order);
        }
        h.validate();
      }
      for (const b of live) h.freePages(b.addr, b.order);
      h.shrink();
      const s = h.stats();
      assert.equal(s.freePages, s.totalPages);
      h.validate();
      h.detach();
    });
  });
});

describe("memory hotplug", () => {
  test("grow() adds pages to the zone, merged with their buddies; other handles see them", () => {
    const h = Heap.create({ size: 2 * MiB, maxSize: 8 * MiB, cpus: 2 });
    const other = Heap.attach(h.buffer);
    const s0 = h.stats();
    assert.equal(h.maxSize, 8 * MiB);
    assert.equal(code(() => h.grow(9 * MiB)), "EINVAL");
    assert.equal(h.grow(6 * MiB - 100), 6 * MiB);
    assert.equal(h.size, 6 * MiB);
    assert.equal(h.u8.length, 6 * MiB, "this handle's views were rebuilt");
    const s1 = h.stats();
    assert.equal(s1.totalPages, s0.totalPages + 1024);
    assert.equal(s1.freePages, s1.totalPages);
    assert.equal(s1.vmstat.heapGrow, 1);
    h.validate();
    // The other handle meets an address in the new pages and rebuilds its views.
    // 4 MiB, aligned: no such block fits below 6 MiB, so GFP.KERNEL grows the heap once more.
    const big = h.allocPages(10);
    assert.equal(big, 4 * MiB);
    assert.equal(h.size, 8 * MiB);
    assert.equal(other.size, 2 * MiB);
    other.freePages(big, 10); // an address beyond its views: it rebuilds them
    assert.equal(other.size, 8 * MiB);
    other.detach();
    h.validate();
    h.detach();
  });

  test("GFP.KERNEL grows the heap before it gives up; NOWAIT does not", () => {
    const h = Heap.create({ size: 2 * MiB, maxSize: 16 * MiB, cpus: 2 });
    const pages: number[] = [];
    const held: number[] = [];
    for (let a; (a = h.allocPages(3, GFP.NOWAIT)) !== 0; ) pages.push(a);
    assert.equal(h.size, 2 * MiB, "NOWAIT never grows the heap");
    for (let i = 0; i < 200; i++) {
      const a = h.kmalloc(30000);
      assert.notEqual(a, 0, `allocation ${i} grew the heap`);
      held.push(a);
    }
    assert.ok(h.size > 2 * MiB && h.size <= 16 * MiB);
    assert.ok(h.stats().vmstat.heapGrow >= 1);
    h.validate();
    let more = 0;
    for (let a; (a = h.kmalloc(30000)) !== 0; more++) held.push(a);
    assert.equal(h.size, 16 * MiB, "it stops at maxSize");
    h.validate();
    for (const a of held) h.kfree(a);
    for (const a of pages) h.freePages(a, 3);
    h.shrink();
    assert.equal(h.stats().freePages, h.stats().totalPages);
    h.validate();
    const copy = Heap.attach(h.buffer);
    assert.equal(copy.size, 16 * MiB, "attach sees the grown size");
    copy.detach();
    h.detach();
  });
});
