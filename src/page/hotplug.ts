/*
 * Memory hotplug and the zone's setup: initZone lays out a new heap's zone; grow adds pages
 * at the end of the heap (the buffer or WebAssembly memory grows first), frees them into the
 * buddy lists and moves the watermarks.
 *
 * WORDS: Z_SIZE, Z_NR_PAGES, Z_MANAGED, the watermarks Z_WMARK_*, plain stores under Z_LOCK, but
 *   Z_SIZE is published last with Atomics.store (every handle rebuilds its views when it sees it
 *   move); the descriptors of the new pages (blocks in this slot's hand, PD_OWNER before PD_FLAGS,
 *   until freeOneBlock lists them). initZone writes the whole zone, Z_PCP_BATCH and Z_PCP_HIGH
 *   with plain stores before any other agent can attach.
 * LOCKS: zone only. grow asserts first that the caller holds no zone lock and takes it with
 *   lock(): a noBlock caller that meets it held past its bound gets EAGAIN, the heap unchanged.
 *   growFor and growLocked run with Z_LOCK held by their caller (rmqueue's slow path).
 * NO LOCK: initZone (no other agent yet); the buffer's own growth happens under the zone lock.
 * STALE: Z_SIZE, read with no lock by other handles: until they see the new value their views end
 *   at the old size, which covers every address they can have met (see core/mem.ts).
 */
import { checkInt, einval } from "../core/check.js";
import { ErrorCode, HeapError } from "../core/errors.js";
import * as layout from "../core/layout.js";
import type { PageAllocator } from "./page_alloc.js";
import { buddyAdd, freeOneBlock } from "./buddy.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { LOCK, MAX_ORDER, PAGE_SHIFT, PAGE_SIZE, PD_FLAGS, PD_OWNER, PG_BUDDY, PG_HEAD, PG_INHAND, PG_ORDER_SHIFT, PG_RESERVED, VM, Z_FREE_PAGES, Z_LOCK, Z_MANAGED, Z_NR_PAGES, Z_PCP_BATCH, Z_PCP_HIGH, Z_SIZE, Z_WMARK_HIGH, Z_WMARK_LOW, Z_WMARK_MIN } = layout;

/**
 * Grow the heap to `bytes` (rounded up to pages, at most maxSize): the buffer grows and the new
 * pages join the zone, merged with their free buddies (memory hotplug). Returns the new size.
 * Other agents' handles rebuild their views when they meet the new pages.
 */
/** WebAssembly's page size: memory.grow counts in these. */
const WASM_PAGE_SIZE = 65536;

export function grow(pa: PageAllocator, bytes: number): number {
  pa.locks.assertLive();
  // A heap on WebAssembly memory grows through memory.grow (its buffer reports growable false).
  if (pa.mem.memory === null && (pa.mem.buffer as { growable?: boolean }).growable !== true) {
    einval(`this heap cannot grow: it was created without a maxSize above its size (${pa.size} bytes), so its buffer is not growable; pass Heap.create({ size, maxSize }) to allow growth`);
  }
  checkInt("bytes", bytes, 1, pa.mem.maxSize, " of bytes", `this heap grows to at most its maxSize, ${pa.mem.maxSize} bytes`);
  const want = Math.ceil(bytes / PAGE_SIZE) * PAGE_SIZE;
  pa.locks.assertCanLock(LOCK.zone);
  pa.locks.lock(pa.hw + Z_LOCK, LOCK.zone);
  try {
    growLocked(pa, want);
  } finally {
    pa.locks.unlock(pa.hw + Z_LOCK, LOCK.zone);
  }
  pa.locks.refreshViews();
  if (pa.size < want) {
    throw new HeapError(ErrorCode.EINVAL, `the buffer could not grow to ${want} bytes (a WebAssembly.Memory's maximum, or the buffer's maxByteLength); the heap stays at ${pa.size}`);
  }
  return pa.size;
}

/**
 * Grow by a quarter of the heap at least, and far enough that a block of `order` fits, aligned,
 * in the new pages with the high watermark on top; false when the heap is at maxSize. Zone lock held.
 */
export function growFor(pa: PageAllocator, order: number): boolean {
  const size = pa.u32[pa.hw + Z_SIZE]!;
  if (size >= pa.mem.maxSize) return false;
  const block = PAGE_SIZE << order;
  const fit = Math.ceil(size / block) * block + block + pa.u32[pa.hw + Z_WMARK_HIGH]! * PAGE_SIZE;
  const want = Math.min(pa.mem.maxSize, Math.max(fit, size + Math.ceil(size / 4 / PAGE_SIZE) * PAGE_SIZE));
  growLocked(pa, want);
  // The buffer may stop short of maxSize (a WebAssembly.Memory's maximum): try the least that fits.
  if (pa.u32[pa.hw + Z_SIZE]! === size && fit < want) growLocked(pa, fit);
  return true;
}

/** Grow to `want` bytes if larger than now. Zone lock held. */
export function growLocked(pa: PageAllocator, want: number): void {
  const u32 = pa.u32;
  const old = u32[pa.hw + Z_SIZE]!;
  if (want <= old) return;
  if (!growBuffer(pa, want)) return;
  const from = old >>> PAGE_SHIFT;
  const to = want >>> PAGE_SHIFT;
  // The new pages are blocks in this slot's hand before the zone reaches them: an agent killed
  // from here on leaves blocks that reclaimSlot frees (rebuildBuddyLists first finishes the
  // growth: Z_MANAGED and Z_SIZE follow Z_NR_PAGES), never pages that belong to nothing.
  for (let pfn = from; pfn < to; pfn++) u32[pa.mem.pd(pfn) + PD_FLAGS] = 0;
  for (let pfn = from; pfn < to; ) {
    const order = growOrder(pfn, to);
    u32[pa.mem.pd(pfn) + PD_OWNER] = pa.cpu;
    u32[pa.mem.pd(pfn) + PD_FLAGS] = PG_HEAD | PG_INHAND | (order << PG_ORDER_SHIFT);
    pfn += 1 << order;
  }
  u32[pa.hw + Z_NR_PAGES] = to;
  for (let pfn = from; pfn < to; ) {
    const order = growOrder(pfn, to);
    freeOneBlock(pa, pfn, order);
    pfn += 1 << order;
  }
  u32[pa.hw + Z_MANAGED] = to - pa.zoneStart;
  setWatermarks(pa, u32[pa.hw + Z_MANAGED]!);
  // Publication point: a handle that reads the new size finds the pages already in the zone.
  Atomics.store(u32, pa.hw + Z_SIZE, want);
  pa.locks.vmInc(VM.heapGrow, 1);
}

/**
 * Make the buffer at least `want` bytes long: SharedArrayBuffer.grow, or memory.grow for a heap on
 * WebAssembly memory (then this handle takes the new buffer). False when it cannot grow (the
 * memory's maximum). Zone lock held.
 */
export function growBuffer(pa: PageAllocator, want: number): boolean {
  if (pa.mem.buffer.byteLength >= want) return true;
  try {
    if (pa.mem.memory !== null) {
      const have = pa.mem.memory.buffer.byteLength;
      if (have < want) pa.mem.memory.grow(Math.ceil((want - have) / WASM_PAGE_SIZE));
      pa.mem.buffer = pa.mem.memory.buffer as unknown as SharedArrayBuffer;
    } else {
      (pa.mem.buffer as unknown as { grow(n: number): void }).grow(want);
    }
  } catch {
    return false;
  }
  return pa.mem.buffer.byteLength >= want;
}

/** min_free about sqrt(managed)/2 pages (the kernel: sqrt(lowmem_kbytes * 16)); low 5/4 min, high 3/2 min. */
export function setWatermarks(pa: PageAllocator, managed: number): void {
  const min = Math.max(1, Math.floor(Math.sqrt(managed) / 2));
  pa.u32[pa.hw + Z_WMARK_MIN] = min;
  pa.u32[pa.hw + Z_WMARK_LOW] = min + (min >>> 2);
  pa.u32[pa.hw + Z_WMARK_HIGH] = min + (min >>> 1);
}

/** Build the zone of a new heap: watermarks, pcp sizes, every zone page free. No other agent yet. */
export function initZone(pa: PageAllocator): void {
  const u32 = pa.u32;
  for (let pfn = pa.offset >>> PAGE_SHIFT; pfn < pa.zoneStart; pfn++) u32[pa.mem.pd(pfn) + PD_FLAGS] = PG_RESERVED;
  const managed = pa.nrPages - pa.zoneStart;
  u32[pa.hw + Z_MANAGED] = managed;
  u32[pa.hw + Z_SIZE] = pa.size;
  u32[pa.hw + Z_NR_PAGES] = pa.nrPages;
  setWatermarks(pa, managed);
  // zone_batchsize: about managed / (16 * cpus), as 2^n - 1 in 1..63; high = 4 * batch.
  const share = Math.floor(managed / (16 * pa.cpus));
  const batch = Math.max(1, Math.min(63, (1 << Math.floor(Math.log2(Math.max(2, share)))) - 1));
  u32[pa.hw + Z_PCP_BATCH] = batch;
  u32[pa.hw + Z_PCP_HIGH] = 4 * batch;
  u32[pa.hw + Z_FREE_PAGES] = 0;
  let pfn = pa.zoneStart;
  while (pfn < pa.nrPages) {
    let order = MAX_ORDER;
    while (order > 0 && ((pfn & ((1 << order) - 1)) !== 0 || pfn + (1 << order) > pa.nrPages)) order--;
    u32[pa.mem.pd(pfn) + PD_FLAGS] = PG_BUDDY | (order << PG_ORDER_SHIFT);
    buddyAdd(pa, pfn, order);
    u32[pa.hw + Z_FREE_PAGES] = u32[pa.hw + Z_FREE_PAGES]! + (1 << order);
    pfn += 1 << order;
  }
}

/** The order of the block that starts at `pfn` when pages up to `to` join the zone: aligned, within. */
export function growOrder(pfn: number, to: number): number {
  let order = MAX_ORDER;
  while (order > 0 && ((pfn & ((1 << order) - 1)) !== 0 || pfn + (1 << order) > to)) order--;
  return order;
}
