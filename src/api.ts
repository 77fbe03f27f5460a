/*
 * The public types of the package: the options Heap.create and Heap.attach read and the figures
 * heap.stats() returns. Types only, no code.
 *
 * WORDS: none (no word of the heap is named or written here).
 * LOCKS: none.
 * NO LOCK: nothing runs here.
 * STALE: nothing: types only.
 */
import type { VmItem } from "./core/layout.js";
import type { WasmMemory } from "./core/mem.js";
import type { PageStats } from "./page/page_alloc.js";
import type { RcuStats } from "./rcu/rcu.js";
import type { SlabStats } from "./slab/slab.js";

export interface DebugOptions {
  /** Fill free objects with a pattern and check it when they are handed out again. */
  poison?: boolean;
  /** Guard bytes after each object and after the requested size, checked on free. */
  redzone?: boolean;
  /** Keep per-object state so that every double free and bad free is caught. */
  track?: boolean;
}

export interface FaultInjection {
  /** Share of page allocations and slab refills to fail, 0..1. */
  rate: number;
  /** Seed of the generator that picks them. */
  seed?: number;
}

export interface HeapOptions {
  /** Heap size in bytes, rounded up to whole pages (default 64 MiB). */
  size?: number;
  /** Growth limit in bytes (default `size`). Above `size`, the buffer is a growable SharedArrayBuffer
   * and the heap grows (heap.grow, or GFP.KERNEL allocation before it gives up) up to this. */
  maxSize?: number;
  /** CPU slots: how many agents may be attached at once (default 64). */
  cpus?: number;
  /** Debug checks: true for all of them, or an object choosing (default false). */
  debug?: boolean | DebugOptions;
  /** Descriptor slots for caches, the 14 built-in ones included (default 64). */
  maxCaches?: number;
  /** This agent must never block: GFP.KERNEL spins instead of waiting. Detected where Atomics.wait throws. */
  noBlock?: boolean;
  /** Fail a share of allocations on purpose (fail_page_alloc, failslab). */
  faultInjection?: FaultInjection;
  /** A shared WebAssembly.Memory to place the heap in (grows with memory.grow); see `offset`. */
  memory?: WasmMemory;
  /** A SharedArrayBuffer of the caller's to place the heap in; see `offset`. */
  buffer?: SharedArrayBuffer;
  /** With memory or buffer: the page-aligned byte offset of the heap; the bytes below stay the caller's (default 0).
   * size then defaults to the rest of the buffer. */
  offset?: number;
}

export interface AttachOptions {
  /** This agent must never block (see HeapOptions.noBlock). */
  noBlock?: boolean;
  /** The heap's offset in the buffer (default: found by its header). */
  offset?: number;
}

/**
 * What reclaimSlot found and did (a plain object). `locks` names each lock the dead agent held
 * ("zone", "pcp cpu 3", "list kmalloc-64", "barn kmalloc-64", "sheaf kmalloc-64", "ctable",
 * "rcu cpu 2"); `rebuilt` each structure rebuilt from the descriptors under such a lock ("buddy
 * lists", "pcp lists of cpu 3", "slab lists of kmalloc-64 (12 slabs)", "barn of kmalloc-64",
 * "kfreeRcu counts of cpu 2"); `pages` the pages returned to the free lists (its pcp lists, the
 * blocks in its hands, its spare kfreeRcu block pages); `objects` the objects returned (its
 * sheaves, its deferred frees, its kfreeRcu objects, freed after their grace period);
 * `inHand` the page blocks, kfreeRcu block pages and sheaf objects it had in its hands inside the allocator;
 * `finished`, only when the dead agent died inside reclaimSlot, the reports of the slots it was
 * reclaiming, whose reclaim this one finished.
 */
export interface ReclaimReport {
  cpu: number;
  locks: string[];
  rebuilt: string[];
  pages: number;
  objects: number;
  inHand: number;
  /** Present when the dead agent was itself reclaiming slots when it died: their reports, finished now. */
  finished?: ReclaimReport[];
}

export interface HeapStats extends PageStats, RcuStats {
  /** Slots attached now. */
  attached: number;
  cpus: number;
  /** Objects waiting on the slots' deferred lists (kfreeNolock that found the sheaves busy). */
  deferredObjects: number;
  slabs: SlabStats[];
  vmstat: Record<VmItem, number>;
}
