/*
 * A worker terminated at each lock point of the free and allocation slow paths (its reentry hook
 * holds it there), then reclaimSlot: the heap must validate, hand out no memory twice, and go on
 * allocating. A sheaf traded at the barn, a slab being released and a page block taken from the
 * pcp or buddy lists are each in exactly one place, or in the dead slot's hand as an allocated
 * block (leaked, never handed out twice), at every lock point.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Worker } from "node:worker_threads";
import { Heap } from "../../src/index.js";

const POINTS = ["sheaf", "barn", "list", "pcp", "zone"].flatMap((l) => [`${l}:acquire`, `${l}:release`]);
const SIZES = [8, 64, 192, 512, 2048];

async function parkAndKill(heap: Heap, point: string, mode: "free" | "alloc" | "large", nth: number): Promise<string | null> {
  const w = new Worker(new URL("./workers/parked.js", import.meta.url), {
    workerData: { buffer: heap.buffer, point, mode, nth },
  });
  try {
    const m = await new Promise<{ parked: string | null; cpu: number }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the worker never reached ${point}`)), 20_000);
      w.once("message", (msg) => { clearTimeout(timer); resolve(msg as { parked: string | null; cpu: number }); });
      w.once("error", (e) => { clearTimeout(timer); reject(e); });
    });
    await w.terminate();
    heap.reclaimSlot(m.cpu);
    return m.parked;
  } finally {
    await w.terminate();
  }
}

// The first occurrence of each point, and a later one (a new slab's list lock comes after a sheaf's).
for (const [mode, nths] of [["free", [1, 4]], ["alloc", [1, 4]], ["large", [1, 3]]] as const) {
  test(`a worker terminated at every lock point of the ${mode} slow paths: reclaimSlot leaves a valid heap that hands out nothing twice`, async () => {
    for (const point of POINTS) for (const nth of nths) {
      const heap = Heap.create({ size: 16 << 20, cpus: 4 });
      const parked = await parkAndKill(heap, point, mode, nth);
      heap.validate();
      // Everything the heap still has, once each: no two blocks overlap.
      const owner = new Map<number, number>();
      const got: number[] = [];
      for (const size of SIZES) {
        for (let i = 0; i < 3000; i++) {
          const a = heap.kmalloc(size);
          if (a === 0) break;
          got.push(a);
          for (let w = a; w < a + size; w += 8) {
            assert.equal(owner.get(w), undefined, `${point} #${nth} (${mode}, parked at ${parked}): kmalloc(${size}) = ${a} overlaps the block at ${owner.get(w)}`);
            owner.set(w, a);
          }
        }
      }
      assert.ok(got.length > 10_000, `${point} #${nth} (${mode}): the heap goes on allocating (${got.length})`);
      heap.kfreeBulk(got);
      heap.shrink();
      heap.validate();
      heap.detach();
    }
  });
}
