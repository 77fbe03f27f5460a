/*
 * Typed views and strings on heap allocations (heap.allocArray, freeArray, allocString, readString).
 * An array is one kmalloc allocation (every kmalloc address is 8-byte aligned, so every element
 * type gets its alignment), a string is one kmalloc allocation in the format below. The scratch
 * buffer is this agent's own, non-shared memory: Chrome's TextEncoder.encodeInto and
 * TextDecoder.decode refuse views of shared memory, so text is encoded into it and copied into the
 * heap, and copied out of the heap into it to be decoded.
 *
 * String format (allocString): at address A, a 32-bit little-endian byte length L (heap.u32[A >> 2]),
 * then L bytes of UTF-8 at A + 4, then one 0 byte. So C reads a NUL-terminated string at A + 4,
 * Rust a byte slice (A + 4, L); free it with kfree(A).
 *
 * WORDS: C_VIEW_PROBE of this handle's slot, written by the slot's handle alone (Atomics.store in
 *   freeArray's same-memory probe, read back with Atomics.load through the other buffer); the
 *   bytes of the caller's own allocations. No other state of its own in the heap.
 * LOCKS: none of its own: everything goes through the handle's public calls (kmalloc, kfree,
 *   ksize), so the locking is theirs.
 * NO LOCK: the probe, the copies into and out of an allocation.
 * STALE: nothing of the allocator's: the bytes of an allocation are its owner's to order.
 */
import { describe } from "./core/check.js";
import { ErrorCode, HeapError, hex } from "./core/errors.js";
import * as layout from "./core/layout.js";
import { aliasesMemory } from "./core/out_region.js";
import type { Mem } from "./core/mem.js";
import { KMALLOC_MAX_SIZE } from "./slab/slab.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { MAX_HEAP_END } = layout;

/** Bytes before a string's UTF-8: its length. */
export const STRING_HEADER = 4;

/** What of the heap these helpers use: the slab layer's calls. */
export interface ViewHost {
  readonly mem: Mem;
  readonly offset: number;
  readonly u8: Uint8Array;
  readonly u32: Uint32Array;
  kmalloc(size: number, gfp?: number): number;
  kfree(addr: number): void;
  ksize(addr: number): number;
  /** Whether slab object `addr` is free (readString's message). */
  freedObject(addr: number): boolean;
  /** EDETACHED first, before any argument is looked at. */
  readonly locks: { assertLive(): void };
}

/** A typed-array constructor: Int8Array ... BigUint64Array (Float16Array where it exists). */
export type TypedArrayConstructor =
  | Int8ArrayConstructor
  | Uint8ArrayConstructor
  | Uint8ClampedArrayConstructor
  | Int16ArrayConstructor
  | Uint16ArrayConstructor
  | Int32ArrayConstructor
  | Uint32ArrayConstructor
  | Float32ArrayConstructor
  | Float64ArrayConstructor
  | BigInt64ArrayConstructor
  | BigUint64ArrayConstructor;

const CONSTRUCTORS: ReadonlySet<unknown> = new Set<unknown>(
  [
    Int8Array,
    Uint8Array,
    Uint8ClampedArray,
    Int16Array,
    Uint16Array,
    Int32Array,
    Uint32Array,
    Float32Array,
    Float64Array,
    BigInt64Array,
    BigUint64Array,
    (globalThis as { Float16Array?: unknown }).Float16Array,
  ].filter((c) => c !== undefined),
);

/** The most elements one allocArray may ask for (the heap's addresses stay below 2 GiB). */
const MAX_ARRAY_BYTES = MAX_HEAP_END;

/** What allocArray was given instead of a typed-array constructor: a function by its name. */
function ctorName(v: unknown): string {
  if (typeof v !== "function") return describe(v);
  let name = "";
  try {
    name = String((v as { name?: unknown }).name ?? "");
  } catch {
    // A throwing name getter: say only that it is a function.
  }
  return name !== "" ? `${name} (a function that is not a typed-array constructor)` : "a function that is not a typed-array constructor";
}

/** heap.allocArray: a view of `n` elements over a new allocation, or null when memory ran out. */
export function allocArray<C extends TypedArrayConstructor>(h: ViewHost, Ctor: C, n: number, gfp: number): InstanceType<C> | null {
  h.locks.assertLive();
  if (!CONSTRUCTORS.has(Ctor)) {
    throw new HeapError(ErrorCode.EINVAL, `allocArray: Ctor must be a typed-array constructor (Float64Array, Int32Array, BigInt64Array, ...), not ${ctorName(Ctor)}`);
  }
  const each = (Ctor as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT;
  const most = Math.floor(KMALLOC_MAX_SIZE / each);
  if (typeof n !== "number" || !Number.isInteger(n) || n < 1) {
    throw new HeapError(ErrorCode.EINVAL, `allocArray: n, the length, must be a whole number of elements in 1..${most}, not ${describe(n)}`);
  }
  if (n > most) {
    throw new HeapError(ErrorCode.EINVAL, `allocArray: n ${n} is too large: ${n} elements of ${Ctor.name} are ${n * each} bytes, and the largest allocation is ${KMALLOC_MAX_SIZE} bytes (${most} elements)`);
  }
  const addr = h.kmalloc(n * each, gfp);
  if (addr === 0) return null;
  return new (Ctor as unknown as new (b: ArrayBufferLike, o: number, l: number) => InstanceType<C>)(h.mem.buffer, addr, n);
}

/*
 * The typed-array intrinsics, read through %TypedArray%.prototype's own getters: a subclass or an
 * object that only looks like a view cannot answer for them, and a Proxy, a DataView or anything
 * else that is not a typed array gets undefined from the tag getter without running its code.
 */
const TYPED_ARRAY_PROTO = Object.getPrototypeOf(Int8Array.prototype) as object;
function intrinsicGetter(name: PropertyKey): (this: unknown) => unknown {
  return Object.getOwnPropertyDescriptor(TYPED_ARRAY_PROTO, name)!.get! as (this: unknown) => unknown;
}
const taTag = intrinsicGetter(Symbol.toStringTag);
const taBuffer = intrinsicGetter("buffer");
const taByteOffset = intrinsicGetter("byteOffset");
const taByteLength = intrinsicGetter("byteLength");

/**
 * heap.freeArray: free the allocation under a view that allocArray returned (in any agent).
 * The view must be over this heap's memory (core/out_region.ts aliasesMemory).
 */
export function freeArray(h: ViewHost, view: unknown): void {
  h.locks.assertLive();
  if (taTag.call(view) === undefined) throw new HeapError(ErrorCode.EINVAL, `freeArray needs a typed array from allocArray, not ${describe(view)}`);
  const buf = taBuffer.call(view) as ArrayBufferLike;
  if (!aliasesMemory(h.mem, buf)) throw new HeapError(ErrorCode.EINVAL, `freeArray: this view (${describe(view)}) is not a view of this heap's memory (another heap's, a copy's, or another buffer's)`);
  const addr = taByteOffset.call(view) as number;
  const bytes = taByteLength.call(view) as number;
  // ksize throws EINVAL (or EDOUBLEFREE) unless addr starts a live allocation: said as freeArray's.
  let usable: number;
  try {
    usable = h.ksize(addr);
  } catch (e) {
    if (e instanceof HeapError && e.code === ErrorCode.EINVAL) {
      throw new HeapError(ErrorCode.EINVAL, `freeArray: this view (a ${String(taTag.call(view))} of ${bytes} bytes at ${hex(addr)}) does not start an allocation from allocArray (a subarray or a view of part of one?): ${e.message.replace(/^EINVAL: /, "")}`);
    }
    throw e;
  }
  if (bytes > usable) {
    throw new HeapError(ErrorCode.EINVAL, `freeArray: the view at ${hex(addr)} is ${bytes} bytes long, the allocation there ${usable}: not a view from allocArray`);
  }
  h.kfree(addr);
}

/* ------------------------------------------------------------------------- strings */

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8");
/** This agent's scratch buffer (not shared), grown on demand; kept up to SCRATCH_KEEP bytes. */
let scratch = new Uint8Array(256);
const SCRATCH_KEEP = 1 << 16;

function scratchOf(bytes: number): Uint8Array {
  if (scratch.length >= bytes) return scratch;
  const s = new Uint8Array(Math.max(bytes, scratch.length * 2));
  if (s.length <= SCRATCH_KEEP) scratch = s;
  return s;
}

/** heap.allocString: `s` as length + UTF-8 + NUL in a new allocation; its address, or 0 when memory ran out. */
export function allocString(h: ViewHost, s: unknown, gfp: number): number {
  h.locks.assertLive();
  if (typeof s !== "string") throw new HeapError(ErrorCode.EINVAL, `allocString needs a string, not ${describe(s)}`);
  // UTF-8 takes at most 3 bytes per UTF-16 code unit.
  if (s.length * 3 > MAX_ARRAY_BYTES - STRING_HEADER - 1) throw new HeapError(ErrorCode.EINVAL, `allocString: a string of ${s.length} code units is too long for a heap`);
  const buf = scratchOf(s.length * 3);
  const { written } = encoder.encodeInto(s, buf);
  const addr = h.kmalloc(STRING_HEADER + written + 1, gfp);
  if (addr === 0) return 0;
  h.u32[addr >>> 2] = written;
  const u8 = h.u8;
  u8.set(buf.subarray(0, written), addr + STRING_HEADER);
  u8[addr + STRING_HEADER + written] = 0;
  return addr;
}

/** heap.readString: the string allocString stored at `addr` (any agent may have written it). */
export function readString(h: ViewHost, addr: unknown): string {
  h.locks.assertLive();
  if (typeof addr !== "number") throw new HeapError(ErrorCode.EINVAL, `readString needs an address from allocString, not ${describe(addr)}`);
  const usable = h.ksize(addr); // EINVAL unless addr starts an allocation
  if ((addr & 3) !== 0 || usable < STRING_HEADER + 1) {
    throw new HeapError(ErrorCode.EINVAL, `readString: ${hex(addr)} is not a string from allocString (an allocation of ${usable} bytes, too small for the length word and the NUL)`);
  }
  const len = h.u32[addr >>> 2]!;
  if (STRING_HEADER + len + 1 > usable || h.u8[addr + STRING_HEADER + len] !== 0) {
    // A freed object's first word is the free tag, never a length that fits: only here is it asked.
    if (h.freedObject(addr)) throw new HeapError(ErrorCode.EINVAL, `readString: ${hex(addr)} is not a live allocation: it was freed`);
    throw new HeapError(ErrorCode.EINVAL, `readString: ${hex(addr)} is not a string from allocString (length word ${len}, allocation of ${usable} bytes)`);
  }
  const buf = scratchOf(len);
  buf.set(h.u8.subarray(addr + STRING_HEADER, addr + STRING_HEADER + len));
  return decoder.decode(buf.subarray(0, len));
}
