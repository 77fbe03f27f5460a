/*
 * The slab allocator: caches of same-sized objects carved from slabs of 2^order pages, with
 * per-slot sheaves (arrays of free objects) in front and a shared barn of full and empty sheaves
 * behind them (SLUB as of 2025-26). kmalloc serves sizes 8..8192 from size-class caches and larger
 * sizes straight from the page allocator. Here: the fast paths, slabs, lists; the slab/ contract.
 *
 * WORDS
 *   PCS_MAIN, PCS_SPARE, PCS_REMOTE of the pcs line of (cache, slot) and the sheaves they point at:
 *     that slot alone, plain stores. PD_OWNER of a slab's pages names the slot that made it, or
 *     last took objects from its freelist (newSlab, takeFromPartial, under the list lock): a
 *     free by that slot goes to its main sheaf, by another to that slot's remote sheaf, which goes
 *     to the barn whole. A hint read with no lock, never trusted: it only picks one of two sheaves.
 *     PCS_LOCKED (class sheaf) is the slot's local lock, a plain word: a slow
 *     path sets it while it swaps, refills or flushes the sheaves (every flush of this slot's
 *     sheaves too: shrink, cache.shrink, destroy, detach, dying caches), so that a hook
 *     re-entering from inside sees the sheaves busy. PCS_USERS counts that slot's slow paths inside
 *     a named cache (cacheEnter: Atomics.add, then the state and generation are checked; cacheExit:
 *     Atomics.sub); setupCache leaves it (a stale handle may be counting itself in); reclaimSlot
 *     clears a dead slot's. A dying cache is released (under CT_LOCK) only when no slot caches its
 *     objects and every PCS_USERS is 0, so no slow path works on a descriptor being reused.
 *   K_BARN_LOCK (class barn) protects K_BARN_* and the sheaves on the barn lists (linked by S_NEXT).
 *   K_LIST_LOCK (class list) protects K_PARTIAL, K_FULL, K_NR_*, K_TOTAL_OBJS, K_FREE_OBJS, the
 *     decay's K_EMPTY_LOW and K_DECAY_TICKS and, for every slab of the cache, its descriptors
 *     (PD_FLAGS, PD_HEAD, PD_CACHE of each page; the head's PD_FREELIST, PD_INUSE, PD_NEXT, PD_PREV)
 *     and the free objects on its freelist (words 0 and 1). A new slab is built before the lock is
 *     taken; under it the maker takes its objects first and only then lists the slab.
 *   CT_LOCK (class ctable): createCache, findCache, destroy (which checks the handle's generation
 *     under it), the release of dying caches; a descriptor's configuration line is written under
 *     it before K_STATE (Atomics.store) publishes it, read-only afterwards. See cache.ts.
 *   C_DEFER_HEAD, C_DEFER_NR: the slot alone; kfreeNolock pushes, the slot's next normal slab call
 *     drains (reclaimSlot a dead slot's). Words 0 and 1 of an object in a sheaf: its freer.
 * A sheaf is in one place at every lock point: a pcs line, a barn list, or the hand of the slot
 *   moving it (PCS_HAND: a full main or remote sheaf is in PCS_HAND before the barn takes it, a
 *   sheaf off the barn is in it before barnPop unlinks it and until it is on the pcs line), so a
 *   reclaim flushes the hand sheaf unless a pcs line or barn list holds it, never twice. A slab
 *   leaving its cache becomes a block in the slot's hand (PG_INHAND) under the list lock
 *   (unaccountSlab), freed by reclaimSlot if the slot dies before releasing it. Under the list lock every statement leaves the slabs rebuildable from their
 *   descriptors: an object moves into a sheaf (counted) before it leaves its freelist, a new slab's
 *   head has its freelist and count before its pages become PG_SLAB. reclaimSlot, taking a list
 *   lock over, rebuilds the lists and counts (slabRebuildLocked) and drops from the dead slot's
 *   sheaves (pcs line, hand) a top object also on a freelist; taking a barn lock over, recounts
 *   the barn (barnRecountLocked). The deferred list is drained one object at a time in place; a sheaf
 *   object in the making is in one of the slot's sheaf hands (sheaf_hand.ts), a cache.allocBulk
 *   batch in its bulk hand (bulk.ts), so reclaimSlot frees them. Residual: a kill between an object
 *   leaving a list and its free or its caller leaks that one object (in a debug cache, the
 *   slot's debug object hand gives it back: debug_hand.ts).
 * Empty slabs stay on the partial list up to K_MAX_EMPTY, one beyond goes back at once, the rest
 *   decay (slab/decay.ts); shrink keeps none. Every walk of a list is bounded by its count
 *   (C_DEFER_NR, K_NR_SLABS, K_BARN_MAX): a cycle or stray link is ECORRUPT (reported to onError by
 *   deferred work, which drops the broken list). Debug heaps trust no metadata word: M_STATE one
 *   of M_STATE_*, M_REQ in 1..K_OBJ_SIZE, PD_CACHE and PD_HEAD in range, or ECORRUPT before acting;
 *   bytes 0..7 of a free debug object are the free tag and POISON_WORD when off a linked list.
 *
 * LOCKS, in order: ctable -> sheaf -> barn -> list -> (page allocator: pcp -> zone). The barn and
 *   list locks of one cache are never held together. The sheaf cache (K_FLAG_SHEAF_CACHE, no
 *   sheaves) is used with only a sheaf local lock held, never a barn or list lock. Normal slow
 *   paths assert at entry (slabSlowEntry) that this slot holds no barn, list, pcp or zone lock and
 *   that this cache's sheaves are not locally locked (EDEADLK, nothing changed); the housekeeping
 *   there may take ctable (dying caches) and rcu (expired kfreeRcu blocks, only with no lock
 *   held). Nolock paths only trylock barn and list, never allocate a sheaf and never loop on a
 *   lock. On an agent that must not block, normal paths take barn, list and ctable with lockIn(0,
 *   ...), which gives up past NOBLOCK_BOUND_MS like a trylock: an allocation takes the next source
 *   or returns 0, a free goes on the slot's deferred list; shrink, detach, reclaimSlot and
 *   createCache / destroy (lock()) throw EAGAIN with what they returned so far returned.
 * NO LOCK: the fast paths (kmalloc, kfree, kmallocNolock, kfreeNolock, cache alloc and free
 *   hitting the main sheaf): plain loads and stores of this slot's pcs line and main sheaf; they
 *   test one field of the handle, gate (nolockGate for the nolock pair), which mirrors fastOff
 *   (off in debug mode and while object events are traced), this handle's sheaf local locks
 *   (PCS_LOCKED) and C_DEFER_HEAD: words only this slot writes while it is attached. They need
 *   no PCS_USERS count: a slot's own sheaf holds objects only while the cache is not released.
 * STALE: pushFast reads the descriptor of the freed address's page and its cache's K_OBJS
 *   and K_INV_SIZE with no lock: for a live object they are stable (a slab with a live object is
 *   never released, a configuration line is read-only while the cache lives); for an address that
 *   is not a live object they may be stale, and its checks are best effort, exact in debug mode,
 *   which takes the slow path. ksize and the checks read freelists as they are (see debug.ts).
 */
import { GFP, GFP_TRYLOCK } from "../core/gfp.js";
import * as layout from "../core/layout.js";
import type { Locks } from "../core/lock.js";
import { type Mem, MemView } from "../core/mem.js";
import * as memConsts from "../core/mem.js";
import { type PageAllocator } from "../page/page_alloc.js";
import { TP } from "../core/trace.js";
import { debugFree, debugUnlink, isFreeObject, objectCache } from "./debug.js";
import { kfreeSlow, kmallocNolockSlow, kmallocSlow } from "./kmalloc.js";
import * as sizes from "./sizes.js";
import { pdListAdd, pdListDel } from "../page/buddy.js";
import { cacheAllocSlow } from "./cache.js";
import { emptySlabTaken, slabDecayLocked } from "./decay.js";
import { noop } from "../core/callbacks.js";

/* Module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { INV_EXACT, KMALLOC_FIRST_ID, KMALLOC_MAX_CACHE_SIZE: MAX_CACHE_SIZE, KMALLOC_SIZES, SHEAF_SIZE_MASK, SIZE_INDEX } = sizes;
const { WORD_MASK } = memConsts;
const { C_DEFER_HEAD, K_FREE_OBJS, K_FULL, K_HDR_WORDS, K_INUSE, K_INV_SIZE, K_LIST_LOCK, K_MAX_EMPTY, K_META, K_NR_EMPTY, K_NR_FULL, K_NR_PARTIAL, K_NR_SLABS, K_OBJS, K_ORDER, K_PARTIAL, K_SIZE, K_TOTAL_OBJS, LOCK, M_REQ, M_STATE, M_STATE_FREE, O_FREE_TAG, O_NEXT, PAGE_SHIFT, PAGE_SIZE, PCS_LOCKED, PCS_MAIN, PCS_REMOTE, PCS_WORDS, PD_CACHE, PD_FLAGS, PD_FREELIST, PD_HEAD, PD_INUSE, PD_OWNER, PD_WORDS, PG_HEAD, PG_INHAND, PG_ORDER_MASK, PG_ORDER_SHIFT, PG_SLAB, POISON_FREE, RED_ACTIVE, S_CAP, S_OBJS, S_SIZE, VM } = layout;

export { KMALLOC_SIZES, KMALLOC_MAX_CACHE_SIZE, KMALLOC_MAX_SIZE, SHEAF_CACHE_ID, KMALLOC_FIRST_ID, FIRST_NAMED_ID, MAX_OBJECT_SIZE, sheafCapacity, slabOrder, checkSize } from "./sizes.js";
export type { CacheOptions, SlabStats } from "./sizes.js";

export class SlabAllocator extends MemView {
  readonly mem: Mem;
  readonly locks: Locks;
  readonly pages: PageAllocator;
  /**
   * Work of the layers above on this slot's slow paths (the RCU layer frees expired kfreeRcu
   * blocks): installed by the facade; slabSlowEntry calls it when C_RCU_WAIT is set.
   */
  rcuSlowWork: () => void;
  /** Run first by destroyCache (the RCU layer's barrier for pending kfreeRcu objects): installed by the facade. */
  beforeDestroy: () => void;
  /** Word index of this slot's pcs line for each kmalloc class: derived, read-only. */
  readonly kmPcs: Int32Array;
  /**
   * The same by size: pcsBySize[(size + 7) >> 3] is the pcs line of size's kmalloc class (one
   * load on the kmalloc fast paths instead of two: SIZE_INDEX, then kmPcs). Derived, read-only.
   */
  readonly pcsBySize: Int32Array;
  /** K_HDR_WORDS + cpu * PCS_WORDS: this slot's pcs line of a cache is at its descriptor's word + pcsOff. */
  readonly pcsOff: number;
  /** Non-zero while the fast paths must not run: detached, debug mode, or object tracing on. */
  fastOff: number;
  /** This slot's sheaf local locks (PCS_LOCKED words) that this handle holds now (lockSheaf). */
  sheafLocks: number;
  /**
   * The normal fast paths' one test (syncGates): non-zero while fastOff is, while this handle holds
   * a sheaf local lock (a hook re-entered from a slow path) or while this slot's deferred object
   * list is not empty (the next normal call drains it). It mirrors words that only this slot
   * writes while it is attached, so a plain field read replaces three loads of the buffer.
   */
  gate: number;
  /** The nolock fast paths' test: fastOff, or a sheaf local lock held. */
  nolockGate: number;
  /** Set under a barn lock when a decay step is due (barnPutFull), run by barnDecay after the unlock. */
  barnDecayDue: boolean;
  /** True while drainDeferredObjects runs (it does not nest). */
  drainingDeferred: boolean;

  constructor(mem: Mem, locks: Locks, pages: PageAllocator) {
    super(mem);
    this.mem = mem;
    this.locks = locks;
    this.pages = pages;
    this.pcsOff = K_HDR_WORDS + this.cpu * PCS_WORDS;
    this.rcuSlowWork = noop;
    this.beforeDestroy = noop;
    this.kmPcs = new Int32Array(KMALLOC_SIZES.length);
    for (let i = 0; i < KMALLOC_SIZES.length; i++) this.kmPcs[i] = this.pcsW(KMALLOC_FIRST_ID + i);
    this.pcsBySize = new Int32Array(SIZE_INDEX.length);
    for (let i = 0; i < SIZE_INDEX.length; i++) this.pcsBySize[i] = this.kmPcs[SIZE_INDEX[i]!]!;
    this.fastOff = this.locks.debugFlags;
    this.sheafLocks = 0;
    this.gate = 1;
    this.nolockGate = 1;
    this.drainingDeferred = false;
    this.barnDecayDue = false;
    this.syncGates();
  }

  updateFastOff(): void {
    const objEvents = (1 << TP.kmalloc) | (1 << TP.kfree) | (1 << TP.kmem_cache_alloc) | (1 << TP.kmem_cache_free);
    this.fastOff = (this.locks.detached || this.locks.closing ? 1 : 0) | this.locks.debugFlags | (this.locks.trace.mask & objEvents);
    this.syncGates();
  }

  /**
   * Recompute gate and nolockGate from fastOff, sheafLocks and this slot's C_DEFER_HEAD: after
   * every change of one of them by this handle (updateFastOff, lockSheaf, unlockSheaf, the
   * deferred list's push, pops and drop), and at each slow-path entry.
   */
  syncGates(): void {
    this.nolockGate = this.fastOff !== 0 || this.sheafLocks !== 0 ? 1 : 0;
    this.gate = this.nolockGate !== 0 || this.i32[this.pcpuW + C_DEFER_HEAD] !== 0 ? 1 : 0;
  }

  /**
   * Take this slot's sheaf local lock of the pcs line at word `pcs`. The gates close first: the
   * lock point's hook, which runs inside localLock, must find the fast paths shut.
   */
  lockSheaf(pcs: number): void {
    this.sheafLocks++;
    this.syncGates();
    this.locks.localLock(pcs + PCS_LOCKED, LOCK.sheaf);
  }

  /** Drop the lock lockSheaf took; the gates open once the word is clear (after the release point's hook). */
  unlockSheaf(pcs: number): void {
    this.locks.localUnlock(pcs + PCS_LOCKED, LOCK.sheaf);
    this.sheafLocks--;
    this.syncGates();
  }

  /** Word index of cache `id`'s descriptor. */
  cacheWOf(id: number): number {
    return this.cacheW + id * this.cacheWords;
  }

  /** Word index of this slot's pcs line of cache `id`. */
  pcsW(id: number): number {
    return this.cacheW + id * this.cacheWords + this.pcsOff;
  }

  /* ================================================================= kmalloc: fast paths */

  /**
   * Allocate `size` bytes (8-byte aligned at least); 0 when memory is exhausted. No default gfp
   * (undefined is GFP_KERNEL) and one test of 1 <= size <= MAX_CACHE_SIZE: fewer bytecodes (V8
   * inlines a fast path into a caller's loop only within a budget). */
  kmalloc(size: number, gfp?: number): number {
    if (this.gate === 0 && (gfp === undefined || gfp === 0) && typeof size === "number" && (size | 0) === size && (size - 1) >>> 0 < MAX_CACHE_SIZE) {
      const obj = this.popFast(this.pcsBySize[(size + 7) >> 3]!);
      if (obj !== 0) return obj;
    }
    return kmallocSlow(this, size, gfp);
  }

  /** Free what kmalloc (or a cache) returned; 0 is a no-op. */
  kfree(addr: number): void {
    if (this.gate !== 0 || !this.pushFast(addr)) kfreeSlow(this, addr, -1, 0);
  }

  /** kmalloc that is safe from any context (seed 001). Sizes above 8 KiB give 0. */
  kmallocNolock(size: number, gfp?: number): number {
    if (this.nolockGate === 0 && (gfp === undefined || gfp === 0) && typeof size === "number" && (size | 0) === size && (size - 1) >>> 0 < MAX_CACHE_SIZE) {
      const obj = this.popFast(this.pcsBySize[(size + 7) >> 3]!);
      if (obj !== 0) return obj;
    }
    return kmallocNolockSlow(this, size, gfp);
  }

  /** kfree that is safe from any context: the sheaf if free, else this slot's deferred list. */
  kfreeNolock(addr: number): void {
    if (this.nolockGate !== 0 || !this.pushFast(addr)) kfreeSlow(this, addr, -1, GFP_TRYLOCK);
  }

  /**
   * cache.alloc of the handle of generation `gen`. The fast path pops this slot's own sheaf, which
   * holds objects only while the cache is not released; the slow path counts itself in (cacheEnter).
   */
  cacheAlloc(id: number, gen: number, gfp: number): number {
    if (this.gate === 0 && gfp === 0) {
      const obj = this.popFast(this.cacheWOf(id) + this.pcsOff);
      if (obj !== 0) return obj;
    }
    return cacheAllocSlow(this, id, gen, gfp);
  }

  /** cache.free: like kfree, but the object must belong to cache `id`. */
  cacheFree(id: number, addr: number): void {
    const i32 = this.i32;
    if (this.gate === 0 && typeof addr === "number" && addr >>> 0 === addr && addr < this.size) {
      const d = this.descW + (addr >>> PAGE_SHIFT) * PD_WORDS;
      if (i32[d + PD_FLAGS] === PG_SLAB && i32[d + PD_CACHE] === id && this.pushFast(addr)) return;
    }
    kfreeSlow(this, addr, id, 0);
  }

  /**
   * The allocation fast path: pop the main sheaf of the pcs line at word `pcs` unless it is empty
   * (the caller has checked its gate: no sheaf of this slot is locally locked). Plain loads and
   * stores only; 0 if it cannot.
   */
  popFast(pcs: number): number {
    const i32 = this.i32;
    const sw = i32[pcs + PCS_MAIN]! >> 2;
    // sheafPop (sheaf.ts), written out (see there).
    const n = (i32[sw + S_SIZE]! & SHEAF_SIZE_MASK) - 1;
    if (n < 0) return 0;
    i32[sw + S_SIZE] = n;
    const obj = i32[sw + S_OBJS + n]!;
    i32[obj >> 2] = 0;
    return obj;
  }

  /**
   * The free fast path: `addr` must be an object start of a slab page, not carry the free tag, and
   * the sheaf it goes to must not be full (the caller has checked its gate: no sheaf of this slot
   * is locally locked). That is this slot's main sheaf if the slab is this slot's (PD_OWNER of its
   * pages), else its remote sheaf: an object another slot's refill took is not handed out again
   * here, next to the objects that slot uses (mimalloc frees to the owning page for the same
   * reason); the remote sheaf goes to the barn whole. Plain loads and stores only.
   */
  pushFast(addr: number): boolean {
    const i32 = this.i32;
    if (typeof addr !== "number" || addr >>> 0 !== addr || addr >= this.size || addr < this.offset) return false;
    const d = (this.descW + (addr >>> PAGE_SHIFT) * PD_WORDS) & WORD_MASK;
    if (i32[d + PD_FLAGS] !== PG_SLAB) return false;
    const kw = (this.cacheW + i32[d + PD_CACHE]! * this.cacheWords) & WORD_MASK;
    const off = addr - (i32[d + PD_HEAD]! << PAGE_SHIFT);
    // off / size with K_INV_SIZE, 1 / size made a little larger (invSize): the integer part is the
    // index of the object that holds off, the fraction under INV_EXACT only at its start.
    const q = off * this.f64[(kw + K_INV_SIZE) >> 1]!;
    const idx = q | 0;
    const tag = addr ^ O_FREE_TAG;
    if (q - idx >= INV_EXACT || idx >= i32[kw + K_OBJS]! || i32[addr >> 2] === tag) return false;
    const sw = i32[kw + this.pcsOff + (i32[d + PD_OWNER] === this.cpu ? PCS_MAIN : PCS_REMOTE)]! >> 2;
    const n = i32[sw + S_SIZE]! & SHEAF_SIZE_MASK;
    if (n >= i32[sw + S_CAP]!) return false;
    // sheafPush (sheaf.ts), written out (see sheafPop).
    i32[sw + S_OBJS + n] = addr;
    i32[sw + S_SIZE] = n + 1;
    i32[addr >> 2] = tag;
    return true;
  }

  /* ================================================================= object alloc: slow-path entry and slabs */

  /** Move up to `want` objects from the partial slabs into sheaf `sw`; returns how many. List lock held. */
  takeFromPartial(kw: number, sw: number, want: number): number {
    const i32 = this.i32;
    const debug = i32[kw + K_META] !== 0;
    const base = i32[sw + S_SIZE]!;
    let got = 0;
    while (got < want) {
      const pfn = i32[kw + K_PARTIAL]!;
      if (pfn === 0) break;
      const d = this.mem.pd(pfn);
      // The slab becomes this slot's (PD_OWNER): the objects this refill takes come back to this
      // slot's main sheaf when this slot frees them. Those another slot still has in use go to
      // that slot's remote sheaf when it frees them. A slab that kept its owner while another slot
      // refilled from it sent every free of the refilling slot to its remote sheaf, and its objects
      // went round through the barn: in Hoard's cache-scratch, two workers that had refilled from
      // the slab of the agent that handed them one object each then wrote neighbouring objects.
      if (i32[d + PD_INUSE] === 0) emptySlabTaken(this, kw);
      if (i32[d + PD_OWNER] !== this.cpu) this.slabOwn(kw, pfn);
      let obj = i32[d + PD_FREELIST]!;
      // Per object: into the sheaf (counted), then off the freelist. An agent killed between two
      // statements leaves the object at worst on both, at the top of its sheaf, which
      // slabRebuildLocked drops from the sheaf; never on neither.
      while (obj !== 0 && got < want) {
        const next = i32[(obj >> 2) + O_NEXT]!;
        i32[sw + S_OBJS + base + got] = obj;
        got++;
        i32[sw + S_SIZE] = base + got;
        i32[d + PD_FREELIST] = next;
        i32[d + PD_INUSE] = i32[d + PD_INUSE]! + 1;
        if (debug) debugUnlink(this, kw, obj);
        obj = next;
      }
      if (obj === 0) this.partialToFull(kw, pfn);
    }
    i32[kw + K_FREE_OBJS] = i32[kw + K_FREE_OBJS]! - got;
    return got;
  }

  /**
   * Slab `pfn` becomes this slot's (PD_OWNER of each page): its objects come back to this
   * slot's main sheaf when this slot frees them, to another slot's remote sheaf when that slot
   * does. A placement hint, never trusted for safety. List lock held.
   */
  slabOwn(kw: number, pfn: number): void {
    const i32 = this.i32;
    for (let p = 0; p < 1 << i32[kw + K_ORDER]!; p++) i32[this.mem.pd(pfn + p) + PD_OWNER] = this.cpu;
  }

  /** Take one object off the first partial slab, or 0; into word `hand` first if not 0. List lock held. */
  private takeOneFromPartial(kw: number, hand: number): number {
    const i32 = this.i32;
    const pfn = i32[kw + K_PARTIAL]!;
    if (pfn === 0) return 0;
    const d = this.mem.pd(pfn);
    const inuse = i32[d + PD_INUSE]!;
    if (inuse === 0) emptySlabTaken(this, kw);
    const obj = i32[d + PD_FREELIST]!;
    const next = i32[(obj >> 2) + O_NEXT]!;
    if (hand !== 0) i32[hand] = obj;
    // Off the freelist before its link is poisoned: the freelist is whole between any two statements.
    i32[d + PD_FREELIST] = next;
    i32[d + PD_INUSE] = inuse + 1;
    debugUnlink(this, kw, obj);
    if (next === 0) this.partialToFull(kw, pfn);
    i32[kw + K_FREE_OBJS] = i32[kw + K_FREE_OBJS]! - 1;
    return obj;
  }

  /**
   * One object straight from the slabs (caches without sheaves, and when no sheaf could be had).
   * `hand` (a new sheaf object, see sheaf_hand.ts): the word that takes the object, under the list
   * lock, before it leaves its freelist.
   */
  allocFromSlabs(id: number, gfp: number, mode: number, hand = 0): number {
    const kw = this.cacheWOf(id);
    const listLock = kw + K_LIST_LOCK;
    if (!this.locks.lockIn(mode, listLock, LOCK.list)) return 0;
    // The object stays in a local across the unlock: a hook at list:release may re-enter.
    const obj = this.takeOneFromPartial(kw, hand);
    this.locks.unlock(listLock, LOCK.list);
    return obj !== 0 ? obj : this.newSlab(id, gfp, mode, 0, hand);
  }

  /**
   * allocate_slab: take pages and build the freelist; then, under the list lock and before the
   * slab is on any list, take this caller's objects from it: sheaf `sw` is filled (returns how many
   * objects went in), or with `sw` 0 one object is returned. Only what is left goes on the partial
   * list, so another agent's refill cannot empty the new slab between its creation and its use.
   */
  newSlab(id: number, gfp: number, mode: number, sw: number, hand = 0): number {
    const kw = this.cacheWOf(id);
    const order = this.i32[kw + K_ORDER]!;
    const pageGfp = mode !== 0 ? GFP_TRYLOCK | GFP.NOWAIT : gfp & (GFP.NOWAIT | GFP.ATOMIC);
    const pfn = this.pages.rmqueue(order, pageGfp);
    if (pfn === 0) return 0;
    // Read the views only now: rmqueue rebuilt them if the pages came from growth.
    const i32 = this.i32;
    this.locks.vmInc(VM.pgalloc, 1 << order);
    const size = i32[kw + K_SIZE]!;
    const objs = i32[kw + K_OBJS]!;
    const base = pfn << PAGE_SHIFT;
    const meta = i32[kw + K_META]!;
    for (let i = 0; i < objs; i++) {
      const obj = base + i * size;
      if (meta !== 0) {
        this.u8.fill(POISON_FREE, obj + 8, obj + i32[kw + K_INUSE]!);
        this.u8.fill(RED_ACTIVE, obj + i32[kw + K_INUSE]!, obj + meta);
        i32[((obj + meta) >> 2) + M_STATE] = M_STATE_FREE;
        i32[((obj + meta) >> 2) + M_REQ] = 0;
      }
      i32[obj >> 2] = obj ^ O_FREE_TAG;
      i32[(obj >> 2) + O_NEXT] = i + 1 < objs ? obj + size : 0;
    }
    const listLock = kw + K_LIST_LOCK;
    if (!this.locks.lockIn(mode, listLock, LOCK.list)) {
      this.releaseSlabPages(pfn, order, mode);
      return 0;
    }
    // The pages become a slab of the cache only under the list lock, where it is also counted and
    // listed: until then they are the block rmqueue left in this slot's hand (PG_HEAD), so an agent
    // stopped at the lock point above and reclaimed leaks an allocated block, not an uncounted slab.
    // The head's freelist and count are right before the pages become a slab, so that a reclaim
    // (slabRebuildLocked) of an agent killed from here on finds a whole slab.
    i32[this.mem.pd(pfn) + PD_FREELIST] = base;
    i32[this.mem.pd(pfn) + PD_INUSE] = 0;
    for (let p = 0; p < 1 << order; p++) {
      const d = this.mem.pd(pfn + p);
      i32[d + PD_FLAGS] = PG_SLAB;
      i32[d + PD_HEAD] = pfn;
      i32[d + PD_CACHE] = id;
      i32[d + PD_OWNER] = this.cpu;
    }
    let obj = base;
    let taken = 0;
    let result: number;
    const d = this.mem.pd(pfn);
    if (sw === 0) {
      result = obj;
      obj = i32[(obj >> 2) + O_NEXT]!;
      if (hand !== 0) i32[hand] = result;
      i32[d + PD_FREELIST] = obj;
      i32[d + PD_INUSE] = 1;
      debugUnlink(this, kw, result);
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
        i32[d + PD_FREELIST] = next;
        i32[d + PD_INUSE] = taken;
        if (meta !== 0) debugUnlink(this, kw, obj);
        obj = next;
      }
      result = taken;
    }
    i32[kw + K_NR_SLABS] = i32[kw + K_NR_SLABS]! + 1;
    i32[kw + K_TOTAL_OBJS] = i32[kw + K_TOTAL_OBJS]! + objs;
    i32[kw + K_FREE_OBJS] = i32[kw + K_FREE_OBJS]! + objs - taken;
    if (obj !== 0) this.partialAdd(kw, pfn);
    else pdListAdd(this.pages, kw + K_FULL, kw + K_NR_FULL, pfn);
    this.locks.unlock(listLock, LOCK.list);
    this.locks.vmInc(VM.slabAlloc, 1);
    return result;
  }

  /**
   * Give a slab's pages back to the page allocator. No list lock needed: the slab is off every list,
   * and its descriptors are already those of a page block in this slot's hand (unaccountSlab, or
   * newSlab before it made the pages a slab); freeBlock keeps it so until a list takes it.
   */
  private releaseSlabPages(pfn: number, order: number, mode: number): void {
    this.locks.vmInc(VM.pgfree, 1 << order);
    this.pages.freeBlock(pfn, order, mode);
  }

  /* ================================================================= object free: slow paths */

  /**
   * Free one object straight to its slab. `hand` (a sheaf object being freed, see sheaf_hand.ts):
   * the word that holds it, cleared under the list lock once the object is on its freelist.
   */
  freeToSlabs(id: number, addr: number, mode: number, hand = 0): boolean {
    const kw = this.cacheWOf(id);
    if (!this.locks.lockIn(mode, kw + K_LIST_LOCK, LOCK.list)) return false;
    const empty = this.putObjectLocked(kw, addr);
    if (hand !== 0 && this.i32[hand] === addr) this.i32[hand] = 0;
    const decayed = slabDecayLocked(this, kw, null);
    this.locks.unlock(kw + K_LIST_LOCK, LOCK.list);
    if (empty !== 0) this.releaseSlab(id, empty, mode);
    if (decayed !== null) for (const pfn of decayed) this.releaseSlab(id, pfn, mode);
    return true;
  }

  /**
   * Put an object on its slab's freelist. Returns the slab's head pfn when the slab became empty
   * beyond K_MAX_EMPTY and left the cache (the caller releases it after the unlock), else 0.
   * List lock held.
   */
  putObjectLocked(kw: number, obj: number): number {
    const i32 = this.i32;
    const head = i32[this.mem.pd(obj >>> PAGE_SHIFT) + PD_HEAD]!;
    const d = this.mem.pd(head);
    const first = i32[d + PD_FREELIST]!;
    i32[obj >> 2] = obj ^ O_FREE_TAG;
    i32[(obj >> 2) + O_NEXT] = first;
    i32[d + PD_FREELIST] = obj;
    const inuse = i32[d + PD_INUSE]! - 1;
    i32[d + PD_INUSE] = inuse;
    i32[kw + K_FREE_OBJS] = i32[kw + K_FREE_OBJS]! + 1;
    if (first === 0) {
      // A full slab has a free object again.
      pdListDel(this.pages, kw + K_FULL, kw + K_NR_FULL, head);
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
   * Slab `pfn` left the cache's lists and counts (it is off the partial list), to be released after
   * the unlock. Its pages become a block this slot holds, as allocPages leaves one: an agent stopped
   * before releaseSlab and reclaimed leaves an allocated block that validate() accepts, never a slab
   * that its cache does not count. List lock held.
   */
  unaccountSlab(kw: number, pfn: number): void {
    const i32 = this.i32;
    const order = i32[kw + K_ORDER]!;
    for (let p = 1; p < 1 << order; p++) {
      const d = this.mem.pd(pfn + p);
      i32[d + PD_FLAGS] = 0;
      i32[d + PD_HEAD] = 0;
      i32[d + PD_CACHE] = 0;
    }
    i32[this.mem.pd(pfn) + PD_OWNER] = this.cpu;
    i32[this.mem.pd(pfn) + PD_FLAGS] = PG_HEAD | PG_INHAND | (order << PG_ORDER_SHIFT);
    const objs = i32[kw + K_OBJS]!;
    i32[kw + K_NR_SLABS] = i32[kw + K_NR_SLABS]! - 1;
    i32[kw + K_TOTAL_OBJS] = i32[kw + K_TOTAL_OBJS]! - objs;
    i32[kw + K_FREE_OBJS] = i32[kw + K_FREE_OBJS]! - objs;
  }

  releaseSlab(id: number, pfn: number, mode: number): void {
    this.releaseSlabPages(pfn, this.i32[this.cacheWOf(id) + K_ORDER]!, mode);
    this.locks.vmInc(VM.slabFree, 1);
  }

  private partialAdd(kw: number, pfn: number): void {
    pdListAdd(this.pages, kw + K_PARTIAL, kw + K_NR_PARTIAL, pfn);
  }

  partialDel(kw: number, pfn: number): void {
    pdListDel(this.pages, kw + K_PARTIAL, kw + K_NR_PARTIAL, pfn);
  }

  /** The slab's last free object was taken: from the partial list to the full list. */
  private partialToFull(kw: number, pfn: number): void {
    pdListDel(this.pages, kw + K_PARTIAL, kw + K_NR_PARTIAL, pfn);
    pdListAdd(this.pages, kw + K_FULL, kw + K_NR_FULL, pfn);
  }

  /* ================================================================= ksize and its helper */

  /** readString's error path: is `addr`, an object ksize accepted, on a free list of its cache? @internal */
  freedObject(addr: number): boolean {
    const id = objectCache(this, addr, -1);
    return id >= 0 && this.i32[addr >> 2] === (addr ^ O_FREE_TAG) && isFreeObject(this, id, addr);
  }

  /** Usable size of an allocation. */
  ksize(addr: number): number {
    this.locks.assertLive();
    const id = objectCache(this, addr, -1);
    if (id < 0) return PAGE_SIZE << ((this.u32[this.mem.pd(addr >>> PAGE_SHIFT) + PD_FLAGS]! & PG_ORDER_MASK) >>> PG_ORDER_SHIFT);
    const kw = this.cacheWOf(id);
    // Debug: the requested size, once the object's metadata has been checked.
    if (this.i32[kw + K_META] !== 0) return debugFree(this, id, addr, false);
    return this.i32[kw + K_SIZE]!;
  }
}

