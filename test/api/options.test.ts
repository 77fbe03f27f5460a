/*
 * What the public calls take as options and names: plain objects only (own keys, enumerable or
 * not), the inspector's options checked like Heap.create's, page maps that are Uint16Arrays,
 * cache names that are well-formed Unicode and not the built-in caches' names.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Heap, HeapError } from "../../src/index.js";
import { encodePageMap, serveInspector } from "../../src/inspector.js";
import { layersOf } from "../../src/layers.js";

const MiB = 1 << 20;
type Any = never;

function thrown(fn: () => unknown): HeapError {
  try {
    fn();
  } catch (e) {
    if (e instanceof HeapError) return e;
    assert.fail(`expected a HeapError, got ${e instanceof Error ? `${e.name}: ${e.message}` : typeof e}`);
  }
  assert.fail("expected a HeapError, nothing was thrown");
}

describe("options objects", () => {
  test("only plain objects: a Date, a boxed Number, a Map, a class instance, Object.create(...) are EINVAL", () => {
    const KNOWN = "size, maxSize, cpus, debug, maxCaches, noBlock, faultInjection, memory, buffer, offset";
    const CASES: [string, unknown, string][] = [
      ["a Date", new Date(0), `not an object (Date)`],
      ["a boxed Number", new Number(64), `not an object (Number)`],
      ["a Map", new Map([["size", MiB]]), `not an object (Map)`],
    ];
    for (const [what, v, tail] of CASES) {
      const e = thrown(() => Heap.create(v as Any));
      assert.equal(e.code, "EINVAL", what);
      assert.equal(e.message, `EINVAL: Heap.create options must be an object of options (${KNOWN}), ${tail}`, what);
    }
    class Opts {
      size = MiB;
    }
    for (const v of [new Opts(), Object.create({ size: MiB }) as unknown]) {
      assert.equal(
        thrown(() => Heap.create(v as Any)).message,
        `EINVAL: Heap.create options must be a plain object of options (${KNOWN}), not an object with a prototype of its own (a class instance or Object.create(...))`,
      );
    }
    assert.match(thrown(() => Heap.create({ size: MiB, debug: new Number(1) as Any })).message, /^EINVAL: option debug must be an object of options \(poison, redzone, track\), not an object \(Number\)$/);
    assert.match(thrown(() => Heap.create({ size: MiB }).createCache("c", 8, Object.create({ align: 16 }) as Any)).message, /^EINVAL: createCache options must be a plain object of options \(align\)/);
  });

  test("a non-enumerable own typo and a symbol key are EINVAL; inherited keys are not read", () => {
    const o = { size: MiB };
    Object.defineProperty(o, "sise", { value: 5 });
    assert.match(thrown(() => Heap.create(o)).message, /^EINVAL: unknown option "sise" in Heap\.create options; did you mean "size"\?/);
    assert.match(thrown(() => Heap.create({ size: MiB, [Symbol("x")]: 1 } as Any)).message, /^EINVAL: unknown option Symbol\(x\) in Heap\.create options: options are named by strings/);
    const proto = Object.prototype as Record<string, unknown>;
    proto.cpus = 1;
    proto.debug = true;
    try {
      const h = Heap.create({ size: MiB, cpus: undefined });
      assert.equal(h.stats().cpus, 64, "Object.prototype.cpus is not an option");
      h.kfree(h.kmalloc(8));
      h.validate();
      assert.equal(Heap.create({ size: MiB }).stats().cpus, 64);
    } finally {
      delete proto.cpus;
      delete proto.debug;
    }
  });
});

describe("pageMap and encodePageMap", () => {
  test("anything but a Uint16Array is EINVAL described without running its code", () => {
    const heap = Heap.create({ size: 4 * MiB, cpus: 2 });
    const trap = new Proxy({}, {
      get() {
        throw new Error("a trap ran");
      },
    });
    const CASES: [unknown, string][] = [
      ["64", `a string ("64")`],
      [[1], "an array"],
      [{}, "an object"],
      [trap, "an object"],
      [new Proxy(new Uint16Array(4), {}), "an object"],
      [new Uint32Array(4), "an object (Uint32Array)"],
      [null, "null"],
    ];
    for (const [v, what] of CASES) {
      const e = thrown(() => heap.pageMap(v as Any));
      assert.equal(e.code, "EINVAL");
      assert.equal(e.message, `EINVAL: pageMap: out must be a Uint16Array, not ${what}`);
    }
    for (const [v, what] of [[null, "null"], [undefined, "undefined"], [5, "5"], ["abc", `a string ("abc")`], [[1, 2], "an array"]] as const) {
      assert.equal(thrown(() => encodePageMap(v as Any)).message, `EINVAL: encodePageMap: map must be a Uint16Array (from heap.pageMap()), not ${what}`);
    }
    assert.equal(encodePageMap(heap.pageMap()).pages, heap.size / 4096);
  });
});

describe("serveInspector options", () => {
  test("a misspelled option names the closest, and a port given as a string says so", async () => {
    const heap = Heap.create({ size: 4 * MiB, cpus: 2 });
    await assert.rejects(serveInspector(heap, { prot: 8080, intervalMS: 1000 } as Any), (e: HeapError) => {
      assert.equal(e.code, "EINVAL");
      assert.equal(e.message, `EINVAL: serveInspector: unknown option "prot" in options; did you mean "port"? (known: port, host, allowRemote, intervalMs, title, extra)`);
      return true;
    });
    await assert.rejects(serveInspector(heap, { intervalMS: 1000 } as Any), /unknown option "intervalMS" in options; did you mean "intervalMs"\?/);
    await assert.rejects(serveInspector(heap, { port: "8080" } as Any), /^HeapError: EINVAL: serveInspector: port must be a whole number in 0\.\.65535, not a string \("8080"\)$/);
    await assert.rejects(serveInspector({} as Any), /^HeapError: EINVAL: serveInspector: the first argument must be a Heap, not an object$/);
    await assert.rejects(serveInspector(new Proxy({}, { get() {
      throw new Error("a trap ran");
    } }) as Any), /^HeapError: EINVAL: serveInspector: the first argument must be a Heap, not an object$/);
    await assert.rejects(serveInspector(heap, new Date() as Any), /^HeapError: EINVAL: serveInspector: options must be an object of options \(port, .*\), not an object \(Date\)$/);
  });
});

describe("cache names", () => {
  test("a built-in cache's name: findCache returns null, createCache says it is built in", () => {
    const h = Heap.create({ size: MiB, cpus: 2 });
    for (const name of ["kmalloc-8", "kmalloc-64", "kmalloc-8k", "kmem_cache_sheaf"]) {
      assert.equal(h.findCache(name), null, name);
      const e = thrown(() => h.createCache(name, 8));
      assert.equal(e.code, "EINVAL");
      assert.equal(e.message, `EINVAL: "${name}" is the name of a built-in cache (the kmalloc size classes and kmem_cache_sheaf): use kmalloc for memory of its size, or give your cache another name`);
    }
    h.createCache("mine", 8);
    assert.match(thrown(() => h.createCache("mine", 8)).message, /^EINVAL: a cache named "mine" exists: use findCache$/);
    h.validate();
  });

  test("a name that is not well-formed Unicode is EINVAL and does not collide with U+FFFD", () => {
    const h = Heap.create({ size: MiB, cpus: 2 });
    for (const name of ["\ud800", "a\udc00", "\udc00\ud800"]) {
      const before = h.cacheNames().join();
      const e = thrown(() => h.createCache(name, 8));
      assert.equal(e.code, "EINVAL");
      assert.match(e.message, /^EINVAL: a cache name must be well-formed Unicode, not a string \(.*\) \(it holds a lone surrogate, which UTF-8 cannot keep\)$/);
      assert.equal(h.cacheNames().join(), before);
      assert.match(thrown(() => h.findCache(name)).message, /well-formed Unicode/);
    }
    assert.equal(h.createCache("\ufffd", 8).name, "\ufffd");
    assert.equal(h.createCache("\ud83d\ude00", 8).name, "\ud83d\ude00", "a surrogate pair is fine");
    h.validate();
  });
});

describe("a detached handle", () => {
  test("trace.on throws EDETACHED; trace.off, trace.clear and rcuReadLockHeld() answer as the README says", () => {
    const h = Heap.create({ size: MiB, cpus: 2 });
    const h2 = Heap.attach(h.buffer);
    const handler = (): void => {};
    h2.trace.on("kmalloc", handler);
    h2.detach();
    const e = thrown(() => h2.trace.on("kmalloc", handler));
    assert.equal(e.code, "EDETACHED");
    assert.equal(e.message, "EDETACHED: this handle (cpu 1) was detached");
    h2.trace.off("kmalloc", handler);
    h2.trace.clear();
    assert.equal(layersOf(h2).locks.trace.mask, 0);
    assert.equal(h2.rcuReadLockHeld(), false);
    assert.equal(thrown(() => h2.detach()).code, "EDETACHED");
    assert.equal(h2.attached, false);
  });

  test("grow() names its argument bytes, as the README does", () => {
    const g = Heap.create({ size: 2 * MiB, maxSize: 4 * MiB, cpus: 2 });
    assert.equal(thrown(() => g.grow("1" as Any)).message, `EINVAL: bytes must be a number of bytes, not a string ("1")`);
    assert.equal(thrown(() => g.grow(0)).message, "EINVAL: bytes must be at least 1, not 0");
  });
});
