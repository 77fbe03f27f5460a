import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { GFP, Heap, HeapError, type TraceRecord } from "../../../src/index.js";
import { Rng, withSeed } from "../../support/rng.js";
import { caught, figures } from "../../support/check.js";

const MiB = 1 << 20;



function debugHeap(): { h: Heap; reports: TraceRecord[] } {
  const h = Heap.create({ size: 8 * MiB, cpus: 4, debug: true });
  const reports: TraceRecord[] = [];
  h.trace.on("slab_error", (r) => reports.push(r));
  return { h, reports };
}

describe("debug mode", () => {
  test("a write one byte past a 64 B object is reported at free, with cache, address and offset", () => {
    const { h, reports } = debugHeap();
    const a = h.kmalloc(64);
    h.u8[a + 64] = 1;
    const before = figures(h);
    const e = caught(() => h.kfree(a));
    assert.equal(e.code, "ECORRUPT");
    assert.match(e.message, /write past the end/);
    assert.match(e.message, /kmalloc-64/);
    assert.match(e.message, new RegExp(`0x${a.toString(16)}`));
    assert.match(e.message, /offset 64/);
    assert.equal(reports.length, 1);
    assert.equal(reports[0]!.addr, a);
    assert.equal(reports[0]!.cache, "kmalloc-64");
    assert.equal(figures(h), before, "the object is still allocated, nothing moved");
    h.validate();
    h.kfree(a); // the redzone was restored: the free goes through now
    h.validate();
    h.detach();
  });

  test("kmalloc(18) and writes to bytes 18 and 19 are reported", () => {
    const { h } = debugHeap();
    for (const off of [18, 19]) {
      const a = h.kmalloc(18);
      assert.equal(h.ksize(a), 18, "in debug mode the usable size is what was asked for");
      h.u8[a + 17] = 0x55; // inside: fine
      h.u8[a + off] = 0x55;
      const e = caught(() => h.kfree(a));
      assert.equal(e.code, "ECORRUPT");
      assert.match(e.message, new RegExp(`offset ${off}`));
      h.kfree(a);
    }
    h.validate();
    h.detach();
  });

  test("a write to a freed object is reported at its next allocation", () => {
    const { h, reports } = debugHeap();
    const a = h.kmalloc(64);
    h.kfree(a);
    h.u8[a + 40] = 0; // use after free
    const e = caught(() => h.kmalloc(64)); // LIFO: the same object is next
    assert.equal(e.code, "ECORRUPT");
    assert.match(e.message, /write to freed object/);
    assert.match(e.message, /offset 40/);
    assert.equal(reports.at(-1)!.addr, a);
    h.validate();
    const b = h.kmalloc(64); // the poison was restored and the object put back
    h.kfree(b);
    h.validate();
    h.detach();
  });

  test("krealloc keeps the redzones when shrinking and growing and zeroes new bytes under GFP.ZERO", () => {
    const { h } = debugHeap();
    const a = h.kmalloc(100); // kmalloc-128
    h.u8.fill(0x11, a, a + 100);
    assert.equal(h.krealloc(a, 60), a);
    assert.equal(h.ksize(a), 60);
    h.u8[a + 60] = 1; // now past the end
    assert.equal(caught(() => h.kfree(a)).code, "ECORRUPT");
    assert.equal(h.krealloc(a, 120, GFP.ZERO), a, "grows in place within kmalloc-128");
    assert.ok(h.u8.subarray(a + 60, a + 120).every((x) => x === 0), "new bytes zeroed");
    assert.ok(h.u8.subarray(a, a + 60).every((x) => x === 0x11), "old bytes kept");
    h.u8[a + 120] = 1;
    assert.equal(caught(() => h.kfree(a)).code, "ECORRUPT");
    const b = h.krealloc(a, 1000, GFP.ZERO); // moves
    assert.notEqual(b, a);
    assert.ok(h.u8.subarray(b, b + 120).every((x, i) => x === (i < 60 ? 0x11 : 0)));
    assert.ok(h.u8.subarray(b + 120, b + 1000).every((x) => x === 0));
    h.u8[b + 1000] = 1;
    assert.equal(caught(() => h.kfree(b)).code, "ECORRUPT");
    h.kfree(b);
    h.validate();
    h.detach();
  });

  test("every double free and every free of something not live is caught, the heap unchanged", () => {
    const { h } = debugHeap();
    const other = Heap.attach(h.buffer);
    const a = h.kmalloc(64);
    const b = h.kmalloc(64);
    other.kfree(b); // b sits in the other slot's sheaf
    const foreign = Heap.create({ size: 4 * MiB, cpus: 2, debug: true });
    const f = foreign.kmalloc(64);
    const cases: [string, () => unknown][] = [
      ["EDOUBLEFREE", () => h.kfree(b)], // free in another slot's sheaf: only debug tracking sees it
      ["EINVAL", () => h.kfree(a + 8)], // the middle of an object
      ["EINVAL", () => h.kfree(f + h.size)], // another heap's address, beyond this heap
    ];
    for (const [want, fn] of cases) {
      const before = figures(h);
      assert.equal(caught(fn).code, want);
      assert.equal(figures(h), before);
      h.validate();
    }
    h.kfree(a);
    const before = figures(h);
    assert.equal(caught(() => h.kfree(a)).code, "EDOUBLEFREE");
    assert.equal(figures(h), before);
    // kfreeRcu then kfree: the object is queued, not live.
    h.freePages(h.allocPages(0), 0);
    const c = h.kmalloc(64);
    h.kfreeRcu(c);
    assert.equal(caught(() => h.kfree(c)).code, "EDOUBLEFREE");
    assert.equal(caught(() => h.kfreeRcu(c)).code, "EDOUBLEFREE");
    h.rcuBarrier();
    h.validate();
    other.detach();
    assert.equal(caught(() => other.kfree(a)).code, "EDETACHED");
    foreign.kfree(f);
    foreign.detach();
    h.detach();
  });

  test("kfreeRcu that finds no room inside a read section throws EDEADLK and leaves the object live", () => {
    const { h } = debugHeap();
    const objs: number[] = [];
    for (let i = 0; i < 120; i++) objs.push(h.kmalloc(32));
    const filler: number[] = [];
    for (let p; (p = h.allocPages(0, GFP.ATOMIC)) !== 0; ) filler.push(p); // no page for a block
    h.rcuReadLock();
    let refused = 0;
    for (const o of objs) {
      try {
        h.kfreeRcu(o); // the emergency array takes the first ones
      } catch (e) {
        assert.ok(e instanceof HeapError && e.code === "EDEADLK");
        refused++;
        h.kfree(o); // still the caller's: a plain free works
      }
    }
    h.rcuReadUnlock();
    assert.ok(refused > 0, "the emergency array filled up");
    h.rcuBarrier();
    for (const p of filler) h.freePages(p, 0);
    h.validate();
    h.detach();
  });

  test("destroying a cache with live objects reports each one", () => {
    const { h, reports } = debugHeap();
    const c = h.createCache("things", 40);
    const x = c.alloc();
    const y = c.alloc();
    c.free(c.alloc());
    const e = caught(() => c.destroy());
    assert.equal(e.code, "EBUSY");
    assert.match(e.message, /2 live objects/);
    assert.match(e.message, new RegExp(`0x${x.toString(16)}`));
    assert.match(e.message, new RegExp(`0x${y.toString(16)}`));
    assert.deepEqual(reports.map((r) => r.addr).sort(), [x, y].sort());
    c.free(x);
    c.free(y);
    c.destroy();
    h.validate();
    h.detach();
  });

  test("a seeded random run in debug mode keeps every invariant", () => {
    const rng = new Rng();
    withSeed(rng, () => {
      const h = Heap.create({ size: 16 * MiB, cpus: 2, debug: true });
      const live: { a: number; n: number; v: number }[] = [];
      for (let i = 0; i < 4000; i++) {
        if (live.length === 0 || rng.next() < 0.5) {
          const n = rng.range(1, rng.next() < 0.9 ? 600 : 20000);
          const a = rng.next() < 0.5 ? h.kmalloc(n) : h.kmallocNolock(n);
          if (a === 0) continue;
          const v = rng.range(0, 255);
          h.u8.fill(v, a, a + n);
          live.push({ a, n, v });
        } else {
          const k = rng.range(0, live.length - 1);
          const b = live[k]!;
          live[k] = live[live.length - 1]!;
          live.pop();
          assert.ok(h.u8.subarray(b.a, b.a + b.n).every((x) => x === b.v));
          if (rng.next() < 0.5) h.kfree(b.a);
          else h.kfreeNolock(b.a);
        }
        if (i % 200 === 0) h.validate();
      }
      for (const b of live) h.kfree(b.a);
      h.shrink();
      assert.equal(h.stats().freePages, h.stats().totalPages);
      h.validate();
      h.detach();
    });
  });
});

describe("fault injection", () => {
  test("10% of page allocations and slab refills fail through a long seeded run: no leak, no half-built state", () => {
    const rng = new Rng();
    withSeed(rng, () => {
      const h = Heap.create({ size: 16 * MiB, cpus: 2, faultInjection: { rate: 0.1, seed: rng.seed || 1 } });
      const cache = h.createCache("fi", 72);
      const live: { a: number; kind: number; order: number }[] = [];
      let failed = 0;
      for (let i = 0; i < 20000; i++) {
        if (live.length === 0 || rng.next() < 0.52) {
          const r = rng.next();
          let a = 0;
          let kind = 0;
          let order = 0;
          if (r < 0.6) a = h.kmalloc(rng.range(1, rng.next() < 0.95 ? 4096 : 30000));
          else if (r < 0.8) {
            kind = 1;
            a = cache.alloc();
          } else {
            kind = 2;
            order = rng.range(0, 5);
            a = h.allocPages(order, rng.pick([0, GFP.NOWAIT, GFP.ATOMIC]));
          }
          if (a === 0) failed++;
          else live.push({ a, kind, order });
        } else {
          const k = rng.range(0, live.length - 1);
          const b = live[k]!;
          live[k] = live[live.length - 1]!;
          live.pop();
          if (b.kind === 0) h.kfree(b.a);
          else if (b.kind === 1) cache.free(b.a);
          else h.freePages(b.a, b.order);
        }
        if (i % 1000 === 0) h.validate();
      }
      const s = h.stats();
      assert.ok(s.vmstat.failInjected > 100, `faults were injected (${s.vmstat.failInjected})`);
      assert.ok(failed > 0);
      h.validate();
      for (const b of live) {
        if (b.kind === 0) h.kfree(b.a);
        else if (b.kind === 1) cache.free(b.a);
        else h.freePages(b.a, b.order);
      }
      cache.destroy();
      h.shrink();
      assert.equal(h.stats().freePages, h.stats().totalPages, "no leak");
      h.validate();
      h.detach();
    });
  });
});
