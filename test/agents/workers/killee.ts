/*
 * A worker of the kill harness (test/kill.ts): it runs every path of the allocator in a seeded loop
 * until the host terminates it at a random instant, or sets G_STOP. Every block it holds is in its
 * range of the shared entry table, with a signature over its whole size, so the host can check and
 * free what a killed worker held; what it is doing at each instant is in its pending record, so the
 * host can tell a block in flight (allocated, not yet recorded; or being freed) from a lost one.
 */
import { parentPort } from "node:worker_threads";
import { GFP, Heap, HeapError, KmemCache } from "../../../src/index.js";
import { checkPattern, fillPattern, Prng, signature } from "../../support/util.js";
import {
  churnName,
  churnOwner,
  E_ADDR,
  E_CACHE,
  E_KIND,
  E_OWNER,
  E_SIG,
  E_SIZE,
  E_WORDS,
  ENTRIES_PER_WORKER,
  G_PAUSE,
  G_STUCK,
  G_WORDS,
  G_STOP,
  HANDOFF,
  KIND,
  OP,
  SHARED_CACHES,
  W_ACK,
  W_CHURN,
  W_SLOTSFULL,
  W_WORDS,
  W_CPU,
  W_DRAINS,
  W_GROWS,
  W_HKIND,
  W_HOOKS,
  W_HOP,
  W_HSIZE,
  W_INCARN,
  W_ATTACHING,
  W_DRAINOP,
  W_INDRAIN,
  W_OPS,
  W_PENTRY,
  W_PKIND,
  W_POP,
  W_PSIZE,
  wBase,
  type KilleeData,
} from "../kill-proto.js";
import { runWorker } from "./common.js";

runWorker<KilleeData & { abortAt?: number }>(async (data) => {
  const ctrl = new Int32Array(data.ctrl);
  const E = new Int32Array(data.entries);
  const wb = wBase(data.id);
  const me = data.id + 1;
  const incarn = ctrl[wb + W_INCARN]!;
  const rng = new Prng(data.seed);
  const hookRng = new Prng(data.seed ^ 0x5bd1e995);
  const first = data.id * ENTRIES_PER_WORKER;
  const workers = (ctrl.length - G_WORDS) / W_WORDS;
  let serial = 0;
  Atomics.store(ctrl, wb + W_ATTACHING, 1);
  let heap = Heap.attach(data.buffer);
  Atomics.store(ctrl, wb + W_CPU, heap.cpu);
  Atomics.store(ctrl, wb + W_ATTACHING, 0);
  const shared: KmemCache[] = [];
  for (const c of SHARED_CACHES) {
    const h = heap.findCache(c.name);
    if (h === null) throw new Error(`shared cache ${c.name} missing`);
    shared.push(h);
  }
  /** Churn caches by entry index. */
  const churn = new Map<number, KmemCache>();
  parentPort!.postMessage({ type: "up", cpu: heap.cpu });

  const pend = (op: number, entry: number, kind: number, size: number): void => {
    ctrl[wb + W_PENTRY] = entry;
    ctrl[wb + W_PKIND] = kind;
    ctrl[wb + W_PSIZE] = size;
    Atomics.store(ctrl, wb + W_POP, op);
  };
  const done = (): void => void Atomics.store(ctrl, wb + W_POP, OP.none);

  const freeEntry = (): number => {
    const start = rng.range(0, ENTRIES_PER_WORKER - 1);
    for (let k = 0; k < ENTRIES_PER_WORKER; k++) {
      const e = first + ((start + k) % ENTRIES_PER_WORKER);
      if (Atomics.load(E, e * E_WORDS + E_OWNER) === 0) return e;
    }
    return -1;
  };
  const ownEntry = (kinds: number): number => {
    const start = rng.range(0, ENTRIES_PER_WORKER - 1);
    for (let k = 0; k < ENTRIES_PER_WORKER; k++) {
      const e = first + ((start + k) % ENTRIES_PER_WORKER);
      const w = e * E_WORDS;
      if (Atomics.load(E, w + E_OWNER) === me && ((1 << E[w + E_KIND]!) & kinds) !== 0) return e;
    }
    return -1;
  };
  const record = (e: number, kind: number, addr: number, size: number, cacheEntry: number): void => {
    const w = e * E_WORDS;
    const sig = signature(data.id * 64 + (incarn & 63), serial++);
    E[w + E_KIND] = kind;
    E[w + E_ADDR] = addr;
    E[w + E_SIZE] = size;
    E[w + E_SIG] = sig;
    E[w + E_CACHE] = cacheEntry;
    if (kind !== KIND.cache) fillPattern(heap.i32, heap.u8, addr, bytesOf(kind, size), sig);
    Atomics.store(E, w + E_OWNER, me);
  };
  const check = (e: number): void => {
    const w = e * E_WORDS;
    const kind = E[w + E_KIND]!;
    if (kind === KIND.cache) return;
    const bad = checkPattern(heap.i32, heap.u8, E[w + E_ADDR]!, bytesOf(kind, E[w + E_SIZE]!), E[w + E_SIG]!);
    if (bad !== null) throw new Error(`worker ${data.id}: contents changed: ${bad}`);
  };
  const release = (e: number): void => {
    const w = e * E_WORDS;
    const kind = E[w + E_KIND]!;
    const addr = E[w + E_ADDR]!;
    if (kind === KIND.pages) heap.freePages(addr, E[w + E_SIZE]!);
    else heap.kfree(addr);
  };

  const objSize = (): number => {
    const r = rng.next();
    if (r < 0.6) return rng.range(1, 256);
    if (r < 0.9) return rng.range(257, 8192);
    return rng.range(8193, 40_000);
  };

  const hook = (): void => {
    if (!hookRng.chance(0.02)) return;
    ctrl[wb + W_HOOKS]!++;
    if (hookRng.chance(0.6)) {
      const size = hookRng.range(1, 2048);
      ctrl[wb + W_HKIND] = KIND.obj;
      ctrl[wb + W_HSIZE] = size;
      Atomics.store(ctrl, wb + W_HOP, OP.alloc);
      const a = heap.kmallocNolock(size);
      if (a !== 0) {
        heap.u8.fill(0x5a, a, a + size);
        heap.kfreeNolock(a);
      }
    } else {
      const order = hookRng.range(0, 3);
      ctrl[wb + W_HKIND] = KIND.pages;
      ctrl[wb + W_HSIZE] = order;
      Atomics.store(ctrl, wb + W_HOP, OP.alloc);
      const a = heap.allocPagesNolock(order);
      if (a !== 0) heap.freePagesNolock(a, order);
    }
    Atomics.store(ctrl, wb + W_HOP, OP.none);
  };
  if (data.reentry) heap.setReentryHook(hook);

  // G_PAUSE holds the pause round's number (0: run); the acknowledgement names the round.
  const pauseIfAsked = (): void => {
    const round = Atomics.load(ctrl, G_PAUSE);
    if (round === 0) return;
    Atomics.store(ctrl, wb + W_ACK, round);
    Atomics.notify(ctrl, wb + W_ACK);
    const end = Date.now() + 60_000;
    while (Atomics.load(ctrl, G_PAUSE) === round) {
      if (Date.now() > end) throw new Error(`worker ${data.id}: paused for more than 60 s`);
      Atomics.wait(ctrl, G_PAUSE, round, 50);
    }
  };

  const allocObj = (): void => {
    const e = freeEntry();
    if (e < 0) return;
    const size = objSize();
    const kind = size > 8192 ? KIND.large : KIND.obj;
    const how = rng.range(0, 5);
    pend(OP.alloc, e, kind, size);
    let a: number;
    if (how === 0 && size <= 8192) a = heap.kmallocNolock(size);
    else if (how === 1) a = heap.kzalloc(size);
    else if (how === 2) a = heap.kmalloc(size, GFP.NOWAIT);
    else a = heap.kmalloc(size);
    if (a !== 0) record(e, kind, a, size, -1);
    done();
  };
  const allocPages = (): void => {
    const e = freeEntry();
    if (e < 0) return;
    const nolock = rng.chance(0.25);
    const order = nolock ? rng.range(0, 3) : rng.weighted([8, 4, 3, 2, 1, 1]);
    pend(OP.alloc, e, KIND.pages, order);
    const a = nolock ? heap.allocPagesNolock(order) : heap.allocPages(order, rng.chance(0.2) ? GFP.NOWAIT : GFP.KERNEL);
    if (a !== 0) record(e, KIND.pages, a, order, -1);
    done();
  };
  /** Up to n distinct free entries of this worker's range, for a bulk call's results. */
  const freeEntries = (n: number): number[] => {
    const es: number[] = [];
    for (let k = 0; k < n; k++) {
      const e = freeEntry();
      if (e < 0 || es.includes(e)) break;
      es.push(e);
    }
    return es;
  };
  const bulkPages = (): void => {
    const es = freeEntries(rng.range(1, 4));
    if (es.length === 0) return;
    const out: number[] = [];
    pend(OP.bulkPages, es[0]!, KIND.pages, es.length);
    const got = heap.allocPagesBulk(es.length, out);
    for (let k = 0; k < got; k++) record(es[k]!, KIND.pages, out[k]!, 0, -1);
    done();
  };
  const freeOne = (nolock: boolean): void => {
    const e = ownEntry((1 << KIND.obj) | (1 << KIND.large) | (1 << KIND.pages) | (1 << KIND.cobj));
    if (e < 0) return;
    const w = e * E_WORDS;
    check(e);
    pend(OP.free, e, E[w + E_KIND]!, E[w + E_SIZE]!);
    const kind = E[w + E_KIND]!;
    if (nolock && kind === KIND.obj) heap.kfreeNolock(E[w + E_ADDR]!);
    else if (nolock && kind === KIND.pages && E[w + E_SIZE]! <= 3) heap.freePagesNolock(E[w + E_ADDR]!, E[w + E_SIZE]!);
    else release(e);
    Atomics.store(E, w + E_OWNER, 0);
    done();
  };
  const rcuFree = (): void => {
    const e = ownEntry((1 << KIND.obj) | (1 << KIND.cobj) | (1 << KIND.large));
    if (e < 0) return;
    const w = e * E_WORDS;
    // Not the objects of a churn cache: a kill inside a kfreeRcu batch free may leak the one object
    // being freed (documented), and a churn cache with a leaked object could not be destroyed.
    if (E[w + E_KIND] === KIND.cobj && E[w + E_CACHE] !== -1) return;
    check(e);
    const inSection = rng.chance(0.3);
    pend(OP.rcuFree, e, E[w + E_KIND]!, E[w + E_SIZE]!);
    if (inSection) heap.rcuReadLock();
    try {
      heap.kfreeRcu(E[w + E_ADDR]!);
      Atomics.store(E, w + E_OWNER, 0);
    } catch (err) {
      // Documented: kfreeRcu inside a read section that finds no room is EDEADLK, the object still ours.
      if (!(err instanceof HeapError && err.code === "EDEADLK" && inSection)) throw err;
    } finally {
      if (inSection) heap.rcuReadUnlock();
    }
    done();
  };
  const realloc = (): void => {
    const e = ownEntry((1 << KIND.obj) | (1 << KIND.large));
    if (e < 0) return;
    const w = e * E_WORDS;
    check(e);
    const size = objSize();
    const old = E[w + E_SIZE]!;
    const oldAddr = E[w + E_ADDR]!;
    const oldKind = E[w + E_KIND]!;
    pend(OP.realloc, e, size > 8192 ? KIND.large : KIND.obj, size);
    const a = heap.krealloc(oldAddr, size);
    if (a !== 0) {
      const keep = Math.min(old, size);
      const bad = checkPattern(heap.i32, heap.u8, a, keep & ~3, E[w + E_SIG]!);
      if (bad !== null) throw new Error(`worker ${data.id}: krealloc lost contents: ${bad}`);
      // The old entry becomes the new block: re-record in place (E_OWNER stays me through the rewrite).
      // The address goes last: a kill between these stores leaves the old address with the new kind
      // (the host's free of it is refused: krealloc freed it; the new block is in flight, found by
      // its owner), never the new block under the old kind (a large block taken for an object and
      // left allocated).
      // A large block shrunk in place stays a large block (krealloc keeps it when the size fits).
      E[w + E_SIZE] = size;
      E[w + E_KIND] = size > 8192 || (a === oldAddr && oldKind === KIND.large) ? KIND.large : KIND.obj;
      E[w + E_ADDR] = a;
      fillPattern(heap.i32, heap.u8, a, size, E[w + E_SIG]!);
    }
    done();
  };
  const cacheAlloc = (): void => {
    const churnEntries = [...churn.keys()];
    const useChurn = churnEntries.length > 0 && rng.chance(0.5);
    const ce = useChurn ? churnEntries[rng.range(0, churnEntries.length - 1)]! : -1;
    const c = useChurn ? churn.get(ce)! : shared[rng.range(0, shared.length - 1)]!;
    if (rng.chance(0.3)) {
      const es = freeEntries(rng.range(1, 3));
      if (es.length === 0) return;
      const out: number[] = [];
      pend(OP.cacheBulk, es[0]!, KIND.cobj, es.length);
      const got = c.allocBulk(es.length, out);
      for (let k = 0; k < got; k++) record(es[k]!, KIND.cobj, out[k]!, c.objectSize, ce);
      done();
      return;
    }
    const e = freeEntry();
    if (e < 0) return;
    pend(OP.alloc, e, KIND.cobj, c.objectSize);
    const a = c.alloc(rng.chance(0.2) ? GFP.ZERO : GFP.KERNEL);
    if (a !== 0) record(e, KIND.cobj, a, c.objectSize, ce);
    done();
  };
  /**
   * createCache found every named cache slot in use: expected only when each is accounted for, a
   * shared cache, a churn cache of a worker's current incarnation (a live one, or one killed and not
   * yet settled), a dying one (destroyed, released once every slot flushed it), or one of the
   * G_STUCK churn caches the host keeps (dead workers' caches with an object no kfree accepts).
   */
  const slotsFull = (message: string): void => {
    const names = heap.cacheNames().filter((x): x is string => x !== null && !x.startsWith("kmalloc") && x !== "kmem_cache_sheaf");
    const other: string[] = [];
    for (const name of names) {
      if (SHARED_CACHES.some((c) => c.name === name)) continue;
      const o = churnOwner(name);
      if (o !== null && o.id < workers && o.incarn === Atomics.load(ctrl, wBase(o.id) + W_INCARN)) continue;
      if (heap.findCache(name) === null) continue;
      other.push(name);
    }
    const stuck = Atomics.load(ctrl, G_STUCK);
    if (other.length !== stuck) throw new Error(`worker ${data.id}: ${message}; ${other.length} named caches of no live worker (${other.join(", ")}), but the host keeps ${stuck} stuck ones`);
    ctrl[wb + W_SLOTSFULL]!++;
  };
  const churnStep = (): void => {
    if (churn.size === 0 || (churn.size < 2 && rng.chance(0.5))) {
      const e = freeEntry();
      if (e < 0) return;
      const n = serial++;
      const size = rng.range(8, 3000);
      pend(OP.createCache, e, KIND.cache, n);
      let c: KmemCache;
      try {
        c = heap.createCache(churnName(data.id, incarn, n), size, { align: 1 << rng.range(3, 7) });
      } catch (err) {
        if (!(err instanceof HeapError && err.code === "EINVAL" && err.message.includes("named cache slots are in use"))) throw err;
        slotsFull(err.message);
        done();
        return;
      }
      record(e, KIND.cache, n, size, -1);
      churn.set(e, c);
      done();
      ctrl[wb + W_CHURN]!++;
      return;
    }
    // Destroy one: free its objects first (never handed off), then destroy.
    const ces = [...churn.keys()];
    const ce = ces[rng.range(0, ces.length - 1)]!;
    for (let e = first; e < first + ENTRIES_PER_WORKER; e++) {
      const w = e * E_WORDS;
      if (Atomics.load(E, w + E_OWNER) !== me || E[w + E_KIND] !== KIND.cobj || E[w + E_CACHE] !== ce) continue;
      check(e);
      pend(OP.free, e, KIND.cobj, E[w + E_SIZE]!);
      heap.kfree(E[w + E_ADDR]!);
      Atomics.store(E, w + E_OWNER, 0);
      done();
    }
    const c = churn.get(ce)!;
    pend(OP.destroyCache, ce, KIND.cache, E[ce * E_WORDS + E_ADDR]!);
    c.destroy();
    churn.delete(ce);
    Atomics.store(E, ce * E_WORDS + E_OWNER, 0);
    done();
  };
  const handoff = (): void => {
    if (rng.chance(0.5)) {
      const e = ownEntry((1 << KIND.obj) | (1 << KIND.large) | (1 << KIND.pages));
      if (e >= 0) Atomics.store(E, e * E_WORDS + E_OWNER, HANDOFF);
      return;
    }
    const total = E.length / E_WORDS;
    const start = rng.range(0, total - 1);
    for (let k = 0; k < total; k++) {
      const e = (start + k) % total;
      const w = e * E_WORDS;
      if (Atomics.load(E, w + E_OWNER) !== HANDOFF) continue;
      if (Atomics.compareExchange(E, w + E_OWNER, HANDOFF, me) !== HANDOFF) continue;
      check(e);
      pend(OP.free, e, E[w + E_KIND]!, E[w + E_SIZE]!);
      release(e);
      Atomics.store(E, w + E_OWNER, 0);
      done();
      return;
    }
  };
  const drain = (): void => {
    ctrl[wb + W_DRAINS]!++;
    Atomics.store(ctrl, wb + W_INDRAIN, 1);
    try {
      drainOnce();
    } finally {
      Atomics.store(ctrl, wb + W_INDRAIN, 0);
    }
  };
  const drainOnce = (): void => {
    const r = rng.range(0, 3);
    ctrl[wb + W_DRAINOP] = r + 1;
    if (r === 0) heap.shrink();
    else if (r === 1) shared[rng.range(0, shared.length - 1)]!.shrink();
    else if (r === 2 && churn.size === 0) {
      // Detach and attach again: every block stays ours (blocks belong to no slot).
      // W_CPU keeps the old slot until detach returns; W_ATTACHING covers the attach.
      heap.detach();
      Atomics.store(ctrl, wb + W_ATTACHING, 1);
      Atomics.store(ctrl, wb + W_CPU, -1);
      heap = Heap.attach(data.buffer);
      Atomics.store(ctrl, wb + W_CPU, heap.cpu);
      Atomics.store(ctrl, wb + W_ATTACHING, 0);
      if (data.reentry) heap.setReentryHook(hook);
      shared.length = 0;
      for (const c of SHARED_CACHES) shared.push(heap.findCache(c.name)!);
    } else if (r === 3) {
      heap.rcuBarrier();
    }
  };
  const grow = (): void => {
    if (!data.growth) return;
    heap.refreshViews();
    const next = heap.size + (1 << 20);
    if (next > data.maxSize) return;
    try {
      heap.grow(next);
      ctrl[wb + W_GROWS]!++;
    } catch (err) {
      // Another agent grew it past `next` meanwhile: EINVAL (not larger than the current size) is fine.
      if (!(err instanceof HeapError && err.code === "EINVAL")) throw err;
    }
  };
  const readSection = (): void => {
    heap.rcuReadLock();
    const e = ownEntry((1 << KIND.obj) | (1 << KIND.cobj));
    if (e >= 0) check(e);
    heap.rcuReadUnlock();
  };

  const ops: (() => void)[] = [
    allocObj, // 0
    () => freeOne(false), // 1
    () => freeOne(true), // 2
    allocPages, // 3
    bulkPages, // 4
    rcuFree, // 5
    realloc, // 6
    cacheAlloc, // 7
    churnStep, // 8
    handoff, // 9
    drain, // 10
    grow, // 11
    readSection, // 12
    () => heap.synchronizeRcu(), // 13
  ];
  const weights = [30, 18, 6, 14, 2, 6, 4, 14, 1.5, 5, 0.6, 0.3, 3, 0.2];

  let n = 0;
  while (Atomics.load(ctrl, G_STOP) === 0) {
    pauseIfAsked();
    ops[rng.weighted(weights)]!();
    Atomics.add(ctrl, wb + W_OPS, 1);
    // Let the kfreeRcu timer and the message port run now and then.
    if ((++n & 255) === 0) await new Promise((r) => setImmediate(r));
  }
  // The end: free what this worker holds, destroy its caches, detach.
  for (let e = first; e < first + ENTRIES_PER_WORKER; e++) {
    const w = e * E_WORDS;
    if (Atomics.load(E, w + E_OWNER) !== me || E[w + E_KIND] === KIND.cache) continue;
    check(e);
    release(e);
    Atomics.store(E, w + E_OWNER, 0);
  }
  for (const [ce, c] of churn) {
    c.destroy();
    Atomics.store(E, ce * E_WORDS + E_OWNER, 0);
  }
  Atomics.store(ctrl, wb + W_CPU, -1);
  heap.detach();
  parentPort!.postMessage({ type: "done" });
});

function bytesOf(kind: number, size: number): number {
  return kind === KIND.pages ? 4096 << size : size;
}
