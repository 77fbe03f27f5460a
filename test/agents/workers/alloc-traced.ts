/*
 * A worker that stops for ever inside its first page allocation of one kind: its mm_page_alloc
 * trace handler waits there, after the allocator took the block and before the call returned.
 * The host terminates it at that instant and reclaims its slot (test/agents/reclaim-alloc-hand.test.ts).
 * Two kinds stop later: "kmalloc-large-event" in the kmalloc event of a large kmalloc, and
 * "krealloc-large" in the kfree event of the small object a krealloc to 256 KiB is leaving (the
 * new block taken and filled, the call not returned).
 */
import { parentPort, workerData } from "node:worker_threads";
import { Heap } from "../../../src/index.js";

export type AllocKind = "allocPages" | "allocPagesNolock" | "kmalloc-large" | "kmalloc-large-event" | "krealloc-large";

const { buffer, kind } = workerData as { buffer: SharedArrayBuffer; kind: AllocKind };
const heap = Heap.attach(buffer);
const stop = new Int32Array(new SharedArrayBuffer(4));
const event = kind === "kmalloc-large-event" ? "kmalloc" : kind === "krealloc-large" ? "kfree" : "mm_page_alloc";
const small = kind === "krealloc-large" ? heap.kmalloc(100) : 0;
let block = { addr: -1, order: -1 };
heap.trace.on("mm_page_alloc", (e) => {
  block = { addr: e.addr ?? -1, order: e.order ?? -1 };
});
heap.trace.on(event, (e) => {
  if (event === "kmalloc" && (e.size ?? 0) <= 8192) return;
  parentPort!.postMessage({ cpu: heap.cpu, ...block });
  Atomics.wait(stop, 0, 0); // until terminated
});
if (kind === "krealloc-large") heap.krealloc(small, 1 << 18);
else if (kind === "allocPages") heap.allocPages(3);
else if (kind === "allocPagesNolock") heap.allocPagesNolock(2);
else heap.kmalloc(1 << 18); // kmalloc-large, kmalloc-large-event
parentPort!.postMessage({ cpu: heap.cpu, addr: -1, order: -1 });
