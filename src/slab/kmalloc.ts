/*
 * The object slow paths: of every cache (slabAllocSlow, slabFreeSlow, and their entry checks and
 * housekeeping), of kmalloc (a size class, or pages for a large size), the nolock paths (past the
 * fast paths of kmallocNolock and kfreeNolock; the slot's deferred object list), and kzalloc and
 * krealloc. See slab.ts for the whole contract of the slab layer.
 *
 * WORDS: this slot's deferred object list, C_DEFER_HEAD and C_DEFER_NR, plain stores by the slot
 *   alone (a kfreeNolock that found the sheaves or the list lock busy pushes, deferObject; the
 *   next normal slab call of the slot, detach or reclaimSlot for a dead slot drains it), and the
 *   objects on it (words 0 and 1: the free tag and the link). The pcs line's local lock PCS_LOCKED
 *   (plain, this slot). The slot's debug object hand C_DEBUG_HAND (debug caches, see
 *   debug_hand.ts): held before an object leaves its sheaf (holdSheafTop) or freelist (the hand
 *   word given to allocFromSlabs), dropped once a freed object is on a sheaf, the deferred list
 *   (deferObject) or a freelist (the hand word given to freeToSlabs). C_FREEING (plain, this slot;
 *   other slots' double-free searches read it): the object kfreeSlow or the drain is moving, tagged,
 *   from its checks until a sheaf or list has it, or the one an allocation popped off a sheaf until
 *   prepObject clears its tag (nested calls restore the outer one; reclaimSlot settles a dead
 *   slot's, returnFreeingObject). Everything else through the slab, sheaf and page calls.
 * LOCKS: the normal paths take the sheaf local lock and then the locks of slab.ts in its order
 *   (barn -> list -> pcp -> zone); their entry (slabSlowEntry) asserts that no barn lock or later is
 *   held and that this cache's sheaves are not locally locked (EDEADLK), and its housekeeping may
 *   take ctable (dying caches) and rcu (rcuSlowWork, only with no lock held). kmallocLarge and
 *   krealloc's large blocks go to the page allocator (pcp -> zone). The nolock paths take the
 *   sheaf local lock only when it is free (a hook never waits for its own agent) and only trylock
 *   barn, list, pcp and zone; they never allocate a sheaf and never loop on a lock. A caller of a
 *   nolock path may hold any lock.
 * NO LOCK: slabAllocNolock's pop of a non-empty main sheaf, slabFreeNolock's push onto a main
 *   sheaf with room (the slot's own, not locally locked); deferObject.
 * STALE: nothing: every word read here is this slot's own, or read under the lock that guards it;
 *   a dead slot's deferred list is drained by reclaimSlot after the slot stopped.
 * TRACE: kfree / kmem_cache_free fire after the object is free (a handler's second free is a
 *   double free); a free of the block an allocation event is about (trace.returning) is EINVAL.
 */
import { ErrorCode, HeapError, hex } from "../core/errors.js";
import { GFP, GFP_TRYLOCK } from "../core/gfp.js";
import * as layout from "../core/layout.js";
import { checkGfp } from "../page/page_alloc.js";
import { TP, TRACE_EVENTS, type TraceRecord } from "../core/trace.js";
import { remoteSheafWithRoom, replaceEmptyMain, replaceFullMain } from "./sheaf.js";
import { checkBulk, debugFree, debugUnlink, objectCache, prepObject } from "./debug.js";
import type { SlabAllocator } from "./slab.js";
import { FIRST_NAMED_ID, KMALLOC_FIRST_ID, KMALLOC_MAX_CACHE_SIZE, KMALLOC_SIZES, checkSize } from "./slab.js";
import { cacheEnter, cacheExit, cacheName, flushDyingCaches } from "./cache.js";
import { SIZE_INDEX } from "./sizes.js";
import { debugFreeState, isFreeObject } from "./debug.js";
import { sheafPop, sheafPush } from "./sheaf.js";
import { debugFreeFailed, debugHandFor, holdSheafTop, unholdDebugObject } from "./debug_hand.js";

/* Module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const GFP_KERNEL = GFP.KERNEL;
const { CT_NR_DYING, C_DEBUG_HAND, C_DEFER_HEAD, C_DEFER_NR, C_FREEING, C_FREEING_TAKING, C_RCU_WAIT, DEBUG_REDZONE, K_META, K_OBJ_SIZE, K_SHEAF_CAP, K_SIZE, LOCK, MAX_ORDER, M_REQ, O_FREE_TAG, O_NEXT, PAGE_SHIFT, PAGE_SIZE, PCS_LOCKED, PCS_MAIN, PD_CACHE, PD_FLAGS, PD_OWNER, PG_HEAD, PG_INHAND, PG_LARGE, PG_ORDER_MASK, PG_ORDER_SHIFT, PG_SLAB, RED_ACTIVE, S_CAP, S_SIZE, VM } = layout;

export function kmallocSlow(slab: SlabAllocator, size: number, flags: number | undefined): number {
  const gfp = flags === undefined ? GFP_KERNEL : flags;
  slab.locks.assertLive();
  checkSize(size);
  checkGfp(gfp);
  if (size > KMALLOC_MAX_CACHE_SIZE) return kmallocLarge(slab, size, gfp);
  const id = KMALLOC_FIRST_ID + SIZE_INDEX[(size + 7) >> 3]!;
  const obj = slabAllocSlow(slab, id, gfp, size);
  if (obj === 0) return slab.pages.allocFailed(0, gfp);
  if ((slab.locks.trace.mask & (1 << TP.kmalloc)) !== 0) emitObject(slab, TP.kmalloc, obj, size, id, 0, gfp);
  return obj;
}

export function kmallocLarge(slab: SlabAllocator, size: number, gfp: number): number {
  const addr = kmallocLargeHeld(slab, size, gfp);
  if (addr !== 0) largeHandOver(slab, addr);
  return addr;
}

/**
 * kmallocLarge up to its last statement: the block stays in this slot's hand (PG_HEAD | PG_INHAND,
 * PD_OWNER this slot) through its zeroing and its mm_page_alloc and kmalloc events, so a kill
 * anywhere there leaves it to reclaimSlot. largeHandOver makes it the caller's.
 */
function kmallocLargeHeld(slab: SlabAllocator, size: number, gfp: number): number {
  const order = largeOrder(size);
  if (order > MAX_ORDER) return slab.pages.allocFailed(order, gfp);
  if ((gfp & GFP.FAST_TRY) === 0) slab.locks.assertCanLock(LOCK.zone);
  const pfn = slab.pages.rmqueue(order, gfp);
  if (pfn === 0) return slab.pages.allocFailed(order, gfp);
  slab.locks.vmInc(VM.kmallocLarge, 1);
  const addr = slab.pages.prepNewBlock(pfn, order, PG_HEAD | PG_INHAND, gfp);
  if ((slab.locks.trace.mask & (1 << TP.kmalloc)) !== 0) emitObject(slab, TP.kmalloc, addr, size, -1, PAGE_SIZE << order, gfp);
  return addr;
}

function largeOrder(size: number): number {
  return Math.max(0, Math.ceil(Math.log2(size / PAGE_SIZE)));
}

/** The last statement of a large allocation: its kind, written last, makes the block the caller's. */
function largeHandOver(slab: SlabAllocator, addr: number): void {
  const d = slab.mem.pd(addr >>> PAGE_SHIFT);
  slab.u32[d + PD_FLAGS] = PG_LARGE | (slab.u32[d + PD_FLAGS]! & PG_ORDER_MASK);
}

export function kmallocNolockSlow(slab: SlabAllocator, size: number, flags: number | undefined): number {
  const gfp = flags === undefined ? GFP_KERNEL : flags;
  slab.locks.assertLive();
  checkSize(size);
  checkGfp(gfp);
  if (size > KMALLOC_MAX_CACHE_SIZE || slab.locks.closing) return slab.locks.closing ? nolockFailed(slab) : 0;
  let idx = SIZE_INDEX[(size + 7) >> 3]!;
  let id = KMALLOC_FIRST_ID + idx;
  if (slab.i32[slab.pcsW(id) + PCS_LOCKED] !== 0) {
    // This slot is inside the slow path of that class (we re-entered from a hook): one retry in
    // the next larger class, which is almost certainly not the one locked.
    if (idx + 1 >= KMALLOC_SIZES.length) return nolockFailed(slab);
    idx++;
    id++;
    slab.locks.vmInc(VM.nolockNextClass, 1);
    if (slab.i32[slab.pcsW(id) + PCS_LOCKED] !== 0) return nolockFailed(slab);
  }
  const outer = slab.i32[slab.pcpuW + C_FREEING]!;
  const obj = slabAllocNolock(slab, id, gfp);
  if (obj === 0) return nolockFailed(slab);
  if ((slab.locks.trace.mask & (1 << TP.kmalloc)) !== 0) emitObject(slab, TP.kmalloc, obj, size, id, 0, gfp);
  return tookObject(slab, outer, prepObject(slab, id, obj, gfp, size, GFP_TRYLOCK));
}

export function nolockFailed(slab: SlabAllocator): number {
  slab.locks.vmInc(VM.nolockFail, 1);
  return 0;
}

/** Allocate from cache `id` with trylocks only; its sheaves are not locally locked. */
export function slabAllocNolock(slab: SlabAllocator, id: number, gfp: number): number {
  const i32 = slab.i32;
  const pcs = slab.pcsW(id);
  const kw = slab.cacheWOf(id);
  let sw = i32[pcs + PCS_MAIN]! >> 2;
  if (i32[sw + S_SIZE]! > 0) {
    holdSheafTop(slab, kw, sw);
    return sheafPop(i32, sw);
  }
  let obj = 0;
  slab.lockSheaf(pcs);
  try {
    sw = replaceEmptyMain(slab, id, pcs, gfp, GFP_TRYLOCK);
    if (sw !== 0) {
      holdSheafTop(slab, kw, sw);
      obj = sheafPop(slab.i32, sw); // the new main may lie in pages added after `i32` was read
      takingObject(slab, kw, obj);
    }
  } finally {
    slab.unlockSheaf(pcs);
  }
  if (obj === 0) obj = slab.allocFromSlabs(id, gfp, GFP_TRYLOCK, debugHandFor(slab, kw));
  return obj;
}

/** Free into cache `id` with trylocks only, deferring when the sheaves are busy. */
export function slabFreeNolock(slab: SlabAllocator, id: number, addr: number): void {
  const i32 = slab.i32;
  const kw = slab.cacheWOf(id);
  const pcs = slab.pcsW(id);
  if (i32[kw + K_SHEAF_CAP] === 0 || i32[pcs + PCS_LOCKED] !== 0 || slab.locks.closing) {
    deferObject(slab, addr);
    return;
  }
  let sw = i32[pcs + PCS_MAIN]! >> 2;
  if (i32[sw + S_SIZE]! >= i32[sw + S_CAP]!) {
    slab.lockSheaf(pcs);
    try {
      sw = replaceFullMain(slab, id, pcs, GFP_TRYLOCK);
    } finally {
      slab.unlockSheaf(pcs);
    }
    if (sw === 0 || slab.i32[sw + S_SIZE]! >= slab.i32[sw + S_CAP]!) {
      deferObject(slab, addr);
      return;
    }
  }
  sheafPush(slab.i32, sw, addr); // replaceFullMain may have rebuilt the views
  unholdDebugObject(slab, addr);
}

/** Push an object on this slot's deferred list (defer_free). */
export function deferObject(slab: SlabAllocator, addr: number): void {
  const i32 = slab.i32;
  i32[addr >> 2] = addr ^ O_FREE_TAG;
  i32[(addr >> 2) + O_NEXT] = i32[slab.pcpuW + C_DEFER_HEAD]!;
  i32[slab.pcpuW + C_DEFER_HEAD] = addr;
  i32[slab.pcpuW + C_DEFER_NR] = i32[slab.pcpuW + C_DEFER_NR]! + 1;
  slab.syncGates(); // the normal fast paths stay shut until a drain has emptied the list
  unholdDebugObject(slab, addr);
  slab.locks.vmInc(VM.objectsDeferred, 1);
}

/**
 * Free every object on slot `cpu`'s deferred list: this slot's through the normal paths, a dead
 * slot's (reclaimSlot) and, with `direct`, this slot's while it detaches straight to their slabs.
 * False when a noBlock agent gave up on a list lock: what it could not free is deferred again.
 */
export function drainDeferredObjects(slab: SlabAllocator, cpu: number = slab.cpu, direct = false): boolean {
  const p = slab.mem.pcpOf(cpu);
  const own = cpu === slab.cpu && !direct;
  // One pass over what is on the list now, not nested (the frees below enter slow paths, whose
  // entry drains): objects a hook defers meanwhile wait for the next normal call, so a hook that
  // frees at every lock point cannot keep it going for ever. detach loops itself until its
  // slot holds nothing.
  if (slab.i32[p + C_DEFER_HEAD] === 0 || slab.drainingDeferred) return true;
  slab.drainingDeferred = true;
  try {
    return drainDeferredOnce(slab, p, cpu, own);
  } finally {
    slab.drainingDeferred = false;
  }
}

/**
 * drainDeferredObjects' pass over slot block `p`'s list (cpu `cpu`; `own`: through the normal
 * paths). A noBlock agent that gives up on a list lock defers that object and the rest again
 * (this slot's list) and returns false.
 */
export function drainDeferredOnce(slab: SlabAllocator, p: number, cpu: number, own: boolean): boolean {
  const nr = slab.i32[p + C_DEFER_NR]!;
  if (droppedBrokenChain(slab, p + C_DEFER_HEAD, p + C_DEFER_NR, `cpu ${cpu}'s deferred object list`)) {
    slab.syncGates();
    return true;
  }
  let gaveUp = false;
  // One object at a time off the list, in place (at most `nr`: what a hook defers meanwhile may be
  // among them, the rest waits for the next drain): an agent killed here leaves at most the
  // object being freed in its hands, and the rest on its list for reclaimSlot.
  for (let k = 0; k < nr && !gaveUp; k++) {
    // Read the views each time: a free below may have rebuilt them after growth.
    const i32 = slab.i32;
    const obj = i32[p + C_DEFER_HEAD]!;
    if (obj === 0) break;
    // Still free (its tag stays), found by other slots' double-free searches and destroy's count
    // until a sheaf or freelist has it: named before it leaves the list (inside a kfreeSlow too).
    const outer = i32[slab.pcpuW + C_FREEING]!;
    i32[slab.pcpuW + C_FREEING] = obj;
    i32[p + C_DEFER_HEAD] = i32[(obj >> 2) + O_NEXT]!;
    i32[p + C_DEFER_NR] = i32[p + C_DEFER_NR]! - 1;
    slab.syncGates();
    const id = i32[slab.mem.pd(obj >>> PAGE_SHIFT) + PD_CACHE]!;
    debugUnlink(slab, slab.cacheWOf(id), obj);
    // A dead slot's objects (reclaimSlot) go straight to their slabs.
    const named = id >= FIRST_NAMED_ID;
    // Deferred work: an error is reported (onError), and the rest of the list is still freed.
    slab.locks.deferring++;
    try {
      if (named) cacheEnter(slab, id, 0, false, true);
      try {
        if (!own || i32[slab.cacheWOf(id) + K_SHEAF_CAP] === 0 || i32[slab.pcsW(id) + PCS_LOCKED] !== 0) {
          if (!slab.freeToSlabs(id, obj, 0)) {
            deferObject(slab, obj);
            gaveUp = true;
          }
        } else {
          slabFreeSlow(slab, id, obj);
        }
      } finally {
        if (named) cacheExit(slab, id);
      }
    } catch (e) {
      // A noBlock agent that gave up on a lock, or a lock another handle of this agent holds
      // (EDEADLK, raised before anything changed): the object waits for a later drain.
      if (e instanceof HeapError && (e.code === ErrorCode.EAGAIN || e.code === ErrorCode.EDEADLK)) {
        deferObject(slab, obj);
        gaveUp = true;
      } else {
        slab.locks.reportDeferred(e, obj);
      }
    } finally {
      slab.locks.deferring--;
      slab.i32[slab.pcpuW + C_FREEING] = outer;
    }
    slab.locks.vmInc(VM.objectsUndeferred, 1);
  }
  return !gaveUp;
}

/** Why the deferred object list at `obj`, which counts `nr` objects, cannot be walked ("" if it can). */
/**
 * A chain of objects linked through O_NEXT (its head at word `headW`, its length at `nrW`: a
 * deferred list, a bulk hand) that deferred work found broken: report it (onError), drop it (its
 * objects stay allocated, lost) and return true, never walking a cycle. False when it is sound.
 */
export function droppedBrokenChain(slab: SlabAllocator, headW: number, nrW: number, what: string, slack = 0): boolean {
  const first = slab.i32[headW]!;
  const broken = brokenDeferredList(slab, first, slab.i32[nrW]!, slack);
  if (broken === "") return false;
  slab.i32[headW] = 0;
  slab.i32[nrW] = 0;
  slab.locks.reportDeferred(new HeapError(ErrorCode.ECORRUPT, `${what} is broken (${broken}): its objects are dropped`), first);
  return true;
}

export function brokenDeferredList(slab: SlabAllocator, obj: number, nr: number, slack = 0): string {
  const i32 = slab.i32;
  let n = 0;
  for (let o = obj; o !== 0; o = i32[(o >> 2) + O_NEXT]!) {
    if (++n > nr + slack) return `longer than its count ${nr}: a cycle`;
    const pfn = o >>> PAGE_SHIFT;
    if ((o & 7) !== 0 || pfn < slab.zoneStart || pfn >= slab.nrPages) return `${hex(o)} is not an object address`;
    const d = slab.mem.pd(pfn);
    if (i32[d + PD_FLAGS] !== PG_SLAB || i32[d + PD_CACHE]! >>> 0 >= slab.maxCaches) return `${hex(o)} is not in a slab`;
  }
  return Math.abs(n - nr) <= slack ? "" : `holds ${n} objects, counts ${nr}`;
}

/** kmalloc with GFP.ZERO. */
export function kzalloc(slab: SlabAllocator, size: number, gfp: number = GFP_KERNEL): number {
  if (slab.locks.detached) slab.locks.assertLive();
  if (typeof gfp !== "number" || gfp >>> 0 !== gfp) checkGfp(gfp);
  return slab.kmalloc(size, gfp | GFP.ZERO);
}

/**
 * Resize an allocation: in place while it still fits its size class (with GFP.ZERO the slack
 * past `size` is zeroed, so later growth in place reads zeros), else allocate, copy and free.
 * addr 0 allocates; size 0 frees and returns 0. Returns 0, keeping the old block, on failure.
 */
export function krealloc(slab: SlabAllocator, addr: number, size: number, gfp: number = GFP_KERNEL): number {
  slab.locks.assertLive();
  checkGfp(gfp);
  if (size !== 0) checkSize(size);
  if (addr === 0) return size === 0 ? 0 : slab.kmalloc(size, gfp);
  if (size === 0) {
    slab.kfree(addr);
    return 0;
  }
  // Every check kfree would make, before anything changes: a krealloc that throws leaves the
  // heap exactly as it was (it must not keep a block it allocated, nor half-move one).
  checkBulk(slab, [addr], -1, false);
  const id = objectCache(slab, addr, -1);
  const kw = id >= 0 ? slab.cacheWOf(id) : 0;
  if (id >= 0 && slab.i32[kw + K_META] !== 0 && size <= slab.i32[kw + K_OBJ_SIZE]!) {
    // Debug: move the requested size and its redzone; bytes that become usable are zeroed under GFP.ZERO.
    const old = debugFree(slab, id, addr, false);
    const mw = (addr + slab.i32[kw + K_META]!) >> 2;
    if (size > old) {
      slab.u8.fill((gfp & GFP.ZERO) !== 0 ? 0 : RED_ACTIVE ^ 0xff, addr + old, addr + size);
    } else if ((slab.locks.debugFlags & DEBUG_REDZONE) !== 0) {
      slab.u8.fill(RED_ACTIVE, addr + size, addr + old);
    }
    slab.i32[mw + M_REQ] = size;
    return addr;
  }
  const ks = slab.ksize(addr);
  if (size <= ks) {
    if ((gfp & GFP.ZERO) !== 0) slab.u8.fill(0, addr + size, addr + ks);
    return addr;
  }
  // A large new block stays in this slot's hand until the old one is freed (a kill during the
  // copy or the free leaves it to reclaimSlot, not allocated to nobody); a small one is one object.
  const large = size > KMALLOC_MAX_CACHE_SIZE;
  const n = large ? kmallocLargeHeld(slab, size, gfp) : slab.kmalloc(size, gfp);
  if (n === 0) return 0;
  slab.u8.copyWithin(n, addr, addr + Math.min(ks, size));
  try {
    slab.kfree(addr);
  } catch (e) {
    // Checked above; only a hook that freed `addr` meanwhile gets here. Keep nothing.
    if (large) slab.pages.freeBlock(n >>> PAGE_SHIFT, largeOrder(size), 0);
    else slab.kfree(n);
    throw e;
  }
  if (large) largeHandOver(slab, n);
  return n;
}

/**
 * Every kfree and cache free that left the fast path. `want` is the cache id a cache's free
 * requires (-1 for kfree); `mode` is GFP_TRYLOCK for kfreeNolock.
 */
export function kfreeSlow(slab: SlabAllocator, addr: number, want: number, mode: number): void {
  slab.locks.assertLive();
  if (addr === 0) return;
  if (addr === slab.locks.trace.returning) freeOfReturning(slab, addr);
  const id = objectCache(slab, addr, want);
  if (id < 0) {
    // A large kmalloc block.
    const pfn = addr >>> PAGE_SHIFT;
    const order = (slab.u32[slab.mem.pd(pfn) + PD_FLAGS]! & PG_ORDER_MASK) >>> PG_ORDER_SHIFT;
    if (mode === 0) slab.locks.assertCanLock(LOCK.zone);
    // In hand from here (a second free of it is refused; a kill leaves it to reclaimSlot).
    slab.u32[slab.mem.pd(pfn) + PD_OWNER] = slab.cpu;
    slab.u32[slab.mem.pd(pfn) + PD_FLAGS] = PG_HEAD | PG_INHAND | (order << PG_ORDER_SHIFT);
    slab.locks.vmInc(VM.pgfree, 1 << order);
    if ((slab.locks.trace.mask & (1 << TP.kfree)) !== 0) emitObject(slab, TP.kfree, addr, PAGE_SIZE << order, -1, PAGE_SIZE << order, -1);
    slab.pages.freeBlock(pfn, order, mode);
    return;
  }
  const debug = slab.i32[slab.cacheWOf(id) + K_META] !== 0;
  if (debug) {
    // The checks that refuse a normal free (EDEADLK) come before the object is poisoned and
    // marked free, after the double-free checks: a refused free leaves it the caller's.
    if (mode === 0) {
      debugFreeState(slab, id, addr);
      slabCheckLocks(slab, id);
    }
    debugFree(slab, id, addr, true);
    try {
      kfreeTail(slab, id, addr, want, mode);
    } catch (e) {
      // Before any list had it (the debug hand still holds it): the object is the caller's again.
      debugFreeFailed(slab, id, addr);
      throw e;
    }
    return;
  }
  if (slab.i32[addr >> 2] === (addr ^ O_FREE_TAG) && isFreeObject(slab, id, addr)) {
    throw new HeapError(ErrorCode.EDOUBLEFREE, `${hex(addr)} of ${cacheName(slab, id)} is already free`);
  }
  // Free from here: tagged, and named in this slot's C_FREEING until a sheaf, freelist or deferred
  // list has it, so that a second free meanwhile (another slot's, or a hook's at a lock point
  // below) finds it. A refusal below comes before any list has it: the object is the caller's.
  const word0 = slab.i32[addr >> 2]!;
  // A live object whose word 0 happens to be its free tag (the caller's data): the search found it
  // nowhere free, so it takes the fast path as any other object would, with no lock point.
  if (word0 === (addr ^ O_FREE_TAG) && (mode === 0 ? slab.gate : slab.nolockGate) === 0) {
    slab.i32[addr >> 2] = 0;
    if (slab.pushFast(addr)) return;
    slab.i32[addr >> 2] = word0;
  }
  const outer = slab.i32[slab.pcpuW + C_FREEING]!;
  slab.i32[addr >> 2] = addr ^ O_FREE_TAG;
  slab.i32[slab.pcpuW + C_FREEING] = addr;
  try {
    kfreeTail(slab, id, addr, want, mode);
  } catch (e) {
    slab.i32[addr >> 2] = word0;
    throw e;
  } finally {
    slab.i32[slab.pcpuW + C_FREEING] = outer;
  }
}

/**
 * reclaimSlot: the object dead slot `cpu`'s free was moving (C_FREEING). Found free somewhere (a
 * sheaf, a list), its free was done; on none, it had not happened: the object is its caller's
 * again (the free tag off), as with a kill just before the free.
 */
export function returnFreeingObject(slab: SlabAllocator, cpu: number): void {
  const w = slab.mem.pcpOf(cpu) + C_FREEING;
  const x = slab.i32[w]! & ~C_FREEING_TAKING;
  if (x === 0) return;
  slab.i32[w] = 0;
  const d = slab.mem.pd(x >>> PAGE_SHIFT);
  if (slab.i32[d + PD_FLAGS] !== PG_SLAB || slab.i32[x >> 2] !== (x ^ O_FREE_TAG)) return;
  if (!isFreeObject(slab, slab.i32[d + PD_CACHE]!, x)) slab.i32[x >> 2] = 0;
}

/** kfreeSlow of an object of cache `id`, its checks passed: free it, then trace it (emitFree). */
function kfreeTail(slab: SlabAllocator, id: number, addr: number, want: number, mode: number): void {
  if (id < FIRST_NAMED_ID) {
    if (mode !== 0) slabFreeNolock(slab, id, addr);
    else slabFreeSlow(slab, id, addr);
    emitFree(slab, id, addr, want);
    return;
  }
  // A named cache may be destroyed meanwhile: count this agent in, so it is not released.
  cacheEnter(slab, id, 0, false, true);
  try {
    if (mode !== 0) slabFreeNolock(slab, id, addr);
    else slabFreeSlow(slab, id, addr);
    emitFree(slab, id, addr, want);
  } finally {
    cacheExit(slab, id);
  }
}

/**
 * The kfree / kmem_cache_free event, once the object is free (in a sheaf, on its slab's freelist or
 * the deferred list, with its free tag): a handler that frees it again meets the double-free check,
 * never a block still allocated that the interrupted free then frees a second time.
 */
function emitFree(slab: SlabAllocator, id: number, addr: number, want: number): void {
  if ((slab.locks.trace.mask & (1 << (want < 0 ? TP.kfree : TP.kmem_cache_free))) !== 0) {
    emitObject(slab, want < 0 ? TP.kfree : TP.kmem_cache_free, addr, slab.i32[slab.cacheWOf(id) + K_OBJ_SIZE]!, id, 0, -1);
  }
}

/** A handler of an allocation event freeing the block that call is about to return. */
export function freeOfReturning(slab: SlabAllocator, addr: number): never {
  throw new HeapError(
    ErrorCode.EINVAL,
    `${hex(addr)} is the block the allocation whose trace event is running is about to return: it is not allocated to anyone yet, and cannot be freed from that event's handler`,
  );
}

/** Allocate from cache `id` in normal mode once the fast path could not; `req` bytes were asked for. */
export function slabAllocSlow(slab: SlabAllocator, id: number, gfp: number, req: number): number {
  slabSlowEntry(slab, id);
  const kw = slab.cacheWOf(id);
  const outer = slab.i32[slab.pcpuW + C_FREEING]!;
  let obj: number;
  if (slab.i32[kw + K_SHEAF_CAP] === 0) {
    obj = slab.allocFromSlabs(id, gfp, 0, debugHandFor(slab, kw));
  } else {
    const pcs = slab.pcsW(id);
    slab.lockSheaf(pcs);
    try {
      let sw = slab.i32[pcs + PCS_MAIN]! >> 2;
      if (slab.i32[sw + S_SIZE] === 0) sw = replaceEmptyMain(slab, id, pcs, gfp, 0);
      obj = 0;
      if (sw !== 0) {
        holdSheafTop(slab, kw, sw);
        obj = sheafPop(slab.i32, sw);
        takingObject(slab, kw, obj);
      }
    } finally {
      slab.unlockSheaf(pcs);
    }
    if (obj === 0) obj = slab.allocFromSlabs(id, gfp, 0, debugHandFor(slab, kw));
  }
  if (obj === 0) return 0;
  return tookObject(slab, outer, prepObject(slab, id, obj, gfp, req, 0));
}

/** `obj`, popped off a sheaf, stays free to a second free (a hook's at the lock's release point) until prepObject clears its tag: C_FREEING names it (non-debug caches; debug ones have their hand and M_STATE). */
function takingObject(slab: SlabAllocator, kw: number, obj: number): void {
  if (obj !== 0 && slab.i32[kw + K_META] === 0) slab.i32[slab.pcpuW + C_FREEING] = obj | C_FREEING_TAKING;
}

/** prepObject is done: this slot's C_FREEING is the outer value again; returns `obj`. */
function tookObject(slab: SlabAllocator, outer: number, obj: number): number {
  slab.i32[slab.pcpuW + C_FREEING] = outer;
  return obj;
}

/** EDEADLK, nothing changed, when a normal slab call on cache `id` would wait for this agent: its sheaves locally locked, or a barn, list, pcp or zone lock held. */
export function slabCheckLocks(slab: SlabAllocator, id: number): void {
  if (slab.i32[slab.pcsW(id) + PCS_LOCKED] !== 0) {
    throw new HeapError(
      ErrorCode.EDEADLK,
      `the sheaves of ${cacheName(slab, id)} on cpu ${slab.cpu} are locked by this agent: use kmallocNolock/kfreeNolock from hooks`,
    );
  }
  slab.locks.assertCanLock(LOCK.barn);
}

/**
 * Entry checks of every normal slab slow path: this cache's sheaves are not locked by this slot
 * (we are not inside a hook of its own slow path), no barn/list/pcp/zone lock is held; then the
 * slot's housekeeping: deferred frees and dying caches.
 */
export function slabSlowEntry(slab: SlabAllocator, id: number): void {
  slabCheckLocks(slab, id);
  slab.syncGates();
  if (slab.i32[slab.pcpuW + C_DEFER_HEAD] !== 0) drainDeferredObjects(slab);
  // Housekeeping that needs the cache table lock waits for a call that may take it (not one from
  // a hook of a ctable holder, this handle or another of this agent: it would throw half-way).
  if (slab.i32[slab.hw + CT_NR_DYING] !== 0 && !slab.locks.holdsFrom(LOCK.ctable)) flushDyingCaches(slab);
  if (slab.i32[slab.pcpuW + C_RCU_WAIT] !== 0) slab.rcuSlowWork();
}

/** Free into cache `id` in normal mode once the fast path could not. */
export function slabFreeSlow(slab: SlabAllocator, id: number, addr: number): void {
  slabSlowEntry(slab, id);
  const i32 = slab.i32;
  // The debug hand (debug_hand.ts) that holds `addr`, if any, is dropped once a list has it.
  const hand = slab.pcpuW + C_DEBUG_HAND;
  if (i32[slab.cacheWOf(id) + K_SHEAF_CAP] === 0) {
    if (!slab.freeToSlabs(id, addr, 0, hand)) deferObject(slab, addr); // noBlock agent past its bound
    return;
  }
  const pcs = slab.pcsW(id);
  slab.lockSheaf(pcs);
  try {
    // An object of a slab another slot owns goes to the remote sheaf, as on the fast path (slab.ts
    // pushFast), unless no remote sheaf can be had: then to the main sheaf.
    let sw = i32[slab.mem.pd(addr >>> PAGE_SHIFT) + PD_OWNER] !== slab.cpu ? remoteSheafWithRoom(slab, id, pcs) : 0;
    if (sw === 0) {
      sw = slab.i32[pcs + PCS_MAIN]! >> 2;
      if (slab.i32[sw + S_SIZE]! >= slab.i32[sw + S_CAP]!) sw = replaceFullMain(slab, id, pcs, 0);
    }
    if (sw !== 0) {
      // The new main may come from the barn, in pages added after `i32` was read.
      sheafPush(slab.i32, sw, addr);
      unholdDebugObject(slab, addr);
      return;
    }
  } finally {
    slab.unlockSheaf(pcs);
  }
  if (!slab.freeToSlabs(id, addr, 0, hand)) deferObject(slab, addr); // noBlock agent past its bound
}

/**
 * An object event to the trace handlers: `size` the bytes asked for (or the object size), the
 * block's bytes (allocSize: what ksize gives without debug mode, the stride; the object size in a
 * debug cache), or `largeBytes` for a large kmalloc (cache -1);
 * `gfp` on allocations, -1 elsewhere.
 */
export function emitObject(slab: SlabAllocator, id: number, addr: number, size: number, cache: number, largeBytes: number, gfp: number): void {
  const rec: TraceRecord = { event: TRACE_EVENTS[id]!, cpu: slab.cpu, addr, size };
  // A debug cache's stride holds its redzones and metadata too: the class size is its object size.
  const kw = slab.cacheWOf(cache);
  rec.allocSize = cache < 0 ? largeBytes : slab.i32[kw + (slab.i32[kw + K_META] !== 0 ? K_OBJ_SIZE : K_SIZE)]!;
  if (cache >= 0) rec.cache = cacheName(slab, cache);
  if (gfp >= 0) rec.gfp = gfp;
  slab.locks.trace.emit(id, rec);
}
