/*
 * A trace handler that frees the block its event is about: the free (or allocation) in progress must
 * not hand one block out twice. Free events fire once the block is free (objects) or in the
 * freeing slot's hand (pages): a second free from the handler is EDOUBLEFREE. Allocation events
 * fire before the caller has the block: a free of it from the handler is refused.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Heap, type TraceEvent, type TraceRecord } from "../../src/index.js";
import { errCode } from "../support/common.js";

const MiB = 1 << 20;


/** Arm `event` once with `inner(record)`; run `outer`; then allocate `n` times with `alloc`: no address twice, validate ok. */
function check(
  heap: Heap,
  event: TraceEvent,
  inner: (r: TraceRecord) => void,
  outer: () => void,
  alloc: () => number,
): string {
  let got = "not called";
  const handler = (r: TraceRecord): void => {
    heap.trace.off(event, handler);
    got = errCode(() => inner(r));
  };
  heap.trace.on(event, handler);
  outer();
  heap.trace.clear();
  const seen = new Set<number>();
  for (let i = 0; i < 64; i++) {
    const a = alloc();
    assert.notEqual(a, 0);
    assert.ok(!seen.has(a), `address ${a} handed out twice`);
    seen.add(a);
  }
  heap.validate();
  return got;
}

for (const debug of [false, true]) {
  describe(`a handler frees the block of its own event${debug ? " (debug)" : ""}`, () => {
    const mk = (): Heap => Heap.create({ size: 8 * MiB, cpus: 2, debug });

    test("kfree event: kfreeNolock, kfree and kfreeRcu of the object are EDOUBLEFREE", () => {
      for (const how of ["kfreeNolock", "kfree", "kfreeRcu"] as const) {
        const h = mk();
        const got = check(h, "kfree", (r) => h[how](r.addr!), () => h.kfree(h.kmalloc(64)), () => h.kmalloc(64));
        assert.equal(got, "EDOUBLEFREE", how);
        assert.equal(h.stats().slabs.find((s) => s.name === "kmalloc-64")!.activeObjects, 64);
      }
    });

    test("kmem_cache_free event: kfreeNolock and cache.free of the object are EDOUBLEFREE", () => {
      for (const how of ["kfreeNolock", "free"] as const) {
        const h = mk();
        const c = h.createCache("c", 40);
        const got = check(h, "kmem_cache_free", (r) => (how === "free" ? c.free(r.addr!) : h.kfreeNolock(r.addr!)), () => c.free(c.alloc()), () => c.alloc());
        assert.equal(got, "EDOUBLEFREE", how);
        assert.equal(c.stats().activeObjects, 64);
      }
    });

    test("mm_page_free event: freePagesNolock and freePages of the block are EDOUBLEFREE, orders 0 and 3", () => {
      for (const order of [0, 3]) {
        for (const how of ["freePagesNolock", "freePages"] as const) {
          const h = mk();
          const free0 = h.stats().freePages;
          const got = check(h, "mm_page_free", (r) => h[how](r.addr!, r.order!), () => h.freePages(h.allocPages(order), order), () => h.allocPages(order));
          assert.equal(got, "EDOUBLEFREE", `${how} order ${order}`);
          h.shrink();
          assert.equal(h.stats().freePages, free0 - 64 * (1 << order));
        }
      }
    });

    test("the nolock free's event (freePagesNolock, kfreeNolock) refuses a second free too", () => {
      const h = mk();
      assert.equal(check(h, "mm_page_free", (r) => h.freePages(r.addr!, r.order!), () => h.freePagesNolock(h.allocPages(0), 0), () => h.allocPages(0)), "EDOUBLEFREE");
      const h2 = mk();
      assert.equal(check(h2, "kfree", (r) => h2.kfree(r.addr!), () => h2.kfreeNolock(h2.kmalloc(64)), () => h2.kmalloc(64)), "EDOUBLEFREE");
    });

    test("allocation events: a free of the block being returned is refused, the caller gets it allocated", () => {
      const h = mk();
      let a = 0;
      assert.equal(check(h, "kmalloc", (r) => h.kfreeNolock(r.addr!), () => (a = h.kmalloc(64)), () => h.kmalloc(64)), "EINVAL");
      h.kfree(a);
      assert.equal(check(h, "kmalloc", (r) => h.kfreeRcu(r.addr!), () => (a = h.kmallocNolock(64)), () => h.kmalloc(64)), "EINVAL");
      h.kfree(a);
      assert.equal(check(h, "kmalloc", (r) => h.kfree(r.addr!), () => (a = h.kmalloc(20000)), () => h.kmalloc(64)), "EINVAL");
      h.kfree(a);
      const c = h.createCache("c", 40);
      assert.equal(check(h, "kmem_cache_alloc", (r) => c.free(r.addr!), () => (a = c.alloc()), () => c.alloc()), "EINVAL");
      c.free(a);
      assert.equal(check(h, "mm_page_alloc", (r) => h.freePagesNolock(r.addr!, r.order!), () => (a = h.allocPages(2)), () => h.allocPages(0)), "EDOUBLEFREE");
      h.freePages(a, 2);
      h.validate();
    });
  });
}
