/*
 * The public Heap: creation, attach and detach of CPU slots, stats, validate, shrink, reclaim.
 *
 * WORDS: the header, plain stores by create before the handle is returned, H_CHECKSUM last
 *   (Atomics.store): what attach trusts. C_STATE of a slot: attach claims it by compareExchange
 *   (FREE -> ATTACHED; create's slot 0 by Atomics.store), detach stores FREE with Atomics.store.
 *   C_GEN, C_HELD, C_FLAGS, C_FAIL_STATE of a claimed slot: plain stores by the claimant before
 *   its C_STATE store; a handle compares C_GEN for equality, as the word stores it ((gen + 1) | 0).
 *   reclaimSlot's words (C_STATE_RECLAIMING claims, C_GEN moved on with Atomics.add) and locks
 *   are in reclaim.ts's contract.
 * LOCKS: detach, shrink and validate assert first that the caller holds no lock (EDEADLK). detach
 *   and shrink take the locks of the paths they drain: rcu (kfreeRcu) -> ctable (dying caches) ->
 *   sheaf -> barn -> list -> pcp -> zone; on a noBlock caller they may stop with EAGAIN, detach's
 *   slot still attached. validate takes every pcp lock it can have, then the zone lock. reclaimSlot
 *   refuses (EDEADLK, nothing changed) while a handle of this agent is inside a read-side section:
 *   the dead slot's kfreeRcu objects wait for a grace period. detach refuses (EDEADLK) from a
 *   callback of its own handle (the hook, a trace handler, onError): a call of it is in progress.
 *   While detach empties the slot (`closing`), a hook's nolock allocations fail and its nolock
 *   frees go to the deferred list, which detach drains again until the slot holds nothing. shrink
 *   also flushes this slot's sheaves of dying caches, so a cache another agent destroyed is
 *   released once no slot caches its objects.
 * NO LOCK: attachedSlots (one Atomics.load of each slot's C_STATE), stats, pageMap, cacheNames
 *   (the page and cache descriptors read as stats() reads counters; a cache's name is written
 *   before its K_STATE is stored); every other call is one-line delegation to a layer.
 * STALE: stats() reads counters that other agents may be changing: exact only while the heap is
 *   quiet; attachedSlots is a snapshot; validate reads other slots' sheaves, and the pcp lists of
 *   those whose lock it could not have, as they are (exact while those agents are idle).
 */
import { checkBool, intOption, describe, einval, isUint16Array, readOptions } from "./core/check.js";
import { ErrorCode, HeapError } from "./core/errors.js";
import type { WasmMemory } from "./core/lock.js";
import { aliasesMemory } from "./core/out_region.js";
import { assertNoLiveHeap, assertSharedMemory, locateHeap, resolvePlacement } from "./placement.js";
import { allocArray, allocString, freeArray, readString, type TypedArrayConstructor } from "./views.js";
import { GFP } from "./core/gfp.js";
import * as layout from "./core/layout.js";
import type { VmItem } from "./core/layout.js";
import { agentCanBlock, C_FAIL_STATE, C_HELD_MASK, type MmInit } from "./core/lock.js";
import { FIRST_NAMED_ID, KMALLOC_FIRST_ID, KMALLOC_SIZES, SHEAF_CACHE_ID } from "./slab/slab.js";
import type { Locks, ReentryHook } from "./core/lock.js";
import type { Mem } from "./core/mem.js";
import type { Trace } from "./core/trace.js";
import { buildLayers, type Layers, registerLayers } from "./layers.js";
import type { PageAllocator } from "./page/page_alloc.js";
import type { RcuAllocator } from "./rcu/rcu.js";
import { reclaimSlot } from "./reclaim.js";
import type { KmemCache } from "./slab/kmem_cache.js";
import type { CacheOptions, SlabAllocator } from "./slab/slab.js";
import type { AttachOptions, HeapOptions, HeapStats, ReclaimReport } from "./api.js";
import { readPageMap } from "./pagemap.js";
import { slabStats, validateSlabs } from "./slab/check.js";
import { flushAllSheavesOf } from "./slab/sheaf.js";
import { flushDyingCaches, shrinkCache, shrinkNamedCache } from "./slab/cache.js";
import { drainDeferredObjects } from "./slab/kmalloc.js";
import { createCache, findCache, setupCache } from "./slab/cache.js";
import { krealloc, kzalloc } from "./slab/kmalloc.js";
import { kfreeBulk } from "./slab/bulk.js";
import { drainAllPcp, pcpDetach } from "./page/pcp.js";
import { grow } from "./page/hotplug.js";
import { validatePages } from "./page/check.js";
import { initZone } from "./page/hotplug.js";
import { pageStats } from "./page/check.js";
import { kfreeRcu, rcuShrink } from "./rcu/kfree_rcu.js";
import { rcuStats, validateRcu } from "./rcu/check.js";
import { CREATE_OPTIONS, debugFlags, readGeometry } from "./header.js";
import { cacheNames } from "./slab/cache.js";
import { assertNoCallback } from "./core/callbacks.js";

/* Module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const GFP_KERNEL = GFP.KERNEL;
const { CT_NR_DYING, C_DEFER_HEAD, C_DEFER_NR, C_FLAGS, C_FLAG_NOBLOCK, C_GEN, C_HELD, C_RCU_NR_SPARE, C_RCU_PENDING, C_STATE, C_STATE_ATTACHED, C_STATE_FREE, C_VMSTAT, C_WORDS, HEAP_MAGIC, H_CACHE_BYTES, H_CACHE_OFF, H_CHECKSUM, H_CPUS, H_DEBUG, H_DESC_OFF, H_FAIL_RATE, H_FAIL_SEED, H_MAGIC, H_MAX_CACHES, H_NR_PAGES, H_PAGE_SHIFT, H_PCPU_OFF, H_SIZE, H_VERSION, H_ZONE_START, K_FLAG_KMALLOC, K_FLAG_SHEAF_CACHE, K_STATE, K_STATE_ACTIVE, LAYOUT_VERSION, LOCK, LOCK_CLASSES, MAX_HEAP_END, NR_VM, PAGE_SHIFT, PAGE_SIZE, S_BYTES, VM, Z_SIZE, computeGeometry, headerChecksum } = layout;

export const DEFAULT_SIZE = 64 << 20;
export const DEFAULT_CPUS = 64;
export const DEFAULT_MAX_CACHES = 64;
/** Addresses stay positive 32-bit integers. */
export const MAX_HEAP_SIZE = MAX_HEAP_END;
export const MAX_CPUS = 1024;

/** The inits Heap.create and Heap.attach made: the constructor takes no other. */
const heapInits = new WeakSet<MmInit>();
function heapInit(init: MmInit): MmInit {
  heapInits.add(init);
  return init;
}

/**
 * The facade: a thin handle holding the layers of this agent's slot privately (a user reaches
 * none of them, nor a word index or an internal method). It builds the layers, installs the few
 * upward calls as callbacks, owns the lifecycle order (create, attach, detach, reclaim, shrink,
 * validate), and delegates every other call in one line.
 */
export class Heap {
  readonly #mem: Mem;
  readonly #locks: Locks;
  readonly #pages: PageAllocator;
  readonly #slab: SlabAllocator;
  readonly #rcu: RcuAllocator;
  readonly #layers: Layers;

  private constructor(init: MmInit) {
    if (!heapInits.has(init)) einval("a Heap comes from Heap.create or Heap.attach, not from new Heap()");
    const l = buildLayers(init);
    this.#mem = l.mem;
    this.#locks = l.locks;
    this.#pages = l.pages;
    this.#slab = l.slab;
    this.#rcu = l.rcu;
    this.#layers = l;
    registerLayers(this, l);
  }

  /** Make a new heap in a new SharedArrayBuffer; the calling agent is attached as slot 0. */
  static create(options: HeapOptions = {}): Heap {
    assertSharedMemory();
    // Read once: a getter or Proxy cannot show the checks one value and the heap another.
    const o = readOptions("Heap.create options", options, CREATE_OPTIONS) as HeapOptions;
    const place = resolvePlacement(o, DEFAULT_SIZE);
    const { size, maxSize, offset } = place;
    const cpus = intOption("cpus", o.cpus, DEFAULT_CPUS, 1, MAX_CPUS, `a heap has at most ${MAX_CPUS} CPU slots`);
    const maxCaches = intOption("maxCaches", o.maxCaches, DEFAULT_MAX_CACHES, FIRST_NAMED_ID + 1, 4096);
    const debug = debugFlags(o.debug);
    const noBlock = checkBool("option noBlock", o.noBlock) === true;
    let failRate = 0;
    let failSeed = 0x12345678;
    if (o.faultInjection !== undefined) {
      const fault = readOptions("option faultInjection", o.faultInjection, ["rate", "seed"]);
      const rate = fault.rate;
      if (typeof rate !== "number" || !(rate >= 0 && rate <= 1)) einval(`option faultInjection.rate must be a number in 0..1, not ${describe(rate)}`);
      failRate = Math.round(rate * 65536);
      failSeed = intOption("faultInjection.seed", fault.seed, failSeed, 0, 0xffffffff) >>> 0 || 1;
    }
    const g = computeGeometry(maxSize, cpus, maxCaches);
    if (g.zoneStart + 32 > size >>> PAGE_SHIFT) {
      throw new HeapError(ErrorCode.EINVAL, `size ${size} leaves fewer than 32 pages after the metadata of ${cpus} cpus and maxSize ${maxSize}; use a larger size, fewer cpus or a smaller maxSize`);
    }
    const buffer = place.buffer;
    if (place.memory !== null || o.buffer !== undefined) assertNoLiveHeap(buffer, offset, maxSize);
    // A caller's buffer or memory may hold anything: the metadata starts zeroed, as in a new buffer.
    if (place.memory !== null || o.buffer !== undefined) new Uint8Array(buffer, offset, g.zoneStart * PAGE_SIZE).fill(0);
    const u32 = new Uint32Array(buffer, offset, PAGE_SIZE >> 2);
    u32[H_MAGIC] = HEAP_MAGIC;
    u32[H_VERSION] = LAYOUT_VERSION;
    u32[H_SIZE] = maxSize;
    u32[H_PAGE_SHIFT] = PAGE_SHIFT;
    u32[H_NR_PAGES] = g.nrPages;
    u32[H_CPUS] = cpus;
    u32[H_MAX_CACHES] = maxCaches;
    u32[H_ZONE_START] = g.zoneStart;
    u32[H_PCPU_OFF] = g.pcpuOff;
    u32[H_CACHE_OFF] = g.cacheOff;
    u32[H_CACHE_BYTES] = g.cacheBytes;
    u32[H_DESC_OFF] = g.descOff;
    u32[H_DEBUG] = debug;
    u32[H_FAIL_RATE] = 0; // set after the built-in caches exist
    u32[H_FAIL_SEED] = failSeed;
    const heap = new Heap(heapInit({ buffer, memory: place.memory, base: offset, geometry: g, size: offset + size, cpu: 0, canBlock: !noBlock && agentCanBlock(), debug }));
    initZone(heap.#pages);
    const enc = new TextEncoder();
    setupCache(heap.#slab, SHEAF_CACHE_ID, enc.encode("kmem_cache_sheaf"), S_BYTES, 64, K_FLAG_SHEAF_CACHE);
    KMALLOC_SIZES.forEach((s, i) => {
      const name = s >= 1024 ? `kmalloc-${s >> 10}k` : `kmalloc-${s}`;
      setupCache(heap.#slab, KMALLOC_FIRST_ID + i, enc.encode(name), s, s === 96 || s === 192 ? 32 : Math.min(s, 8), K_FLAG_KMALLOC);
    });
    heap.#claimSlot(0, noBlock);
    u32[H_FAIL_RATE] = failRate;
    heap.#pages.updateFastOff(); // fault injection keeps the pcp fast paths off
    // Publication point: attach trusts the header once the checksum matches.
    Atomics.store(u32, H_CHECKSUM, headerChecksum(u32));
    return heap;
  }

  /**
   * Attach this agent to a heap another agent created, in a SharedArrayBuffer or a shared
   * WebAssembly.Memory (pass the Memory, so that this handle follows memory.grow); claims a free CPU slot.
   */
  static attach(target: SharedArrayBuffer | WasmMemory, options: AttachOptions = {}): Heap {
    assertSharedMemory();
    const ao = readOptions("Heap.attach options", options, ["noBlock", "offset"]);
    const noBlock = checkBool("option noBlock", ao.noBlock) === true;
    const placed = locateHeap(target, ao.offset);
    const { memory, offset } = placed;
    let buffer = placed.buffer;
    const g = readGeometry(buffer, offset, memory !== null);
    if (memory === null && (buffer as unknown as { growable?: boolean }).growable !== true && buffer.byteLength < offset + g.size) {
      // A fixed-length buffer shorter than the heap may grow: memory.buffer of a WebAssembly.Memory.
      throw new HeapError(ErrorCode.EINVAL, `this heap may grow to byte ${offset + g.size}, past this buffer's ${buffer.byteLength} bytes: it lives in a WebAssembly.Memory; attach with the Memory itself, not its buffer`);
    }
    const header = new Uint32Array(buffer, offset, PAGE_SIZE >> 2);
    const debug = header[H_DEBUG]!;
    const size = Atomics.load(header, Z_SIZE);
    // Another agent may have grown the memory since its buffer was read above; Z_SIZE is published
    // after memory.grow, so the memory's buffer read now covers it.
    if (memory !== null && buffer.byteLength < size) buffer = memory.buffer as unknown as SharedArrayBuffer;
    if (buffer.byteLength < size) throw new HeapError(ErrorCode.EBADHEAP, `not a shmalloc heap: the memory holds ${buffer.byteLength} bytes, the heap ends at ${size}: truncated`);
    const i32 = new Int32Array(buffer, 0, size >> 2);
    for (let cpu = 0; cpu < g.cpus; cpu++) {
      const w = ((offset + g.pcpuOff) >> 2) + cpu * C_WORDS + C_STATE;
      if (Atomics.load(i32, w) === C_STATE_FREE && Atomics.compareExchange(i32, w, C_STATE_FREE, C_STATE_ATTACHED) === C_STATE_FREE) {
        const heap = new Heap(heapInit({ buffer, memory, base: offset, geometry: g, size, cpu, canBlock: !noBlock && agentCanBlock(), debug }));
        heap.#claimSlot(cpu, noBlock);
        return heap;
      }
    }
    throw new HeapError(ErrorCode.ENOCPU, `all ${g.cpus} CPU slots of this heap are attached`);
  }

  /** Initialise this handle's slot (already claimed by compareExchange, or slot 0 at creation). */
  #claimSlot(cpu: number, noBlock: boolean): void {
    const c = this.#mem.pcpOf(cpu);
    const i32 = this.#mem.i32;
    for (let k = 0; k <= LOCK_CLASSES; k++) i32[c + C_HELD + k] = 0;
    i32[c + C_FLAGS] = noBlock || !this.#locks.canBlock ? C_FLAG_NOBLOCK : 0;
    this.#locks.gen = (i32[c + C_GEN]! + 1) | 0;
    i32[c + C_GEN] = this.#locks.gen;
    this.#mem.u32[c + C_FAIL_STATE] = (this.#mem.u32[this.#mem.hw + H_FAIL_SEED]! ^ Math.imul(cpu + 1, 0x9e3779b9)) >>> 0 || 1;
    this.#rcu.rcuOnline();
    Atomics.store(i32, c + C_STATE, C_STATE_ATTACHED);
  }

  /** Drain this slot's caches back to the shared heap and free the slot. The handle is dead after. */
  detach(): void {
    this.#locks.assertLive();
    assertNoCallback(this.#locks, "detach");
    this.#locks.assertCanLock(LOCK.rcu);
    // Its kfreeRcu objects wait for a grace period: not while another handle of this agent reads.
    this.#rcu.assertDetachCanWait();
    // From here a hook's nolock allocations fail and its nolock frees are deferred, so that
    // nothing re-enters the sheaves being flushed; what the hook frees is drained below.
    this.#locks.closing = true;
    this.#locks.onChange();
    try {
      for (;;) {
        this.#rcu.rcuOffline();
        // A noBlock agent that gave up on a list lock left objects deferred: the slot stays attached.
        if (!drainDeferredObjects(this.#slab, this.#mem.cpu, true)) this.#detachBusy();
        const p = this.#mem.pcpuW;
        flushAllSheavesOf(this.#slab, this.#mem.cpu);
        if (this.#mem.i32[this.#mem.hw + CT_NR_DYING] !== 0) flushDyingCaches(this.#slab);
        // Last: everything above may free pages into this slot's pcp lists.
        pcpDetach(this.#pages);
        if (this.#mem.i32[p + C_DEFER_HEAD] === 0 && this.#mem.i32[p + C_RCU_PENDING] === 0 && this.#mem.i32[p + C_RCU_NR_SPARE] === 0) break;
      }
    } catch (e) {
      this.#locks.closing = false;
      this.#locks.onChange();
      throw e;
    }
    this.#locks.hook = null;
    this.#locks.trace.clear();
    this.#locks.trace.detached = `this handle (cpu ${this.#mem.cpu}) was detached`;
    Atomics.store(this.#mem.i32, this.#mem.pcpuW + C_STATE, C_STATE_FREE);
    this.#locks.detached = true;
    this.#locks.onChange();
  }

  /** A noBlock agent's detach could not free its deferred objects (a list lock held past its bound). */
  #detachBusy(): never {
    throw new HeapError(
      ErrorCode.EAGAIN,
      `cpu ${this.#mem.cpu} must not block, and a list lock was held past its bound while detach freed its deferred objects: ` +
        "the handle stays attached, what was returned so far stays returned: call detach again",
    );
  }

  /** Is this handle still attached? */
  get attached(): boolean {
    return !this.#locks.detached && this.#mem.i32[this.#mem.pcpuW + C_GEN] === this.#locks.gen;
  }

  /* ------------------------------------------------------------ properties */

  /** The heap's buffer (for a heap on WebAssembly memory, memory.buffer as of the last growth this handle saw). */
  get buffer(): SharedArrayBuffer {
    return this.#mem.buffer;
  }
  /** Fixed-length views over the whole heap (new objects after the heap grew). */
  get u8(): Uint8Array {
    return this.#mem.pubU8;
  }
  get i32(): Int32Array {
    return this.#mem.pubI32;
  }
  get u32(): Uint32Array {
    return this.#mem.pubU32;
  }
  get f64(): Float64Array {
    return this.#mem.pubF64;
  }
  /** This handle's CPU slot. */
  get cpu(): number {
    return this.#mem.cpu;
  }
  /** End of the heap in the buffer as this handle sees it: offset + bytes managed. */
  get size(): number {
    return this.#mem.size;
  }
  /** The size the heap may grow to. */
  get maxSize(): number {
    return this.#mem.maxSize;
  }
  /** Byte offset of the heap in its buffer: its header page; the bytes below belong to others. */
  get offset(): number {
    return this.#mem.offset;
  }
  /** The WebAssembly.Memory the heap lives in, or null. */
  get memory(): WasmMemory | null {
    return this.#mem.memory;
  }
  /** 4096. */
  get pageSize(): number {
    return PAGE_SIZE;
  }
  /** Tracepoints of this agent. */
  get trace(): Trace {
    return this.#layers.trace;
  }
  /** What deferred work found wrong (see Locks.onError): a function, or null for the default logger. */
  get onError(): (err: HeapError) => void {
    return this.#locks.onError;
  }
  set onError(fn: ((err: HeapError) => void) | null) {
    this.#locks.onError = fn;
  }

  /** Rebuild the views if another agent grew the heap; true when they changed. */
  refreshViews(): boolean {
    return this.#locks.refreshViews();
  }

  /** Set the reentry hook (a testing aid): `fn(point)` runs at every lock point. */
  setReentryHook(fn: ReentryHook | null): void {
    this.#locks.setReentryHook(fn);
  }

  /* ------------------------------------------------------------ pages (page/page_alloc.ts) */

  allocPages(order: number, gfp?: number): number {
    return this.#pages.allocPages(order, gfp);
  }
  freePages(addr: number, order: number): void {
    this.#pages.freePages(addr, order);
  }
  allocPagesBulk(count: number, out: number[] | Uint32Array, gfp: number = GFP_KERNEL): number {
    return this.#pages.allocPagesBulk(count, out, gfp);
  }
  allocPagesNolock(order: number, gfp: number = 0): number {
    return this.#pages.allocPagesNolock(order, gfp);
  }
  freePagesNolock(addr: number, order: number): void {
    this.#pages.freePagesNolock(addr, order);
  }
  /** Grow the heap (memory hotplug) up to maxSize; returns the new size. */
  grow(bytes: number): number {
    return grow(this.#pages, bytes);
  }

  /* ------------------------------------------------------------ objects (slab/) */

  kmalloc(size: number, gfp?: number): number {
    return this.#slab.kmalloc(size, gfp);
  }
  kfree(addr: number): void {
    this.#slab.kfree(addr);
  }
  kmallocNolock(size: number, gfp?: number): number {
    return this.#slab.kmallocNolock(size, gfp);
  }
  kfreeNolock(addr: number): void {
    this.#slab.kfreeNolock(addr);
  }
  kzalloc(size: number, gfp: number = GFP_KERNEL): number {
    return kzalloc(this.#slab, size, gfp);
  }
  ksize(addr: number): number {
    return this.#slab.ksize(addr);
  }
  krealloc(addr: number, size: number, gfp: number = GFP_KERNEL): number {
    return krealloc(this.#slab, addr, size, gfp);
  }
  kfreeBulk(addrs: ArrayLike<number>): void {
    kfreeBulk(this.#slab, addrs);
  }
  createCache(name: string, objectSize: number, options: CacheOptions = {}): KmemCache {
    return createCache(this.#slab, name, objectSize, options);
  }
  findCache(name: string): KmemCache | null {
    return findCache(this.#slab, name);
  }

  /* ------------------------------------------------------------ RCU (rcu/) */

  rcuReadLock(): void {
    this.#rcu.rcuReadLock();
  }
  rcuReadUnlock(): void {
    this.#rcu.rcuReadUnlock();
  }
  rcuReadLockHeld(): boolean {
    return this.#rcu.rcuReadLockHeld();
  }
  synchronizeRcu(): void {
    this.#rcu.synchronizeRcu();
  }
  synchronizeRcuAsync(): Promise<void> {
    return this.#rcu.synchronizeRcuAsync();
  }
  kfreeRcu(addr: number): void {
    kfreeRcu(this.#rcu, addr);
  }
  rcuBarrier(): void {
    this.#rcu.rcuBarrier();
  }

  /* ------------------------------------------------------------ typed views and strings (views.ts) */

  /** A `Ctor` view of `n` elements over a new allocation (aligned to its element size at least), or null when memory ran out. */
  allocArray<C extends TypedArrayConstructor>(Ctor: C, n: number, gfp: number = GFP_KERNEL): InstanceType<C> | null {
    return allocArray(this.#slab, Ctor, n, gfp);
  }

  /** Free the allocation under a view from allocArray (any agent's); EINVAL for a view that is not one. */
  freeArray(view: ArrayBufferView): void {
    freeArray(this.#slab, view);
  }

  /** Store `s` as a 32-bit byte length, its UTF-8 and a 0 byte; the address (free it with kfree), or 0 when memory ran out. */
  allocString(s: string, gfp: number = GFP_KERNEL): number {
    return allocString(this.#slab, s, gfp);
  }

  /** The string allocString stored at `addr`. */
  readString(addr: number): string {
    return readString(this.#slab, addr);
  }

  /**
   * For the host, after a worker exited without detaching (returned, crashed, terminated): return
   * slot `cpu`'s cached pages, objects, deferred frees and pending kfreeRcu objects to the heap and
   * free the slot; what it found and did comes back as a ReclaimReport. Several workers that died
   * together are reclaimed together (an array of slots, an array of reports). See reclaim.ts.
   */
  reclaimSlot(cpu: number): ReclaimReport;
  reclaimSlot(cpus: readonly number[]): ReclaimReport[];
  reclaimSlot(arg: number | readonly number[]): ReclaimReport | ReclaimReport[] {
    return reclaimSlot(this.#layers, arg);
  }


  /**
   * The CPU slots attached now, this handle's included, in increasing order: for a host that
   * reclaims (reclaimSlot) what its finished workers left. A snapshot: other agents may attach
   * and detach meanwhile.
   */
  attachedSlots(): number[] {
    this.#locks.assertLive();
    const out: number[] = [];
    for (let cpu = 0; cpu < this.#mem.cpus; cpu++) if (Atomics.load(this.#mem.i32, this.#mem.pcpOf(cpu) + C_STATE) === C_STATE_ATTACHED) out.push(cpu);
    return out;
  }

  /** Return cached memory everywhere it can be reached: this slot's sheaves and spare kfreeRcu block
   * pages, every barn, empty slabs, every pcp list. */
  shrink(): void {
    this.#locks.assertLive();
    this.#locks.assertCanLock(LOCK.rcu);
    drainDeferredObjects(this.#slab);
    rcuShrink(this.#rcu);
    // This slot's sheaves of caches another agent destroyed go too (and such a cache is released
    // when no slot caches its objects any more).
    if (this.#mem.i32[this.#mem.hw + CT_NR_DYING] !== 0) flushDyingCaches(this.#slab);
    for (let id = FIRST_NAMED_ID; id < this.#mem.maxCaches; id++) if (this.#mem.i32[this.#slab.cacheWOf(id) + K_STATE] === K_STATE_ACTIVE) shrinkNamedCache(this.#slab, id);
    for (let id = KMALLOC_FIRST_ID; id < FIRST_NAMED_ID; id++) shrinkCache(this.#slab, id);
    shrinkCache(this.#slab, SHEAF_CACHE_ID);
    drainAllPcp(this.#pages);
  }

  /** A plain object of figures: pages, pcp lists, caches (like /proc/slabinfo), vmstat counters. */
  stats(): HeapStats {
    this.#locks.assertLive();
    this.#locks.refreshViews();
    const vmstat = {} as Record<VmItem, number>;
    const names = Object.keys(VM) as VmItem[];
    for (const n of names) vmstat[n] = 0;
    let attached = 0;
    let deferredObjects = 0;
    for (let cpu = 0; cpu < this.#mem.cpus; cpu++) {
      const c = this.#mem.pcpOf(cpu);
      if (this.#mem.i32[c + C_STATE] === C_STATE_ATTACHED) attached++;
      deferredObjects += this.#mem.i32[c + C_DEFER_NR]!;
      for (let k = 0; k < NR_VM; k++) vmstat[names[k]!] += this.#mem.u32[c + C_VMSTAT + k]!;
    }
    return { ...pageStats(this.#pages), ...rcuStats(this.#rcu), attached, cpus: this.#mem.cpus, deferredObjects, slabs: slabStats(this.#slab), vmstat };
  }

  /** Walk every structure; throws ECORRUPT naming the first broken invariant. */
  validate(): void {
    this.#locks.assertLive();
    this.#locks.refreshViews();
    this.#locks.assertCanLock(LOCK.rcu);
    // The walk must see one state: no reentry hook may run at validate's own lock points.
    const hook = this.#locks.hook;
    this.#locks.hook = null;
    try {
      const where = validatePages(this.#pages);
      validateSlabs(this.#slab, where);
      validateRcu(this.#rcu);
    } finally {
      this.#locks.hook = hook;
    }
    const held = this.#mem.i32[this.#mem.pcpuW + C_HELD_MASK]!;
    if (held !== 0) throw new HeapError(ErrorCode.ECORRUPT, `cpu ${this.#mem.cpu} still counts held locks (mask ${held}) after validate`);
  }

  /**
   * One PAGE_STATE code per page of the heap now (index = page frame number, address = index *
   * PAGE_SIZE), read from the page descriptors with no lock, like stats(). Fills `out` when it holds
   * enough pages (returning a view of its first ones), else returns a new array (the heap grew).
   * `out` over the heap's own buffer is EINVAL. On a heap placed at an offset, the pages below it
   * (the buffer's other users') are PAGE_STATE.outside.
   */
  pageMap(out?: Uint16Array): Uint16Array {
    this.#locks.assertLive();
    this.#locks.refreshViews();
    if (out !== undefined && !isUint16Array(out)) throw new HeapError(ErrorCode.EINVAL, `pageMap: out must be a Uint16Array, not ${describe(out)}`);
    if (out !== undefined && aliasesMemory(this.#mem, out.buffer)) throw new HeapError(ErrorCode.EINVAL, "pageMap: out must not be a view of the heap's own buffer (the map would be written over the heap)");
    const map = out !== undefined && out.length >= this.#mem.nrPages ? out.subarray(0, this.#mem.nrPages) : new Uint16Array(this.#mem.nrPages);
    readPageMap(this.#mem.u32, this.#mem.descW, this.#mem.offset >>> PAGE_SHIFT, this.#mem.zoneStart, this.#mem.nrPages, map);
    return map;
  }

  /** The name of each cache id in use (null for a free descriptor): the ids of PAGE_STATE.slab codes. */
  cacheNames(): (string | null)[] {
    return cacheNames(this.#slab);
  }
}

/*
 * `using heap = Heap.attach(buffer)`: heap[Symbol.dispose]() detaches (a no-op on a detached
 * handle). Defined where the runtime has Symbol.dispose (browsers, Node 20.4+ and 22); an older
 * Node 20 has none, and there `using` needs a polyfill of Symbol.dispose: heap.detach() is the same.
 */
const DISPOSE = (Symbol as { dispose?: symbol }).dispose;
if (typeof DISPOSE === "symbol") {
  Object.defineProperty(Heap.prototype, DISPOSE, {
    value: function dispose(this: Heap): void {
      if (this.attached) this.detach();
    },
    writable: true,
    configurable: true,
  });
}
