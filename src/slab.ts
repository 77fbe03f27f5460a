/*
 * The slab allocator: caches of same-sized objects carved from slabs of 2^order pages, with
 * per-slot sheaves (arrays of free objects) in front and a shared barn of full and empty sheaves
 * behind them (SLUB as of 2025-26). kmalloc serves sizes 8..8192 from size-class caches and larger
 * sizes straight from the page allocator.
 *
 * LOCKING CONTRACT
 *
 *   The pcs line of (cache, slot): P_MAIN, P_SPARE and the sheaves they point at belong to that
 *     slot alone. The fast paths (kmalloc, kfree, cache alloc and free hitting the main sheaf) read
 *     and write them with plain loads and stores and take no lock at all; they only test P_LOCKED.
 *   P_LOCKED (class sheaf) is the slot's local lock, a plain word: a slow path sets it while it
 *     swaps, refills or flushes the sheaves (every flush of this slot's sheaves too: shrink,
 *     cache.shrink, destroy, detach, dying caches), so that a hook re-entering from inside sees the
 *     sheaves busy. A nolock call that finds it set uses the next size class (kmallocNolock) or the slot's
 *     deferred list (kfreeNolock); a normal call throws EDEADLK.
 *   K_BARN_LOCK (class barn) protects K_BARN_* and the sheaves on the barn lists (linked by S_NEXT).
 *     A sheaf is in one place at every lock point: a pcs line (P_MAIN, P_SPARE), a barn list, or
 *     the hand of the slot moving it (P_HAND of its pcs line: a full main leaves P_MAIN for P_HAND
 *     before the barn takes it, a sheaf taken off the barn is in P_HAND until it is on the pcs
 *     line, barnShrink takes one sheaf at a time into P_HAND), so a reclaim of an agent killed
 *     there flushes the hand sheaf unless a pcs line or a barn list holds it, and never flushes a
 *     sheaf twice. A slab leaving its cache becomes a block in the slot's hand (PG_INHAND) under
 *     the list lock (unaccountSlab), freed by reclaimSlot if the slot dies before releasing it.
 *   Under the list lock every statement leaves the slabs rebuildable from their descriptors: an
 *     object moves into a sheaf (counted) before it leaves its freelist, a new slab's head has its
 *     freelist and count before its pages become PG_SLAB. reclaimSlot, taking a list lock over,
 *     rebuilds that cache's lists and counts from the descriptors (slabRebuildLocked) and drops
 *     from the dead slot's sheaves a top object that is also on a freelist; taking a barn lock
 *     over, it recounts the barn (barnRecountLocked). The deferred object list is drained one
 *     object at a time in place. A sheaf object being allocated or freed is in the slot's sheaf
 *     hand (P_HAND of its line of the sheaf cache, which has no sheaves: holdSheaf) from before it
 *     leaves its freelist, pcs line or hand until a pcs line, the barn, its freelist or the
 *     deferred list has it; the word is written and cleared under the sheaf cache's list lock on
 *     the freelist side, so reclaimSlot, taking that lock over, drops a held object that is on its
 *     freelist, and afterwards frees one that nothing else holds (freeSheafObjectInHand). Residual:
 *     a kill between an object leaving a list and its free or its caller leaks that one object.
 *   K_LIST_LOCK (class list) protects the partial and full lists (K_PARTIAL, K_FULL), K_NR_*,
 *     K_TOTAL_OBJS, K_FREE_OBJS, the slab decay's K_EMPTY_LOW and K_DECAY_TICKS and, for every slab
 *     of the cache, its head descriptor's D_FREELIST, D_INUSE, D_NEXT, D_PREV and the free objects
 *     on its freelist (words 0 and 1). A new slab is built before the lock is taken; under it the
 *     maker takes its objects first and only then puts the slab on a list, so no other agent can
 *     empty it in between.
 *   Empty slabs stay on the partial list up to K_MAX_EMPTY; one beyond goes back to the page
 *     allocator at once. Every SLAB_DECAY_TICKS frees to the slabs, a decay step (under the list
 *     lock that free holds) takes off half of the empty slabs above K_MIN_PARTIAL that no
 *     allocation needed since the step before (K_EMPTY_LOW), and releases them after the unlock,
 *     as every slab leaving its cache is (unaccountSlab). Direct reclaim in the page allocator
 *     (reclaimSlabs) takes back every empty slab above K_MIN_PARTIAL, with trylock only: a list
 *     lock that is held, by anyone, is skipped. shrink keeps no empty slab.
 *   CT_LOCK (class ctable) serialises createCache, findCache, destroy and the release of dying
 *     caches; the configuration line of a descriptor is written under it before K_STATE publishes
 *     it and is read-only afterwards. destroy checks the handle's generation under it.
 *   P_USERS of a slot's pcs line counts that slot's slow paths inside the named cache (cacheEnter:
 *     an Atomics.add, then the state and generation are checked; cacheExit); setupCache of a new
 *     cache in the descriptor leaves it as it is (a stale handle may be counting itself in). A dying cache is
 *     released (under CT_LOCK) only when no slot caches its objects and every P_USERS is 0, so no
 *     slow path ever works on a descriptor that is being reused; reclaimSlot clears a dead slot's. The fast paths need no count: a slot's own sheaf
 *     holds objects only while the cache is not released.
 *   The slot's deferred object list (C_DEFER_HEAD) belongs to the slot: kfreeNolock pushes, the
 *     next normal slab call of the slot drains it (and reclaimSlot for a dead slot).
 *
 *   Debug heaps trust no metadata word: M_STATE must be one of OBJ_*, M_REQ within 1..K_OBJ_SIZE,
 *     a slab descriptor's D_CACHE and D_HEAD in range, or the call throws ECORRUPT before acting on
 *     them. Bytes 0..7 of a free debug object are the free tag and POISON_WORD whenever it is off a
 *     linked list (every path that unlinks one writes the poison back over its link).
 *
 *   Every walk of a list is bounded by its count (deferred objects by C_DEFER_NR, the partial list
 *     by K_NR_SLABS, a barn by BARN_MAX): a cycle or a stray link is ECORRUPT (reported to onError
 *     by deferred work, which drops the broken list), never an endless walk.
 *
 *   Lock order: sheaf -> barn -> list -> (page allocator: pcp -> zone). The barn and list locks of
 *   one cache are never held together. The sheaf cache (KF_SHEAF_CACHE, no sheaves of its own) is
 *   used with only a sheaf local lock held, never with a barn or list lock held.
 *   Normal slow paths assert at entry that this slot holds no barn, list, pcp or zone lock and
 *   that this cache's sheaves are not locally locked (EDEADLK otherwise, nothing changed). Nolock
 *   paths only trylock barn and list, never allocate a sheaf and never loop on a lock. On an
 *   agent that must not block, normal paths take barn, list and ctable with lockIn(0, ...), which
 *   gives up past NOBLOCK_BOUND_MS like a trylock: an allocation takes the next source or returns
 *   0, a free goes on the slot's deferred list; shrink, detach, reclaimSlot and createCache /
 *   destroy (lock()) throw EAGAIN with what they returned so far returned.
 */
import { checkInt, checkOut, describe, einval, readAddrs, readOptions, storeOut } from "./check.js";
import { ErrorCode, HeapError, hex } from "./errors.js";
import { GFP, GFP_TRYLOCK } from "./gfp.js";
import {
  BARN_MAX,
  POISON_WORD,
  C_DEFER_HEAD,
  C_DEFER_NR,
  C_RCU_WAIT,
  CACHE_ACTIVE,
  CACHE_DYING,
  CACHE_FREE,
  CACHE_HDR_WORDS,
  CACHE_NAME_MAX,
  CT_LOCK,
  CT_NR,
  D_CACHE,
  D_FLAGS,
  D_FREELIST,
  D_HEAD,
  D_INUSE,
  D_NEXT,
  D_OWNER,
  D_PREV,
  EMPTY_SHEAF_W,
  FREE_TAG,
  G_NR_DYING,
  K_ALIGN,
  K_BARN_EMPTY,
  K_BARN_FULL,
  K_BARN_LOCK,
  K_BARN_NR_EMPTY,
  K_BARN_NR_FULL,
  K_FLAGS,
  K_FREE_OBJS,
  K_GEN,
  K_INUSE,
  K_INV_SIZE,
  K_META,
  M_REQ,
  M_STATE,
  OBJ_ALLOC,
  OBJ_FREE,
  OBJ_RCU,
  POISON_FREE,
  RED_ACTIVE,
  DEBUG_META_BYTES,
  DEBUG_POISON,
  DEBUG_REDZONE,
  DEBUG_RZ,
  K_LIST_LOCK,
  K_DECAY_TICKS,
  K_EMPTY_LOW,
  K_MAX_EMPTY,
  K_MIN_PARTIAL,
  K_NAME,
  K_NAME_LEN,
  K_FULL,
  K_NR_EMPTY,
  K_NR_FULL,
  K_NR_PARTIAL,
  K_NR_SLABS,
  K_OBJ_SIZE,
  K_OBJS,
  K_ORDER,
  K_PARTIAL,
  K_SHEAF_CAP,
  K_SIZE,
  K_STATE,
  K_TOTAL_OBJS,
  KF_SHEAF_CACHE,
  SLAB_DECAY_TICKS,
  SLAB_EMPTY_MAX_PAGES,
  Z_MANAGED,
  PCS_WORDS,
  LOCK,
  O_NEXT,
  ORDER_MASK,
  ORDER_SHIFT,
  P_LOCKED,
  P_HAND,
  P_MAIN,
  P_SPARE,
  P_USERS,
  PAGE_SHIFT,
  PAGE_SIZE,
  MAX_ORDER,
  PCP_MAX_ORDER,
  PG_BUDDY,
  PG_DEFERRED,
  PG_HEAD,
  PG_INHAND,
  PG_LARGE,
  PG_PCP,
  PG_SLAB,
  S_CACHE,
  S_CAP,
  S_NEXT,
  S_OBJS,
  S_SIZE,
  SLOT_ATTACHED,
  C_STATE,
  VM,
} from "./layout.js";
import { checkGfp, PAGE_WHERE, PageAllocator } from "./page_alloc.js";
import { TP, TRACE_EVENTS, type TraceRecord } from "./trace.js";

/** The kmalloc size classes (kernel-map.md). */
export const KMALLOC_SIZES = [8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192] as const;
export const KMALLOC_MAX_CACHE_SIZE = 8192;
/** The largest kmalloc: one block of 2^MAX_ORDER pages (4 MiB), as the kernel's KMALLOC_MAX_SIZE. */
export const KMALLOC_MAX_SIZE = PAGE_SIZE << MAX_ORDER;
/** Cache id of the sheaf cache; kmalloc class i is cache id KMALLOC_FIRST_ID + i. */
export const SHEAF_CACHE_ID = 0;
export const KMALLOC_FIRST_ID = 1;
export const FIRST_NAMED_ID = KMALLOC_FIRST_ID + KMALLOC_SIZES.length;
/** Largest object a named cache may have: one object per order-3 slab. */
export const MAX_OBJECT_SIZE = PAGE_SIZE << PCP_MAX_ORDER;

/** SIZE_INDEX[(size + 7) >> 3] is the kmalloc class of a size in 1..8192. */
const SIZE_INDEX = new Uint8Array((KMALLOC_MAX_CACHE_SIZE >> 3) + 1);
{
  let c = 0;
  for (let b = 1; b < SIZE_INDEX.length; b++) {
    while (KMALLOC_SIZES[c]! < b << 3) c++;
    SIZE_INDEX[b] = c;
  }
}

/** Sheaf capacity by object size (kernel-map.md). */
export function sheafCapacity(size: number): number {
  if (size < 256) return 60;
  if (size < 1024) return 26;
  if (size < 4096) return 12;
  return 4;
}

/** Slab order: the smallest order 0..3 whose waste stays under 1/8 with at least 8 objects (or as many as order 3 holds). */
export function slabOrder(size: number): number {
  const want = Math.min(8, Math.floor((PAGE_SIZE << PCP_MAX_ORDER) / size));
  for (let order = 0; order <= PCP_MAX_ORDER; order++) {
    const bytes = PAGE_SIZE << order;
    const objs = Math.floor(bytes / size);
    if (objs >= Math.max(1, want) && (bytes - objs * size) * 8 <= bytes) return order;
  }
  return PCP_MAX_ORDER;
}

export interface CacheOptions {
  /** Alignment of every object: a power of two from 8 to 4096 (default 8). */
  align?: number;
}

export interface SlabStats {
  name: string;
  /**
   * True for the allocator's own caches (kmem_cache_sheaf, whose objects are the sheaves): their
   * activeObjects are the allocator's, never a caller's. Leave them out when summing activeObjects
   * to look for a leak.
   */
  internal: boolean;
  objectSize: number;
  /** Stride between objects in a slab. */
  size: number;
  order: number;
  objectsPerSlab: number;
  /** Objects held by callers (not in slab freelists, sheaves, the barn or a deferred list). */
  activeObjects: number;
  totalObjects: number;
  slabs: number;
  pages: number;
  partialSlabs: number;
  fullSlabs: number;
  emptySlabs: number;
  /** Free objects in the slots' sheaves and in the barn. */
  sheafObjects: number;
  barnObjects: number;
  barnFull: number;
  barnEmpty: number;
  sheafCapacity: number;
}

const utf8 = new TextEncoder();
const utf8d = new TextDecoder();

export class SlabAllocator extends PageAllocator {
  /** Word index of this slot's pcs line for each kmalloc class: derived, read-only. */
  protected readonly kmPcs: Int32Array;
  /** Non-zero while the fast paths must not run: detached, debug mode, or object tracing on. */
  protected fastOff: number;
  /** True while drainDeferredObjects runs (it does not nest). */
  private drainingDeferred: boolean;

  constructor(init: ConstructorParameters<typeof PageAllocator>[0]) {
    super(init);
    this.kmPcs = new Int32Array(KMALLOC_SIZES.length);
    for (let i = 0; i < KMALLOC_SIZES.length; i++) this.kmPcs[i] = this.pcsW(KMALLOC_FIRST_ID + i);
    this.fastOff = this.debugFlags;
    this.drainingDeferred = false;
  }

  protected override onReentryChange(): void {
    super.onReentryChange();
    this.updateFastOff();
  }

  protected updateFastOff(): void {
    const objEvents = (1 << TP.kmalloc) | (1 << TP.kfree) | (1 << TP.kmem_cache_alloc) | (1 << TP.kmem_cache_free);
    this.fastOff = (this.detached || this.closing ? 1 : 0) | this.debugFlags | (this.trace.mask & objEvents);
  }

  /** Word index of cache `id`'s descriptor. */
  protected cacheWOf(id: number): number {
    return this.cacheW + id * this.cacheWords;
  }

  /** Word index of this slot's pcs line of cache `id`. */
  protected pcsW(id: number): number {
    return this.cacheW + id * this.cacheWords + CACHE_HDR_WORDS + this.cpu * PCS_WORDS;
  }

  /* ================================================================= kmalloc: fast paths */

  /** Allocate `size` bytes (8-byte aligned at least); 0 when memory is exhausted. */
  kmalloc(size: number, gfp: number = GFP.KERNEL): number {
    if (typeof size === "number" && (size | 0) === size && size > 0 && size <= KMALLOC_MAX_CACHE_SIZE && gfp === 0 && this.fastOff === 0) {
      if (this.i32[this.pcpuW + C_DEFER_HEAD] === 0) {
        const obj = this.popFast(this.kmPcs[SIZE_INDEX[(size + 7) >> 3]!]!);
        if (obj !== 0) return obj;
      }
    }
    return this.kmallocSlow(size, gfp);
  }

  /** Free what kmalloc (or a cache) returned; 0 is a no-op. */
  kfree(addr: number): void {
    if (this.fastOff === 0 && this.i32[this.pcpuW + C_DEFER_HEAD] === 0 && this.pushFast(addr)) return;
    if (addr !== 0) this.kfreeSlow(addr, -1, 0);
    else this.assertLive();
  }

  /**
   * The allocation fast path: pop the main sheaf of the pcs line at word `pcs`, unless a slow path
   * of this slot holds it (P_LOCKED) or it is empty. Plain loads and stores only; 0 if it cannot.
   */
  private popFast(pcs: number): number {
    const i32 = this.i32;
    if (i32[pcs + P_LOCKED] !== 0) return 0;
    const sw = i32[pcs + P_MAIN]! >> 2;
    const n = i32[sw + S_SIZE]! - 1;
    if (n < 0) return 0;
    i32[sw + S_SIZE] = n;
    const obj = i32[sw + S_OBJS + n]!;
    i32[obj >> 2] = 0;
    return obj;
  }

  /**
   * The free fast path: `addr` must be an object start of a slab page, not carry the free tag, and
   * its cache's main sheaf on this slot must be unlocked and not full. Plain loads and stores only.
   */
  private pushFast(addr: number): boolean {
    const i32 = this.i32;
    if (typeof addr !== "number" || addr >>> 0 !== addr || addr >= this.size || addr < this.offset) return false;
    const d = this.descW + (addr >>> PAGE_SHIFT) * 8;
    if (i32[d + D_FLAGS] !== PG_SLAB) return false;
    const kw = this.cacheW + i32[d + D_CACHE]! * this.cacheWords;
    const off = addr - (i32[d + D_HEAD]! << PAGE_SHIFT);
    const size = i32[kw + K_SIZE]!;
    const idx = (off * this.f64[(kw + K_INV_SIZE) >> 1]! + 0.5) | 0;
    if (idx * size !== off || idx >= i32[kw + K_OBJS]! || i32[addr >> 2] === (addr ^ FREE_TAG)) return false;
    const pcs = kw + CACHE_HDR_WORDS + this.cpu * PCS_WORDS;
    if (i32[pcs + P_LOCKED] !== 0) return false;
    const sw = i32[pcs + P_MAIN]! >> 2;
    const n = i32[sw + S_SIZE]!;
    if (n >= i32[sw + S_CAP]!) return false;
    i32[sw + S_OBJS + n] = addr;
    i32[sw + S_SIZE] = n + 1;
    i32[addr >> 2] = addr ^ FREE_TAG;
    return true;
  }

  /* ================================================================= kmalloc: slow paths */

  private kmallocSlow(size: number, gfp: number): number {
    this.assertLive();
    checkSize(size);
    checkGfp(gfp);
    if (size > KMALLOC_MAX_CACHE_SIZE) return this.kmallocLarge(size, gfp);
    const id = KMALLOC_FIRST_ID + SIZE_INDEX[(size + 7) >> 3]!;
    const obj = this.slabAllocSlow(id, gfp, size);
    if (obj === 0) return this.allocFailed(0, gfp);
    if ((this.trace.mask & (1 << TP.kmalloc)) !== 0) this.emitObj(TP.kmalloc, obj, size, id);
    return obj;
  }

  private kmallocLarge(size: number, gfp: number): number {
    const order = Math.max(0, Math.ceil(Math.log2(size / PAGE_SIZE)));
    if (order > 10) return this.allocFailed(order, gfp);
    if ((gfp & GFP.FAST_TRY) === 0) this.assertCanLock(LOCK.zone);
    const pfn = this.rmqueue(order, gfp);
    if (pfn === 0) return this.allocFailed(order, gfp);
    this.vmInc(VM.kmallocLarge, 1);
    const addr = this.prepNewBlock(pfn, order, PG_LARGE, gfp);
    if ((this.trace.mask & (1 << TP.kmalloc)) !== 0) this.emitObj(TP.kmalloc, addr, size, -1);
    return addr;
  }

  /**
   * Every kfree and cache free that left the fast path. `want` is the cache id a cache's free
   * requires (-1 for kfree); `mode` is GFP_TRYLOCK for kfreeNolock.
   */
  protected kfreeSlow(addr: number, want: number, mode: number): void {
    this.assertLive();
    const id = this.objectCache(addr, want);
    if (id < 0) {
      // A large kmalloc block.
      const pfn = addr >>> PAGE_SHIFT;
      const order = (this.u32[this.pd(pfn) + D_FLAGS]! & ORDER_MASK) >>> ORDER_SHIFT;
      if (mode === 0) this.assertCanLock(LOCK.zone);
      // In hand from here (a second free of it is refused; a kill leaves it to reclaimSlot).
      this.u32[this.pd(pfn) + D_OWNER] = this.cpu;
      this.u32[this.pd(pfn) + D_FLAGS] = PG_HEAD | PG_INHAND | (order << ORDER_SHIFT);
      this.vmInc(VM.pgfree, 1 << order);
      if ((this.trace.mask & (1 << TP.kfree)) !== 0) this.emitObj(TP.kfree, addr, PAGE_SIZE << order, -1);
      this.freeBlock(pfn, order, mode);
      return;
    }
    if (this.i32[this.cacheWOf(id) + K_META] !== 0) {
      this.debugFree(id, addr, true);
    } else if (this.i32[addr >> 2] === (addr ^ FREE_TAG) && this.isFreeObject(id, addr)) {
      throw new HeapError(ErrorCode.EDOUBLEFREE, `${hex(addr)} of ${this.cacheName(id)} is already free`);
    }
    if ((this.trace.mask & (1 << (want < 0 ? TP.kfree : TP.kmem_cache_free))) !== 0) {
      this.emitObj(want < 0 ? TP.kfree : TP.kmem_cache_free, addr, this.i32[this.cacheWOf(id) + K_OBJ_SIZE]!, id);
    }
    if (id < FIRST_NAMED_ID) {
      if (mode !== 0) this.slabFreeNolock(id, addr);
      else this.slabFreeSlow(id, addr);
      return;
    }
    // A named cache may be destroyed meanwhile: count this agent in, so it is not released.
    this.cacheEnter(id, 0, false, true);
    try {
      if (mode !== 0) this.slabFreeNolock(id, addr);
      else this.slabFreeSlow(id, addr);
    } finally {
      this.cacheExit(id);
    }
  }

  /**
   * Enter a slow path of named cache `id`: count this slot in its P_USERS (tryReleaseDying does
   * not release a cache while any slot's is non-zero), then check that the cache is still the one the caller
   * means: generation `gen` when `checkGen`, ACTIVE (or DYING when `dyingOk`: frees of objects
   * that outlived a destroy). Throws EINVAL, not counted in, when it is not.
   */
  protected cacheEnter(id: number, gen: number, checkGen: boolean, dyingOk: boolean): void {
    const i32 = this.i32;
    const kw = this.cacheWOf(id);
    const users = this.pcsW(id) + P_USERS;
    Atomics.add(i32, users, 1);
    const st = Atomics.load(i32, kw + K_STATE);
    if ((checkGen && Atomics.load(i32, kw + K_GEN) !== gen) || !(st === CACHE_ACTIVE || (dyingOk && st === CACHE_DYING))) {
      Atomics.sub(i32, users, 1);
      throw new HeapError(ErrorCode.EINVAL, `the cache in descriptor ${id} was destroyed`);
    }
  }

  protected cacheExit(id: number): void {
    Atomics.sub(this.i32, this.pcsW(id) + P_USERS, 1);
  }

  /**
   * The cache id of the live-looking object at `addr` (-1 for a large kmalloc block), after every
   * cheap check; throws EINVAL or EDOUBLEFREE. `want` >= 0 demands that cache.
   */
  protected objectCache(addr: number, want: number): number {
    if (typeof addr !== "number") einval(`addr must be a number (an address from kmalloc or a cache), not ${describe(addr)}`);
    if (addr >>> 0 !== addr || addr < this.offset || addr === 0 || (addr >= this.size && !(this.refreshViews() && addr < this.size))) {
      throw new HeapError(ErrorCode.EINVAL, `addr ${String(addr)} is not an address of this heap (a whole number in ${Math.max(1, this.offset)}..${this.size - 1})`);
    }
    const pfn = addr >>> PAGE_SHIFT;
    if (pfn < this.zoneStart) throw new HeapError(ErrorCode.EINVAL, `${hex(addr)} is in the heap's metadata`);
    const d = this.pd(pfn);
    const f = this.u32[d + D_FLAGS]!;
    if (f === PG_SLAB) {
      const id = this.u32[d + D_CACHE]!;
      if (id >= this.maxCaches || this.u32[d + D_HEAD]! > pfn) {
        throw new HeapError(ErrorCode.ECORRUPT, `the descriptor of page ${pfn} is broken (cache ${id}, head ${this.u32[d + D_HEAD]})`);
      }
      const kw = this.cacheWOf(id);
      const off = addr - (this.u32[d + D_HEAD]! << PAGE_SHIFT);
      const size = this.i32[kw + K_SIZE]!;
      if (size <= 0 || off % size !== 0 || off / size >= this.i32[kw + K_OBJS]!) {
        throw new HeapError(ErrorCode.EINVAL, `${hex(addr)} is inside an object of ${this.cacheName(id)}, not at its start`);
      }
      if ((this.i32[kw + K_FLAGS]! & KF_SHEAF_CACHE) !== 0) {
        throw new HeapError(ErrorCode.EINVAL, `${hex(addr)} is the allocator's own sheaf, not an allocation`);
      }
      if (want >= 0 && id !== want) {
        throw new HeapError(ErrorCode.EINVAL, `${hex(addr)} belongs to ${this.cacheName(id)}, not ${this.cacheName(want)}`);
      }
      return id;
    }
    if ((f & PG_LARGE) !== 0 && (addr & (PAGE_SIZE - 1)) === 0 && want < 0) return -1;
    if ((f & PG_LARGE) !== 0 && want >= 0) {
      throw new HeapError(ErrorCode.EINVAL, `${hex(addr)} is a large kmalloc block, not an object of ${this.cacheName(want)}`);
    }
    throw new HeapError(ErrorCode.EINVAL, `${hex(addr)} is not a live allocation (${this.describePage(pfn)})`);
  }

  private describePage(pfn: number): string {
    const f = this.u32[this.pd(pfn) + D_FLAGS]!;
    if (f === 0) return "inside a block, not at an object start";
    if ((f & PG_LARGE) !== 0) return "inside a large kmalloc block";
    if ((f & (PG_BUDDY | PG_PCP | PG_DEFERRED)) !== 0) return "a free page";
    if ((f & PG_HEAD) !== 0) return "a page block from allocPages: free it with freePages";
    return `page flags ${hex(f)}`;
  }

  /** Is `addr`, whose first word carries the free tag, really free somewhere in cache `id`? */
  private isFreeObject(id: number, addr: number): boolean {
    const i32 = this.i32;
    // This slot's and every other slot's sheaves (plain reads of other slots: a hint, racy).
    for (let cpu = 0; cpu < this.cpus; cpu++) {
      const pcs = this.cacheWOf(id) + CACHE_HDR_WORDS + cpu * PCS_WORDS;
      if (sheafHas(i32, i32[pcs + P_MAIN]!, addr) || sheafHas(i32, i32[pcs + P_SPARE]!, addr)) return true;
    }
    const kw = this.cacheWOf(id);
    // Bounded walks: a broken list must not hang a free.
    for (let s = i32[kw + K_BARN_FULL]!, n = 0; s !== 0 && n <= BARN_MAX; s = i32[(s >> 2) + S_NEXT]!, n++) if (sheafHas(i32, s, addr)) return true;
    const nd = i32[this.pcpuW + C_DEFER_NR]!;
    for (let o = i32[this.pcpuW + C_DEFER_HEAD]!, n = 0; o !== 0 && n <= nd; o = i32[(o >> 2) + O_NEXT]!, n++) if (o === addr) return true;
    const head = this.u32[this.pd(addr >>> PAGE_SHIFT) + D_HEAD]!;
    for (let o = i32[this.pd(head) + D_FREELIST]!, n = 0; o !== 0 && n < 65536; o = i32[(o >> 2) + O_NEXT]!, n++) {
      if (o === addr) return true;
    }
    return false;
  }

  /* ================================================================= object alloc: slow paths */

  /** Allocate from cache `id` in normal mode once the fast path could not; `req` bytes were asked for. */
  protected slabAllocSlow(id: number, gfp: number, req: number): number {
    this.slabSlowEntry(id);
    const kw = this.cacheWOf(id);
    let obj: number;
    if (this.i32[kw + K_SHEAF_CAP] === 0) {
      obj = this.allocFromSlabs(id, gfp, 0);
    } else {
      const pcs = this.pcsW(id);
      this.localLock(pcs + P_LOCKED, LOCK.sheaf);
      try {
        let sw = this.i32[pcs + P_MAIN]! >> 2;
        if (this.i32[sw + S_SIZE] === 0) sw = this.replaceEmptyMain(id, pcs, gfp, 0);
        obj = 0;
        if (sw !== 0) {
          const n = this.i32[sw + S_SIZE]! - 1;
          this.i32[sw + S_SIZE] = n;
          obj = this.i32[sw + S_OBJS + n]!;
        }
      } finally {
        this.localUnlock(pcs + P_LOCKED, LOCK.sheaf);
      }
      if (obj === 0) obj = this.allocFromSlabs(id, gfp, 0);
    }
    if (obj === 0) return 0;
    return this.prepObject(id, obj, gfp, req, 0);
  }

  /** An object leaves the allocator: clear its free tag, zero it when asked; debug checks. */
  protected prepObject(id: number, obj: number, gfp: number, req: number, mode: number): number {
    const kw = this.cacheWOf(id);
    if (this.i32[kw + K_META] !== 0) return this.debugAlloc(id, obj, gfp, req, mode);
    this.i32[obj >> 2] = 0;
    // The whole usable size (ksize), so a zeroed object reads the same whatever its cache.
    if ((gfp & GFP.ZERO) !== 0) this.u8.fill(0, obj, obj + this.i32[kw + K_SIZE]!);
    return obj;
  }

  /* ================================================================= debug mode (SLUB debugging) */

  /**
   * Debug checks when an object is handed out: it must be free, its poison intact (a write after
   * free is reported with the cache, address and offset, the poison restored, the object put back
   * and ECORRUPT thrown); then its redzones are armed and its state set to allocated.
   */
  private debugAlloc(id: number, obj: number, gfp: number, req: number, mode: number): number {
    const i32 = this.i32;
    const u8 = this.u8;
    const kw = this.cacheWOf(id);
    const inuse = i32[kw + K_INUSE]!;
    const mw = (obj + i32[kw + K_META]!) >> 2;
    if (i32[mw + M_STATE] !== OBJ_FREE) {
      this.slabError(ErrorCode.ECORRUPT, id, obj, -1, `object ${hex(obj)} of ${this.cacheName(id)} was handed out while not free (state ${hex(i32[mw + M_STATE]!)})`);
    }
    // Bytes 0..7 of a free object: the free tag, and (with poisoning) the poison word, which every
    // path that takes an object off a linked list writes back over its link.
    const bad = this.firstBadHead(obj);
    if (bad >= 0) {
      const found = u8[obj + bad]!;
      i32[obj >> 2] = obj ^ FREE_TAG;
      if ((this.debugFlags & DEBUG_POISON) !== 0) i32[(obj >> 2) + 1] = POISON_WORD;
      if (mode !== 0) this.slabFreeNolock(id, obj);
      else if (!this.freeToSlabs(id, obj, 0)) this.deferObject(obj);
      this.slabError(ErrorCode.ECORRUPT, id, obj, bad, `write to freed object ${hex(obj)} of ${this.cacheName(id)} at offset ${bad} (found ${hex(found)}); restored`);
    }
    if ((this.debugFlags & DEBUG_POISON) !== 0) {
      for (let off = 8; off < inuse; off++) {
        if (u8[obj + off] !== POISON_FREE) {
          const found = u8[obj + off]!;
          u8.fill(POISON_FREE, obj + 8, obj + inuse);
          if (mode !== 0) this.slabFreeNolock(id, obj);
          else if (!this.freeToSlabs(id, obj, 0)) this.deferObject(obj);
          this.slabError(ErrorCode.ECORRUPT, id, obj, off, `write to freed object ${hex(obj)} of ${this.cacheName(id)} at offset ${off} (found ${hex(found)}, poison ${hex(POISON_FREE)}); poison restored`);
        }
      }
    }
    i32[obj >> 2] = 0;
    i32[(obj >> 2) + 1] = 0;
    if ((gfp & GFP.ZERO) !== 0) u8.fill(0, obj, obj + req);
    if ((this.debugFlags & DEBUG_REDZONE) !== 0) u8.fill(RED_ACTIVE, obj + req, obj + inuse + DEBUG_RZ);
    i32[mw + M_STATE] = OBJ_ALLOC;
    i32[mw + M_REQ] = req;
    return obj;
  }

  /** Debug heaps: the offset of the first of bytes 0..7 of free object `obj` that is not as the allocator left it, or -1. */
  private firstBadHead(obj: number): number {
    const i32 = this.i32;
    const tag = obj ^ FREE_TAG;
    const w0 = i32[obj >> 2]!;
    if (w0 !== tag) return firstDiffByte(w0, tag);
    if ((this.debugFlags & DEBUG_POISON) === 0) return -1;
    const w1 = i32[(obj >> 2) + 1]!;
    return w1 === POISON_WORD ? -1 : 4 + firstDiffByte(w1, POISON_WORD);
  }

  /** Debug heaps: an object taken off a freelist or deferred list gets the poison word back over its link. */
  protected debugUnlink(kw: number, obj: number): void {
    if (this.i32[kw + K_META] !== 0 && (this.debugFlags & DEBUG_POISON) !== 0) this.i32[(obj >> 2) + O_NEXT] = POISON_WORD;
  }

  /**
   * Debug checks when an object is freed: it must be allocated (EDOUBLEFREE if it is free or
   * waiting for kfreeRcu), its redzones intact (a write past the requested size is reported with
   * the cache, address and offset, the redzone restored and ECORRUPT thrown, the object still
   * allocated). With `commit`, the object is then marked free and poisoned.
   */
  protected debugFree(id: number, addr: number, commit: boolean): number {
    const i32 = this.i32;
    const u8 = this.u8;
    const kw = this.cacheWOf(id);
    const inuse = i32[kw + K_INUSE]!;
    const mw = (addr + i32[kw + K_META]!) >> 2;
    const state = i32[mw + M_STATE];
    if (state === OBJ_FREE) throw new HeapError(ErrorCode.EDOUBLEFREE, `${hex(addr)} of ${this.cacheName(id)} is already free`);
    if (state === OBJ_RCU) throw new HeapError(ErrorCode.EDOUBLEFREE, `${hex(addr)} of ${this.cacheName(id)} is already queued by kfreeRcu`);
    if (state !== OBJ_ALLOC) this.slabError(ErrorCode.ECORRUPT, id, addr, -1, `metadata of ${hex(addr)} of ${this.cacheName(id)} is broken (state ${hex(state!)})`);
    const req = i32[mw + M_REQ]!;
    // Never act on a size that is not the object's: a stray write below the next object lands here.
    if (req < 1 || req > i32[kw + K_OBJ_SIZE]!) {
      this.slabError(ErrorCode.ECORRUPT, id, addr, -1, `metadata of ${hex(addr)} of ${this.cacheName(id)} is broken (requested size ${req} of a ${i32[kw + K_OBJ_SIZE]}-byte object)`);
    }
    if ((this.debugFlags & DEBUG_REDZONE) !== 0) {
      for (let off = req; off < inuse + DEBUG_RZ; off++) {
        const found = u8[addr + off]!;
        if (found !== RED_ACTIVE) {
          if (commit) u8.fill(RED_ACTIVE, addr + req, addr + inuse + DEBUG_RZ);
          this.slabError(ErrorCode.ECORRUPT, id, addr, off, `write past the end of ${hex(addr)} of ${this.cacheName(id)} (${req} bytes asked for): redzone byte at offset ${off} is ${hex(found)}${commit ? "; redzone restored, object still allocated" : ""}`);
        }
      }
    }
    if (!commit) return req;
    i32[mw + M_STATE] = OBJ_FREE;
    if ((this.debugFlags & DEBUG_POISON) !== 0) u8.fill(POISON_FREE, addr + 4, addr + inuse);
    return req;
  }

  /** Set a debug object's state (kfreeRcu marks queued objects). */
  protected debugSetState(addr: number, state: number): void {
    const id = this.i32[this.pd(addr >>> PAGE_SHIFT) + D_CACHE]!;
    const kw = this.cacheWOf(id);
    if (this.i32[this.pd(addr >>> PAGE_SHIFT) + D_FLAGS] !== PG_SLAB || this.i32[kw + K_META] === 0) return;
    this.i32[((addr + this.i32[kw + K_META]!) >> 2) + M_STATE] = state;
  }

  /** Report a debug finding: a slab_error trace event, then a HeapError. */
  private slabError(code: ErrorCode, id: number, addr: number, offset: number, message: string): never {
    if ((this.trace.mask & (1 << TP.slab_error)) !== 0 && this.deferring === 0) {
      const rec: TraceRecord = { event: "slab_error", cpu: this.cpu, addr, cache: this.cacheName(id), message };
      if (offset >= 0) rec.size = offset;
      this.trace.emit(TP.slab_error, rec);
    }
    throw new HeapError(code, message);
  }

  /** Debug heaps: the live objects of cache `id` (walks its slabs). */
  protected liveObjectList(id: number): number[] {
    const i32 = this.i32;
    const kw = this.cacheWOf(id);
    const out: number[] = [];
    if (i32[kw + K_META] === 0) return out;
    const size = i32[kw + K_SIZE]!;
    const objs = i32[kw + K_OBJS]!;
    for (let pfn = this.zoneStart; pfn < this.nrPages; pfn++) {
      const d = this.pd(pfn);
      if (i32[d + D_FLAGS] !== PG_SLAB || i32[d + D_HEAD] !== pfn || i32[d + D_CACHE] !== id) continue;
      for (let k = 0; k < objs; k++) {
        const o = (pfn << PAGE_SHIFT) + k * size;
        const st = i32[((o + i32[kw + K_META]!) >> 2) + M_STATE];
        if (st === OBJ_ALLOC || st === OBJ_RCU) out.push(o);
      }
    }
    return out;
  }

  /**
   * Entry checks of every normal slab slow path: this cache's sheaves are not locked by this slot
   * (we are not inside a hook of its own slow path), no barn/list/pcp/zone lock is held; then the
   * slot's housekeeping: deferred frees and dying caches.
   */
  protected slabSlowEntry(id: number): void {
    if (this.i32[this.pcsW(id) + P_LOCKED] !== 0) {
      throw new HeapError(
        ErrorCode.EDEADLK,
        `the sheaves of ${this.cacheName(id)} on cpu ${this.cpu} are locked by this agent: use kmallocNolock/kfreeNolock from hooks`,
      );
    }
    this.assertCanLock(LOCK.barn);
    if (this.i32[this.pcpuW + C_DEFER_HEAD] !== 0) this.drainDeferredObjects();
    if (this.i32[this.hw + G_NR_DYING] !== 0) this.flushDyingCaches();
    if (this.i32[this.pcpuW + C_RCU_WAIT] !== 0) this.rcuSlowWork();
  }

  /** Work of the RCU layer on this slot's slow paths (free expired kfreeRcu blocks). */
  protected rcuSlowWork(): void {}

  /**
   * The main sheaf is empty: swap in the spare if it has objects, else trade it at the barn for a
   * full one, else refill it from the slabs. Returns the new main's word index (0 if nothing
   * could be had). Local lock held.
   */
  private replaceEmptyMain(id: number, pcs: number, gfp: number, mode: number): number {
    const i32 = this.i32;
    const main = i32[pcs + P_MAIN]!;
    const spare = i32[pcs + P_SPARE]!;
    if (spare !== 0 && i32[(spare >> 2) + S_SIZE]! > 0) {
      i32[pcs + P_MAIN] = spare;
      i32[pcs + P_SPARE] = main === (this.hw + EMPTY_SHEAF_W) << 2 ? 0 : main;
      return spare >> 2;
    }
    const full = this.barnGetFull(id, mode);
    if (full !== 0) {
      this.vmInc(VM.barnGet, 1);
      // The empty main goes to the barn (or is freed): held from before it leaves the pcs line.
      if (main !== (this.hw + EMPTY_SHEAF_W) << 2 && spare !== 0) this.holdSheaf(main);
      i32[pcs + P_MAIN] = full;
      i32[pcs + P_HAND] = 0;
      if (main !== (this.hw + EMPTY_SHEAF_W) << 2) {
        if (spare === 0) i32[pcs + P_SPARE] = main;
        else this.barnPutEmpty(id, main, mode);
      }
      return full >> 2;
    }
    if (mode !== 0) {
      // Nolock: refill only a real sheaf, from partial slabs under a trylock; never allocate one.
      if (main === (this.hw + EMPTY_SHEAF_W) << 2) return 0;
      return this.refillSheaf(id, main >> 2, gfp, mode) > 0 ? main >> 2 : 0;
    }
    let sw = main >> 2;
    if (main === (this.hw + EMPTY_SHEAF_W) << 2) {
      const s = this.allocSheaf(id, gfp);
      if (s === 0) return 0;
      i32[pcs + P_MAIN] = s;
      this.unholdSheaf(s);
      sw = s >> 2;
    }
    return this.refillSheaf(id, sw, gfp, mode) > 0 ? sw : 0;
  }

  /** Fill sheaf `sw` from the partial slabs and, if they run dry, one new slab. Returns objects added. */
  private refillSheaf(id: number, sw: number, gfp: number, mode: number): number {
    const i32 = this.i32;
    const kw = this.cacheWOf(id);
    const want = i32[sw + S_CAP]! - i32[sw + S_SIZE]!;
    let got = 0;
    const listLock = kw + K_LIST_LOCK;
    if (!this.lockIn(mode, listLock, LOCK.list)) return 0;
    got = this.takeFromPartial(kw, sw, want);
    this.unlock(listLock, LOCK.list);
    if (got === 0) got = this.newSlab(id, gfp, mode, sw);
    if (got > 0) this.vmInc(VM.sheafRefill, 1);
    return got;
  }

  /** Move up to `want` objects from the partial slabs into sheaf `sw`; returns how many. List lock held. */
  private takeFromPartial(kw: number, sw: number, want: number): number {
    const i32 = this.i32;
    const debug = i32[kw + K_META] !== 0;
    const base = i32[sw + S_SIZE]!;
    let got = 0;
    while (got < want) {
      const pfn = i32[kw + K_PARTIAL]!;
      if (pfn === 0) break;
      const d = this.pd(pfn);
      if (i32[d + D_INUSE] === 0) this.emptySlabTaken(kw);
      let obj = i32[d + D_FREELIST]!;
      // Per object: into the sheaf (counted), then off the freelist. An agent killed between two
      // statements leaves the object at worst on both, at the top of its sheaf, which
      // slabRebuildLocked drops from the sheaf; never on neither.
      while (obj !== 0 && got < want) {
        const next = i32[(obj >> 2) + O_NEXT]!;
        i32[sw + S_OBJS + base + got] = obj;
        got++;
        i32[sw + S_SIZE] = base + got;
        i32[d + D_FREELIST] = next;
        i32[d + D_INUSE] = i32[d + D_INUSE]! + 1;
        if (debug) this.debugUnlink(kw, obj);
        obj = next;
      }
      if (obj === 0) this.partialToFull(kw, pfn);
    }
    i32[kw + K_FREE_OBJS] = i32[kw + K_FREE_OBJS]! - got;
    return got;
  }

  /** An empty slab of the partial list gets objects taken: count it, and lower the decay's low-water mark. List lock held. */
  private emptySlabTaken(kw: number): void {
    const i32 = this.i32;
    const empty = i32[kw + K_NR_EMPTY]! - 1;
    i32[kw + K_NR_EMPTY] = empty;
    if (empty < i32[kw + K_EMPTY_LOW]!) i32[kw + K_EMPTY_LOW] = empty;
  }

  /** Take one object off the first partial slab, or 0; into word `hand` first if not 0. List lock held. */
  private takeOneFromPartial(kw: number, hand: number): number {
    const i32 = this.i32;
    const pfn = i32[kw + K_PARTIAL]!;
    if (pfn === 0) return 0;
    const d = this.pd(pfn);
    const inuse = i32[d + D_INUSE]!;
    if (inuse === 0) this.emptySlabTaken(kw);
    const obj = i32[d + D_FREELIST]!;
    const next = i32[(obj >> 2) + O_NEXT]!;
    if (hand !== 0) i32[hand] = obj;
    // Off the freelist before its link is poisoned: the freelist is whole between any two statements.
    i32[d + D_FREELIST] = next;
    i32[d + D_INUSE] = inuse + 1;
    this.debugUnlink(kw, obj);
    if (next === 0) this.partialToFull(kw, pfn);
    i32[kw + K_FREE_OBJS] = i32[kw + K_FREE_OBJS]! - 1;
    return obj;
  }

  /**
   * One object straight from the slabs (caches without sheaves, and when no sheaf could be had).
   * `hand` (a new sheaf object, see holdSheaf): the word that takes the object, under the list
   * lock, before it leaves its freelist.
   */
  protected allocFromSlabs(id: number, gfp: number, mode: number, hand = 0): number {
    const kw = this.cacheWOf(id);
    const listLock = kw + K_LIST_LOCK;
    if (!this.lockIn(mode, listLock, LOCK.list)) return 0;
    // The object stays in a local across the unlock: a hook at list:release may re-enter.
    const obj = this.takeOneFromPartial(kw, hand);
    this.unlock(listLock, LOCK.list);
    return obj !== 0 ? obj : this.newSlab(id, gfp, mode, 0, hand);
  }

  /**
   * allocate_slab: take pages and build the freelist; then, under the list lock and before the
   * slab is on any list, take this caller's objects from it: sheaf `sw` is filled (returns how many
   * objects went in), or with `sw` 0 one object is returned. Only what is left goes on the partial
   * list, so another agent's refill cannot empty the new slab between its creation and its use.
   */
  private newSlab(id: number, gfp: number, mode: number, sw: number, hand = 0): number {
    const kw = this.cacheWOf(id);
    const order = this.i32[kw + K_ORDER]!;
    const pageGfp = mode !== 0 ? GFP_TRYLOCK | GFP.NOWAIT : gfp & (GFP.NOWAIT | GFP.ATOMIC);
    const pfn = this.rmqueue(order, pageGfp);
    if (pfn === 0) return 0;
    // Read the views only now: rmqueue rebuilt them if the pages came from growth.
    const i32 = this.i32;
    this.vmInc(VM.pgalloc, 1 << order);
    const size = i32[kw + K_SIZE]!;
    const objs = i32[kw + K_OBJS]!;
    const base = pfn << PAGE_SHIFT;
    const meta = i32[kw + K_META]!;
    for (let i = 0; i < objs; i++) {
      const obj = base + i * size;
      if (meta !== 0) {
        this.u8.fill(POISON_FREE, obj + 8, obj + i32[kw + K_INUSE]!);
        this.u8.fill(RED_ACTIVE, obj + i32[kw + K_INUSE]!, obj + meta);
        i32[((obj + meta) >> 2) + M_STATE] = OBJ_FREE;
        i32[((obj + meta) >> 2) + M_REQ] = 0;
      }
      i32[obj >> 2] = obj ^ FREE_TAG;
      i32[(obj >> 2) + O_NEXT] = i + 1 < objs ? obj + size : 0;
    }
    const listLock = kw + K_LIST_LOCK;
    if (!this.lockIn(mode, listLock, LOCK.list)) {
      this.releaseSlabPages(pfn, order, mode);
      return 0;
    }
    // The pages become a slab of the cache only under the list lock, where it is also counted and
    // listed: until then they are the block rmqueue left in this slot's hand (PG_HEAD), so an agent
    // stopped at the lock point above and reclaimed leaks an allocated block, not an uncounted slab.
    // The head's freelist and count are right before the pages become a slab, so that a reclaim
    // (slabRebuildLocked) of an agent killed from here on finds a whole slab.
    i32[this.pd(pfn) + D_FREELIST] = base;
    i32[this.pd(pfn) + D_INUSE] = 0;
    for (let p = 0; p < 1 << order; p++) {
      const d = this.pd(pfn + p);
      i32[d + D_FLAGS] = PG_SLAB;
      i32[d + D_HEAD] = pfn;
      i32[d + D_CACHE] = id;
    }
    let obj = base;
    let taken = 0;
    let result: number;
    const d = this.pd(pfn);
    if (sw === 0) {
      result = obj;
      obj = i32[(obj >> 2) + O_NEXT]!;
      if (hand !== 0) i32[hand] = result;
      i32[d + D_FREELIST] = obj;
      i32[d + D_INUSE] = 1;
      this.debugUnlink(kw, result);
      taken = 1;
    } else {
      // As takeFromPartial: into the sheaf, then off the freelist, object by object.
      const at = i32[sw + S_SIZE]!;
      const want = i32[sw + S_CAP]! - at;
      while (obj !== 0 && taken < want) {
        const next = i32[(obj >> 2) + O_NEXT]!;
        i32[sw + S_OBJS + at + taken] = obj;
        taken++;
        i32[sw + S_SIZE] = at + taken;
        i32[d + D_FREELIST] = next;
        i32[d + D_INUSE] = taken;
        if (meta !== 0) this.debugUnlink(kw, obj);
        obj = next;
      }
      result = taken;
    }
    i32[kw + K_NR_SLABS] = i32[kw + K_NR_SLABS]! + 1;
    i32[kw + K_TOTAL_OBJS] = i32[kw + K_TOTAL_OBJS]! + objs;
    i32[kw + K_FREE_OBJS] = i32[kw + K_FREE_OBJS]! + objs - taken;
    if (obj !== 0) this.partialAdd(kw, pfn);
    else this.pdListAdd(kw + K_FULL, kw + K_NR_FULL, pfn);
    this.unlock(listLock, LOCK.list);
    this.vmInc(VM.slabAlloc, 1);
    return result;
  }

  /**
   * Give a slab's pages back to the page allocator. No list lock needed: the slab is off every list,
   * and its descriptors are already those of a page block in this slot's hand (unaccountSlab, or
   * newSlab before it made the pages a slab); freeBlock keeps it so until a list takes it.
   */
  private releaseSlabPages(pfn: number, order: number, mode: number): void {
    this.vmInc(VM.pgfree, 1 << order);
    this.freeBlock(pfn, order, mode);
  }

  /* ================================================================= object free: slow paths */

  /** Free into cache `id` in normal mode once the fast path could not. */
  protected slabFreeSlow(id: number, addr: number): void {
    this.slabSlowEntry(id);
    const i32 = this.i32;
    if (i32[this.cacheWOf(id) + K_SHEAF_CAP] === 0) {
      if (!this.freeToSlabs(id, addr, 0)) this.deferObject(addr); // noBlock agent past its bound
      return;
    }
    const pcs = this.pcsW(id);
    this.localLock(pcs + P_LOCKED, LOCK.sheaf);
    try {
      let sw = i32[pcs + P_MAIN]! >> 2;
      if (i32[sw + S_SIZE]! >= i32[sw + S_CAP]!) sw = this.replaceFullMain(id, pcs, 0);
      if (sw !== 0) {
        // The new main may come from the barn, in pages added after `i32` was read.
        const v = this.i32;
        const n = v[sw + S_SIZE]!;
        v[sw + S_OBJS + n] = addr;
        v[sw + S_SIZE] = n + 1;
        v[addr >> 2] = addr ^ FREE_TAG;
        return;
      }
    } finally {
      this.localUnlock(pcs + P_LOCKED, LOCK.sheaf);
    }
    if (!this.freeToSlabs(id, addr, 0)) this.deferObject(addr); // noBlock agent past its bound
  }

  /**
   * The main sheaf is full (or the placeholder): swap with an empty spare, else hand it to the
   * barn for an empty one, else flush it to the slabs. Returns the new main (0: free to the slabs
   * directly). Local lock held.
   */
  private replaceFullMain(id: number, pcs: number, mode: number): number {
    const i32 = this.i32;
    const main = i32[pcs + P_MAIN]!;
    const spare = i32[pcs + P_SPARE]!;
    if (main === (this.hw + EMPTY_SHEAF_W) << 2) {
      if (spare !== 0) {
        i32[pcs + P_MAIN] = spare;
        i32[pcs + P_SPARE] = 0;
        if (i32[(spare >> 2) + S_SIZE]! < i32[(spare >> 2) + S_CAP]!) return spare >> 2;
        return this.replaceFullMain(id, pcs, mode);
      }
      if (mode !== 0) return 0;
      const s = this.allocSheaf(id, 0);
      if (s === 0) return 0;
      i32[pcs + P_MAIN] = s;
      this.unholdSheaf(s);
      return s >> 2;
    }
    if (spare !== 0 && i32[(spare >> 2) + S_SIZE]! < i32[(spare >> 2) + S_CAP]!) {
      i32[pcs + P_MAIN] = spare;
      i32[pcs + P_SPARE] = main;
      return spare >> 2;
    }
    // Trade the full main for an empty sheaf at the barn. The main leaves the pcs line first: at
    // every lock point below a sheaf is in one place only, so an agent stopped there and reclaimed
    // (reclaimSlot flushes the pcs line's sheaves) never has the barn's sheaf flushed and freed too.
    // In hand (P_HAND) from here until the barn has it or it is back on the pcs line.
    i32[pcs + P_HAND] = main;
    i32[pcs + P_MAIN] = (this.hw + EMPTY_SHEAF_W) << 2;
    const empty = this.barnPutFull(id, main, mode);
    if (empty > 0) {
      this.vmInc(VM.barnPut, 1);
      i32[pcs + P_HAND] = 0;
      i32[pcs + P_MAIN] = empty;
      return empty >> 2;
    }
    if (empty === 0) {
      // The barn took the full sheaf but had no empty one: make one (normal mode only).
      this.vmInc(VM.barnPut, 1);
      i32[pcs + P_HAND] = 0;
      const s = mode === 0 ? this.allocSheaf(id, 0) : 0;
      i32[pcs + P_MAIN] = s === 0 ? (this.hw + EMPTY_SHEAF_W) << 2 : s;
      if (s !== 0) this.unholdSheaf(s);
      return s >> 2;
    }
    // The barn is full of full sheaves (or busy): the main comes back, and is flushed to the slabs.
    i32[pcs + P_MAIN] = main;
    i32[pcs + P_HAND] = 0;
    if (mode !== 0) return 0;
    // A noBlock agent that cannot have the list lock frees (defers) the object itself.
    return this.flushSheaf(id, main >> 2, 0) ? main >> 2 : 0;
  }

  /** Free the objects of sheaf `sw` back to their slabs; the sheaf is left empty. */
  protected flushSheaf(id: number, sw: number, mode: number): boolean {
    const i32 = this.i32;
    const n = i32[sw + S_SIZE]!;
    if (n === 0) return true;
    const kw = this.cacheWOf(id);
    if (!this.lockIn(mode, kw + K_LIST_LOCK, LOCK.list)) return false;
    let discard: number[] | null = null;
    // From the top, the size following each object: an agent stopped half-way (and reclaimed)
    // leaves a sheaf that holds exactly the objects not yet returned.
    for (let i = n - 1; i >= 0; i--) {
      const empty = this.putObjectLocked(kw, i32[sw + S_OBJS + i]!);
      i32[sw + S_SIZE] = i;
      if (empty !== 0) (discard ??= []).push(empty);
    }
    discard = this.slabDecayLocked(kw, discard);
    this.unlock(kw + K_LIST_LOCK, LOCK.list);
    this.vmInc(VM.sheafFlush, 1);
    if (discard !== null) for (const pfn of discard) this.releaseSlab(id, pfn, mode);
    return true;
  }

  /**
   * Free one object straight to its slab. `hand` (a sheaf object being freed, see holdSheaf): the
   * word that holds it, cleared under the list lock once the object is on its freelist.
   */
  protected freeToSlabs(id: number, addr: number, mode: number, hand = 0): boolean {
    const kw = this.cacheWOf(id);
    if (!this.lockIn(mode, kw + K_LIST_LOCK, LOCK.list)) return false;
    const empty = this.putObjectLocked(kw, addr);
    if (hand !== 0 && this.i32[hand] === addr) this.i32[hand] = 0;
    const decayed = this.slabDecayLocked(kw, null);
    this.unlock(kw + K_LIST_LOCK, LOCK.list);
    if (empty !== 0) this.releaseSlab(id, empty, mode);
    if (decayed !== null) for (const pfn of decayed) this.releaseSlab(id, pfn, mode);
    return true;
  }

  /**
   * Slab decay, at every free to the slabs: every SLAB_DECAY_TICKS of them, a step releases half of
   * the empty slabs above min_partial that no allocation needed since the last step (K_EMPTY_LOW),
   * adding their head pfns to `discard` for release after the unlock. A churn that empties slabs
   * and fills them again (a batch freed, the next one allocated) keeps its slabs, where releasing
   * every empty slab beyond min_partial at once had the next batch build them again. List lock held.
   */
  private slabDecayLocked(kw: number, discard: number[] | null): number[] | null {
    const ticks = this.i32[kw + K_DECAY_TICKS]! + 1;
    if (ticks < SLAB_DECAY_TICKS) {
      this.i32[kw + K_DECAY_TICKS] = ticks;
      return discard;
    }
    return this.slabDecayStep(kw, discard, false);
  }

  /**
   * One decay step (`all`: direct reclaim, every empty slab above min_partial). The partial list
   * walk is bounded by the slab count. List lock held.
   */
  private slabDecayStep(kw: number, discard: number[] | null, all: boolean): number[] | null {
    const i32 = this.i32;
    i32[kw + K_DECAY_TICKS] = 0;
    const empty = i32[kw + K_NR_EMPTY]!;
    const surplus = (all ? empty : Math.min(i32[kw + K_EMPTY_LOW]!, empty)) - i32[kw + K_MIN_PARTIAL]!;
    if (surplus > 0) {
      let n = all ? surplus : (surplus + 1) >> 1;
      const most = i32[kw + K_NR_SLABS]!;
      for (let pfn = i32[kw + K_PARTIAL]!, steps = 0; pfn !== 0 && n > 0 && ++steps <= most; ) {
        const next = i32[this.pd(pfn) + D_NEXT]!;
        if (i32[this.pd(pfn) + D_INUSE] === 0) {
          this.partialDel(kw, pfn);
          this.unaccountSlab(kw, pfn);
          i32[kw + K_NR_EMPTY] = i32[kw + K_NR_EMPTY]! - 1;
          (discard ??= []).push(pfn);
          n--;
        }
        pfn = next;
      }
    }
    i32[kw + K_EMPTY_LOW] = i32[kw + K_NR_EMPTY]!;
    return discard;
  }

  /**
   * Direct reclaim (the page allocator found no block): every cache gives back its empty slabs above
   * min_partial. The list locks are only tried, never waited for: a cache whose lock is held, by
   * another agent or by this one, is skipped.
   */
  protected override reclaimSlabs(): void {
    const i32 = this.i32;
    const nr = Math.min(i32[this.hw + CT_NR]!, this.maxCaches);
    for (let id = 0; id < nr; id++) {
      const kw = this.cacheWOf(id);
      if (Atomics.load(i32, kw + K_STATE) === CACHE_FREE || i32[kw + K_NR_EMPTY]! <= i32[kw + K_MIN_PARTIAL]!) continue;
      if (!this.trylock(kw + K_LIST_LOCK, LOCK.list)) continue;
      const discard = this.slabDecayStep(kw, null, true);
      this.unlock(kw + K_LIST_LOCK, LOCK.list);
      if (discard !== null) for (const pfn of discard) this.releaseSlab(id, pfn, 0);
    }
  }

  /**
   * Put an object on its slab's freelist. Returns the slab's head pfn when the slab became empty
   * beyond K_MAX_EMPTY and left the cache (the caller releases it after the unlock), else 0.
   * List lock held.
   */
  private putObjectLocked(kw: number, obj: number): number {
    const i32 = this.i32;
    const head = i32[this.pd(obj >>> PAGE_SHIFT) + D_HEAD]!;
    const d = this.pd(head);
    const first = i32[d + D_FREELIST]!;
    i32[obj >> 2] = obj ^ FREE_TAG;
    i32[(obj >> 2) + O_NEXT] = first;
    i32[d + D_FREELIST] = obj;
    const inuse = i32[d + D_INUSE]! - 1;
    i32[d + D_INUSE] = inuse;
    i32[kw + K_FREE_OBJS] = i32[kw + K_FREE_OBJS]! + 1;
    if (first === 0) {
      // A full slab has a free object again.
      this.pdListDel(kw + K_FULL, kw + K_NR_FULL, head);
      this.partialAdd(kw, head);
    }
    if (inuse === 0) {
      if (i32[kw + K_NR_EMPTY]! >= i32[kw + K_MAX_EMPTY]!) {
        this.partialDel(kw, head);
        this.unaccountSlab(kw, head);
        return head;
      }
      i32[kw + K_NR_EMPTY] = i32[kw + K_NR_EMPTY]! + 1;
    }
    return 0;
  }

  /**
   * reclaimSlot took cache `id`'s list lock over from dead slot `cpu`, which may have stopped
   * between any two statements of a list-locked section: rebuild the partial and full lists and
   * every count from the slab descriptors, the source of truth. Each slab head of the cache
   * (PG_SLAB, D_HEAD itself) gets its tails marked again (unaccountSlab clears them first), its
   * freelist walked (a link outside the slab, or one seen twice, cuts it there) and D_INUSE set to
   * the objects not on it. The sheaves of the cache of the dead slots being reclaimed (`cpus`:
   * the dead slot, and the slots it was itself reclaiming, whose sheaves it flushed) may hold at
   * their top an object that is also on its freelist (stopped between the two stores of a refill
   * or a flush): the sheaf drops it. A slab the dead slot had already turned into a block in its
   * hand (unaccountSlab) is that block, returned by reclaimSlot. List lock held. Returns the slabs.
   */
  protected slabRebuildLocked(id: number, cpus: readonly number[]): number {
    const i32 = this.i32;
    const kw = this.cacheWOf(id);
    const objs = i32[kw + K_OBJS]!;
    const size = i32[kw + K_SIZE]!;
    const npages = 1 << i32[kw + K_ORDER]!;
    const poison = i32[kw + K_META] !== 0 && (this.debugFlags & DEBUG_POISON) !== 0;
    const tops: number[] = [];
    for (const cpu of cpus) {
      const pcs = this.cacheWOf(id) + CACHE_HDR_WORDS + cpu * PCS_WORDS;
      for (const at of [P_MAIN, P_SPARE]) {
        const s = i32[pcs + at]!;
        if (s !== 0 && s !== (this.hw + EMPTY_SHEAF_W) << 2 && i32[(s >> 2) + S_SIZE]! > 0 && !tops.includes(s >> 2)) tops.push(s >> 2);
      }
    }
    const seen = new Uint8Array(objs);
    let partial = 0;
    let full = 0;
    let empty = 0;
    let free = 0;
    let slabs = 0;
    i32[kw + K_PARTIAL] = 0;
    i32[kw + K_FULL] = 0;
    for (let pfn = this.zoneStart; pfn < this.nrPages; pfn++) {
      const d = this.pd(pfn);
      if (i32[d + D_FLAGS] !== PG_SLAB || i32[d + D_HEAD] !== pfn || i32[d + D_CACHE] !== id) continue;
      for (let p = 1; p < npages; p++) {
        const t = this.pd(pfn + p);
        i32[t + D_FLAGS] = PG_SLAB;
        i32[t + D_HEAD] = pfn;
        i32[t + D_CACHE] = id;
      }
      const base = pfn << PAGE_SHIFT;
      seen.fill(0);
      let f = 0;
      let link = d + D_FREELIST;
      for (let obj = i32[link]!; obj !== 0; obj = i32[link]!) {
        const k = (obj - base) / size;
        if (!Number.isInteger(k) || k < 0 || k >= objs || seen[k] !== 0) {
          i32[link] = 0;
          break;
        }
        seen[k] = 1;
        f++;
        link = (obj >> 2) + O_NEXT;
      }
      for (const sw of tops) {
        const top = i32[sw + S_OBJS + i32[sw + S_SIZE]! - 1]!;
        const k = (top - base) / size;
        if (!Number.isInteger(k) || k < 0 || k >= objs) continue;
        if (seen[k] !== 0) i32[sw + S_SIZE] = i32[sw + S_SIZE]! - 1;
        else if (poison) this.debugUnlink(kw, top);
      }
      i32[d + D_INUSE] = objs - f;
      const list = f === 0 ? kw + K_FULL : kw + K_PARTIAL;
      const first = i32[list]!;
      i32[d + D_NEXT] = first;
      i32[d + D_PREV] = 0;
      if (first !== 0) i32[this.pd(first) + D_PREV] = pfn;
      i32[list] = pfn;
      if (f === 0) full++;
      else partial++;
      if (f === objs) empty++;
      free += f;
      slabs++;
      pfn += npages - 1;
    }
    i32[kw + K_NR_PARTIAL] = partial;
    i32[kw + K_NR_FULL] = full;
    i32[kw + K_NR_EMPTY] = empty;
    i32[kw + K_EMPTY_LOW] = empty;
    i32[kw + K_FREE_OBJS] = free;
    i32[kw + K_NR_SLABS] = slabs;
    i32[kw + K_TOTAL_OBJS] = slabs * objs;
    if (id === SHEAF_CACHE_ID) for (const cpu of cpus) this.sheafHandRebuilt(cpu);
    return slabs;
  }

  /**
   * Slab `pfn` left the cache's lists and counts (it is off the partial list), to be released after
   * the unlock. Its pages become a block this slot holds, as allocPages leaves one: an agent stopped
   * before releaseSlab and reclaimed leaves an allocated block that validate() accepts, never a slab
   * that its cache does not count. List lock held.
   */
  private unaccountSlab(kw: number, pfn: number): void {
    const i32 = this.i32;
    const order = i32[kw + K_ORDER]!;
    for (let p = 1; p < 1 << order; p++) {
      const d = this.pd(pfn + p);
      i32[d + D_FLAGS] = 0;
      i32[d + D_HEAD] = 0;
      i32[d + D_CACHE] = 0;
    }
    i32[this.pd(pfn) + D_OWNER] = this.cpu;
    i32[this.pd(pfn) + D_FLAGS] = PG_HEAD | PG_INHAND | (order << ORDER_SHIFT);
    const objs = i32[kw + K_OBJS]!;
    i32[kw + K_NR_SLABS] = i32[kw + K_NR_SLABS]! - 1;
    i32[kw + K_TOTAL_OBJS] = i32[kw + K_TOTAL_OBJS]! - objs;
    i32[kw + K_FREE_OBJS] = i32[kw + K_FREE_OBJS]! - objs;
  }

  private releaseSlab(id: number, pfn: number, mode: number): void {
    this.releaseSlabPages(pfn, this.i32[this.cacheWOf(id) + K_ORDER]!, mode);
    this.vmInc(VM.slabFree, 1);
  }

  private partialAdd(kw: number, pfn: number): void {
    this.pdListAdd(kw + K_PARTIAL, kw + K_NR_PARTIAL, pfn);
  }

  private partialDel(kw: number, pfn: number): void {
    this.pdListDel(kw + K_PARTIAL, kw + K_NR_PARTIAL, pfn);
  }

  /** The slab's last free object was taken: from the partial list to the full list. */
  private partialToFull(kw: number, pfn: number): void {
    this.pdListDel(kw + K_PARTIAL, kw + K_NR_PARTIAL, pfn);
    this.pdListAdd(kw + K_FULL, kw + K_NR_FULL, pfn);
  }


  /* ================================================================= the barn */

  /** Take a full sheaf from the barn (address, or 0). */
  private barnGetFull(id: number, mode: number): number {
    const i32 = this.i32;
    const kw = this.cacheWOf(id);
    if (i32[kw + K_BARN_NR_FULL] === 0) return 0; // racy peek: an empty barn is not worth the lock
    if (!this.lockIn(mode, kw + K_BARN_LOCK, LOCK.barn)) return 0;
    const s = this.barnPop(kw + K_BARN_FULL);
    // In this slot's hand (P_HAND) until the caller puts it on the pcs line and clears the word.
    i32[this.pcsW(id) + P_HAND] = s;
    this.unlock(kw + K_BARN_LOCK, LOCK.barn);
    return s;
  }

  /**
   * Give a full sheaf to the barn and take an empty one: returns the empty sheaf's address, 0 if
   * the barn took the full sheaf but had no empty one, -1 if it took nothing.
   */
  private barnPutFull(id: number, full: number, mode: number): number {
    const i32 = this.i32;
    const kw = this.cacheWOf(id);
    if (!this.lockIn(mode, kw + K_BARN_LOCK, LOCK.barn)) return -1;
    let empty = -1;
    if (i32[kw + K_BARN_NR_FULL]! < BARN_MAX && (mode === 0 || i32[kw + K_BARN_EMPTY] !== 0)) {
      this.barnPush(kw + K_BARN_FULL, full);
      empty = this.barnPop(kw + K_BARN_EMPTY);
    }
    this.unlock(kw + K_BARN_LOCK, LOCK.barn);
    return empty;
  }

  /** Push sheaf `s` on the barn list headed at word `head` (its count is the next word). Barn lock held. */
  private barnPush(head: number, s: number): void {
    const i32 = this.i32;
    i32[(s >> 2) + S_NEXT] = i32[head]!;
    i32[head] = s;
    i32[head + 1] = i32[head + 1]! + 1;
  }

  /** Pop the first sheaf of the barn list headed at word `head`, or 0. Barn lock held. */
  private barnPop(head: number): number {
    const i32 = this.i32;
    const s = i32[head]!;
    if (s !== 0) {
      i32[head] = i32[(s >> 2) + S_NEXT]!;
      i32[head + 1] = i32[head + 1]! - 1;
    }
    return s;
  }

  /**
   * reclaimSlot took cache `id`'s barn lock over from a dead holder, which may have stopped between
   * the stores of a push or a pop: recount both barn lists by walking them (a list longer than
   * BARN_MAX, a cycle, is cut there). Barn lock held.
   */
  protected barnRecountLocked(id: number): void {
    const i32 = this.i32;
    const kw = this.cacheWOf(id);
    for (const head of [kw + K_BARN_FULL, kw + K_BARN_EMPTY]) {
      let n = 0;
      let link = head;
      for (let s = i32[link]!; s !== 0; s = i32[link]!) {
        if (n === BARN_MAX) {
          i32[link] = 0;
          break;
        }
        n++;
        link = (s >> 2) + S_NEXT;
      }
      i32[head + 1] = n;
    }
  }

  /** Give an empty sheaf to the barn, or free it when the barn has enough. */
  private barnPutEmpty(id: number, sheaf: number, mode: number): void {
    const i32 = this.i32;
    const kw = this.cacheWOf(id);
    let kept = false;
    if (this.lockIn(mode, kw + K_BARN_LOCK, LOCK.barn)) {
      if (i32[kw + K_BARN_NR_EMPTY]! < BARN_MAX) {
        this.barnPush(kw + K_BARN_EMPTY, sheaf);
        this.unholdSheaf(sheaf);
        kept = true;
      }
      this.unlock(kw + K_BARN_LOCK, LOCK.barn);
    }
    if (!kept) this.freeSheaf(sheaf, mode);
  }

  /** Flush every sheaf in cache `id`'s barn to the slabs and free the sheaves. */
  protected barnShrink(id: number): void {
    const kw = this.cacheWOf(id);
    const hand = this.pcsW(id) + P_HAND;
    // One sheaf at a time off the barn, in this slot's hand (P_HAND) while it is flushed: an agent
    // killed here leaves at most that sheaf, which reclaimSlot flushes, and the rest in the barn.
    for (let n = 0; ; n++) {
      if (n >= 2 * BARN_MAX) throw new HeapError(ErrorCode.ECORRUPT, `the barn of ${this.cacheName(id)} holds more than ${2 * BARN_MAX} sheaves: its lists are broken`);
      this.lock(kw + K_BARN_LOCK, LOCK.barn);
      // this.i32 after the lock: it may have rebuilt the views, and the sheaves may lie in new pages.
      let s = this.barnPop(kw + K_BARN_FULL);
      if (s === 0) s = this.barnPop(kw + K_BARN_EMPTY);
      this.i32[hand] = s;
      this.unlock(kw + K_BARN_LOCK, LOCK.barn);
      if (s === 0) return;
      if (!this.flushSheaf(id, s >> 2, 0)) this.deferSheafObjects(s >> 2);
      this.holdSheaf(s);
      this.i32[hand] = 0;
      this.freeSheaf(s, 0);
    }
  }

  /** A noBlock agent could not flush sheaf `sw`: its objects go on this slot's deferred list. */
  private deferSheafObjects(sw: number): void {
    const i32 = this.i32;
    const n = i32[sw + S_SIZE]!;
    for (let i = 0; i < n; i++) this.deferObject(i32[sw + S_OBJS + i]!);
    i32[sw + S_SIZE] = 0;
  }

  /**
   * A new empty sheaf for cache `id` from the sheaf cache (normal mode only). It is held (see
   * holdSheaf) from before it leaves its freelist; the caller puts it on the pcs line, then
   * unholdSheaf.
   */
  private allocSheaf(id: number, gfp: number): number {
    const hand = this.sheafHandOf(this.cpu);
    const s = this.allocFromSlabs(SHEAF_CACHE_ID, gfp & (GFP.NOWAIT | GFP.ATOMIC), 0, this.i32[hand] === 0 ? hand : 0);
    if (s === 0) return 0;
    const i32 = this.i32;
    const sw = s >> 2;
    i32[sw] = 0; // clears the free tag (S_SIZE)
    i32[sw + S_CAP] = i32[this.cacheWOf(id) + K_SHEAF_CAP]!;
    i32[sw + S_NEXT] = 0;
    i32[sw + S_CACHE] = id;
    return s;
  }

  /** Free a sheaf object; it is held (see holdSheaf) until its freelist or this slot's deferred list has it. */
  private freeSheaf(sheaf: number, mode: number): void {
    this.holdSheaf(sheaf);
    if (!this.freeToSlabs(SHEAF_CACHE_ID, sheaf, mode, this.sheafHandOf(this.cpu))) {
      this.deferObject(sheaf);
      this.unholdSheaf(sheaf);
    }
  }

  /** The sheaf object slot `cpu` is allocating or freeing: P_HAND of its line of the sheaf cache, which has no sheaves. */
  private sheafHandOf(cpu: number): number {
    return this.cacheWOf(SHEAF_CACHE_ID) + CACHE_HDR_WORDS + cpu * PCS_WORDS + P_HAND;
  }

  /**
   * Hold sheaf object `s` in this slot's sheaf hand (unless it holds one already: a re-entered
   * path) from before it leaves the place that holds it (a pcs line, P_HAND, a local on its way to
   * the barn) until its freelist, the barn, a pcs line or this slot's deferred list has it. A
   * sheaf object is then in some place at every statement: reclaimSlot frees a dead slot's held
   * sheaf object unless it is in one of those places (freeSheafObjectInHand).
   */
  private holdSheaf(s: number): void {
    const hand = this.sheafHandOf(this.cpu);
    if (this.i32[hand] === 0) this.i32[hand] = s;
  }

  private unholdSheaf(s: number): void {
    const hand = this.sheafHandOf(this.cpu);
    if (this.i32[hand] === s) this.i32[hand] = 0;
  }

  /**
   * reclaimSlot, the sheaf cache's list lock taken over from dead slot `cpu` and its lists rebuilt:
   * a sheaf object the slot held and that is on its slab's freelist (it stopped before taking it,
   * or after freeing it) is not the slot's. List lock held.
   */
  private sheafHandRebuilt(cpu: number): void {
    const hand = this.sheafHandOf(cpu);
    const s = this.i32[hand]!;
    if (s !== 0 && this.sheafObjectFree(s) !== false) this.i32[hand] = 0;
  }

  /** Sheaf object `s`: on its slab's freelist (true), allocated (false), or not a sheaf object at all (null). */
  private sheafObjectFree(s: number): boolean | null {
    const i32 = this.i32;
    if ((s & 3) !== 0 || s >>> 0 >= this.size || s >>> PAGE_SHIFT < this.zoneStart) return null;
    const d = this.pd(s >>> PAGE_SHIFT);
    if (i32[d + D_FLAGS] !== PG_SLAB || i32[d + D_CACHE] !== SHEAF_CACHE_ID) return null;
    const head = i32[d + D_HEAD]!;
    const kw = this.cacheWOf(SHEAF_CACHE_ID);
    const objs = i32[kw + K_OBJS]!;
    const k = (s - (head << PAGE_SHIFT)) / i32[kw + K_SIZE]!;
    if (!Number.isInteger(k) || k < 0 || k >= objs) return null;
    for (let o = i32[this.pd(head) + D_FREELIST]!, n = 0; o !== 0 && n < objs; o = i32[(o >> 2) + O_NEXT]!, n++) if (o === s) return true;
    return false;
  }

  /**
   * reclaimSlot, before the dead slot's deferred objects and sheaves go back: the sheaf object dead
   * slot `cpu` held (holdSheaf) is freed unless something else holds it: a pcs line or hand of any
   * slot, the barn of its cache, the slot's deferred list, or its freelist (or it is no sheaf
   * object). Returns 1 if it freed one. No lock held.
   */
  protected freeSheafObjectInHand(cpu: number): number {
    const i32 = this.i32;
    const hand = this.sheafHandOf(cpu);
    const s = i32[hand]!;
    if (s === 0) return 0;
    i32[hand] = 0;
    if (this.sheafObjectFree(s) !== false) return 0;
    for (let id = 0; id < this.maxCaches; id++) {
      for (let c = 0; c < this.cpus; c++) {
        const pcs = this.cacheWOf(id) + CACHE_HDR_WORDS + c * PCS_WORDS;
        if (i32[pcs + P_MAIN] === s || i32[pcs + P_SPARE] === s || i32[pcs + P_HAND] === s) return 0;
      }
    }
    const c = this.pcpOf(cpu);
    const nd = i32[c + C_DEFER_NR]!;
    for (let o = i32[c + C_DEFER_HEAD]!, n = 0; o !== 0 && n <= nd; o = i32[(o >> 2) + O_NEXT]!, n++) if (o === s) return 0;
    // An empty sheaf on its way to the barn: the barn may have it.
    const id = i32[(s >> 2) + S_CACHE]!;
    if (id > SHEAF_CACHE_ID && id < this.maxCaches) {
      const kw = this.cacheWOf(id);
      const st = i32[kw + K_STATE];
      if (st === CACHE_ACTIVE || st === CACHE_DYING) {
        this.lock(kw + K_BARN_LOCK, LOCK.barn);
        let found = false;
        for (const head of [kw + K_BARN_FULL, kw + K_BARN_EMPTY]) {
          for (let b = i32[head]!, n = 0; b !== 0 && n <= BARN_MAX; b = i32[(b >> 2) + S_NEXT]!, n++) if (b === s) found = true;
        }
        this.unlock(kw + K_BARN_LOCK, LOCK.barn);
        if (found) return 0;
      }
    }
    this.freeSheaf(s, 0);
    return 1;
  }

  /* ================================================================= nolock object paths */

  /** kmalloc that is safe from any context (seed 001). Sizes above 8 KiB give 0. */
  kmallocNolock(size: number, gfp: number = 0): number {
    if (typeof size === "number" && (size | 0) === size && size > 0 && size <= KMALLOC_MAX_CACHE_SIZE && gfp === 0 && this.fastOff === 0) {
      const obj = this.popFast(this.kmPcs[SIZE_INDEX[(size + 7) >> 3]!]!);
      if (obj !== 0) return obj;
    }
    return this.kmallocNolockSlow(size, gfp);
  }

  private kmallocNolockSlow(size: number, gfp: number): number {
    this.assertLive();
    checkSize(size);
    checkGfp(gfp);
    if (size > KMALLOC_MAX_CACHE_SIZE || this.closing) return this.closing ? this.nolockFailed() : 0;
    let idx = SIZE_INDEX[(size + 7) >> 3]!;
    let id = KMALLOC_FIRST_ID + idx;
    if (this.i32[this.pcsW(id) + P_LOCKED] !== 0) {
      // This slot is inside the slow path of that class (we re-entered from a hook): one retry in
      // the next larger class, which is almost certainly not the one locked.
      if (idx + 1 >= KMALLOC_SIZES.length) return this.nolockFailed();
      idx++;
      id++;
      this.vmInc(VM.nolockNextClass, 1);
      if (this.i32[this.pcsW(id) + P_LOCKED] !== 0) return this.nolockFailed();
    }
    const obj = this.slabAllocNolock(id, gfp);
    if (obj === 0) return this.nolockFailed();
    if ((this.trace.mask & (1 << TP.kmalloc)) !== 0) this.emitObj(TP.kmalloc, obj, size, id);
    return this.prepObject(id, obj, gfp, size, GFP_TRYLOCK);
  }

  private nolockFailed(): number {
    this.vmInc(VM.nolockFail, 1);
    return 0;
  }

  /** Allocate from cache `id` with trylocks only; its sheaves are not locally locked. */
  protected slabAllocNolock(id: number, gfp: number): number {
    const i32 = this.i32;
    const pcs = this.pcsW(id);
    let sw = i32[pcs + P_MAIN]! >> 2;
    let n = i32[sw + S_SIZE]!;
    if (n > 0) {
      i32[sw + S_SIZE] = n - 1;
      return i32[sw + S_OBJS + n - 1]!;
    }
    let obj = 0;
    this.localLock(pcs + P_LOCKED, LOCK.sheaf);
    try {
      sw = this.replaceEmptyMain(id, pcs, gfp, GFP_TRYLOCK);
      if (sw !== 0) {
        const v = this.i32; // the new main may lie in pages added after `i32` was read
        n = v[sw + S_SIZE]! - 1;
        v[sw + S_SIZE] = n;
        obj = v[sw + S_OBJS + n]!;
      }
    } finally {
      this.localUnlock(pcs + P_LOCKED, LOCK.sheaf);
    }
    if (obj === 0) obj = this.allocFromSlabs(id, gfp, GFP_TRYLOCK);
    return obj;
  }

  /** kfree that is safe from any context: the sheaf if free, else this slot's deferred list. */
  kfreeNolock(addr: number): void {
    if (this.fastOff === 0 && this.pushFast(addr)) return;
    if (addr === 0) {
      this.assertLive();
      return;
    }
    this.kfreeSlow(addr, -1, GFP_TRYLOCK);
  }

  /** Free into cache `id` with trylocks only, deferring when the sheaves are busy. */
  protected slabFreeNolock(id: number, addr: number): void {
    const i32 = this.i32;
    const kw = this.cacheWOf(id);
    const pcs = this.pcsW(id);
    if (i32[kw + K_SHEAF_CAP] === 0 || i32[pcs + P_LOCKED] !== 0 || this.closing) {
      this.deferObject(addr);
      return;
    }
    let sw = i32[pcs + P_MAIN]! >> 2;
    if (i32[sw + S_SIZE]! >= i32[sw + S_CAP]!) {
      this.localLock(pcs + P_LOCKED, LOCK.sheaf);
      try {
        sw = this.replaceFullMain(id, pcs, GFP_TRYLOCK);
      } finally {
        this.localUnlock(pcs + P_LOCKED, LOCK.sheaf);
      }
      if (sw === 0 || this.i32[sw + S_SIZE]! >= this.i32[sw + S_CAP]!) {
        this.deferObject(addr);
        return;
      }
    }
    const v = this.i32; // replaceFullMain may have rebuilt the views
    const n = v[sw + S_SIZE]!;
    v[sw + S_OBJS + n] = addr;
    v[sw + S_SIZE] = n + 1;
    v[addr >> 2] = addr ^ FREE_TAG;
  }

  /** Push an object on this slot's deferred list (defer_free). */
  protected deferObject(addr: number): void {
    const i32 = this.i32;
    i32[addr >> 2] = addr ^ FREE_TAG;
    i32[(addr >> 2) + O_NEXT] = i32[this.pcpuW + C_DEFER_HEAD]!;
    i32[this.pcpuW + C_DEFER_HEAD] = addr;
    i32[this.pcpuW + C_DEFER_NR] = i32[this.pcpuW + C_DEFER_NR]! + 1;
    this.vmInc(VM.objectsDeferred, 1);
  }

  /**
   * Free every object on slot `cpu`'s deferred list: this slot's through the normal paths, a dead
   * slot's (reclaimSlot) and, with `direct`, this slot's while it detaches straight to their slabs.
   * False when a noBlock agent gave up on a list lock: what it could not free is deferred again.
   */
  protected drainDeferredObjects(cpu: number = this.cpu, direct = false): boolean {
    const p = this.pcpOf(cpu);
    const own = cpu === this.cpu && !direct;
    // One pass over what is on the list now, not nested (the frees below enter slow paths, whose
    // entry drains): objects a hook defers meanwhile wait for the next normal call, so a hook that
    // frees at every lock point cannot keep it going for ever. detach loops itself until its
    // slot holds nothing.
    if (this.i32[p + C_DEFER_HEAD] === 0 || this.drainingDeferred) return true;
    this.drainingDeferred = true;
    try {
      return this.drainDeferredOnce(p, cpu, own);
    } finally {
      this.drainingDeferred = false;
    }
  }

  /**
   * drainDeferredObjects' pass over slot block `p`'s list (cpu `cpu`; `own`: through the normal
   * paths). A noBlock agent that gives up on a list lock defers that object and the rest again
   * (this slot's list) and returns false.
   */
  private drainDeferredOnce(p: number, cpu: number, own: boolean): boolean {
    const nr = this.i32[p + C_DEFER_NR]!;
    const first = this.i32[p + C_DEFER_HEAD]!;
    const broken = this.brokenDeferredList(first, nr);
    if (broken !== "") {
      // Deferred work found broken metadata: report it, drop the list (its objects stay
      // allocated, lost), and never walk a cycle.
      this.i32[p + C_DEFER_HEAD] = 0;
      this.i32[p + C_DEFER_NR] = 0;
      this.reportDeferred(new HeapError(ErrorCode.ECORRUPT, `cpu ${cpu}'s deferred object list is broken (${broken}): its objects are dropped`), first);
      return true;
    }
    let gaveUp = false;
    // One object at a time off the list, in place (at most `nr`: what a hook defers meanwhile may be
    // among them, the rest waits for the next drain): an agent killed here leaves at most the
    // object being freed in its hands, and the rest on its list for reclaimSlot.
    for (let k = 0; k < nr && !gaveUp; k++) {
      // Read the views each time: a free below may have rebuilt them after growth.
      const i32 = this.i32;
      const obj = i32[p + C_DEFER_HEAD]!;
      if (obj === 0) break;
      i32[p + C_DEFER_HEAD] = i32[(obj >> 2) + O_NEXT]!;
      i32[p + C_DEFER_NR] = i32[p + C_DEFER_NR]! - 1;
      const id = i32[this.pd(obj >>> PAGE_SHIFT) + D_CACHE]!;
      i32[obj >> 2] = 0;
      this.debugUnlink(this.cacheWOf(id), obj);
      // A dead slot's objects (reclaimSlot) go straight to their slabs.
      const named = id >= FIRST_NAMED_ID;
      // Deferred work: an error is reported (onError), and the rest of the list is still freed.
      this.deferring++;
      try {
        if (named) this.cacheEnter(id, 0, false, true);
        try {
          if (!own || i32[this.cacheWOf(id) + K_SHEAF_CAP] === 0 || i32[this.pcsW(id) + P_LOCKED] !== 0) {
            if (!this.freeToSlabs(id, obj, 0)) {
              this.deferObject(obj);
              gaveUp = true;
            }
          } else {
            this.slabFreeSlow(id, obj);
          }
        } finally {
          if (named) this.cacheExit(id);
        }
      } catch (e) {
        // A noBlock agent that gave up on a lock changed nothing: the object waits for a later drain.
        if (e instanceof HeapError && e.code === ErrorCode.EAGAIN) {
          this.deferObject(obj);
          gaveUp = true;
        } else {
          this.reportDeferred(e, obj);
        }
      } finally {
        this.deferring--;
      }
      this.vmInc(VM.objectsUndeferred, 1);
    }
    return !gaveUp;
  }

  /** Why the deferred object list at `obj`, which counts `nr` objects, cannot be walked ("" if it can). */
  private brokenDeferredList(obj: number, nr: number): string {
    const i32 = this.i32;
    let n = 0;
    for (let o = obj; o !== 0; o = i32[(o >> 2) + O_NEXT]!) {
      if (++n > nr) return `longer than its count ${nr}: a cycle`;
      const pfn = o >>> PAGE_SHIFT;
      if ((o & 7) !== 0 || pfn < this.zoneStart || pfn >= this.nrPages) return `${hex(o)} is not an object address`;
      const d = this.pd(pfn);
      if (i32[d + D_FLAGS] !== PG_SLAB || i32[d + D_CACHE]! >>> 0 >= this.maxCaches) return `${hex(o)} is not in a slab`;
    }
    return n === nr ? "" : `holds ${n} objects, counts ${nr}`;
  }

  /* ================================================================= more of the kmalloc family */

  /** kmalloc with GFP.ZERO. */
  kzalloc(size: number, gfp: number = GFP.KERNEL): number {
    if (typeof gfp !== "number" || gfp >>> 0 !== gfp) checkGfp(gfp);
    return this.kmalloc(size, gfp | GFP.ZERO);
  }

  /** readString's error path: is `addr`, an object ksize accepted, on a free list of its cache? @internal */
  freedObject(addr: number): boolean {
    const id = this.objectCache(addr, -1);
    return id >= 0 && this.i32[addr >> 2] === (addr ^ FREE_TAG) && this.isFreeObject(id, addr);
  }

  /** Usable size of an allocation. */
  ksize(addr: number): number {
    this.assertLive();
    const id = this.objectCache(addr, -1);
    if (id < 0) return PAGE_SIZE << ((this.u32[this.pd(addr >>> PAGE_SHIFT) + D_FLAGS]! & ORDER_MASK) >>> ORDER_SHIFT);
    const kw = this.cacheWOf(id);
    // Debug: the requested size, once the object's metadata has been checked.
    if (this.i32[kw + K_META] !== 0) return this.debugFree(id, addr, false);
    return this.i32[kw + K_SIZE]!;
  }

  /**
   * Resize an allocation: in place while it still fits its size class (with GFP.ZERO the slack
   * past `size` is zeroed, so later growth in place reads zeros), else allocate, copy and free.
   * addr 0 allocates; size 0 frees and returns 0. Returns 0, keeping the old block, on failure.
   */
  krealloc(addr: number, size: number, gfp: number = GFP.KERNEL): number {
    this.assertLive();
    checkGfp(gfp);
    if (size !== 0) checkSize(size);
    if (addr === 0) return size === 0 ? 0 : this.kmalloc(size, gfp);
    if (size === 0) {
      this.kfree(addr);
      return 0;
    }
    // Every check kfree would make, before anything changes: a krealloc that throws leaves the
    // heap exactly as it was (it must not keep a block it allocated, nor half-move one).
    this.checkBulk([addr], -1, false);
    const id = this.objectCache(addr, -1);
    const kw = id >= 0 ? this.cacheWOf(id) : 0;
    if (id >= 0 && this.i32[kw + K_META] !== 0 && size <= this.i32[kw + K_OBJ_SIZE]!) {
      // Debug: move the requested size and its redzone; bytes that become usable are zeroed under GFP.ZERO.
      const old = this.debugFree(id, addr, false);
      const mw = (addr + this.i32[kw + K_META]!) >> 2;
      if (size > old) {
        this.u8.fill((gfp & GFP.ZERO) !== 0 ? 0 : RED_ACTIVE ^ 0xff, addr + old, addr + size);
      } else if ((this.debugFlags & DEBUG_REDZONE) !== 0) {
        this.u8.fill(RED_ACTIVE, addr + size, addr + old);
      }
      this.i32[mw + M_REQ] = size;
      return addr;
    }
    const ks = this.ksize(addr);
    if (size <= ks) {
      if ((gfp & GFP.ZERO) !== 0) this.u8.fill(0, addr + size, addr + ks);
      return addr;
    }
    const n = this.kmalloc(size, gfp);
    if (n === 0) return 0;
    this.u8.copyWithin(n, addr, addr + Math.min(ks, size));
    try {
      this.kfree(addr);
    } catch (e) {
      // Checked above; only a hook that freed `addr` meanwhile gets here. Keep nothing.
      this.kfree(n);
      throw e;
    }
    return n;
  }

  /** Free many allocations; all are checked before any is freed. */
  kfreeBulk(addrs: ArrayLike<number>): void {
    this.assertLive();
    const list = readAddrs("addrs", addrs);
    this.checkBulk(list, -1);
    for (let i = 0; i < list.length; i++) this.kfree(list[i]!);
  }

  /** Throw, changing nothing, unless every address is a distinct live allocation (of cache `want`). */
  protected checkBulk(addrs: ArrayLike<number>, want: number, label = true): void {
    if (addrs === null || typeof addrs !== "object" || typeof addrs.length !== "number") {
      throw new HeapError(ErrorCode.EINVAL, "addrs must be an array of addresses");
    }
    const seen = new Set<number>();
    let i = 0;
    try {
      for (; i < addrs.length; i++) this.checkBulkOne(addrs[i]!, want, seen);
    } catch (e) {
      // Say which entry: "addrs[3]: 0x5000 is not a live allocation (...)".
      if (label && e instanceof HeapError) throw new HeapError(e.code, `addrs[${i}]: ${e.message.slice(e.code.length + 2)}`);
      throw e;
    }
  }

  private checkBulkOne(a: number, want: number, seen: Set<number>): void {
    if (a === 0) return;
    if (seen.has(a)) throw new HeapError(ErrorCode.EDOUBLEFREE, `${hex(a)} appears twice in one bulk free`);
    seen.add(a);
    const id = this.objectCache(a, want);
    if (id >= 0 && this.i32[this.cacheWOf(id) + K_META] !== 0) this.debugFree(id, a, false);
    else if (id >= 0 && this.i32[a >> 2] === (a ^ FREE_TAG) && this.isFreeObject(id, a)) {
      throw new HeapError(ErrorCode.EDOUBLEFREE, `${hex(a)} of ${this.cacheName(id)} is already free`);
    }
    if (id < 0) this.checkBlock(a, (this.u32[this.pd(a >>> PAGE_SHIFT) + D_FLAGS]! & ORDER_MASK) >>> ORDER_SHIFT, PG_LARGE);
  }

  /* ================================================================= named caches */

  /** Create a named cache of `objectSize`-byte objects; any agent finds it with findCache(name). */
  createCache(name: string, objectSize: number, options: CacheOptions = {}): KmemCache {
    this.assertLive();
    const bytes = cacheNameBytes(name);
    checkInt("objectSize", objectSize, 1, MAX_OBJECT_SIZE, " of bytes", `a cache's objects are at most ${MAX_OBJECT_SIZE} bytes (one object per slab of 2^${PCP_MAX_ORDER} pages); use kmalloc or allocPages for larger blocks`);
    const given = readOptions("createCache options", options, ["align"]).align;
    const align = checkInt("align", given === undefined ? 8 : given, 1, PAGE_SIZE, " of bytes", `alignment is at most a page, ${PAGE_SIZE} bytes`);
    if ((align & (align - 1)) !== 0) einval(`align must be a power of two, not ${align}`);
    const stride = cacheStride(objectSize, Math.max(8, align), this.debugFlags !== 0);
    if (stride > MAX_OBJECT_SIZE) {
      einval(
        `objectSize ${objectSize} takes ${stride} bytes an object${this.debugFlags !== 0 ? " with its debug redzone and metadata" : ""}${align > 8 ? ` aligned to ${align}` : ""}, more than the ${MAX_OBJECT_SIZE} of the largest slab`,
      );
    }
    this.assertCanLock(LOCK.ctable);
    this.lock(this.hw + CT_LOCK, LOCK.ctable);
    try {
      const found = this.findCacheId(bytes);
      if (found >= FIRST_NAMED_ID) throw new HeapError(ErrorCode.EINVAL, `a cache named "${name}" exists: use findCache`);
      if (found >= 0) throw new HeapError(ErrorCode.EINVAL, `"${name}" is the name of a built-in cache (the kmalloc size classes and kmem_cache_sheaf): use kmalloc for memory of its size, or give your cache another name`);
      let id = -1;
      for (let i = FIRST_NAMED_ID; i < this.maxCaches; i++) {
        if (this.i32[this.cacheWOf(i) + K_STATE] === CACHE_FREE) {
          id = i;
          break;
        }
      }
      if (id < 0) throw new HeapError(ErrorCode.EINVAL, `all ${this.maxCaches - FIRST_NAMED_ID} named cache slots are in use: destroy a cache, or create the heap with a larger maxCaches option (now ${this.maxCaches})`);
      this.setupCache(id, bytes, objectSize, Math.max(8, align), 0);
      return new KmemCache(this, id, this.i32[this.cacheWOf(id) + K_GEN]!);
    } finally {
      this.unlock(this.hw + CT_LOCK, LOCK.ctable);
    }
  }

  /**
   * The cache another agent created with this name, or null (also for a built-in cache's name:
   * kmalloc serves those). Under the cache table lock: a descriptor that another agent destroys
   * and reuses for a new cache meanwhile cannot pair this name with the new cache's generation.
   * A noBlock agent that gives up on the lock reads the table without it (findCacheUnlocked).
   */
  findCache(name: string): KmemCache | null {
    this.assertLive();
    const bytes = cacheNameBytes(name);
    this.assertCanLock(LOCK.ctable);
    if (!this.lockIn(0, this.hw + CT_LOCK, LOCK.ctable)) return this.findCacheUnlocked(bytes);
    try {
      const id = this.findCacheId(bytes);
      return id < FIRST_NAMED_ID ? null : new KmemCache(this, id, this.i32[this.cacheWOf(id) + K_GEN]!);
    } finally {
      this.unlock(this.hw + CT_LOCK, LOCK.ctable);
    }
  }

  private findCacheId(bytes: Uint8Array): number {
    for (let id = 0; id < this.maxCaches; id++) if (this.cacheNamed(id, bytes)) return id;
    return -1;
  }

  /** Is descriptor `id` an active cache named `bytes`? */
  private cacheNamed(id: number, bytes: Uint8Array): boolean {
    const kw = this.cacheWOf(id);
    if (Atomics.load(this.i32, kw + K_STATE) !== CACHE_ACTIVE || this.i32[kw + K_NAME_LEN] !== bytes.length) return false;
    const at = (kw + K_NAME) << 2;
    for (let i = 0; i < bytes.length; i++) if (this.u8[at + i] !== bytes[i]) return false;
    return true;
  }

  /**
   * findCache without the table lock, for a noBlock agent that gave up on it: the generation is
   * read before the name and again after it, with the state, so that a descriptor another agent
   * destroyed and reused meanwhile is never paired with the new cache's generation.
   */
  private findCacheUnlocked(bytes: Uint8Array): KmemCache | null {
    const i32 = this.i32;
    for (let id = FIRST_NAMED_ID; id < this.maxCaches; id++) {
      const kw = this.cacheWOf(id);
      const gen = Atomics.load(i32, kw + K_GEN);
      if (!this.cacheNamed(id, bytes)) continue;
      if (Atomics.load(i32, kw + K_GEN) === gen && Atomics.load(i32, kw + K_STATE) === CACHE_ACTIVE) return new KmemCache(this, id, gen);
    }
    return null;
  }

  /** Write a cache descriptor's configuration and publish it (CT_LOCK held, or heap creation). */
  protected setupCache(id: number, name: Uint8Array, objectSize: number, align: number, flags: number): void {
    const i32 = this.i32;
    const kw = this.cacheWOf(id);
    const debug = this.debugFlags !== 0 && (flags & KF_SHEAF_CACHE) === 0;
    const inuse = Math.ceil(Math.max(objectSize, 8) / 8) * 8;
    const size = cacheStride(objectSize, align, debug);
    const order = slabOrder(size);
    const gen = (i32[kw + K_GEN]! + 1) | 0; // as the word stores it: handles compare it for equality
    // Every word but the slots' P_USERS: a slot's slow path counts itself in and out of this
    // descriptor without CT_LOCK (cacheEnter of a stale handle, refused once it sees the state),
    // so zeroing its count here made the slot's later Atomics.sub leave it at -1 for good, and
    // the new cache could never be released.
    i32.fill(0, kw, kw + CACHE_HDR_WORDS);
    for (let cpu = 0; cpu < this.cpus; cpu++) {
      const pcs = kw + CACHE_HDR_WORDS + cpu * PCS_WORDS;
      i32.fill(0, pcs, pcs + P_USERS);
      i32.fill(0, pcs + P_USERS + 1, pcs + PCS_WORDS);
    }
    i32.fill(0, kw + CACHE_HDR_WORDS + this.cpus * PCS_WORDS, kw + this.cacheWords);
    i32[kw + K_GEN] = gen;
    i32[kw + K_OBJ_SIZE] = objectSize;
    i32[kw + K_SIZE] = size;
    i32[kw + K_ALIGN] = align;
    i32[kw + K_ORDER] = order;
    i32[kw + K_OBJS] = Math.floor((PAGE_SIZE << order) / size);
    i32[kw + K_SHEAF_CAP] = (flags & KF_SHEAF_CACHE) !== 0 ? 0 : sheafCapacity(size);
    i32[kw + K_FLAGS] = flags;
    i32[kw + K_NAME_LEN] = name.length;
    // min_partial: ilog2(size) / 2, clamped to 5..10 as the kernel does.
    const minPartial = Math.min(10, Math.max(5, Math.floor(Math.log2(size) / 2)));
    i32[kw + K_MIN_PARTIAL] = minPartial;
    // Empty slabs kept for the decay: up to SLAB_EMPTY_MAX_PAGES pages, at most 1/64 of the zone.
    const keepPages = Math.min(SLAB_EMPTY_MAX_PAGES, this.u32[this.hw + Z_MANAGED]! >>> 6);
    i32[kw + K_MAX_EMPTY] = Math.max(minPartial, keepPages >>> order);
    this.f64[(kw + K_INV_SIZE) >> 1] = 1 / size;
    i32[kw + K_META] = debug ? inuse + DEBUG_RZ : 0;
    i32[kw + K_INUSE] = inuse;
    this.u8.set(name, (kw + K_NAME) << 2);
    for (let cpu = 0; cpu < this.cpus; cpu++) {
      i32[kw + CACHE_HDR_WORDS + cpu * PCS_WORDS + P_MAIN] = (this.hw + EMPTY_SHEAF_W) << 2;
    }
    // Publication point: the state store makes the configuration visible to findCache.
    Atomics.store(i32, kw + K_STATE, CACHE_ACTIVE);
    if (id >= this.i32[this.hw + CT_NR]!) this.i32[this.hw + CT_NR] = id + 1;
  }

  protected cacheName(id: number): string {
    const kw = this.cacheWOf(id);
    const at = (kw + K_NAME) << 2;
    return utf8d.decode(this.u8.slice(at, at + this.i32[kw + K_NAME_LEN]!));
  }

  /** Objects of cache `id` that callers hold: total minus every free place. Racy with other agents' fast paths. */
  protected liveObjects(id: number): number {
    const s = this.cacheStats(id);
    return s.activeObjects;
  }

  /**
   * cache.alloc of the handle of generation `gen`. The fast path pops this slot's own sheaf, which
   * holds objects only while the cache is not released; the slow path counts itself in (cacheEnter).
   */
  protected cacheAlloc(id: number, gen: number, gfp: number): number {
    const i32 = this.i32;
    if (gfp === 0 && this.fastOff === 0 && i32[this.pcpuW + C_DEFER_HEAD] === 0) {
      const obj = this.popFast(this.cacheWOf(id) + CACHE_HDR_WORDS + this.cpu * PCS_WORDS);
      if (obj !== 0) return obj;
    }
    this.assertLive();
    checkGfp(gfp);
    this.cacheEnter(id, gen, true, false);
    let obj: number;
    try {
      obj = this.slabAllocSlow(id, gfp, this.i32[this.cacheWOf(id) + K_OBJ_SIZE]!);
    } finally {
      this.cacheExit(id);
    }
    if (obj === 0) return this.allocFailed(0, gfp);
    if ((this.trace.mask & (1 << TP.kmem_cache_alloc)) !== 0) {
      this.emitObj(TP.kmem_cache_alloc, obj, this.i32[this.cacheWOf(id) + K_OBJ_SIZE]!, id);
    }
    return obj;
  }

  /** cache.free: like kfree, but the object must belong to cache `id`. */
  protected cacheFree(id: number, addr: number): void {
    const i32 = this.i32;
    if (typeof addr === "number" && addr >>> 0 === addr && addr < this.size && this.fastOff === 0) {
      const d = this.descW + (addr >>> PAGE_SHIFT) * 8;
      if (i32[d + D_FLAGS] === PG_SLAB && i32[d + D_CACHE] === id) {
        this.kfree(addr);
        return;
      }
    }
    if (addr === 0) {
      this.assertLive();
      return;
    }
    this.kfreeSlow(addr, id, 0);
  }

  /**
   * Flush slot `cpu`'s sheaves of cache `id` to the slabs and free them. This slot's sheaves are
   * flushed under their local lock, so that a hook re-entering at a lock point of the flush finds
   * them busy: kmallocNolock takes another class, kfreeNolock defers (it must not take an object
   * the flush is about to free, nor put one where the flush has already looked). False when a
   * noBlock agent could not have the list lock: that sheaf stays where it was, whole.
   */
  protected flushCpuSheaves(id: number, cpu: number, mode: number): boolean {
    const i32 = this.i32;
    const pcs = this.cacheWOf(id) + CACHE_HDR_WORDS + cpu * PCS_WORDS;
    const emptyW = (this.hw + EMPTY_SHEAF_W) << 2;
    const own = cpu === this.cpu;
    if (own) {
      if (i32[pcs + P_LOCKED] !== 0) {
        throw new HeapError(ErrorCode.EDEADLK, `the sheaves of ${this.cacheName(id)} on cpu ${cpu} are locked by this agent: a hook may not flush them`);
      }
      if (i32[pcs + P_MAIN] === emptyW && i32[pcs + P_SPARE] === 0) return true;
      this.localLock(pcs + P_LOCKED, LOCK.sheaf);
    }
    try {
      for (let which = P_MAIN; ; which = P_SPARE) {
        const s = i32[pcs + which]!;
        if (s !== 0 && s !== emptyW) {
          if (!this.flushSheaf(id, s >> 2, mode)) return false;
          this.holdSheaf(s);
          i32[pcs + which] = which === P_MAIN ? emptyW : 0;
          this.freeSheaf(s, mode);
        }
        if (which === P_SPARE) break;
      }
    } finally {
      if (own) this.localUnlock(pcs + P_LOCKED, LOCK.sheaf);
    }
    return true;
  }

  /**
   * reclaimSlot: the sheaf dead slot `cpu` had in its hands (P_HAND) for cache `id`. It is flushed
   * and freed only if it is nowhere else: on no slot's pcs line (a trade that finished, or another
   * agent took it from the barn), on neither barn list (the barn took it before the kill), and it
   * is still a sheaf of this cache (not freed by a barn shrink meanwhile). No lock held.
   */
  private flushHandSheaf(id: number, cpu: number): void {
    const kw = this.cacheWOf(id);
    const hand = kw + CACHE_HDR_WORDS + cpu * PCS_WORDS + P_HAND;
    const s = this.i32[hand]!;
    if (s === 0) return;
    this.i32[hand] = 0;
    for (let c = 0; c < this.cpus; c++) {
      const pcs = kw + CACHE_HDR_WORDS + c * PCS_WORDS;
      if (this.i32[pcs + P_MAIN] === s || this.i32[pcs + P_SPARE] === s || this.i32[pcs + P_HAND] === s) return;
    }
    this.lock(kw + K_BARN_LOCK, LOCK.barn);
    let found = false;
    for (const head of [kw + K_BARN_FULL, kw + K_BARN_EMPTY]) {
      for (let b = this.i32[head]!, n = 0; b !== 0 && n <= BARN_MAX; b = this.i32[(b >> 2) + S_NEXT]!, n++) if (b === s) found = true;
    }
    this.unlock(kw + K_BARN_LOCK, LOCK.barn);
    const sw = s >> 2;
    const i32 = this.i32;
    if (found || i32[sw + S_CACHE] !== id || i32[sw + S_CAP] !== i32[kw + K_SHEAF_CAP] || i32[sw + S_SIZE]! >>> 0 > i32[sw + S_CAP]!) return;
    if (!this.flushSheaf(id, sw, 0)) this.listBusy(id);
    this.freeSheaf(s, 0);
  }

  /** Objects in slot `cpu`'s sheaves (main and spare) of every live or dying cache: for reclaimSlot's report. */
  protected sheafObjectsOf(cpu: number): number {
    const i32 = this.i32;
    let n = 0;
    for (let id = 0; id < this.maxCaches; id++) {
      const st = i32[this.cacheWOf(id) + K_STATE];
      if (st !== CACHE_ACTIVE && st !== CACHE_DYING) continue;
      const pcs = this.cacheWOf(id) + CACHE_HDR_WORDS + cpu * PCS_WORDS;
      for (const at of [P_MAIN, P_SPARE]) {
        const sh = i32[pcs + at]!;
        if (sh !== 0 && sh !== (this.hw + EMPTY_SHEAF_W) << 2) n += i32[(sh >> 2) + S_SIZE]!;
      }
    }
    return n;
  }

  /** Flush slot `cpu`'s sheaves of every live or dying cache (detach, reclaimSlot); EAGAIN when a noBlock agent gave up. */
  protected flushAllSheavesOf(cpu: number): void {
    for (let id = 0; id < this.maxCaches; id++) {
      const st = this.i32[this.cacheWOf(id) + K_STATE];
      if (st !== CACHE_ACTIVE && st !== CACHE_DYING) continue;
      if (cpu !== this.cpu) this.flushHandSheaf(id, cpu);
      if (!this.flushCpuSheaves(id, cpu, 0)) this.listBusy(id);
      // A reclaimed slot is inside no slow path any more, wherever it died.
      if (cpu !== this.cpu) Atomics.store(this.i32, this.cacheWOf(id) + CACHE_HDR_WORDS + cpu * PCS_WORDS + P_USERS, 0);
    }
  }

  /** cache.shrink() of the handle of generation `gen`: the entry checks of a normal slab call, then shrinkCache. */
  protected cacheShrink(id: number, gen: number): void {
    this.assertLive();
    this.slabSlowEntry(id);
    this.cacheEnter(id, gen, true, false);
    try {
      this.shrinkCache(id);
    } finally {
      this.cacheExit(id);
    }
  }

  /** A noBlock agent's detach, reclaimSlot or shrink found cache `id`'s list lock held past its bound. */
  private listBusy(id: number): never {
    throw new HeapError(
      ErrorCode.EAGAIN,
      `cpu ${this.cpu} must not block, and the list lock of ${this.cacheName(id)} was held past its bound: ` +
        "the call gave up; what it returned so far stays returned: call again",
    );
  }

  /** kmem_cache_shrink: flush this slot's sheaves and the barn, free every empty slab. */
  protected shrinkCache(id: number): void {
    if (!this.flushCpuSheaves(id, this.cpu, 0)) this.listBusy(id);
    this.barnShrink(id);
    const i32 = this.i32;
    const kw = this.cacheWOf(id);
    const discard: number[] = [];
    this.lock(kw + K_LIST_LOCK, LOCK.list);
    // Bounded by the slab count: a cycle is reported after the unlock, never walked for ever.
    let steps = 0;
    const most = i32[kw + K_NR_SLABS]!;
    for (let pfn = i32[kw + K_PARTIAL]!; pfn !== 0; ) {
      if (++steps > most) break;
      const next = i32[this.pd(pfn) + D_NEXT]!;
      if (i32[this.pd(pfn) + D_INUSE] === 0) {
        this.partialDel(kw, pfn);
        this.unaccountSlab(kw, pfn);
        i32[kw + K_NR_EMPTY] = i32[kw + K_NR_EMPTY]! - 1;
        discard.push(pfn);
      }
      pfn = next;
    }
    i32[kw + K_EMPTY_LOW] = i32[kw + K_NR_EMPTY]!;
    this.unlock(kw + K_LIST_LOCK, LOCK.list);
    for (const pfn of discard) this.releaseSlab(id, pfn, 0);
    if (steps > most) throw new HeapError(ErrorCode.ECORRUPT, `the partial list of ${this.cacheName(id)} is longer than its ${most} slabs: a cycle`);
  }

  /** Flush this slot's sheaves of every dying cache, releasing caches no slot caches any more. */
  protected flushDyingCaches(): void {
    for (let id = FIRST_NAMED_ID; id < this.maxCaches; id++) {
      if (this.i32[this.cacheWOf(id) + K_STATE] !== CACHE_DYING) continue;
      if (this.i32[this.pcsW(id) + P_LOCKED] !== 0) continue;
      if (this.flushCpuSheaves(id, this.cpu, 0)) this.tryReleaseDying(id);
    }
  }

  /**
   * Destroy the cache of generation `gen`: refuse while objects are live; release now, or when
   * every slot has flushed and no slow path is inside (P_USERS).
   */
  protected destroyCache(id: number, gen: number): void {
    this.assertCanLock(LOCK.ctable);
    this.slabSlowEntry(id);
    this.lock(this.hw + CT_LOCK, LOCK.ctable);
    try {
      // Another agent may have destroyed it, and even made a new cache in the descriptor, since the handle checked.
      const kw0 = this.cacheWOf(id);
      if (this.i32[kw0 + K_GEN] !== gen || this.i32[kw0 + K_STATE] !== CACHE_ACTIVE) {
        throw new HeapError(ErrorCode.EINVAL, `cache "${this.cacheName(id)}" was destroyed`);
      }
      // Count before anything moves: a refused destroy leaves the heap exactly as it was.
      const live = this.liveObjects(id);
      if (live === 0) this.shrinkCache(id);
      if (live > 0) {
        const list = this.liveObjectList(id);
        for (const o of list) {
          if ((this.trace.mask & (1 << TP.slab_error)) !== 0) {
            this.trace.emit(TP.slab_error, { event: "slab_error", cpu: this.cpu, addr: o, cache: this.cacheName(id), message: `live object ${hex(o)} at destroy` });
          }
        }
        const shown = list.length > 0 ? `: ${list.slice(0, 16).map(hex).join(", ")}${list.length > 16 ? ", ..." : ""}` : "";
        throw new HeapError(ErrorCode.EBUSY, `cache ${this.cacheName(id)} still has ${live} live object${live === 1 ? "" : "s"}${shown}; free them first`);
      }
      const kw = this.cacheWOf(id);
      Atomics.store(this.i32, kw + K_STATE, CACHE_DYING);
      Atomics.add(this.i32, this.hw + G_NR_DYING, 1);
    } finally {
      this.unlock(this.hw + CT_LOCK, LOCK.ctable);
    }
    this.tryReleaseDying(id);
  }

  /** Release a dying cache whose objects are all back in its slabs. */
  private tryReleaseDying(id: number): void {
    const i32 = this.i32;
    const kw = this.cacheWOf(id);
    if (!this.noSlotUses(kw)) return;
    // A noBlock agent past its bound leaves the release to a later slow path.
    if (!this.lockIn(0, this.hw + CT_LOCK, LOCK.ctable)) return;
    try {
      if (i32[kw + K_STATE] !== CACHE_DYING) return;
      try {
        this.shrinkCache(id);
      } catch (e) {
        // A noBlock agent gave up on a lock: what it shrank stays shrunk; a later slow path retries.
        if (e instanceof HeapError && e.code === ErrorCode.EAGAIN) return;
        throw e;
      }
      // A slow path inside (an allocation that began before the destroy, a free) keeps it.
      if (i32[kw + K_NR_SLABS] !== 0 || !this.noSlotUses(kw)) return;
      i32[kw + K_NAME_LEN] = 0;
      Atomics.store(i32, kw + K_STATE, CACHE_FREE);
      Atomics.sub(i32, this.hw + G_NR_DYING, 1);
    } finally {
      this.unlock(this.hw + CT_LOCK, LOCK.ctable);
    }
  }

  /** Does no slot cache objects of the cache at `kw` (sheaves) nor work inside it (P_USERS)? */
  private noSlotUses(kw: number): boolean {
    const i32 = this.i32;
    for (let cpu = 0; cpu < this.cpus; cpu++) {
      const pcs = kw + CACHE_HDR_WORDS + cpu * PCS_WORDS;
      if (i32[pcs + P_MAIN] !== (this.hw + EMPTY_SHEAF_W) << 2 || i32[pcs + P_SPARE] !== 0 || Atomics.load(i32, pcs + P_USERS) !== 0) return false;
    }
    return true;
  }

  /* ================================================================= stats and validation */

  protected cacheStats(id: number): SlabStats {
    const i32 = this.i32;
    const kw = this.cacheWOf(id);
    let sheafObjects = 0;
    for (let cpu = 0; cpu < this.cpus; cpu++) {
      const pcs = kw + CACHE_HDR_WORDS + cpu * PCS_WORDS;
      const main = i32[pcs + P_MAIN]!;
      const spare = i32[pcs + P_SPARE]!;
      sheafObjects += i32[(main >> 2) + S_SIZE]!;
      if (spare !== 0) sheafObjects += i32[(spare >> 2) + S_SIZE]!;
    }
    let barnObjects = 0;
    for (let s = i32[kw + K_BARN_FULL]!, n = 0; s !== 0 && n < BARN_MAX; s = i32[(s >> 2) + S_NEXT]!, n++) barnObjects += i32[(s >> 2) + S_SIZE]!;
    let deferred = 0;
    for (let cpu = 0; cpu < this.cpus; cpu++) {
      const nd = i32[this.pcpOf(cpu) + C_DEFER_NR]!;
      for (let o = i32[this.pcpOf(cpu) + C_DEFER_HEAD]!, n = 0; o !== 0 && n < nd; o = i32[(o >> 2) + O_NEXT]!, n++) {
        if (i32[this.pd(o >>> PAGE_SHIFT) + D_CACHE] === id) deferred++;
      }
    }
    const total = i32[kw + K_TOTAL_OBJS]!;
    const slabs = i32[kw + K_NR_SLABS]!;
    return {
      name: this.cacheName(id),
      internal: (i32[kw + K_FLAGS]! & KF_SHEAF_CACHE) !== 0,
      objectSize: i32[kw + K_OBJ_SIZE]!,
      size: i32[kw + K_SIZE]!,
      order: i32[kw + K_ORDER]!,
      objectsPerSlab: i32[kw + K_OBJS]!,
      activeObjects: total - i32[kw + K_FREE_OBJS]! - sheafObjects - barnObjects - deferred,
      totalObjects: total,
      slabs,
      pages: slabs << i32[kw + K_ORDER]!,
      partialSlabs: i32[kw + K_NR_PARTIAL]!,
      fullSlabs: i32[kw + K_NR_FULL]!,
      emptySlabs: i32[kw + K_NR_EMPTY]!,
      sheafObjects,
      barnObjects,
      barnFull: i32[kw + K_BARN_NR_FULL]!,
      barnEmpty: i32[kw + K_BARN_NR_EMPTY]!,
      sheafCapacity: i32[kw + K_SHEAF_CAP]!,
    };
  }

  protected slabStats(): SlabStats[] {
    const out: SlabStats[] = [];
    for (let id = 0; id < this.maxCaches; id++) {
      const st = this.i32[this.cacheWOf(id) + K_STATE];
      if (st === CACHE_ACTIVE || st === CACHE_DYING) out.push(this.cacheStats(id));
    }
    return out;
  }

  /**
   * Check every slab invariant on top of validatePages' map: each slab page belongs to one live
   * cache and its head; freelist length plus in-use equals objects per slab; partial-list and
   * counts agree; no object is both on a freelist and in a sheaf; every sheaf object belongs to
   * its cache. Other slots' sheaves are read as they are: exact only while those agents are idle.
   */
  protected validateSlabs(where: Uint8Array): void {
    const i32 = this.i32;
    const bad = (msg: string): never => {
      throw new HeapError(ErrorCode.ECORRUPT, msg);
    };
    const freeObjs = new Set<number>();
    const perCache = new Map<number, { slabs: number; free: number; empty: number }>();
    for (let pfn = this.zoneStart; pfn < this.nrPages; ) {
      if (where[pfn] !== PAGE_WHERE.unseen) {
        pfn++;
        continue;
      }
      const d = this.pd(pfn);
      if (i32[d + D_FLAGS] !== PG_SLAB) bad(`page ${pfn} is in no place (flags ${hex(i32[d + D_FLAGS]!)})`);
      if (i32[d + D_HEAD] !== pfn) bad(`slab page ${pfn} is not the head its tail pages expect (head ${i32[d + D_HEAD]})`);
      const id = i32[d + D_CACHE]!;
      if (id < 0 || id >= this.maxCaches) bad(`slab ${pfn} names cache ${id}`);
      const kw = this.cacheWOf(id);
      const state = i32[kw + K_STATE];
      if (state !== CACHE_ACTIVE && state !== CACHE_DYING) bad(`slab ${pfn} belongs to cache ${id}, which does not exist`);
      const order = i32[kw + K_ORDER]!;
      for (let p = 0; p < 1 << order; p++) {
        const td = this.pd(pfn + p);
        if (i32[td + D_FLAGS] !== PG_SLAB || i32[td + D_HEAD] !== pfn || i32[td + D_CACHE] !== id) bad(`slab ${pfn}: page ${pfn + p} is not one of its pages`);
        if (where[pfn + p] !== PAGE_WHERE.unseen) bad(`slab ${pfn}: page ${pfn + p} is in two places`);
        where[pfn + p] = PAGE_WHERE.allocated;
      }
      const size = i32[kw + K_SIZE]!;
      const objs = i32[kw + K_OBJS]!;
      const base = pfn << PAGE_SHIFT;
      let n = 0;
      for (let o = i32[d + D_FREELIST]!; o !== 0; o = i32[(o >> 2) + O_NEXT]!) {
        if (o < base || o >= base + objs * size || (o - base) % size !== 0) bad(`slab ${pfn} of ${this.cacheName(id)}: freelist holds ${hex(o)}, not one of its objects`);
        if (freeObjs.has(o)) bad(`object ${hex(o)} is twice on a freelist`);
        if (i32[o >> 2] !== (o ^ FREE_TAG)) bad(`free object ${hex(o)} of ${this.cacheName(id)} was written after free (word 0 is ${hex(i32[o >> 2]!)})`);
        if (i32[kw + K_META] !== 0 && i32[((o + i32[kw + K_META]!) >> 2) + M_STATE] !== OBJ_FREE) bad(`free object ${hex(o)} of ${this.cacheName(id)} is not marked free`);
        freeObjs.add(o);
        if (++n > objs) bad(`slab ${pfn}: freelist longer than the slab`);
      }
      if (n + i32[d + D_INUSE]! !== objs) bad(`slab ${pfn} of ${this.cacheName(id)}: ${n} free + ${i32[d + D_INUSE]} in use != ${objs} objects`);
      const c = perCache.get(id) ?? { slabs: 0, free: 0, empty: 0 };
      c.slabs++;
      c.free += n;
      if (n === objs) c.empty++;
      perCache.set(id, c);
      pfn += 1 << order;
    }
    for (let id = 0; id < this.maxCaches; id++) {
      const kw = this.cacheWOf(id);
      const state = i32[kw + K_STATE];
      if (state !== CACHE_ACTIVE && state !== CACHE_DYING) continue;
      const name = this.cacheName(id);
      const c = perCache.get(id) ?? { slabs: 0, free: 0, empty: 0 };
      if (c.slabs !== i32[kw + K_NR_SLABS]) bad(`${name}: counts ${i32[kw + K_NR_SLABS]} slabs, has ${c.slabs}`);
      if (c.free !== i32[kw + K_FREE_OBJS]) bad(`${name}: counts ${i32[kw + K_FREE_OBJS]} free objects on slabs, has ${c.free}`);
      if (c.slabs * i32[kw + K_OBJS]! !== i32[kw + K_TOTAL_OBJS]) bad(`${name}: total objects ${i32[kw + K_TOTAL_OBJS]} != slabs x objects`);
      if (c.empty !== i32[kw + K_NR_EMPTY]) bad(`${name}: counts ${i32[kw + K_NR_EMPTY]} empty slabs, has ${c.empty}`);
      let partial = 0;
      for (let pfn = i32[kw + K_PARTIAL]!, prev = 0; pfn !== 0; prev = pfn, pfn = i32[this.pd(pfn) + D_NEXT]!) {
        const d = this.pd(pfn);
        if (i32[d + D_FLAGS] !== PG_SLAB || i32[d + D_CACHE] !== id || i32[d + D_HEAD] !== pfn) bad(`${name}: partial list holds page ${pfn}, not one of its slabs`);
        if (i32[d + D_PREV] !== prev) bad(`${name}: partial list back link broken at ${pfn}`);
        if (i32[d + D_FREELIST] === 0) bad(`${name}: full slab ${pfn} on the partial list`);
        if (++partial > c.slabs) bad(`${name}: partial list is circular`);
      }
      if (partial !== i32[kw + K_NR_PARTIAL]) bad(`${name}: counts ${i32[kw + K_NR_PARTIAL]} partial slabs, its list holds ${partial}`);
      let full = 0;
      for (let pfn = i32[kw + K_FULL]!, prev = 0; pfn !== 0; prev = pfn, pfn = i32[this.pd(pfn) + D_NEXT]!) {
        const d = this.pd(pfn);
        if (i32[d + D_FLAGS] !== PG_SLAB || i32[d + D_CACHE] !== id || i32[d + D_HEAD] !== pfn) bad(`${name}: full list holds page ${pfn}, not one of its slabs`);
        if (i32[d + D_PREV] !== prev) bad(`${name}: full list back link broken at ${pfn}`);
        if (i32[d + D_FREELIST] !== 0) bad(`${name}: slab ${pfn} with free objects on the full list`);
        if (++full > c.slabs) bad(`${name}: full list is circular`);
      }
      if (full !== i32[kw + K_NR_FULL]) bad(`${name}: counts ${i32[kw + K_NR_FULL]} full slabs, its list holds ${full}`);
      if (partial + full !== c.slabs) bad(`${name}: ${partial} partial + ${full} full slabs != ${c.slabs} slabs`);
      const checkSheaf = (s: number, where2: string): void => {
        const sw = s >> 2;
        if (s === (this.hw + EMPTY_SHEAF_W) << 2) return;
        if (i32[this.pd(s >>> PAGE_SHIFT) + D_CACHE] !== SHEAF_CACHE_ID) bad(`${name}: ${where2} sheaf ${hex(s)} is not a sheaf object`);
        if (i32[sw + S_CACHE] !== id) bad(`${name}: ${where2} sheaf ${hex(s)} serves cache ${i32[sw + S_CACHE]}`);
        const size = i32[sw + S_SIZE]!;
        if (size < 0 || size > i32[sw + S_CAP]!) bad(`${name}: ${where2} sheaf holds ${size} of ${i32[sw + S_CAP]}`);
        for (let k = 0; k < size; k++) {
          const o = i32[sw + S_OBJS + k]!;
          const od = this.pd(o >>> PAGE_SHIFT);
          if (o >>> PAGE_SHIFT >= this.nrPages || i32[od + D_FLAGS] !== PG_SLAB || i32[od + D_CACHE] !== id) bad(`${name}: ${where2} sheaf holds ${hex(o)}, not one of its objects`);
          if (freeObjs.has(o)) bad(`${name}: object ${hex(o)} is both free in its slab and in a ${where2} sheaf`);
          if (i32[kw + K_META] !== 0 && i32[((o + i32[kw + K_META]!) >> 2) + M_STATE] !== OBJ_FREE) bad(`${name}: ${where2} sheaf holds ${hex(o)}, which is not marked free`);
          freeObjs.add(o);
        }
      };
      for (let cpu = 0; cpu < this.cpus; cpu++) {
        const pcs = kw + CACHE_HDR_WORDS + cpu * PCS_WORDS;
        checkSheaf(i32[pcs + P_MAIN]!, `cpu ${cpu} main`);
        if (i32[pcs + P_SPARE] !== 0) checkSheaf(i32[pcs + P_SPARE]!, `cpu ${cpu} spare`);
      }
      let nf = 0;
      for (let s = i32[kw + K_BARN_FULL]!; s !== 0; s = i32[(s >> 2) + S_NEXT]!) {
        checkSheaf(s, "barn");
        if (++nf > BARN_MAX) bad(`${name}: barn holds more than ${BARN_MAX} full sheaves`);
      }
      if (nf !== i32[kw + K_BARN_NR_FULL]) bad(`${name}: barn counts ${i32[kw + K_BARN_NR_FULL]} full sheaves, holds ${nf}`);
      let ne = 0;
      for (let s = i32[kw + K_BARN_EMPTY]!; s !== 0; s = i32[(s >> 2) + S_NEXT]!) {
        if (i32[(s >> 2) + S_SIZE] !== 0) bad(`${name}: barn's empty list holds a sheaf with objects`);
        if (++ne > BARN_MAX) bad(`${name}: barn holds more than ${BARN_MAX} empty sheaves`);
      }
      if (ne !== i32[kw + K_BARN_NR_EMPTY]) bad(`${name}: barn counts ${i32[kw + K_BARN_NR_EMPTY]} empty sheaves, holds ${ne}`);
    }
    for (let cpu = 0; cpu < this.cpus; cpu++) {
      const c = this.pcpOf(cpu);
      let n = 0;
      for (let o = i32[c + C_DEFER_HEAD]!; o !== 0; o = i32[(o >> 2) + O_NEXT]!) {
        if (freeObjs.has(o)) bad(`object ${hex(o)} is on cpu ${cpu}'s deferred list and free elsewhere`);
        freeObjs.add(o);
        if (++n > 1 << 22) bad(`cpu ${cpu}'s deferred list is circular`);
      }
      if (n !== i32[c + C_DEFER_NR]) bad(`cpu ${cpu} counts ${i32[c + C_DEFER_NR]} deferred objects, holds ${n}`);
      if (i32[c + C_STATE] !== SLOT_ATTACHED && n !== 0) bad(`detached cpu ${cpu} still has deferred objects`);
    }
  }

  protected emitObj(id: number, addr: number, size: number, cache: number): void {
    const rec: TraceRecord = { event: TRACE_EVENTS[id]!, cpu: this.cpu, addr, size };
    if (cache >= 0) rec.cache = this.cacheName(cache);
    this.trace.emit(id, rec);
  }
}

function sheafHas(i32: Int32Array, s: number, addr: number): boolean {
  if (s === 0) return false;
  const sw = s >> 2;
  const n = i32[sw + S_SIZE]!;
  for (let k = 0; k < n && k < 64; k++) if (i32[sw + S_OBJS + k] === addr) return true;
  return false;
}

/** Stride of a cache's objects: the size rounded up to 8, with the debug redzone and metadata, rounded up to `align`. */
function cacheStride(objectSize: number, align: number, debug: boolean): number {
  const inuse = Math.ceil(Math.max(objectSize, 8) / 8) * 8;
  return Math.ceil((debug ? inuse + DEBUG_RZ + DEBUG_META_BYTES : inuse) / align) * align;
}

/** The offset (0..3) of the first byte in which words `a` and `b` differ; they differ. */
function firstDiffByte(a: number, b: number): number {
  const x = (a ^ b) >>> 0;
  return x & 0xff ? 0 : x & 0xff00 ? 1 : x & 0xff0000 ? 2 : 3;
}

export function checkSize(size: number): void {
  checkInt("size", size, 1, KMALLOC_MAX_SIZE, " of bytes", `the largest kmalloc is ${KMALLOC_MAX_SIZE} bytes (4 MiB, a block of 2^${MAX_ORDER} pages)`);
}

/** A cache name as UTF-8, or EINVAL: not a string, empty, not well-formed Unicode, too long. */
function cacheNameBytes(name: unknown): Uint8Array {
  if (typeof name !== "string") einval(`a cache name must be a string, not ${describe(name)}`);
  if (name.length === 0) einval("a cache name must be a non-empty string: the name given is empty (\"\")");
  if (/\p{Cs}/u.test(name)) einval(`a cache name must be well-formed Unicode, not ${describe(name)} (it holds a lone surrogate, which UTF-8 cannot keep)`);
  const bytes = utf8.encode(name);
  if (bytes.length > CACHE_NAME_MAX) einval(`cache name ${describe(name)} is ${bytes.length} bytes of UTF-8, more than the ${CACHE_NAME_MAX} allowed`);
  return bytes;
}

/**
 * A named slab cache: a thin handle (heap, descriptor index, generation) valid in the agent that
 * made or found it. Objects may be freed by any agent.
 */
/** What a KmemCache handle needs of its heap beyond the public calls. */
interface CacheOps {
  readonly i32: Int32Array;
  assertLive(): void;
  cacheAlloc(id: number, gen: number, gfp: number): number;
  cacheFree(id: number, addr: number): void;
  cacheName(id: number): string;
  cacheWOf(id: number): number;
  checkBulk(addrs: ArrayLike<number>, want: number): void;
  cacheShrink(id: number, gen: number): void;
  destroyCache(id: number, gen: number): void;
  cacheStats(id: number): SlabStats;
}

export class KmemCache {
  readonly name: string;
  readonly objectSize: number;
  private readonly ops: CacheOps;
  private readonly id: number;
  private readonly gen: number;
  /** Word index of the descriptor's K_GEN and K_STATE, checked on every call. */
  private readonly kw: number;

  /** Made by heap.createCache and heap.findCache only. @internal */
  constructor(heap: SlabAllocator, id: number, gen: number) {
    if (!(heap instanceof SlabAllocator) || !Number.isInteger(id) || id < FIRST_NAMED_ID || !Number.isInteger(gen)) {
      einval("a KmemCache comes from heap.createCache or heap.findCache, not from new KmemCache()");
    }
    this.ops = heap as unknown as CacheOps;
    this.id = id;
    this.gen = gen;
    this.kw = this.ops.cacheWOf(id);
    this.name = this.ops.cacheName(id);
    this.objectSize = this.ops.i32[this.kw + K_OBJ_SIZE]!;
  }

  private check(): void {
    // A handle obtained through a heap handle that has since detached is dead with it.
    this.ops.assertLive();
    this.checkAlive();
  }

  /**
   * The descriptor still holds this cache (not destroyed, not reused): two plain loads. alloc and
   * free need no more here: their fast paths are gated by the heap handle's fastOff, which a detach
   * sets, and their slow paths call assertLive themselves.
   */
  private checkAlive(): void {
    const i32 = this.ops.i32;
    if (i32[this.kw + K_GEN] !== this.gen || i32[this.kw + K_STATE] !== CACHE_ACTIVE) this.destroyed();
  }

  private destroyed(): never {
    this.ops.assertLive();
    throw new HeapError(ErrorCode.EINVAL, `cache "${this.name}" was destroyed`);
  }

  /** One object, or 0. */
  alloc(gfp: number = GFP.KERNEL): number {
    this.checkAlive();
    return this.ops.cacheAlloc(this.id, this.gen, gfp);
  }

  free(addr: number): void {
    this.checkAlive();
    this.ops.cacheFree(this.id, addr);
  }

  /** Fill out[0..n) with n objects and return n, or return 0 and allocate nothing. */
  allocBulk(n: number, out: number[] | Uint32Array, gfp: number = GFP.KERNEL): number {
    this.check();
    checkInt("count", n, 0, 0x7fffffff, " of objects");
    checkOut("out", out, n);
    checkGfp(gfp);
    // Objects go to the caller's array only when all n are there: a write it refuses (a Proxy, a
    // setter) then frees them all, as a failed allocation does.
    const got: number[] | Uint32Array = out instanceof Uint32Array ? out : [];
    for (let i = 0; i < n; i++) {
      const obj = this.ops.cacheAlloc(this.id, this.gen, gfp);
      if (obj === 0) {
        for (let j = 0; j < i; j++) this.ops.cacheFree(this.id, got[j]!);
        return 0;
      }
      got[i] = obj;
    }
    if (got !== out) {
      const refused = storeOut(out, got, n);
      if (refused !== null) {
        for (let j = 0; j < n; j++) this.ops.cacheFree(this.id, got[j]!);
        einval(`out refused a write (${refused}): the ${n} objects taken were freed again`);
      }
    }
    return n;
  }

  /** Free many objects of this cache; all are checked before any is freed. */
  freeBulk(addrs: ArrayLike<number>): void {
    this.check();
    const list = readAddrs("addrs", addrs);
    this.ops.checkBulk(list, this.id);
    for (let i = 0; i < list.length; i++) if (list[i] !== 0) this.ops.cacheFree(this.id, list[i]!);
  }

  /** Return this slot's cached objects and every empty slab to the page allocator. */
  shrink(): void {
    this.check();
    this.ops.cacheShrink(this.id, this.gen);
  }

  /** Destroy the cache; refused with EBUSY, the cache still working, while objects are live. */
  destroy(): void {
    this.check();
    this.ops.destroyCache(this.id, this.gen);
  }

  stats(): SlabStats {
    this.check();
    return this.ops.cacheStats(this.id);
  }
}
