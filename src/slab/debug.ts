/*
 * Debug mode (SLUB debug) and the object checks of the slab layer: which cache an address is an
 * object of, whether it is free, redzones, poison and the per-object metadata (M_STATE, M_REQ).
 * The contract of the other words is slab.ts's.
 *
 * WORDS: the debug metadata (M_STATE, M_REQ), redzone and poison bytes of objects of debug caches
 *   (K_META non-zero), plain stores by the slot that holds the object (allocation, free, kfreeRcu
 *   marking it queued), read by the checks; word 0 of an object leaving the allocator (prepObject
 *   clears its free tag: the caller's object from then on). debugUnlink writes the poison word over
 *   the link of an object taken off a freelist, under its cache's list lock. The slot's debug
 *   object hand (C_DEBUG_HAND, see debug_hand.ts): debugAlloc drops the object once it is marked
 *   allocated (or put back on a list); debugFree holds it from just before it is marked free.
 * LOCKS: none of its own. debugUnlink runs under the list lock of the object's cache; the other
 *   functions run wherever their caller is (any lock, or none).
 * NO LOCK: objectCache (the page descriptor and cache configuration of an address), isFreeObject
 *   (every slot's sheaves, hand sheaf and deferred list, the barn, the slab's freelist, each walk
 *   bounded, in FREE_SEARCH_PASSES passes), liveObjectList, checkBulk, describePage.
 * STALE: isFreeObject reads other slots' sheaves and deferred lists, the barn and the freelist as
 *   they are: a hint, racy, whose passes may still miss a free object that keeps moving, but that
 *   never reports a live object free (a live object is in none of those places). objectCache reads the descriptor of a
 *   page another agent may be changing: exact for a live object (its slab cannot be released under
 *   it), and for any other address the EINVAL it gives describes the page as it was read.
 */
import { describe, einval } from "../core/check.js";
import { ErrorCode, HeapError, hex } from "../core/errors.js";
import { GFP } from "../core/gfp.js";
import * as layout from "../core/layout.js";
import { TP, type TraceRecord } from "../core/trace.js";
import type { SlabAllocator } from "./slab.js";
import { cacheName } from "./cache.js";
import { deferObject, slabFreeNolock } from "./kmalloc.js";
import { freeingStored, holdFreeing, unholdDebugObject } from "./debug_hand.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { C_BULK_NR, C_BULK_OBJ, C_DEBUG_HAND, C_DEFER_HEAD, C_DEFER_NR, C_FREEING, C_FREEING_TAKING, DEBUG_POISON, DEBUG_REDZONE, DEBUG_RZ, K_BARN_FULL, K_BARN_MAX, K_FLAGS, K_FLAG_SHEAF_CACHE, K_HDR_WORDS, K_INUSE, K_META, K_OBJS, K_OBJ_SIZE, K_SIZE, M_REQ, M_STATE, M_STATE_ALLOC, M_STATE_FREE, M_STATE_RCU, O_FREE_TAG, O_NEXT, PAGE_SHIFT, PAGE_SIZE, PCS_HAND, PCS_SHEAVES, PCS_WORDS, PD_CACHE, PD_FLAGS, PD_FREELIST, PD_HEAD, PG_BUDDY, PG_DEFERRED, PG_HEAD, PG_LARGE, PG_ORDER_MASK, PG_ORDER_SHIFT, PG_PCP, PG_SLAB, POISON_FREE, POISON_WORD, RED_ACTIVE, S_MAX_CAP, S_NEXT, S_OBJS, S_SIZE } = layout;

/**
 * The cache id of the live-looking object at `addr` (-1 for a large kmalloc block), after every
 * cheap check; throws EINVAL or EDOUBLEFREE. `want` >= 0 demands that cache.
 */
export function objectCache(slab: SlabAllocator, addr: number, want: number): number {
  if (typeof addr !== "number") einval(`addr must be a number (an address from kmalloc or a cache), not ${describe(addr)}`);
  if (addr >>> 0 !== addr || addr < slab.offset || addr === 0 || (addr >= slab.size && !(slab.locks.refreshViews() && addr < slab.size))) {
    throw new HeapError(ErrorCode.EINVAL, `addr ${String(addr)} is not an address of this heap (a whole number in ${Math.max(1, slab.offset)}..${slab.size - 1})`);
  }
  const pfn = addr >>> PAGE_SHIFT;
  if (pfn < slab.zoneStart) throw new HeapError(ErrorCode.EINVAL, `${hex(addr)} is in the heap's metadata`);
  const d = slab.mem.pd(pfn);
  const f = slab.u32[d + PD_FLAGS]!;
  if (f === PG_SLAB) {
    const id = slab.u32[d + PD_CACHE]!;
    if (id >= slab.maxCaches || slab.u32[d + PD_HEAD]! > pfn) {
      throw new HeapError(ErrorCode.ECORRUPT, `the descriptor of page ${pfn} is broken (cache ${id}, head ${slab.u32[d + PD_HEAD]})`);
    }
    const kw = slab.cacheWOf(id);
    const off = addr - (slab.u32[d + PD_HEAD]! << PAGE_SHIFT);
    const size = slab.i32[kw + K_SIZE]!;
    if (size <= 0 || off % size !== 0 || off / size >= slab.i32[kw + K_OBJS]!) {
      throw new HeapError(ErrorCode.EINVAL, `${hex(addr)} is inside an object of ${cacheName(slab, id)}, not at its start`);
    }
    if ((slab.i32[kw + K_FLAGS]! & K_FLAG_SHEAF_CACHE) !== 0) {
      throw new HeapError(ErrorCode.EINVAL, `${hex(addr)} is the allocator's own sheaf, not an allocation`);
    }
    if (want >= 0 && id !== want) {
      throw new HeapError(ErrorCode.EINVAL, `${hex(addr)} belongs to ${cacheName(slab, id)}, not ${cacheName(slab, want)}`);
    }
    return id;
  }
  if ((f & PG_LARGE) !== 0 && (addr & (PAGE_SIZE - 1)) === 0 && want < 0) return -1;
  if ((f & PG_LARGE) !== 0 && want >= 0) {
    throw new HeapError(ErrorCode.EINVAL, `${hex(addr)} is a large kmalloc block, not an object of ${cacheName(slab, want)}`);
  }
  throw new HeapError(ErrorCode.EINVAL, `${hex(addr)} is not a live allocation (${describePage(slab, pfn)})`);
}

export function describePage(slab: SlabAllocator, pfn: number): string {
  const f = slab.u32[slab.mem.pd(pfn) + PD_FLAGS]!;
  if (f === 0) return "inside a block, not at an object start";
  if ((f & PG_LARGE) !== 0) return "inside a large kmalloc block";
  if ((f & (PG_BUDDY | PG_PCP | PG_DEFERRED)) !== 0) return "a free page";
  if ((f & PG_HEAD) !== 0) return "a page block from allocPages: free it with freePages";
  return `page flags ${hex(f)}`;
}

/** Does a sheaf of the pcs line at word `pcs` (main, spare, remote, or the one in its slot's hand) hold `x`? */
export function pcsSheavesHave(i32: Int32Array, pcs: number, x: number): boolean {
  for (const at of PCS_SHEAVES) if (sheafHas(i32, i32[pcs + at]!, x)) return true;
  return sheafHas(i32, i32[pcs + PCS_HAND]!, x);
}

/**
 * Passes of isFreeObject's search. Other slots move free objects between their sheaves, their
 * hands, the barn and the slab freelists while it reads them with no lock over all of them, so an
 * object on its way from one place to the next can be missed by one pass (each move is short);
 * the passes alternate their order (a flush puts an object on its freelist before it leaves the
 * sheaf, a refill the other way round).
 */
const FREE_SEARCH_PASSES = 4;

/** Is `addr`, whose first word carries the free tag, really free somewhere in cache `id`? */
export function isFreeObject(slab: SlabAllocator, id: number, addr: number): boolean {
  for (let pass = 0; pass < FREE_SEARCH_PASSES; pass++) {
    if (slab.i32[addr >> 2] !== (addr ^ O_FREE_TAG)) return false; // handed out meanwhile
    if ((pass & 1) === 0 ? inSheaves(slab, id, addr) || onListsOf(slab, id, addr) : onListsOf(slab, id, addr) || inSheaves(slab, id, addr)) return true;
  }
  return false;
}

/** In a sheaf of cache `id` on any slot's pcs line or in its hand (plain reads of other slots: a hint, racy)? */
function inSheaves(slab: SlabAllocator, id: number, addr: number): boolean {
  const i32 = slab.i32;
  for (let cpu = 0; cpu < slab.cpus; cpu++) {
    const pcs = slab.cacheWOf(id) + K_HDR_WORDS + cpu * PCS_WORDS;
    if (pcsSheavesHave(i32, pcs, addr)) return true;
  }
  return false;
}

/**
 * On a list: the barn's full sheaves, the slab's freelist, any slot's deferred list (another
 * slot's kfreeNolock may have parked it there) or on its way off one (C_FREEING). Bounded walks: a
 * broken list must not hang a free.
 */
function onListsOf(slab: SlabAllocator, id: number, addr: number): boolean {
  const i32 = slab.i32;
  if (barnHas(i32, slab.cacheWOf(id), addr) || onSlabFreelist(slab, addr, 65536)) return true;
  for (let cpu = 0; cpu < slab.cpus; cpu++) {
    const p = slab.mem.pcpOf(cpu);
    if ((i32[p + C_FREEING]! & ~C_FREEING_TAKING) === addr || onDeferredList(i32, p, addr)) return true;
  }
  return inBulkHand(slab, addr);
}

/**
 * Has a cache.allocBulk that has not returned taken `x` (it is in a slot's bulk hand, bulk.ts)?
 * Not the caller's yet, so not anybody's to free. Plain reads of other slots' hands, bounded by
 * each hand's count.
 */
export function inBulkHand(slab: SlabAllocator, x: number): boolean {
  const i32 = slab.i32;
  for (let cpu = 0; cpu < slab.cpus; cpu++) {
    const p = slab.mem.pcpOf(cpu);
    // The head before the count: a batch adds at the head, and the chain under the head read is
    // never shorter than the count read after it (the count read first missed the oldest object
    // of a batch that had just added one). The chain ends with a 0 link; the count (with room for
    // objects its owner adds meanwhile) only bounds a broken one.
    const head = i32[p + C_BULK_OBJ]!;
    const most = i32[p + C_BULK_NR]! + BULK_SEARCH_SLACK;
    for (let o = head, k = 0; o !== 0 && k < most; o = i32[(o >>> 2) + O_NEXT] ?? 0, k++) if (o === x) return true;
  }
  return false;
}

/** inBulkHand's room over a hand's count for objects its owner chains while the search reads it. */
const BULK_SEARCH_SLACK = 64;

/** Does a full sheaf on the barn of cache word `kw` hold `x`? (Empty ones hold nothing.) Bounded walk. */
export function barnHas(i32: Int32Array, kw: number, x: number): boolean {
  for (let s = i32[kw + K_BARN_FULL]!, n = 0; s !== 0 && n <= K_BARN_MAX; s = i32[(s >> 2) + S_NEXT]!, n++) if (sheafHas(i32, s, x)) return true;
  return false;
}

/** Is `x` on the deferred object list of the slot whose block is at word `p`? Bounded by its count. */
export function onDeferredList(i32: Int32Array, p: number, x: number): boolean {
  const nd = i32[p + C_DEFER_NR]!;
  for (let o = i32[p + C_DEFER_HEAD]!, n = 0; o !== 0 && n <= nd; o = i32[(o >> 2) + O_NEXT]!, n++) if (o === x) return true;
  return false;
}

/** Is object `x` on its slab's freelist? At most `bound` entries are walked. */
export function onSlabFreelist(slab: SlabAllocator, x: number, bound: number): boolean {
  const i32 = slab.i32;
  const head = slab.u32[slab.mem.pd(x >>> PAGE_SHIFT) + PD_HEAD]!;
  for (let o = i32[slab.mem.pd(head) + PD_FREELIST]!, n = 0; o !== 0 && n < bound; o = i32[(o >> 2) + O_NEXT]!, n++) if (o === x) return true;
  return false;
}

/** An object leaves the allocator: clear its free tag, zero it when asked; debug checks. */
export function prepObject(slab: SlabAllocator, id: number, obj: number, gfp: number, req: number, mode: number): number {
  const kw = slab.cacheWOf(id);
  if (slab.i32[kw + K_META] !== 0) return debugAlloc(slab, id, obj, gfp, req, mode);
  slab.i32[obj >> 2] = 0;
  // The whole usable size (ksize), so a zeroed object reads the same whatever its cache.
  if ((gfp & GFP.ZERO) !== 0) slab.u8.fill(0, obj, obj + slab.i32[kw + K_SIZE]!);
  return obj;
}

/**
 * Debug checks when an object is handed out: it must be free, its poison intact (a write after
 * free is reported with the cache, address and offset, the poison restored, the object put back
 * and ECORRUPT thrown); then its redzones are armed and its state set to allocated.
 */
export function debugAlloc(slab: SlabAllocator, id: number, obj: number, gfp: number, req: number, mode: number): number {
  const i32 = slab.i32;
  const u8 = slab.u8;
  const kw = slab.cacheWOf(id);
  const inuse = i32[kw + K_INUSE]!;
  const mw = (obj + i32[kw + K_META]!) >> 2;
  if (i32[mw + M_STATE] !== M_STATE_FREE) {
    unholdDebugObject(slab, obj);
    slabError(slab, ErrorCode.ECORRUPT, id, obj, -1, `object ${hex(obj)} of ${cacheName(slab, id)} was handed out while not free (state ${hex(i32[mw + M_STATE]!)})`);
  }
  // Bytes 0..7 of a free object: the free tag, and (with poisoning) the poison word, which every
  // path that takes an object off a linked list writes back over its link.
  const bad = firstBadHead(slab, obj);
  if (bad >= 0) {
    const found = u8[obj + bad]!;
    i32[obj >> 2] = obj ^ O_FREE_TAG;
    if ((slab.locks.debugFlags & DEBUG_POISON) !== 0) i32[(obj >> 2) + 1] = POISON_WORD;
    if (mode !== 0) slabFreeNolock(slab, id, obj);
    else if (!slab.freeToSlabs(id, obj, 0, slab.pcpuW + C_DEBUG_HAND)) deferObject(slab, obj);
    unholdDebugObject(slab, obj);
    slabError(slab, ErrorCode.ECORRUPT, id, obj, bad, `write to freed object ${hex(obj)} of ${cacheName(slab, id)} at offset ${bad} (found ${hex(found)}); restored`);
  }
  if ((slab.locks.debugFlags & DEBUG_POISON) !== 0) {
    for (let off = 8; off < inuse; off++) {
      if (u8[obj + off] !== POISON_FREE) {
        const found = u8[obj + off]!;
        u8.fill(POISON_FREE, obj + 8, obj + inuse);
        if (mode !== 0) slabFreeNolock(slab, id, obj);
        else if (!slab.freeToSlabs(id, obj, 0, slab.pcpuW + C_DEBUG_HAND)) deferObject(slab, obj);
        unholdDebugObject(slab, obj);
        slabError(slab, ErrorCode.ECORRUPT, id, obj, off, `write to freed object ${hex(obj)} of ${cacheName(slab, id)} at offset ${off} (found ${hex(found)}, poison ${hex(POISON_FREE)}); poison restored`);
      }
    }
  }
  i32[obj >> 2] = 0;
  i32[(obj >> 2) + 1] = 0;
  if ((gfp & GFP.ZERO) !== 0) u8.fill(0, obj, obj + req);
  if ((slab.locks.debugFlags & DEBUG_REDZONE) !== 0) u8.fill(RED_ACTIVE, obj + req, obj + inuse + DEBUG_RZ);
  i32[mw + M_STATE] = M_STATE_ALLOC;
  i32[mw + M_REQ] = req;
  unholdDebugObject(slab, obj);
  return obj;
}

/** Debug heaps: the offset of the first of bytes 0..7 of free object `obj` that is not as the allocator left it, or -1. */
export function firstBadHead(slab: SlabAllocator, obj: number): number {
  const i32 = slab.i32;
  const tag = obj ^ O_FREE_TAG;
  const w0 = i32[obj >> 2]!;
  if (w0 !== tag) return firstDiffByte(w0, tag);
  if ((slab.locks.debugFlags & DEBUG_POISON) === 0) return -1;
  const w1 = i32[(obj >> 2) + 1]!;
  return w1 === POISON_WORD ? -1 : 4 + firstDiffByte(w1, POISON_WORD);
}

/** Debug heaps: an object taken off a freelist or deferred list gets the poison word back over its link. */
export function debugUnlink(slab: SlabAllocator, kw: number, obj: number): void {
  if (slab.i32[kw + K_META] !== 0 && (slab.locks.debugFlags & DEBUG_POISON) !== 0) slab.i32[(obj >> 2) + O_NEXT] = POISON_WORD;
}

/**
 * A debug object's free, first look: EDOUBLEFREE unless its state is allocated and no
 * cache.allocBulk in progress holds it (ECORRUPT for a broken state). Returns its metadata's word.
 * Before any lock check: a hook's double free says so, not EDEADLK.
 */
export function debugFreeState(slab: SlabAllocator, id: number, addr: number): number {
  const i32 = slab.i32;
  const mw = (addr + i32[slab.cacheWOf(id) + K_META]!) >> 2;
  const state = i32[mw + M_STATE];
  if (state === M_STATE_FREE) throw new HeapError(ErrorCode.EDOUBLEFREE, `${hex(addr)} of ${cacheName(slab, id)} is already free`);
  if (state === M_STATE_RCU) throw new HeapError(ErrorCode.EDOUBLEFREE, `${hex(addr)} of ${cacheName(slab, id)} is already queued by kfreeRcu`);
  if (state !== M_STATE_ALLOC) slabError(slab, ErrorCode.ECORRUPT, id, addr, -1, `metadata of ${hex(addr)} of ${cacheName(slab, id)} is broken (state ${hex(state!)})`);
  if (i32[addr >> 2] === (addr ^ O_FREE_TAG) && inBulkHand(slab, addr)) {
    throw new HeapError(ErrorCode.EDOUBLEFREE, `${hex(addr)} of ${cacheName(slab, id)} is taken by a cache.allocBulk that has not returned: it is nobody's to free yet`);
  }
  return mw;
}

/**
 * Debug checks when an object is freed: it must be allocated (EDOUBLEFREE if it is free or
 * waiting for kfreeRcu), its redzones intact (a write past the requested size is reported with
 * the cache, address and offset, the redzone restored and ECORRUPT thrown, the object still
 * allocated). With `commit`, the object is then marked free and poisoned.
 */
export function debugFree(slab: SlabAllocator, id: number, addr: number, commit: boolean): number {
  const i32 = slab.i32;
  const u8 = slab.u8;
  const kw = slab.cacheWOf(id);
  const inuse = i32[kw + K_INUSE]!;
  const mw = debugFreeState(slab, id, addr);
  const req = i32[mw + M_REQ]!;
  // Never act on a size that is not the object's: a stray write below the next object lands here.
  if (req < 1 || req > i32[kw + K_OBJ_SIZE]!) {
    slabError(slab, ErrorCode.ECORRUPT, id, addr, -1, `metadata of ${hex(addr)} of ${cacheName(slab, id)} is broken (requested size ${req} of a ${i32[kw + K_OBJ_SIZE]}-byte object)`);
  }
  if ((slab.locks.debugFlags & DEBUG_REDZONE) !== 0) {
    for (let off = req; off < inuse + DEBUG_RZ; off++) {
      const found = u8[addr + off]!;
      if (found !== RED_ACTIVE) {
        if (commit) u8.fill(RED_ACTIVE, addr + req, addr + inuse + DEBUG_RZ);
        slabError(slab, ErrorCode.ECORRUPT, id, addr, off, `write past the end of ${hex(addr)} of ${cacheName(slab, id)} (${req} bytes asked for): redzone byte at offset ${off} is ${hex(found)}${commit ? "; redzone restored, object still allocated" : ""}`);
      }
    }
  }
  if (!commit) return req;
  holdFreeing(slab, addr);
  i32[mw + M_STATE] = M_STATE_FREE;
  freeingStored(slab, addr);
  if ((slab.locks.debugFlags & DEBUG_POISON) !== 0) u8.fill(POISON_FREE, addr + 4, addr + inuse);
  return req;
}

/** Set a debug object's state (kfreeRcu marks queued objects). */
export function debugSetState(slab: SlabAllocator, addr: number, state: number): void {
  const id = slab.i32[slab.mem.pd(addr >>> PAGE_SHIFT) + PD_CACHE]!;
  const kw = slab.cacheWOf(id);
  if (slab.i32[slab.mem.pd(addr >>> PAGE_SHIFT) + PD_FLAGS] !== PG_SLAB || slab.i32[kw + K_META] === 0) return;
  slab.i32[((addr + slab.i32[kw + K_META]!) >> 2) + M_STATE] = state;
}

/** Report a debug finding: a slab_error trace event, then a HeapError. */
export function slabError(slab: SlabAllocator, code: ErrorCode, id: number, addr: number, offset: number, message: string): never {
  if ((slab.locks.trace.mask & (1 << TP.slab_error)) !== 0 && slab.locks.deferring === 0) {
    const rec: TraceRecord = { event: "slab_error", cpu: slab.cpu, addr, cache: cacheName(slab, id), message };
    if (offset >= 0) rec.size = offset;
    slab.locks.trace.emit(TP.slab_error, rec);
  }
  throw new HeapError(code, message);
}

/** Debug heaps: the live objects of cache `id` (walks its slabs). */
export function liveObjectList(slab: SlabAllocator, id: number): number[] {
  const i32 = slab.i32;
  const kw = slab.cacheWOf(id);
  const out: number[] = [];
  if (i32[kw + K_META] === 0) return out;
  const size = i32[kw + K_SIZE]!;
  const objs = i32[kw + K_OBJS]!;
  for (let pfn = slab.zoneStart; pfn < slab.nrPages; pfn++) {
    const d = slab.mem.pd(pfn);
    if (i32[d + PD_FLAGS] !== PG_SLAB || i32[d + PD_HEAD] !== pfn || i32[d + PD_CACHE] !== id) continue;
    for (let k = 0; k < objs; k++) {
      const o = (pfn << PAGE_SHIFT) + k * size;
      const st = i32[((o + i32[kw + K_META]!) >> 2) + M_STATE];
      if (st === M_STATE_ALLOC || st === M_STATE_RCU) out.push(o);
    }
  }
  return out;
}

/** Throw, changing nothing, unless every address is a distinct live allocation (of cache `want`). */
export function checkBulk(slab: SlabAllocator, addrs: ArrayLike<number>, want: number, label = true): void {
  if (addrs === null || typeof addrs !== "object" || typeof addrs.length !== "number") {
    throw new HeapError(ErrorCode.EINVAL, "addrs must be an array of addresses");
  }
  const seen = new Set<number>();
  let i = 0;
  try {
    for (; i < addrs.length; i++) checkBulkOne(slab, addrs[i]!, want, seen);
  } catch (e) {
    // Say which entry: "addrs[3]: 0x5000 is not a live allocation (...)".
    if (label && e instanceof HeapError) throw new HeapError(e.code, `addrs[${i}]: ${e.message.slice(e.code.length + 2)}`);
    throw e;
  }
}

export function checkBulkOne(slab: SlabAllocator, a: number, want: number, seen: Set<number>): void {
  if (a === 0) return;
  if (seen.has(a)) throw new HeapError(ErrorCode.EDOUBLEFREE, `${hex(a)} appears twice in one bulk free`);
  seen.add(a);
  const id = objectCache(slab, a, want);
  if (id >= 0 && slab.i32[slab.cacheWOf(id) + K_META] !== 0) debugFree(slab, id, a, false);
  else if (id >= 0 && slab.i32[a >> 2] === (a ^ O_FREE_TAG) && isFreeObject(slab, id, a)) {
    throw new HeapError(ErrorCode.EDOUBLEFREE, `${hex(a)} of ${cacheName(slab, id)} is already free`);
  }
  if (id < 0) slab.pages.checkBlock(a, (slab.u32[slab.mem.pd(a >>> PAGE_SHIFT) + PD_FLAGS]! & PG_ORDER_MASK) >>> PG_ORDER_SHIFT, PG_LARGE);
}

export function sheafHas(i32: Int32Array, s: number, addr: number): boolean {
  if (s === 0) return false;
  const sw = s >> 2;
  const n = i32[sw + S_SIZE]!;
  for (let k = 0; k < n && k < S_MAX_CAP; k++) if (i32[sw + S_OBJS + k] === addr) return true;
  return false;
}

/** The offset (0..3) of the first byte in which words `a` and `b` differ; they differ. */
export function firstDiffByte(a: number, b: number): number {
  const x = (a ^ b) >>> 0;
  return x & 0xff ? 0 : x & 0xff00 ? 1 : x & 0xff0000 ? 2 : 3;
}
