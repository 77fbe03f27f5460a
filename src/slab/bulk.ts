/*
 * kfreeBulk: many allocations, all checked before any is freed. cache.allocBulk: n objects of a
 * cache, all or none, held in this slot's object bulk hand until the call's last statement, so
 * that a slot killed in the middle of the batch loses at most the one object it was taking (an
 * object taken for its caller and not yet returned).
 *
 * WORDS: C_BULK_OBJ and C_BULK_NR of this slot (owner only, plain): the objects taken so far, the
 *   last first, chained through each object's O_NEXT word (the objects are allocated: the word is
 *   the caller's only once the call returns; with GFP.ZERO it is zeroed again after the hand is
 *   cleared), and how many. C_BULK_NR non-zero means held. A held object carries its free tag in
 *   word 0 (its first word is the caller's only once the call returns): a free of it by anyone
 *   meanwhile (a reentry hook's, another agent's) is EDOUBLEFREE, since the double-free search
 *   (debug.ts, inBulkHand) walks every slot's hand; the tags come off before the hand is cleared. A call that finds the hand taken (a
 *   trace handler's call inside another's) holds nothing, and so does a call on a debug cache
 *   whose objects are asked for fewer than 8 bytes (the word would be redzone: linkFits), and a
 *   call while a kmem_cache_alloc handler is on (it sees each object before the caller has it,
 *   and a write of its into the link word would be lost, or break the chain). reclaimSlot of a dead slot frees its
 *   chain (freeBulkObjectsInHand), one object at a time off the chain, in place.
 * LOCKS: none of its own; cacheAlloc, cacheFree and kfree take theirs.
 */
import { einval, readAddrs, storeOut } from "../core/check.js";
import { GFP } from "../core/gfp.js";
import { TP } from "../core/trace.js";
import * as layout from "../core/layout.js";
import type { SlabAllocator } from "./slab.js";
import { droppedBrokenChain } from "./kmalloc.js";
import { checkBulk } from "./debug.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { C_BULK_NR, C_BULK_OBJ, K_META, K_OBJ_SIZE, LOCK, O_FREE_TAG, O_NEXT } = layout;

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
  // write into the link word (losing its write, or breaking the chain). With one on, hold nothing.
  const held = slab.i32[p + C_BULK_NR] === 0 && linkFits(slab, id) && (slab.locks.trace.mask & (1 << TP.kmem_cache_alloc)) === 0;
  let i = 0;
  try {
    for (; i < n; i++) {
      const obj = slab.cacheAlloc(id, gen, gfp);
      if (obj === 0) {
        giveBack(slab, id, got, i, held);
        return 0;
      }
      got[i] = obj;
      if (held) {
        // Read the views after the call: it may have rebuilt them.
        const i32 = slab.i32;
        i32[(obj >> 2) + O_NEXT] = i32[p + C_BULK_OBJ]!;
        i32[p + C_BULK_OBJ] = obj;
        i32[p + C_BULK_NR] = i + 1;
        // Free to any free until the call returns: tagged, and found in the hand by the double-free
        // search (isFreeObject; a debug cache's debugFree looks there too). A reentry hook's free of
        // an object the batch took was accepted before, and the caller was handed a free object.
        i32[obj >> 2] = obj ^ O_FREE_TAG;
      }
    }
  } catch (e) {
    // Something threw part-way (a lock's dead owner, a corrupt list): what was taken goes back
    // (giveBack frees with kfreeNolock when asked: it never waits nor throws EDEADLK), then the error.
    giveBack(slab, id, got, i, held, true);
    throw e;
  }
  const refused = got !== out ? storeOut(out, got, n) : null;
  if (refused !== null) {
    giveBack(slab, id, got, n, held);
    einval(`out refused a write (${refused}): the ${n} objects taken were freed again`);
  }
  if (held) {
    const i32 = slab.i32;
    // The tags off first (word 0 is 0 after any allocation's prepObject), then the hand: a kill
    // between leaves untagged objects in the hand, which reclaimSlot frees. The last statement of
    // the call that counts: from here the objects are the caller's.
    for (let i = 0; i < n; i++) i32[got[i]! >> 2] = 0;
    i32[p + C_BULK_NR] = 0;
    i32[p + C_BULK_OBJ] = 0;
    if ((gfp & GFP.ZERO) !== 0) for (let i = 0; i < n; i++) i32[(got[i]! >> 2) + O_NEXT] = 0;
  }
  return n;
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

/** The batch failed: free the `n` objects taken (off the hand one at a time when it holds them). */
function giveBack(slab: SlabAllocator, id: number, got: ArrayLike<number>, n: number, held: boolean, nolock = false): void {
  const p = slab.pcpuW;
  for (let k = 0; k < n; k++) {
    const obj = held ? bulkPop(slab, p) : got[k]!;
    if (held) slab.i32[obj >> 2] = 0; // the tag off: a live object again, for its free
    if (nolock) slab.kfreeNolock(obj);
    else slab.cacheFree(id, obj);
  }
}

/**
 * reclaimSlot: the objects dead slot `cpu` had taken in a cache.allocBulk that never returned are
 * freed, each off the chain before it is freed (a reclaimer killed here loses at most that one).
 * A broken chain is reported to onError and dropped. Returns the objects freed. No lock held.
 */
export function freeBulkObjectsInHand(slab: SlabAllocator, cpu: number): number {
  const p = slab.mem.pcpOf(cpu);
  const nr = slab.i32[p + C_BULK_NR]!;
  if (nr === 0) {
    slab.i32[p + C_BULK_OBJ] = 0;
    return 0;
  }
  if (droppedBrokenChain(slab, p + C_BULK_OBJ, p + C_BULK_NR, `cpu ${cpu}'s bulk object hand`)) return 0;
  let freed = 0;
  for (let k = 0; k < nr; k++) {
    const obj = bulkPop(slab, p);
    slab.i32[obj >> 2] = 0; // the tag off: a live object again, for its free
    slab.i32[(obj >> 2) + O_NEXT] = 0;
    slab.kfree(obj);
    freed++;
  }
  return freed;
}

/** Take the last object off the bulk hand of the slot whose block is at word `p` (it holds one). */
function bulkPop(slab: SlabAllocator, p: number): number {
  const i32 = slab.i32;
  const obj = i32[p + C_BULK_OBJ]!;
  i32[p + C_BULK_OBJ] = i32[(obj >> 2) + O_NEXT]!;
  i32[p + C_BULK_NR] = i32[p + C_BULK_NR]! - 1;
  return obj;
}
