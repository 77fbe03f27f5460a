/*
 * Where a heap lives: a new SharedArrayBuffer, a caller's SharedArrayBuffer, or a shared
 * WebAssembly.Memory, from a page-aligned byte offset upward (Heap.create and Heap.attach).
 *
 * CONTRACT
 *
 *   Nothing here touches a live heap: create resolves the placement before it writes the header,
 *   attach finds the header (at the offset given, else the first page whose magic number and
 *   checksum match) before it claims a slot. The bytes below the offset are never read or written
 *   by the allocator: they stay the caller's (a Wasm module's data and stack).
 *   Every word index and address of the heap is absolute (a byte offset into the buffer), so an
 *   address is also a pointer a Wasm function can take. Offset plus maxSize stays below 2 GiB.
 */
import { checkInt, describe } from "./check.js";
import { ErrorCode, HeapError } from "./errors.js";
import { H_CHECKSUM, H_MAGIC, HEAP_MAGIC, headerChecksum, PAGE_SIZE } from "./layout.js";
import type { WasmMemory } from "./mm.js";

/** The largest end (offset + maxSize) of a heap: addresses stay positive 32-bit integers. */
export const MAX_HEAP_END = 2 ** 31 - PAGE_SIZE;

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

/** Is `m` a WebAssembly.Memory (or an object shaped like one)? */
export function isWasmMemory(m: unknown): m is WasmMemory {
  try {
    return looksLikeWasmMemory(m);
  } catch {
    return false; // a Proxy whose traps throw is not a memory
  }
}

function looksLikeWasmMemory(m: unknown): boolean {
  if (typeof m !== "object" || m === null) return false;
  const wa = (globalThis as { WebAssembly?: { Memory?: new (...a: never[]) => unknown } }).WebAssembly;
  if (wa?.Memory !== undefined && m instanceof wa.Memory) return true;
  return typeof (m as { grow?: unknown }).grow === "function" && "buffer" in m && !(m instanceof SharedArrayBuffer);
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

function whole(name: string, v: unknown, dflt: number, min: number, max: number, tooLarge = ""): number {
  if (v === undefined) return dflt;
  return checkInt(`option ${name}`, v, min, max, "", tooLarge);
}

const TOO_LARGE = `a heap is at most ${MAX_HEAP_END} bytes (2 GiB - 4 KiB), so that every address is a positive 32-bit integer`;

/** Resolve create's size, maxSize, memory, buffer and offset options (EINVAL for bad ones). */
export function resolvePlacement(o: PlacementOptions, defaultSize: number): Placement {
  const { memory, buffer } = o;
  if (memory !== undefined && buffer !== undefined) bad("give either memory (a WebAssembly.Memory) or buffer (a SharedArrayBuffer), not both");
  if (memory === undefined && buffer === undefined) {
    if (o.offset !== undefined) bad("option offset needs a memory or a buffer to place the heap in");
    const size = pagesUp(whole("size", o.size, defaultSize, PAGE_SIZE, MAX_HEAP_END, TOO_LARGE));
    const maxSize = pagesUp(whole("maxSize", o.maxSize, size, size, MAX_HEAP_END, TOO_LARGE));
    const sab =
      maxSize > size
        ? new (SharedArrayBuffer as unknown as new (n: number, x: { maxByteLength: number }) => SharedArrayBuffer)(size, { maxByteLength: maxSize })
        : new SharedArrayBuffer(size);
    return { buffer: sab, memory: null, offset: 0, size, maxSize };
  }
  let sab: SharedArrayBuffer;
  let mem: WasmMemory | null = null;
  if (memory !== undefined) {
    if (!isWasmMemory(memory)) bad("memory must be a WebAssembly.Memory");
    mem = memory as WasmMemory;
    if (!(mem.buffer instanceof SharedArrayBuffer)) {
      bad("memory must be shared: new WebAssembly.Memory({ initial, maximum, shared: true }) (a Wasm module: its memory declared shared)");
    }
    sab = mem.buffer as SharedArrayBuffer;
  } else {
    if (!(buffer instanceof SharedArrayBuffer)) bad(`buffer must be a SharedArrayBuffer, not ${describe(buffer)}`);
    sab = buffer as SharedArrayBuffer;
  }
  const offset = whole("offset", o.offset, 0, 0, MAX_HEAP_END - PAGE_SIZE);
  if (offset % PAGE_SIZE !== 0) bad(`offset ${offset} is not a multiple of the page size ${PAGE_SIZE}`);
  if (offset >= sab.byteLength) bad(`offset ${offset} is not below the buffer's ${sab.byteLength} bytes`);
  const room = Math.floor((sab.byteLength - offset) / PAGE_SIZE) * PAGE_SIZE;
  const size = whole("size", o.size, room, PAGE_SIZE, room);
  if (size % PAGE_SIZE !== 0) bad(`size ${size} is not a multiple of the page size ${PAGE_SIZE}`);
  let limit = MAX_HEAP_END - offset;
  if (mem === null) {
    const g = sab as unknown as { growable?: boolean; maxByteLength?: number };
    limit = Math.min(limit, Math.floor(((g.growable === true ? g.maxByteLength ?? sab.byteLength : sab.byteLength) - offset) / PAGE_SIZE) * PAGE_SIZE);
  }
  if (offset + size > MAX_HEAP_END) bad(`offset ${offset} + size ${size} passes the largest heap end, ${MAX_HEAP_END}`);
  const maxSize = whole("maxSize", o.maxSize, size, size, Math.max(size, limit));
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
  if (!isSharedArrayBuffer(sab)) return notHeap(memory !== null ? "the memory is not shared" : `Heap.attach needs the heap's SharedArrayBuffer or shared WebAssembly.Memory, not ${describe(target)}`);
  const buf = sab as SharedArrayBuffer;
  if (offset !== undefined) {
    if (typeof offset !== "number" || !Number.isInteger(offset) || offset < 0 || offset % PAGE_SIZE !== 0) {
      throw new HeapError(ErrorCode.EINVAL, `option offset must be a page-aligned whole number, not ${String(offset)}`);
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

/** `v instanceof SharedArrayBuffer`, false for a Proxy whose getPrototypeOf trap throws. */
function isSharedArrayBuffer(v: unknown): v is SharedArrayBuffer {
  try {
    return v instanceof SharedArrayBuffer;
  } catch {
    return false;
  }
}
