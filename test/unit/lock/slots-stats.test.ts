/*
 * heap.attachedSlots(), and stats().slabs[i].internal: after every object a caller allocated is
 * freed, the activeObjects of the caches that are not internal add up to exactly 0, while the
 * internal sheaf cache still counts the sheaves in use.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Heap } from "../../../src/index.js";

const MiB = 1 << 20;

test("attachedSlots lists the attached slots, in order, as they come and go", () => {
  const h = Heap.create({ size: 4 * MiB, cpus: 4 });
  assert.deepEqual(h.attachedSlots(), [0]);
  const a = Heap.attach(h.buffer);
  const b = Heap.attach(h.buffer);
  const c = Heap.attach(h.buffer);
  assert.deepEqual([a.cpu, b.cpu, c.cpu], [1, 2, 3]);
  assert.deepEqual(h.attachedSlots(), [0, 1, 2, 3]);
  assert.deepEqual(c.attachedSlots(), [0, 1, 2, 3], "the same from any handle");
  b.detach();
  assert.deepEqual(h.attachedSlots(), [0, 1, 3]);
  c.kfree(c.kmalloc(64)); // c caches a sheaf, then "exits" without detaching
  h.reclaimSlot(c.cpu);
  assert.deepEqual(h.attachedSlots(), [0, 1]);
  assert.equal(h.stats().attached, 2);
  a.detach();
  assert.deepEqual(h.attachedSlots(), [0]);
  assert.throws(() => a.attachedSlots(), { code: "EDETACHED" });
  h.shrink();
  h.validate();
});

test("stats().slabs marks the sheaf cache internal; the others' activeObjects add up to what callers hold", () => {
  const h = Heap.create({ size: 16 * MiB, cpus: 2 });
  const other = Heap.attach(h.buffer);
  const cache = h.createCache("things", 40);
  const live = (): number => h.stats().slabs.filter((c) => !c.internal).reduce((n, c) => n + c.activeObjects, 0);
  const internal = h.stats().slabs.filter((c) => c.internal).map((c) => c.name);
  assert.deepEqual(internal, ["kmem_cache_sheaf"]);
  assert.equal(h.stats().slabs.filter((c) => !c.internal).length, 14, "13 kmalloc classes and the named cache");
  assert.equal(live(), 0);

  const held: number[] = [];
  for (let i = 0; i < 300; i++) held.push(h.kmalloc(8 + ((i * 37) % 8000)));
  for (let i = 0; i < 200; i++) held.push(other.kmalloc(16 + ((i * 53) % 2000)));
  const objs: number[] = [];
  for (let i = 0; i < 150; i++) objs.push(cache.alloc());
  assert.equal(live(), 650, "every object a caller holds, none of the allocator's");
  const sheaves = h.stats().slabs.find((c) => c.internal)!.activeObjects;
  assert.ok(sheaves > 0, "sheaves in use are the internal cache's active objects");

  // Free half from the other agent, the rest here, some through kfreeRcu.
  for (let i = 0; i < held.length; i++) (i % 2 === 0 ? other : h).kfree(held[i]!);
  for (let i = 0; i < objs.length; i++) if (i % 3 === 0) h.kfreeRcu(objs[i]!);
  else cache.free(objs[i]!);
  h.rcuBarrier();
  assert.equal(live(), 0, "after every object is freed, no leak is reported");
  const s = h.stats();
  assert.ok(s.slabs.find((c) => c.internal)!.activeObjects > 0, "while the sheaves are still in use");
  for (const c of s.slabs) if (!c.internal) assert.equal(c.activeObjects, 0, c.name);
  assert.equal(cache.stats().internal, false);
  cache.destroy();
  other.detach();
  h.shrink();
  h.validate();
  assert.equal(h.stats().freePages, h.stats().totalPages);
});
