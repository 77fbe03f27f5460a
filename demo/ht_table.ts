/*
 * A concurrent hash table living inside a shmalloc heap, shared by every worker of the demo.
 *
 * LAYOUT (all in the heap, 32-bit words)
 *
 *   header (kzalloc): magic, bucket count, bucket array address and order, worker count, key space;
 *     then one 64-byte line per worker holding the head of its inbox (entries handed to it).
 *   bucket array (allocPages, zeroed): per bucket two words, [lock, head].
 *   node (named cache "ht_node", 32 bytes): magic, next, key, value, owner, bucket, seq, inbox-next.
 *   value (kmalloc, 16 B .. 24 KiB): magic, key, length | owner << 24, checksum, then a pattern.
 *
 * CONCURRENCY
 *
 *   Writers (insert, replace, remove) take the bucket's spinlock: compareExchange 0 -> owner id on
 *     the lock word, read-only spinning while it is held, a short sleep on a private cell when the
 *     holder seems descheduled. Nothing is allocated or freed while a bucket lock is held.
 *   A node and its value are written completely before Atomics.store publishes the node (bucket
 *     head) or the value (node's value word); readers Atomics.load every link, so what they reach is
 *     fully written (the stores and loads are sequentially consistent).
 *   Readers take no lock: they walk a bucket inside rcuReadLock/rcuReadUnlock. A removed node is
 *     unlinked (its predecessor's link skips it; its own next word stays, so a reader standing on it
 *     walks on) and freed with kfreeRcu, as is a replaced value: nothing a reader can reach is
 *     freed before it leaves its section. Insertion is at the head only.
 *   Inboxes are lock-free stacks: push by compareExchange on the head through the node's own
 *     inbox-next word (never the next word, which readers may still follow); the owner takes the
 *     whole stack with one Atomics.exchange, so there is no ABA problem.
 *   Every value carries a checksum written before it is published; readers check it on every hit,
 *     and whoever frees a value checks it before freeing. A mismatch is a bug (of the table or of
 *     the allocator): it is counted and reported, and the run fails.
 */
import { GFP, type Heap, type KmemCache } from "../src/index.js";
import type { Prng } from "../test/support/common.js";

export const NODE_CACHE = "ht_node";
export const NODE_SIZE = 32;

const N_MAGIC = 0;
const N_NEXT = 1;
const N_KEY = 2;
const N_VALUE = 3;
const N_OWNER = 4;
const N_BUCKET = 5;
const N_SEQ = 6;
const N_MNEXT = 7;

const V_MAGIC = 0;
const V_KEY = 1;
const V_LEN = 2;
const V_SUM = 3;
const V_HEADER_BYTES = 16;

const H_MAGIC = 0;
const H_NBUCKETS = 1;
const H_BUCKETS = 2;
const H_ORDER = 3;
const H_NWORKERS = 4;
const H_KEYSPACE = 5;
const H_INBOX0 = 16;
const LINE_WORDS = 16;

const TABLE_MAGIC = 0x48544142; // "HTAB"
const NODE_MAGIC = 0x4e4f4445; // "NODE"
const VALUE_MAGIC = 0x56414c55; // "VALU"

/** Largest value: the rare large ones go above 8 KiB, i.e. to the page allocator. */
export const MAX_VALUE = 24 << 10;
/** Owner id of the main thread (workers are 1..N). */
export const MAIN_OWNER = 0xff;

/** The value sizes the workload asks for: log-uniform 16 B .. 2 KiB, rarely 8 KiB .. 24 KiB. */
export function pickValueSize(rng: Prng): number {
  if (rng.u32() % 1000 < 6) return 8193 + rng.below(MAX_VALUE - 8192);
  return Math.max(V_HEADER_BYTES, Math.floor(16 * 2 ** (rng.next() * 7)));
}

export interface TableShape {
  hdr: number;
  buckets: number;
  order: number;
}

/** What the table reports to its user. */
export interface TableSink {
  /** A broken invariant: a checksum or signature mismatch, a bad link, a foreign lock word. */
  bug(message: string): void;
  /** A bucket lock was found held (one count per contended acquisition). */
  contended(): void;
}

export type InsertResult = "failed" | "inserted" | "replaced";

function hex(n: number): string {
  return "0x" + (n >>> 0).toString(16);
}

/** Checksum of a value: its key and length word and every whole word of its body. */
function checksum(i32: Int32Array, w: number, words: number): number {
  let h = Math.imul(i32[w + V_KEY]! ^ 0x2545f491, 0x9e3779b1) ^ i32[w + V_LEN]!;
  for (let k = 4; k < words; k++) {
    h = Math.imul(h ^ i32[w + k]!, 0x01000193);
    h ^= h >>> 15;
  }
  return h | 0;
}

export class SharedTable {
  readonly heap: Heap;
  readonly cache: KmemCache;
  readonly hdr: number;
  readonly nBuckets: number;
  readonly keySpace: number;
  readonly nWorkers: number;
  private readonly i32: Int32Array;
  private readonly size: number;
  private readonly bucketW: number;
  private readonly shift: number;
  private readonly owner: number;
  private readonly sink: TableSink;
  private readonly sleepCell = new Int32Array(new SharedArrayBuffer(4));
  private seq = 0;
  /** Values this agent checked and freed (kfreeRcu), and how many of them another agent wrote. */
  frees = 0;
  foreignFrees = 0;

  /** Make the header and the bucket array (main thread); 0 in `hdr` when the heap is too small. */
  static create(heap: Heap, nWorkers: number, nBuckets: number, keySpace: number): TableShape {
    const hdr = heap.kzalloc((H_INBOX0 + LINE_WORDS * nWorkers) * 4);
    if (hdr === 0) return { hdr: 0, buckets: 0, order: 0 };
    const bytes = nBuckets * 8;
    const order = Math.max(0, Math.ceil(Math.log2(bytes / heap.pageSize)));
    const buckets = heap.allocPages(order, GFP.ZERO);
    if (buckets === 0) {
      heap.kfree(hdr);
      return { hdr: 0, buckets: 0, order: 0 };
    }
    const i32 = heap.i32;
    const hw = hdr >> 2;
    i32[hw + H_NBUCKETS] = nBuckets;
    i32[hw + H_BUCKETS] = buckets;
    i32[hw + H_ORDER] = order;
    i32[hw + H_NWORKERS] = nWorkers;
    i32[hw + H_KEYSPACE] = keySpace;
    Atomics.store(i32, hw + H_MAGIC, TABLE_MAGIC);
    return { hdr, buckets, order };
  }

  constructor(heap: Heap, cache: KmemCache, hdr: number, owner: number, sink: TableSink) {
    this.heap = heap;
    this.cache = cache;
    this.hdr = hdr;
    this.i32 = heap.i32;
    this.size = heap.size;
    const hw = hdr >> 2;
    if (Atomics.load(this.i32, hw + H_MAGIC) !== TABLE_MAGIC) throw new Error(`no hash table at ${hex(hdr)}`);
    this.nBuckets = this.i32[hw + H_NBUCKETS]!;
    this.keySpace = this.i32[hw + H_KEYSPACE]!;
    this.nWorkers = this.i32[hw + H_NWORKERS]!;
    this.bucketW = this.i32[hw + H_BUCKETS]! >> 2;
    this.shift = 32 - Math.log2(this.nBuckets);
    this.owner = owner;
    this.sink = sink;
  }

  bucketOf(key: number): number {
    return Math.imul(key, 0x9e3779b1) >>> this.shift;
  }

  /* ---------------------------------------------------------------- bucket locks */

  private lock(b: number): void {
    const i32 = this.i32;
    const w = this.bucketW + 2 * b;
    if (Atomics.compareExchange(i32, w, 0, this.owner) === 0) return;
    this.sink.contended();
    for (let spins = 0; ; ) {
      while (Atomics.load(i32, w) !== 0) {
        // The holder may be descheduled (more workers than cores): stop burning its CPU.
        if (++spins > 200) Atomics.wait(this.sleepCell, 0, 0, 0.05);
      }
      if (Atomics.compareExchange(i32, w, 0, this.owner) === 0) return;
    }
  }

  private unlock(b: number): void {
    const w = this.bucketW + 2 * b;
    const was = Atomics.compareExchange(this.i32, w, this.owner, 0);
    if (was !== this.owner) this.sink.bug(`bucket ${b}: unlock found lock word ${hex(was)}, not owner ${this.owner}`);
  }

  /* ---------------------------------------------------------------- values */

  /** Fill a value's header and pattern and compute its checksum. */
  private fillValue(v: number, key: number, len: number, rng: Prng): void {
    const i32 = this.i32;
    const w = v >> 2;
    const words = len >> 2;
    i32[w + V_KEY] = key;
    i32[w + V_LEN] = len | (this.owner << 24);
    let x = rng.u32() | 1;
    for (let k = 4; k < words; k++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      i32[w + k] = x;
    }
    i32[w + V_SUM] = checksum(i32, w, words);
    i32[w + V_MAGIC] = VALUE_MAGIC;
  }

  /** Check a value reached through key `key`; a description of what is wrong, or null. */
  checkValue(v: number, key: number): string | null {
    if (v <= 0 || (v & 7) !== 0 || v >= this.size) return `key ${key}: value pointer ${hex(v)} is not an allocation`;
    const i32 = this.i32;
    const w = v >> 2;
    if (i32[w + V_MAGIC] !== VALUE_MAGIC) return `key ${key}: value ${hex(v)} has magic ${hex(i32[w + V_MAGIC]!)} (freed or overwritten?)`;
    if (i32[w + V_KEY] !== key) return `key ${key}: value ${hex(v)} belongs to key ${i32[w + V_KEY]}`;
    const len = i32[w + V_LEN]! & 0xffffff;
    if (len < V_HEADER_BYTES || len > MAX_VALUE || v + len > this.size) return `key ${key}: value ${hex(v)} has length ${len}`;
    const sum = checksum(i32, w, len >> 2);
    if (sum !== i32[w + V_SUM]) {
      return `key ${key}: value ${hex(v)} (${len} B, written by owner ${i32[w + V_LEN]! >>> 24}) checksum ${hex(sum)} != ${hex(i32[w + V_SUM]!)}`;
    }
    return null;
  }

  /** Check a node seen in bucket `b`; a description of what is wrong, or null. */
  private checkNode(p: number, b: number): string | null {
    if (p <= 0 || (p & 7) !== 0 || p >= this.size) return `bucket ${b}: link ${hex(p)} is not a node address`;
    const pw = p >> 2;
    if (this.i32[pw + N_MAGIC] !== NODE_MAGIC) return `bucket ${b}: node ${hex(p)} has magic ${hex(this.i32[pw + N_MAGIC]!)} (freed or overwritten?)`;
    if (this.i32[pw + N_BUCKET] !== b) return `bucket ${b}: node ${hex(p)} says bucket ${this.i32[pw + N_BUCKET]}`;
    return null;
  }

  /** Verify a node and its value, then free both after a grace period. */
  private retire(p: number, b: number): void {
    const pw = p >> 2;
    const err = this.checkNode(p, b) ?? this.checkValue(Atomics.load(this.i32, pw + N_VALUE), this.i32[pw + N_KEY]!);
    if (err !== null) {
      this.sink.bug(`retire: ${err}`);
      return; // do not hand a broken pointer to the allocator
    }
    this.freeValue(this.i32[pw + N_VALUE]!);
    this.heap.kfreeRcu(p);
  }

  /** Free a checked value after a grace period, counting values written by another agent. */
  private freeValue(v: number): void {
    this.frees++;
    if (this.i32[(v >> 2) + V_LEN]! >>> 24 !== this.owner) this.foreignFrees++;
    this.heap.kfreeRcu(v);
  }

  /** Fill a node that is not yet published. */
  private fillNode(n: number, key: number, v: number, b: number): void {
    const i32 = this.i32;
    const nw = n >> 2;
    i32[nw + N_NEXT] = 0;
    i32[nw + N_KEY] = key;
    i32[nw + N_VALUE] = v;
    i32[nw + N_OWNER] = this.owner;
    i32[nw + N_BUCKET] = b;
    i32[nw + N_SEQ] = ++this.seq;
    i32[nw + N_MNEXT] = 0;
    i32[nw + N_MAGIC] = NODE_MAGIC;
  }

  /* ---------------------------------------------------------------- operations */

  /** Look `key` up inside a read-side section, checking what is found. */
  lookup(key: number): boolean {
    const heap = this.heap;
    const b = this.bucketOf(key);
    heap.rcuReadLock();
    try {
      return this.walk(b, key) !== 0;
    } finally {
      heap.rcuReadUnlock();
    }
  }

  /** Walk bucket `b` (inside a read section); with `key` >= 0 stop at it. Returns the hit count. */
  private walk(b: number, key: number): number {
    const i32 = this.i32;
    let p = Atomics.load(i32, this.bucketW + 2 * b + 1);
    let found = 0;
    for (let steps = 0; p !== 0; steps++) {
      const err = this.checkNode(p, b);
      if (err !== null) {
        this.sink.bug(`reader: ${err}`);
        return found;
      }
      const pw = p >> 2;
      const k = i32[pw + N_KEY]!;
      if (key < 0 || k === key) {
        const verr = this.checkValue(Atomics.load(i32, pw + N_VALUE), k);
        if (verr !== null) this.sink.bug(`reader: ${verr}`);
        found++;
        if (key >= 0) return found;
      }
      if (steps > 1 << 20) {
        this.sink.bug(`bucket ${b}: chain longer than ${1 << 20} nodes (a cycle?)`);
        return found;
      }
      p = Atomics.load(i32, pw + N_NEXT);
    }
    return found;
  }

  /** Walk `count` buckets from `start` in one read section, checking every entry. */
  scan(start: number, count: number): number {
    const heap = this.heap;
    let n = 0;
    heap.rcuReadLock();
    try {
      for (let i = 0; i < count; i++) n += this.walk((start + i) & (this.nBuckets - 1), -1);
    } finally {
      heap.rcuReadUnlock();
    }
    return n;
  }

  /**
   * Insert `key` with a fresh value of a random size, or replace the value of the entry that has
   * it (the old value is checked and freed with kfreeRcu). "failed" when memory ran out.
   */
  insert(key: number, rng: Prng, gfp = 0): InsertResult {
    const heap = this.heap;
    const i32 = this.i32;
    const len = pickValueSize(rng);
    const v = heap.kmalloc(len, gfp);
    if (v === 0) return "failed";
    const n = this.cache.alloc(gfp);
    if (n === 0) {
      heap.kfree(v);
      return "failed";
    }
    const b = this.bucketOf(key);
    this.fillValue(v, key, len, rng);
    this.fillNode(n, key, v, b);
    let old = 0;
    this.lock(b);
    const head = this.bucketW + 2 * b + 1;
    let p = Atomics.load(i32, head);
    while (p !== 0 && i32[(p >> 2) + N_KEY] !== key) p = Atomics.load(i32, (p >> 2) + N_NEXT);
    if (p !== 0) {
      old = Atomics.exchange(i32, (p >> 2) + N_VALUE, v);
    } else {
      i32[(n >> 2) + N_NEXT] = Atomics.load(i32, head);
      Atomics.store(i32, head, n); // publication point
    }
    this.unlock(b);
    if (p === 0) return "inserted";
    this.cache.free(n); // never published
    const err = this.checkValue(old, key);
    if (err !== null) this.sink.bug(`replace: ${err}`);
    else this.freeValue(old);
    return "replaced";
  }

  /** Unlink the entry of `key` and return its node (still readable by readers), or 0. */
  private unlink(key: number): number {
    const i32 = this.i32;
    const b = this.bucketOf(key);
    this.lock(b);
    let link = this.bucketW + 2 * b + 1;
    let p = Atomics.load(i32, link);
    while (p !== 0 && i32[(p >> 2) + N_KEY] !== key) {
      link = (p >> 2) + N_NEXT;
      p = Atomics.load(i32, link);
    }
    if (p !== 0) Atomics.store(i32, link, Atomics.load(i32, (p >> 2) + N_NEXT));
    this.unlock(b);
    return p;
  }

  /** Remove `key`: unlink, check, free node and value with kfreeRcu. */
  remove(key: number): boolean {
    const p = this.unlink(key);
    if (p === 0) return false;
    this.retire(p, this.bucketOf(key));
    return true;
  }

  /**
   * Evict up to `want` entries, the first of each bucket from a random one on (what a cache does
   * when memory runs out). Returns how many were freed.
   */
  evict(want: number, rng: Prng): number {
    const i32 = this.i32;
    let n = 0;
    for (let tries = 0, b = rng.below(this.nBuckets); n < want && tries < 4 * want; tries++, b = (b + 1) & (this.nBuckets - 1)) {
      const head = this.bucketW + 2 * b + 1;
      if (Atomics.load(i32, head) === 0) continue;
      this.lock(b);
      const p = Atomics.load(i32, head);
      if (p !== 0) Atomics.store(i32, head, Atomics.load(i32, (p >> 2) + N_NEXT));
      this.unlock(b);
      if (p === 0) continue;
      this.retire(p, b);
      n++;
    }
    return n;
  }

  /** Remove `key` and hand its entry to worker `to` (0-based). */
  migrate(key: number, to: number): boolean {
    const p = this.unlink(key);
    if (p === 0) return false;
    const b = this.bucketOf(key);
    const err = this.checkNode(p, b) ?? this.checkValue(Atomics.load(this.i32, (p >> 2) + N_VALUE), key);
    if (err !== null) {
      this.sink.bug(`migrate: ${err}`);
      return true;
    }
    const i32 = this.i32;
    const inbox = (this.hdr >> 2) + H_INBOX0 + LINE_WORDS * to;
    for (;;) {
      const h = Atomics.load(i32, inbox);
      Atomics.store(i32, (p >> 2) + N_MNEXT, h);
      if (Atomics.compareExchange(i32, inbox, h, p) === h) return true;
    }
  }

  /**
   * Take every entry handed to worker `me` (0-based). With `reinsert`, each value goes back into
   * the table under a node of this agent (unless its key is there again, or memory ran out: then it
   * is freed); the old node is freed with kfreeRcu. Returns [received, reinserted].
   */
  receive(me: number, reinsert: boolean, gfp = 0): [number, number] {
    const i32 = this.i32;
    let p = Atomics.exchange(i32, (this.hdr >> 2) + H_INBOX0 + LINE_WORDS * me, 0);
    let received = 0;
    let reinserted = 0;
    while (p !== 0) {
      const pw = p >> 2;
      const next = Atomics.load(i32, pw + N_MNEXT);
      received++;
      const key = i32[pw + N_KEY]!;
      const b = this.bucketOf(key);
      const err = this.checkNode(p, b) ?? this.checkValue(Atomics.load(i32, pw + N_VALUE), key);
      if (err !== null) {
        this.sink.bug(`inbox: ${err}`);
        p = next;
        continue;
      }
      const v = i32[pw + N_VALUE]!;
      let n = reinsert ? this.cache.alloc(gfp) : 0;
      if (n !== 0) {
        this.fillNode(n, key, v, b);
        this.lock(b);
        const head = this.bucketW + 2 * b + 1;
        let q = Atomics.load(i32, head);
        while (q !== 0 && i32[(q >> 2) + N_KEY] !== key) q = Atomics.load(i32, (q >> 2) + N_NEXT);
        if (q === 0) {
          i32[(n >> 2) + N_NEXT] = Atomics.load(i32, head);
          Atomics.store(i32, head, n);
        }
        this.unlock(b);
        if (q !== 0) {
          this.cache.free(n);
          n = 0;
        } else reinserted++;
      }
      if (n === 0) this.freeValue(v);
      this.heap.kfreeRcu(p);
      p = next;
    }
    return [received, reinserted];
  }

  /** Inbox of worker `w` non-empty? */
  inboxBusy(w: number): boolean {
    return Atomics.load(this.i32, (this.hdr >> 2) + H_INBOX0 + LINE_WORDS * w) !== 0;
  }

  /**
   * Empty the whole table and every inbox (main thread, after the workers left): every entry is
   * checked and freed with kfreeRcu. Returns the number of entries freed.
   */
  drainAll(): number {
    const i32 = this.i32;
    let n = 0;
    for (let w = 0; w < this.nWorkers; w++) n += this.receive(w, false)[0];
    for (let b = 0; b < this.nBuckets; b++) {
      this.lock(b);
      let p = Atomics.exchange(i32, this.bucketW + 2 * b + 1, 0);
      this.unlock(b);
      for (let steps = 0; p !== 0; steps++) {
        if (this.checkNode(p, b) !== null || steps > 1 << 20) {
          this.sink.bug(`drain: ${this.checkNode(p, b) ?? `bucket ${b} has a cycle`}; entries after it are lost`);
          break;
        }
        const next = i32[(p >> 2) + N_NEXT]!;
        this.retire(p, b);
        n++;
        p = next;
      }
    }
    return n;
  }

  /** Free the header and the bucket array (main thread, table empty). */
  destroy(): void {
    const hw = this.hdr >> 2;
    const buckets = this.i32[hw + H_BUCKETS]!;
    const order = this.i32[hw + H_ORDER]!;
    for (let b = 0; b < this.nBuckets; b++) {
      if (this.i32[this.bucketW + 2 * b] !== 0 || this.i32[this.bucketW + 2 * b + 1] !== 0) {
        this.sink.bug(`destroy: bucket ${b} is not empty or still locked`);
      }
    }
    this.i32[hw + H_MAGIC] = 0;
    this.heap.freePages(buckets, order);
    this.heap.kfree(this.hdr);
  }
}
