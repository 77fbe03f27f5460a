/*
 * Where a heap lives: a new SharedArrayBuffer, a caller's SharedArrayBuffer, or a shared
 * WebAssembly.Memory, from a page-aligned byte offset upward (Heap.create and Heap.attach).
 * Every word index and address of the heap is absolute (a byte offset into the buffer), so an
 * address is also a pointer a Wasm function can take. Offset plus maxSize stays below 2 GiB.
 *
 * WORDS: none written. Nothing here touches a live heap: create resolves the placement before it
 *   writes the header, attach finds the header (at the offset given, else the first page whose
 *   magic number and checksum match) before it claims a slot. The bytes below the offset are
 *   never read or written by the allocator: they stay the caller's (a Wasm module's data and stack).
 * LOCKS: none.
 * NO LOCK: the header search (H_CHECKSUM with Atomics.load, the other header words plain) and
 *   assertNoLiveHeap's look at each slot's C_STATE (Atomics.load).
 * STALE: C_STATE of the slots may change right after the look (an agent attaches): create's
 *   EBUSY check is a guard against wiping a heap in use, not a lock; a caller that creates over a
 *   heap whose agents attach at the same time has lost the region anyway.
 */
import { describe, intOption } from "./core/check.js";
import { ErrorCode, HeapError } from "./core/errors.js";
import * as layout from "./core/layout.js";
import type { WasmMemory } from "./core/lock.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { C_STATE, C_STATE_FREE, C_WORDS, HEAP_MAGIC, H_CHECKSUM, H_CPUS, H_MAGIC, H_PCPU_OFF, H_SIZE, MAX_HEAP_END, PAGE_SIZE, headerChecksum } = layout;

/** The largest end (offset + maxSize) of a heap: addresses stay positive 32-bit integers. */
export { MAX_HEAP_END };

/** Thrown where SharedArrayBuffer does not exist: a page that is not cross-origin isolated. */
export function noSharedMemory(): HeapError {
  return new HeapError(
    ErrorCode.ENOSHARED,
    "SharedArrayBuffer is not available here: a browser gives it only to cross-origin isolated pages. " +
      "Serve the page with the headers Cross-Origin-Opener-Policy: same-origin and " +
      "Cross-Origin-Embedder-Policy: require-corp (or credentialless); self.crossOriginIsolated is then true",
  );
}

/** Throw ENOSHARED where this agent has no SharedArrayBuffer. */
export function assertSharedMemory(): void {
  if (typeof SharedArrayBuffer === "undefined") throw noSharedMemory();
}

/**
 * Is `m` a WebAssembly.Memory? Its own buffer getter answers (it throws for anything else: a Proxy
 * of a Memory, an object shaped like one), so no code of the caller's runs.
 */
export function isWasmMemory(m: unknown): m is WasmMemory {
  const wa = (globalThis as { WebAssembly?: { Memory?: { prototype: object } } }).WebAssembly;
  const get = wa?.Memory !== undefined ? Object.getOwnPropertyDescriptor(wa.Memory.prototype, "buffer")?.get : undefined;
  if (get === undefined) return false;
  try {
    get.call(m);
    return true;
  } catch {
    return false;
  }
}

/** A (non-shared) ArrayBuffer: a brand check that runs no code of `v`'s (a Proxy's traps). */
function isArrayBuffer(v: unknown): boolean {
  const get = Object.getOwnPropertyDescriptor(ArrayBuffer.prototype, "byteLength")!.get!;
  try {
    get.call(v);
    return true;
  } catch {
    return false;
  }
}

/** Is `v` a SharedArrayBuffer (growable or not)? Its own byteLength getter, which throws for anything else (a Proxy of one too). */
export function isSharedArrayBuffer(v: unknown): v is SharedArrayBuffer {
  if (typeof SharedArrayBuffer === "undefined") return false;
  const get = Object.getOwnPropertyDescriptor(SharedArrayBuffer.prototype, "byteLength")!.get!;
  try {
    get.call(v);
    return true;
  } catch {
    return false;
  }
}

/** A resolved placement for Heap.create. */
export interface Placement {
  readonly buffer: SharedArrayBuffer;
  readonly memory: WasmMemory | null;
  readonly offset: number;
  /** Bytes managed now and at most (from offset). */
  readonly size: number;
  readonly maxSize: number;
}

export interface PlacementOptions {
  size?: number;
  maxSize?: number;
  memory?: unknown;
  buffer?: unknown;
  offset?: unknown;
}

function bad(msg: string): never {
  throw new HeapError(ErrorCode.EINVAL, msg);
}

function pagesUp(n: number): number {
  return Math.ceil(n / PAGE_SIZE) * PAGE_SIZE;
}

const TOO_LARGE = `a heap is at most ${MAX_HEAP_END} bytes (2 GiB - 4 KiB), so that every address is a positive 32-bit integer`;

/** Resolve create's size, maxSize, memory, buffer and offset options (EINVAL for bad ones). */
export function resolvePlacement(o: PlacementOptions, defaultSize: number): Placement {
  const { memory, buffer } = o;
  if (memory !== undefined && buffer !== undefined) bad("give either memory (a WebAssembly.Memory) or buffer (a SharedArrayBuffer), not both");
  if (memory === undefined && buffer === undefined) {
    if (o.offset !== undefined) bad("option offset needs a memory or a buffer to place the heap in");
    const size = pagesUp(intOption("size", o.size, defaultSize, PAGE_SIZE, MAX_HEAP_END, TOO_LARGE));
    const maxSize = pagesUp(intOption("maxSize", o.maxSize, size, size, MAX_HEAP_END, TOO_LARGE));
    const sab =
      maxSize > size
        ? new (SharedArrayBuffer as unknown as new (n: number, x: { maxByteLength: number }) => SharedArrayBuffer)(size, { maxByteLength: maxSize })
        : new SharedArrayBuffer(size);
    return { buffer: sab, memory: null, offset: 0, size, maxSize };
  }
  let sab: SharedArrayBuffer;
  let mem: WasmMemory | null = null;
  if (memory !== undefined) {
    if (!isWasmMemory(memory)) bad(`memory must be a WebAssembly.Memory, not ${describe(memory)}`);
    mem = memory as WasmMemory;
    if (!isSharedArrayBuffer(mem.buffer)) {
      bad("memory must be shared: new WebAssembly.Memory({ initial, maximum, shared: true }) (a Wasm module: its memory declared shared)");
    }
    sab = mem.buffer as SharedArrayBuffer;
  } else {
    if (!isSharedArrayBuffer(buffer)) bad(`buffer must be a SharedArrayBuffer, not ${describe(buffer)}`);
    sab = buffer as SharedArrayBuffer;
  }
  const offset = intOption("offset", o.offset, 0, 0, MAX_HEAP_END - PAGE_SIZE);
  if (offset % PAGE_SIZE !== 0) bad(`offset ${offset} is not a multiple of the page size ${PAGE_SIZE}`);
  if (offset >= sab.byteLength) bad(`offset ${offset} is not below the buffer's ${sab.byteLength} bytes`);
  const room = Math.floor((sab.byteLength - offset) / PAGE_SIZE) * PAGE_SIZE;
  const size = intOption("size", o.size, room, PAGE_SIZE, room);
  if (size % PAGE_SIZE !== 0) bad(`size ${size} is not a multiple of the page size ${PAGE_SIZE}`);
  let limit = MAX_HEAP_END - offset;
  if (mem === null) {
    const g = sab as unknown as { growable?: boolean; maxByteLength?: number };
    limit = Math.min(limit, Math.floor(((g.growable === true ? g.maxByteLength ?? sab.byteLength : sab.byteLength) - offset) / PAGE_SIZE) * PAGE_SIZE);
  }
  if (offset + size > MAX_HEAP_END) bad(`offset ${offset} + size ${size} passes the largest heap end, ${MAX_HEAP_END}`);
  const maxSize = intOption("maxSize", o.maxSize, size, size, Math.max(size, limit));
  if (maxSize % PAGE_SIZE !== 0) bad(`maxSize ${maxSize} is not a multiple of the page size ${PAGE_SIZE}`);
  return { buffer: sab, memory: mem, offset, size, maxSize };
}

/**
 * For attach: the buffer and memory of `target`, and the offset of the heap's header (the one
 * given, else the first page-aligned offset whose magic number and checksum match).
 */
export function locateHeap(target: unknown, offset: unknown): { buffer: SharedArrayBuffer; memory: WasmMemory | null; offset: number } {
  const notHeap = (why: string): never => {
    throw new HeapError(ErrorCode.EBADHEAP, `not a shmalloc heap: ${why}`);
  };
  let memory: WasmMemory | null = null;
  let sab: unknown = target;
  if (isWasmMemory(target)) {
    memory = target;
    sab = target.buffer;
  }
  // A wrong type is EINVAL (the misuse table); a buffer or memory that holds no heap is EBADHEAP.
  if (memory === null && !isSharedArrayBuffer(sab) && !isArrayBuffer(sab)) {
    throw new HeapError(ErrorCode.EINVAL, `Heap.attach needs the heap's SharedArrayBuffer or shared WebAssembly.Memory, not ${describe(target)}`);
  }
  if (!isSharedArrayBuffer(sab)) return notHeap(memory !== null ? "the memory is not shared" : `Heap.attach needs the heap's SharedArrayBuffer or shared WebAssembly.Memory, not ${describe(target)}`);
  const buf = sab as SharedArrayBuffer;
  if (offset !== undefined) {
    if (typeof offset !== "number" || !Number.isInteger(offset) || offset < 0 || offset % PAGE_SIZE !== 0) {
      throw new HeapError(ErrorCode.EINVAL, `option offset must be a page-aligned whole number, not ${describe(offset)}`);
    }
    return { buffer: buf, memory, offset };
  }
  const pages = Math.floor(buf.byteLength / PAGE_SIZE);
  if (pages === 0) return notHeap(`only ${buf.byteLength} bytes`);
  const u32 = new Uint32Array(buf, 0, pages * (PAGE_SIZE >> 2));
  for (let p = 0; p < pages; p++) {
    const w = p * (PAGE_SIZE >> 2);
    if (u32[w + H_MAGIC] !== HEAP_MAGIC) continue;
    if (Atomics.load(u32, w + H_CHECKSUM) === headerChecksum(u32.subarray(w, w + 16))) return { buffer: buf, memory, offset: p * PAGE_SIZE };
  }
  // No header anywhere: let readGeometry say what is wrong with the first page.
  return { buffer: buf, memory, offset: 0 };
}

/**
 * Heap.create in a caller's buffer or memory: EBUSY when the region [offset, offset + maxSize)
 * overlaps a heap that is in use, one whose header (magic number and checksum) is valid and which has
 * a slot that is not free (attached, being reclaimed, or dead). Creating there would wipe a live
 * heap under its agents. A heap whose slots are all free (every agent detached) may be replaced;
 * to reuse the region of a heap whose agents died, zero its header page first.
 */
export function assertNoLiveHeap(buf: SharedArrayBuffer, offset: number, maxSize: number): void {
  const pages = Math.floor(buf.byteLength / PAGE_SIZE);
  if (pages === 0) return;
  const u32 = new Uint32Array(buf, 0, pages * (PAGE_SIZE >> 2));
  const end = offset + maxSize;
  for (let p = 0; p < pages && p * PAGE_SIZE < end; p++) {
    const w = p * (PAGE_SIZE >> 2);
    if (u32[w + H_MAGIC] !== HEAP_MAGIC) continue;
    if (Atomics.load(u32, w + H_CHECKSUM) !== headerChecksum(u32.subarray(w, w + 16))) continue;
    const at = p * PAGE_SIZE;
    if (at + u32[w + H_SIZE]! <= offset) continue;
    const cpus = u32[w + H_CPUS]!;
    const c0 = (at + u32[w + H_PCPU_OFF]!) >>> 2;
    let inUse = 0;
    for (let cpu = 0; cpu < cpus; cpu++) {
      const cw = c0 + cpu * C_WORDS + C_STATE;
      if (cw < u32.length && Atomics.load(u32, cw) !== C_STATE_FREE) inUse++;
    }
    if (inUse !== 0) {
      throw new HeapError(
        ErrorCode.EBUSY,
        `Heap.create would overwrite a heap in use: the heap at offset ${at} (${u32[w + H_SIZE]} bytes at most) overlaps bytes ${offset}..${end} ` +
          `and has ${inUse} attached slot${inUse === 1 ? "" : "s"}; attach to it with Heap.attach, or place the new heap elsewhere (its agents must detach first)`,
      );
    }
  }
}
