/*
 * RCU across agents: read-side sections, grace periods, and kfreeRcu in page-sized blocks.
 *
 * LOCKING CONTRACT
 *
 *   Readers take no lock. rcuReadLock at the outermost level copies G + 1 (G = R_GP_SEQ) into the
 *     slot's C_RCU_SNAP with one Atomics.store on the slot's own line; rcuReadUnlock at the
 *     outermost level stores 0 there. Nesting is a plain word of the owner (C_RCU_NEST).
 *   Grace periods take no lock either. A waiter for cookie c (the value of G when it began) makes
 *     sure G > c (compareExchange c -> c + 1: readers that start later copy at least c + 2), then
 *     polls every slot's C_RCU_SNAP: the period is over when none holds a value in 1..c + 1. No
 *     agent has to call anything for another's grace period to end; idle, blocked and detached
 *     slots (snapshot 0) never hold one up. Whoever sees cookie c complete raises R_GP_DONE to
 *     c + 1 (compareExchange-max).
 *   Every one of these words wraps at 2^32: "later", "before" and "max" above are the signed
 *     difference of two 32-bit values (gpAfter), never a plain comparison, and G skips -1
 *     (gpNext) so that a snapshot is never 0. Cookies held by blocks and emergency arrays are
 *     compared the same way.
 *   Errors that freeing a batch finds (the agent's timer, rcuBarrier, detach, reclaim) are deferred
 *     work's: reported through reportDeferred (slab_error event, onError), the batch goes on, and
 *     the timer never throws.
 *   rcuBarrier waits for the sum of every slot's C_RCU_INFLIGHT (below) to reach 0, not for
 *     R_INFLIGHT, which a kill between the two updates can leave off; R_INFLIGHT is kept for stats.
 *   R_INFLIGHT counts the objects an agent has taken off a slot and not yet freed (Atomics.add
 *     when taken, Atomics.sub when freed); rcuBarrier waits for it to reach 0. The taker keeps its
 *     own share in its C_RCU_INFLIGHT (plain, owner only), which reclaimSlot takes back out of
 *     R_INFLIGHT for a slot that died holding objects.
 *   A kfreeRcu block page belongs to the slot in D_OWNER while it is on no chain: the taker writes
 *     it (under the krcp lock) before a block leaves a wait chain or the current word, and so does
 *     whoever drops spares; a batch is freed from the top, RB_COUNT lowered before each free.
 *     reclaimSlot finds a dead slot's block pages on no slot's chain, current word or spare list
 *     (rcuBlocksInHand) and puts those with objects on the dead slot's wait chain (freed after
 *     their grace period) or frees them. Residual: the one object being freed when the agent was
 *     killed stays allocated.
 *   C_KRCP_LOCK of a slot (class rcu, first in the lock order) protects that slot's kfreeRcu state:
 *     C_RCU_BLOCK, the wait chain C_RCU_WAIT..C_RCU_WAIT_TAIL, C_RCU_PENDING, C_RCU_BLOCKS, the
 *     emergency array, and the block pages' contents. The owner takes it with trylock in kfreeRcu
 *     (safe from hooks: held by this agent it fails at once and takes the emergency path; held by
 *     another agent, whose sections are short and never wait, it spins read-only, bounded), and
 *     with lock() when it frees expired blocks; rcuBarrier and reclaimSlot take other slots' krcp
 *     locks with lock(). Objects are never freed with a krcp lock held: the expired blocks are
 *     unlinked under it and freed after.
 *   Block pages come from the slot's spare block pages (C_RCU_SPARE, under the krcp lock; up to
 *     RCU_SPARE_MAX, refilled by the agent's timer with GFP.NOWAIT and kept from expired blocks),
 *     else from GFP.FAST_TRY | GFP.NOWAIT | nolock allocation (seed 003): this slot's pcp list
 *     only, under its trylock. Only when both fail does an agent that may wait, and holds no
 *     lock, take a NOWAIT page from the zone, and failing that wait for a grace period. An agent
 *     that holds an allocator lock (a hook) never waits for a grace period: a reader that needs the
 *     lock could not end it. With no emergency slot left it gets EDEADLK, the object still live.
 *     reclaimSlot, like synchronizeRcu and rcuBarrier, refuses to run inside a read-side section,
 *     and so does every wait while any handle of this agent on the heap is inside one (agentHandles:
 *     a module-level registry, read only by those checks; rcuReadLock is unchanged).
 */
import { ErrorCode, HeapError, hex } from "./errors.js";
import { GFP, GFP_TRYLOCK } from "./gfp.js";
import {
  C_KRCP_LOCK,
  C_RCU_BLOCK,
  C_RCU_BLOCKS,
  C_RCU_EMERG,
  C_RCU_EMERG_GP,
  C_RCU_EMERG_NR,
  C_RCU_NEST,
  C_RCU_PENDING,
  C_RCU_INFLIGHT,
  C_RCU_NR_SPARE,
  C_RCU_SNAP,
  C_RCU_SPARE,
  C_RCU_WAIT,
  C_RCU_WAIT_TAIL,
  C_GEN,
  C_STATE,
  CACHE_FREE,
  D_FLAGS,
  D_OWNER,
  FREE_TAG,
  H_CACHE_BYTES,
  H_CACHE_OFF,
  H_CPUS,
  H_MAX_CACHES,
  H_PCPU_OFF,
  K_GEN,
  K_META,
  K_STATE,
  PCPU_WORDS,
  SLOT_FREE,
  M_STATE,
  OBJ_ALLOC,
  OBJ_RCU,
  LOCK,
  PAGE_SHIFT,
  PAGE_SIZE,
  PG_RCU_BLOCK,
  R_GP_DONE,
  R_INFLIGHT,
  R_GP_SEQ,
  RB_ADDRS,
  RB_CAP,
  RB_COUNT,
  RB_GP,
  RB_NEXT,
  RCU_EMERG_MAX,
  RCU_SPARE_MAX,
  SLOT_ATTACHED,
  VM,
} from "./layout.js";
import { LOCK_OWNER_MASK } from "./mm.js";
import { SlabAllocator } from "./slab.js";
import { TP } from "./trace.js";

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



/** Read-only rounds kfreeRcu spins while another agent holds this slot's krcp lock. */
const KRCP_SPINS = 1 << 16;
/** The same for an agent that must not block (a few µs). */
const KRCP_NOBLOCK_SPINS = 1 << 10;

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

/** A list of objects to free once the krcp lock is dropped. */
interface Expired {
  blocks: number[];
  objects: number[];
  /** Objects taken, counted in R_INFLIGHT until they are freed. */
  count: number;
  /** takeExpired with `all`: whether anything was taken, and the newest cookie to wait for. */
  wait: boolean;
  cookie: number;
}

export class RcuAllocator extends SlabAllocator {
  /** This agent's pending-work timer (agent-local, like the kernel's kfree_rcu monitor work). */
  private rcuTimer: ReturnType<typeof setTimeout> | null;
  /** A private cell to sleep on while polling a grace period. */
  private readonly sleepCell: Int32Array;

  constructor(init: ConstructorParameters<typeof SlabAllocator>[0]) {
    super(init);
    this.rcuTimer = null;
    this.sleepCell = new Int32Array(new SharedArrayBuffer(4));
  }

  /* ================================================================= read side */

  /** Enter a read-side section (nestable). Objects reachable now stay valid until the matching unlock. */
  rcuReadLock(): void {
    if (this.detached) this.assertLive();
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
    if (this.detached) this.assertLive();
    const i32 = this.i32;
    const w = this.pcpuW + C_RCU_NEST;
    const n = i32[w]! - 1;
    if (n < 0) throw new HeapError(ErrorCode.EINVAL, "rcuReadUnlock without a matching rcuReadLock");
    i32[w] = n;
    // Publication point: every read of the section happens before this store.
    if (n === 0) Atomics.store(i32, this.pcpuW + C_RCU_SNAP, 0);
  }

  /** Is a handle of this agent on this heap (`self` too, unless false) inside a read-side section? */
  protected agentInReadSection(self = true): boolean {
    for (const h of this.agentHandles()) {
      if ((self || h !== this) && h instanceof RcuAllocator && h.rcuReadLockHeld()) return true;
    }
    return false;
  }

  /** detach: EDEADLK, nothing changed, when it would wait for a grace period that another handle of this agent holds up. */
  protected assertDetachCanWait(): void {
    if (this.i32[this.pcpuW + C_RCU_PENDING] !== 0 && this.agentInReadSection(false)) {
      throw new HeapError(ErrorCode.EDEADLK, "detach would wait for a grace period while another handle of this agent is inside a read-side section");
    }
  }

  /** Is this agent inside a read-side section? */
  rcuReadLockHeld(): boolean {
    return !this.detached && this.i32[this.pcpuW + C_RCU_NEST]! > 0;
  }

  /* ================================================================= grace periods */

  /** The cookie of a grace period that would cover everything unlinked so far. */
  protected gpCookie(): number {
    return Atomics.load(this.i32, this.hw + R_GP_SEQ);
  }

  /** Has a full grace period passed since cookie `c` was read? Never waits. */
  protected gpPoll(c: number): boolean {
    const i32 = this.i32;
    // Wrap-safe throughout: counters are compared by their signed difference (gpAfter).
    if (gpAfter(Atomics.load(i32, this.hw + R_GP_DONE), c)) return true;
    const next = gpNext(c);
    if (Atomics.load(i32, this.hw + R_GP_SEQ) === c) Atomics.compareExchange(i32, this.hw + R_GP_SEQ, c, next);
    // A reader that copied a snapshot up to c + 1 may have seen the world as of cookie c.
    const last = (c + 1) | 0;
    for (let cpu = 0; cpu < this.cpus; cpu++) {
      const snap = Atomics.load(i32, this.pcpOf(cpu) + C_RCU_SNAP);
      if (snap !== 0 && !gpAfter(snap, last)) return false;
    }
    for (;;) {
      const done = Atomics.load(i32, this.hw + R_GP_DONE);
      if (gpAfter(done, c) || Atomics.compareExchange(i32, this.hw + R_GP_DONE, done, last) === done) break;
    }
    if ((this.trace.mask & (1 << TP.rcu_grace_period)) !== 0) {
      this.trace.emit(TP.rcu_grace_period, { event: "rcu_grace_period", cpu: this.cpu, gp: last >>> 0 });
    }
    return true;
  }

  /** Wait until every agent that was inside a read-side section when this was called has left it. */
  synchronizeRcu(): void {
    this.assertLive();
    if (this.agentInReadSection()) {
      throw new HeapError(ErrorCode.EDEADLK, "synchronizeRcu inside a read-side section (of any handle of this agent) would wait for itself");
    }
    if (this.noBlock()) {
      throw new HeapError(
        ErrorCode.EAGAIN,
        `cpu ${this.cpu} must not block (a browser main thread, or noBlock): synchronizeRcu could wait for as long as a reader stays in its section; use await heap.synchronizeRcuAsync()`,
      );
    }
    this.assertCanLock(LOCK.rcu);
    this.gpWait(this.gpCookie());
  }

  /** Poll cookie `c` until its period is over: spin a little, then sleep (or keep spinning where the agent may not block). */
  private gpWait(c: number): void {
    for (let round = 0; !this.gpPoll(c); round++) {
      if (round < 64 || this.noBlock()) continue;
      Atomics.wait(this.sleepCell, 0, 0, round < 256 ? 0.05 : 1);
    }
  }

  /** synchronizeRcu for agents that must not block: resolves once a grace period has passed. */
  synchronizeRcuAsync(): Promise<void> {
    this.assertLive();
    const c = this.gpCookie();
    return new Promise((resolve) => {
      const poll = (): void => {
        if (this.gpPoll(c)) resolve();
        else setTimeout(poll, 1);
      };
      poll();
    });
  }

  /* ================================================================= kfreeRcu */

  /**
   * Free `addr` (from kmalloc or a cache) after a grace period. Never waits where waiting is not
   * allowed; safe from hooks. 0 is a no-op, like kfree(0) and the kernel's kfree_rcu(NULL).
   */
  kfreeRcu(addr: number): void {
    this.assertLive();
    if (addr === 0) return;
    const id = this.objectCache(addr, -1);
    if (id >= 0 && this.i32[this.cacheWOf(id) + K_META] !== 0) {
      this.debugFree(id, addr, false);
    } else if (id >= 0 && this.i32[addr >> 2] === (addr ^ FREE_TAG)) {
      // Reuse kfree's full check: it throws EDOUBLEFREE for an object that really is free.
      this.checkBulk([addr], -1, false);
    }
    const c = this.gpCookie();
    if (this.tryQueue(addr, c)) {
      this.vmInc(VM.rcuQueued, 1);
      this.armRcuTimer();
      return;
    }
    this.kfreeRcuFallback(addr, c);
    this.vmInc(VM.rcuQueued, 1);
  }

  /**
   * Take this slot's krcp lock without waiting on it: when another agent holds it (rcuBarrier or
   * reclaimSlot, for a short section that never waits), spin read-only a bounded while and try
   * again; when this agent holds it (a hook re-entered) fail at once.
   */
  private krcpTrylock(w: number): boolean {
    if (this.trylock(w, LOCK.rcu)) return true;
    const spins = this.noBlock() ? KRCP_NOBLOCK_SPINS : KRCP_SPINS;
    for (let n = 0; n < spins; n++) {
      const v = Atomics.load(this.i32, w);
      if ((v & LOCK_OWNER_MASK) === this.me) return false;
      if (v === 0 && this.trylock(w, LOCK.rcu)) return true;
    }
    return false;
  }

  /** Queue `addr` (cookie `c`) in this slot's blocks if the krcp lock and a block can be had. */
  private tryQueue(addr: number, c: number): boolean {
    const krcp = this.pcpuW + C_KRCP_LOCK;
    if (!this.krcpTrylock(krcp)) return false;
    const queued = this.queueInBlock(addr, c);
    this.unlock(krcp, LOCK.rcu);
    return queued;
  }

  /** Add `addr` to this slot's current block, starting a new block if needed. krcp lock held. */
  private queueInBlock(addr: number, c: number): boolean {
    const i32 = this.i32;
    const p = this.pcpuW;
    let block = i32[p + C_RCU_BLOCK]!;
    if (block !== 0 && i32[(block >> 2) + RB_COUNT]! >= RB_CAP) {
      // Off the current word first: killed in between, the block is in hand (found by reclaimSlot), never in two places.
      i32[p + C_RCU_BLOCK] = 0;
      this.chainBlock(block);
      block = 0;
    }
    if (block === 0) {
      // A spare block page; else, seed 003: a page only from this slot's pcp list, never the
      // zone lock; may fail.
      block = i32[p + C_RCU_SPARE]!;
      if (block !== 0) {
        i32[p + C_RCU_SPARE] = i32[(block >> 2) + RB_NEXT]!;
        i32[p + C_RCU_NR_SPARE] = i32[p + C_RCU_NR_SPARE]! - 1;
      } else {
        const pfn = this.rmqueue(0, GFP.FAST_TRY | GFP.NOWAIT | GFP_TRYLOCK);
        if (pfn === 0) return false;
        block = pfn << PAGE_SHIFT;
        // A block page's count is valid before the page is one (reclaimSlot reads the blocks in hand).
        this.i32[(block >> 2) + RB_COUNT] = 0;
        this.u32[this.pd(pfn) + D_FLAGS] = PG_RCU_BLOCK;
        this.vmInc(VM.pgalloc, 1);
      }
      // this.i32: rmqueue may have rebuilt the views for a page added by growth.
      this.i32[(block >> 2) + RB_COUNT] = 0;
      this.i32[(block >> 2) + RB_NEXT] = 0;
      i32[p + C_RCU_BLOCK] = block;
      i32[p + C_RCU_BLOCKS] = i32[p + C_RCU_BLOCKS]! + 1;
    }
    return this.queueAt(block, addr, c);
  }

  /** Store `addr` (cookie `c`) in block `block`. krcp lock held. */
  private queueAt(block: number, addr: number, c: number): boolean {
    const i32 = this.i32;
    const p = this.pcpuW;
    const bw = block >> 2;
    const n = i32[bw + RB_COUNT]!;
    // The cookie first: an object is never counted in a block whose cookie is older than its own.
    i32[bw + RB_GP] = c;
    i32[bw + RB_ADDRS + n] = addr;
    if (this.debugFlags !== 0) this.debugSetState(addr, OBJ_RCU);
    i32[bw + RB_COUNT] = n + 1;
    i32[p + C_RCU_PENDING] = i32[p + C_RCU_PENDING]! + 1;
    return true;
  }

  /** Move a full block to the tail of the wait chain. krcp lock held. */
  private chainBlock(block: number): void {
    const i32 = this.i32;
    const p = this.pcpuW;
    i32[(block >> 2) + RB_NEXT] = 0;
    const tail = i32[p + C_RCU_WAIT_TAIL]!;
    if (tail === 0) i32[p + C_RCU_WAIT] = block;
    else i32[(tail >> 2) + RB_NEXT] = block;
    i32[p + C_RCU_WAIT_TAIL] = block;
  }

  /**
   * No block could be had. Where the agent may block and holds no lock: wait for a grace period and
   * free now (the kernel's fallback). Otherwise: the emergency array; when that is full too, poll
   * the grace period by spinning (never Atomics.wait) and free with the nolock paths.
   */
  private kfreeRcuFallback(addr: number, c: number): void {
    const mayWait = !this.noBlock() && !this.holdsFrom(LOCK.rcu) && !this.agentInReadSection();
    this.armRcuTimer(); // refills the spare block pages
    if (mayWait) {
      // No lock held and allowed to wait: a NOWAIT page from the zone beats a grace period.
      this.refillSpareBlocks();
      if (this.tryQueue(addr, c)) return;
      this.vmInc(VM.rcuSyncFallback, 1);
      this.gpWait(c);
      this.kfree(addr);
      this.vmInc(VM.rcuFreed, 1);
      return;
    }
    this.vmInc(VM.rcuEmergency, 1);
    const i32 = this.i32;
    const p = this.pcpuW;
    const krcp = p + C_KRCP_LOCK;
    if (this.krcpTrylock(krcp)) {
      const n = i32[p + C_RCU_EMERG_NR]!;
      if (n < RCU_EMERG_MAX) {
        i32[p + C_RCU_EMERG + n] = addr;
        i32[p + C_RCU_EMERG_NR] = n + 1;
        if (this.debugFlags !== 0) this.debugSetState(addr, OBJ_RCU);
        i32[p + C_RCU_EMERG_GP] = c;
        i32[p + C_RCU_PENDING] = i32[p + C_RCU_PENDING]! + 1;
        this.unlock(krcp, LOCK.rcu);
        this.armRcuTimer();
        return;
      }
      this.unlock(krcp, LOCK.rcu);
    }
    // Nothing left to queue into: spin until the period is over (this agent is not in a read
    // section it could be waiting for, unless it is, in which case it must not ask this).
    if (this.agentInReadSection()) {
      throw new HeapError(ErrorCode.EDEADLK, `kfreeRcu(${hex(addr)}) inside a read-side section found no room and would wait for itself`);
    }
    // Nor while this agent holds an allocator lock (a hook): a reader that needs that lock could
    // never end the period. The object stays allocated; the caller may free it later.
    if (this.holdsFrom(LOCK.rcu)) {
      throw new HeapError(ErrorCode.EDEADLK, `kfreeRcu(${hex(addr)}) from a hook holding an allocator lock found no room and would wait for a grace period with it held`);
    }
    let since = -1;
    for (let round = 0; !this.gpPoll(c); round++) {
      // An agent that must not block spins a bounded while, then gives the object back.
      if (this.noBlock() && (round & 255) === 255) {
        if (since < 0) since = this.clock();
        else if (this.spinExpired(since)) {
          throw new HeapError(
            ErrorCode.EAGAIN,
            `kfreeRcu(${hex(addr)}) on cpu ${this.cpu}, which must not block, found no block page and no room left, and the grace period did not end within its bound: ` +
              "the object is still yours; await heap.synchronizeRcuAsync() and kfree it, or call kfreeRcu again later",
          );
        }
      }
    }
    this.kfreeSlow(addr, -1, GFP_TRYLOCK);
    this.vmInc(VM.rcuFreed, 1);
  }

  private armRcuTimer(): void {
    if (this.rcuTimer !== null || typeof setTimeout !== "function") return;
    const t = setTimeout(() => {
      this.rcuTimer = null;
      if (this.detached) return;
      // The library's own timer never throws: what it finds goes to onError.
      try {
        if (this.holdsFrom(LOCK.rcu)) {
          this.armRcuTimer();
          return;
        }
        this.rcuProcessOwn(false);
        this.refillSpareBlocks();
        if (this.i32[this.pcpuW + C_RCU_PENDING] !== 0) this.armRcuTimer();
      } catch (e) {
        this.reportDeferred(e, 0);
      }
    }, RCU_DELAY_MS);
    const maybe = t as unknown as { unref?: () => void };
    if (typeof maybe.unref === "function") maybe.unref();
    this.rcuTimer = t;
  }

  /** Free this slot's expired blocks (all of them, waiting as needed, when `all`). No lock held. */
  protected rcuProcessOwn(all: boolean): void {
    const krcp = this.pcpuW + C_KRCP_LOCK;
    const out: Expired = { blocks: [], objects: [], count: 0, wait: false, cookie: 0 };
    // Only rcuBarrier or reclaimSlot of another agent holds it: a noBlock agent leaves the work for later.
    if (!this.lockIn(0, krcp, LOCK.rcu)) return;
    try {
      this.takeExpired(this.pcpuW, out, all);
    } finally {
      this.unlock(krcp, LOCK.rcu);
    }
    if (out.wait) this.gpWait(out.cookie);
    this.freeExpired(out);
  }

  /** Called by the slab slow paths when this slot has blocks waiting. */
  protected override rcuSlowWork(): void {
    if (this.holdsFrom(LOCK.rcu)) return;
    const w = this.i32[this.pcpuW + C_RCU_WAIT]!;
    if (w !== 0 && this.gpPoll(this.i32[(w >> 2) + RB_GP]!)) this.rcuProcessOwn(false);
  }

  /** Bring this slot's spare block pages up to RCU_SPARE_MAX with NOWAIT allocations. No lock held. */
  private refillSpareBlocks(): void {
    const i32 = this.i32;
    const p = this.pcpuW;
    while (i32[p + C_RCU_NR_SPARE]! < RCU_SPARE_MAX) {
      const pfn = this.rmqueue(0, GFP.NOWAIT);
      if (pfn === 0) return;
      this.i32[(pfn << (PAGE_SHIFT - 2)) + RB_COUNT] = 0;
      this.u32[this.pd(pfn) + D_FLAGS] = PG_RCU_BLOCK;
      this.vmInc(VM.pgalloc, 1);
      if (!this.pushSpare(pfn << PAGE_SHIFT)) {
        this.freeBlockPage(pfn << PAGE_SHIFT);
        return;
      }
    }
  }

  /** Keep a block page as a spare if there is room (krcp trylock); false if it was not kept. */
  private pushSpare(block: number): boolean {
    const i32 = this.i32;
    const p = this.pcpuW;
    if (!this.trylock(p + C_KRCP_LOCK, LOCK.rcu)) return false;
    const kept = i32[p + C_RCU_NR_SPARE]! < RCU_SPARE_MAX;
    if (kept) {
      this.u32[this.pd(block >>> PAGE_SHIFT) + D_OWNER] = this.cpu;
      i32[(block >> 2) + RB_NEXT] = i32[p + C_RCU_SPARE]!;
      i32[p + C_RCU_SPARE] = block;
      i32[p + C_RCU_NR_SPARE] = i32[p + C_RCU_NR_SPARE]! + 1;
    }
    this.unlock(p + C_KRCP_LOCK, LOCK.rcu);
    return kept;
  }

  private freeBlockPage(block: number): void {
    const pfn = block >>> PAGE_SHIFT;
    // freeBlock makes it a block in hand itself: no store here may leave the page belonging to nothing.
    this.vmInc(VM.pgfree, 1);
    this.freeBlock(pfn, 0, 0);
  }

  /** shrink(): this slot's spare block pages go back to the page allocator. */
  protected rcuShrink(): void {
    this.dropSpareBlocks(this.pcpuW);
  }

  /** Free slot `p`'s spare block pages (detach, reclaim). That slot's krcp lock is not held. */
  private dropSpareBlocks(p: number): void {
    this.lock(p + C_KRCP_LOCK, LOCK.rcu);
    let b = this.i32[p + C_RCU_SPARE]!;
    // Ours before they leave the list: a kill below leaves blocks in hand that our reclaim finds.
    for (let s = b, n = 0; s !== 0 && n < RCU_SPARE_MAX; s = this.i32[(s >> 2) + RB_NEXT]!, n++) {
      this.u32[this.pd(s >>> PAGE_SHIFT) + D_OWNER] = this.cpu;
      this.i32[(s >> 2) + RB_COUNT] = 0;
    }
    this.i32[p + C_RCU_SPARE] = 0;
    this.i32[p + C_RCU_NR_SPARE] = 0;
    this.unlock(p + C_KRCP_LOCK, LOCK.rcu);
    for (let n = 0; b !== 0; n++) {
      if (n >= RCU_SPARE_MAX) throw new HeapError(ErrorCode.ECORRUPT, `the spare block list at word ${p} holds more than ${RCU_SPARE_MAX} pages: it is broken`);
      const next = this.i32[(b >> 2) + RB_NEXT]!;
      this.freeBlockPage(b);
      b = next;
    }
  }

  /**
   * Unlink from slot block `p` the blocks and emergency entries whose period is over (all of them
   * when `all`; then out.wait is set and out.cookie is the newest cookie among them, which the
   * caller must wait for). That slot's krcp lock held.
   */
  private takeExpired(p: number, out: Expired, all: boolean): void {
    const i32 = this.i32;
    const take = (c: number): boolean => {
      if (all) {
        if (!out.wait || gpAfter(c, out.cookie)) out.cookie = c;
        out.wait = true;
        return true;
      }
      return this.gpPoll(c);
    };
    let pending = 0;
    const most = i32[p + C_RCU_BLOCKS]!;
    while (i32[p + C_RCU_WAIT] !== 0) {
      const b = i32[p + C_RCU_WAIT]!;
      // Bounded and checked: a cycle or a stray block is ECORRUPT, never an endless walk.
      if (out.blocks.length >= most || !this.isBlockPage(b)) {
        throw new HeapError(ErrorCode.ECORRUPT, `the kfreeRcu wait chain at word ${p} is broken at ${hex(b)} (${out.blocks.length} of ${most} blocks)`);
      }
      if (!take(i32[(b >> 2) + RB_GP]!)) break;
      // The taker's before it leaves the chain: a block in hand is found by its owner's reclaim.
      this.u32[this.pd(b >>> PAGE_SHIFT) + D_OWNER] = this.cpu;
      i32[p + C_RCU_WAIT] = i32[(b >> 2) + RB_NEXT]!;
      if (i32[p + C_RCU_WAIT] === 0) i32[p + C_RCU_WAIT_TAIL] = 0;
      out.blocks.push(b);
      pending += i32[(b >> 2) + RB_COUNT]!;
    }
    const cur = i32[p + C_RCU_BLOCK]!;
    if (cur !== 0 && !this.isBlockPage(cur)) throw new HeapError(ErrorCode.ECORRUPT, `the current kfreeRcu block at word ${p} (${hex(cur)}) is not a block page`);
    if (cur !== 0 && i32[p + C_RCU_WAIT] === 0 && take(i32[(cur >> 2) + RB_GP]!)) {
      this.u32[this.pd(cur >>> PAGE_SHIFT) + D_OWNER] = this.cpu;
      i32[p + C_RCU_BLOCK] = 0;
      out.blocks.push(cur);
      pending += i32[(cur >> 2) + RB_COUNT]!;
    }
    const ne = i32[p + C_RCU_EMERG_NR]!;
    if (ne > 0 && take(i32[p + C_RCU_EMERG_GP]!)) {
      for (let k = 0; k < ne; k++) out.objects.push(i32[p + C_RCU_EMERG + k]!);
      i32[p + C_RCU_EMERG_NR] = 0;
      pending += ne;
    }
    i32[p + C_RCU_PENDING] = i32[p + C_RCU_PENDING]! - pending;
    i32[p + C_RCU_BLOCKS] = i32[p + C_RCU_BLOCKS]! - out.blocks.length;
    // In flight until freeExpired: rcuBarrier and stats still see them.
    if (pending !== 0) {
      Atomics.add(i32, this.hw + R_INFLIGHT, pending);
      i32[this.pcpuW + C_RCU_INFLIGHT] = i32[this.pcpuW + C_RCU_INFLIGHT]! + pending;
    }
    out.count += pending;
  }

  /** Is `b` a kfreeRcu block page holding a count in 0..RB_CAP? */
  private isBlockPage(b: number): boolean {
    const pfn = b >>> PAGE_SHIFT;
    if ((b & (PAGE_SIZE - 1)) !== 0 || pfn < this.zoneStart || pfn >= this.nrPages) return false;
    const n = this.i32[(b >> 2) + RB_COUNT]!;
    return this.u32[this.pd(pfn) + D_FLAGS] === PG_RCU_BLOCK && n >= 0 && n <= RB_CAP;
  }

  /** Free what takeExpired unlinked: every object, then the block pages. No lock held. */
  private freeExpired(out: Expired): void {
    const i32 = this.i32;
    let freed = 0;
    try {
      freed = this.freeExpiredObjects(out);
    } finally {
      // Publication point for rcuBarrier: these objects are freed (or the agent is unwinding).
      if (out.count !== 0) {
        i32[this.pcpuW + C_RCU_INFLIGHT] = i32[this.pcpuW + C_RCU_INFLIGHT]! - out.count;
        Atomics.sub(i32, this.hw + R_INFLIGHT, out.count);
      }
    }
    this.vmInc(VM.rcuFreed, freed);
  }

  private freeExpiredObjects(out: Expired): number {
    let freed = 0;
    this.deferring++;
    try {
      for (const b of out.blocks) {
        const bw = b >> 2;
        const n = this.i32[bw + RB_COUNT]!;
        // From the top, the count lowered before each free: a block in hand (D_OWNER this slot)
        // always counts exactly the objects not yet given to kfree, and reclaimSlot frees those
        // (a kill between the two statements leaks that one object, never frees it twice).
        for (let k = n - 1; k >= 0; k--) {
          this.i32[bw + RB_COUNT] = k;
          this.freeQueued(this.i32[bw + RB_ADDRS + k]!);
        }
        freed += n;
        if (!this.pushSpare(b)) this.freeBlockPage(b);
      }
      for (const o of out.objects) this.freeQueued(o);
      freed += out.objects.length;
    } finally {
      this.deferring--;
    }
    return freed;
  }

  /**
   * Free an object whose grace period is over. Deferred work: what the free finds wrong (a double
   * free, a clobbered redzone) is reported, not thrown, and the batch goes on. A redzone the free
   * found clobbered it has restored, the object still allocated: it is freed now.
   */
  private freeQueued(addr: number): void {
    try {
      if (this.debugFlags !== 0) this.debugSetState(addr, OBJ_ALLOC);
      this.kfree(addr);
    } catch (e) {
      this.reportDeferred(e, addr);
      if (e instanceof HeapError && e.code === ErrorCode.ECORRUPT) {
        try {
          this.kfree(addr);
        } catch (e2) {
          this.reportDeferred(e2, addr);
        }
      }
    }
  }

  /** Wait until every pending kfreeRcu of every agent has been freed. */
  rcuBarrier(): void {
    this.assertLive();
    if (this.agentInReadSection()) throw new HeapError(ErrorCode.EDEADLK, "rcuBarrier inside a read-side section (of any handle of this agent) would wait for itself");
    this.assertCanLock(LOCK.rcu);
    for (let cpu = 0; cpu < this.cpus; cpu++) this.rcuFlushSlot(cpu);
    // Objects another agent took off a slot (its own timer, or its rcuBarrier) are freed by that
    // agent after their grace period: wait for it, as rcu_barrier waits for every callback.
    let since = -1;
    for (let round = 0; this.objectsInFlight() !== 0; round++) {
      if (round < 64) continue;
      if (this.noBlock()) {
        if (since < 0) since = this.clock();
        else if ((round & 255) === 0 && this.spinExpired(since)) this.gpBusy(this.objectsInFlight());
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
    for (let cpu = 0; cpu < this.cpus; cpu++) n += Atomics.load(this.i32, this.pcpOf(cpu) + C_RCU_INFLIGHT);
    return n;
  }

  /**
   * destroy() first waits for every pending kfreeRcu, as kmem_cache_destroy does (kvfree_rcu_barrier):
   * objects queued by kfreeRcu are not live, and must not keep the cache alive.
   */
  protected override destroyCache(id: number, gen: number): void {
    let pending = false;
    for (let cpu = 0; cpu < this.cpus && !pending; cpu++) pending = this.i32[this.pcpOf(cpu) + C_RCU_PENDING] !== 0;
    if (pending) this.rcuBarrier();
    super.destroyCache(id, gen);
  }

  /** Take every pending kfreeRcu of slot `cpu`, wait for their grace period, free them here. */
  protected rcuFlushSlot(cpu: number): void {
    const p = this.pcpOf(cpu);
    if (this.i32[p + C_RCU_PENDING] === 0 && this.i32[p + C_RCU_BLOCK] === 0) return;
    const out: Expired = { blocks: [], objects: [], count: 0, wait: false, cookie: 0 };
    // An agent that must not block takes only what has expired, and gives up on the rest (EAGAIN).
    const all = !this.noBlock();
    this.lock(p + C_KRCP_LOCK, LOCK.rcu);
    let left = 0;
    try {
      this.takeExpired(p, out, all);
      left = this.i32[p + C_RCU_PENDING]!;
    } finally {
      this.unlock(p + C_KRCP_LOCK, LOCK.rcu);
    }
    if (out.wait) this.gpWait(out.cookie);
    this.freeExpired(out);
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
  protected rcuOnline(): void {
    this.i32[this.pcpuW + C_RCU_NEST] = 0;
    Atomics.store(this.i32, this.pcpuW + C_RCU_SNAP, 0);
  }

  /** This slot detaches: it leaves any section and frees its pending kfreeRcu objects. */
  protected rcuOffline(): void {
    this.i32[this.pcpuW + C_RCU_NEST] = 0;
    Atomics.store(this.i32, this.pcpuW + C_RCU_SNAP, 0);
    if (this.rcuTimer !== null) {
      clearTimeout(this.rcuTimer);
      this.rcuTimer = null;
    }
    this.rcuFlushSlot(this.cpu);
    this.dropSpareBlocks(this.pcpuW);
  }

  /**
   * Slot `cpu` died: it counts as outside any section; its pending objects are freed here. Objects
   * it had taken off a slot and not freed are lost to it: they stay allocated (leaked), and leave
   * R_INFLIGHT, so that rcuBarrier does not wait for them for ever.
   */
  protected rcuReclaim(cpu: number): number {
    const p = this.pcpOf(cpu);
    this.i32[p + C_RCU_NEST] = 0;
    Atomics.store(this.i32, p + C_RCU_SNAP, 0);
    const inflight = this.i32[p + C_RCU_INFLIGHT]!;
    if (inflight !== 0) {
      this.i32[p + C_RCU_INFLIGHT] = 0;
      Atomics.sub(this.i32, this.hw + R_INFLIGHT, inflight);
    }
    const inHand = this.rcuBlocksInHand(cpu);
    this.rcuFlushSlot(cpu);
    this.dropSpareBlocks(p);
    return inHand;
  }

  /**
   * reclaimSlot: the kfreeRcu block pages dead slot `cpu` had in its hands (D_OWNER `cpu`, on no
   * slot's chain, current word or spare list: a batch it was freeing, a spare it was dropping or
   * refilling, a block between two lists). Those with objects go on the dead slot's wait chain,
   * freed after their grace period by the flush that follows; empty ones are freed. Takes each
   * slot's krcp lock in turn. Returns how many were found.
   */
  private rcuBlocksInHand(cpu: number): number {
    const i32 = this.i32;
    const u32 = this.u32;
    const reach = new Set<number>();
    for (let s = 0; s < this.cpus; s++) {
      const q = this.pcpOf(s);
      this.lock(q + C_KRCP_LOCK, LOCK.rcu);
      for (let b = i32[q + C_RCU_WAIT]!, n = 0; b !== 0 && n <= this.nrPages; b = i32[(b >> 2) + RB_NEXT]!, n++) reach.add(b);
      if (i32[q + C_RCU_BLOCK] !== 0) reach.add(i32[q + C_RCU_BLOCK]!);
      for (let b = i32[q + C_RCU_SPARE]!, n = 0; b !== 0 && n <= RCU_SPARE_MAX; b = i32[(b >> 2) + RB_NEXT]!, n++) reach.add(b);
      this.unlock(q + C_KRCP_LOCK, LOCK.rcu);
    }
    const found: number[] = [];
    for (let pfn = this.zoneStart; pfn < this.nrPages; pfn++) {
      const d = this.pd(pfn);
      if (u32[d + D_FLAGS] === PG_RCU_BLOCK && u32[d + D_OWNER] === cpu && !reach.has(pfn << PAGE_SHIFT)) found.push(pfn << PAGE_SHIFT);
    }
    if (found.length === 0) return 0;
    const p = this.pcpOf(cpu);
    const empty: number[] = [];
    this.lock(p + C_KRCP_LOCK, LOCK.rcu);
    for (const b of found) {
      const n = i32[(b >> 2) + RB_COUNT]!;
      if (n <= 0 || n > RB_CAP) {
        empty.push(b);
        continue;
      }
      i32[(b >> 2) + RB_NEXT] = 0;
      const tail = i32[p + C_RCU_WAIT_TAIL]!;
      if (tail === 0) i32[p + C_RCU_WAIT] = b;
      else i32[(tail >> 2) + RB_NEXT] = b;
      i32[p + C_RCU_WAIT_TAIL] = b;
      i32[p + C_RCU_PENDING] = i32[p + C_RCU_PENDING]! + n;
      i32[p + C_RCU_BLOCKS] = i32[p + C_RCU_BLOCKS]! + 1;
    }
    this.unlock(p + C_KRCP_LOCK, LOCK.rcu);
    for (const b of empty) this.freeBlockPage(b);
    return found.length;
  }

  /**
   * reclaimSlot took slot `p`'s krcp lock over from a dead holder: recount C_RCU_PENDING and
   * C_RCU_BLOCKS from the wait chain, the block being filled and the emergency array.
   */
  protected rcuRecount(p: number): void {
    const i32 = this.i32;
    let objs = 0;
    let blocks = 0;
    let tail = 0;
    for (let b = i32[p + C_RCU_WAIT]!; b !== 0 && blocks <= this.nrPages; b = i32[(b >> 2) + RB_NEXT]!) {
      objs += i32[(b >> 2) + RB_COUNT]!;
      blocks++;
      tail = b;
    }
    i32[p + C_RCU_WAIT_TAIL] = tail;
    let spare = 0;
    for (let b = i32[p + C_RCU_SPARE]!; b !== 0 && spare < RCU_SPARE_MAX; b = i32[(b >> 2) + RB_NEXT]!) spare++;
    i32[p + C_RCU_NR_SPARE] = spare;
    const cur = i32[p + C_RCU_BLOCK]!;
    if (cur !== 0) {
      objs += i32[(cur >> 2) + RB_COUNT]!;
      blocks++;
    }
    objs += i32[p + C_RCU_EMERG_NR]!;
    i32[p + C_RCU_PENDING] = objs;
    i32[p + C_RCU_BLOCKS] = blocks;
  }

  protected rcuStats(): RcuStats {
    const i32 = this.i32;
    let waiting = 0;
    let blocks = 0;
    let emergency = 0;
    let readers = 0;
    let spare = 0;
    for (let cpu = 0; cpu < this.cpus; cpu++) {
      const p = this.pcpOf(cpu);
      spare += i32[p + C_RCU_NR_SPARE]!;
      waiting += i32[p + C_RCU_PENDING]!;
      blocks += i32[p + C_RCU_BLOCKS]!;
      emergency += i32[p + C_RCU_EMERG_NR]!;
      if (Atomics.load(i32, p + C_RCU_SNAP) !== 0) readers++;
    }
    waiting += Atomics.load(i32, this.hw + R_INFLIGHT);
    return { rcu: { gracePeriods: Atomics.load(i32, this.hw + R_GP_DONE) >>> 0, waitingObjects: waiting, blocks, spareBlocks: spare, emergency, readers } };
  }

  /** Every slot's blocks are block pages; counts match; every waiting object is a live allocation. */
  protected validateRcu(): void {
    const i32 = this.i32;
    const bad = (msg: string): never => {
      throw new HeapError(ErrorCode.ECORRUPT, msg);
    };
    for (let cpu = 0; cpu < this.cpus; cpu++) {
      const p = this.pcpOf(cpu);
      if (i32[p + C_STATE] !== SLOT_ATTACHED && i32[p + C_RCU_PENDING] !== 0) bad(`detached cpu ${cpu} still has kfreeRcu objects`);
      let objs = 0;
      let blocks = 0;
      const check = (b: number): void => {
        if (i32[this.pd(b >>> PAGE_SHIFT) + D_FLAGS] !== PG_RCU_BLOCK) bad(`cpu ${cpu}: kfreeRcu block ${hex(b)} is not a block page`);
        const n = i32[(b >> 2) + RB_COUNT]!;
        if (n < 0 || n > RB_CAP) bad(`cpu ${cpu}: kfreeRcu block ${hex(b)} counts ${n}`);
        for (let k = 0; k < n; k++) this.checkWaiting(i32[(b >> 2) + RB_ADDRS + k]!, cpu);
        objs += n;
        blocks++;
      };
      for (let b = i32[p + C_RCU_WAIT]!; b !== 0; b = i32[(b >> 2) + RB_NEXT]!) {
        if (blocks >= i32[p + C_RCU_BLOCKS]!) bad(`cpu ${cpu}: kfreeRcu wait chain is longer than its count: circular`);
        check(b);
      }
      if (i32[p + C_RCU_BLOCK] !== 0) check(i32[p + C_RCU_BLOCK]!);
      const ne = i32[p + C_RCU_EMERG_NR]!;
      for (let k = 0; k < ne; k++) this.checkWaiting(i32[p + C_RCU_EMERG + k]!, cpu);
      objs += ne;
      if (objs !== i32[p + C_RCU_PENDING]) bad(`cpu ${cpu}: counts ${i32[p + C_RCU_PENDING]} kfreeRcu objects, holds ${objs}`);
      let spares = 0;
      for (let b = i32[p + C_RCU_SPARE]!; b !== 0; b = i32[(b >> 2) + RB_NEXT]!) {
        if (i32[this.pd(b >>> PAGE_SHIFT) + D_FLAGS] !== PG_RCU_BLOCK) bad(`cpu ${cpu}: spare block ${hex(b)} is not a block page`);
        if (++spares > RCU_SPARE_MAX) bad(`cpu ${cpu}: more than ${RCU_SPARE_MAX} spare block pages`);
      }
      if (spares !== i32[p + C_RCU_NR_SPARE]) bad(`cpu ${cpu}: counts ${i32[p + C_RCU_NR_SPARE]} spare block pages, holds ${spares}`);
      if (i32[p + C_STATE] !== SLOT_ATTACHED && spares !== 0) bad(`detached cpu ${cpu} still keeps spare block pages`);
      if (blocks !== i32[p + C_RCU_BLOCKS]) bad(`cpu ${cpu}: counts ${i32[p + C_RCU_BLOCKS]} kfreeRcu blocks, holds ${blocks}`);
    }
  }

  private checkWaiting(addr: number, cpu: number): void {
    try {
      const id = this.objectCache(addr, -1);
      if (id >= 0 && this.i32[this.cacheWOf(id) + K_META] !== 0) {
        if (this.i32[((addr + this.i32[this.cacheWOf(id) + K_META]!) >> 2) + M_STATE] !== OBJ_RCU) throw new Error("state");
      } else if (id >= 0 && this.i32[addr >> 2] === (addr ^ FREE_TAG)) throw new Error("free");
    } catch {
      throw new HeapError(ErrorCode.ECORRUPT, `cpu ${cpu}: kfreeRcu holds ${hex(addr)}, which is not a live allocation`);
    }
  }
}

/**
 * For tests only (not exported by the package): start every counter that agents compare with one
 * another at `value` — the grace-period sequence and its done mark, and the generation words of
 * every free cache descriptor and every free slot — so that a test reaches their wrap at 2^31
 * and 2^32 without running 2^31 grace periods. Call on a quiet heap: no reader inside a section,
 * no kfreeRcu pending.
 */
export function startCountersAt(heap: { readonly i32: Int32Array; readonly offset: number }, value: number): void {
  const i32 = heap.i32;
  const v = value === -1 || (value | 0) === -1 ? -2 : value | 0;
  // Word indices are absolute: the header page is at the heap's offset in its buffer.
  const hw = heap.offset >>> 2;
  const g = geometryWords(i32, hw);
  Atomics.store(i32, hw + R_GP_SEQ, v);
  Atomics.store(i32, hw + R_GP_DONE, v);
  for (let id = 0; id < g.maxCaches; id++) {
    const kw = g.cacheW + id * g.cacheWords;
    if (Atomics.load(i32, kw + K_STATE) === CACHE_FREE) i32[kw + K_GEN] = v;
  }
  for (let cpu = 0; cpu < g.cpus; cpu++) {
    const c = g.pcpuW + cpu * PCPU_WORDS;
    if (Atomics.load(i32, c + C_STATE) === SLOT_FREE) i32[c + C_GEN] = v;
  }
}

function geometryWords(i32: Int32Array, hw: number): { cpus: number; maxCaches: number; cacheW: number; cacheWords: number; pcpuW: number } {
  return {
    cpus: i32[hw + H_CPUS]!,
    maxCaches: i32[hw + H_MAX_CACHES]!,
    cacheW: hw + (i32[hw + H_CACHE_OFF]! >>> 2),
    cacheWords: i32[hw + H_CACHE_BYTES]! >>> 2,
    pcpuW: hw + (i32[hw + H_PCPU_OFF]! >>> 2),
  };
}
