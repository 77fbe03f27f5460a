/*
 * Guards of placement and views: growth of a heap on WebAssembly memory through memory.grow
 * (explicit, from a worker, seen by every agent; past the memory's maximum), freeArray that tells
 * this heap's memory from another heap's or a copy's, Heap.create refusing to overwrite a heap in
 * use, brand checks of buffers and memories (a Proxy is refused with a HeapError), and allocArray's
 * messages.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Worker } from "node:worker_threads";
import { Heap, HeapError, PAGE_SIZE } from "../../../src/index.js";
import { errCode, MiB } from "../../support/util.js";
import { WA } from "../../support/wasm.js";

const WASM_PAGE = 65536;

function errOf(fn: () => unknown): HeapError {
  try {
    fn();
  } catch (e) {
    if (e instanceof HeapError) return e;
    assert.fail(`expected a HeapError, got ${String(e)}`);
  }
  assert.fail("expected a HeapError, got none");
}

function runWorker(data: Record<string, unknown>): Promise<Record<string, unknown>> {
  const w = new Worker(new URL("../../agents/workers/mem-grow.js", import.meta.url), { workerData: data });
  return new Promise((ok, fail) => {
    const t = setTimeout(() => {
      void w.terminate();
      fail(new Error(`worker ${String(data.role)} timed out`));
    }, 30_000);
    w.once("message", (m) => {
      clearTimeout(t);
      ok(m as Record<string, unknown>);
    });
    w.once("error", (e) => {
      clearTimeout(t);
      fail(e);
    });
  });
}

test("heap.grow on WebAssembly memory: memory.grow by whole Wasm pages, from a worker while others allocate; attach before and after", async () => {
  const memory = new WA.Memory({ initial: 48, maximum: 400, shared: true });
  const offset = 2 * WASM_PAGE;
  const heap = Heap.create({ memory, offset, maxSize: 12 * MiB, cpus: 8 });
  const size0 = heap.size;
  assert.equal(size0, 48 * WASM_PAGE);
  // The creator grows it itself: the buffer of a Memory reports growable false, growth goes through memory.grow.
  assert.equal(heap.grow(size0 + 5 * PAGE_SIZE), size0 + 5 * PAGE_SIZE);
  assert.equal((memory.buffer as SharedArrayBuffer).byteLength, 49 * WASM_PAGE, "memory.grow added one whole Wasm page");
  assert.equal(heap.buffer, memory.buffer);
  const ctrl = new SharedArrayBuffer(8);
  const steps = [6 * MiB, 8 * MiB, 10 * MiB, offset + 12 * MiB];
  const runs = [
    runWorker({ memory, ctrl, role: "alloc", id: 1, steps }),
    runWorker({ memory, ctrl, role: "alloc", id: 2, steps }),
    runWorker({ memory, ctrl, role: "grow", id: 0, steps }),
  ];
  const res = await Promise.all(runs);
  const grow = res[2]!;
  console.log(`# grown ${size0} -> ${JSON.stringify(grow.sizes)}; allocators ${res[0]!.n} and ${res[1]!.n} allocations, highest address ${res[0]!.maxAddr} / ${res[1]!.maxAddr}`);
  // Each grow returns the size after it: its step, or more where the allocators' own GFP.KERNEL growth got there first.
  const sizes = grow.sizes as number[];
  for (let i = 0; i < steps.length; i++) assert.ok(sizes[i]! >= steps[i]!, `grow(${steps[i]}) -> ${sizes[i]}`);
  assert.equal(sizes[steps.length - 1], steps[steps.length - 1]);
  assert.equal(res[0]!.bad, 0);
  assert.equal(res[1]!.bad, 0);
  // Attached before the growth: every allocator saw the final size.
  assert.equal(res[0]!.sizeAtEnd, offset + 12 * MiB);
  // Attached after it: the new handle starts at the grown size and allocates in the new pages.
  const late = await runWorker({ memory, ctrl, role: "late", id: 3, steps });
  assert.equal(late.sizeAtAttach, offset + 12 * MiB);
  assert.ok((late.maxBlock as number) >= 10 * MiB, `a block in the last growth's pages (${String(late.maxBlock)})`);
  // This handle follows too.
  assert.equal(heap.refreshViews(), true);
  assert.equal(heap.size, offset + 12 * MiB);
  assert.equal(heap.buffer, memory.buffer);
  heap.shrink();
  heap.validate();
  assert.equal(heap.stats().freePages, heap.stats().totalPages);
  assert.equal(errCode(() => heap.grow(offset + 12 * MiB + PAGE_SIZE)), "EINVAL", "past maxSize");
});

test("maxSize past the memory's maximum: explicit growth there is EINVAL with the heap unchanged; allocation-driven growth stops at the maximum and returns 0", () => {
  // maximum 40 Wasm pages = 2.5 MiB; the heap asks for 8 MiB.
  const memory = new WA.Memory({ initial: 24, maximum: 40, shared: true });
  const heap = Heap.create({ memory, maxSize: 8 * MiB, cpus: 2 });
  assert.equal(heap.maxSize, 8 * MiB);
  const before = heap.stats();
  const e = errOf(() => heap.grow(4 * MiB));
  assert.equal(e.code, "EINVAL");
  assert.match(e.message, /could not grow to 4194304 bytes/);
  assert.equal(heap.size, 24 * WASM_PAGE);
  assert.equal((memory.buffer as SharedArrayBuffer).byteLength, 24 * WASM_PAGE, "memory.grow failed whole: nothing added");
  assert.deepEqual(heap.stats().totalPages, before.totalPages);
  heap.validate();
  // Up to the maximum, growth works; past it, GFP.KERNEL allocation returns 0.
  assert.equal(heap.grow(40 * WASM_PAGE), 40 * WASM_PAGE);
  const got: number[] = [];
  for (let p; (p = heap.allocPages(2)) !== 0; ) got.push(p);
  assert.equal(heap.size, 40 * WASM_PAGE);
  assert.ok(got.length > 0 && Math.max(...got) < 40 * WASM_PAGE);
  for (const p of got) heap.freePages(p, 2);
  // Allocation-driven growth below the maximum: a smaller memory maximum than the default step.
  const memory2 = new WA.Memory({ initial: 24, maximum: 26, shared: true });
  const h2 = Heap.create({ memory: memory2, maxSize: 8 * MiB, cpus: 2 });
  const got2: number[] = [];
  for (let p; (p = h2.allocPages(0)) !== 0; ) got2.push(p);
  assert.ok(h2.size > 24 * WASM_PAGE && h2.size <= 26 * WASM_PAGE, `it grew short of its own growth step, within the memory's maximum (${h2.size})`);
  assert.equal(h2.allocPages(0), 0);
  for (const p of got2) h2.freePages(p, 0);
  h2.shrink();
  h2.validate();
  heap.shrink();
  heap.validate();
});

test("freeArray refuses a view of another heap with an identical header, of a copy of the heap, a DataView and a Proxy", () => {
  const sab = new SharedArrayBuffer(8 * MiB);
  const a = Heap.create({ buffer: sab, offset: 0, size: 4 * MiB, cpus: 2 });
  const b = Heap.create({ size: 4 * MiB, cpus: 2 });
  const va = a.allocArray(Float64Array, 8)!;
  const vb = b.allocArray(Float64Array, 8)!;
  assert.equal(va.byteOffset, vb.byteOffset, "the two heaps put their first arrays at the same address");
  const stats = JSON.stringify(a.stats().slabs);
  assert.match(errOf(() => a.freeArray(vb)).message, /not a view of this heap's memory/);
  const copy = new Float64Array(sab.slice(0), va.byteOffset, 8);
  assert.equal(errCode(() => a.freeArray(copy)), "EINVAL");
  const copyShared = new SharedArrayBuffer(sab.byteLength);
  new Uint8Array(copyShared).set(new Uint8Array(sab));
  assert.equal(errCode(() => a.freeArray(new Float64Array(copyShared, va.byteOffset, 8))), "EINVAL");
  assert.equal(errCode(() => a.freeArray(new DataView(sab, va.byteOffset, 64))), "EINVAL");
  assert.equal(errCode(() => a.freeArray(new Proxy(va, {}))), "EINVAL");
  const trap = new Proxy({}, { get() { throw new Error("trap"); }, getPrototypeOf() { throw new Error("trap"); } });
  assert.equal(errCode(() => a.freeArray(trap as never)), "EINVAL");
  assert.equal(errCode(() => a.allocString(trap as never)), "EINVAL");
  assert.equal(errCode(() => a.readString(trap as never)), "EINVAL");
  assert.equal(JSON.stringify(a.stats().slabs), stats, "nothing was freed");
  // A view over the same memory through another SharedArrayBuffer object (as another agent gets it) is this heap's.
  const [other] = structuredCloneShared(sab);
  a.freeArray(new Float64Array(other, va.byteOffset, 8));
  b.freeArray(vb);
  a.validate();
  b.validate();
});

/** A second SharedArrayBuffer object over the same memory (what postMessage gives another agent). */
function structuredCloneShared(sab: SharedArrayBuffer): [SharedArrayBuffer] {
  const copy = structuredClone(sab);
  assert.notEqual(copy, sab);
  return [copy];
}

test("freeArray on WebAssembly memory: a view made before a growth (an older memory.buffer) is still this heap's", () => {
  const memory = new WA.Memory({ initial: 32, maximum: 100, shared: true });
  const heap = Heap.create({ memory, maxSize: 4 * MiB, cpus: 2 });
  const v = heap.allocArray(Int32Array, 16)!;
  const old = memory.buffer;
  heap.grow(3 * MiB);
  assert.notEqual(memory.buffer, old);
  assert.equal(heap.buffer, memory.buffer);
  heap.freeArray(v);
  heap.validate();
});

test("Heap.create over a heap in use is EBUSY and leaves it intact; over a detached one it is allowed", () => {
  const live = Heap.create({ size: 4 * MiB, cpus: 4 });
  const w = Heap.attach(live.buffer);
  const addr = w.kmalloc(64);
  w.u8[addr] = 42;
  const e = errOf(() => Heap.create({ buffer: live.buffer }));
  assert.equal(e.code, "EBUSY");
  assert.match(e.message, /would overwrite a heap in use: the heap at offset 0/);
  // Overlapping it from above: a heap placed inside its range.
  assert.equal(errCode(() => Heap.create({ buffer: live.buffer, offset: 1 * MiB })), "EBUSY");
  assert.equal(w.u8[addr], 42);
  w.kfree(addr);
  live.validate();
  // Two heaps side by side in one buffer do not overlap.
  const sab = new SharedArrayBuffer(8 * MiB);
  const first = Heap.create({ buffer: sab, offset: 0, size: 4 * MiB, cpus: 2 });
  const second = Heap.create({ buffer: sab, offset: 4 * MiB, cpus: 2 });
  assert.equal(errCode(() => Heap.create({ buffer: sab, offset: 2 * MiB, size: 4 * MiB })), "EBUSY");
  // On WebAssembly memory too.
  const memory = new WA.Memory({ initial: 64, maximum: 64, shared: true });
  const m = Heap.create({ memory, offset: WASM_PAGE, size: 2 * MiB, cpus: 2 });
  assert.equal(errCode(() => Heap.create({ memory, offset: 0, size: 2 * MiB })), "EBUSY");
  // Every agent detached: the region may be reused.
  w.detach();
  live.detach();
  const again = Heap.create({ buffer: live.buffer, cpus: 2 });
  again.validate();
  for (const h of [first, second, m, again]) h.detach();
});

test("wrong kinds of buffer and memory: a Proxy of a SharedArrayBuffer or a Memory is a HeapError, not a TypeError", () => {
  const sab = new SharedArrayBuffer(4 * MiB);
  const memory = new WA.Memory({ initial: 64, maximum: 64, shared: true });
  assert.equal(errCode(() => Heap.create({ buffer: new Proxy(sab, {}) })), "EINVAL");
  assert.equal(errCode(() => Heap.create({ memory: new Proxy(memory, {}) })), "EINVAL");
  assert.equal(errCode(() => Heap.create({ memory: { grow: () => 0, buffer: sab } as never })), "EINVAL");
  const heap = Heap.create({ buffer: sab, cpus: 2 });
  assert.equal(errCode(() => Heap.attach(new Proxy(sab, {}))), "EINVAL"); // not a buffer: a wrong type
  assert.equal(errCode(() => Heap.attach(new Proxy(memory, {}) as never)), "EINVAL");
  assert.match(errOf(() => Heap.attach(sab, { offset: "4096" as never })).message, /not a string \("4096"\)/);
  heap.validate();
});

test("allocArray's messages: what n was, and n with its byte size when too large", () => {
  const heap = Heap.create({ size: 8 * MiB, cpus: 2 });
  assert.match(errOf(() => heap.allocArray(Float64Array, "4" as never)).message, /not a string \("4"\)/);
  assert.match(errOf(() => heap.allocArray(Int32Array, Object.create(null) as never)).message, /n, the length, must be a whole number .* not an object/);
  const big = errOf(() => heap.allocArray(Float64Array, 1 << 20)).message;
  assert.match(big, /n 1048576 is too large: 1048576 elements of Float64Array are 8388608 bytes/);
  assert.doesNotMatch(big, /size/);
  heap.validate();
});
