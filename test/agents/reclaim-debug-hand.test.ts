/*
 * A worker of a debug heap killed inside an object allocation (after the object left its sheaf,
 * before it was marked allocated) or an object free (after it was marked free, before a sheaf or
 * freelist had it): the object is in the slot's debug hand (slab/debug_hand.ts), so reclaimSlot
 * returns it (inHand 1), free again and on exactly one list. Until the fix it stayed on no list,
 * marked free: every kfree of it was a double free, the debug live-object listing skipped it, and
 * its cache could never be destroyed ("1 live object"). Killed where the object is on its sheaf or
 * already handed out, the reclaim leaves it there (inHand 0).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Worker } from "node:worker_threads";
import { Heap } from "../../src/index.js";
import type { DebugHandScenario } from "./workers/debug-hand.js";
import { firstMessage } from "../support/util.js";

interface Stopped {
  worker: Worker;
  cpu: number;
  parked: string | null;
  addr: number;
}

async function stopAt(heap: Heap, scenario: DebugHandScenario): Promise<Stopped> {
  const worker = new Worker(new URL("./workers/debug-hand.js", import.meta.url), { workerData: { buffer: heap.buffer, scenario } });
  const m = await firstMessage<{ parked: string | null; cpu: number; addr: number }>(worker, `the ${scenario} worker never stopped`);
  return { worker, ...m };
}

// The object's fate: "returned" (free again, inHand 1), "on-sheaf" (free on the dead slot's sheaf,
// returned with it), "allocated" (handed out to the dead worker: its object, still live).
for (const [scenario, fate] of [
  ["cache-alloc@sheaf:release", "returned"],
  ["cache-alloc@sheaf:acquire", "on-sheaf"],
  ["kmallocNolock@kmalloc", "returned"],
  ["kmallocNolock-256@list:release#2", "returned"],
  ["kmalloc@kmalloc", "allocated"],
  ["cache-free@kmem_cache_free", "on-sheaf"], // the free event fires once a list has it
  ["kfreeNolock@kfree", "on-sheaf"],
  ["cache-free@sheaf:acquire", "returned"],
  ["cache-free@sheaf:release", "on-sheaf"],
] as const) {
  test(`debug heap, a worker killed in ${scenario}: the object is ${fate}, validate() passes, nothing is handed out twice and the cache can be destroyed`, async () => {
    const heap = Heap.create({ size: 8 << 20, cpus: 4, debug: true });
    const cache = heap.createCache("dbg-64", 64);
    const total = heap.stats().totalPages;
    const w = await stopAt(heap, scenario);
    try {
      assert.equal(w.parked, scenario.split("@")[1]!.split("#")[0], `the worker stopped in ${scenario}`);
      await w.worker.terminate();
      const r = heap.reclaimSlot(w.cpu);
      assert.equal(r.inHand, fate === "returned" ? 1 : 0, `the debug object in its hand is counted: ${JSON.stringify(r)}`);
      heap.validate();
      if (w.addr !== 0) {
        if (fate === "allocated") heap.kfree(w.addr); // the dead worker's object: live, freed once
        else assert.throws(() => heap.kfree(w.addr), /EDOUBLEFREE/, "the object is free again");
      }
      // Nothing is handed out twice: every object allocated now is distinct, and none is a free one.
      const objs: number[] = [];
      const kobjs: number[] = [];
      for (let i = 0; i < 300; i++) objs.push(cache.alloc());
      for (let i = 0; i < 300; i++) kobjs.push(heap.kmalloc(64));
      assert.equal(new Set([...objs, ...kobjs]).size, 600, "600 distinct objects");
      heap.validate();
      for (const o of objs) cache.free(o);
      for (const o of kobjs) heap.kfree(o);
      heap.rcuBarrier();
      heap.shrink();
      heap.validate();
      const st = heap.stats();
      for (const s of st.slabs) assert.equal(s.activeObjects, 0, `${s.name} holds no object`);
      cache.destroy();
      heap.shrink();
      assert.equal(heap.stats().freePages, total, "every page is free again");
    } finally {
      await w.worker.terminate();
      heap.detach();
    }
  });
}

test("debug heap, a cache free refused inside the cache's own slow path (EDEADLK) leaves the object allocated: a later free succeeds", () => {
  const heap = Heap.create({ size: 8 << 20, cpus: 2, debug: true });
  try {
    const cache = heap.createCache("dbg-64", 64);
    cache.free(cache.alloc());
    const o = cache.alloc();
    let err: unknown = null;
    heap.setReentryHook((p) => {
      if (p !== "sheaf:acquire" || err !== null) return;
      try {
        cache.free(o);
        err = "no error";
      } catch (e) {
        err = e;
      }
    });
    const other = cache.alloc();
    heap.setReentryHook(null);
    assert.match(String(err), /EDEADLK/, "the free from inside the cache's slow path is refused");
    assert.equal(heap.ksize(o), 64, "the object is still allocated, its metadata intact");
    cache.free(o);
    assert.throws(() => cache.free(o), /EDOUBLEFREE/);
    cache.free(other);
    heap.validate();
    cache.destroy();
  } finally {
    heap.detach();
  }
});
