/*
 * The layout's word constants: within each region (the per-CPU block, a cache descriptor's header
 * lines, a slot's pcs line) every word has one name, and every name fits its region. Words added
 * by different changes (C_RCU_INFLIGHT, PCS_USERS, VM.lockGiveUp) must not land on one another.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import * as L from "../../../src/core/layout.js";
import { C_FAIL_STATE, C_HELD_MASK } from "../../../src/core/lock.js";

/** Claim words [at, at + n) for `name`; fails on a word claimed twice or outside 0..limit. */
function claimer(region: string, limit: number): (name: string, at: number, n?: number) => void {
  const owner = new Map<number, string>();
  return (name, at, n = 1) => {
    assert.ok(Number.isInteger(at) && at >= 0 && at + n <= limit, `${region}: ${name} (words ${at}..${at + n - 1}) does not fit its ${limit} words`);
    for (let w = at; w < at + n; w++) {
      assert.equal(owner.get(w), undefined, `${region}: word ${w} is both ${owner.get(w)} and ${name}`);
      owner.set(w, name);
    }
  };
}

test("per-CPU block words are distinct and fit C_WORDS", () => {
  const claim = claimer("per-CPU block", L.C_WORDS);
  claim("C_STATE", L.C_STATE);
  claim("C_GEN", L.C_GEN);
  claim("C_FLAGS", L.C_FLAGS);
  claim("C_HELD", L.C_HELD, L.LOCK_CLASSES);
  claim("C_HELD_MASK", C_HELD_MASK);
  claim("C_FAIL_STATE", C_FAIL_STATE);
  claim("C_PCP_LOCK", L.C_PCP_LOCK);
  claim("C_PCP_REQ", L.C_PCP_REQ);
  claim("C_PCP_COUNT", L.C_PCP_COUNT);
  claim("C_PCP_HEAD", L.C_PCP_HEAD, L.NR_PCP_ORDERS);
  claim("C_PCP_BUSY", L.C_PCP_BUSY);
  claim("C_PCP_REQ_AT", L.C_PCP_REQ_AT);
  claim("C_DEFER_HEAD", L.C_DEFER_HEAD);
  claim("C_DEFER_NR", L.C_DEFER_NR);
  claim("C_BULK_PAGES", L.C_BULK_PAGES);
  claim("C_BULK_OBJ", L.C_BULK_OBJ);
  claim("C_BULK_NR", L.C_BULK_NR);
  claim("C_DEBUG_HAND", L.C_DEBUG_HAND);
  claim("C_VMSTAT", L.C_VMSTAT, L.NR_VM);
  claim("C_RCU_NEST", L.C_RCU_NEST);
  claim("C_RCU_SNAP", L.C_RCU_SNAP);
  claim("C_KRCP_LOCK", L.C_KRCP_LOCK);
  claim("C_RCU_BLOCK", L.C_RCU_BLOCK);
  claim("C_RCU_WAIT", L.C_RCU_WAIT);
  claim("C_RCU_WAIT_TAIL", L.C_RCU_WAIT_TAIL);
  claim("C_RCU_PENDING", L.C_RCU_PENDING);
  claim("C_RCU_BLOCKS", L.C_RCU_BLOCKS);
  claim("C_RCU_EMERG_NR", L.C_RCU_EMERG_NR);
  claim("C_RCU_EMERG_GP", L.C_RCU_EMERG_GP);
  claim("C_RCU_SPARE", L.C_RCU_SPARE);
  claim("C_RCU_NR_SPARE", L.C_RCU_NR_SPARE);
  claim("C_RCU_INFLIGHT", L.C_RCU_INFLIGHT);
  claim("C_RCU_EMERG", L.C_RCU_EMERG, L.C_RCU_EMERG_MAX);
  // Every VM item has its own counter word.
  const items = Object.values(L.VM);
  assert.equal(new Set(items).size, items.length, "two VM items share a counter");
  assert.deepEqual([...items].sort((a, b) => a - b), Array.from({ length: L.NR_VM }, (_, i) => i), "VM items are 0..NR_VM - 1");
});

test("cache descriptor words are distinct: the header lines, and each slot's pcs line", () => {
  const claim = claimer("cache descriptor header", L.K_HDR_WORDS);
  for (const [name, w] of Object.entries({
    K_STATE: L.K_STATE, K_OBJ_SIZE: L.K_OBJ_SIZE, K_SIZE: L.K_SIZE, K_ALIGN: L.K_ALIGN, K_ORDER: L.K_ORDER, K_OBJS: L.K_OBJS,
    K_SHEAF_CAP: L.K_SHEAF_CAP, K_FLAGS: L.K_FLAGS, K_NAME_LEN: L.K_NAME_LEN, K_MIN_PARTIAL: L.K_MIN_PARTIAL, K_GEN: L.K_GEN,
    K_META: L.K_META, K_INUSE: L.K_INUSE, K_LIST_LOCK: L.K_LIST_LOCK, K_PARTIAL: L.K_PARTIAL, K_NR_PARTIAL: L.K_NR_PARTIAL,
    K_NR_SLABS: L.K_NR_SLABS, K_TOTAL_OBJS: L.K_TOTAL_OBJS, K_FREE_OBJS: L.K_FREE_OBJS, K_NR_EMPTY: L.K_NR_EMPTY, K_FULL: L.K_FULL,
    K_NR_FULL: L.K_NR_FULL, K_BARN_LOCK: L.K_BARN_LOCK, K_BARN_FULL: L.K_BARN_FULL, K_BARN_NR_FULL: L.K_BARN_NR_FULL,
    K_BARN_EMPTY: L.K_BARN_EMPTY, K_BARN_NR_EMPTY: L.K_BARN_NR_EMPTY, K_MAX_EMPTY: L.K_MAX_EMPTY, K_EMPTY_LOW: L.K_EMPTY_LOW,
    K_DECAY_TICKS: L.K_DECAY_TICKS, K_BARN_CAP: L.K_BARN_CAP, K_BARN_TICKS: L.K_BARN_TICKS,
  })) claim(name, w);
  claim("K_INV_SIZE (a float64)", L.K_INV_SIZE, 2);
  assert.equal(L.K_INV_SIZE % 2, 0, "K_INV_SIZE is 8-byte aligned");
  claim("K_NAME", L.K_NAME, L.K_NAME_MAX / 4);
  // The pcs words sit in the first line of each slot's PCS_WORDS span; the second line stays free.
  assert.equal(L.PCS_WORDS, L.HOT_SPAN_WORDS, "pcs spans are HOT_SPAN_WORDS apart");
  const pcs = claimer("pcs line", L.LINE_WORDS);
  pcs("PCS_MAIN", L.PCS_MAIN);
  pcs("PCS_SPARE", L.PCS_SPARE);
  pcs("PCS_LOCKED", L.PCS_LOCKED);
  pcs("PCS_USERS", L.PCS_USERS);
  pcs("PCS_HAND", L.PCS_HAND);
  pcs("PCS_HANDS_NESTED", L.PCS_HANDS_NESTED, L.SHEAF_HANDS_NESTED);
  pcs("PCS_REMOTE", L.PCS_REMOTE);
  assert.deepEqual([...L.PCS_SHEAVES], [L.PCS_MAIN, L.PCS_SPARE, L.PCS_REMOTE]);
});

test("header page words are distinct and fit the header", () => {
  const claim = claimer("header page", L.H_WORDS);
  for (const [name, w] of Object.entries(L)) {
    if (typeof w !== "number" || !/^H_/.test(name) || name === "H_CHECKED_WORDS" || name === "H_WORDS") continue;
    claim(name, w);
  }
  claim("Z_LOCK", L.Z_LOCK);
  for (const name of ["Z_FREE_PAGES", "Z_MANAGED", "Z_WMARK_MIN", "Z_WMARK_LOW", "Z_WMARK_HIGH", "Z_PCP_BATCH", "Z_PCP_HIGH", "Z_SIZE", "Z_NR_PAGES", "Z_DEFER_HEAD", "Z_DEFER_PAGES"] as const) claim(name, L[name]);
  claim("Z_FREE_HEAD", L.Z_FREE_HEAD, L.NR_ORDERS);
  claim("Z_NR_FREE", L.Z_NR_FREE, L.NR_ORDERS);
  for (const name of ["CT_LOCK", "CT_NR", "R_GP_SEQ", "R_GP_DONE", "CT_NR_DYING", "R_INFLIGHT"] as const) claim(name, L[name]);
});

/**
 * Every constant the layout exports, as one string: a heap made by a build whose layout differs
 * must carry another LAYOUT_VERSION, or attach would accept it (one build's words read as
 * another's).
 */
function layoutFingerprint(): string {
  const parts: string[] = [];
  for (const [name, v] of Object.entries(L).sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (name === "LAYOUT_VERSION" || typeof v === "function") continue;
    parts.push(`${name}=${JSON.stringify(v)}`);
  }
  let h = 0x811c9dc5;
  for (const ch of parts.join(";")) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  return `${parts.length}:${h.toString(16)}`;
}

test("the layout is the one LAYOUT_VERSION names: a change of any word raises the version", () => {
  // When this fails, the layout changed: raise LAYOUT_VERSION in core/layout.ts and record the
  // new fingerprint for it here.
  const recorded: Record<number, string> = { 13: "203:13c0de6f", 14: "204:4a094f2f", 15: "204:8ce6a92b", 16: "205:3b6665df" };
  assert.equal(layoutFingerprint(), recorded[L.LAYOUT_VERSION], `LAYOUT_VERSION ${L.LAYOUT_VERSION}: the layout's words changed without a new version`);
});
