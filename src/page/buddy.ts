/*
 * The buddy lists of the zone: free blocks of orders 0..MAX_ORDER, split on allocation
 * (rmqueueSmallest) and merged with their buddies on free (freeOneBlock), and the lock-free
 * deferred list of blocks parked by frees that could not take the zone lock.
 *
 * WORDS: Z_FREE_HEAD[], Z_NR_FREE[], Z_FREE_PAGES and the PD_FLAGS/PD_OWNER/PD_NEXT/PD_PREV words
 *   of every block on a buddy list or in hand between two lists (PG_HEAD | PG_INHAND, PD_OWNER this
 *   slot, written before the flags), plain stores under Z_LOCK. Z_DEFER_HEAD is an llist: any
 *   agent pushes with compareExchange (deferPage); only a holder of Z_LOCK takes the whole list
 *   (exchange with 0) and frees it (drainDeferredLocked). Z_DEFER_HEAD and Z_DEFER_PAGES are the
 *   halves of one 64-bit word (little-endian, as typed arrays and WebAssembly memory are): both
 *   change only together, by those two atomics. A parked block's descriptor (PG_DEFERRED | order,
 *   PD_NEXT, PD_OWNER the pusher) belongs to the llist until then, written by the pusher before its
 *   compareExchange. pdListAdd and pdListDel also serve the slab partial lists, under that cache's
 *   list lock.
 * LOCKS: the zone lock only, taken by drainDeferred (lockIn(0, ...): a noBlock agent past its
 *   bound leaves the list to the next free). Every other function here runs with Z_LOCK held by
 *   its caller (page_alloc.ts, pcp.ts, hotplug.ts, page/check.ts), after a pcp lock if any.
 * NO LOCK: deferPage (the llist push: a nolock free with the pcp and zone locks busy).
 * STALE: the deferred word is read by stats() and validate as one 64-bit snapshot, list and count
 *   together. Nothing here is read stale for a decision: the buddy words under Z_LOCK only.
 */
import { ErrorCode, HeapError, hex } from "../core/errors.js";
import * as layout from "../core/layout.js";
import type { PageAllocator } from "./page_alloc.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { LOCK, MAX_ORDER, PAGE_SHIFT, PD_FLAGS, PD_NEXT, PD_OWNER, PD_PREV, PG_BUDDY, PG_DEFERRED, PG_HEAD, PG_INHAND, PG_ORDER_MASK, PG_ORDER_SHIFT, VM, Z_DEFER_HEAD, Z_FREE_HEAD, Z_FREE_PAGES, Z_LOCK, Z_NR_FREE, Z_NR_PAGES } = layout;

/** __rmqueue_smallest: the first free block of order >= `order`, split down. Zone lock held. */
export function rmqueueSmallest(pa: PageAllocator, order: number): number {
  const u32 = pa.u32;
  for (let o = order; o <= MAX_ORDER; o++) {
    const pfn = u32[pa.hw + Z_FREE_HEAD + o]!;
    if (pfn === 0) continue;
    buddyDel(pa, pfn, o);
    // A block in hand is this slot's until prepNewBlock says what it is: an agent killed on the
    // way is found by reclaimSlot (PG_INHAND, PD_OWNER, written first) and the block freed. The
    // whole block is in hand first, and shrinks after each half goes back, so that no page of
    // it is ever outside a block (a half listed and still inside the block in hand is dropped
    // by rebuildBuddyLists, which walks past it, and freed with the block).
    u32[pa.mem.pd(pfn) + PD_OWNER] = pa.cpu;
    u32[pa.mem.pd(pfn) + PD_FLAGS] = PG_HEAD | PG_INHAND | (o << PG_ORDER_SHIFT);
    // expand(): hand the upper halves back, largest first.
    for (let high = o; high > order; ) {
      high--;
      const half = pfn + (1 << high);
      u32[pa.mem.pd(half) + PD_FLAGS] = PG_BUDDY | (high << PG_ORDER_SHIFT);
      buddyAdd(pa, half, high);
      u32[pa.mem.pd(pfn) + PD_FLAGS] = PG_HEAD | PG_INHAND | (high << PG_ORDER_SHIFT);
    }
    u32[pa.hw + Z_FREE_PAGES] = u32[pa.hw + Z_FREE_PAGES]! - (1 << order);
    return pfn;
  }
  return 0;
}

/**
 * __free_one_page: merge with free buddies while they exist, then list the block. Zone lock held.
 * Between any two statements every page is in a block a reader can walk: the merged block is a
 * block in this slot's hand (PG_INHAND) before the half that stops being a head is cleared, so a
 * reclaim of an agent killed here (rebuildBuddyLists, then the blocks in hand) loses no page.
 */
export function freeOneBlock(pa: PageAllocator, pfn: number, order: number): void {
  const u32 = pa.u32;
  u32[pa.hw + Z_FREE_PAGES] = u32[pa.hw + Z_FREE_PAGES]! + (1 << order);
  const end = u32[pa.hw + Z_NR_PAGES]!;
  while (order < MAX_ORDER) {
    const buddy = pfn ^ (1 << order);
    if (buddy < pa.zoneStart || buddy >= end) break;
    const bd = pa.mem.pd(buddy);
    if (u32[bd + PD_FLAGS] !== (PG_BUDDY | (order << PG_ORDER_SHIFT))) break;
    buddyDel(pa, buddy, order);
    const merged = pfn & buddy;
    u32[pa.mem.pd(merged) + PD_OWNER] = pa.cpu;
    u32[pa.mem.pd(merged) + PD_FLAGS] = PG_HEAD | PG_INHAND | ((order + 1) << PG_ORDER_SHIFT);
    u32[pa.mem.pd(merged === pfn ? buddy : pfn) + PD_FLAGS] = 0;
    pfn = merged;
    order++;
  }
  u32[pa.mem.pd(pfn) + PD_FLAGS] = PG_BUDDY | (order << PG_ORDER_SHIFT);
  buddyAdd(pa, pfn, order);
}

/**
 * Push a block on the zone's deferred llist (freePagesNolock with both locks busy). The head and
 * the count are one 64-bit word (pa.deferWord: the pfn in the low half, the pages in the high
 * half): one compareExchange publishes the block and counts it. Until it succeeds the block is
 * PG_DEFERRED with PD_OWNER this slot (freeBlock wrote it) and on no list: reclaimSlot of a slot
 * killed here frees it (freeBlocksInHand).
 */
export function deferPage(pa: PageAllocator, pfn: number, order: number): void {
  const w = pa.deferWord;
  const d = pa.mem.pd(pfn);
  pa.u32[d + PD_FLAGS] = PG_DEFERRED | (order << PG_ORDER_SHIFT);
  for (;;) {
    const old = Atomics.load(w, 0);
    pa.u32[d + PD_NEXT] = Number(old & DEFER_PFN_MASK);
    const now = (((old >> DEFER_PAGES_SHIFT) + BigInt(1 << order)) << DEFER_PAGES_SHIFT) | BigInt(pfn);
    // Publication point: the compareExchange makes PD_NEXT and PD_FLAGS visible to the drainer.
    if (Atomics.compareExchange(w, 0, old, now) === old) break;
  }
  pa.locks.vmInc(VM.pagesDeferred, 1 << order);
}

/** The deferred word's halves: the head pfn (Z_DEFER_HEAD), the pages on the list (Z_DEFER_PAGES). */
const DEFER_PFN_MASK = 0xffffffffn;
const DEFER_PAGES_SHIFT = 32n;

/** The deferred list as one snapshot: its head pfn and the pages it counts. */
export function deferSnapshot(pa: PageAllocator): { head: number; pages: number } {
  const v = Atomics.load(pa.deferWord, 0);
  return { head: Number(v & DEFER_PFN_MASK), pages: Number(v >> DEFER_PAGES_SHIFT) };
}

/** Take the zone lock and free the deferred llist (a normal caller found it non-empty). */
export function drainDeferred(pa: PageAllocator): void {
  if (!pa.locks.lockIn(0, pa.hw + Z_LOCK, LOCK.zone)) return; // a noBlock agent leaves it to the next free
  drainDeferredLocked(pa);
  pa.locks.unlock(pa.hw + Z_LOCK, LOCK.zone);
}

/**
 * Free every block parked on the deferred llist. Zone lock held. The blocks are popped one at a
 * time, the head and its count moved together by one compareExchange (only a holder of the zone
 * lock pops, and pushers only push, so a popped head cannot come back in between: no ABA). Before
 * its pop a block gets this slot in PD_OWNER: a drainer killed between a pop and the block's free
 * leaves one block PG_DEFERRED on no list with its own slot as owner, which reclaimSlot frees
 * (freeBlocksInHand), and the count never includes a block the list no longer holds.
 */
export function drainDeferredLocked(pa: PageAllocator): void {
  const i32 = pa.i32;
  if (Atomics.load(i32, pa.hw + Z_DEFER_HEAD) === 0) return;
  const w = pa.deferWord;
  // Bounded, and every entry checked before it is freed: a cycle or a stray pfn is reported and
  // the rest of the list is dropped, never walked for ever nor merged into the buddy lists. The
  // bound is the zone's size in pages (zoneStart and nrPages are absolute).
  const limit = pa.nrPages - pa.zoneStart;
  let pages = 0;
  for (;;) {
    const old = Atomics.load(w, 0);
    const pfn = Number(old & DEFER_PFN_MASK);
    if (pfn === 0) break;
    const d = pa.mem.pd(pfn);
    const f = pfn >= pa.zoneStart && pfn < pa.nrPages ? pa.u32[d + PD_FLAGS]! : 0;
    const order = (f & PG_ORDER_MASK) >>> PG_ORDER_SHIFT;
    if ((f & ~PG_ORDER_MASK) !== PG_DEFERRED || pages + (1 << order) > limit || (pfn & ((1 << order) - 1)) !== 0) {
      // Drop the list from here (a push meanwhile: look again, its block heads a valid list).
      if (Atomics.compareExchange(w, 0, old, 0n) !== old) continue;
      pa.locks.reportDeferred(new HeapError(ErrorCode.ECORRUPT, `the deferred page list is broken at page ${pfn} (flags ${hex(f)}, after ${pages} pages): the rest is dropped`), pfn << PAGE_SHIFT);
      break;
    }
    pa.u32[d + PD_OWNER] = pa.cpu;
    const next = pa.u32[d + PD_NEXT]!;
    const left = (old >> DEFER_PAGES_SHIFT) - BigInt(1 << order);
    // The pop: the block leaves the list and its count at once (a push meanwhile: try again).
    if (Atomics.compareExchange(w, 0, old, ((left < 0n ? 0n : left) << DEFER_PAGES_SHIFT) | BigInt(next)) !== old) continue;
    pa.u32[d + PD_FLAGS] = PG_HEAD | PG_INHAND | (order << PG_ORDER_SHIFT);
    freeOneBlock(pa, pfn, order);
    pages += 1 << order;
  }
  pa.locks.vmInc(VM.pagesUndeferred, pages);
}

export function buddyAdd(pa: PageAllocator, pfn: number, order: number): void {
  pdListAdd(pa, pa.hw + Z_FREE_HEAD + order, pa.hw + Z_NR_FREE + order, pfn);
}

export function buddyDel(pa: PageAllocator, pfn: number, order: number): void {
  pdListDel(pa, pa.hw + Z_FREE_HEAD + order, pa.hw + Z_NR_FREE + order, pfn);
}

/**
 * Push page `pfn` on the doubly linked list of page descriptors (PD_NEXT, PD_PREV) whose head pfn
 * is at word `head` and length at word `count`: a buddy free list, a slab partial list. The
 * lock that guards the list is held.
 */
export function pdListAdd(pa: PageAllocator, head: number, count: number, pfn: number): void {
  const u32 = pa.u32;
  const d = pa.mem.pd(pfn);
  const first = u32[head]!;
  u32[d + PD_NEXT] = first;
  u32[d + PD_PREV] = 0;
  if (first !== 0) u32[pa.mem.pd(first) + PD_PREV] = pfn;
  u32[head] = pfn;
  u32[count] = u32[count]! + 1;
}

/** Unlink page `pfn` from the list at `head` / `count` (see pdListAdd). */
export function pdListDel(pa: PageAllocator, head: number, count: number, pfn: number): void {
  const u32 = pa.u32;
  const d = pa.mem.pd(pfn);
  const next = u32[d + PD_NEXT]!;
  const prev = u32[d + PD_PREV]!;
  if (prev !== 0) u32[pa.mem.pd(prev) + PD_NEXT] = next;
  else u32[head] = next;
  if (next !== 0) u32[pa.mem.pd(next) + PD_PREV] = prev;
  u32[d + PD_NEXT] = 0;
  u32[d + PD_PREV] = 0;
  u32[count] = u32[count]! - 1;
}
