/*
 * Bad input, as a hostile user would give it: every JavaScript type, NaN, negative and fractional
 * numbers, Proxies whose traps throw, getters that throw, options with prototypes, frozen and
 * too-short output arrays, to every public call. Each must throw a HeapError (never a TypeError,
 * never the caller's own exception) whose message names the argument and what was given, and
 * must leave the heap exactly as it was: stats() (event counters included) the same before and
 * after, validate() clean.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { GFP, Heap, HeapError, type KmemCache } from "../../src/index.js";

const MiB = 1 << 20;

/** What `fn` threw: a HeapError, or the test fails saying what came instead. */
function thrown(fn: () => unknown, what = ""): HeapError {
  try {
    fn();
  } catch (e) {
    if (e instanceof HeapError) return e;
    assert.fail(`${what}: expected a HeapError, got ${e instanceof Error ? `${e.name}: ${e.message}` : typeof e}`);
  }
  assert.fail(`${what}: expected a HeapError, nothing was thrown`);
}

const trapThrows = (): never => {
  throw new Error("a trap ran");
};
const hostileProxy = new Proxy([] as unknown[], {
  get: trapThrows,
  set: trapThrows,
  has: trapThrows,
  ownKeys: trapThrows,
  getPrototypeOf: trapThrows,
  getOwnPropertyDescriptor: trapThrows,
  isExtensible: trapThrows,
  defineProperty: trapThrows,
});
const revoked = Proxy.revocable({}, {});
revoked.revoke();

/** label, value, and what the message must contain (a fragment of how the value is described). New objects each time: a call that takes one may change it. */
const garbage = (): [string, unknown, RegExp | null][] => [
  ["a string", "64", /a string \("64"\)/],
  ["an empty string", "", /a string \(""\)/],
  ["a bigint", 64n, /a bigint \(64n\)/],
  ["a symbol", Symbol("s"), /a symbol \(Symbol\(s\)\)/],
  ["null", null, /null/],
  ["undefined", undefined, /undefined/],
  ["NaN", NaN, /NaN/],
  ["a negative number", -8, /-8/],
  ["a fraction", 1.5, /1\.5/],
  ["Infinity", Infinity, /Infinity/],
  ["true", true, /a boolean \(true\)/],
  ["an object", {}, null],
  ["an array", [64], null],
  ["a function", () => 64, null],
  ["an object whose valueOf throws", { valueOf: trapThrows, toString: trapThrows, [Symbol.toPrimitive]: trapThrows }, null],
  ["a Proxy whose every trap throws", hostileProxy, null],
  ["a revoked Proxy", revoked.proxy, null],
];

interface Env {
  h: Heap;
  page: number;
  obj: number;
  cache: KmemCache;
}

/**
 * One argument position of one call: `call(env, x)` passes garbage `x` there, valid values
 * elsewhere. `name` must appear in the message; `valid` lists the garbage labels that are
 * legitimate values there; `code` is the error expected (EINVAL unless said).
 */
interface Slot {
  call: string;
  name: RegExp;
  run: (e: Env, x: unknown) => unknown;
  valid?: string[];
  code?: string;
  /** Garbage this call describes in its own words: label -> what the message must hold instead. */
  said?: Record<string, RegExp>;
}

/* eslint-disable @typescript-eslint/no-explicit-any */
type Any = any;
const SLOTS: Slot[] = [
  { call: "allocPages(order)", name: /order/, run: (e, x) => e.h.allocPages(x as Any) },
  { call: "allocPages(0, gfp)", name: /gfp/, run: (e, x) => e.h.allocPages(0, x as Any), valid: ["undefined"] },
  { call: "freePages(addr, 0)", name: /addr/, run: (e, x) => e.h.freePages(x as Any, 0) },
  { call: "freePages(page, order)", name: /order/, run: (e, x) => e.h.freePages(e.page, x as Any) },
  { call: "allocPagesBulk(count, [])", name: /count/, run: (e, x) => e.h.allocPagesBulk(x as Any, []) },
  { call: "allocPagesBulk(2, out)", name: /out/, run: (e, x) => e.h.allocPagesBulk(2, x as Any), valid: ["an array"] },
  { call: "allocPagesBulk(2, [], gfp)", name: /gfp/, run: (e, x) => e.h.allocPagesBulk(2, [], x as Any), valid: ["undefined"] },
  { call: "allocPagesNolock(order)", name: /order/, run: (e, x) => e.h.allocPagesNolock(x as Any) },
  { call: "allocPagesNolock(0, gfp)", name: /gfp/, run: (e, x) => e.h.allocPagesNolock(0, x as Any), valid: ["undefined"] },
  { call: "freePagesNolock(addr, 0)", name: /addr/, run: (e, x) => e.h.freePagesNolock(x as Any, 0) },
  { call: "freePagesNolock(page, order)", name: /order/, run: (e, x) => e.h.freePagesNolock(e.page, x as Any) },
  { call: "kmalloc(size)", name: /size/, run: (e, x) => e.h.kmalloc(x as Any) },
  { call: "kmalloc(8, gfp)", name: /gfp/, run: (e, x) => e.h.kmalloc(8, x as Any), valid: ["undefined"] },
  { call: "kzalloc(size)", name: /size/, run: (e, x) => e.h.kzalloc(x as Any) },
  { call: "kzalloc(8, gfp)", name: /gfp/, run: (e, x) => e.h.kzalloc(8, x as Any), valid: ["undefined"] },
  { call: "kmallocNolock(size)", name: /size/, run: (e, x) => e.h.kmallocNolock(x as Any) },
  { call: "kmallocNolock(8, gfp)", name: /gfp/, run: (e, x) => e.h.kmallocNolock(8, x as Any), valid: ["undefined"] },
  { call: "kfree(addr)", name: /addr/, run: (e, x) => e.h.kfree(x as Any) },
  { call: "kfreeNolock(addr)", name: /addr/, run: (e, x) => e.h.kfreeNolock(x as Any) },
  { call: "ksize(addr)", name: /addr/, run: (e, x) => e.h.ksize(x as Any) },
  { call: "kfreeRcu(addr)", name: /addr/, run: (e, x) => e.h.kfreeRcu(x as Any) },
  { call: "krealloc(addr, 8)", name: /addr/, run: (e, x) => e.h.krealloc(x as Any, 8) },
  { call: "krealloc(obj, size)", name: /size/, run: (e, x) => e.h.krealloc(e.obj, x as Any) },
  { call: "krealloc(obj, 0, gfp)", name: /gfp/, run: (e, x) => e.h.krealloc(e.obj, 0, x as Any), valid: ["undefined"] },
  { call: "krealloc(obj, 200, gfp)", name: /gfp/, run: (e, x) => e.h.krealloc(e.obj, 200, x as Any), valid: ["undefined"] },
  { call: "kfreeBulk(addrs)", name: /addrs/, run: (e, x) => e.h.kfreeBulk(x as Any) },
  { call: "kfreeBulk([obj, addr])", name: /addrs\[1\]/, run: (e, x) => e.h.kfreeBulk([e.obj, x as Any]) },
  { call: "createCache(name, 8)", name: /cache name/, run: (e, x) => e.h.createCache(x as Any, 8), valid: ["a string"], said: { "an empty string": /the name given is empty \(""\)/ } },
  { call: "createCache('c', objectSize)", name: /objectSize/, run: (e, x) => e.h.createCache("c", x as Any) },
  { call: "createCache('c', 8, options)", name: /createCache options/, run: (e, x) => e.h.createCache("c", 8, x as Any), valid: ["undefined", "an object"] },
  { call: "createCache('c', 8, { align })", name: /align/, run: (e, x) => e.h.createCache("c", 8, { align: x as Any }), valid: ["undefined"] },
  { call: "findCache(name)", name: /cache name/, run: (e, x) => e.h.findCache(x as Any), valid: ["a string"], said: { "an empty string": /the name given is empty \(""\)/ } },
  { call: "cache.alloc(gfp)", name: /gfp/, run: (e, x) => e.cache.alloc(x as Any), valid: ["undefined"] },
  { call: "cache.free(addr)", name: /addr/, run: (e, x) => e.cache.free(x as Any) },
  { call: "cache.allocBulk(count, [])", name: /count/, run: (e, x) => e.cache.allocBulk(x as Any, []) },
  { call: "cache.allocBulk(2, out)", name: /out/, run: (e, x) => e.cache.allocBulk(2, x as Any), valid: ["an array"] },
  { call: "cache.allocBulk(2, [], gfp)", name: /gfp/, run: (e, x) => e.cache.allocBulk(2, [], x as Any), valid: ["undefined"] },
  { call: "cache.freeBulk(addrs)", name: /addrs/, run: (e, x) => e.cache.freeBulk(x as Any) },
  { call: "cache.freeBulk([addr])", name: /addrs\[0\]/, run: (e, x) => e.cache.freeBulk([x as Any]) },
  { call: "reclaimSlot(cpu)", name: /cpu/, run: (e, x) => e.h.reclaimSlot(x as Any) },
  { call: "grow(bytes)", name: /bytes/, run: (e, x) => e.h.grow(x as Any) },
  { call: "trace.on(event, fn)", name: /trace event/, run: (e, x) => e.h.trace.on(x as Any, () => {}), said: { "a string": /unknown trace event "64"/, "an empty string": /unknown trace event ""/ } },
  { call: "trace.on('kmalloc', handler)", name: /trace handler/, run: (e, x) => e.h.trace.on("kmalloc", x as Any), valid: ["a function"] },
  { call: "trace.off(event, fn)", name: /trace event/, run: (e, x) => e.h.trace.off(x as Any, () => {}), said: { "a string": /unknown trace event "64"/, "an empty string": /unknown trace event ""/ } },
  { call: "setReentryHook(fn)", name: /reentry hook/, run: (e, x) => e.h.setReentryHook(x as Any), valid: ["null", "a function"] },
  { call: "Heap.attach(buffer, options)", name: /Heap\.attach options/, run: (e, x) => Heap.attach(e.h.buffer, x as Any), valid: ["undefined", "an object"] },
  { call: "Heap.attach(buffer, { noBlock })", name: /noBlock/, run: (e, x) => Heap.attach(e.h.buffer, { noBlock: x as Any }), valid: ["undefined", "true"] },
  { call: "Heap.attach(buffer)", name: /SharedArrayBuffer/, run: (_e, x) => Heap.attach(x as Any) },
];

/** Heap.create's options: no heap to compare, only the error. */
const CREATE_SLOTS: Slot[] = [
  { call: "Heap.create(options)", name: /Heap\.create options/, run: (_e, x) => Heap.create(x as Any), valid: ["undefined", "an object"] },
  ...["size", "maxSize", "cpus", "maxCaches"].map((k) => ({
    call: `Heap.create({ ${k} })`,
    name: new RegExp(`option ${k}`),
    run: (_e: Env, x: unknown) => Heap.create({ size: 2 * MiB, cpus: 2, [k]: x }),
    valid: ["undefined"],
  })),
  { call: "Heap.create({ debug })", name: /option debug/, run: (_e, x) => Heap.create({ size: 2 * MiB, cpus: 2, debug: x as Any }), valid: ["undefined", "true", "an object"] },
  { call: "Heap.create({ debug: { poison } })", name: /option debug\.poison/, run: (_e, x) => Heap.create({ size: 2 * MiB, cpus: 2, debug: { poison: x as Any } }), valid: ["undefined", "true"] },
  { call: "Heap.create({ noBlock })", name: /option noBlock/, run: (_e, x) => Heap.create({ size: 2 * MiB, cpus: 2, noBlock: x as Any }), valid: ["undefined", "true"] },
  { call: "Heap.create({ faultInjection })", name: /option faultInjection/, run: (_e, x) => Heap.create({ size: 2 * MiB, cpus: 2, faultInjection: x as Any }), valid: ["undefined"] },
  { call: "Heap.create({ faultInjection: { rate } })", name: /faultInjection\.rate/, run: (_e, x) => Heap.create({ size: 2 * MiB, cpus: 2, faultInjection: { rate: x as Any } }) },
];

function setup(): Env {
  const h = Heap.create({ size: 4 * MiB, maxSize: 8 * MiB, cpus: 4 });
  const page = h.allocPages(1);
  const obj = h.kmalloc(100);
  const cache = h.createCache("hostile", 40);
  cache.free(cache.alloc());
  return { h, page, obj, cache };
}

describe("every public call turns garbage into a HeapError that says what was wrong, and changes nothing", () => {
  for (const slot of SLOTS) {
    test(slot.call, () => {
      const e = setup();
      for (const [label, value, given] of garbage()) {
        if (slot.valid?.includes(label)) continue;
        const fragment = slot.said?.[label] ?? given;
        const before = JSON.stringify(e.h.stats());
        const err = thrown(() => slot.run(e, value), `${slot.call} with ${label}`);
        const where = `${slot.call} with ${label}: ${err.message}`;
        assert.equal(err.code, slot.code ?? "EINVAL", where);
        assert.match(err.message, slot.name, `${where}: the message names the argument`);
        if (fragment !== null) assert.match(err.message, fragment, `${where}: the message says what was given`);
        assert.equal(JSON.stringify(e.h.stats()), before, `${where}: the heap changed`);
        e.h.validate();
      }
    });
  }
  for (const slot of CREATE_SLOTS) {
    test(slot.call, () => {
      for (const [label, value, fragment] of garbage()) {
        if (slot.valid?.includes(label)) continue;
        const err = thrown(() => slot.run(null as unknown as Env, value), `${slot.call} with ${label}`);
        const where = `${slot.call} with ${label}: ${err.message}`;
        assert.equal(err.code, "EINVAL", where);
        assert.match(err.message, slot.name, `${where}: the message names the argument`);
        if (fragment !== null) assert.match(err.message, fragment, `${where}: the message says what was given`);
      }
    });
  }
});

describe("messages say what was wrong with what was given", () => {
  const h = Heap.create({ size: 4 * MiB, cpus: 2 });
  const CASES: [string, () => unknown, RegExp][] = [
    ['kmalloc("64")', () => h.kmalloc("64" as Any), /^EINVAL: size must be a number of bytes, not a string \("64"\)$/],
    ["kmalloc(2**31)", () => h.kmalloc(2 ** 31), /^EINVAL: size 2147483648 is too large: the largest kmalloc is 4194304 bytes/],
    ["kmalloc(0)", () => h.kmalloc(0), /^EINVAL: size must be at least 1, not 0$/],
    ["kmalloc(2.5)", () => h.kmalloc(2.5), /^EINVAL: size must be a whole number of bytes, not 2\.5$/],
    ["kmalloc(8, 1 << 9)", () => h.kmalloc(8, 1 << 9), /^EINVAL: gfp 512 is not a combination of GFP flags \(KERNEL 0, NOWAIT 1, ATOMIC 2, ZERO 4, NOWARN 8, FAST_TRY 16\)$/],
    ["allocPages(11)", () => h.allocPages(11), /^EINVAL: order 11 is too large: orders are 0\.\.10/],
    ["Heap.create({ sise: 1 })", () => Heap.create({ sise: 1 } as Any), /^EINVAL: unknown option "sise" in Heap\.create options; did you mean "size"\?/],
    ["Heap.create({ CPUS: 2 })", () => Heap.create({ CPUS: 2 } as Any), /did you mean "cpus"\?/],
    ["Heap.create({ zzz: 1 })", () => Heap.create({ zzz: 1 } as Any), /^EINVAL: unknown option "zzz" in Heap\.create options \(known: size, maxSize, cpus, debug, maxCaches, noBlock, faultInjection, memory, buffer, offset\)$/],
    ["Heap.create({ size: 2**31 })", () => Heap.create({ size: 2 ** 31 }), /^EINVAL: option size 2147483648 is too large: a heap is at most 2147479552 bytes/],
    ["Heap.create({ debug: { posion: true } })", () => Heap.create({ debug: { posion: true } } as Any), /unknown option "posion" in option debug; did you mean "poison"\?/],
    ["createCache('x', 8, { aling: 8 })", () => h.createCache("x", 8, { aling: 8 } as Any), /unknown option "aling" in createCache options; did you mean "align"\?/],
    ["createCache('x', 8, { align: 3 })", () => h.createCache("x", 8, { align: 3 }), /^EINVAL: align must be a power of two, not 3$/],
    ["trace.on('kmaloc', fn)", () => h.trace.on("kmaloc" as Any, () => {}), /^EINVAL: unknown trace event "kmaloc"; known: kmalloc,/],
    ["trace.on('constructor', fn)", () => h.trace.on("constructor" as Any, () => {}), /unknown trace event/],
    ["reclaimSlot(2)", () => h.reclaimSlot(2), /^EINVAL: cpu 2 is too large: this heap's slots are 0\.\.1$/],
    ["grow() on a heap that cannot grow", () => h.grow(8 * MiB), /^EINVAL: this heap cannot grow: it was created without a maxSize above its size \(4194304 bytes\)/],
  ];
  for (const [what, fn, re] of CASES) {
    test(what, () => {
      const before = JSON.stringify(h.stats());
      const err = thrown(fn);
      assert.match(err.message, re);
      assert.equal(JSON.stringify(h.stats()), before);
      h.validate();
    });
  }

  test("grow() beyond maxSize names the limit", () => {
    const g = Heap.create({ size: 2 * MiB, maxSize: 4 * MiB, cpus: 2 });
    assert.match(thrown(() => g.grow(5 * MiB)).message, /^EINVAL: bytes 5242880 is too large: this heap grows to at most its maxSize, 4194304 bytes$/);
    assert.equal(g.grow(3 * MiB), 3 * MiB);
    assert.equal(g.grow(MiB), 3 * MiB, "a size the heap already has: nothing to do");
    g.validate();
  });
});

describe("hostile objects", () => {
  test("options are plain objects read once, own keys only, and a getter that throws is an EINVAL naming it", () => {
    const proto = { size: 2 * MiB, cpus: 2 };
    assert.match(thrown(() => Heap.create(Object.create(proto) as never)).message, /^EINVAL: Heap\.create options must be a plain object of options \(size, .*\), not an object with a prototype of its own/);
    const bare = Object.create(null) as Record<string, unknown>;
    bare.size = 2 * MiB;
    bare.cpus = 2;
    const h = Heap.create(bare);
    assert.equal(h.size, 2 * MiB);
    assert.equal(h.stats().cpus, 2);
    const throwing = { get size(): number {
      throw new RangeError("no size today");
    } };
    assert.match(thrown(() => Heap.create(throwing)).message, /^EINVAL: Heap\.create options\.size could not be read: its getter threw RangeError: no size today$/);
    let reads = 0;
    const shifty = { get size(): number {
      return reads++ === 0 ? 2 * MiB : 2 ** 40;
    }, cpus: 2 };
    assert.equal(Heap.create(shifty).size, 2 * MiB);
    assert.equal(reads, 1, "each option is read once");
    assert.match(thrown(() => Heap.create(new Proxy({}, { ownKeys: trapThrows }))).message, /could not be read: listing its keys threw Error: a trap ran/);
  });

  test("bulk allocation into a frozen, sealed or short array allocates nothing", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    const c = h.createCache("bulk", 24);
    const OUTS: [string, unknown, RegExp][] = [
      ["a frozen empty array", Object.freeze([]), /out is frozen/],
      ["a frozen array with room", Object.freeze([0, 0, 0]), /out is frozen/],
      ["a sealed short array", Object.seal([0]), /out cannot grow \(sealed or not extensible\) and holds 1 entries, fewer than the count 3/],
      ["a sealed empty array", Object.seal([]), /out is frozen/],
      ["a short Uint32Array", new Uint32Array(2), /out holds 2 entries, fewer than the count 3/],
      ["an Int32Array", new Int32Array(3), /out must be an array or a Uint32Array, not an object \(Int32Array\)/],
    ];
    for (const [what, out, re] of OUTS) {
      for (const [call, fn] of [
        ["allocPagesBulk", () => h.allocPagesBulk(3, out as Any)],
        ["cache.allocBulk", () => c.allocBulk(3, out as Any)],
      ] as const) {
        const before = JSON.stringify(h.stats());
        const err = thrown(fn);
        assert.equal(err.code, "EINVAL", `${call} into ${what}`);
        assert.match(err.message, re, `${call} into ${what}`);
        assert.equal(JSON.stringify(h.stats()), before, `${call} into ${what}: the heap changed`);
        h.validate();
      }
    }
  });

  test("an output array that refuses a write mid-way gets nothing, and what was taken is freed", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    const c = h.createCache("bulk", 24);
    const refusing = (): unknown[] =>
      new Proxy([] as unknown[], {
        set(t, k, v) {
          if (k === "1") throw new Error("no room at 1");
          return Reflect.set(t, k, v);
        },
      });
    const used = (): number => {
      const s = h.stats();
      return s.totalPages - s.freePages - s.pcp.reduce((a, b) => a + b, 0);
    };
    const pagesBefore = used();
    const e1 = thrown(() => h.allocPagesBulk(3, refusing() as Any));
    assert.match(e1.message, /^EINVAL: out refused a write \(Error: no room at 1\): the 3 pages taken were freed again$/);
    assert.equal(used(), pagesBefore, "no page is lost");
    const e2 = thrown(() => c.allocBulk(3, refusing() as Any));
    assert.match(e2.message, /^EINVAL: out refused a write \(Error: no room at 1\): the 3 objects taken were freed again$/);
    assert.equal(c.stats().activeObjects, 0, "no object is lost");
    h.validate();
    c.destroy();
    h.shrink();
    assert.equal(h.stats().freePages, h.stats().totalPages);
  });

  test("bulk frees read the list once: a getter cannot show one address to the check and another to the free", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    const a = h.kmalloc(64);
    const b = h.kmalloc(64);
    let reads = 0;
    const list = { length: 2, 0: a, get 1(): number {
      return reads++ === 0 ? b : a + 8;
    } };
    h.kfreeBulk(list);
    assert.equal(reads, 1);
    assert.equal(h.ksize(h.kmalloc(64)), 64);
    h.validate();
  });

  test("valid calls still work after all that", () => {
    const h = Heap.create({ size: 4 * MiB, cpus: 2 });
    const out: number[] = [];
    assert.equal(h.allocPagesBulk(3, out, GFP.ZERO), 3);
    for (const p of out) h.freePages(p, 0);
    h.shrink();
    assert.deepEqual(h.attachedSlots(), [0]);
    assert.equal(h.stats().freePages, h.stats().totalPages);
  });
});

test("new Heap() is EINVAL: a Heap comes from Heap.create or Heap.attach", () => {
  const NewHeap = Heap as unknown as new (...a: unknown[]) => Heap;
  for (const args of [[], [{}], [5]]) {
    assert.throws(() => new NewHeap(...args), (e: HeapError) => e.code === "EINVAL" && e.message === "EINVAL: a Heap comes from Heap.create or Heap.attach, not from new Heap()");
  }
});

test("messages name what was given: an empty cache name, a constructor that is not a typed array, a subarray to freeArray, maxCaches, Heap.attach of a wrong type", () => {
  const h = Heap.create({ size: 4 * 1024 * 1024, cpus: 1, maxCaches: 16 });
  const msg = (fn: () => unknown): string => {
    try {
      fn();
    } catch (e) {
      return `${(e as HeapError).code} ${(e as HeapError).message}`;
    }
    return "no error";
  };
  assert.equal(msg(() => h.createCache("", 8)), 'EINVAL EINVAL: a cache name must be a non-empty string: the name given is empty ("")');
  for (const [C, name] of [[DataView, "DataView"], [Array, "Array"]] as const) {
    assert.equal(
      msg(() => h.allocArray(C as never, 4)),
      `EINVAL EINVAL: allocArray: Ctor must be a typed-array constructor (Float64Array, Int32Array, BigInt64Array, ...), not ${name} (a function that is not a typed-array constructor)`,
    );
  }
  const view = h.allocArray(Uint8Array, 64)!;
  const sub = view.subarray(8);
  assert.equal(
    msg(() => h.freeArray(sub)),
    `EINVAL EINVAL: freeArray: this view (a Uint8Array of 56 bytes at 0x${sub.byteOffset.toString(16)}) does not start an allocation from allocArray (a subarray or a view of part of one?): 0x${sub.byteOffset.toString(16)} is inside an object of kmalloc-64, not at its start`,
  );
  h.freeArray(view);
  for (let i = 0; i < 2; i++) h.createCache(`slot${i}`, 8);
  assert.equal(msg(() => h.createCache("one more", 8)), "EINVAL EINVAL: all 2 named cache slots are in use: destroy a cache, or create the heap with a larger maxCaches option (now 16)");
  for (const [v, shown] of [[5, "5"], [undefined, "undefined"]] as const) {
    assert.equal(msg(() => Heap.attach(v as never)), `EINVAL EINVAL: Heap.attach needs the heap's SharedArrayBuffer or shared WebAssembly.Memory, not ${shown}`);
  }
  assert.equal(msg(() => Heap.attach(new SharedArrayBuffer(1 << 20))), "EBADHEAP EBADHEAP: not a shmalloc heap: no magic number");
  h.detach();
});

test("refreshViews on a detached handle is EDETACHED", () => {
  const h = Heap.create({ size: 1 << 20, cpus: 1 });
  assert.equal(h.refreshViews(), false);
  h.detach();
  assert.throws(() => h.refreshViews(), (e: HeapError) => e.code === "EDETACHED");
});
