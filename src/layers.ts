/*
 * The layers of one heap handle, built in order and wired together: mem (views) -> locks ->
 * pages -> slab -> rcu. A layer gets the layers below it in its constructor and never reaches
 * upward; the few upward needs are callbacks installed here:
 *   - locks.onChange: the reentry hook, the trace handlers, detached or closing changed: every
 *     layer recomputes its fast-path gate (fastOff).
 *   - slab.rcuSlowWork: a slab slow path of this slot found expired kfreeRcu blocks waiting.
 *   - slab.beforeDestroy: a cache's destroy waits for pending kfreeRcu objects first.
 *   - pages.reclaimSlabs: direct reclaim takes back the empty slabs the caches keep (slab decay).
 *
 * Not part of the package's published exports: the facade (heap.ts) holds the layers privately.
 * The record also holds the public Trace facade over locks.trace (what heap.trace returns), and
 * isHeap() is the brand check serveInspector uses (a WeakSet of the Heaps made here).
 * layersOf() is the tests' way in, and only in a process started with SHMALLOC_EXPOSE_LAYERS=1 in
 * its environment (read once, when this module loads; npm test sets it), as Node's own tests
 * reach its internals only with --expose-internals. Otherwise no Layers record is kept anywhere
 * but in its Heap's private fields, so a user who imports this file by its path still reaches
 * no layer of any heap. The registry's WeakMap and WeakSet methods are captured at load, so a
 * prototype patched later never receives a Heap or a Layers record.
 *
 * WORDS: none of the heap; the registry (module-level WeakSet and WeakMap of this agent) and the
 *   callbacks, written by this agent when it builds a handle.
 * LOCKS: none of its own; each callback takes the locks of the layer it calls (see each layer).
 * NO LOCK: building the layers and the registry lookups.
 * STALE: nothing: the registry is this agent's own memory.
 */
import { Locks } from "./core/lock.js";
import { Mem, type MmInit } from "./core/mem.js";
import { makeTrace, type Trace } from "./core/trace.js";
import { PageAllocator } from "./page/page_alloc.js";
import { RcuAllocator } from "./rcu/rcu.js";
import { reclaimSlabs } from "./slab/decay.js";
import { isFreeObject } from "./slab/debug.js";
import { SlabAllocator } from "./slab/slab.js";
import { rcuSlowWork } from "./rcu/kfree_rcu.js";

export interface Layers {
  readonly mem: Mem;
  readonly locks: Locks;
  readonly pages: PageAllocator;
  readonly slab: SlabAllocator;
  readonly rcu: RcuAllocator;
  /** The public facade over locks.trace (heap.trace): users get this, never the state. */
  readonly trace: Trace;
}

export function buildLayers(init: MmInit): Layers {
  const mem = new Mem(init);
  const locks = new Locks(mem, init);
  const pages = new PageAllocator(mem, locks);
  const slab = new SlabAllocator(mem, locks, pages);
  const rcu = new RcuAllocator(mem, locks, pages, slab);
  locks.onChange = () => {
    pages.updateFastOff();
    slab.updateFastOff();
    rcu.updateFastOff();
  };
  // The gates as the heap stands (fault injection from the header on attach, the debug flags).
  locks.onChange();
  slab.rcuSlowWork = () => rcuSlowWork(rcu);
  slab.beforeDestroy = () => rcu.barrierIfPending();
  pages.reclaimSlabs = () => reclaimSlabs(slab);
  pages.freeObject = (id, obj) => isFreeObject(slab, id, obj);
  return { mem, locks, pages, slab, rcu, trace: makeTrace(locks.trace) };
}

/** Read once at load: may tests reach the layers of a Heap (layersOf)? Never in a browser. */
const EXPOSE_LAYERS = ((): boolean => {
  try {
    const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
    return env?.SHMALLOC_EXPOSE_LAYERS === "1";
  } catch {
    return false;
  }
})();
/** Every Heap the facade made: the brand check. */
const heaps = new WeakSet<object>();
/** Each Heap's layers, kept only when EXPOSE_LAYERS (tests). */
const heapLayers = new WeakMap<object, Layers>();
/** Captured at load: a WeakMap or WeakSet prototype patched later receives nothing. */
const apply = Reflect.apply;
const weakSetAdd = WeakSet.prototype.add;
const weakSetHas = WeakSet.prototype.has;
const weakMapSet = WeakMap.prototype.set;
const weakMapGet = WeakMap.prototype.get;

export function registerLayers(heap: object, layers: Layers): void {
  apply(weakSetAdd, heaps, [heap]);
  if (EXPOSE_LAYERS) apply(weakMapSet, heapLayers, [heap, layers]);
}

/** Is `x` a Heap that Heap.create or Heap.attach made (not a Proxy of one, nor an object inheriting from one)? */
export function isHeap(x: unknown): boolean {
  return x !== null && typeof x === "object" && (apply(weakSetHas, heaps, [x]) as boolean);
}

/**
 * The layers behind a Heap: for tests that check internals (corrupt words, counters near their
 * wrap). Only in a process started with SHMALLOC_EXPOSE_LAYERS=1; otherwise it throws.
 */
export function layersOf(heap: object): Layers {
  if (!EXPOSE_LAYERS) throw new TypeError("layersOf is for shmalloc's own tests: start the process with SHMALLOC_EXPOSE_LAYERS=1 in its environment (npm test does)");
  const l = apply(weakMapGet, heapLayers, [heap]) as Layers | undefined;
  if (l === undefined) throw new TypeError("not a Heap");
  return l;
}
