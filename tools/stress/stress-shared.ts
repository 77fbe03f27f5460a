/*
 * Pieces shared by the stress command (stress.ts) and its workers (stress-worker.ts): the seeded
 * generator, block signatures, the cross-worker rings, the RCU-published table and the control
 * words, plus the shape of what a worker reports.
 */
import type { Heap } from "../../src/index.js";

/* ------------------------------------------------------------------ seeded generator */

/** Mix two 32-bit values into one well-spread 32-bit value (murmur3's finaliser). */
export function mix32(a: number, b: number): number {
  let z = (a ^ Math.imul(b + 0x632be5ab, 0x9e3779b9)) | 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** The workers' generator: one stream per (seed, stream). */
export { Prng as Rng } from "../../test/support/common.js";

/* ------------------------------------------------------------------ signatures */

const SIG_MUL = 0x9e3779b1 | 0;

/**
 * Write the signature of `tag` over `size` bytes at `addr`: word k holds tag ^ (k + 1) * golden,
 * the trailing bytes of a size that is not a multiple of 4 hold bytes of the tag. A block whose
 * address or contents moved, or that another owner wrote, no longer matches.
 */
export function sign(heap: Heap, addr: number, size: number, tag: number): void {
  const i32 = heap.i32;
  const w0 = addr >>> 2;
  const words = size >>> 2;
  const t = tag | 0;
  for (let k = 0; k < words; k++) i32[w0 + k] = t ^ Math.imul(k + 1, SIG_MUL);
  const u8 = heap.u8;
  for (let j = words << 2; j < size; j++) u8[addr + j] = ((t >>> ((j & 3) << 3)) ^ 0xa5) & 0xff;
}

/** Byte offset of the first byte that differs from the signature of `tag`, or -1. */
export function verify(heap: Heap, addr: number, size: number, tag: number): number {
  const i32 = heap.i32;
  const w0 = addr >>> 2;
  const words = size >>> 2;
  const t = tag | 0;
  for (let k = 0; k < words; k++) {
    if (i32[w0 + k] !== (t ^ Math.imul(k + 1, SIG_MUL))) {
      const u8 = heap.u8;
      const want = t ^ Math.imul(k + 1, SIG_MUL);
      for (let j = 0; j < 4; j++) if (u8[addr + (k << 2) + j] !== ((want >>> (j << 3)) & 0xff)) return (k << 2) + j;
      return k << 2;
    }
  }
  const u8 = heap.u8;
  for (let j = words << 2; j < size; j++) if (u8[addr + j] !== (((t >>> ((j & 3) << 3)) ^ 0xa5) & 0xff)) return j;
  return -1;
}

/** The byte the signature of `tag` expects at offset `off`. */
export function expectedByte(tag: number, off: number, size: number): number {
  const t = tag | 0;
  if (off < (size & ~3)) return ((t ^ Math.imul((off >>> 2) + 1, SIG_MUL)) >>> ((off & 3) << 3)) & 0xff;
  return ((t >>> ((off & 3) << 3)) ^ 0xa5) & 0xff;
}

/** Offset of the first non-zero byte in [addr, addr + size), or -1. */
export function firstNonZero(heap: Heap, addr: number, size: number): number {
  const i32 = heap.i32;
  const w0 = addr >>> 2;
  const words = size >>> 2;
  for (let k = 0; k < words; k++) {
    if (i32[w0 + k] !== 0) {
      for (let j = 0; j < 4; j++) if (heap.u8[addr + (k << 2) + j] !== 0) return (k << 2) + j;
    }
  }
  for (let j = words << 2; j < size; j++) if (heap.u8[addr + j] !== 0) return j;
  return -1;
}

/** Sixteen bytes around `off` as hex, for failure reports. */
export function dumpAround(heap: Heap, addr: number, off: number, size: number): string {
  const from = Math.max(0, (off & ~7) - 8);
  const to = Math.min(size, from + 24);
  const parts: string[] = [];
  for (let j = from; j < to; j++) parts.push(heap.u8[addr + j]!.toString(16).padStart(2, "0"));
  return `bytes ${from}..${to - 1}: ${parts.join(" ")}`;
}

export function hex(n: number): string {
  return "0x" + (n >>> 0).toString(16);
}

/* ------------------------------------------------------------------ control words */

/** Index of the stop word in the control array: set by the main thread at the end or on a failure. */
export const CTL_STOP = 0;
/** Set by the first agent that records a failure. */
export const CTL_FAILED = 1;
/** Workers that finished their cleanup. */
export const CTL_DONE = 2;
export const CTL_WORDS = 16;

/** Control buffer: CTL_WORDS Int32 words, then one Float64 progress counter (ops) per worker. */
export function controlBytes(workers: number): number {
  return CTL_WORDS * 4 + workers * 8;
}

export function progressView(ctrl: SharedArrayBuffer, workers: number): Float64Array {
  return new Float64Array(ctrl, CTL_WORDS * 4, workers);
}

/* ------------------------------------------------------------------ cross-worker rings */

/** What a ring entry holds. */
export const XKIND_KMALLOC = 1;
export const XKIND_NOLOCK = 2;
export const XKIND_PAGES = 3;

const RING_CAP = 256;
const RING_HDR = 8; // lock, head, tail, pushed, popped, pad
const ENTRY_WORDS = 4; // addr, kind | sender << 8, size or order, tag
const RING_WORDS = RING_HDR + RING_CAP * ENTRY_WORDS;

/**
 * One inbox per worker in its own SharedArrayBuffer (not the heap): any worker pushes blocks it
 * hands over, the owner pops them. A tiny spinlock guards each inbox; it is held for a handful of
 * plain stores and never across a heap call.
 */
export class Rings {
  readonly i32: Int32Array;
  readonly count: number;

  constructor(readonly buffer: SharedArrayBuffer) {
    this.i32 = new Int32Array(buffer);
    this.count = Math.floor(this.i32.length / RING_WORDS);
  }

  static bytes(workers: number): number {
    return workers * RING_WORDS * 4;
  }

  private lock(base: number): void {
    const i32 = this.i32;
    for (let spins = 0; Atomics.compareExchange(i32, base, 0, 1) !== 0; spins++) {
      if (spins > 64) Atomics.wait(i32, base, 1, 0.2);
    }
  }

  private unlock(base: number): void {
    Atomics.store(this.i32, base, 0);
  }

  /** Append an entry to inbox `ring`; false when it is full. */
  push(ring: number, addr: number, kind: number, sender: number, size: number, tag: number): boolean {
    const base = ring * RING_WORDS;
    const i32 = this.i32;
    this.lock(base);
    try {
      const head = i32[base + 1]!;
      const tail = i32[base + 2]!;
      if (tail - head >= RING_CAP) return false;
      const e = base + RING_HDR + (tail % RING_CAP) * ENTRY_WORDS;
      i32[e] = addr;
      i32[e + 1] = kind | (sender << 8);
      i32[e + 2] = size;
      i32[e + 3] = tag;
      i32[base + 2] = tail + 1;
      i32[base + 3] = i32[base + 3]! + 1;
      return true;
    } finally {
      this.unlock(base);
    }
  }

  /** Take the oldest entry of inbox `ring` into out[0..4): addr, kind, size, tag (sender in kind >> 8). */
  pop(ring: number, out: Int32Array): boolean {
    const base = ring * RING_WORDS;
    const i32 = this.i32;
    this.lock(base);
    try {
      const head = i32[base + 1]!;
      if (i32[base + 2] === head) return false;
      const e = base + RING_HDR + (head % RING_CAP) * ENTRY_WORDS;
      out[0] = i32[e]!;
      out[1] = i32[e + 1]!;
      out[2] = i32[e + 2]!;
      out[3] = i32[e + 3]!;
      i32[base + 1] = head + 1;
      i32[base + 4] = i32[base + 4]! + 1;
      return true;
    } finally {
      this.unlock(base);
    }
  }

  /** Entries waiting in inbox `ring` (a hint while others push). */
  pending(ring: number): number {
    const base = ring * RING_WORDS;
    return Atomics.load(this.i32, base + 2) - Atomics.load(this.i32, base + 1);
  }
}

/* ------------------------------------------------------------------ RCU-published table */

/** Slots of the table that writers replace (kfreeRcu of the old object) and readers verify. */
export const RCU_SLOTS = 64;

export function rcuTableBytes(): number {
  return RCU_SLOTS * 8;
}

/** Size of an RCU-published object, a function of its tag so a reader can verify it whole. */
export function rcuObjectSize(tag: number): number {
  return 16 + ((tag >>> 7) % 1009);
}

export function packRcu(addr: number, tag: number): bigint {
  return (BigInt(addr >>> 0) << 32n) | BigInt(tag >>> 0);
}

export function unpackRcu(v: bigint): { addr: number; tag: number } {
  return { addr: Number(v >> 32n), tag: Number(v & 0xffffffffn) | 0 };
}

/* ------------------------------------------------------------------ worker setup and report */

export interface WorkerConfig {
  index: number;
  workers: number;
  seed: number;
  heap: SharedArrayBuffer;
  ctrl: SharedArrayBuffer;
  rings: SharedArrayBuffer;
  rcu: SharedArrayBuffer;
  /** Bytes this worker may hold at once (soft budget). */
  budget: number;
  debug: boolean;
  /** Attach as an agent that must never block (spins instead of Atomics.wait), like a browser's main thread. */
  noBlock: boolean;
}

export interface WorkerCounters {
  ops: number;
  allocs: number;
  frees: number;
  /** Blocks this worker received from another and freed (cross-worker frees). */
  xfrees: number;
  /** Blocks handed to another worker. */
  xsent: number;
  nolockCalls: number;
  nolockFails: number;
  kfreeRcu: number;
  /** kfreeRcu calls refused with EDEADLK inside a read-side section (queued again after it). */
  rcuRefused: number;
  cachesCreated: number;
  cachesDestroyed: number;
  /** destroy() refused with EBUSY while objects were live, as expected. */
  expectedBusy: number;
  allocFails: number;
  hookCalls: number;
  rcuReads: number;
  rcuPublished: number;
  synchronizeRcu: number;
  rcuBarrier: number;
  bytesVerified: number;
}

export function zeroCounters(): WorkerCounters {
  return {
    ops: 0,
    allocs: 0,
    frees: 0,
    xfrees: 0,
    xsent: 0,
    nolockCalls: 0,
    nolockFails: 0,
    kfreeRcu: 0,
    rcuRefused: 0,
    cachesCreated: 0,
    cachesDestroyed: 0,
    expectedBusy: 0,
    allocFails: 0,
    hookCalls: 0,
    rcuReads: 0,
    rcuPublished: 0,
    synchronizeRcu: 0,
    rcuBarrier: 0,
    bytesVerified: 0,
  };
}

/** Messages a worker posts to the main thread. */
export type WorkerMessage =
  | { type: "attached"; index: number; cpu: number }
  | { type: "fail"; index: number; message: string }
  | { type: "done"; index: number; cpu: number; counters: WorkerCounters; detached: boolean };

/** Which workers attach with noBlock: every third one. */
export function isNoBlockWorker(index: number): boolean {
  return index % 3 === 2;
}
