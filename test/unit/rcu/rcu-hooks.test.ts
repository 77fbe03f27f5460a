/*
 * Finding 6 of the trust issue: no grace-period wait while this agent holds what a reader may
 * need. kfreeRcu from a hook that holds the zone lock, with no room left to queue, throws EDEADLK
 * (the object stays allocated) instead of spinning; reclaimSlot inside a read-side section throws
 * EDEADLK instead of waiting for itself. Deadlines on every test: a hang fails them.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Heap } from "../../../src/index.js";
import { caught } from "../../support/check.js";

const T = { timeout: 20_000 };

describe("grace periods are never awaited where they cannot end", () => {
  test("kfreeRcu from a hook holding the zone lock, with a reader inside and no room: EDEADLK, the object still live", T, () => {
    const h = Heap.create({ size: 8 << 20, cpus: 4 });
    const reader = Heap.attach(h.buffer);
    const objs: number[] = [];
    for (let i = 0; i < 200; i++) objs.push(h.kmalloc(64));
    h.shrink(); // no cached page for a kfreeRcu block, no spare block
    reader.rcuReadLock(); // the grace period cannot end while the hook runs
    const codes: string[] = [];
    const queued: number[] = [];
    let refused = 0;
    h.setReentryHook((point) => {
      if (point !== "zone:acquire" || refused !== 0) return;
      for (const o of objs) {
        try {
          h.kfreeRcu(o);
          queued.push(o);
        } catch (e) {
          codes.push((e as { code: string }).code);
          refused = o;
          break;
        }
      }
    });
    h.freePages(h.allocPages(6), 6);
    h.setReentryHook(null);
    assert.deepEqual(codes, ["EDEADLK"]);
    assert.ok(queued.length > 0, "some went to the emergency array first");
    // The refused object is still the caller's: it can be used and freed.
    h.u32[refused >> 2] = 7;
    assert.equal(h.ksize(refused), 64);
    reader.rcuReadUnlock();
    h.rcuBarrier();
    for (const o of objs) if (!queued.includes(o)) h.kfree(o);
    reader.detach();
    h.shrink();
    assert.equal(h.stats().slabs.find((c) => c.name === "kmalloc-64")!.activeObjects, 0);
    h.validate();
  });

  test("reclaimSlot inside a read-side section: EDEADLK, the slot untouched; outside it: reclaimed", T, () => {
    const h = Heap.create({ size: 8 << 20, cpus: 4 });
    const gone = Heap.attach(h.buffer); // a worker that exits without detaching
    const o = gone.kmalloc(100);
    gone.kfreeRcu(o); // pending work that must wait for a grace period
    h.rcuReadLock();
    const before = h.stats().attached;
    assert.equal(caught(() => h.reclaimSlot(gone.cpu)).code, "EDEADLK");
    assert.equal(h.stats().attached, before);
    h.rcuReadUnlock();
    h.reclaimSlot(gone.cpu);
    assert.equal(h.stats().attached, before - 1);
    assert.equal(h.stats().rcu.waitingObjects, 0);
    h.validate();
  });

  test("a wait for a grace period that another handle of this agent holds up: EDEADLK, nothing changed", T, () => {
    const h = Heap.create({ size: 8 << 20, cpus: 4 });
    const h2 = Heap.attach(h.buffer);
    const o = h2.kmalloc(64);
    h2.kfreeRcu(o); // h2 has kfreeRcu objects to wait for at detach
    h.rcuReadLock(); // this agent, through another handle, is inside a section
    assert.equal(caught(() => h2.synchronizeRcu()).code, "EDEADLK");
    assert.equal(caught(() => h2.rcuBarrier()).code, "EDEADLK");
    assert.equal(caught(() => h2.detach()).code, "EDEADLK");
    assert.equal(h2.attached, true, "still attached");
    h.rcuReadUnlock();
    h2.detach();
    assert.equal(h.stats().rcu.waitingObjects, 0);
    // Another heap's handles do not count.
    const other = Heap.create({ size: 4 << 20, cpus: 2 });
    other.rcuReadLock();
    h.synchronizeRcu();
    other.rcuReadUnlock();
    h.validate();
  });

  test("a hook of one handle making a normal call through another handle of this agent that needs a held lock: EDEADLK, never a hang", T, () => {
    const h = Heap.create({ size: 4 << 20, cpus: 4 });
    const h2 = Heap.attach(h.buffer);
    h2.freePages(h2.allocPages(0), 0);
    let got = "";
    h.setReentryHook((point) => {
      if (point !== "zone:acquire" || got !== "") return;
      try {
        h2.allocPages(6); // the buddy lists: the zone lock, which h holds
        got = "no error";
      } catch (e) {
        got = (e as { code: string }).code;
      }
    });
    h.freePages(h.allocPages(6), 6);
    h.setReentryHook(null);
    assert.equal(got, "EDEADLK");
    h2.detach();
    h.validate();
  });
});

