/*
 * The two sides of test/agents/bulk-race.test.ts. The batcher loops cache.allocBulk / freeBulk on
 * cache "bulk-race", with the control word SEQ odd while a call runs. The guesser frees addresses
 * of that cache (every object it ever held, a list the batcher shares) only while SEQ is odd: the
 * object is then free on a list, in the batch's hand, or (the call handing the batch over) its
 * caller's. A free is refused or, at the hand-over, a free of the batcher's object, which the
 * batcher's own free then finds already free. The batcher frees nothing while a free of the
 * guesser's is under way (BUSY).
 */
import { GFP, Heap, type HeapError } from "../../../src/index.js";
import { Prng } from "../../support/common.js";
import { post, runWorker, type Base } from "./common.js";

export const SEQ = 0;
export const READY = 1;
export const DONE = 2;
export const NR_ADDRS = 3;
export const BUSY = 4;

/**
 * The batches' flags: each takes objects off the sheaf with their tags on. Not NOWAIT or ATOMIC:
 * a refill that may not wait fails when the zone lock is busy, and the batch's next object then
 * comes through cacheAlloc, whose allocation instant is not caught (the README's misuse table).
 */
const GFPS = [0, GFP.ZERO, GFP.NOWARN, GFP.ZERO | GFP.NOWARN];

export interface BulkRaceData extends Base {
  role: "batcher" | "guesser";
  addrs: SharedArrayBuffer;
  ms: number;
}

runWorker<BulkRaceData>((data) => {
  const heap = Heap.attach(data.buffer);
  const ctrl = new Int32Array(data.ctrl);
  const addrs = new Uint32Array(data.addrs);
  const cache = heap.findCache("bulk-race")!;
  const rng = new Prng(data.seed);
  const end = Date.now() + data.ms;
  if (data.role === "batcher") {
    // Every address of the cache the guesser may try: all the objects a large batch takes.
    const warm: number[] = [];
    const got = cache.allocBulk(addrs.length, warm);
    addrs.set(warm);
    cache.freeBulk(warm);
    Atomics.store(ctrl, NR_ADDRS, got);
    Atomics.store(ctrl, READY, 1);
    let calls = 0;
    let dups = 0;
    let handedOverFrees = 0;
    const out: number[] = [];
    while (Date.now() < end) {
      const n = 1 + (rng.u32() % 300);
      Atomics.add(ctrl, SEQ, 1); // odd: inside allocBulk
      const k = cache.allocBulk(n, out, GFPS[rng.u32() % GFPS.length]);
      Atomics.add(ctrl, SEQ, 1);
      // The guesser's free that began inside the call ends before this agent frees anything: two
      // frees of one object at the same instant are the race no allocator without atomics catches.
      while (Atomics.load(ctrl, BUSY) !== 0);
      calls++;
      const seen = new Set<number>();
      for (let i = 0; i < k; i++) {
        if (seen.has(out[i]!)) dups++;
        seen.add(out[i]!);
      }
      try {
        cache.freeBulk(out.slice(0, k));
      } catch {
        // The guesser freed one of them as the call handed it over: free the rest one by one.
        for (const x of seen) {
          try {
            cache.free(x);
          } catch (e) {
            if ((e as HeapError).code !== "EDOUBLEFREE") throw e;
            handedOverFrees++;
          }
        }
      }
    }
    Atomics.store(ctrl, DONE, 1);
    const cpu = heap.cpu;
    heap.detach();
    post({ type: "done", cpu, calls, dups, handedOverFrees });
    return;
  }
  while (Atomics.load(ctrl, READY) === 0) Atomics.wait(ctrl, READY, 0, 10);
  const nr = Atomics.load(ctrl, NR_ADDRS);
  let refused = 0;
  let accepted = 0;
  while (Atomics.load(ctrl, DONE) === 0) {
    Atomics.store(ctrl, BUSY, 1);
    const seq0 = Atomics.load(ctrl, SEQ);
    if ((seq0 & 1) === 0) {
      Atomics.store(ctrl, BUSY, 0);
      continue;
    }
    const x = addrs[rng.u32() % nr]!;
    const how = rng.u32() % 3;
    try {
      if (how === 0) heap.kfree(x);
      else if (how === 1) cache.free(x);
      else heap.kfreeNolock(x);
      accepted++;
    } catch (e) {
      const code = (e as HeapError).code;
      if (code !== "EDOUBLEFREE" && code !== "EINVAL") throw e;
      refused++;
    }
    Atomics.store(ctrl, BUSY, 0);
  }
  const cpu = heap.cpu;
  heap.kfree(heap.kmalloc(8)); // a normal call: its entry drains what kfreeNolock deferred
  heap.detach();
  post({ type: "done", cpu, refused, accepted });
});
