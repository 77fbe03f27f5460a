/*
 * Sheaves and the barn: the per-slot arrays of free objects in front of a cache, and the shared
 * stock of full and empty sheaves behind them (SLUB sheaves, 2025-26). See slab.ts for the whole
 * contract of the slab layer.
 *
 * WORDS: a slot's pcs line (PCS_MAIN, PCS_SPARE, PCS_REMOTE, PCS_HAND) and the sheaves it points
 *   at (S_SIZE, S_CAP, S_NEXT, S_CACHE, S_OBJS): the slot alone, plain stores, under its local
 *   lock PCS_LOCKED on these slow paths; reclaimSlot writes a dead slot's (flushAllSheavesOf, flushHandSheaf:
 *   PCS_USERS with Atomics.store 0). K_BARN_* and the sheaves on the barn lists (S_NEXT): plain
 *   stores under K_BARN_LOCK (K_BARN_CAP is configuration: setupCache, read-only afterwards);
 *   K_BARN_TICKS counts the full sheaves the barn took, and a due decay step (barnDecay) runs once
 *   the barn lock is dropped and the sheaf is out of this slot's hand. The slabs' words through
 *   slab.ts's calls, under K_LIST_LOCK.
 * LOCKS, in order: sheaf (the local lock, taken by the caller: every flush of this slot's sheaves
 *   runs under it; flushCpuSheaves takes it itself for its own slot) -> barn -> list (refillSheaf
 *   and flushSheaf take it here and call slab.ts's takeFromPartial and putObjectLocked under it)
 *   -> pcp -> zone (a new sheaf object or slab). The barn and list locks of one cache are never
 *   held together. Nolock callers (mode GFP_TRYLOCK) only trylock and never allocate a sheaf;
 *   normal callers take barn and list with lockIn(0, ...) (a noBlock agent gives up past its
 *   bound), except barnShrink and flushHandSheaf (sheafHeldElsewhere), which take the barn lock
 *   with lock(). A sheaf is on a barn list and in a hand at once only under that barn lock
 *   (barnPutFull clears the hand before its unlock; reclaimSlot's takeover, barnHandsRebuilt).
 * NO LOCK: sheafPop and sheafPush (the slot's own sheaf, under its plain local lock);
 *   barnGetFull's and barnTradeEmpty's first look at K_BARN_NR_FULL; barnShrink's read of the
 *   barn's two counts.
 * STALE: K_BARN_NR_FULL in those peeks (racy by design: a barn that looks empty is not worth the
 *   lock, the caller refills from the slabs; one that looks full is checked again under the lock);
 *   barnShrink's counts (it flushes that many sheaves at most, one per lock hold, and stops at an
 *   empty barn: sheaves others add meanwhile are theirs to use). flushHandSheaf reads other slots'
 *   pcs lines while it looks for a dead slot's hand sheaf, under that cache's barn lock: a live
 *   slot may move its own sheaves meanwhile, but none between its line and the barn.
 */
import { ErrorCode, HeapError } from "../core/errors.js";
import { GFP } from "../core/gfp.js";
import * as layout from "../core/layout.js";
import type { SlabAllocator } from "./slab.js";
import { SHEAF_CACHE_ID } from "./slab.js";
import { SLAB_DECAY_TICKS } from "./sizes.js";
import { cacheName, listBusy } from "./cache.js";
import { deferObject } from "./kmalloc.js";
import { barnDecay, slabDecayLocked } from "./decay.js";
import { freeSheafHand, holdSheaf, sheafHandHolding, sheafHeldElsewhere, unholdSheaf } from "./sheaf_hand.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { K_BARN_TICKS, K_BARN_CAP, H_EMPTY_SHEAF, K_BARN_EMPTY, K_BARN_FULL, K_BARN_LOCK, K_BARN_MAX, K_BARN_NR_EMPTY, K_BARN_NR_FULL, K_HDR_WORDS, K_LIST_LOCK, K_SHEAF_CAP, K_STATE, K_STATE_ACTIVE, K_STATE_DYING, LOCK, O_FREE_TAG, PCS_HAND, PCS_LOCKED, PCS_MAIN, PCS_REMOTE, PCS_SHEAVES, PCS_SPARE, PCS_USERS, PCS_WORDS, S_CACHE, S_CAP, S_NEXT, S_OBJS, S_SIZE, VM } = layout;

/**
 * The main sheaf is empty: swap in the spare if it has objects, else trade it at the barn for a
 * full one, else refill it from the slabs. Returns the new main's word index (0 if nothing
 * could be had). Local lock held.
 */
export function replaceEmptyMain(slab: SlabAllocator, id: number, pcs: number, gfp: number, mode: number): number {
  const i32 = slab.i32;
  const main = i32[pcs + PCS_MAIN]!;
  const spare = i32[pcs + PCS_SPARE]!;
  if (spare !== 0 && i32[(spare >> 2) + S_SIZE]! > 0) {
    i32[pcs + PCS_MAIN] = spare;
    i32[pcs + PCS_SPARE] = main === (slab.hw + H_EMPTY_SHEAF) << 2 ? 0 : main;
    return spare >> 2;
  }
  if (main !== (slab.hw + H_EMPTY_SHEAF) << 2 && spare !== 0) {
    // The empty main goes to the barn in the lock hold that takes a full one.
    const full = barnTradeEmpty(slab, id, pcs, main, mode);
    if (full !== 0) {
      slab.locks.vmInc(VM.barnGet, 1);
      return full >> 2;
    }
  } else {
    const full = barnGetFull(slab, id, mode);
    if (full !== 0) {
      slab.locks.vmInc(VM.barnGet, 1);
      i32[pcs + PCS_MAIN] = full;
      i32[pcs + PCS_HAND] = 0;
      if (main !== (slab.hw + H_EMPTY_SHEAF) << 2) i32[pcs + PCS_SPARE] = main;
      return full >> 2;
    }
  }
  if (mode !== 0) {
    // Nolock: refill only a real sheaf, from partial slabs under a trylock; never allocate one.
    if (main === (slab.hw + H_EMPTY_SHEAF) << 2) return 0;
    return refillSheaf(slab, id, main >> 2, gfp, mode) > 0 ? main >> 2 : 0;
  }
  let sw = main >> 2;
  if (main === (slab.hw + H_EMPTY_SHEAF) << 2) {
    const s = allocSheaf(slab, id, gfp);
    if (s === 0) return 0;
    i32[pcs + PCS_MAIN] = s;
    unholdSheaf(slab, s);
    sw = s >> 2;
  }
  return refillSheaf(slab, id, sw, gfp, mode) > 0 ? sw : 0;
}

/** Fill sheaf `sw` from the partial slabs and, if they run dry, one new slab. Returns objects added. */
export function refillSheaf(slab: SlabAllocator, id: number, sw: number, gfp: number, mode: number): number {
  const i32 = slab.i32;
  const kw = slab.cacheWOf(id);
  const want = i32[sw + S_CAP]! - i32[sw + S_SIZE]!;
  let got = 0;
  const listLock = kw + K_LIST_LOCK;
  if (!slab.locks.lockIn(mode, listLock, LOCK.list)) return 0;
  got = slab.takeFromPartial(kw, sw, want);
  slab.locks.unlock(listLock, LOCK.list);
  if (got === 0) got = slab.newSlab(id, gfp, mode, sw);
  if (got > 0) slab.locks.vmInc(VM.sheafRefill, 1);
  return got;
}

/**
 * The main sheaf is full (or the placeholder): swap with an empty spare, else hand it to the
 * barn for an empty one, else flush it to the slabs. Returns the new main (0: free to the slabs
 * directly). Local lock held.
 */
export function replaceFullMain(slab: SlabAllocator, id: number, pcs: number, mode: number): number {
  const i32 = slab.i32;
  const main = i32[pcs + PCS_MAIN]!;
  const spare = i32[pcs + PCS_SPARE]!;
  if (main === (slab.hw + H_EMPTY_SHEAF) << 2) {
    if (spare !== 0) {
      i32[pcs + PCS_MAIN] = spare;
      i32[pcs + PCS_SPARE] = 0;
      if (i32[(spare >> 2) + S_SIZE]! < i32[(spare >> 2) + S_CAP]!) return spare >> 2;
      return replaceFullMain(slab, id, pcs, mode);
    }
    if (mode !== 0) return 0;
    const s = allocSheaf(slab, id, 0);
    if (s === 0) return 0;
    i32[pcs + PCS_MAIN] = s;
    unholdSheaf(slab, s);
    return s >> 2;
  }
  if (spare !== 0 && i32[(spare >> 2) + S_SIZE]! < i32[(spare >> 2) + S_CAP]!) {
    i32[pcs + PCS_MAIN] = spare;
    i32[pcs + PCS_SPARE] = main;
    return spare >> 2;
  }
  return tradeFull(slab, id, pcs, PCS_MAIN, mode);
}

/**
 * The full sheaf at pcs word `which` (PCS_MAIN or PCS_REMOTE) goes to the barn for an empty one,
 * else (the barn is full, or busy) it is flushed to the slabs and stays. Returns the word index
 * of the sheaf now at `which`, with room (0 if none could be had). Local lock held.
 */
function tradeFull(slab: SlabAllocator, id: number, pcs: number, which: number, mode: number): number {
  const i32 = slab.i32;
  const full = i32[pcs + which]!;
  // The sheaf leaves the pcs line first: at every lock point below a sheaf is in one place only,
  // so an agent stopped there and reclaimed (reclaimSlot flushes the pcs line's sheaves) never has
  // the barn's sheaf flushed and freed too. In hand (PCS_HAND) from here until the barn has it
  // or it is back on the pcs line.
  i32[pcs + PCS_HAND] = full;
  i32[pcs + which] = (slab.hw + H_EMPTY_SHEAF) << 2;
  const empty = barnPutFull(slab, id, full, mode, pcs + PCS_HAND);
  if (empty >= 0) {
    slab.locks.vmInc(VM.barnPut, 1);
    // The empty sheaf is in the hand: on the pcs line first, then out of the hand.
    if (empty > 0) i32[pcs + which] = empty;
    i32[pcs + PCS_HAND] = 0;
    if (slab.barnDecayDue) barnDecay(slab, id, mode);
    if (empty > 0) return empty >> 2;
    // The barn took the full sheaf but had no empty one: make one (normal mode only).
    const s = mode === 0 ? allocSheaf(slab, id, 0) : 0;
    slab.i32[pcs + which] = s === 0 ? (slab.hw + H_EMPTY_SHEAF) << 2 : s;
    if (s !== 0) unholdSheaf(slab, s);
    return s >> 2;
  }
  // The barn is full of full sheaves (or busy): the sheaf comes back, and is flushed to the slabs.
  i32[pcs + which] = full;
  i32[pcs + PCS_HAND] = 0;
  if (mode !== 0) return 0;
  // A noBlock agent that cannot have the list lock frees (defers) the object itself.
  return flushSheaf(slab, id, full >> 2, 0) ? full >> 2 : 0;
}

/**
 * A remote sheaf with room for one more object (a free of an object whose slab another slot
 * owns, in normal mode): the one on the pcs line, a new one in place of the placeholder, or an
 * empty one the barn gave for it when full. Returns its word index, 0 if none could be had (the
 * caller frees to the main sheaf instead). Local lock held.
 */
export function remoteSheafWithRoom(slab: SlabAllocator, id: number, pcs: number): number {
  const i32 = slab.i32;
  const r = i32[pcs + PCS_REMOTE]!;
  if (r === (slab.hw + H_EMPTY_SHEAF) << 2) {
    const s = allocSheaf(slab, id, 0);
    if (s === 0) return 0;
    slab.i32[pcs + PCS_REMOTE] = s;
    unholdSheaf(slab, s);
    return s >> 2;
  }
  if (i32[(r >> 2) + S_SIZE]! < i32[(r >> 2) + S_CAP]!) return r >> 2;
  return tradeFull(slab, id, pcs, PCS_REMOTE, 0);
}

/** Does the pcs line at word `pcs` hold a sheaf (main, spare or remote, not the placeholder)? */
export function holdsSheaf(slab: SlabAllocator, pcs: number): boolean {
  const none = (slab.hw + H_EMPTY_SHEAF) << 2;
  for (const at of PCS_SHEAVES) {
    const s = slab.i32[pcs + at]!;
    if (s !== 0 && s !== none) return true;
  }
  return false;
}

/** Is sheaf `s` on the pcs line at word `pcs`: one of its sheaves, or in its hand? */
export function onPcsLine(i32: Int32Array, pcs: number, s: number): boolean {
  for (const at of PCS_SHEAVES) if (i32[pcs + at] === s) return true;
  return i32[pcs + PCS_HAND] === s;
}

/** Free the objects of sheaf `sw` back to their slabs; the sheaf is left empty. */
export function flushSheaf(slab: SlabAllocator, id: number, sw: number, mode: number): boolean {
  const i32 = slab.i32;
  const n = i32[sw + S_SIZE]!;
  if (n === 0) return true;
  const kw = slab.cacheWOf(id);
  if (!slab.locks.lockIn(mode, kw + K_LIST_LOCK, LOCK.list)) return false;
  let discard: number[] | null = null;
  // From the top, the size following each object: an agent stopped half-way (and reclaimed)
  // leaves a sheaf that holds exactly the objects not yet returned.
  for (let i = n - 1; i >= 0; i--) {
    const empty = slab.putObjectLocked(kw, i32[sw + S_OBJS + i]!);
    i32[sw + S_SIZE] = i;
    if (empty !== 0) (discard ??= []).push(empty);
  }
  discard = slabDecayLocked(slab, kw, discard);
  slab.locks.unlock(kw + K_LIST_LOCK, LOCK.list);
  slab.locks.vmInc(VM.sheafFlush, 1);
  if (discard !== null) for (const pfn of discard) slab.releaseSlab(id, pfn, mode);
  return true;
}

/** Take a full sheaf from the barn (address, or 0). */
export function barnGetFull(slab: SlabAllocator, id: number, mode: number): number {
  const i32 = slab.i32;
  const kw = slab.cacheWOf(id);
  if (i32[kw + K_BARN_NR_FULL] === 0) return 0; // racy peek: an empty barn is not worth the lock
  if (!slab.locks.lockIn(mode, kw + K_BARN_LOCK, LOCK.barn)) return 0;
  // In this slot's hand (PCS_HAND) before it leaves the list, until the caller puts it on the pcs
  // line and clears the word.
  const s = barnPop(slab, kw + K_BARN_FULL, slab.pcsW(id) + PCS_HAND);
  slab.locks.unlock(kw + K_BARN_LOCK, LOCK.barn);
  return s;
}

/**
 * The empty main sheaf `empty` of the pcs line at `pcs` for a full one of the barn, in one barn
 * lock hold: the full one becomes the main, the empty one goes on the barn's empty list (or is
 * freed, when that list is at capacity). Returns the new main's address, or 0 with nothing changed.
 * The empty sheaf is held (holdSheaf) from before it leaves the pcs line until the barn has it.
 */
function barnTradeEmpty(slab: SlabAllocator, id: number, pcs: number, empty: number, mode: number): number {
  const kw = slab.cacheWOf(id);
  if (slab.i32[kw + K_BARN_NR_FULL] === 0) return 0; // racy peek, as in barnGetFull
  holdSheaf(slab, empty);
  if (!slab.locks.lockIn(mode, kw + K_BARN_LOCK, LOCK.barn)) {
    unholdSheaf(slab, empty);
    return 0;
  }
  // slab.i32 after the lock (it may have rebuilt the views). The full sheaf is in PCS_HAND before it
  // leaves its list, then on the pcs line; then the empty one leaves the hand for the barn.
  let kept = false;
  const full = barnPop(slab, kw + K_BARN_FULL, pcs + PCS_HAND);
  if (full !== 0) {
    slab.i32[pcs + PCS_MAIN] = full;
    slab.i32[pcs + PCS_HAND] = 0;
    if (slab.i32[kw + K_BARN_NR_EMPTY]! < slab.i32[kw + K_BARN_CAP]!) {
      barnPush(slab, kw + K_BARN_EMPTY, empty);
      unholdSheaf(slab, empty);
      kept = true;
    }
  }
  slab.locks.unlock(kw + K_BARN_LOCK, LOCK.barn);
  if (full === 0) unholdSheaf(slab, empty);
  else if (!kept) freeSheaf(slab, empty, mode);
  return full;
}

/**
 * Give a full sheaf to the barn and take an empty one: returns the empty sheaf's address, 0 if
 * the barn took the full sheaf but had no empty one, -1 if it took nothing.
 */
export function barnPutFull(slab: SlabAllocator, id: number, full: number, mode: number, hand: number): number {
  const i32 = slab.i32;
  const kw = slab.cacheWOf(id);
  if (!slab.locks.lockIn(mode, kw + K_BARN_LOCK, LOCK.barn)) return -1;
  let empty = -1;
  if (i32[kw + K_BARN_NR_FULL]! < i32[kw + K_BARN_CAP]! && (mode === 0 || i32[kw + K_BARN_EMPTY] !== 0)) {
    barnPush(slab, kw + K_BARN_FULL, full);
    // The barn has the full sheaf: out of the hand before the unlock. A hand that still held it
    // after the unlock (the barn had no empty sheaf to pop into it) let a kill there leave it in
    // the barn and in a dead slot's hand at once; another slot could take it off the barn while
    // reclaimSlot looked for it, and both freed it. The hand then takes the empty one before that
    // leaves its list, so a kill here leaves no sheaf on no list and in no hand.
    i32[hand] = 0;
    empty = barnPop(slab, kw + K_BARN_EMPTY, hand);
    // Frees that stop at the barn tick the slab decay too (the caller runs the step).
    const ticks = i32[kw + K_BARN_TICKS]! + 1;
    i32[kw + K_BARN_TICKS] = ticks < SLAB_DECAY_TICKS ? ticks : 0;
    if (ticks >= SLAB_DECAY_TICKS) slab.barnDecayDue = true;
  }
  slab.locks.unlock(kw + K_BARN_LOCK, LOCK.barn);
  return empty;
}

/** Push sheaf `s` on the barn list headed at word `head` (its count is the next word). Barn lock held. */
export function barnPush(slab: SlabAllocator, head: number, s: number): void {
  const i32 = slab.i32;
  i32[(s >> 2) + S_NEXT] = i32[head]!;
  i32[head] = s;
  i32[head + 1] = i32[head + 1]! + 1;
}

/**
 * Pop the first sheaf of the barn list headed at word `head`, or 0; into hand word `hand` (if not
 * 0) before it leaves the list. Barn lock held.
 */
export function barnPop(slab: SlabAllocator, head: number, hand = 0): number {
  const i32 = slab.i32;
  const s = i32[head]!;
  if (s !== 0) {
    if (hand !== 0) i32[hand] = s;
    i32[head] = i32[(s >> 2) + S_NEXT]!;
    i32[head + 1] = i32[head + 1]! - 1;
  }
  return s;
}

/** Flush every sheaf in cache `id`'s barn to the slabs and free the sheaves. */
export function barnShrink(slab: SlabAllocator, id: number): void {
  // The sheaf cache has no barn, and its PCS_HAND is the sheaf hand: never cleared here.
  if (id === SHEAF_CACHE_ID) return;
  const kw = slab.cacheWOf(id);
  const hand = slab.pcsW(id) + PCS_HAND;
  // One sheaf at a time off the barn, in this slot's hand (PCS_HAND) while it is flushed: an agent
  // killed here leaves at most that sheaf, which reclaimSlot flushes, and the rest in the barn.
  // As many as the barn holds now (a racy read of its counts, each at most K_BARN_MAX while sound):
  // other agents may fill it again meanwhile, and shrink does not chase them.
  const held = slab.i32[kw + K_BARN_NR_FULL]! + slab.i32[kw + K_BARN_NR_EMPTY]!;
  if (held >>> 0 > 2 * K_BARN_MAX) throw new HeapError(ErrorCode.ECORRUPT, `the barn of ${cacheName(slab, id)} counts ${held} sheaves, more than ${2 * K_BARN_MAX}: its lists are broken`);
  for (let n = 0; n < held; n++) {
    slab.locks.lock(kw + K_BARN_LOCK, LOCK.barn);
    // slab.i32 after the lock: it may have rebuilt the views, and the sheaves may lie in new pages.
    let s = barnPop(slab, kw + K_BARN_FULL, hand);
    if (s === 0) s = barnPop(slab, kw + K_BARN_EMPTY, hand);
    slab.i32[hand] = s;
    slab.locks.unlock(kw + K_BARN_LOCK, LOCK.barn);
    if (s === 0) return;
    if (!flushSheaf(slab, id, s >> 2, 0)) deferSheafObjects(slab, s >> 2);
    holdSheaf(slab, s);
    slab.i32[hand] = 0;
    freeSheaf(slab, s, 0);
  }
}

/** A noBlock agent could not flush sheaf `sw`: its objects go on this slot's deferred list. */
export function deferSheafObjects(slab: SlabAllocator, sw: number): void {
  const i32 = slab.i32;
  const n = i32[sw + S_SIZE]!;
  for (let i = 0; i < n; i++) deferObject(slab, i32[sw + S_OBJS + i]!);
  i32[sw + S_SIZE] = 0;
}

/**
 * A new empty sheaf for cache `id` from the sheaf cache (normal mode only). It is held
 * (sheaf_hand.ts) from before it leaves its freelist; the caller puts it on the pcs line, then
 * unholdSheaf.
 */
export function allocSheaf(slab: SlabAllocator, id: number, gfp: number): number {
  const s = slab.allocFromSlabs(SHEAF_CACHE_ID, gfp & (GFP.NOWAIT | GFP.ATOMIC), 0, freeSheafHand(slab));
  if (s === 0) return 0;
  const i32 = slab.i32;
  const sw = s >> 2;
  i32[sw] = 0; // clears the free tag (S_SIZE)
  i32[sw + S_CAP] = i32[slab.cacheWOf(id) + K_SHEAF_CAP]!;
  i32[sw + S_NEXT] = 0;
  i32[sw + S_CACHE] = id;
  return s;
}

/** Free a sheaf object; it is held (sheaf_hand.ts) until its freelist or this slot's deferred list has it. */
export function freeSheaf(slab: SlabAllocator, sheaf: number, mode: number): void {
  holdSheaf(slab, sheaf);
  if (!slab.freeToSlabs(SHEAF_CACHE_ID, sheaf, mode, sheafHandHolding(slab, sheaf))) {
    deferObject(slab, sheaf);
    unholdSheaf(slab, sheaf);
  }
}

/**
 * Flush slot `cpu`'s sheaves of cache `id` to the slabs and free them. This slot's sheaves are
 * flushed under their local lock, so that a hook re-entering at a lock point of the flush finds
 * them busy: kmallocNolock takes another class, kfreeNolock defers (it must not take an object
 * the flush is about to free, nor put one where the flush has already looked). False when a
 * noBlock agent could not have the list lock: that sheaf stays where it was, whole.
 */
export function flushCpuSheaves(slab: SlabAllocator, id: number, cpu: number, mode: number): boolean {
  const i32 = slab.i32;
  const pcs = slab.cacheWOf(id) + K_HDR_WORDS + cpu * PCS_WORDS;
  const emptyW = (slab.hw + H_EMPTY_SHEAF) << 2;
  const own = cpu === slab.cpu;
  if (own) {
    if (i32[pcs + PCS_LOCKED] !== 0) {
      throw new HeapError(ErrorCode.EDEADLK, `the sheaves of ${cacheName(slab, id)} on cpu ${cpu} are locked by this agent: a hook may not flush them`);
    }
    if (!holdsSheaf(slab, pcs)) return true;
    slab.lockSheaf(pcs);
  }
  try {
    for (const which of PCS_SHEAVES) {
      const s = i32[pcs + which]!;
      if (s !== 0 && s !== emptyW) {
        if (!flushSheaf(slab, id, s >> 2, mode)) return false;
        holdSheaf(slab, s);
        i32[pcs + which] = which === PCS_SPARE ? 0 : emptyW;
        freeSheaf(slab, s, mode);
      }
    }
  } finally {
    if (own) slab.unlockSheaf(pcs);
  }
  return true;
}

/** Flush slot `cpu`'s sheaves of every live or dying cache (detach, reclaimSlot); EAGAIN when a noBlock agent gave up. */
export function flushAllSheavesOf(slab: SlabAllocator, cpu: number): void {
  for (let id = 0; id < slab.maxCaches; id++) {
    const st = slab.i32[slab.cacheWOf(id) + K_STATE];
    if (st !== K_STATE_ACTIVE && st !== K_STATE_DYING) continue;
    if (cpu !== slab.cpu) flushHandSheaf(slab, id, cpu);
    if (!flushCpuSheaves(slab, id, cpu, 0)) listBusy(slab, id);
    // A reclaimed slot is inside no slow path any more, wherever it died.
    if (cpu !== slab.cpu) Atomics.store(slab.i32, slab.cacheWOf(id) + K_HDR_WORDS + cpu * PCS_WORDS + PCS_USERS, 0);
  }
}

/**
 * reclaimSlot: the sheaf dead slot `cpu` had in its hands (PCS_HAND) for cache `id`. It is flushed
 * and freed only if it is nowhere else: on no slot's pcs line or hand (a trade that finished), on
 * neither barn list (sheafHeldElsewhere, under the barn lock), and it is still a sheaf of this
 * cache (not freed by a barn shrink meanwhile). No lock held.
 */
export function flushHandSheaf(slab: SlabAllocator, id: number, cpu: number): void {
  const kw = slab.cacheWOf(id);
  const hand = kw + K_HDR_WORDS + cpu * PCS_WORDS + PCS_HAND;
  const s = slab.i32[hand]!;
  if (s === 0) return;
  slab.i32[hand] = 0;
  if (sheafHeldElsewhere(slab, s)) return;
  const sw = s >> 2;
  const i32 = slab.i32;
  if (i32[sw + S_CACHE] !== id || i32[sw + S_CAP] !== i32[kw + K_SHEAF_CAP] || i32[sw + S_SIZE]! >>> 0 > i32[sw + S_CAP]!) return;
  if (!flushSheaf(slab, id, sw, 0)) listBusy(slab, id);
  freeSheaf(slab, s, 0);
}

/**
 * Pop the last object of the sheaf at word `sw`, which is not empty; its free tag stays until the
 * caller hands it out. The one pop of a sheaf on the slow and nolock allocations (popFast writes
 * it out: a call there costs the nolock pair 5%). The sheaf's owner, under its local lock.
 */
export function sheafPop(i32: Int32Array, sw: number): number {
  const n = i32[sw + S_SIZE]! - 1;
  i32[sw + S_SIZE] = n;
  return i32[sw + S_OBJS + n]!;
}

/**
 * Push free object `addr` on the sheaf at word `sw`, which is not full, and tag it free. The one
 * push of a sheaf on the slow and nolock frees (pushFast writes it out, as popFast does). The
 * sheaf's owner, under its local lock.
 */
export function sheafPush(i32: Int32Array, sw: number, addr: number): void {
  const n = i32[sw + S_SIZE]!;
  i32[sw + S_OBJS + n] = addr;
  i32[sw + S_SIZE] = n + 1;
  i32[addr >> 2] = addr ^ O_FREE_TAG;
}
