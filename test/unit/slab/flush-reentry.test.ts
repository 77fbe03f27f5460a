/*
 * Finding 2 of the trust issue: shrink(), detach(), cache.shrink() and destroy() flush sheaves
 * under the sheaf's local lock. A reentry hook calls kmallocNolock and kfreeNolock at every lock
 * point of each of those calls; a shadow model of every live range checks that nothing is handed
 * out twice, no write is lost and no free is lost (every page is free at the end).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Heap, type KmemCache } from "../../../src/index.js";
import { checkPattern, fillPattern, signature } from "../../support/util.js";

/** Every live range of the test, with its signature. */
class Shadow {
  readonly live = new Map<number, { size: number; sig: number }>();
  private n = 0;
  constructor(private readonly h: () => Heap) {}
  add(addr: number, size: number, why: string): void {
    assert.ok(addr > 0, `${why}: address ${addr}`);
    for (const [a, r] of this.live) {
      assert.ok(addr + size <= a || a + r.size <= addr, `${why}: ${addr} (+${size}) overlaps live ${a} (+${r.size}): handed out twice`);
    }
    const sig = signature(7, this.n++);
    const h = this.h();
    fillPattern(h.i32, h.u8, addr, size, sig);
    this.live.set(addr, { size, sig });
  }
  take(addr: number): void {
    this.check(addr);
    this.live.delete(addr);
  }
  check(addr: number): void {
    const r = this.live.get(addr)!;
    const h = this.h();
    const bad = checkPattern(h.i32, h.u8, addr, r.size, r.sig);
    assert.equal(bad, null, "a live block was overwritten");
  }
  checkAll(): void {
    for (const a of this.live.keys()) this.check(a);
  }
}

const SIZES = [8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192];

/** Fill the sheaves of every kmalloc class and of `cache`: allocate a few and free them again. */
function warm(h: Heap, cache: KmemCache | null, shadow: Shadow, mine: number[]): void {
  for (const s of SIZES) {
    const got: number[] = [];
    for (let k = 0; k < 40; k++) got.push(h.kmalloc(s));
    for (const a of got) h.kfree(a);
    for (let k = 0; k < 3; k++) shadow.add(h.kmalloc(s), s, "warm kmalloc");
  }
  if (cache !== null) {
    const got: number[] = [];
    for (let k = 0; k < 40; k++) got.push(cache.alloc());
    for (const a of got.slice(8)) cache.free(a);
    // Eight cache objects the hook frees with kfreeNolock.
    for (const a of got.slice(0, 8)) {
      shadow.add(a, 200, "cache object");
      mine.push(a);
    }
  }
}

/**
 * A hook that, at odd lock points, allocates one block of every kmalloc class with kmallocNolock
 * (so one of the class whose sheaves are being flushed, if any) and, at even ones, frees with
 * kfreeNolock every block it holds (the held cache objects among them).
 */
function hookOn(h: Heap, shadow: Shadow, mine: number[], stats: { points: number; allocs: number; frees: number }): void {
  let k = 0;
  h.setReentryHook(() => {
    stats.points++;
    k++;
    if ((k & 1) === 1) {
      for (const size of SIZES) {
        const a = h.kmallocNolock(size);
        if (a === 0) continue;
        shadow.add(a, size, "kmallocNolock from the hook");
        mine.push(a);
        stats.allocs++;
      }
    } else {
      while (mine.length > 0) {
        const a = mine.pop()!;
        shadow.take(a);
        // One in eight goes through kfreeRcu, which is safe from hooks too; with no room left it
        // refuses (EDEADLK: it will not wait for a grace period with a lock held), the object
        // still the caller's, which then frees it with kfreeNolock.
        let queued = false;
        if ((mine.length & 7) === 0) {
          try {
            h.kfreeRcu(a);
            queued = true;
          } catch (e) {
            assert.equal((e as { code?: string }).code, "EDEADLK");
          }
        }
        if (!queued) h.kfreeNolock(a);
        stats.frees++;
      }
    }
  });
}

/** After the call: allocate a lot (any object the flush freed while the hook held it shows up as an overlap), check every pattern, free everything, and check that every page came back. */
function settle(h: Heap, shadow: Shadow): void {
  h.setReentryHook(null);
  shadow.checkAll();
  const extra: number[] = [];
  for (let r = 0; r < 3; r++) {
    for (const s of SIZES) {
      for (let k = 0; k < 30; k++) {
        const a = h.kmalloc(s);
        shadow.add(a, s, "kmalloc after the flush");
        extra.push(a);
      }
    }
  }
  shadow.checkAll();
  h.validate();
  h.rcuBarrier();
  for (const a of [...shadow.live.keys()]) {
    shadow.take(a);
    h.kfree(a);
  }
  h.shrink();
  h.validate();
  const s = h.stats();
  const active = s.slabs.filter((c) => c.name !== "kmem_cache_sheaf").reduce((n, c) => n + c.activeObjects, 0);
  assert.equal(active, 0, "an object freed by kfreeNolock during the flush was lost");
  assert.equal(s.deferredObjects, 0);
}

describe("flushes run under the local lock: a hook's nolock calls during them", () => {
  for (const call of ["shrink", "cache.shrink", "destroy", "detach"] as const) {
    test(`${call}()`, () => {
      const h = Heap.create({ size: 8 << 20, cpus: 4 });
      let cur = h;
      const shadow = new Shadow(() => cur);
      const cache = h.createCache("flushed", 200);
      const stats = { points: 0, allocs: 0, frees: 0 };
      const mine: number[] = [];
      if (call === "detach") {
        const h2 = Heap.attach(h.buffer);
        cur = h2;
        warm(h2, h2.findCache("flushed"), shadow, mine);
        for (let k = 0; k < 6; k++) shadow.add(h2.kmallocNolock(64), 64, "held");
        hookOn(h2, shadow, mine, stats);
        h2.detach();
        cur = h;
        h.validate();
        settle(h, shadow);
      } else {
        warm(h, cache, shadow, mine);
        hookOn(h, shadow, mine, stats);
        if (call === "shrink") h.shrink();
        else if (call === "cache.shrink") cache.shrink();
        else {
          // destroy refuses, changing nothing, while objects are live: free them first; the hook
          // works with kmalloc objects during the flush.
          for (const a of [...shadow.live.keys()]) if (h.ksize(a) === 200) shadow.take(a), h.kfree(a);
          for (let i = mine.length - 1; i >= 0; i--) if (!shadow.live.has(mine[i]!)) mine.splice(i, 1);
          cache.destroy();
        }
        settle(h, shadow);
      }
      // detach: nolock allocations fail from its start (the slot is being emptied); frees are drained.
      // cache.shrink reaches 10 lock points: barnShrink takes only the sheaves the barn held.
      assert.ok(stats.points >= 10 && (stats.allocs > 0) === (call !== "detach") && stats.frees > 0, `hook ran ${JSON.stringify(stats)}`);
      console.log(`${call}: ${stats.points} lock points, ${stats.allocs} nolock allocations, ${stats.frees} nolock frees`);
    });
  }
});

test("destroy() while a hook frees the cache's last objects with kfreeNolock, one at each lock point: none is lost, the cache is released", () => {
  const h = Heap.create({ size: 8 << 20, cpus: 4 });
  const cache = h.createCache("flushed", 200);
  // This slot's sheaves hold objects of the cache; the hook holds the last 8 live ones.
  const got: number[] = [];
  for (let k = 0; k < 40; k++) got.push(cache.alloc());
  for (const a of got.slice(8)) cache.free(a);
  const held = got.slice(0, 8);
  let points = 0;
  h.setReentryHook(() => {
    points++;
    const a = held.pop();
    if (a !== undefined) h.kfreeNolock(a);
  });
  // destroy refuses (EBUSY, changing nothing) while the hook still holds objects; it succeeds once
  // it has freed them, each freed object back where the flush finds it.
  let tries = 0;
  for (; tries < 40; tries++) {
    try {
      cache.destroy();
      break;
    } catch (e) {
      assert.equal((e as { code?: string }).code, "EBUSY", String(e));
    }
  }
  h.setReentryHook(null);
  assert.equal(held.length, 0, "the hook freed every object");
  assert.ok(tries < 40, `destroy still refused after ${tries} tries: an object freed during its flush was lost`);
  h.shrink();
  h.validate();
  const s = h.stats();
  assert.equal(s.slabs.some((c) => c.name === "flushed"), false, "the cache was released");
  assert.equal(s.deferredObjects, 0);
  assert.equal(s.freePages, s.totalPages, "every page came back");
  console.log(`destroy with frees from the hook: ${points} lock points, ${tries + 1} calls`);
});

describe("re-entry at every lock point of the other public calls", () => {
  const calls: Array<[string, (h: Heap, shadow: Shadow) => void]> = [
    ["grow", (h) => void h.grow(h.size + (1 << 20))],
    ["kfreeRcu + rcuBarrier", (h) => {
      const objs: number[] = [];
      for (let i = 0; i < 50; i++) objs.push(h.kmalloc(48));
      for (const o of objs) h.kfreeRcu(o);
      h.rcuBarrier();
    }],
    ["synchronizeRcu", (h) => h.synchronizeRcu()],
    ["reclaimSlot", (h, shadow) => {
      const gone = Heap.attach(h.buffer);
      warm(gone, gone.findCache("flushed"), shadow, []);
      h.reclaimSlot(gone.cpu);
    }],
    ["validate", (h) => h.validate()],
    ["createCache + destroy", (h) => h.createCache("made-in-hooks", 72).destroy()],
    ["allocPages of every order", (h) => {
      for (let o = 0; o <= 6; o++) h.freePages(h.allocPages(o), o);
    }],
  ];
  for (const [name, call] of calls) {
    test(name, () => {
      const h = Heap.create({ size: 8 << 20, maxSize: 16 << 20, cpus: 4 });
      const shadow = new Shadow(() => h);
      const cache = h.createCache("flushed", 200);
      const mine: number[] = [];
      warm(h, cache, shadow, mine);
      const stats = { points: 0, allocs: 0, frees: 0 };
      hookOn(h, shadow, mine, stats);
      call(h, shadow);
      // settle checks every block of the model (the hook's among them) and frees everything.
      settle(h, shadow);
      console.log(`${name}: ${stats.points} lock points, ${stats.allocs} nolock allocations, ${stats.frees} nolock frees`);
    });
  }
});

