/*
 * The per-CPU page lists (pcp): each slot's lists of free blocks of orders 0..PCP_LIST_MAX_ORDER, in
 * front of the zone, and the biased lock that guards them (see page_alloc.ts for its protocol).
 *
 * WORDS: a slot's C_PCP_HEAD[], C_PCP_COUNT and the descriptors of the blocks on its
 *   lists: plain stores by whoever holds its C_PCP_LOCK (the owner inside pcpEnter..pcpExit, a
 *   remote drainer, reclaimSlot). C_PCP_LOCK: the owner takes it with compareExchange 0 -> owner
 *   and keeps it; it stores 0 (Atomics.store) at entry or exit when C_PCP_REQ is non-zero; a
 *   remote drainer takes it with compareExchange when 0 and gives it back with Atomics.store 0;
 *   reclaimSlot steals a dead owner's (pcpSteal, compareExchange). C_PCP_BUSY: the owner alone,
 *   plain (its re-entry guard). C_PCP_REQ: Atomics.add/sub by remote drainers. C_PCP_REQ_AT: the
 *   drainer's own slot, plain (which slot it asks, so reclaimSlot can lower a dead one's request).
 * LOCKS, in order: pcp -> zone (a refill or a drain takes the zone lock with the pcp lock held:
 *   lockIn, trylock for GFP_TRYLOCK). Entering is a trylock (pcpEnter); a remote drainer spins
 *   bounded (pcpLockRemote) and never Atomics.waits; detach spins on its own word while a remote
 *   drainer has it (bounded for a noBlock agent: EAGAIN). Callers hold no pcp or zone lock.
 * NO LOCK: the owner's pcp entry and exit while it keeps the word cost plain reads and stores only;
 *   drainPcpOf's first look at another slot's C_PCP_COUNT.
 * STALE: another slot's C_PCP_COUNT read with no lock (a slot that looks empty is skipped, and
 *   its pages are found again at the next drain: best effort by design); the owner reads
 *   C_PCP_REQ plain at exit, so a request raised just then waits for its next entry (bounded by
 *   the drainer's spins).
 */
import { ErrorCode, HeapError } from "../core/errors.js";
import { GFP, GFP_TRYLOCK } from "../core/gfp.js";
import * as layout from "../core/layout.js";
import { TP } from "../core/trace.js";
import type { PageAllocator } from "./page_alloc.js";
import { WMARK_LOW, wmarkFor } from "./page_alloc.js";
import { drainDeferredLocked, freeOneBlock, rmqueueSmallest } from "./buddy.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { C_PCP_BUSY, C_PCP_COUNT, C_PCP_HEAD, C_PCP_LOCK, C_PCP_REQ, C_PCP_REQ_AT, LOCK, NR_PCP_ORDERS, PCP_LIST_MAX_ORDER, PD_FLAGS, PD_NEXT, PD_OWNER, PG_HEAD, PG_INHAND, PG_ORDER_SHIFT, VM, Z_LOCK, Z_NR_PAGES, Z_PCP_BATCH, Z_SIZE } = layout;

/** Rounds a remote agent waits for a pcp owner to hand its lock over. */
export const PCP_REMOTE_SPINS = 1 << 16;
/** Read-only spins of a noBlock agent on another slot's pcp word (a few µs). */
const PCP_NOBLOCK_SPINS = 1 << 10;

/** Pop a block from this slot's pcp list, refilling the list from the zone. pcp lock held. */
export function rmqueuePcp(pa: PageAllocator, order: number, gfp: number): number {
  if (pa.u32[pa.pcpuW + C_PCP_HEAD + order] === 0 && ((gfp & GFP.FAST_TRY) !== 0 || !pcpRefill(pa, order, gfp))) return 0;
  // In hand: this slot's until prepNewBlock (see rmqueueSmallest).
  return pa.pcpPop(order, PG_HEAD | PG_INHAND);
}

/** rmqueue_bulk: move up to `batch` pages of `order` blocks from the zone to this slot's list. */
export function pcpRefill(pa: PageAllocator, order: number, gfp: number): boolean {
  if (!pa.locks.lockIn(gfp & GFP_TRYLOCK, pa.hw + Z_LOCK, LOCK.zone)) {
    pa.locks.vmInc(VM.zoneTrylockFail, 1);
    return false;
  }
  const u32 = pa.u32;
  const want = Math.max(1, u32[pa.hw + Z_PCP_BATCH]! >>> order);
  let got = 0;
  for (; got < want; got++) {
    // The first block needs only the request's watermark; extra blocks must leave `low` free.
    if (!pa.watermarkOk(order, got === 0 ? wmarkFor(gfp) : WMARK_LOW)) break;
    const pfn = rmqueueSmallest(pa, order);
    if (pfn === 0) break;
    pa.pcpPush(pfn, order);
    if ((pa.locks.trace.mask & (1 << TP.mm_page_alloc_zone_locked)) !== 0) {
      pa.emitPage(TP.mm_page_alloc_zone_locked, pfn, order);
    }
  }
  const grown = u32[pa.hw + Z_NR_PAGES]! > pa.nrPages;
  pa.locks.unlock(pa.hw + Z_LOCK, LOCK.zone);
  // Pages on the list may come from pages added after this handle built its views.
  if (grown) pa.locks.refreshViews();
  if (got > 0) pa.locks.vmInc(VM.pcpRefill, 1);
  return got > 0;
}

/**
 * free_pcppages_bulk: give `count` pages of slot `cpu`'s lists back to the zone. That pcp lock
 * held. An agent that must not block drains nothing when the zone lock is held past its bound.
 */
export function pcpDrain(pa: PageAllocator, cpu: number, count: number): void {
  const u32 = pa.u32;
  const c = pa.mem.pcpOf(cpu);
  if (!pa.locks.lockIn(0, pa.hw + Z_LOCK, LOCK.zone)) return;
  let freed = 0;
  for (let o = 0, idle = 0; freed < count && idle < NR_PCP_ORDERS; o = o === PCP_LIST_MAX_ORDER ? 0 : o + 1) {
    const pfn = u32[c + C_PCP_HEAD + o]!;
    if (pfn === 0) {
      idle++;
      continue;
    }
    idle = 0;
    const d = pa.mem.pd(pfn);
    u32[c + C_PCP_HEAD + o] = u32[d + PD_NEXT]!;
    u32[c + C_PCP_COUNT] = u32[c + C_PCP_COUNT]! - (1 << o);
    u32[d + PD_OWNER] = pa.cpu;
    u32[d + PD_FLAGS] = PG_HEAD | PG_INHAND | (o << PG_ORDER_SHIFT);
    if ((pa.locks.trace.mask & (1 << TP.mm_page_pcpu_drain)) !== 0) pa.emitPage(TP.mm_page_pcpu_drain, pfn, o);
    freeOneBlock(pa, pfn, o);
    freed += 1 << o;
  }
  drainDeferredLocked(pa);
  pa.locks.unlock(pa.hw + Z_LOCK, LOCK.zone);
  pa.locks.vmInc(VM.pcpDrain, 1);
}

/** Drain every slot's pcp lists (direct reclaim): its own through pcpEnter, the others' with the bounded pcpLockRemote. */
export function drainAllPcp(pa: PageAllocator): void {
  for (let cpu = 0; cpu < pa.cpus; cpu++) drainPcpOf(pa, cpu);
}

/** Empty slot `cpu`'s pcp lists into the zone (best effort for an idle owner, see pcpLockRemote). */
export function drainPcpOf(pa: PageAllocator, cpu: number): void {
  const c = pa.mem.pcpOf(cpu);
  if (pa.u32[c + C_PCP_COUNT] === 0) return;
  if (cpu === pa.cpu) {
    if (!pcpEnter(pa)) return;
    try {
      const count = pa.u32[c + C_PCP_COUNT]!;
      if (count !== 0) pcpDrain(pa, cpu, count);
    } finally {
      pcpExit(pa);
    }
    return;
  }
  if (!pcpLockRemote(pa, cpu, PCP_REMOTE_SPINS)) return;
  const count = pa.u32[c + C_PCP_COUNT]!;
  if (count !== 0) pcpDrain(pa, cpu, count);
  pcpUnlockRemote(pa, cpu);
}

/**
 * Enter this slot's pcp section: the local trylock. It fails when this agent is already inside
 * (re-entry from a hook: seed 004, also with one agent), or when the lock word is not this
 * slot's and cannot be had at once. While the owner keeps the lock word between calls, entering
 * and leaving cost two plain reads and two plain stores.
 */
export function pcpEnter(pa: PageAllocator): boolean {
  const i32 = pa.i32;
  const c = pa.pcpuW;
  if (i32[c + C_PCP_BUSY] !== 0) return false;
  if (i32[c + C_PCP_LOCK] !== pa.me || i32[c + C_PCP_REQ] !== 0) {
    if (!pcpRebias(pa)) return false;
  }
  pcpBusySet(pa, 1);
  pa.locks.acquired(LOCK.pcp);
  return true;
}

/**
 * Mark this slot inside (1) or outside (0) its pcp section: C_PCP_BUSY, and its mirror inPcp that
 * closes the fast paths' gate (the lock point's hook runs after the mark on entry, before it on exit).
 */
export function pcpBusySet(pa: PageAllocator, busy: number): void {
  pa.i32[pa.pcpuW + C_PCP_BUSY] = busy;
  pa.inPcp = busy;
  pa.syncGate();
}

/** The lock word is not ours to keep: hand it over if someone waits, else try to take it. */
export function pcpRebias(pa: PageAllocator): boolean {
  const i32 = pa.i32;
  const w = pa.pcpuW + C_PCP_LOCK;
  if (Atomics.load(i32, pa.pcpuW + C_PCP_REQ) !== 0) {
    // A remote agent waits for it: release, and take the buddy path this time.
    if (Atomics.load(i32, w) === pa.me) Atomics.store(i32, w, 0);
    return false;
  }
  const v = Atomics.load(i32, w);
  return v === pa.me || (v === 0 && Atomics.compareExchange(i32, w, 0, pa.me) === 0);
}

export function pcpExit(pa: PageAllocator): void {
  pa.locks.releasing(LOCK.pcp);
  const i32 = pa.i32;
  const c = pa.pcpuW;
  pcpBusySet(pa, 0);
  // Publication point for a waiting drainer: the store releases everything written above.
  if (i32[c + C_PCP_REQ] !== 0 && Atomics.load(i32, c + C_PCP_LOCK) === pa.me) Atomics.store(i32, c + C_PCP_LOCK, 0);
}

/**
 * detach(): empty this slot's pcp lists and give up its lock word. Unlike pcpEnter this must not
 * fail, so it waits (spinning read-only) while a remote drainer holds the word: a drainer's hold
 * is a bounded, short section.
 */
export function pcpDetach(pa: PageAllocator): void {
  const i32 = pa.i32;
  const c = pa.pcpuW;
  const w = c + C_PCP_LOCK;
  let since = -1;
  for (let n = 0; ; n++) {
    const v = Atomics.load(i32, w);
    if (v === pa.me || (v === 0 && Atomics.compareExchange(i32, w, 0, pa.me) === 0)) break;
    if (!pa.locks.canBlock && n >= PCP_NOBLOCK_SPINS) {
      if (since < 0) since = pa.locks.clock();
      else if ((n & 255) === 0 && pa.locks.spinExpired(since)) pcpBusy(pa, v);
    }
  }
  pcpBusySet(pa, 1);
  pa.locks.acquired(LOCK.pcp);
  let count = pa.u32[c + C_PCP_COUNT]!;
  if (count !== 0) pcpDrain(pa, pa.cpu, count);
  count = pa.u32[c + C_PCP_COUNT]!;
  pa.locks.releasing(LOCK.pcp);
  pcpBusySet(pa, 0);
  // A noBlock agent that could not have the zone lock keeps its lists and its lock word.
  if (count !== 0) pcpBusy(pa, Atomics.load(i32, pa.hw + Z_LOCK));
  Atomics.store(i32, w, 0);
}

/** A noBlock agent's detach found a lock (pcp word or zone) held past its bound. */
export function pcpBusy(pa: PageAllocator, v: number): never {
  throw new HeapError(
    ErrorCode.EAGAIN,
    `cpu ${pa.cpu} must not block, and cpu ${(v & 0xffff) - 1} held a lock it needs for more than its bound: ` +
      "the call gave up; what it returned so far stays returned, and the handle is still attached: call again",
  );
}

/**
 * Take slot `cpu`'s pcp lock from another slot: raise its request count and wait, at most
 * `spins` rounds, for the owner to hand the lock over at its next pcp call. An idle owner never
 * does, so this is best effort; it never waits on a lock with Atomics.wait.
 */
export function pcpLockRemote(pa: PageAllocator, cpu: number, spins: number): boolean {
  const i32 = pa.i32;
  const c = pa.mem.pcpOf(cpu);
  const w = c + C_PCP_LOCK;
  Atomics.add(i32, c + C_PCP_REQ, 1);
  i32[pa.pcpuW + C_PCP_REQ_AT] = cpu + 1;
  // An agent that must not block waits a fraction of its bound for each slot.
  const limit = pa.locks.canBlock ? spins : Math.min(spins, PCP_NOBLOCK_SPINS);
  try {
    for (let n = 0; ; n++) {
      const v = Atomics.load(i32, w);
      if (v === 0) {
        if (Atomics.compareExchange(i32, w, 0, pa.me) === 0) {
          pa.locks.acquired(LOCK.pcp);
          if (pa.u32[pa.hw + Z_SIZE] !== pa.size) pa.locks.refreshViews();
          return true;
        }
      } else if (n >= limit) {
        return false;
      }
    }
  } finally {
    i32[pa.pcpuW + C_PCP_REQ_AT] = 0;
    Atomics.sub(i32, c + C_PCP_REQ, 1);
  }
}

export function pcpUnlockRemote(pa: PageAllocator, cpu: number): void {
  pa.locks.releasing(LOCK.pcp);
  Atomics.store(pa.i32, pa.mem.pcpOf(cpu) + C_PCP_LOCK, 0);
}

/** Reclaim: take the pcp lock word of dead slot `cpu`, which held it outside any pcp section. */
export function pcpSteal(pa: PageAllocator, cpu: number): boolean {
  const w = pa.mem.pcpOf(cpu) + C_PCP_LOCK;
  const v = Atomics.load(pa.i32, w);
  if ((v !== 0 && v !== cpu + 1) || Atomics.compareExchange(pa.i32, w, v, pa.me) !== v) return false;
  pa.locks.acquired(LOCK.pcp);
  return true;
}

/** reclaimSlot: recount slot `cpu`'s pcp lists (its pcp word held), which a dead agent may have left torn. */
export function recountPcp(pa: PageAllocator, cpu: number): void {
  const u32 = pa.u32;
  const c = pa.mem.pcpOf(cpu);
  let pages = 0;
  for (let o = 0; o <= PCP_LIST_MAX_ORDER; o++) {
    let n = 0;
    for (let pfn = u32[c + C_PCP_HEAD + o]!; pfn !== 0 && n <= pa.nrPages; pfn = u32[pa.mem.pd(pfn) + PD_NEXT]!) n++;
    pages += n << o;
  }
  u32[c + C_PCP_COUNT] = pages;
}

/** reclaimSlot: dead slot `cpu` died waiting for another slot's pcp lock; lower its request. */
export function pcpDropRequestOf(pa: PageAllocator, cpu: number): void {
  const c = pa.mem.pcpOf(cpu);
  const at = pa.i32[c + C_PCP_REQ_AT]!;
  if (at === 0) return;
  pa.i32[c + C_PCP_REQ_AT] = 0;
  if (at - 1 >= 0 && at - 1 < pa.cpus && Atomics.load(pa.i32, pa.mem.pcpOf(at - 1) + C_PCP_REQ) > 0) Atomics.sub(pa.i32, pa.mem.pcpOf(at - 1) + C_PCP_REQ, 1);
}
