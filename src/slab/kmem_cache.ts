/*
 * KmemCache: the handle of a named slab cache, valid in the agent that made or found it (objects
 * may be freed by any agent). A thin handle: the slab layer, the descriptor index and the
 * generation it was made for, all private; it has no public constructor.
 *
 * WORDS: none written; it reads its descriptor's K_GEN, K_STATE and K_OBJ_SIZE with plain loads.
 * LOCKS: none of its own; every call goes to the slab layer's cache calls (slab.ts, cache.ts;
 *   allocBulk through bulk.ts, which holds the batch in the slot's bulk hand), which take them.
 *   The bulk calls assert up front that the sheaf lock class may be taken (EDEADLK before the
 *   first object), and allocBulk gives back with kfreeNolock what it took when something throws.
 * NO LOCK: the generation and state check at each call.
 * STALE: K_GEN and K_STATE may be stale (a destroy by another agent just now): safe, since a
 *   destroy is seen at the latest by the slab layer's checks under the locks (cacheEnter, CT_LOCK).
 */
import { checkInt, checkOut, einval, readAddrs } from "../core/check.js";
import { ErrorCode, HeapError } from "../core/errors.js";
import { GFP } from "../core/gfp.js";
import * as layout from "../core/layout.js";
import { checkOutRegion } from "../core/out_region.js";
import { checkGfp } from "../page/page_alloc.js";
import type { SlabAllocator, SlabStats } from "./slab.js";
import { cacheStats } from "./check.js";
import { checkBulk } from "./debug.js";
import { cacheName, cacheShrink, destroyCache } from "./cache.js";
import { cacheAllocBulk } from "./bulk.js";

/* Module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const GFP_KERNEL = GFP.KERNEL;
const { K_GEN, K_OBJ_SIZE, K_STATE, K_STATE_ACTIVE, LOCK } = layout;

/** Only newKmemCache passes it: `new KmemCache()` from anywhere else (even while the library makes one) is EINVAL. */
const KMEM_CACHE_TOKEN: object = Object.freeze({});

/** A KmemCache for cache `id` of generation `gen` (the slab layer's createCache and findCache). @internal */
export function newKmemCache(slab: SlabAllocator, id: number, gen: number): KmemCache {
  return new (KmemCache as unknown as new (t: object, s: SlabAllocator, i: number, g: number) => KmemCache)(KMEM_CACHE_TOKEN, slab, id, gen);
}

/**
 * A named slab cache: a thin handle (heap, descriptor index, generation) valid in the agent that
 * made or found it. Objects may be freed by any agent.
 */
export class KmemCache {
  /** The cache's name: a read-only own property (non-writable, non-configurable). */
  declare readonly name: string;
  /** The bytes of one object as created: read-only, as `name`. */
  declare readonly objectSize: number;
  readonly #slab: SlabAllocator;
  readonly #id: number;
  readonly #gen: number;
  /** Word index of the descriptor's K_GEN and K_STATE, checked on every call. */
  readonly #kw: number;

  /** Made by heap.createCache and heap.findCache only (newKmemCache). */
  private constructor(token: object, slab: SlabAllocator, id: number, gen: number) {
    if (token !== KMEM_CACHE_TOKEN) einval("a KmemCache comes from heap.createCache or heap.findCache, not from new KmemCache()");
    this.#slab = slab;
    this.#id = id;
    this.#gen = gen;
    this.#kw = slab.cacheWOf(id);
    // Own data properties that cannot be written or redefined: errors and stats name the real cache.
    Object.defineProperty(this, "name", { value: cacheName(slab, id), enumerable: true });
    Object.defineProperty(this, "objectSize", { value: slab.i32[this.#kw + K_OBJ_SIZE]!, enumerable: true });
  }

  #check(): void {
    // A handle obtained through a heap handle that has since detached is dead with it.
    this.#slab.locks.assertLive();
    this.#checkAlive();
  }

  /**
   * The descriptor still holds this cache (not destroyed, not reused): two plain loads. alloc and
   * free need no more here: their fast paths are gated by the heap handle's fastOff, which a detach
   * sets, and their slow paths call assertLive themselves.
   */
  #checkAlive(): void {
    const i32 = this.#slab.i32;
    if (i32[this.#kw + K_GEN] !== this.#gen || i32[this.#kw + K_STATE] !== K_STATE_ACTIVE) this.#destroyed();
  }

  #destroyed(): never {
    this.#slab.locks.assertLive();
    throw new HeapError(ErrorCode.EINVAL, `cache "${this.name}" was destroyed`);
  }

  /** One object, or 0. */
  alloc(gfp: number = GFP_KERNEL): number {
    // #checkAlive written out: calling the private method measured a few per cent on the pair.
    const slab = this.#slab;
    if (slab.i32[this.#kw + K_GEN] !== this.#gen || slab.i32[this.#kw + K_STATE] !== K_STATE_ACTIVE) this.#destroyed();
    return slab.cacheAlloc(this.#id, this.#gen, gfp);
  }

  free(addr: number): void {
    const slab = this.#slab;
    if (slab.i32[this.#kw + K_GEN] !== this.#gen || slab.i32[this.#kw + K_STATE] !== K_STATE_ACTIVE) this.#destroyed();
    slab.cacheFree(this.#id, addr);
  }

  /** Fill out[0..n) with n objects and return n, or return 0 and allocate nothing. */
  allocBulk(n: number, out: number[] | Uint32Array, gfp: number = GFP_KERNEL): number {
    this.#check();
    checkInt("count", n, 0, 0x7fffffff, " of objects");
    checkOut("out", out, n);
    checkGfp(gfp);
    if (out instanceof Uint32Array) checkOutRegion(this.#slab.mem, out, n, this.#slab.pages.freeObject);
    // All or nothing: from a hook holding the sheaf lock or a later one, EDEADLK before the first.
    this.#slab.locks.assertCanLock(LOCK.sheaf);
    return cacheAllocBulk(this.#slab, this.#id, this.#gen, n, out, gfp);
  }

  /** Free many objects of this cache; all are checked before any is freed. */
  freeBulk(addrs: ArrayLike<number>): void {
    this.#check();
    const list = readAddrs("addrs", addrs);
    checkBulk(this.#slab, list, this.#id);
    // All or nothing, as kfreeBulk: EDEADLK from a hook holding a sheaf lock or later, before the first free.
    this.#slab.locks.assertCanLock(LOCK.sheaf);
    for (let i = 0; i < list.length; i++) if (list[i] !== 0) this.#slab.cacheFree(this.#id, list[i]!);
  }

  /** Return this slot's cached objects and every empty slab to the page allocator. */
  shrink(): void {
    this.#check();
    cacheShrink(this.#slab, this.#id, this.#gen);
  }

  /** Destroy the cache; refused with EBUSY, the cache still working, while objects are live. */
  destroy(): void {
    this.#check();
    destroyCache(this.#slab, this.#id, this.#gen);
  }

  stats(): SlabStats {
    this.#check();
    return cacheStats(this.#slab, this.#id);
  }
}
