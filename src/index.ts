/**
 * shmalloc: the Linux kernel's memory allocator for one SharedArrayBuffer shared by many
 * JavaScript agents. See README.md.
 */
export { Heap, DEFAULT_SIZE, DEFAULT_CPUS, MAX_HEAP_SIZE } from "./heap.js";
export type { HeapOptions, AttachOptions, DebugOptions, FaultInjection, HeapStats, ReclaimReport } from "./heap.js";
export { HeapError, ErrorCode } from "./errors.js";
export { GFP } from "./gfp.js";
export type { Gfp } from "./gfp.js";
export { KmemCache, KMALLOC_SIZES, KMALLOC_MAX_CACHE_SIZE, KMALLOC_MAX_SIZE } from "./slab.js";
export type { CacheOptions, SlabStats } from "./slab.js";
export type { PageStats } from "./page_alloc.js";
export type { RcuStats } from "./rcu.js";
export { TRACE_EVENTS } from "./trace.js";
export type { TraceEvent, TraceRecord, TraceHandler, Trace } from "./trace.js";
export type { ReentryHook, WasmMemory } from "./mm.js";
export { NOBLOCK_BOUND_MS } from "./mm.js";
export { STRING_HEADER } from "./views.js";
export type { TypedArrayConstructor } from "./views.js";
export { PAGE_SIZE, MAX_ORDER, PCP_MAX_ORDER, LOCK_NAMES } from "./layout.js";
export { PAGE_STATE } from "./pagemap.js";
