/*
 * A worker that stops for ever at the nth "list:acquire" or "list:release" point of a named cache
 * call, while it allocates a new sheaf (its first alloc) or frees one (cache.shrink of a cache
 * whose main sheaf holds objects), or at a "barn:release" point while it trades its full remote
 * sheaf for an empty one (freeing the host's objects). The host terminates it there and reclaims its slot
 * (test/reclaim-sheaf-hand.test.ts).
 */
import { parentPort, workerData } from "node:worker_threads";
import { Heap } from "../../../src/index.js";
import { parkAtHookPoint } from "./common.js";

export type SheafScenario = "alloc" | "shrink" | "remote";

const { buffer, scenario, point, nth, objs } = workerData as { buffer: SharedArrayBuffer; scenario: SheafScenario; point: string; nth: number; objs?: number[] };
const heap = Heap.attach(buffer);
const cache = heap.findCache("hand-64");
if (cache === null) throw new Error("the host creates hand-64");
const park = parkAtHookPoint(heap, point, nth);
if (scenario === "alloc") {
  park.armed = true;
  cache.alloc();
} else if (scenario === "remote") {
  // The host's objects: remote frees, into this slot's remote sheaf, traded at the barn when full.
  park.armed = true;
  for (const o of objs!) cache.free(o);
} else {
  const objs: number[] = [];
  for (let i = 0; i < 10; i++) objs.push(cache.alloc());
  for (const o of objs) cache.free(o);
  park.armed = true;
  cache.shrink();
}
parentPort!.postMessage({ parked: null, cpu: heap.cpu });
