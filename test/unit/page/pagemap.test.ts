/*
 * heap.pageMap and heap.cacheNames: on a quiet heap every page's code agrees with stats() and with
 * what was allocated.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Heap, MAX_ORDER, PAGE_SIZE, PAGE_STATE } from "../../../src/index.js";
import { code } from "../../support/check.js";

const MiB = 1 << 20;

function tally(map: Uint16Array): Map<number, number> {
  const t = new Map<number, number>();
  for (const c of map) t.set(c, (t.get(c) ?? 0) + 1);
  return t;
}

test("pageMap gives each page its state, in agreement with stats()", () => {
  const heap = Heap.create({ size: 4 * MiB, cpus: 2 });
  const nrPages = heap.size / PAGE_SIZE;
  let map = heap.pageMap();
  assert.equal(map.length, nrPages);
  let st = heap.stats();
  let t = tally(map);
  const reserved = nrPages - st.totalPages;
  assert.equal(t.get(PAGE_STATE.reserved), reserved);
  let free = 0;
  for (let o = 0; o <= MAX_ORDER; o++) {
    assert.equal(t.get(PAGE_STATE.free + o) ?? 0, st.buddy[o]! << o, `order ${o}`);
    free += t.get(PAGE_STATE.free + o) ?? 0;
  }
  assert.equal(free, st.freePages);

  const block = heap.allocPages(2);
  const large = heap.kmalloc(40000);
  const cache = heap.createCache("pagemap_test", 200);
  const objs = Array.from({ length: 50 }, () => cache.alloc());
  const small = heap.kmalloc(64);
  map = heap.pageMap(map);
  st = heap.stats();
  t = tally(map);
  assert.equal(map[block / PAGE_SIZE], PAGE_STATE.pages);
  assert.equal(map[block / PAGE_SIZE + 3], PAGE_STATE.pages);
  assert.equal(map[large / PAGE_SIZE], PAGE_STATE.large);
  const names = heap.cacheNames();
  const id = names.indexOf("pagemap_test");
  assert.ok(id > 0);
  assert.equal(names.indexOf("kmalloc-64") >= 0, true);
  assert.equal(map[Math.floor(objs[0]! / PAGE_SIZE)], PAGE_STATE.slab + id);
  assert.equal(map[Math.floor(small / PAGE_SIZE)], PAGE_STATE.slab + names.indexOf("kmalloc-64"));
  // Every cache's slab pages, the pcp lists and the free lists, counted page by page.
  for (const s of st.slabs) assert.equal(t.get(PAGE_STATE.slab + names.indexOf(s.name)) ?? 0, s.pages, s.name);
  assert.equal(t.get(PAGE_STATE.pcp) ?? 0, st.pcp.reduce((a, b) => a + b, 0));
  let buddy = 0;
  for (let o = 0; o <= MAX_ORDER; o++) buddy += t.get(PAGE_STATE.free + o) ?? 0;
  assert.equal(buddy, st.freePages);
  assert.equal(t.get(PAGE_STATE.unknown), undefined);

  for (const o of objs) cache.free(o);
  heap.kfree(small);
  heap.kfree(large);
  heap.freePages(block, 2);
  cache.destroy();
  assert.equal(heap.cacheNames()[id], null);
  heap.shrink();
  st = heap.stats();
  t = tally(heap.pageMap());
  assert.equal(t.get(PAGE_STATE.reserved), reserved);
  assert.equal(nrPages - reserved - (t.get(PAGE_STATE.pcp) ?? 0), st.freePages);
  heap.validate();
  heap.detach();
});

test("pageMap follows a heap that grows, and checks what it is given", () => {
  const heap = Heap.create({ size: 2 * MiB, maxSize: 4 * MiB, cpus: 2 });
  const before = heap.pageMap();
  assert.equal(before.length, 512);
  heap.grow(4 * MiB);
  const after = heap.pageMap(before);
  assert.notEqual(after, before);
  assert.equal(after.length, 1024);
  assert.equal(tally(after).get(PAGE_STATE.unknown), undefined);
  // A larger array is filled in place; its first pages are returned.
  const big = new Uint16Array(2000);
  const view = heap.pageMap(big);
  assert.equal(view.length, 1024);
  assert.equal(view.buffer, big.buffer);
  assert.equal(code(() => heap.pageMap(new Uint8Array(1024) as unknown as Uint16Array)), "EINVAL");
  // A view of the heap's own buffer would write the map over the heap: refused, heap unchanged.
  const header = new Uint8Array(heap.buffer, 0, 4096).slice();
  assert.equal(code(() => heap.pageMap(new Uint16Array(heap.buffer, 0, 1024))), "EINVAL");
  assert.deepEqual(new Uint8Array(heap.buffer, 0, 4096), header);
  heap.validate();
  heap.detach();
  assert.equal(code(() => heap.pageMap()), "EDETACHED");
});

test("pageMap of a heap placed at an offset: the caller's pages below it are PAGE_STATE.outside", async () => {
  const offset = 1 << 20;
  const heap = Heap.create({ buffer: new SharedArrayBuffer(8 << 20), offset });
  const map = heap.pageMap();
  const below = offset / PAGE_SIZE;
  assert.equal(map.length, heap.size / PAGE_SIZE); // size is where the heap ends in the buffer
  assert.equal(map.subarray(0, below).every((c) => c === PAGE_STATE.outside), true);
  assert.equal(map[below], PAGE_STATE.reserved);
  assert.equal(map.indexOf(PAGE_STATE.outside, below), -1);
  const { serveInspector } = await import("../../../src/inspector.js");
  const inspector = await serveInspector(heap);
  try {
    assert.equal(inspector.snapshot().heap.offset, offset);
  } finally {
    await inspector.close();
  }
  heap.detach();
  const plain = Heap.create({ size: 1 << 20 });
  assert.equal(plain.pageMap().indexOf(PAGE_STATE.outside), -1);
  plain.detach();
});
