/*
 * kfreeRcu: objects freed after a grace period, queued in page-sized blocks per slot, and freed
 * in batches by the agent's timer, its slow paths, rcuBarrier, detach or reclaimSlot.
 * See rcu.ts for the whole contract.
 *
 * WORDS: a slot's kfreeRcu state, plain stores under its C_KRCP_LOCK (class rcu, first in the lock
 *   order): C_RCU_BLOCK, the wait chain C_RCU_WAIT..C_RCU_WAIT_TAIL, C_RCU_PENDING, C_RCU_BLOCKS,
 *   the emergency array, the spare block pages (C_RCU_SPARE, C_RCU_NR_SPARE) and the contents of
 *   the block pages on them; the PD_OWNER of a block page, written by whoever takes it off a chain,
 *   the current word or the spare list, before it leaves. R_INFLIGHT (Atomics.add and sub) and the
 *   taker's C_RCU_INFLIGHT (plain, its own slot).
 * LOCKS, in order: rcu (krcp) -> pcp (a block page from this slot's pcp list, trylock only, with
 *   the krcp lock held). The slab and page locks of the frees are taken only after the krcp lock is
 *   dropped: the expired blocks are unlinked under it and freed after. kfreeRcu takes its own krcp
 *   lock with a trylock (safe from hooks) and spins bounded on another agent's; pushSpare only
 *   trylocks; rcuProcessOwn takes its own with lockIn(0, ...) (a noBlock agent leaves the work for
 *   later); dropSpareBlocks and rcuBlocksInHand take a slot's with lock(), one slot at a time.
 *   Block pages come from the spare pages, else a GFP.FAST_TRY | NOWAIT nolock allocation, and only
 *   an agent that may wait and holds no lock takes one from the zone (refillSpareBlocks, NOWAIT)
 *   or waits for a grace period. A caller may hold any lock; kfreeRcu from a hook that holds one
 *   never waits (the emergency array, else EDEADLK).
 * NO LOCK: the free of an unlinked batch (freeExpired: the block pages are in the taker's hand,
 *   RB_COUNT lowered before each kfree); refillSpareBlocks' allocations (the page is the caller's
 *   until pushSpare's trylock).
 * STALE: nothing read here decides without the lock: rcuSlowWork and the timer look at this
 *   slot's own words; a grace-period poll reads the snapshots as rcu.ts says.
 */
import { ErrorCode, HeapError, hex } from "../core/errors.js";
import { GFP, GFP_TRYLOCK } from "../core/gfp.js";
import * as layout from "../core/layout.js";
import { LOCK_OWNER_MASK } from "../core/lock.js";
import { checkBulk, debugFree, debugSetState, objectCache } from "../slab/debug.js";
import { freeOfReturning, kfreeSlow } from "../slab/kmalloc.js";
import type { RcuAllocator } from "./rcu.js";
import { RCU_DELAY_MS, gpAfter } from "./rcu.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { C_KRCP_LOCK, C_RCU_BLOCK, C_RCU_BLOCKS, C_RCU_EMERG, C_RCU_EMERG_GP, C_RCU_EMERG_MAX, C_RCU_EMERG_NR, C_RCU_INFLIGHT, C_RCU_NR_SPARE, C_RCU_PENDING, C_RCU_SPARE, C_RCU_SPARE_MAX, C_RCU_WAIT, C_RCU_WAIT_TAIL, K_META, LOCK, M_STATE_ALLOC, M_STATE_RCU, O_FREE_TAG, PAGE_SHIFT, PAGE_SIZE, PD_FLAGS, PD_OWNER, PG_RCU_BLOCK, RB_ADDRS, RB_CAP, RB_COUNT, RB_GP, RB_NEXT, R_INFLIGHT, VM } = layout;

/**
 * Free `addr` (from kmalloc or a cache) after a grace period. Never waits where waiting is not
 * allowed; safe from hooks. 0 is a no-op, like kfree(0) and the kernel's kfree_rcu(NULL).
 */
/** Read-only rounds kfreeRcu spins while another agent holds this slot's krcp lock. */
const KRCP_SPINS = 1 << 16;
/** The same for an agent that must not block (a few µs). */
const KRCP_NOBLOCK_SPINS = 1 << 10;

/** A list of objects to free once the krcp lock is dropped. */
export interface Expired {
  blocks: number[];
  objects: number[];
  /** Objects taken, counted in R_INFLIGHT until they are freed. */
  count: number;
  /** takeExpired with `all`: whether anything was taken, and the newest cookie to wait for. */
  wait: boolean;
  cookie: number;
}

export function kfreeRcu(rcu: RcuAllocator, addr: number): void {
  rcu.locks.assertLive();
  if (addr === 0) return;
  if (addr === rcu.locks.trace.returning) freeOfReturning(rcu.slab, addr);
  const id = objectCache(rcu.slab, addr, -1);
  if (id >= 0 && rcu.i32[rcu.slab.cacheWOf(id) + K_META] !== 0) {
    debugFree(rcu.slab, id, addr, false);
  } else if (id >= 0 && rcu.i32[addr >> 2] === (addr ^ O_FREE_TAG)) {
    // Reuse kfree's full check: it throws EDOUBLEFREE for an object that really is free.
    checkBulk(rcu.slab, [addr], -1, false);
  }
  const c = rcu.gpCookie();
  if (tryQueue(rcu, addr, c)) {
    rcu.locks.vmInc(VM.rcuQueued, 1);
    armRcuTimer(rcu);
    return;
  }
  kfreeRcuFallback(rcu, addr, c);
  rcu.locks.vmInc(VM.rcuQueued, 1);
}

/**
 * Take this slot's krcp lock without waiting on it: when another agent holds it (rcuBarrier or
 * reclaimSlot, for a short section that never waits), spin read-only a bounded while and try
 * again; when this agent holds it (a hook re-entered) fail at once.
 */
export function krcpTrylock(rcu: RcuAllocator, w: number): boolean {
  if (rcu.locks.trylock(w, LOCK.rcu)) return true;
  const spins = rcu.locks.noBlock() ? KRCP_NOBLOCK_SPINS : KRCP_SPINS;
  for (let n = 0; n < spins; n++) {
    const v = Atomics.load(rcu.i32, w);
    if ((v & LOCK_OWNER_MASK) === rcu.me) return false;
    if (v === 0 && rcu.locks.trylock(w, LOCK.rcu)) return true;
  }
  return false;
}

/** Queue `addr` (cookie `c`) in this slot's blocks if the krcp lock and a block can be had. */
export function tryQueue(rcu: RcuAllocator, addr: number, c: number): boolean {
  const krcp = rcu.pcpuW + C_KRCP_LOCK;
  if (!krcpTrylock(rcu, krcp)) return false;
  const queued = queueInBlock(rcu, addr, c);
  rcu.locks.unlock(krcp, LOCK.rcu);
  return queued;
}

/** Add `addr` to this slot's current block, starting a new block if needed. krcp lock held. */
export function queueInBlock(rcu: RcuAllocator, addr: number, c: number): boolean {
  const i32 = rcu.i32;
  const p = rcu.pcpuW;
  let block = i32[p + C_RCU_BLOCK]!;
  if (block !== 0 && i32[(block >> 2) + RB_COUNT]! >= RB_CAP) {
    // Off the current word first: killed in between, the block is in hand (found by reclaimSlot), never in two places.
    i32[p + C_RCU_BLOCK] = 0;
    chainBlock(rcu, block);
    block = 0;
  }
  if (block === 0) {
    // A spare block page; else, seed 003: a page only from this slot's pcp list, never the
    // zone lock; may fail.
    block = i32[p + C_RCU_SPARE]!;
    if (block !== 0) {
      i32[p + C_RCU_SPARE] = i32[(block >> 2) + RB_NEXT]!;
      i32[p + C_RCU_NR_SPARE] = i32[p + C_RCU_NR_SPARE]! - 1;
    } else {
      const pfn = rcu.pages.rmqueue(0, GFP.FAST_TRY | GFP.NOWAIT | GFP_TRYLOCK);
      if (pfn === 0) return false;
      block = pfn << PAGE_SHIFT;
      // A block page's count is valid before the page is one (reclaimSlot reads the blocks in hand).
      rcu.i32[(block >> 2) + RB_COUNT] = 0;
      rcu.u32[rcu.mem.pd(pfn) + PD_FLAGS] = PG_RCU_BLOCK;
      rcu.locks.vmInc(VM.pgalloc, 1);
    }
    // rcu.i32: rmqueue may have rebuilt the views for a page added by growth.
    rcu.i32[(block >> 2) + RB_COUNT] = 0;
    rcu.i32[(block >> 2) + RB_NEXT] = 0;
    i32[p + C_RCU_BLOCK] = block;
    i32[p + C_RCU_BLOCKS] = i32[p + C_RCU_BLOCKS]! + 1;
  }
  return queueAt(rcu, block, addr, c);
}

/** Store `addr` (cookie `c`) in block `block`. krcp lock held. */
export function queueAt(rcu: RcuAllocator, block: number, addr: number, c: number): boolean {
  const i32 = rcu.i32;
  const p = rcu.pcpuW;
  const bw = block >> 2;
  const n = i32[bw + RB_COUNT]!;
  // The cookie first: an object is never counted in a block whose cookie is older than its own.
  i32[bw + RB_GP] = c;
  i32[bw + RB_ADDRS + n] = addr;
  if (rcu.locks.debugFlags !== 0) debugSetState(rcu.slab, addr, M_STATE_RCU);
  i32[bw + RB_COUNT] = n + 1;
  i32[p + C_RCU_PENDING] = i32[p + C_RCU_PENDING]! + 1;
  return true;
}

/** Move a full block to the tail of the wait chain. krcp lock held. */
export function chainBlock(rcu: RcuAllocator, block: number): void {
  const i32 = rcu.i32;
  const p = rcu.pcpuW;
  i32[(block >> 2) + RB_NEXT] = 0;
  const tail = i32[p + C_RCU_WAIT_TAIL]!;
  if (tail === 0) i32[p + C_RCU_WAIT] = block;
  else i32[(tail >> 2) + RB_NEXT] = block;
  i32[p + C_RCU_WAIT_TAIL] = block;
}

/**
 * No block could be had. Where the agent may block and holds no lock: wait for a grace period and
 * free now (the kernel's fallback). Otherwise: the emergency array; when that is full too, poll
 * the grace period by spinning (never Atomics.wait) and free with the nolock paths.
 */
export function kfreeRcuFallback(rcu: RcuAllocator, addr: number, c: number): void {
  const mayWait = !rcu.locks.noBlock() && !rcu.locks.holdsFrom(LOCK.rcu) && !rcu.agentInReadSection();
  armRcuTimer(rcu); // refills the spare block pages
  if (mayWait) {
    // No lock held and allowed to wait: a NOWAIT page from the zone beats a grace period.
    refillSpareBlocks(rcu);
    if (tryQueue(rcu, addr, c)) return;
    rcu.locks.vmInc(VM.rcuSyncFallback, 1);
    rcu.gpWait(c);
    rcu.slab.kfree(addr);
    rcu.locks.vmInc(VM.rcuFreed, 1);
    return;
  }
  rcu.locks.vmInc(VM.rcuEmergency, 1);
  const i32 = rcu.i32;
  const p = rcu.pcpuW;
  const krcp = p + C_KRCP_LOCK;
  if (krcpTrylock(rcu, krcp)) {
    const n = i32[p + C_RCU_EMERG_NR]!;
    if (n < C_RCU_EMERG_MAX) {
      i32[p + C_RCU_EMERG + n] = addr;
      i32[p + C_RCU_EMERG_NR] = n + 1;
      if (rcu.locks.debugFlags !== 0) debugSetState(rcu.slab, addr, M_STATE_RCU);
      i32[p + C_RCU_EMERG_GP] = c;
      i32[p + C_RCU_PENDING] = i32[p + C_RCU_PENDING]! + 1;
      rcu.locks.unlock(krcp, LOCK.rcu);
      armRcuTimer(rcu);
      return;
    }
    rcu.locks.unlock(krcp, LOCK.rcu);
  }
  // Nothing left to queue into: spin until the period is over (this agent is not in a read
  // section it could be waiting for, unless it is, in which case it must not ask rcu).
  if (rcu.agentInReadSection()) {
    throw new HeapError(ErrorCode.EDEADLK, `kfreeRcu(${hex(addr)}) inside a read-side section found no room and would wait for itself`);
  }
  // Nor while this agent holds an allocator lock (a hook): a reader that needs that lock could
  // never end the period. The object stays allocated; the caller may free it later.
  if (rcu.locks.holdsFrom(LOCK.rcu)) {
    throw new HeapError(ErrorCode.EDEADLK, `kfreeRcu(${hex(addr)}) from a hook holding an allocator lock found no room and would wait for a grace period with it held`);
  }
  let since = -1;
  for (let round = 0; !rcu.gpPoll(c); round++) {
    // An agent that must not block spins a bounded while, then gives the object back.
    if (rcu.locks.noBlock() && (round & 255) === 255) {
      if (since < 0) since = rcu.locks.clock();
      else if (rcu.locks.spinExpired(since)) {
        throw new HeapError(
          ErrorCode.EAGAIN,
          `kfreeRcu(${hex(addr)}) on cpu ${rcu.cpu}, which must not block, found no block page and no room left, and the grace period did not end within its bound: ` +
            "the object is still yours; await heap.synchronizeRcuAsync() and kfree it, or call kfreeRcu again later",
        );
      }
    }
  }
  kfreeSlow(rcu.slab, addr, -1, GFP_TRYLOCK);
  rcu.locks.vmInc(VM.rcuFreed, 1);
}

export function armRcuTimer(rcu: RcuAllocator): void {
  if (rcu.rcuTimer !== null || typeof setTimeout !== "function") return;
  const t = setTimeout(() => {
    rcu.rcuTimer = null;
    if (rcu.locks.detached) return;
    // The library's own timer never throws: what it finds goes to onError.
    try {
      if (rcu.locks.holdsFrom(LOCK.rcu)) {
        armRcuTimer(rcu);
        return;
      }
      rcuProcessOwn(rcu, false);
      refillSpareBlocks(rcu);
      if (rcu.i32[rcu.pcpuW + C_RCU_PENDING] !== 0) armRcuTimer(rcu);
    } catch (e) {
      rcu.locks.reportDeferred(e, 0);
    }
  }, RCU_DELAY_MS);
  const maybe = t as unknown as { unref?: () => void };
  if (typeof maybe.unref === "function") maybe.unref();
  rcu.rcuTimer = t;
}

/** Free this slot's expired blocks (all of them, waiting as needed, when `all`). No lock held. */
export function rcuProcessOwn(rcu: RcuAllocator, all: boolean): void {
  const krcp = rcu.pcpuW + C_KRCP_LOCK;
  const out: Expired = { blocks: [], objects: [], count: 0, wait: false, cookie: 0 };
  // Only rcuBarrier or reclaimSlot of another agent holds it: a noBlock agent leaves the work for later.
  if (!rcu.locks.lockIn(0, krcp, LOCK.rcu)) return;
  try {
    takeExpired(rcu, rcu.pcpuW, out, all);
  } finally {
    rcu.locks.unlock(krcp, LOCK.rcu);
  }
  if (out.wait) rcu.gpWait(out.cookie);
  freeExpired(rcu, out);
}

/** Called by the slab slow paths when this slot has blocks waiting. */
export function rcuSlowWork(rcu: RcuAllocator): void {
  if (rcu.locks.holdsFrom(LOCK.rcu)) return;
  const w = rcu.i32[rcu.pcpuW + C_RCU_WAIT]!;
  if (w !== 0 && rcu.gpPoll(rcu.i32[(w >> 2) + RB_GP]!)) rcuProcessOwn(rcu, false);
}

/** Bring this slot's spare block pages up to C_RCU_SPARE_MAX with NOWAIT allocations. No lock held. */
export function refillSpareBlocks(rcu: RcuAllocator): void {
  const i32 = rcu.i32;
  const p = rcu.pcpuW;
  while (i32[p + C_RCU_NR_SPARE]! < C_RCU_SPARE_MAX) {
    const pfn = rcu.pages.rmqueue(0, GFP.NOWAIT);
    if (pfn === 0) return;
    rcu.i32[(pfn << (PAGE_SHIFT - 2)) + RB_COUNT] = 0;
    rcu.u32[rcu.mem.pd(pfn) + PD_FLAGS] = PG_RCU_BLOCK;
    rcu.locks.vmInc(VM.pgalloc, 1);
    if (!pushSpare(rcu, pfn << PAGE_SHIFT)) {
      freeBlockPage(rcu, pfn << PAGE_SHIFT);
      return;
    }
  }
}

/** Keep a block page as a spare if there is room (krcp trylock); false if it was not kept. */
export function pushSpare(rcu: RcuAllocator, block: number): boolean {
  const i32 = rcu.i32;
  const p = rcu.pcpuW;
  if (!rcu.locks.trylock(p + C_KRCP_LOCK, LOCK.rcu)) return false;
  const kept = i32[p + C_RCU_NR_SPARE]! < C_RCU_SPARE_MAX;
  if (kept) {
    rcu.u32[rcu.mem.pd(block >>> PAGE_SHIFT) + PD_OWNER] = rcu.cpu;
    i32[(block >> 2) + RB_NEXT] = i32[p + C_RCU_SPARE]!;
    i32[p + C_RCU_SPARE] = block;
    i32[p + C_RCU_NR_SPARE] = i32[p + C_RCU_NR_SPARE]! + 1;
  }
  rcu.locks.unlock(p + C_KRCP_LOCK, LOCK.rcu);
  return kept;
}

export function freeBlockPage(rcu: RcuAllocator, block: number): void {
  const pfn = block >>> PAGE_SHIFT;
  // freeBlock makes it a block in hand itself: no store here may leave the page belonging to nothing.
  rcu.locks.vmInc(VM.pgfree, 1);
  rcu.pages.freeBlock(pfn, 0, 0);
}

/** shrink(): this slot's spare block pages go back to the page allocator. */
export function rcuShrink(rcu: RcuAllocator): void {
  dropSpareBlocks(rcu, rcu.pcpuW);
}

/** Free slot `p`'s spare block pages (detach, reclaim). That slot's krcp lock is not held. */
export function dropSpareBlocks(rcu: RcuAllocator, p: number): void {
  rcu.locks.lock(p + C_KRCP_LOCK, LOCK.rcu);
  let b = rcu.i32[p + C_RCU_SPARE]!;
  // Ours before they leave the list: a kill below leaves blocks in hand that our reclaim finds.
  for (let s = b, n = 0; s !== 0 && n < C_RCU_SPARE_MAX; s = rcu.i32[(s >> 2) + RB_NEXT]!, n++) {
    rcu.u32[rcu.mem.pd(s >>> PAGE_SHIFT) + PD_OWNER] = rcu.cpu;
    rcu.i32[(s >> 2) + RB_COUNT] = 0;
  }
  rcu.i32[p + C_RCU_SPARE] = 0;
  rcu.i32[p + C_RCU_NR_SPARE] = 0;
  rcu.locks.unlock(p + C_KRCP_LOCK, LOCK.rcu);
  for (let n = 0; b !== 0; n++) {
    if (n >= C_RCU_SPARE_MAX) throw new HeapError(ErrorCode.ECORRUPT, `the spare block list at word ${p} holds more than ${C_RCU_SPARE_MAX} pages: it is broken`);
    const next = rcu.i32[(b >> 2) + RB_NEXT]!;
    freeBlockPage(rcu, b);
    b = next;
  }
}

/**
 * Unlink from slot block `p` the blocks and emergency entries whose period is over (all of them
 * when `all`; then out.wait is set and out.cookie is the newest cookie among them, which the
 * caller must wait for). That slot's krcp lock held.
 */
export function takeExpired(rcu: RcuAllocator, p: number, out: Expired, all: boolean): void {
  const i32 = rcu.i32;
  const take = (c: number): boolean => {
    if (all) {
      if (!out.wait || gpAfter(c, out.cookie)) out.cookie = c;
      out.wait = true;
      return true;
    }
    return rcu.gpPoll(c);
  };
  let pending = 0;
  const most = i32[p + C_RCU_BLOCKS]!;
  while (i32[p + C_RCU_WAIT] !== 0) {
    const b = i32[p + C_RCU_WAIT]!;
    // Bounded and checked: a cycle or a stray block is ECORRUPT, never an endless walk.
    if (out.blocks.length >= most || !isBlockPage(rcu, b)) {
      throw new HeapError(ErrorCode.ECORRUPT, `the kfreeRcu wait chain at word ${p} is broken at ${hex(b)} (${out.blocks.length} of ${most} blocks)`);
    }
    if (!take(i32[(b >> 2) + RB_GP]!)) break;
    // The taker's before it leaves the chain: a block in hand is found by its owner's reclaim.
    rcu.u32[rcu.mem.pd(b >>> PAGE_SHIFT) + PD_OWNER] = rcu.cpu;
    i32[p + C_RCU_WAIT] = i32[(b >> 2) + RB_NEXT]!;
    if (i32[p + C_RCU_WAIT] === 0) i32[p + C_RCU_WAIT_TAIL] = 0;
    out.blocks.push(b);
    pending += i32[(b >> 2) + RB_COUNT]!;
  }
  const cur = i32[p + C_RCU_BLOCK]!;
  if (cur !== 0 && !isBlockPage(rcu, cur)) throw new HeapError(ErrorCode.ECORRUPT, `the current kfreeRcu block at word ${p} (${hex(cur)}) is not a block page`);
  if (cur !== 0 && i32[p + C_RCU_WAIT] === 0 && take(i32[(cur >> 2) + RB_GP]!)) {
    rcu.u32[rcu.mem.pd(cur >>> PAGE_SHIFT) + PD_OWNER] = rcu.cpu;
    i32[p + C_RCU_BLOCK] = 0;
    out.blocks.push(cur);
    pending += i32[(cur >> 2) + RB_COUNT]!;
  }
  const ne = i32[p + C_RCU_EMERG_NR]!;
  if (ne > 0 && take(i32[p + C_RCU_EMERG_GP]!)) {
    for (let k = 0; k < ne; k++) out.objects.push(i32[p + C_RCU_EMERG + k]!);
    i32[p + C_RCU_EMERG_NR] = 0;
    pending += ne;
  }
  i32[p + C_RCU_PENDING] = i32[p + C_RCU_PENDING]! - pending;
  i32[p + C_RCU_BLOCKS] = i32[p + C_RCU_BLOCKS]! - out.blocks.length;
  // In flight until freeExpired: rcuBarrier and stats still see them.
  if (pending !== 0) {
    Atomics.add(i32, rcu.hw + R_INFLIGHT, pending);
    i32[rcu.pcpuW + C_RCU_INFLIGHT] = i32[rcu.pcpuW + C_RCU_INFLIGHT]! + pending;
  }
  out.count += pending;
}

/** Is `b` a kfreeRcu block page holding a count in 0..RB_CAP? */
export function isBlockPage(rcu: RcuAllocator, b: number): boolean {
  const pfn = b >>> PAGE_SHIFT;
  if ((b & (PAGE_SIZE - 1)) !== 0 || pfn < rcu.zoneStart || pfn >= rcu.nrPages) return false;
  const n = rcu.i32[(b >> 2) + RB_COUNT]!;
  return rcu.u32[rcu.mem.pd(pfn) + PD_FLAGS] === PG_RCU_BLOCK && n >= 0 && n <= RB_CAP;
}

/** Free what takeExpired unlinked: every object, then the block pages. No lock held. */
export function freeExpired(rcu: RcuAllocator, out: Expired): void {
  const i32 = rcu.i32;
  let freed = 0;
  try {
    freed = freeExpiredObjects(rcu, out);
  } finally {
    // Publication point for rcuBarrier: these objects are freed (or the agent is unwinding).
    if (out.count !== 0) {
      i32[rcu.pcpuW + C_RCU_INFLIGHT] = i32[rcu.pcpuW + C_RCU_INFLIGHT]! - out.count;
      Atomics.sub(i32, rcu.hw + R_INFLIGHT, out.count);
    }
  }
  rcu.locks.vmInc(VM.rcuFreed, freed);
}

export function freeExpiredObjects(rcu: RcuAllocator, out: Expired): number {
  let freed = 0;
  rcu.locks.deferring++;
  try {
    for (const b of out.blocks) {
      const bw = b >> 2;
      const n = rcu.i32[bw + RB_COUNT]!;
      // From the top, the count lowered before each free: a block in hand (PD_OWNER this slot)
      // always counts exactly the objects not yet given to kfree, and reclaimSlot frees those
      // (a kill between the two statements leaks that one object, never frees it twice).
      for (let k = n - 1; k >= 0; k--) {
        rcu.i32[bw + RB_COUNT] = k;
        freeQueued(rcu, rcu.i32[bw + RB_ADDRS + k]!);
      }
      freed += n;
      if (!pushSpare(rcu, b)) freeBlockPage(rcu, b);
    }
    for (const o of out.objects) freeQueued(rcu, o);
    freed += out.objects.length;
  } finally {
    rcu.locks.deferring--;
  }
  return freed;
}

/**
 * Free an object whose grace period is over. Deferred work: what the free finds wrong (a double
 * free, a clobbered redzone) is reported, not thrown, and the batch goes on. A redzone the free
 * found clobbered it has restored, the object still allocated: it is freed now.
 */
export function freeQueued(rcu: RcuAllocator, addr: number): void {
  try {
    if (rcu.locks.debugFlags !== 0) debugSetState(rcu.slab, addr, M_STATE_ALLOC);
    rcu.slab.kfree(addr);
  } catch (e) {
    rcu.locks.reportDeferred(e, addr);
    if (e instanceof HeapError && e.code === ErrorCode.ECORRUPT) {
      try {
        rcu.slab.kfree(addr);
      } catch (e2) {
        rcu.locks.reportDeferred(e2, addr);
      }
    }
  }
}

/**
 * reclaimSlot: the kfreeRcu block pages dead slot `cpu` had in its hands (PD_OWNER `cpu`, on no
 * slot's chain, current word or spare list: a batch it was freeing, a spare it was dropping or
 * refilling, a block between two lists). Those with objects go on the dead slot's wait chain,
 * freed after their grace period by the flush that follows; empty ones are freed. Takes each
 * slot's krcp lock in turn. Returns how many were found.
 */
export function rcuBlocksInHand(rcu: RcuAllocator, cpu: number): number {
  const i32 = rcu.i32;
  const u32 = rcu.u32;
  const reach = new Set<number>();
  for (let s = 0; s < rcu.cpus; s++) {
    const q = rcu.mem.pcpOf(s);
    rcu.locks.lock(q + C_KRCP_LOCK, LOCK.rcu);
    for (let b = i32[q + C_RCU_WAIT]!, n = 0; b !== 0 && n <= rcu.nrPages; b = i32[(b >> 2) + RB_NEXT]!, n++) reach.add(b);
    if (i32[q + C_RCU_BLOCK] !== 0) reach.add(i32[q + C_RCU_BLOCK]!);
    for (let b = i32[q + C_RCU_SPARE]!, n = 0; b !== 0 && n <= C_RCU_SPARE_MAX; b = i32[(b >> 2) + RB_NEXT]!, n++) reach.add(b);
    rcu.locks.unlock(q + C_KRCP_LOCK, LOCK.rcu);
  }
  const found: number[] = [];
  for (let pfn = rcu.zoneStart; pfn < rcu.nrPages; pfn++) {
    const d = rcu.mem.pd(pfn);
    if (u32[d + PD_FLAGS] === PG_RCU_BLOCK && u32[d + PD_OWNER] === cpu && !reach.has(pfn << PAGE_SHIFT)) found.push(pfn << PAGE_SHIFT);
  }
  if (found.length === 0) return 0;
  const p = rcu.mem.pcpOf(cpu);
  const empty: number[] = [];
  rcu.locks.lock(p + C_KRCP_LOCK, LOCK.rcu);
  for (const b of found) {
    const n = i32[(b >> 2) + RB_COUNT]!;
    if (n <= 0 || n > RB_CAP) {
      empty.push(b);
      continue;
    }
    i32[(b >> 2) + RB_NEXT] = 0;
    const tail = i32[p + C_RCU_WAIT_TAIL]!;
    if (tail === 0) i32[p + C_RCU_WAIT] = b;
    else i32[(tail >> 2) + RB_NEXT] = b;
    i32[p + C_RCU_WAIT_TAIL] = b;
    i32[p + C_RCU_PENDING] = i32[p + C_RCU_PENDING]! + n;
    i32[p + C_RCU_BLOCKS] = i32[p + C_RCU_BLOCKS]! + 1;
  }
  rcu.locks.unlock(p + C_KRCP_LOCK, LOCK.rcu);
  for (const b of empty) freeBlockPage(rcu, b);
  return found.length;
}
