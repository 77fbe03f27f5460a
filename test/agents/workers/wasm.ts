/*
 * A worker that instantiates the test module (test/support/wasm.ts) on the heap's WebAssembly
 * memory, attaches to the heap with Heap.attach(memory), and:
 *   - sums and rewrites (through Wasm) the array the main thread allocated at workerData.addr;
 *   - measures the string the main thread stored at workerData.str with Wasm's strlen;
 *   - allocates an array of its own, fills it through Wasm, and hands its address back;
 *   - grows the heap (memory.grow) by allocating pages, and hands back an address in the new pages.
 */
import { parentPort, workerData } from "node:worker_threads";
import { Heap, type WasmMemory } from "../../../src/index.js";
import { WA } from "../../support/wasm.js";

const { memory, bytes, addr, n, str, growPages } = workerData as {
  memory: WasmMemory;
  bytes: Uint8Array;
  addr: number;
  n: number;
  str: number;
  growPages: number;
};
const { instance } = await WA.instantiate(bytes, { env: { memory } });
const wasm = instance.exports as unknown as { sum(p: number, n: number): number; fill(p: number, n: number, v: number): void; strlen(p: number): number };
const heap = Heap.attach(memory);
const sumBefore = wasm.sum(addr, n);
wasm.fill(addr, n, 0.25);
const strBytes = wasm.strlen(str + 4);
const mine = heap.allocArray(Float64Array, 64)!;
wasm.fill(mine.byteOffset, 64, 3);
// Grow through memory.grow: order-4 blocks until one lies past the heap's size at the start.
const sizeBefore = heap.size;
const blocks: number[] = [];
let past = 0;
for (let i = 0; i < growPages && past === 0; i++) {
  const p = heap.allocPages(4);
  if (p === 0) break;
  blocks.push(p);
  if (p >= sizeBefore) past = p;
}
if (past !== 0) wasm.fill(past, 8, 7);
for (const p of blocks) if (p !== past) heap.freePages(p, 4);
const result = { cpu: heap.cpu, sumBefore, strBytes, mine: mine.byteOffset, past, sizeBefore, sizeAfter: heap.size, bufferBytes: memory.buffer.byteLength };
heap.detach();
parentPort!.postMessage(result);
