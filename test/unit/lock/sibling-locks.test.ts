/*
 * Two handles of one agent on one heap, each with a reentry hook: a normal call on handle A made
 * while handle B holds a shared lock (from B's hook) is refused with EDEADLK before it changes
 * anything (Locks.assertCanLock checks the agent's other handles too), and a throw inside a pcp
 * section leaves the section. Before, such a call failed half-way: a freed block stayed in A's hand
 * for good, A's pcp section stayed entered (every later call of A, detach included, was EDEADLK),
 * a drain dropped A's deferred objects, and a debug kfree poisoned the object it then refused.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Heap } from "../../../src/index.js";
import { allPagesFree, code } from "../../support/check.js";

const MiB = 1 << 20;

/** Run `fn` once, from `h`'s reentry hook at lock point `at`; returns the error code or "ok". */
function once(h: Heap, at: string, fn: () => void): { result: string } {
  const out = { result: "hook not reached" };
  let done = false;
  h.setReentryHook((p: string) => {
    if (done || p !== at) return;
    done = true;
    try {
      fn();
      out.result = "ok";
    } catch (e) {
      out.result = (e as { code?: string }).code ?? String(e);
    }
  });
  return out;
}

test("a freePages on A refused because B holds the zone lock leaves the block A's, to free later", () => {
  const a = Heap.create({ size: 8 * MiB, cpus: 4 });
  const b = Heap.attach(a.buffer);
  const x = a.allocPages(0);
  const y = a.allocPages(3);
  // B's hook, B holding the zone lock, calls A's nolock free; A's hook inside it frees y normally.
  const inner = once(a, "pcp:acquire", () => a.freePages(y, 3));
  const outer = once(b, "zone:acquire", () => a.freePagesNolock(x, 0));
  b.freePages(b.allocPages(6), 6); // order 6: B takes the zone lock
  a.setReentryHook(null);
  b.setReentryHook(null);
  assert.equal(outer.result, "ok");
  assert.equal(inner.result, "EDEADLK");
  a.freePages(y, 3); // still A's: no EDOUBLEFREE
  b.detach();
  allPagesFree(a);
  a.detach();
});

test("a kmalloc on A refused because B holds the zone lock leaves A usable: its calls, validate, detach", () => {
  const a = Heap.create({ size: 8 * MiB, cpus: 4 });
  const b = Heap.attach(a.buffer);
  a.setReentryHook(() => {}); // A counts its held locks
  const r = once(b, "zone:acquire", () => a.kmalloc(64));
  b.freePages(b.allocPages(4), 4);
  b.setReentryHook(null);
  a.setReentryHook(null);
  assert.equal(r.result, "EDEADLK");
  a.kfree(a.kmalloc(64));
  a.freePages(a.allocPages(0), 0);
  a.validate();
  a.shrink();
  b.detach();
  a.detach(); // was EDEADLK for good: the pcp section was left entered
});

test("A's deferred objects survive a normal call under B's list lock, and are freed later", () => {
  const a = Heap.create({ size: 8 * MiB, cpus: 4 });
  const b = Heap.attach(a.buffer);
  const errors: string[] = [];
  a.onError = (e) => errors.push(e.code);
  const objs: number[] = [];
  for (let i = 0; i < 200; i++) objs.push(a.kmalloc(64));
  let deferred = -1;
  let call = "not reached";
  let page = 0;
  let armed = false;
  a.setReentryHook((p: string) => {
    if (p !== "pcp:acquire" || !armed || deferred >= 0) return;
    for (const o of objs) a.kfreeNolock(o); // A's pcp section: deferred on A's list
    deferred = a.stats().deferredObjects;
  });
  const r = once(b, "list:acquire", () => {
    armed = true;
    page = a.allocPagesNolock(0);
    try {
      a.kfree(a.kmalloc(64)); // would drain A's list, which needs the list lock B holds
      call = "ok";
    } catch (e) {
      call = (e as { code: string }).code;
    }
  });
  const t: number[] = [];
  for (let i = 0; i < 300; i++) t.push(b.kmalloc(64));
  for (const x of t) b.kfree(x);
  a.setReentryHook(null);
  b.setReentryHook(null);
  assert.equal(r.result, "ok");
  assert.ok(deferred > 100, `most went on A's deferred list (the rest to its sheaf): ${deferred}`);
  assert.equal(call, "EDEADLK");
  assert.deepEqual(errors, [], "nothing was dropped to onError");
  assert.equal(a.stats().deferredObjects, deferred, "the deferred objects wait for a later drain");
  if (page !== 0) a.freePages(page, 0);
  a.kfree(a.kmalloc(64)); // the next normal call drains them
  assert.equal(a.stats().deferredObjects, 0);
  assert.equal(a.stats().slabs.find((s) => s.name === "kmalloc-64")!.activeObjects, 0);
  b.detach();
  allPagesFree(a);
  a.detach();
});

test("debug mode: a kfree refused with EDEADLK from a hook leaves the object's bytes and state as they were", () => {
  for (const at of ["barn:acquire", "barn:release", "list:acquire", "pcp:acquire"]) {
    const h = Heap.create({ size: 8 * MiB, cpus: 2, debug: true });
    const obj = h.kmalloc(64);
    h.u32.fill(0x11111111, obj >> 2, (obj + 64) >> 2);
    const r = once(h, at, () => h.kfree(obj));
    const xs: number[] = [];
    for (let i = 0; i < 200; i++) xs.push(h.kmalloc(128));
    for (const x of xs) h.kfree(x);
    h.setReentryHook(null);
    assert.equal(r.result, "EDEADLK", at);
    assert.deepEqual([...h.u32.subarray(obj >> 2, (obj + 64) >> 2)], new Array(16).fill(0x11111111), `${at}: the object's bytes are the caller's`);
    h.kfree(obj); // still allocated: no EDOUBLEFREE
    allPagesFree(h);
    h.detach();
  }
});

test("kfreeBulk from a hook of a cache-table holder, with a dying cache pending, frees all or nothing: the housekeeping that needs the cache table waits", () => {
  for (const debug of [false, true]) {
    const a = Heap.create({ size: 8 * MiB, cpus: 4, debug });
    const b = Heap.attach(a.buffer);
    const c = Heap.attach(a.buffer);
    const big = c.kmalloc(9000); // pages
    const small = c.kmalloc(192);
    const d = a.createCache("dying", 40);
    const dc = c.findCache("dying")!;
    dc.free(dc.alloc()); // c's sheaf holds d's object: after destroy, d is dying until c flushes
    d.destroy();
    c.trace.on("kfree", () => {}); // c's frees take the slow paths
    const r = once(b, "ctable:acquire", () => c.kfreeBulk([big, small]));
    const x = b.createCache("x", 40);
    b.setReentryHook(null);
    c.trace.clear();
    assert.equal(r.result, "ok", `debug ${debug}: both freed`);
    assert.equal(code(() => c.kfree(small)), "EDOUBLEFREE", "small was freed with big");
    x.destroy();
    c.shrink(); // the housekeeping now: d is released
    assert.ok(!a.stats().slabs.some((s) => s.name === "dying"), "the dying cache was released later");
    b.detach();
    c.detach();
    allPagesFree(a);
    a.detach();
  }
});
