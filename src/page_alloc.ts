/*
 * The page allocator: one zone of buddy free lists (orders 0..10) with per-CPU page lists (pcp)
 * for orders 0..PCP_LIST_MAX_ORDER (5); the nolock calls serve orders 0..PCP_MAX_ORDER (3).
 *
 * LOCKING CONTRACT
 *
 *   Z_LOCK (class zone) protects the zone's words: Z_FREE_HEAD[], Z_NR_FREE[], Z_FREE_PAGES, the
 *     watermarks, Z_MANAGED, Z_SIZE and Z_NR_PAGES (memory hotplug grows the buffer and adds pages
 *     under it; handles read Z_SIZE with Atomics.load to rebuild their views), and the
 *     D_FLAGS/D_NEXT/D_PREV words of every block on a buddy free list. It is taken after a pcp
 *     lock, never before one.
 *   C_PCP_LOCK of a slot (class pcp) protects that slot's C_PCP_* list words and the descriptors of
 *     the blocks on its lists. It is a biased lock: the owner slot takes the word once
 *     (compareExchange 0 -> owner) and keeps it between calls, so a pcp section costs it no atomic.
 *     Entering is a trylock (pcpEnter, seed 002): it fails when C_PCP_BUSY shows this agent is
 *     already inside (a hook re-entered; seed 004: also with one agent) or when the word is not
 *     the owner's; then allocation and free go straight to the buddy lists. Another agent that
 *     needs the lists (GFP.KERNEL direct reclaim, validate, shrink) raises C_PCP_REQ and spins,
 *     bounded, until the word is 0, then takes it with compareExchange; the owner hands the word
 *     over (Atomics.store 0) at its next pcp entry or exit when C_PCP_REQ is non-zero. An owner
 *     that makes no pcp call keeps its lists (at most `high` pages): remote drains are best effort.
 *     detach takes its own word unconditionally, waiting out a remote holder's short section.
 *     reclaimSlot takes the word of a dead slot (recounting its lists first if it died inside a
 *     pcp section), and takes over another slot's word a dead remote drainer held.
 *   Z_DEFER_HEAD is a lock-free llist (compareExchange on the head, any agent pushes); only a holder
 *     of Z_LOCK takes the whole list (exchange with 0) and frees it: every normal free that reaches
 *     the zone, a normal pcp free that sees the list non-empty, pcp drains and direct reclaim. A
 *     parked block's descriptor (PG_DEFERRED | order, D_NEXT) belongs to the llist until then.
 *     The drain is bounded by the zone's size and checks every entry: a broken list is reported to
 *     onError and the rest dropped.
 *   The descriptor of an allocated block (PG_HEAD, PG_LARGE, PG_SLAB, PG_RCU_BLOCK) belongs to its
 *     owner; only the head page's descriptor is non-zero (slab tails excepted, see slab.ts).
 *   A block in hand (taken off a pcp or buddy list, not yet given its kind; on its way back to
 *     them; a slab leaving its cache; a block being merged; pages a growth adds) is PG_HEAD |
 *     PG_INHAND | order with D_OWNER this slot, the owner written before the flags: between any two
 *     statements each page is in a list or in a block a reader can walk, and reclaimSlot of a dead
 *     slot frees every block in its hand (freeBlocksInHand), so a kill loses no page
 *     (test/reclaim-points.test.ts, test/reclaim-trust.test.ts, test/kill.test.ts). reclaimSlot,
 *     taking the zone lock over, rebuilds the buddy lists from the descriptors and finishes a
 *     growth that had not published Z_SIZE. Residual: a nolock free parked on the deferred llist
 *     by an agent killed between its compareExchange and its Z_DEFER_PAGES add leaves that count
 *     off by the block.
 *
 *   Lock order: pcp -> zone. Normal calls take zone with lock() and assert first that this agent
 *   holds no zone lock (EDEADLK otherwise, before anything changes). Nolock calls (GFP_TRYLOCK)
 *   take both with trylock only, never spin and never wait: allocation returns 0, a free is parked.
 *   On an agent that must not block, normal calls take zone with lockIn(0, ...), which gives up
 *   past NOBLOCK_BOUND_MS: then they behave as the nolock calls (0, a parked block, no drain);
 *   grow and validate, which cannot degrade, throw EAGAIN before they change anything. A noBlock
 *   agent waits at most PCP_NOBLOCK_SPINS on another slot's pcp word.
 *
 *   Paths that take no lock: none, but a pcp hit holds only this slot's biased pcp lock, which
 *   costs plain loads and stores while no other agent asks for it.
 */
import { checkInt, checkOut, describe, einval, storeOut } from "./check.js";
import { ErrorCode, HeapError, hex } from "./errors.js";
import { GFP, GFP_NOWAIT_MASK, GFP_PUBLIC_MASK, GFP_TRYLOCK } from "./gfp.js";
import {
  C_PCP_COUNT,
  C_PCP_HEAD,
  C_PCP_BUSY,
  C_PCP_LOCK,
  C_PCP_REQ,
  C_PCP_REQ_AT,
  C_PCP_NR,
  C_STATE,
  C_VMSTAT,
  D_FLAGS,
  D_NEXT,
  D_OWNER,
  D_PREV,
  H_FAIL_RATE,
  LOCK,
  MAX_ORDER,
  NR_ORDERS,
  NR_PCP_ORDERS,
  ORDER_MASK,
  ORDER_SHIFT,
  PAGE_SHIFT,
  PAGE_SIZE,
  PCP_LIST_MAX_ORDER,
  PCP_MAX_ORDER,
  PD_WORDS,
  PG_BUDDY,
  PG_DEFERRED,
  PG_HEAD,
  PG_INHAND,
  PG_LARGE,
  PG_PCP,
  PG_RCU_BLOCK,
  PG_RESERVED,
  PG_SLAB,
  SLOT_FREE,
  VM,
  Z_DEFER_HEAD,
  Z_DEFER_PAGES,
  Z_FREE_HEAD,
  Z_FREE_PAGES,
  Z_LOCK,
  Z_MANAGED,
  Z_NR_FREE,
  Z_PCP_BATCH,
  Z_PCP_HIGH,
  Z_NR_PAGES,
  Z_SIZE,
  Z_WMARK_HIGH,
  Z_WMARK_LOW,
  Z_WMARK_MIN,
} from "./layout.js";
import { MmBase } from "./mm.js";
import { TP, TRACE_EVENTS, type TraceRecord } from "./trace.js";

/** Rounds a remote agent waits for a pcp owner to hand its lock over. */
const PCP_REMOTE_SPINS = 1 << 16;
/** WebAssembly's page size: memory.grow counts in these. */
const WASM_PAGE_SIZE = 65536;
/** Read-only spins of a noBlock agent on another slot's pcp word (a few µs). */
const PCP_NOBLOCK_SPINS = 1 << 10;

/** Which watermark an allocation must leave free. */
const WMARK_MIN = 0;
const WMARK_LOW = 1;
const WMARK_RESERVE = 2; // GFP.ATOMIC: half of min

export interface PageStats {
  totalPages: number;
  freePages: number;
  buddy: number[];
  pcp: number[];
  deferredPages: number;
  watermarks: { min: number; low: number; high: number };
  pcpBatch: number;
  pcpHigh: number;
}

/** Where validate() found each page: one of these per page. */
export const PAGE_WHERE = {
  unseen: 0,
  reserved: 1,
  buddy: 2,
  pcp: 3,
  deferred: 4,
  allocated: 5,
} as const;

export class PageAllocator extends MmBase {
  /* ================================================================= public entry points */

  /** 2^order contiguous pages aligned to their size, or 0. */
  allocPages(order: number, gfp: number = GFP.KERNEL): number {
    // Fast path: a pcp hit, this slot holding its biased pcp lock, nothing to report or inject.
    const i32 = this.i32;
    const c = this.pcpuW;
    if (
      typeof order === "number" && order >>> 0 === order && order <= PCP_LIST_MAX_ORDER && gfp === 0 && !this.reentrant && !this.detached &&
      i32[c + C_PCP_BUSY] === 0 && i32[c + C_PCP_LOCK] === this.me && i32[c + C_PCP_REQ] === 0 && i32[this.hw + H_FAIL_RATE] === 0
    ) {
      const pfn = i32[c + C_PCP_HEAD + order]!;
      if (pfn !== 0) {
        const d = this.descW + pfn * PD_WORDS;
        i32[c + C_PCP_HEAD + order] = i32[d + D_NEXT]!;
        i32[c + C_PCP_NR + order] = i32[c + C_PCP_NR + order]! - 1;
        i32[c + C_PCP_COUNT] = i32[c + C_PCP_COUNT]! - (1 << order);
        i32[d + D_FLAGS] = PG_HEAD | (order << ORDER_SHIFT);
        i32[d + D_OWNER] = this.cpu;
        i32[c + C_VMSTAT + VM.pgalloc] = i32[c + C_VMSTAT + VM.pgalloc]! + (1 << order);
        return pfn << PAGE_SHIFT;
      }
    }
    return this.allocPagesSlow(order, gfp);
  }

  private allocPagesSlow(order: number, gfp: number): number {
    this.assertLive();
    checkOrder(order);
    checkGfp(gfp);
    if ((gfp & GFP.FAST_TRY) === 0) this.assertCanLock(LOCK.zone);
    const pfn = this.rmqueue(order, gfp);
    if (pfn === 0) return this.allocFailed(order, gfp);
    return this.prepNewBlock(pfn, order, PG_HEAD, gfp);
  }

  /** Free a block that allocPages returned, with the order it was allocated with. */
  freePages(addr: number, order: number): void {
    // Fast path: the head of a live block of this order goes on this slot's pcp list below high.
    const i32 = this.i32;
    const c = this.pcpuW;
    if (
      typeof addr === "number" && typeof order === "number" &&
      addr >>> 0 === addr && (addr & (PAGE_SIZE - 1)) === 0 && addr < this.size && order >>> 0 === order && order <= PCP_LIST_MAX_ORDER &&
      !this.reentrant && !this.detached && i32[c + C_PCP_BUSY] === 0 && i32[c + C_PCP_LOCK] === this.me && i32[c + C_PCP_REQ] === 0
    ) {
      const pfn = addr >>> PAGE_SHIFT;
      const d = this.descW + pfn * PD_WORDS;
      const count = i32[c + C_PCP_COUNT]! + (1 << order);
      if (pfn >= this.zoneStart && i32[d + D_FLAGS] === (PG_HEAD | (order << ORDER_SHIFT)) && count <= i32[this.hw + Z_PCP_HIGH]! && i32[this.hw + Z_DEFER_HEAD] === 0) {
        i32[d + D_FLAGS] = PG_PCP | (order << ORDER_SHIFT);
        // The block may have been allocated by another slot: it is this slot's now.
        i32[d + D_OWNER] = this.cpu;
        i32[d + D_NEXT] = i32[c + C_PCP_HEAD + order]!;
        i32[c + C_PCP_HEAD + order] = pfn;
        i32[c + C_PCP_NR + order] = i32[c + C_PCP_NR + order]! + 1;
        i32[c + C_PCP_COUNT] = count;
        i32[c + C_VMSTAT + VM.pgfree] = i32[c + C_VMSTAT + VM.pgfree]! + (1 << order);
        return;
      }
    }
    this.freePagesSlow(addr, order);
  }

  private freePagesSlow(addr: number, order: number): void {
    this.assertLive();
    checkOrder(order);
    const pfn = this.checkBlock(addr, order, PG_HEAD);
    this.assertCanLock(LOCK.zone);
    this.vmInc(VM.pgfree, 1 << order);
    if ((this.trace.mask & (1 << TP.mm_page_free)) !== 0) this.emitPage(TP.mm_page_free, pfn, order);
    this.freeBlock(pfn, order, 0);
  }

  /**
   * Fill `out` with up to `count` order-0 pages; returns how many. One pcp lock hold serves the
   * whole batch while the pcp lists can.
   */
  allocPagesBulk(count: number, out: number[] | Uint32Array, gfp: number = GFP.KERNEL): number {
    this.assertLive();
    checkInt("count", count, 0, 0x7fffffff, " of pages");
    checkOut("out", out, count);
    checkGfp(gfp);
    if ((gfp & GFP.FAST_TRY) === 0) this.assertCanLock(LOCK.zone);
    // A plain array is filled only after every page is taken and every lock dropped: a write it
    // refuses (a Proxy, a setter) then costs the pages, not a lock or a leak.
    const got: number[] | Uint32Array = out instanceof Uint32Array ? out : [];
    let n = 0;
    if (count > 1 && this.u32[this.hw + H_FAIL_RATE] === 0 && this.pcpEnter()) {
      for (; n < count; n++) {
        const pfn = this.rmqueuePcp(0, gfp);
        if (pfn === 0) break;
        got[n] = pfn;
      }
      this.pcpExit();
    }
    for (; n < count; n++) {
      const pfn = this.rmqueue(0, gfp);
      if (pfn === 0) break;
      got[n] = pfn;
    }
    for (let i = 0; i < n; i++) got[i] = this.prepNewBlock(got[i]!, 0, PG_HEAD, gfp);
    if (got !== out) {
      const refused = storeOut(out, got, n);
      if (refused !== null) {
        for (let i = 0; i < n; i++) this.freePages(got[i]!, 0);
        einval(`out refused a write (${refused}): the ${n} pages taken were freed again`);
      }
    }
    if (n < count) this.allocFailed(0, gfp | GFP.NOWARN);
    return n;
  }

  /**
   * allocPages that is safe from any context: pcp trylock, then zone trylock, then 0. Orders above
   * PCP_MAX_ORDER give 0. Only GFP.ZERO is taken from `gfp`.
   */
  allocPagesNolock(order: number, gfp: number = 0): number {
    this.assertLive();
    checkOrder(order);
    checkGfp(gfp);
    if (order > PCP_MAX_ORDER) return 0;
    if (this.closing) {
      this.vmInc(VM.nolockFail, 1);
      return 0;
    }
    const flags = (gfp & GFP.ZERO) | GFP_TRYLOCK | GFP.NOWAIT;
    const pfn = this.rmqueue(order, flags);
    if (pfn === 0) {
      this.vmInc(VM.nolockFail, 1);
      return 0;
    }
    return this.prepNewBlock(pfn, order, PG_HEAD, flags);
  }

  /** freePages that is safe from any context: never spins, never waits; parks the block if it must. */
  freePagesNolock(addr: number, order: number): void {
    this.assertLive();
    checkOrder(order);
    const pfn = this.checkBlock(addr, order, PG_HEAD);
    // In hand from here (a second free of it is refused; a kill leaves it to reclaimSlot).
    this.u32[this.pd(pfn) + D_OWNER] = this.cpu;
    this.u32[this.pd(pfn) + D_FLAGS] = PG_HEAD | PG_INHAND | (order << ORDER_SHIFT);
    this.vmInc(VM.pgfree, 1 << order);
    if ((this.trace.mask & (1 << TP.mm_page_free)) !== 0) this.emitPage(TP.mm_page_free, pfn, order);
    this.freeBlock(pfn, order, GFP_TRYLOCK);
  }

  /* ================================================================= allocation internals */

  /**
   * Take a block of 2^order pages out of the allocator; returns its pfn with D_FLAGS 0, or 0.
   * The caller checked its mode against the locks it holds.
   */
  protected rmqueue(order: number, gfp: number): number {
    const pfn = this.rmqueueAny(order, gfp);
    // Memory hotplug: a block from pages added after this handle built its views.
    if (pfn !== 0 && pfn + (1 << order) > this.nrPages) this.refreshViews();
    return pfn;
  }

  private rmqueueAny(order: number, gfp: number): number {
    if (this.u32[this.hw + H_FAIL_RATE] !== 0 && this.shouldFail()) return 0;
    if (order <= PCP_LIST_MAX_ORDER) {
      if (this.pcpEnter()) {
        const pfn = this.rmqueuePcp(order, gfp);
        this.pcpExit();
        if (pfn !== 0) return pfn;
      } else {
        this.vmInc(VM.pcpTrylockFail, 1);
      }
      if ((gfp & GFP.FAST_TRY) !== 0) {
        this.vmInc(VM.fastTryFail, 1);
        return 0;
      }
    } else if ((gfp & GFP.FAST_TRY) !== 0) {
      return 0;
    }
    return this.rmqueueBuddy(order, gfp);
  }

  /** Pop a block from this slot's pcp list, refilling the list from the zone. pcp lock held. */
  private rmqueuePcp(order: number, gfp: number): number {
    const u32 = this.u32;
    const c = this.pcpuW;
    let pfn = u32[c + C_PCP_HEAD + order]!;
    if (pfn === 0) {
      if ((gfp & GFP.FAST_TRY) !== 0 || !this.pcpRefill(order, gfp)) return 0;
      pfn = u32[c + C_PCP_HEAD + order]!;
    }
    const d = this.pd(pfn);
    u32[c + C_PCP_HEAD + order] = u32[d + D_NEXT]!;
    u32[c + C_PCP_NR + order] = u32[c + C_PCP_NR + order]! - 1;
    u32[c + C_PCP_COUNT] = u32[c + C_PCP_COUNT]! - (1 << order);
    // In hand: this slot's until prepNewBlock (see rmqueueSmallest). The owner is written first.
    u32[d + D_OWNER] = this.cpu;
    u32[d + D_FLAGS] = PG_HEAD | PG_INHAND | (order << ORDER_SHIFT);
    return pfn;
  }

  /** rmqueue_bulk: move up to `batch` pages of `order` blocks from the zone to this slot's list. */
  private pcpRefill(order: number, gfp: number): boolean {
    if (!this.lockIn(gfp & GFP_TRYLOCK, this.hw + Z_LOCK, LOCK.zone)) {
      this.vmInc(VM.zoneTrylockFail, 1);
      return false;
    }
    const u32 = this.u32;
    const c = this.pcpuW;
    const want = Math.max(1, u32[this.hw + Z_PCP_BATCH]! >>> order);
    const pages = 1 << order;
    let got = 0;
    for (; got < want; got++) {
      // The first block needs only the request's watermark; extra blocks must leave `low` free.
      if (!this.watermarkOk(order, got === 0 ? wmarkFor(gfp) : WMARK_LOW)) break;
      const pfn = this.rmqueueSmallest(order);
      if (pfn === 0) break;
      const d = this.pd(pfn);
      u32[d + D_FLAGS] = PG_PCP | (order << ORDER_SHIFT);
      u32[d + D_OWNER] = this.cpu;
      u32[d + D_NEXT] = u32[c + C_PCP_HEAD + order]!;
      u32[c + C_PCP_HEAD + order] = pfn;
      if ((this.trace.mask & (1 << TP.mm_page_alloc_zone_locked)) !== 0) {
        this.emitPage(TP.mm_page_alloc_zone_locked, pfn, order);
      }
    }
    u32[c + C_PCP_NR + order] = u32[c + C_PCP_NR + order]! + got;
    u32[c + C_PCP_COUNT] = u32[c + C_PCP_COUNT]! + got * pages;
    const grown = u32[this.hw + Z_NR_PAGES]! > this.nrPages;
    this.unlock(this.hw + Z_LOCK, LOCK.zone);
    // Pages on the list may come from pages added after this handle built its views.
    if (grown) this.refreshViews();
    if (got > 0) this.vmInc(VM.pcpRefill, 1);
    return got > 0;
  }

  /** Allocate from the buddy lists, with direct reclaim for GFP.KERNEL. */
  private rmqueueBuddy(order: number, gfp: number): number {
    if (!this.lockIn(gfp & GFP_TRYLOCK, this.hw + Z_LOCK, LOCK.zone)) {
      this.vmInc(VM.zoneTrylockFail, 1);
      return 0;
    }
    const kernel = (gfp & GFP_NOWAIT_MASK) === 0;
    let pfn = this.watermarkOk(order, kernel ? WMARK_LOW : wmarkFor(gfp)) ? this.rmqueueSmallest(order) : 0;
    if (pfn !== 0 && (this.trace.mask & (1 << TP.mm_page_alloc_zone_locked)) !== 0) {
      this.emitPage(TP.mm_page_alloc_zone_locked, pfn, order);
    }
    this.unlock(this.hw + Z_LOCK, LOCK.zone);
    if (pfn === 0 && kernel && !this.holdsFrom(LOCK.pcp)) pfn = this.allocSlowReclaim(order);
    return pfn;
  }

  /**
   * GFP.KERNEL below the low watermark: take back the slab caches' kept empty slabs, drain every
   * slot's pcp lists; grow the heap if it may grow (memory hotplug); then allocate down to min.
   */
  private allocSlowReclaim(order: number): number {
    this.vmInc(VM.directReclaim, 1);
    // The slab caches' kept empty slabs first, so that the pcp drain below takes their pages too.
    this.reclaimSlabs();
    this.drainAllPcp();
    // An agent that must not block gives up past its bound: the allocation returns 0.
    if (!this.lockIn(0, this.hw + Z_LOCK, LOCK.zone)) return 0;
    this.drainDeferredLocked();
    // Memory hotplug: grow rather than dip below low, and when no block of this order is free.
    if (!this.watermarkOk(order, WMARK_LOW)) this.growFor(order);
    let pfn = this.watermarkOk(order, WMARK_MIN) ? this.rmqueueSmallest(order) : 0;
    if (pfn === 0 && this.growFor(order)) pfn = this.watermarkOk(order, WMARK_MIN) ? this.rmqueueSmallest(order) : 0;
    if (pfn !== 0 && (this.trace.mask & (1 << TP.mm_page_alloc_zone_locked)) !== 0) {
      this.emitPage(TP.mm_page_alloc_zone_locked, pfn, order);
    }
    this.unlock(this.hw + Z_LOCK, LOCK.zone);
    return pfn;
  }

  /**
   * Grow the heap to `bytes` (rounded up to pages, at most maxSize): the buffer grows and the new
   * pages join the zone, merged with their free buddies (memory hotplug). Returns the new size.
   * Other agents' handles rebuild their views when they meet the new pages.
   */
  grow(bytes: number): number {
    this.assertLive();
    // A heap on WebAssembly memory grows through memory.grow (its buffer reports growable false).
    if (this.memory === null && (this.buffer as { growable?: boolean }).growable !== true) {
      einval(`this heap cannot grow: it was created without a maxSize above its size (${this.size} bytes), so its buffer is not growable; pass Heap.create({ size, maxSize }) to allow growth`);
    }
    checkInt("bytes", bytes, 1, this.maxSize, " of bytes", `this heap grows to at most its maxSize, ${this.maxSize} bytes`);
    const want = Math.ceil(bytes / PAGE_SIZE) * PAGE_SIZE;
    this.assertCanLock(LOCK.zone);
    this.lock(this.hw + Z_LOCK, LOCK.zone);
    try {
      this.growLocked(want);
    } finally {
      this.unlock(this.hw + Z_LOCK, LOCK.zone);
    }
    this.refreshViews();
    if (this.size < want) {
      throw new HeapError(ErrorCode.EINVAL, `the buffer could not grow to ${want} bytes (a WebAssembly.Memory's maximum, or the buffer's maxByteLength); the heap stays at ${this.size}`);
    }
    return this.size;
  }

  /**
   * Grow by a quarter of the heap at least, and far enough that a block of `order` fits, aligned,
   * in the new pages with the high watermark on top; false when the heap is at maxSize. Zone lock held.
   */
  private growFor(order: number): boolean {
    const size = this.u32[this.hw + Z_SIZE]!;
    if (size >= this.maxSize) return false;
    const block = PAGE_SIZE << order;
    const fit = Math.ceil(size / block) * block + block + this.u32[this.hw + Z_WMARK_HIGH]! * PAGE_SIZE;
    const want = Math.min(this.maxSize, Math.max(fit, size + Math.ceil(size / 4 / PAGE_SIZE) * PAGE_SIZE));
    this.growLocked(want);
    // The buffer may stop short of maxSize (a WebAssembly.Memory's maximum): try the least that fits.
    if (this.u32[this.hw + Z_SIZE]! === size && fit < want) this.growLocked(fit);
    return true;
  }

  /** Grow to `want` bytes if larger than now. Zone lock held. */
  private growLocked(want: number): void {
    const u32 = this.u32;
    const old = u32[this.hw + Z_SIZE]!;
    if (want <= old) return;
    if (!this.growBuffer(want)) return;
    const from = old >>> PAGE_SHIFT;
    const to = want >>> PAGE_SHIFT;
    // The new pages are blocks in this slot's hand before the zone reaches them: an agent killed
    // from here on leaves blocks that reclaimSlot frees (rebuildBuddyLists first finishes the
    // growth: Z_MANAGED and Z_SIZE follow Z_NR_PAGES), never pages that belong to nothing.
    for (let pfn = from; pfn < to; pfn++) u32[this.pd(pfn) + D_FLAGS] = 0;
    for (let pfn = from; pfn < to; ) {
      const order = growOrder(pfn, to);
      u32[this.pd(pfn) + D_OWNER] = this.cpu;
      u32[this.pd(pfn) + D_FLAGS] = PG_HEAD | PG_INHAND | (order << ORDER_SHIFT);
      pfn += 1 << order;
    }
    u32[this.hw + Z_NR_PAGES] = to;
    for (let pfn = from; pfn < to; ) {
      const order = growOrder(pfn, to);
      this.freeOneBlock(pfn, order);
      pfn += 1 << order;
    }
    u32[this.hw + Z_MANAGED] = to - this.zoneStart;
    this.setWatermarks(u32[this.hw + Z_MANAGED]!);
    // Publication point: a handle that reads the new size finds the pages already in the zone.
    Atomics.store(u32, this.hw + Z_SIZE, want);
    this.vmInc(VM.heapGrow, 1);
  }

  /**
   * Make the buffer at least `want` bytes long: SharedArrayBuffer.grow, or memory.grow for a heap on
   * WebAssembly memory (then this handle takes the new buffer). False when it cannot grow (the
   * memory's maximum). Zone lock held.
   */
  private growBuffer(want: number): boolean {
    if (this.buffer.byteLength >= want) return true;
    try {
      if (this.memory !== null) {
        const have = this.memory.buffer.byteLength;
        if (have < want) this.memory.grow(Math.ceil((want - have) / WASM_PAGE_SIZE));
        this.buffer = this.memory.buffer as unknown as SharedArrayBuffer;
      } else {
        (this.buffer as unknown as { grow(n: number): void }).grow(want);
      }
    } catch {
      return false;
    }
    return this.buffer.byteLength >= want;
  }

  /** min_free about sqrt(managed)/2 pages (the kernel: sqrt(lowmem_kbytes * 16)); low 5/4 min, high 3/2 min. */
  private setWatermarks(managed: number): void {
    const min = Math.max(1, Math.floor(Math.sqrt(managed) / 2));
    this.u32[this.hw + Z_WMARK_MIN] = min;
    this.u32[this.hw + Z_WMARK_LOW] = min + (min >>> 2);
    this.u32[this.hw + Z_WMARK_HIGH] = min + (min >>> 1);
  }

  /** Would taking 2^order pages leave the watermark free? Zone lock held. */
  private watermarkOk(order: number, which: number): boolean {
    const u32 = this.u32;
    const min = u32[this.hw + Z_WMARK_MIN]!;
    const mark = which === WMARK_LOW ? u32[this.hw + Z_WMARK_LOW]! : which === WMARK_MIN ? min : min >>> 1;
    return u32[this.hw + Z_FREE_PAGES]! - (1 << order) >= mark;
  }

  /** __rmqueue_smallest: the first free block of order >= `order`, split down. Zone lock held. */
  private rmqueueSmallest(order: number): number {
    const u32 = this.u32;
    for (let o = order; o <= MAX_ORDER; o++) {
      const pfn = u32[this.hw + Z_FREE_HEAD + o]!;
      if (pfn === 0) continue;
      this.buddyDel(pfn, o);
      // A block in hand is this slot's until prepNewBlock says what it is: an agent killed on the
      // way is found by reclaimSlot (PG_INHAND, D_OWNER, written first) and the block freed. The
      // whole block is in hand first, and shrinks after each half goes back, so that no page of
      // it is ever outside a block (a half listed and still inside the block in hand is dropped
      // by rebuildBuddyLists, which walks past it, and freed with the block).
      u32[this.pd(pfn) + D_OWNER] = this.cpu;
      u32[this.pd(pfn) + D_FLAGS] = PG_HEAD | PG_INHAND | (o << ORDER_SHIFT);
      // expand(): hand the upper halves back, largest first.
      for (let high = o; high > order; ) {
        high--;
        const half = pfn + (1 << high);
        u32[this.pd(half) + D_FLAGS] = PG_BUDDY | (high << ORDER_SHIFT);
        this.buddyAdd(half, high);
        u32[this.pd(pfn) + D_FLAGS] = PG_HEAD | PG_INHAND | (high << ORDER_SHIFT);
      }
      u32[this.hw + Z_FREE_PAGES] = u32[this.hw + Z_FREE_PAGES]! - (1 << order);
      return pfn;
    }
    return 0;
  }

  /**
   * Turn a block taken by rmqueue into an allocation: zeroing, counters, trace, then head flags and
   * owner. The block stays in this slot's hand (PG_INHAND) until the last statement: after it
   * nothing runs before the caller has the address, so an agent killed anywhere before leaves a
   * block reclaimSlot frees, never an allocated block nobody was given.
   */
  protected prepNewBlock(pfn: number, order: number, kind: number, gfp: number): number {
    const addr = pfn << PAGE_SHIFT;
    if ((gfp & GFP.ZERO) !== 0) this.u8.fill(0, addr, addr + (PAGE_SIZE << order));
    this.vmInc(VM.pgalloc, 1 << order);
    if ((this.trace.mask & (1 << TP.mm_page_alloc)) !== 0) this.emitPage(TP.mm_page_alloc, pfn, order, gfp);
    const d = this.pd(pfn);
    this.u32[d + D_OWNER] = this.cpu;
    this.u32[d + D_FLAGS] = kind | (order << ORDER_SHIFT);
    return addr;
  }

  /** Count a failed allocation (allocation failures are not errors; GFP.NOWARN keeps them quiet). */
  protected allocFailed(order: number, gfp: number): number {
    if ((gfp & GFP.NOWARN) === 0) this.vmInc(VM.allocFail, 1);
    return 0;
  }

  /* ================================================================= free internals */

  /**
   * Give a block back (its D_FLAGS are rewritten here): to this slot's pcp list when its trylock succeeds (a
   * normal free drains a batch when the list passes high), else to the buddy lists; a nolock free
   * that cannot have the zone lock parks the block on the deferred llist.
   */
  protected freeBlock(pfn: number, order: number, mode: number): void {
    const nolock = mode !== 0;
    // In this slot's hand until a list takes it (see the contract): whatever the caller did to the
    // flags, at every lock point below the block is an allocated block of this slot.
    this.u32[this.pd(pfn) + D_OWNER] = this.cpu;
    this.u32[this.pd(pfn) + D_FLAGS] = PG_HEAD | PG_INHAND | (order << ORDER_SHIFT);
    if (order <= PCP_LIST_MAX_ORDER) {
      if (this.pcpEnter()) {
        const u32 = this.u32;
        const c = this.pcpuW;
        const d = this.pd(pfn);
        u32[d + D_FLAGS] = PG_PCP | (order << ORDER_SHIFT);
        u32[d + D_OWNER] = this.cpu;
        u32[d + D_NEXT] = u32[c + C_PCP_HEAD + order]!;
        u32[c + C_PCP_HEAD + order] = pfn;
        u32[c + C_PCP_NR + order] = u32[c + C_PCP_NR + order]! + 1;
        const count = u32[c + C_PCP_COUNT]! + (1 << order);
        u32[c + C_PCP_COUNT] = count;
        // A block of a high order can pass high by more than a batch: drain down to high at least.
        const high = u32[this.hw + Z_PCP_HIGH]!;
        if (!nolock && count > high) this.pcpDrain(this.cpu, Math.max(u32[this.hw + Z_PCP_BATCH]!, count - high));
        this.pcpExit();
        if (!nolock && this.i32[this.hw + Z_DEFER_HEAD] !== 0) this.drainDeferred();
        return;
      }
      this.vmInc(VM.pcpTrylockFail, 1);
    }
    // The flags stay until the zone lock is held: an agent that dies waiting for it leaves an
    // allocated block behind, never pages that belong to nothing (reclaimSlot).
    if (!this.lockIn(mode, this.hw + Z_LOCK, LOCK.zone)) {
      this.vmInc(VM.zoneTrylockFail, 1);
      this.deferPage(pfn, order);
      return;
    }
    this.freeOneBlock(pfn, order);
    if (!nolock) this.drainDeferredLocked();
    this.unlock(this.hw + Z_LOCK, LOCK.zone);
  }

  /**
   * __free_one_page: merge with free buddies while they exist, then list the block. Zone lock held.
   * Between any two statements every page is in a block a reader can walk: the merged block is a
   * block in this slot's hand (PG_INHAND) before the half that stops being a head is cleared, so a
   * reclaim of an agent killed here (rebuildBuddyLists, then the blocks in hand) loses no page.
   */
  private freeOneBlock(pfn: number, order: number): void {
    const u32 = this.u32;
    u32[this.hw + Z_FREE_PAGES] = u32[this.hw + Z_FREE_PAGES]! + (1 << order);
    const end = u32[this.hw + Z_NR_PAGES]!;
    while (order < MAX_ORDER) {
      const buddy = pfn ^ (1 << order);
      if (buddy < this.zoneStart || buddy >= end) break;
      const bd = this.pd(buddy);
      if (u32[bd + D_FLAGS] !== (PG_BUDDY | (order << ORDER_SHIFT))) break;
      this.buddyDel(buddy, order);
      const merged = pfn & buddy;
      u32[this.pd(merged) + D_OWNER] = this.cpu;
      u32[this.pd(merged) + D_FLAGS] = PG_HEAD | PG_INHAND | ((order + 1) << ORDER_SHIFT);
      u32[this.pd(merged === pfn ? buddy : pfn) + D_FLAGS] = 0;
      pfn = merged;
      order++;
    }
    u32[this.pd(pfn) + D_FLAGS] = PG_BUDDY | (order << ORDER_SHIFT);
    this.buddyAdd(pfn, order);
  }

  /**
   * free_pcppages_bulk: give `count` pages of slot `cpu`'s lists back to the zone. That pcp lock
   * held. An agent that must not block drains nothing when the zone lock is held past its bound.
   */
  protected pcpDrain(cpu: number, count: number): void {
    const u32 = this.u32;
    const c = this.pcpOf(cpu);
    if (!this.lockIn(0, this.hw + Z_LOCK, LOCK.zone)) return;
    let freed = 0;
    for (let o = 0, idle = 0; freed < count && idle < NR_PCP_ORDERS; o = o === PCP_LIST_MAX_ORDER ? 0 : o + 1) {
      const pfn = u32[c + C_PCP_HEAD + o]!;
      if (pfn === 0) {
        idle++;
        continue;
      }
      idle = 0;
      const d = this.pd(pfn);
      u32[c + C_PCP_HEAD + o] = u32[d + D_NEXT]!;
      u32[c + C_PCP_NR + o] = u32[c + C_PCP_NR + o]! - 1;
      u32[c + C_PCP_COUNT] = u32[c + C_PCP_COUNT]! - (1 << o);
      u32[d + D_OWNER] = this.cpu;
      u32[d + D_FLAGS] = PG_HEAD | PG_INHAND | (o << ORDER_SHIFT);
      if ((this.trace.mask & (1 << TP.mm_page_pcpu_drain)) !== 0) this.emitPage(TP.mm_page_pcpu_drain, pfn, o);
      this.freeOneBlock(pfn, o);
      freed += 1 << o;
    }
    this.drainDeferredLocked();
    this.unlock(this.hw + Z_LOCK, LOCK.zone);
    this.vmInc(VM.pcpDrain, 1);
  }

  /** Direct reclaim's shrinker: the slab allocator gives back the empty slabs it keeps (slab.ts). */
  protected reclaimSlabs(): void {}

  /** Drain every slot's pcp lists (direct reclaim). Takes each pcp lock with lock(). */
  protected drainAllPcp(): void {
    for (let cpu = 0; cpu < this.cpus; cpu++) this.drainPcpOf(cpu);
  }

  /** Empty slot `cpu`'s pcp lists into the zone (best effort for an idle owner, see pcpLockRemote). */
  protected drainPcpOf(cpu: number): void {
    const c = this.pcpOf(cpu);
    if (this.u32[c + C_PCP_COUNT] === 0) return;
    if (cpu === this.cpu) {
      if (!this.pcpEnter()) return;
      const count = this.u32[c + C_PCP_COUNT]!;
      if (count !== 0) this.pcpDrain(cpu, count);
      this.pcpExit();
      return;
    }
    if (!this.pcpLockRemote(cpu, PCP_REMOTE_SPINS)) return;
    const count = this.u32[c + C_PCP_COUNT]!;
    if (count !== 0) this.pcpDrain(cpu, count);
    this.pcpUnlockRemote(cpu);
  }

  /* ================================================================= the biased pcp lock */

  /**
   * Enter this slot's pcp section: the local trylock. It fails when this agent is already inside
   * (re-entry from a hook: seed 004, also with one agent), or when the lock word is not this
   * slot's and cannot be had at once. While the owner keeps the lock word between calls, entering
   * and leaving cost two plain reads and two plain stores.
   */
  protected pcpEnter(): boolean {
    const i32 = this.i32;
    const c = this.pcpuW;
    if (i32[c + C_PCP_BUSY] !== 0) return false;
    if (i32[c + C_PCP_LOCK] !== this.me || i32[c + C_PCP_REQ] !== 0) {
      if (!this.pcpRebias()) return false;
    }
    i32[c + C_PCP_BUSY] = 1;
    this.acquired(LOCK.pcp);
    return true;
  }

  /** The lock word is not ours to keep: hand it over if someone waits, else try to take it. */
  private pcpRebias(): boolean {
    const i32 = this.i32;
    const w = this.pcpuW + C_PCP_LOCK;
    if (Atomics.load(i32, this.pcpuW + C_PCP_REQ) !== 0) {
      // A remote agent waits for it: release, and take the buddy path this time.
      if (Atomics.load(i32, w) === this.me) Atomics.store(i32, w, 0);
      return false;
    }
    const v = Atomics.load(i32, w);
    return v === this.me || (v === 0 && Atomics.compareExchange(i32, w, 0, this.me) === 0);
  }

  protected pcpExit(): void {
    this.releasing(LOCK.pcp);
    const i32 = this.i32;
    const c = this.pcpuW;
    i32[c + C_PCP_BUSY] = 0;
    // Publication point for a waiting drainer: the store releases everything written above.
    if (i32[c + C_PCP_REQ] !== 0 && Atomics.load(i32, c + C_PCP_LOCK) === this.me) Atomics.store(i32, c + C_PCP_LOCK, 0);
  }

  /**
   * detach(): empty this slot's pcp lists and give up its lock word. Unlike pcpEnter this must not
   * fail, so it waits (spinning read-only) while a remote drainer holds the word: a drainer's hold
   * is a bounded, short section.
   */
  protected pcpDetach(): void {
    const i32 = this.i32;
    const c = this.pcpuW;
    const w = c + C_PCP_LOCK;
    let since = -1;
    for (let n = 0; ; n++) {
      const v = Atomics.load(i32, w);
      if (v === this.me || (v === 0 && Atomics.compareExchange(i32, w, 0, this.me) === 0)) break;
      if (!this.canBlock && n >= PCP_NOBLOCK_SPINS) {
        if (since < 0) since = this.clock();
        else if ((n & 255) === 0 && this.spinExpired(since)) this.pcpBusy(v);
      }
    }
    i32[c + C_PCP_BUSY] = 1;
    this.acquired(LOCK.pcp);
    let count = this.u32[c + C_PCP_COUNT]!;
    if (count !== 0) this.pcpDrain(this.cpu, count);
    count = this.u32[c + C_PCP_COUNT]!;
    this.releasing(LOCK.pcp);
    i32[c + C_PCP_BUSY] = 0;
    // A noBlock agent that could not have the zone lock keeps its lists and its lock word.
    if (count !== 0) this.pcpBusy(Atomics.load(i32, this.hw + Z_LOCK));
    Atomics.store(i32, w, 0);
  }

  /** A noBlock agent's detach found a lock (pcp word or zone) held past its bound. */
  private pcpBusy(v: number): never {
    throw new HeapError(
      ErrorCode.EAGAIN,
      `cpu ${this.cpu} must not block, and cpu ${(v & 0xffff) - 1} held a lock it needs for more than its bound: ` +
        "the call gave up; what it returned so far stays returned, and the handle is still attached: call again",
    );
  }

  /**
   * Take slot `cpu`'s pcp lock from another slot: raise its request count and wait, at most
   * `spins` rounds, for the owner to hand the lock over at its next pcp call. An idle owner never
   * does, so this is best effort; it never waits on a lock with Atomics.wait.
   */
  protected pcpLockRemote(cpu: number, spins: number): boolean {
    const i32 = this.i32;
    const c = this.pcpOf(cpu);
    const w = c + C_PCP_LOCK;
    Atomics.add(i32, c + C_PCP_REQ, 1);
    i32[this.pcpuW + C_PCP_REQ_AT] = cpu + 1;
    // An agent that must not block waits a fraction of its bound for each slot.
    const limit = this.canBlock ? spins : Math.min(spins, PCP_NOBLOCK_SPINS);
    try {
      for (let n = 0; ; n++) {
        const v = Atomics.load(i32, w);
        if (v === 0) {
          if (Atomics.compareExchange(i32, w, 0, this.me) === 0) {
            this.acquired(LOCK.pcp);
            if (this.u32[this.hw + Z_SIZE] !== this.size) this.refreshViews();
            return true;
          }
        } else if (n >= limit) {
          return false;
        }
      }
    } finally {
      i32[this.pcpuW + C_PCP_REQ_AT] = 0;
      Atomics.sub(i32, c + C_PCP_REQ, 1);
    }
  }

  /** reclaimSlot: dead slot `cpu` died waiting for another slot's pcp lock; lower its request. */
  protected pcpDropRequestOf(cpu: number): void {
    const c = this.pcpOf(cpu);
    const at = this.i32[c + C_PCP_REQ_AT]!;
    if (at === 0) return;
    this.i32[c + C_PCP_REQ_AT] = 0;
    if (at - 1 >= 0 && at - 1 < this.cpus && Atomics.load(this.i32, this.pcpOf(at - 1) + C_PCP_REQ) > 0) Atomics.sub(this.i32, this.pcpOf(at - 1) + C_PCP_REQ, 1);
  }

  protected pcpUnlockRemote(cpu: number): void {
    this.releasing(LOCK.pcp);
    Atomics.store(this.i32, this.pcpOf(cpu) + C_PCP_LOCK, 0);
  }

  /** Reclaim: take the pcp lock word of dead slot `cpu`, which held it outside any pcp section. */
  protected pcpSteal(cpu: number): boolean {
    const w = this.pcpOf(cpu) + C_PCP_LOCK;
    const v = Atomics.load(this.i32, w);
    if ((v !== 0 && v !== cpu + 1) || Atomics.compareExchange(this.i32, w, v, this.me) !== v) return false;
    this.acquired(LOCK.pcp);
    return true;
  }

  /**
   * reclaimSlot, the zone lock taken over from a dead holder: rebuild the buddy free lists and
   * their counts from the page descriptors (every block whose head carries PG_BUDDY), merging
   * buddies as a free does. Whatever the dead agent had in hand stays out of the lists.
   */
  protected rebuildBuddyLists(): void {
    const u32 = this.u32;
    // A growth stopped after the zone took its pages (Z_NR_PAGES) and before it published them:
    // finish it, so that every handle (this one first) sees the pages the dead agent had in hand.
    const nr = u32[this.hw + Z_NR_PAGES]!;
    if (nr << PAGE_SHIFT !== u32[this.hw + Z_SIZE]!) {
      u32[this.hw + Z_MANAGED] = nr - this.zoneStart;
      this.setWatermarks(nr - this.zoneStart);
      Atomics.store(u32, this.hw + Z_SIZE, nr << PAGE_SHIFT);
      this.refreshViews();
    }
    const blocks: number[] = [];
    const end = u32[this.hw + Z_NR_PAGES]!;
    for (let pfn = this.zoneStart; pfn < end; ) {
      const f = u32[this.pd(pfn) + D_FLAGS]!;
      const o = (f & ORDER_MASK) >>> ORDER_SHIFT;
      if ((f & ~ORDER_MASK) === PG_BUDDY) blocks.push(pfn, o);
      pfn += (f & (PG_BUDDY | PG_PCP | PG_DEFERRED | PG_HEAD | PG_LARGE | PG_RCU_BLOCK)) !== 0 ? 1 << o : 1;
    }
    for (let o = 0; o < NR_ORDERS; o++) {
      u32[this.hw + Z_FREE_HEAD + o] = 0;
      u32[this.hw + Z_NR_FREE + o] = 0;
    }
    u32[this.hw + Z_FREE_PAGES] = 0;
    for (let i = 0; i < blocks.length; i += 2) u32[this.pd(blocks[i]!) + D_FLAGS] = 0;
    for (let i = 0; i < blocks.length; i += 2) this.freeOneBlock(blocks[i]!, blocks[i + 1]!);
  }

  /**
   * reclaimSlot: free every block dead slot `cpu` had in its hands (PG_HEAD | PG_INHAND with D_OWNER
   * `cpu`: taken off a list and not yet given its kind, on its way back, a slab leaving its cache,
   * a block being merged). Their tail descriptors are cleared first (a merge stopped half-way can
   * leave a stale head inside the block). No lock held; freeBlock takes what it needs. Returns the
   * pages freed; `blocks` (if given) counts the blocks.
   */
  protected freeBlocksInHand(cpu: number, blocks?: { n: number }): number {
    let pages = 0;
    for (let pfn = this.zoneStart; pfn < this.nrPages; pfn++) {
      const d = this.pd(pfn);
      const f = this.u32[d + D_FLAGS]!;
      if ((f & ~ORDER_MASK) !== (PG_HEAD | PG_INHAND) || this.u32[d + D_OWNER] !== cpu) continue;
      const order = (f & ORDER_MASK) >>> ORDER_SHIFT;
      if ((pfn & ((1 << order) - 1)) !== 0 || pfn + (1 << order) > this.nrPages) continue;
      for (let p = 1; p < 1 << order; p++) this.u32[this.pd(pfn + p) + D_FLAGS] = 0;
      this.freeBlock(pfn, order, 0);
      pages += 1 << order;
      if (blocks !== undefined) blocks.n++;
      pfn += (1 << order) - 1;
    }
    return pages;
  }

  /** reclaimSlot: recount slot `cpu`'s pcp lists (its pcp word held), which a dead agent may have left torn. */
  protected recountPcp(cpu: number): void {
    const u32 = this.u32;
    const c = this.pcpOf(cpu);
    let pages = 0;
    for (let o = 0; o <= PCP_LIST_MAX_ORDER; o++) {
      let n = 0;
      for (let pfn = u32[c + C_PCP_HEAD + o]!; pfn !== 0 && n <= this.nrPages; pfn = u32[this.pd(pfn) + D_NEXT]!) n++;
      u32[c + C_PCP_NR + o] = n;
      pages += n << o;
    }
    u32[c + C_PCP_COUNT] = pages;
  }

  /** Push a block on the zone's deferred llist (freePagesNolock with both locks busy). */
  private deferPage(pfn: number, order: number): void {
    const i32 = this.i32;
    const d = this.pd(pfn);
    this.u32[d + D_FLAGS] = PG_DEFERRED | (order << ORDER_SHIFT);
    for (;;) {
      const head = Atomics.load(i32, this.hw + Z_DEFER_HEAD);
      this.u32[d + D_NEXT] = head;
      // Publication point: the compareExchange makes D_NEXT and D_FLAGS visible to the drainer.
      if (Atomics.compareExchange(i32, this.hw + Z_DEFER_HEAD, head, pfn) === head) break;
    }
    Atomics.add(i32, this.hw + Z_DEFER_PAGES, 1 << order);
    this.vmInc(VM.pagesDeferred, 1 << order);
  }

  /** Take the zone lock and free the deferred llist (a normal caller found it non-empty). */
  private drainDeferred(): void {
    if (!this.lockIn(0, this.hw + Z_LOCK, LOCK.zone)) return; // a noBlock agent leaves it to the next free
    this.drainDeferredLocked();
    this.unlock(this.hw + Z_LOCK, LOCK.zone);
  }

  /** Free every block parked on the deferred llist. Zone lock held. */
  private drainDeferredLocked(): void {
    const i32 = this.i32;
    if (Atomics.load(i32, this.hw + Z_DEFER_HEAD) === 0) return;
    let pfn = Atomics.exchange(i32, this.hw + Z_DEFER_HEAD, 0);
    // Bounded, and every entry checked before it is freed: a cycle or a stray pfn is reported and
    // the rest of the list is dropped, never walked for ever nor merged into the buddy lists. The
    // bound is the zone's size in pages (zoneStart and nrPages are absolute): Z_DEFER_PAGES may
    // lag, a pusher adds to it after publishing.
    const limit = this.nrPages - this.zoneStart;
    let pages = 0;
    while (pfn !== 0) {
      const d = this.pd(pfn);
      const f = pfn >= this.zoneStart && pfn < this.nrPages ? this.u32[d + D_FLAGS]! : 0;
      const order = (f & ORDER_MASK) >>> ORDER_SHIFT;
      if ((f & ~ORDER_MASK) !== PG_DEFERRED || pages + (1 << order) > limit || (pfn & ((1 << order) - 1)) !== 0) {
        this.reportDeferred(new HeapError(ErrorCode.ECORRUPT, `the deferred page list is broken at page ${pfn} (flags ${hex(f)}, after ${pages} pages): the rest is dropped`), pfn << PAGE_SHIFT);
        break;
      }
      const next = this.u32[d + D_NEXT]!;
      this.u32[d + D_OWNER] = this.cpu;
      this.u32[d + D_FLAGS] = PG_HEAD | PG_INHAND | (order << ORDER_SHIFT);
      this.freeOneBlock(pfn, order);
      pages += 1 << order;
      pfn = next;
    }
    Atomics.sub(i32, this.hw + Z_DEFER_PAGES, pages);
    this.vmInc(VM.pagesUndeferred, pages);
  }

  /* ================================================================= buddy list primitives */

  private buddyAdd(pfn: number, order: number): void {
    this.pdListAdd(this.hw + Z_FREE_HEAD + order, this.hw + Z_NR_FREE + order, pfn);
  }

  private buddyDel(pfn: number, order: number): void {
    this.pdListDel(this.hw + Z_FREE_HEAD + order, this.hw + Z_NR_FREE + order, pfn);
  }

  /**
   * Push page `pfn` on the doubly linked list of page descriptors (D_NEXT, D_PREV) whose head pfn
   * is at word `head` and length at word `count`: a buddy free list, a slab partial list. The
   * lock that guards the list is held.
   */
  protected pdListAdd(head: number, count: number, pfn: number): void {
    const u32 = this.u32;
    const d = this.pd(pfn);
    const first = u32[head]!;
    u32[d + D_NEXT] = first;
    u32[d + D_PREV] = 0;
    if (first !== 0) u32[this.pd(first) + D_PREV] = pfn;
    u32[head] = pfn;
    u32[count] = u32[count]! + 1;
  }

  /** Unlink page `pfn` from the list at `head` / `count` (see pdListAdd). */
  protected pdListDel(head: number, count: number, pfn: number): void {
    const u32 = this.u32;
    const d = this.pd(pfn);
    const next = u32[d + D_NEXT]!;
    const prev = u32[d + D_PREV]!;
    if (prev !== 0) u32[this.pd(prev) + D_NEXT] = next;
    else u32[head] = next;
    if (next !== 0) u32[this.pd(next) + D_PREV] = prev;
    u32[d + D_NEXT] = 0;
    u32[d + D_PREV] = 0;
    u32[count] = u32[count]! - 1;
  }


  /* ================================================================= checks */

  /**
   * The pfn of the block at `addr` if it is the head of a live block of kind `kind` and `order`;
   * otherwise throws EINVAL or EDOUBLEFREE and changes nothing.
   */
  protected checkBlock(addr: number, order: number, kind: number): number {
    if (typeof addr !== "number") einval(`addr must be a number (an address from allocPages), not ${describe(addr)}`);
    if (addr >>> 0 !== addr || (addr & (PAGE_SIZE - 1)) !== 0 || (addr >= this.size && !(this.refreshViews() && addr < this.size))) {
      throw new HeapError(ErrorCode.EINVAL, `addr ${String(addr)} is not a page address of this heap (a multiple of ${PAGE_SIZE} below ${this.size})`);
    }
    const pfn = addr >>> PAGE_SHIFT;
    if (pfn < this.zoneStart) {
      throw new HeapError(ErrorCode.EINVAL, `${hex(addr)} is in the heap's metadata, not an allocated block`);
    }
    const f = this.u32[this.pd(pfn) + D_FLAGS]!;
    if ((f & (PG_BUDDY | PG_PCP | PG_DEFERRED)) !== 0 || (f === 0 && this.insideFreeBlock(pfn))) {
      throw new HeapError(ErrorCode.EDOUBLEFREE, `the block at ${hex(addr)} is already free`);
    }
    if (f === 0) throw new HeapError(ErrorCode.EINVAL, `${hex(addr)} is not the start of an allocated block`);
    if ((f & kind) === 0) {
      throw new HeapError(ErrorCode.EINVAL, `the block at ${hex(addr)} is ${describeKind(f)}, not ${describeKind(kind)}`);
    }
    const got = (f & ORDER_MASK) >>> ORDER_SHIFT;
    if (got !== order) {
      throw new HeapError(ErrorCode.EINVAL, `the block at ${hex(addr)} has order ${got}, not ${order}`);
    }
    return pfn;
  }

  /** Is page `pfn` (not a block head) inside a free, pcp or parked block? */
  private insideFreeBlock(pfn: number): boolean {
    for (let o = 1; o <= MAX_ORDER; o++) {
      const head = pfn & ~((1 << o) - 1);
      if (head < this.zoneStart) return false;
      const f = this.u32[this.pd(head) + D_FLAGS]!;
      if (f === 0) continue;
      const order = (f & ORDER_MASK) >>> ORDER_SHIFT;
      return order >= o && (f & (PG_BUDDY | PG_PCP | PG_DEFERRED)) !== 0;
    }
    return false;
  }

  /* ================================================================= setup, stats, validation */

  /** Build the zone of a new heap: watermarks, pcp sizes, every zone page free. No other agent yet. */
  protected initZone(): void {
    const u32 = this.u32;
    for (let pfn = this.offset >>> PAGE_SHIFT; pfn < this.zoneStart; pfn++) u32[this.pd(pfn) + D_FLAGS] = PG_RESERVED;
    const managed = this.nrPages - this.zoneStart;
    u32[this.hw + Z_MANAGED] = managed;
    u32[this.hw + Z_SIZE] = this.size;
    u32[this.hw + Z_NR_PAGES] = this.nrPages;
    this.setWatermarks(managed);
    // zone_batchsize: about managed / (16 * cpus), as 2^n - 1 in 1..63; high = 4 * batch.
    const share = Math.floor(managed / (16 * this.cpus));
    const batch = Math.max(1, Math.min(63, (1 << Math.floor(Math.log2(Math.max(2, share)))) - 1));
    u32[this.hw + Z_PCP_BATCH] = batch;
    u32[this.hw + Z_PCP_HIGH] = 4 * batch;
    u32[this.hw + Z_FREE_PAGES] = 0;
    let pfn = this.zoneStart;
    while (pfn < this.nrPages) {
      let order = MAX_ORDER;
      while (order > 0 && ((pfn & ((1 << order) - 1)) !== 0 || pfn + (1 << order) > this.nrPages)) order--;
      u32[this.pd(pfn) + D_FLAGS] = PG_BUDDY | (order << ORDER_SHIFT);
      this.buddyAdd(pfn, order);
      u32[this.hw + Z_FREE_PAGES] = u32[this.hw + Z_FREE_PAGES]! + (1 << order);
      pfn += 1 << order;
    }
  }

  protected pageStats(): PageStats {
    const u32 = this.u32;
    const buddy: number[] = [];
    for (let o = 0; o < NR_ORDERS; o++) buddy.push(u32[this.hw + Z_NR_FREE + o]!);
    const pcp: number[] = [];
    for (let cpu = 0; cpu < this.cpus; cpu++) pcp.push(u32[this.pcpOf(cpu) + C_PCP_COUNT]!);
    return {
      totalPages: u32[this.hw + Z_MANAGED]!,
      freePages: Atomics.load(this.u32, this.hw + Z_FREE_PAGES),
      buddy,
      pcp,
      deferredPages: Atomics.load(this.u32, this.hw + Z_DEFER_PAGES),
      watermarks: { min: u32[this.hw + Z_WMARK_MIN]!, low: u32[this.hw + Z_WMARK_LOW]!, high: u32[this.hw + Z_WMARK_HIGH]! },
      pcpBatch: u32[this.hw + Z_PCP_BATCH]!,
      pcpHigh: u32[this.hw + Z_PCP_HIGH]!,
    };
  }

  /**
   * Check every page-allocator invariant; returns where each page is (PAGE_WHERE per pfn) for the
   * layers above. Takes every pcp lock and the zone lock; the caller asserted it may.
   */
  protected validatePages(): Uint8Array {
    // Every pcp lock that can be had; an idle owner keeps its own, and its lists are read as they are.
    const locked = new Uint8Array(this.cpus);
    for (let cpu = 0; cpu < this.cpus; cpu++) {
      locked[cpu] = (cpu === this.cpu ? this.pcpEnter() : this.pcpLockRemote(cpu, PCP_REMOTE_SPINS >> 4)) ? 1 : 0;
    }
    try {
      // The zone lock holds growth off: the map covers every page there is. EAGAIN on a noBlock
      // agent past its bound.
      this.lock(this.hw + Z_LOCK, LOCK.zone);
    } catch (e) {
      this.unlockPcps(locked);
      throw e;
    }
    const where = new Uint8Array(this.nrPages);
    const u32 = this.u32;
    const bad = (msg: string): never => {
      throw new HeapError(ErrorCode.ECORRUPT, msg);
    };
    const mark = (pfn: number, order: number, w: number, what: string): void => {
      if (pfn < this.zoneStart || pfn + (1 << order) > this.nrPages) bad(`${what}: block ${pfn} order ${order} is outside the zone`);
      if ((pfn & ((1 << order) - 1)) !== 0) bad(`${what}: block ${pfn} is not aligned to order ${order}`);
      for (let p = pfn; p < pfn + (1 << order); p++) {
        if (where[p] !== PAGE_WHERE.unseen) bad(`${what}: page ${p} is in two places`);
        where[p] = w;
        if (p !== pfn && u32[this.pd(p) + D_FLAGS] !== 0) bad(`${what}: tail page ${p} of block ${pfn} has flags`);
      }
    };
    try {
      for (let pfn = this.offset >>> PAGE_SHIFT; pfn < this.zoneStart; pfn++) {
        if (u32[this.pd(pfn) + D_FLAGS] !== PG_RESERVED) bad(`metadata page ${pfn} lost PG_RESERVED`);
        where[pfn] = PAGE_WHERE.reserved;
      }
      let free = 0;
      for (let o = 0; o < NR_ORDERS; o++) {
        let n = 0;
        let prev = 0;
        for (let pfn = u32[this.hw + Z_FREE_HEAD + o]!; pfn !== 0; pfn = u32[this.pd(pfn) + D_NEXT]!) {
          const d = this.pd(pfn);
          if (u32[d + D_FLAGS] !== (PG_BUDDY | (o << ORDER_SHIFT))) bad(`free_area[${o}] holds page ${pfn} with flags ${hex(u32[d + D_FLAGS]!)}`);
          if (u32[d + D_PREV] !== prev) bad(`free_area[${o}]: broken back link at page ${pfn}`);
          mark(pfn, o, PAGE_WHERE.buddy, `free_area[${o}]`);
          const buddy = pfn ^ (1 << o);
          if (o < MAX_ORDER && buddy >= this.zoneStart && buddy < this.nrPages && u32[this.pd(buddy) + D_FLAGS] === (PG_BUDDY | (o << ORDER_SHIFT))) {
            bad(`free buddies ${pfn} and ${buddy} of order ${o} were left unmerged`);
          }
          prev = pfn;
          n++;
          free += 1 << o;
          if (n > this.nrPages) bad(`free_area[${o}] is circular`);
        }
        if (n !== u32[this.hw + Z_NR_FREE + o]) bad(`free_area[${o}].nr_free is ${u32[this.hw + Z_NR_FREE + o]}, the list holds ${n}`);
      }
      if (free !== u32[this.hw + Z_FREE_PAGES]) bad(`NR_FREE_PAGES is ${u32[this.hw + Z_FREE_PAGES]}, the free lists hold ${free}`);
      for (let cpu = 0; cpu < this.cpus; cpu++) {
        const c = this.pcpOf(cpu);
        let pages = 0;
        if (u32[c + C_STATE] === SLOT_FREE && u32[c + C_PCP_COUNT] !== 0) bad(`free slot ${cpu} still caches pages`);
        for (let o = 0; o <= PCP_LIST_MAX_ORDER; o++) {
          let n = 0;
          for (let pfn = u32[c + C_PCP_HEAD + o]!; pfn !== 0; pfn = u32[this.pd(pfn) + D_NEXT]!) {
            const d = this.pd(pfn);
            if (u32[d + D_FLAGS] !== (PG_PCP | (o << ORDER_SHIFT))) bad(`pcp ${cpu} order ${o} holds page ${pfn} with flags ${hex(u32[d + D_FLAGS]!)}`);
            if (u32[d + D_OWNER] !== cpu) bad(`pcp ${cpu} holds page ${pfn} owned by slot ${u32[d + D_OWNER]}`);
            mark(pfn, o, PAGE_WHERE.pcp, `pcp ${cpu}`);
            n++;
            pages += 1 << o;
          }
          if (n !== u32[c + C_PCP_NR + o]) bad(`pcp ${cpu} order ${o} counts ${u32[c + C_PCP_NR + o]}, its list holds ${n}`);
        }
        if (pages !== u32[c + C_PCP_COUNT]) bad(`pcp ${cpu} counts ${u32[c + C_PCP_COUNT]} pages, its lists hold ${pages}`);
      }
      let deferred = 0;
      for (let pfn = Atomics.load(this.u32, this.hw + Z_DEFER_HEAD); pfn !== 0; pfn = u32[this.pd(pfn) + D_NEXT]!) {
        const f = u32[this.pd(pfn) + D_FLAGS]!;
        if ((f & ~ORDER_MASK) !== PG_DEFERRED) bad(`deferred list holds page ${pfn} with flags ${hex(f)}`);
        const o = (f & ORDER_MASK) >>> ORDER_SHIFT;
        mark(pfn, o, PAGE_WHERE.deferred, "deferred list");
        deferred += 1 << o;
      }
      if (deferred !== Atomics.load(this.u32, this.hw + Z_DEFER_PAGES)) bad(`deferred list counts ${Atomics.load(this.u32, this.hw + Z_DEFER_PAGES)} pages, holds ${deferred}`);
      // Every other zone page must be the head or part of an allocated block.
      for (let pfn = this.zoneStart; pfn < this.nrPages; ) {
        if (where[pfn] !== PAGE_WHERE.unseen) {
          pfn++;
          continue;
        }
        const f = u32[this.pd(pfn) + D_FLAGS]!;
        const kinds = PG_HEAD | PG_LARGE | PG_RCU_BLOCK;
        if ((f & kinds) !== 0 && (f & ~(kinds | ORDER_MASK | PG_INHAND)) === 0) {
          const o = (f & ORDER_MASK) >>> ORDER_SHIFT;
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
      this.unlock(this.hw + Z_LOCK, LOCK.zone);
      this.unlockPcps(locked);
    }
    return where;
  }

  /** Release the pcp locks validatePages took (`locked[cpu]` non-zero). */
  private unlockPcps(locked: Uint8Array): void {
    for (let cpu = this.cpus - 1; cpu >= 0; cpu--) {
      if (locked[cpu] === 0) continue;
      if (cpu === this.cpu) this.pcpExit();
      else this.pcpUnlockRemote(cpu);
    }
  }

  protected emitPage(id: number, pfn: number, order: number, gfp = 0): void {
    const rec: TraceRecord = { event: TRACE_EVENTS[id]!, cpu: this.cpu, addr: pfn << PAGE_SHIFT, order };
    if (gfp !== 0) rec.gfp = gfp & GFP_PUBLIC_MASK;
    this.trace.emit(id, rec);
  }
}

export function checkOrder(order: number): void {
  checkInt("order", order, 0, MAX_ORDER, ` in 0..${MAX_ORDER}`, `orders are 0..${MAX_ORDER} (a block of at most 2^${MAX_ORDER} pages)`);
}

export function checkGfp(gfp: number): void {
  if (typeof gfp !== "number") einval(`gfp must be a number (GFP flags combined with |), not ${describe(gfp)}`);
  if (gfp >>> 0 !== gfp || (gfp & ~GFP_PUBLIC_MASK) !== 0) {
    einval(`gfp ${String(gfp)} is not a combination of GFP flags (${Object.entries(GFP).map(([k, v]) => `${k} ${v}`).join(", ")})`);
  }
}

function wmarkFor(gfp: number): number {
  return (gfp & GFP.ATOMIC) !== 0 ? WMARK_RESERVE : WMARK_MIN;
}

function describeKind(f: number): string {
  if ((f & PG_SLAB) !== 0) return "a slab page (free its objects with kfree)";
  if ((f & PG_LARGE) !== 0) return "a large kmalloc block (free it with kfree)";
  if ((f & PG_RCU_BLOCK) !== 0) return "a kfreeRcu block page";
  if ((f & PG_HEAD) !== 0) return "a page block";
  return `a block with flags ${hex(f)}`;
}

/** The order of the block that starts at `pfn` when pages up to `to` join the zone: aligned, within. */
function growOrder(pfn: number, to: number): number {
  let order = MAX_ORDER;
  while (order > 0 && ((pfn & ((1 << order) - 1)) !== 0 || pfn + (1 << order) > to)) order--;
  return order;
}
