/*
 * A worker that leaves without detaching. It attaches, leaves pages on its pcp lists, objects in
 * its sheaves, kfreeNolock frees on its deferred list (from a re-entry hook, while its own sheaf
 * lock is held) and kfreeRcu objects waiting for a grace period that its own open read section
 * holds up; it also keeps blocks live and tells the main thread where they are. Then it either
 * returns (mode "return": the thread exits with its slot attached) or blocks until the main thread
 * terminates it (mode "terminate").
 */
import { Heap } from "../../../src/index.js";
import { Prng, fillPattern, signature, waitWord } from "../../support/util.js";
import { type Base, post, runWorker } from "./common.js";

export interface ReclaimData extends Base {
  mode: "return" | "terminate";
  cacheName: string;
  /** ctrl word that is never set: the terminate-mode worker blocks on it. */
  parkAt: number;
}

runWorker<ReclaimData>((data) => {
  const heap = Heap.attach(data.buffer);
  const cache = heap.findCache(data.cacheName);
  if (cache === null) throw new Error(`findCache("${data.cacheName}") found nothing`);
  const rng = new Prng(data.seed);
  let n = 0;
  const live = { pages: [] as number[][], objs: [] as number[][], cacheObjs: [] as number[][] };
  const mark = (addr: number, size: number): number[] => {
    const sig = signature(data.id, n++);
    fillPattern(heap.i32, heap.u8, addr, size, sig);
    return [addr, size, sig];
  };

  // Pages: many allocated and freed (they stay on this slot's pcp lists), a few kept live.
  const pages: number[][] = [];
  for (let k = 0; k < 60; k++) {
    const order = rng.range(0, 3);
    const addr = heap.allocPages(order);
    if (addr === 0) throw new Error("allocPages failed");
    pages.push([addr, order]);
  }
  for (const [addr, order] of pages.splice(5)) heap.freePages(addr!, order!);
  for (const [addr, order] of pages) live.pages.push([...mark(addr!, 4096 << order!), order!]);

  // kmalloc objects of 8..1024 B: most freed (into this slot's sheaves), some live, one large.
  const objs: number[] = [];
  for (let k = 0; k < 400; k++) objs.push(heap.kmalloc(rng.range(8, 1024)));
  if (objs.includes(0)) throw new Error("kmalloc failed");
  for (const o of objs.splice(40)) heap.kfree(o);
  for (const o of objs) live.objs.push(mark(o, heap.ksize(o)));
  const big = heap.kmalloc(20_000);
  live.objs.push(mark(big, 20_000));

  // Objects of the main thread's named cache.
  const cobjs: number[] = [];
  for (let k = 0; k < 150; k++) cobjs.push(cache.alloc());
  if (cobjs.includes(0)) throw new Error("cache.alloc failed");
  for (const o of cobjs.splice(20)) cache.free(o);
  for (const o of cobjs) live.cacheObjs.push(mark(o, cache.objectSize));

  // kfreeRcu inside an open read section: the grace period cannot end while this slot is inside.
  const rcuObjs: number[] = [];
  for (let k = 0; k < 12; k++) rcuObjs.push(heap.kmalloc(rng.range(8, 512)));
  for (let k = 0; k < 6; k++) rcuObjs.push(cache.alloc());
  heap.rcuReadLock();
  for (const o of rcuObjs) heap.kfreeRcu(o);

  // kfreeNolock while this slot holds its kmalloc-2k sheaf lock: the frees are deferred.
  const x = heap.kmalloc(2048);
  const y = heap.kmalloc(2000);
  let fired = false;
  heap.setReentryHook((point) => {
    if (point === "sheaf:acquire" && !fired) {
      fired = true;
      heap.kfreeNolock(x);
      heap.kfreeNolock(y);
    }
  });
  // Empty the kmalloc-2k sheaf until an allocation takes the slow path and the hook runs.
  for (let k = 0; k < 64 && !fired; k++) {
    const o = heap.kmalloc(2048);
    live.objs.push(mark(o, 2048));
  }
  heap.setReentryHook(null);
  if (!fired) throw new Error("the re-entry hook never ran at sheaf:acquire");
  // From here on, no allocator call but stats(): the next one would drain the deferred list.
  const s = heap.stats();
  post({
    type: "ready",
    cpu: heap.cpu,
    live,
    deferred: s.deferredObjects,
    waiting: s.rcu.waitingObjects,
    pcp: s.pcp[heap.cpu],
    inSection: heap.rcuReadLockHeld(),
  });
  if (data.mode === "terminate") {
    waitWord(new Int32Array(data.ctrl), data.parkAt, 1, "termination by the main thread", 60_000);
    throw new Error("the main thread did not terminate this worker");
  }
  // mode "return": leave with the slot attached.
});
