/*
 * destroy() of a cache whose objects another agent has all freed with kfreeNolock, while that agent
 * drains its deferred list (workers/nolock-drain.ts). The count read the agent's deferred list and
 * its sheaves while objects moved from one to the other, with no name in between: an object could
 * be in neither place as read, and destroy said EBUSY (about 4 rounds in 10). Now a drain names
 * the object in C_FREEING before it leaves the list, and destroy reads the list, then that name,
 * then the sheaves, each object once.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Worker } from "node:worker_threads";
import { Heap } from "../../src/index.js";
import { ACKED, ADDRS, COUNT, POSTED, STOP } from "./workers/nolock-drain.js";

const ROUNDS = 150;

test("destroy() never says EBUSY for a cache whose objects another agent freed with kfreeNolock and is draining", async () => {
  const heap = Heap.create({ size: 16 << 20, cpus: 4, maxCaches: 1024 });
  const total = heap.stats().totalPages;
  const ctrl = new SharedArrayBuffer(4 * 64);
  const s = new Int32Array(ctrl);
  const w = new Worker(new URL("./workers/nolock-drain.js", import.meta.url), { workerData: { buffer: heap.buffer, ctrl, id: 0, seed: 0 } });
  const done = new Promise<void>((resolve, reject) => {
    w.on("message", (m: { type: string; message?: string }) => (m.type === "error" ? reject(new Error(m.message)) : resolve()));
    w.on("error", reject);
  });
  const busy: string[] = [];
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      const cache = heap.createCache(`drain-${round}`, 64);
      const out: number[] = [];
      cache.allocBulk(8, out);
      for (let i = 0; i < out.length; i++) s[ADDRS + i] = out[i]!;
      s[COUNT] = out.length;
      Atomics.store(s, POSTED, round);
      while (Atomics.load(s, ACKED) !== round);
      for (;;) {
        try {
          cache.destroy();
          break;
        } catch (e) {
          busy.push(`round ${round}: ${(e as Error).message}`);
          Atomics.wait(s, STOP, 0, 1); // let the drain finish, then destroy
        }
      }
    }
  } finally {
    Atomics.store(s, STOP, 1);
    await done;
  }
  assert.deepEqual(busy.slice(0, 3), [], `${busy.length} of ${ROUNDS} destroys refused`);
  heap.shrink();
  heap.validate();
  assert.equal(heap.stats().freePages, total, "every page is free again");
  heap.detach();
});
