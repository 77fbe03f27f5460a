/*
 * The debug object hand: in debug caches, the object a slot is allocating or freeing while its
 * debug state (M_STATE) and its place disagree, so that a slot killed there loses no object (and
 * its cache stays destroyable).
 *
 * WORDS: the slot's C_DEBUG_HAND, written plain by the slot alone on the debug slow paths, only
 *   for objects of debug caches (K_META non-zero), and only when it is 0 (a re-entered path holds
 *   nothing: a residual one-object window). Allocation (value X): from before X leaves its place
 *   (the top of the slot's own sheaf, read just before the pop; or, under the list lock, before X
 *   leaves its freelist: allocFromSlabs' hand) until debugAlloc stored M_STATE_ALLOC; an object that
 *   debugAlloc puts back stays held until a sheaf, freelist or deferred list has it. Free (value
 *   X | C_DEBUG_HAND_FREE): from after debugFree's checks, just before M_STATE_FREE is stored, then
 *   X (the state says free) until the slot's own sheaf (cleared after the push), its deferred list
 *   (deferObject) or its freelist (freeToSlabs, under the list lock) has it; a free that throws
 *   before that gives the object back to its caller (debugFreeFailed). So a held object is visible
 *   to no other slot: it is in the slot's own sheaves or deferred list, or in its freelist only
 *   while the slot holds the list lock. reclaimSlot reads and clears a dead slot's hand.
 * LOCKS: debugHandRebuilt runs under a list lock reclaimSlot took over from the dead slot.
 *   returnDebugObjectInHand, with no lock held, takes the barn lock of the object's cache, then
 *   (not nested) its list lock, each briefly, then frees the object through freeToSlabs (list ->
 *   pcp -> zone).
 * NO LOCK: hold and unhold (the slot's own word); returnDebugObjectInHand's walk of every slot's
 *   pcs lines and debug hands and of the dead slot's deferred list.
 * STALE: in that walk other slots' pcs lines and hands may move under it: a hint only, since the
 *   dead slot's held object is visible to no other slot (above); a match means the hand is not the
 *   dead slot's to return, and the object is left where it is.
 */
import { ErrorCode, HeapError } from "../core/errors.js";
import * as layout from "../core/layout.js";
import { barnHas, onDeferredList, onSlabFreelist, pcsSheavesHave } from "./debug.js";
import type { SlabAllocator } from "./slab.js";
import { FIRST_NAMED_ID } from "./slab.js";
import { cacheEnter, cacheExit } from "./cache.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { C_DEBUG_HAND, C_DEBUG_HAND_FREE, DEBUG_POISON, DEBUG_REDZONE, DEBUG_RZ, K_BARN_LOCK, K_HDR_WORDS, K_INUSE, K_LIST_LOCK, K_META, K_OBJS, K_SIZE, K_STATE, K_STATE_ACTIVE, K_STATE_DYING, LOCK, M_REQ, M_STATE, M_STATE_ALLOC, M_STATE_FREE, PAGE_SHIFT, PCS_WORDS, PD_CACHE, PD_FLAGS, PD_HEAD, PG_SLAB, POISON_FREE, RED_ACTIVE, S_OBJS, S_SIZE } = layout;

/** The hand word to give allocFromSlabs for an allocation from cache word `kw`: this slot's debug hand if it is a debug cache and the hand is free, else 0. */
export function debugHandFor(slab: SlabAllocator, kw: number): number {
  const w = slab.pcpuW + C_DEBUG_HAND;
  return slab.i32[kw + K_META] !== 0 && slab.i32[w] === 0 ? w : 0;
}

/** Before the pop of sheaf `sw` (not empty) of cache word `kw`: hold its top object if it is a debug cache. */
export function holdSheafTop(slab: SlabAllocator, kw: number, sw: number): void {
  const i32 = slab.i32;
  const w = slab.pcpuW + C_DEBUG_HAND;
  if (i32[kw + K_META] !== 0 && i32[w] === 0) i32[w] = i32[sw + S_OBJS + i32[sw + S_SIZE]! - 1]!;
}

/** debugFree, its checks passed: hold `addr` as being freed (before M_STATE_FREE is stored). */
export function holdFreeing(slab: SlabAllocator, addr: number): void {
  const w = slab.pcpuW + C_DEBUG_HAND;
  if (slab.i32[w] === 0) slab.i32[w] = addr | C_DEBUG_HAND_FREE;
}

/** debugFree stored M_STATE_FREE: the held object is an ordinary held free object from now on. */
export function freeingStored(slab: SlabAllocator, addr: number): void {
  const w = slab.pcpuW + C_DEBUG_HAND;
  if (slab.i32[w] === (addr | C_DEBUG_HAND_FREE)) slab.i32[w] = addr;
}

/** `obj` is handed out, or a sheaf or the deferred list of this slot has it: drop it from the hand. */
export function unholdDebugObject(slab: SlabAllocator, obj: number): void {
  const w = slab.pcpuW + C_DEBUG_HAND;
  if (slab.i32[w] === obj) slab.i32[w] = 0;
}

/**
 * A debug free of `addr` (cache `id`) threw after debugFree marked it free and before any list had
 * it: the object is its caller's again, allocated, its redzone armed (its bytes are poisoned).
 */
export function debugFreeFailed(slab: SlabAllocator, id: number, addr: number): void {
  const i32 = slab.i32;
  const w = slab.pcpuW + C_DEBUG_HAND;
  if (i32[w] !== addr) return;
  const kw = slab.cacheWOf(id);
  const mw = (addr + i32[kw + K_META]!) >> 2;
  if ((slab.locks.debugFlags & DEBUG_REDZONE) !== 0) slab.u8.fill(RED_ACTIVE, addr + i32[mw + M_REQ]!, addr + i32[kw + K_INUSE]! + DEBUG_RZ);
  i32[mw + M_STATE] = M_STATE_ALLOC;
  i32[w] = 0;
}

/** Object `x`'s cache id if it is an object start in a debug cache that is active or dying, else -1. */
function debugObjectCache(slab: SlabAllocator, x: number): number {
  const i32 = slab.i32;
  if ((x & 7) !== 0 || x >>> 0 >= slab.size || x >>> PAGE_SHIFT < slab.zoneStart) return -1;
  const d = slab.mem.pd(x >>> PAGE_SHIFT);
  const id = i32[d + PD_CACHE]!;
  if (i32[d + PD_FLAGS] !== PG_SLAB || id >>> 0 >= slab.maxCaches) return -1;
  const kw = slab.cacheWOf(id);
  const st = i32[kw + K_STATE];
  if (i32[kw + K_META] === 0 || (st !== K_STATE_ACTIVE && st !== K_STATE_DYING)) return -1;
  const k = (x - (i32[d + PD_HEAD]! << PAGE_SHIFT)) / i32[kw + K_SIZE]!;
  return Number.isInteger(k) && k >= 0 && k < i32[kw + K_OBJS]! ? id : -1;
}

/**
 * reclaimSlot, the list lock of cache `id` taken over from dead slot `cpu` and its lists rebuilt:
 * an object the slot held that is on its freelist (it stopped before taking it, or after putting
 * it there) is not in its hand. List lock held.
 */
export function debugHandRebuilt(slab: SlabAllocator, cpu: number, id: number): void {
  const w = slab.mem.pcpOf(cpu) + C_DEBUG_HAND;
  const x = slab.i32[w]! & ~C_DEBUG_HAND_FREE;
  if (x === 0 || debugObjectCache(slab, x) !== id) return;
  if (onSlabFreelist(slab, x, slab.i32[slab.cacheWOf(id) + K_OBJS]!)) slab.i32[w] = 0;
}

/**
 * reclaimSlot, dead slot `cpu`'s locks recovered, before its deferred objects and sheaves go back:
 * the debug object it held goes back to its slab's freelist, marked free and poisoned, unless it
 * was handed out (held for allocation and marked allocated) or something else holds it: a pcs
 * line's sheaf or a debug hand of any slot, the slot's deferred list, the barn or the freelist.
 * Returns 1 if it returned one. No lock held; EAGAIN (the hand kept) if a noBlock agent gave up on
 * a lock.
 */
export function returnDebugObjectInHand(slab: SlabAllocator, cpu: number): number {
  const i32 = slab.i32;
  const w = slab.mem.pcpOf(cpu) + C_DEBUG_HAND;
  const held = i32[w]!;
  if (held === 0) return 0;
  const x = held & ~C_DEBUG_HAND_FREE;
  const id = debugObjectCache(slab, x);
  const kw = id >= 0 ? slab.cacheWOf(id) : 0;
  const mw = id >= 0 ? (x + i32[kw + K_META]!) >> 2 : 0;
  const state = id >= 0 ? i32[mw + M_STATE] : 0;
  // Handed out: held for allocation, marked allocated (the dead worker's own object).
  if (id < 0 || (state !== M_STATE_FREE && (state !== M_STATE_ALLOC || held === x)) || heldElsewhere(slab, cpu, id, x)) {
    i32[w] = 0;
    return 0;
  }
  const gaveUp = (): never => {
    throw new HeapError(ErrorCode.EAGAIN, `cpu ${slab.cpu} must not block, and a lock of its cache was held past its bound while it returned cpu ${cpu}'s debug object in hand: call again`);
  };
  let found = false;
  if (!slab.locks.lockIn(0, kw + K_BARN_LOCK, LOCK.barn)) gaveUp();
  found = barnHas(i32, kw, x);
  slab.locks.unlock(kw + K_BARN_LOCK, LOCK.barn);
  if (!found) {
    if (!slab.locks.lockIn(0, kw + K_LIST_LOCK, LOCK.list)) gaveUp();
    found = onSlabFreelist(slab, x, i32[kw + K_OBJS]!);
    slab.locks.unlock(kw + K_LIST_LOCK, LOCK.list);
  }
  if (found) {
    i32[w] = 0;
    return 0;
  }
  // Nobody else can take it meanwhile: it is on no list. Free, as debugFree leaves an object.
  const inuse = i32[kw + K_INUSE]!;
  if ((slab.locks.debugFlags & DEBUG_POISON) !== 0) slab.u8.fill(POISON_FREE, x + 4, x + inuse);
  if ((slab.locks.debugFlags & DEBUG_REDZONE) !== 0) slab.u8.fill(RED_ACTIVE, x + inuse, x + inuse + DEBUG_RZ);
  i32[mw + M_STATE] = M_STATE_FREE;
  const named = id >= FIRST_NAMED_ID;
  if (named) cacheEnter(slab, id, 0, false, true);
  try {
    if (!slab.freeToSlabs(id, x, 0, w)) gaveUp();
  } finally {
    if (named) cacheExit(slab, id);
  }
  i32[w] = 0;
  return 1;
}

/** Does a pcs line's sheaf of cache `id` (any slot), another slot's debug hand or dead slot `cpu`'s deferred list hold `x`? */
function heldElsewhere(slab: SlabAllocator, cpu: number, id: number, x: number): boolean {
  const i32 = slab.i32;
  for (let c = 0; c < slab.cpus; c++) {
    const pcs = slab.cacheWOf(id) + K_HDR_WORDS + c * PCS_WORDS;
    if (pcsSheavesHave(i32, pcs, x)) return true;
    if (c !== cpu && (i32[slab.mem.pcpOf(c) + C_DEBUG_HAND]! & ~C_DEBUG_HAND_FREE) === x) return true;
  }
  return onDeferredList(i32, slab.mem.pcpOf(cpu), x);
}
