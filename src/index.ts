/**
 * shmalloc: the Linux kernel's memory allocator for one SharedArrayBuffer shared by many
 * JavaScript agents. See README.md.
 *
 * WORDS: none; LOCKS: none; NO LOCK: nothing runs here (re-exports only); STALE: nothing.
 */
export { Heap, DEFAULT_SIZE, DEFAULT_CPUS, MAX_HEAP_SIZE } from "./heap.js";
export type { HeapOptions, AttachOptions, DebugOptions, FaultInjection, HeapStats, ReclaimReport } from "./api.js";
export { HeapError, ErrorCode } from "./core/errors.js";
export { GFP } from "./core/gfp.js";
export type { Gfp } from "./core/gfp.js";
export { KMALLOC_SIZES, KMALLOC_MAX_CACHE_SIZE, KMALLOC_MAX_SIZE } from "./slab/slab.js";
export { KmemCache } from "./slab/kmem_cache.js";
export type { CacheOptions, SlabStats } from "./slab/slab.js";
export type { PageStats } from "./page/page_alloc.js";
export type { RcuStats } from "./rcu/rcu.js";
export { TRACE_EVENTS } from "./core/trace.js";
export type { TraceEvent, TraceRecord, TraceHandler, Trace } from "./core/trace.js";
export type { ReentryHook, WasmMemory } from "./core/lock.js";
export { NOBLOCK_BOUND_MS } from "./core/lock.js";
export { STRING_HEADER } from "./views.js";
export type { TypedArrayConstructor } from "./views.js";
export { PAGE_SIZE, MAX_ORDER, PCP_MAX_ORDER, LOCK_NAMES } from "./core/layout.js";
export { PAGE_STATE } from "./pagemap.js";
