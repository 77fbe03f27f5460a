/*
 * A worker that stops for ever at one lock point (its reentry hook waits there) while it frees or
 * allocates objects of every size class, so that the host can terminate it at that instant and
 * reclaim its slot (test/reclaim-points.test.ts).
 */
import { parentPort, workerData } from "node:worker_threads";
import { Heap } from "../../../src/index.js";

const { buffer, flag, point, mode, nth } = workerData as {
  buffer: SharedArrayBuffer;
  flag: SharedArrayBuffer;
  point: string;
  mode: "free" | "alloc" | "large";
  /** Stop at this occurrence of the point (1: the first). */
  nth: number;
};
const heap = Heap.attach(buffer);
const stop = new Int32Array(flag);
const SIZES = mode === "large" ? [8192, 16384, 65536, 1 << 20] : [8, 64, 192, 512, 2048];
const held: number[] = [];
for (let i = 0; i < (mode === "large" ? 8 : 3000); i++) held.push(heap.kmalloc(SIZES[i % SIZES.length]!));
let armed = true;
let seen = 0;
heap.setReentryHook((p) => {
  if (!armed || p !== point || ++seen < nth) return;
  armed = false;
  parentPort!.postMessage({ parked: p, cpu: heap.cpu });
  Atomics.wait(stop, 0, 0); // until terminated
});
if (mode === "alloc") for (let i = 0; i < 20000 && armed; i++) held.push(heap.kmalloc(SIZES[i % SIZES.length]!));
else for (const a of held) heap.kfree(a);
parentPort!.postMessage({ parked: null, cpu: heap.cpu });
