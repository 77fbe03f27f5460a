/*
 * A worker attached before the heap grows: it runs every allocation path (kmalloc of every class
 * and large sizes, kzalloc, krealloc, a named cache, allocPages of orders 0..4, allocPagesBulk, the
 * nolock calls, kfreeRcu) while the main thread and its own GFP.KERNEL refills grow the heap. Every
 * block carries a signature pattern, written and checked through the handle's views (heap.i32,
 * heap.u8), which must cover every block the handle returns. Every address must lie inside the
 * heap and no two live blocks may overlap.
 */
import { GFP, type Heap } from "../../../src/index.js";
import { addWord, checkPattern, fillPattern, signature, waitWord } from "../../support/util.js";
import { type Base, checkAbort, post, runWorker, yieldToLoop } from "./common.js";
import { Heap as H } from "../../../src/index.js";

export interface GrowthData extends Base {
  /** The heap's offset in the buffer. */
  offset: number;
  ops: number;
  cacheName: string;
  /** ctrl words */
  attachedAt: number;
  goAt: number;
  opsAt: number;
  doneAt: number;
  workers: number;
}

const K_KMALLOC = 0;
const K_CACHE = 1;
const K_PAGES = 2;

interface Block {
  addr: number;
  size: number;
  sig: number;
  kind: number;
  order: number;
}

const SIZES = [8, 16, 24, 32, 64, 96, 100, 128, 192, 256, 500, 512, 1000, 1024, 2048, 4000, 4096, 8000, 8192, 9000, 20000, 40000];
const CHECKED = 2048;

runWorker<GrowthData>(async (data) => {
  const ctrl = new Int32Array(data.ctrl);
  const heap: Heap = H.attach(data.buffer, { offset: data.offset });
  const cache = heap.findCache(data.cacheName);
  if (cache === null) throw new Error("no cache");
  let rngState = data.seed >>> 0 || 1;
  const rnd = (n: number): number => {
    rngState ^= rngState << 13;
    rngState ^= rngState >>> 17;
    rngState ^= rngState << 5;
    return (rngState >>> 0) % n;
  };
  addWord(ctrl, data.attachedAt, 1);
  waitWord(ctrl, data.goAt, 1, "the main thread's go");
  const live: Block[] = [];
  let counter = 0;
  const span = (b: Block): number => (b.kind === K_PAGES ? 4096 << b.order : b.size);
  const put = (addr: number, size: number, kind: number, order: number, zeroed: boolean): void => {
    const b: Block = { addr, size, sig: signature(data.id, counter++), kind, order };
    const end = addr + span(b);
    if (addr < heap.offset + 4096 || end > heap.buffer.byteLength || end > heap.size || end > heap.u8.length) {
      throw new Error(`block ${addr} + ${span(b)} lies outside the heap (${heap.size} B, views ${heap.u8.length} B, buffer ${heap.buffer.byteLength} B)`);
    }
    for (const o of live) {
      if (addr < o.addr + span(o) && o.addr < end) throw new Error(`block ${addr} (${span(b)} B) overlaps live block ${o.addr} (${span(o)} B)`);
    }
    const n = Math.min(size, CHECKED);
    if (zeroed) {
      for (let k = 0; k < n; k++) if (heap.u8[addr + k] !== 0) throw new Error(`kzalloc block ${addr}: byte ${k} is ${heap.u8[addr + k]}`);
    }
    fillPattern(heap.i32, heap.u8, addr, n, b.sig);
    live.push(b);
  };
  const check = (b: Block, why: string): void => {
    const bad = checkPattern(heap.i32, heap.u8, b.addr, Math.min(b.size, CHECKED), b.sig);
    if (bad !== null) throw new Error(`${why}: ${bad}`);
  };
  const freeOne = (): void => {
    const i = rnd(live.length);
    const b = live[i]!;
    check(b, "before free");
    live[i] = live[live.length - 1]!;
    live.pop();
    const how = rnd(4);
    if (b.kind === K_PAGES) {
      if (how === 0 && b.order <= 3) heap.freePagesNolock(b.addr, b.order);
      else heap.freePages(b.addr, b.order);
    } else if (b.kind === K_CACHE) {
      if (how === 0) heap.kfreeRcu(b.addr);
      else cache.free(b.addr);
    } else if (how === 0) {
      heap.kfreeRcu(b.addr);
    } else if (how === 1 && b.size <= 8192) {
      heap.kfreeNolock(b.addr);
    } else if (how === 2) {
      const size = SIZES[rnd(SIZES.length)]!;
      const n = heap.krealloc(b.addr, size);
      if (n === 0) {
        live.push(b);
        return;
      }
      const keep = Math.min(b.size, size, CHECKED);
      const bad = checkPattern(heap.i32, heap.u8, n, keep, b.sig);
      if (bad !== null) throw new Error(`krealloc lost the contents: ${bad}`);
      heap.kfree(n);
    } else {
      heap.kfree(b.addr);
    }
  };
  for (let op = 0; op < data.ops; op++) {
    if ((op & 63) === 0) {
      checkAbort(data, ctrl);
      addWord(ctrl, data.opsAt, 64);
      for (const b of live) check(b, "periodic check");
      await yieldToLoop();
    }
    if (live.length > 60 || (live.length > 0 && rnd(5) < 2)) {
      freeOne();
      continue;
    }
    const path = rnd(9);
    const size = SIZES[rnd(SIZES.length)]!;
    if (path === 0 || path === 1) {
      const a = heap.kmalloc(size);
      if (a !== 0) put(a, size, K_KMALLOC, 0, false);
    } else if (path === 2) {
      const a = heap.kzalloc(size);
      if (a !== 0) put(a, size, K_KMALLOC, 0, true);
    } else if (path === 3) {
      const a = cache.alloc();
      if (a !== 0) put(a, cache.objectSize, K_CACHE, 0, false);
    } else if (path === 4) {
      const order = rnd(5);
      const a = heap.allocPages(order, rnd(2) === 0 ? GFP.ZERO : GFP.KERNEL);
      if (a !== 0) put(a, 4096 << order, K_PAGES, order, false);
    } else if (path === 5) {
      const order = rnd(4);
      const a = heap.allocPagesNolock(order);
      if (a !== 0) put(a, 4096 << order, K_PAGES, order, false);
    } else if (path === 6) {
      const a = heap.kmallocNolock(Math.min(size, 8192));
      if (a !== 0) put(a, Math.min(size, 8192), K_KMALLOC, 0, false);
    } else if (path === 7) {
      const out: number[] = [];
      const n = heap.allocPagesBulk(3, out);
      for (let k = 0; k < n; k++) put(out[k]!, 4096, K_PAGES, 0, false);
    } else {
      const out: number[] = [];
      if (cache.allocBulk(3, out) === 3) for (const a of out) put(a, cache.objectSize, K_CACHE, 0, false);
    }
  }
  for (const b of live) check(b, "final check");
  while (live.length > 0) freeOne();
  heap.rcuBarrier();
  const cpu = heap.cpu;
  addWord(ctrl, data.doneAt, 1);
  waitWord(ctrl, data.doneAt, data.workers, "the other workers to finish", 60_000, true);
  heap.detach();
  post({ type: "done", cpu, size: heap.size });
});
