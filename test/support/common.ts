/*
 * What the tests, the demo and stress command, and the benchmarks share: one seeded generator
 * (sfc32 seeded through splitmix32, one stream per agent), the block signature scheme, the
 * shared ring that hands blocks from one agent to another, and the error-code helper.
 *
 * Nothing here waits without a deadline.
 */
import { HeapError } from "../../src/index.js";

/* ================================================================= error codes */

/** The code of the HeapError `fn` throws, or "no error"; anything else thrown is rethrown. */
export function errCode(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof HeapError) return e.code;
    throw e;
  }
  return "no error";
}

/* ================================================================= seeded generator */

/**
 * A small seeded generator (sfc32, seeded through splitmix32). Every agent gets its own stream
 * derived from the run's seed and its index, so an agent's sequence repeats for the same seed.
 */
export class Prng {
  /** The seed it was made with (printed in failure messages, so a run can be repeated). */
  readonly seed: number;
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number, stream = 0) {
    this.seed = seed >>> 0;
    let s = (seed ^ Math.imul(stream + 1, 0x9e3779b9)) >>> 0;
    const split = (): number => {
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = split();
    this.b = split();
    this.c = split();
    this.d = split();
    for (let i = 0; i < 12; i++) this.u32();
  }

  /** A uniformly distributed unsigned 32-bit integer. */
  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    return this.u32() / 4294967296;
  }

  /** An integer in [0, n). */
  below(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.below(hi - lo + 1);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** An index into `weights`, chosen with those relative weights. */
  weighted(weights: readonly number[]): number {
    let sum = 0;
    for (const w of weights) sum += w;
    let r = this.next() * sum;
    for (let i = 0; i < weights.length; i++) {
      r -= weights[i]!;
      if (r < 0) return i;
    }
    return weights.length - 1;
  }

  /** One element of `xs`. */
  pick<T>(xs: readonly T[]): T {
    return xs[this.below(xs.length)]!;
  }
}

/** Parse a seed: decimal or 0x-hex digits as a number, anything else hashed (FNV-1a). */
export function parseSeed(text: string): number {
  const t = text.trim();
  if (/^0x[0-9a-f]{1,8}$/i.test(t)) return Number.parseInt(t.slice(2), 16) >>> 0;
  if (/^[0-9]{1,10}$/.test(t) && Number(t) <= 0xffffffff) return Number(t) >>> 0;
  let h = 0x811c9dc5;
  for (let i = 0; i < t.length; i++) h = Math.imul(h ^ t.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

export function hex32(n: number): string {
  return "0x" + (n >>> 0).toString(16).padStart(8, "0");
}

/* ================================================================= signatures */

/** A signature word for holder `agent`'s `n`-th block: never 0, distinct per (agent, n). */
export function signature(agent: number, n: number): number {
  let h = (Math.imul(agent + 1, 0x9e3779b1) ^ Math.imul(n + 1, 0x85ebca6b)) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  h = (h ^ (h >>> 16)) | 1;
  return h;
}

/** Word `k` of the pattern of a block with signature `sig` (address-free, so a block can be checked anywhere). */
export function patternWord(sig: number, k: number): number {
  return (sig ^ Math.imul(k + 1, 0x2545f491)) | 0;
}

/** Fill `size` bytes at `addr` with the pattern of `sig`. */
export function fillPattern(i32: Int32Array, u8: Uint8Array, addr: number, size: number, sig: number): void {
  const w = addr >> 2;
  const words = size >> 2;
  for (let k = 0; k < words; k++) i32[w + k] = patternWord(sig, k);
  for (let b = words << 2; b < size; b++) u8[addr + b] = (sig >>> ((b & 3) << 3)) & 0xff;
}

/** Check the pattern written by fillPattern; returns a description of the first difference, or null. */
export function checkPattern(i32: Int32Array, u8: Uint8Array, addr: number, size: number, sig: number): string | null {
  const w = addr >> 2;
  const words = size >> 2;
  for (let k = 0; k < words; k++) {
    const want = patternWord(sig, k);
    const got = i32[w + k]!;
    if (got !== want) {
      return `block 0x${addr.toString(16)} (${size} B, signature 0x${(sig >>> 0).toString(16)}): word ${k} is 0x${(got >>> 0).toString(16)}, want 0x${(want >>> 0).toString(16)}`;
    }
  }
  for (let b = words << 2; b < size; b++) {
    const want = (sig >>> ((b & 3) << 3)) & 0xff;
    if (u8[addr + b] !== want) return `block 0x${addr.toString(16)} (${size} B): byte ${b} is ${u8[addr + b]}, want ${want}`;
  }
  return null;
}

/* ================================================================= shared ring */

const R_LOCK = 0;
const R_HEAD = 1;
const R_TAIL = 2;
const R_COUNT = 3;
const R_HDR = 16; // entries start on their own line
/** Words per entry. */
export const RING_ENTRY = 4;

/**
 * A bounded multi-producer multi-consumer queue of 4-word entries in its own SharedArrayBuffer,
 * under one spinlock word (the critical sections are a few loads and stores). Used to hand blocks
 * from one agent to another.
 */
export class SharedRing {
  readonly buffer: SharedArrayBuffer;
  readonly capacity: number;
  private readonly i32: Int32Array;

  constructor(bufferOrCapacity: SharedArrayBuffer | number) {
    if (typeof bufferOrCapacity === "number") {
      this.buffer = new SharedArrayBuffer((R_HDR + bufferOrCapacity * RING_ENTRY) * 4);
    } else {
      this.buffer = bufferOrCapacity;
    }
    this.i32 = new Int32Array(this.buffer);
    this.capacity = (this.i32.length - R_HDR) / RING_ENTRY;
  }

  private lock(): void {
    const i32 = this.i32;
    const end = Date.now() + 10_000;
    for (let spin = 0; Atomics.compareExchange(i32, R_LOCK, 0, 1) !== 0; spin++) {
      if (spin < 200) continue;
      Atomics.wait(i32, R_LOCK, 1, 1);
      if ((spin & 63) === 0 && Date.now() > end) throw new Error("ring lock held for 10 s");
    }
  }

  private unlock(): void {
    Atomics.store(this.i32, R_LOCK, 0);
    Atomics.notify(this.i32, R_LOCK, 1);
  }

  /** Append an entry; false when full. */
  push(a: number, b: number, c: number, d: number): boolean {
    const i32 = this.i32;
    this.lock();
    try {
      const n = i32[R_COUNT]!;
      if (n >= this.capacity) return false;
      const t = i32[R_TAIL]!;
      const e = R_HDR + t * RING_ENTRY;
      i32[e] = a;
      i32[e + 1] = b;
      i32[e + 2] = c;
      i32[e + 3] = d;
      i32[R_TAIL] = t + 1 === this.capacity ? 0 : t + 1;
      i32[R_COUNT] = n + 1;
      return true;
    } finally {
      this.unlock();
    }
  }

  /** Take the oldest entry into `out`; false when empty. */
  pop(out: number[]): boolean {
    const i32 = this.i32;
    if (Atomics.load(i32, R_COUNT) === 0) return false;
    this.lock();
    try {
      const n = i32[R_COUNT]!;
      if (n === 0) return false;
      const h = i32[R_HEAD]!;
      const e = R_HDR + h * RING_ENTRY;
      out[0] = i32[e]!;
      out[1] = i32[e + 1]!;
      out[2] = i32[e + 2]!;
      out[3] = i32[e + 3]!;
      i32[R_HEAD] = h + 1 === this.capacity ? 0 : h + 1;
      i32[R_COUNT] = n - 1;
      return true;
    } finally {
      this.unlock();
    }
  }

  get length(): number {
    return Atomics.load(this.i32, R_COUNT);
  }
}

/* ================================================================= worker wrapper (main side) */

/** A message from a worker script: { type, ... }; type "error" carries a failure. */
