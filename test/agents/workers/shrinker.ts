/*
 * A worker that streams batches of kmalloc(size) larger than a sheaf through the barn and calls
 * heap.shrink() now and then, while others do the same on the heap (shrink-concurrent.test.ts):
 * each shrink empties the barn one sheaf per lock hold while the others fill it again.
 */
import { Heap } from "../../../src/index.js";
import { Prng } from "../../support/util.js";
import { type Base, post, runWorker } from "./common.js";

export interface ShrinkerData extends Base {
  size: number;
  ms: number;
  shrinkChance: number;
}

runWorker<ShrinkerData>((data) => {
  const heap = Heap.attach(data.buffer);
  const rng = new Prng(data.seed);
  const end = performance.now() + data.ms;
  let batches = 0;
  let shrinks = 0;
  const objs: number[] = [];
  while (performance.now() < end) {
    const n = 50 + rng.below(1500);
    for (let i = 0; i < n; i++) {
      const a = heap.kmalloc(data.size);
      if (a === 0) break;
      objs.push(a);
    }
    for (let i = objs.length - 1; i > 0; i--) {
      const j = rng.below(i + 1);
      const t = objs[i]!;
      objs[i] = objs[j]!;
      objs[j] = t;
    }
    for (const a of objs) heap.kfree(a);
    objs.length = 0;
    batches++;
    if (rng.chance(data.shrinkChance)) {
      heap.shrink();
      shrinks++;
    }
  }
  heap.detach();
  post({ type: "done", batches, shrinks });
});
