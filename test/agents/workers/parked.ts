/*
 * A worker that stops for ever at one lock point (its reentry hook waits there) while it frees or
 * allocates objects of every size class, so that the host can terminate it at that instant and
 * reclaim its slot (test/reclaim-points.test.ts).
 */
import { parentPort, workerData } from "node:worker_threads";
import { Heap } from "../../../src/index.js";
import { parkAtHookPoint } from "./common.js";

const { buffer, point, mode, nth } = workerData as {
  buffer: SharedArrayBuffer;
  point: string;
  mode: "free" | "alloc" | "large";
  /** Stop at this occurrence of the point (1: the first). */
  nth: number;
};
const heap = Heap.attach(buffer);
const SIZES = mode === "large" ? [8192, 16384, 65536, 1 << 20] : [8, 64, 192, 512, 2048];
const held: number[] = [];
for (let i = 0; i < (mode === "large" ? 8 : 3000); i++) held.push(heap.kmalloc(SIZES[i % SIZES.length]!));
const park = parkAtHookPoint(heap, point, nth);
park.armed = true;
if (mode === "alloc") for (let i = 0; i < 20000 && park.armed; i++) held.push(heap.kmalloc(SIZES[i % SIZES.length]!));
else for (const a of held) heap.kfree(a);
parentPort!.postMessage({ parked: null, cpu: heap.cpu });
