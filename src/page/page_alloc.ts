/*
 * The page allocator: one zone of buddy free lists (orders 0..10) with per-CPU page lists (pcp)
 * for orders 0..PCP_LIST_MAX_ORDER (5); the nolock calls serve orders 0..PCP_MAX_ORDER (3).
 *
 * WORDS
 *   Z_LOCK (class zone) protects the zone's words: Z_FREE_HEAD[], Z_NR_FREE[], Z_FREE_PAGES, the
 *     watermarks, Z_MANAGED, Z_SIZE and Z_NR_PAGES (memory hotplug grows the buffer and adds pages
 *     under it; handles read Z_SIZE with Atomics.load to rebuild their views), and the
 *     PD_FLAGS/PD_NEXT/PD_PREV words of every block on a buddy free list: plain stores by its holder.
 *   C_PCP_LOCK of a slot (class pcp) protects that slot's C_PCP_* list words and the descriptors of
 *     the blocks on its lists. It is a biased lock: the owner slot takes the word once
 *     (compareExchange 0 -> owner) and keeps it between calls, so a pcp section costs it no atomic.
 *     Entering is a trylock (pcpEnter, seed 002): it fails when C_PCP_BUSY shows this agent is
 *     already inside (a hook re-entered; seed 004: also with one agent) or when the word is not
 *     the owner's; then allocation and free go straight to the buddy lists (the fast paths test
 *     the handle's gate, whose inPcp mirrors C_PCP_BUSY: pcpBusySet). Another agent that
 *     needs the lists (GFP.KERNEL direct reclaim, validate, shrink) raises C_PCP_REQ (Atomics.add)
 *     and spins, bounded, until the word is 0, then takes it with compareExchange; the owner hands
 *     the word over (Atomics.store 0) at its next pcp entry or exit when C_PCP_REQ is non-zero.
 *     detach takes its own word unconditionally, waiting out a remote holder's short section.
 *     reclaimSlot takes the word of a dead slot (recounting its lists first if it died inside a
 *     pcp section), and takes over another slot's word a dead remote drainer held.
 *   Z_DEFER_HEAD is a lock-free llist (compareExchange on the head, any agent pushes); only a holder
 *     of Z_LOCK takes the whole list (exchange with 0) and frees it: every normal free that reaches
 *     the zone, a normal pcp free that sees the list non-empty, pcp drains and direct reclaim. A
 *     parked block's descriptor (PG_DEFERRED | order, PD_NEXT) belongs to the llist until then.
 *     Z_DEFER_HEAD and Z_DEFER_PAGES are one 64-bit word (deferWord): the push's compareExchange
 *     publishes the block and counts it at once, the drain's exchange takes the list and its count,
 *     so the count is never off by a block, whenever a pusher dies. The drain is bounded by the
 *     zone's size and checks every entry: a broken list is reported to onError and the rest dropped.
 *   The descriptor of an allocated block (PG_HEAD, PG_LARGE, PG_SLAB, PG_RCU_BLOCK) belongs to its
 *     owner; only the head page's descriptor is non-zero (slab tails excepted, see slab.ts).
 *   A block in hand (taken off a pcp or buddy list, not yet given its kind; on its way back to
 *     them; a slab leaving its cache; a block being merged; pages a growth adds) is PG_HEAD |
 *     PG_INHAND | order with PD_OWNER this slot, the owner written before the flags: between any two
 *     statements each page is in a list or in a block a reader can walk, and reclaimSlot of a dead
 *     slot frees every block in its hand (freeBlocksInHand), so a kill loses no page
 *     (test/agents/reclaim-points, reclaim-trust, reclaim-gaps, kill). reclaimSlot, taking the zone
 *     lock over, rebuilds the buddy lists from the descriptors and finishes a growth that had not
 *     published Z_SIZE. A block a nolock free marked PG_DEFERRED (PD_OWNER this slot) and had not
 *     yet published is freed by it too, under the zone lock, when the deferred list does not hold it.
 *     A block in hand is no block to free (checkBlock: EDOUBLEFREE): mm_page_free fires once the
 *     block is in hand, mm_page_alloc before it leaves the hand, so a handler freeing it is refused.
 *
 * LOCKS: pcp -> zone; direct reclaim (GFP.KERNEL below the low watermark, holding no pcp or zone
 *   lock) first calls reclaimSlabs (the slab list locks, trylock only: class list, before pcp),
 *   then drains every slot's pcp lists (pcp -> zone), then takes the zone lock. Normal calls take
 *   zone with lock() and assert first that this agent holds no zone lock (EDEADLK otherwise,
 *   before anything changes). Nolock calls (GFP_TRYLOCK) take both with trylock only, never spin
 *   and never wait: allocation returns 0, a free is parked. On an agent that must not block,
 *   normal calls take zone with lockIn(0, ...), which gives up past NOBLOCK_BOUND_MS: then they
 *   behave as the nolock calls (0, a parked block, no drain); grow and validate, which cannot
 *   degrade, throw EAGAIN before they change anything. A noBlock agent waits at most
 *   PCP_NOBLOCK_SPINS on another slot's pcp word. A caller may hold any slab or rcu lock.
 * NO LOCK: the allocPages and freePages fast paths hold only this slot's biased pcp lock, which
 *   costs plain loads and stores while no other agent asks for it; freePagesNolock's deferPage.
 * STALE: the freePages fast path reads Z_PCP_HIGH and Z_DEFER_HEAD plain, with no zone lock: a
 *   block pushed on the llist just then is drained by the next normal free (the push is the
 *   pusher's, the drain anyone's), and high is set once at creation. Another slot's C_PCP_COUNT
 *   is read without its lock to skip empty lists (best effort, see pcp.ts).
 */
import { checkInt, checkOut, describe, einval, storeOut } from "../core/check.js";
import { ErrorCode, HeapError, hex } from "../core/errors.js";
import { GFP, GFP_NOWAIT_MASK, GFP_PUBLIC_MASK, GFP_TRYLOCK } from "../core/gfp.js";
import * as layout from "../core/layout.js";
import type { Locks } from "../core/lock.js";
import { type Mem, MemView } from "../core/mem.js";
import * as memConsts from "../core/mem.js";
import { TP, TRACE_EVENTS, type TraceRecord } from "../core/trace.js";
import { drainAllPcp, pcpDrain, pcpEnter, pcpExit, rmqueuePcp } from "./pcp.js";
import { growFor } from "./hotplug.js";
import { deferPage, drainDeferred, drainDeferredLocked, freeOneBlock, rmqueueSmallest } from "./buddy.js";
import { checkOutRegion, taggedIsFree } from "../core/out_region.js";
import { noop } from "../core/callbacks.js";

/* Module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const GFP_KERNEL = GFP.KERNEL;
const { WORD_MASK } = memConsts;
const { C_BULK_PAGES, C_PCP_COUNT, C_PCP_HEAD, C_PCP_LOCK, C_PCP_REQ, C_VMSTAT, H_FAIL_RATE, LOCK, MAX_ORDER, PAGE_SHIFT, PAGE_SIZE, PCP_LIST_MAX_ORDER, PCP_MAX_ORDER, PD_FLAGS, PD_NEXT, PD_OWNER, PD_WORDS, PG_BUDDY, PG_DEFERRED, PG_HEAD, PG_INHAND, PG_LARGE, PG_ORDER_MASK, PG_ORDER_SHIFT, PG_PCP, PG_RCU_BLOCK, PG_SLAB, VM, Z_DEFER_HEAD, Z_FREE_PAGES, Z_LOCK, Z_PCP_BATCH, Z_PCP_HIGH, Z_WMARK_LOW, Z_WMARK_MIN } = layout;

/** Which watermark an allocation must leave free. */
export const WMARK_MIN = 0;
export const WMARK_LOW = 1;
export const WMARK_RESERVE = 2; // GFP.ATOMIC: half of min

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

export class PageAllocator extends MemView {
  readonly mem: Mem;
  readonly locks: Locks;
  /** Non-zero while the pcp fast paths must not run: detached, this agent can re-enter, or faults are injected. */
  fastOff: number;
  /** 1 while this handle is inside its pcp section: the mirror of its C_PCP_BUSY (pcpBusySet). */
  inPcp: number;
  /**
   * The pcp fast paths' test of the handle: fastOff or inPcp (a callback run inside the section
   * re-entered). Whether this slot keeps its pcp lock word, and no one asks for it, the fast paths
   * read from the buffer.
   */
  gate: number;
  /**
   * Direct reclaim's shrinker: the slab layer gives back the empty slabs it keeps (slab/decay.ts).
   * Installed by the facade (layers.ts); nothing until then.
   */
  reclaimSlabs: () => void;
  /**
   * Is the object at `obj` of cache `id`, whose word 0 holds its free tag, free? The slab layer's
   * search (isFreeObject), installed by the facade (layers.ts); until then the tag alone says so.
   * checkOutRegion asks it: a live object may hold its tag as its caller's data.
   */
  freeObject: (id: number, obj: number) => boolean;
  /**
   * Z_DEFER_HEAD and Z_DEFER_PAGES as one 64-bit word (the head pfn in the low half, the pages on
   * the list in the high half), so that a push publishes the block and its count with one
   * compareExchange and a drain takes both with one exchange (buddy.ts). The header page never
   * moves: the view outlives growth.
   */
  readonly deferWord: BigUint64Array;

  constructor(mem: Mem, locks: Locks) {
    super(mem);
    this.mem = mem;
    this.locks = locks;
    this.fastOff = 0;
    this.inPcp = 0;
    this.gate = 0;
    this.reclaimSlabs = noop;
    this.freeObject = taggedIsFree;
    this.deferWord = new BigUint64Array(mem.buffer, (mem.hw + Z_DEFER_HEAD) << 2, 1);
  }

  /** Recompute fastOff (Locks.onChange, installed by the facade, calls it). */
  updateFastOff(): void {
    this.fastOff = this.locks.reentrant || this.locks.detached || this.u32[this.hw + H_FAIL_RATE] !== 0 ? 1 : 0;
    this.syncGate();
  }

  /** Recompute gate after fastOff or inPcp changed. */
  syncGate(): void {
    this.gate = this.fastOff !== 0 || this.inPcp !== 0 ? 1 : 0;
  }

  /* ================================================================= public entry points */

  /** 2^order contiguous pages aligned to their size, or 0. */
  allocPages(order: number, gfp: number = GFP_KERNEL): number {
    // Fast path: a pcp hit, this slot holding its biased pcp lock, nothing to report or inject.
    if (this.gate === 0 && typeof order === "number" && order >>> 0 === order && order <= PCP_LIST_MAX_ORDER && gfp === 0) {
      const i32 = this.i32;
      const c = this.pcpuW & WORD_MASK;
      if (i32[c + C_PCP_LOCK] === this.me && i32[c + C_PCP_REQ] === 0 && i32[c + C_PCP_HEAD + order] !== 0) {
        const pfn = this.pcpPop(order, PG_HEAD);
        i32[c + C_VMSTAT + VM.pgalloc] = i32[c + C_VMSTAT + VM.pgalloc]! + (1 << order);
        return pfn << PAGE_SHIFT;
      }
    }
    return this.allocPagesSlow(order, gfp);
  }

  /**
   * Pop the first block of this slot's pcp list of `order`, which is not empty, and give it
   * `flags` (with its order): PG_HEAD for the fast path, which hands it out; PG_HEAD | PG_INHAND
   * for rmqueuePcp, whose caller gives it its kind (a block in this slot's hand until then: the
   * owner is written first). The one pop of a pcp list. This slot's pcp lock held.
   */
  pcpPop(order: number, flags: number): number {
    const i32 = this.i32;
    const c = this.pcpuW & WORD_MASK;
    const pfn = i32[c + C_PCP_HEAD + order]!;
    const d = (this.descW + pfn * PD_WORDS) & WORD_MASK;
    i32[c + C_PCP_HEAD + order] = i32[d + PD_NEXT]!;
    i32[c + C_PCP_COUNT] = i32[c + C_PCP_COUNT]! - (1 << order);
    i32[d + PD_OWNER] = this.cpu;
    i32[d + PD_FLAGS] = flags | (order << PG_ORDER_SHIFT);
    return pfn;
  }

  /**
   * Push block `pfn` of `order` on this slot's pcp list (it becomes this slot's, whoever allocated
   * it); returns the pages on the lists now. The one push of a pcp list (the fast path, freeBlock,
   * pcpRefill). This slot's pcp lock held.
   */
  pcpPush(pfn: number, order: number): number {
    const i32 = this.i32;
    const c = this.pcpuW & WORD_MASK;
    const d = (this.descW + pfn * PD_WORDS) & WORD_MASK;
    i32[d + PD_FLAGS] = PG_PCP | (order << PG_ORDER_SHIFT);
    i32[d + PD_OWNER] = this.cpu;
    i32[d + PD_NEXT] = i32[c + C_PCP_HEAD + order]!;
    i32[c + C_PCP_HEAD + order] = pfn;
    const count = i32[c + C_PCP_COUNT]! + (1 << order);
    i32[c + C_PCP_COUNT] = count;
    return count;
  }

  private allocPagesSlow(order: number, gfp: number): number {
    this.locks.assertLive();
    checkOrder(order);
    checkGfp(gfp);
    if ((gfp & GFP.FAST_TRY) === 0) this.locks.assertCanLock(LOCK.zone);
    const pfn = this.rmqueue(order, gfp);
    if (pfn === 0) return this.allocFailed(order, gfp);
    return this.prepNewBlock(pfn, order, PG_HEAD, gfp);
  }

  /** Free a block that allocPages returned, with the order it was allocated with. */
  freePages(addr: number, order: number): void {
    // Fast path: the head of a live block of this order goes on this slot's pcp list below high.
    if (this.gate === 0 && typeof addr === "number" && typeof order === "number" && addr >>> 0 === addr && addr < this.size && order >>> 0 === order && order <= PCP_LIST_MAX_ORDER) {
      const i32 = this.i32;
      const c = this.pcpuW & WORD_MASK;
      const pfn = addr >>> PAGE_SHIFT;
      const d = (this.descW + pfn * PD_WORDS) & WORD_MASK;
      const count = i32[c + C_PCP_COUNT]! + (1 << order);
      if (
        (addr & (PAGE_SIZE - 1)) === 0 && pfn >= this.zoneStart && i32[d + PD_FLAGS] === (PG_HEAD | (order << PG_ORDER_SHIFT)) &&
        i32[c + C_PCP_LOCK] === this.me && i32[c + C_PCP_REQ] === 0 && count <= i32[this.hw + Z_PCP_HIGH]! && i32[this.hw + Z_DEFER_HEAD] === 0
      ) {
        // The block may have been allocated by another slot: it is this slot's now.
        this.pcpPush(pfn, order);
        i32[c + C_VMSTAT + VM.pgfree] = i32[c + C_VMSTAT + VM.pgfree]! + (1 << order);
        return;
      }
    }
    this.freePagesSlow(addr, order);
  }

  private freePagesSlow(addr: number, order: number): void {
    this.locks.assertLive();
    checkOrder(order);
    const pfn = this.checkBlock(addr, order, PG_HEAD);
    this.locks.assertCanLock(LOCK.zone);
    // In hand before the event: a handler's second free of the block is refused (freePagesNolock).
    this.u32[this.mem.pd(pfn) + PD_OWNER] = this.cpu;
    this.u32[this.mem.pd(pfn) + PD_FLAGS] = PG_HEAD | PG_INHAND | (order << PG_ORDER_SHIFT);
    this.locks.vmInc(VM.pgfree, 1 << order);
    if ((this.locks.trace.mask & (1 << TP.mm_page_free)) !== 0) this.emitPage(TP.mm_page_free, pfn, order);
    this.freeBlock(pfn, order, 0);
  }

  /**
   * Fill `out` with up to `count` order-0 pages; returns how many. One pcp lock hold serves the
   * whole batch while the pcp lists can. The pages are in this slot's hand until the last
   * statement (see handOverBulk).
   */
  allocPagesBulk(count: number, out: number[] | Uint32Array, gfp: number = GFP_KERNEL): number {
    this.locks.assertLive();
    checkInt("count", count, 0, 0x7fffffff, " of pages");
    checkOut("out", out, count);
    checkGfp(gfp);
    if (out instanceof Uint32Array) checkOutRegion(this.mem, out, count, this.freeObject);
    if ((gfp & GFP.FAST_TRY) === 0) this.locks.assertCanLock(LOCK.zone);
    // A plain array is filled only after every page is taken and every lock dropped: a write it
    // refuses (a Proxy, a setter) then costs the pages, not a lock or a leak.
    const got: number[] | Uint32Array = out instanceof Uint32Array ? out : [];
    let n = 0;
    let prepped = 0;
    let hand = 0;
    try {
      if (count > 1 && this.u32[this.hw + H_FAIL_RATE] === 0 && pcpEnter(this)) {
        try {
          for (; n < count; n++) {
            const pfn = rmqueuePcp(this, 0, gfp);
            if (pfn === 0) break;
            got[n] = pfn;
          }
        } finally {
          pcpExit(this);
        }
      }
      for (; n < count; n++) {
        const pfn = this.rmqueue(0, gfp);
        if (pfn === 0) break;
        got[n] = pfn;
      }
      // Every page stays in this slot's hand (PG_INHAND) through its zeroing and trace, then they
      // go to the caller together (handOverBulk): a kill anywhere in the call loses none.
      for (; prepped < n; prepped++) got[prepped] = this.prepNewBlock(got[prepped]!, 0, PG_HEAD | PG_INHAND, gfp);
    } catch (e) {
      // Part-way (a dead lock owner, a corrupt list): every page taken goes back (freeBlock, nolock:
      // it never waits), none is kept; then the error.
      for (let i = 0; i < n; i++) this.freeBlock(i < prepped ? got[i]! >>> PAGE_SHIFT : got[i]!, 0, GFP_TRYLOCK);
      throw e;
    }
    hand = n > 0 ? this.handOverBulk(got, n) : 0;
    const refused = got !== out ? storeOut(out, got, n) : null;
    if (hand !== 0 && this.u32[hand] === got[0]! >>> PAGE_SHIFT) this.u32[hand] = 0;
    if (refused !== null) {
      for (let i = 0; i < n; i++) this.freePages(got[i]!, 0);
      einval(`out refused a write (${refused}): the ${n} pages taken were freed again`);
    }
    if (n < count) this.allocFailed(0, gfp | GFP.NOWARN);
    return n;
  }

  /**
   * allocPagesBulk: the `n` pages at `addrs`, in this slot's hand, become allocated blocks. They
   * are chained (PD_NEXT) from the slot's bulk hand (C_BULK_PAGES) first, unless a call this one
   * interrupted holds it: until the caller clears the word (the call's last statement) a kill
   * leaves them all to reclaimSlot. Returns the word to clear, or 0.
   */
  private handOverBulk(addrs: ArrayLike<number>, n: number): number {
    const u32 = this.u32;
    const hand = this.pcpuW + C_BULK_PAGES;
    const held = u32[hand] === 0;
    for (let i = 0; i < n; i++) u32[this.mem.pd(addrs[i]! >>> PAGE_SHIFT) + PD_NEXT] = i + 1 < n ? addrs[i + 1]! >>> PAGE_SHIFT : 0;
    if (held) u32[hand] = addrs[0]! >>> PAGE_SHIFT;
    for (let i = 0; i < n; i++) u32[this.mem.pd(addrs[i]! >>> PAGE_SHIFT) + PD_FLAGS] = PG_HEAD;
    return held ? hand : 0;
  }

  /**
   * allocPages that is safe from any context: pcp trylock, then zone trylock, then 0. Orders above
   * PCP_MAX_ORDER give 0. Only GFP.ZERO is taken from `gfp`.
   */
  allocPagesNolock(order: number, gfp: number = 0): number {
    this.locks.assertLive();
    checkOrder(order);
    checkGfp(gfp);
    if (order > PCP_MAX_ORDER) return 0;
    if (this.locks.closing) {
      this.locks.vmInc(VM.nolockFail, 1);
      return 0;
    }
    const flags = (gfp & GFP.ZERO) | GFP_TRYLOCK | GFP.NOWAIT;
    const pfn = this.rmqueue(order, flags);
    if (pfn === 0) {
      this.locks.vmInc(VM.nolockFail, 1);
      return 0;
    }
    return this.prepNewBlock(pfn, order, PG_HEAD, flags);
  }

  /** freePages that is safe from any context: never spins, never waits; parks the block if it must. */
  freePagesNolock(addr: number, order: number): void {
    this.locks.assertLive();
    checkOrder(order);
    const pfn = this.checkBlock(addr, order, PG_HEAD);
    // In hand from here (a second free of it is refused; a kill leaves it to reclaimSlot).
    this.u32[this.mem.pd(pfn) + PD_OWNER] = this.cpu;
    this.u32[this.mem.pd(pfn) + PD_FLAGS] = PG_HEAD | PG_INHAND | (order << PG_ORDER_SHIFT);
    this.locks.vmInc(VM.pgfree, 1 << order);
    if ((this.locks.trace.mask & (1 << TP.mm_page_free)) !== 0) this.emitPage(TP.mm_page_free, pfn, order);
    this.freeBlock(pfn, order, GFP_TRYLOCK);
  }

  /* ================================================================= allocation internals */

  /**
   * Take a block of 2^order pages out of the allocator; returns its pfn with PD_FLAGS 0, or 0.
   * The caller checked its mode against the locks it holds.
   */
  rmqueue(order: number, gfp: number): number {
    const pfn = this.rmqueueAny(order, gfp);
    // Memory hotplug: a block from pages added after this handle built its views.
    if (pfn !== 0 && pfn + (1 << order) > this.nrPages) this.locks.refreshViews();
    return pfn;
  }

  private rmqueueAny(order: number, gfp: number): number {
    if (this.u32[this.hw + H_FAIL_RATE] !== 0 && this.locks.shouldFail()) return 0;
    if (order <= PCP_LIST_MAX_ORDER) {
      if (pcpEnter(this)) {
        let pfn = 0;
        try {
          pfn = rmqueuePcp(this, order, gfp);
        } finally {
          pcpExit(this); // a throw inside (a lock another handle of this agent holds) leaves the section too
        }
        if (pfn !== 0) return pfn;
      } else {
        this.locks.vmInc(VM.pcpTrylockFail, 1);
      }
      if ((gfp & GFP.FAST_TRY) !== 0) {
        this.locks.vmInc(VM.fastTryFail, 1);
        return 0;
      }
    } else if ((gfp & GFP.FAST_TRY) !== 0) {
      return 0;
    }
    return this.rmqueueBuddy(order, gfp);
  }

  /** Allocate from the buddy lists, with direct reclaim for GFP.KERNEL. */
  private rmqueueBuddy(order: number, gfp: number): number {
    if (!this.locks.lockIn(gfp & GFP_TRYLOCK, this.hw + Z_LOCK, LOCK.zone)) {
      this.locks.vmInc(VM.zoneTrylockFail, 1);
      return 0;
    }
    const kernel = (gfp & GFP_NOWAIT_MASK) === 0;
    let pfn = this.watermarkOk(order, kernel ? WMARK_LOW : wmarkFor(gfp)) ? rmqueueSmallest(this, order) : 0;
    if (pfn !== 0 && (this.locks.trace.mask & (1 << TP.mm_page_alloc_zone_locked)) !== 0) {
      this.emitPage(TP.mm_page_alloc_zone_locked, pfn, order);
    }
    this.locks.unlock(this.hw + Z_LOCK, LOCK.zone);
    if (pfn === 0 && kernel && !this.locks.holdsFrom(LOCK.pcp)) pfn = this.allocSlowReclaim(order);
    return pfn;
  }

  /**
   * GFP.KERNEL below the low watermark: take back the slab caches' kept empty slabs, drain every
   * slot's pcp lists; grow the heap if it may grow (memory hotplug); then allocate down to min.
   */
  private allocSlowReclaim(order: number): number {
    this.locks.vmInc(VM.directReclaim, 1);
    // The slab caches' kept empty slabs first, so that the pcp drain below takes their pages too.
    this.reclaimSlabs();
    drainAllPcp(this);
    // An agent that must not block gives up past its bound: the allocation returns 0.
    if (!this.locks.lockIn(0, this.hw + Z_LOCK, LOCK.zone)) return 0;
    drainDeferredLocked(this);
    // Memory hotplug: grow rather than dip below low, and when no block of this order is free.
    if (!this.watermarkOk(order, WMARK_LOW)) growFor(this, order);
    let pfn = this.watermarkOk(order, WMARK_MIN) ? rmqueueSmallest(this, order) : 0;
    if (pfn === 0 && growFor(this, order)) pfn = this.watermarkOk(order, WMARK_MIN) ? rmqueueSmallest(this, order) : 0;
    if (pfn !== 0 && (this.locks.trace.mask & (1 << TP.mm_page_alloc_zone_locked)) !== 0) {
      this.emitPage(TP.mm_page_alloc_zone_locked, pfn, order);
    }
    this.locks.unlock(this.hw + Z_LOCK, LOCK.zone);
    return pfn;
  }

  /** Would taking 2^order pages leave the watermark free? Zone lock held. */
  watermarkOk(order: number, which: number): boolean {
    const u32 = this.u32;
    const min = u32[this.hw + Z_WMARK_MIN]!;
    const mark = which === WMARK_LOW ? u32[this.hw + Z_WMARK_LOW]! : which === WMARK_MIN ? min : min >>> 1;
    return u32[this.hw + Z_FREE_PAGES]! - (1 << order) >= mark;
  }

  /**
   * Turn a block taken by rmqueue into an allocation: zeroing, counters, trace, then head flags and
   * owner. The block stays in this slot's hand (PG_INHAND) until the last statement: after it
   * nothing runs before the caller has the address, so an agent killed anywhere before leaves a
   * block reclaimSlot frees, never an allocated block nobody was given.
   */
  prepNewBlock(pfn: number, order: number, kind: number, gfp: number): number {
    const addr = pfn << PAGE_SHIFT;
    if ((gfp & GFP.ZERO) !== 0) this.u8.fill(0, addr, addr + (PAGE_SIZE << order));
    this.locks.vmInc(VM.pgalloc, 1 << order);
    if ((this.locks.trace.mask & (1 << TP.mm_page_alloc)) !== 0) this.emitPage(TP.mm_page_alloc, pfn, order, gfp);
    const d = this.mem.pd(pfn);
    this.u32[d + PD_OWNER] = this.cpu;
    this.u32[d + PD_FLAGS] = kind | (order << PG_ORDER_SHIFT);
    return addr;
  }

  /** Count a failed allocation (allocation failures are not errors; GFP.NOWARN keeps them quiet). */
  allocFailed(order: number, gfp: number): number {
    if ((gfp & GFP.NOWARN) === 0) this.locks.vmInc(VM.allocFail, 1);
    return 0;
  }

  /* ================================================================= free internals */

  /**
   * Give a block back (its PD_FLAGS are rewritten here): to this slot's pcp list when its trylock succeeds (a
   * normal free drains a batch when the list passes high), else to the buddy lists; a nolock free
   * that cannot have the zone lock parks the block on the deferred llist.
   */
  freeBlock(pfn: number, order: number, mode: number): void {
    const nolock = mode !== 0;
    // In this slot's hand until a list takes it (see the contract): whatever the caller did to the
    // flags, at every lock point below the block is an allocated block of this slot.
    this.u32[this.mem.pd(pfn) + PD_OWNER] = this.cpu;
    this.u32[this.mem.pd(pfn) + PD_FLAGS] = PG_HEAD | PG_INHAND | (order << PG_ORDER_SHIFT);
    if (order <= PCP_LIST_MAX_ORDER) {
      if (pcpEnter(this)) {
        try {
          const count = this.pcpPush(pfn, order);
          // A block of a high order can pass high by more than a batch: drain down to high at least.
          const high = this.u32[this.hw + Z_PCP_HIGH]!;
          if (!nolock && count > high) pcpDrain(this, this.cpu, Math.max(this.u32[this.hw + Z_PCP_BATCH]!, count - high));
        } finally {
          pcpExit(this);
        }
        if (!nolock && this.i32[this.hw + Z_DEFER_HEAD] !== 0) drainDeferred(this);
        return;
      }
      this.locks.vmInc(VM.pcpTrylockFail, 1);
    }
    // The flags stay until the zone lock is held: an agent that dies waiting for it leaves an
    // allocated block behind, never pages that belong to nothing (reclaimSlot).
    if (!this.locks.lockIn(mode, this.hw + Z_LOCK, LOCK.zone)) {
      this.locks.vmInc(VM.zoneTrylockFail, 1);
      deferPage(this, pfn, order);
      return;
    }
    freeOneBlock(this, pfn, order);
    if (!nolock) drainDeferredLocked(this);
    this.locks.unlock(this.hw + Z_LOCK, LOCK.zone);
  }

  /* ================================================================= checks */

  /**
   * The pfn of the block at `addr` if it is the head of a live block of kind `kind` and `order`;
   * otherwise throws EINVAL or EDOUBLEFREE and changes nothing.
   */
  checkBlock(addr: number, order: number, kind: number): number {
    if (typeof addr !== "number") einval(`addr must be a number (an address from allocPages), not ${describe(addr)}`);
    if (addr >>> 0 !== addr || (addr & (PAGE_SIZE - 1)) !== 0 || (addr >= this.size && !(this.locks.refreshViews() && addr < this.size))) {
      throw new HeapError(ErrorCode.EINVAL, `addr ${String(addr)} is not a page address of this heap (a multiple of ${PAGE_SIZE} below ${this.size})`);
    }
    const pfn = addr >>> PAGE_SHIFT;
    if (pfn < this.zoneStart) {
      throw new HeapError(ErrorCode.EINVAL, `${hex(addr)} is in the heap's metadata, not an allocated block`);
    }
    const f = this.u32[this.mem.pd(pfn) + PD_FLAGS]!;
    if ((f & (PG_BUDDY | PG_PCP | PG_DEFERRED)) !== 0 || (f === 0 && this.insideFreeBlock(pfn))) {
      throw new HeapError(ErrorCode.EDOUBLEFREE, `the block at ${hex(addr)} is already free`);
    }
    if (f === 0) throw new HeapError(ErrorCode.EINVAL, `${hex(addr)} is not the start of an allocated block`);
    if ((f & PG_INHAND) !== 0) {
      // A free (or an allocation) of it is in progress: a trace handler of that call frees it again.
      throw new HeapError(ErrorCode.EDOUBLEFREE, `the block at ${hex(addr)} is being freed or handed out by a call in progress (in cpu ${this.u32[this.mem.pd(pfn) + PD_OWNER]}'s hand)`);
    }
    if ((f & kind) === 0) {
      throw new HeapError(ErrorCode.EINVAL, `the block at ${hex(addr)} is ${describeKind(f)}, not ${describeKind(kind)}`);
    }
    const got = (f & PG_ORDER_MASK) >>> PG_ORDER_SHIFT;
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
      const f = this.u32[this.mem.pd(head) + PD_FLAGS]!;
      if (f === 0) continue;
      const order = (f & PG_ORDER_MASK) >>> PG_ORDER_SHIFT;
      return order >= o && (f & (PG_BUDDY | PG_PCP | PG_DEFERRED)) !== 0;
    }
    return false;
  }

  /* ================================================================= tracing */

  emitPage(id: number, pfn: number, order: number, gfp = 0): void {
    const rec: TraceRecord = { event: TRACE_EVENTS[id]!, cpu: this.cpu, addr: pfn << PAGE_SHIFT, order };
    if (gfp !== 0) rec.gfp = gfp & GFP_PUBLIC_MASK;
    this.locks.trace.emit(id, rec);
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

export function wmarkFor(gfp: number): number {
  return (gfp & GFP.ATOMIC) !== 0 ? WMARK_RESERVE : WMARK_MIN;
}

function describeKind(f: number): string {
  if ((f & PG_SLAB) !== 0) return "a slab page (free its objects with kfree)";
  if ((f & PG_LARGE) !== 0) return "a large kmalloc block (free it with kfree)";
  if ((f & PG_RCU_BLOCK) !== 0) return "a kfreeRcu block page";
  if ((f & PG_HEAD) !== 0) return "a page block";
  return `a block with flags ${hex(f)}`;
}
