/*
 * Slab decay: the empty slabs a cache keeps (up to K_MAX_EMPTY), and the steps that give back
 * the ones no allocation needed. Every SLAB_DECAY_TICKS frees to the slabs, a step (under the list
 * lock that free holds) takes off half of the empty slabs above K_MIN_PARTIAL that no allocation
 * needed since the step before (K_EMPTY_LOW); direct reclaim in the page layer (reclaimSlabs,
 * installed as pages.reclaimSlabs) takes back every empty slab above K_MIN_PARTIAL.
 *
 * WORDS: a cache's K_NR_EMPTY, K_EMPTY_LOW and K_DECAY_TICKS, its partial list and the descriptors
 *   of the slabs taken off it (unaccountSlab: blocks in this slot's hand), plain stores under its
 *   K_LIST_LOCK (see slab.ts).
 * LOCKS: the caller holds the list lock, except barnDecay (a step due from the barn's puts: it only
 *   trylocks the list lock, under at most the sheaf local lock) and reclaimSlabs, which only
 *   trylocks each cache's list lock (a lock held by anyone, this agent included, skips the cache) and releases the slabs it
 *   took off after the unlock (list, then pcp -> zone). reclaimSlabs is called by direct reclaim
 *   with no pcp or zone lock held.
 * NO LOCK: reclaimSlabs' first look at each cache (K_STATE with Atomics.load, K_NR_EMPTY and
 *   K_MIN_PARTIAL plain) and at CT_NR.
 * STALE: that first look: a cache that looks as if it kept no surplus is skipped until the next
 *   reclaim, and one that looks as if it did is checked again under its list lock; a cache created
 *   meanwhile (CT_NR) has no empty slabs yet.
 */
import * as layout from "../core/layout.js";
import type { SlabAllocator } from "./slab.js";
import { SLAB_DECAY_TICKS } from "./sizes.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { CT_NR, K_DECAY_TICKS, K_EMPTY_LOW, K_LIST_LOCK, K_MIN_PARTIAL, K_NR_EMPTY, K_NR_SLABS, K_PARTIAL, K_STATE, K_STATE_FREE, LOCK, PD_INUSE, PD_NEXT } = layout;

/** An empty slab of the partial list gets objects taken: count it, and lower the decay's low-water mark. List lock held. */
export function emptySlabTaken(slab: SlabAllocator, kw: number): void {
  const i32 = slab.i32;
  const empty = i32[kw + K_NR_EMPTY]! - 1;
  i32[kw + K_NR_EMPTY] = empty;
  if (empty < i32[kw + K_EMPTY_LOW]!) i32[kw + K_EMPTY_LOW] = empty;
}

/**
 * Slab decay, at every free to the slabs: every SLAB_DECAY_TICKS of them, a step releases half of
 * the empty slabs above min_partial that no allocation needed since the last step (K_EMPTY_LOW),
 * adding their head pfns to `discard` for release after the unlock. A churn that empties slabs
 * and fills them again (a batch freed, the next one allocated) keeps its slabs, where releasing
 * every empty slab beyond min_partial at once had the next batch build them again. List lock held.
 */
export function slabDecayLocked(slab: SlabAllocator, kw: number, discard: number[] | null): number[] | null {
  const ticks = slab.i32[kw + K_DECAY_TICKS]! + 1;
  if (ticks < SLAB_DECAY_TICKS) {
    slab.i32[kw + K_DECAY_TICKS] = ticks;
    return discard;
  }
  return slabDecayStep(slab, kw, discard, false);
}

/**
 * One decay step (`all`: direct reclaim, every empty slab above min_partial). The partial list
 * walk is bounded by the slab count. List lock held.
 */
export function slabDecayStep(slab: SlabAllocator, kw: number, discard: number[] | null, all: boolean): number[] | null {
  const i32 = slab.i32;
  i32[kw + K_DECAY_TICKS] = 0;
  const empty = i32[kw + K_NR_EMPTY]!;
  const surplus = (all ? empty : Math.min(i32[kw + K_EMPTY_LOW]!, empty)) - i32[kw + K_MIN_PARTIAL]!;
  if (surplus > 0) {
    let n = all ? surplus : (surplus + 1) >> 1;
    const most = i32[kw + K_NR_SLABS]!;
    for (let pfn = i32[kw + K_PARTIAL]!, steps = 0; pfn !== 0 && n > 0 && ++steps <= most; ) {
      const next = i32[slab.mem.pd(pfn) + PD_NEXT]!;
      if (i32[slab.mem.pd(pfn) + PD_INUSE] === 0) {
        slab.partialDel(kw, pfn);
        slab.unaccountSlab(kw, pfn);
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
 * The decay step that frees stopping at the barn are due (barnPutFull counted SLAB_DECAY_TICKS
 * full sheaves): a batch that the barn serves whole never frees to the slabs, and its empty slabs
 * would otherwise stay until direct reclaim. Housekeeping: the list lock is only tried, and the
 * step skipped when it is held. Called with no barn or list lock held, and no sheaf in hand.
 */
export function barnDecay(slab: SlabAllocator, id: number, mode: number): void {
  slab.barnDecayDue = false;
  trySlabDecayStep(slab, id, false, mode);
}

/**
 * One decay step of cache `id` (`all`: every empty slab above min_partial) if its list lock can be
 * had at once; the slabs it took off are released after the unlock. No barn or list lock held.
 */
function trySlabDecayStep(slab: SlabAllocator, id: number, all: boolean, mode: number): void {
  const kw = slab.cacheWOf(id);
  if (!slab.locks.trylock(kw + K_LIST_LOCK, LOCK.list)) return;
  const discard = slabDecayStep(slab, kw, null, all);
  slab.locks.unlock(kw + K_LIST_LOCK, LOCK.list);
  if (discard !== null) for (const pfn of discard) slab.releaseSlab(id, pfn, mode);
}

/**
 * Direct reclaim (the page allocator found no block): every cache gives back its empty slabs above
 * min_partial. The list locks are only tried, never waited for: a cache whose lock is held, by
 * another agent or by this one, is skipped.
 */
export function reclaimSlabs(slab: SlabAllocator): void {
  const i32 = slab.i32;
  const nr = Math.min(i32[slab.hw + CT_NR]!, slab.maxCaches);
  for (let id = 0; id < nr; id++) {
    const kw = slab.cacheWOf(id);
    if (Atomics.load(i32, kw + K_STATE) === K_STATE_FREE || i32[kw + K_NR_EMPTY]! <= i32[kw + K_MIN_PARTIAL]!) continue;
    trySlabDecayStep(slab, id, true, 0);
  }
}
