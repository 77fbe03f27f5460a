import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { GFP, Heap, HeapError, KMALLOC_SIZES, type SlabStats } from "../../../src/index.js";
import { Rng, withSeed } from "../../support/rng.js";
import { code, unchanged } from "../../support/check.js";

const MiB = 1 << 20;


function cache(h: Heap, name: string): SlabStats {
  const s = h.stats().slabs.find((c) => c.name === name);
  assert.ok(s, `no cache ${name}`);
  return s;
}

function pick(s: SlabStats): Partial<SlabStats> {
  const { activeObjects, totalObjects, slabs, pages, sheafObjects, barnObjects, partialSlabs, fullSlabs } = s;
  return { activeObjects, totalObjects, slabs, pages, sheafObjects, barnObjects, partialSlabs, fullSlabs };
}


describe("kmalloc", () => {
  test("size classes, geometry and exact stats after a scripted sequence", () => {
    const h = Heap.create({ size: 8 * MiB, cpus: 2 });
    const names = h.stats().slabs.map((s) => s.name);
    assert.deepEqual(names, ["kmem_cache_sheaf", ...KMALLOC_SIZES.map((s) => (s >= 1024 ? `kmalloc-${s >> 10}k` : `kmalloc-${s}`))]);
    const k64 = cache(h, "kmalloc-64");
    assert.equal(k64.order, 0);
    assert.equal(k64.objectsPerSlab, 64);
    assert.equal(k64.sheafCapacity, 124);
    assert.equal(cache(h, "kmalloc-512").sheafCapacity, 26);
    assert.equal(cache(h, "kmalloc-2k").sheafCapacity, 12);
    assert.equal(cache(h, "kmalloc-8k").sheafCapacity, 4);
    for (const s of h.stats().slabs) {
      const bytes = 4096 << s.order;
      assert.ok((bytes - s.objectsPerSlab * s.size) * 8 <= bytes, `${s.name}: waste under 1/8`);
    }
    // One kmalloc(64): a new slab of 64 objects goes whole into a new sheaf (room for 124), one is handed out.
    const a = h.kmalloc(64);
    assert.equal(a % 64, 0);
    assert.deepEqual(pick(cache(h, "kmalloc-64")), { activeObjects: 1, totalObjects: 64, slabs: 1, pages: 1, sheafObjects: 63, barnObjects: 0, partialSlabs: 0, fullSlabs: 1 });
    assert.equal(cache(h, "kmem_cache_sheaf").activeObjects, 1, "one sheaf in use");
    // 63 more: the sheaf empties; the next one refills it from a second slab.
    const more: number[] = [];
    for (let i = 0; i < 63; i++) more.push(h.kmalloc(60));
    assert.deepEqual(pick(cache(h, "kmalloc-64")), { activeObjects: 64, totalObjects: 64, slabs: 1, pages: 1, sheafObjects: 0, barnObjects: 0, partialSlabs: 0, fullSlabs: 1 });
    more.push(h.kmalloc(33));
    assert.deepEqual(pick(cache(h, "kmalloc-64")), { activeObjects: 65, totalObjects: 128, slabs: 2, pages: 2, sheafObjects: 63, barnObjects: 0, partialSlabs: 0, fullSlabs: 2 });
    h.validate();
    // Free them all: 61 go back to the sheaf... then the spare, then the barn.
    h.kfree(a);
    for (const o of more) h.kfree(o);
    const s = cache(h, "kmalloc-64");
    assert.equal(s.activeObjects, 0);
    assert.equal(s.sheafObjects + s.barnObjects + (s.totalObjects - s.sheafObjects - s.barnObjects), 128);
    h.validate();
    // detach-like flush: shrink returns everything; every page is free.
    h.shrink();
    assert.deepEqual(pick(cache(h, "kmalloc-64")), { activeObjects: 0, totalObjects: 0, slabs: 0, pages: 0, sheafObjects: 0, barnObjects: 0, partialSlabs: 0, fullSlabs: 0 });
    assert.equal(h.stats().freePages, h.stats().totalPages);
    h.validate();
    h.detach();
  });

  test("sheaves: the spare and then the barn absorb frees; the barn feeds allocations", () => {
    const h = Heap.create({ size: 8 * MiB, cpus: 2 });
    const objs: number[] = [];
    for (let i = 0; i < 600; i++) objs.push(h.kmalloc(16));
    for (const o of objs) h.kfree(o);
    const s = cache(h, "kmalloc-16");
    assert.equal(s.activeObjects, 0);
    assert.ok(s.barnFull >= 1 && s.barnFull <= 10, `barn holds full sheaves (${s.barnFull})`);
    assert.equal(s.barnObjects, s.barnFull * s.sheafCapacity);
    assert.ok(h.stats().vmstat.barnPut >= 1);
    const before = h.stats().vmstat.barnGet;
    for (let i = 0; i < 200; i++) objs[i] = h.kmalloc(16);
    assert.ok(h.stats().vmstat.barnGet > before, "allocation took full sheaves from the barn");
    for (let i = 0; i < 200; i++) h.kfree(objs[i]!);
    h.validate();
    h.detach();
  });

  test("large sizes come from the page allocator and kfree frees them", () => {
    const h = Heap.create({ size: 8 * MiB, cpus: 2 });
    const a = h.kmalloc(8193);
    assert.equal(a % 4096, 0);
    assert.equal(h.ksize(a), 12288 <= 16384 ? 16384 : 0);
    const b = h.kmalloc(64 * 1024);
    assert.equal(h.ksize(b), 64 * 1024);
    assert.equal(h.stats().vmstat.kmallocLarge, 2);
    h.validate();
    unchanged(h, "EINVAL", () => h.freePages(a, 2)); // not an allocPages block
    unchanged(h, "EINVAL", () => h.kfree(a + 4096)); // inside it
    h.kfree(a);
    h.kfree(b);
    unchanged(h, "EINVAL", () => h.kfree(b)); // a free page
    unchanged(h, "EINVAL", () => h.kmalloc(8 << 20)); // above the largest kmalloc, 4 MiB: never possible
    const big = h.kmalloc(4 << 20); // the largest kmalloc: this 8 MiB heap has one such block
    assert.notEqual(big, 0);
    assert.equal(h.kmalloc(4 << 20), 0, "no second block of 4 MiB: 0, not an error");
    h.kfree(big);
    h.shrink();
    assert.equal(h.stats().freePages, h.stats().totalPages);
    h.detach();
  });

  test("bad frees: EINVAL or EDOUBLEFREE, heap unchanged", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    const a = h.kmalloc(100); // kmalloc-128
    const b = h.kmalloc(100);
    const p = h.allocPages(0);
    unchanged(h, "EINVAL", () => h.kfree(a + 8)); // inside an object
    unchanged(h, "EINVAL", () => h.kfree(h.size + 4096)); // outside the heap
    unchanged(h, "EINVAL", () => h.kfree(-8));
    unchanged(h, "EINVAL", () => h.kfree(1.5));
    unchanged(h, "EINVAL", () => h.kfree(64)); // the header
    unchanged(h, "EINVAL", () => h.kfree(p)); // a page block from allocPages
    unchanged(h, "EINVAL", () => h.kfree(h.stats().totalPages * 4096 + 0)); // likely a free page or beyond
    h.kfree(b);
    unchanged(h, "EDOUBLEFREE", () => h.kfree(b)); // already in this slot's sheaf
    h.kfree(a);
    unchanged(h, "EDOUBLEFREE", () => h.kfree(a));
    // An object back on its slab's freelist: flush with shrink, then free again.
    h.shrink();
    const c = h.kmalloc(100);
    h.kfree(c);
    h.shrink();
    unchanged(h, "EINVAL", () => h.kfree(c)); // its slab went back to the page allocator: a free page
    const keep = h.kmalloc(100); // keeps a slab alive
    const d = h.kmalloc(100);
    h.kfree(d);
    h.shrink();
    unchanged(h, "EDOUBLEFREE", () => h.kfree(d)); // on its slab's freelist
    h.kfree(keep);
    h.freePages(p, 0);
    unchanged(h, "EINVAL", () => h.kmalloc(0));
    unchanged(h, "EINVAL", () => h.kmalloc(-1));
    unchanged(h, "EINVAL", () => h.kmalloc(2.5));
    unchanged(h, "EINVAL", () => h.kmalloc(8, 999));
    h.validate();
    h.detach();
  });

  test("kzalloc, krealloc, ksize, kfreeBulk", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    const a = h.kmalloc(64);
    h.u8.fill(0xaa, a, a + 64);
    h.kfree(a);
    const z = h.kzalloc(64);
    assert.equal(z, a, "LIFO: the same object comes back");
    assert.ok(h.u8.subarray(z, z + 64).every((x) => x === 0));
    assert.equal(h.ksize(z), 64);
    assert.equal(h.ksize(h.kmalloc(65)), 96);
    // krealloc in place while the class fits, moved (contents kept) when it grows out of it.
    h.u8.fill(7, z, z + 40);
    assert.equal(h.krealloc(z, 50), z);
    const g = h.krealloc(z, 300);
    assert.notEqual(g, z);
    assert.equal(h.ksize(g), 512);
    assert.ok(h.u8.subarray(g, g + 40).every((x) => x === 7));
    assert.equal(code(() => h.kfree(z)), "EDOUBLEFREE", "the old block was freed");
    // GFP.ZERO: shrinking zeroes the slack so that growing back in place reads zeros.
    h.u8.fill(9, g, g + 512);
    assert.equal(h.krealloc(g, 100, GFP.ZERO), g);
    assert.ok(h.u8.subarray(g + 100, g + 512).every((x) => x === 0));
    assert.equal(h.krealloc(g, 400, GFP.ZERO), g);
    assert.ok(h.u8.subarray(g + 100, g + 400).every((x) => x === 0));
    const n = h.krealloc(0, 10); // addr 0 allocates
    assert.equal(h.ksize(n), 16);
    assert.equal(h.krealloc(n, 0), 0); // size 0 frees
    assert.equal(code(() => h.kfree(n)), "EDOUBLEFREE");
    h.kfree(g);
    // kfreeBulk checks every address before freeing any.
    const xs = [h.kmalloc(8), h.kmalloc(200), h.kmalloc(20000), 0];
    unchanged(h, "EINVAL", () => h.kfreeBulk([xs[0]!, xs[1]! + 8]));
    unchanged(h, "EDOUBLEFREE", () => h.kfreeBulk([xs[0]!, xs[0]!]));
    h.kfreeBulk(xs);
    unchanged(h, "EDOUBLEFREE", () => h.kfreeBulk([xs[1]!]));
    h.validate();
    h.detach();
  });

  test("seeded random kmalloc/kfree of 8 B to 64 KiB with validate()", () => {
    const rng = new Rng();
    withSeed(rng, () => {
      const h = Heap.create({ size: 16 * MiB, cpus: 2 });
      const live: { addr: number; size: number; sig: number }[] = [];
      for (let step = 0; step < 6000; step++) {
        if (live.length === 0 || rng.next() < 0.52) {
          const size = rng.next() < 0.9 ? rng.range(1, 1024) : rng.range(1025, 65536);
          const addr = rng.next() < 0.1 ? h.kzalloc(size) : h.kmalloc(size);
          if (addr === 0) continue;
          assert.ok(h.ksize(addr) >= size);
          const sig = rng.range(1, 255);
          h.u8.fill(sig, addr, addr + size);
          live.push({ addr, size, sig });
        } else {
          const i = rng.range(0, live.length - 1);
          const b = live[i]!;
          live[i] = live[live.length - 1]!;
          live.pop();
          const bytes = h.u8.subarray(b.addr, b.addr + b.size);
          assert.ok(bytes.every((x) => x === b.sig), `block ${b.addr} of ${b.size} bytes was overwritten`);
          h.kfree(b.addr);
        }
        if (step % 50 === 0) h.validate();
      }
      h.validate();
      for (const b of live) h.kfree(b.addr);
      h.shrink();
      const s = h.stats();
      assert.equal(s.freePages, s.totalPages);
      for (const c of s.slabs) assert.equal(c.totalObjects, 0, `${c.name} was shrunk`);
      h.validate();
      h.detach();
    });
  });
});

describe("named caches", () => {
  test("create, find from another handle, alloc, free, bulk, exact stats", () => {
    const h = Heap.create({ size: 8 * MiB, cpus: 2 });
    const c = h.createCache("node", 40, { align: 16 });
    assert.equal(c.name, "node");
    assert.equal(c.objectSize, 40);
    const other = Heap.attach(h.buffer);
    const found = other.findCache("node");
    assert.ok(found);
    assert.equal(found.objectSize, 40);
    assert.equal(other.findCache("missing"), null);
    assert.equal(code(() => h.createCache("node", 8)), "EINVAL", "names are unique");
    const a = c.alloc();
    assert.equal(a % 16, 0);
    let s = c.stats();
    assert.equal(s.size, 48);
    assert.equal(s.activeObjects, 1);
    assert.equal(s.totalObjects, s.objectsPerSlab);
    found.free(a); // freed by another agent into its own sheaf
    s = c.stats();
    assert.equal(s.activeObjects, 0);
    // The refill took one new slab (85 objects of 48 B), fewer than a sheaf holds: 84 in slot 0's sheaf, 1 in slot 1's.
    assert.equal(s.objectsPerSlab, 85);
    assert.equal(s.sheafObjects, 85);
    const out = new Uint32Array(100);
    assert.equal(c.allocBulk(100, out), 100);
    assert.equal(c.stats().activeObjects, 100);
    unchanged(h, "EINVAL", () => c.freeBulk([out[0]!, out[1]! + 8]));
    c.freeBulk(out);
    assert.equal(c.stats().activeObjects, 0);
    h.validate();
    other.detach();
    c.destroy();
    assert.equal(h.findCache("node"), null);
    assert.equal(code(() => c.alloc()), "EINVAL");
    h.shrink();
    assert.equal(h.stats().freePages, h.stats().totalPages);
    h.detach();
  });

  test("a cache's objects through the wrong cache are EINVAL; destroy with live objects is refused", () => {
    const h = Heap.create({ size: 8 * MiB, cpus: 2 });
    const x = h.createCache("x", 64);
    const y = h.createCache("y", 64);
    const o = x.alloc();
    const k = h.kmalloc(64);
    unchanged(h, "EINVAL", () => y.free(o));
    unchanged(h, "EINVAL", () => y.free(k));
    unchanged(h, "EINVAL", () => x.free(o + 4));
    const before = x.stats();
    try {
      x.destroy();
      assert.fail("destroy with a live object must throw");
    } catch (e) {
      assert.ok(e instanceof HeapError);
      assert.equal(e.code, "EBUSY");
      assert.match(e.message, /1 live object/);
    }
    assert.equal(x.stats().activeObjects, before.activeObjects);
    const o2 = x.alloc(); // still works
    x.free(o2);
    h.kfree(o); // kfree works on cache objects too
    x.destroy();
    y.destroy();
    h.kfree(k);
    // The name can be used again.
    const x2 = h.createCache("x", 128);
    x2.free(x2.alloc());
    x2.destroy();
    h.shrink();
    assert.equal(h.stats().freePages, h.stats().totalPages);
    h.validate();
    h.detach();
  });

  test("createCache checks its input", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    assert.equal(code(() => h.createCache("", 8)), "EINVAL");
    assert.equal(code(() => h.createCache("a", 0)), "EINVAL");
    assert.equal(code(() => h.createCache("a", 1.5)), "EINVAL");
    assert.equal(code(() => h.createCache("a", 1 << 20)), "EINVAL");
    assert.equal(code(() => h.createCache("a", 8, { align: 3 })), "EINVAL");
    assert.equal(code(() => h.createCache("x".repeat(65), 8)), "EINVAL");
    const big = h.createCache("big", 32768);
    const b = big.alloc();
    assert.notEqual(b, 0);
    big.free(b);
    big.destroy();
    h.detach();
  });
});
