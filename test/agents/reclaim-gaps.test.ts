/*
 * A worker killed at an instant where it holds what no list holds yet (issue 11's remaining gaps):
 *   - a nolock page free parking its block on the zone's deferred list, before or after the
 *     compareExchange that publishes it: the block is freed or stays listed, and the deferred page
 *     count is exact (until the fix it was added after publishing: a kill there left it off by the
 *     block for good, and validate() reported it; a kill before publishing lost the block);
 *   - allocPagesBulk and cache.allocBulk in the middle of their loop: the pages or objects taken
 *     so far were nobody's (until the fix they were allocated already, and lost).
 *   - createCache and destroy inside the cache table section: a cache published before the table's
 *     high-water mark was raised was missing from cacheNames (and the decay); a cache marked dying
 *     before the dying count was raised was never released, its descriptor never reusable.
 *   - a path that re-entered (a reentry hook's nolock call) while an outer path held a sheaf
 *     object in the slot's sheaf hand: until the fix it held nothing, and the empty sheaf it was
 *     taking to the barn was lost with the kill.
 *   - a free that gave a full sheaf to a barn with no empty sheaf to give back: until the fix the
 *     slot's hand still named the sheaf after the barn lock was dropped. Another slot could take
 *     it off the barn while reclaimSlot looked for it, and both freed it (a remote sheaf that
 *     served another cache, seen once in the kill harness).
 * Each worker stops at the instant (workers/gaps.ts), is terminated there, and reclaimSlot runs.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Worker } from "node:worker_threads";
import { Heap } from "../../src/index.js";
import type { GapScenario } from "./workers/gaps.js";
import { firstMessage } from "../support/util.js";
import { layersOf } from "../../src/layers.js";
import { K_BARN_EMPTY, K_BARN_FULL, K_BARN_NR_FULL, K_SHEAF_CAP, K_HDR_WORDS, PCS_HAND, PCS_MAIN, PCS_WORDS, S_NEXT } from "../../src/core/layout.js";
import { SHEAF_HANDS, sheafHandOf } from "../../src/slab/sheaf_hand.js";

async function stopAt(heap: Heap, scenario: GapScenario, objs: number[] = []): Promise<{ worker: Worker; cpu: number; parked: boolean; held: number }> {
  const worker = new Worker(new URL("./workers/gaps.js", import.meta.url), { workerData: { buffer: heap.buffer, scenario, objs } });
  worker.unref();
  const m = await firstMessage<{ cpu: number; parked: boolean; held: number }>(worker, `the ${scenario} worker never stopped`);
  return { worker, ...m };
}

/** Every page free again once the host frees something (which drains the deferred list) and shrinks. */
function assertAllFree(heap: Heap, total: number): void {
  heap.freePages(heap.allocPages(7), 7);
  heap.shrink();
  heap.validate();
  const st = heap.stats();
  assert.equal(st.deferredPages, 0);
  for (const s of st.slabs) assert.equal(s.activeObjects, 0, `${s.name} holds no object`);
  assert.equal(st.freePages, total, "every page is free again");
}

for (const [scenario, inHand, deferred] of [
  ["defer-before", 1, 0],
  ["defer-after", 0, 64],
] as const) {
  test(`a worker killed ${scenario === "defer-before" ? "before" : "after"} it publishes a nolock free on the deferred page list: the block is ${inHand === 1 ? "freed by reclaimSlot" : "listed and counted"}, validate() passes`, async () => {
    const heap = Heap.create({ size: 8 << 20, cpus: 4 });
    const total = heap.stats().totalPages;
    const w = await stopAt(heap, scenario);
    try {
      assert.equal(w.parked, true);
      await w.worker.terminate();
      const r = heap.reclaimSlot(w.cpu);
      assert.deepEqual(r.locks, ["zone"], `it held the zone lock: ${JSON.stringify(r)}`);
      assert.equal(r.inHand, inHand, `the unpublished block is in hand: ${JSON.stringify(r)}`);
      assert.equal(r.pages, inHand * 64);
      heap.validate();
      assert.equal(heap.stats().deferredPages, deferred, "the deferred list counts exactly what it holds");
      assertAllFree(heap, total);
    } finally {
      await w.worker.terminate();
      heap.detach();
    }
  });
}

test("a worker killed inside its drain of the deferred page list, just after it popped a block: reclaimSlot frees that block, the count stays exact, validate() passes", async () => {
  const heap = Heap.create({ size: 8 << 20, cpus: 4 });
  const total = heap.stats().totalPages;
  const w = await stopAt(heap, "drain-popped");
  try {
    assert.equal(w.parked, true);
    await w.worker.terminate();
    const r = heap.reclaimSlot(w.cpu);
    assert.deepEqual(r.locks, ["zone"], `it held the zone lock: ${JSON.stringify(r)}`);
    assert.equal(r.inHand, 1, `the popped block is in hand: ${JSON.stringify(r)}`);
    heap.validate();
    assert.equal(heap.stats().deferredPages, 0, "the list and its count are empty together");
    assertAllFree(heap, total);
  } finally {
    await w.worker.terminate();
    heap.detach();
  }
});

for (const debug of [false, true]) {
test(`a worker killed inside allocPagesBulk(8) at its 5th page (debug ${debug}): reclaimSlot frees the 4 pages taken before it too, and every page is free again`, async () => {
  const heap = Heap.create({ size: 8 << 20, cpus: 4, debug });
  const total = heap.stats().totalPages;
  const w = await stopAt(heap, "bulk-pages");
  try {
    assert.equal(w.parked, true);
    await w.worker.terminate();
    const r = heap.reclaimSlot(w.cpu);
    assert.equal(r.inHand, 8, `the 8 pages of the call are in hand: ${JSON.stringify(r)}`);
    assertAllFree(heap, total);
  } finally {
    await w.worker.terminate();
    heap.detach();
  }
});

test(`a worker killed inside cache.allocBulk between two objects, at a sheaf refill's list lock (debug ${debug}): reclaimSlot frees every object the batch had taken, none stays allocated`, async () => {
  const heap = Heap.create({ size: 8 << 20, cpus: 4, debug });
  heap.createCache("gaps-64", 64);
  const w = await stopAt(heap, "bulk-objects");
  try {
    assert.equal(w.parked, true);
    await w.worker.terminate();
    const r = heap.reclaimSlot(w.cpu);
    assert.ok(w.held > 0, "the batch had objects in the bulk hand");
    assert.equal(r.inHand, w.held, `the ${w.held} objects the call had taken are in hand: ${JSON.stringify(r)}`);
    heap.shrink();
    heap.validate();
    // Stopped between two objects: none is in the one-object window.
    assert.equal(heap.stats().slabs.find((s) => s.name === "gaps-64")!.activeObjects, 0);
  } finally {
    await w.worker.terminate();
    heap.detach();
  }
});
}

test("a worker killed inside createCache just after it published the descriptor: the cache is whole, listed by cacheNames, found and usable", async () => {
  const heap = Heap.create({ size: 8 << 20, cpus: 4 });
  const total = heap.stats().totalPages;
  const w = await stopAt(heap, "create-published");
  try {
    assert.equal(w.parked, true);
    await w.worker.terminate();
    const r = heap.reclaimSlot(w.cpu);
    assert.deepEqual(r.locks, ["ctable"]);
    heap.validate();
    assert.ok(heap.cacheNames().includes("gaps-new"), `cacheNames lists it: ${JSON.stringify(heap.cacheNames())}`);
    assert.deepEqual(r.rebuilt, ["cache table counts"]);
    const c = heap.findCache("gaps-new");
    assert.ok(c !== null);
    c.free(c.alloc());
    c.destroy();
    assert.equal(heap.cacheNames().includes("gaps-new"), false);
    assertAllFree(heap, total);
  } finally {
    await w.worker.terminate();
    heap.detach();
  }
});

test("a worker killed inside destroy() just after it marked the cache dying: reclaimSlot releases it, its descriptor is free and reused, every page comes back", async () => {
  const heap = Heap.create({ size: 8 << 20, cpus: 4 });
  const total = heap.stats().totalPages;
  const w = await stopAt(heap, "destroy-dying");
  try {
    assert.equal(w.parked, true);
    await w.worker.terminate();
    const r = heap.reclaimSlot(w.cpu);
    assert.deepEqual(r.locks, ["ctable"]);
    heap.shrink();
    heap.validate();
    const names = heap.cacheNames();
    assert.equal(names.includes("gaps-dying"), false, `the dying cache was released: ${JSON.stringify(names)}`);
    assert.equal(heap.findCache("gaps-dying"), null);
    const at = names.indexOf(null);
    const again = heap.createCache("gaps-dying", 64);
    assert.equal(heap.cacheNames().indexOf("gaps-dying"), at, "the new cache takes the freed descriptor");
    again.free(again.alloc());
    again.destroy();
    assert.equal(heap.cacheNames().includes("gaps-dying"), false, "and is released at once: the dying count is right");
    assertAllFree(heap, total);
  } finally {
    await w.worker.terminate();
    heap.detach();
  }
});

test("a worker killed in a nolock call its reentry hook made while its sheaf hand held a new sheaf: both sheaf objects are freed (inHand 2)", async () => {
  const heap = Heap.create({ size: 8 << 20, cpus: 4 });
  const w = await stopAt(heap, "sheaf-nested");
  try {
    assert.equal(w.parked, true);
    await w.worker.terminate();
    const r = heap.reclaimSlot(w.cpu);
    assert.equal(r.inHand, 2, `the outer path's new sheaf and the nested path's empty sheaf: ${JSON.stringify(r)}`);
    heap.shrink();
    heap.validate();
    const st = heap.stats();
    assert.equal(st.slabs.find((s) => s.name === "kmem_cache_sheaf")!.activeObjects, 0, "no sheaf object is left allocated");
    assert.equal(st.slabs.find((s) => s.name === "gaps-z")!.activeObjects, 0);
  } finally {
    await w.worker.terminate();
    heap.detach();
  }
});

test("a worker killed in shrink's flush of a barn sheaf in its hand, between an object's return to its slab and the sheaf's count: reclaimSlot returns the object once", async () => {
  const heap = Heap.create({ size: 8 << 20, cpus: 4 });
  const total = heap.stats().totalPages;
  const w = await stopAt(heap, "barn-flush");
  try {
    assert.equal(w.parked, true);
    await w.worker.terminate();
    heap.reclaimSlot(w.cpu);
    heap.validate();
    assertAllFree(heap, total);
  } finally {
    await w.worker.terminate();
    heap.detach();
  }
});

test("a worker killed after a barn took its full sheaf and had no empty one to give: no hand of it names the barn's sheaf, and another slot that takes it keeps it", async () => {
  const heap = Heap.create({ size: 8 << 20, cpus: 4 });
  const total = heap.stats().totalPages;
  const cache = heap.createCache("gaps-trade", 64);
  const slab = layersOf(heap).slab;
  const id = heap.cacheNames().indexOf("gaps-trade");
  const kw = slab.cacheWOf(id);
  const cap = slab.i32[kw + K_SHEAF_CAP]!;
  const objs: number[] = [];
  for (let i = 0; i < 2 * cap; i++) objs.push(cache.alloc());
  const w = await stopAt(heap, "barn-put", objs);
  const other = Heap.attach(heap.buffer);
  try {
    assert.equal(w.parked, true);
    await w.worker.terminate();
    const barn: number[] = [];
    for (const head of [K_BARN_FULL, K_BARN_EMPTY]) for (let s = slab.i32[kw + head]!; s !== 0; s = slab.i32[(s >> 2) + S_NEXT]!) barn.push(s);
    assert.equal(slab.i32[kw + K_BARN_NR_FULL], 1, "the barn took the full sheaf");
    const hands = [kw + K_HDR_WORDS + w.cpu * PCS_WORDS + PCS_HAND];
    for (let k = 0; k < SHEAF_HANDS; k++) hands.push(sheafHandOf(slab, w.cpu, k));
    for (const h of hands) assert.ok(!barn.includes(slab.i32[h]!), `a hand of the dead slot names the barn's sheaf ${slab.i32[h]}`);
    // A new slot takes the full sheaf off the barn before the reclaim, and allocates from it.
    const theirs = other.findCache("gaps-trade")!;
    const got: number[] = [theirs.alloc()];
    const main = slab.i32[kw + K_HDR_WORDS + other.cpu * PCS_WORDS + PCS_MAIN]!;
    assert.ok(barn.includes(main), "the full sheaf is that slot's main now");
    heap.reclaimSlot(w.cpu);
    assert.equal(slab.i32[kw + K_HDR_WORDS + other.cpu * PCS_WORDS + PCS_MAIN], main, "and stays so");
    heap.validate();
    for (let i = 0; i < 200; i++) got.push(theirs.alloc());
    assert.equal(new Set(got).size, got.length, "nothing handed out twice");
    for (const o of got) theirs.free(o);
    for (const o of objs.slice(cap)) cache.free(o); // the one after a sheaf's worth was being freed: still the host's
    other.detach();
    assertAllFree(heap, total);
  } finally {
    await w.worker.terminate();
    heap.detach();
  }
});
