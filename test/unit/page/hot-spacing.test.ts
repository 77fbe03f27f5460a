/*
 * HOT SPACING (layout.ts): whatever the base of the buffer (Node puts a SharedArrayBuffer 16 bytes
 * past a 64-byte boundary; other engines may differ), no 64-byte hardware line holds words of two
 * groups that different agents write, or that one agent writes while another reads them: the
 * groups of one per-CPU block and of the next slot's block, the header groups of a cache
 * descriptor and every slot's pcs words, and two sheaves side by side in a slab.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import * as L from "../../../src/core/layout.js";
import { C_FAIL_STATE } from "../../../src/core/lock.js";

/** A group: a name and its byte range [from, to) relative to some origin. */
interface Group {
  name: string;
  from: number;
  to: number;
}
const words = (name: string, first: number, last: number, at = 0): Group => ({ name, from: at + first * 4, to: at + (last + 1) * 4 });

/** Fail when, for some base offset (every multiple of 4 in 0..60), a hardware line meets two groups. */
function assertApart(groups: Group[]): void {
  for (let base = 0; base < 64; base += 4) {
    const owner = new Map<number, string>();
    for (const g of groups) {
      const first = Math.floor((base + g.from) / 64);
      const last = Math.floor((base + g.to - 1) / 64);
      for (let line = first; line <= last; line++) {
        const o = owner.get(line);
        assert.ok(o === undefined || o === g.name, `base +${base}: hardware line ${line} holds words of ${o} and of ${g.name}`);
        owner.set(line, g.name);
      }
    }
  }
}

test("the per-CPU groups of two neighbouring slots never share a hardware line", () => {
  const groups: Group[] = [];
  for (const slot of [0, 1]) {
    const at = slot * L.C_BYTES;
    groups.push(
      words(`slot ${slot} state and held locks`, L.C_STATE, C_FAIL_STATE, at),
      // The pcp lock sits next to the lists it protects (as the kernel keeps a lock with its data).
      words(`slot ${slot} pcp lock, request and lists`, L.C_PCP_LOCK, L.C_PCP_BUSY, at),
      words(`slot ${slot} deferred list and vmstat (owner only)`, L.C_DEFER_HEAD, L.C_VMSTAT + L.NR_VM - 1, at),
      words(`slot ${slot} RCU read side`, L.C_RCU_NEST, L.C_RCU_SNAP, at),
      words(`slot ${slot} krcp lock, kfreeRcu state and emergency array`, L.C_KRCP_LOCK, L.C_RCU_EMERG + L.C_RCU_EMERG_MAX - 1, at),
    );
  }
  assert.equal(L.C_BYTES % L.LINE_BYTES, 0);
  assertApart(groups);
});

test("a cache descriptor's header groups and every slot's pcs words never share a hardware line", () => {
  const cpus = 4;
  const bytes = L.cacheBytesFor(cpus);
  const groups: Group[] = [];
  for (const id of [0, 1]) {
    const at = id * bytes;
    groups.push(
      words(`cache ${id} configuration`, L.K_STATE, L.K_INUSE, at),
      words(`cache ${id} list lock and lists`, L.K_LIST_LOCK, L.K_NR_FULL, at),
      words(`cache ${id} barn lock and barn`, L.K_BARN_LOCK, L.K_BARN_NR_EMPTY, at),
    );
    for (let cpu = 0; cpu < cpus; cpu++) {
      groups.push(words(`cache ${id} pcs of slot ${cpu}`, L.PCS_MAIN, L.PCS_USERS, at + (L.K_HDR_WORDS + cpu * L.PCS_WORDS) * 4));
    }
  }
  assertApart(groups);
});

test("two sheaves side by side in a slab never share a hardware line, and their words are 128 bytes apart", () => {
  assert.equal(L.S_BYTES % L.LINE_BYTES, 0, "sheaves stay line-aligned in their slab");
  const groups: Group[] = [];
  for (let i = 0; i < 3; i++) groups.push(words(`sheaf ${i}`, L.S_SIZE, L.S_OBJS + L.S_MAX_CAP - 1, i * L.S_BYTES));
  assertApart(groups);
  // The tail of a full sheaf and the size word of the next, both written at every push and pop.
  const gap = groups[1]!.from - groups[0]!.to;
  assert.ok(gap >= L.HOT_SPAN_BYTES, `only ${gap} bytes between two sheaves' words`);
});
