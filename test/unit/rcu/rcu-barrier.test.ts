import assert from "node:assert/strict";
import { test } from "node:test";
import { Worker } from "node:worker_threads";
import { Heap } from "../../../src/index.js";

function spawn(role: string, buffer: SharedArrayBuffer, ctl: SharedArrayBuffer): Promise<void> {
  const w = new Worker(new URL("../../agents/workers/barrier.js", import.meta.url), { workerData: { role, buffer, ctl } });
  return new Promise<void>((resolve, reject) => {
    w.once("message", () => resolve());
    w.once("error", reject);
  }).finally(() => void w.terminate());
}

async function until(pred: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1000 && !pred(); i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(pred(), `timed out waiting for ${what}`);
}

test("rcuBarrier waits for objects another agent's rcuBarrier has taken and not yet freed", async () => {
  const h = Heap.create({ size: 16 << 20, cpus: 4 });
  h.freePages(h.allocPages(0), 0); // a pcp page for the kfreeRcu block
  const ctl = new SharedArrayBuffer(16);
  const flags = new Int32Array(ctl);
  const c = h.createCache("barrier-x", 64);
  const o = c.alloc();
  const reader = spawn("reader", h.buffer, ctl);
  await until(() => Atomics.load(flags, 0) === 1, "the reader to enter its section");
  h.kfreeRcu(o); // its grace period waits for the reader
  const barrier = spawn("barrier", h.buffer, ctl);
  await until(() => Atomics.load(flags, 2) === 1 && h.stats().vmstat.rcuFreed === 0, "the other barrier to start");
  await new Promise((r) => setTimeout(r, 50)); // it has taken slot 0's object by now
  h.rcuBarrier();
  assert.equal(Atomics.load(flags, 1), 1, "rcuBarrier returned only after the reader left");
  assert.equal(h.stats().rcu.waitingObjects, 0);
  c.destroy(); // no object of the cache is live or waiting
  await Promise.all([reader, barrier]);
  h.validate();
  h.detach();
});
