/** Control words and counters shared by test/workers/hammer.ts and the inspector's test. */

/** Words of the Int32Array over ctrl. */
export const HAMMER = { stop: 0, pause: 1, paused: 2 } as const;
/** Float64 counters per worker: ops, then one per size bucket. */
export const HAMMER_ROW = 16;
/** Size buckets of the workers' kmalloc trace handler, with their upper limits. */
export const HAMMER_SIZES = ["≤32", "≤64", "≤128", "≤256", "≤512", "≤1k", "≤4k", ">4k"] as const;
export const HAMMER_LIMITS = [32, 64, 128, 256, 512, 1024, 4096, Infinity] as const;
