/*
 * A worker that stops for ever at one lock point (its reentry hook waits there) in the middle of a
 * scenario that leaves something in its hands inside the allocator: a page block on its way back,
 * empty slabs a shrink is releasing, the rest of a kfreeRcu batch. The host terminates it there and
 * reclaims its slot (test/reclaim-trust.test.ts). Every block the scenario allocated, it frees.
 */
import { parentPort, workerData } from "node:worker_threads";
import { Heap } from "../../../src/index.js";

export type HandScenario = "idle" | "pages" | "large" | "shrink" | "rcu" | "list" | "drain" | "pcploop";

const { buffer, flag, scenario, point, nth } = workerData as {
  buffer: SharedArrayBuffer;
  flag: SharedArrayBuffer;
  scenario: HandScenario;
  point: string;
  nth: number;
};
const heap = Heap.attach(buffer);
const stop = new Int32Array(flag);
let armed = false;
let seen = 0;
const park = (p: string | null): void => {
  parentPort!.postMessage({ parked: p, cpu: heap.cpu });
  Atomics.wait(stop, 0, 0); // until terminated
};
heap.setReentryHook((p) => {
  if (!armed || p !== point || ++seen < nth) return;
  armed = false;
  park(p);
});
switch (scenario) {
  case "idle":
    break;
  case "pages": {
    const a = heap.allocPages(6); // above the per-CPU lists (PCP_LIST_MAX_ORDER): the zone lock
    armed = true;
    heap.freePages(a, 6);
    break;
  }
  case "large": {
    const a = heap.kmalloc(1 << 20);
    armed = true;
    heap.kfree(a);
    break;
  }
  case "shrink": {
    // A named cache: shrink() takes named caches first, so its first list release is this cache's.
    const c = heap.createCache("hand-2048", 2048);
    const objs: number[] = [];
    for (let i = 0; i < 600; i++) objs.push(c.alloc());
    c.freeBulk(objs);
    armed = true;
    heap.shrink();
    break;
  }
  case "rcu": {
    const objs: number[] = [];
    for (let i = 0; i < 2000; i++) objs.push(heap.kmalloc(64));
    for (const a of objs) heap.kfreeRcu(a);
    armed = true;
    heap.rcuBarrier();
    break;
  }
  case "pcploop": {
    // A slot busy on its pcp lists: it hands its pcp word over when another slot asks for it.
    parentPort!.postMessage({ parked: null, cpu: heap.cpu });
    while (Atomics.load(stop, 1) === 0) heap.freePages(heap.allocPages(0), 0);
    heap.detach();
    parentPort!.postMessage({ detached: true });
    Atomics.wait(stop, 0, 0);
    break;
  }
  case "drain": {
    // shrink() drains every other slot's pcp lists: it takes their pcp words as a remote drainer.
    armed = true;
    heap.shrink();
    break;
  }
  case "list": {
    const objs: number[] = [];
    for (let i = 0; i < 3000; i++) objs.push(heap.kmalloc(64));
    armed = true;
    for (const a of objs) heap.kfree(a);
    break;
  }
}
park(null);
