/*
 * The header page as Heap.create and Heap.attach see it: the options create reads into it and
 * the checks attach makes of it (magic, layout version, checksum, geometry) before it trusts it.
 *
 * WORDS: none written here; create (heap.ts) writes the header words (H_*) with plain stores
 *   before any other agent can see the heap, and H_CHECKSUM last with Atomics.store.
 * LOCKS: none.
 * NO LOCK: readGeometry reads H_CHECKSUM and Z_SIZE with Atomics.load, the other H_ words plain.
 * STALE: nothing that matters: the H_ words are read-only once H_CHECKSUM publishes them, and a
 *   Z_SIZE read before another agent's growth only gives a smaller heap, which the views follow
 *   later (core/mem.ts refresh).
 */
import { checkBool, describe, einval, readOptions } from "./core/check.js";
import { ErrorCode, HeapError } from "./core/errors.js";
import { isSharedArrayBuffer } from "./placement.js";
import * as layout from "./core/layout.js";
import type { Geometry } from "./core/layout.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { DEBUG_POISON, DEBUG_REDZONE, DEBUG_TRACK, HEAP_MAGIC, H_CACHE_BYTES, H_CACHE_OFF, H_CHECKSUM, H_CPUS, H_DESC_OFF, H_MAGIC, H_MAX_CACHES, H_NR_PAGES, H_PAGE_SHIFT, H_PCPU_OFF, H_SIZE, H_VERSION, H_ZONE_START, LAYOUT_VERSION, PAGE_SHIFT, PAGE_SIZE, Z_SIZE, computeGeometry, headerChecksum } = layout;

/** The keys Heap.create reads. */
export const CREATE_OPTIONS = ["size", "maxSize", "cpus", "debug", "maxCaches", "noBlock", "faultInjection", "memory", "buffer", "offset"] as const;

export function debugFlags(d: unknown): number {
  if (d === undefined || d === false) return 0;
  if (d === true) return DEBUG_POISON | DEBUG_REDZONE | DEBUG_TRACK;
  if (typeof d !== "object" || d === null) einval(`option debug must be true, false or an object of checks (poison, redzone, track), not ${describe(d)}`);
  const o = readOptions("option debug", d, ["poison", "redzone", "track"]);
  const on = (k: string): boolean => checkBool(`option debug.${k}`, o[k]) === true;
  return (on("poison") ? DEBUG_POISON : 0) | (on("redzone") ? DEBUG_REDZONE : 0) | (on("track") ? DEBUG_TRACK : 0);
}

/**
 * Check the header at byte `base` of a buffer and recompute its geometry; EBADHEAP when anything
 * is off.
 * `inMemory`: the buffer is a WebAssembly.Memory's, read before another agent may have grown it, so a
 * heap end past it is checked by attach against the memory's buffer read after Z_SIZE.
 */
export function readGeometry(buffer: unknown, base: number, inMemory = false): Geometry {
  const bad = (why: string): never => {
    throw new HeapError(ErrorCode.EBADHEAP, `not a shmalloc heap: ${why}`);
  };
  if (!isSharedArrayBuffer(buffer)) bad(`Heap.attach needs the heap's SharedArrayBuffer, not ${describe(buffer)}`);
  const sab = buffer as SharedArrayBuffer;
  if (sab.byteLength < base + PAGE_SIZE) bad(`only ${sab.byteLength} bytes${base !== 0 ? ` (the heap's offset is ${base})` : ""}`);
  const u32 = new Uint32Array(sab, base, 16);
  if (u32[H_MAGIC] !== HEAP_MAGIC) bad("no magic number");
  if (u32[H_VERSION] !== LAYOUT_VERSION) bad(`layout version ${u32[H_VERSION]}, this shmalloc reads version ${LAYOUT_VERSION}`);
  if (Atomics.load(u32, H_CHECKSUM) !== headerChecksum(u32)) bad("header checksum mismatch");
  const maxSize = u32[H_SIZE]!;
  const size = Atomics.load(new Uint32Array(sab, base, PAGE_SIZE >> 2), Z_SIZE);
  if ((!inMemory && sab.byteLength < size) || size < base + PAGE_SIZE || size > base + maxSize) bad(`the buffer holds ${sab.byteLength} bytes, the heap ends at ${size}: truncated`);
  if (u32[H_PAGE_SHIFT] !== PAGE_SHIFT) bad(`page shift ${u32[H_PAGE_SHIFT]}`);
  const g = computeGeometry(maxSize, u32[H_CPUS]!, u32[H_MAX_CACHES]!);
  if (
    g.nrPages !== u32[H_NR_PAGES] ||
    g.zoneStart !== u32[H_ZONE_START] ||
    g.pcpuOff !== u32[H_PCPU_OFF] ||
    g.cacheOff !== u32[H_CACHE_OFF] ||
    g.cacheBytes !== u32[H_CACHE_BYTES] ||
    g.descOff !== u32[H_DESC_OFF]
  ) {
    bad("region offsets do not match the layout");
  }
  return g;
}
