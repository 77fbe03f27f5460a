/*
 * An out array over the heap's memory through another buffer object (a structuredClone of the
 * SharedArrayBuffer, a WebAssembly memory's buffer from before a growth) is the heap's memory: the
 * identity test let it overwrite the header magic. Outside this heap in the same memory (another
 * heap's metadata), a debug object's redzone, a Proxy of a Uint32Array: EINVAL, nothing changed.
 * And reclaimSlot of a slot whose handle of this agent has a call in progress (from its trace
 * handler): EDEADLK, the block that call is taking never handed out twice.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Heap } from "../../src/index.js";
import { errCode } from "../support/common.js";
import { WA } from "../support/wasm.js";

test("allocPagesBulk, cache.allocBulk and pageMap refuse an out over the heap's header through a clone of its buffer", () => {
  const heap = Heap.create({ size: 4 << 20, cpus: 2 });
  const clone = structuredClone(heap.buffer);
  assert.notEqual(clone, heap.buffer);
  const magic = heap.u32[0];
  const c = heap.createCache("out-alias", 32);
  const before = heap.stats().freePages;
  assert.equal(errCode(() => heap.allocPagesBulk(1, new Uint32Array(clone, 0, 1))), "EINVAL");
  assert.equal(errCode(() => c.allocBulk(4, new Uint32Array(clone, 8192, 4))), "EINVAL");
  assert.equal(errCode(() => heap.pageMap(new Uint16Array(clone, 0, heap.stats().totalPages + 64))), "EINVAL");
  assert.equal(heap.u32[0], magic);
  assert.equal(heap.stats().freePages, before);
  // Inside a live allocation, through the clone: allowed.
  const arr = heap.allocArray(Uint32Array, 4)!;
  assert.equal(heap.allocPagesBulk(4, new Uint32Array(clone, arr.byteOffset, 4)), 4);
  for (const a of arr) heap.freePages(a, 0);
  heap.freeArray(arr);
  c.destroy();
  heap.validate();
  Heap.attach(heap.buffer).detach();
  heap.detach();
});

test("a WebAssembly heap: an out through memory.buffer from before a growth is the same memory", () => {
  const memory = new WA.Memory({ initial: 64, maximum: 256, shared: true });
  const heap = Heap.create({ memory, size: 64 * 65536, maxSize: 256 * 65536, cpus: 2 });
  const old = memory.buffer;
  heap.grow(128 * 65536);
  assert.notEqual(memory.buffer, old);
  assert.equal(errCode(() => heap.allocPagesBulk(1, new Uint32Array(old as SharedArrayBuffer, 0, 1))), "EINVAL");
  heap.validate();
  heap.detach();
});

test("an out over another heap's metadata in the same buffer, or a debug object's redzone, or a Proxy: EINVAL", () => {
  const buffer = new SharedArrayBuffer(8 << 20);
  const a = Heap.create({ buffer, size: 4 << 20, cpus: 2 });
  const b = Heap.create({ buffer, offset: 4 << 20, size: 4 << 20, cpus: 2 });
  assert.equal(errCode(() => a.allocPagesBulk(64, new Uint32Array(buffer, (4 << 20) + 4096, 64))), "EINVAL");
  b.validate();
  const d = Heap.create({ size: 4 << 20, cpus: 2, debug: true });
  const c = d.createCache("out-rz", 40);
  const obj = c.alloc();
  assert.equal(errCode(() => c.allocBulk(1, new Uint32Array(d.buffer, obj + 40, 1))), "EINVAL");
  assert.equal(errCode(() => c.allocBulk(1, new Uint32Array(d.buffer, obj + 36, 1))), "no error");
  const proxy = new Proxy(new Uint32Array(4), {});
  assert.equal(errCode(() => a.allocPagesBulk(1, proxy)), "EINVAL");
  a.validate();
  d.validate();
});

test("reclaimSlot of a handle of this agent from inside its own call (its trace handler) is EDEADLK", () => {
  const heap = Heap.create({ size: 4 << 20, cpus: 4 });
  const a = Heap.attach(heap.buffer);
  let code = "not called";
  a.trace.on("mm_page_alloc", () => {
    if (code === "not called") code = errCode(() => heap.reclaimSlot(a.cpu));
  });
  const got = a.allocPages(2);
  assert.equal(code, "EDEADLK");
  const again = heap.allocPages(2);
  assert.notEqual(again, got);
  heap.freePages(again, 2);
  a.freePages(got, 2);
  a.detach();
  heap.validate();
});
