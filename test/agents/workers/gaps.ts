/*
 * A worker that stops for ever at one instant inside the allocator where it holds something no
 * list holds yet, for the host to terminate it there and reclaim its slot
 * (test/agents/reclaim-gaps.test.ts):
 *   defer-before, defer-after: a freePagesNolock that parks its order-6 block on the zone's
 *     deferred list (its reentry hook frees it while the worker holds the zone lock), stopped just
 *     before, or just after, the compareExchange that publishes the block. No hook point lies
 *     there, so the worker wraps Atomics.compareExchange for the deferred list's word.
 *   drain-popped: the same parked block, then the worker's own drain of the deferred list (the
 *     outer free that holds the zone lock), stopped just after the compareExchange that pops the
 *     block off the list: the block is on no list, PG_DEFERRED, with the drainer as its owner.
 *   bulk-pages: allocPagesBulk(8), stopped in the mm_page_alloc trace handler of its 5th page.
 *   bulk-objects: cache.allocBulk of the host's cache "gaps-64", stopped at the list lock of its
 *     first list lock taken once objects are in the slot's bulk hand (a refill), posted as held.
 *   create-published: createCache("gaps-new"), stopped just after the store that publishes the
 *     descriptor (K_STATE active), holding the cache table lock.
 *   destroy-dying: destroy() of a cache it made, stopped just after the store that marks it
 *     dying, holding the cache table lock. These two wrap Atomics.store for that word.
 *   sheaf-nested: the first alloc of a new cache "gaps-z" holds its new sheaf object in the
 *     slot's sheaf hand; at that list:release its reentry hook makes a kmallocNolock(512) that
 *     trades its empty main sheaf of kmalloc-512 for a full one at the barn, whose empty list is
 *     at capacity, and stops at its first look at the sheaf cache's list lock, freeing the empty
 *     sheaf (it wraps Atomics.load for that word): the empty sheaf is off its pcs line and on no
 *     barn list, in the nested sheaf hand only.
 *   barn-flush: shrink() flushes a full sheaf of kmalloc-256 that it took off the barn into the
 *     slot's PCS_HAND; it stops between the two stores of one object's return (putObjectLocked,
 *     wrapped on the slab layer, then the sheaf's count): the object is on its slab's freelist
 *     and still the top of the hand's sheaf, with the list lock held.
 *   barn-put: it frees the host's objects of "gaps-trade" (remote frees); the one after a sheaf's
 *     worth finds its remote sheaf full and gives it to the barn, whose empty list is empty; it
 *     stops at the count of that put (wrapped vmInc), after the barn lock is dropped. The barn has the full sheaf; a hand that
 *     still named it would let reclaimSlot free a sheaf another slot took off the barn.
 * It posts { cpu, parked } when it stops (parked false: it finished without stopping).
 */
import { parentPort, workerData } from "node:worker_threads";
import { Heap } from "../../../src/index.js";
import { layersOf } from "../../../src/layers.js";
import { C_BULK_NR, VM, K_BARN_CAP, K_BARN_NR_EMPTY, K_BARN_NR_FULL, K_LIST_LOCK, K_SHEAF_CAP, K_STATE, K_STATE_ACTIVE, K_STATE_DYING, K_STATE_FREE, PCS_HAND, PCS_MAIN, PCS_SPARE, S_SIZE, Z_DEFER_HEAD } from "../../../src/core/layout.js";
import { sheafHandOf } from "../../../src/slab/sheaf_hand.js";
import { FIRST_NAMED_ID, SHEAF_CACHE_ID } from "../../../src/slab/slab.js";

export type GapScenario = "defer-before" | "defer-after" | "drain-popped" | "bulk-pages" | "bulk-objects" | "create-published" | "destroy-dying" | "sheaf-nested" | "barn-flush" | "barn-put";

const { buffer, scenario, objs } = workerData as { buffer: SharedArrayBuffer; scenario: GapScenario; objs?: number[] };
const heap = Heap.attach(buffer);
const stop = new Int32Array(new SharedArrayBuffer(4));
/** Objects in this slot's bulk hand when it stopped (bulk-objects). */
let held = 0;
const park = (): never => {
  parentPort!.postMessage({ cpu: heap.cpu, parked: true, held });
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
  case "drain-popped": {
    const deferAt = (layersOf(heap).mem.hw + Z_DEFER_HEAD) << 2;
    const real = Atomics.compareExchange;
    let armed = false;
    (Atomics as { compareExchange: unknown }).compareExchange = function (ta: Int32Array, i: number, expected: number, value: number): number {
      const r = real(ta, i, expected, value);
      if (armed && r === expected && ta.buffer === buffer && ta.byteOffset + i * ta.BYTES_PER_ELEMENT === deferAt) park();
      return r;
    };
    const block = heap.allocPages(6);
    let pushed = false;
    heap.setReentryHook((p) => {
      if (p !== "zone:acquire" || pushed) return;
      pushed = true;
      heap.freePagesNolock(block, 6); // parked: the zone lock is this worker's
      armed = true; // the next successful compareExchange of the word is the drain's pop
    });
    heap.freePages(heap.allocPages(7), 7);
    heap.freePages(heap.allocPages(7), 7); // a normal free that reaches the zone drains
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
    // Not in a kmem_cache_alloc handler: with one on, a batch holds no chain (the handler sees each
    // object before the caller has it). At the first list lock taken once the bulk hand holds
    // objects (a sheaf refill), those objects are in the hand.
    const mem = layersOf(heap).mem;
    const id = heap.cacheNames().indexOf("gaps-64");
    const cap = mem.i32[mem.cacheW + id * mem.cacheWords + K_SHEAF_CAP]!;
    heap.setReentryHook((p) => {
      if (p !== "list:acquire" || mem.i32[mem.pcpuW + C_BULK_NR] === 0) return;
      held = mem.i32[mem.pcpuW + C_BULK_NR]!;
      park();
    });
    cache.allocBulk(2 * cap + 2, new Uint32Array(2 * cap + 2));
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
  case "sheaf-nested": {
    const slab = layersOf(heap).slab;
    const id = heap.cacheNames().indexOf("kmalloc-512");
    const kw = slab.cacheWOf(id);
    const pcs = slab.pcsW(id);
    const cap = slab.i32[kw + K_SHEAF_CAP]!;
    const objs: number[] = [];
    for (let i = 0; i < 4 * cap; i++) objs.push(heap.kmalloc(512));
    for (const o of objs) heap.kfree(o);
    // Allocate (and keep) until the next allocation trades at the barn: the main sheaf empty, the
    // spare there and empty, a full sheaf on the barn.
    const ready = (): boolean => {
      const i32 = slab.i32;
      const main = i32[pcs + PCS_MAIN]!;
      const spare = i32[pcs + PCS_SPARE]!;
      return i32[(main >> 2) + S_SIZE] === 0 && spare !== 0 && i32[(spare >> 2) + S_SIZE] === 0 && i32[kw + K_BARN_NR_FULL]! > 0;
    };
    for (let i = 0; !ready(); i++) {
      if (i > 8 * cap) throw new Error("kmalloc-512 never reached a barn trade");
      heap.kmalloc(512);
    }
    const z = heap.createCache("gaps-z", 64);
    // The barn's empty list at capacity: the nested call's trade (barnTradeEmpty) takes a full
    // sheaf and frees the empty main, held in the nested sheaf hand only, to the sheaf cache.
    slab.i32[kw + K_BARN_CAP] = slab.i32[kw + K_BARN_NR_EMPTY]!;
    const sheafList = slab.cacheWOf(SHEAF_CACHE_ID) + K_LIST_LOCK;
    const realLoad = Atomics.load;
    let casts = -1;
    // The nested call's first look at the sheaf cache's list lock (trylock loads it first): that free's.
    (Atomics as { load: unknown }).load = function (ta: Int32Array, i: number): number {
      if (casts >= 0 && ta.buffer === buffer && ta.byteOffset + i * ta.BYTES_PER_ELEMENT === sheafList << 2 && ++casts === 1) park();
      return realLoad(ta, i);
    };
    let armed = true;
    heap.setReentryHook((p) => {
      if (!armed || p !== "list:release" || slab.i32[sheafHandOf(slab, heap.cpu)] === 0) return;
      armed = false;
      casts = 0;
      heap.kmallocNolock(512);
      casts = -1;
    });
    z.alloc();
    break;
  }
  case "barn-flush": {
    const slab = layersOf(heap).slab;
    const id = heap.cacheNames().indexOf("kmalloc-256");
    const kw = slab.cacheWOf(id);
    const pcs = slab.pcsW(id);
    const objs: number[] = [];
    for (let i = 0; i < 6 * slab.i32[kw + K_SHEAF_CAP]!; i++) objs.push(heap.kmalloc(256));
    for (const o of objs) heap.kfree(o);
    if (slab.i32[kw + K_BARN_NR_FULL] === 0) throw new Error("kmalloc-256's barn holds no full sheaf");
    const put = slab.putObjectLocked;
    slab.putObjectLocked = function (k: number, obj: number): number {
      const r = put.call(slab, k, obj);
      if (k === kw && slab.i32[pcs + PCS_HAND] !== 0) park();
      return r;
    };
    heap.shrink();
    break;
  }
  case "barn-put": {
    const slab = layersOf(heap).slab;
    const locks = slab.locks;
    const inc = locks.vmInc;
    locks.vmInc = function (item: number, n: number): void {
      inc.call(locks, item, n);
      if (item === VM.barnPut) park();
    };
    const cache = heap.findCache("gaps-trade");
    if (cache === null) throw new Error("the host creates gaps-trade");
    for (const o of objs!) cache.free(o);
    break;
  }
}
parentPort!.postMessage({ cpu: heap.cpu, parked: false });
