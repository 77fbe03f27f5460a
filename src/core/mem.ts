/*
 * One agent's handle on the heap's memory: the buffer, the fixed-length typed views over it, and
 * the geometry (where each region's words start) of this handle's slot.
 * Every layer keeps the views and the geometry words it reads on its fast paths in fields of its
 * own (a property load less per access than reading them through this object), but only Mem
 * builds them: each layer registers with bind() when it is constructed, and refresh() installs
 * the new views in every registered layer at once. So growth seen by any layer (a lock
 * acquisition, a slow path's entry, a block from new pages) can never leave another layer of the
 * same handle with stale views. A function must not keep a view in a local across a call that
 * may take a lock and then use it for an address that call produced: it reads this.i32 again.
 * The views a user gets (heap.u8, ...) are separate objects over the same bytes (pubU8, ...),
 * rebuilt with the layers' ones: a property a user sets on them cannot reach the allocator.
 *
 * WORDS: none of the heap. It reads Z_SIZE (written by the page layer's hotplug under the zone
 *   lock, published last with Atomics.store) with Atomics.load to learn that the heap grew.
 * LOCKS: none. refresh() may run with any lock held and from any layer.
 * NO LOCK: everything here (refresh, the geometry, agentCanBlock's probe on a private buffer).
 * STALE: Z_SIZE, and so the views: other agents grow the heap at any time; until refresh() runs,
 *   this handle's views end at the old size, which is still correct for every address this
 *   handle has met (the lock and slow-path entries refresh before any address from a shared list
 *   or a caller beyond them is used).
 */
import * as layout from "./layout.js";
import type { Geometry } from "./layout.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { C_WORDS, PAGE_SHIFT, PD_WORDS, Z_SIZE } = layout;

/** What the heap uses of a shared WebAssembly.Memory (typed here: the project's lib has no WebAssembly). */
export interface WasmMemory {
  readonly buffer: ArrayBufferLike;
  grow(pages: number): number;
}

/** What attach or create resolved for this handle. */
export interface MmInit {
  readonly buffer: SharedArrayBuffer;
  /** The shared WebAssembly.Memory whose buffer this is, or null (growth and views go through it). */
  readonly memory: WasmMemory | null;
  /** Byte offset of the heap's first page (its header) in the buffer; page-aligned. */
  readonly base: number;
  readonly geometry: Geometry;
  /** The heap's size now (the geometry is laid out for its maximum). */
  readonly size: number;
  readonly cpu: number;
  readonly canBlock: boolean;
  readonly debug: number;
}

/**
 * Every word index of a heap is below MAX_HEAP_END / 4 < 2^29. `& WORD_MASK` leaves one unchanged
 * and tells V8 its range: a fast path masks an index it computed from fields and loaded words, and
 * the additions of layout offsets to it then need no overflow checks (3-4% of a kmalloc pair).
 */
export const WORD_MASK = 0x3fffffff;

/**
 * The views and geometry words a layer keeps in fields of its own (see the file comment): the
 * first six are rebuilt by Mem.refresh(), the rest never change. Each layer extends this and
 * nothing else; a layer never extends another layer.
 */
export class MemView {
  u8: Uint8Array;
  i32: Int32Array;
  u32: Uint32Array;
  f64: Float64Array;
  /** End of the heap in the buffer as this handle sees it. */
  size: number;
  /** Pages covered by the views. */
  nrPages: number;
  /** Word index of the heap's header page (offset / 4): page-0 layout words are relative to it. */
  readonly hw: number;
  /** Word index of page descriptor 0 (of byte 0 of the buffer). */
  readonly descW: number;
  /** Word index of cache descriptor 0, and words per descriptor. */
  readonly cacheW: number;
  readonly cacheWords: number;
  /** Word index of per-CPU block 0, and of this slot's. */
  readonly pcpuBaseW: number;
  readonly pcpuW: number;
  /** This handle's CPU slot, and its lock owner value (cpu + 1). */
  readonly cpu: number;
  readonly me: number;
  /** First page frame of the zone. */
  readonly zoneStart: number;
  /** Byte offset of the heap in its buffer: its header page; the bytes below belong to others. */
  readonly offset: number;
  readonly cpus: number;
  readonly maxCaches: number;

  /** Copy `mem`'s views and geometry; a Mem keeps them current from then on (Mem.track). */
  constructor(mem: MemView) {
    this.u8 = mem.u8;
    this.i32 = mem.i32;
    this.u32 = mem.u32;
    this.f64 = mem.f64;
    this.size = mem.size;
    this.nrPages = mem.nrPages;
    this.hw = mem.hw;
    this.descW = mem.descW;
    this.cacheW = mem.cacheW;
    this.cacheWords = mem.cacheWords;
    this.pcpuBaseW = mem.pcpuBaseW;
    this.pcpuW = mem.pcpuW;
    this.cpu = mem.cpu;
    this.me = mem.me;
    this.zoneStart = mem.zoneStart;
    this.offset = mem.offset;
    this.cpus = mem.cpus;
    this.maxCaches = mem.maxCaches;
    if (mem instanceof Mem) mem.track(this);
  }
}

/** The views and geometry of a new handle (what Mem starts from). */
function firstView(init: MmInit): MemView {
  const g = init.geometry;
  const base = init.base;
  const basePfn = base >>> PAGE_SHIFT;
  const pcpuBaseW = (base + g.pcpuOff) >>> 2;
  // Every word index and page frame number is absolute (from byte 0 of the buffer), so addresses
  // are offsets into the buffer; descriptor 0 is the header page's.
  return {
    u8: new Uint8Array(init.buffer, 0, init.size),
    i32: new Int32Array(init.buffer, 0, init.size >>> 2),
    u32: new Uint32Array(init.buffer, 0, init.size >>> 2),
    f64: new Float64Array(init.buffer, 0, init.size >>> 3),
    size: init.size,
    nrPages: init.size >>> PAGE_SHIFT,
    hw: base >>> 2,
    descW: ((base + g.descOff) >>> 2) - basePfn * PD_WORDS,
    cacheW: (base + g.cacheOff) >>> 2,
    cacheWords: g.cacheBytes >>> 2,
    pcpuBaseW,
    pcpuW: pcpuBaseW + init.cpu * C_WORDS,
    cpu: init.cpu,
    me: init.cpu + 1,
    zoneStart: basePfn + g.zoneStart,
    offset: base,
    cpus: g.cpus,
    maxCaches: g.maxCaches,
  };
}

/** The views, the geometry and the buffer of one handle: the one object that builds views. */
export class Mem extends MemView {
  /** The heap's buffer (for a heap on WebAssembly memory, memory.buffer as of the last growth this handle saw). */
  buffer: SharedArrayBuffer;
  /** The WebAssembly.Memory the heap lives in, or null. */
  readonly memory: WasmMemory | null;
  /** The size the heap may grow to (an end in the buffer). */
  readonly maxSize: number;
  /** The layers of this handle that keep views: refresh() rebuilds theirs. */
  private readonly users: MemView[];
  /**
   * The views the facade hands to users (heap.u8, ...): other objects over the same bytes, rebuilt
   * with the layers' ones, so that what a user sets on them (an own `fill`, `copyWithin`, ...)
   * never changes what the allocator calls.
   */
  pubU8: Uint8Array;
  pubI32: Int32Array;
  pubU32: Uint32Array;
  pubF64: Float64Array;

  constructor(init: MmInit) {
    super(firstView(init));
    this.buffer = init.buffer;
    this.memory = init.memory;
    this.maxSize = init.base + init.geometry.size;
    // No prototype: storing a layer here calls nothing a user could have patched (Array.prototype.push, an index setter).
    this.users = Object.setPrototypeOf([], null) as MemView[];
    this.pubU8 = new Uint8Array(this.buffer, 0, this.size);
    this.pubI32 = new Int32Array(this.buffer, 0, this.size >>> 2);
    this.pubU32 = new Uint32Array(this.buffer, 0, this.size >>> 2);
    this.pubF64 = new Float64Array(this.buffer, 0, this.size >>> 3);
  }

  /** Keep `layer`'s views current on growth (MemView's constructor calls it for a layer made from this). */
  track(layer: MemView): void {
    const users = this.users;
    users[users.length] = layer;
  }

  /**
   * The heap grew since the views were built: rebuild them (fixed-length views are about 15 times
   * faster than length-tracking ones) in this object and every bound layer. Returns whether they
   * changed.
   */
  refresh(): boolean {
    const size = Atomics.load(this.u32, this.hw + Z_SIZE);
    if (size <= this.size) return false;
    // WebAssembly memory: memory.grow gave every agent a new, longer buffer object.
    if (this.memory !== null && this.buffer.byteLength < size) this.buffer = this.memory.buffer as unknown as SharedArrayBuffer;
    if (this.buffer.byteLength < size) return false;
    this.u8 = new Uint8Array(this.buffer, 0, size);
    this.i32 = new Int32Array(this.buffer, 0, size >>> 2);
    this.u32 = new Uint32Array(this.buffer, 0, size >>> 2);
    this.f64 = new Float64Array(this.buffer, 0, size >>> 3);
    this.pubU8 = new Uint8Array(this.buffer, 0, size);
    this.pubI32 = new Int32Array(this.buffer, 0, size >>> 2);
    this.pubU32 = new Uint32Array(this.buffer, 0, size >>> 2);
    this.pubF64 = new Float64Array(this.buffer, 0, size >>> 3);
    this.size = size;
    this.nrPages = size >>> PAGE_SHIFT;
    const users = this.users;
    for (let i = 0; i < users.length; i++) {
      const l = users[i]!;
      l.u8 = this.u8;
      l.i32 = this.i32;
      l.u32 = this.u32;
      l.f64 = this.f64;
      l.size = size;
      l.nrPages = this.nrPages;
    }
    return true;
  }

  /** Word index of page frame `pfn`'s descriptor. */
  pd(pfn: number): number {
    return this.descW + pfn * PD_WORDS;
  }

  /** Word index of slot `cpu`'s per-CPU block. */
  pcpOf(cpu: number): number {
    return this.pcpuBaseW + cpu * C_WORDS;
  }

  /** Word index of cache `id`'s descriptor. */
  cacheWOf(id: number): number {
    return this.cacheW + id * this.cacheWords;
  }
}

/** Does this agent allow Atomics.wait? (A browser's main thread throws.) */
export function agentCanBlock(): boolean {
  try {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 1, 0);
    return true;
  } catch {
    return false;
  }
}
