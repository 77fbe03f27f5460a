/*
 * Sizes of the slab layer: the kmalloc size classes and the table from a size to its class, the
 * built-in cache ids, how many objects a sheaf holds and what order a slab of a size gets, and
 * the public CacheOptions and SlabStats types.
 *
 * WORDS: none; constants and pure functions. LOCKS: none. NO LOCK: everything here (the fast
 * paths call sizeToClass with no lock). STALE: nothing: the table is this module's own, built at
 * load and never changed.
 */
import { checkInt } from "../core/check.js";
import * as layout from "../core/layout.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { K_BARN_MAX, MAX_ORDER, PAGE_SIZE, PCP_MAX_ORDER, S_MAX_CAP } = layout;

/** The kmalloc size classes (kernel-map.md). */
export const KMALLOC_SIZES = Object.freeze([8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192] as const);
export const KMALLOC_MAX_CACHE_SIZE = 8192;
/** The largest kmalloc: one block of 2^MAX_ORDER pages (4 MiB), as the kernel's KMALLOC_MAX_SIZE. */
export const KMALLOC_MAX_SIZE = PAGE_SIZE << MAX_ORDER;
/** Cache id of the sheaf cache; kmalloc class i is cache id KMALLOC_FIRST_ID + i. */
export const SHEAF_CACHE_ID = 0;
export const KMALLOC_FIRST_ID = 1;
export const FIRST_NAMED_ID = KMALLOC_FIRST_ID + KMALLOC_SIZES.length;
/** Largest object a named cache may have: one object per order-3 slab. */
export const MAX_OBJECT_SIZE = PAGE_SIZE << PCP_MAX_ORDER;

/** Every object is aligned to and padded to this: its first two words hold the free tag and the freelist link. */
export const OBJ_ALIGN = 8;

/** Bytes an object of `objectSize` takes before any debug redzone: the size rounded up to OBJ_ALIGN. */
export function objectInuse(objectSize: number): number {
  return Math.ceil(Math.max(objectSize, OBJ_ALIGN) / OBJ_ALIGN) * OBJ_ALIGN;
}

/** SIZE_INDEX[(size + 7) >> 3] is the kmalloc class of a size in 1..8192. */
export const SIZE_INDEX = new Uint8Array((KMALLOC_MAX_CACHE_SIZE >> 3) + 1);
{
  let c = 0;
  for (let b = 1; b < SIZE_INDEX.length; b++) {
    while (KMALLOC_SIZES[c]! < b << 3) c++;
    SIZE_INDEX[b] = c;
  }
}

/**
 * Sheaf capacity by object size. kernel-map.md gives 60 below 256 B; 124 halves the barn trades of
 * small objects (one lock hold per sheaf), and a batch of 4096 64 B objects then fits in a slot's
 * sheaves and the barn (BARN_BYTES) instead of going through the slabs: a 4096-batch kmalloc /
 * kfree solo run 13.4 -> 12.3 ns an operation (xmalloc-test, one worker). Larger objects keep
 * the kernel's capacities; a slot's two sheaves of a class hold at most 2 * 124 objects under 256 B.
 */
export function sheafCapacity(size: number): number {
  if (size < 256) return 124;
  if (size < 1024) return 26;
  if (size < 4096) return 12;
  return 4;
}

/**
 * 1 / size, made larger by a factor 1 + 2^-40 (K_INV_SIZE), so that the free fast path can tell an
 * object's start without the size. A slab is at most PAGE_SIZE << PCP_MAX_ORDER = 2^15 bytes, so
 * for an integer offset off into it, q = off * invSize(size) has integer part k = floor(off / size)
 * (k < 2^15), and:
 * - at an object's start (off = k * size), its fraction is k * 2^-40 plus the product's rounding
 *   (under 2^-38): below 2^-24;
 * - anywhere else (off = k * size + r, 1 <= r < size <= 2^15), it is at least r / size >= 2^-15.
 * INV_EXACT lies between the two. The factor also outweighs 1 / size's own rounding (2^-53).
 */
export function invSize(size: number): number {
  return (1 / size) * (1 + 2 ** -40);
}

/**
 * A sheaf's S_SIZE is at most S_MAX_CAP: `& SHEAF_SIZE_MASK` leaves it unchanged and tells V8 its
 * range (see WORD_MASK). Below 128 it is one byte of bytecode in the fast paths, where 0xffff took
 * ten (V8 inlines a fast path into a caller's loop only within a bytecode budget).
 */
export const SHEAF_SIZE_MASK = 0x7f;
if (S_MAX_CAP > SHEAF_SIZE_MASK) throw new Error(`S_MAX_CAP (${S_MAX_CAP}) is above SHEAF_SIZE_MASK (${SHEAF_SIZE_MASK})`);

/** A fraction of off * invSize(size) below this is an object's start (see invSize). */
export const INV_EXACT = 2 ** -21;

/** Frees to the slabs (or full sheaves to the barn) between two decay steps of a cache. */
export const SLAB_DECAY_TICKS = 128;
/** Pages of empty slabs a cache keeps at most (K_MAX_EMPTY), and at most 1/64 of the zone. */
export const SLAB_EMPTY_MAX_PAGES = 256;
/** Fewest sheaves a barn may keep, whatever their objects' size (the kernel's limit). */
export const BARN_MIN = 10;
/** Bytes of free objects the full sheaves of a barn may hold before frees go on to the slabs. */
export const BARN_BYTES = 256 << 10;

/**
 * Barn capacity (K_BARN_CAP) of a cache of `size`-byte strides in a zone of `managedPages`: full
 * sheaves holding up to BARN_BYTES of objects (at most 1/256 of the zone), so that a batch of small
 * objects moves between slots as whole sheaves, not one object at a time; BARN_MIN..K_BARN_MAX.
 */
export function barnCapacity(size: number, managedPages: number): number {
  const bytes = Math.min(BARN_BYTES, (managedPages >>> 8) * PAGE_SIZE);
  return Math.min(K_BARN_MAX, Math.max(BARN_MIN, Math.floor(bytes / (sheafCapacity(size) * size))));
}

/** Slab order: the smallest order 0..3 whose waste stays under 1/8 with at least 8 objects (or as many as order 3 holds). */
export function slabOrder(size: number): number {
  const want = Math.min(8, Math.floor((PAGE_SIZE << PCP_MAX_ORDER) / size));
  for (let order = 0; order <= PCP_MAX_ORDER; order++) {
    const bytes = PAGE_SIZE << order;
    const objs = Math.floor(bytes / size);
    if (objs >= Math.max(1, want) && (bytes - objs * size) * 8 <= bytes) return order;
  }
  return PCP_MAX_ORDER;
}

export interface CacheOptions {
  /** Alignment of every object: a power of two from 8 to 4096 (default 8). */
  align?: number;
}

export interface SlabStats {
  name: string;
  /**
   * True for the allocator's own caches (kmem_cache_sheaf, whose objects are the sheaves): their
   * activeObjects are the allocator's, never a caller's. Leave them out when summing activeObjects
   * to look for a leak.
   */
  internal: boolean;
  objectSize: number;
  /** Stride between objects in a slab. */
  size: number;
  order: number;
  objectsPerSlab: number;
  /** Objects held by callers (not in slab freelists, sheaves, the barn or a deferred list). */
  activeObjects: number;
  totalObjects: number;
  slabs: number;
  pages: number;
  partialSlabs: number;
  fullSlabs: number;
  emptySlabs: number;
  /** Free objects in the slots' sheaves and in the barn. */
  sheafObjects: number;
  barnObjects: number;
  barnFull: number;
  barnEmpty: number;
  sheafCapacity: number;
}

export function checkSize(size: number): void {
  checkInt("size", size, 1, KMALLOC_MAX_SIZE, " of bytes", `the largest kmalloc is ${KMALLOC_MAX_SIZE} bytes (4 MiB, a block of 2^${MAX_ORDER} pages)`);
}
