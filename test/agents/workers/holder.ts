/*
 * A worker that stops while it holds an allocator lock: from its reentry hook, at the first time
 * the lock point `point` fires, it tells the parent and waits until the parent sets flag[0] to 1
 * (or terminates it). Then it finishes the call, frees what it took, detaches and says so.
 *   op "pages":  allocPages(5), under the zone lock
 *   op "kmalloc": kmalloc(64) until a slow path takes the list lock of kmalloc-64
 *   op "cache":  createCache, under the cache-table lock
 */
import { parentPort, workerData } from "node:worker_threads";
import { Heap } from "../../../src/index.js";

const { buffer, flag, point, op } = workerData as { buffer: SharedArrayBuffer; flag: SharedArrayBuffer; point: string; op: string };
const heap = Heap.attach(buffer);
const cell = new Int32Array(flag);
let fired = false;
heap.setReentryHook((p) => {
  if (fired || p !== point) return;
  fired = true;
  parentPort!.postMessage({ cpu: heap.cpu, holding: p });
  while (Atomics.load(cell, 0) === 0) Atomics.wait(cell, 0, 0, 100);
});
const taken: number[] = [];
if (op === "pages") {
  heap.freePages(heap.allocPages(5), 5);
} else if (op === "kmalloc") {
  for (let i = 0; i < 100_000 && !fired; i++) taken.push(heap.kmalloc(64));
} else if (op === "cache") {
  heap.createCache("held", 48).destroy();
}
heap.setReentryHook(null);
for (const a of taken) heap.kfree(a);
heap.detach();
parentPort!.postMessage({ done: true });
