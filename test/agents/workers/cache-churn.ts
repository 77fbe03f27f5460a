/*
 * Cache lifecycle churn: several workers create, destroy and find caches of a few shared names at
 * once, and allocate through what they found. Cache k always has objects of 32 * (k + 1) bytes, so
 * a handle that findCache paired with the wrong descriptor shows up in its name, its object size
 * or the size of what it allocates.
 */
import { type Heap, HeapError, type KmemCache } from "../../../src/index.js";
import { Heap as H } from "../../../src/index.js";
import { addWord, waitWord } from "../../support/util.js";
import { type Base, checkAbort, post, runWorker } from "./common.js";

export interface ChurnData extends Base {
  names: number;
  ops: number;
  workers: number;
  /** ctrl words */
  attachedAt: number;
  doneAt: number;
}

export const churnName = (k: number): string => `churn-${k}`;
export const churnSize = (k: number): number => 32 * (k + 1);

runWorker<ChurnData>((data) => {
  const ctrl = new Int32Array(data.ctrl);
  const heap: Heap = H.attach(data.buffer);
  addWord(ctrl, data.attachedAt, 1);
  waitWord(ctrl, data.attachedAt, data.workers, "every worker to attach");
  let s = data.seed >>> 0 || 1;
  const rnd = (n: number): number => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) % n;
  };
  const counts = { created: 0, destroyed: 0, found: 0, busy: 0, exists: 0, stale: 0, allocs: 0 };
  const expectCode = (e: unknown, codes: string[], what: string): string => {
    if (e instanceof HeapError && codes.includes(e.code)) return e.code;
    throw new Error(`${what}: ${e instanceof Error ? e.message : String(e)}`);
  };
  const use = (c: KmemCache, k: number): void => {
    if (c.name !== churnName(k) || c.objectSize !== churnSize(k)) {
      throw new Error(`looked for ${churnName(k)} (${churnSize(k)} B), got a handle to ${c.name} (${c.objectSize} B)`);
    }
    const objs: number[] = [];
    try {
      for (let i = 0; i < 1 + rnd(6); i++) {
        const o = c.alloc();
        if (o === 0) break;
        objs.push(o);
        if (heap.ksize(o) !== churnSize(k)) throw new Error(`${churnName(k)} handed out ${o}, an object of ${heap.ksize(o)} B`);
        heap.u8.fill(k, o, o + churnSize(k));
        counts.allocs++;
      }
    } catch (e) {
      if (expectCode(e, ["EINVAL"], "alloc through a found handle") === "EINVAL") counts.stale++;
    }
    for (const o of objs) {
      for (let b = 0; b < churnSize(k); b++) if (heap.u8[o + b] !== k) throw new Error(`object ${o} of ${churnName(k)} was overwritten`);
      // Free with the heap (always valid), not the handle (the cache may have been destroyed meanwhile).
      heap.kfree(o);
    }
  };
  for (let op = 0; op < data.ops; op++) {
    if ((op & 31) === 0) checkAbort(data, ctrl);
    const k = rnd(data.names);
    const what = rnd(4);
    if (what === 0) {
      try {
        use(heap.createCache(churnName(k), churnSize(k)), k);
        counts.created++;
      } catch (e) {
        expectCode(e, ["EINVAL"], "createCache");
        counts.exists++;
      }
    } else if (what === 1) {
      const c = heap.findCache(churnName(k));
      if (c === null) continue;
      try {
        c.destroy();
        counts.destroyed++;
      } catch (e) {
        const code = expectCode(e, ["EBUSY", "EINVAL"], "destroy");
        if (code === "EBUSY") counts.busy++;
        else counts.stale++;
      }
    } else {
      const c = heap.findCache(churnName(k));
      if (c === null) continue;
      counts.found++;
      use(c, k);
    }
    if (rnd(16) === 0) heap.shrink();
  }
  addWord(ctrl, data.doneAt, 1);
  waitWord(ctrl, data.doneAt, data.workers, "the other workers to finish", 60_000, true);
  heap.detach();
  post({ type: "done", counts });
});
