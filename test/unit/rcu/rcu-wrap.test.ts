/*
 * Finding 3 of the trust issue: grace-period counters wrap. A test-only function of an internal
 * module (startCountersAt, not exported by the package) starts every counter agents compare near
 * 2^31 and near 2^32; grace periods are then run across the wrap with a reader inside.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Heap } from "../../../src/index.js";
import { layersOf } from "../../../src/layers.js";
import { startCountersAt } from "../../../src/rcu/check.js";
import { delay } from "../../support/util.js";

const STARTS: Array<[string, number]> = [
  ["2^31", 2 ** 31 - 6],
  ["2^32", 2 ** 32 - 6],
];

describe("grace-period counters across their wrap", () => {
  for (const [name, start] of STARTS) {
    test(`a reader inside holds every grace period up across ${name}`, () => {
      const h = Heap.create({ size: 4 << 20, cpus: 4 });
      startCountersAt(h, start);
      const reader = Heap.attach(h.buffer);
      const late = Heap.attach(h.buffer);
      const gp = layersOf(h).rcu;
      let periods = 0;
      for (let i = 0; i < 24; i++) {
        // A reader that entered before the cookie holds the period up, however often it is polled.
        reader.rcuReadLock();
        const c = gp.gpCookie();
        for (let k = 0; k < 4; k++) assert.equal(gp.gpPoll(c), false, `period ${c >>> 0} ended with a reader inside (step ${i})`);
        reader.rcuReadUnlock();
        assert.equal(gp.gpPoll(c), true, `period ${c >>> 0} did not end once the reader left`);
        periods++;
        // A reader that entered after the period began does not hold it up; one before does.
        reader.rcuReadLock();
        const c3 = gp.gpCookie();
        assert.equal(gp.gpPoll(c3), false);
        late.rcuReadLock();
        reader.rcuReadUnlock();
        assert.equal(gp.gpPoll(c), true, "an earlier period that ended stays ended");
        assert.equal(gp.gpPoll(c3), true, `period ${c3 >>> 0}: a reader that entered after it began held it up`);
        const c4 = gp.gpCookie();
        assert.equal(gp.gpPoll(c4), false, `period ${c4 >>> 0} ended with a reader inside`);
        late.rcuReadUnlock();
        assert.equal(gp.gpPoll(c4), true);
      }
      assert.equal(periods, 24);
      const done = h.stats().rcu.gracePeriods;
      assert.ok(done >= 0 && done < 2 ** 32, `gracePeriods ${done} is a 32-bit count`);
      h.synchronizeRcu();
      late.detach();
      reader.detach();
      h.validate();
    });

    test(`kfreeRcu objects wait for a reader across ${name}, then are freed`, async () => {
      const h = Heap.create({ size: 4 << 20, cpus: 4, debug: true });
      startCountersAt(h, start);
      const reader = Heap.attach(h.buffer);
      for (let i = 0; i < 12; i++) {
        const a = h.kmalloc(64);
        reader.rcuReadLock();
        h.kfreeRcu(a);
        // Let the agent's kfreeRcu timer run several times: the object must still wait.
        for (let k = 0; k < 3; k++) await delay(6);
        assert.equal(h.stats().rcu.waitingObjects, 1, `step ${i}: a kfreeRcu object was freed with a reader inside`);
        reader.rcuReadUnlock();
        h.rcuBarrier();
        assert.equal(h.stats().rcu.waitingObjects, 0);
        // The object is free: debug mode reports a second free.
        assert.throws(() => h.kfree(a), /EDOUBLEFREE/);
      }
      // And a cache handle from before a generation wrap still tells its cache apart from the next one.
      const c1 = h.createCache("wrap", 64);
      c1.destroy();
      const c2 = h.createCache("wrap", 64);
      assert.throws(() => c1.alloc(), /destroyed/);
      c2.free(c2.alloc());
      reader.detach();
      h.validate();
    });
  }
});
