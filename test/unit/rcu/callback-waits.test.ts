/*
 * Callbacks (onError, trace handlers) that wait on, or pull the slot from under, the call of their
 * own handle in progress: rcuBarrier while this agent frees a kfreeRcu batch would wait for itself
 * (EDEADLK), and detach part-way through a call of the same handle is EDEADLK, nothing changed.
 * The waits run in a worker with a deadline: a hang fails the test instead of stopping the run.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Worker } from "node:worker_threads";
import { Heap } from "../../../src/index.js";
import { firstMessage } from "../../support/util.js";
import { errCode } from "../../support/common.js";

const MiB = 1 << 20;
const INDEX = new URL("../../../src/index.js", import.meta.url).href;


/** Run the scenario `how` (onError calls rcuBarrier while `trigger` frees a batch) in a worker, 10 s at most. */
async function inWorker(trigger: "rcuBarrier" | "detach"): Promise<string> {
  const src = `
    const { parentPort } = require("node:worker_threads");
    import(${JSON.stringify(INDEX)}).then(({ Heap }) => {
      const heap = Heap.create({ size: 4 << 20, cpus: 2 });
      const host = Heap.attach(heap.buffer);
      let inner = "not called";
      heap.onError = (err) => { try { heap.rcuBarrier(); inner = err.code + " ok"; } catch (e) { inner = err.code + " " + e.code; } };
      const x = heap.kmalloc(64); heap.kfreeRcu(x); heap.kfree(x);
      let outer = "ok"; try { heap.${trigger}(); } catch (e) { outer = e.code; }
      if (heap.attached) heap.detach();
      host.rcuBarrier(); host.shrink();
      let v = "ok"; try { host.validate(); } catch (e) { v = e.code; }
      const s = host.stats();
      parentPort.postMessage(inner + " | " + outer + " | " + v + " | " + (s.totalPages - s.freePages));
    });`;
  const w = new Worker(src, { eval: true });
  try {
    return await firstMessage<string>(w, `onError's rcuBarrier during ${trigger}`, 10_000);
  } finally {
    await w.terminate();
  }
}

describe("rcuBarrier from onError while this agent frees a kfreeRcu batch", () => {
  test("during rcuBarrier: EDEADLK, the outer barrier finishes", async () => {
    assert.equal(await inWorker("rcuBarrier"), "EDOUBLEFREE EDEADLK | ok | ok | 0");
  });
  test("during detach: EDEADLK, the detach finishes", async () => {
    assert.equal(await inWorker("detach"), "EDOUBLEFREE EDEADLK | ok | ok | 0");
  });
});

describe("detach from a callback of the same handle is EDEADLK, nothing changed", () => {
  test("from onError while rcuBarrier frees the batch", () => {
    const heap = Heap.create({ size: 4 * MiB, cpus: 2 });
    const host = Heap.attach(heap.buffer);
    let inner = "not called";
    heap.onError = () => {
      inner = errCode(() => heap.detach());
    };
    const objs: number[] = [];
    for (let i = 0; i < 50; i++) {
      objs.push(heap.kmalloc(64));
      heap.kfreeRcu(objs[i]!);
    }
    heap.kfree(objs[0]!); // found when the batch is freed, reported to onError
    heap.rcuBarrier();
    assert.equal(inner, "EDEADLK");
    assert.equal(heap.attached, true);
    assert.deepEqual(host.attachedSlots(), [0, 1]);
    heap.validate();
    heap.detach();
    host.shrink();
    host.validate();
    assert.equal(host.stats().freePages, host.stats().totalPages);
  });

  test("from trace handlers part-way through a call: mm_page_free, kfree, rcu_grace_period", () => {
    for (const ev of ["mm_page_free", "kfree", "rcu_grace_period"] as const) {
      const heap = Heap.create({ size: 4 * MiB, cpus: 2 });
      const host = Heap.attach(heap.buffer);
      let inner = "not called";
      heap.trace.on(ev, () => {
        if (inner === "not called") inner = errCode(() => heap.detach());
      });
      if (ev === "mm_page_free") heap.freePages(heap.allocPages(0), 0);
      else if (ev === "kfree") heap.kfree(heap.kmalloc(64));
      else {
        heap.kfreeRcu(heap.kmalloc(64));
        heap.rcuBarrier();
      }
      assert.equal(inner, "EDEADLK", ev);
      assert.equal(heap.attached, true, ev);
      heap.trace.clear();
      heap.validate();
      heap.detach();
      host.shrink();
      host.validate();
      assert.equal(host.stats().freePages, host.stats().totalPages, ev);
    }
  });

  test("from the reentry hook, also at the sheaf's local lock", () => {
    const heap = Heap.create({ size: 4 * MiB, cpus: 2 });
    const got: string[] = [];
    heap.setReentryHook((p) => {
      if (got.length < 3) got.push(`${p} ${errCode(() => heap.detach())}`);
    });
    heap.kfree(heap.kmalloc(64));
    heap.setReentryHook(null);
    assert.ok(got.length > 0 && got.every((g) => g.endsWith(" EDEADLK")), got.join(", "));
    assert.equal(heap.attached, true);
    heap.validate();
    heap.detach();
  });
});
