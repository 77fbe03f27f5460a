/*
 * The page map: one state code per page of the heap, read from the page descriptors, for pictures
 * of the zone (the inspector's map) and for tools that want to see fragmentation.
 *
 * WORDS: none owned; writes nothing in the heap (the map is an array of the caller's).
 * LOCKS: none.
 * NO LOCK: readPageMap reads the descriptors' PD_FLAGS and PD_CACHE words with plain loads, like
 *   stats().
 * STALE: every descriptor: while other agents allocate and free, a block may be split or merged
 *   between two reads, so the map is a picture of a moving heap, exact only while the heap is
 *   quiet. Safe because nothing acts on it: a tail page whose head it did not see (the block
 *   changed under it) is PAGE_STATE.unknown, and a run never reaches past the pages it was given.
 */
import * as layout from "./core/layout.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { PD_CACHE, PD_FLAGS, PD_WORDS, PG_BUDDY, PG_DEFERRED, PG_HEAD, PG_LARGE, PG_ORDER_MASK, PG_ORDER_SHIFT, PG_PCP, PG_RCU_BLOCK, PG_RESERVED, PG_SLAB } = layout;

/**
 * State codes of heap.pageMap(). A free page in the buddy lists is `free + order` (orders
 * 0..MAX_ORDER); a slab page is `slab + cacheId` (heap.cacheNames() names the ids).
 */
export const PAGE_STATE = Object.freeze({
  /** Metadata in front of the zone (header, per-CPU blocks, cache and page descriptors). */
  reserved: 0,
  /** On a slot's per-CPU page list. */
  pcp: 1,
  /** Freed by freePagesNolock onto the deferred list, not yet back in the buddy lists. */
  deferred: 2,
  /** A block handed out by allocPages. */
  pages: 3,
  /** A kmalloc allocation too large for the size classes. */
  large: 4,
  /** A kfreeRcu block page (addresses waiting for a grace period). */
  rcuBlock: 5,
  /** Changed while it was read: a tail page whose block head was not seen. */
  unknown: 6,
  /** Not the heap's: a page of the buffer below the heap's offset (Heap.create's offset option). */
  outside: 7,
  /** Free in the buddy lists: free + order. */
  free: 16,
  /** A page of a slab: slab + the cache's id. */
  slab: 32,
} as const);

/** Blocks of up to this many pages are written page by page rather than with fill(). */
const SMALL_RUN = 16;

/**
 * Fill `out[0..nrPages)` with one PAGE_STATE code per page. `u32` is a view of the heap, `descW`
 * the word index of page descriptor 0, `basePfn` the heap's first page (its header; the pages
 * below are outside), `zoneStart` the first page the zone manages.
 */
export function readPageMap(u32: Uint32Array, descW: number, basePfn: number, zoneStart: number, nrPages: number, out: Uint16Array): void {
  const outside = Math.min(basePfn, nrPages);
  const reserved = Math.min(zoneStart, nrPages);
  out.fill(PAGE_STATE.outside, 0, outside);
  out.fill(PAGE_STATE.reserved, outside, reserved);
  for (let pfn = reserved; pfn < nrPages; ) {
    const d = descW + pfn * PD_WORDS;
    const f = u32[d + PD_FLAGS]!;
    if ((f & PG_SLAB) !== 0) {
      out[pfn++] = PAGE_STATE.slab + (u32[d + PD_CACHE]! & 0xfff);
      continue;
    }
    const order = (f & PG_ORDER_MASK) >>> PG_ORDER_SHIFT;
    let code: number;
    if ((f & PG_BUDDY) !== 0) code = PAGE_STATE.free + order;
    else if ((f & PG_PCP) !== 0) code = PAGE_STATE.pcp;
    else if ((f & PG_DEFERRED) !== 0) code = PAGE_STATE.deferred;
    else if ((f & PG_LARGE) !== 0) code = PAGE_STATE.large;
    else if ((f & PG_RCU_BLOCK) !== 0) code = PAGE_STATE.rcuBlock;
    else if ((f & PG_HEAD) !== 0) code = PAGE_STATE.pages;
    else if ((f & PG_RESERVED) !== 0) code = PAGE_STATE.reserved;
    else {
      out[pfn++] = PAGE_STATE.unknown;
      continue;
    }
    const end = Math.min(nrPages, pfn + (1 << order));
    // A store per page for small blocks: a fill() call costs more than the few stores it saves.
    if (end - pfn <= SMALL_RUN) while (pfn < end) out[pfn++] = code;
    else {
      out.fill(code, pfn, end);
      pfn = end;
    }
  }
}
