/*
 * Where a caller's `out` Uint32Array may lie (allocPagesBulk, cache.allocBulk): the bulk calls write
 * their results into it, so a view over the heap's own memory must not let them overwrite the
 * allocator. A view is over the heap's memory when its buffer is the heap's buffer, or any other
 * SharedArrayBuffer object over the same memory (a structuredClone, one received by postMessage,
 * memory.buffer before a growth): aliasesMemory tells by a probe, not by identity. The rule, for
 * the bytes the call writes (count entries from out.byteOffset), over the heap's memory: only
 * inside one live allocation of this heap, an allocated page block (allocPages, a large kmalloc)
 * or a live slab object of a cache other than the internal sheaf cache (an allocArray view, a
 * kmalloc object), within the bytes its caller asked for (a debug object's redzone and metadata
 * are not the caller's). Not over this heap's metadata, its free memory, nor anywhere outside
 * this heap in that memory (another heap's metadata, or bytes the allocator does not own). A view
 * of other memory is anyone's.
 *
 * WORDS: C_VIEW_PROBE of this handle's slot (its own word: Atomics.store, then read back through
 *   the other buffer). Otherwise reads only.
 * LOCKS: none. NO LOCK: all of it.
 * STALE: descriptors and object words read as they are: a block another agent frees meanwhile is
 *   the caller's race, as with any use after free. An object whose first word holds its free tag
 *   may be live (its caller's data): the caller's freeObject (the slab layer's search, which reads
 *   every slot's sheaves and lists as they are) says whether it is free.
 */
import { ErrorCode, HeapError, hex } from "./errors.js";
import * as layout from "./layout.js";
import type { Mem } from "./mem.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { C_VIEW_PROBE, K_FLAGS, K_FLAG_SHEAF_CACHE, K_META, K_OBJS, K_OBJ_SIZE, K_SIZE, MAX_ORDER, M_REQ, O_FREE_TAG, PAGE_SHIFT, PAGE_SIZE, PD_CACHE, PD_FLAGS, PD_HEAD, PG_BUDDY, PG_DEFERRED, PG_HEAD, PG_INHAND, PG_LARGE, PG_ORDER_MASK, PG_ORDER_SHIFT, PG_PCP, PG_SLAB } = layout;

/** SharedArrayBuffer.prototype.byteLength's getter, captured: it throws for anything else. */
const sabByteLength = typeof SharedArrayBuffer === "undefined" ? undefined : Object.getOwnPropertyDescriptor(SharedArrayBuffer.prototype, "byteLength")!.get!;

/**
 * Is `buf` this heap's memory? The same object, else a SharedArrayBuffer over the same memory.
 * Two heaps may have identical headers and a copy holds the same bytes, so contents prove
 * nothing: this handle stores a new value in a word of its own slot that no other agent writes
 * (C_VIEW_PROBE) and reads it back through `buf`: only the same memory sees it.
 */
export function aliasesMemory(mem: Mem, buf: ArrayBufferLike): boolean {
  if (buf === mem.buffer || (mem.memory !== null && buf === mem.memory.buffer)) return true;
  let len = 0;
  try {
    if (sabByteLength === undefined) return false;
    len = sabByteLength.call(buf) as number;
  } catch {
    return false; // not a SharedArrayBuffer: never the heap's memory
  }
  const probeW = mem.pcpuW + C_VIEW_PROBE;
  if (len < (probeW + 1) * 4) return false;
  const mine = mem.u32;
  const next = (mine[probeW]! + 1) >>> 0;
  Atomics.store(mine, probeW, next);
  return Atomics.load(new Uint32Array(buf as SharedArrayBuffer, probeW * 4, 1), 0) === next;
}

function refuse(from: number, to: number, why: string): never {
  throw new HeapError(ErrorCode.EINVAL, `out (bytes ${hex(from)}..${hex(to)} of the heap's buffer) ${why}: it must be another buffer, or lie inside one live allocation of the heap (allocArray, kmalloc, allocPages)`);
}

/** Until the slab layer's search is installed (PageAllocator.freeObject): the tag alone. */
export function taggedIsFree(): boolean {
  return true;
}

/**
 * EINVAL, nothing changed, unless writing `count` entries into `out` keeps to the rule above.
 * `freeObject(id, obj)`: is that object, which carries its free tag in word 0, free?
 */
export function checkOutRegion(mem: Mem, out: Uint32Array, count: number, freeObject: (id: number, obj: number) => boolean): void {
  if (count === 0) return;
  if (!aliasesMemory(mem, out.buffer)) return;
  mem.refresh();
  const from = out.byteOffset;
  const to = from + count * 4;
  const metaEnd = mem.zoneStart * PAGE_SIZE;
  if (from < mem.offset || to > mem.size) refuse(from, to, "is over this heap's memory but outside this heap (another heap's, or bytes the allocator does not own)");
  if (from < metaEnd) refuse(from, to, "overlaps this heap's metadata (its header, per-CPU blocks, cache and page descriptors)");
  if (!insideLiveAllocation(mem, from, to, freeObject)) refuse(from, to, "is not inside one live allocation of this heap, within the bytes asked for (free memory, allocator metadata, or a debug object's redzone)");
}

/** Do bytes from..to lie in one allocated block or one live object of this heap? */
function insideLiveAllocation(mem: Mem, from: number, to: number, freeObject: (id: number, obj: number) => boolean): boolean {
  const u32 = mem.u32;
  const pfn = from >>> PAGE_SHIFT;
  const f = u32[mem.pd(pfn) + PD_FLAGS]!;
  if ((f & PG_SLAB) !== 0) {
    const id = u32[mem.pd(pfn) + PD_CACHE]!;
    if (id >= mem.maxCaches) return false;
    const kw = mem.cacheW + id * mem.cacheWords;
    if ((u32[kw + K_FLAGS]! & K_FLAG_SHEAF_CACHE) !== 0) return false;
    const head = u32[mem.pd(pfn) + PD_HEAD]! << PAGE_SHIFT;
    const size = u32[kw + K_SIZE]!;
    const idx = Math.floor((from - head) / size);
    if (size === 0 || idx >= u32[kw + K_OBJS]!) return false;
    const obj = head + idx * size;
    // A debug object is the caller's only up to the size asked for (then its redzone and metadata).
    const meta = u32[kw + K_META]!;
    const usable = meta === 0 ? size : Math.min(u32[((obj + meta) >>> 2) + M_REQ]!, u32[kw + K_OBJ_SIZE]!);
    // A free object carries the free tag in its first word; a live one may too (its caller's data).
    return to <= obj + usable && ((u32[obj >>> 2]! | 0) !== ((obj ^ O_FREE_TAG) | 0) || !freeObject(id, obj));
  }
  // A page block: its head is the nearest page below with an allocated head of a large enough order.
  for (let o = 0; o <= MAX_ORDER; o++) {
    const h = pfn & ~((1 << o) - 1);
    if (h < mem.zoneStart) return false;
    const hf = u32[mem.pd(h) + PD_FLAGS]!;
    if (hf === 0) continue;
    const order = (hf & PG_ORDER_MASK) >>> PG_ORDER_SHIFT;
    if ((hf & (PG_BUDDY | PG_PCP | PG_DEFERRED | PG_INHAND)) !== 0 || (hf & (PG_HEAD | PG_LARGE)) === 0 || order < o) return false;
    return to <= (h + (1 << order)) << PAGE_SHIFT;
  }
  return false;
}
