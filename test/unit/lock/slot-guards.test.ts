/*
 * Slot guards: reclaimSlot of a slot whose handle is still in use detaches that handle (its slot's
 * generation moved on), so it never shares the slot with the next attach; detach of a noBlock handle
 * never leaves deferred objects on a free slot.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Worker } from "node:worker_threads";
import { Heap } from "../../../src/index.js";
import { errCode, MiB } from "../../support/util.js";

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

test("detach on a noBlock handle that cannot free its deferred objects (a list lock held) is EAGAIN, the handle still attached; it detaches once the lock is free", async () => {
  const heap = Heap.create({ size: 8 * MiB, cpus: 4 });
  const h2 = Heap.attach(heap.buffer, { noBlock: true });
  const xs: number[] = [];
  for (let i = 0; i < 500; i++) xs.push(h2.kmalloc(64));
  const flag = new SharedArrayBuffer(4);
  const w = new Worker(new URL("../../agents/workers/holder.js", import.meta.url), { workerData: { buffer: heap.buffer, flag, point: "list:acquire", op: "kmalloc" } });
  let finish: () => void = () => {};
  const done = new Promise<void>((ok) => (finish = ok));
  await new Promise<void>((ok, fail) => {
    const t = setTimeout(() => fail(new Error("the worker never took the list lock")), 20_000);
    w.on("message", (m: { holding?: string; done?: boolean }) => {
      if (m.holding !== undefined) {
        clearTimeout(t);
        ok();
      }
      if (m.done === true) finish();
    });
    w.once("error", (e) => {
      clearTimeout(t);
      fail(e);
    });
  });
  try {
    for (const x of xs) h2.kfree(x);
    h2.kfreeRcu(h2.kmalloc(64));
    await heap.synchronizeRcuAsync();
    assert.equal(errCode(() => h2.detach()), "EAGAIN");
    assert.equal(h2.attached, true);
    assert.ok(heap.stats().deferredObjects >= 1, "the objects stay on the handle's deferred list");
    assert.ok(heap.attachedSlots().includes(h2.cpu));
  } finally {
    Atomics.store(new Int32Array(flag), 0, 1);
    Atomics.notify(new Int32Array(flag), 0);
  }
  await done;
  await w.terminate();
  h2.detach();
  assert.equal(heap.stats().deferredObjects, 0);
  heap.shrink();
  heap.validate();
  assert.deepEqual(heap.attachedSlots(), [heap.cpu]);
  assert.equal(heap.stats().freePages, heap.stats().totalPages);
});
