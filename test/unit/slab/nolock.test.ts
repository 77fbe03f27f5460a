import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { GFP, Heap, HeapError } from "../../../src/index.js";
import { Rng, withSeed } from "../../support/rng.js";

const MiB = 1 << 20;

function pageFigures(h: Heap): string {
  const s = h.stats();
  return JSON.stringify({ free: s.freePages, buddy: s.buddy, pcp: s.pcp, deferred: s.deferredPages });
}

/** Run `fn` once, from the hook, the first time `point` fires while `also` (if given) fired before it. */
function atPoint(h: Heap, point: string, fn: () => void, also?: string): { fired: boolean } {
  const state = { fired: false };
  let seenAlso = also === undefined;
  h.setReentryHook((p) => {
    if (p === also) seenAlso = true;
    if (p === point && seenAlso && !state.fired) {
      state.fired = true;
      fn();
    }
  });
  return state;
}

describe("nolock pages", () => {
  test("holding this slot's pcp lock, allocPagesNolock gets a page from the buddy lists", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    let got = 0;
    let before = 0;
    const st = atPoint(h, "pcp:acquire", () => {
      before = h.stats().vmstat.pcpTrylockFail;
      got = h.allocPagesNolock(0);
    });
    const p = h.allocPages(0);
    h.setReentryHook(null);
    assert.ok(st.fired);
    assert.notEqual(got, 0);
    assert.equal(h.stats().vmstat.pcpTrylockFail, before + 1, "the pcp trylock failed on a lock this single agent holds (seed 004)");
    h.validate();
    h.freePages(got, 0);
    h.freePages(p, 0);
    h.validate();
    h.detach();
  });

  test("holding the pcp and zone locks, allocPagesNolock returns 0 and no page counter moves", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    let got = -1;
    let figures = "";
    let after = "";
    const st = atPoint(
      h,
      "zone:acquire",
      () => {
        figures = pageFigures(h);
        got = h.allocPagesNolock(0);
        after = pageFigures(h);
      },
      "pcp:acquire",
    );
    const p = h.allocPages(0); // empty pcp list: pcp lock, then zone lock for the refill
    h.setReentryHook(null);
    assert.ok(st.fired);
    assert.equal(got, 0);
    assert.equal(after, figures);
    assert.ok(h.stats().vmstat.nolockFail >= 1);
    h.freePages(p, 0);
    h.validate();
    h.detach();
  });

  test("freePagesNolock with both locks held parks the page; the next normal free merges it", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    const victim = h.allocPages(2);
    h.shrink();
    const st = atPoint(h, "zone:acquire", () => h.freePagesNolock(victim, 2), "pcp:acquire");
    const p = h.allocPages(0);
    h.setReentryHook(null);
    assert.ok(st.fired);
    let s = h.stats();
    assert.equal(s.deferredPages, 4, "the order-2 block is parked");
    assert.equal(s.vmstat.pagesDeferred, 4);
    h.validate(); // parked pages are accounted for
    assert.throws(() => h.freePages(victim, 2), (e: unknown) => e instanceof HeapError && e.code === "EDOUBLEFREE");
    h.freePages(p, 0); // a normal free drains the deferred list
    s = h.stats();
    assert.equal(s.deferredPages, 0);
    assert.equal(s.vmstat.pagesUndeferred, 4);
    h.validate();
    h.shrink();
    assert.equal(h.stats().freePages, h.stats().totalPages, "the parked block merged back");
    h.detach();
  });

  test("orders above 3 give 0; bad input still throws", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    assert.equal(h.allocPagesNolock(4), 0);
    assert.throws(() => h.allocPagesNolock(11), (e: unknown) => e instanceof HeapError && e.code === "EINVAL");
    const z = h.allocPagesNolock(1, GFP.ZERO);
    assert.ok(h.u8.subarray(z, z + 8192).every((x) => x === 0));
    h.freePagesNolock(z, 1);
    assert.throws(() => h.freePagesNolock(z, 1), (e: unknown) => e instanceof HeapError && e.code === "EDOUBLEFREE");
    h.detach();
  });
});

describe("nolock objects", () => {
  test("kmallocNolock with the class's sheaf held uses the next class; kfreeNolock defers; the next normal call frees", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    const old = h.kmalloc(64);
    h.shrink(); // kmalloc-64's sheaves empty: the next kmalloc(64) takes its slow path
    h.kfree(h.kmalloc(8)); // kmalloc-8's main sheaf holds an object: only the deferred list can send kmalloc(8) below
    let obj = 0;
    const st = atPoint(h, "sheaf:acquire", () => {
      obj = h.kmallocNolock(64);
      h.kfreeNolock(old); // same class, sheaf held: deferred
    });
    const a = h.kmalloc(64);
    h.setReentryHook(null);
    assert.ok(st.fired);
    assert.notEqual(obj, 0);
    assert.equal(h.ksize(obj), 96, "an object of the next class");
    let s = h.stats();
    assert.equal(s.vmstat.nolockNextClass, 1);
    assert.equal(s.deferredObjects, 1);
    assert.equal(s.vmstat.objectsDeferred, 1);
    h.validate();
    const b = h.kmalloc(8); // the next normal call drains the deferred list, even where its sheaf has an object
    s = h.stats();
    assert.equal(s.deferredObjects, 0);
    assert.equal(s.vmstat.objectsUndeferred, 1);
    assert.throws(() => h.kfree(old), (e: unknown) => e instanceof HeapError && e.code === "EDOUBLEFREE");
    for (const x of [a, b, obj]) h.kfree(x);
    h.shrink();
    assert.equal(h.stats().slabs.find((c) => c.name === "kmalloc-64")!.totalObjects, 0, "the object went back to its slab");
    h.validate();
    h.detach();
  });

  test("a normal call from a hook while a sheaf is locked drains the deferred list straight to the slabs", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    const old = h.kmalloc(64);
    h.shrink();
    h.kfree(h.kmalloc(8)); // a warm kmalloc-8 sheaf
    let other = 0;
    let deferred = -1;
    const st = atPoint(h, "sheaf:acquire", () => {
      h.kfreeNolock(old); // kmalloc-64's sheaf held: deferred
      deferred = h.stats().deferredObjects;
      other = h.kmalloc(8); // another class: its slow path drains, freeing `old` to its slab
    });
    const a = h.kmalloc(64);
    h.setReentryHook(null);
    assert.ok(st.fired);
    assert.equal(deferred, 1);
    assert.notEqual(other, 0);
    const s = h.stats();
    assert.equal(s.deferredObjects, 0);
    assert.equal(s.vmstat.objectsUndeferred, 1);
    assert.throws(() => h.kfree(old), (e: unknown) => e instanceof HeapError && e.code === "EDOUBLEFREE");
    h.kfree(a);
    h.kfree(other);
    h.shrink();
    h.validate();
    assert.equal(h.stats().freePages, h.stats().totalPages);
    h.detach();
  });

  test("kmallocNolock never allocates a sheaf and sizes above 8 KiB give 0", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    assert.equal(h.kmallocNolock(8193), 0);
    const a = h.kmallocNolock(24); // no sheaf yet: straight from a slab
    assert.notEqual(a, 0);
    assert.equal(h.stats().slabs.find((c) => c.name === "kmem_cache_sheaf")!.activeObjects, 0);
    h.kfreeNolock(a);
    h.validate();
    h.detach();
  });
});

describe("re-entry", () => {
  test("a normal call from a hook that would need a held lock throws EDEADLK at once, heap intact", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    const keep = h.kmalloc(64);
    const page = h.allocPages(0);
    const cases: [string, () => unknown][] = [
      ["zone:acquire", () => h.allocPages(0)],
      ["zone:acquire", () => h.freePages(page, 0)],
      ["zone:release", () => h.kmalloc(5000)],
      ["pcp:acquire", () => h.kmalloc(64)],
      ["list:acquire", () => h.kmalloc(64)],
      ["sheaf:acquire", () => h.kfree(keep)],
    ];
    for (const [point, call] of cases) {
      h.shrink();
      let err: unknown = null;
      let figures = "";
      const st = atPoint(h, point, () => {
        figures = JSON.stringify({ ...h.stats(), vmstat: undefined });
        try {
          call();
        } catch (e) {
          err = e;
        }
        assert.equal(JSON.stringify({ ...h.stats(), vmstat: undefined }), figures, `${point}: nothing changed`);
      });
      const x = h.kmalloc(64);
      const y = h.allocPages(0);
      h.setReentryHook(null);
      assert.ok(st.fired, `${point} fired`);
      assert.ok(err instanceof HeapError && err.code === "EDEADLK", `${point}: got ${String(err)}`);
      h.kfree(x);
      h.freePages(y, 0);
      h.validate();
    }
    h.kfree(keep);
    h.freePages(page, 0);
    h.detach();
  });

  test("storm: a seeded hook fires nolock calls at random lock points during 100,000 operations", () => {
    const rng = new Rng();
    withSeed(rng, () => {
      const h = Heap.create({ size: 16 * MiB, cpus: 2 });
      type Blk = { addr: number; kind: 0 | 1; order: number; size: number; sig: number };
      const live: Blk[] = [];
      const hooked: Blk[] = [];
      let nolockCalls = 0;
      let nolockFails = 0;
      const sign = (b: Blk): void => {
        const end = b.kind === 0 ? b.addr + b.size : b.addr + (4096 << b.order);
        h.i32[b.addr >> 2] = b.sig;
        h.i32[(end >> 2) - 1] = b.sig;
      };
      const check = (b: Blk): void => {
        const end = b.kind === 0 ? b.addr + b.size : b.addr + (4096 << b.order);
        assert.equal(h.i32[b.addr >> 2], b.sig, `block ${b.addr} first word`);
        assert.equal(h.i32[(end >> 2) - 1], b.sig, `block ${b.addr} last word`);
      };
      let hookError: unknown = null;
      const storm = (): void => {
        nolockCalls++;
        const r = rng.next();
        if (r < 0.35) {
          const size = rng.pick([8, 24, 64, 100, 200, 500, 1000, 3000, 8000]);
          const addr = h.kmallocNolock(size);
          if (addr === 0) nolockFails++;
          else {
            const b: Blk = { addr, kind: 0, order: 0, size: Math.max(8, size & ~3), sig: rng.range(1, 1 << 30) };
            sign(b);
            hooked.push(b);
          }
        } else if (r < 0.55) {
          const order = rng.range(0, 3);
          const addr = h.allocPagesNolock(order);
          if (addr === 0) nolockFails++;
          else {
            const b: Blk = { addr, kind: 1, order, size: 0, sig: rng.range(1, 1 << 30) };
            sign(b);
            hooked.push(b);
          }
        } else if (hooked.length > 0) {
          const i = rng.range(0, hooked.length - 1);
          const b = hooked[i]!;
          hooked[i] = hooked[hooked.length - 1]!;
          hooked.pop();
          check(b);
          if (b.kind === 0) h.kfreeNolock(b.addr);
          else h.freePagesNolock(b.addr, b.order);
        }
      };
      h.setReentryHook(() => {
        if (rng.next() > 0.3) return;
        try {
          storm();
        } catch (e) {
          hookError ??= e;
        }
      });
      for (let op = 0; op < 100_000; op++) {
        if (live.length < 50 || (live.length < 3000 && rng.next() < 0.5)) {
          if (rng.next() < 0.85) {
            const size = rng.next() < 0.95 ? rng.range(1, 2048) : rng.range(2049, 20000);
            const addr = h.kmalloc(size);
            if (addr === 0) continue;
            const b: Blk = { addr, kind: 0, order: 0, size: Math.max(8, size & ~3), sig: rng.range(1, 1 << 30) };
            sign(b);
            live.push(b);
          } else {
            const order = rng.next() < 0.9 ? rng.range(0, 3) : rng.range(4, 6);
            const addr = h.allocPages(order);
            if (addr === 0) continue;
            const b: Blk = { addr, kind: 1, order, size: 0, sig: rng.range(1, 1 << 30) };
            sign(b);
            live.push(b);
          }
        } else {
          const i = rng.range(0, live.length - 1);
          const b = live[i]!;
          live[i] = live[live.length - 1]!;
          live.pop();
          check(b);
          if (b.kind === 0) h.kfree(b.addr);
          else h.freePages(b.addr, b.order);
        }
      }
      h.setReentryHook(null);
      if (hookError !== null) throw hookError;
      assert.ok(nolockCalls > 1000, `the hook fired (${nolockCalls} nolock calls)`);
      assert.equal(h.stats().vmstat.hookErrors, 0, "no hook threw");
      h.validate();
      for (const b of [...live, ...hooked]) {
        check(b);
        if (b.kind === 0) h.kfree(b.addr);
        else h.freePages(b.addr, b.order);
      }
      h.shrink();
      const s = h.stats();
      assert.equal(s.freePages, s.totalPages, "nothing leaked");
      h.validate();
      // Failed nolock calls are counted, not errors.
      process.stdout.write(`# storm: ${nolockCalls} nolock calls, ${nolockFails} returned 0 (${((100 * nolockFails) / nolockCalls).toFixed(1)}%)\n`);
      h.detach();
    });
  });
});
