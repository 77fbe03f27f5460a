/*
 * A worker that hammers a heap for the inspector's test: kmalloc of mixed sizes (a trace handler
 * counts them by size), objects of a named cache, page blocks; frees at random (some kmalloc
 * values with kfreeRcu), so the zone fragments and the figures move. It pauses when asked (the test's quiet moment) and empties
 * everything it holds and detaches when told to stop.
 */
import { Heap } from "../../../src/index.js";
import { Prng, waitUntil } from "../../support/util.js";
import { HAMMER, HAMMER_LIMITS, HAMMER_ROW } from "../../support/hammer-control.js";
import { type Base, post, runWorker } from "./common.js";

export interface HammerData extends Base {
  counters: SharedArrayBuffer;
  cacheName: string;
}

const KIND_KMALLOC = 0;
const KIND_CACHE = 1;

runWorker<HammerData>((data) => {
  const heap = Heap.attach(data.buffer);
  const ctrl = new Int32Array(data.ctrl);
  const row = new Float64Array(data.counters, data.id * HAMMER_ROW * 8, HAMMER_ROW);
  const cache = heap.findCache(data.cacheName);
  if (cache === null) throw new Error(`no cache ${data.cacheName}`);
  heap.trace.on("kmalloc", (r) => {
    const size = r.size ?? 0;
    let b = 0;
    while (size > HAMMER_LIMITS[b]!) b++;
    row[1 + b]!++;
  });
  const rng = new Prng(data.seed);
  const addrs: number[] = [];
  const kinds: number[] = [];
  const free = (i: number): void => {
    const a = addrs[i]!;
    const k = kinds[i]!;
    if (k === KIND_KMALLOC) {
      // Some values go through RCU, as a reader might still see them.
      if (rng.chance(0.3)) heap.kfreeRcu(a);
      else heap.kfree(a);
    }
    else if (k === KIND_CACHE) cache.free(a);
    else heap.freePages(a, k - 2);
    const last = addrs.length - 1;
    addrs[i] = addrs[last]!;
    kinds[i] = kinds[last]!;
    addrs.pop();
    kinds.pop();
  };
  let n = 0;
  while (Atomics.load(ctrl, HAMMER.stop) === 0) {
    if ((++n & 63) === 0 && Atomics.load(ctrl, HAMMER.pause) === 1) {
      Atomics.add(ctrl, HAMMER.paused, 1);
      Atomics.notify(ctrl, HAMMER.paused);
      waitUntil(ctrl, HAMMER.pause, () => Atomics.load(ctrl, HAMMER.pause) === 0 || Atomics.load(ctrl, HAMMER.stop) !== 0, "the end of the pause", 30_000);
      Atomics.sub(ctrl, HAMMER.paused, 1);
      Atomics.notify(ctrl, HAMMER.paused);
    }
    // The number of live objects swings slowly, so the heap fills and empties.
    const target = 1500 + 1300 * Math.sin(n / 40000 + data.id);
    if (addrs.length > 0 && (addrs.length > target || rng.chance(0.35))) {
      free(rng.range(0, addrs.length - 1));
    } else {
      const pick = rng.weighted([72, 24, 4]);
      let a = 0;
      let kind = KIND_KMALLOC;
      if (pick === 0) {
        const size = rng.chance(0.03) ? rng.range(5000, 20000) : 1 << rng.range(4, 11);
        a = heap.kmalloc(rng.range(size >> 1, size));
      } else if (pick === 1) {
        a = cache.alloc();
        kind = KIND_CACHE;
      } else {
        const order = rng.range(0, 2);
        a = heap.allocPages(order);
        kind = 2 + order;
      }
      if (a !== 0) {
        addrs.push(a);
        kinds.push(kind);
      }
    }
    row[0]!++;
  }
  while (addrs.length > 0) free(addrs.length - 1);
  heap.detach();
  post({ type: "done" });
});
