/*
 * The freeing side of test/agents/destroy-drain.test.ts: each round it frees the objects the host
 * posts with kfreeNolock (onto its deferred list when the sheaf is busy), acknowledges, and keeps
 * making normal calls, whose entry drains that list while the host destroys the cache.
 */
import { isMainThread } from "node:worker_threads";
import { Heap } from "../../../src/index.js";
import { post, runWorker, type Base } from "./common.js";

export const POSTED = 0;
export const ACKED = 1;
export const STOP = 2;
export const COUNT = 3;
export const ADDRS = 16;

// The test imports the words above; only a worker runs the loop.
if (!isMainThread) runWorker<Base>((data) => {
  const s = new Int32Array(data.ctrl);
  const heap = Heap.attach(data.buffer);
  let seen = 0;
  while (Atomics.load(s, STOP) === 0) {
    const q = Atomics.load(s, POSTED);
    if (q !== seen) {
      seen = q;
      for (let i = 0; i < s[COUNT]!; i++) heap.kfreeNolock(s[ADDRS + i]!);
      Atomics.store(s, ACKED, q);
    }
    heap.kfree(heap.kmalloc(8 + (q & 63)));
  }
  const cpu = heap.cpu;
  heap.detach();
  post({ type: "done", cpu });
});
