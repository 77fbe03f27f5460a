/*
 * RCU across agents: read-side sections, grace periods, and kfreeRcu in page-sized blocks (the
 * queueing in kfree_rcu.ts, the figures and checks in rcu/check.ts).
 *
 * WORDS
 *   C_RCU_SNAP of a slot: its owner alone, Atomics.store. rcuReadLock at the outermost level copies
 *     G + 1 (G = R_GP_SEQ) into it on the slot's own line; rcuReadUnlock at the outermost level
 *     stores 0 there. Nesting is a plain word of the owner (C_RCU_NEST). reclaimSlot clears both
 *     for a dead slot (rcuReclaim) before any grace period is waited for.
 *   R_GP_SEQ (G) and R_GP_DONE: any agent, compareExchange only. A waiter for cookie c (the value
 *     of G when it began) makes sure G > c (compareExchange c -> c + 1: readers that start later
 *     copy at least c + 2), then polls every slot's C_RCU_SNAP: the period is over when none holds
 *     a value in 1..c + 1. Whoever sees cookie c complete raises R_GP_DONE to c + 1
 *     (compareExchange-max). Every one of these words wraps at 2^32: "later", "before" and "max"
 *     are the signed difference of two 32-bit values (gpAfter), never a plain comparison, and G
 *     skips -1 (gpNext) so that a snapshot is never 0. Cookies held by blocks and emergency arrays
 *     are compared the same way.
 *   R_INFLIGHT counts the objects an agent has taken off a slot and not yet freed (Atomics.add
 *     when taken, Atomics.sub when freed), for stats. The taker keeps its own share in its
 *     C_RCU_INFLIGHT (plain, owner only), which reclaimSlot takes back out of R_INFLIGHT for a slot
 *     that died holding objects. rcuBarrier waits for the sum of every slot's C_RCU_INFLIGHT
 *     (Atomics.load) to reach 0, not for R_INFLIGHT, which a kill between the two updates can
 *     leave off. A non-zero share of a handle of this agent means it is freeing a batch under the
 *     caller (onError, a handler): rcuBarrier then refuses with EDEADLK before anything.
 *   C_KRCP_LOCK of a slot (class rcu) protects that slot's kfreeRcu state: C_RCU_BLOCK, the wait
 *     chain C_RCU_WAIT..C_RCU_WAIT_TAIL, C_RCU_PENDING, C_RCU_BLOCKS, the emergency array, the
 *     spare block pages (C_RCU_SPARE, C_RCU_NR_SPARE) and the contents of the block pages on them.
 *   A kfreeRcu block page belongs to the slot in PD_OWNER while it is on no chain: the taker writes
 *     it (under the krcp lock) before a block leaves a wait chain or the current word, and so does
 *     whoever drops spares; a batch is freed from the top, RB_COUNT lowered before each free.
 *     reclaimSlot finds a dead slot's block pages on no slot's chain, current word or spare list
 *     (rcuBlocksInHand) and puts those with objects on the dead slot's wait chain (freed after
 *     their grace period) or frees them. Residual: the one object being freed when the agent was
 *     killed stays allocated.
 *
 * LOCKS: the krcp lock is first in the lock order (rcu, then ctable, sheaf, barn, list, pcp,
 *   zone). The owner takes it with trylock in kfreeRcu (safe from hooks: held by this agent it
 *   fails at once and takes the emergency path; held by another agent, whose sections are short
 *   and never wait, it spins read-only, bounded), and with lockIn(0, ...) when it frees its own
 *   expired blocks; rcuFlushSlot (rcuBarrier, detach, reclaimSlot) takes a slot's krcp lock with
 *   lock(). Objects are never freed with a krcp lock held: the expired blocks are unlinked under
 *   it and freed after, through kfree (the slab and page locks). With a krcp lock held only a
 *   block page may be taken: this slot's pcp list, under its trylock (seed 003).
 *   Block pages come from the slot's spare block pages (up to C_RCU_SPARE_MAX, refilled by the
 *   agent's timer with GFP.NOWAIT and kept from expired blocks), else from GFP.FAST_TRY |
 *   GFP.NOWAIT | nolock allocation. Only when both fail does an agent that may wait, and holds no
 *   lock, take a NOWAIT page from the zone, and failing that wait for a grace period. An agent
 *   that holds an allocator lock (a hook) never waits for a grace period: a reader that needs the
 *   lock could not end it. With no emergency slot left it gets EDEADLK, the object still live.
 *   synchronizeRcu and rcuBarrier assert that the caller holds no lock (assertCanLock(rcu)).
 *   reclaimSlot, like synchronizeRcu and rcuBarrier, refuses to run inside a read-side section,
 *   and so does every wait while any handle of this agent on the heap is inside one (agentHandles:
 *   a module-level registry, read only by those checks; rcuReadLock is unchanged).
 *
 * NO LOCK: readers (rcuReadLock, rcuReadUnlock: one Atomics.load and one Atomics.store at the
 *   outermost level, plain stores nested); grace periods (gpPoll, gpWait, synchronizeRcu,
 *   synchronizeRcuAsync: no agent has to call anything for another's grace period to end; idle,
 *   blocked and detached slots, snapshot 0, never hold one up); the free of an unlinked batch (the
 *   block pages are in the taker's hand). Errors that freeing a batch finds (the agent's timer,
 *   rcuBarrier, detach, reclaim) are deferred work's: reported through reportDeferred (slab_error
 *   event, onError), the batch goes on, and the timer never throws.
 * STALE: a waiter reads every C_RCU_SNAP as it is: a reader that enters after the waiter raised G
 *   copies at least c + 2 and cannot hold cookie c up, so a stale 0 or a newer snapshot is safe; a
 *   stale old one only makes the waiter poll again. barrierIfPending reads other slots'
 *   C_RCU_PENDING plain: a kfreeRcu racing with a destroy of its own cache is the caller's race.
 *   R_INFLIGHT is for stats only (figures exact while the heap is quiet).
 */
import { ErrorCode, HeapError } from "../core/errors.js";
import * as layout from "../core/layout.js";
import { type Mem, MemView } from "../core/mem.js";
import type { Locks } from "../core/lock.js";
import type { PageAllocator } from "../page/page_alloc.js";
import type { SlabAllocator } from "../slab/slab.js";
import { TP } from "../core/trace.js";
import { dropSpareBlocks, freeExpired, takeExpired } from "./kfree_rcu.js";
import { Expired } from "./kfree_rcu.js";
import { rcuBlocksInHand } from "./kfree_rcu.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { C_KRCP_LOCK, C_RCU_BLOCK, C_RCU_INFLIGHT, C_RCU_NEST, C_RCU_PENDING, C_RCU_SNAP, LOCK, R_GP_DONE, R_GP_SEQ, R_INFLIGHT } = layout;

/**
 * Grace-period counters wrap: R_GP_SEQ, R_GP_DONE, the snapshots and the cookies are 32-bit words
 * compared only through their signed difference (gpAfter), valid while two of them are less than
 * 2^31 periods apart. R_GP_SEQ skips -1 (gpNext), so that a snapshot G + 1 is never 0, the value
 * that means "outside any section".
 */
export function gpAfter(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}

/** The grace-period sequence value after `c` (never -1: see gpAfter). */
export function gpNext(c: number): number {
  const n = (c + 1) | 0;
  return n === -1 ? 0 : n;
}

/** How long queued kfreeRcu objects wait before the agent's timer looks at them (ms). */
export const RCU_DELAY_MS = 4;

export interface RcuStats {
  rcu: {
    /** Grace periods known complete (R_GP_DONE). */
    gracePeriods: number;
    /** Objects given to kfreeRcu and not yet freed, all slots (those being freed included). */
    waitingObjects: number;
    /** Block pages holding them. */
    blocks: number;
    /** Empty block pages the slots keep ready (at most 4 each). */
    spareBlocks: number;
    /** Objects on the slots' emergency arrays. */
    emergency: number;
    /** Slots inside a read-side section now. */
    readers: number;
  };
}

export class RcuAllocator extends MemView {
  readonly mem: Mem;
  readonly locks: Locks;
  readonly pages: PageAllocator;
  readonly slab: SlabAllocator;
  /** Non-zero once the handle is detached (the read side's only check; updateFastOff keeps it). */
  fastOff: number;
  /** This agent's pending-work timer (agent-local, like the kernel's kfree_rcu monitor work). */
  rcuTimer: ReturnType<typeof setTimeout> | null;
  /** A private cell to sleep on while polling a grace period. */
  private readonly sleepCell: Int32Array;

  constructor(mem: Mem, locks: Locks, pages: PageAllocator, slab: SlabAllocator) {
    super(mem);
    this.mem = mem;
    this.locks = locks;
    this.pages = pages;
    this.slab = slab;
    this.fastOff = 0;
    this.rcuTimer = null;
    this.sleepCell = new Int32Array(new SharedArrayBuffer(4));
  }

  /** Recompute fastOff (Locks.onChange, installed by the facade, calls it). */
  updateFastOff(): void {
    this.fastOff = this.locks.detached ? 1 : 0;
  }

  /* ================================================================= read side */

  /** Enter a read-side section (nestable). Objects reachable now stay valid until the matching unlock. */
  rcuReadLock(): void {
    if (this.fastOff !== 0) this.locks.assertLive();
    const i32 = this.i32;
    const w = this.pcpuW + C_RCU_NEST;
    const n = i32[w]!;
    if (n === 0) {
      // Publication point: after this store no grace period that began before it can end.
      Atomics.store(i32, this.pcpuW + C_RCU_SNAP, (Atomics.load(i32, this.hw + R_GP_SEQ) + 1) | 0);
    }
    i32[w] = n + 1;
  }

  rcuReadUnlock(): void {
    if (this.fastOff !== 0) this.locks.assertLive();
    const i32 = this.i32;
    const w = this.pcpuW + C_RCU_NEST;
    const n = i32[w]! - 1;
    if (n < 0) throw new HeapError(ErrorCode.EINVAL, "rcuReadUnlock without a matching rcuReadLock");
    i32[w] = n;
    // Publication point: every read of the section happens before this store.
    if (n === 0) Atomics.store(i32, this.pcpuW + C_RCU_SNAP, 0);
  }

  /** Is a handle of this agent on this heap (`self` too, unless false) inside a read-side section? */
  agentInReadSection(self = true): boolean {
    for (const h of this.locks.agentHandles()) {
      if ((self || h !== this.locks) && this.i32[h.pcpuW + C_RCU_NEST]! > 0) return true;
    }
    return false;
  }

  /** detach: EDEADLK, nothing changed, when it would wait for a grace period that another handle of this agent holds up. */
  assertDetachCanWait(): void {
    if (this.i32[this.pcpuW + C_RCU_PENDING] !== 0 && this.agentInReadSection(false)) {
      throw new HeapError(ErrorCode.EDEADLK, "detach would wait for a grace period while another handle of this agent is inside a read-side section");
    }
  }

  /** Is this agent inside a read-side section? */
  rcuReadLockHeld(): boolean {
    return !this.locks.detached && this.i32[this.pcpuW + C_RCU_NEST]! > 0;
  }

  /* ================================================================= grace periods */

  /** The cookie of a grace period that would cover everything unlinked so far. */
  gpCookie(): number {
    return Atomics.load(this.i32, this.hw + R_GP_SEQ);
  }

  /** Has a full grace period passed since cookie `c` was read? Never waits. */
  gpPoll(c: number): boolean {
    const i32 = this.i32;
    // Wrap-safe throughout: counters are compared by their signed difference (gpAfter).
    if (gpAfter(Atomics.load(i32, this.hw + R_GP_DONE), c)) return true;
    const next = gpNext(c);
    if (Atomics.load(i32, this.hw + R_GP_SEQ) === c) Atomics.compareExchange(i32, this.hw + R_GP_SEQ, c, next);
    // A reader that copied a snapshot up to c + 1 may have seen the world as of cookie c.
    const last = (c + 1) | 0;
    for (let cpu = 0; cpu < this.cpus; cpu++) {
      const snap = Atomics.load(i32, this.mem.pcpOf(cpu) + C_RCU_SNAP);
      if (snap !== 0 && !gpAfter(snap, last)) return false;
    }
    for (;;) {
      const done = Atomics.load(i32, this.hw + R_GP_DONE);
      if (gpAfter(done, c) || Atomics.compareExchange(i32, this.hw + R_GP_DONE, done, last) === done) break;
    }
    if ((this.locks.trace.mask & (1 << TP.rcu_grace_period)) !== 0) {
      this.locks.trace.emit(TP.rcu_grace_period, { event: "rcu_grace_period", cpu: this.cpu, gp: last >>> 0 });
    }
    return true;
  }

  /** Wait until every agent that was inside a read-side section when this was called has left it. */
  synchronizeRcu(): void {
    this.locks.assertLive();
    if (this.agentInReadSection()) {
      throw new HeapError(ErrorCode.EDEADLK, "synchronizeRcu inside a read-side section (of any handle of this agent) would wait for itself");
    }
    if (this.locks.noBlock()) {
      throw new HeapError(
        ErrorCode.EAGAIN,
        `cpu ${this.cpu} must not block (a browser main thread, or noBlock): synchronizeRcu could wait for as long as a reader stays in its section; use await heap.synchronizeRcuAsync()`,
      );
    }
    this.locks.assertCanLock(LOCK.rcu);
    this.gpWait(this.gpCookie());
  }

  /** Poll cookie `c` until its period is over: spin a little, then sleep (or keep spinning where the agent may not block). */
  gpWait(c: number): void {
    for (let round = 0; !this.gpPoll(c); round++) {
      if (round < 64 || this.locks.noBlock()) continue;
      Atomics.wait(this.sleepCell, 0, 0, round < 256 ? 0.05 : 1);
    }
  }

  /** synchronizeRcu for agents that must not block: resolves once a grace period has passed. */
  synchronizeRcuAsync(): Promise<void> {
    // A promise either way: a detached handle's is rejected with EDETACHED, never a synchronous throw.
    if (this.locks.detached) return Promise.reject(new HeapError(ErrorCode.EDETACHED, `this handle (cpu ${this.cpu}) was detached`));
    this.locks.assertLive();
    const c = this.gpCookie();
    return new Promise((resolve) => {
      const poll = (): void => {
        if (this.gpPoll(c)) resolve();
        else setTimeout(poll, 1);
      };
      poll();
    });
  }

  /* ================================================================= barrier (kfree_rcu.ts has the queueing) */

  /** Wait until every pending kfreeRcu of every agent has been freed. */
  rcuBarrier(): void {
    this.locks.assertLive();
    if (this.agentInReadSection()) throw new HeapError(ErrorCode.EDEADLK, "rcuBarrier inside a read-side section (of any handle of this agent) would wait for itself");
    // From a callback (onError, a handler) while this agent frees a kfreeRcu batch: its own share
    // of the objects in flight would never drop.
    for (const h of this.locks.agentHandles()) {
      if (this.i32[h.pcpuW + C_RCU_INFLIGHT] !== 0) {
        throw new HeapError(ErrorCode.EDEADLK, `rcuBarrier while this agent (cpu ${h.cpu}) is freeing a kfreeRcu batch (from onError, a trace handler or a hook) would wait for itself`);
      }
    }
    this.locks.assertCanLock(LOCK.rcu);
    for (let cpu = 0; cpu < this.cpus; cpu++) this.rcuFlushSlot(cpu);
    // Objects another agent took off a slot (its own timer, or its rcuBarrier) are freed by that
    // agent after their grace period: wait for it, as rcu_barrier waits for every callback.
    let since = -1;
    for (let round = 0; this.objectsInFlight() !== 0; round++) {
      if (round < 64) continue;
      if (this.locks.noBlock()) {
        if (since < 0) since = this.locks.clock();
        else if ((round & 255) === 0 && this.locks.spinExpired(since)) this.gpBusy(this.objectsInFlight());
        continue;
      }
      Atomics.wait(this.sleepCell, 0, 0, round < 256 ? 0.05 : 1);
    }
  }

  /**
   * The kfreeRcu objects taken off a slot and not yet freed, all agents: the sum of every slot's
   * own share (C_RCU_INFLIGHT), which is exact between any two statements, where R_INFLIGHT and a
   * share updated one after the other are not (a kill between them left R_INFLIGHT off for good,
   * and every later rcuBarrier and destroy waited for ever).
   */
  private objectsInFlight(): number {
    let n = 0;
    for (let cpu = 0; cpu < this.cpus; cpu++) n += Atomics.load(this.i32, this.mem.pcpOf(cpu) + C_RCU_INFLIGHT);
    return n;
  }

  /**
   * A cache's destroy() first waits for every pending kfreeRcu, as kmem_cache_destroy does
   * (kvfree_rcu_barrier): objects queued by kfreeRcu are not live, and must not keep the cache
   * alive. Installed as slab.beforeDestroy.
   */
  barrierIfPending(): void {
    let pending = false;
    for (let cpu = 0; cpu < this.cpus && !pending; cpu++) pending = this.i32[this.mem.pcpOf(cpu) + C_RCU_PENDING] !== 0;
    if (pending) this.rcuBarrier();
  }

  /** Take every pending kfreeRcu of slot `cpu`, wait for their grace period, free them here. */
  rcuFlushSlot(cpu: number): void {
    const p = this.mem.pcpOf(cpu);
    if (this.i32[p + C_RCU_PENDING] === 0 && this.i32[p + C_RCU_BLOCK] === 0) return;
    const out: Expired = { blocks: [], objects: [], count: 0, wait: false, cookie: 0 };
    // An agent that must not block takes only what has expired, and gives up on the rest (EAGAIN).
    const all = !this.locks.noBlock();
    this.locks.lock(p + C_KRCP_LOCK, LOCK.rcu);
    let left = 0;
    try {
      takeExpired(this, p, out, all);
      left = this.i32[p + C_RCU_PENDING]!;
    } finally {
      this.locks.unlock(p + C_KRCP_LOCK, LOCK.rcu);
    }
    if (out.wait) this.gpWait(out.cookie);
    freeExpired(this, out);
    if (!all && left !== 0) this.gpBusy(left);
  }

  /** A noBlock agent met kfreeRcu objects whose grace period is not over. */
  private gpBusy(left: number): never {
    throw new HeapError(
      ErrorCode.EAGAIN,
      `cpu ${this.cpu} must not block, and ${left} kfreeRcu object${left === 1 ? "" : "s"} still wait for a grace period: ` +
        "what had expired is freed; await heap.synchronizeRcuAsync() and call again",
    );
  }

  /* ================================================================= slot lifecycle hooks */

  /** A slot is being attached: it starts outside any read section. */
  rcuOnline(): void {
    this.i32[this.pcpuW + C_RCU_NEST] = 0;
    Atomics.store(this.i32, this.pcpuW + C_RCU_SNAP, 0);
  }

  /** This slot detaches: it leaves any section and frees its pending kfreeRcu objects. */
  rcuOffline(): void {
    this.i32[this.pcpuW + C_RCU_NEST] = 0;
    Atomics.store(this.i32, this.pcpuW + C_RCU_SNAP, 0);
    if (this.rcuTimer !== null) {
      clearTimeout(this.rcuTimer);
      this.rcuTimer = null;
    }
    this.rcuFlushSlot(this.cpu);
    dropSpareBlocks(this, this.pcpuW);
  }

  /**
   * Slot `cpu` died: it counts as outside any section; its pending objects are freed here. Objects
   * it had taken off a slot and not freed are lost to it: they stay allocated (leaked), and leave
   * R_INFLIGHT, so that rcuBarrier does not wait for them for ever.
   */
  rcuReclaim(cpu: number): number {
    const p = this.mem.pcpOf(cpu);
    this.i32[p + C_RCU_NEST] = 0;
    Atomics.store(this.i32, p + C_RCU_SNAP, 0);
    const inflight = this.i32[p + C_RCU_INFLIGHT]!;
    if (inflight !== 0) {
      this.i32[p + C_RCU_INFLIGHT] = 0;
      Atomics.sub(this.i32, this.hw + R_INFLIGHT, inflight);
    }
    const inHand = rcuBlocksInHand(this, cpu);
    this.rcuFlushSlot(cpu);
    dropSpareBlocks(this, p);
    return inHand;
  }

}
