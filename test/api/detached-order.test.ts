/*
 * A detached handle says EDETACHED before it looks at any argument (bad ones included), and its
 * synchronizeRcuAsync() returns a rejected promise rather than throwing. A KmemCache's name and
 * objectSize are read-only own properties.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Heap, HeapError } from "../../src/index.js";

type Any = any; // eslint-disable-line @typescript-eslint/no-explicit-any

function code(fn: () => unknown): string {
  try {
    fn();
    return "no throw";
  } catch (e) {
    return e instanceof HeapError ? e.code : String(e);
  }
}

describe("a detached handle", () => {
  test("every call with bad arguments is EDETACHED, not EINVAL", () => {
    const heap = Heap.create({ size: 4 << 20, cpus: 2 });
    const c = heap.createCache("c", 40);
    heap.detach();
    const h = heap as Any;
    const calls: Record<string, () => unknown> = {
      allocArray: () => h.allocArray(Object, 4),
      allocArrayLength: () => h.allocArray(Uint8Array, -1),
      freeArray: () => h.freeArray(5),
      allocString: () => h.allocString(5),
      readString: () => h.readString("x"),
      kzalloc: () => h.kzalloc(-1, "x"),
      kmalloc: () => h.kmalloc(-1),
      kfree: () => h.kfree("x"),
      allocPagesBulk: () => h.allocPagesBulk(-1, 5),
      kfreeBulk: () => h.kfreeBulk(5),
      createCache: () => h.createCache(5, -1),
      cacheAllocBulk: () => (c as Any).allocBulk(-1, 5),
      cacheFreeBulk: () => (c as Any).freeBulk(5),
    };
    const got = Object.entries(calls).map(([k, f]) => `${k} ${code(f)}`);
    assert.deepEqual(got, Object.keys(calls).map((k) => `${k} EDETACHED`));
  });

  test("synchronizeRcuAsync() returns a promise rejected with EDETACHED", async () => {
    const heap = Heap.create({ size: 4 << 20, cpus: 2 });
    heap.detach();
    let p: Promise<void> | null = null;
    assert.equal(code(() => (p = heap.synchronizeRcuAsync())), "no throw");
    assert.ok(p !== null && (p as unknown) instanceof Promise);
    await assert.rejects(p!, (e: unknown) => e instanceof HeapError && e.code === "EDETACHED");
  });
});

describe("KmemCache name and objectSize", () => {
  test("are read-only own properties: assignment and redefinition throw, stats and errors keep the real name", () => {
    const heap = Heap.create({ size: 4 << 20, cpus: 2 });
    const c = heap.createCache("real", 40);
    for (const k of ["name", "objectSize"] as const) {
      const d = Object.getOwnPropertyDescriptor(c, k)!;
      assert.equal(d.writable, false, k);
      assert.equal(d.configurable, false, k);
      assert.equal(d.enumerable, true, k);
    }
    assert.throws(() => ((c as Any).name = "other"), TypeError);
    assert.throws(() => ((c as Any).objectSize = 1 << 20), TypeError);
    assert.throws(() => Object.defineProperty(c, "name", { value: "other" }), TypeError);
    assert.equal(c.name, "real");
    assert.equal(c.objectSize, 40);
    assert.deepEqual(Object.getOwnPropertyNames(c).sort(), ["name", "objectSize"]);
    c.destroy();
    assert.match(code(() => c.alloc()), /EINVAL/);
    try {
      c.alloc();
    } catch (e) {
      assert.match((e as Error).message, /cache "real" was destroyed/);
    }
  });
});
