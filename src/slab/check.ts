/*
 * The slab layer's figures and checks: stats (like /proc/slabinfo), validate() of every cache,
 * and the repairs reclaimSlot runs for the locks a dead slot held: the list recount and rebuild
 * under a cache's list lock, the barn recount under its barn lock.
 *
 * WORDS: reads every cache descriptor, pcs line, sheaf, barn and slab page. Writes, plain, only
 *   with the lock taken over from the dead holder by reclaimSlot: slabRecountLocked a cache's list
 *   counts (K_NR_PARTIAL, K_NR_FULL, K_FREE_OBJS, K_NR_EMPTY, K_EMPTY_LOW); slabRebuildLocked its
 *   partial and full lists, counts and slab descriptors (PD_FLAGS, PD_HEAD, PD_CACHE, PD_FREELIST,
 *   PD_INUSE, PD_NEXT, PD_PREV) and the S_SIZE of a dead slot's sheaf whose top object is also on a
 *   freelist (K_LIST_LOCK); barnRecountLocked the barn lists' counts and a cut link (K_BARN_LOCK).
 * LOCKS: none taken; callers hold what they say above. validateSlabs runs inside validate() after
 *   the page walk, which found every page's place.
 * NO LOCK: cacheStats, slabStats, sheafObjectsOf, validateSlabs.
 * STALE: cacheStats and slabStats read counters other agents may be changing: exact only while
 *   the heap is quiet, or (destroy's count) with the cache's barn and list locks held and no other
 *   slot using the cache. A sheaf pointer read from another slot may name a sheaf it swaps or frees
 *   meanwhile: each counts once, and only while it is a sheaf of the cache with a count in range. validateSlabs reads the caches, and other slots' sheaves, as they are
 *   (exact while those agents are idle, which is when validate() is meant to run).
 */
import { ErrorCode, HeapError, hex } from "../core/errors.js";
import * as layout from "../core/layout.js";
import { PAGE_WHERE } from "../page/page_alloc.js";
import type { SlabAllocator } from "./slab.js";
import { SHEAF_CACHE_ID, SlabStats } from "./slab.js";
import { cacheName } from "./cache.js";
import { debugUnlink, onDeferredList, onSlabFreelist, pcsSheavesHave } from "./debug.js";
import { sheafHandRebuilt } from "./sheaf_hand.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { C_DEBUG_HAND, C_DEBUG_HAND_FREE, C_DEFER_HEAD, C_DEFER_NR, C_FREEING, C_FREEING_TAKING, C_STATE, C_STATE_ATTACHED, DEBUG_POISON, H_EMPTY_SHEAF, K_BARN_CAP, K_BARN_EMPTY, K_BARN_FULL, K_BARN_MAX, K_BARN_NR_EMPTY, K_BARN_NR_FULL, K_EMPTY_LOW, K_FLAGS, K_FLAG_SHEAF_CACHE, K_FREE_OBJS, K_FULL, K_HDR_WORDS, K_META, K_NR_EMPTY, K_NR_FULL, K_NR_PARTIAL, K_NR_SLABS, K_OBJS, K_OBJ_SIZE, K_ORDER, K_PARTIAL, K_SHEAF_CAP, K_SIZE, K_STATE, K_STATE_ACTIVE, K_STATE_DYING, K_TOTAL_OBJS, M_STATE, M_STATE_FREE, O_FREE_TAG, O_NEXT, PAGE_SHIFT, PCS_HAND, PCS_MAIN, PCS_REMOTE, PCS_SHEAVES, PCS_SPARE, PCS_WORDS, PD_CACHE, PD_FLAGS, PD_FREELIST, PD_HEAD, PD_INUSE, PD_NEXT, PD_PREV, PG_SLAB, S_CACHE, S_CAP, S_NEXT, S_OBJS, S_SIZE } = layout;
/** The words of a pcs line that may hold a sheaf of the cache: its sheaves and its hand. */
const PCS_SHEAVES_AND_HAND = [...PCS_SHEAVES, PCS_HAND];

/**
 * reclaimSlot took cache `id`'s list lock over from a dead holder: recount the lists' lengths,
 * the free objects and the empty slabs from the slabs' descriptors (PD_INUSE). List lock held.
 */
export function slabRecountLocked(slab: SlabAllocator, id: number): void {
  const i32 = slab.i32;
  const kw = slab.cacheWOf(id);
  const objs = i32[kw + K_OBJS]!;
  let partial = 0;
  let empty = 0;
  let free = 0;
  for (let pfn = i32[kw + K_PARTIAL]!; pfn !== 0 && partial <= slab.nrPages; pfn = i32[slab.mem.pd(pfn) + PD_NEXT]!) {
    const inuse = i32[slab.mem.pd(pfn) + PD_INUSE]!;
    partial++;
    free += objs - inuse;
    if (inuse === 0) empty++;
  }
  let full = 0;
  for (let pfn = i32[kw + K_FULL]!; pfn !== 0 && full <= slab.nrPages; pfn = i32[slab.mem.pd(pfn) + PD_NEXT]!) full++;
  i32[kw + K_NR_PARTIAL] = partial;
  i32[kw + K_NR_FULL] = full;
  i32[kw + K_FREE_OBJS] = free;
  i32[kw + K_NR_EMPTY] = empty;
  i32[kw + K_EMPTY_LOW] = empty;
}

export function cacheStats(slab: SlabAllocator, id: number): SlabStats {
  const i32 = slab.i32;
  const kw = slab.cacheWOf(id);
  // The sheaves in the slots' hands (a trade, a shrink's flush), read before the barn: a sheaf
  // goes into a hand before it leaves the barn and leaves the hand after it is on the barn, so one
  // seen in a hand and then on the barn is counted there, once (the sheaf cache's PCS_HAND holds a
  // sheaf object, not a sheaf).
  const hands: number[] = [];
  for (let cpu = 0; cpu < slab.cpus && id !== SHEAF_CACHE_ID; cpu++) hands.push(i32[kw + K_HDR_WORDS + cpu * PCS_WORDS + PCS_HAND]!);
  // Each sheaf once (a slot that swaps its main and spare may show one in both words for a
  // moment), and only a sheaf of this cache that is not free: a slot may free the sheaf in its hand
  // while this reads it, and its first word is then the free tag, not a count.
  const seen = new Set<number>();
  const objectsOf = (s: number): number => {
    if (seen.has(s)) return 0;
    seen.add(s);
    return sheafCount(slab, id, s);
  };
  let barnObjects = 0;
  for (let s = i32[kw + K_BARN_FULL]!, n = 0; s !== 0 && n < K_BARN_MAX; s = i32[(s >> 2) + S_NEXT]!, n++) barnObjects += objectsOf(s);
  let sheafObjects = 0;
  for (let cpu = 0; cpu < slab.cpus; cpu++) {
    const pcs = kw + K_HDR_WORDS + cpu * PCS_WORDS;
    for (const at of PCS_SHEAVES) sheafObjects += objectsOf(i32[pcs + at]!);
  }
  for (const h of hands) sheafObjects += objectsOf(h);
  let deferred = 0;
  for (let cpu = 0; cpu < slab.cpus; cpu++) {
    const nd = i32[slab.mem.pcpOf(cpu) + C_DEFER_NR]!;
    for (let o = i32[slab.mem.pcpOf(cpu) + C_DEFER_HEAD]!, n = 0; o !== 0 && n < nd; o = i32[(o >> 2) + O_NEXT]!, n++) {
      if (i32[slab.mem.pd(o >>> PAGE_SHIFT) + PD_CACHE] === id) deferred++;
    }
    deferred += freeingObjects(slab, id, cpu).length;
  }
  const total = i32[kw + K_TOTAL_OBJS]!;
  const slabs = i32[kw + K_NR_SLABS]!;
  return {
    name: cacheName(slab, id),
    internal: (i32[kw + K_FLAGS]! & K_FLAG_SHEAF_CACHE) !== 0,
    objectSize: i32[kw + K_OBJ_SIZE]!,
    size: i32[kw + K_SIZE]!,
    order: i32[kw + K_ORDER]!,
    objectsPerSlab: i32[kw + K_OBJS]!,
    // Read as the agents leave them: an object moving between two places may be counted in both
    // for a moment. A count below 0 says nothing more than 0.
    activeObjects: Math.max(0, total - i32[kw + K_FREE_OBJS]! - sheafObjects - barnObjects - deferred),
    totalObjects: total,
    slabs,
    pages: slabs << i32[kw + K_ORDER]!,
    partialSlabs: i32[kw + K_NR_PARTIAL]!,
    fullSlabs: i32[kw + K_NR_FULL]!,
    emptySlabs: i32[kw + K_NR_EMPTY]!,
    sheafObjects,
    barnObjects,
    barnFull: i32[kw + K_BARN_NR_FULL]!,
    barnEmpty: i32[kw + K_BARN_NR_EMPTY]!,
    sheafCapacity: i32[kw + K_SHEAF_CAP]!,
  };
}

export function slabStats(slab: SlabAllocator): SlabStats[] {
  const out: SlabStats[] = [];
  for (let id = 0; id < slab.maxCaches; id++) {
    const st = slab.i32[slab.cacheWOf(id) + K_STATE];
    if (st === K_STATE_ACTIVE || st === K_STATE_DYING) out.push(cacheStats(slab, id));
  }
  return out;
}

/**
 * Check every slab invariant on top of validatePages' map: each slab page belongs to one live
 * cache and its head; freelist length plus in-use equals objects per slab; partial-list and
 * counts agree; no object is both on a freelist and in a sheaf; every sheaf object belongs to
 * its cache. Other slots' sheaves are read as they are: exact only while those agents are idle.
 */
export function validateSlabs(slab: SlabAllocator, where: Uint8Array): void {
  const i32 = slab.i32;
  const bad = (msg: string): never => {
    throw new HeapError(ErrorCode.ECORRUPT, msg);
  };
  const freeObjs = new Set<number>();
  const perCache = new Map<number, { slabs: number; free: number; empty: number }>();
  for (let pfn = slab.zoneStart; pfn < slab.nrPages; ) {
    if (where[pfn] !== PAGE_WHERE.unseen) {
      pfn++;
      continue;
    }
    const d = slab.mem.pd(pfn);
    if (i32[d + PD_FLAGS] !== PG_SLAB) bad(`page ${pfn} is in no place (flags ${hex(i32[d + PD_FLAGS]!)})`);
    if (i32[d + PD_HEAD] !== pfn) bad(`slab page ${pfn} is not the head its tail pages expect (head ${i32[d + PD_HEAD]})`);
    const id = i32[d + PD_CACHE]!;
    if (id < 0 || id >= slab.maxCaches) bad(`slab ${pfn} names cache ${id}`);
    const kw = slab.cacheWOf(id);
    const state = i32[kw + K_STATE];
    if (state !== K_STATE_ACTIVE && state !== K_STATE_DYING) bad(`slab ${pfn} belongs to cache ${id}, which does not exist`);
    const order = i32[kw + K_ORDER]!;
    for (let p = 0; p < 1 << order; p++) {
      const td = slab.mem.pd(pfn + p);
      if (i32[td + PD_FLAGS] !== PG_SLAB || i32[td + PD_HEAD] !== pfn || i32[td + PD_CACHE] !== id) bad(`slab ${pfn}: page ${pfn + p} is not one of its pages`);
      if (where[pfn + p] !== PAGE_WHERE.unseen) bad(`slab ${pfn}: page ${pfn + p} is in two places`);
      where[pfn + p] = PAGE_WHERE.allocated;
    }
    const size = i32[kw + K_SIZE]!;
    const objs = i32[kw + K_OBJS]!;
    const base = pfn << PAGE_SHIFT;
    let n = 0;
    for (let o = i32[d + PD_FREELIST]!; o !== 0; o = i32[(o >> 2) + O_NEXT]!) {
      if (o < base || o >= base + objs * size || (o - base) % size !== 0) bad(`slab ${pfn} of ${cacheName(slab, id)}: freelist holds ${hex(o)}, not one of its objects`);
      if (freeObjs.has(o)) bad(`object ${hex(o)} is twice on a freelist`);
      if (i32[o >> 2] !== (o ^ O_FREE_TAG)) bad(`free object ${hex(o)} of ${cacheName(slab, id)} was written after free (word 0 is ${hex(i32[o >> 2]!)})`);
      if (i32[kw + K_META] !== 0 && i32[((o + i32[kw + K_META]!) >> 2) + M_STATE] !== M_STATE_FREE) bad(`free object ${hex(o)} of ${cacheName(slab, id)} is not marked free`);
      freeObjs.add(o);
      if (++n > objs) bad(`slab ${pfn}: freelist longer than the slab`);
    }
    if (n + i32[d + PD_INUSE]! !== objs) bad(`slab ${pfn} of ${cacheName(slab, id)}: ${n} free + ${i32[d + PD_INUSE]} in use != ${objs} objects`);
    const c = perCache.get(id) ?? { slabs: 0, free: 0, empty: 0 };
    c.slabs++;
    c.free += n;
    if (n === objs) c.empty++;
    perCache.set(id, c);
    pfn += 1 << order;
  }
  for (let id = 0; id < slab.maxCaches; id++) {
    const kw = slab.cacheWOf(id);
    const state = i32[kw + K_STATE];
    if (state !== K_STATE_ACTIVE && state !== K_STATE_DYING) continue;
    const name = cacheName(slab, id);
    const c = perCache.get(id) ?? { slabs: 0, free: 0, empty: 0 };
    if (c.slabs !== i32[kw + K_NR_SLABS]) bad(`${name}: counts ${i32[kw + K_NR_SLABS]} slabs, has ${c.slabs}`);
    if (c.free !== i32[kw + K_FREE_OBJS]) bad(`${name}: counts ${i32[kw + K_FREE_OBJS]} free objects on slabs, has ${c.free}`);
    if (c.slabs * i32[kw + K_OBJS]! !== i32[kw + K_TOTAL_OBJS]) bad(`${name}: total objects ${i32[kw + K_TOTAL_OBJS]} != slabs x objects`);
    if (c.empty !== i32[kw + K_NR_EMPTY]) bad(`${name}: counts ${i32[kw + K_NR_EMPTY]} empty slabs, has ${c.empty}`);
    let partial = 0;
    for (let pfn = i32[kw + K_PARTIAL]!, prev = 0; pfn !== 0; prev = pfn, pfn = i32[slab.mem.pd(pfn) + PD_NEXT]!) {
      const d = slab.mem.pd(pfn);
      if (i32[d + PD_FLAGS] !== PG_SLAB || i32[d + PD_CACHE] !== id || i32[d + PD_HEAD] !== pfn) bad(`${name}: partial list holds page ${pfn}, not one of its slabs`);
      if (i32[d + PD_PREV] !== prev) bad(`${name}: partial list back link broken at ${pfn}`);
      if (i32[d + PD_FREELIST] === 0) bad(`${name}: full slab ${pfn} on the partial list`);
      if (++partial > c.slabs) bad(`${name}: partial list is circular`);
    }
    if (partial !== i32[kw + K_NR_PARTIAL]) bad(`${name}: counts ${i32[kw + K_NR_PARTIAL]} partial slabs, its list holds ${partial}`);
    let full = 0;
    for (let pfn = i32[kw + K_FULL]!, prev = 0; pfn !== 0; prev = pfn, pfn = i32[slab.mem.pd(pfn) + PD_NEXT]!) {
      const d = slab.mem.pd(pfn);
      if (i32[d + PD_FLAGS] !== PG_SLAB || i32[d + PD_CACHE] !== id || i32[d + PD_HEAD] !== pfn) bad(`${name}: full list holds page ${pfn}, not one of its slabs`);
      if (i32[d + PD_PREV] !== prev) bad(`${name}: full list back link broken at ${pfn}`);
      if (i32[d + PD_FREELIST] !== 0) bad(`${name}: slab ${pfn} with free objects on the full list`);
      if (++full > c.slabs) bad(`${name}: full list is circular`);
    }
    if (full !== i32[kw + K_NR_FULL]) bad(`${name}: counts ${i32[kw + K_NR_FULL]} full slabs, its list holds ${full}`);
    if (partial + full !== c.slabs) bad(`${name}: ${partial} partial + ${full} full slabs != ${c.slabs} slabs`);
    const checkSheaf = (s: number, where2: string): void => {
      const sw = s >> 2;
      if (s === (slab.hw + H_EMPTY_SHEAF) << 2) return;
      if (i32[slab.mem.pd(s >>> PAGE_SHIFT) + PD_CACHE] !== SHEAF_CACHE_ID) bad(`${name}: ${where2} sheaf ${hex(s)} is not a sheaf object`);
      if (i32[sw + S_CACHE] !== id) bad(`${name}: ${where2} sheaf ${hex(s)} serves cache ${i32[sw + S_CACHE]}`);
      const size = i32[sw + S_SIZE]!;
      if (size < 0 || size > i32[sw + S_CAP]!) bad(`${name}: ${where2} sheaf holds ${size} of ${i32[sw + S_CAP]}`);
      for (let k = 0; k < size; k++) {
        const o = i32[sw + S_OBJS + k]!;
        const od = slab.mem.pd(o >>> PAGE_SHIFT);
        if (o >>> PAGE_SHIFT >= slab.nrPages || i32[od + PD_FLAGS] !== PG_SLAB || i32[od + PD_CACHE] !== id) bad(`${name}: ${where2} sheaf holds ${hex(o)}, not one of its objects`);
        if (freeObjs.has(o)) bad(`${name}: object ${hex(o)} is both free in its slab and in a ${where2} sheaf`);
        if (i32[kw + K_META] !== 0 && i32[((o + i32[kw + K_META]!) >> 2) + M_STATE] !== M_STATE_FREE) bad(`${name}: ${where2} sheaf holds ${hex(o)}, which is not marked free`);
        freeObjs.add(o);
      }
    };
    for (let cpu = 0; cpu < slab.cpus; cpu++) {
      const pcs = kw + K_HDR_WORDS + cpu * PCS_WORDS;
      checkSheaf(i32[pcs + PCS_MAIN]!, `cpu ${cpu} main`);
      if (i32[pcs + PCS_SPARE] !== 0) checkSheaf(i32[pcs + PCS_SPARE]!, `cpu ${cpu} spare`);
      checkSheaf(i32[pcs + PCS_REMOTE]!, `cpu ${cpu} remote`);
    }
    let nf = 0;
    for (let s = i32[kw + K_BARN_FULL]!; s !== 0; s = i32[(s >> 2) + S_NEXT]!) {
      checkSheaf(s, "barn");
      if (++nf > i32[kw + K_BARN_CAP]!) bad(`${name}: barn holds more than ${i32[kw + K_BARN_CAP]} full sheaves`);
    }
    if (nf !== i32[kw + K_BARN_NR_FULL]) bad(`${name}: barn counts ${i32[kw + K_BARN_NR_FULL]} full sheaves, holds ${nf}`);
    let ne = 0;
    for (let s = i32[kw + K_BARN_EMPTY]!; s !== 0; s = i32[(s >> 2) + S_NEXT]!) {
      if (i32[(s >> 2) + S_SIZE] !== 0) bad(`${name}: barn's empty list holds a sheaf with objects`);
      if (++ne > i32[kw + K_BARN_CAP]!) bad(`${name}: barn holds more than ${i32[kw + K_BARN_CAP]} empty sheaves`);
    }
    if (ne !== i32[kw + K_BARN_NR_EMPTY]) bad(`${name}: barn counts ${i32[kw + K_BARN_NR_EMPTY]} empty sheaves, holds ${ne}`);
  }
  for (let cpu = 0; cpu < slab.cpus; cpu++) {
    const c = slab.mem.pcpOf(cpu);
    let n = 0;
    for (let o = i32[c + C_DEFER_HEAD]!; o !== 0; o = i32[(o >> 2) + O_NEXT]!) {
      if (freeObjs.has(o)) bad(`object ${hex(o)} is on cpu ${cpu}'s deferred list and free elsewhere`);
      freeObjs.add(o);
      if (++n > 1 << 22) bad(`cpu ${cpu}'s deferred list is circular`);
    }
    if (n !== i32[c + C_DEFER_NR]) bad(`cpu ${cpu} counts ${i32[c + C_DEFER_NR]} deferred objects, holds ${n}`);
    if (i32[c + C_STATE] !== C_STATE_ATTACHED && n !== 0) bad(`detached cpu ${cpu} still has deferred objects`);
  }
}

/**
 * reclaimSlot took cache `id`'s barn lock over from a dead holder, which may have stopped between
 * the stores of a push or a pop: recount both barn lists by walking them (a list longer than
 * K_BARN_MAX, a cycle, is cut there). Barn lock held.
 */
export function barnRecountLocked(slab: SlabAllocator, id: number): void {
  const i32 = slab.i32;
  const kw = slab.cacheWOf(id);
  for (const head of [kw + K_BARN_FULL, kw + K_BARN_EMPTY]) {
    let n = 0;
    let link = head;
    for (let s = i32[link]!; s !== 0; s = i32[link]!) {
      if (n === K_BARN_MAX) {
        i32[link] = 0;
        break;
      }
      n++;
      link = (s >> 2) + S_NEXT;
    }
    i32[head + 1] = n;
  }
}

/**
 * The objects of cache `id` slot `cpu` is freeing that no sheaf, list or freelist has yet: free, though
 * destroy's count took them for live while the free was under way (EBUSY for a cache whose objects
 * were all freed). Its C_FREEING (a kfree's slow path, or its drain of a kfreeNolock it deferred;
 * not an allocation's pop, C_FREEING_TAKING), and a debug cache's object in its debug hand whose
 * state says free (being freed; or being allocated, not yet marked: a destroy racing that
 * allocation is the caller's race).
 */
function freeingObjects(slab: SlabAllocator, id: number, cpu: number): number[] {
  const i32 = slab.i32;
  const p = slab.mem.pcpOf(cpu);
  const f = i32[p + C_FREEING]!;
  const h = i32[p + C_DEBUG_HAND]! & ~C_DEBUG_HAND_FREE;
  const out: number[] = [];
  if (f !== 0 && (f & C_FREEING_TAKING) === 0 && inFlightFree(slab, id, cpu, f)) out.push(f);
  if (h !== 0 && h !== f && inFlightFree(slab, id, cpu, h)) out.push(h);
  return out;
}

/**
 * The objects a sheaf at address `s` holds, if it is a sheaf of cache `id` with a count in range;
 * else 0 (none, the placeholder, another cache's, or one its slot freed while this reads it: its
 * first word is then the free tag, not a count).
 */
function sheafCount(slab: SlabAllocator, id: number, s: number): number {
  const i32 = slab.i32;
  if (s === 0 || s === (slab.hw + H_EMPTY_SHEAF) << 2 || i32[(s >> 2) + S_CACHE] !== id) return 0;
  const n = i32[(s >> 2) + S_SIZE]! >>> 0;
  return n <= i32[(s >> 2) + S_CAP]! >>> 0 ? n : 0;
}

/** freeingObjects for object `x` of slot `cpu`: is it a free object of cache `id` on no list yet? */
function inFlightFree(slab: SlabAllocator, id: number, cpu: number, x: number): boolean {
  const i32 = slab.i32;
  if ((x & 7) !== 0 || x >>> PAGE_SHIFT < slab.zoneStart || x >>> PAGE_SHIFT >= slab.nrPages) return false;
  const d = slab.mem.pd(x >>> PAGE_SHIFT);
  if (i32[d + PD_FLAGS] !== PG_SLAB || i32[d + PD_CACHE] !== id) return false;
  const kw = slab.cacheWOf(id);
  const meta = i32[kw + K_META]!;
  const free = meta !== 0 ? i32[((x + meta) >> 2) + M_STATE] === M_STATE_FREE : i32[x >> 2] === (x ^ O_FREE_TAG);
  if (!free) return false;
  const p = slab.mem.pcpOf(cpu);
  return !pcsSheavesHave(i32, kw + K_HDR_WORDS + cpu * PCS_WORDS, x) && !onDeferredList(i32, p, x) && !onSlabFreelist(slab, x, i32[kw + K_OBJS]!);
}

/**
 * destroy's count of cache `id`'s live objects, with its barn and list locks held: the objects on
 * its slabs (K_TOTAL_OBJS) less those on their freelists (K_FREE_OBJS, steady under the list lock)
 * and each free object found elsewhere, once. Other slots move free objects between their
 * deferred lists, their C_FREEING and their sheaves with no lock while this reads them, so the
 * places are read in the order the objects move (deferred lists and what is in flight, then the
 * sheaves and hands, then the barn) and a Set keeps an object seen twice from counting twice.
 */
export function liveObjectsCounted(slab: SlabAllocator, id: number): number {
  const i32 = slab.i32;
  const kw = slab.cacheWOf(id);
  const free = new Set<number>();
  const ofCache = (o: number): boolean => o >>> PAGE_SHIFT >= slab.zoneStart && o >>> PAGE_SHIFT < slab.nrPages && i32[slab.mem.pd(o >>> PAGE_SHIFT) + PD_CACHE] === id;
  for (let cpu = 0; cpu < slab.cpus; cpu++) {
    const p = slab.mem.pcpOf(cpu);
    // The deferred list, then the object in flight: a drain names an object in C_FREEING before it
    // leaves the list, and lets go of the name after a sheaf has it.
    const nd = i32[p + C_DEFER_NR]!;
    for (let o = i32[p + C_DEFER_HEAD]!, n = 0; o !== 0 && n < nd; o = i32[(o >> 2) + O_NEXT]!, n++) if (ofCache(o)) free.add(o);
    for (const x of freeingObjects(slab, id, cpu)) free.add(x);
  }
  const sheaf = (s: number): void => {
    const n = sheafCount(slab, id, s);
    for (let k = 0; k < n; k++) free.add(i32[(s >> 2) + S_OBJS + k]!);
  };
  for (let cpu = 0; cpu < slab.cpus; cpu++) {
    const pcs = kw + K_HDR_WORDS + cpu * PCS_WORDS;
    for (const at of PCS_SHEAVES_AND_HAND) sheaf(i32[pcs + at]!);
  }
  for (let s = i32[kw + K_BARN_FULL]!, n = 0; s !== 0 && n < K_BARN_MAX; s = i32[(s >> 2) + S_NEXT]!, n++) sheaf(s);
  return Math.max(0, i32[kw + K_TOTAL_OBJS]! - i32[kw + K_FREE_OBJS]! - free.size);
}

/** Objects in slot `cpu`'s sheaves (main and spare) of every live or dying cache: for reclaimSlot's report. */
export function sheafObjectsOf(slab: SlabAllocator, cpu: number): number {
  const i32 = slab.i32;
  let n = 0;
  for (let id = 0; id < slab.maxCaches; id++) {
    const st = i32[slab.cacheWOf(id) + K_STATE];
    if (st !== K_STATE_ACTIVE && st !== K_STATE_DYING) continue;
    const pcs = slab.cacheWOf(id) + K_HDR_WORDS + cpu * PCS_WORDS;
    for (const at of PCS_SHEAVES) {
      const sh = i32[pcs + at]!;
      if (sh !== 0 && sh !== (slab.hw + H_EMPTY_SHEAF) << 2) n += i32[(sh >> 2) + S_SIZE]!;
    }
  }
  return n;
}

/**
 * reclaimSlot took cache `id`'s list lock over from dead slot `cpu`, which may have stopped
 * between any two statements of a list-locked section: rebuild the partial and full lists and
 * every count from the slab descriptors, the source of truth. Each slab head of the cache
 * (PG_SLAB, PD_HEAD itself) gets its tails marked again (unaccountSlab clears them first), its
 * freelist walked (a link outside the slab, or one seen twice, cuts it there) and PD_INUSE set to
 * the objects not on it. The dead slot's sheaves of the cache, on its pcs line or in its hand
 * (PCS_HAND), may hold at their top an object that is also on its freelist (stopped between the
 * two stores of a refill or a flush): the sheaf drops it. A slab the dead slot had already
 * turned into a block in its hand (unaccountSlab) is that block, returned by reclaimSlot. List
 * lock held. Returns the slabs.
 */
export function slabRebuildLocked(slab: SlabAllocator, id: number, cpus: readonly number[]): number {
  const i32 = slab.i32;
  const kw = slab.cacheWOf(id);
  const objs = i32[kw + K_OBJS]!;
  const size = i32[kw + K_SIZE]!;
  const npages = 1 << i32[kw + K_ORDER]!;
  const poison = i32[kw + K_META] !== 0 && (slab.locks.debugFlags & DEBUG_POISON) !== 0;
  const tops: number[] = [];
  for (const cpu of cpus) {
    const pcs = slab.cacheWOf(id) + K_HDR_WORDS + cpu * PCS_WORDS;
    // The sheaves on the line and the one in its hand (a barn sheaf that shrink flushes, a full one
    // on its way to the barn); the sheaf cache's PCS_HAND holds a sheaf object, not a sheaf.
    for (const at of id === SHEAF_CACHE_ID ? PCS_SHEAVES : PCS_SHEAVES_AND_HAND) {
      const s = i32[pcs + at]!;
      if (s !== 0 && s !== (slab.hw + H_EMPTY_SHEAF) << 2 && i32[(s >> 2) + S_SIZE]! > 0 && !tops.includes(s >> 2)) tops.push(s >> 2);
    }
  }
  const seen = new Uint8Array(objs);
  let partial = 0;
  let full = 0;
  let empty = 0;
  let free = 0;
  let slabs = 0;
  i32[kw + K_PARTIAL] = 0;
  i32[kw + K_FULL] = 0;
  for (let pfn = slab.zoneStart; pfn < slab.nrPages; pfn++) {
    const d = slab.mem.pd(pfn);
    if (i32[d + PD_FLAGS] !== PG_SLAB || i32[d + PD_HEAD] !== pfn || i32[d + PD_CACHE] !== id) continue;
    for (let p = 1; p < npages; p++) {
      const t = slab.mem.pd(pfn + p);
      i32[t + PD_FLAGS] = PG_SLAB;
      i32[t + PD_HEAD] = pfn;
      i32[t + PD_CACHE] = id;
    }
    const base = pfn << PAGE_SHIFT;
    seen.fill(0);
    let f = 0;
    let link = d + PD_FREELIST;
    for (let obj = i32[link]!; obj !== 0; obj = i32[link]!) {
      const k = (obj - base) / size;
      if (!Number.isInteger(k) || k < 0 || k >= objs || seen[k] !== 0) {
        i32[link] = 0;
        break;
      }
      seen[k] = 1;
      f++;
      link = (obj >> 2) + O_NEXT;
    }
    for (const sw of tops) {
      const top = i32[sw + S_OBJS + i32[sw + S_SIZE]! - 1]!;
      const k = (top - base) / size;
      if (!Number.isInteger(k) || k < 0 || k >= objs) continue;
      if (seen[k] !== 0) i32[sw + S_SIZE] = i32[sw + S_SIZE]! - 1;
      else if (poison) debugUnlink(slab, kw, top);
    }
    i32[d + PD_INUSE] = objs - f;
    const list = f === 0 ? kw + K_FULL : kw + K_PARTIAL;
    const first = i32[list]!;
    i32[d + PD_NEXT] = first;
    i32[d + PD_PREV] = 0;
    if (first !== 0) i32[slab.mem.pd(first) + PD_PREV] = pfn;
    i32[list] = pfn;
    if (f === 0) full++;
    else partial++;
    if (f === objs) empty++;
    free += f;
    slabs++;
    pfn += npages - 1;
  }
  i32[kw + K_NR_PARTIAL] = partial;
  i32[kw + K_NR_FULL] = full;
  i32[kw + K_NR_EMPTY] = empty;
  i32[kw + K_EMPTY_LOW] = empty;
  i32[kw + K_FREE_OBJS] = free;
  i32[kw + K_NR_SLABS] = slabs;
  i32[kw + K_TOTAL_OBJS] = slabs * objs;
  if (id === SHEAF_CACHE_ID) for (const cpu of cpus) sheafHandRebuilt(slab, cpu);
  return slabs;
}
