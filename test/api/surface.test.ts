/*
 * The public surface is the documented API and nothing else: a user's callback never gets an
 * internal object as `this`; heap.trace has only its documented members; what a user sets on the
 * views it gets changes nothing the allocator does; the exported tables are frozen; no KmemCache
 * or Trace can be made with `new`; a builtin patched after load never receives a layer.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ErrorCode, GFP, Heap, HeapError, KMALLOC_SIZES, KmemCache, LOCK_NAMES, PAGE_STATE, TRACE_EVENTS } from "../../src/index.js";
import type { Trace } from "../../src/index.js";

type Any = any; // eslint-disable-line @typescript-eslint/no-explicit-any

function thrown(f: () => unknown): HeapError {
  try {
    f();
  } catch (e) {
    if (e instanceof HeapError) return e;
    throw e;
  }
  assert.fail("expected a HeapError");
}

test("the reentry hook, onError and trace handlers run with `this` undefined", () => {
  const h = Heap.create({ size: 4 << 20, cpus: 2 });
  const seen: unknown[] = [];
  h.setReentryHook(function (this: unknown) {
    seen.push(this);
  });
  h.kfree(h.kmalloc(5000));
  h.setReentryHook(null);
  assert.ok(seen.length > 0);
  assert.deepEqual(new Set(seen), new Set([undefined]));

  const traced: unknown[] = [];
  const handler = function (this: unknown): void {
    traced.push(this);
  };
  h.trace.on("kmalloc", handler);
  h.trace.on("kfree", handler);
  h.kfree(h.kmalloc(64));
  h.trace.clear();
  assert.equal(traced.length, 2);
  assert.deepEqual(traced, [undefined, undefined]);

  // A kfree of an object queued for kfreeRcu is reported to onError when the batch is freed.
  const errors: unknown[] = [];
  h.onError = function (this: unknown, err: HeapError) {
    errors.push(this, err.code);
  };
  const a = h.kmalloc(64);
  h.kfreeRcu(a);
  h.kfree(a);
  h.rcuBarrier();
  assert.deepEqual(errors, [undefined, "EDOUBLEFREE"]);
  h.onError = null;
  h.detach();
});

test("heap.trace has exactly the documented members, and none can be reached or patched into the allocator", () => {
  const h = Heap.create({ size: 4 << 20, cpus: 2 });
  const other = Heap.attach(h.buffer);
  const t = h.trace;
  assert.deepEqual(Reflect.ownKeys(t), []);
  const proto = Object.getPrototypeOf(t) as Record<string, unknown>;
  assert.deepEqual(Reflect.ownKeys(proto).sort(), ["clear", "constructor", "dropped", "off", "on"]);
  assert.equal(Object.getPrototypeOf(proto), Object.prototype);
  for (const name of ["mask", "depth", "handlers", "onError", "onChange", "detached", "emit"]) assert.equal((t as Any)[name], undefined, name);
  assert.equal(t.dropped, 0);
  assert.equal(h.trace, t);
  // `dropped` is a getter: a user's write does not reach the counter.
  assert.throws(() => {
    (t as Any).dropped = 5;
  }, TypeError);
  // Patching the facade's prototype changes nothing the allocator delivers to another handle.
  const records: string[] = [];
  (proto as Any).emit = () => records.push("patched");
  other.trace.on("kmalloc", (r) => records.push(r.event));
  other.kfree(other.kmalloc(64));
  delete (proto as Any).emit;
  assert.deepEqual(records, ["kmalloc"]);
  // The facade cannot be made with new, even with a state-looking object.
  const Ctor = t.constructor as unknown as new (...a: unknown[]) => Trace;
  assert.equal(thrown(() => new Ctor()).code, "EINVAL");
  assert.equal(thrown(() => new Ctor({}, { on() {} })).code, "EINVAL");
  other.detach();
  // A detached handle's trace refuses on(); nothing a user sets brings it back.
  assert.equal(thrown(() => other.trace.on("kmalloc", () => {})).code, "EDETACHED");
  (other.trace as Any).detached = null;
  assert.equal(thrown(() => other.trace.on("kmalloc", () => {})).code, "EDETACHED");
  h.detach();
});

test("methods set on the user's views change nothing the allocator does", () => {
  for (const debug of [false, true]) {
    const h = Heap.create({ size: 4 << 20, cpus: 2, debug });
    const calls: string[] = [];
    const views = { u8: h.u8, i32: h.i32, u32: h.u32, f64: h.f64 } as Record<string, Any>;
    for (const [v, view] of Object.entries(views)) {
      for (const m of ["fill", "copyWithin", "set", "subarray", "slice"]) {
        view[m] = function (): unknown {
          calls.push(`${v}.${m}`);
          return this;
        };
      }
    }
    // Dirty bytes, then kzalloc over them: every byte zero.
    const a = h.kmalloc(4000);
    Uint8Array.prototype.fill.call(h.u8, 0xee, a, a + 4000);
    h.kfree(a);
    const z = h.kzalloc(4000);
    let nonzero = 0;
    for (let i = 0; i < 4000; i++) if (h.u8[z + i] !== 0) nonzero++;
    assert.equal(nonzero, 0, `debug ${debug}`);
    const g = h.kmalloc(64, GFP.ZERO);
    assert.equal(h.u8[g], 0);
    // krealloc copies the bytes itself.
    const s = h.kmalloc(16);
    for (let i = 0; i < 16; i++) h.u8[s + i] = i + 1;
    const r = h.krealloc(s, 3000);
    assert.deepEqual([...Uint8Array.prototype.slice.call(h.u8, r, r + 16)], Array.from({ length: 16 }, (_, i) => i + 1));
    const c = h.createCache("surface-views", 48);
    assert.equal(c.name, "surface-views");
    const o = c.alloc();
    c.free(o);
    c.destroy();
    h.kfree(z);
    h.kfree(g);
    h.kfree(r);
    h.validate();
    assert.deepEqual(calls, [], `debug ${debug}`);
    h.detach();
  }
});

test("the user's views are other objects over the heap's bytes, rebuilt after growth", () => {
  const h = Heap.create({ size: 2 << 20, maxSize: 4 << 20, cpus: 2 });
  const before = h.u8;
  const a = h.kmalloc(64);
  before[a] = 7;
  assert.equal(h.grow(3 << 20), 3 << 20);
  assert.equal(h.size, 3 << 20);
  assert.notEqual(h.u8, before);
  assert.equal(h.u8.length, h.size);
  assert.equal(h.i32.length, h.size >>> 2);
  assert.equal(h.u8[a], 7);
  h.kfree(a);
  h.detach();
});

test("every exported table is frozen, and the allocator's behaviour does not depend on a write to one", () => {
  for (const [name, table] of Object.entries({ GFP, ErrorCode, PAGE_STATE, TRACE_EVENTS, KMALLOC_SIZES, LOCK_NAMES })) {
    assert.equal(Object.isFrozen(table), true, name);
  }
  assert.throws(() => {
    (ErrorCode as Any).EINVAL = "EOK";
  }, TypeError);
  assert.throws(() => {
    (TRACE_EVENTS as Any).length = 0;
  }, TypeError);
  assert.throws(() => {
    (PAGE_STATE as Any).free = 999;
  }, TypeError);
  const h = Heap.create({ size: 4 << 20, cpus: 2 });
  assert.equal(thrown(() => h.kfree(7)).code, "EINVAL");
  const last = h.pageMap().at(-1)!;
  assert.ok(last >= PAGE_STATE.free && last < PAGE_STATE.slab, `last page ${last}`);
  h.detach();
});

test("a KmemCache cannot be made with new, not even while the library makes one", () => {
  const h = Heap.create({ size: 4 << 20, cpus: 2 });
  h.createCache("surface-ctor", 32);
  const Ctor = KmemCache as unknown as new (...a: unknown[]) => KmemCache;
  assert.equal(thrown(() => new Ctor({}, 0, 0)).code, "EINVAL");
  // Inside findCache (where an older release opened its module-flag window).
  const errors: string[] = [];
  const slice = Uint8Array.prototype.slice;
  const patched = function (this: unknown, ...a: unknown[]): unknown {
    errors.push(thrown(() => new Ctor({ cacheWOf: () => 0 }, 0, 0)).code);
    return slice.apply(this as Uint8Array, a as [number, number]);
  };
  (Uint8Array.prototype as Any).slice = patched;
  let found: KmemCache | null;
  try {
    found = h.findCache("surface-ctor");
  } finally {
    delete (Uint8Array.prototype as Any).slice;
  }
  assert.equal(found?.name, "surface-ctor");
  assert.ok(errors.length > 0);
  assert.deepEqual(new Set(errors), new Set(["EINVAL"]));
  h.detach();
});

test("builtins patched after the library loaded never receive a layer", () => {
  const got: string[] = [];
  const set = WeakMap.prototype.set;
  const push = Array.prototype.push;
  WeakMap.prototype.set = function (this: WeakMap<object, unknown>, k: object, v: unknown) {
    if (v !== null && typeof v === "object") got.push(`WeakMap.set ${(v as object).constructor?.name ?? "null-proto"}`);
    return set.call(this, k, v);
  };
  Array.prototype.push = function (this: unknown[], ...a: unknown[]) {
    for (const x of a) if (x !== null && typeof x === "object" && /Allocator|Locks|Mem/.test((x as object).constructor?.name ?? "")) got.push(`Array.push ${(x as object).constructor.name}`);
    return push.apply(this, a);
  };
  let h: Heap;
  let h2: Heap;
  try {
    h = Heap.create({ size: 4 << 20, cpus: 2 });
    h2 = Heap.attach(h.buffer);
  } finally {
    WeakMap.prototype.set = set;
    Array.prototype.push = push;
  }
  assert.deepEqual(got.filter((s) => !/WeakRef|Array$/.test(s) && /Allocator|Locks|Mem|Object/.test(s)), []);
  h2.detach();
  h.detach();
});

test("serveInspector refuses a Proxy of a Heap and an object inheriting from one with EINVAL", async () => {
  const { serveInspector } = await import("../../src/inspector.js");
  const h = Heap.create({ size: 4 << 20, cpus: 2 });
  for (const fake of [new Proxy(h, {}), Object.create(h) as Heap]) {
    const e = await serveInspector(fake).then(
      () => assert.fail("served a fake heap"),
      (err: unknown) => err,
    );
    assert.ok(e instanceof HeapError);
    assert.equal(e.message, "EINVAL: serveInspector: the first argument must be a Heap, not an object");
  }
  h.detach();
});
