/*
 * Scripted RCU agents, driven by the control words in util.ts (RCU): readers that hold a section
 * open until told, a worker that kfreeRcu's an object a reader is reading and then allocates its
 * size class over and over, a worker that waits in synchronizeRcu, a reader that starts after it,
 * an idle worker blocked outside any section.
 */
import { Heap } from "../../../src/index.js";
import { RCU, checkPattern, fillPattern, setWord, signature, sleepMs, waitWord, addWord, errCode } from "../../support/util.js";
import { type Base, checkAbort, post, runWorker, yieldToLoop } from "./common.js";

export interface RcuData extends Base {
  role: "reader" | "timedReader" | "freer" | "syncer" | "late" | "idle";
  /** The object the reader reads and the freer kfreeRcu's (0: none). */
  x?: number;
  xSize?: number;
  xSig?: number;
  /** Reader: nesting depth of its section. */
  nest?: number;
  /** Freer: objects per allocation round. */
  perRound?: number;
  /** timedReader: how long to stay inside (ms). */
  holdMs?: number;
}


runWorker<RcuData>(async (data) => {
  const ctrl = new Int32Array(data.ctrl);
  const heap = Heap.attach(data.buffer);
  const { i32, u8 } = heap;
  const cpu = heap.cpu;
  const exit = (): void => {
    waitWord(ctrl, RCU.EXIT, 1, "the main thread's exit word", 30_000);
    heap.detach();
  };
  post({ type: "attached", cpu });

  switch (data.role) {
    case "reader": {
      const nest = data.nest ?? 1;
      for (let k = 0; k < nest; k++) heap.rcuReadLock();
      setWord(ctrl, RCU.A_IN, 1);
      let depth = nest;
      let reads = 0;
      const end = Date.now() + 30_000;
      while (Atomics.load(ctrl, RCU.A_STOP) === 0) {
        if (data.x) {
          const bad = checkPattern(i32, u8, data.x, data.xSize!, data.xSig!);
          if (bad !== null) throw new Error(`object X changed under a reader inside its read section after kfreeRcu: ${bad}`);
          reads++;
        }
        if (depth > 1 && Atomics.load(ctrl, RCU.A_DROP_INNER) !== 0) {
          heap.rcuReadUnlock();
          depth--;
          if (!heap.rcuReadLockHeld()) throw new Error("an inner rcuReadUnlock closed the section");
          if (depth === 1) setWord(ctrl, RCU.A_INNER_OUT, 1);
        }
        if ((reads & 15) === 0) {
          Atomics.store(ctrl, RCU.A_READS, reads);
          checkAbort(data, ctrl);
          if (Date.now() > end) throw new Error("reader: never told to stop");
          Atomics.wait(ctrl, RCU.A_STOP, 0, 0.1);
        }
      }
      Atomics.store(ctrl, RCU.A_READS, reads);
      // Publication: anybody who sees synchronizeRcu return must see this word set.
      setWord(ctrl, RCU.A_UNLOCKING, 1);
      while (depth-- > 0) heap.rcuReadUnlock();
      if (heap.rcuReadLockHeld()) throw new Error("still inside after the outermost rcuReadUnlock");
      setWord(ctrl, RCU.A_OUT, 1);
      post({ type: "left", reads });
      exit();
      break;
    }
    case "timedReader": {
      heap.rcuReadLock();
      setWord(ctrl, RCU.A_IN, 1);
      sleepMs(data.holdMs!); // blocked inside its section
      setWord(ctrl, RCU.A_UNLOCKING, 1);
      heap.rcuReadUnlock();
      setWord(ctrl, RCU.A_OUT, 1);
      exit();
      break;
    }
    case "freer": {
      const x = data.x!;
      const size = data.xSize!;
      waitWord(ctrl, RCU.A_IN, 1, "reader A to enter its section");
      // kfreeRcu takes its block page from this slot's pcp list only; on a slot that never
      // allocated, it falls back to waiting for the grace period right here (which A holds up).
      // Allocate first, as any real agent would have: that fills the pcp list.
      heap.freePages(heap.allocPages(0), 0);
      const before = heap.stats().vmstat.rcuSyncFallback;
      heap.kfreeRcu(x);
      if (heap.stats().vmstat.rcuSyncFallback !== before) throw new Error("kfreeRcu took the synchronous fallback");
      let prev: number[] = [];
      let count = 0;
      let n = 0;
      const per = data.perRound!;
      const end = Date.now() + 30_000;
      while (Atomics.load(ctrl, RCU.B_STOP) === 0) {
        checkAbort(data, ctrl);
        if (Date.now() > end) throw new Error("freer: never told to stop");
        const cur: number[] = [];
        for (let k = 0; k < per; k++) {
          const how = k % 8;
          const o = how === 0 ? heap.kzalloc(size) : how === 1 ? heap.kmallocNolock(size) : heap.kmalloc(size);
          if (o === 0) {
            if (how === 1) continue; // kmallocNolock may give 0
            throw new Error(`kmalloc(${size}) failed`);
          }
          count++;
          if (o === x) throw new Error(`object X 0x${x.toString(16)} was handed out again (allocation ${count}) while a reader is still inside the section it was read in`);
          if (o < x + size && x < o + size) throw new Error(`0x${o.toString(16)} overlaps X 0x${x.toString(16)}`);
          fillPattern(i32, u8, o, size, signature(data.id, n++));
          cur.push(o);
        }
        for (const o of prev) heap.kfree(o);
        prev = cur;
        const round = addWord(ctrl, RCU.B_ROUNDS, 1);
        // Every third round, long enough for this agent's 4 ms kfreeRcu timer to run.
        await yieldToLoop(round % 3 === 0 ? 5 : 0);
      }
      for (const o of prev) heap.kfree(o);
      post({ type: "allocated", count });
      waitWord(ctrl, RCU.A_OUT, 1, "reader A to leave its section");
      heap.synchronizeRcu();
      heap.rcuBarrier();
      setWord(ctrl, RCU.B_SYNCED, 1);
      exit();
      break;
    }
    case "syncer": {
      heap.rcuReadLock();
      const a = errCode(() => heap.synchronizeRcu());
      const b = errCode(() => heap.rcuBarrier());
      heap.rcuReadLock();
      const c = errCode(() => heap.synchronizeRcu());
      heap.rcuReadUnlock();
      const d = errCode(() => heap.synchronizeRcu());
      heap.rcuReadUnlock();
      if (heap.rcuReadLockHeld()) throw new Error("still inside after two unlocks");
      post({ type: "edeadlk", codes: [a, b, c, d] });
      waitWord(ctrl, RCU.W_GO, 1, "the go to call synchronizeRcu");
      setWord(ctrl, RCU.W_STARTED, 1);
      heap.synchronizeRcu();
      setWord(ctrl, RCU.W_SAW, Atomics.load(ctrl, RCU.A_UNLOCKING) + 1);
      setWord(ctrl, RCU.W_RETURNED, 1);
      exit();
      break;
    }
    case "late": {
      waitWord(ctrl, RCU.R2_GO, 1, "the go to enter");
      heap.rcuReadLock();
      setWord(ctrl, RCU.R2_IN, 1);
      waitWord(ctrl, RCU.R2_STOP, 1, "the stop word", 30_000);
      heap.rcuReadUnlock();
      setWord(ctrl, RCU.R2_OUT, 1);
      exit();
      break;
    }
    case "idle": {
      heap.rcuReadLock();
      heap.rcuReadUnlock();
      setWord(ctrl, RCU.IDLE, 1);
      exit(); // blocked in Atomics.wait, outside any section
      break;
    }
  }
  post({ type: "done" });
});

