/** The seeded generator of the single-agent randomised tests: the shared Prng (support/common.ts), seeded from SHMALLOC_SEED or fresh. */
import { baseSeed, Prng, seedNote } from "./util.js";

export class Rng extends Prng {
  constructor(seed?: number) {
    super(seed ?? baseSeed());
  }
}

/** Run `fn`; on failure rethrow with the seed in the message so the run can be repeated. */
export function withSeed(rng: Rng, fn: () => void): void {
  try {
    fn();
  } catch (e) {
    const err = e as Error;
    err.message = `${seedNote(rng.seed)} ${err.message}`;
    throw err;
  }
}
