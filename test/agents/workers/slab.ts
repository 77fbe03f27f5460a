/*
 * Larson-style slab stress: each worker keeps an array of live blocks (kmalloc of 8 B .. 64 KiB,
 * mostly small, and objects of a named cache the main thread created) and replaces random
 * entries; slices of live blocks move to other workers through a SharedRing, so blocks are freed
 * by workers that did not allocate them. A pattern covers every byte of every block and is
 * checked in full before the block is freed.
 */
import { STRESS, checkPattern, fillPattern, signature } from "../../support/util.js";
import { allAttached, type Base, checkAbort, finishStress, runWorker, startStress } from "./common.js";

export interface SlabData extends Base {
  /** One inbox per worker: blocks are pushed to another worker's inbox and popped from one's own. */
  rings: SharedArrayBuffer[];
  workers: number;
  ops: number;
  slots: number;
  cacheName: string;
  /** Share of kmalloc / kfree (8 KiB and less) done with kmallocNolock / kfreeNolock. */
  nolockShare: number;
}

const KMALLOC = 1;
const CACHE = 2;

interface Block {
  addr: number;
  size: number;
  sig: number;
  kind: number;
  from: number;
}

/** Size ranges and their weights: mostly small. */
const RANGES: ReadonlyArray<readonly [number, number]> = [
  [8, 64],
  [65, 256],
  [257, 1024],
  [1025, 8192],
  [8193, 16384],
  [16385, 65536],
];
const WEIGHTS = [45, 25, 12, 12, 4, 2];

runWorker<SlabData>((data) => {
  const { ctrl, inbox, outbox, rng, heap } = startStress(data);
  const cache = heap.findCache(data.cacheName);
  if (cache === null) throw new Error(`findCache("${data.cacheName}") found nothing in worker ${data.id}`);
  const { i32, u8 } = heap;
  const me = data.id;
  let counter = 0;
  const slots: (Block | null)[] = new Array<Block | null>(data.slots).fill(null);
  const stats = { allocs: 0, cacheAllocs: 0, frees: 0, bulkFrees: 0, handedOut: 0, received: 0, crossFrees: 0, bytes: 0, allocFails: 0, nolockAllocs: 0, nolockFails: 0, nolockFrees: 0, reallocs: 0 };

  const check = (b: Block, why: string): void => {
    const bad = checkPattern(i32, u8, b.addr, b.size, b.sig);
    if (bad !== null) {
      throw new Error(`${why}: ${bad} (${b.kind === CACHE ? "cache object" : "kmalloc"}, allocated by worker ${b.from}, held by worker ${me}): another holder wrote into it`);
    }
  };
  const alloc = (): Block | null => {
    let addr: number;
    let size: number;
    let kind: number;
    if (rng.chance(0.2)) {
      kind = CACHE;
      size = cache.objectSize;
      addr = cache.alloc();
      stats.cacheAllocs++;
    } else {
      kind = KMALLOC;
      const [lo, hi] = RANGES[rng.weighted(WEIGHTS)]!;
      size = rng.range(lo, hi);
      if (size <= 8192 && rng.chance(data.nolockShare)) {
        addr = heap.kmallocNolock(size);
        if (addr === 0) {
          stats.nolockFails++; // a trylock failed: not an error
          return null;
        }
        stats.nolockAllocs++;
      } else {
        addr = heap.kmalloc(size);
      }
      if (addr !== 0 && heap.ksize(addr) < size) throw new Error(`ksize(kmalloc(${size})) = ${heap.ksize(addr)}`);
    }
    if (addr === 0) {
      stats.allocFails++;
      return null;
    }
    if (addr % 8 !== 0 || addr + size > heap.size) throw new Error(`allocation of ${size} B gave 0x${addr.toString(16)}`);
    const b = { addr, size, sig: signature(me, counter++), kind, from: me };
    fillPattern(i32, u8, addr, size, b.sig);
    stats.allocs++;
    stats.bytes += size;
    return b;
  };
  const free = (b: Block, why: string): void => {
    check(b, why);
    if (b.kind === CACHE) cache.free(b.addr);
    else if (rng.chance(data.nolockShare)) {
      heap.kfreeNolock(b.addr);
      stats.nolockFrees++;
    } else heap.kfree(b.addr);
    stats.frees++;
    if (b.from !== me) {
      stats.crossFrees++;
      Atomics.add(ctrl, STRESS.CROSS_FREES, 1);
    }
  };
  const entry = [0, 0, 0, 0];
  const receive = (): Block | null => {
    if (!inbox.pop(entry)) return null;
    const b = { addr: entry[0]!, size: entry[1]! & 0xfffffff, kind: entry[1]! >>> 28, sig: entry[2]!, from: entry[3]! };
    check(b, "on receipt from another worker");
    stats.received++;
    if (b.from !== me) Atomics.add(ctrl, STRESS.HANDOFFS, 1);
    return b;
  };

  allAttached(heap, data, ctrl);

  for (let op = 0; op < data.ops; op++) {
    if ((op & 255) === 0) checkAbort(data, ctrl);
    const r = rng.next();
    if (r < 0.03) {
      // Hand a slice of live blocks to another worker.
      const dest = outbox();
      const start = rng.range(0, data.slots - 1);
      const len = rng.range(1, 16);
      for (let k = start; k < start + len && k < data.slots; k++) {
        const b = slots[k];
        if (b === null || b === undefined) continue;
        check(b, "before handing it on");
        if (!dest.push(b.addr, b.size | (b.kind << 28), b.sig, b.from)) break;
        slots[k] = null;
        stats.handedOut++;
      }
    } else if (r < 0.08) {
      // Take a few blocks: free some at once, keep the others in random slots.
      const n = rng.range(1, 16);
      for (let k = 0; k < n; k++) {
        const b = receive();
        if (b === null) break;
        if (rng.chance(0.5)) {
          free(b, "freeing a received block");
        } else {
          const i = rng.range(0, data.slots - 1);
          const old = slots[i];
          if (old !== null && old !== undefined) free(old, "before replacing it");
          slots[i] = b;
        }
      }
    } else if (r < 0.085) {
      // kfreeBulk of a run of kmalloc blocks.
      const start = rng.range(0, data.slots - 1);
      const addrs: number[] = [];
      for (let k = start; k < start + 8 && k < data.slots; k++) {
        const b = slots[k];
        if (b === null || b === undefined || b.kind !== KMALLOC) continue;
        check(b, "before kfreeBulk");
        addrs.push(b.addr);
        if (b.from !== me) {
          stats.crossFrees++;
          Atomics.add(ctrl, STRESS.CROSS_FREES, 1);
        }
        slots[k] = null;
      }
      heap.kfreeBulk(addrs);
      stats.bulkFrees += addrs.length;
    } else if (r < 0.1) {
      // krealloc keeps the old contents up to the smaller size.
      const i = rng.range(0, data.slots - 1);
      const b = slots[i];
      if (b === null || b === undefined || b.kind !== KMALLOC) continue;
      check(b, "before krealloc");
      const [lo, hi] = RANGES[rng.weighted(WEIGHTS)]!;
      const size = rng.range(lo, hi);
      const addr = heap.krealloc(b.addr, size);
      if (addr === 0) throw new Error(`krealloc(0x${b.addr.toString(16)}, ${size}) failed`);
      if (heap.ksize(addr) < size) throw new Error(`ksize(krealloc(.., ${size})) = ${heap.ksize(addr)}`);
      const kept = Math.min(size, b.size) & ~3;
      const bad = checkPattern(i32, u8, addr, kept, b.sig);
      if (bad !== null) throw new Error(`krealloc from ${b.size} to ${size} B lost the contents: ${bad}`);
      const nb = { addr, size, sig: signature(me, counter++), kind: KMALLOC, from: b.from };
      fillPattern(i32, u8, addr, size, nb.sig);
      slots[i] = nb;
      stats.reallocs++;
    } else {
      const i = rng.range(0, data.slots - 1);
      const old = slots[i];
      if (old !== null && old !== undefined) free(old, "before kfree");
      slots[i] = alloc();
    }
  }

  for (let i = 0; i < data.slots; i++) {
    const b = slots[i];
    if (b !== null && b !== undefined) free(b, "at the end");
    slots[i] = null;
  }
  finishStress(heap, data, ctrl, () => inbox.length === 0, receive, free, stats);
});
