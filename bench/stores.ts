/*
 * The allocators behind one interface, so that every workload is written once and run against
 * each of them. A worker only ever instantiates one Store class, so every call site in the
 * workloads stays monomorphic in that worker's isolate.
 *
 * A "table" holds live blocks by index. For shmalloc and @thi.ng/malloc a block is a byte
 * address and a table is an Int32Array, possibly over a SharedArrayBuffer that several workers
 * use (blocks allocated by one worker and freed by another). Plain JavaScript blocks are
 * Uint8Array objects, which cannot cross workers: a table that is shared for the other allocators
 * is a worker-local array for plain JS, and a "free" of a block another worker allocated is simply
 * a dropped reference (the garbage collector of the allocating worker reclaims it).
 */
import { MemPool } from "@thi.ng/malloc";
import type { Heap } from "../src/index.js";
import { FutexLock } from "./common.js";
import type { Peer } from "./peers.js";

/** First bytes of a pattern-filled block hold its size (for blocks identified by address). */
const COOKIE = 0x5a;

export interface Store<Tab> {
  readonly name: string;
  /** A worker-local table of n empty entries. */
  newTable(n: number): Tab;
  /** A table over shared words (a worker-local array for plain JS). */
  sharedTable(words: Int32Array): Tab;
  /** Allocate size bytes into t[i] (which must be empty); false when out of memory. */
  alloc(t: Tab, i: number, size: number): boolean;
  /** Free t[i] if it holds a block and empty the entry. */
  free(t: Tab, i: number): void;
  live(t: Tab, i: number): boolean;
  /** Write v to every byte of the block t[i] of size bytes. */
  touchAll(t: Tab, i: number, size: number, v: number): void;
  /** Write v to the first and last byte of the block. */
  touchEnds(t: Tab, i: number, size: number, v: number): void;
  /** Fill the block with a pattern that checkPattern verifies (its size is kept in the block). */
  fillPattern(t: Tab, i: number, size: number): void;
  checkPattern(t: Tab, i: number): boolean;
  /** Read-modify-write every byte of the block reps times. */
  hammer(t: Tab, i: number, size: number, reps: number): void;
  /** Swap t[i] with the shared entry s[j] atomically (a local swap for plain JS). */
  exchange(t: Tab, i: number, s: Tab, j: number): void;
  /** Put a block handed over by another agent into t[i] (ignored for plain JS). */
  adopt(t: Tab, i: number, addr: number): void;
  /**
   * Allocations that returned 0 and were retried. The workloads' heaps are far from full, so any
   * such failure is an allocator anomaly; the store retries a few times so the run can go on,
   * and the report lists the count.
   */
  readonly zeroReturns: number;
}

/** Retries of an allocation that returned 0 before the store gives up. */
const RETRIES = 3;

/** Stores whose blocks are byte addresses in one buffer. */
abstract class AddrStore implements Store<Int32Array> {
  abstract readonly name: string;
  protected u8: Uint8Array;
  protected i32: Int32Array;
  constructor(buf: ArrayBufferLike) {
    this.u8 = new Uint8Array(buf);
    this.i32 = new Int32Array(buf, 0, buf.byteLength >>> 2);
  }
  /** New views after the memory grew (a Wasm peer's memory.grow). */
  protected remap(buf: ArrayBufferLike): void {
    this.u8 = new Uint8Array(buf);
    this.i32 = new Int32Array(buf, 0, buf.byteLength >>> 2);
  }
  protected abstract malloc(size: number): number;
  protected abstract mfree(addr: number): void;
  zeroReturns = 0;
  private retry(size: number): number {
    for (let k = 0; k < RETRIES; k++) {
      this.zeroReturns++;
      const a = this.malloc(size);
      if (a !== 0) return a;
    }
    return 0;
  }

  newTable(n: number): Int32Array {
    return new Int32Array(n);
  }
  sharedTable(words: Int32Array): Int32Array {
    return words;
  }
  alloc(t: Int32Array, i: number, size: number): boolean {
    let a = this.malloc(size);
    if (a === 0) a = this.retry(size);
    if (a === 0) return false;
    t[i] = a;
    return true;
  }
  free(t: Int32Array, i: number): void {
    const a = t[i]!;
    if (a !== 0) {
      t[i] = 0;
      this.mfree(a);
    }
  }
  live(t: Int32Array, i: number): boolean {
    return t[i] !== 0;
  }
  touchAll(t: Int32Array, i: number, size: number, v: number): void {
    const a = t[i]!;
    const u8 = this.u8;
    for (let k = 0; k < size; k++) u8[a + k] = v;
  }
  touchEnds(t: Int32Array, i: number, size: number, v: number): void {
    const a = t[i]!;
    this.u8[a] = v;
    this.u8[a + size - 1] = v;
  }
  fillPattern(t: Int32Array, i: number, size: number): void {
    const a = t[i]!;
    const u8 = this.u8;
    this.i32[a >> 2] = size;
    for (let k = 4; k < size; k++) u8[a + k] = (size - k) ^ COOKIE;
  }
  checkPattern(t: Int32Array, i: number): boolean {
    const a = t[i]!;
    const u8 = this.u8;
    const size = this.i32[a >> 2]!;
    if (size < 8 || size > 1 << 24) return false;
    for (let k = 4; k < size; k++) if (u8[a + k] !== ((size - k) ^ COOKIE) % 256) return false;
    return true;
  }
  hammer(t: Int32Array, i: number, size: number, reps: number): void {
    const a = t[i]!;
    const u8 = this.u8;
    for (let r = 0; r < reps; r++) for (let k = 0; k < size; k++) u8[a + k] = u8[a + k]! + 1;
  }
  exchange(t: Int32Array, i: number, s: Int32Array, j: number): void {
    t[i] = Atomics.exchange(s, j, t[i]!);
  }
  adopt(t: Int32Array, i: number, addr: number): void {
    t[i] = addr;
  }
}

/** shmalloc: kmalloc / kfree on this worker's slot of the shared heap. */
export class ShmStore extends AddrStore {
  readonly name = "shmalloc";
  constructor(private readonly heap: Heap) {
    super(heap.buffer);
  }
  protected malloc(size: number): number {
    return this.heap.kmalloc(size);
  }
  protected mfree(addr: number): void {
    this.heap.kfree(addr);
  }
}

/** A bare @thi.ng/malloc MemPool: one agent, no lock. */
export class ThingStore extends AddrStore {
  readonly name = "thing";
  constructor(private readonly pool: MemPool) {
    super(pool.buf);
  }
  protected malloc(size: number): number {
    return this.pool.malloc(size);
  }
  protected mfree(addr: number): void {
    this.pool.free(addr);
  }
}

/** One MemPool in a SharedArrayBuffer behind one global futex lock, shared by every worker. */
export class LockedThingStore extends AddrStore {
  readonly name = "thing";
  private readonly lk: FutexLock;
  constructor(
    private readonly pool: MemPool,
    lockBuf: SharedArrayBuffer,
  ) {
    super(pool.buf);
    this.lk = new FutexLock(lockBuf);
  }
  protected malloc(size: number): number {
    this.lk.lock();
    const a = this.pool.malloc(size);
    this.lk.unlock();
    return a;
  }
  protected mfree(addr: number): void {
    this.lk.lock();
    this.pool.free(addr);
    this.lk.unlock();
  }
}

/**
 * A Wasm peer (mimalloc or dlmalloc compiled to WebAssembly, peers.ts): its raw malloc and free
 * exports on this agent's instance, over the run's shared memory.
 */
export class PeerStore extends AddrStore {
  private readonly m: (size: number) => number;
  private readonly f: (addr: number) => void;
  constructor(
    readonly name: string,
    private readonly peer: Peer,
  ) {
    super(peer.memory.buffer);
    this.m = peer.malloc;
    this.f = peer.free;
  }
  protected malloc(size: number): number {
    const a = this.m(size);
    if (a + size > this.u8.length) this.remap(this.peer.memory.buffer);
    return a;
  }
  protected mfree(addr: number): void {
    this.f(addr);
  }
}

type JsTab = (Uint8Array | null)[];

/** Plain JavaScript: new Uint8Array(size) per block, dropped for the garbage collector. */
export class JsStore implements Store<JsTab> {
  readonly name = "js";
  readonly zeroReturns = 0;
  newTable(n: number): JsTab {
    const t: JsTab = new Array<Uint8Array | null>(n);
    for (let i = 0; i < n; i++) t[i] = null;
    return t;
  }
  sharedTable(words: Int32Array): JsTab {
    return this.newTable(words.length);
  }
  alloc(t: JsTab, i: number, size: number): boolean {
    t[i] = new Uint8Array(size);
    return true;
  }
  free(t: JsTab, i: number): void {
    t[i] = null;
  }
  live(t: JsTab, i: number): boolean {
    return t[i] !== null;
  }
  touchAll(t: JsTab, i: number, size: number, v: number): void {
    const b = t[i]!;
    for (let k = 0; k < size; k++) b[k] = v;
  }
  touchEnds(t: JsTab, i: number, size: number, v: number): void {
    const b = t[i]!;
    b[0] = v;
    b[size - 1] = v;
  }
  fillPattern(t: JsTab, i: number, size: number): void {
    const b = t[i]!;
    for (let k = 4; k < size; k++) b[k] = (size - k) ^ COOKIE;
  }
  checkPattern(t: JsTab, i: number): boolean {
    const b = t[i]!;
    const size = b.length;
    for (let k = 4; k < size; k++) if (b[k] !== ((size - k) ^ COOKIE) % 256) return false;
    return true;
  }
  hammer(t: JsTab, i: number, size: number, reps: number): void {
    const b = t[i]!;
    for (let r = 0; r < reps; r++) for (let k = 0; k < size; k++) b[k] = b[k]! + 1;
  }
  exchange(t: JsTab, i: number, s: JsTab, j: number): void {
    const x = t[i] ?? null;
    t[i] = s[j] ?? null;
    s[j] = x;
  }
  adopt(_t: JsTab, _i: number, _addr: number): void {}
}
