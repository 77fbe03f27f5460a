/*
 * Attach and detach from workers: scripted ENOCPU / slot reuse / EDETACHED (role "a", "b"), and
 * workers that attach and detach many times while carrying live blocks from one attachment to the
 * next and through a shared ring to other workers (role "cycle").
 */
import { GFP, Heap, HeapError } from "../../../src/index.js";
import { ATTACH, Prng, SharedRing, checkPattern, fillPattern, setWord, signature, sleepMs, waitWord, errCode } from "../../support/util.js";
import { type Base, checkAbort, post, runWorker } from "./common.js";

export interface AttachData extends Base {
  role: "a" | "b" | "cycle" | "churn";
  /** churn: ctrl word that tells it to stop. */
  stopAt?: number;
  ring?: SharedArrayBuffer;
  workers?: number;
  cycles?: number;
}


/**
 * Every call on a detached handle throws EDETACHED. (rcuReadLock / rcuReadUnlock are checked on
 * their own in rcu-workers.test.ts: while another agent that reused the slot is inside a read
 * section they are a separate case.)
 */
function checkDetached(heap: Heap, live: number, withRcu: boolean): void {
  const calls: Array<[string, () => unknown]> = [
    ["kmalloc", () => heap.kmalloc(64)],
    ["kfree", () => heap.kfree(live)],
    ["kfree(0)", () => heap.kfree(0)],
    ["allocPages", () => heap.allocPages(0)],
    ["allocPagesNolock", () => heap.allocPagesNolock(0)],
    ["kmallocNolock", () => heap.kmallocNolock(32)],
    ["createCache", () => heap.createCache("never", 64)],
    ["findCache", () => heap.findCache("kmalloc-64")],
    ...(withRcu ? ([["rcuReadLock", () => heap.rcuReadLock()]] as Array<[string, () => unknown]>) : []),
    ["synchronizeRcu", () => heap.synchronizeRcu()],
    ["kfreeRcu", () => heap.kfreeRcu(live)],
    ["stats", () => heap.stats()],
    ["validate", () => heap.validate()],
    ["shrink", () => heap.shrink()],
    ["detach", () => heap.detach()],
  ];
  for (const [name, fn] of calls) {
    const c = errCode(fn);
    if (c !== "EDETACHED") throw new Error(`${name} on a detached handle: ${c}, want EDETACHED`);
  }
  if (heap.attached) throw new Error("a detached handle says it is attached");
}

runWorker<AttachData>(async (data) => {
  const ctrl = new Int32Array(data.ctrl);
  if (data.role === "a") {
    const heap = Heap.attach(data.buffer);
    const obj = heap.kmalloc(100);
    heap.u32[obj >> 2] = 0xabcdef;
    post({ type: "attached", cpu: heap.cpu, obj });
    setWord(ctrl, ATTACH.A_ATTACHED, 1);
    waitWord(ctrl, ATTACH.A_GO_DETACH, 1, "the main thread's go to detach");
    // The object stays live after the detach: the main thread frees it.
    heap.detach();
    checkDetached(heap, obj, true);
    setWord(ctrl, ATTACH.A_DETACHED, 1);
    post({ type: "detached" });
    return;
  }
  if (data.role === "b") {
    waitWord(ctrl, ATTACH.A_ATTACHED, 1, "worker A to attach");
    const c = errCode(() => Heap.attach(data.buffer));
    if (c !== "ENOCPU") throw new Error(`attach with every slot taken: ${c}, want ENOCPU`);
    post({ type: "refused" });
    setWord(ctrl, ATTACH.B_REFUSED, 1);
    waitWord(ctrl, ATTACH.A_DETACHED, 1, "worker A to detach");
    const heap = Heap.attach(data.buffer);
    const cpu = heap.cpu;
    const objs: number[] = [];
    for (let k = 0; k < 500; k++) objs.push(heap.kmalloc(8 + (k % 300)));
    const page = heap.allocPages(2);
    if (page === 0 || objs.includes(0)) throw new Error("allocation failed after attaching to the reused slot");
    heap.freePages(page, 2);
    heap.kfreeBulk(objs);
    heap.detach();
    checkDetached(heap, objs[0]!, true);
    post({ type: "done", cpu });
    return;
  }

  if (data.role === "churn") {
    // Attach, fill and drain the pcp lists (long zone-lock holds, so others wait on it), detach.
    let cycles = 0;
    const out: number[] = [];
    const end = Date.now() + 30_000;
    while (Atomics.load(ctrl, data.stopAt!) === 0) {
      checkAbort(data, ctrl);
      if (Date.now() > end) throw new Error("never told to stop");
      let heap: Heap;
      try {
        heap = Heap.attach(data.buffer);
      } catch (e) {
        if (e instanceof HeapError && e.code === "ENOCPU") continue;
        throw e;
      }
      try {
        out.length = 0;
        heap.allocPagesBulk(800, out);
        for (const p of out) heap.freePages(p, 0);
        for (let k = 0; k < 4; k++) {
          const p = heap.allocPages(5);
          if (p !== 0) heap.freePages(p, 5);
        }
        heap.detach();
      } catch (e) {
        throw new Error(`cycle ${cycles}: ${(e as Error).message}`);
      }
      cycles++;
    }
    post({ type: "done", cycles });
    return;
  }

  // role "cycle"
  const ring = new SharedRing(data.ring!);
  const rng = new Prng(data.seed);
  const me = data.id;
  let counter = 0;
  interface Blk {
    addr: number;
    size: number;
    sig: number;
  }
  let carried: Blk[] = [];
  const cpusSeen = new Set<number>();
  let enocpu = 0;
  const entry = [0, 0, 0, 0];
  const attach = (): Heap => {
    const end = Date.now() + 20_000;
    for (;;) {
      checkAbort(data, ctrl);
      try {
        return Heap.attach(data.buffer);
      } catch (e) {
        if (!(e instanceof HeapError) || e.code !== "ENOCPU") throw e;
        enocpu++;
        Atomics.add(ctrl, ATTACH.ENOCPU, 1);
        if (Date.now() > end) throw new Error("no slot came free for 20 s");
        if (rng.chance(0.5)) sleepMs(rng.range(0, 2) * 0.1);
      }
    }
  };
  const check = (b: Blk, why: string): void => {
    const bad = checkPattern(heap0().i32, heap0().u8, b.addr, b.size, b.sig);
    if (bad !== null) throw new Error(`${why}: ${bad}`);
  };
  let cur: Heap | null = null;
  const heap0 = (): Heap => cur!;
  for (let cycle = 0; cycle < data.cycles!; cycle++) {
    const heap = attach();
    cur = heap;
    const bit = 1 << heap.cpu;
    if ((Atomics.or(ctrl, ATTACH.HELD_MASK, bit) & bit) !== 0) Atomics.add(ctrl, ATTACH.DOUBLE_CLAIM, 1);
    cpusSeen.add(heap.cpu);
    // Free what the previous attachments (of this worker, maybe on another slot) left live.
    const keep: Blk[] = [];
    for (const b of carried) {
      check(b, "a block carried across detach/attach");
      if (rng.chance(0.6)) heap.kfree(b.addr);
      else keep.push(b);
    }
    carried = keep;
    // Blocks other workers handed over.
    for (let k = rng.range(0, 6); k > 0 && ring.pop(entry); k--) {
      const b = { addr: entry[0]!, size: entry[1]!, sig: entry[2]! };
      check(b, "a block from another worker");
      heap.kfree(b.addr);
    }
    const n = rng.range(1, 12);
    for (let k = 0; k < n; k++) {
      const size = rng.chance(0.1) ? rng.range(8193, 20000) : rng.range(8, 2048);
      const addr = rng.chance(0.3) ? heap.kmalloc(size, GFP.ZERO) : heap.kmalloc(size);
      if (addr === 0) throw new Error(`kmalloc(${size}) failed`);
      const b = { addr, size, sig: signature(me, counter++) };
      fillPattern(heap.i32, heap.u8, addr, size, b.sig);
      if (rng.chance(0.3)) {
        if (!ring.push(b.addr, b.size, b.sig, me)) carried.push(b);
      } else {
        carried.push(b);
      }
    }
    if (rng.chance(0.3)) {
      const order = rng.range(0, 3);
      const p = heap.allocPages(order);
      if (p === 0) throw new Error(`allocPages(${order}) failed`);
      heap.freePages(p, order);
    }
    if (rng.chance(0.2)) {
      heap.rcuReadLock();
      heap.rcuReadUnlock();
    }
    if (carried.length > 40) {
      for (const b of carried.splice(0, 20)) {
        check(b, "trimming");
        heap.kfree(b.addr);
      }
    }
    Atomics.and(ctrl, ATTACH.HELD_MASK, ~bit);
    heap.detach();
    if (cycle % 16 === 0) checkDetached(heap, carried[0]?.addr ?? 8, false);
    Atomics.add(ctrl, ATTACH.CYCLES, 1);
  }
  // Last attachment: free everything carried and what is in the ring now (the main thread takes
  // what others put there later: a worker waiting attached for the others could starve them of slots).
  const heap = attach();
  cur = heap;
  for (const b of carried) {
    check(b, "at the end");
    heap.kfree(b.addr);
  }
  while (ring.pop(entry)) {
    const b = { addr: entry[0]!, size: entry[1]!, sig: entry[2]! };
    check(b, "draining the ring");
    heap.kfree(b.addr);
  }
  heap.detach();
  post({ type: "done", cpus: [...cpusSeen], enocpu });
});
