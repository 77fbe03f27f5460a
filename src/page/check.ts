/*
 * The page layer's figures and checks: pageStats (like /proc/buddyinfo), validatePages (every
 * page is reserved, free in the buddy lists, on a pcp list, parked on the deferred list, or in an
 * allocated block, exactly once), and what reclaimSlot runs for the page layer of a dead slot:
 * the buddy-list rebuild for a zone lock it held, and the free of the blocks in its hand.
 *
 * WORDS: reads every descriptor and the zone and pcp words. rebuildBuddyLists (Z_LOCK taken over
 *   by its caller) rewrites Z_FREE_HEAD[], Z_NR_FREE[], Z_FREE_PAGES and the free blocks'
 *   descriptors from the descriptors, and finishes a growth that had not published: Z_MANAGED
 *   plain, Z_SIZE with Atomics.store. freeBlocksInHand clears the tail descriptors of a dead
 *   slot's blocks in hand (no other agent touches a block in another slot's hand) and frees them;
 *   a block it had marked PG_DEFERRED and not yet published is freed under Z_LOCK when the
 *   deferred list does not hold it.
 * LOCKS: validatePages takes every pcp lock it can have (its own with pcpEnter, others' with a
 *   short pcpLockRemote; an idle owner keeps its word) and then the zone lock with lock() (EAGAIN
 *   on a noBlock agent past its bound), and releases them all before it returns; its caller holds
 *   none. freeBlocksInHand takes the zone lock for a PG_DEFERRED block; freeBlock takes pcp -> zone.
 * NO LOCK: pageStats (Z_FREE_PAGES and the deferred word with Atomics.load, the rest plain).
 * STALE: pageStats' figures while other agents run (exact only while the heap is quiet); in
 *   validatePages, the pcp lists of a slot whose lock it could not have are read as they are
 *   (exact while that agent is idle, which is when its owner keeps the word).
 */
import { ErrorCode, HeapError, hex } from "../core/errors.js";
import * as layout from "../core/layout.js";
import type { PageAllocator } from "./page_alloc.js";
import { PAGE_WHERE, PageStats } from "./page_alloc.js";
import { pcpEnter, pcpExit, pcpLockRemote, pcpUnlockRemote } from "./pcp.js";
import { PCP_REMOTE_SPINS } from "./pcp.js";
import { deferSnapshot, freeOneBlock } from "./buddy.js";
import { setWatermarks } from "./hotplug.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { C_BULK_PAGES, C_PCP_COUNT, C_PCP_HEAD, C_STATE, C_STATE_FREE, LOCK, MAX_ORDER, NR_ORDERS, PAGE_SHIFT, PCP_LIST_MAX_ORDER, PD_FLAGS, PD_NEXT, PD_OWNER, PD_PREV, PG_BUDDY, PG_DEFERRED, PG_HEAD, PG_INHAND, PG_LARGE, PG_ORDER_MASK, PG_ORDER_SHIFT, PG_PCP, PG_RCU_BLOCK, PG_RESERVED, PG_SLAB, Z_FREE_HEAD, Z_FREE_PAGES, Z_LOCK, Z_MANAGED, Z_NR_FREE, Z_NR_PAGES, Z_PCP_BATCH, Z_PCP_HIGH, Z_SIZE, Z_WMARK_HIGH, Z_WMARK_LOW, Z_WMARK_MIN } = layout;

/**
 * reclaimSlot, the zone lock taken over from a dead holder: rebuild the buddy free lists and
 * their counts from the page descriptors (every block whose head carries PG_BUDDY), merging
 * buddies as a free does. Whatever the dead agent had in hand stays out of the lists.
 */
export function rebuildBuddyLists(pa: PageAllocator): void {
  const u32 = pa.u32;
  // A growth stopped after the zone took its pages (Z_NR_PAGES) and before it published them:
  // finish it, so that every handle (this one first) sees the pages the dead agent had in hand.
  const nr = u32[pa.hw + Z_NR_PAGES]!;
  if (nr << PAGE_SHIFT !== u32[pa.hw + Z_SIZE]!) {
    u32[pa.hw + Z_MANAGED] = nr - pa.zoneStart;
    setWatermarks(pa, nr - pa.zoneStart);
    Atomics.store(u32, pa.hw + Z_SIZE, nr << PAGE_SHIFT);
    pa.locks.refreshViews();
  }
  const blocks: number[] = [];
  const end = u32[pa.hw + Z_NR_PAGES]!;
  for (let pfn = pa.zoneStart; pfn < end; ) {
    const f = u32[pa.mem.pd(pfn) + PD_FLAGS]!;
    const o = (f & PG_ORDER_MASK) >>> PG_ORDER_SHIFT;
    if ((f & ~PG_ORDER_MASK) === PG_BUDDY) blocks.push(pfn, o);
    pfn += (f & (PG_BUDDY | PG_PCP | PG_DEFERRED | PG_HEAD | PG_LARGE | PG_RCU_BLOCK)) !== 0 ? 1 << o : 1;
  }
  for (let o = 0; o < NR_ORDERS; o++) {
    u32[pa.hw + Z_FREE_HEAD + o] = 0;
    u32[pa.hw + Z_NR_FREE + o] = 0;
  }
  u32[pa.hw + Z_FREE_PAGES] = 0;
  for (let i = 0; i < blocks.length; i += 2) u32[pa.mem.pd(blocks[i]!) + PD_FLAGS] = 0;
  for (let i = 0; i < blocks.length; i += 2) freeOneBlock(pa, blocks[i]!, blocks[i + 1]!);
}

export function pageStats(pa: PageAllocator): PageStats {
  const u32 = pa.u32;
  const buddy: number[] = [];
  for (let o = 0; o < NR_ORDERS; o++) buddy.push(u32[pa.hw + Z_NR_FREE + o]!);
  const pcp: number[] = [];
  for (let cpu = 0; cpu < pa.cpus; cpu++) pcp.push(u32[pa.mem.pcpOf(cpu) + C_PCP_COUNT]!);
  return {
    totalPages: u32[pa.hw + Z_MANAGED]!,
    freePages: Atomics.load(pa.u32, pa.hw + Z_FREE_PAGES),
    buddy,
    pcp,
    deferredPages: deferSnapshot(pa).pages,
    watermarks: { min: u32[pa.hw + Z_WMARK_MIN]!, low: u32[pa.hw + Z_WMARK_LOW]!, high: u32[pa.hw + Z_WMARK_HIGH]! },
    pcpBatch: u32[pa.hw + Z_PCP_BATCH]!,
    pcpHigh: u32[pa.hw + Z_PCP_HIGH]!,
  };
}

/**
 * Check every page-allocator invariant; returns where each page is (PAGE_WHERE per pfn) for the
 * layers above. Takes every pcp lock and the zone lock; the caller asserted it may.
 */
export function validatePages(pa: PageAllocator): Uint8Array {
  // Every pcp lock that can be had; an idle owner keeps its own, and its lists are read as they are.
  const locked = new Uint8Array(pa.cpus);
  for (let cpu = 0; cpu < pa.cpus; cpu++) {
    locked[cpu] = (cpu === pa.cpu ? pcpEnter(pa) : pcpLockRemote(pa, cpu, PCP_REMOTE_SPINS >> 4)) ? 1 : 0;
  }
  try {
    // The zone lock holds growth off: the map covers every page there is. EAGAIN on a noBlock
    // agent past its bound.
    pa.locks.lock(pa.hw + Z_LOCK, LOCK.zone);
  } catch (e) {
    unlockPcps(pa, locked);
    throw e;
  }
  const where = new Uint8Array(pa.nrPages);
  const u32 = pa.u32;
  const bad = (msg: string): never => {
    throw new HeapError(ErrorCode.ECORRUPT, msg);
  };
  const mark = (pfn: number, order: number, w: number, what: string): void => {
    if (pfn < pa.zoneStart || pfn + (1 << order) > pa.nrPages) bad(`${what}: block ${pfn} order ${order} is outside the zone`);
    if ((pfn & ((1 << order) - 1)) !== 0) bad(`${what}: block ${pfn} is not aligned to order ${order}`);
    for (let p = pfn; p < pfn + (1 << order); p++) {
      if (where[p] !== PAGE_WHERE.unseen) bad(`${what}: page ${p} is in two places`);
      where[p] = w;
      if (p !== pfn && u32[pa.mem.pd(p) + PD_FLAGS] !== 0) bad(`${what}: tail page ${p} of block ${pfn} has flags`);
    }
  };
  try {
    for (let pfn = pa.offset >>> PAGE_SHIFT; pfn < pa.zoneStart; pfn++) {
      if (u32[pa.mem.pd(pfn) + PD_FLAGS] !== PG_RESERVED) bad(`metadata page ${pfn} lost PG_RESERVED`);
      where[pfn] = PAGE_WHERE.reserved;
    }
    let free = 0;
    for (let o = 0; o < NR_ORDERS; o++) {
      let n = 0;
      let prev = 0;
      for (let pfn = u32[pa.hw + Z_FREE_HEAD + o]!; pfn !== 0; pfn = u32[pa.mem.pd(pfn) + PD_NEXT]!) {
        const d = pa.mem.pd(pfn);
        if (u32[d + PD_FLAGS] !== (PG_BUDDY | (o << PG_ORDER_SHIFT))) bad(`free_area[${o}] holds page ${pfn} with flags ${hex(u32[d + PD_FLAGS]!)}`);
        if (u32[d + PD_PREV] !== prev) bad(`free_area[${o}]: broken back link at page ${pfn}`);
        mark(pfn, o, PAGE_WHERE.buddy, `free_area[${o}]`);
        const buddy = pfn ^ (1 << o);
        if (o < MAX_ORDER && buddy >= pa.zoneStart && buddy < pa.nrPages && u32[pa.mem.pd(buddy) + PD_FLAGS] === (PG_BUDDY | (o << PG_ORDER_SHIFT))) {
          bad(`free buddies ${pfn} and ${buddy} of order ${o} were left unmerged`);
        }
        prev = pfn;
        n++;
        free += 1 << o;
        if (n > pa.nrPages) bad(`free_area[${o}] is circular`);
      }
      if (n !== u32[pa.hw + Z_NR_FREE + o]) bad(`free_area[${o}].nr_free is ${u32[pa.hw + Z_NR_FREE + o]}, the list holds ${n}`);
    }
    if (free !== u32[pa.hw + Z_FREE_PAGES]) bad(`NR_FREE_PAGES is ${u32[pa.hw + Z_FREE_PAGES]}, the free lists hold ${free}`);
    for (let cpu = 0; cpu < pa.cpus; cpu++) {
      const c = pa.mem.pcpOf(cpu);
      let pages = 0;
      if (u32[c + C_STATE] === C_STATE_FREE && u32[c + C_PCP_COUNT] !== 0) bad(`free slot ${cpu} still caches pages`);
      for (let o = 0; o <= PCP_LIST_MAX_ORDER; o++) {
        let n = 0;
        for (let pfn = u32[c + C_PCP_HEAD + o]!; pfn !== 0; pfn = u32[pa.mem.pd(pfn) + PD_NEXT]!) {
          const d = pa.mem.pd(pfn);
          if (u32[d + PD_FLAGS] !== (PG_PCP | (o << PG_ORDER_SHIFT))) bad(`pcp ${cpu} order ${o} holds page ${pfn} with flags ${hex(u32[d + PD_FLAGS]!)}`);
          if (u32[d + PD_OWNER] !== cpu) bad(`pcp ${cpu} holds page ${pfn} owned by slot ${u32[d + PD_OWNER]}`);
          mark(pfn, o, PAGE_WHERE.pcp, `pcp ${cpu}`);
          n++;
          pages += 1 << o;
        }
      }
      if (pages !== u32[c + C_PCP_COUNT]) bad(`pcp ${cpu} counts ${u32[c + C_PCP_COUNT]} pages, its lists hold ${pages}`);
    }
    // One snapshot of the list and its count: pushes may go on (they only prepend), drains wait
    // for the zone lock.
    const snap = deferSnapshot(pa);
    let deferred = 0;
    for (let pfn = snap.head; pfn !== 0; pfn = u32[pa.mem.pd(pfn) + PD_NEXT]!) {
      const f = u32[pa.mem.pd(pfn) + PD_FLAGS]!;
      if ((f & ~PG_ORDER_MASK) !== PG_DEFERRED) bad(`deferred list holds page ${pfn} with flags ${hex(f)}`);
      const o = (f & PG_ORDER_MASK) >>> PG_ORDER_SHIFT;
      mark(pfn, o, PAGE_WHERE.deferred, "deferred list");
      deferred += 1 << o;
    }
    if (deferred !== snap.pages) bad(`deferred list counts ${snap.pages} pages, holds ${deferred}`);
    // Every other zone page must be the head or part of an allocated block.
    for (let pfn = pa.zoneStart; pfn < pa.nrPages; ) {
      if (where[pfn] !== PAGE_WHERE.unseen) {
        pfn++;
        continue;
      }
      const f = u32[pa.mem.pd(pfn) + PD_FLAGS]!;
      const kinds = PG_HEAD | PG_LARGE | PG_RCU_BLOCK;
      if ((f & kinds) !== 0 && (f & ~(kinds | PG_ORDER_MASK | PG_INHAND)) === 0) {
        const o = (f & PG_ORDER_MASK) >>> PG_ORDER_SHIFT;
        mark(pfn, o, PAGE_WHERE.allocated, `allocated block ${pfn}`);
        pfn += 1 << o;
      } else if ((f & PG_SLAB) !== 0) {
        // Slab pages are checked, and marked, by the slab layer.
        pfn++;
      } else {
        bad(`page ${pfn} (flags ${hex(f)}) is in no free list, no pcp list and no allocated block`);
      }
    }
  } finally {
    pa.locks.unlock(pa.hw + Z_LOCK, LOCK.zone);
    unlockPcps(pa, locked);
  }
  return where;
}

/** Release the pcp locks validatePages took (`locked[cpu]` non-zero). */
export function unlockPcps(pa: PageAllocator, locked: Uint8Array): void {
  for (let cpu = pa.cpus - 1; cpu >= 0; cpu--) {
    if (locked[cpu] === 0) continue;
    if (cpu === pa.cpu) pcpExit(pa);
    else pcpUnlockRemote(pa, cpu);
  }
}

/**
 * reclaimSlot: free every block dead slot `cpu` had in its hands (PG_HEAD | PG_INHAND with PD_OWNER
 * `cpu`: taken off a list and not yet given its kind, on its way back, a slab leaving its cache,
 * a block being merged; a block a nolock free marked PG_DEFERRED and had not yet published, see
 * freeUnpublishedDeferred; the pages of an allocPagesBulk that had not returned, see bulkBackInHand). Their tail descriptors are cleared first (a merge stopped half-way can
 * leave a stale head inside the block). No lock held; freeBlock takes what it needs. Returns the
 * pages freed; `blocks` (if given) counts the blocks.
 */
export function freeBlocksInHand(pa: PageAllocator, cpu: number, blocks?: { n: number }): number {
  bulkBackInHand(pa, cpu);
  let pages = 0;
  let parked: number[] | null = null;
  for (let pfn = pa.zoneStart; pfn < pa.nrPages; pfn++) {
    const d = pa.mem.pd(pfn);
    const f = pa.u32[d + PD_FLAGS]!;
    if ((f & ~PG_ORDER_MASK) === PG_DEFERRED && pa.u32[d + PD_OWNER] === cpu) (parked ??= []).push(pfn);
    if ((f & ~PG_ORDER_MASK) !== (PG_HEAD | PG_INHAND) || pa.u32[d + PD_OWNER] !== cpu) continue;
    const order = (f & PG_ORDER_MASK) >>> PG_ORDER_SHIFT;
    if ((pfn & ((1 << order) - 1)) !== 0 || pfn + (1 << order) > pa.nrPages) continue;
    for (let p = 1; p < 1 << order; p++) pa.u32[pa.mem.pd(pfn + p) + PD_FLAGS] = 0;
    pa.freeBlock(pfn, order, 0);
    pages += 1 << order;
    if (blocks !== undefined) blocks.n++;
    pfn += (1 << order) - 1;
  }
  if (parked !== null) pages += freeUnpublishedDeferred(pa, cpu, parked, blocks);
  return pages;
}

/**
 * reclaimSlot: the pages dead slot `cpu` was handing over in an allocPagesBulk (its bulk hand,
 * C_BULK_PAGES, chained through PD_NEXT) go back in its hand: the call never returned them. Only
 * order-0 blocks of that slot, allocated or in hand, are taken; the walk is bounded.
 */
function bulkBackInHand(pa: PageAllocator, cpu: number): void {
  const u32 = pa.u32;
  const hand = pa.mem.pcpOf(cpu) + C_BULK_PAGES;
  for (let pfn = u32[hand]!, n = 0; pfn >= pa.zoneStart && pfn < pa.nrPages && n < pa.nrPages; n++) {
    const d = pa.mem.pd(pfn);
    const f = u32[d + PD_FLAGS]!;
    if ((f !== PG_HEAD && f !== (PG_HEAD | PG_INHAND)) || u32[d + PD_OWNER] !== cpu) break;
    pfn = u32[d + PD_NEXT]!;
    u32[d + PD_FLAGS] = PG_HEAD | PG_INHAND;
  }
  u32[hand] = 0;
}

/**
 * reclaimSlot: blocks dead slot `cpu` marked PG_DEFERRED (`parked`, seen without a lock) are on
 * the deferred list unless it died before its compareExchange published them; those are freed.
 * Under the zone lock, so that no drain changes the list while it is walked (pushes only
 * prepend, and a live pusher's blocks are its own). Returns the pages freed.
 */
function freeUnpublishedDeferred(pa: PageAllocator, cpu: number, parked: number[], blocks?: { n: number }): number {
  pa.locks.lock(pa.hw + Z_LOCK, LOCK.zone);
  const u32 = pa.u32;
  const listed = new Set<number>();
  for (let pfn = deferSnapshot(pa).head, n = 0; pfn !== 0 && n < pa.nrPages; pfn = u32[pa.mem.pd(pfn) + PD_NEXT]!, n++) listed.add(pfn);
  let pages = 0;
  for (const pfn of parked) {
    const d = pa.mem.pd(pfn);
    const f = u32[d + PD_FLAGS]!;
    const order = (f & PG_ORDER_MASK) >>> PG_ORDER_SHIFT;
    if ((f & ~PG_ORDER_MASK) !== PG_DEFERRED || u32[d + PD_OWNER] !== cpu || listed.has(pfn)) continue;
    if ((pfn & ((1 << order) - 1)) !== 0 || pfn + (1 << order) > pa.nrPages) continue;
    u32[d + PD_OWNER] = pa.cpu;
    u32[d + PD_FLAGS] = PG_HEAD | PG_INHAND | (order << PG_ORDER_SHIFT);
    freeOneBlock(pa, pfn, order);
    pages += 1 << order;
    if (blocks !== undefined) blocks.n++;
  }
  pa.locks.unlock(pa.hw + Z_LOCK, LOCK.zone);
  return pages;
}
