/*
 * Agents that must not block (noBlock, as a browser's main thread): they never spin on another
 * agent's lock past about NOBLOCK_BOUND_MS. Past it an allocation takes another path or returns
 * 0, a free is deferred, and calls that cannot degrade throw EAGAIN with the heap unchanged.
 * A worker that stops holding a lock (paused, then terminated) never freezes them, and after
 * reclaimSlot the heap goes on. Latencies are printed, not asserted (tests are not timed).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Worker } from "node:worker_threads";
import { Heap, HeapError, NOBLOCK_BOUND_MS } from "../../../src/index.js";
import { errCode, MiB } from "../../support/util.js";

interface Holder {
  w: Worker;
  cpu: number;
  release(): void;
  done: Promise<void>;
}

async function holdLock(heap: Heap, point: string, op: string): Promise<Holder> {
  const flag = new SharedArrayBuffer(4);
  const w = new Worker(new URL("../../agents/workers/holder.js", import.meta.url), { workerData: { buffer: heap.buffer, flag, point, op } });
  let finish: () => void = () => {};
  const done = new Promise<void>((ok) => (finish = ok));
  const cpu = await new Promise<number>((ok, fail) => {
    const t = setTimeout(() => fail(new Error(`the worker never reached ${point}`)), 20_000);
    w.on("message", (m: { cpu?: number; holding?: string; done?: boolean }) => {
      if (m.holding === point) {
        clearTimeout(t);
        ok(m.cpu!);
      }
      if (m.done) finish();
    });
    w.once("error", (e) => {
      clearTimeout(t);
      fail(e);
    });
  });
  return { w, cpu, release: () => { Atomics.store(new Int32Array(flag), 0, 1); Atomics.notify(new Int32Array(flag), 0); }, done };
}

/** Run `fn`, returning its result (or error code) and how long it took in ms. */
function timed<T>(fn: () => T): { r: T | string; ms: number } {
  const t0 = performance.now();
  let r: T | string;
  try {
    r = fn();
  } catch (e) {
    if (!(e instanceof HeapError)) throw e;
    r = e.code;
  }
  return { r, ms: performance.now() - t0 };
}

test("noBlock, the zone lock held by a paused worker: allocations give 0, frees are deferred, the rest is EAGAIN; nothing waits", async () => {
  const heap = Heap.create({ size: 16 * MiB, maxSize: 32 * MiB, cpus: 4, noBlock: true });
  // Order 6 is above the pcp list orders (0..5): its free needs the zone lock.
  const early = heap.allocPages(6);
  const early0 = heap.allocPages(0);
  const h = await holdLock(heap, "zone:acquire", "pages");
  try {
    const calls = {
      "allocPages(5)": timed(() => heap.allocPages(5)),
      "allocPages(0) (pcp list: refill needs the zone)": timed(() => heap.allocPages(6)),
      "kmalloc(20000)": timed(() => heap.kmalloc(20000)),
      "freePages(order 6)": timed(() => heap.freePages(early, 6)),
      "grow": timed(() => heap.grow(heap.size + 4096)),
      "validate": timed(() => heap.validate()),
      "synchronizeRcu": timed(() => heap.synchronizeRcu()),
    };
    for (const [k, v] of Object.entries(calls)) console.log(`# noBlock with the zone lock held: ${k} -> ${String(v.r)} in ${v.ms.toFixed(3)} ms`);
    assert.equal(calls["allocPages(5)"].r, 0);
    assert.equal(calls["allocPages(0) (pcp list: refill needs the zone)"].r, 0);
    assert.equal(calls["kmalloc(20000)"].r, 0);
    assert.equal(calls["freePages(order 6)"].r, undefined);
    assert.equal(heap.stats().deferredPages, 64, "the free was parked on the deferred list");
    assert.equal(calls.grow.r, "EAGAIN");
    assert.equal(calls.validate.r, "EAGAIN");
    assert.equal(calls.synchronizeRcu.r, "EAGAIN");
    assert.throws(() => heap.synchronizeRcu(), /synchronizeRcuAsync/);
    assert.ok(heap.stats().vmstat.lockGiveUp >= 3);
    // What needs no zone lock still works: this slot's pcp list.
    heap.freePages(early0, 0);
    const again = heap.allocPages(0);
    assert.equal(again, early0, "the pcp list still serves");
    heap.freePages(again, 0);
  } finally {
    h.release();
    await h.done;
    await h.w.terminate();
  }
  // The lock is free: the deferred block is drained by the next normal free, and all is well.
  heap.freePages(heap.allocPages(5), 5);
  heap.shrink();
  heap.validate();
  const s = heap.stats();
  assert.equal(s.deferredPages, 0);
  assert.equal(s.freePages, s.totalPages);
  console.log(`# NOBLOCK_BOUND_MS = ${NOBLOCK_BOUND_MS}`);
});

test("noBlock, the cache-table lock held: createCache and destroy are EAGAIN, the table unchanged", async () => {
  const heap = Heap.create({ size: 8 * MiB, cpus: 4, noBlock: true });
  const mine = heap.createCache("mine", 40);
  const h = await holdLock(heap, "ctable:acquire", "cache");
  try {
    assert.equal(errCode(() => heap.createCache("other", 24)), "EAGAIN");
    assert.equal(heap.findCache("other"), null);
    assert.equal(errCode(() => mine.destroy()), "EAGAIN");
    const o = mine.alloc();
    assert.notEqual(o, 0, "the cache still works");
    mine.free(o);
  } finally {
    h.release();
    await h.done;
    await h.w.terminate();
  }
  mine.destroy();
  heap.shrink();
  heap.validate();
  assert.equal(heap.stats().freePages, heap.stats().totalPages);
});

test("noBlock, a worker terminated holding kmalloc-64's list lock: calls stay bounded, frees are deferred; reclaimSlot recovers the lock", async () => {
  const heap = Heap.create({ size: 16 * MiB, cpus: 4, noBlock: true });
  const h = await holdLock(heap, "list:acquire", "kmalloc");
  await h.w.terminate(); // it dies holding the lock
  let worst = 0;
  let zeros = 0;
  const live: number[] = [];
  for (let i = 0; i < 3000; i++) {
    const t0 = performance.now();
    const a = heap.kmalloc(i % 3 === 0 ? 64 : 16 + (i % 500));
    if (a === 0) zeros++;
    else live.push(a);
    if (live.length > 200) heap.kfree(live.shift()!);
    worst = Math.max(worst, performance.now() - t0);
  }
  console.log(`# 3000 kmalloc/kfree on a noBlock agent with a dead worker's list lock: slowest call ${worst.toFixed(3)} ms, ${zeros} allocations gave 0 (kmalloc-64 only), ${heap.stats().vmstat.lockGiveUp} give-ups`);
  heap.reclaimSlot(h.cpu);
  for (const a of live) heap.kfree(a);
  const after = heap.kmalloc(64);
  assert.notEqual(after, 0, "kmalloc-64 works again after reclaimSlot");
  heap.kfree(after);
  heap.shrink();
  heap.validate();
  const s = heap.stats();
  assert.equal(s.attached, 1);
  assert.equal(s.deferredObjects, 0);
  console.log(`# after reclaimSlot: ${s.freePages}/${s.totalPages} pages free (the dead worker's objects in hand stay allocated)`);
  assert.ok(s.totalPages - s.freePages <= 1, "at most the slab the dead worker was taking objects from");
});
