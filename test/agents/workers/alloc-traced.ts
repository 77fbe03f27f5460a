/*
 * A worker that stops for ever inside its first page allocation of one kind: its mm_page_alloc
 * trace handler waits there, after the allocator took the block and before the call returned.
 * The host terminates it at that instant and reclaims its slot (test/reclaim-alloc-hand.test.ts).
 */
import { parentPort, workerData } from "node:worker_threads";
import { Heap } from "../../../src/index.js";

export type AllocKind = "allocPages" | "allocPagesNolock" | "kmalloc-large";

const { buffer, kind } = workerData as { buffer: SharedArrayBuffer; kind: AllocKind };
const heap = Heap.attach(buffer);
const stop = new Int32Array(new SharedArrayBuffer(4));
heap.trace.on("mm_page_alloc", (e) => {
  parentPort!.postMessage({ cpu: heap.cpu, addr: e.addr, order: e.order });
  Atomics.wait(stop, 0, 0); // until terminated
});
if (kind === "allocPages") heap.allocPages(3);
else if (kind === "allocPagesNolock") heap.allocPagesNolock(2);
else heap.kmalloc(1 << 18);
parentPort!.postMessage({ cpu: heap.cpu, addr: -1, order: -1 });
