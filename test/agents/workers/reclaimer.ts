/*
 * The two workers of test/reclaim-reclaimer.test.ts. Role "die": attach, leave memory in every
 * place a slot keeps it (sheaves, deferred frees, kfreeRcu objects, pcp pages), report the slot
 * and wait to be terminated. Role "reclaim": attach, reclaim the slot the host names, stopping for
 * ever at the nth occurrence of one lock point inside reclaimSlot (its reentry hook waits there)
 * so that the host terminates it mid-reclaim; it reports "done" if the reclaim finished first.
 */
import { parentPort, workerData } from "node:worker_threads";
import { Heap } from "../../../src/index.js";
import { Prng } from "../../support/util.js";

const { buffer, flag, role, seed } = workerData as { buffer: SharedArrayBuffer; flag: SharedArrayBuffer; role: "die" | "reclaim"; seed: number };
const heap = Heap.attach(buffer);
const stop = new Int32Array(flag);
if (role === "die") {
  const rng = new Prng(seed);
  for (const n of [8, 16, 64, 192, 512, 2048, 4096]) {
    const xs: number[] = [];
    for (let i = 0; i < 300; i++) xs.push(heap.kmalloc(n + rng.range(0, 7))); // more than two sheaves of each class
    xs.forEach((x, i) => (i % 3 === 0 ? heap.kfreeRcu(x) : i % 3 === 1 ? heap.kfreeNolock(x) : heap.kfree(x)));
  }
  for (let i = 0; i < 8; i++) {
    const order = rng.range(0, 2);
    heap.freePages(heap.allocPages(order), order);
  }
  parentPort!.postMessage({ cpu: heap.cpu });
  Atomics.wait(stop, 0, 0); // until terminated
} else {
  parentPort!.once("message", (m: { cpu: number; point: string; nth: number }) => {
    let seen = 0;
    heap.setReentryHook((p) => {
      if (p !== m.point || ++seen !== m.nth) return;
      parentPort!.postMessage({ parked: p });
      Atomics.wait(stop, 0, 0); // until terminated
    });
    heap.reclaimSlot(m.cpu);
    parentPort!.postMessage({ parked: null });
    Atomics.wait(stop, 0, 0);
  });
  parentPort!.postMessage({ cpu: heap.cpu });
}
