/*
 * reclaimSlot: the host returns what a worker that exited without detaching left in its slot,
 * and takes over and releases the locks it died holding.
 *
 * WORDS: the dead slot's C_STATE (compareExchange ATTACHED or DEAD -> slotReclaimingBy(this
 *   slot), then Atomics.store FREE, or back to ATTACHED on failure; the claimant is recorded so
 *   that a reclaimer killed mid-reclaim is known, and reclaimSlot of that reclaimer claims its
 *   slots again (claimOrphansOf, compareExchange) and finishes them with it; a claim whose
 *   claimant is given too, or free, is taken over directly; a free slot that still holds deferred
 *   objects is claimed FREE -> RECLAIMING while they go back), its C_GEN (Atomics.add: a handle
 *   still using the slot is detached at its next slow path), its read-side words C_RCU_NEST
 *   (plain) and C_RCU_SNAP (Atomics.store), cleared before any grace period is waited for (a slot
 *   killed inside a section must not hold up the others' kfreeRcu flush), and, plain, its local
 *   locks PCS_LOCKED and C_PCP_BUSY and its C_HELD counts (cleared at the end), its debug
 *   object hand C_DEBUG_HAND (slab/debug_hand.ts) and C_FREEING (returnFreeingObject). No other agent
 *   writes a claimed slot's words. Everything else it returns goes through the layers' own paths.
 * LOCKS, in order: every lock word the dead slot holds is taken over (compareExchange owner ->
 *   this slot, waiters bit kept), repaired where it can be rebuilt from the descriptors (krcp
 *   counts, the cache table's counts, a cache's barn and list, pcp counts, the buddy lists) and
 *   released: rcu, ctable, barn, list, pcp, zone. Then the layers drain the slot: the blocks in its
 *   hands (pcp -> zone; zone alone for a block it was parking on the deferred list), rcu (its
 *   kfreeRcu objects, after a grace period), its sheaf, bulk and debug object hands (the debug
 *   object: barn, then list -> pcp -> zone), the deferred objects and
 *   sheaves (barn -> list -> pcp -> zone), the dying caches nothing uses any more (ctable -> ...),
 *   the pcp lists (pcp -> zone). The caller holds no lock (assertCanLock(rcu)) and is in no
 *   read-side section (EDEADLK otherwise, before anything changes).
 * NO LOCK: the claims (C_STATE by compareExchange, before anything changes) and the clearing of
 *   the dead slot's own words; the lock words are read with Atomics.load before a takeover.
 * STALE: a slot's C_STATE read before its compareExchange (a slot attached or claimed meanwhile
 *   makes the compareExchange fail: EINVAL, every claim made so far undone); the dead slot's words
 *   are its last stores, which is what the repairs above are for.
 */
import { assertNoCallback } from "./core/callbacks.js";
import { checkInt } from "./core/check.js";
import { ErrorCode, HeapError } from "./core/errors.js";
import * as layout from "./core/layout.js";
import { LOCK_OWNER_MASK } from "./core/lock.js";
import type { ReclaimReport } from "./api.js";
import type { Layers } from "./layers.js";
import { flushAllSheavesOf } from "./slab/sheaf.js";
import { drainDeferredObjects, returnFreeingObject } from "./slab/kmalloc.js";
import { pcpDrain, pcpSteal, pcpUnlockRemote, recountPcp } from "./page/pcp.js";
import { rebuildBuddyLists } from "./page/check.js";
import { rcuRecount } from "./rcu/check.js";
import { freeBlocksInHand } from "./page/check.js";
import { sheafObjectsOf } from "./slab/check.js";
import { barnRecountLocked, slabRebuildLocked } from "./slab/check.js";
import { cacheName, ctableRecount, releaseDyingCaches } from "./slab/cache.js";
import { describe, einval } from "./core/check.js";
import { pcpDropRequestOf } from "./page/pcp.js";
import { barnHandsRebuilt, freeSheafObjectInHand } from "./slab/sheaf_hand.js";
import { freeBulkObjectsInHand } from "./slab/bulk.js";
import { debugHandRebuilt, returnDebugObjectInHand } from "./slab/debug_hand.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { CT_LOCK, C_DEFER_HEAD, C_DEFER_NR, C_GEN, C_HELD, C_KRCP_LOCK, C_PCP_BUSY, C_PCP_COUNT, C_PCP_LOCK, C_RCU_NEST, C_RCU_NR_SPARE, C_RCU_PENDING, C_RCU_SNAP, C_STATE, C_STATE_ATTACHED, C_STATE_DEAD, C_STATE_FREE, C_STATE_MASK, C_STATE_RECLAIMING, K_BARN_LOCK, K_HDR_WORDS, K_LIST_LOCK, K_STATE, K_STATE_ACTIVE, K_STATE_DYING, LOCK, LOCK_CLASSES, PCS_LOCKED, PCS_WORDS, Z_LOCK, slotReclaimer, slotReclaimingBy } = layout;

/**
 * For the host, after a worker exited without detaching (returned, crashed, terminated): return
 * slot `cpu`'s cached pages, objects, deferred frees and pending kfreeRcu objects to the heap and
 * free the slot. Locks the worker died holding are taken over and released (recoverLocksOf), so
 * the heap goes on working. A noBlock caller that meets a lock held past its bound gets EAGAIN,
 * the slot still attached: call again. Several workers that died together are reclaimed
 * together (an array of slots): every lock any of them holds is taken over before any of their
 * memory is returned, so the reclaim never waits on a lock another dead slot holds.
 */
export function reclaimSlot(l: Layers, arg: number | readonly number[]): ReclaimReport | ReclaimReport[] {
  l.locks.assertLive();
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
    checkInt(many ? `cpus[${k}]` : "cpu", cpu, 0, l.mem.cpus - 1, "", `this heap's slots are 0..${l.mem.cpus - 1}`);
    if (cpu === l.mem.cpu) throw new HeapError(ErrorCode.EINVAL, `cpu ${cpu} is this handle's own slot: use detach()`);
    // A slot of a live handle of this agent whose call is in progress under this one (its hook,
    // a handler or onError is running): its blocks and locks are in use, never reclaimed.
    for (const h of l.locks.agentHandles()) if (h.cpu === cpu) assertNoCallback(h, `reclaimSlot(${cpu})`);
    if (seen.has(cpu as number)) throw new HeapError(ErrorCode.EINVAL, `cpus: slot ${cpu} is given twice`);
    seen.add(cpu as number);
  }
  return reclaimChecked(l, cpus as number[], many);
}

/** reclaimSlot of a free slot with deferred objects: claim it (C_STATE_RECLAIMING) while they go back. */
function reclaimDeferredOf(l: Layers, cpu: number): void {
  const c = l.mem.pcpOf(cpu);
  if (Atomics.compareExchange(l.mem.i32, c + C_STATE, C_STATE_FREE, slotReclaimingBy(l.mem.cpu)) !== C_STATE_FREE) {
    throw new HeapError(ErrorCode.EINVAL, `cpu ${cpu} was attached meanwhile: its agent frees its deferred objects`);
  }
  try {
    drainDeferredObjects(l.slab, cpu);
  } finally {
    Atomics.store(l.mem.i32, c + C_STATE, C_STATE_FREE);
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
function recoverLocksOf(l: Layers, cpu: number, report: ReclaimReport, group: readonly number[]): void {
  const i32 = l.mem.i32;
  // A request it raised on another slot's pcp lock while it waited for it.
  pcpDropRequestOf(l.pages, cpu);
  for (let s = 0; s < l.mem.cpus; s++) {
    if (!l.locks.takeOverLock(l.mem.pcpOf(s) + C_KRCP_LOCK, LOCK.rcu, cpu)) continue;
    report.locks.push(`rcu cpu ${s}`);
    rcuRecount(l.rcu, l.mem.pcpOf(s));
    report.rebuilt.push(`kfreeRcu counts of cpu ${s}`);
    l.locks.unlock(l.mem.pcpOf(s) + C_KRCP_LOCK, LOCK.rcu);
  }
  if (l.locks.takeOverLock(l.mem.hw + CT_LOCK, LOCK.ctable, cpu)) {
    report.locks.push("ctable");
    ctableRecount(l.slab);
    report.rebuilt.push("cache table counts");
    l.locks.unlock(l.mem.hw + CT_LOCK, LOCK.ctable);
  }
  for (let id = 0; id < l.mem.maxCaches; id++) {
    const kw = l.slab.cacheWOf(id);
    const st = i32[kw + K_STATE];
    if (st !== K_STATE_ACTIVE && st !== K_STATE_DYING) continue;
    const name = cacheName(l.slab, id);
    const local = kw + K_HDR_WORDS + cpu * PCS_WORDS + PCS_LOCKED;
    if (i32[local] !== 0) report.locks.push(`sheaf ${name}`);
    i32[local] = 0;
    if (l.locks.takeOverLock(kw + K_BARN_LOCK, LOCK.barn, cpu)) {
      report.locks.push(`barn ${name}`);
      barnRecountLocked(l.slab, id);
      barnHandsRebuilt(l.slab, cpu, id);
      report.rebuilt.push(`barn of ${name}`);
      l.locks.unlock(kw + K_BARN_LOCK, LOCK.barn);
    }
    if (l.locks.takeOverLock(kw + K_LIST_LOCK, LOCK.list, cpu)) {
      report.locks.push(`list ${name}`);
      const slabs = slabRebuildLocked(l.slab, id, group);
      debugHandRebuilt(l.slab, cpu, id);
      report.rebuilt.push(`slab lists of ${name} (${slabs} slab${slabs === 1 ? "" : "s"})`);
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
    report.locks.push(`pcp cpu ${s}`);
    recountPcp(l.pages, s);
    report.rebuilt.push(`pcp lists of cpu ${s}`);
    pcpUnlockRemote(l.pages, s);
  }
  const own = l.mem.pcpOf(cpu);
  if (i32[own + C_PCP_BUSY] !== 0) {
    // It died inside its own pcp section: the lists may be torn; pcpSteal takes the word next.
    i32[own + C_PCP_BUSY] = 0;
    if ((Atomics.load(i32, own + C_PCP_LOCK) & LOCK_OWNER_MASK) === cpu + 1) {
      report.locks.push(`pcp cpu ${cpu}`);
      recountPcp(l.pages, cpu);
      report.rebuilt.push(`pcp lists of cpu ${cpu}`);
    }
  }
  if (l.locks.takeOverLock(l.mem.hw + Z_LOCK, LOCK.zone, cpu)) {
    report.locks.push("zone");
    rebuildBuddyLists(l.pages);
    report.rebuilt.push("buddy lists");
    l.locks.unlock(l.mem.hw + Z_LOCK, LOCK.zone);
  }
}

/** reclaimSlot, once the dead slot's locks are recovered: everything it held goes back. */
export function returnSlotMemory(l: Layers, cpu: number, report: ReclaimReport): void {
  const c = l.mem.pcpOf(cpu);
  // What it had in its hands inside the allocator goes back to the free lists.
  const blocks = { n: 0 };
  report.pages += freeBlocksInHand(l.pages, cpu, blocks);
  report.inHand += blocks.n;
  report.objects += l.mem.i32[c + C_RCU_PENDING]! + l.mem.i32[c + C_DEFER_NR]!;
  report.pages += l.mem.i32[c + C_RCU_NR_SPARE]!;
  report.inHand += l.rcu.rcuReclaim(cpu);
  // The sheaf object it was allocating or freeing, before its deferred list goes back.
  report.inHand += freeSheafObjectInHand(l.slab, cpu);
  // The objects of a cache.allocBulk that never returned.
  report.inHand += freeBulkObjectsInHand(l.slab, cpu);
  // The debug object it was allocating or freeing, likewise.
  report.inHand += returnDebugObjectInHand(l.slab, cpu);
  // The object its kfree or drain was freeing: free if a sheaf or list has it, else its caller's.
  returnFreeingObject(l.slab, cpu);
  drainDeferredObjects(l.slab, cpu);
  report.objects += sheafObjectsOf(l.slab, cpu);
  flushAllSheavesOf(l.slab, cpu);
  // A cache it was destroying, or whose release waited for its sheaves.
  releaseDyingCaches(l.slab);
  if (pcpSteal(l.pages, cpu)) {
    const count = l.mem.u32[c + C_PCP_COUNT]!;
    report.pages += count;
    if (count !== 0) pcpDrain(l.pages, cpu, count);
    const left = l.mem.u32[c + C_PCP_COUNT]!;
    pcpUnlockRemote(l.pages, cpu);
    if (left !== 0) throw new HeapError(ErrorCode.EAGAIN, `cpu ${l.mem.cpu} must not block, and the zone lock was held past its bound while it drained cpu ${cpu}'s pcp lists: call again`);
  }
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

export function reclaimChecked(l: Layers, cpus: number[], many: boolean): ReclaimReport | ReclaimReport[] {
  if (l.rcu.agentInReadSection()) throw new HeapError(ErrorCode.EDEADLK, "reclaimSlot inside a read-side section (of any handle of this agent) would wait for itself: the dead slot's kfreeRcu objects wait for a grace period");
  l.locks.assertCanLock(LOCK.rcu);
  const i32 = l.mem.i32;
  if (!many) {
    const cpu = cpus[0]!;
    const c = l.mem.pcpOf(cpu);
    // A free slot that still holds deferred objects (left by a detach of an earlier release):
    // return them, and the slot stays free.
    if (Atomics.load(i32, c + C_STATE) === C_STATE_FREE && i32[c + C_DEFER_HEAD] !== 0) {
      const objects = i32[c + C_DEFER_NR]!;
      reclaimDeferredOf(l, cpu);
      return { cpu, locks: [], rebuilt: [], pages: 0, objects, inHand: 0 };
    }
  }
  // Claim every slot (C_STATE_RECLAIMING, with this slot as claimant) before anything changes;
  // C_STATE_DEAD: a heap of an earlier release marked the slot dead, and it is reclaimed the same
  // way. A slot whose claimant died mid-reclaim (the claimant is given too, or no longer
  // attached) is claimed again: this reclaim finishes the job.
  const me = l.mem.cpu;
  const mine = slotReclaimingBy(me);
  const before: number[] = [];
  for (const cpu of cpus) {
    const c = l.mem.pcpOf(cpu);
    const state = Atomics.load(i32, c + C_STATE);
    const by = slotReclaimer(state);
    const orphan = (state & C_STATE_MASK) === C_STATE_RECLAIMING && by !== me && (by < 0 || by >= l.mem.cpus || cpus.includes(by) || slotGone(l, by));
    const why =
      state !== C_STATE_ATTACHED && state !== C_STATE_DEAD && !orphan
        ? (state & C_STATE_MASK) === C_STATE_RECLAIMING
          ? `cpu ${cpu} is being reclaimed by cpu ${by}${by === me ? " (this handle's slot)" : `: if cpu ${by}'s agent died, reclaimSlot(${by}) finishes both`}`
          : `cpu ${cpu} is not attached`
      : Atomics.compareExchange(i32, c + C_STATE, state, mine) !== state ? `cpu ${cpu} is being reclaimed or detached by another agent`
      : null;
    if (why !== null) {
      for (let k = 0; k < before.length; k++) Atomics.store(i32, l.mem.pcpOf(cpus[k]!) + C_STATE, before[k]!);
      throw new HeapError(ErrorCode.EINVAL, why);
    }
    before.push(state);
  }
  const given = cpus.length;
  const claimants = claimOrphansOf(l, cpus);
  // A handle still using a slot (a host that reclaimed a live worker's slot) finds the
  // generation moved on at its next slow path and is detached (EDETACHED), never sharing it.
  for (const cpu of cpus) Atomics.add(i32, l.mem.pcpOf(cpu) + C_GEN, 1);
  // Every dead slot is outside any read-side section before any grace period is waited for
  // below: one killed inside a section would otherwise hold up the others' kfreeRcu flush.
  for (const cpu of cpus) {
    i32[l.mem.pcpOf(cpu) + C_RCU_NEST] = 0;
    Atomics.store(i32, l.mem.pcpOf(cpu) + C_RCU_SNAP, 0);
  }
  const reports = cpus.map((cpu): ReclaimReport => ({ cpu, locks: [], rebuilt: [], pages: 0, objects: 0, inHand: 0 }));
  try {
    // No waiting here: only the locks these slots hold are taken over.
    for (let k = 0; k < cpus.length; k++) recoverLocksOf(l, cpus[k]!, reports[k]!, cpus);
    for (let k = 0; k < cpus.length; k++) returnSlotMemory(l, cpus[k]!, reports[k]!);
  } catch (e) {
    // Nothing is lost: what was returned stays returned, the rest stays the slots'; call again.
    for (const cpu of cpus) Atomics.store(i32, l.mem.pcpOf(cpu) + C_STATE, C_STATE_ATTACHED);
    throw e;
  }
  for (const cpu of cpus) {
    const c = l.mem.pcpOf(cpu);
    for (let k = 0; k <= LOCK_CLASSES; k++) i32[c + C_HELD + k] = 0;
    Atomics.store(i32, c + C_STATE, C_STATE_FREE);
  }
  // The report of a slot a dead claimant was reclaiming goes with its claimant's.
  for (let k = given; k < cpus.length; k++) {
    const r = reports[cpus.indexOf(claimants[k - given]!)]!;
    (r.finished ??= []).push(reports[k]!);
  }
  return many ? reports.slice(0, given) : reports[0]!;
}

/** Is slot `cpu`'s agent gone for good: the slot free, or marked dead by an earlier release? */
function slotGone(l: Layers, cpu: number): boolean {
  const st = Atomics.load(l.mem.i32, l.mem.pcpOf(cpu) + C_STATE);
  return st === C_STATE_FREE || st === C_STATE_DEAD;
}

/**
 * reclaimSlot: the slots that the dead slots in `cpus` had claimed (C_STATE_RECLAIMING by one of
 * them) when they died are claimed by this slot and appended to `cpus`, and so on for theirs,
 * so that their reclaim is finished with their claimant's. Returns each one's claimant.
 */
function claimOrphansOf(l: Layers, cpus: number[]): number[] {
  const claimants: number[] = [];
  const mine = slotReclaimingBy(l.mem.cpu);
  for (let k = 0; k < cpus.length; k++) {
    const by = cpus[k]!;
    const theirs = slotReclaimingBy(by);
    for (let s = 0; s < l.mem.cpus; s++) {
      if (s === l.mem.cpu || cpus.includes(s)) continue;
      if (Atomics.compareExchange(l.mem.i32, l.mem.pcpOf(s) + C_STATE, theirs, mine) !== theirs) continue;
      cpus.push(s);
      claimants.push(by);
    }
  }
  return claimants;
}
