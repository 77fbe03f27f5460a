/*
 * Finding 14 of the trust issue: corruption reports, it never hangs. A stray store into the zone
 * lock word, cycles in the deferred object list, the deferred page list, a partial list and a
 * kfreeRcu wait chain: each gives ECORRUPT (or a report to onError, for deferred work) within a
 * bounded time. Every test has a deadline: a hang fails it.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Heap, type HeapError } from "../../../src/index.js";
import { C_DEFER_HEAD, C_DEFER_NR, C_KRCP_LOCK, C_RCU_BLOCKS, C_RCU_WAIT, CT_LOCK, H_PCPU_OFF, C_WORDS, K_BARN_LOCK, K_LIST_LOCK, RB_NEXT, Z_DEFER_HEAD, Z_LOCK } from "../../../src/core/layout.js";
import { FIRST_NAMED_ID } from "../../../src/slab/sizes.js";
import { layersOf } from "../../../src/layers.js";
import { caught } from "../../support/check.js";

const T = { timeout: 20_000 };

function pcpu(h: Heap): number {
  return (h.u32[H_PCPU_OFF]! >>> 2) + h.cpu * C_WORDS;
}

describe("corruption gives ECORRUPT, never a hang", () => {
  test("a stray store into the zone lock word (no such slot, a free slot, stray bits)", T, () => {
    for (const stray of [0x7fff, 4, 0x12340001]) {
      const h = Heap.create({ size: 4 << 20, cpus: 4 });
      h.allocPages(0); // the slot's pcp lock word is its own from here
      const saved = Atomics.load(h.i32, Z_LOCK);
      Atomics.store(h.i32, Z_LOCK, stray);
      const e = caught(() => h.allocPages(6)); // the buddy lists, under the zone lock
      assert.equal(e.code, "ECORRUPT", `stray ${stray}: ${e.message}`);
      assert.match(e.message, /zone lock word/);
      Atomics.store(h.i32, Z_LOCK, saved);
      h.freePages(h.allocPages(6), 6);
      h.validate();
    }
  });

  test("a stray store into every other lock word (the cache table, a cache's list and barn locks, a slot's kfreeRcu lock): ECORRUPT naming the lock", T, () => {
    type Case = [lock: string, word: (h: Heap) => number, call: (h: Heap) => unknown];
    const cacheW = (h: Heap): number => layersOf(h).mem.cacheWOf(FIRST_NAMED_ID); // the first named cache's descriptor
    const cases: Case[] = [
      ["ctable", () => CT_LOCK, (h) => h.createCache("stray-new", 40)],
      ["list", (h) => cacheW(h) + K_LIST_LOCK, (h) => h.findCache("stray")!.alloc()],
      ["barn", (h) => cacheW(h) + K_BARN_LOCK, (h) => h.findCache("stray")!.shrink()],
      // kfreeRcu never waits on it (it falls back to waiting for a grace period); rcuBarrier does.
      ["rcu", (h) => pcpu(h) + C_KRCP_LOCK, (h) => h.rcuBarrier()],
    ];
    for (const [lock, word, call] of cases) {
      for (const stray of [0x7fff, 4, 0x12340001]) {
        const h = Heap.create({ size: 4 << 20, cpus: 4 });
        const c = h.createCache("stray", 40);
        if (lock === "barn") {
          // Objects in this slot's sheaves and in the barn, for shrink() to take the barn lock.
          const objs: number[] = [];
          for (let i = 0; i < 300; i++) objs.push(c.alloc());
          for (const o of objs) c.free(o);
        }
        if (lock === "rcu") h.kfreeRcu(h.kmalloc(64)); // a batch for rcuBarrier to take
        const w = word(h);
        const saved = Atomics.load(h.i32, w);
        assert.equal(saved, 0, `the ${lock} lock is free before the store`);
        Atomics.store(h.i32, w, stray);
        let e: HeapError | null = null;
        try {
          call(h);
        } catch (x) {
          e = x as HeapError;
        }
        assert.ok(e !== null, `${lock} lock, stray ${stray}: the call went on as if the lock were free`);
        assert.equal(e.code, "ECORRUPT", `${lock} lock, stray ${stray}: ${e.message}`);
        assert.match(e.message, new RegExp(`the ${lock} lock word`));
        Atomics.store(h.i32, w, saved);
        call(h); // the same call works once the word is repaired
        h.rcuBarrier();
        h.validate();
      }
    }
  });

  test("a cycle in the deferred object list: validate() reports it; the next drain reports it to onError and drops the list", T, () => {
    const h = Heap.create({ size: 4 << 20, cpus: 2 });
    const errors: HeapError[] = [];
    h.onError = (e) => errors.push(e);
    const a = h.kmalloc(64);
    const b = h.kmalloc(64);
    const p = pcpu(h);
    // What two kfreeNolock calls would leave, with b's link pointing back at a.
    h.i32[a >> 2] = 0;
    h.i32[(a >> 2) + 1] = b;
    h.i32[(b >> 2) + 1] = a;
    h.i32[p + C_DEFER_HEAD] = a;
    h.i32[p + C_DEFER_NR] = 2;
    assert.equal(caught(() => h.validate()).code, "ECORRUPT");
    assert.ok(h.stats().deferredObjects >= 0);
    const c = h.kmalloc(5000); // a slow path: drains the list first
    assert.notEqual(c, 0);
    assert.equal(errors.length, 1);
    assert.equal(errors[0]!.code, "ECORRUPT");
    assert.match(errors[0]!.message, /deferred object list is broken/);
    h.kfree(c);
    h.validate(); // a and b are lost (still allocated), nothing is broken
  });

  test("a cycle in the deferred page list is reported and the drain ends", T, () => {
    const h = Heap.create({ size: 4 << 20, cpus: 2 });
    const errors: HeapError[] = [];
    h.onError = (e) => errors.push(e);
    const pages = [h.allocPages(0), h.allocPages(0)];
    h.shrink(); // empty pcp lists: the next allocPages(0) refills under the zone lock
    h.setReentryHook((point) => {
      // Inside the zone lock, with the pcp list busy: this free is parked on the deferred page list.
      if (point === "zone:acquire" && pages.length > 0) h.freePagesNolock(pages.pop()!, 0);
    });
    const one = h.allocPages(0);
    h.setReentryHook(null);
    const head = Atomics.load(h.i32, Z_DEFER_HEAD);
    assert.notEqual(head, 0, "a page is parked");
    const pd = layersOf(h).mem.pd(head);
    h.i32[pd + 1] = head; // PD_NEXT
    assert.equal(caught(() => h.validate()).code, "ECORRUPT");
    h.freePages(one, 0); // a normal free drains the list
    assert.equal(errors.length, 1, "reported once");
    assert.match(errors[0]!.message, /deferred page list is broken/);
  });

  test("a cycle in a cache's partial list: shrink() throws ECORRUPT", T, () => {
    const h = Heap.create({ size: 8 << 20, cpus: 2 });
    const c = h.createCache("cyclic", 512);
    const objs: number[] = [];
    for (let i = 0; i < 200; i++) objs.push(c.alloc());
    for (let i = 0; i < 200; i += 2) c.free(objs[i]!);
    h.shrink();
    const g = layersOf(h).mem;
    const st = c.stats();
    assert.ok(st.partialSlabs >= 2);
    // Find the cache's descriptor and link the second partial slab back to the first.
    let kw = -1;
    for (let id = 14; id < 64; id++) if (h.i32[g.cacheWOf(id) + 1] === 512) kw = g.cacheWOf(id);
    const first = h.i32[kw + 48]!; // K_PARTIAL
    const second = h.i32[g.pd(first) + 1]!; // PD_NEXT
    h.i32[g.pd(second) + 1] = first;
    assert.equal(caught(() => c.shrink()).code, "ECORRUPT");
    assert.equal(caught(() => h.validate()).code, "ECORRUPT");
  });

  test("a cycle in a kfreeRcu wait chain: rcuBarrier throws ECORRUPT, validate too", T, () => {
    const h = Heap.create({ size: 8 << 20, cpus: 2 });
    const objs: number[] = [];
    h.onError = () => {}; // the agent's timer meets the broken chain too: reported, not thrown
    for (let i = 0; i < 3000; i++) objs.push(h.kmalloc(32));
    for (const o of objs) h.kfreeRcu(o);
    const p = pcpu(h);
    const first = h.i32[p + C_RCU_WAIT]!;
    assert.ok(first !== 0 && h.i32[p + C_RCU_BLOCKS]! >= 2, "blocks are chained");
    const second = h.i32[(first >> 2) + RB_NEXT]!;
    assert.notEqual(second, 0);
    h.i32[(second >> 2) + RB_NEXT] = first;
    assert.equal(caught(() => h.validate()).code, "ECORRUPT");
    assert.equal(caught(() => h.rcuBarrier()).code, "ECORRUPT");
  });
});
