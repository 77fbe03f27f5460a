/*
 * One worker of the stress command (see stress.ts). It attaches to the heap, then loops over a
 * seeded mix of every allocator entry point until the main thread raises the stop word, checking
 * the signature of every block before it lets go of it. A re-entry hook fires nolock calls at
 * random lock points. At the end it frees everything it holds, detaches and reports its counters.
 */
import { parentPort, workerData } from "node:worker_threads";
import { GFP, Heap, HeapError, type KmemCache, type TraceRecord } from "../../src/index.js";
import {
  CTL_DONE,
  CTL_FAILED,
  CTL_STOP,
  dumpAround,
  expectedByte,
  firstNonZero,
  hex,
  mix32,
  packRcu,
  progressView,
  RCU_SLOTS,
  rcuObjectSize,
  Rings,
  Rng,
  sign,
  unpackRcu,
  verify,
  type WorkerConfig,
  type WorkerMessage,
  XKIND_KMALLOC,
  XKIND_NOLOCK,
  XKIND_PAGES,
  zeroCounters,
} from "./stress-shared.js";

const cfg = workerData as WorkerConfig;
const me = cfg.index;
const ctl = new Int32Array(cfg.ctrl, 0, 16);
const progress = progressView(cfg.ctrl, cfg.workers);
const rings = new Rings(cfg.rings);
const rcuTable = new BigInt64Array(cfg.rcu);
const rng = new Rng(cfg.seed, 2 * me + 1);
const hookRng = new Rng(cfg.seed, 2 * me + 2);
const counters = zeroCounters();

function post(m: WorkerMessage): void {
  parentPort!.postMessage(m);
}

/* ------------------------------------------------------------------ what this worker holds */

/** How a block was obtained, for failure reports. */
const SRC = ["kmalloc", "kmallocNolock", "kzalloc", "krealloc", "allocPages", "allocPagesBulk", "received", "cache.alloc", "cache.allocBulk", "hook kmallocNolock", "hook allocPagesNolock", "RCU-published"] as const;
const S_KMALLOC = 0;
const S_NOLOCK = 1;
const S_KZALLOC = 2;
const S_KREALLOC = 3;
const S_PAGES = 4;
const S_PAGES_BULK = 5;
const S_RECEIVED = 6;
const S_CACHE = 7;
const S_CACHE_BULK = 8;
const S_HOOK_OBJ = 9;
const S_HOOK_PAGES = 10;
const S_RCU = 11;

interface Block {
  addr: number;
  /** Bytes signed (objects), or the block's bytes (pages). */
  size: number;
  /** Page order for page blocks, -1 for objects. */
  order: number;
  tag: number;
  src: number;
  /** This worker's op count when the block was obtained. */
  born: number;
}

const objs: Block[] = [];
const pages: Block[] = [];
const cacheObjs: Block[] = [];
/** Blocks the hook allocated (objects and pages), freed later by the hook or by the loop. */
const hookBlocks: Block[] = [];
const HOOK_MAX = 192;
const MAX_OBJS = 3000;
const MAX_PAGE_BLOCKS = 96;
const MAX_CACHE_OBJS = 400;
let heldBytes = 0;

let tagCounter = 0;
function nextTag(): number {
  tagCounter++;
  return mix32(cfg.seed ^ Math.imul(me + 1, 0x27d4eb2d), tagCounter) | 1;
}

function take<T>(list: T[], i: number): T {
  const x = list[i]!;
  const last = list.pop()!;
  if (i < list.length) list[i] = last;
  return x;
}

/* ------------------------------------------------------------------ failures */

let failures = 0;
let currentOp = "start";

/**
 * A noBlock agent's calls that would wait give up with EAGAIN (a lock held past its bound, a grace
 * period not over) and leave the heap as it was: such a worker calls again.
 */
function again<T>(fn: () => T): T {
  for (let n = 0; ; n++) {
    try {
      return fn();
    } catch (e) {
      if (!cfg.noBlock || !(e instanceof HeapError) || e.code !== "EAGAIN" || n >= 1_000_000) throw e;
    }
  }
}

function fail(message: string): void {
  failures++;
  Atomics.store(ctl, CTL_FAILED, 1);
  Atomics.store(ctl, CTL_STOP, 1);
  if (failures <= 20) post({ type: "fail", index: me, message: `worker ${me} (cpu ${heap.cpu}) at op ${counters.ops} (${currentOp}): ${message}` });
}

function describe(e: unknown): string {
  if (e instanceof HeapError) return `HeapError ${e.code}: ${e.message.replace(/^[A-Z]+: /, "")}`;
  if (e instanceof Error) return `${e.name}: ${e.message}\n${e.stack ?? ""}`;
  return String(e);
}

/** Verify `b`'s signature; report and return false on a mismatch (the block is then abandoned). */
function check(b: Block, why: string): boolean {
  const off = verify(heap, b.addr, b.size, b.tag);
  counters.bytesVerified += b.size;
  if (off < 0) return true;
  fail(
    `signature mismatch ${why}: ${SRC[b.src]} block ${hex(b.addr)} (${b.order >= 0 ? `order ${b.order}` : `${b.size} bytes`}, tag ${hex(b.tag)}, ` +
      `${b.born >= 0 ? `obtained at op ${b.born}` : "published by any worker"}) differs at offset ${off}: expected ${hex(expectedByte(b.tag, off, b.size))}, found ${hex(heap.u8[b.addr + off]!)}; ` +
      dumpAround(heap, b.addr, off, b.size),
  );
  return false;
}

function newBlock(addr: number, size: number, order: number, src: number): Block {
  const b: Block = { addr, size, order, tag: nextTag(), src, born: counters.ops };
  sign(heap, addr, size, b.tag);
  return b;
}

/** Cheap checks of an address an allocation returned. */
function checkAddr(addr: number, size: number, align: number, what: string): boolean {
  if (addr <= 0 || addr + size > heap.size || addr % align !== 0) {
    fail(`${what} returned ${hex(addr)}, which is not a ${align}-aligned block of ${size} bytes inside the ${heap.size}-byte heap`);
    return false;
  }
  return true;
}

/* ------------------------------------------------------------------ attach, hook, trace */

const heap = Heap.attach(cfg.heap, { noBlock: cfg.noBlock });
post({ type: "attached", index: me, cpu: heap.cpu });

/** Inside a destroy() that is expected to refuse: its slab_error events are expected too. */
let busyExpected = false;
heap.trace.on("slab_error", (r: TraceRecord) => {
  if (busyExpected) return;
  fail(`slab_error event: ${r.message ?? "?"} (cache ${r.cache ?? "?"}, addr ${hex(r.addr ?? 0)})`);
});

let inHook = false;
const HOOK_RATE = 0.04;

function hook(point: string): void {
  if (inHook) return;
  if (hookRng.next() >= HOOK_RATE) return;
  inHook = true;
  counters.hookCalls++;
  try {
    hookAction(point);
  } catch (e) {
    fail(`the re-entry hook at ${point} got ${describe(e)}`);
  } finally {
    inHook = false;
  }
}

function hookAction(point: string): void {
  const r = hookRng.next();
  if (r >= 0.9) {
    // A reader in hook context (like the kernel's NMI handlers): read sections take no lock.
    heap.rcuReadLock();
    try {
      const slot = hookRng.below(RCU_SLOTS);
      const v = Atomics.load(rcuTable, slot);
      if (v !== 0n) {
        const { addr, tag } = unpackRcu(v);
        check({ addr, size: rcuObjectSize(tag), order: -1, tag, src: S_RCU, born: -1 }, `of an RCU-published object read from slot ${slot} by the hook at ${point}`);
      }
    } finally {
      heap.rcuReadUnlock();
    }
    return;
  }
  if (r < 0.4 || hookBlocks.length === 0) {
    if (r < 0.8) {
      const size = hookRng.chance(0.85) ? hookRng.range(1, 512) : hookRng.range(513, 8192);
      counters.nolockCalls++;
      const a = heap.kmallocNolock(size);
      if (a === 0) {
        counters.nolockFails++;
        return;
      }
      if (!checkAddr(a, size, 8, `kmallocNolock(${size}) in the hook at ${point}`)) return;
      counters.allocs++;
      const b = newBlock(a, size, -1, S_HOOK_OBJ);
      if (hookBlocks.length < HOOK_MAX) {
        hookBlocks.push(b);
        return;
      }
      if (!check(b, `before kfreeNolock in the hook at ${point}`)) return;
      counters.nolockCalls++;
      heap.kfreeNolock(a);
      counters.frees++;
    } else {
      const order = hookRng.below(4);
      counters.nolockCalls++;
      const a = heap.allocPagesNolock(order);
      if (a === 0) {
        counters.nolockFails++;
        return;
      }
      if (!checkAddr(a, 4096 << order, 4096 << order, `allocPagesNolock(${order}) in the hook at ${point}`)) return;
      counters.allocs++;
      const b = newBlock(a, 4096 << order, order, S_HOOK_PAGES);
      if (hookBlocks.length < HOOK_MAX) {
        hookBlocks.push(b);
        return;
      }
      if (!check(b, `before freePagesNolock in the hook at ${point}`)) return;
      counters.nolockCalls++;
      heap.freePagesNolock(a, order);
      counters.frees++;
    }
    return;
  }
  const b = take(hookBlocks, hookRng.below(hookBlocks.length));
  if (!check(b, `before a nolock free in the hook at ${point}`)) return;
  counters.nolockCalls++;
  if (b.order >= 0) heap.freePagesNolock(b.addr, b.order);
  else heap.kfreeNolock(b.addr);
  counters.frees++;
}

heap.setReentryHook(hook);

/* ------------------------------------------------------------------ choices */

function pickSize(): number {
  const r = rng.next();
  if (r < 0.08) {
    // A size class boundary, or one past it.
    const classes = [8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192];
    return classes[rng.below(classes.length)]! + (rng.chance(0.3) ? 1 : 0);
  }
  if (r < 0.62) return rng.range(1, 256);
  if (r < 0.85) return rng.range(257, 2048);
  if (r < 0.96) return rng.range(2049, 8192);
  return rng.range(8193, 65536);
}

function pickSmallSize(): number {
  return rng.chance(0.8) ? rng.range(1, 256) : rng.range(257, 8192);
}

function gfpName(g: number): string {
  if (g === 0) return "KERNEL";
  const n: string[] = [];
  for (const [k, v] of Object.entries(GFP)) if (v !== 0 && (g & v) !== 0) n.push(k);
  return n.join("|");
}

function pickGfp(allowFastTry: boolean): number {
  const r = rng.next();
  if (r < 0.78) return GFP.KERNEL;
  if (r < 0.84) return GFP.NOWAIT;
  if (r < 0.9) return GFP.ATOMIC | GFP.NOWARN;
  if (r < 0.97) return GFP.ZERO;
  return allowFastTry ? GFP.FAST_TRY : GFP.NOWAIT | GFP.ZERO;
}

function pickOrder(): number {
  const r = rng.next();
  if (r < 0.4) return 0;
  if (r < 0.6) return 1;
  if (r < 0.75) return 2;
  if (r < 0.85) return 3;
  if (r < 0.93) return 4;
  return 5;
}

/* ------------------------------------------------------------------ kmalloc family */

function opKmalloc(): void {
  const size = pickSize();
  const gfp = pickGfp(size <= 8192);
  currentOp = `kmalloc(${size}, ${gfpName(gfp)})`;
  const a = heap.kmalloc(size, gfp);
  if (a === 0) {
    counters.allocFails++;
    return;
  }
  counters.allocs++;
  if (!checkAddr(a, size, size > 8192 ? 4096 : 8, currentOp)) return;
  if ((gfp & GFP.ZERO) !== 0) {
    const nz = firstNonZero(heap, a, size);
    if (nz >= 0) fail(`${currentOp} returned ${hex(a)} with byte ${nz} = ${hex(heap.u8[a + nz]!)}, not zero`);
  }
  if (rng.chance(0.1)) {
    const ks = heap.ksize(a);
    if (ks < size) fail(`ksize(${hex(a)}) is ${ks}, less than the ${size} bytes ${currentOp} asked for`);
  }
  const b = newBlock(a, size, -1, S_KMALLOC);
  objs.push(b);
  heldBytes += size;
}

function opKmallocNolock(): void {
  const size = pickSmallSize();
  currentOp = `kmallocNolock(${size})`;
  counters.nolockCalls++;
  const a = heap.kmallocNolock(size);
  if (a === 0) {
    counters.nolockFails++;
    return;
  }
  counters.allocs++;
  if (!checkAddr(a, size, 8, currentOp)) return;
  objs.push(newBlock(a, size, -1, S_NOLOCK));
  heldBytes += size;
}

function opKzalloc(): void {
  const size = pickSize();
  currentOp = `kzalloc(${size})`;
  const a = heap.kzalloc(size);
  if (a === 0) {
    counters.allocFails++;
    return;
  }
  counters.allocs++;
  if (!checkAddr(a, size, 8, currentOp)) return;
  const nz = firstNonZero(heap, a, size);
  if (nz >= 0) fail(`${currentOp} returned ${hex(a)} with byte ${nz} = ${hex(heap.u8[a + nz]!)}, not zero`);
  objs.push(newBlock(a, size, -1, S_KZALLOC));
  heldBytes += size;
}

function opKrealloc(): void {
  if (objs.length === 0) return opKmalloc();
  const i = rng.below(objs.length);
  const b = take(objs, i);
  heldBytes -= b.size;
  if (!check(b, "before krealloc")) return;
  let size: number;
  const r = rng.next();
  if (r < 0.03) size = 0;
  else if (r < 0.5) size = Math.max(1, b.size + rng.range(-Math.min(b.size - 1, 64), 64));
  else size = pickSize();
  const gfp = rng.chance(0.2) ? GFP.ZERO : GFP.KERNEL;
  currentOp = `krealloc(${hex(b.addr)} of ${b.size} bytes, ${size}, ${gfpName(gfp)})`;
  const n = heap.krealloc(b.addr, size, gfp);
  if (size === 0) {
    if (n !== 0) fail(`${currentOp} returned ${hex(n)}, not 0`);
    counters.frees++;
    return;
  }
  if (n === 0) {
    counters.allocFails++;
    // The old block must be intact and still ours.
    if (check(b, "after a failed krealloc (the old block must be kept)")) {
      objs.push(b);
      heldBytes += b.size;
    }
    return;
  }
  counters.allocs++;
  if (!checkAddr(n, size, 8, currentOp)) return;
  // The first min(old, new) bytes moved with the block (whole words only when the size shrank).
  const keep = size >= b.size ? b.size : size & ~3;
  const off = verify(heap, n, keep, b.tag);
  if (off >= 0) {
    fail(`${currentOp} returned ${hex(n)} whose first ${keep} bytes do not match the old contents at offset ${off}: ${dumpAround(heap, n, off, keep)}`);
    return;
  }
  if (n !== b.addr) counters.frees++;
  const nb = newBlock(n, size, -1, S_KREALLOC);
  objs.push(nb);
  heldBytes += size;
}

function freeObj(b: Block, why: string): void {
  if (!check(b, why)) return;
  if (b.src === S_NOLOCK || rng.chance(0.25)) {
    currentOp = `kfreeNolock(${hex(b.addr)})`;
    counters.nolockCalls++;
    heap.kfreeNolock(b.addr);
  } else {
    currentOp = `kfree(${hex(b.addr)})`;
    heap.kfree(b.addr);
  }
  counters.frees++;
}

function opFree(): void {
  if (objs.length === 0) return;
  const b = take(objs, rng.below(objs.length));
  heldBytes -= b.size;
  freeObj(b, "before free");
}

function opKfreeBulk(): void {
  const n = Math.min(objs.length, rng.range(2, 16));
  if (n === 0) return;
  const addrs: number[] = [];
  for (let k = 0; k < n; k++) {
    const b = take(objs, rng.below(objs.length));
    heldBytes -= b.size;
    if (check(b, "before kfreeBulk")) addrs.push(b.addr);
  }
  if (rng.chance(0.2)) addrs.splice(rng.below(addrs.length + 1), 0, 0);
  currentOp = `kfreeBulk(${addrs.length} addresses)`;
  heap.kfreeBulk(addrs);
  counters.frees += addrs.filter((a) => a !== 0).length;
}

function opKfreeRcu(list: Block[], cacheObj: boolean): void {
  if (list.length === 0) return;
  const b = take(list, rng.below(list.length));
  if (!cacheObj) heldBytes -= b.size;
  if (!check(b, "before kfreeRcu")) return;
  currentOp = `kfreeRcu(${hex(b.addr)})`;
  if (cacheObj) {
    cacheNeedsBarrier = true;
    cacheRcuObjects++;
  }
  kfreeRcu(b);
}

/** Blocks kfreeRcu refused inside a read-side section, given to kfreeRcu again after it. */
const rcuRefused: Block[] = [];

/**
 * kfreeRcu. Inside a read-side section it may throw EDEADLK when it finds no room and would have
 * to wait for a grace period (documented): the block is queued again once the section is over.
 */
function kfreeRcu(b: Block): void {
  try {
    heap.kfreeRcu(b.addr);
  } catch (e) {
    if (e instanceof HeapError && e.code === "EDEADLK" && heap.rcuReadLockHeld()) {
      counters.rcuRefused++;
      rcuRefused.push(b);
      return;
    }
    throw e;
  }
  counters.kfreeRcu++;
}

/** After a read-side section: give kfreeRcu the blocks it refused inside it. */
function retryRefused(): void {
  while (rcuRefused.length > 0) {
    const b = rcuRefused.pop()!;
    currentOp = `kfreeRcu(${hex(b.addr)}) again, outside the read-side section`;
    try {
      heap.kfreeRcu(b.addr);
      counters.kfreeRcu++;
    } catch (e) {
      fail(
        `kfreeRcu(${hex(b.addr)}) threw EDEADLK inside a read-side section; given again outside it, it throws ${describe(e)}: ` +
          "the refused call left the object changed",
      );
    }
  }
}

/* ------------------------------------------------------------------ pages */

function opAllocPages(): void {
  const order = pickOrder();
  const gfp = pickGfp(order <= 3);
  currentOp = `allocPages(${order}, ${gfpName(gfp)})`;
  const a = heap.allocPages(order, gfp);
  if (a === 0) {
    counters.allocFails++;
    return;
  }
  counters.allocs++;
  const bytes = 4096 << order;
  if (!checkAddr(a, bytes, bytes, currentOp)) return;
  if ((gfp & GFP.ZERO) !== 0) {
    const nz = firstNonZero(heap, a, bytes);
    if (nz >= 0) fail(`${currentOp} returned ${hex(a)} with byte ${nz} = ${hex(heap.u8[a + nz]!)}, not zero`);
  }
  pages.push(newBlock(a, bytes, order, S_PAGES));
  heldBytes += bytes;
}

function opAllocPagesBulk(): void {
  const count = rng.range(1, 24);
  const gfp = rng.chance(0.7) ? GFP.KERNEL : GFP.NOWAIT;
  const out: number[] = [];
  currentOp = `allocPagesBulk(${count}, ${gfpName(gfp)})`;
  const n = heap.allocPagesBulk(count, out, gfp);
  if (n < count) counters.allocFails++;
  if (n < 0 || n > count) {
    fail(`${currentOp} returned ${n}`);
    return;
  }
  const seen = new Set<number>();
  for (let k = 0; k < n; k++) {
    const a = out[k]!;
    if (seen.has(a)) {
      fail(`${currentOp} returned ${hex(a)} twice`);
      continue;
    }
    seen.add(a);
    if (!checkAddr(a, 4096, 4096, currentOp)) continue;
    counters.allocs++;
    pages.push(newBlock(a, 4096, 0, S_PAGES_BULK));
    heldBytes += 4096;
  }
}

function freePageBlock(b: Block, why: string): void {
  if (!check(b, why)) return;
  if (b.order <= 3 && rng.chance(0.2)) {
    currentOp = `freePagesNolock(${hex(b.addr)}, ${b.order})`;
    counters.nolockCalls++;
    heap.freePagesNolock(b.addr, b.order);
  } else {
    currentOp = `freePages(${hex(b.addr)}, ${b.order})`;
    heap.freePages(b.addr, b.order);
  }
  counters.frees++;
}

function opFreePages(): void {
  if (pages.length === 0) return;
  const b = take(pages, rng.below(pages.length));
  heldBytes -= b.size;
  freePageBlock(b, "before freePages");
}

/** Rarely: take order-0 pages until the heap says no (or a cap), then give them all back. */
function opPressureBurst(): void {
  const cap = Math.max(16, Math.min(4096, Math.floor(heap.size / 4096 / (cfg.workers * 4))));
  const got: Block[] = [];
  currentOp = `pressure burst (up to ${cap} pages)`;
  for (let k = 0; k < cap; k++) {
    const a = heap.allocPages(0, GFP.NOWAIT | GFP.NOWARN);
    if (a === 0) {
      counters.allocFails++;
      break;
    }
    counters.allocs++;
    if (!checkAddr(a, 4096, 4096, "allocPages(0, NOWAIT) in a pressure burst")) break;
    got.push(newBlock(a, 4096, 0, S_PAGES));
  }
  for (const b of got) freePageBlock(b, "before freePages after a pressure burst");
}

/* ------------------------------------------------------------------ cross-worker frees */

function opSend(): void {
  if (cfg.workers < 2) return;
  let to = rng.below(cfg.workers - 1);
  if (to >= me) to++;
  if (pages.length > 0 && rng.chance(0.3)) {
    const i = rng.below(pages.length);
    const b = pages[i]!;
    currentOp = `send pages ${hex(b.addr)} to worker ${to}`;
    if (rings.push(to, b.addr, XKIND_PAGES, me, b.order, b.tag)) {
      take(pages, i);
      heldBytes -= b.size;
      counters.xsent++;
    }
    return;
  }
  if (objs.length === 0) return;
  const i = rng.below(objs.length);
  const b = objs[i]!;
  currentOp = `send object ${hex(b.addr)} to worker ${to}`;
  if (rings.push(to, b.addr, b.src === S_NOLOCK ? XKIND_NOLOCK : XKIND_KMALLOC, me, b.size, b.tag)) {
    take(objs, i);
    heldBytes -= b.size;
    counters.xsent++;
  }
}

const entry = new Int32Array(4);

function opReceive(max: number, adopt: boolean): void {
  for (let k = 0; k < max && rings.pop(me, entry); k++) {
    const addr = entry[0]!;
    const kind = entry[1]! & 0xff;
    const from = entry[1]! >>> 8;
    const isPages = kind === XKIND_PAGES;
    const order = isPages ? entry[2]! : -1;
    const b: Block = { addr, size: isPages ? 4096 << order : entry[2]!, order, tag: entry[3]!, src: S_RECEIVED, born: counters.ops };
    currentOp = `receive ${isPages ? `pages (order ${order})` : "object"} ${hex(addr)} from worker ${from}`;
    if (!check(b, `of a block received from worker ${from}`)) continue;
    if (adopt && rng.chance(0.3)) {
      if (kind === XKIND_NOLOCK) b.src = S_NOLOCK;
      (isPages ? pages : objs).push(b);
      heldBytes += b.size;
      continue;
    }
    if (isPages) freePageBlock(b, `of pages received from worker ${from}`);
    else freeObj(kind === XKIND_NOLOCK ? { ...b, src: S_NOLOCK } : b, `of an object received from worker ${from}`);
    counters.xfrees++;
  }
}

/* ------------------------------------------------------------------ RCU */

function opRcuPublish(inRead = false): void {
  const slot = rng.below(RCU_SLOTS);
  const del = rng.chance(0.1);
  let next = 0n;
  if (!del) {
    const tag = nextTag();
    const size = rcuObjectSize(tag);
    currentOp = `RCU publish kmalloc(${size}) in slot ${slot}`;
    const a = rng.chance(0.2) ? (counters.nolockCalls++, heap.kmallocNolock(size)) : heap.kmalloc(size);
    if (a === 0) {
      counters.allocFails++;
      return;
    }
    counters.allocs++;
    if (!checkAddr(a, size, 8, currentOp)) return;
    sign(heap, a, size, tag);
    next = packRcu(a, tag);
    counters.rcuPublished++;
  }
  currentOp = `RCU ${del ? "delete" : "replace"} in slot ${slot}`;
  const old = Atomics.exchange(rcuTable, slot, next);
  if (old === 0n) return;
  const { addr, tag } = unpackRcu(old);
  const b: Block = { addr, size: rcuObjectSize(tag), order: -1, tag, src: S_RCU, born: -1 };
  if (!check(b, `of an RCU-published object just unpublished from slot ${slot}`)) return;
  // A noBlock agent has no blocking synchronizeRcu (it would await synchronizeRcuAsync()).
  if (!inRead && rng.chance(0.04) && !cfg.noBlock) {
    currentOp = "synchronizeRcu";
    heap.synchronizeRcu();
    counters.synchronizeRcu++;
    if (!check(b, "after synchronizeRcu (nobody else may free it)")) return;
    currentOp = `kfree(${hex(addr)}) after synchronizeRcu`;
    heap.kfree(addr);
    counters.frees++;
    return;
  }
  currentOp = `kfreeRcu(${hex(addr)}) of an unpublished object`;
  kfreeRcu(b);
}

function opRcuRead(): void {
  currentOp = "RCU read section";
  heap.rcuReadLock();
  const nested = rng.chance(0.2);
  if (nested) heap.rcuReadLock();
  const refs: { b: Block; slot: number }[] = [];
  try {
    const n = rng.range(1, 4);
    for (let k = 0; k < n; k++) {
      const slot = rng.below(RCU_SLOTS);
      const v = Atomics.load(rcuTable, slot);
      if (v === 0n) continue;
      const { addr, tag } = unpackRcu(v);
      const b: Block = { addr, size: rcuObjectSize(tag), order: -1, tag, src: S_RCU, born: -1 };
      if (!check(b, `of an RCU-published object read from slot ${slot} inside a read-side section`)) return;
      refs.push({ b, slot });
    }
    // Work inside the section, then look at the same objects again: a writer may have replaced
    // and kfreeRcu'd them meanwhile, but no grace period can end while this section is open.
    const r = rng.next();
    if (r < 0.3) {
      const size = pickSmallSize();
      currentOp = `kmalloc(${size}, ATOMIC) in a read section`;
      const a = heap.kmalloc(size, GFP.ATOMIC);
      if (a === 0) counters.allocFails++;
      else if (checkAddr(a, size, 8, currentOp)) {
        counters.allocs++;
        objs.push(newBlock(a, size, -1, S_KMALLOC));
        heldBytes += size;
      }
    } else if (r < 0.5) {
      opFree();
    } else if (r < 0.55) {
      opKfreeRcu(objs, false);
    } else if (r < 0.65) {
      opRcuPublish(true);
    }
    currentOp = "RCU read section (second look)";
    for (const { b, slot } of refs) {
      if (!check(b, `of an RCU-published object from slot ${slot}, looked at again in the same read-side section`)) return;
    }
  } finally {
    if (nested) heap.rcuReadUnlock();
    heap.rcuReadUnlock();
    counters.rcuReads++;
  }
  retryRefused();
}

/* ------------------------------------------------------------------ named caches */

let cache: KmemCache | null = null;
let cacheName = "";
let cacheAlign = 8;
let cacheUses = 0;
let cacheSeq = 0;
let cacheNeedsBarrier = false;
/** Objects of the current cache given to kfreeRcu. */
let cacheRcuObjects = 0;

function createCache(): void {
  cacheSeq++;
  cacheName = `stress-${(cfg.seed >>> 0).toString(16)}-w${me}-${cacheSeq}`;
  const r = rng.next();
  const size = r < 0.6 ? rng.range(1, 256) : r < 0.9 ? rng.range(257, 2048) : rng.range(2049, 16384);
  cacheAlign = [8, 8, 16, 32, 64, 128, 512][rng.below(7)]!;
  currentOp = `createCache("${cacheName}", ${size}, align ${cacheAlign})`;
  cache = again(() => heap.createCache(cacheName, size, { align: cacheAlign }));
  counters.cachesCreated++;
  cacheUses = rng.range(100, 2500);
  cacheNeedsBarrier = false;
  cacheRcuObjects = 0;
  if (cache.objectSize !== size) fail(`${currentOp} gave a cache of ${cache.objectSize}-byte objects`);
  const found = heap.findCache(cacheName);
  if (found === null || found.objectSize !== size) fail(`findCache("${cacheName}") right after ${currentOp} gave ${found === null ? "null" : `${found.objectSize}-byte objects`}`);
}

function cacheAllocOne(c: KmemCache, src: number): void {
  const gfp = rng.chance(0.9) ? GFP.KERNEL : rng.chance(0.5) ? GFP.NOWAIT : GFP.ZERO;
  currentOp = `${cacheName}.alloc(${gfpName(gfp)})`;
  const a = c.alloc(gfp);
  if (a === 0) {
    counters.allocFails++;
    return;
  }
  counters.allocs++;
  if (!checkAddr(a, c.objectSize, cacheAlign, currentOp)) return;
  if ((gfp & GFP.ZERO) !== 0) {
    const nz = firstNonZero(heap, a, c.objectSize);
    if (nz >= 0) fail(`${currentOp} returned ${hex(a)} with byte ${nz} = ${hex(heap.u8[a + nz]!)}, not zero`);
  }
  cacheObjs.push(newBlock(a, c.objectSize, -1, src));
}

function freeCacheObjs(c: KmemCache, n: number): void {
  const r = rng.next();
  if (r < 0.3 && n > 1) {
    const addrs: number[] = [];
    for (let k = 0; k < n && cacheObjs.length > 0; k++) {
      const b = take(cacheObjs, rng.below(cacheObjs.length));
      if (check(b, `before ${cacheName}.freeBulk`)) addrs.push(b.addr);
    }
    currentOp = `${cacheName}.freeBulk(${addrs.length})`;
    c.freeBulk(addrs);
    counters.frees += addrs.length;
    return;
  }
  for (let k = 0; k < n && cacheObjs.length > 0; k++) {
    const b = take(cacheObjs, rng.below(cacheObjs.length));
    if (!check(b, `before freeing an object of ${cacheName}`)) continue;
    if (rng.chance(0.15)) {
      currentOp = `kfree(${hex(b.addr)}) of ${cacheName}`;
      heap.kfree(b.addr);
    } else {
      currentOp = `${cacheName}.free(${hex(b.addr)})`;
      c.free(b.addr);
    }
    counters.frees++;
  }
}

function destroyCache(c: KmemCache): void {
  // Sometimes first try with live objects: that must be refused with EBUSY, the cache intact.
  if (cacheObjs.length > 0 && rng.chance(0.4)) {
    currentOp = `${cacheName}.destroy() with ${cacheObjs.length} live objects`;
    busyExpected = true;
    let code = "";
    try {
      again(() => c.destroy());
    } catch (e) {
      code = e instanceof HeapError ? e.code : describe(e);
      if (code !== "EBUSY") fail(`${currentOp} threw ${describe(e)}, not EBUSY`);
    } finally {
      busyExpected = false;
    }
    if (code === "") {
      fail(`${currentOp} succeeded`);
      cache = null;
      cacheObjs.length = 0;
      return;
    }
    counters.expectedBusy++;
  }
  freeCacheObjs(c, cacheObjs.length);
  if (cacheNeedsBarrier) {
    // Objects of this cache may still wait for a grace period in kfreeRcu: flush them first.
    currentOp = `rcuBarrier before destroying ${cacheName}`;
    again(() => heap.rcuBarrier());
    counters.rcuBarrier++;
  }
  currentOp = `${cacheName}.destroy()`;
  // Its slab_error events ("live object at destroy") are summed up by the EBUSY failure below.
  busyExpected = true;
  try {
    again(() => c.destroy());
  } catch (e) {
    const rcu = cacheRcuObjects > 0 ? `; ${cacheRcuObjects} of its objects were given to kfreeRcu, then rcuBarrier() returned before this destroy` : "; none of its objects went through kfreeRcu";
    fail(`${currentOp} with no live objects threw ${describe(e)}${rcu}`);
    cache = null;
    return;
  } finally {
    busyExpected = false;
  }
  counters.cachesDestroyed++;
  cache = null;
  if (heap.findCache(cacheName) !== null) fail(`findCache("${cacheName}") still finds the cache after destroy`);
  let code = "";
  try {
    c.alloc();
  } catch (e) {
    code = e instanceof HeapError ? e.code : describe(e);
  }
  if (code !== "EINVAL") fail(`alloc on the destroyed cache ${cacheName} gave ${code === "" ? "no error" : code}, not EINVAL`);
}

function opCache(): void {
  if (cache === null) {
    if (rng.chance(0.3)) createCache();
    return;
  }
  const c = cache;
  if (--cacheUses <= 0) {
    destroyCache(c);
    return;
  }
  const r = rng.next();
  const full = cacheObjs.length >= MAX_CACHE_OBJS;
  if (r < 0.4 && !full) {
    cacheAllocOne(c, S_CACHE);
  } else if (r < 0.55 && !full) {
    const n = rng.range(1, 16);
    const out = rng.chance(0.5) ? new Uint32Array(n) : ([] as number[]);
    currentOp = `${cacheName}.allocBulk(${n})`;
    const got = c.allocBulk(n, out);
    if (got === 0) {
      counters.allocFails++;
      return;
    }
    if (got !== n) {
      fail(`${currentOp} returned ${got}`);
      return;
    }
    const seen = new Set<number>();
    for (let k = 0; k < n; k++) {
      const a = out[k]!;
      if (seen.has(a)) fail(`${currentOp} returned ${hex(a)} twice`);
      seen.add(a);
      if (!checkAddr(a, c.objectSize, cacheAlign, currentOp)) continue;
      counters.allocs++;
      cacheObjs.push(newBlock(a, c.objectSize, -1, S_CACHE_BULK));
    }
  } else if (r < 0.97) {
    freeCacheObjs(c, rng.chance(0.8) ? 1 : rng.range(2, 12));
  } else {
    opKfreeRcu(cacheObjs, true);
  }
}

/* ------------------------------------------------------------------ the loop */

function opHookDrain(): void {
  const n = Math.min(hookBlocks.length, rng.range(1, 8));
  for (let k = 0; k < n && hookBlocks.length > 0; k++) {
    const b = take(hookBlocks, rng.below(hookBlocks.length));
    if (b.order >= 0) freePageBlock(b, "of pages the hook allocated, before freeing them outside the hook");
    else freeObj(b, "of an object the hook allocated, before freeing it outside the hook");
  }
}

function step(): void {
  counters.ops++;
  const over = heldBytes > cfg.budget || objs.length > MAX_OBJS;
  let r = rng.below(1000);
  if (over && r < 600) r = 900; // mostly frees while over budget
  if (r < 180) opKmalloc();
  else if (r < 230) opKmallocNolock();
  else if (r < 265) opKzalloc();
  else if (r < 300) opKrealloc();
  else if (r < 320) opKfreeBulk();
  else if (r < 360) pages.length > MAX_PAGE_BLOCKS ? opFreePages() : opAllocPages();
  else if (r < 370) pages.length > MAX_PAGE_BLOCKS ? opFreePages() : opAllocPagesBulk();
  else if (r < 410) opSend();
  else if (r < 450) opReceive(16, true);
  else if (r < 540) opCache();
  else if (r < 570) opKfreeRcu(objs, false);
  else if (r < 610) opRcuPublish();
  else if (r < 680) opRcuRead();
  else if (r < 700) opHookDrain();
  else if (r < 701) {
    if (rng.chance(0.2)) opPressureBurst();
    else if (!cfg.noBlock) {
      currentOp = "synchronizeRcu";
      heap.synchronizeRcu();
      counters.synchronizeRcu++;
    }
  } else if (r < 750) opFreePages();
  else opFree();
}

function yieldTurn(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

async function main(): Promise<void> {
  let last = Date.now();
  while (Atomics.load(ctl, CTL_STOP) === 0) {
    for (let k = 0; k < 256; k++) {
      try {
        step();
      } catch (e) {
        fail(`unexpected ${describe(e)}`);
      }
      if ((k & 15) === 15 && Date.now() - last >= 2) break;
    }
    progress[me] = counters.ops;
    await yieldTurn();
    last = Date.now();
  }
  cleanup();
}

/** Free everything this worker holds (checking each block), drain its inbox and detach. */
function cleanup(): void {
  const guard = (what: string, f: () => void): void => {
    currentOp = what;
    try {
      f();
    } catch (e) {
      fail(`cleanup (${what}): unexpected ${describe(e)}`);
    }
  };
  guard("clearing the hook", () => heap.setReentryHook(null));
  guard("kfreeRcu of refused blocks", () => retryRefused());
  while (hookBlocks.length > 0) guard("freeing hook blocks", () => opHookDrain());
  while (objs.length > 0) guard("freeing objects", () => opFree());
  while (pages.length > 0) guard("freeing pages", () => opFreePages());
  if (cache !== null) {
    const c = cache;
    guard("destroying the worker's cache", () => destroyCache(c));
  }
  guard("draining the inbox", () => opReceive(1 << 30, false));
  let detached = false;
  guard("detach", () => {
    again(() => heap.detach());
    detached = true;
  });
  Atomics.add(ctl, CTL_DONE, 1);
  post({ type: "done", index: me, cpu: heap.cpu, counters, detached });
}

main().catch((e: unknown) => {
  fail(`the worker's loop died: ${describe(e)}`);
  throw e;
});
