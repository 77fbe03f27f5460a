/*
 * The public Heap: creation, attach and detach of CPU slots, stats, validate, shrink, reclaim.
 *
 * LOCKING CONTRACT
 *
 *   C_STATE of a slot is claimed by compareExchange(SLOT_FREE -> SLOT_ATTACHED) in attach, and set
 *     back to SLOT_FREE with Atomics.store by detach (its own slot) or reclaimSlot (a dead slot's,
 *     via SLOT_RECLAIMING, claimed by compareExchange so two reclaimers cannot both run).
 *   The header is written once by create before the handle is returned; H_CHECKSUM is written
 *     last and is what attach trusts.
 *   detach and reclaimSlot take the same locks as the paths they drain (sheaf -> barn -> list ->
 *     pcp -> zone) and assert first that the caller holds none of them. While detach empties the
 *     slot (`closing`), a hook's nolock allocations fail and its nolock frees go to the deferred
 *     list, which detach drains again until the slot holds nothing.
 *   reclaimSlot refuses (EDEADLK, before anything changes) while any handle of this agent is
 *     inside a read-side section: the dead slot's kfreeRcu objects wait for a grace period.
 *   shrink() also flushes this slot's sheaves of dying caches, so a cache another agent destroyed
 *     is released once no slot caches its objects.
 *   stats() takes no lock: it reads counters that other agents may be changing, so its figures are
 *     exact only while the heap is quiet. validate() takes every pcp lock and the zone lock; the
 *     sheaves of other slots it reads as they are (exact while those agents are idle).
 */
import { ErrorCode, HeapError } from "./errors.js";
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
  C_RCU_PENDING,
  C_STATE,
  C_VMSTAT,
  CACHE_ACTIVE,
  CACHE_DYING,
  CACHE_HDR_LINES,
  CPUF_NOBLOCK,
  computeGeometry,
  CT_LOCK,
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
  LINE_WORDS,
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
  VM,
  type VmItem,
  Z_LOCK,
  Z_SIZE,
} from "./layout.js";
import { agentCanBlock, C_FAIL_STATE, C_HELD_MASK, LOCK_OWNER_MASK, type MmInit } from "./mm.js";
import type { PageStats } from "./page_alloc.js";
import { FIRST_NAMED_ID, KMALLOC_FIRST_ID, KMALLOC_SIZES, SHEAF_CACHE_ID, type SlabStats } from "./slab.js";
import { RcuAllocator, type RcuStats } from "./rcu.js";

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
}

export interface AttachOptions {
  /** This agent must never block (see HeapOptions.noBlock). */
  noBlock?: boolean;
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

export class Heap extends RcuAllocator {
  private constructor(init: MmInit) {
    super(init);
  }

  /** Make a new heap in a new SharedArrayBuffer; the calling agent is attached as slot 0. */
  static create(options: HeapOptions = {}): Heap {
    if (options === null || typeof options !== "object") throw new HeapError(ErrorCode.EINVAL, "options must be an object");
    const size = pagesUp(intOption("size", options.size, DEFAULT_SIZE, PAGE_SIZE, MAX_HEAP_SIZE));
    const maxSize = pagesUp(intOption("maxSize", options.maxSize, size, size, MAX_HEAP_SIZE));
    const cpus = intOption("cpus", options.cpus, DEFAULT_CPUS, 1, MAX_CPUS);
    const maxCaches = intOption("maxCaches", options.maxCaches, DEFAULT_MAX_CACHES, FIRST_NAMED_ID + 1, 4096);
    const debug = debugFlags(options.debug);
    const fault = options.faultInjection;
    let failRate = 0;
    let failSeed = 0x12345678;
    if (fault !== undefined) {
      if (typeof fault !== "object" || fault === null || typeof fault.rate !== "number" || !(fault.rate >= 0 && fault.rate <= 1)) {
        throw new HeapError(ErrorCode.EINVAL, "faultInjection.rate must be a number in 0..1");
      }
      failRate = Math.round(fault.rate * 65536);
      failSeed = intOption("faultInjection.seed", fault.seed, failSeed, 0, 0xffffffff) >>> 0 || 1;
    }
    const g = computeGeometry(maxSize, cpus, maxCaches);
    if (g.zoneStart + 32 > size >>> PAGE_SHIFT) {
      throw new HeapError(ErrorCode.EINVAL, `size ${size} leaves fewer than 32 pages after the metadata of ${cpus} cpus and maxSize ${maxSize}; use a larger size, fewer cpus or a smaller maxSize`);
    }
    const buffer =
      maxSize > size
        ? new (SharedArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => SharedArrayBuffer)(size, { maxByteLength: maxSize })
        : new SharedArrayBuffer(size);
    const u32 = new Uint32Array(buffer, 0, PAGE_SIZE >> 2);
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
    const heap = new Heap({ buffer, geometry: g, size, cpu: 0, canBlock: options.noBlock !== true && agentCanBlock(), debug });
    heap.initZone();
    const enc = new TextEncoder();
    heap.setupCache(SHEAF_CACHE_ID, enc.encode("kmem_cache_sheaf"), SHEAF_BYTES, 64, KF_SHEAF_CACHE);
    KMALLOC_SIZES.forEach((s, i) => {
      const name = s >= 1024 ? `kmalloc-${s >> 10}k` : `kmalloc-${s}`;
      heap.setupCache(KMALLOC_FIRST_ID + i, enc.encode(name), s, s === 96 || s === 192 ? 32 : Math.min(s, 8), KF_KMALLOC);
    });
    heap.claimSlot(0, options.noBlock === true);
    u32[H_FAIL_RATE] = failRate;
    // Publication point: attach trusts the header once the checksum matches.
    Atomics.store(u32, H_CHECKSUM, headerChecksum(u32));
    return heap;
  }

  /** Attach this agent to a heap another agent created; claims a free CPU slot. */
  static attach(buffer: SharedArrayBuffer, options: AttachOptions = {}): Heap {
    const g = readGeometry(buffer);
    const header = new Uint32Array(buffer, 0, PAGE_SIZE >> 2);
    const debug = header[H_DEBUG]!;
    const size = Atomics.load(header, Z_SIZE);
    const noBlock = options.noBlock === true;
    const i32 = new Int32Array(buffer, 0, size >> 2);
    for (let cpu = 0; cpu < g.cpus; cpu++) {
      const w = (g.pcpuOff >> 2) + cpu * PCPU_WORDS + C_STATE;
      if (Atomics.load(i32, w) === SLOT_FREE && Atomics.compareExchange(i32, w, SLOT_FREE, SLOT_ATTACHED) === SLOT_FREE) {
        const heap = new Heap({ buffer, geometry: g, size, cpu, canBlock: !noBlock && agentCanBlock(), debug });
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
    i32[c + C_GEN] = i32[c + C_GEN]! + 1;
    this.u32[c + C_FAIL_STATE] = (this.u32[H_FAIL_SEED]! ^ Math.imul(cpu + 1, 0x9e3779b9)) >>> 0 || 1;
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
        this.drainDeferredObjects(this.cpu, true);
        this.flushAllSheavesOf(this.cpu);
        if (this.i32[G_NR_DYING] !== 0) this.flushDyingCaches();
        // Last: everything above may free pages into this slot's pcp lists.
        this.pcpDetach();
        const p = this.pcpuW;
        if (this.i32[p + C_DEFER_HEAD] === 0 && this.i32[p + C_RCU_PENDING] === 0 && this.i32[p + C_RCU_NR_SPARE] === 0) break;
      }
    } catch (e) {
      this.closing = false;
      this.updateFastOff();
      throw e;
    }
    this.hook = null;
    this.trace.clear();
    Atomics.store(this.i32, this.pcpuW + C_STATE, SLOT_FREE);
    this.detached = true;
    this.updateFastOff();
  }

  /** Is this handle still attached? */
  get attached(): boolean {
    return !this.detached;
  }

  /**
   * For the host, after a worker exited without detaching: return slot `cpu`'s cached pages,
   * objects, deferred frees and pending kfreeRcu objects to the heap and free the slot. If the
   * worker died holding an allocator lock, throws EOWNERDEAD naming it and changes nothing.
   */
  reclaimSlot(cpu: number): void {
    this.assertLive();
    if (cpu >>> 0 !== cpu || cpu >= this.cpus) throw new HeapError(ErrorCode.EINVAL, `cpu ${String(cpu)} is not a slot of this heap`);
    if (cpu === this.cpu) throw new HeapError(ErrorCode.EINVAL, `cpu ${cpu} is this handle's own slot: use detach()`);
    if (this.agentInReadSection()) throw new HeapError(ErrorCode.EDEADLK, "reclaimSlot inside a read-side section (of any handle of this agent) would wait for itself: the dead slot's kfreeRcu objects wait for a grace period");
    this.assertCanLock(LOCK.rcu);
    const c = this.pcpOf(cpu);
    const state = Atomics.load(this.i32, c + C_STATE);
    if (state === SLOT_DEAD) throw new HeapError(ErrorCode.EOWNERDEAD, `cpu ${cpu} died holding allocator locks`);
    if (state !== SLOT_ATTACHED) throw new HeapError(ErrorCode.EINVAL, `cpu ${cpu} is not attached`);
    const held = this.locksHeldBy(cpu);
    if (held.length > 0) {
      // Mark the slot dead: an agent spinning or waiting on one of its locks gets EOWNERDEAD.
      Atomics.compareExchange(this.i32, c + C_STATE, SLOT_ATTACHED, SLOT_DEAD);
      throw new HeapError(ErrorCode.EOWNERDEAD, `cpu ${cpu} died holding ${held.join(", ")}; what those locks guard cannot be repaired safely`);
    }
    if (Atomics.compareExchange(this.i32, c + C_STATE, SLOT_ATTACHED, SLOT_RECLAIMING) !== SLOT_ATTACHED) {
      throw new HeapError(ErrorCode.EINVAL, `cpu ${cpu} is being reclaimed or detached by another agent`);
    }
    this.rcuReclaim(cpu);
    this.drainDeferredObjects(cpu);
    this.flushAllSheavesOf(cpu);
    if (this.pcpSteal(cpu)) {
      const count = this.u32[c + C_PCP_COUNT]!;
      if (count !== 0) this.pcpDrain(cpu, count);
      this.pcpUnlockRemote(cpu);
    }
    for (let k = 0; k <= LOCK_CLASSES; k++) this.i32[c + C_HELD + k] = 0;
    Atomics.store(this.i32, c + C_STATE, SLOT_FREE);
  }

  /** Names of the allocator locks slot `cpu` holds (for reclaimSlot). */
  private locksHeldBy(cpu: number): string[] {
    const owner = cpu + 1;
    const held: string[] = [];
    const i32 = this.i32;
    const mine = (w: number): boolean => (Atomics.load(i32, w) & LOCK_OWNER_MASK) === owner;
    if (mine(Z_LOCK)) held.push("the zone lock");
    if (mine(CT_LOCK)) held.push("the cache table lock");
    for (let s = 0; s < this.cpus; s++) {
      // Its own pcp word a slot keeps between calls: held only if it died inside a pcp section.
      if (mine(this.pcpOf(s) + C_PCP_LOCK) && (s !== cpu || i32[this.pcpOf(s) + C_PCP_BUSY] !== 0)) held.push(`the pcp lock of cpu ${s}`);
      if (mine(this.pcpOf(s) + C_KRCP_LOCK)) held.push(`the kfreeRcu lock of cpu ${s}`);
    }
    for (let id = 0; id < this.maxCaches; id++) {
      const kw = this.cacheWOf(id);
      const st = i32[kw + K_STATE];
      if (st !== CACHE_ACTIVE && st !== CACHE_DYING) continue;
      if (mine(kw + K_LIST_LOCK)) held.push(`the list lock of ${this.cacheName(id)}`);
      if (mine(kw + K_BARN_LOCK)) held.push(`the barn lock of ${this.cacheName(id)}`);
      if (i32[kw + (CACHE_HDR_LINES + cpu) * LINE_WORDS + P_LOCKED] !== 0) held.push(`its sheaves of ${this.cacheName(id)}`);
    }
    return held;
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
    if (this.i32[G_NR_DYING] !== 0) this.flushDyingCaches();
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
    this.assertCanLock(LOCK.pcp);
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
}

function pagesUp(n: number): number {
  return Math.ceil(n / PAGE_SIZE) * PAGE_SIZE;
}

function intOption(name: string, v: unknown, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw new HeapError(ErrorCode.EINVAL, `option ${name} must be a whole number in ${min}..${max}, not ${String(v)}`);
  }
  return v;
}

function debugFlags(d: HeapOptions["debug"]): number {
  if (d === undefined || d === false) return 0;
  if (d === true) return DEBUG_POISON | DEBUG_REDZONE | DEBUG_TRACK;
  if (typeof d !== "object" || d === null) throw new HeapError(ErrorCode.EINVAL, "debug must be a boolean or an object of checks");
  for (const k of Object.keys(d)) {
    if (k !== "poison" && k !== "redzone" && k !== "track") throw new HeapError(ErrorCode.EINVAL, `unknown debug check "${k}"`);
  }
  return (d.poison ? DEBUG_POISON : 0) | (d.redzone ? DEBUG_REDZONE : 0) | (d.track ? DEBUG_TRACK : 0);
}

/** Check a buffer's header and recompute its geometry; EBADHEAP when anything is off. */
function readGeometry(buffer: unknown): Geometry {
  const bad = (why: string): never => {
    throw new HeapError(ErrorCode.EBADHEAP, `not a shmalloc heap: ${why}`);
  };
  if (!(buffer instanceof SharedArrayBuffer)) bad("not a SharedArrayBuffer");
  const sab = buffer as SharedArrayBuffer;
  if (sab.byteLength < PAGE_SIZE) bad(`only ${sab.byteLength} bytes`);
  const u32 = new Uint32Array(sab, 0, 16);
  if (u32[H_MAGIC] !== HEAP_MAGIC) bad("no magic number");
  if (u32[H_VERSION] !== LAYOUT_VERSION) bad(`layout version ${u32[H_VERSION]}, this shmalloc reads version ${LAYOUT_VERSION}`);
  if (Atomics.load(u32, H_CHECKSUM) !== headerChecksum(u32)) bad("header checksum mismatch");
  const maxSize = u32[H_SIZE]!;
  const size = Atomics.load(new Uint32Array(sab, 0, PAGE_SIZE >> 2), Z_SIZE);
  if (sab.byteLength < size || size < PAGE_SIZE || size > maxSize) bad(`the buffer holds ${sab.byteLength} bytes, the heap ${size}: truncated`);
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
