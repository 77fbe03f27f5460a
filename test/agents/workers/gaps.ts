/*
 * A worker that stops for ever at one instant inside the allocator where it holds something no
 * list holds yet, for the host to terminate it there and reclaim its slot
 * (test/agents/reclaim-gaps.test.ts):
 *   defer-before, defer-after: a freePagesNolock that parks its order-6 block on the zone's
 *     deferred list (its reentry hook frees it while the worker holds the zone lock), stopped just
 *     before, or just after, the compareExchange that publishes the block. No hook point lies
 *     there, so the worker wraps Atomics.compareExchange for the deferred list's word.
 *   bulk-pages: allocPagesBulk(8), stopped in the mm_page_alloc trace handler of its 5th page.
 *   bulk-objects: cache.allocBulk(8) of the host's cache "gaps-64", stopped in the
 *     kmem_cache_alloc trace handler of its 5th object.
 *   create-published: createCache("gaps-new"), stopped just after the store that publishes the
 *     descriptor (K_STATE active), holding the cache table lock.
 *   destroy-dying: destroy() of a cache it made, stopped just after the store that marks it
 *     dying, holding the cache table lock. These two wrap Atomics.store for that word.
 * It posts { cpu, parked } when it stops (parked false: it finished without stopping).
 */
import { parentPort, workerData } from "node:worker_threads";
import { Heap } from "../../../src/index.js";
import { layersOf } from "../../../src/layers.js";
import { K_STATE, K_STATE_ACTIVE, K_STATE_DYING, K_STATE_FREE, Z_DEFER_HEAD } from "../../../src/core/layout.js";
import { FIRST_NAMED_ID } from "../../../src/slab/slab.js";

export type GapScenario = "defer-before" | "defer-after" | "bulk-pages" | "bulk-objects" | "create-published" | "destroy-dying";

const { buffer, scenario } = workerData as { buffer: SharedArrayBuffer; scenario: GapScenario };
const heap = Heap.attach(buffer);
const stop = new Int32Array(new SharedArrayBuffer(4));
const park = (): never => {
  parentPort!.postMessage({ cpu: heap.cpu, parked: true });
  for (;;) Atomics.wait(stop, 0, 0); // until terminated
};

/** Stop right after the next Atomics.store of `value` into word `at` of the heap. */
function parkAfterStore(at: number, value: number): void {
  const real = Atomics.store;
  (Atomics as { store: unknown }).store = function (ta: Int32Array, i: number, v: number): number {
    const r = real(ta, i, v);
    if (ta.buffer === buffer && ta.byteOffset + i * ta.BYTES_PER_ELEMENT === at << 2 && v === value) park();
    return r;
  };
}

switch (scenario) {
  case "defer-before":
  case "defer-after": {
    const deferAt = (layersOf(heap).mem.hw + Z_DEFER_HEAD) << 2;
    const real = Atomics.compareExchange;
    const before = scenario === "defer-before";
    let armed = false;
    // The wrapper stands for the instant itself: it stops the worker at the deferred list's word only.
    (Atomics as { compareExchange: unknown }).compareExchange = function (ta: Int32Array, i: number, expected: number, value: number): number {
      const at = armed && ta.buffer === buffer && ta.byteOffset + i * ta.BYTES_PER_ELEMENT === deferAt;
      if (at && before) park();
      const r = real(ta, i, expected, value);
      if (at && r === expected) park();
      return r;
    };
    const block = heap.allocPages(6);
    heap.setReentryHook((p) => {
      if (p !== "zone:acquire" || armed) return;
      armed = true;
      // The zone lock is this worker's: a nolock free of a block above the pcp orders parks it.
      heap.freePagesNolock(block, 6);
      armed = false;
    });
    heap.freePages(heap.allocPages(7), 7); // its zone:acquire runs the hook
    break;
  }
  case "bulk-pages": {
    let n = 0;
    heap.trace.on("mm_page_alloc", () => {
      if (++n === 5) park();
    });
    heap.allocPagesBulk(8, new Uint32Array(8));
    break;
  }
  case "bulk-objects": {
    const cache = heap.findCache("gaps-64");
    if (cache === null) throw new Error("the host creates gaps-64");
    let n = 0;
    heap.trace.on("kmem_cache_alloc", () => {
      if (++n === 5) park();
    });
    cache.allocBulk(8, new Uint32Array(8));
    break;
  }
  case "create-published": {
    const slab = layersOf(heap).slab;
    let id = FIRST_NAMED_ID;
    while (slab.i32[slab.cacheWOf(id) + K_STATE] !== K_STATE_FREE) id++;
    parkAfterStore(slab.cacheWOf(id) + K_STATE, K_STATE_ACTIVE);
    heap.createCache("gaps-new", 64);
    break;
  }
  case "destroy-dying": {
    const cache = heap.createCache("gaps-dying", 64);
    cache.free(cache.alloc());
    const slab = layersOf(heap).slab;
    let id = FIRST_NAMED_ID;
    while (heap.cacheNames()[id] !== "gaps-dying") id++;
    parkAfterStore(slab.cacheWOf(id) + K_STATE, K_STATE_DYING);
    cache.destroy();
    break;
  }
}
parentPort!.postMessage({ cpu: heap.cpu, parked: false });
