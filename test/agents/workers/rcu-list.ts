/*
 * An RCU-protected singly linked list in the heap, shared by several workers. Every worker is both
 * reader and writer:
 *   readers traverse the whole list inside a read section, loading links with Atomics.load and
 *     checking every node's signature and payload (a node freed too early shows the allocator's
 *     free tag or another node's contents);
 *   writers insert at the head and unlink a node near the head under one spinlock word in the
 *     heap, then kfreeRcu the unlinked node (or synchronizeRcu and free it at once).
 * The list's root (head, lock, length) is a kmalloc'd block the main thread made.
 */
import { Heap } from "../../../src/index.js";
import { Prng, RCU, addWord, patternWord, signature, sleepMs } from "../../support/util.js";
import { type Base, checkAbort, post, runWorker, yieldToLoop } from "./common.js";

export interface ListData extends Base {
  workers: number;
  ops: number;
  root: number;
  cacheName: string;
  minLen: number;
  maxLen: number;
}

/** Root words. */
export const L_HEAD = 0;
export const L_LOCK = 1;
export const L_LEN = 2;
/** Node words: signature, next, key, then payload. */
export const N_SIG = 0;
export const N_NEXT = 1;
export const N_KEY = 2;
export const N_PAYLOAD = 3;

export function nodeSig(key: number, addr: number): number {
  return signature(key, addr);
}

/** Check a node; returns what is wrong or null. */
export function checkNode(i32: Int32Array, node: number, payloadWords: number): string | null {
  const w = node >> 2;
  const key = i32[w + N_KEY]!;
  const sig = i32[w + N_SIG]!;
  if (sig !== nodeSig(key, node)) return `node 0x${node.toString(16)}: signature 0x${(sig >>> 0).toString(16)} does not match key 0x${(key >>> 0).toString(16)}`;
  for (let k = 0; k < payloadWords; k++) {
    if (i32[w + N_PAYLOAD + k] !== patternWord(sig, k)) return `node 0x${node.toString(16)} (key 0x${(key >>> 0).toString(16)}): payload word ${k} changed`;
  }
  return null;
}

runWorker<ListData>(async (data) => {
  const ctrl = new Int32Array(data.ctrl);
  const heap = Heap.attach(data.buffer);
  const cache = heap.findCache(data.cacheName);
  if (cache === null) throw new Error(`findCache("${data.cacheName}") found nothing`);
  const i32 = heap.i32;
  const rng = new Prng(data.seed);
  const r = data.root >> 2;
  const payloadWords = (cache.objectSize >> 2) - N_PAYLOAD;
  const me = data.id;
  let counter = 0;
  const st = { reads: 0, visited: 0, inserts: 0, deletes: 0, rcuFrees: 0, syncFrees: 0, syncs: 0, barriers: 0, nested: 0, longReads: 0, lockSpins: 0 };

  const lock = (): void => {
    const end = Date.now() + 10_000;
    for (let spin = 0; Atomics.compareExchange(i32, r + L_LOCK, 0, me + 1) !== 0; spin++) {
      st.lockSpins++;
      if (spin < 100) continue;
      Atomics.wait(i32, r + L_LOCK, Atomics.load(i32, r + L_LOCK), 0.05);
      if ((spin & 255) === 0 && Date.now() > end) throw new Error(`list lock held by ${Atomics.load(i32, r + L_LOCK) - 1} for 10 s`);
    }
  };
  const unlock = (): void => {
    Atomics.store(i32, r + L_LOCK, 0);
    Atomics.notify(i32, r + L_LOCK, 1);
  };

  /** Nodes seen by the current long read: they must stay intact until its section ends. */
  const seen: number[] = [];
  /** Walk the whole list (inside a read section); returns the number of nodes. */
  const traverse = (nestAt: number, keep: boolean): number => {
    let p = Atomics.load(i32, r + L_HEAD);
    let n = 0;
    while (p !== 0) {
      if (p % 8 !== 0 || p <= 0 || p >= heap.size) throw new Error(`link ${n} of the list is 0x${p.toString(16)}: not a node address (a node was freed and reused under a reader)`);
      const bad = checkNode(i32, p, payloadWords);
      if (bad !== null) throw new Error(`reader inside its read section, node ${n} of the list: ${bad}; it was freed or reused too early`);
      if (keep) seen.push(p);
      if (n === nestAt) {
        heap.rcuReadLock(); // nested: must not end the section at its unlock
        heap.rcuReadUnlock();
        if (!heap.rcuReadLockHeld()) throw new Error("a nested unlock closed the section");
        st.nested++;
      }
      p = Atomics.load(i32, (p >> 2) + N_NEXT);
      if (++n > 1_000_000) throw new Error("the list has a cycle");
    }
    st.visited += n;
    return n;
  };
  /** A traversal; a long one keeps every node it saw, stays inside for `holdMs` while others unlink and free, then checks them all again. */
  const read = (holdMs: number): void => {
    heap.rcuReadLock();
    try {
      const long = holdMs > 0;
      traverse(rng.chance(0.1) ? rng.range(0, 20) : -1, long);
      if (long) {
        sleepMs(holdMs);
        for (const p of seen) {
          const bad = checkNode(i32, p, payloadWords);
          if (bad !== null) throw new Error(`a node this reader reached ${holdMs} ms ago in the same read section changed: ${bad}; it was freed or reused before the section ended`);
        }
        traverse(-1, false);
        seen.length = 0;
        st.longReads++;
      }
    } finally {
      heap.rcuReadUnlock();
    }
    st.reads++;
  };
  const insert = (): void => {
    const node = cache.alloc();
    if (node === 0) throw new Error("cache.alloc failed");
    const w = node >> 2;
    const key = ((me + 1) << 24) | (counter++ & 0xffffff);
    const sig = nodeSig(key, node);
    i32[w + N_KEY] = key;
    for (let k = 0; k < payloadWords; k++) i32[w + N_PAYLOAD + k] = patternWord(sig, k);
    i32[w + N_SIG] = sig;
    lock();
    Atomics.store(i32, w + N_NEXT, Atomics.load(i32, r + L_HEAD));
    Atomics.store(i32, r + L_HEAD, node); // publication
    i32[r + L_LEN] = i32[r + L_LEN]! + 1;
    unlock();
    st.inserts++;
  };
  const remove = (): number => {
    lock();
    const len = i32[r + L_LEN]!;
    if (len === 0) {
      unlock();
      return 0;
    }
    const k = rng.range(0, Math.min(len - 1, 40));
    let prev = r + L_HEAD;
    let p = Atomics.load(i32, prev);
    for (let j = 0; j < k; j++) {
      prev = (p >> 2) + N_NEXT;
      p = Atomics.load(i32, prev);
    }
    Atomics.store(i32, prev, Atomics.load(i32, (p >> 2) + N_NEXT)); // unlink
    i32[r + L_LEN] = len - 1;
    unlock();
    const bad = checkNode(i32, p, payloadWords);
    if (bad !== null) throw new Error(`a node just unlinked: ${bad}`);
    st.deletes++;
    return p;
  };

  post({ type: "attached", cpu: heap.cpu });
  // Warm this slot's pcp list (kfreeRcu takes its block pages there).
  heap.freePages(heap.allocPages(0), 0);

  for (let op = 0; op < data.ops; op++) {
    if ((op & 63) === 0) {
      checkAbort(data, ctrl);
      await yieldToLoop((op & 1023) === 0 ? 1 : 0); // the kfreeRcu timer runs here
    }
    const len = Atomics.load(i32, r + L_LEN);
    const x = rng.next();
    if (len < data.minLen || (x < 0.2 && len < data.maxLen)) {
      insert();
    } else if (len > data.maxLen || x < 0.4) {
      const node = remove();
      if (node !== 0) {
        if (rng.chance(0.95)) {
          heap.kfreeRcu(node);
          st.rcuFrees++;
        } else {
          heap.synchronizeRcu();
          st.syncs++;
          cache.free(node);
          st.syncFrees++;
        }
      }
    } else if (x < 0.96) {
      read(0);
    } else if (x < 0.9875) {
      read(0.2);
    } else if (x < 0.99) {
      read(rng.range(4, 8)); // longer than the 4 ms kfreeRcu timer
    } else if (x < 0.997) {
      heap.synchronizeRcu();
      st.syncs++;
    } else {
      heap.rcuBarrier();
      st.barriers++;
    }
  }
  addWord(ctrl, RCU.DONE, 1);
  heap.rcuBarrier();
  st.barriers++;
  heap.detach();
  post({ type: "done", stats: st });
});
