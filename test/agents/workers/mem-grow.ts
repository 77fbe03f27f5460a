/*
 * Workers on a heap in a shared WebAssembly.Memory (placement.test.ts): role "grow" grows the heap
 * with heap.grow (memory.grow) in steps while role "alloc" workers allocate page blocks, write and
 * check them; role "late" attaches after the growth and allocates in the new pages.
 */
import { parentPort, workerData } from "node:worker_threads";
import { Heap, PAGE_SIZE, type WasmMemory } from "../../../src/index.js";

const { memory, ctrl, role, id, steps } = workerData as { memory: WasmMemory; ctrl: SharedArrayBuffer; role: string; id: number; steps: number[] };
const c = new Int32Array(ctrl);
const heap = Heap.attach(memory);
const deadline = Date.now() + 20_000;
const out: Record<string, unknown> = { role, id, cpu: heap.cpu, sizeAtAttach: heap.size };
if (role === "grow") {
  const sizes: number[] = [];
  for (const s of steps) {
    sizes.push(heap.grow(s));
    // Let the allocators run between two growths.
    Atomics.wait(c, 1, 0, 5);
  }
  out.sizes = sizes;
  Atomics.store(c, 0, 1);
} else if (role === "alloc") {
  const live: number[] = [];
  let n = 0;
  let bad = 0;
  let maxAddr = 0;
  while (Atomics.load(c, 0) === 0 && Date.now() < deadline) {
    // Pages only: kmalloc across another agent's growth is the slab layer's own test.
    for (let i = 0; i < 16; i++, n++) {
      const order = n % 4;
      const p = heap.allocPages(order);
      if (p === 0) continue;
      const v = (id + n) & 0xff;
      heap.u8[p] = v;
      heap.u8[p + (PAGE_SIZE << order) - 1] = v;
      live.push(p, order, v);
      maxAddr = Math.max(maxAddr, p);
    }
    while (live.length > 3 * 200) free(live.shift()!, live.shift()!, live.shift()!);
  }
  while (live.length > 0) free(live.shift()!, live.shift()!, live.shift()!);
  // A handle's views follow the growth when its calls meet the new pages; these workers recycle
  // low pages and may never have met the last growth's (a loaded machine), so they ask, as the
  // README says a reader of new pages should.
  heap.refreshViews();
  function free(p: number, order: number, v: number): void {
    if (heap.u8[p] !== v || heap.u8[p + (PAGE_SIZE << order) - 1] !== v) bad++;
    heap.freePages(p, order);
  }
  Object.assign(out, { n, bad, maxAddr });
} else {
  // late: the heap's size as attach sees it, and blocks in the pages the growth added.
  const blocks: number[] = [];
  for (let p; (p = heap.allocPages(4)) !== 0; ) {
    blocks.push(p);
    heap.u8[p + (4096 << 4) - 1] = 1;
  }
  for (const p of blocks) heap.freePages(p, 4);
  Object.assign(out, { blocks: blocks.length, maxBlock: Math.max(...blocks) });
}
out.sizeAtEnd = heap.size;
heap.detach();
parentPort!.postMessage(out);
