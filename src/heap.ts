/*
 * The public Heap: creation, attach and detach of CPU slots, stats, validate, shrink, reclaim.
 *
 * LOCKING CONTRACT
 *
 *   C_STATE of a slot is claimed by compareExchange(SLOT_FREE -> SLOT_ATTACHED) in attach, and set
 *     back to SLOT_FREE with Atomics.store by detach (its own slot) or reclaimSlot (a dead slot's,
 *     via SLOT_RECLAIMING, claimed by compareExchange so two reclaimers cannot both run). The
 *     claimant is in the same word (slotReclaimingBy): a reclaimer killed mid-reclaim leaves its
 *     claims, and reclaimSlot of the reclaimer claims them again (claimOrphansOf) and finishes
 *     them with it; a claim whose claimant is given too, or free, is taken over directly.
 *   C_GEN of a slot: written by the agent that claims it (attach) and moved on with Atomics.add by
 *     reclaimSlot; a handle compares it with the value it claimed on its slow paths (assertLive),
 *     for equality only, the value kept as the word stores it ((gen + 1) | 0), so it wraps at 2^31.
 *   The header is written once by create before the handle is returned; H_CHECKSUM is written
 *     last and is what attach trusts.
 *   detach and reclaimSlot take the same locks as the paths they drain (sheaf -> barn -> list ->
 *     pcp -> zone) and assert first that the caller holds none of them. reclaimSlot first takes
 *     over every lock word the dead slot holds (compareExchange owner -> this slot, waiters bit
 *     kept), repairs what can be rebuilt from the descriptors under it (buddy lists, pcp counts,
 *     kfreeRcu counts, a cache's slab lists and counts, a barn's counts) and releases it
 *     (recoverLocksOf); then it frees the blocks the slot had in its hands (PG_INHAND, kfreeRcu
 *     block pages on no chain, its P_HAND sheaves) and returns its memory, and reports all of it
 *     (ReclaimReport). Slots that died together are reclaimed together (an array): all are claimed
 *     and all their locks taken over before any memory is returned, so no reclaim waits on a lock
 *     another dead slot holds. On a noBlock caller, detach and reclaimSlot may stop with EAGAIN;
 *     the slot then stays attached.
 *   While detach empties the slot (`closing`), a hook's nolock allocations fail and its nolock
 *     frees go to the deferred list, which detach drains again until the slot holds nothing.
 *   reclaimSlot refuses (EDEADLK, before anything changes) while any handle of this agent is
 *     inside a read-side section: the dead slot's kfreeRcu objects wait for a grace period.
 *   shrink() also flushes this slot's sheaves of dying caches, so a cache another agent destroyed
 *     is released once no slot caches its objects.
 *   attachedSlots() takes no lock: one Atomics.load of each slot's C_STATE, a snapshot.
 *   stats() takes no lock: it reads counters that other agents may be changing, so its figures are
 *     exact only while the heap is quiet. validate() refuses (EDEADLK) while its agent holds any
 *     lock (from a hook or trace handler), and takes every pcp lock and the zone lock; the
 *     sheaves of other slots it reads as they are (exact while those agents are idle).
 *   pageMap() and cacheNames() take no lock either, and read the page and cache descriptors as
 *     stats() reads counters (a cache's name is written before its K_STATE is stored).
 */
import { checkBool, checkInt, intOption, describe, einval, isUint16Array, readOptions } from "./check.js";
import { ErrorCode, HeapError } from "./errors.js";
import type { WasmMemory } from "./mm.js";
import { assertNoLiveHeap, assertSharedMemory, isSharedArrayBuffer, locateHeap, resolvePlacement } from "./placement.js";
import { allocArray, allocString, freeArray, readString, type TypedArrayConstructor } from "./views.js";
import { GFP } from "./gfp.js";
import {
  C_DEFER_HEAD,
  C_DEFER_NR,
  C_FLAGS,
  C_GEN,
  C_HELD,
  C_KRCP_LOCK,
  C_PCP_BUSY,
  C_PCP_COUNT,
  C_PCP_LOCK,
  C_RCU_NR_SPARE,
  C_RCU_NEST,
  C_RCU_PENDING,
  C_RCU_SNAP,
  C_STATE,
  C_VIEW_PROBE,
  C_VMSTAT,
  CACHE_ACTIVE,
  CACHE_DYING,
  CACHE_HDR_WORDS,
  CPUF_NOBLOCK,
  computeGeometry,
  CT_LOCK,
  CT_NR,
  DEBUG_POISON,
  DEBUG_REDZONE,
  DEBUG_TRACK,
  type Geometry,
  H_CACHE_BYTES,
  H_CACHE_OFF,
  H_CHECKSUM,
  H_CPUS,
  H_DEBUG,
  H_DESC_OFF,
  H_FAIL_RATE,
  H_FAIL_SEED,
  H_MAGIC,
  H_MAX_CACHES,
  H_NR_PAGES,
  H_PAGE_SHIFT,
  H_PCPU_OFF,
  H_SIZE,
  H_VERSION,
  H_ZONE_START,
  HEAP_MAGIC,
  headerChecksum,
  K_BARN_LOCK,
  K_LIST_LOCK,
  K_STATE,
  KF_KMALLOC,
  KF_SHEAF_CACHE,
  LAYOUT_VERSION,
  PCS_WORDS,
  LOCK,
  LOCK_CLASSES,
  NR_VM,
  PCPU_WORDS,
  G_NR_DYING,
  P_LOCKED,
  PAGE_SHIFT,
  PAGE_SIZE,
  SHEAF_BYTES,
  SLOT_ATTACHED,
  SLOT_DEAD,
  SLOT_FREE,
  SLOT_RECLAIMING,
  SLOT_STATE_MASK,
  slotReclaimer,
  slotReclaimingBy,
  VM,
  type VmItem,
  Z_LOCK,
  Z_SIZE,
} from "./layout.js";
import { agentCanBlock, C_FAIL_STATE, C_HELD_MASK, LOCK_OWNER_MASK, type MmInit } from "./mm.js";
import type { PageStats } from "./page_alloc.js";
import { FIRST_NAMED_ID, KMALLOC_FIRST_ID, KMALLOC_SIZES, SHEAF_CACHE_ID, type SlabStats } from "./slab.js";
import { RcuAllocator, type RcuStats } from "./rcu.js";
import { readPageMap } from "./pagemap.js";

export const DEFAULT_SIZE = 64 << 20;
export const DEFAULT_CPUS = 64;
export const DEFAULT_MAX_CACHES = 64;
/** Addresses stay positive 32-bit integers. */
export const MAX_HEAP_SIZE = 2 ** 31 - PAGE_SIZE;
export const MAX_CPUS = 1024;

export interface DebugOptions {
  /** Fill free objects with a pattern and check it when they are handed out again. */
  poison?: boolean;
  /** Guard bytes after each object and after the requested size, checked on free. */
  redzone?: boolean;
  /** Keep per-object state so that every double free and bad free is caught. */
  track?: boolean;
}

export interface FaultInjection {
  /** Share of page allocations and slab refills to fail, 0..1. */
  rate: number;
  /** Seed of the generator that picks them. */
  seed?: number;
}

export interface HeapOptions {
  /** Heap size in bytes, rounded up to whole pages (default 64 MiB). */
  size?: number;
  /** Growth limit in bytes (default `size`). Above `size`, the buffer is a growable SharedArrayBuffer
   * and the heap grows (heap.grow, or GFP.KERNEL allocation before it gives up) up to this. */
  maxSize?: number;
  /** CPU slots: how many agents may be attached at once (default 64). */
  cpus?: number;
  /** Debug checks: true for all of them, or an object choosing (default false). */
  debug?: boolean | DebugOptions;
  /** Descriptor slots for caches, the 14 built-in ones included (default 64). */
  maxCaches?: number;
  /** This agent must never block: GFP.KERNEL spins instead of waiting. Detected where Atomics.wait throws. */
  noBlock?: boolean;
  /** Fail a share of allocations on purpose (fail_page_alloc, failslab). */
  faultInjection?: FaultInjection;
  /** A shared WebAssembly.Memory to place the heap in (grows with memory.grow); see `offset`. */
  memory?: WasmMemory;
  /** A SharedArrayBuffer of the caller's to place the heap in; see `offset`. */
  buffer?: SharedArrayBuffer;
  /** With memory or buffer: the page-aligned byte offset of the heap; the bytes below stay the caller's (default 0).
   * size then defaults to the rest of the buffer. */
  offset?: number;
}

export interface AttachOptions {
  /** This agent must never block (see HeapOptions.noBlock). */
  noBlock?: boolean;
  /** The heap's offset in the buffer (default: found by its header). */
  offset?: number;
}

/**
 * What reclaimSlot found and did (a plain object). `locks` names each lock the dead agent held
 * ("zone", "pcp cpu 3", "list kmalloc-64", "barn kmalloc-64", "sheaf kmalloc-64", "ctable",
 * "rcu cpu 2"); `rebuilt` each structure rebuilt from the descriptors under such a lock ("buddy
 * lists", "pcp lists of cpu 3", "slab lists of kmalloc-64 (12 slabs)", "barn of kmalloc-64",
 * "kfreeRcu counts of cpu 2"); `pages` the pages returned to the free lists (its pcp lists, the
 * blocks in its hands, its spare kfreeRcu block pages); `objects` the objects returned (its
 * sheaves, its deferred frees, its kfreeRcu objects, freed after their grace period);
 * `inHand` the page blocks, kfreeRcu block pages and sheaf objects it had in its hands inside the allocator;
 * `finished`, only when the dead agent died inside reclaimSlot, the reports of the slots it was
 * reclaiming, whose reclaim this one finished.
 */
export interface ReclaimReport {
  cpu: number;
  locks: string[];
  rebuilt: string[];
  pages: number;
  objects: number;
  inHand: number;
  /** Present when the dead agent was itself reclaiming slots when it died: their reports, finished now. */
  finished?: ReclaimReport[];
}

export interface HeapStats extends PageStats, RcuStats {
  /** Slots attached now. */
  attached: number;
  cpus: number;
  /** Objects waiting on the slots' deferred lists (kfreeNolock that found the sheaves busy). */
  deferredObjects: number;
  slabs: SlabStats[];
  vmstat: Record<VmItem, number>;
}

/** reclaimSlot's array of slots, read once; anything that cannot be read is EINVAL. */
function readSlots(a: readonly unknown[]): unknown[] {
  try {
    const n = a.length;
    const out: unknown[] = [];
    for (let i = 0; i < n; i++) out.push(a[i]);
    return out;
  } catch (e) {
    return einval(`cpus could not be read: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** The inits Heap.create and Heap.attach made: the constructor takes no other. */
const heapInits = new WeakSet<MmInit>();
function heapInit(init: MmInit): MmInit {
  heapInits.add(init);
  return init;
}

export class Heap extends RcuAllocator {
  private constructor(init: MmInit) {
    if (!heapInits.has(init)) einval("a Heap comes from Heap.create or Heap.attach, not from new Heap()");
    super(init);
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
    heap.initZone();
    const enc = new TextEncoder();
    heap.setupCache(SHEAF_CACHE_ID, enc.encode("kmem_cache_sheaf"), SHEAF_BYTES, 64, KF_SHEAF_CACHE);
    KMALLOC_SIZES.forEach((s, i) => {
      const name = s >= 1024 ? `kmalloc-${s >> 10}k` : `kmalloc-${s}`;
      heap.setupCache(KMALLOC_FIRST_ID + i, enc.encode(name), s, s === 96 || s === 192 ? 32 : Math.min(s, 8), KF_KMALLOC);
    });
    heap.claimSlot(0, noBlock);
    u32[H_FAIL_RATE] = failRate;
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
      const w = ((offset + g.pcpuOff) >> 2) + cpu * PCPU_WORDS + C_STATE;
      if (Atomics.load(i32, w) === SLOT_FREE && Atomics.compareExchange(i32, w, SLOT_FREE, SLOT_ATTACHED) === SLOT_FREE) {
        const heap = new Heap(heapInit({ buffer, memory, base: offset, geometry: g, size, cpu, canBlock: !noBlock && agentCanBlock(), debug }));
        heap.claimSlot(cpu, noBlock);
        return heap;
      }
    }
    throw new HeapError(ErrorCode.ENOCPU, `all ${g.cpus} CPU slots of this heap are attached`);
  }

  /** Initialise this handle's slot (already claimed by compareExchange, or slot 0 at creation). */
  private claimSlot(cpu: number, noBlock: boolean): void {
    const c = this.pcpOf(cpu);
    const i32 = this.i32;
    for (let k = 0; k <= LOCK_CLASSES; k++) i32[c + C_HELD + k] = 0;
    i32[c + C_FLAGS] = noBlock || !this.canBlock ? CPUF_NOBLOCK : 0;
    // Wrap-safe: a stored generation is a signed 32-bit word, compared only for equality.
    this.gen = (i32[c + C_GEN]! + 1) | 0;
    i32[c + C_GEN] = this.gen;
    this.u32[c + C_FAIL_STATE] = (this.u32[this.hw + H_FAIL_SEED]! ^ Math.imul(cpu + 1, 0x9e3779b9)) >>> 0 || 1;
    this.rcuOnline();
    Atomics.store(i32, c + C_STATE, SLOT_ATTACHED);
  }

  /** Drain this slot's caches back to the shared heap and free the slot. The handle is dead after. */
  detach(): void {
    this.assertLive();
    this.assertCanLock(LOCK.rcu);
    // Its kfreeRcu objects wait for a grace period: not while another handle of this agent reads.
    this.assertDetachCanWait();
    // From here a hook's nolock allocations fail and its nolock frees are deferred, so that
    // nothing re-enters the sheaves being flushed; what the hook frees is drained below.
    this.closing = true;
    this.updateFastOff();
    try {
      for (;;) {
        this.rcuOffline();
        // A noBlock agent that gave up on a list lock left objects deferred: the slot stays attached.
        if (!this.drainDeferredObjects(this.cpu, true)) this.detachBusy();
        const p = this.pcpuW;
        this.flushAllSheavesOf(this.cpu);
        if (this.i32[this.hw + G_NR_DYING] !== 0) this.flushDyingCaches();
        // Last: everything above may free pages into this slot's pcp lists.
        this.pcpDetach();
        if (this.i32[p + C_DEFER_HEAD] === 0 && this.i32[p + C_RCU_PENDING] === 0 && this.i32[p + C_RCU_NR_SPARE] === 0) break;
      }
    } catch (e) {
      this.closing = false;
      this.updateFastOff();
      throw e;
    }
    this.hook = null;
    this.trace.clear();
    this.trace.detached = `this handle (cpu ${this.cpu}) was detached`;
    Atomics.store(this.i32, this.pcpuW + C_STATE, SLOT_FREE);
    this.detached = true;
    this.updateFastOff();
  }

  /** A noBlock agent's detach could not free its deferred objects (a list lock held past its bound). */
  private detachBusy(): never {
    throw new HeapError(
      ErrorCode.EAGAIN,
      `cpu ${this.cpu} must not block, and a list lock was held past its bound while detach freed its deferred objects: ` +
        "the handle stays attached, what was returned so far stays returned: call detach again",
    );
  }

  /** Is this handle still attached? */
  get attached(): boolean {
    return !this.detached && this.i32[this.pcpuW + C_GEN] === this.gen;
  }

  /* ------------------------------------------------------------ typed views and strings (views.ts) */

  /** A `Ctor` view of `n` elements over a new allocation (aligned to its element size at least), or null when memory ran out. */
  allocArray<C extends TypedArrayConstructor>(Ctor: C, n: number, gfp: number = GFP.KERNEL): InstanceType<C> | null {
    return allocArray(this, Ctor, n, gfp);
  }

  /** Free the allocation under a view from allocArray (any agent's); EINVAL for a view that is not one. */
  freeArray(view: ArrayBufferView): void {
    freeArray(this, view, this.pcpuW + C_VIEW_PROBE);
  }

  /** Store `s` as a 32-bit byte length, its UTF-8 and a 0 byte; the address (free it with kfree), or 0 when memory ran out. */
  allocString(s: string, gfp: number = GFP.KERNEL): number {
    return allocString(this, s, gfp);
  }

  /** The string allocString stored at `addr`. */
  readString(addr: number): string {
    return readString(this, addr);
  }

  /**
   * For the host, after a worker exited without detaching (returned, crashed, terminated): return
   * slot `cpu`'s cached pages, objects, deferred frees and pending kfreeRcu objects to the heap and
   * free the slot. Locks the worker died holding are taken over and released (recoverLocksOf), so
   * the heap goes on working. A noBlock caller that meets a lock held past its bound gets EAGAIN,
   * the slot still attached: call again. Several workers that died together are reclaimed
   * together (an array of slots): every lock any of them holds is taken over before any of their
   * memory is returned, so the reclaim never waits on a lock another dead slot holds.
   */
  reclaimSlot(cpu: number): ReclaimReport;
  reclaimSlot(cpus: readonly number[]): ReclaimReport[];
  reclaimSlot(arg: number | readonly number[]): ReclaimReport | ReclaimReport[] {
    this.assertLive();
    let many = false;
    try {
      many = Array.isArray(arg);
    } catch {
      einval(`cpu must be a slot number or an array of them, not ${describe(arg)}`);
    }
    const cpus: unknown[] = many ? readSlots(arg as readonly unknown[]) : [arg];
    const seen = new Set<number>();
    for (let k = 0; k < cpus.length; k++) {
      const cpu = cpus[k];
      checkInt(many ? `cpus[${k}]` : "cpu", cpu, 0, this.cpus - 1, "", `this heap's slots are 0..${this.cpus - 1}`);
      if (cpu === this.cpu) throw new HeapError(ErrorCode.EINVAL, `cpu ${cpu} is this handle's own slot: use detach()`);
      if (seen.has(cpu as number)) throw new HeapError(ErrorCode.EINVAL, `cpus: slot ${cpu} is given twice`);
      seen.add(cpu as number);
    }
    return this.reclaimChecked(cpus as number[], many);
  }

  private reclaimChecked(cpus: number[], many: boolean): ReclaimReport | ReclaimReport[] {
    if (this.agentInReadSection()) throw new HeapError(ErrorCode.EDEADLK, "reclaimSlot inside a read-side section (of any handle of this agent) would wait for itself: the dead slot's kfreeRcu objects wait for a grace period");
    this.assertCanLock(LOCK.rcu);
    if (!many) {
      const cpu = cpus[0]!;
      const c = this.pcpOf(cpu);
      // A free slot that still holds deferred objects (left by a detach of an earlier release):
      // return them, and the slot stays free.
      if (Atomics.load(this.i32, c + C_STATE) === SLOT_FREE && this.i32[c + C_DEFER_HEAD] !== 0) {
        const objects = this.i32[c + C_DEFER_NR]!;
        this.reclaimDeferredOf(cpu);
        return { cpu, locks: [], rebuilt: [], pages: 0, objects, inHand: 0 };
      }
    }
    // Claim every slot (SLOT_RECLAIMING, with this slot as claimant) before anything changes;
    // SLOT_DEAD: a heap of an earlier release marked the slot dead, and it is reclaimed the same
    // way. A slot whose claimant died mid-reclaim (the claimant is given too, or no longer
    // attached) is claimed again: this reclaim finishes the job.
    const mine = slotReclaimingBy(this.cpu);
    const before: number[] = [];
    for (const cpu of cpus) {
      const c = this.pcpOf(cpu);
      const state = Atomics.load(this.i32, c + C_STATE);
      const by = slotReclaimer(state);
      const orphan = (state & SLOT_STATE_MASK) === SLOT_RECLAIMING && by !== this.cpu && (by < 0 || by >= this.cpus || cpus.includes(by) || this.slotGone(by));
      const why =
        state !== SLOT_ATTACHED && state !== SLOT_DEAD && !orphan
          ? (state & SLOT_STATE_MASK) === SLOT_RECLAIMING
            ? `cpu ${cpu} is being reclaimed by cpu ${by}${by === this.cpu ? " (this handle's slot)" : `: if cpu ${by}'s agent died, reclaimSlot(${by}) finishes both`}`
            : `cpu ${cpu} is not attached`
        : Atomics.compareExchange(this.i32, c + C_STATE, state, mine) !== state ? `cpu ${cpu} is being reclaimed or detached by another agent`
        : null;
      if (why !== null) {
        for (let k = 0; k < before.length; k++) Atomics.store(this.i32, this.pcpOf(cpus[k]!) + C_STATE, before[k]!);
        throw new HeapError(ErrorCode.EINVAL, why);
      }
      before.push(state);
    }
    const given = cpus.length;
    const claimants = this.claimOrphansOf(cpus);
    // A handle still using a slot (a host that reclaimed a live worker's slot) finds the
    // generation moved on at its next slow path and is detached (EDETACHED), never sharing it.
    for (const cpu of cpus) Atomics.add(this.i32, this.pcpOf(cpu) + C_GEN, 1);
    // Every dead slot is outside any read-side section before any grace period is waited for
    // below: one killed inside a section would otherwise hold up the others' kfreeRcu flush.
    for (const cpu of cpus) {
      this.i32[this.pcpOf(cpu) + C_RCU_NEST] = 0;
      Atomics.store(this.i32, this.pcpOf(cpu) + C_RCU_SNAP, 0);
    }
    const reports = cpus.map((cpu): ReclaimReport => ({ cpu, locks: [], rebuilt: [], pages: 0, objects: 0, inHand: 0 }));
    try {
      // No waiting here: only the locks these slots hold are taken over.
      for (let k = 0; k < cpus.length; k++) this.recoverLocksOf(cpus[k]!, reports[k]!, cpus);
      for (let k = 0; k < cpus.length; k++) this.returnSlotMemory(cpus[k]!, reports[k]!);
    } catch (e) {
      // Nothing is lost: what was returned stays returned, the rest stays the slots'; call again.
      for (const cpu of cpus) Atomics.store(this.i32, this.pcpOf(cpu) + C_STATE, SLOT_ATTACHED);
      throw e;
    }
    for (const cpu of cpus) {
      const c = this.pcpOf(cpu);
      for (let k = 0; k <= LOCK_CLASSES; k++) this.i32[c + C_HELD + k] = 0;
      Atomics.store(this.i32, c + C_STATE, SLOT_FREE);
    }
    // The report of a slot a dead claimant was reclaiming goes with its claimant's.
    for (let k = given; k < cpus.length; k++) {
      const r = reports[cpus.indexOf(claimants[k - given]!)]!;
      (r.finished ??= []).push(reports[k]!);
    }
    return many ? reports.slice(0, given) : reports[0]!;
  }

  /** Is slot `cpu`'s agent gone for good: the slot free, or marked dead by an earlier release? */
  private slotGone(cpu: number): boolean {
    const st = Atomics.load(this.i32, this.pcpOf(cpu) + C_STATE);
    return st === SLOT_FREE || st === SLOT_DEAD;
  }

  /**
   * reclaimSlot: the slots that the dead slots in `cpus` had claimed (SLOT_RECLAIMING by one of
   * them) when they died are claimed by this slot and appended to `cpus`, and so on for theirs,
   * so that their reclaim is finished with their claimant's. Returns each one's claimant.
   */
  private claimOrphansOf(cpus: number[]): number[] {
    const claimants: number[] = [];
    const mine = slotReclaimingBy(this.cpu);
    for (let k = 0; k < cpus.length; k++) {
      const by = cpus[k]!;
      const theirs = slotReclaimingBy(by);
      for (let s = 0; s < this.cpus; s++) {
        if (s === this.cpu || cpus.includes(s)) continue;
        if (Atomics.compareExchange(this.i32, this.pcpOf(s) + C_STATE, theirs, mine) !== theirs) continue;
        cpus.push(s);
        claimants.push(by);
      }
    }
    return claimants;
  }

  /** reclaimSlot, once the dead slot's locks are recovered: everything it held goes back. */
  private returnSlotMemory(cpu: number, report: ReclaimReport): void {
    const c = this.pcpOf(cpu);
    // What it had in its hands inside the allocator goes back to the free lists.
    const blocks = { n: 0 };
    report.pages += this.freeBlocksInHand(cpu, blocks);
    report.inHand += blocks.n;
    report.objects += this.i32[c + C_RCU_PENDING]! + this.i32[c + C_DEFER_NR]!;
    report.pages += this.i32[c + C_RCU_NR_SPARE]!;
    report.inHand += this.rcuReclaim(cpu);
    // The sheaf object it was allocating or freeing, before its deferred list goes back.
    report.inHand += this.freeSheafObjectInHand(cpu);
    this.drainDeferredObjects(cpu);
    report.objects += this.sheafObjectsOf(cpu);
    this.flushAllSheavesOf(cpu);
    if (this.pcpSteal(cpu)) {
      const count = this.u32[c + C_PCP_COUNT]!;
      report.pages += count;
      if (count !== 0) this.pcpDrain(cpu, count);
      const left = this.u32[c + C_PCP_COUNT]!;
      this.pcpUnlockRemote(cpu);
      if (left !== 0) throw new HeapError(ErrorCode.EAGAIN, `cpu ${this.cpu} must not block, and the zone lock was held past its bound while it drained cpu ${cpu}'s pcp lists: call again`);
    }
  }

  /** reclaimSlot of a free slot with deferred objects: claim it (SLOT_RECLAIMING) while they go back. */
  private reclaimDeferredOf(cpu: number): void {
    const c = this.pcpOf(cpu);
    if (Atomics.compareExchange(this.i32, c + C_STATE, SLOT_FREE, slotReclaimingBy(this.cpu)) !== SLOT_FREE) {
      throw new HeapError(ErrorCode.EINVAL, `cpu ${cpu} was attached meanwhile: its agent frees its deferred objects`);
    }
    try {
      this.drainDeferredObjects(cpu);
    } finally {
      Atomics.store(this.i32, c + C_STATE, SLOT_FREE);
    }
    if (this.i32[c + C_DEFER_HEAD] !== 0) {
      throw new HeapError(ErrorCode.EAGAIN, `cpu ${this.cpu} must not block, and a list lock was held past its bound while it freed cpu ${cpu}'s deferred objects: call again`);
    }
  }

  /**
   * The CPU slots attached now, this handle's included, in increasing order: for a host that
   * reclaims (reclaimSlot) what its finished workers left. A snapshot: other agents may attach
   * and detach meanwhile.
   */
  attachedSlots(): number[] {
    this.assertLive();
    const out: number[] = [];
    for (let cpu = 0; cpu < this.cpus; cpu++) if (Atomics.load(this.i32, this.pcpOf(cpu) + C_STATE) === SLOT_ATTACHED) out.push(cpu);
    return out;
  }

  /**
   * reclaimSlot: every lock word dead slot `cpu` holds is taken over and released, and its local
   * locks cleared. What a lock guards is consistent wherever its holder stopped at a lock point (a
   * reentry hook or trace handler that paused it, as in the tests) or outside the lock's section;
   * a holder stopped in the middle of a section may leave it torn, so the structures that can be
   * rebuilt from the page descriptors are: the zone's buddy lists and counts (rebuildBuddyLists)
   * and the pcp lists' counts (recountPcp). A block the dead agent had in hand (taken out of a
   * list, not yet handed back) stays allocated: leaked, never handed out twice.
   */
  private recoverLocksOf(cpu: number, report: ReclaimReport, group: readonly number[]): void {
    const i32 = this.i32;
    // A request it raised on another slot's pcp lock while it waited for it.
    this.pcpDropRequestOf(cpu);
    for (let s = 0; s < this.cpus; s++) {
      if (!this.takeOverLock(this.pcpOf(s) + C_KRCP_LOCK, LOCK.rcu, cpu)) continue;
      report.locks.push(`rcu cpu ${s}`);
      this.rcuRecount(this.pcpOf(s));
      report.rebuilt.push(`kfreeRcu counts of cpu ${s}`);
      this.unlock(this.pcpOf(s) + C_KRCP_LOCK, LOCK.rcu);
    }
    if (this.takeOverLock(this.hw + CT_LOCK, LOCK.ctable, cpu)) {
      report.locks.push("ctable");
      this.unlock(this.hw + CT_LOCK, LOCK.ctable);
    }
    for (let id = 0; id < this.maxCaches; id++) {
      const kw = this.cacheWOf(id);
      const st = i32[kw + K_STATE];
      if (st !== CACHE_ACTIVE && st !== CACHE_DYING) continue;
      const name = this.cacheName(id);
      const local = kw + CACHE_HDR_WORDS + cpu * PCS_WORDS + P_LOCKED;
      if (i32[local] !== 0) report.locks.push(`sheaf ${name}`);
      i32[local] = 0;
      if (this.takeOverLock(kw + K_BARN_LOCK, LOCK.barn, cpu)) {
        report.locks.push(`barn ${name}`);
        this.barnRecountLocked(id);
        report.rebuilt.push(`barn of ${name}`);
        this.unlock(kw + K_BARN_LOCK, LOCK.barn);
      }
      if (this.takeOverLock(kw + K_LIST_LOCK, LOCK.list, cpu)) {
        report.locks.push(`list ${name}`);
        const slabs = this.slabRebuildLocked(id, group);
        report.rebuilt.push(`slab lists of ${name} (${slabs} slab${slabs === 1 ? "" : "s"})`);
        this.unlock(kw + K_LIST_LOCK, LOCK.list);
      }
    }
    // The pcp words of other slots the dead agent held as a remote drainer; its own is taken by pcpSteal.
    for (let s = 0; s < this.cpus; s++) {
      if (s === cpu) continue;
      const w = this.pcpOf(s) + C_PCP_LOCK;
      if ((Atomics.load(i32, w) & LOCK_OWNER_MASK) !== cpu + 1) continue;
      if (Atomics.compareExchange(i32, w, cpu + 1, this.me) !== cpu + 1) continue;
      this.acquired(LOCK.pcp);
      report.locks.push(`pcp cpu ${s}`);
      this.recountPcp(s);
      report.rebuilt.push(`pcp lists of cpu ${s}`);
      this.pcpUnlockRemote(s);
    }
    const own = this.pcpOf(cpu);
    if (i32[own + C_PCP_BUSY] !== 0) {
      // It died inside its own pcp section: the lists may be torn; pcpSteal takes the word next.
      i32[own + C_PCP_BUSY] = 0;
      if ((Atomics.load(i32, own + C_PCP_LOCK) & LOCK_OWNER_MASK) === cpu + 1) {
        report.locks.push(`pcp cpu ${cpu}`);
        this.recountPcp(cpu);
        report.rebuilt.push(`pcp lists of cpu ${cpu}`);
      }
    }
    if (this.takeOverLock(this.hw + Z_LOCK, LOCK.zone, cpu)) {
      report.locks.push("zone");
      this.rebuildBuddyLists();
      report.rebuilt.push("buddy lists");
      this.unlock(this.hw + Z_LOCK, LOCK.zone);
    }
  }

  /** Return cached memory everywhere it can be reached: this slot's sheaves and spare kfreeRcu block
   * pages, every barn, empty slabs, every pcp list. */
  shrink(): void {
    this.assertLive();
    this.assertCanLock(LOCK.rcu);
    this.drainDeferredObjects();
    this.rcuShrink();
    // This slot's sheaves of caches another agent destroyed go too (and such a cache is released
    // when no slot caches its objects any more).
    if (this.i32[this.hw + G_NR_DYING] !== 0) this.flushDyingCaches();
    for (let id = FIRST_NAMED_ID; id < this.maxCaches; id++) if (this.i32[this.cacheWOf(id) + K_STATE] === CACHE_ACTIVE) this.shrinkCache(id);
    for (let id = KMALLOC_FIRST_ID; id < FIRST_NAMED_ID; id++) this.shrinkCache(id);
    this.shrinkCache(SHEAF_CACHE_ID);
    this.drainAllPcp();
  }

  /** A plain object of figures: pages, pcp lists, caches (like /proc/slabinfo), vmstat counters. */
  stats(): HeapStats {
    this.assertLive();
    this.refreshViews();
    const vmstat = {} as Record<VmItem, number>;
    const names = Object.keys(VM) as VmItem[];
    for (const n of names) vmstat[n] = 0;
    let attached = 0;
    let deferredObjects = 0;
    for (let cpu = 0; cpu < this.cpus; cpu++) {
      const c = this.pcpOf(cpu);
      if (this.i32[c + C_STATE] === SLOT_ATTACHED) attached++;
      deferredObjects += this.i32[c + C_DEFER_NR]!;
      for (let k = 0; k < NR_VM; k++) vmstat[names[k]!] += this.u32[c + C_VMSTAT + k]!;
    }
    return { ...this.pageStats(), ...this.rcuStats(), attached, cpus: this.cpus, deferredObjects, slabs: this.slabStats(), vmstat };
  }

  /** Walk every structure; throws ECORRUPT naming the first broken invariant. */
  validate(): void {
    this.assertLive();
    this.refreshViews();
    // From a hook or trace handler that holds any lock (a sheaf, list, barn or rcu lock too): the
    // walk would read the structure its own agent is changing, and takes the pcp and zone locks.
    this.assertCanLock(LOCK.rcu);
    // The walk must see one state: no reentry hook may run at validate's own lock points.
    const hook = this.hook;
    this.hook = null;
    try {
      const where = this.validatePages();
      this.validateSlabs(where);
      this.validateRcu();
    } finally {
      this.hook = hook;
    }
    const held = this.i32[this.pcpuW + C_HELD_MASK]!;
    if (held !== 0) throw new HeapError(ErrorCode.ECORRUPT, `cpu ${this.cpu} still counts held locks (mask ${held}) after validate`);
  }

  /**
   * One PAGE_STATE code per page of the heap now (index = page frame number, address = index *
   * PAGE_SIZE), read from the page descriptors with no lock, like stats(). Fills `out` when it holds
   * enough pages (returning a view of its first ones), else returns a new array (the heap grew).
   * `out` over the heap's own buffer is EINVAL. On a heap placed at an offset, the pages below it
   * (the buffer's other users') are PAGE_STATE.outside.
   */
  pageMap(out?: Uint16Array): Uint16Array {
    this.assertLive();
    this.refreshViews();
    if (out !== undefined && !isUint16Array(out)) throw new HeapError(ErrorCode.EINVAL, `pageMap: out must be a Uint16Array, not ${describe(out)}`);
    if (out !== undefined && out.buffer === this.buffer) throw new HeapError(ErrorCode.EINVAL, "pageMap: out must not be a view of the heap's own buffer (the map would be written over the heap)");
    const map = out !== undefined && out.length >= this.nrPages ? out.subarray(0, this.nrPages) : new Uint16Array(this.nrPages);
    readPageMap(this.u32, this.descW, this.offset >>> PAGE_SHIFT, this.zoneStart, this.nrPages, map);
    return map;
  }

  /** The name of each cache id in use (null for a free descriptor): the ids of PAGE_STATE.slab codes. */
  cacheNames(): (string | null)[] {
    this.assertLive();
    const names: (string | null)[] = [];
    const nr = Math.min(this.maxCaches, this.i32[this.hw + CT_NR]!);
    for (let id = 0; id < nr; id++) {
      const st = this.i32[this.cacheWOf(id) + K_STATE];
      names.push(st === CACHE_ACTIVE || st === CACHE_DYING ? this.cacheName(id) : null);
    }
    return names;
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

/** The keys Heap.create reads. */
const CREATE_OPTIONS = ["size", "maxSize", "cpus", "debug", "maxCaches", "noBlock", "faultInjection", "memory", "buffer", "offset"] as const;

function debugFlags(d: unknown): number {
  if (d === undefined || d === false) return 0;
  if (d === true) return DEBUG_POISON | DEBUG_REDZONE | DEBUG_TRACK;
  if (typeof d !== "object" || d === null) einval(`option debug must be true, false or an object of checks (poison, redzone, track), not ${describe(d)}`);
  const o = readOptions("option debug", d, ["poison", "redzone", "track"]);
  const on = (k: string): boolean => checkBool(`option debug.${k}`, o[k]) === true;
  return (on("poison") ? DEBUG_POISON : 0) | (on("redzone") ? DEBUG_REDZONE : 0) | (on("track") ? DEBUG_TRACK : 0);
}

/** Check the header at byte `base` of a buffer and recompute its geometry; EBADHEAP when anything is off. */
/**
 * `inMemory`: the buffer is a WebAssembly.Memory's, read before another agent may have grown it, so a
 * heap end past it is checked by attach against the memory's buffer read after Z_SIZE.
 */
function readGeometry(buffer: unknown, base: number, inMemory = false): Geometry {
  const bad = (why: string): never => {
    throw new HeapError(ErrorCode.EBADHEAP, `not a shmalloc heap: ${why}`);
  };
  if (!isSharedArrayBuffer(buffer)) bad(`Heap.attach needs the heap's SharedArrayBuffer, not ${describe(buffer)}`);
  const sab = buffer as SharedArrayBuffer;
  if (sab.byteLength < base + PAGE_SIZE) bad(`only ${sab.byteLength} bytes${base !== 0 ? ` (the heap's offset is ${base})` : ""}`);
  const u32 = new Uint32Array(sab, base, 16);
  if (u32[H_MAGIC] !== HEAP_MAGIC) bad("no magic number");
  if (u32[H_VERSION] !== LAYOUT_VERSION) bad(`layout version ${u32[H_VERSION]}, this shmalloc reads version ${LAYOUT_VERSION}`);
  if (Atomics.load(u32, H_CHECKSUM) !== headerChecksum(u32)) bad("header checksum mismatch");
  const maxSize = u32[H_SIZE]!;
  const size = Atomics.load(new Uint32Array(sab, base, PAGE_SIZE >> 2), Z_SIZE);
  if ((!inMemory && sab.byteLength < size) || size < base + PAGE_SIZE || size > base + maxSize) bad(`the buffer holds ${sab.byteLength} bytes, the heap ends at ${size}: truncated`);
  if (u32[H_PAGE_SHIFT] !== PAGE_SHIFT) bad(`page shift ${u32[H_PAGE_SHIFT]}`);
  const g = computeGeometry(maxSize, u32[H_CPUS]!, u32[H_MAX_CACHES]!);
  if (
    g.nrPages !== u32[H_NR_PAGES] ||
    g.zoneStart !== u32[H_ZONE_START] ||
    g.pcpuOff !== u32[H_PCPU_OFF] ||
    g.cacheOff !== u32[H_CACHE_OFF] ||
    g.cacheBytes !== u32[H_CACHE_BYTES] ||
    g.descOff !== u32[H_DESC_OFF]
  ) {
    bad("region offsets do not match the layout");
  }
  return g;
}
