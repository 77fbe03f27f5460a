/*
 * Micro benchmarks of shmalloc's entry points, each run in a worker attached to its own slot of
 * one heap. Every loop is a plain counted loop over one call pair, checked against the clock once
 * per chunk of iterations.
 */
import { GFP, type Heap } from "../src/index.js";
import { Prng } from "../test/support/common.js";
import { nowNs, type Sample } from "./common.js";
import { SimpleWorkload } from "./workloads.js";

const CHUNK = 1024;

/** allocPages(order) / freePages pairs. Orders 0..3 go through this slot's pcp lists, 4..10 to the buddy lists. */
export class PagePairs extends SimpleWorkload {
  constructor(
    private readonly heap: Heap,
    private readonly order: number,
  ) {
    super();
  }
  run(ms: number): number {
    const heap = this.heap;
    const order = this.order;
    const end = performance.now() + ms;
    let ops = 0;
    do {
      for (let i = 0; i < CHUNK; i++) {
        const a = heap.allocPages(order);
        heap.freePages(a, order);
      }
      ops += CHUNK;
    } while (performance.now() < end);
    return ops;
  }
}

/** kmalloc(size) / kfree pairs, freed at once (LIFO). */
export class KmallocPairs extends SimpleWorkload {
  constructor(
    private readonly heap: Heap,
    private readonly size: number,
  ) {
    super();
  }
  run(ms: number): number {
    const heap = this.heap;
    const size = this.size;
    const end = performance.now() + ms;
    let ops = 0;
    do {
      for (let i = 0; i < CHUNK; i++) heap.kfree(heap.kmalloc(size));
      ops += CHUNK;
    } while (performance.now() < end);
    return ops;
  }
}

/** kmalloc a batch of n, then kfree them in reverse order; ops are pairs. */
export class KmallocBatch extends SimpleWorkload {
  private readonly addrs: Int32Array;
  /** kmalloc calls that returned 0 (the heap is nearly empty: an anomaly). */
  private zero = 0;
  constructor(
    private readonly heap: Heap,
    private readonly size: number,
    private readonly n: number,
  ) {
    super();
    this.addrs = new Int32Array(n);
  }
  run(ms: number): number {
    const heap = this.heap;
    const size = this.size;
    const n = this.n;
    const addrs = this.addrs;
    const end = performance.now() + ms;
    let ops = 0;
    do {
      for (let i = 0; i < n; i++) {
        const a = heap.kmalloc(size);
        if (a === 0) this.zero++;
        addrs[i] = a;
      }
      for (let i = n - 1; i >= 0; i--) heap.kfree(addrs[i]!);
      ops += n;
    } while (performance.now() < end);
    return ops;
  }
  override info(): Record<string, number | string> {
    return { allocZero: this.zero };
  }
}

/** rcuReadLock / rcuReadUnlock pairs. */
export class RcuPairs extends SimpleWorkload {
  constructor(private readonly heap: Heap) {
    super();
  }
  run(ms: number): number {
    const heap = this.heap;
    const end = performance.now() + ms;
    let ops = 0;
    do {
      for (let i = 0; i < CHUNK; i++) {
        heap.rcuReadLock();
        heap.rcuReadUnlock();
      }
      ops += CHUNK;
    } while (performance.now() < end);
    return ops;
  }
}

/* ------------------------------------------------------------------ paired comparisons */

/** A benchmark that measures two series side by side, alternating samples (same noise for both). */
export interface Paired {
  /** Untimed warm-up of both loops. */
  warm(ms: number): void;
  /** One sample of each series. */
  sampleA(ms: number): Sample;
  sampleB(ms: number): Sample;
  cleanup(): void;
}

/** kmalloc/kfree pairs (A) against kmallocNolock/kfreeNolock pairs (B), uncontended. */
export class NolockVsNormal implements Paired {
  constructor(
    private readonly heap: Heap,
    private readonly size: number,
  ) {}
  warm(ms: number): void {
    this.sampleA(ms / 2);
    this.sampleB(ms / 2);
  }
  sampleA(ms: number): Sample {
    const heap = this.heap;
    const size = this.size;
    const t0 = nowNs();
    const end = performance.now() + ms;
    let ops = 0;
    do {
      for (let i = 0; i < CHUNK; i++) heap.kfree(heap.kmalloc(size));
      ops += CHUNK;
    } while (performance.now() < end);
    return { ops, ns: nowNs() - t0 };
  }
  sampleB(ms: number): Sample {
    const heap = this.heap;
    const size = this.size;
    const t0 = nowNs();
    const end = performance.now() + ms;
    let ops = 0;
    do {
      for (let i = 0; i < CHUNK; i++) heap.kfreeNolock(heap.kmallocNolock(size));
      ops += CHUNK;
    } while (performance.now() < end);
    return { ops, ns: nowNs() - t0 };
  }
  cleanup(): void {}
}

/**
 * Freeing n live 64-byte objects with kfree (A) against kfreeRcu followed by rcuBarrier (B). The
 * objects are allocated untimed before each sample; the timed part is the freeing, and for B the
 * rcuBarrier that waits for the grace period and frees them.
 */
export class KfreeRcuVsKfree implements Paired {
  private readonly addrs: Int32Array;
  constructor(
    private readonly heap: Heap,
    private readonly n: number,
  ) {
    this.addrs = new Int32Array(n);
  }
  private fill(): void {
    for (let i = 0; i < this.n; i++) {
      const a = this.heap.kmalloc(64);
      if (a === 0) throw new Error("out of memory in kfreeRcu benchmark");
      this.addrs[i] = a;
    }
  }
  warm(ms: number): void {
    const end = performance.now() + ms;
    do {
      this.sampleA(0);
      this.sampleB(0);
    } while (performance.now() < end);
  }
  /** Runs whole rounds of n objects until ms have passed (at least one). */
  sampleA(ms: number): Sample {
    let ops = 0;
    let ns = 0;
    const end = performance.now() + ms;
    do {
      this.fill();
      const heap = this.heap;
      const addrs = this.addrs;
      const t0 = nowNs();
      for (let i = 0; i < this.n; i++) heap.kfree(addrs[i]!);
      ns += nowNs() - t0;
      ops += this.n;
    } while (performance.now() < end);
    return { ops, ns };
  }
  sampleB(ms: number): Sample {
    let ops = 0;
    let ns = 0;
    const end = performance.now() + ms;
    do {
      this.fill();
      const heap = this.heap;
      const addrs = this.addrs;
      const t0 = nowNs();
      for (let i = 0; i < this.n; i++) heap.kfreeRcu(addrs[i]!);
      heap.rcuBarrier();
      ns += nowNs() - t0;
      ops += this.n;
    } while (performance.now() < end);
    return { ops, ns };
  }
  cleanup(): void {}
}

/* ------------------------------------------------------------------ the nolock storm */

export interface StormResult {
  iterations: number;
  ns: number;
  hookRuns: number;
  allocCalls: number;
  allocFails: number;
  nextClass: number;
  nolockFrees: number;
  byPoint: Record<string, { calls: number; fails: number }>;
}

const STORM_SIZES = [8, 16, 24, 32, 48, 64, 96, 128, 200, 256, 512, 1000, 2048, 4096];

/**
 * A re-entry hook fires kmallocNolock / kfreeNolock at random lock points (seeded; at each firing
 * a burst of 1..maxBurst calls, 55% allocations) while the main loop runs kmalloc/kfree of mixed
 * sizes and allocPages/freePages. Counts the nolock calls and how
 * many returned 0. Everything the hook allocated is freed (by the hook or afterwards).
 */
export function nolockStorm(heap: Heap, iterations: number, seed: number, fireRate: number, maxBurst: number): StormResult {
  const rng = new Prng(seed);
  const hookRng = new Prng(seed, 1);
  const HELD_MAX = 2048;
  const held = new Int32Array(HELD_MAX);
  let nHeld = 0;
  const byPoint: Record<string, { calls: number; fails: number }> = {};
  const r: StormResult = { iterations, ns: 0, hookRuns: 0, allocCalls: 0, allocFails: 0, nextClass: 0, nolockFrees: 0, byPoint };
  let inHook = false;
  heap.setReentryHook((point) => {
    // The hook's own nolock calls pass lock points too; like an NMI, it does not nest in itself
    // (nested firing would branch without bound).
    if (inHook) return;
    r.hookRuns++;
    if (hookRng.next() >= fireRate) return;
    inHook = true;
    try {
      storm(point);
    } finally {
      inHook = false;
    }
  });
  const storm = (point: string): void => {
    for (let b = 1 + hookRng.below(maxBurst); b > 0; b--) {
      if (nHeld > 0 && (nHeld === HELD_MAX || hookRng.next() < 0.45)) {
        const k = hookRng.below(nHeld);
        heap.kfreeNolock(held[k]!);
        held[k] = held[--nHeld]!;
        r.nolockFrees++;
        continue;
      }
      const size = STORM_SIZES[hookRng.below(STORM_SIZES.length)]!;
      const a = heap.kmallocNolock(size);
      r.allocCalls++;
      const p = (byPoint[point] ??= { calls: 0, fails: 0 });
      p.calls++;
      if (a === 0) {
        r.allocFails++;
        p.fails++;
      } else {
        held[nHeld++] = a;
      }
    }
  };
  const LIVE = 256;
  const live = new Int32Array(LIVE);
  const PAGES = 16;
  const pages = new Int32Array(PAGES);
  const pageOrder = new Int32Array(PAGES);
  const before = heap.stats().vmstat.nolockNextClass;
  const t0 = nowNs();
  for (let it = 0; it < iterations; it++) {
    const i = rng.below(LIVE);
    if (live[i] !== 0) {
      heap.kfree(live[i]!);
      live[i] = 0;
    } else {
      live[i] = heap.kmalloc(STORM_SIZES[rng.below(STORM_SIZES.length)]!, GFP.KERNEL);
    }
    if ((it & 7) === 0) {
      const j = rng.below(PAGES);
      if (pages[j] !== 0) {
        heap.freePages(pages[j]!, pageOrder[j]!);
        pages[j] = 0;
      } else {
        const order = rng.below(5);
        pages[j] = heap.allocPages(order);
        pageOrder[j] = order;
      }
    }
  }
  r.ns = nowNs() - t0;
  heap.setReentryHook(null);
  r.nextClass = heap.stats().vmstat.nolockNextClass - before;
  // What the hook still holds goes back through kfreeNolock; the next normal call drains any
  // object it had to defer.
  for (let k = 0; k < nHeld; k++) heap.kfreeNolock(held[k]!);
  nHeld = 0;
  for (let i = 0; i < LIVE; i++) if (live[i] !== 0) heap.kfree(live[i]!);
  for (let j = 0; j < PAGES; j++) if (pages[j] !== 0) heap.freePages(pages[j]!, pageOrder[j]!);
  return r;
}
