/**
 * The demo's control block: a small SharedArrayBuffer outside the heap through which the main
 * thread stops the workers and reads their counters for the live view. Each worker writes only its
 * own 256-byte row (plain stores); the main thread's reads may be a moment stale, which is fine for
 * a live view. Final figures come with each worker's "done" message.
 */
import { KMALLOC_SIZES } from "../src/index.js";

export const C = {
  ops: 0,
  lookups: 1,
  hits: 2,
  inserts: 3,
  replaces: 4,
  removes: 5,
  migOut: 6,
  migIn: 7,
  reinserted: 8,
  scans: 9,
  scanned: 10,
  allocFail: 11,
  bugs: 12,
  nolockFail: 13,
  samples: 14,
  contended: 15,
  /** Net entries this worker added to the table (may be negative). */
  entries: 16,
  /** Values this worker checked and freed (kfreeRcu). */
  frees: 17,
  /** ... of which another agent had allocated. */
  foreignFrees: 18,
  /** Entries evicted because an allocation failed. */
  evicted: 19,
  /** Allocations seen by the kmalloc trace hook, per size bucket (SIZE_LABELS). */
  sizes: 24,
} as const;
export const ROW = 40;

/** Size buckets of the trace hook: the kmalloc classes, then everything above 8 KiB. */
export const SIZE_LABELS = [...KMALLOC_SIZES.map((s) => (s >= 1024 ? `${s >> 10}k` : `${s}`)), ">8k"];

const SIZE_INDEX = new Uint8Array(1025);
for (let b = 0, c = 0; b <= 1024; b++) {
  while (KMALLOC_SIZES[c]! < b * 8) c++;
  SIZE_INDEX[b] = c;
}

/** The trace hook's bucket for a request of `size` bytes. */
export function sizeBucket(size: number): number {
  return size <= 8192 ? SIZE_INDEX[(size + 7) >> 3]! : KMALLOC_SIZES.length;
}

/** Word 0 of the Int32 view: set to 1 to stop the workers. */
export const STOP = 0;

export interface Control {
  buffer: SharedArrayBuffer;
  i32: Int32Array;
  f64: Float64Array;
}

export function makeControl(workers: number): Control {
  const buffer = new SharedArrayBuffer(64 + workers * ROW * 8);
  return openControl(buffer);
}

export function openControl(buffer: SharedArrayBuffer): Control {
  return { buffer, i32: new Int32Array(buffer, 0, 16), f64: new Float64Array(buffer, 64) };
}

/** What a worker posts to the main thread. */
export type WorkerMessage =
  | { type: "ready"; cpu: number; log: boolean }
  | { type: "bug"; message: string }
  | { type: "stopped" }
  | { type: "done"; counters: number[]; hookError: string | null; logFreed: number }
  | { type: "fatal"; message: string };

/** What the main thread posts to a worker. */
export type MainMessage = { type: "go" } | { type: "drain" };

export interface WorkerData {
  buffer: SharedArrayBuffer;
  control: SharedArrayBuffer;
  hdr: number;
  index: number;
  nWorkers: number;
  seed: number;
}
