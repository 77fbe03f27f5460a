/*
 * kfreeBulk: many allocations, all checked before any is freed. cache.allocBulk: n objects of a
 * cache, all or none, held in this slot's object bulk hand until the call hands them over as it
 * returns, so that a slot killed in the middle of the batch loses at most the one object it was
 * taking or handing over.
 *
 * WORDS: C_BULK_OBJ and C_BULK_NR of this slot (owner only, plain): the objects taken so far, the
 *   last first, chained through each object's O_NEXT word (the objects are not the caller's until
 *   handed over, oldest first: each link is zeroed while its object is still in the hand, as the
 *   object below it leaves), and how many; C_BULK_NR
 *   non-zero means held. A held object carries its free tag in word 0: a free of it by anyone
 *   meanwhile (a reentry hook's, another agent's) is EDOUBLEFREE, since the double-free search
 *   (debug.ts, inBulkHand) walks every slot's hand. bulkTake moves each object from this slot's
 *   main sheaf into the hand with the tag never off (into the hand first, then off the sheaf); the
 *   hand-over takes each one's tag off, then takes it off the hand, and writes nothing into it
 *   once its tag is off. A call that finds the hand taken (a trace
 *   handler's call inside another's) holds nothing, and so does a call on a debug cache whose
 *   objects are asked for fewer than 8 bytes (the word would be redzone: linkFits); while a
 *   kmem_cache_alloc handler is on, a call holds none of the objects it takes (the handler sees
 *   each before the caller has it, and a write of its into the link word would be lost, or break
 *   the chain), and from the first it takes with none on, all. reclaimSlot of a
 *   dead slot frees its chain (freeBulkObjectsInHand), one object at a time off the chain, in place.
 * LOCKS: none of its own; cacheAlloc, cacheFree, kfree and cacheRefillMain (cache.ts) take theirs.
 * NO LOCK: bulkTake's pop of this slot's main sheaf, as the allocation fast path (the gate open).
 * STALE: other agents' searches read the hand while it changes: the head before the count
 *   (inBulkHand), so a chain that grows is never cut short.
 */
import { einval, readAddrs, storeOut } from "../core/check.js";
import { GFP } from "../core/gfp.js";
import { TP } from "../core/trace.js";
import * as layout from "../core/layout.js";
import type { SlabAllocator } from "./slab.js";
import { droppedBrokenChain } from "./kmalloc.js";
import { cacheRefillMain } from "./cache.js";
import * as sizes from "./sizes.js";
import { checkBulk } from "./debug.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { C_BULK_NR, C_BULK_OBJ, K_HDR_WORDS, K_META, K_OBJ_SIZE, K_SIZE, LOCK, O_FREE_TAG, O_NEXT, PAGE_SHIFT, PCS_MAIN, PCS_WORDS, PD_CACHE, S_OBJS, S_SIZE } = layout;
const { SHEAF_SIZE_MASK } = sizes;

/** Free many allocations; all are checked before any is freed. */
export function kfreeBulk(slab: SlabAllocator, addrs: ArrayLike<number>): void {
  slab.locks.assertLive();
  const list = readAddrs("addrs", addrs);
  checkBulk(slab, list, -1);
  // All or nothing: a free past the fast path takes the sheaf lock and later ones; from a hook
  // holding one, EDEADLK now, before the first free (a noBlock agent's frees defer, never throw).
  slab.locks.assertCanLock(LOCK.sheaf);
  for (let i = 0; i < list.length; i++) slab.kfree(list[i]!);
}

/** Fill out[0..n) with n objects of cache `id` (handle generation `gen`) and return n, or return 0 and allocate nothing. */
export function cacheAllocBulk(slab: SlabAllocator, id: number, gen: number, n: number, out: number[] | Uint32Array, gfp: number): number {
  // Objects go to the caller's array only when all n are there: a write it refuses (a Proxy, a
  // setter) then frees them all, as a failed allocation does.
  const got: number[] | Uint32Array = out instanceof Uint32Array ? out : [];
  const p = slab.pcpuW;
  // A kmem_cache_alloc handler sees each object as it is taken, before the caller has it: it could
  // write into the link word (losing its write, or breaking the chain). While one is on, the batch
  // holds nothing; from the first object taken with none on (a handler may switch itself off) it
  // holds every object it takes: objects [heldFrom, i) are in the hand.
  const fits = linkFits(slab, id);
  let heldFrom = -1;
  let i = 0;
  try {
    for (; i < n; i++) {
      if (heldFrom < 0 && fits && slab.i32[p + C_BULK_NR] === 0 && (slab.locks.trace.mask & (1 << TP.kmem_cache_alloc)) === 0) heldFrom = i;
      const obj = heldFrom >= 0 ? bulkTake(slab, id, gen, gfp, p) : slab.cacheAlloc(id, gen, gfp);
      if (obj === 0) {
        giveBack(slab, id, got, i, heldFrom);
        return 0;
      }
      got[i] = obj;
    }
  } catch (e) {
    // Something threw part-way (a lock's dead owner, a corrupt list): what was taken goes back
    // (giveBack frees with kfreeNolock when asked: it never waits nor throws EDEADLK), then the error.
    giveBack(slab, id, got, i, heldFrom, true);
    throw e;
  }
  const refused = got !== out ? storeOut(out, got, n) : null;
  if (refused !== null) {
    giveBack(slab, id, got, n, heldFrom);
    einval(`out refused a write (${refused}): the ${n} objects taken were freed again`);
  }
  if (heldFrom >= 0) {
    const inHand = n - heldFrom;
    // The hand's own chain, newest first (`out` is the caller's, and a hook may have written into it).
    const chain: number[] = [];
    for (let o = slab.i32[p + C_BULK_OBJ]!, k = 0; k < inHand; o = slab.i32[(o >> 2) + O_NEXT]!, k++) chain.push(o);
    // GFP.ZERO: bulkTake's objects come untouched, so the whole usable size, as prepObject does
    // (a debug cache's come through cacheAlloc, zeroed to the size asked for), but for the tag and
    // the link, while the hand still has them.
    const kw = slab.cacheWOf(id);
    if ((gfp & GFP.ZERO) !== 0 && slab.i32[kw + K_META] === 0) {
      const size = slab.i32[kw + K_SIZE]!;
      for (const o of chain) slab.u8.fill(0, o + (O_NEXT + 1) * 4, o + size);
    }
    // The objects become the caller's one at a time, the oldest first: its tag comes off while the
    // hand still has it, then it leaves the hand when the object above it lets go of it (that one's
    // link, zeroed while the hand still has that one: the chain other agents' searches walk stays
    // whole down to the hand's last object; the oldest's link is 0 already). The call writes
    // nothing into an object once its tag is off: another agent's free of it from then on (the
    // hand-over's instant) is a free of the caller's object, whose own later free finds it free.
    // Before, the tag came off after the object had left the hand, over such a free's own tag, and
    // the caller's free of it was accepted too. A kill leaves at most one object allocated;
    // reclaimSlot frees the rest from the hand.
    for (let k = inHand - 1; k >= 0; k--) {
      const i32 = slab.i32;
      i32[chain[k]! >> 2] = 0;
      if (k > 0) i32[(chain[k - 1]! >> 2) + O_NEXT] = 0;
      else i32[p + C_BULK_OBJ] = 0;
      i32[p + C_BULK_NR] = k;
    }
  }
  return n;
}

/**
 * One object of cache `id` for a held batch, into the bulk hand with its free tag on: free to any
 * free until the call returns (the double-free search, isFreeObject, and a debug cache's
 * debugFreeState look in every slot's hand). Off this slot's main sheaf while the fast path is
 * open: into the hand before off the sheaf, its tag never cleared, so a free of it by another
 * agent meanwhile finds it in one or the other. An empty main sheaf is refilled (cacheRefillMain)
 * rather than popped by cacheAlloc, whose object would be untagged, on no list and in no hand for
 * a few statements (another agent's free of it there was accepted, and the caller handed a free
 * object). Only where that cannot be (debug mode, a closed gate, no memory for a refill) does the object come through cacheAlloc, tagged again once in the hand: its allocation's
 * own instant, as for any allocation (the README's "at the same instant").
 */
function bulkTake(slab: SlabAllocator, id: number, gen: number, gfp: number, p: number): number {
  // Any flags: a pop of this slot's own sheaf never waits (GFP.ZERO is done when the call hands
  // the objects over; the others choose what a refill may do).
  for (let refilled = false; slab.gate === 0; refilled = true) {
    const i32 = slab.i32;
    const sw = i32[slab.pcsW(id) + PCS_MAIN]! >> 2;
    const n = (i32[sw + S_SIZE]! & SHEAF_SIZE_MASK) - 1;
    if (n >= 0) {
      const obj = i32[sw + S_OBJS + n]!;
      bulkHold(i32, p, obj);
      i32[sw + S_SIZE] = n;
      return obj;
    }
    if (refilled || !cacheRefillMain(slab, id, gen, gfp)) break;
  }
  const obj = slab.cacheAlloc(id, gen, gfp);
  if (obj !== 0) {
    // Read the views after the call: it may have rebuilt them.
    const i32 = slab.i32;
    bulkHold(i32, p, obj);
    i32[obj >> 2] = obj ^ O_FREE_TAG;
  }
  return obj;
}

/** Chain `obj` into the bulk hand at slot block word `p` (last first, through O_NEXT), counted. */
function bulkHold(i32: Int32Array, p: number, obj: number): void {
  i32[(obj >> 2) + O_NEXT] = i32[p + C_BULK_OBJ]!;
  i32[p + C_BULK_OBJ] = obj;
  i32[p + C_BULK_NR] = i32[p + C_BULK_NR]! + 1;
}

/**
 * Is an object's O_NEXT word the caller's own bytes, which the chain may borrow until the call
 * returns? Always without debug; in a debug cache only when the object's asked-for size (K_OBJ_SIZE)
 * covers the word: below it the word holds the redzone, which a link would clobber.
 */
function linkFits(slab: SlabAllocator, id: number): boolean {
  const kw = slab.cacheWOf(id);
  return slab.i32[kw + K_META] === 0 || slab.i32[kw + K_OBJ_SIZE]! >= (O_NEXT + 1) * 4;
}

/** The batch failed: free the `n` objects taken (those from `heldFrom` on off the hand, one at a time). */
function giveBack(slab: SlabAllocator, id: number, got: ArrayLike<number>, n: number, heldFrom: number, nolock = false): void {
  const p = slab.pcpuW;
  for (let k = 0; k < n; k++) {
    const held = heldFrom >= 0 && k >= heldFrom;
    const obj = held ? bulkPop(slab, p) : got[k]!;
    if (held) slab.i32[obj >> 2] = 0; // the tag off: a live object again, for its free
    if (nolock) slab.kfreeNolock(obj);
    else slab.cacheFree(id, obj);
  }
}

/**
 * reclaimSlot: the objects dead slot `cpu` had taken in a cache.allocBulk that never returned are
 * freed, each off the chain before it is freed (a reclaimer killed here loses at most that one).
 * The chain may be one longer or shorter than its count (a kill between the head's store and the
 * count's): the chain is what holds. An object that is also still the top of the slot's main
 * sheaf (a kill inside bulkTake, between the hand's stores and the sheaf's) stays there, free.
 * A broken chain is reported to onError and dropped. Returns the objects freed. No lock held.
 */
export function freeBulkObjectsInHand(slab: SlabAllocator, cpu: number): number {
  const p = slab.mem.pcpOf(cpu);
  if (slab.i32[p + C_BULK_NR] === 0 && slab.i32[p + C_BULK_OBJ] === 0) return 0;
  if (droppedBrokenChain(slab, p + C_BULK_OBJ, p + C_BULK_NR, `cpu ${cpu}'s bulk object hand`, 1)) return 0;
  let nr = 0;
  for (let o = slab.i32[p + C_BULK_OBJ]!; o !== 0; o = slab.i32[(o >> 2) + O_NEXT]!) nr++;
  slab.i32[p + C_BULK_NR] = nr;
  let freed = 0;
  for (let k = 0; k < nr; k++) {
    const obj = bulkPop(slab, p);
    if (topOfMainSheaf(slab, cpu, obj)) continue;
    slab.i32[obj >> 2] = 0; // the tag off: a live object again, for its free
    slab.i32[(obj >> 2) + O_NEXT] = 0;
    slab.kfree(obj);
    freed++;
  }
  return freed;
}

/** Is `obj` the top object of slot `cpu`'s main sheaf of its cache? */
function topOfMainSheaf(slab: SlabAllocator, cpu: number, obj: number): boolean {
  const i32 = slab.i32;
  const id = i32[slab.mem.pd(obj >>> PAGE_SHIFT) + PD_CACHE]!;
  const sw = i32[slab.cacheWOf(id) + K_HDR_WORDS + cpu * PCS_WORDS + PCS_MAIN]! >> 2;
  const n = i32[sw + S_SIZE]! & SHEAF_SIZE_MASK;
  return n > 0 && i32[sw + S_OBJS + n - 1] === obj;
}

/** Take the last object off the bulk hand of the slot whose block is at word `p` (it holds one). */
function bulkPop(slab: SlabAllocator, p: number): number {
  const i32 = slab.i32;
  const obj = i32[p + C_BULK_OBJ]!;
  i32[p + C_BULK_OBJ] = i32[(obj >> 2) + O_NEXT]!;
  i32[p + C_BULK_NR] = i32[p + C_BULK_NR]! - 1;
  return obj;
}
