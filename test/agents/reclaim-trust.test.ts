/*
 * What a worker killed inside the allocator had in its hands comes back (issue 11, findings 5 and
 * 12): a page block on its way back to the lists, the empty slabs a shrink was releasing, the rest
 * of a kfreeRcu batch it was freeing. reclaimSlot returns them and says so in its report; two
 * workers that died together, each holding a lock, are reclaimed together without waiting.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Worker } from "node:worker_threads";
import { Heap, type ReclaimReport } from "../../src/index.js";
import { C_PCP_LOCK, C_PCP_REQ, H_PCPU_OFF, C_WORDS } from "../../src/core/layout.js";
import type { HandScenario } from "./workers/hand.js";
import { firstMessage } from "../support/util.js";

interface Parked {
  worker: Worker;
  cpu: number;
  parked: string | null;
  flag: Int32Array;
}

/** Start a worker on `scenario` and wait (with a deadline) until it parks at `point` (or finishes). */
async function park(heap: Heap, scenario: HandScenario, point = "", nth = 1): Promise<Parked> {
  const flag = new SharedArrayBuffer(8);
  const worker = new Worker(new URL("./workers/hand.js", import.meta.url), {
    workerData: { buffer: heap.buffer, flag, scenario, point, nth },
  });
  // A worker a failed assertion left parked must not keep the test process alive.
  worker.unref();
  const m = await firstMessage<{ parked: string | null; cpu: number }>(worker, `the ${scenario} worker never reached ${point || "its end"}`);
  return { worker, cpu: m.cpu, parked: m.parked, flag: new Int32Array(flag) };
}

/** After the reclaim: the heap is valid, and every page is free but for `leak` objects at most. */
function assertAllBack(heap: Heap, what: string, leak = 0): void {
  heap.rcuBarrier();
  heap.shrink();
  heap.validate();
  const st = heap.stats();
  let active = 0;
  for (const s of st.slabs) active += s.activeObjects;
  assert.ok(active <= leak, `${what}: ${active} objects still allocated, at most ${leak} may be`);
  if (active === 0) assert.equal(st.freePages, st.totalPages, `${what}: every page is free again`);
}

test("reclaimSlot of a worker that did nothing returns an empty report, a plain object", async () => {
  const heap = Heap.create({ size: 8 << 20, cpus: 4 });
  const p = await park(heap, "idle");
  await p.worker.terminate();
  const r = heap.reclaimSlot(p.cpu);
  assert.deepEqual(r, { cpu: p.cpu, locks: [], rebuilt: [], pages: 0, objects: 0, inHand: 0 });
  assert.equal(Object.getPrototypeOf(r), Object.prototype);
  assertAllBack(heap, "idle");
  heap.detach();
});

for (const [scenario, point, nth, what] of [
  ["pages", "zone:acquire", 1, "an order-6 block on its way back to the buddy lists"],
  ["large", "zone:acquire", 1, "a 1 MiB kmalloc block on its way back"],
  ["shrink", "list:release", 1, "the empty slabs shrink() had taken off a cache"],
] as const) {
  test(`a worker killed holding ${what}: reclaimSlot frees it (inHand), and every page comes back`, async () => {
    const heap = Heap.create({ size: 16 << 20, cpus: 4 });
    const p = await park(heap, scenario, point, nth);
    assert.equal(p.parked, point, `the ${scenario} worker stops at ${point}`);
    await p.worker.terminate();
    const r: ReclaimReport = heap.reclaimSlot(p.cpu);
    assert.ok(r.inHand >= 1, `the report counts what it had in hand: ${JSON.stringify(r)}`);
    if (point === "zone:acquire") {
      assert.ok(r.locks.includes("zone"), `it held the zone lock: ${JSON.stringify(r)}`);
      assert.ok(r.rebuilt.includes("buddy lists"));
    }
    assertAllBack(heap, scenario);
    heap.detach();
  });
}

test("a worker killed while freeing a kfreeRcu batch: the rest of the batch is freed after reclaimSlot, at most the one object it was freeing is lost, and rcuBarrier completes", async () => {
  const heap = Heap.create({ size: 16 << 20, cpus: 4 });
  // The 5th list lock of the batch's frees (the first fill the sheaves and the barn): inside the batch.
  const p = await park(heap, "rcu", "list:acquire", 5);
  assert.equal(p.parked, "list:acquire");
  await p.worker.terminate();
  const r = heap.reclaimSlot(p.cpu);
  assert.ok(r.inHand >= 1, `the batch's block page was in its hands: ${JSON.stringify(r)}`);
  assertAllBack(heap, "rcu", 1);
  heap.detach();
});

test("two workers killed together, one holding the zone lock and one a list lock: reclaimSlot([a, b]) takes both over and returns everything", async () => {
  const heap = Heap.create({ size: 16 << 20, cpus: 4 });
  // The list worker first: a worker parked holding the zone lock would stop its refills.
  const b = await park(heap, "list", "list:acquire", 1);
  const a = await park(heap, "pages", "zone:acquire", 1);
  assert.equal(a.parked, "zone:acquire");
  assert.equal(b.parked, "list:acquire");
  await Promise.all([a.worker.terminate(), b.worker.terminate()]);
  const rs = heap.reclaimSlot([a.cpu, b.cpu]);
  assert.equal(rs.length, 2);
  assert.equal(rs[0]!.cpu, a.cpu);
  assert.deepEqual(rs[0]!.locks, ["zone"]);
  assert.equal(rs[1]!.cpu, b.cpu);
  assert.ok(rs[1]!.locks.some((l) => l.startsWith("list ")), `the list worker held a list lock: ${JSON.stringify(rs[1])}`);
  assert.deepEqual(heap.attachedSlots(), [heap.cpu]);
  // The list worker's objects not yet freed are its own (a caller's leak); the page block is back.
  heap.rcuBarrier();
  heap.shrink();
  heap.validate();
  heap.detach();
});

test("reclaimSlot([...]) checks every slot before it changes anything", () => {
  const heap = Heap.create({ size: 8 << 20, cpus: 4 });
  assert.throws(() => heap.reclaimSlot([1, 1]), /EINVAL: cpus: slot 1 is given twice/);
  assert.throws(() => heap.reclaimSlot([1, heap.cpu]), /EINVAL: cpu 0 is this handle's own slot/);
  assert.throws(() => heap.reclaimSlot([2, 9]), /EINVAL: cpus\[1\]/);
  assert.throws(() => heap.reclaimSlot([1]), /EINVAL: cpu 1 is not attached/);
  assert.deepEqual(heap.reclaimSlot([]), []);
  heap.validate();
  heap.detach();
});

test("a worker killed while it drained another slot's pcp lists (holding that slot's pcp word, its request raised): reclaimSlot releases the word and lowers the request, and that slot goes on and detaches", async () => {
  const heap = Heap.create({ size: 16 << 20, cpus: 4 });
  const busy = await park(heap, "pcploop");
  // The drainer takes the busy slot's word only when the busy slot hands it over in time: try
  // again (a drainer that finished without it detaches nothing; its slot is reclaimed) until it does.
  let p = await park(heap, "drain", "pcp:acquire", 1);
  for (let tries = 1; p.parked === null && tries < 50; tries++) {
    await p.worker.terminate();
    heap.reclaimSlot(p.cpu);
    p = await park(heap, "drain", "pcp:acquire", 1);
  }
  assert.equal(p.parked, "pcp:acquire");
  await p.worker.terminate();
  const pcp = (cpu: number): number => (heap.u32[H_PCPU_OFF]! >>> 2) + cpu * C_WORDS;
  const r = heap.reclaimSlot(p.cpu);
  assert.ok(r.locks.includes(`pcp cpu ${busy.cpu}`), `it held the busy slot's pcp word: ${JSON.stringify(r)}`);
  assert.equal(Atomics.load(heap.i32, pcp(busy.cpu) + C_PCP_REQ), 0, "no request left raised on the busy slot");
  assert.notEqual(Atomics.load(heap.i32, pcp(busy.cpu) + C_PCP_LOCK) & 0xffff, p.cpu + 1);
  // The busy slot goes on, then detaches (it would spin for ever on a word the dead worker held).
  const detached = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the busy slot did not detach within 20 s")), 20_000);
    busy.worker.on("message", (m: { detached?: boolean }) => {
      if (m.detached === true) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  Atomics.store(busy.flag, 1, 1);
  await detached;
  await busy.worker.terminate();
  heap.shrink();
  heap.validate();
  assert.equal(heap.stats().freePages, heap.stats().totalPages);
  heap.detach();
});
