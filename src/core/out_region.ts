/*
 * Where a caller's `out` Uint32Array may lie (allocPagesBulk, cache.allocBulk): the bulk calls write
 * their results into it, so a view over the heap's own buffer must not let them overwrite the
 * allocator. The rule, for the bytes the call writes (count entries from out.byteOffset):
 *   - not over this heap's metadata (header, per-CPU blocks, cache descriptors, page descriptors:
 *     every byte from its offset to its zone);
 *   - inside this heap's zone, only inside one live allocation: an allocated page block
 *     (allocPages, a large kmalloc) or a live slab object of a cache other than the internal sheaf
 *     cache (an allocArray view, a kmalloc object), its end included;
 *   - outside this heap in the same buffer, not over a page that starts with a heap's magic number
 *     (another heap's header).
 * A view of another buffer is anyone's. Reads only, no lock: a block another agent frees meanwhile
 * is the caller's race, as with any use after free.
 */
import { ErrorCode, HeapError, hex } from "./errors.js";
import {
  HEAP_MAGIC,
  H_MAGIC,
  K_FLAGS,
  K_FLAG_SHEAF_CACHE,
  K_OBJS,
  K_SIZE,
  MAX_ORDER,
  O_FREE_TAG,
  PAGE_SHIFT,
  PAGE_SIZE,
  PD_CACHE,
  PD_FLAGS,
  PD_HEAD,
  PG_BUDDY,
  PG_DEFERRED,
  PG_HEAD,
  PG_INHAND,
  PG_LARGE,
  PG_ORDER_MASK,
  PG_ORDER_SHIFT,
  PG_PCP,
  PG_SLAB,
} from "./layout.js";
import type { Mem } from "./mem.js";

function refuse(from: number, to: number, why: string): never {
  throw new HeapError(ErrorCode.EINVAL, `out (bytes ${hex(from)}..${hex(to)} of the heap's buffer) ${why}: it must be another buffer, or lie inside one live allocation of the heap (allocArray, kmalloc, allocPages)`);
}

/** EINVAL, nothing changed, unless writing `count` entries into `out` keeps to the rule above. */
export function checkOutRegion(mem: Mem, out: Uint32Array, count: number): void {
  if (count === 0) return;
  const buf = out.buffer;
  if (buf !== mem.buffer && (mem.memory === null || buf !== mem.memory.buffer)) return;
  mem.refresh();
  const from = out.byteOffset;
  const to = from + count * 4;
  const metaEnd = mem.zoneStart * PAGE_SIZE;
  if (from < metaEnd && to > mem.offset) refuse(from, to, "overlaps this heap's metadata (its header, per-CPU blocks, cache and page descriptors)");
  if (from >= metaEnd && from < mem.size) {
    if (!insideLiveAllocation(mem, from, to)) refuse(from, to, "is not inside one live allocation of this heap (free memory, or allocator metadata)");
    return;
  }
  // Outside this heap: another heap's header in the same buffer.
  for (let page = from & ~(PAGE_SIZE - 1); page < to; page += PAGE_SIZE) {
    if (page + 4 <= buf.byteLength && new Uint32Array(buf, page, 1)[H_MAGIC] === HEAP_MAGIC) refuse(from, to, `overlaps the header of a heap at ${hex(page)}`);
  }
}

/** Do bytes from..to lie in one allocated block or one live object of this heap? */
function insideLiveAllocation(mem: Mem, from: number, to: number): boolean {
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
    // A free object carries the free tag in its first word.
    return to <= obj + size && (u32[obj >>> 2]! | 0) !== ((obj ^ O_FREE_TAG) | 0);
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
