/*
 * Slot guards: reclaimSlot of a slot whose handle is still in use detaches that handle (its slot's
 * generation moved on), so it never shares the slot with the next attach.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Heap } from "../src/index.js";
import { errCode, MiB } from "./util.js";

test("reclaimSlot of a slot still in use: the old handle is detached at its next call, the new attach owns the slot alone", () => {
  const heap = Heap.create({ size: 8 * MiB, cpus: 4 });
  const w = Heap.attach(heap.buffer);
  // Warm every fast path of w: sheaves, the pcp lists and the biased pcp lock.
  const objs: number[] = [];
  for (let i = 0; i < 500; i++) objs.push(w.kmalloc(64));
  for (const a of objs.splice(0, 250)) w.kfree(a);
  const pages: number[] = [];
  for (let i = 0; i < 20; i++) pages.push(w.allocPages(0));
  for (const p of pages.splice(0, 10)) w.freePages(p, 0);
  assert.equal(errCode(() => heap.reclaimSlot(heap.cpu)), "EINVAL", "the caller's own slot");
  heap.reclaimSlot(w.cpu);
  assert.equal(w.attached, false, "the reclaimed handle knows");
  // Its fast paths found nothing left to use (the reclaim emptied its sheaves and took its pcp lock): every call is EDETACHED.
  for (const call of [() => w.kmalloc(64), () => w.kfree(objs[0]!), () => w.allocPages(0), () => w.freePages(pages[0]!, 0), () => w.kfreeRcu(objs[1]!), () => w.detach(), () => w.shrink()]) {
    assert.equal(errCode(call), "EDETACHED");
  }
  const x = Heap.attach(heap.buffer);
  assert.equal(x.cpu, w.cpu, "the slot was attached again");
  assert.equal(errCode(() => w.kmalloc(64)), "EDETACHED");
  // What w still held is the heap's: another handle frees it.
  for (const a of objs) x.kfree(a);
  for (const p of pages) x.freePages(p, 0);
  x.detach();
  heap.shrink();
  heap.validate();
  assert.deepEqual(heap.attachedSlots(), [heap.cpu]);
  assert.equal(heap.stats().freePages, heap.stats().totalPages);
});
