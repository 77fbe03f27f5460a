/*
 * Heaps on WebAssembly memory and on a caller's SharedArrayBuffer: placement at an offset, the
 * bytes below it untouched, addresses that Wasm takes as pointers, attach from a worker, growth
 * through memory.grow seen by every agent, and bad arguments.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Worker } from "node:worker_threads";
import { Heap, HeapError, PAGE_SIZE } from "../../src/index.js";
import { errCode, MiB } from "../support/util.js";
import { WA, wasmBytes } from "../support/wasm.js";

const WASM_PAGE = 65536;

function pattern(u8: Uint8Array, end: number): void {
  for (let i = 0; i < end; i++) u8[i] = (i * 31 + 7) & 0xff;
}
function patternIntact(u8: Uint8Array, end: number): boolean {
  for (let i = 0; i < end; i++) if (u8[i] !== ((i * 31 + 7) & 0xff)) return false;
  return true;
}

test("a heap on shared WebAssembly memory: Wasm in a worker reads and writes what JS allocated on another agent; growth through memory.grow", async () => {
  const bytes = await wasmBytes();
  const memory = new WA.Memory({ initial: 40, maximum: 400, shared: true });
  const offset = 3 * WASM_PAGE; // the module's own data and stack live below
  pattern(new Uint8Array(memory.buffer), offset);
  const heap = Heap.create({ memory, offset, maxSize: 16 * MiB, cpus: 4 });
  assert.equal(heap.offset, offset);
  assert.equal(heap.size, 40 * WASM_PAGE, "the heap ends where the memory does");
  // Its buffer alone would strand a handle when the memory grows: attach takes the Memory.
  assert.equal(errCode(() => Heap.attach(memory.buffer)), "EINVAL");
  const n = 100;
  const arr = heap.allocArray(Float64Array, n)!;
  assert.ok((arr.buffer as unknown) === memory.buffer && arr.byteOffset >= offset && arr.byteOffset % 8 === 0);
  for (let i = 0; i < n; i++) arr[i] = i;
  const str = heap.allocString("shared with Wasm ✓");
  assert.equal(heap.u8[str + 4], "s".charCodeAt(0), "heap.u8[addr] is the byte at address addr");
  const w = new Worker(new URL("./workers/wasm.js", import.meta.url), { workerData: { memory, bytes, addr: arr.byteOffset, n, str, growPages: 600 } });
  try {
    const r = await new Promise<Record<string, number>>((ok, fail) => {
      const t = setTimeout(() => fail(new Error("worker timed out")), 30_000);
      w.once("message", (m) => { clearTimeout(t); ok(m as Record<string, number>); });
      w.once("error", (e) => { clearTimeout(t); fail(e); });
    });
    console.log(`# wasm worker: sum ${r.sumBefore}, strlen ${r.strBytes}, heap grew from ${r.sizeBefore} to ${r.sizeAfter} bytes (memory ${r.bufferBytes})`);
    assert.equal(r.sumBefore, (n * (n - 1)) / 2, "Wasm summed the doubles JS wrote");
    assert.equal(r.strBytes, new TextEncoder().encode("shared with Wasm ✓").length, "Wasm's strlen at address + 4");
    for (let i = 0; i < n; i++) assert.equal(arr[i], 0.25);
    // Growth: the worker grew the memory; this handle sees the new pages once it meets them (its
    // next slow path or lock, or refreshViews). Checked before this handle calls anything.
    assert.ok(r.past! >= r.sizeBefore!, "the worker got a block in the new pages");
    assert.ok(r.sizeAfter! > r.sizeBefore! && (memory.buffer as SharedArrayBuffer).byteLength >= r.sizeAfter!);
    assert.equal(heap.f64[r.past! / 8], undefined, "this handle's views end where the heap did");
    assert.equal(heap.refreshViews(), true, "refreshViews rebuilds them");
    assert.equal(heap.f64[r.past! / 8], 7, "this handle's views reach the grown pages");
    // The worker's array, written by Wasm there, read and freed here (a cross-agent free).
    assert.ok(r.mine! >= offset);
    assert.equal(heap.f64[r.mine! / 8], 3);
    heap.kfree(r.mine!);
    heap.freePages(r.past!, 4);
    assert.equal(heap.buffer, memory.buffer, "the handle follows memory.buffer");
  } finally {
    await w.terminate();
  }
  heap.freeArray(arr);
  heap.kfree(str);
  heap.shrink();
  heap.validate();
  const s = heap.stats();
  assert.equal(s.freePages, s.totalPages);
  assert.ok(patternIntact(new Uint8Array(memory.buffer), offset), "the bytes below the offset are the module's, untouched");
});

test("a heap in a caller's SharedArrayBuffer at an offset: the bytes outside it untouched; attach finds the header", () => {
  const sab = new SharedArrayBuffer(8 * MiB);
  const u8 = new Uint8Array(sab);
  u8.fill(0xa5);
  const offset = 256 * PAGE_SIZE;
  const size = 4 * MiB;
  const heap = Heap.create({ buffer: sab, offset, size, cpus: 4 });
  assert.equal(heap.buffer, sab);
  assert.equal(heap.size, offset + size);
  const other = Heap.attach(sab);
  assert.equal(other.offset, offset);
  const live: number[] = [];
  for (let i = 0; i < 200; i++) live.push(heap.kmalloc(8 + (i % 700)), other.allocPages(i % 3));
  for (let i = 0; i < live.length; i += 2) {
    assert.ok(live[i]! >= offset && live[i]! < offset + size);
    other.kfree(live[i]!);
    heap.freePages(live[i + 1]!, (i / 2) % 3);
  }
  other.detach();
  heap.shrink();
  heap.validate();
  assert.equal(heap.stats().freePages, heap.stats().totalPages);
  for (let i = 0; i < offset; i++) if (u8[i] !== 0xa5) assert.fail(`byte ${i} below the heap was written`);
  for (let i = offset + size; i < sab.byteLength; i++) if (u8[i] !== 0xa5) assert.fail(`byte ${i} above the heap was written`);
  // The same with the offset given to attach, and a wrong one.
  const third = Heap.attach(sab, { offset });
  third.detach();
  assert.equal(errCode(() => Heap.attach(sab, { offset: 0 })), "EBADHEAP");
  assert.equal(errCode(() => Heap.attach(sab, { offset: 100 })), "EINVAL");
});

test("placement options: every bad argument is EINVAL, and nothing is written", () => {
  const sab = new SharedArrayBuffer(1 * MiB);
  const memory = new WA.Memory({ initial: 16, maximum: 16, shared: true });
  const unshared = new WA.Memory({ initial: 16, maximum: 16, shared: false });
  const bad: [string, () => unknown][] = [
    ["offset not page-aligned", () => Heap.create({ buffer: sab, offset: 1000 })],
    ["offset past the buffer", () => Heap.create({ buffer: sab, offset: 1 * MiB })],
    ["negative offset", () => Heap.create({ buffer: sab, offset: -4096 })],
    ["size past the buffer", () => Heap.create({ buffer: sab, offset: 4096, size: 1 * MiB })],
    ["size not whole pages", () => Heap.create({ buffer: sab, size: 5000 })],
    ["maxSize past a fixed buffer", () => Heap.create({ buffer: sab, maxSize: 2 * MiB })],
    ["offset without memory or buffer", () => Heap.create({ offset: 4096 })],
    ["both memory and buffer", () => Heap.create({ memory, buffer: sab })],
    ["a plain ArrayBuffer", () => Heap.create({ buffer: new ArrayBuffer(MiB) as unknown as SharedArrayBuffer })],
    ["an unshared memory", () => Heap.create({ memory: unshared })],
    ["memory of another kind", () => Heap.create({ memory: {} as never })],
  ];
  for (const [what, fn] of bad) assert.equal(errCode(fn), "EINVAL", what);
  assert.ok(new Uint8Array(sab).every((b) => b === 0), "nothing was written");
  assert.equal(errCode(() => Heap.attach(sab)), "EBADHEAP");
  assert.equal(errCode(() => Heap.attach(unshared as unknown as SharedArrayBuffer)), "EBADHEAP");
  // offset + maxSize must stay below 2 GiB: addresses are positive 32-bit integers.
  const g = new (SharedArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => SharedArrayBuffer)(1 * MiB, { maxByteLength: 2 ** 31 });
  assert.equal(errCode(() => Heap.create({ buffer: g, offset: 64 * PAGE_SIZE, size: 512 * 1024, maxSize: 2 ** 31 - 4096 })), "EINVAL");
});

test("no SharedArrayBuffer (a page that is not cross-origin isolated): ENOSHARED names the two headers", () => {
  const g = globalThis as { SharedArrayBuffer?: unknown };
  const saved = g.SharedArrayBuffer;
  let err: unknown = null;
  let errAttach: unknown = null;
  try {
    g.SharedArrayBuffer = undefined;
    try {
      Heap.create({ size: MiB });
    } catch (e) {
      err = e;
    }
    try {
      Heap.attach(new ArrayBuffer(8) as unknown as SharedArrayBuffer);
    } catch (e) {
      errAttach = e;
    }
  } finally {
    g.SharedArrayBuffer = saved;
  }
  for (const e of [err, errAttach]) {
    assert.ok(e instanceof HeapError && e.code === "ENOSHARED", `got ${String(e)}`);
    assert.match(e.message, /Cross-Origin-Opener-Policy: same-origin/);
    assert.match(e.message, /Cross-Origin-Embedder-Policy: require-corp \(or credentialless\)/);
  }
});
