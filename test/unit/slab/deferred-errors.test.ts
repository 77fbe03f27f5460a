/*
 * Finding 8 of the trust issue: errors that deferred work finds (kfreeRcu batches freed by the
 * agent's timer, rcuBarrier, detach; deferred object lists) go to heap.onError and a slab_error
 * trace event; the rest of the batch is freed; nothing is thrown from the library's timer.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Heap, HeapError, type TraceRecord } from "../../../src/index.js";
import { delay, until } from "../../support/util.js";
import { allPagesFree } from "../../support/check.js";
import { O_FREE_TAG } from "../../../src/core/layout.js";

describe("errors found by deferred work", () => {
  test("a double free found while the timer frees a kfreeRcu batch goes to onError; the rest of the batch is freed", async () => {
    const h = Heap.create({ size: 4 << 20, cpus: 2 });
    const errors: HeapError[] = [];
    h.onError = (e) => errors.push(e);
    const events: TraceRecord[] = [];
    h.trace.on("slab_error", (r) => events.push(r));
    const objs: number[] = [];
    for (let i = 0; i < 20; i++) objs.push(h.kmalloc(64));
    for (const o of objs) h.kfreeRcu(o);
    // Misuse: the caller frees one of them itself while it waits for its grace period.
    h.kfree(objs[5]!);
    // The timer frees the batch (no uncaught exception: node:test would fail the run).
    await until(() => h.stats().rcu.waitingObjects === 0, "the kfreeRcu timer to free the batch", 10_000);
    await delay(10);
    assert.equal(errors.length, 1, "one error reported");
    assert.equal(errors[0]!.code, "EDOUBLEFREE");
    assert.equal(events.length, 1);
    assert.equal(events[0]!.addr, objs[5]);
    h.trace.clear();
    h.shrink();
    const s = h.stats();
    assert.equal(s.slabs.find((c) => c.name === "kmalloc-64")!.activeObjects, 0, "the other 19 objects were freed");
    h.validate();
  });

  test("a clobbered redzone found while rcuBarrier frees a debug batch is reported, restored, and the object freed with the rest", () => {
    const h = Heap.create({ size: 4 << 20, cpus: 2, debug: true });
    const errors: HeapError[] = [];
    h.onError = (e) => errors.push(e);
    const objs: number[] = [];
    for (let i = 0; i < 10; i++) objs.push(h.kmalloc(40));
    for (const o of objs) h.kfreeRcu(o);
    h.u8[objs[3]! + 40] = 0x5a; // a write past the end after kfreeRcu
    h.rcuBarrier();
    assert.equal(errors.length, 1);
    assert.equal(errors[0]!.code, "ECORRUPT");
    assert.equal(h.stats().rcu.waitingObjects, 0);
    h.shrink();
    assert.equal(h.stats().slabs.find((c) => c.name === "kmalloc-64")!.activeObjects, 0, "every object of the batch was freed");
    h.validate();
  });

  test("a clobbered redzone found while the timer frees a debug kfreeRcu batch goes to onError; the rest of the batch is freed", async () => {
    const h = Heap.create({ size: 4 << 20, cpus: 2, debug: true });
    const errors: HeapError[] = [];
    h.onError = (e) => errors.push(e);
    const events: TraceRecord[] = [];
    h.trace.on("slab_error", (r) => events.push(r));
    const objs: number[] = [];
    for (let i = 0; i < 10; i++) objs.push(h.kmalloc(40));
    for (const o of objs) h.kfreeRcu(o);
    h.u8[objs[6]! + 41] = 0x5a; // a write past the end after kfreeRcu
    // No call of the caller's frees the batch: the agent's own timer does (a throw there would be an
    // uncaught exception, and node:test would fail the run).
    await until(() => h.stats().rcu.waitingObjects === 0, "the kfreeRcu timer to free the batch", 10_000);
    await delay(10);
    assert.equal(errors.length, 1, "one error reported");
    assert.equal(errors[0]!.code, "ECORRUPT");
    assert.match(errors[0]!.message, /offset 41 is 0x5a/);
    assert.equal(events.length, 1);
    assert.equal(events[0]!.addr, objs[6]);
    h.trace.clear();
    h.shrink();
    assert.equal(h.stats().slabs.find((c) => c.name === "kmalloc-64")!.activeObjects, 0, "every object of the batch was freed");
    h.validate();
  });

  test("the default onError logs the first error once", async () => {
    const h = Heap.create({ size: 4 << 20, cpus: 2 });
    const logged: unknown[] = [];
    const orig = console.error;
    console.error = (...a: unknown[]) => logged.push(a.join(" "));
    try {
      for (let round = 0; round < 2; round++) {
        const a = h.kmalloc(32);
        h.kfreeRcu(a);
        h.kfree(a);
        h.rcuBarrier();
      }
    } finally {
      console.error = orig;
    }
    assert.equal(logged.length, 1);
    assert.match(String(logged[0]), /EDOUBLEFREE/);
    h.validate();
  });
});

test("onError refuses anything but a function (the handler is kept); null puts the default logger back", () => {
  const heap = Heap.create({ size: 1 << 20, cpus: 1 });
  const mine = (): void => {};
  heap.onError = mine;
  for (const [bad, shown] of [[5, "not 5"], ["log", 'not a string ("log")'], [{}, "not an object"]] as const) {
    let err: unknown;
    try {
      heap.onError = bad as never;
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof HeapError);
    assert.equal(err.code, "EINVAL");
    assert.match(err.message, /^EINVAL: onError must be a function/);
    assert.ok(err.message.includes(shown), err.message);
    assert.equal(heap.onError, mine);
  }
  heap.onError = null as never;
  assert.notEqual(heap.onError, mine);
  assert.equal(typeof heap.onError, "function");
  heap.detach();
});

/** Park `a` on slot `h`'s deferred list: a hook at a pcp lock point of shrink() frees it with kfreeNolock while the sheaves are locked. */
function parkDeferred(h: Heap, a: number): void {
  let fired = false;
  h.setReentryHook((point) => {
    if (point === "pcp:acquire" && !fired) {
      fired = true;
      h.kfreeNolock(a);
    }
  });
  h.shrink();
  h.setReentryHook(null);
  assert.ok(fired);
  assert.equal(h.stats().deferredObjects, 1);
}

/** What `second()` threw (null if nothing) the first time `h` reached lock point `point` while `run()` ran. */
function secondFreeAt(h: Heap, point: string, second: () => void, run: () => void): unknown {
  let got: unknown = "the hook did not run";
  h.setReentryHook((p) => {
    if (p !== point || typeof got !== "string") return;
    try {
      second();
      got = null;
    } catch (e) {
      got = e;
    }
  });
  try {
    run();
  } finally {
    h.setReentryHook(null);
  }
  return got;
}

function assertDoubleFree(got: unknown): void {
  assert.ok(got instanceof HeapError && got.code === "EDOUBLEFREE", `the second free: ${String(got)}`);
}

/**
 * Nothing is free twice: `n` objects of `size` taken in turn by both handles are all distinct
 * (and none of `live`); then everything is freed, `other` detaches, every page comes back.
 */
function eachHandedOutOnce(h: Heap, other: Heap, size: number, n: number, live: readonly number[] = []): void {
  const seen = new Set<number>(live);
  for (let i = 0; i < n; i++) {
    const x = (i & 1 ? other : h).kmalloc(size);
    assert.ok(!seen.has(x), `0x${x.toString(16)} handed out twice`);
    seen.add(x);
  }
  for (const x of seen) h.kfree(x);
  other.detach();
  allPagesFree(h);
  h.detach();
}

describe("a double free of an object on another slot's deferred list", () => {
  for (const via of ["kfree", "kfreeNolock", "kfreeBulk"] as const) {
    for (const size of [16, 64, 192, 512]) {
      test(`${via} by another slot of a ${size} B object that slot 0's kfreeNolock parked on its deferred list is EDOUBLEFREE, the heap unchanged`, () => {
        const h = Heap.create({ size: 16 << 20, cpus: 2 });
        const other = Heap.attach(h.buffer);
        const keep: number[] = [];
        for (let i = 0; i < 200; i++) keep.push(h.kmalloc(size));
        const a = h.kmalloc(size);
        // On slot 0's deferred list, where the next normal call of slot 0 drains it.
        parkDeferred(h, a);
        const before = JSON.stringify(h.stats().slabs);
        const e = (() => {
          try {
            if (via === "kfree") other.kfree(a);
            else if (via === "kfreeNolock") other.kfreeNolock(a);
            else other.kfreeBulk([a]);
          } catch (err) {
            return err;
          }
          return null;
        })();
        assert.ok(e instanceof HeapError && e.code === "EDOUBLEFREE", `a second free of a deferred object: ${String(e)}`);
        assert.equal(JSON.stringify(h.stats().slabs), before, "nothing moved");
        assert.equal(h.stats().deferredObjects, 1);
        // Slot 0 drains it; then every object of the class is handed out once.
        h.kfree(h.kmalloc(size));
        assert.equal(h.stats().deferredObjects, 0);
        const cls = h.stats().slabs.find((c) => c.activeObjects === keep.length && c.size >= size)!;
        assert.equal(cls.activeObjects, keep.length);
        eachHandedOutOnce(h, other, size, 2000, keep);
      });
    }
  }
});

describe("a double free of an object in a sheaf on its way to the barn", () => {
  for (const debug of [false, true]) {
    test(`kfreeNolock by another slot of an object whose full sheaf is in the freeing slot's hand (barn:acquire) is EDOUBLEFREE (debug ${debug})`, () => {
      const h = Heap.create({ size: 16 << 20, cpus: 2, debug });
      const other = Heap.attach(h.buffer);
      const objs: number[] = [];
      for (let i = 0; i < 400; i++) objs.push(h.kmalloc(64));
      // The frees fill the main sheaf with the first objects; when it is full it leaves the pcs
      // line for this slot's hand, and the barn lock is taken: the hook runs there.
      const got = secondFreeAt(h, "barn:acquire", () => other.kfreeNolock(objs[0]!), () => {
        for (const o of objs) h.kfree(o);
      });
      assertDoubleFree(got);
      eachHandedOutOnce(h, other, 64, 800);
    });
  }
});

describe("a double free of a deferred object while its slot's drain frees it", () => {
  for (const size of [64, 2048]) {
    test(`kfree by another slot of a ${size} B object that slot 0's drain has taken off its deferred list, at the drain's sheaf lock, is EDOUBLEFREE`, () => {
      const h = Heap.create({ size: 16 << 20, cpus: 2 });
      const other = Heap.attach(h.buffer);
      const keep: number[] = [];
      for (let i = 0; i < 50; i++) keep.push(h.kmalloc(size));
      const v = h.kmalloc(size);
      parkDeferred(h, v);
      // Slot 0's next call drains its list: v leaves it and goes to a sheaf under the sheaf lock.
      let x = 0;
      const got = secondFreeAt(h, "sheaf:acquire", () => other.kfree(v), () => {
        x = h.kmalloc(size);
      });
      assertDoubleFree(got);
      assert.equal(h.stats().deferredObjects, 0);
      h.kfree(x);
      for (const k of keep) h.kfree(k);
      eachHandedOutOnce(h, other, size, 600);
    });
  }
});

describe("a double free of an object while its first free is still in its slow path", () => {
  for (const second of ["another slot's kfree", "the same slot's kfreeNolock"] as const) {
    test(`${second} of the object a kfree is moving (at its barn lock) is EDOUBLEFREE, and nothing is free twice`, () => {
      const h = Heap.create({ size: 16 << 20, cpus: 2 });
      const other = Heap.attach(h.buffer);
      const objs: number[] = [];
      for (let i = 0; i < 600; i++) objs.push(h.kmalloc(64));
      let current = 0;
      const got = secondFreeAt(h, "barn:acquire", () => (second === "another slot's kfree" ? other.kfree(current) : h.kfreeNolock(current)), () => {
        for (const o of objs) {
          current = o;
          h.kfree(o);
        }
      });
      assertDoubleFree(got);
      eachHandedOutOnce(h, other, 64, 1200);
    });
  }
});

test("a hook's second free of the object an allocation has just popped off its sheaf is EDOUBLEFREE, and it is handed out once", () => {
  for (const via of ["kfree", "kfreeNolock"] as const) {
    const a = Heap.create({ size: 16 << 20, cpus: 4 });
    const b = Heap.attach(a.buffer);
    const freed: number[] = [];
    for (let i = 0; i < 300; i++) freed.push(a.kmalloc(40));
    for (const x of freed) a.kfree(x);
    a.shrink(); // every object back on its slab's freelist: the next kmalloc refills under the sheaf lock
    const given = new Set<number>();
    const accepted: number[] = [];
    a.setReentryHook(() => {
      // The user's second free of objects it freed above and was not given back (a double free).
      for (const x of freed) {
        if (given.has(x) || accepted.includes(x)) continue;
        try {
          if (via === "kfree") b.kfree(x);
          else a.kfreeNolock(x);
          accepted.push(x);
        } catch (e) {
          assert.equal((e as HeapError).code, "EDOUBLEFREE");
        }
      }
    });
    let last = 0;
    for (let i = 0; i < 300 && accepted.length === 0; i++) given.add((last = a.kmalloc(40)));
    a.setReentryHook(null);
    // Before, the object the outer kmalloc was returning was taken by the hook's free at the
    // sheaf lock's release, and handed out again later while the caller held it.
    assert.deepEqual(accepted, [], `${via}: accepted double frees`);
    b.shrink();
    for (let i = 0; i < 600; i++) {
      assert.notEqual(a.kmalloc(40), last);
      assert.notEqual(b.kmalloc(40), last);
    }
    a.validate();
    b.detach();
    a.detach();
  }
});

test("a free of an object a cache.allocBulk in progress has taken (by a hook, by another agent) is EDOUBLEFREE, in debug mode too, and the batch is handed out once", () => {
  for (const debug of [false, true]) {
    for (const via of ["kfree", "other agent", "kfreeNolock", "kfreeRcu", "cache.free"] as const) {
      const a = Heap.create({ size: 16 << 20, cpus: 4, debug });
      const b = Heap.attach(a.buffer);
      const cache = a.createCache("bulk-taken", 48);
      const n = 200; // more than a sheaf: the batch refills, and its lock points run the hook
      const out = new Uint32Array(n);
      const codes = new Set<string>();
      let tried = 0;
      a.setReentryHook(() => {
        // The user's free of objects the batch has taken: they are in `out` already.
        for (let i = 0; i < n && out[i] !== 0; i++) {
          tried++;
          try {
            const x = out[i]!;
            if (via === "kfree") a.kfree(x);
            else if (via === "other agent") b.kfree(x);
            else if (via === "kfreeNolock") a.kfreeNolock(x);
            else if (via === "kfreeRcu") a.kfreeRcu(x);
            else cache.free(x);
            codes.add("accepted");
          } catch (e) {
            codes.add((e as HeapError).code);
          }
        }
      });
      assert.equal(cache.allocBulk(n, out), n);
      a.setReentryHook(null);
      assert.ok(tried > 0, "the hook ran while the batch held objects");
      assert.deepEqual([...codes], ["EDOUBLEFREE"], `debug ${debug}, ${via}: each free was refused`);
      assert.equal(new Set(out).size, n, "the batch is n distinct objects");
      const words = new Int32Array(a.buffer);
      for (const x of out) assert.notEqual(words[x >>> 2], x ^ O_FREE_TAG, "no object carries its free tag once the call returned");
      a.rcuBarrier();
      a.validate();
      // None of them is handed out again while the caller holds it.
      const held = new Set(out);
      for (let i = 0; i < 3 * n; i++) assert.ok(!held.has(cache.alloc()), `debug ${debug}, ${via}: an object of the batch was handed out twice`);
      cache.freeBulk(out);
      a.validate();
      b.detach();
      a.detach();
    }
  }
});

test("a cache.allocBulk that began under a kmem_cache_alloc handler holds what it takes once the handler is off: a hook's free of those objects is EDOUBLEFREE", () => {
  for (const debug of [false, true]) {
    const heap = Heap.create({ size: 8 << 20, cpus: 2, debug });
    const cache = heap.createCache("bulk-once", 64);
    // A handler that switches itself off at its first event: it sees the batch's first object only.
    heap.trace.on("kmem_cache_alloc", function once() {
      heap.trace.off("kmem_cache_alloc", once);
    });
    const n = 200;
    const out = new Uint32Array(n);
    const codes = new Set<string>();
    heap.setReentryHook(() => {
      for (let i = 1; i < n && out[i] !== 0; i++) {
        try {
          heap.kfreeNolock(out[i]!);
          codes.add("accepted");
        } catch (e) {
          codes.add((e as HeapError).code);
        }
      }
    });
    assert.equal(cache.allocBulk(n, out), n);
    heap.setReentryHook(null);
    // Before, the batch held nothing to the end: 198 of those frees were accepted, and out held 3 distinct addresses.
    assert.deepEqual([...codes], ["EDOUBLEFREE"], `debug ${debug}`);
    assert.equal(new Set(out).size, n);
    heap.validate();
    cache.freeBulk(out);
    heap.validate();
    heap.detach();
  }
});
