/*
 * The RCU layer's figures and checks: rcuStats, validateRcu (every queued object is a live
 * object waiting once, the counts agree), the krcp recount reclaimSlot runs for a krcp lock a dead
 * slot held, and startCountersAt, which tests use to start every counter near its wrap.
 *
 * WORDS: reads every slot's kfreeRcu state. rcuRecount rewrites a slot's C_RCU_WAIT_TAIL,
 *   C_RCU_NR_SPARE, C_RCU_PENDING and C_RCU_BLOCKS from its blocks, plain, with its C_KRCP_LOCK
 *   taken over by the caller. startCountersAt, on a new and idle heap, writes R_GP_SEQ and
 *   R_GP_DONE (Atomics.store) and, plain, the K_GEN of every free cache descriptor and the C_GEN
 *   of every free slot.
 * LOCKS: none taken; callers hold what they say above (rcuRecount: that krcp lock; validateRcu
 *   runs inside validate()).
 * NO LOCK: rcuStats (C_RCU_SNAP, R_INFLIGHT and R_GP_DONE with Atomics.load, the rest plain),
 *   validateRcu.
 * STALE: rcuStats and validateRcu read other slots' kfreeRcu words as they are: exact while those
 *   agents are idle, which is when validate() is meant to run; figures only, nothing acts on them.
 */
import { ErrorCode, HeapError, hex } from "../core/errors.js";
import * as layout from "../core/layout.js";
import { isFreeObject, objectCache } from "../slab/debug.js";
import type { RcuAllocator } from "./rcu.js";
import { RcuStats } from "./rcu.js";

/* Layout words as module constants, which V8 folds (see core/layout.ts, FAST PATHS). */
const { C_GEN, C_RCU_BLOCK, C_RCU_BLOCKS, C_RCU_EMERG, C_RCU_EMERG_NR, C_RCU_NR_SPARE, C_RCU_PENDING, C_RCU_SNAP, C_RCU_SPARE, C_RCU_SPARE_MAX, C_RCU_WAIT, C_RCU_WAIT_TAIL, C_STATE, C_STATE_ATTACHED, C_STATE_FREE, C_WORDS, H_CACHE_BYTES, H_CACHE_OFF, H_CPUS, H_MAX_CACHES, H_PCPU_OFF, K_GEN, K_META, K_STATE, K_STATE_FREE, M_STATE, M_STATE_RCU, PAGE_SHIFT, PD_FLAGS, PG_RCU_BLOCK, RB_ADDRS, RB_CAP, RB_COUNT, RB_NEXT, R_GP_DONE, R_GP_SEQ, R_INFLIGHT } = layout;

/**
 * reclaimSlot took slot `p`'s krcp lock over from a dead holder: recount C_RCU_PENDING and
 * C_RCU_BLOCKS from the wait chain, the block being filled and the emergency array.
 */
export function rcuRecount(rcu: RcuAllocator, p: number): void {
  const i32 = rcu.i32;
  let objs = 0;
  let blocks = 0;
  let tail = 0;
  for (let b = i32[p + C_RCU_WAIT]!; b !== 0 && blocks <= rcu.nrPages; b = i32[(b >> 2) + RB_NEXT]!) {
    objs += i32[(b >> 2) + RB_COUNT]!;
    blocks++;
    tail = b;
  }
  i32[p + C_RCU_WAIT_TAIL] = tail;
  let spare = 0;
  for (let b = i32[p + C_RCU_SPARE]!; b !== 0 && spare < C_RCU_SPARE_MAX; b = i32[(b >> 2) + RB_NEXT]!) spare++;
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

export function rcuStats(rcu: RcuAllocator): RcuStats {
  const i32 = rcu.i32;
  let waiting = 0;
  let blocks = 0;
  let emergency = 0;
  let readers = 0;
  let spare = 0;
  for (let cpu = 0; cpu < rcu.cpus; cpu++) {
    const p = rcu.mem.pcpOf(cpu);
    spare += i32[p + C_RCU_NR_SPARE]!;
    waiting += i32[p + C_RCU_PENDING]!;
    blocks += i32[p + C_RCU_BLOCKS]!;
    emergency += i32[p + C_RCU_EMERG_NR]!;
    if (Atomics.load(i32, p + C_RCU_SNAP) !== 0) readers++;
  }
  waiting += Atomics.load(i32, rcu.hw + R_INFLIGHT);
  return { rcu: { gracePeriods: Atomics.load(i32, rcu.hw + R_GP_DONE) >>> 0, waitingObjects: waiting, blocks, spareBlocks: spare, emergency, readers } };
}

/** Every slot's blocks are block pages; counts match; every waiting object is a live allocation. */
export function validateRcu(rcu: RcuAllocator): void {
  const i32 = rcu.i32;
  const bad = (msg: string): never => {
    throw new HeapError(ErrorCode.ECORRUPT, msg);
  };
  for (let cpu = 0; cpu < rcu.cpus; cpu++) {
    const p = rcu.mem.pcpOf(cpu);
    if (i32[p + C_STATE] !== C_STATE_ATTACHED && i32[p + C_RCU_PENDING] !== 0) bad(`detached cpu ${cpu} still has kfreeRcu objects`);
    let objs = 0;
    let blocks = 0;
    const check = (b: number): void => {
      if (i32[rcu.mem.pd(b >>> PAGE_SHIFT) + PD_FLAGS] !== PG_RCU_BLOCK) bad(`cpu ${cpu}: kfreeRcu block ${hex(b)} is not a block page`);
      const n = i32[(b >> 2) + RB_COUNT]!;
      if (n < 0 || n > RB_CAP) bad(`cpu ${cpu}: kfreeRcu block ${hex(b)} counts ${n}`);
      for (let k = 0; k < n; k++) checkWaiting(rcu, i32[(b >> 2) + RB_ADDRS + k]!, cpu);
      objs += n;
      blocks++;
    };
    for (let b = i32[p + C_RCU_WAIT]!; b !== 0; b = i32[(b >> 2) + RB_NEXT]!) {
      if (blocks >= i32[p + C_RCU_BLOCKS]!) bad(`cpu ${cpu}: kfreeRcu wait chain is longer than its count: circular`);
      check(b);
    }
    if (i32[p + C_RCU_BLOCK] !== 0) check(i32[p + C_RCU_BLOCK]!);
    const ne = i32[p + C_RCU_EMERG_NR]!;
    for (let k = 0; k < ne; k++) checkWaiting(rcu, i32[p + C_RCU_EMERG + k]!, cpu);
    objs += ne;
    if (objs !== i32[p + C_RCU_PENDING]) bad(`cpu ${cpu}: counts ${i32[p + C_RCU_PENDING]} kfreeRcu objects, holds ${objs}`);
    let spares = 0;
    for (let b = i32[p + C_RCU_SPARE]!; b !== 0; b = i32[(b >> 2) + RB_NEXT]!) {
      if (i32[rcu.mem.pd(b >>> PAGE_SHIFT) + PD_FLAGS] !== PG_RCU_BLOCK) bad(`cpu ${cpu}: spare block ${hex(b)} is not a block page`);
      if (++spares > C_RCU_SPARE_MAX) bad(`cpu ${cpu}: more than ${C_RCU_SPARE_MAX} spare block pages`);
    }
    if (spares !== i32[p + C_RCU_NR_SPARE]) bad(`cpu ${cpu}: counts ${i32[p + C_RCU_NR_SPARE]} spare block pages, holds ${spares}`);
    if (i32[p + C_STATE] !== C_STATE_ATTACHED && spares !== 0) bad(`detached cpu ${cpu} still keeps spare block pages`);
    if (blocks !== i32[p + C_RCU_BLOCKS]) bad(`cpu ${cpu}: counts ${i32[p + C_RCU_BLOCKS]} kfreeRcu blocks, holds ${blocks}`);
  }
}

export function checkWaiting(rcu: RcuAllocator, addr: number, cpu: number): void {
  try {
    const id = objectCache(rcu.slab, addr, -1);
    if (id >= 0 && rcu.i32[rcu.slab.cacheWOf(id) + K_META] !== 0) {
      if (rcu.i32[((addr + rcu.i32[rcu.slab.cacheWOf(id) + K_META]!) >> 2) + M_STATE] !== M_STATE_RCU) throw new Error("state");
    } else if (id >= 0 && isFreeObject(rcu.slab, id, addr)) {
      // The search, not the tag alone (which it checks first): a live object may hold its tag in word 0.
      throw new Error("free");
    }
  } catch {
    throw new HeapError(ErrorCode.ECORRUPT, `cpu ${cpu}: kfreeRcu holds ${hex(addr)}, which is not a live allocation`);
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
    if (Atomics.load(i32, kw + K_STATE) === K_STATE_FREE) i32[kw + K_GEN] = v;
  }
  for (let cpu = 0; cpu < g.cpus; cpu++) {
    const c = g.pcpuW + cpu * C_WORDS;
    if (Atomics.load(i32, c + C_STATE) === C_STATE_FREE) i32[c + C_GEN] = v;
  }
}

export function geometryWords(i32: Int32Array, hw: number): { cpus: number; maxCaches: number; cacheW: number; cacheWords: number; pcpuW: number } {
  return {
    cpus: i32[hw + H_CPUS]!,
    maxCaches: i32[hw + H_MAX_CACHES]!,
    cacheW: hw + (i32[hw + H_CACHE_OFF]! >>> 2),
    cacheWords: i32[hw + H_CACHE_BYTES]! >>> 2,
    pcpuW: hw + (i32[hw + H_PCPU_OFF]! >>> 2),
  };
}
