/*
 * validate() called from a reentry hook at every lock point of kmalloc, kfree, kfreeRcu,
 * allocPages, freePages, shrink and rcuBarrier: the agent holds a lock there, so validate is
 * EDEADLK at each of them (at the sheaf, list, barn and rcu points it used to walk and then throw
 * ECORRUPT "still counts held locks"), and changes nothing: the heap validates afterwards and
 * every page comes back.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Heap } from "../../../src/index.js";

test("validate() from a reentry hook at any lock point is EDEADLK and changes nothing", () => {
  const heap = Heap.create({ size: 2 << 20, cpus: 2 });
  const total = heap.stats().totalPages;
  const seen = new Map<string, string>();
  let calls = 0;
  heap.setReentryHook((pt) => {
    calls++;
    try {
      heap.validate();
      seen.set(pt, "ok");
    } catch (e) {
      const err = e as { code?: string; message?: string };
      const got = `${err.code}`;
      if (got !== "EDEADLK" || !seen.has(pt)) seen.set(pt, got === "EDEADLK" ? got : `${got}: ${err.message}`);
    }
  });
  const xs: number[] = [];
  for (let i = 0; i < 200; i++) xs.push(heap.kmalloc(64));
  for (const x of xs) heap.kfree(x);
  heap.kfreeRcu(heap.kmalloc(16));
  heap.freePages(heap.allocPages(4), 4);
  heap.shrink();
  heap.rcuBarrier();
  heap.setReentryHook(null);
  assert.ok(calls > 0);
  const points = [...seen.keys()].sort();
  for (const lock of ["sheaf", "barn", "list", "pcp", "zone", "rcu"]) {
    assert.ok(points.includes(`${lock}:acquire`) && points.includes(`${lock}:release`), `the hook ran at ${lock}:acquire and ${lock}:release (saw ${points.join(", ")})`);
  }
  for (const pt of points) assert.equal(seen.get(pt), "EDEADLK", `validate() at ${pt}`);
  heap.validate();
  heap.shrink();
  assert.equal(heap.stats().freePages, total);
});
