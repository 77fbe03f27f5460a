/*
 * A worker of a debug heap that stops for ever inside one object allocation or free of one kind,
 * at a reentry hook point or in an object trace handler, and reports the object (when the trace
 * record names it). The host terminates it there and reclaims its slot
 * (test/agents/reclaim-debug-hand.test.ts).
 */
import { parentPort, workerData } from "node:worker_threads";
import { Heap } from "../../../src/index.js";

/** What the worker does once armed, and where it stops: a reentry hook point or a trace event. */
export type DebugHandScenario =
  | "cache-alloc@sheaf:release" // popped off its sheaf, not yet marked allocated
  | "cache-alloc@sheaf:acquire" // before the pop: still on its sheaf
  | "kmallocNolock@kmalloc" // the nolock path traces before it marks the object allocated
  | "kmallocNolock-256@list:release#2" // no sheaf to be had: the first list lock finds no partial slab, the second (the new slab's) took it off its freelist
  | "kmalloc@kmalloc" // traced after it is marked allocated: handed out
  | "cache-free@kmem_cache_free" // marked free, on no list yet
  | "kfreeNolock@kfree" // marked free, on no list yet (the nolock free)
  | "cache-free@sheaf:acquire" // marked free, about to be pushed on the main sheaf
  | "cache-free@sheaf:release"; // pushed on the main sheaf: free, on exactly one list

const { buffer, scenario } = workerData as { buffer: SharedArrayBuffer; scenario: DebugHandScenario };
const heap = Heap.attach(buffer);
const stop = new Int32Array(new SharedArrayBuffer(4));
const cache = heap.findCache("dbg-64");
if (cache === null) throw new Error("the host creates dbg-64");
const [op, where] = scenario.split("@") as [string, string];
const [at, nth] = where.split("#") as [string, string | undefined];
let armed = false;
let seen = 0;
let obj = 0;
const park = (addr: number): void => {
  parentPort!.postMessage({ parked: at, cpu: heap.cpu, addr });
  Atomics.wait(stop, 0, 0); // until terminated
};
if (at.includes(":")) {
  heap.setReentryHook((p) => {
    if (!armed || p !== at || ++seen < Number(nth ?? 1)) return;
    armed = false;
    park(obj);
  });
} else {
  heap.trace.on(at as "kmalloc", (e) => {
    if (!armed) return;
    armed = false;
    park(e.addr ?? 0);
  });
}
// Warm up: the cache's main sheaf holds objects, so the armed call takes the sheaf path.
cache.free(cache.alloc());
heap.kfree(heap.kmalloc(64));
obj = op === "cache-free" ? cache.alloc() : op === "kfreeNolock" ? heap.kmalloc(64) : 0;
armed = true;
if (op === "cache-alloc") cache.alloc();
else if (op === "kmallocNolock") heap.kmallocNolock(64, 0);
else if (op === "kmallocNolock-256") heap.kmallocNolock(200, 0); // a class this slot has no sheaf of
else if (op === "kmalloc") heap.kmalloc(64);
else if (op === "cache-free") cache.free(obj);
else heap.kfreeNolock(obj);
parentPort!.postMessage({ parked: null, cpu: heap.cpu, addr: 0 });
