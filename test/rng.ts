/** A seeded generator for randomised tests (mulberry32); the seed is printed on failure. */
export class Rng {
  private s: number;
  readonly seed: number;
  constructor(seed?: number) {
    const env = process.env.SHMALLOC_SEED;
    this.seed = (seed ?? (env !== undefined ? Number(env) : (Date.now() ^ (process.pid << 8)) >>> 0)) >>> 0;
    this.s = this.seed;
  }
  /** A float in [0, 1). */
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)]!;
  }
}

/** Run `fn`; on failure rethrow with the seed in the message so the run can be repeated. */
export function withSeed(rng: Rng, fn: () => void): void {
  try {
    fn();
  } catch (e) {
    const err = e as Error;
    err.message = `[seed ${rng.seed}; rerun with SHMALLOC_SEED=${rng.seed}] ${err.message}`;
    throw err;
  }
}
