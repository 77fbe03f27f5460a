import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, test } from "node:test";
import { GFP, Heap } from "../../../src/index.js";
import { code } from "../../support/check.js";

const MiB = 1 << 20;


/** Prime this slot's pcp list so that kfreeRcu's FAST_TRY block allocation can succeed. */
function primePcp(h: Heap): void {
  h.freePages(h.allocPages(0), 0);
}

describe("RCU read side and grace periods", () => {
  test("nesting, unbalanced unlock, EDEADLK inside a section", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    assert.equal(h.stats().rcu.readers, 0);
    h.rcuReadLock();
    h.rcuReadLock();
    assert.equal(h.stats().rcu.readers, 1);
    h.rcuReadUnlock();
    assert.equal(h.stats().rcu.readers, 1, "still inside the outer section");
    assert.equal(code(() => h.synchronizeRcu()), "EDEADLK");
    assert.equal(code(() => h.rcuBarrier()), "EDEADLK");
    h.rcuReadUnlock();
    assert.equal(h.stats().rcu.readers, 0);
    assert.equal(code(() => h.rcuReadUnlock()), "EINVAL");
    const before = h.stats().rcu.gracePeriods;
    h.synchronizeRcu();
    assert.ok(h.stats().rcu.gracePeriods > before);
    h.detach();
  });

  test("a detached slot counts as outside any section", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    const b = Heap.attach(h.buffer);
    b.rcuReadLock();
    assert.equal(h.stats().rcu.readers, 1);
    b.detach();
    assert.equal(h.stats().rcu.readers, 0);
    h.synchronizeRcu(); // returns: nobody is reading
    h.detach();
  });

  test("synchronizeRcuAsync resolves once the other slot's reader leaves", async () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    const b = Heap.attach(h.buffer);
    b.rcuReadLock();
    let done = false;
    const p = h.synchronizeRcuAsync().then(() => {
      done = true;
    });
    await sleep(20);
    assert.equal(done, false, "the reader is still inside");
    b.rcuReadUnlock();
    await p;
    assert.equal(done, true);
    b.detach();
    h.detach();
  });
});

describe("kfreeRcu", () => {
  test("kfreeRcu(0) is a no-op, like kfree(0) and the kernel's kfree_rcu(NULL)", () => {
    const h = Heap.create({ size: 2 * MiB, cpus: 1 });
    const before = h.stats();
    h.kfreeRcu(0);
    const after = h.stats();
    assert.equal(after.rcu.waitingObjects, 0);
    assert.equal(after.vmstat.rcuQueued, before.vmstat.rcuQueued);
    assert.equal(after.freePages, before.freePages);
    h.validate();
    h.detach();
    assert.equal(code(() => h.kfreeRcu(0)), "EDETACHED");
  });
  test("an object is not reused while a reader may hold it, and is freed after a grace period", () => {
    const h = Heap.create({ size: 8 * MiB, cpus: 2 });
    const reader = Heap.attach(h.buffer);
    primePcp(h);
    const x = h.kmalloc(100);
    reader.rcuReadLock();
    h.kfreeRcu(x);
    const s = h.stats();
    assert.equal(s.rcu.waitingObjects, 1);
    assert.equal(s.rcu.blocks, 1, "queued in a page-sized block");
    assert.equal(s.vmstat.rcuQueued, 1);
    const got: number[] = [];
    for (let i = 0; i < 2000; i++) {
      const o = h.kmalloc(100);
      assert.notEqual(o, x, "the object came back while a reader could hold it");
      got.push(o);
    }
    for (const o of got) h.kfree(o);
    reader.rcuReadUnlock();
    h.rcuBarrier();
    const t = h.stats();
    assert.equal(t.rcu.waitingObjects, 0);
    assert.equal(t.rcu.blocks, 0);
    assert.equal(t.vmstat.rcuFreed, 1);
    assert.equal(code(() => h.kfree(x)), "EDOUBLEFREE", "x is free now");
    h.validate();
    reader.detach();
    h.shrink();
    assert.equal(h.stats().freePages, h.stats().totalPages);
    h.detach();
  });

  test("spare block pages: after the timer has run, kfreeRcu needs no pcp page", async () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    const objs = [h.kmalloc(64), h.kmalloc(64)];
    const filler: number[] = [];
    for (let p; (p = h.allocPages(0, GFP.ATOMIC)) !== 0; ) filler.push(p);
    for (const p of filler.splice(0, 8)) h.freePages(p, 0); // a few pages for the zone, none on the pcp list
    h.shrink();
    h.kfreeRcu(objs[0]!); // no spare yet: a NOWAIT page from the zone
    for (let i = 0; i < 50 && h.stats().rcu.spareBlocks < 4; i++) await sleep(10);
    assert.ok(h.stats().rcu.spareBlocks >= 1, "the timer refilled the spares");
    for (let p; (p = h.allocPages(0, GFP.FAST_TRY)) !== 0; ) filler.push(p); // empty the pcp list
    const fastTryFail = h.stats().vmstat.fastTryFail;
    h.kfreeRcu(objs[1]!);
    assert.equal(h.stats().vmstat.fastTryFail, fastTryFail, "a spare served the new block");
    assert.equal(h.stats().vmstat.rcuSyncFallback, 0);
    h.rcuBarrier();
    for (const p of filler) h.freePages(p, 0);
    h.validate();
    h.shrink();
    assert.equal(h.stats().freePages, h.stats().totalPages);
    h.detach();
  });

  test("pending objects are freed by the agent's timer without further calls", async () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    primePcp(h);
    for (let i = 0; i < 10; i++) h.kfreeRcu(h.kmalloc(32));
    assert.equal(h.stats().rcu.waitingObjects, 10);
    for (let i = 0; i < 50 && h.stats().rcu.waitingObjects > 0; i++) await sleep(10);
    assert.equal(h.stats().rcu.waitingObjects, 0);
    assert.equal(h.stats().vmstat.rcuFreed, 10);
    h.validate();
    h.detach();
  });

  test("large allocations and many objects: blocks chain, one bulk free each", () => {
    const h = Heap.create({ size: 16 * MiB, cpus: 2 });
    const pages: number[] = [];
    for (let i = 0; i < 40; i++) pages.push(h.allocPages(0));
    for (const p of pages) h.freePages(p, 0); // 40 pages on this slot's pcp list for block pages
    const reader = Heap.attach(h.buffer);
    reader.rcuReadLock(); // nothing expires while this section is open
    h.kfreeRcu(h.kmalloc(50000));
    for (let i = 0; i < 2500; i++) h.kfreeRcu(h.kmalloc(16));
    const s = h.stats();
    assert.equal(s.rcu.waitingObjects, 2501);
    assert.equal(s.rcu.blocks, 3, "2501 addresses in blocks of 1020");
    h.validate();
    reader.rcuReadUnlock();
    reader.detach();
    h.rcuBarrier();
    assert.equal(h.stats().rcu.waitingObjects, 0);
    h.shrink();
    assert.equal(h.stats().freePages, h.stats().totalPages);
    h.validate();
    h.detach();
  });

  test("no block page: an agent that may block waits inline; one that may not uses the emergency array", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    const a = h.kmalloc(64);
    const filler: number[] = [];
    for (let p; (p = h.allocPages(0, GFP.ATOMIC)) !== 0; ) filler.push(p); // no page anywhere
    h.kfreeRcu(a);
    let s = h.stats();
    assert.equal(s.vmstat.rcuSyncFallback, 1, "waited for a grace period inline");
    assert.equal(s.rcu.waitingObjects, 0);
    assert.equal(code(() => h.kfree(a)), "EDOUBLEFREE");
    for (const p of filler) h.freePages(p, 0);
    // An agent that must never block.
    const nb = Heap.attach(h.buffer, { noBlock: true });
    const objs = [nb.kmalloc(64), nb.kmalloc(64)];
    nb.shrink();
    for (const o of objs) nb.kfreeRcu(o);
    s = nb.stats();
    assert.equal(s.rcu.emergency, 2);
    assert.equal(s.vmstat.rcuEmergency, 2);
    h.validate();
    nb.rcuBarrier();
    assert.equal(nb.stats().rcu.emergency, 0);
    assert.equal(nb.stats().rcu.waitingObjects, 0);
    nb.detach();
    h.validate();
    h.detach();
  });

  test("kfreeRcu is safe from a hook that fires with locks held", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    primePcp(h);
    const objs = [h.kmalloc(64), h.kmalloc(200), h.kmalloc(3000)];
    let fired = 0;
    h.setReentryHook((point) => {
      if (point === "zone:acquire" && objs.length > 0) {
        h.kfreeRcu(objs.pop()!);
        fired++;
      }
    });
    const p = h.allocPages(5);
    h.freePages(p, 5);
    h.setReentryHook(null);
    assert.ok(fired >= 1);
    assert.equal(h.stats().vmstat.hookErrors, 0);
    h.rcuBarrier();
    for (const o of objs) h.kfree(o);
    h.validate();
    h.shrink();
    assert.equal(h.stats().freePages, h.stats().totalPages);
    h.detach();
  });

  test("destroy() waits for the cache's objects queued by kfreeRcu", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    primePcp(h);
    const c = h.createCache("rcu-objs", 48);
    for (let i = 0; i < 10; i++) h.kfreeRcu(c.alloc());
    assert.equal(h.stats().rcu.waitingObjects, 10);
    c.destroy();
    assert.equal(h.stats().rcu.waitingObjects, 0);
    assert.equal(h.findCache("rcu-objs"), null);
    h.validate();
    h.detach();
  });

  test("bad input", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    const a = h.kmalloc(64);
    assert.equal(code(() => h.kfreeRcu(a + 8)), "EINVAL");
    h.kfree(a);
    assert.equal(code(() => h.kfreeRcu(a)), "EDOUBLEFREE");
    const p = h.allocPages(0, GFP.ZERO);
    assert.equal(code(() => h.kfreeRcu(p)), "EINVAL");
    h.freePages(p, 0);
    h.validate();
    h.detach();
  });
});
