/*
 * Cache lifecycle: named caches (createCache, findCache, destroy), the built-in ones (setupCache),
 * the calls behind a KmemCache handle, shrink, and the release of dying caches.
 *
 * WORDS: under CT_LOCK (or at creation, before any other agent): the cache table's CT_NR (raised
 *   before a new cache is published) and each descriptor's configuration line and K_GEN (plain
 *   stores; K_GEN is never zeroed), then K_STATE with Atomics.store, which publishes them
 *   (read-only afterwards); setupCache zeroes every word but the slots' PCS_USERS and K_GEN.
 *   destroy and the release store K_STATE (DYING, FREE) with Atomics.store and move CT_NR_DYING
 *   with Atomics.add and sub, under CT_LOCK. A slot's PCS_USERS: its own slot, Atomics.add and sub
 *   (cacheEnter, cacheExit; see slab.ts). shrinkCache writes the list words under K_LIST_LOCK.
 *   reclaimSlot, taking CT_LOCK over from a dead holder, recounts CT_NR and CT_NR_DYING from the
 *   descriptors (ctableRecount) and releases the dying caches no slot uses (releaseDyingCaches): a
 *   createCache or destroy killed at any statement leaves a descriptor that is free and reusable, a
 *   working cache, or a dying cache released then or by a later shrink.
 * LOCKS, in order: ctable -> sheaf (this slot's local lock, to flush its sheaves) -> barn ->
 *   list -> pcp -> zone. createCache and destroy take CT_LOCK with lock() (EAGAIN on a noBlock
 *   agent past its bound); findCache and tryReleaseDying with lockIn(0, ...): a noBlock agent that
 *   gives up finds the cache without it (findCacheUnlocked) or leaves the release to a later slow
 *   path. shrinkCache takes the list lock with lock(); destroy counts the live objects under the
 *   cache's barn and list locks (lock(), ctable -> barn -> list). The caller of createCache, findCache and
 *   destroy holds no ctable lock or later (assertCanLock); destroy first waits for pending
 *   kfreeRcu objects (slab.beforeDestroy, the rcu locks) with none held. heap.shrink() shrinks a
 *   named cache counted in its PCS_USERS (shrinkNamedCache).
 * NO LOCK: cacheEnter and cacheExit; findCacheUnlocked; cacheNames and cacheName (read the names
 *   as stats() reads counters); noSlotUses' first look before CT_LOCK.
 * STALE: findCacheUnlocked reads K_GEN (Atomics.load) before and after the name, with the state,
 *   so a descriptor destroyed and reused meanwhile is never paired with the new cache's
 *   generation. cacheEnter reads K_STATE and K_GEN after its Atomics.add: a slow path of a
 *   destroyed cache sees DYING, FREE or a new generation and backs out (only frees accept DYING),
 *   and tryReleaseDying checks noSlotUses again under CT_LOCK after its shrink. A cache's name is
 *   written before its K_STATE is stored, so cacheNames() sees whole names of active caches.
 */
import { checkInt, describe, einval, readOptions } from "../core/check.js";
import { ErrorCode, HeapError, hex } from "../core/errors.js";
import * as layout from "../core/layout.js";
import { checkGfp } from "../page/page_alloc.js";
import { type KmemCache, newKmemCache } from "./kmem_cache.js";
import { TP } from "../core/trace.js";
import { cacheStats, liveObjectsCounted } from "./check.js";
import { barnShrink, flushCpuSheaves, holdsSheaf, replaceEmptyMain } from "./sheaf.js";
import { liveObjectList } from "./debug.js";
import type { SlabAllocator } from "./slab.js";
import { CacheOptions, FIRST_NAMED_ID, MAX_OBJECT_SIZE, sheafCapacity, slabOrder } from "./slab.js";
import { emitObject, slabAllocSlow, slabSlowEntry } from "./kmalloc.js";
import { SLAB_EMPTY_MAX_PAGES, barnCapacity, invSize, objectInuse } from "./sizes.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { K_BARN_CAP, K_BARN_LOCK, CT_LOCK, CT_NR, CT_NR_DYING, DEBUG_RZ, H_EMPTY_SHEAF, K_ALIGN, K_EMPTY_LOW, K_FLAGS, K_FLAG_SHEAF_CACHE, K_GEN, K_HDR_WORDS, K_INUSE, K_INV_SIZE, K_LIST_LOCK, K_MAX_EMPTY, K_META, K_MIN_PARTIAL, K_NAME, K_NAME_LEN, K_NAME_MAX, K_NR_EMPTY, K_NR_SLABS, K_OBJS, K_OBJ_SIZE, K_ORDER, K_PARTIAL, K_SHEAF_CAP, K_SIZE, K_STATE, K_STATE_ACTIVE, K_STATE_DYING, K_STATE_FREE, LOCK, M_BYTES, PAGE_SIZE, PCP_MAX_ORDER, PCS_LOCKED, PCS_MAIN, PCS_REMOTE, PCS_USERS, PCS_WORDS, PD_INUSE, PD_NEXT, S_SIZE, Z_MANAGED } = layout;

/**
 * Enter a slow path of named cache `id`: count this slot in its PCS_USERS (tryReleaseDying does
 * not release a cache while any slot's is non-zero), then check that the cache is still the one the caller
 * means: generation `gen` when `checkGen`, ACTIVE (or DYING when `dyingOk`: frees of objects
 * that outlived a destroy). Throws EINVAL, not counted in, when it is not.
 */
const utf8 = new TextEncoder();
const utf8d = new TextDecoder();

export function cacheEnter(slab: SlabAllocator, id: number, gen: number, checkGen: boolean, dyingOk: boolean): void {
  const i32 = slab.i32;
  const kw = slab.cacheWOf(id);
  const users = slab.pcsW(id) + PCS_USERS;
  Atomics.add(i32, users, 1);
  const st = Atomics.load(i32, kw + K_STATE);
  if ((checkGen && Atomics.load(i32, kw + K_GEN) !== gen) || !(st === K_STATE_ACTIVE || (dyingOk && st === K_STATE_DYING))) {
    Atomics.sub(i32, users, 1);
    throw new HeapError(ErrorCode.EINVAL, `the cache in descriptor ${id} was destroyed`);
  }
}

export function cacheExit(slab: SlabAllocator, id: number): void {
  Atomics.sub(slab.i32, slab.pcsW(id) + PCS_USERS, 1);
}

/** Create a named cache of `objectSize`-byte objects; any agent finds it with findCache(name). */
export function createCache(slab: SlabAllocator, name: string, objectSize: number, options: CacheOptions = {}): KmemCache {
  slab.locks.assertLive();
  const bytes = cacheNameBytes(name);
  checkInt("objectSize", objectSize, 1, MAX_OBJECT_SIZE, " of bytes", `a cache's objects are at most ${MAX_OBJECT_SIZE} bytes (one object per slab of 2^${PCP_MAX_ORDER} pages); use kmalloc or allocPages for larger blocks`);
  const given = readOptions("createCache options", options, ["align"]).align;
  const align = checkInt("align", given === undefined ? 8 : given, 1, PAGE_SIZE, " of bytes", `alignment is at most a page, ${PAGE_SIZE} bytes`);
  if ((align & (align - 1)) !== 0) einval(`align must be a power of two, not ${align}`);
  const stride = cacheStride(objectSize, Math.max(8, align), slab.locks.debugFlags !== 0);
  if (stride > MAX_OBJECT_SIZE) {
    einval(
      `objectSize ${objectSize} takes ${stride} bytes an object${slab.locks.debugFlags !== 0 ? " with its debug redzone and metadata" : ""}${align > 8 ? ` aligned to ${align}` : ""}, more than the ${MAX_OBJECT_SIZE} of the largest slab`,
    );
  }
  slab.locks.assertCanLock(LOCK.ctable);
  slab.locks.lock(slab.hw + CT_LOCK, LOCK.ctable);
  try {
    const found = findCacheId(slab, bytes);
    if (found >= FIRST_NAMED_ID) throw new HeapError(ErrorCode.EINVAL, `a cache named "${name}" exists: use findCache`);
    if (found >= 0) throw new HeapError(ErrorCode.EINVAL, `"${name}" is the name of a built-in cache (the kmalloc size classes and kmem_cache_sheaf): use kmalloc for memory of its size, or give your cache another name`);
    let id = -1;
    for (let i = FIRST_NAMED_ID; i < slab.maxCaches; i++) {
      if (slab.i32[slab.cacheWOf(i) + K_STATE] === K_STATE_FREE) {
        id = i;
        break;
      }
    }
    if (id < 0) throw new HeapError(ErrorCode.EINVAL, `all ${slab.maxCaches - FIRST_NAMED_ID} named cache slots are in use: destroy a cache, or create the heap with a larger maxCaches option (now ${slab.maxCaches})`);
    setupCache(slab, id, bytes, objectSize, Math.max(8, align), 0);
    return newKmemCache(slab, id, slab.i32[slab.cacheWOf(id) + K_GEN]!);
  } finally {
    slab.locks.unlock(slab.hw + CT_LOCK, LOCK.ctable);
  }
}

/**
 * The cache another agent created with this name, or null (also for a built-in cache's name:
 * kmalloc serves those). Under the cache table lock: a descriptor that another agent destroys
 * and reuses for a new cache meanwhile cannot pair this name with the new cache's generation.
 * A noBlock agent that gives up on the lock reads the table without it (findCacheUnlocked).
 */
export function findCache(slab: SlabAllocator, name: string): KmemCache | null {
  slab.locks.assertLive();
  const bytes = cacheNameBytes(name);
  slab.locks.assertCanLock(LOCK.ctable);
  if (!slab.locks.lockIn(0, slab.hw + CT_LOCK, LOCK.ctable)) return findCacheUnlocked(slab, bytes);
  try {
    const id = findCacheId(slab, bytes);
    return id < FIRST_NAMED_ID ? null : newKmemCache(slab, id, slab.i32[slab.cacheWOf(id) + K_GEN]!);
  } finally {
    slab.locks.unlock(slab.hw + CT_LOCK, LOCK.ctable);
  }
}

export function findCacheId(slab: SlabAllocator, bytes: Uint8Array): number {
  for (let id = 0; id < slab.maxCaches; id++) if (cacheNamed(slab, id, bytes)) return id;
  return -1;
}

/** Is descriptor `id` an active cache named `bytes`? */
export function cacheNamed(slab: SlabAllocator, id: number, bytes: Uint8Array): boolean {
  const kw = slab.cacheWOf(id);
  if (Atomics.load(slab.i32, kw + K_STATE) !== K_STATE_ACTIVE || slab.i32[kw + K_NAME_LEN] !== bytes.length) return false;
  const at = (kw + K_NAME) << 2;
  for (let i = 0; i < bytes.length; i++) if (slab.u8[at + i] !== bytes[i]) return false;
  return true;
}

/**
 * findCache without the table lock, for a noBlock agent that gave up on it: the generation is
 * read before the name and again after it, with the state, so that a descriptor another agent
 * destroyed and reused meanwhile is never paired with the new cache's generation.
 */
export function findCacheUnlocked(slab: SlabAllocator, bytes: Uint8Array): KmemCache | null {
  const i32 = slab.i32;
  for (let id = FIRST_NAMED_ID; id < slab.maxCaches; id++) {
    const kw = slab.cacheWOf(id);
    const gen = Atomics.load(i32, kw + K_GEN);
    if (!cacheNamed(slab, id, bytes)) continue;
    if (Atomics.load(i32, kw + K_GEN) === gen && Atomics.load(i32, kw + K_STATE) === K_STATE_ACTIVE) return newKmemCache(slab, id, gen);
  }
  return null;
}

/** Write a cache descriptor's configuration and publish it (CT_LOCK held, or heap creation). */
export function setupCache(slab: SlabAllocator, id: number, name: Uint8Array, objectSize: number, align: number, flags: number): void {
  const i32 = slab.i32;
  const kw = slab.cacheWOf(id);
  const debug = slab.locks.debugFlags !== 0 && (flags & K_FLAG_SHEAF_CACHE) === 0;
  const inuse = objectInuse(objectSize);
  const size = cacheStride(objectSize, align, debug);
  const order = slabOrder(size);
  const gen = (i32[kw + K_GEN]! + 1) | 0; // as the word stores it: handles compare it for equality
  // Every word but the slots' PCS_USERS: a slot's slow path counts itself in and out of this
  // descriptor without CT_LOCK (cacheEnter of a stale handle, refused once it sees the state),
  // so zeroing its count here made the slot's later Atomics.sub leave it at -1 for good, and
  // the new cache could never be released.
  // K_GEN keeps the old generation until the new one is stored: a setup stopped in between (its
  // agent killed) must not leave 0, which a later setup would turn into a generation handed out
  // before, and a stale handle of it would pass for the new cache's.
  i32.fill(0, kw, kw + K_GEN);
  i32.fill(0, kw + K_GEN + 1, kw + K_HDR_WORDS);
  for (let cpu = 0; cpu < slab.cpus; cpu++) {
    const pcs = kw + K_HDR_WORDS + cpu * PCS_WORDS;
    i32.fill(0, pcs, pcs + PCS_USERS);
    i32.fill(0, pcs + PCS_USERS + 1, pcs + PCS_WORDS);
  }
  i32.fill(0, kw + K_HDR_WORDS + slab.cpus * PCS_WORDS, kw + slab.cacheWords);
  i32[kw + K_GEN] = gen;
  i32[kw + K_OBJ_SIZE] = objectSize;
  i32[kw + K_SIZE] = size;
  i32[kw + K_ALIGN] = align;
  i32[kw + K_ORDER] = order;
  i32[kw + K_OBJS] = Math.floor((PAGE_SIZE << order) / size);
  i32[kw + K_SHEAF_CAP] = (flags & K_FLAG_SHEAF_CACHE) !== 0 ? 0 : sheafCapacity(size);
  i32[kw + K_FLAGS] = flags;
  i32[kw + K_NAME_LEN] = name.length;
  // min_partial: ilog2(size) / 2, clamped to 5..10 as the kernel does.
  const minPartial = Math.min(10, Math.max(5, Math.floor(Math.log2(size) / 2)));
  i32[kw + K_MIN_PARTIAL] = minPartial;
  // Empty slabs kept for the decay: up to SLAB_EMPTY_MAX_PAGES pages, at most 1/64 of the zone.
  const keepPages = Math.min(SLAB_EMPTY_MAX_PAGES, slab.u32[slab.hw + Z_MANAGED]! >>> 6);
  i32[kw + K_MAX_EMPTY] = Math.max(minPartial, keepPages >>> order);
  i32[kw + K_BARN_CAP] = barnCapacity(size, slab.u32[slab.hw + Z_MANAGED]!);
  slab.f64[(kw + K_INV_SIZE) >> 1] = invSize(size);
  i32[kw + K_META] = debug ? inuse + DEBUG_RZ : 0;
  i32[kw + K_INUSE] = inuse;
  slab.u8.set(name, (kw + K_NAME) << 2);
  for (let cpu = 0; cpu < slab.cpus; cpu++) {
    i32[kw + K_HDR_WORDS + cpu * PCS_WORDS + PCS_MAIN] = (slab.hw + H_EMPTY_SHEAF) << 2;
    i32[kw + K_HDR_WORDS + cpu * PCS_WORDS + PCS_REMOTE] = (slab.hw + H_EMPTY_SHEAF) << 2;
  }
  // The high-water mark first (a free descriptor below it is harmless: cacheNames shows null):
  // a cache published beyond it would be missing from cacheNames and the decay.
  if (id >= slab.i32[slab.hw + CT_NR]!) slab.i32[slab.hw + CT_NR] = id + 1;
  // Publication point: the state store makes the configuration visible to findCache.
  Atomics.store(i32, kw + K_STATE, K_STATE_ACTIVE);
}

/**
 * reclaimSlot, CT_LOCK taken over from a dead holder (CT_LOCK held): the table's counts from the
 * descriptors. A createCache or destroy stopped half-way leaves a descriptor FREE (set up again
 * from scratch by the next createCache), ACTIVE (created, or not destroyed) or DYING (destroyed,
 * released by releaseDyingCaches); only CT_NR and CT_NR_DYING can be off, and are recounted.
 */
export function ctableRecount(slab: SlabAllocator): void {
  const i32 = slab.i32;
  let nr = Math.min(i32[slab.hw + CT_NR]!, slab.maxCaches);
  let dying = 0;
  for (let id = 0; id < slab.maxCaches; id++) {
    const st = i32[slab.cacheWOf(id) + K_STATE];
    if (st !== K_STATE_FREE && id >= nr) nr = id + 1;
    if (st === K_STATE_DYING) dying++;
  }
  i32[slab.hw + CT_NR] = nr;
  Atomics.store(i32, slab.hw + CT_NR_DYING, dying);
}

/** reclaimSlot, once the dead slot's sheaves are flushed: release the dying caches nothing uses any more. */
export function releaseDyingCaches(slab: SlabAllocator): void {
  for (let id = FIRST_NAMED_ID; id < slab.maxCaches; id++) if (slab.i32[slab.cacheWOf(id) + K_STATE] === K_STATE_DYING) tryReleaseDying(slab, id);
}

export function cacheName(slab: SlabAllocator, id: number): string {
  const kw = slab.cacheWOf(id);
  const at = (kw + K_NAME) << 2;
  return utf8d.decode(slab.u8.slice(at, at + slab.i32[kw + K_NAME_LEN]!));
}

/** Objects of cache `id` that callers hold: total minus every free place. Racy with other agents' fast paths. */
export function liveObjects(slab: SlabAllocator, id: number): number {
  const s = cacheStats(slab, id);
  return s.activeObjects;
}

/** cacheAlloc past its fast path (slab.ts): the slow path of a named cache, counted in (cacheEnter). */
export function cacheAllocSlow(slab: SlabAllocator, id: number, gen: number, gfp: number): number {
  slab.locks.assertLive();
  checkGfp(gfp);
  cacheEnter(slab, id, gen, true, false);
  let obj: number;
  try {
    obj = slabAllocSlow(slab, id, gfp, slab.i32[slab.cacheWOf(id) + K_OBJ_SIZE]!);
  } finally {
    cacheExit(slab, id);
  }
  if (obj === 0) return slab.pages.allocFailed(0, gfp);
  if ((slab.locks.trace.mask & (1 << TP.kmem_cache_alloc)) !== 0) {
    emitObject(slab, TP.kmem_cache_alloc, obj, slab.i32[slab.cacheWOf(id) + K_OBJ_SIZE]!, id, 0, gfp);
  }
  return obj;
}

/**
 * A held cache.allocBulk (bulk.ts) found this slot's main sheaf of cache `id` empty: refill it as
 * cacheAllocSlow would, but pop nothing, so that the batch takes each object off the sheaf into its
 * hand with the free tag on. False when no main sheaf with objects could be had (the batch then
 * goes through cacheAlloc, which handles the failure).
 */
export function cacheRefillMain(slab: SlabAllocator, id: number, gen: number, gfp: number): boolean {
  slab.locks.assertLive();
  cacheEnter(slab, id, gen, true, false);
  try {
    slabSlowEntry(slab, id);
    if (slab.i32[slab.cacheWOf(id) + K_SHEAF_CAP] === 0) return false;
    const pcs = slab.pcsW(id);
    slab.lockSheaf(pcs);
    try {
      // The views after the lock: it may have rebuilt them.
      if (slab.i32[(slab.i32[pcs + PCS_MAIN]! >> 2) + S_SIZE] !== 0) return true;
      return replaceEmptyMain(slab, id, pcs, gfp, 0) !== 0;
    } finally {
      slab.unlockSheaf(pcs);
    }
  } finally {
    cacheExit(slab, id);
  }
}

/** cache.shrink() of the handle of generation `gen`: the entry checks of a normal slab call, then shrinkCache. */
export function cacheShrink(slab: SlabAllocator, id: number, gen: number): void {
  slab.locks.assertLive();
  slabSlowEntry(slab, id);
  cacheEnter(slab, id, gen, true, false);
  try {
    shrinkCache(slab, id);
  } finally {
    cacheExit(slab, id);
  }
}

/** A noBlock agent's detach, reclaimSlot or shrink found cache `id`'s list lock held past its bound. */
export function listBusy(slab: SlabAllocator, id: number): never {
  throw new HeapError(
    ErrorCode.EAGAIN,
    `cpu ${slab.cpu} must not block, and the list lock of ${cacheName(slab, id)} was held past its bound: ` +
      "the call gave up; what it returned so far stays returned: call again",
  );
}

/** kmem_cache_shrink: flush this slot's sheaves and the barn, free every empty slab. */
export function shrinkCache(slab: SlabAllocator, id: number): void {
  if (!flushCpuSheaves(slab, id, slab.cpu, 0)) listBusy(slab, id);
  barnShrink(slab, id);
  const i32 = slab.i32;
  const kw = slab.cacheWOf(id);
  const discard: number[] = [];
  slab.locks.lock(kw + K_LIST_LOCK, LOCK.list);
  // Bounded by the slab count: a cycle is reported after the unlock, never walked for ever.
  let steps = 0;
  const most = i32[kw + K_NR_SLABS]!;
  for (let pfn = i32[kw + K_PARTIAL]!; pfn !== 0; ) {
    if (++steps > most) break;
    const next = i32[slab.mem.pd(pfn) + PD_NEXT]!;
    if (i32[slab.mem.pd(pfn) + PD_INUSE] === 0) {
      slab.partialDel(kw, pfn);
      slab.unaccountSlab(kw, pfn);
      i32[kw + K_NR_EMPTY] = i32[kw + K_NR_EMPTY]! - 1;
      discard.push(pfn);
    }
    pfn = next;
  }
  i32[kw + K_EMPTY_LOW] = i32[kw + K_NR_EMPTY]!;
  slab.locks.unlock(kw + K_LIST_LOCK, LOCK.list);
  for (const pfn of discard) slab.releaseSlab(id, pfn, 0);
  if (steps > most) throw new HeapError(ErrorCode.ECORRUPT, `the partial list of ${cacheName(slab, id)} is longer than its ${most} slabs: a cycle`);
}

/**
 * heap.shrink() of named cache `id`, counted in its PCS_USERS like cache.shrink(): a destroy by
 * another agent meanwhile leaves the cache dying, never released under this flush (a sheaf of it
 * may be in this slot's hand). Skipped when the cache is gone by the time this slot counts in.
 */
export function shrinkNamedCache(slab: SlabAllocator, id: number): void {
  try {
    cacheEnter(slab, id, slab.i32[slab.cacheWOf(id) + K_GEN]!, false, false);
  } catch (e) {
    if (e instanceof HeapError && e.code === ErrorCode.EINVAL) return;
    throw e;
  }
  try {
    shrinkCache(slab, id);
  } finally {
    cacheExit(slab, id);
  }
}

/** Flush this slot's sheaves of every dying cache, releasing caches no slot caches any more. */
export function flushDyingCaches(slab: SlabAllocator): void {
  for (let id = FIRST_NAMED_ID; id < slab.maxCaches; id++) {
    if (slab.i32[slab.cacheWOf(id) + K_STATE] !== K_STATE_DYING) continue;
    if (slab.i32[slab.pcsW(id) + PCS_LOCKED] !== 0) continue;
    if (flushCpuSheaves(slab, id, slab.cpu, 0)) tryReleaseDying(slab, id);
  }
}

/**
 * Destroy the cache of generation `gen`: refuse while objects are live; release now, or when
 * every slot has flushed and no slow path is inside (PCS_USERS).
 */
export function destroyCache(slab: SlabAllocator, id: number, gen: number): void {
  slab.beforeDestroy();
  slab.locks.assertCanLock(LOCK.ctable);
  slabSlowEntry(slab, id);
  slab.locks.lock(slab.hw + CT_LOCK, LOCK.ctable);
  try {
    // Another agent may have destroyed it, and even made a new cache in the descriptor, since the handle checked.
    const kw0 = slab.cacheWOf(id);
    if (slab.i32[kw0 + K_GEN] !== gen || slab.i32[kw0 + K_STATE] !== K_STATE_ACTIVE) {
      throw new HeapError(ErrorCode.EINVAL, `cache "${cacheName(slab, id)}" was destroyed`);
    }
    // Count before anything moves: a refused destroy leaves the heap exactly as it was.
    const live = liveObjectsLocked(slab, id);
    if (live === 0) shrinkCache(slab, id);
    if (live > 0) {
      const list = liveObjectList(slab, id);
      for (const o of list) {
        if ((slab.locks.trace.mask & (1 << TP.slab_error)) !== 0) {
          slab.locks.trace.emit(TP.slab_error, { event: "slab_error", cpu: slab.cpu, addr: o, cache: cacheName(slab, id), message: `live object ${hex(o)} at destroy` });
        }
      }
      const shown = list.length > 0 ? `: ${list.slice(0, 16).map(hex).join(", ")}${list.length > 16 ? ", ..." : ""}` : "";
      throw new HeapError(ErrorCode.EBUSY, `cache ${cacheName(slab, id)} still has ${live} live object${live === 1 ? "" : "s"}${shown}; free them first`);
    }
    const kw = slab.cacheWOf(id);
    Atomics.store(slab.i32, kw + K_STATE, K_STATE_DYING);
    Atomics.add(slab.i32, slab.hw + CT_NR_DYING, 1);
  } finally {
    slab.locks.unlock(slab.hw + CT_LOCK, LOCK.ctable);
  }
  tryReleaseDying(slab, id);
}

/**
 * destroy's count of cache `id`'s live objects, with its barn and list locks held (ctable ->
 * barn -> list): another agent's shrink or decay moves a whole slab's count out of K_FREE_OBJS and
 * K_TOTAL_OBJS in two stores, and a sheaf between the barn and its hand, under those locks. Read
 * without them, the count was off by a slab now and then, and destroy said EBUSY for a cache whose
 * objects were all free. A noBlock agent that cannot have them in its bound gets EAGAIN.
 */
function liveObjectsLocked(slab: SlabAllocator, id: number): number {
  const kw = slab.cacheWOf(id);
  slab.locks.lock(kw + K_BARN_LOCK, LOCK.barn);
  try {
    slab.locks.lock(kw + K_LIST_LOCK, LOCK.list);
    try {
      return liveObjectsCounted(slab, id);
    } finally {
      slab.locks.unlock(kw + K_LIST_LOCK, LOCK.list);
    }
  } finally {
    slab.locks.unlock(kw + K_BARN_LOCK, LOCK.barn);
  }
}

/** Release a dying cache whose objects are all back in its slabs. */
export function tryReleaseDying(slab: SlabAllocator, id: number): void {
  const i32 = slab.i32;
  const kw = slab.cacheWOf(id);
  if (!noSlotUses(slab, kw)) return;
  // A noBlock agent past its bound leaves the release to a later slow path.
  if (!slab.locks.lockIn(0, slab.hw + CT_LOCK, LOCK.ctable)) return;
  try {
    if (i32[kw + K_STATE] !== K_STATE_DYING) return;
    try {
      shrinkCache(slab, id);
    } catch (e) {
      // A noBlock agent gave up on a lock: what it shrank stays shrunk; a later slow path retries.
      if (e instanceof HeapError && e.code === ErrorCode.EAGAIN) return;
      throw e;
    }
    // A slow path inside (an allocation that began before the destroy, a free) keeps it.
    if (i32[kw + K_NR_SLABS] !== 0 || !noSlotUses(slab, kw)) return;
    i32[kw + K_NAME_LEN] = 0;
    Atomics.store(i32, kw + K_STATE, K_STATE_FREE);
    Atomics.sub(i32, slab.hw + CT_NR_DYING, 1);
  } finally {
    slab.locks.unlock(slab.hw + CT_LOCK, LOCK.ctable);
  }
}

/** Does no slot cache objects of the cache at `kw` (sheaves) nor work inside it (PCS_USERS)? */
export function noSlotUses(slab: SlabAllocator, kw: number): boolean {
  const i32 = slab.i32;
  for (let cpu = 0; cpu < slab.cpus; cpu++) {
    const pcs = kw + K_HDR_WORDS + cpu * PCS_WORDS;
    if (holdsSheaf(slab, pcs) || Atomics.load(i32, pcs + PCS_USERS) !== 0) return false;
  }
  return true;
}

/** Stride of a cache's objects: the size rounded up to OBJ_ALIGN, with the debug redzone and metadata, rounded up to `align`. */
export function cacheStride(objectSize: number, align: number, debug: boolean): number {
  const inuse = objectInuse(objectSize);
  return Math.ceil((debug ? inuse + DEBUG_RZ + M_BYTES : inuse) / align) * align;
}

/** A cache name as UTF-8, or EINVAL: not a string, empty, not well-formed Unicode, too long. */
export function cacheNameBytes(name: unknown): Uint8Array {
  if (typeof name !== "string") einval(`a cache name must be a string, not ${describe(name)}`);
  if (name.length === 0) einval("a cache name must be a non-empty string: the name given is empty (\"\")");
  if (/\p{Cs}/u.test(name)) einval(`a cache name must be well-formed Unicode, not ${describe(name)} (it holds a lone surrogate, which UTF-8 cannot keep)`);
  const bytes = utf8.encode(name);
  if (bytes.length > K_NAME_MAX) einval(`cache name ${describe(name)} is ${bytes.length} bytes of UTF-8, more than the ${K_NAME_MAX} allowed`);
  return bytes;
}

/**
 * heap.cacheNames(): the name of each cache id in use (null for a free descriptor), read without
 * a lock like stats() (a cache's name is written before its K_STATE is stored).
 */
export function cacheNames(slab: SlabAllocator): (string | null)[] {
  slab.locks.assertLive();
  const names: (string | null)[] = [];
  const nr = Math.min(slab.maxCaches, slab.i32[slab.hw + CT_NR]!);
  for (let id = 0; id < nr; id++) {
    const st = slab.i32[slab.cacheWOf(id) + K_STATE];
    names.push(st === K_STATE_ACTIVE || st === K_STATE_DYING ? cacheName(slab, id) : null);
  }
  return names;
}
