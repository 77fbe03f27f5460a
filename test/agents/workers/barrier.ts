/*
 * rcuBarrier across agents. "reader": enter a read section, say so, stay 300 ms, record that it is
 * leaving, leave. "barrier": call rcuBarrier (it takes the other slots' pending objects and waits).
 */
import { parentPort, workerData } from "node:worker_threads";
import { Heap } from "../../../src/index.js";

const { role, buffer, ctl } = workerData as { role: string; buffer: SharedArrayBuffer; ctl: SharedArrayBuffer };
const flags = new Int32Array(ctl);
const heap = Heap.attach(buffer);
if (role === "reader") {
  heap.rcuReadLock();
  Atomics.store(flags, 0, 1);
  Atomics.wait(flags, 3, 0, 300);
  Atomics.store(flags, 1, 1); // leaving now
  heap.rcuReadUnlock();
} else {
  Atomics.store(flags, 2, 1);
  heap.rcuBarrier();
}
heap.detach();
parentPort!.postMessage("done");
