/*
 * reclaimSlot: the host returns what a worker that exited without detaching left in its slot,
 * and takes over and releases the locks it died holding.
 *
 * WORDS: the dead slot's C_STATE (compareExchange ATTACHED or DEAD -> RECLAIMING by this slot,
 * slotReclaimingBy, then Atomics.store FREE or back to ATTACHED on failure; a reclaimer killed
 * mid-reclaim leaves its claims, and reclaimSlot of the reclaimer claims them again,
 * claimOrphansOf, and finishes them with it; a claim whose claimant is free is taken over), its C_GEN (Atomics.add: a handle still
 * using the slot is detached at its next slow path) and C_HELD counts (cleared at the end).
 * Everything else it returns goes through the layers' own paths.
 *
 * LOCKS, in order: every lock word the dead slot holds is taken over (compareExchange owner ->
 * this slot, waiters bit kept), repaired where it can be rebuilt from the descriptors (krcp counts,
 * a cache's list counts, pcp counts, the buddy lists) and released: rcu, ctable, barn, list, pcp,
 * zone. Then the layers drain the slot: rcu (its kfreeRcu objects, after a grace period), the
 * deferred objects and sheaves (sheaf -> barn -> list -> pcp -> zone), the pcp lists (pcp ->
 * zone). The caller holds no lock (assertCanLock(rcu)) and is in no read-side section.
 */
import { checkInt } from "./core/check.js";
import { ErrorCode, HeapError } from "./core/errors.js";
import {
  CACHE_ACTIVE,
  CACHE_DYING,
  CT_LOCK,
  C_DEFER_HEAD,
  C_GEN,
  C_HELD,
  C_KRCP_LOCK,
  C_PCP_BUSY,
  C_PCP_COUNT,
  C_PCP_LOCK,
  C_STATE,
  K_BARN_LOCK,
  K_LIST_LOCK,
  K_STATE,
  LOCK,
  LOCK_CLASSES,
  P_LOCKED,
  SLOT_ATTACHED,
  SLOT_DEAD,
  SLOT_FREE,
  SLOT_RECLAIMING,
  SLOT_STATE_MASK,
  slotReclaimer,
  slotReclaimingBy,
  Z_LOCK,
} from "./core/layout.js";
import { LOCK_OWNER_MASK } from "./core/lock.js";
import type { Layers } from "./layers.js";
import { slabRecountLocked } from "./slab/check.js";
import { flushAllSheavesOf } from "./slab/sheaf.js";
import { drainDeferredObjects } from "./slab/kmalloc.js";
import { pcpDrain, pcpSteal, pcpUnlockRemote, recountPcp } from "./page/pcp.js";
import { rebuildBuddyLists } from "./page/check.js";
import { rcuRecount } from "./rcu/check.js";
import { CACHE_HDR_WORDS, PCS_WORDS } from "./core/layout.js";

/**
 * For the host, after a worker exited without detaching (returned, crashed, terminated): return
 * slot `cpu`'s cached pages, objects, deferred frees and pending kfreeRcu objects to the heap and
 * free the slot. Locks the worker died holding are taken over and released (recoverLocksOf), so
 * the heap goes on working. A noBlock caller that meets a lock held past its bound gets EAGAIN,
 * the slot still attached: call again.
 */
export function reclaimSlot(l: Layers, cpu: number): void {
  l.locks.assertLive();
  checkInt("cpu", cpu, 0, l.mem.cpus - 1, "", `this heap's slots are 0..${l.mem.cpus - 1}`);
  if (cpu === l.mem.cpu) throw new HeapError(ErrorCode.EINVAL, `cpu ${cpu} is this handle's own slot: use detach()`);
  if (l.rcu.agentInReadSection()) throw new HeapError(ErrorCode.EDEADLK, "reclaimSlot inside a read-side section (of any handle of this agent) would wait for itself: the dead slot's kfreeRcu objects wait for a grace period");
  l.locks.assertCanLock(LOCK.rcu);
  const c = l.mem.pcpOf(cpu);
  const state = Atomics.load(l.mem.i32, c + C_STATE);
  // A free slot that still holds deferred objects (left by a detach of an earlier release):
  // return them, and the slot stays free.
  if (state === SLOT_FREE && l.mem.i32[c + C_DEFER_HEAD] !== 0) return reclaimDeferredOf(l, cpu);
  // SLOT_DEAD: a heap of an earlier release marked the slot dead; it is reclaimed the same way.
  // A slot whose claimant died mid-reclaim (the claimant no longer attached) is claimed again.
  const by = slotReclaimer(state);
  const orphan = (state & SLOT_STATE_MASK) === SLOT_RECLAIMING && by !== l.mem.cpu && (by < 0 || by >= l.mem.cpus || slotGone(l, by));
  if (state !== SLOT_ATTACHED && state !== SLOT_DEAD && !orphan) {
    throw new HeapError(
      ErrorCode.EINVAL,
      (state & SLOT_STATE_MASK) !== SLOT_RECLAIMING ? `cpu ${cpu} is not attached`
      : `cpu ${cpu} is being reclaimed by cpu ${by}${by === l.mem.cpu ? " (this handle's slot)" : `: if cpu ${by}'s agent died, reclaimSlot(${by}) finishes both`}`,
    );
  }
  const mine = slotReclaimingBy(l.mem.cpu);
  if (Atomics.compareExchange(l.mem.i32, c + C_STATE, state, mine) !== state) {
    throw new HeapError(ErrorCode.EINVAL, `cpu ${cpu} is being reclaimed or detached by another agent`);
  }
  // The slots this one was reclaiming when it died are finished with it.
  const cpus = [cpu];
  claimOrphansOf(l, cpus);
  // A handle still using the slot (a host that reclaimed a live worker's slot) finds the
  // generation moved on at its next slow path and is detached (EDETACHED), never sharing the slot.
  for (const s of cpus) Atomics.add(l.mem.i32, l.mem.pcpOf(s) + C_GEN, 1);
  try {
    for (const s of cpus) recoverLocksOf(l, s);
    for (const s of cpus) returnSlotMemory(l, s);
  } catch (e) {
    // Nothing is lost: what was returned stays returned, the rest stays the slots'; call again.
    for (const s of cpus) Atomics.store(l.mem.i32, l.mem.pcpOf(s) + C_STATE, SLOT_ATTACHED);
    throw e;
  }
  for (const s of cpus) {
    const w = l.mem.pcpOf(s);
    for (let k = 0; k <= LOCK_CLASSES; k++) l.mem.i32[w + C_HELD + k] = 0;
    Atomics.store(l.mem.i32, w + C_STATE, SLOT_FREE);
  }
}

/** reclaimSlot, once the dead slot's locks are recovered: everything it held goes back. */
function returnSlotMemory(l: Layers, cpu: number): void {
  const c = l.mem.pcpOf(cpu);
  l.rcu.rcuReclaim(cpu);
  drainDeferredObjects(l.slab, cpu);
  flushAllSheavesOf(l.slab, cpu);
  if (pcpSteal(l.pages, cpu)) {
    const count = l.mem.u32[c + C_PCP_COUNT]!;
    if (count !== 0) pcpDrain(l.pages, cpu, count);
    const left = l.mem.u32[c + C_PCP_COUNT]!;
    pcpUnlockRemote(l.pages, cpu);
    if (left !== 0) throw new HeapError(ErrorCode.EAGAIN, `cpu ${l.mem.cpu} must not block, and the zone lock was held past its bound while it drained cpu ${cpu}'s pcp lists: call again`);
  }
}

/** Is slot `cpu`'s agent gone for good: the slot free, or marked dead by an earlier release? */
function slotGone(l: Layers, cpu: number): boolean {
  const st = Atomics.load(l.mem.i32, l.mem.pcpOf(cpu) + C_STATE);
  return st === SLOT_FREE || st === SLOT_DEAD;
}

/**
 * reclaimSlot: the slots that the dead slots in `cpus` had claimed (SLOT_RECLAIMING by one of
 * them) when they died are claimed by this slot and appended to `cpus`, and so on for theirs, so
 * that their reclaim is finished with their claimant's.
 */
function claimOrphansOf(l: Layers, cpus: number[]): void {
  const mine = slotReclaimingBy(l.mem.cpu);
  for (let k = 0; k < cpus.length; k++) {
    const theirs = slotReclaimingBy(cpus[k]!);
    for (let s = 0; s < l.mem.cpus; s++) {
      if (s === l.mem.cpu || cpus.includes(s)) continue;
      if (Atomics.compareExchange(l.mem.i32, l.mem.pcpOf(s) + C_STATE, theirs, mine) === theirs) cpus.push(s);
    }
  }
}

/** reclaimSlot of a free slot with deferred objects: claim it (SLOT_RECLAIMING) while they go back. */
function reclaimDeferredOf(l: Layers, cpu: number): void {
  const c = l.mem.pcpOf(cpu);
  if (Atomics.compareExchange(l.mem.i32, c + C_STATE, SLOT_FREE, slotReclaimingBy(l.mem.cpu)) !== SLOT_FREE) {
    throw new HeapError(ErrorCode.EINVAL, `cpu ${cpu} was attached meanwhile: its agent frees its deferred objects`);
  }
  try {
    drainDeferredObjects(l.slab, cpu);
  } finally {
    Atomics.store(l.mem.i32, c + C_STATE, SLOT_FREE);
  }
  if (l.mem.i32[c + C_DEFER_HEAD] !== 0) {
    throw new HeapError(ErrorCode.EAGAIN, `cpu ${l.mem.cpu} must not block, and a list lock was held past its bound while it freed cpu ${cpu}'s deferred objects: call again`);
  }
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
function recoverLocksOf(l: Layers, cpu: number): void {
  const i32 = l.mem.i32;
  for (let s = 0; s < l.mem.cpus; s++) {
    if (!l.locks.takeOverLock(l.mem.pcpOf(s) + C_KRCP_LOCK, LOCK.rcu, cpu)) continue;
    rcuRecount(l.rcu, l.mem.pcpOf(s));
    l.locks.unlock(l.mem.pcpOf(s) + C_KRCP_LOCK, LOCK.rcu);
  }
  if (l.locks.takeOverLock(l.mem.hw + CT_LOCK, LOCK.ctable, cpu)) l.locks.unlock(l.mem.hw + CT_LOCK, LOCK.ctable);
  for (let id = 0; id < l.mem.maxCaches; id++) {
    const kw = l.slab.cacheWOf(id);
    const st = i32[kw + K_STATE];
    if (st !== CACHE_ACTIVE && st !== CACHE_DYING) continue;
    i32[kw + CACHE_HDR_WORDS + cpu * PCS_WORDS + P_LOCKED] = 0;
    if (l.locks.takeOverLock(kw + K_BARN_LOCK, LOCK.barn, cpu)) l.locks.unlock(kw + K_BARN_LOCK, LOCK.barn);
    if (l.locks.takeOverLock(kw + K_LIST_LOCK, LOCK.list, cpu)) {
      slabRecountLocked(l.slab, id);
      l.locks.unlock(kw + K_LIST_LOCK, LOCK.list);
    }
  }
  // The pcp words of other slots the dead agent held as a remote drainer; its own is taken by pcpSteal.
  for (let s = 0; s < l.mem.cpus; s++) {
    if (s === cpu) continue;
    const w = l.mem.pcpOf(s) + C_PCP_LOCK;
    if ((Atomics.load(i32, w) & LOCK_OWNER_MASK) !== cpu + 1) continue;
    if (Atomics.compareExchange(i32, w, cpu + 1, l.mem.me) !== cpu + 1) continue;
    l.locks.acquired(LOCK.pcp);
    recountPcp(l.pages, s);
    pcpUnlockRemote(l.pages, s);
  }
  const own = l.mem.pcpOf(cpu);
  if (i32[own + C_PCP_BUSY] !== 0) {
    // It died inside its own pcp section: the lists may be torn; pcpSteal takes the word next.
    i32[own + C_PCP_BUSY] = 0;
    if ((Atomics.load(i32, own + C_PCP_LOCK) & LOCK_OWNER_MASK) === cpu + 1) recountPcp(l.pages, cpu);
  }
  if (l.locks.takeOverLock(l.mem.hw + Z_LOCK, LOCK.zone, cpu)) {
    rebuildBuddyLists(l.pages);
    l.locks.unlock(l.mem.hw + Z_LOCK, LOCK.zone);
  }
}

