/*
 * Every lock word of a heap (at offset 0) that is held now, with its owner slot: the kill harness
 * prints it when a worker or the host stops making progress, read from the buffer alone (the main
 * thread has no handle).
 */
import { C_KRCP_LOCK, C_PCP_LOCK, C_PCP_REQ, C_RCU_INFLIGHT, C_RCU_PENDING, C_RCU_SNAP, C_STATE, CT_LOCK, R_INFLIGHT, H_CACHE_BYTES, H_CACHE_OFF, H_CPUS, H_MAX_CACHES, H_PCPU_OFF, K_BARN_LOCK, K_LIST_LOCK, K_STATE, C_WORDS, Z_LOCK } from "../../src/core/layout.js";

export function heldLockWords(buffer: SharedArrayBuffer): string {
  const i32 = new Int32Array(buffer);
  const u32 = new Uint32Array(buffer);
  const out: string[] = [];
  const owner = (v: number): string => `cpu ${(v & 0xffff) - 1}${(v & ~0xffff) !== 0 ? " +waiters" : ""}`;
  if (i32[Z_LOCK]! !== 0) out.push(`zone ${owner(i32[Z_LOCK]!)}`);
  if (i32[CT_LOCK]! !== 0) out.push(`ctable ${owner(i32[CT_LOCK]!)}`);
  const pcpu = u32[H_PCPU_OFF]! >>> 2;
  for (let c = 0; c < u32[H_CPUS]!; c++) {
    const p = pcpu + c * C_WORDS;
    if (i32[p + C_KRCP_LOCK]! !== 0) out.push(`rcu of cpu ${c} ${owner(i32[p + C_KRCP_LOCK]!)}`);
    if (i32[p + C_PCP_LOCK]! !== 0 && (i32[p + C_PCP_LOCK]! & 0xffff) !== c + 1) out.push(`pcp of cpu ${c} ${owner(i32[p + C_PCP_LOCK]!)}`);
    if (i32[p + C_PCP_REQ]! !== 0) out.push(`pcp request on cpu ${c}: ${i32[p + C_PCP_REQ]}`);
  }
  const cw = u32[H_CACHE_OFF]! >>> 2;
  const words = u32[H_CACHE_BYTES]! >>> 2;
  for (let id = 0; id < u32[H_MAX_CACHES]!; id++) {
    const kw = cw + id * words;
    if (i32[kw + K_LIST_LOCK]! !== 0) out.push(`list of cache ${id} (state ${i32[kw + K_STATE]}) ${owner(i32[kw + K_LIST_LOCK]!)}`);
    if (i32[kw + K_BARN_LOCK]! !== 0) out.push(`barn of cache ${id} (state ${i32[kw + K_STATE]}) ${owner(i32[kw + K_BARN_LOCK]!)}`);
  }
  // What an rcuBarrier or a grace period could be waiting for.
  const rcu: string[] = [`R_INFLIGHT ${i32[R_INFLIGHT]}`];
  for (let c = 0; c < u32[H_CPUS]!; c++) {
    const p = pcpu + c * C_WORDS;
    if (i32[p + C_RCU_SNAP]! !== 0 || i32[p + C_RCU_INFLIGHT]! !== 0 || i32[p + C_RCU_PENDING]! !== 0) {
      rcu.push(`cpu ${c} (state ${i32[p + C_STATE]}): snapshot ${i32[p + C_RCU_SNAP]}, in flight ${i32[p + C_RCU_INFLIGHT]}, pending ${i32[p + C_RCU_PENDING]}`);
    }
  }
  return `${out.length === 0 ? "none" : out.join(", ")}; rcu: ${rcu.join(", ")}`;
}
