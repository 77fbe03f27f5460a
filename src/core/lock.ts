/*
 * The locks of one agent's handle, and its slot's state: lock words, lock order, held-lock
 * accounting, the reentry hook, dead-owner and stray-store detection, deferred-error reporting.
 * This file implements the primitives; the layers above say what each lock guards.
 *
 * WORDS: the lock words themselves, whatever layer owns them (Z_LOCK, C_PCP_LOCK, K_LIST_LOCK,
 *   ...): 0 when free, else the owner's slot + 1 in bits 0..15 and LOCK_WAITERS set while some
 *   agent sleeps in Atomics.wait on it; written only with compareExchange and exchange (the biased
 *   pcp word's protocol is page/pcp.ts's). A local lock (a sheaf's PCS_LOCKED) is a plain word
 *   written only by its slot: it detects re-entry by this agent (from a hook) and nothing else.
 *   This slot's C_HELD..C_HELD_MASK, C_FAIL_STATE and C_VMSTAT counters: the owner only, plain.
 * LOCKS: the order is the LOCK class order in layout.ts: rcu, ctable, sheaf, barn, list, pcp, zone.
 *   While this agent can re-enter (it has a reentry hook or a trace handler), every lock it takes is
 *   counted per class in C_HELD (lockdep's held_locks); a normal call that would take a lock of
 *   class c while this agent holds any lock of class c or later throws EDEADLK before it changes
 *   anything (assertCanLock); so does one while another handle of this agent holds such a lock of a
 *   class other slots wait on (not sheaf or pcp). Nolock calls only trylock: any state will do. A
 *   lock held by this slot, or by another handle of this agent (a hook of one handle calling
 *   another), is never waited for: EDEADLK at once (agentHandles, the agent's handles on a heap).
 *   - lock(): compareExchange(0 -> owner); on failure spin read-only (test-and-test-and-set) for
 *     SPIN_LIMIT rounds, then, where the agent may block, set LOCK_WAITERS and Atomics.wait. An
 *     agent that must never block (noBlock: set, or detected because Atomics.wait throws) spins on
 *     for NOBLOCK_BOUND_MS at most (the clock is read only after the read-only spin) and gives up:
 *     lock() throws EAGAIN, lockIn() in normal mode returns false, so the caller degrades as a
 *     nolock call does. After giving up it gives up again at once (after the read-only spin) for
 *     NOBLOCK_BACKOFF_MS, so one call meeting several held locks stays bounded too. A lock whose
 *     owner reclaimSlot found dead (C_STATE_DEAD) throws EOWNERDEAD instead of waiting for ever.
 *   - trylock(): one read, then one compareExchange only if the word was 0. It fails on any held
 *     lock, also when this agent holds it and also with a single agent (seed 004).
 *   - unlock(): exchange(0); Atomics.notify only when LOCK_WAITERS was set.
 *   - takeOverLock() (reclaimSlot): compareExchange dead owner -> this slot, LOCK_WAITERS kept.
 *   Callers decide the mode first and then call either trylock or lock, never trylock-then-lock
 *   (seed 000). Hook points: after every acquire and before every release, while the lock is
 *   held, the reentry hook (setReentryHook) is called with the point's name, e.g. "zone:acquire";
 *   the lock points of the calls the hook itself makes do not call it again (an NMI does not
 *   nest). The hook and onError are called as plain functions (`this` undefined): no user code
 *   ever receives this object.
 *   While any of them runs, a call of this handle is in progress under it (callbacks.ts).
 * NO LOCK: the held-lock bookkeeping, vmInc and shouldFail (this slot's own words); the read-only
 *   spin; assertLive's reads of Z_SIZE and of this slot's C_GEN.
 * STALE: a waiter reads the lock word and the owner slot's C_STATE (Atomics.load) while they
 *   change, and checks the word it waits on (checkLockWord, at entry, at every wait slice and when
 *   a noBlock agent gives up): stray bits, an owner that is no slot, or an owner slot that is free
 *   (seen twice with the same word) mean a stray store overwrote it: ECORRUPT, never an endless
 *   wait. Views and growth: the views (u8, i32, u32, f64) are fixed-length and cover the heap as
 *   this handle last saw it. Another agent's grow() adds pages under the zone lock and publishes
 *   Z_SIZE last. Every page and object address this handle can meet comes either from its caller
 *   (checked against the views, which are rebuilt first when the address is beyond them) or from a
 *   shared list read under a lock; so the views are rebuilt (refreshViews) at the entry of every
 *   slow path (assertLive) and after every lock acquisition (lock, lockIn, trylock, pcpLockRemote,
 *   takeOverLock) when Z_SIZE moved. A function must not keep a view in a local across a call that
 *   takes a lock and then use it for an address that call produced: it reads this.i32 again.
 */
import { describe, einval } from "./check.js";
import { ErrorCode, HeapError, hex } from "./errors.js";
import * as layout from "./layout.js";
import { type Mem, MemView, type MmInit } from "./mem.js";
import { type TraceRecord, TraceState, TP, TRACE_EVENTS } from "./trace.js";
import { noop } from "./callbacks.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { C_FAIL_STATE, C_FLAGS, C_FLAG_NOBLOCK, C_GEN, C_HELD, C_HELD_MASK, C_STATE, C_STATE_DEAD, C_STATE_FREE, C_VMSTAT, H_FAIL_RATE, LOCK, LOCK_NAMES, VM, Z_SIZE } = layout;

export { agentCanBlock, type MmInit, type WasmMemory } from "./mem.js";

/** Owner field of a lock word: slot + 1. */
export const LOCK_OWNER_MASK = 0xffff;
/** Set while an agent waits in Atomics.wait for the lock. */
export const LOCK_WAITERS = 0x10000;
/** Read-only spins before an agent that may block goes to Atomics.wait. */
const SPIN_LIMIT = 2000;
/** Atomics.wait timeout (ms) after which a waiter checks that the owner is still attached. */
const WAIT_SLICE_MS = 50;
/** How long (ms) an agent that must not block spins on another agent's lock after its read-only spin. */
export const NOBLOCK_BOUND_MS = 0.1;
/** After giving up on a lock, a noBlock agent gives up at once (after the read-only spin) this long (ms). */
const NOBLOCK_BACKOFF_MS = 2;
/** Spins between two clock reads of a noBlock agent's bounded spin (a mask: 2^n - 1). */
const NOBLOCK_CLOCK_SPINS = 255;
/** Read-only spins of a noBlock agent that gave up less than NOBLOCK_BACKOFF_MS ago. */
const NOBLOCK_BACKOFF_SPINS = 64;

/** performance.now where it exists (every browser agent and Node 16+), else Date.now. */
const clockMs: () => number =
  typeof performance !== "undefined" && typeof performance.now === "function" ? () => performance.now() : () => Date.now();

export { C_FAIL_STATE, C_HELD_MASK } from "./layout.js";

const ACQUIRE_POINTS = LOCK_NAMES.map((n) => `${n}:acquire`);
const RELEASE_POINTS = LOCK_NAMES.map((n) => `${n}:release`);

export type ReentryHook = (point: string) => void;

/**
 * This agent's live handles on each heap (module state is per agent): a wait on something another
 * handle of the same agent holds (a lock, a read-side section) would wait for itself. Registered
 * at create/attach; read only on slow paths (a contended lock, a grace-period wait).
 */
const agentHandles = new WeakMap<object, Array<WeakRef<Locks>>>();

/** The key of a heap's entry in agentHandles: its WebAssembly.Memory (whose buffer object changes
 * when it grows) or its SharedArrayBuffer; handles on heaps at other offsets of it are told apart
 * by their offset. */
function handlesKey(h: Locks): object {
  return h.mem.memory ?? h.mem.buffer;
}
/** The lock classes other slots wait on: all but the per-slot sheaf and pcp locks. */
const SHARED_CLASSES = ~((1 << LOCK.sheaf) | (1 << LOCK.pcp));
/** The names of the lock classes in a C_HELD_MASK value, for an EDEADLK message. */
function heldNames(mask: number): string {
  return LOCK_NAMES.filter((_, c) => (mask & (1 << c)) !== 0).join(", ");
}

export class Locks extends MemView {
  /** This handle's memory: the views, rebuilt for every layer at once (refreshViews). */
  readonly mem: Mem;
  /**
   * Called whenever what the fast paths depend on changed (the reentry hook, the trace handlers,
   * detached, closing): the facade installs one that recomputes each layer's fast-path gate.
   */
  onChange: () => void;
  /** May this agent Atomics.wait? */
  readonly canBlock: boolean;
  /** DEBUG_* flags of the heap. */
  readonly debugFlags: number;
  /** Tracepoints of this agent. */
  readonly trace: TraceState;
  /**
   * What deferred work (kfreeRcu batches, deferred lists, the agent's timer) found wrong: it is
   * reported here, never thrown from a timer, and the rest of the work is done. The default logs
   * the first error of this handle with console.error. Setting anything but a function is EINVAL
   * (the handler is kept); null puts the default logger back.
   */
  get onError(): (err: HeapError) => void {
    return this.errorHandler;
  }
  set onError(fn: ((err: HeapError) => void) | null) {
    if (fn === null) fn = this.defaultErrorHandler();
    else if (typeof fn !== "function") einval(`onError must be a function (err: HeapError) => void, or null for the default logger; not ${describe(fn)}`);
    this.errorHandler = fn;
  }
  private errorHandler: (err: HeapError) => void;
  /** Non-zero while deferred work runs: its errors are reported by reportDeferred, once. */
  deferring: number;
  hook: ReentryHook | null;
  detached: boolean;
  /** True while detach() empties this slot: nolock allocations fail and nolock frees are deferred. */
  closing: boolean;
  /** The slot's C_GEN when this handle claimed it; reclaimSlot moves the word on (see assertLive). */
  gen: number;
  /** True while a hook or trace handler exists: only then can this agent re-enter (see acquired). */
  reentrant: boolean;
  /** True while the reentry hook runs: the lock points of the calls it makes do not call it again. */
  inHook: boolean;
  /** Non-zero while onError runs (reportDeferred); see callbacks.ts. */
  inOnError: number;
  /** clockMs() when this noBlock agent last gave up on a lock (see NOBLOCK_BACKOFF_MS). */
  private gaveUpAt: number;
  /** It gave up recently: its next contended lock spins NOBLOCK_BACKOFF_SPINS before it reads the clock. */
  private backingOff: boolean;
  /** A lock word checkLockWord found owned by a free slot, and its value: corrupt if seen again. */
  private suspectLock: number;
  private suspectValue: number;
  /** This agent's handles on this heap's buffer, this one included (agentHandles' shared list). */
  private siblings: Array<WeakRef<Locks>>;

  constructor(mem: Mem, init: MmInit) {
    super(mem);
    this.mem = mem;
    this.onChange = noop;
    this.canBlock = init.canBlock;
    this.debugFlags = init.debug;
    this.trace = new TraceState();
    this.trace.onError = () => this.vmInc(VM.hookErrors, 1);
    this.trace.onChange = () => this.onReentryChange();
    this.errorHandler = this.defaultErrorHandler();
    this.deferring = 0;
    this.hook = null;
    this.detached = false;
    this.closing = false;
    this.gen = 0;
    this.reentrant = false;
    this.inHook = false;
    this.inOnError = 0;
    this.gaveUpAt = -Infinity;
    this.backingOff = false;
    this.suspectLock = -1;
    this.suspectValue = 0;
    const key = handlesKey(this);
    // One list per heap buffer, pruned in place, so every handle's `siblings` is the same array.
    let list = agentHandles.get(key);
    if (list === undefined) agentHandles.set(key, (list = []));
    let n = 0;
    for (const r of list) {
      const h = r.deref();
      if (h !== undefined && !h.detached) list[n++] = r;
    }
    list.length = n;
    list.push(new WeakRef(this));
    this.siblings = list;
  }

  /** This agent's live handles on this heap, this one included. */
  agentHandles(): Locks[] {
    const out: Locks[] = [];
    for (const r of agentHandles.get(handlesKey(this)) ?? []) {
      const h = r.deref();
      if (h !== undefined && !h.detached && h.offset === this.offset) out.push(h);
    }
    return out;
  }

  /**
   * The heap grew since this handle built its views: rebuild them (fixed-length views are about 15
   * times faster than length-tracking ones). Returns whether the views changed. Calls that meet
   * new pages do this themselves; public for a reader of an address another agent got from pages
   * it added (heap.u8 and the others are new objects after it). EDETACHED on a detached handle.
   */
  refreshViews(): boolean {
    if (this.detached) throw new HeapError(ErrorCode.EDETACHED, `this handle (cpu ${this.cpu}) was detached`);
    return this.mem.refresh();
  }

  vmInc(item: number, n: number): void {
    this.u32[this.pcpuW + C_VMSTAT + item] = (this.u32[this.pcpuW + C_VMSTAT + item]! + n) >>> 0;
  }

  assertLive(): void {
    if (this.detached) throw new HeapError(ErrorCode.EDETACHED, `this handle (cpu ${this.cpu}) was detached`);
    // Entry of every slow path: pages another agent added are covered before anything is read.
    if (this.u32[this.hw + Z_SIZE] !== this.size) this.refreshViews();
    if (this.i32[this.pcpuW + C_GEN] !== this.gen) this.slotTaken();
  }

  /**
   * The slot's generation moved on: another agent reclaimed it (reclaimSlot, as if this agent had
   * died), and it may be attached again. This handle is detached from now on, so that it never
   * shares the slot with the new one: its fast paths stop (the reclaim emptied its sheaves and took
   * its pcp lock) and every slow path throws EDETACHED.
   */
  private slotTaken(): never {
    this.detached = true;
    this.hook = null;
    this.onReentryChange();
    throw new HeapError(ErrorCode.EDETACHED, `this handle's slot, cpu ${this.cpu}, was reclaimed by another agent (reclaimSlot): the handle is detached; attach again`);
  }

  /* ------------------------------------------------------------ held-lock bookkeeping */

  /** Throw EDEADLK unless this agent holds no lock of class `cls` or later (lock order). */
  assertCanLock(cls: number): void {
    const mask = this.i32[this.pcpuW + C_HELD_MASK]!;
    if (mask >>> cls !== 0) this.deadlock(cls, mask);
    const h = this.siblings.length > 1 ? this.siblingHolding(cls) : null;
    if (h === null) return;
    const held = heldNames(this.i32[h.pcpuW + C_HELD_MASK]! & SHARED_CLASSES);
    throw new HeapError(ErrorCode.EDEADLK, `cpu ${h.cpu}, another handle of this agent, holds a ${held} lock that this call (it would take a ${LOCK_NAMES[cls]} lock) may need: it would wait for itself; from its hook or trace handler use the nolock calls`);
  }

  /** This agent's other handle on this heap holding a shared lock of class `cls` or later (its
   * C_HELD_MASK, counted while it can re-enter: how a call of this one starts under it), or null. */
  private siblingHolding(cls: number): Locks | null {
    for (const r of this.siblings) {
      const h = r.deref();
      if (h === undefined || h === this || h.detached || h.offset !== this.offset) continue;
      if ((this.i32[h.pcpuW + C_HELD_MASK]! & SHARED_CLASSES) >>> cls !== 0) return h;
    }
    return null;
  }

  private deadlock(cls: number, mask: number): never {
    throw new HeapError(
      ErrorCode.EDEADLK,
      `cpu ${this.cpu} would take a ${LOCK_NAMES[cls]} lock while holding ${heldNames(mask)}: ` +
        "from a hook or trace handler use the nolock calls",
    );
  }

  /** Does this agent hold any lock of class `cls` or later (another handle of it: a shared one)? */
  holdsFrom(cls: number): boolean {
    return this.i32[this.pcpuW + C_HELD_MASK]! >>> cls !== 0 || (this.siblings.length > 1 && this.siblingHolding(cls) !== null);
  }

  /*
   * Held locks are counted only while this agent can re-enter the allocator, that is while it has a
   * reentry hook or a trace handler: without one no call can start while a lock is held, so there
   * is nothing for assertCanLock to catch. A release always uncounts what was counted.
   */
  acquired(cls: number): void {
    if (!this.reentrant) return;
    const w = this.pcpuW + C_HELD + cls;
    this.i32[w] = this.i32[w]! + 1;
    this.i32[this.pcpuW + C_HELD_MASK] = this.i32[this.pcpuW + C_HELD_MASK]! | (1 << cls);
    if (this.hook !== null) this.callHook(ACQUIRE_POINTS[cls]!);
  }

  releasing(cls: number): void {
    if (this.hook !== null) this.callHook(RELEASE_POINTS[cls]!);
    const w = this.pcpuW + C_HELD + cls;
    const n = this.i32[w]!;
    if (n === 0) return;
    this.i32[w] = n - 1;
    if (n === 1) this.i32[this.pcpuW + C_HELD_MASK] = this.i32[this.pcpuW + C_HELD_MASK]! & ~(1 << cls);
  }

  /** Recompute `reentrant` after the hook or the trace handlers changed. */
  onReentryChange(): void {
    this.reentrant = this.hook !== null || this.trace.mask !== 0;
    this.onChange();
  }

  /** Run the reentry hook; not again from inside it (an NMI does not nest either). */
  private callHook(point: string): void {
    if (this.inHook) return;
    this.inHook = true;
    try {
      // A plain call: the hook's `this` is undefined, never this internal object.
      const hook = this.hook!;
      hook(point);
    } catch {
      this.vmInc(VM.hookErrors, 1);
    } finally {
      this.inHook = false;
    }
  }

  /* ------------------------------------------------------------ spinlocks */

  /** Take the lock at word `w` (class `cls`) if it is free; never spins. */
  trylock(w: number, cls: number): boolean {
    const i32 = this.i32;
    if (Atomics.load(i32, w) !== 0 || Atomics.compareExchange(i32, w, 0, this.me) !== 0) return false;
    this.acquired(cls);
    if (this.u32[this.hw + Z_SIZE] !== this.size) this.refreshViews();
    return true;
  }

  /**
   * Take the lock at word `w`, spinning and then waiting (where allowed) while it is held. An agent
   * that must not block gives up past NOBLOCK_BOUND_MS with EAGAIN; the caller has changed nothing.
   */
  lock(w: number, cls: number): void {
    const v = Atomics.compareExchange(this.i32, w, 0, this.me);
    if (v !== 0 && !this.lockSlow(w, cls, v)) this.lockGaveUp(w, cls);
    this.acquired(cls);
    if (this.u32[this.hw + Z_SIZE] !== this.size) this.refreshViews();
  }

  /**
   * Take the lock in the mode the caller decided first (seed 000): a nolock caller (`mode` non-zero)
   * only tries, once, and may fail; a normal caller waits, except on an agent that must not block,
   * where it gives up past NOBLOCK_BOUND_MS and returns false like a failed trylock. Never
   * trylock-then-lock.
   */
  lockIn(mode: number, w: number, cls: number): boolean {
    if (mode !== 0) return this.trylock(w, cls);
    const v = Atomics.compareExchange(this.i32, w, 0, this.me);
    if (v !== 0 && !this.lockSlow(w, cls, v)) {
      this.vmInc(VM.lockGiveUp, 1);
      return false;
    }
    this.acquired(cls);
    if (this.u32[this.hw + Z_SIZE] !== this.size) this.refreshViews();
    return true;
  }

  unlock(w: number, cls: number): void {
    this.releasing(cls);
    const v = Atomics.exchange(this.i32, w, 0);
    if ((v & LOCK_WAITERS) !== 0) Atomics.notify(this.i32, w, 1);
  }

  /** Spin (and wait where allowed) for the lock; false when a noBlock agent passed its bound. */
  private lockSlow(w: number, cls: number, v: number): boolean {
    const i32 = this.i32;
    this.checkLockWord(w, cls, v, (v & LOCK_OWNER_MASK) - 1);
    if ((v & LOCK_OWNER_MASK) === this.me) {
      throw new HeapError(ErrorCode.EDEADLK, `cpu ${this.cpu} already holds this ${LOCK_NAMES[cls]} lock`);
    }
    // Held by another handle of this agent (a hook of one handle calling another): it cannot let
    // go while this agent waits.
    const mine = this.siblings;
    for (let k = 0; k < mine.length; k++) {
      const h = mine[k]!.deref();
      if (h !== undefined && h !== this && !h.detached && h.offset === this.offset && h.me === (v & LOCK_OWNER_MASK)) {
        throw new HeapError(ErrorCode.EDEADLK, `the ${LOCK_NAMES[cls]} lock is held by cpu ${h.cpu}, another handle of this agent: it would wait for itself`);
      }
    }
    if (cls === LOCK.zone) this.vmInc(VM.zoneContended, 1);
    if ((this.trace.mask & (1 << TP.contention_begin)) !== 0) this.emitLock(TP.contention_begin, cls);
    let waited = 0;
    let since = -1;
    for (let spins = 0; ; spins++) {
      v = Atomics.load(i32, w);
      if (v === 0) {
        if (Atomics.compareExchange(i32, w, 0, this.me | waited) === 0) break;
        continue;
      }
      if (!this.canBlock) {
        // Just after a give-up a short spin decides; the clock is read after it, then every
        // NOBLOCK_CLOCK_SPINS + 1 rounds.
        if (spins < (this.backingOff ? NOBLOCK_BACKOFF_SPINS : SPIN_LIMIT)) continue;
        if (since >= 0 && (spins & NOBLOCK_CLOCK_SPINS) !== 0) continue;
        const now = clockMs();
        if (since < 0) {
          since = now - this.gaveUpAt < NOBLOCK_BACKOFF_MS ? -Infinity : now;
          this.backingOff = since < 0;
        }
        if (now - since > NOBLOCK_BOUND_MS) {
          this.gaveUpAt = now;
          this.backingOff = true;
          this.checkOwnerAlive(w, cls);
          if ((this.trace.mask & (1 << TP.contention_end)) !== 0) this.emitLock(TP.contention_end, cls);
          return false;
        }
        continue;
      }
      if (spins < SPIN_LIMIT) continue;
      if ((v & LOCK_WAITERS) === 0) {
        if (Atomics.compareExchange(i32, w, v, v | LOCK_WAITERS) !== v) continue;
        v |= LOCK_WAITERS;
      }
      if (Atomics.wait(i32, w, v, WAIT_SLICE_MS) === "timed-out") this.checkOwnerAlive(w, cls);
      waited = LOCK_WAITERS;
    }
    if ((this.trace.mask & (1 << TP.contention_end)) !== 0) this.emitLock(TP.contention_end, cls);
    return true;
  }

  /** lock() on an agent that must not block found the lock held past the bound. */
  private lockGaveUp(w: number, cls: number): never {
    this.vmInc(VM.lockGiveUp, 1);
    const owner = (Atomics.load(this.i32, w) & LOCK_OWNER_MASK) - 1;
    throw new HeapError(
      ErrorCode.EAGAIN,
      `cpu ${this.cpu} must not block, and the ${LOCK_NAMES[cls]} lock was held${owner >= 0 ? ` by cpu ${owner}` : ""} for more than ` +
        `${NOBLOCK_BOUND_MS * 1000} µs: the call gave up and the heap is as it was; call again later (or from a worker)`,
    );
  }

  /**
   * For noBlock agents, outside lock(): has the bounded spin that began at `since` (a clockMs()
   * value, taken after a read-only spin) run past NOBLOCK_BOUND_MS? Records the give-up.
   */
  spinExpired(since: number): boolean {
    const now = clockMs();
    if (now - since <= NOBLOCK_BOUND_MS && now - this.gaveUpAt >= NOBLOCK_BACKOFF_MS) return false;
    this.gaveUpAt = now;
    this.backingOff = true;
    return true;
  }

  clock(): number {
    return clockMs();
  }

  /**
   * reclaimSlot: take over the lock at word `w` (class `cls`) if the dead slot `cpu` holds it,
   * keeping the waiters bit; true when this agent holds it now (release it with unlock()).
   */
  takeOverLock(w: number, cls: number, cpu: number): boolean {
    for (;;) {
      const v = Atomics.load(this.i32, w);
      if ((v & LOCK_OWNER_MASK) !== cpu + 1) return false;
      if (Atomics.compareExchange(this.i32, w, v, this.me | (v & LOCK_WAITERS)) === v) {
        this.acquired(cls);
        if (this.u32[this.hw + Z_SIZE] !== this.size) this.refreshViews();
        return true;
      }
    }
  }

  /**
   * Throw EOWNERDEAD if the lock at word `w` is held by a slot that reclaimSlot found dead. Only
   * C_STATE_DEAD counts: a slot that detached normally held no lock, and a free slot may already
   * belong to a new agent that holds the lock under the same owner value (the slot's number); a
   * dead slot is never attached again.
   */
  private checkOwnerAlive(w: number, cls: number): void {
    const v = Atomics.load(this.i32, w);
    const owner = (v & LOCK_OWNER_MASK) - 1;
    this.checkLockWord(w, cls, v, owner);
    if (owner < 0 || owner >= this.cpus) return;
    if (Atomics.load(this.i32, this.mem.pcpOf(owner) + C_STATE) === C_STATE_DEAD) {
      throw new HeapError(
        ErrorCode.EOWNERDEAD,
        `the ${LOCK_NAMES[cls]} lock is held by cpu ${owner}, which died holding it`,
      );
    }
  }

  /**
   * A waiter's sanity check of a held lock word `v` (owner slot `owner`): bits other than the
   * owner and LOCK_WAITERS, an owner that is no slot of this heap, or an owner slot that is free
   * (a detached agent holds no lock) seen twice in a row with the same word, are a stray store:
   * ECORRUPT instead of waiting for ever.
   */
  private checkLockWord(w: number, cls: number, v: number, owner: number): void {
    if ((v & ~LOCK_WAITERS) === 0) return; // released meanwhile
    let why = "";
    if ((v & ~(LOCK_OWNER_MASK | LOCK_WAITERS)) !== 0 || owner < 0 || owner >= this.cpus) {
      why = `names no slot of this heap (${this.cpus} slots)`;
    } else if (Atomics.load(this.i32, this.mem.pcpOf(owner) + C_STATE) === C_STATE_FREE && Atomics.load(this.i32, w) === v) {
      if (this.suspectLock === w && this.suspectValue === v) why = `is held by cpu ${owner}, which is not attached`;
      this.suspectLock = w;
      this.suspectValue = v;
    }
    if (why === "") return;
    this.suspectLock = -1;
    throw new HeapError(ErrorCode.ECORRUPT, `the ${LOCK_NAMES[cls]} lock word (${hex(v)}) ${why}: a stray store overwrote it`);
  }

  private emitLock(id: number, cls: number): void {
    const rec: TraceRecord = { event: TRACE_EVENTS[id]!, cpu: this.cpu, lock: LOCK_NAMES[cls]! };
    this.trace.emit(id, rec);
  }

  /* ------------------------------------------------------------ local locks */

  /** Take a slot-local lock word (a sheaf's PCS_LOCKED): a plain store, owner only. */
  localLock(w: number, cls: number): void {
    this.i32[w] = 1;
    this.acquired(cls);
  }

  localUnlock(w: number, cls: number): void {
    this.releasing(cls);
    this.i32[w] = 0;
  }

  /* ------------------------------------------------------------ deferred errors */

  /** onError's default: logs the first error it is given with console.error, then nothing. */
  private defaultErrorHandler(): (err: HeapError) => void {
    let logged = false;
    return (err: HeapError): void => {
      if (logged) return;
      logged = true;
      console.error(`shmalloc (cpu ${this.cpu}): deferred work found an error; later ones are not logged: ${err.message}`);
    };
  }

  /**
   * Deferred work found `e` about the object or block at `addr`: a slab_error trace event, then
   * onError (a handler that throws is counted in hookErrors). Never throws.
   */
  reportDeferred(e: unknown, addr: number): void {
    const err = e instanceof HeapError ? e : new HeapError(ErrorCode.ECORRUPT, `deferred work failed at ${addr}: ${String(e)}`);
    try {
      if ((this.trace.mask & (1 << TP.slab_error)) !== 0) {
        this.trace.emit(TP.slab_error, { event: "slab_error", cpu: this.cpu, addr, message: err.message });
      }
      // A plain call: the handler's `this` is undefined, never this internal object.
      const handler = this.errorHandler;
      this.inOnError++;
      try {
        handler(err);
      } finally {
        this.inOnError--;
      }
    } catch {
      this.vmInc(VM.hookErrors, 1);
    }
  }


  /* ------------------------------------------------------------ misc shared helpers */

  /** Is this slot's agent marked as one that never blocks? */
  noBlock(): boolean {
    return !this.canBlock || (this.i32[this.pcpuW + C_FLAGS]! & C_FLAG_NOBLOCK) !== 0;
  }

  /** Fault injection: should this allocation fail on purpose? (fail_page_alloc / failslab) */
  shouldFail(): boolean {
    const rate = this.u32[this.hw + H_FAIL_RATE]!;
    if (rate === 0) return false;
    const w = this.pcpuW + C_FAIL_STATE;
    let x = this.u32[w]! | 0 || 0x2545f491;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.u32[w] = x >>> 0;
    if ((x >>> 16) >= rate) return false;
    this.vmInc(VM.failInjected, 1);
    return true;
  }

  /** Set the reentry hook (a testing aid, seed 001): `fn(point)` runs at every lock point. */
  setReentryHook(fn: ReentryHook | null): void {
    this.assertLive();
    if (fn !== null && typeof fn !== "function") einval(`the reentry hook must be a function or null, not ${describe(fn)}`);
    this.hook = fn;
    this.onReentryChange();
  }
}
