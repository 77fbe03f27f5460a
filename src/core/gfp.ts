/**
 * Allocation flags (the kernel's gfp_t), combined with `|`.
 *
 * KERNEL is the default and has no bits: it may spin, wait (where the agent can block) and reclaim
 * other slots' cached pages. NOWAIT never waits; ATOMIC never waits and may dip into the reserve
 * below the min watermark. FAST_TRY takes pages from this slot's pcp lists only.
 *
 * WORDS: none. LOCKS: none (the flags choose which locks the page and slab layers may take).
 * NO LOCK: everything (constants). STALE: nothing: no shared word is read.
 */
export const GFP = Object.freeze({
  KERNEL: 0,
  NOWAIT: 1 << 0,
  ATOMIC: 1 << 1,
  ZERO: 1 << 2,
  NOWARN: 1 << 3,
  FAST_TRY: 1 << 4,
} as const);
export type Gfp = number;

/** Every public flag bit. */
export const GFP_PUBLIC_MASK = 0x1f;
/** Internal: the caller is a nolock entry point; only trylocks (ALLOC_TRYLOCK). */
export const GFP_TRYLOCK = 1 << 8;
/** Internal: never wait, never reclaim (NOWAIT, ATOMIC, FAST_TRY and nolock). */
export const GFP_NOWAIT_MASK = GFP.NOWAIT | GFP.ATOMIC | GFP.FAST_TRY | GFP_TRYLOCK;
