/*
 * The sheaf hand: the sheaf object a slot is allocating or freeing, so that a slot killed on the
 * way loses no sheaf object (and the page of the sheaf cache it keeps).
 *
 * WORDS: PCS_HAND of the slot's line of the sheaf cache (SHEAF_CACHE_ID has no sheaves, so the word
 *   is free for this), and the nested hands after it (PCS_HANDS_NESTED): a path that re-entered
 *   (a reentry hook, a trace handler) while an outer path holds a sheaf object takes the first
 *   empty hand, so it holds its own and never overwrites the outer one. The slot alone writes
 *   them, plain (holdSheaf, unholdSheaf; allocFromSlabs and freeToSlabs under the sheaf cache's
 *   list lock, into the hand the caller chose); reclaimSlot reads and clears a dead slot's.
 *   A sheaf object is held from before it leaves its freelist (allocSheaf: written under the list
 *   lock before the object is unlinked), its pcs line (flushCpuSheaves), its PCS_HAND (barnShrink)
 *   or the pcs line on its way to the barn (replaceEmptyMain), until a pcs line, the barn, its
 *   freelist (cleared under the list lock once it is linked) or the slot's deferred list has it.
 *   So at every statement a sheaf object is in one of those places, the hand included, and a held
 *   object can be free on its freelist only while the holder has the sheaf cache's list lock.
 *   reclaimSlot: taking that list lock over from a dead slot (slabRebuildLocked), it drops a held
 *   object that is on its freelist (sheafHandRebuilt); taking a barn lock over, a held sheaf that
 *   barn has (barnHandsRebuilt, which also clears the slot's PCS_HAND of that cache); afterwards
 *   (freeSheafObjectInHand, before the slot's deferred objects go back) it frees a held object
 *   that no pcs line, hand, barn, deferred list or freelist holds, for each of its hands.
 *   So a sheaf object is in a hand and on a freelist or barn list at once only while the hand's
 *   slot holds that list's lock: no other slot can take it while a dead slot's hand still names it.
 * LOCKS: sheafHeldElsewhere (freeSheafObjectInHand's walk, sheaf.ts's flushHandSheaf) takes the
 *   barn lock of the sheaf's cache (lock()) with nothing held, for the walk of the barn and of every
 *   pcs line; the free after it takes the sheaf cache's list lock (and pcp -> zone for an empty
 *   slab). sheafHandRebuilt and barnHandsRebuilt run under the lock their caller took over.
 * NO LOCK: holdSheaf and unholdSheaf (the slot's own word); freeSheafObjectInHand's look at the
 *   object's freelist and at the dead slot's deferred list.
 * STALE: in that walk, other slots' pcs lines and the freelist may move under it: safe, since the
 *   dead slot's held object is on no freelist by then (sheafHandRebuilt dropped it under the list
 *   lock) nor on a barn (barnHandsRebuilt), so no live slot can have taken it; and a sheaf moves
 *   between a pcs line and the barn only under the barn lock the walk holds.
 */
import * as layout from "../core/layout.js";
import type { SlabAllocator } from "./slab.js";
import { SHEAF_CACHE_ID } from "./sizes.js";
import { freeSheaf, onPcsLine } from "./sheaf.js";
import { onDeferredList, onSlabFreelist } from "./debug.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { K_BARN_EMPTY, K_BARN_FULL, K_BARN_LOCK, K_BARN_MAX, K_HDR_WORDS, K_OBJS, K_SIZE, K_STATE, K_STATE_ACTIVE, K_STATE_DYING, LOCK, PAGE_SHIFT, PCS_HAND, PCS_HANDS_NESTED, PCS_WORDS, PD_CACHE, PD_FLAGS, PD_HEAD, PG_SLAB, SHEAF_HANDS_NESTED, S_CACHE, S_NEXT } = layout;

/** Sheaf hands a slot has: PCS_HAND, then the nested ones (PCS_HANDS_NESTED). */
export const SHEAF_HANDS = 1 + SHEAF_HANDS_NESTED;

/** The word of slot `cpu`'s sheaf hand `k` (0: PCS_HAND; 1..: the nested ones). */
export function sheafHandOf(slab: SlabAllocator, cpu: number, k = 0): number {
  const pcs = slab.cacheWOf(SHEAF_CACHE_ID) + K_HDR_WORDS + cpu * PCS_WORDS;
  return k === 0 ? pcs + PCS_HAND : pcs + PCS_HANDS_NESTED + k - 1;
}

/** This slot's first empty sheaf hand, or 0 when all are taken (deeper re-entry than hooks and trace handlers make). */
export function freeSheafHand(slab: SlabAllocator): number {
  for (let k = 0; k < SHEAF_HANDS; k++) {
    const w = sheafHandOf(slab, slab.cpu, k);
    if (slab.i32[w] === 0) return w;
  }
  return 0;
}

/** The hand of this slot that holds sheaf object `s`, or 0. */
export function sheafHandHolding(slab: SlabAllocator, s: number): number {
  for (let k = 0; k < SHEAF_HANDS; k++) {
    const w = sheafHandOf(slab, slab.cpu, k);
    if (slab.i32[w] === s) return w;
  }
  return 0;
}

/**
 * Hold sheaf object `s` in this slot's first empty hand, unless a hand holds it already. A path
 * that re-entered while an outer path holds one takes the next hand: it never overwrites the outer
 * one, and holds its own.
 */
export function holdSheaf(slab: SlabAllocator, s: number): void {
  if (sheafHandHolding(slab, s) !== 0) return;
  const w = freeSheafHand(slab);
  if (w !== 0) slab.i32[w] = s;
}

/** A pcs line, the barn or the deferred list has sheaf object `s` now. */
export function unholdSheaf(slab: SlabAllocator, s: number): void {
  const w = sheafHandHolding(slab, s);
  if (w !== 0) slab.i32[w] = 0;
}

/**
 * reclaimSlot, the sheaf cache's list lock taken over from dead slot `cpu` and its lists rebuilt:
 * a held sheaf object on its slab's freelist (the slot stopped before taking it, or after freeing
 * it) is not the slot's. List lock held.
 */
export function sheafHandRebuilt(slab: SlabAllocator, cpu: number): void {
  for (let k = 0; k < SHEAF_HANDS; k++) {
    const hand = sheafHandOf(slab, cpu, k);
    const s = slab.i32[hand]!;
    if (s !== 0 && sheafObjectFree(slab, s) !== false) slab.i32[hand] = 0;
  }
}

/** Sheaf object `s`: on its slab's freelist (true), allocated (false), or not a sheaf object at all (null). */
function sheafObjectFree(slab: SlabAllocator, s: number): boolean | null {
  const i32 = slab.i32;
  if ((s & 3) !== 0 || s >>> 0 >= slab.size || s >>> PAGE_SHIFT < slab.zoneStart) return null;
  const d = slab.mem.pd(s >>> PAGE_SHIFT);
  if (i32[d + PD_FLAGS] !== PG_SLAB || i32[d + PD_CACHE] !== SHEAF_CACHE_ID) return null;
  const kw = slab.cacheWOf(SHEAF_CACHE_ID);
  const objs = i32[kw + K_OBJS]!;
  const k = (s - (i32[d + PD_HEAD]! << PAGE_SHIFT)) / i32[kw + K_SIZE]!;
  if (!Number.isInteger(k) || k < 0 || k >= objs) return null;
  return onSlabFreelist(slab, s, objs);
}

/**
 * reclaimSlot, before the dead slot's deferred objects and sheaves go back: the sheaf object dead
 * slot `cpu` held is freed unless something else holds it: a pcs line or hand of any slot, the
 * barn of its cache, the slot's deferred list, or its freelist (or it is no sheaf object).
 * Returns 1 if it freed one. No lock held.
 */
export function freeSheafObjectInHand(slab: SlabAllocator, cpu: number): number {
  let freed = 0;
  for (let k = 0; k < SHEAF_HANDS; k++) freed += freeHeldSheafObject(slab, sheafHandOf(slab, cpu, k), cpu);
  return freed;
}

/** freeSheafObjectInHand for one hand word of dead slot `cpu`. */
function freeHeldSheafObject(slab: SlabAllocator, hand: number, cpu: number): number {
  const i32 = slab.i32;
  const s = i32[hand]!;
  if (s === 0) return 0;
  i32[hand] = 0;
  if (sheafObjectFree(slab, s) !== false) return 0;
  if (sheafHeldElsewhere(slab, s)) return 0;
  if (onDeferredList(slab.i32, slab.mem.pcpOf(cpu), s)) return 0;
  freeSheaf(slab, s, 0);
  return 1;
}

/**
 * reclaimSlot: does anything but a dead slot's hand hold sheaf object `s`: a pcs line or hand of
 * any slot, or a barn list of the cache it serves (S_CACHE, when live or dying)? The walk runs
 * under that barn lock: a sheaf moves between a barn and a pcs line only under it, so one that
 * moves meanwhile cannot pass the walk by. No lock held.
 */
export function sheafHeldElsewhere(slab: SlabAllocator, s: number): boolean {
  const id = slab.i32[(s >> 2) + S_CACHE]!;
  let barnLock = 0;
  if (id > SHEAF_CACHE_ID && id < slab.maxCaches) {
    const st = slab.i32[slab.cacheWOf(id) + K_STATE];
    if (st === K_STATE_ACTIVE || st === K_STATE_DYING) barnLock = slab.cacheWOf(id) + K_BARN_LOCK;
  }
  if (barnLock !== 0) slab.locks.lock(barnLock, LOCK.barn);
  const i32 = slab.i32; // after the lock: it may have rebuilt the views
  let held = barnLock !== 0 && onBarnLocked(i32, slab.cacheWOf(id), s);
  for (let c = 0; c < slab.cpus && !held; c++) {
    for (let k = 0; k < slab.maxCaches && !held; k++) held = onPcsLine(i32, slab.cacheWOf(k) + K_HDR_WORDS + c * PCS_WORDS, s);
    for (let k = 1; k < SHEAF_HANDS && !held; k++) held = i32[sheafHandOf(slab, c, k)] === s;
  }
  if (barnLock !== 0) slab.locks.unlock(barnLock, LOCK.barn);
  return held;
}

/** Is sheaf `s` on a barn list of the cache at word `kw`? Barn lock held. */
function onBarnLocked(i32: Int32Array, kw: number, s: number): boolean {
  for (const head of [kw + K_BARN_FULL, kw + K_BARN_EMPTY]) {
    for (let b = i32[head]!, n = 0; b !== 0 && n <= K_BARN_MAX; b = i32[(b >> 2) + S_NEXT]!, n++) if (b === s) return true;
  }
  return false;
}

/**
 * reclaimSlot took cache `id`'s barn lock over from dead slot `cpu`, which may have stopped
 * between a barn list's store and its hand's (barnPutFull, barnTradeEmpty, barnPop): a sheaf the
 * barn has is not the slot's, so its hands let go of it (its PCS_HAND of the cache and its sheaf
 * hands). Outside the barn lock no hand holds a sheaf the barn has. Barn lock held.
 */
export function barnHandsRebuilt(slab: SlabAllocator, cpu: number, id: number): void {
  const i32 = slab.i32;
  const kw = slab.cacheWOf(id);
  const words = [kw + K_HDR_WORDS + cpu * PCS_WORDS + PCS_HAND];
  for (let k = 0; k < SHEAF_HANDS; k++) words.push(sheafHandOf(slab, cpu, k));
  for (const w of words) {
    const s = i32[w]!;
    if (s !== 0 && onBarnLocked(i32, kw, s)) i32[w] = 0;
  }
}
