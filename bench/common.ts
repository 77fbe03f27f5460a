/*
 * Helpers shared by the benchmark driver (run.ts) and its workers (worker.ts): the task
 * description posted to a worker, a seeded generator, the futex-style lock that guards the
 * @thi.ng/malloc baseline, a barrier for workers that must start (or change rounds) together, and
 * small statistics.
 */

/** The three allocators every workload is run against, and the optional Wasm peers (peers.ts). */
export type AllocKind = "shmalloc" | "thing" | "js" | "mimalloc" | "dlmalloc";
export const ALLOC_KINDS: readonly AllocKind[] = ["shmalloc", "thing", "js"];
export const PEER_KINDS: readonly AllocKind[] = ["mimalloc", "dlmalloc"];
export const ALLOC_LABEL: Record<AllocKind, string> = {
  shmalloc: "shmalloc",
  thing: "@thi.ng/malloc",
  js: "plain JS",
  mimalloc: "Wasm mimalloc",
  dlmalloc: "Wasm dlmalloc",
};
/** Is this allocator one of the Wasm peers? */
export function isPeer(a: AllocKind): boolean {
  return a === "mimalloc" || a === "dlmalloc";
}

/** What one worker is asked to do. Everything here is structured-clone friendly. */
export interface TaskSpec {
  /** Which benchmark: see worker.ts for the list. */
  kind: string;
  alloc: AllocKind;
  /** Workers in the group and this worker's index in it. */
  workers: number;
  index: number;
  /** Length of one timed sample in ms, samples to take, untimed warm-up in ms. */
  sampleMs: number;
  samples: number;
  warmMs: number;
  /** Benchmark parameters (sizes, counts, seeds). */
  params: Record<string, number>;
  /** The shmalloc heap (for alloc === "shmalloc"). */
  heap?: SharedArrayBuffer;
  /** The shared MemPool's buffer and its lock word (for alloc === "thing" with workers). */
  pool?: SharedArrayBuffer;
  lock?: SharedArrayBuffer;
  /** Barrier and control words of the group. */
  ctl: SharedArrayBuffer;
  /** Workload-specific shared words (tables of live blocks, rings). */
  shared?: SharedArrayBuffer;
  /** Addresses handed to the workers by the main thread (cache-scratch). */
  handoff?: number[];
  /** Wasm peers: the folder of their loader, the run's shared memory and the compiled module. */
  peersDir?: string;
  memory?: unknown;
  module?: unknown;
}

/** One timed sample: operations done and nanoseconds taken. */
export interface Sample {
  ops: number;
  ns: number;
}

/** What a worker posts back when it is done. */
export interface WorkerResult {
  type: "done";
  index: number;
  /** Timed samples by series name ("main" for most benchmarks). */
  series: Record<string, Sample[]>;
  info: Record<string, number | string>;
}

/** Monotonic nanoseconds (process-wide clock, comparable between workers). */
export function nowNs(): number {
  return Number(process.hrtime.bigint());
}

/**
 * A futex-style mutex in one Int32 word (Drepper's "mutex 3": 0 free, 1 held, 2 held with
 * waiters), with a short read-only spin before Atomics.wait. This is the one global lock that
 * turns @thi.ng/malloc's single-threaded MemPool into a shared allocator for several workers.
 */
export class FutexLock {
  private readonly w: Int32Array;
  constructor(buf: SharedArrayBuffer) {
    this.w = new Int32Array(buf, 0, 1);
  }
  lock(): void {
    if (Atomics.compareExchange(this.w, 0, 0, 1) !== 0) this.lockSlow();
  }
  private lockSlow(): void {
    const w = this.w;
    for (let i = 0; i < 200; i++) {
      if (Atomics.load(w, 0) === 0 && Atomics.compareExchange(w, 0, 0, 1) === 0) return;
    }
    let c = Atomics.exchange(w, 0, 2);
    while (c !== 0) {
      Atomics.wait(w, 0, 2);
      c = Atomics.exchange(w, 0, 2);
    }
  }
  unlock(): void {
    if (Atomics.sub(this.w, 0, 1) !== 1) {
      Atomics.store(this.w, 0, 0);
      Atomics.notify(this.w, 0, 1);
    }
  }
}

/* Control words of a worker group (TaskSpec.ctl). */
export const CTL_COUNT = 0;
export const CTL_GEN = 1;
export const CTL_STOP = 2;
/** Free words for workloads (e.g. the xmalloc ring heads). */
export const CTL_USER = 16;
export const CTL_WORDS = 64;

/**
 * A reusable barrier for `parties` workers on the control words: spins briefly, then waits.
 * `wait()` returns true in exactly one party (the last to arrive), which ran `leader` before the
 * others were released.
 */
export class Barrier {
  private readonly c: Int32Array;
  constructor(
    ctl: SharedArrayBuffer,
    private readonly parties: number,
  ) {
    this.c = new Int32Array(ctl, 0, CTL_WORDS);
  }
  wait(leader?: () => void): boolean {
    const c = this.c;
    const gen = Atomics.load(c, CTL_GEN);
    if (Atomics.add(c, CTL_COUNT, 1) === this.parties - 1) {
      Atomics.store(c, CTL_COUNT, 0);
      if (leader !== undefined) leader();
      Atomics.add(c, CTL_GEN, 1);
      Atomics.notify(c, CTL_GEN);
      return true;
    }
    for (let i = 0; i < 20000; i++) if (Atomics.load(c, CTL_GEN) !== gen) return false;
    while (Atomics.load(c, CTL_GEN) === gen) Atomics.wait(c, CTL_GEN, gen, 100);
    return false;
  }
  get stop(): boolean {
    return Atomics.load(this.c, CTL_STOP) !== 0;
  }
  setStop(v: boolean): void {
    Atomics.store(this.c, CTL_STOP, v ? 1 : 0);
  }
  get words(): Int32Array {
    return this.c;
  }
}

/* ------------------------------------------------------------------ statistics */

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function best(xs: readonly number[]): number {
  return xs.length === 0 ? NaN : Math.max(...xs);
}

/** Ops per second of each sample of a group: per round, the sum over workers of ops/s. */
export function groupRates(perWorker: readonly Sample[][]): number[] {
  const rounds = Math.min(...perWorker.map((s) => s.length));
  const out: number[] = [];
  for (let r = 0; r < rounds; r++) {
    let rate = 0;
    for (const s of perWorker) {
      const x = s[r]!;
      if (x.ns > 0) rate += (x.ops * 1e9) / x.ns;
    }
    out.push(rate);
  }
  return out;
}
