/*
 * The workloads, after mimalloc-bench, written once against the Store interface (stores.ts). Each
 * runs inside a worker; run(ms) works for about ms milliseconds and returns the operations done
 * (an operation is one allocation or one free, except in cache-scratch where it is one
 * allocate-write-free iteration). The driver times each call.
 */
import { Prng } from "../test/support/common.js";
import { Barrier, CTL_USER } from "./common.js";

/** Control word of the larson epoch flag (set by worker 0 when an epoch is over). */
const CTL_ROTATE = CTL_USER;
import type { Store } from "./stores.js";

export interface Workload {
  /** Untimed: build the live set. */
  setup(): void;
  /** Work for about ms milliseconds; returns operations done. */
  run(ms: number): number;
  /** Untimed, after every worker's last round: free this worker's blocks. */
  cleanup(): void;
  /** Untimed, worker 0 only, after every worker's cleanup: free blocks of shared tables. */
  sharedCleanup(): void;
  /** Extra figures for the report. */
  info(): Record<string, number | string>;
}

/** A workload with nothing to set up, clean up or report beyond its operation count. */
export abstract class SimpleWorkload implements Workload {
  setup(): void {}
  abstract run(ms: number): number;
  cleanup(): void {}
  sharedCleanup(): void {}
  info(): Record<string, number | string> {
    return {};
  }
}

function oom(what: string): never {
  throw new Error(`out of memory in ${what}`);
}

/* ------------------------------------------------------------------ glibc-simple */

/**
 * glibc's bench-malloc-simple as mimalloc-bench runs it: allocate n blocks of one size, touch every
 * byte of each, free the first half in allocation order (FIFO) and the rest in reverse (LIFO).
 */
export class GlibcSimple<Tab> implements Workload {
  private readonly t: Tab;
  constructor(
    private readonly s: Store<Tab>,
    private readonly size: number,
    private readonly n: number,
  ) {
    this.t = s.newTable(n);
  }
  setup(): void {}
  run(ms: number): number {
    const s = this.s;
    const t = this.t;
    const n = this.n;
    const size = this.size;
    const half = n >> 1;
    const end = performance.now() + ms;
    let ops = 0;
    let v = 1;
    do {
      for (let i = 0; i < n; i++) {
        if (!s.alloc(t, i, size)) oom("glibc-simple");
        s.touchAll(t, i, size, v);
      }
      for (let i = 0; i < half; i++) s.free(t, i);
      for (let i = n - 1; i >= half; i--) s.free(t, i);
      ops += 2 * n;
      v = (v + 1) & 255;
    } while (performance.now() < end);
    return ops;
  }
  cleanup(): void {}
  sharedCleanup(): void {}
  info(): Record<string, number | string> {
    return {};
  }
}

/* ------------------------------------------------------------------ pair */

/** The 64 B pair through the Store interface: allocate one block and free it at once (LIFO). */
export class Pair<Tab> extends SimpleWorkload {
  private readonly t: Tab;
  constructor(
    private readonly s: Store<Tab>,
    private readonly size: number,
  ) {
    super();
    this.t = s.newTable(1);
  }
  run(ms: number): number {
    const s = this.s;
    const t = this.t;
    const size = this.size;
    const end = performance.now() + ms;
    let ops = 0;
    do {
      for (let i = 0; i < 1024; i++) {
        if (!s.alloc(t, 0, size)) oom("pair");
        s.free(t, 0);
      }
      ops += 2048;
    } while (performance.now() < end);
    return ops;
  }
}

/* ------------------------------------------------------------------ larson */

/**
 * Larson and Krishnan's server simulation (mimalloc-bench larson-sized): a shared array of live
 * blocks of 8..1000 bytes, one slice per worker. A worker replaces random blocks of its slice (free,
 * then allocate a new random size); after every epoch the slices rotate between the workers, so a
 * worker frees blocks that another one allocated (the original hands a thread's blocks to a new
 * thread instead). An epoch lasts epochMs: worker 0 raises a flag, every worker finishes its
 * current group of 64 replacements and meets the others at a barrier, where the slices rotate.
 * (Epochs of a fixed count of replacements would make a fast allocator spend its time in the
 * barrier.)
 */
export class Larson<Tab> implements Workload {
  private readonly t: Tab;
  private readonly rng: Prng;
  private epoch = 0;
  constructor(
    private readonly s: Store<Tab>,
    shared: Int32Array,
    private readonly barrier: Barrier,
    private readonly workers: number,
    private readonly index: number,
    private readonly slots: number,
    private readonly epochMs: number,
    seed: number,
  ) {
    this.t = s.sharedTable(shared);
    this.rng = new Prng(seed, index);
  }
  private static readonly MIN = 8;
  private static readonly MAX = 1000;
  setup(): void {
    const base = this.index * this.slots;
    for (let i = 0; i < this.slots; i++) {
      const size = Larson.MIN + this.rng.below(Larson.MAX - Larson.MIN + 1);
      if (!this.s.alloc(this.t, base + i, size)) oom("larson setup");
      this.s.touchEnds(this.t, base + i, size, 1);
    }
  }
  run(ms: number): number {
    const s = this.s;
    const t = this.t;
    const rng = this.rng;
    const slots = this.slots;
    const barrier = this.barrier;
    const words = barrier.words;
    const timer = this.index === 0;
    const t0 = performance.now();
    const leader = (): void => {
      Atomics.store(words, CTL_ROTATE, 0);
      if (performance.now() - t0 >= ms) barrier.setStop(true);
    };
    let ops = 0;
    for (;;) {
      const base = ((this.index + this.epoch) % this.workers) * slots;
      const epochEnd = performance.now() + this.epochMs;
      for (;;) {
        for (let k = 0; k < 64; k++) {
          const i = base + rng.below(slots);
          s.free(t, i);
          const size = Larson.MIN + rng.below(Larson.MAX - Larson.MIN + 1);
          if (!s.alloc(t, i, size)) oom("larson");
          s.touchEnds(t, i, size, k);
        }
        ops += 128;
        if (timer && performance.now() >= epochEnd) Atomics.store(words, CTL_ROTATE, 1);
        if (Atomics.load(words, CTL_ROTATE) !== 0) break;
      }
      this.epoch++;
      barrier.wait(leader);
      if (barrier.stop) break;
    }
    return ops;
  }
  cleanup(): void {
    const base = this.index * this.slots;
    for (let i = 0; i < this.slots; i++) this.s.free(this.t, base + i);
  }
  sharedCleanup(): void {}
  info(): Record<string, number | string> {
    return { epochs: this.epoch };
  }
}

/* ------------------------------------------------------------------ xmalloc-test */

/** Int32 words of one producer/consumer pair's ring: a header line, then the batches. */
export function xmallocPairWords(ringSlots: number, batch: number): number {
  return 16 + ringSlots * batch;
}
const XR_HEAD = 0;
const XR_TAIL = 1;
const XR_DONE = 2;

/**
 * xmalloc-test (Lever and Boreham): producers allocate 64-byte objects in batches of 4096 and pass
 * each batch through a ring in a SharedArrayBuffer to a consumer, which frees them. Workers pair
 * up (2p produces, 2p + 1 consumes); a worker without a partner (T = 1) does both in turn.
 */
export class XMalloc<Tab> implements Workload {
  private readonly ring: Tab;
  private readonly hdr: Int32Array;
  private readonly role: "producer" | "consumer" | "solo";
  private round = 0;
  private waits = 0;
  constructor(
    private readonly s: Store<Tab>,
    shared: SharedArrayBuffer,
    workers: number,
    index: number,
    private readonly size: number,
    private readonly batch: number,
    private readonly ringSlots: number,
  ) {
    const pair = index >> 1;
    this.role = (index & 1) === 1 ? "consumer" : index + 1 < workers ? "producer" : "solo";
    const words = xmallocPairWords(ringSlots, batch);
    this.hdr = new Int32Array(shared, pair * words * 4, 16);
    this.ring = s.sharedTable(new Int32Array(shared, (pair * words + 16) * 4, ringSlots * batch));
  }
  setup(): void {}
  run(ms: number): number {
    this.round++;
    if (this.role === "producer") return this.produce(ms);
    if (this.role === "consumer") return this.consume();
    return this.solo(ms);
  }
  private fill(base: number): void {
    const s = this.s;
    const ring = this.ring;
    const size = this.size;
    for (let k = 0; k < this.batch; k++) {
      if (!s.alloc(ring, base + k, size)) oom("xmalloc-test");
      s.touchEnds(ring, base + k, size, k & 255);
    }
  }
  private drain(base: number): void {
    const s = this.s;
    const ring = this.ring;
    for (let k = 0; k < this.batch; k++) s.free(ring, base + k);
  }
  private produce(ms: number): number {
    const h = this.hdr;
    const end = performance.now() + ms;
    let ops = 0;
    do {
      const tail = Atomics.load(h, XR_TAIL);
      let head = Atomics.load(h, XR_HEAD);
      while (tail - head >= this.ringSlots) {
        this.waits++;
        Atomics.wait(h, XR_HEAD, head, 1);
        head = Atomics.load(h, XR_HEAD);
      }
      this.fill((tail % this.ringSlots) * this.batch);
      Atomics.store(h, XR_TAIL, tail + 1);
      Atomics.notify(h, XR_TAIL);
      ops += this.batch;
    } while (performance.now() < end);
    Atomics.store(h, XR_DONE, this.round);
    Atomics.notify(h, XR_TAIL);
    return ops;
  }
  private consume(): number {
    const h = this.hdr;
    let ops = 0;
    for (;;) {
      const head = Atomics.load(h, XR_HEAD);
      const tail = Atomics.load(h, XR_TAIL);
      if (head === tail) {
        if (Atomics.load(h, XR_DONE) === this.round && Atomics.load(h, XR_TAIL) === head) break;
        this.waits++;
        Atomics.wait(h, XR_TAIL, tail, 1);
        continue;
      }
      this.drain((head % this.ringSlots) * this.batch);
      Atomics.store(h, XR_HEAD, head + 1);
      Atomics.notify(h, XR_HEAD);
      ops += this.batch;
    }
    return ops;
  }
  private solo(ms: number): number {
    const end = performance.now() + ms;
    let ops = 0;
    do {
      this.fill(0);
      this.drain(0);
      ops += 2 * this.batch;
    } while (performance.now() < end);
    return ops;
  }
  cleanup(): void {}
  sharedCleanup(): void {}
  info(): Record<string, number | string> {
    return { role: this.role, waits: this.waits };
  }
}

/* ------------------------------------------------------------------ mstress */

/**
 * After mimalloc's test-stress (mimalloc-bench mstress): short-lived objects of 8..128 bytes,
 * long-lived ones, rare large (x100) and huge (x1000) ones; a pattern is written into every
 * object when it is allocated and checked when it is freed; objects are exchanged with other
 * workers through 1000 shared transfer slots (Atomics.exchange).
 */
export class MStress<Tab> implements Workload {
  private readonly data: Tab;
  private readonly retained: Tab;
  private readonly transfer: Tab;
  private readonly rng: Prng;
  private large = 0;
  constructor(
    private readonly s: Store<Tab>,
    transferWords: Int32Array,
    index: number,
    private readonly dataSlots: number,
    private readonly retainSlots: number,
    seed: number,
  ) {
    this.data = s.newTable(dataSlots);
    this.retained = s.newTable(retainSlots);
    this.transfer = s.sharedTable(transferWords);
    this.rng = new Prng(seed, index);
  }
  private sizeFor(): number {
    const rng = this.rng;
    let items = 1 << rng.below(5);
    if (rng.below(100) === 0) {
      this.large++;
      items *= rng.below(10) === 0 ? 1000 : 100;
    }
    return items * 8;
  }
  private replace(t: Tab, i: number): void {
    const s = this.s;
    if (s.live(t, i)) {
      if (!s.checkPattern(t, i)) throw new Error("mstress: an object's fill pattern changed before it was freed");
      s.free(t, i);
    }
    const size = this.sizeFor();
    if (!s.alloc(t, i, size)) oom("mstress");
    s.fillPattern(t, i, size);
  }
  private release(t: Tab, i: number): number {
    const s = this.s;
    if (!s.live(t, i)) return 0;
    if (!s.checkPattern(t, i)) throw new Error("mstress: an object's fill pattern changed before it was freed");
    s.free(t, i);
    return 1;
  }
  setup(): void {
    for (let i = 0; i < this.retainSlots; i++) this.replace(this.retained, i);
    for (let i = 0; i < this.dataSlots; i += 2) this.replace(this.data, i);
  }
  run(ms: number): number {
    const s = this.s;
    const rng = this.rng;
    const data = this.data;
    const n = this.dataSlots;
    const end = performance.now() + ms;
    let ops = 0;
    do {
      for (let k = 0; k < 64; k++) {
        const i = rng.below(n);
        ops += this.release(data, i) + 1;
        this.replace(data, i);
        if (rng.below(100) < 66) ops += this.release(data, rng.below(n));
        if (rng.below(100) < 25) s.exchange(data, rng.below(n), this.transfer, rng.below(1000));
        if (rng.below(100) === 0) {
          const j = rng.below(this.retainSlots);
          ops += this.release(this.retained, j) + 1;
          this.replace(this.retained, j);
        }
      }
    } while (performance.now() < end);
    return ops;
  }
  cleanup(): void {
    for (let i = 0; i < this.dataSlots; i++) this.release(this.data, i);
    for (let i = 0; i < this.retainSlots; i++) this.release(this.retained, i);
  }
  sharedCleanup(): void {
    for (let j = 0; j < 1000; j++) this.release(this.transfer, j);
  }
  info(): Record<string, number | string> {
    return { largeObjects: this.large };
  }
}

/* ------------------------------------------------------------------ cache-scratch */

/**
 * Hoard's cache-scratch (passive false sharing), as mimalloc-bench runs it: the main thread
 * allocates one small object per worker, side by side; each worker frees the one it was given,
 * then repeatedly allocates a small object, writes every byte of it many times, and frees it. An
 * allocator that hands a worker memory on a cache line another worker writes makes them fight over
 * that line; the ideal is a T-fold speedup from 1 to T workers.
 */
export class CacheScratch<Tab> implements Workload {
  private readonly t: Tab;
  constructor(
    private readonly s: Store<Tab>,
    private readonly handoff: number,
    private readonly size: number,
    private readonly reps: number,
  ) {
    this.t = s.newTable(1);
  }
  setup(): void {
    this.s.adopt(this.t, 0, this.handoff);
    this.s.free(this.t, 0);
  }
  run(ms: number): number {
    const s = this.s;
    const t = this.t;
    const size = this.size;
    const reps = this.reps;
    const end = performance.now() + ms;
    let ops = 0;
    do {
      for (let k = 0; k < 16; k++) {
        if (!s.alloc(t, 0, size)) oom("cache-scratch");
        s.hammer(t, 0, size, reps);
        s.free(t, 0);
      }
      ops += 16;
    } while (performance.now() < end);
    return ops;
  }
  cleanup(): void {}
  sharedCleanup(): void {}
  info(): Record<string, number | string> {
    return {};
  }
}

/* ------------------------------------------------------------------ alloc-test */

/**
 * After alloc-test (node-dot-cpp, in mimalloc-bench): a large live set per worker whose blocks
 * are replaced one at a time; the block to replace is picked 80/20: 80% of picks fall on the hot
 * fifth of the set. Sizes follow a power law from 8 bytes to 2 KiB (half of them below 16 bytes).
 */
export class AllocTest<Tab> implements Workload {
  private readonly t: Tab;
  private readonly rng: Prng;
  constructor(
    private readonly s: Store<Tab>,
    index: number,
    private readonly live: number,
    seed: number,
  ) {
    this.t = s.newTable(live);
    this.rng = new Prng(seed, index);
  }
  private sizeFor(): number {
    const r = this.rng.u32();
    const k = Math.min(Math.clz32(r | 1), 7);
    const lo = 8 << k;
    return lo + (this.rng.u32() & (lo - 1));
  }
  setup(): void {
    for (let i = 0; i < this.live; i++) {
      const size = this.sizeFor();
      if (!this.s.alloc(this.t, i, size)) oom("alloc-test setup");
      this.s.touchEnds(this.t, i, size, 1);
    }
  }
  run(ms: number): number {
    const s = this.s;
    const t = this.t;
    const rng = this.rng;
    const hot = Math.max(1, Math.floor(this.live / 5));
    const cold = this.live - hot;
    const end = performance.now() + ms;
    let ops = 0;
    do {
      for (let k = 0; k < 64; k++) {
        const i = rng.below(10) < 8 ? rng.below(hot) : hot + rng.below(cold);
        s.free(t, i);
        const size = this.sizeFor();
        if (!s.alloc(t, i, size)) oom("alloc-test");
        s.touchEnds(t, i, size, k);
      }
      ops += 128;
    } while (performance.now() < end);
    return ops;
  }
  cleanup(): void {
    for (let i = 0; i < this.live; i++) this.s.free(this.t, i);
  }
  sharedCleanup(): void {}
  info(): Record<string, number | string> {
    return {};
  }
}

/* ------------------------------------------------------------------ machine check */

/**
 * No allocation at all: an arithmetic loop in registers. Its 2-worker scaling is what the machine
 * gives two workers at that moment (other processes share the cores), the ceiling for every
 * scaling figure of the run. An op is 1000 loop iterations.
 */
export class CpuLoop implements Workload {
  private x = 1;
  setup(): void {}
  run(ms: number): number {
    let x = this.x;
    const end = performance.now() + ms;
    let ops = 0;
    do {
      for (let k = 0; k < 64; k++) for (let i = 0; i < 1000; i++) x = (Math.imul(x, 1103515245) + 12345) | 0;
      ops += 64;
    } while (performance.now() < end);
    this.x = x;
    return ops;
  }
  cleanup(): void {}
  sharedCleanup(): void {}
  info(): Record<string, number | string> {
    return { x: this.x };
  }
}
