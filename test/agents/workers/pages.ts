/*
 * Random allocPages / freePages of orders 0..4 on a heap shared with other workers. Blocks are
 * handed between workers through a SharedRing; every block carries a signature (first and last
 * word of each of its pages) that its holder checks before it lets the block go.
 */
import { PAGE_SIZE } from "../../../src/index.js";
import { STRESS, signature } from "../../support/util.js";
import { allAttached, type Base, checkAbort, finishStress, runWorker, startStress } from "./common.js";

export interface PagesData extends Base {
  /** One inbox per worker: blocks are pushed to another worker's inbox and popped from one's own. */
  rings: SharedArrayBuffer[];
  workers: number;
  ops: number;
  maxHeld: number;
  /** Share of allocations and frees (orders 0..3) done with the nolock calls. */
  nolockShare: number;
}

interface Block {
  addr: number;
  order: number;
  sig: number;
  /** The worker that allocated it. */
  from: number;
}

runWorker<PagesData>((data) => {
  const { ctrl, inbox, outbox, rng, heap } = startStress(data);
  const i32 = heap.i32;
  const me = data.id;
  let counter = 0;
  const held: Block[] = [];
  const stats = { allocs: 0, allocFails: 0, nolockAllocs: 0, nolockFails: 0, nolockFrees: 0, frees: 0, handedOut: 0, received: 0, crossFrees: 0, bulk: 0, maxHeld: 0 };

  const write = (b: Block): void => {
    for (let p = 0; p < 1 << b.order; p++) {
      const w = (b.addr + p * PAGE_SIZE) >> 2;
      i32[w] = b.sig;
      i32[w + (PAGE_SIZE >> 2) - 1] = ~b.sig ^ p;
    }
  };
  const check = (b: Block, why: string): void => {
    for (let p = 0; p < 1 << b.order; p++) {
      const w = (b.addr + p * PAGE_SIZE) >> 2;
      const first = i32[w]!;
      const last = i32[w + (PAGE_SIZE >> 2) - 1]!;
      if (first !== b.sig || last !== (~b.sig ^ p)) {
        throw new Error(
          `${why}: block 0x${b.addr.toString(16)} order ${b.order} (allocated by worker ${b.from}, held by worker ${me}) page ${p}: ` +
            `first word 0x${(first >>> 0).toString(16)}, last 0x${(last >>> 0).toString(16)}, want 0x${(b.sig >>> 0).toString(16)} / 0x${((~b.sig ^ p) >>> 0).toString(16)}: ` +
            `another holder wrote into it`,
        );
      }
    }
  };
  const take = (addr: number, order: number): Block => {
    const bytes = PAGE_SIZE << order;
    if (addr <= 0 || addr % bytes !== 0 || addr + bytes > heap.size) {
      throw new Error(`allocPages(${order}) gave 0x${addr.toString(16)}: not a block of ${bytes} bytes aligned to its size inside the heap`);
    }
    const b = { addr, order, sig: signature(me, counter++), from: me };
    write(b);
    stats.allocs++;
    return b;
  };
  const free = (b: Block, why: string): void => {
    check(b, why);
    if (b.order <= 3 && rng.chance(data.nolockShare)) {
      heap.freePagesNolock(b.addr, b.order);
      stats.nolockFrees++;
    } else {
      heap.freePages(b.addr, b.order);
    }
    stats.frees++;
    if (b.from !== me) {
      stats.crossFrees++;
      Atomics.add(ctrl, STRESS.CROSS_FREES, 1);
    }
  };
  const removeAt = (k: number): Block => {
    const b = held[k]!;
    held[k] = held[held.length - 1]!;
    held.pop();
    return b;
  };
  const entry = [0, 0, 0, 0];
  const receive = (): Block | null => {
    if (!inbox.pop(entry)) return null;
    const b = { addr: entry[0]!, order: entry[1]!, sig: entry[2]!, from: entry[3]! };
    check(b, "on receipt from another worker");
    stats.received++;
    if (b.from !== me) Atomics.add(ctrl, STRESS.HANDOFFS, 1);
    return b;
  };

  allAttached(heap, data, ctrl);

  const bulkOut: number[] = [];
  for (let op = 0; op < data.ops; op++) {
    if ((op & 511) === 0) checkAbort(data, ctrl);
    const r = rng.next();
    if (held.length === 0 || (held.length < data.maxHeld && r < 0.45)) {
      const order = rng.weighted([40, 25, 15, 12, 8]);
      if (order <= 3 && rng.chance(data.nolockShare)) {
        // May give 0 (a trylock failed): not an error.
        const addr = heap.allocPagesNolock(order);
        if (addr === 0) stats.nolockFails++;
        else {
          held.push(take(addr, order));
          stats.nolockAllocs++;
        }
      } else {
        const addr = heap.allocPages(order);
        if (addr !== 0) held.push(take(addr, order));
        else {
          // Out of memory: give something back, as a real user would.
          stats.allocFails++;
          if (held.length > 0) free(removeAt(rng.range(0, held.length - 1)), "after a failed allocation");
        }
      }
    } else if (r < 0.47 && held.length + 8 <= data.maxHeld) {
      const n = heap.allocPagesBulk(rng.range(1, 8), bulkOut);
      for (let k = 0; k < n; k++) held.push(take(bulkOut[k]!, 0));
      stats.bulk++;
    } else if (r < 0.75) {
      free(removeAt(rng.range(0, held.length - 1)), "before freePages");
    } else if (r < 0.87) {
      const b = removeAt(rng.range(0, held.length - 1));
      check(b, "before handing it on");
      if (outbox().push(b.addr, b.order, b.sig, b.from)) stats.handedOut++;
      else free(b, "inbox full");
    } else {
      const b = receive();
      if (b !== null) {
        if (rng.chance(0.5) || held.length >= data.maxHeld) {
          free(b, "freeing a received block");
        } else {
          // Adopt it: from now on it carries this worker's signature.
          b.sig = signature(me, counter++);
          write(b);
          held.push(b);
        }
      }
    }
    if (held.length > stats.maxHeld) stats.maxHeld = held.length;
  }

  // Free what is held, then drain the inbox until every worker is done and it is empty.
  while (held.length > 0) free(held.pop()!, "at the end");
  finishStress(heap, data, ctrl, () => inbox.length === 0, receive, free, stats);
});
