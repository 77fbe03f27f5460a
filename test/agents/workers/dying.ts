/*
 * A worker that dies inside the allocator: it attaches, then, from a reentry hook fired while it
 * holds the zone lock, tells the parent and blocks until the parent terminates it.
 */
import { parentPort, workerData } from "node:worker_threads";
import { Heap } from "../../../src/index.js";

const { buffer, flag } = workerData as { buffer: SharedArrayBuffer; flag: SharedArrayBuffer };
const heap = Heap.attach(buffer);
const cell = new Int32Array(flag);
parentPort!.postMessage({ cpu: heap.cpu });
heap.setReentryHook((point) => {
  if (point !== "zone:acquire") return;
  parentPort!.postMessage({ holding: point });
  Atomics.wait(cell, 0, 0); // until terminated
});
heap.allocPages(5); // order 5 goes to the buddy lists under the zone lock
