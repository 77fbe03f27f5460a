/*
 * Remote frees (slab.ts pushFast, sheaf.ts remoteSheafWithRoom): an object whose slab another
 * slot's refill took (PD_OWNER of its pages) goes to the freeing slot's remote sheaf, never back
 * out of that slot, and on to the barn whole; detach, shrink, destroy and reclaimSlot flush it
 * like the main and spare sheaves, and validate() counts it. A slab belongs to the slot that last
 * took objects from its freelist. The owner word is a hint: any value only picks the sheaf.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Heap, type SlabStats } from "../../../src/index.js";
import { layersOf } from "../../../src/layers.js";
import { PD_OWNER, PD_WORDS, PAGE_SHIFT } from "../../../src/core/layout.js";
import { allPagesFree } from "../../support/check.js";
import { sheafCapacity } from "../../../src/slab/sizes.js";

const MiB = 1 << 20;
const stats = (h: Heap, name: string): SlabStats => h.stats().slabs.find((c) => c.name === name)!;
/** Objects in a full sheaf of kmalloc-64. */
const CAP = sheafCapacity(64);

test("a free by a slot that does not own the object's slab goes to its remote sheaf, and that slot does not hand it out again", () => {
  const h0 = Heap.create({ size: 16 * MiB, cpus: 2 });
  const h1 = Heap.attach(h0.buffer);
  const a = h0.kmalloc(64); // a slab h0's refill took: h0 owns it
  h1.kfree(a);
  // The refill took one new slab (64 objects, fewer than a sheaf holds): 63 in h0's main sheaf, 1 in h1's remote sheaf.
  const k64 = stats(h0, "kmalloc-64");
  assert.equal(k64.sheafObjects, Math.min(CAP, k64.objectsPerSlab));
  // h0 frees its own object back to its main sheaf: a pair on h0 hands the same object out again.
  const b = h0.kmalloc(64);
  h0.kfree(b);
  assert.equal(h0.kmalloc(64), b);
  h0.kfree(b);
  const mine: number[] = [];
  for (let i = 0; i < 3 * CAP; i++) mine.push(h1.kmalloc(64));
  assert.ok(!mine.includes(a), "h1 never handed out the object it freed for h0");
  h0.validate();
  for (const x of mine) h1.kfree(x);
  h0.validate();
  h1.detach(); // its main, spare and remote sheaves back to the slabs
  allPagesFree(h0);
  h0.detach();
});

test("a full remote sheaf goes to the barn whole, where the owner's refill takes it", () => {
  const h0 = Heap.create({ size: 16 * MiB, cpus: 2 });
  const h1 = Heap.attach(h0.buffer);
  const objs: number[] = [];
  for (let i = 0; i < 4 * CAP; i++) objs.push(h0.kmalloc(64));
  const v0 = h0.stats().vmstat;
  for (const x of objs) h1.kfree(x); // remote frees: 4 full sheaves
  const v1 = h0.stats().vmstat;
  // The first remote sheaf is made; each time it is full, the barn takes it for an empty one.
  assert.equal(v1.barnPut - v0.barnPut, 3);
  assert.equal(v1.sheafFlush - v0.sheafFlush, 0, "nothing went one object at a time to the slabs");
  const s = stats(h0, "kmalloc-64");
  assert.equal(s.barnFull, 3);
  assert.equal(s.activeObjects, 0);
  h0.validate();
  // h0 empties its main sheaf and takes a full one from the barn: h1's remote frees, its own objects.
  const back = new Set<number>();
  for (let i = 0; i < 4 * CAP; i++) back.add(h0.kmalloc(64));
  assert.ok(objs.slice(0, 3 * CAP).every((x) => back.has(x)), "the three sheaves the barn took came back to h0");
  for (const x of back) h0.kfree(x);
  h1.shrink();
  allPagesFree(h0);
  h1.detach();
  h0.detach();
});

test("reclaimSlot and destroy flush a remote sheaf; a named cache waits for it before it is released", () => {
  const h0 = Heap.create({ size: 16 * MiB, cpus: 3 });
  const h1 = Heap.attach(h0.buffer);
  const c0 = h0.createCache("remote-objs", 40);
  const c1 = h1.findCache("remote-objs")!;
  const objs: number[] = [];
  for (let i = 0; i < 10; i++) objs.push(c0.alloc());
  for (const x of objs) c1.free(x); // h1's remote sheaf of the cache
  assert.equal(stats(h0, "remote-objs").activeObjects, 0);
  c0.destroy(); // no live objects: dying until h1 gives its sheaves back
  assert.ok(h0.stats().slabs.some((s) => s.name === "remote-objs"), "h1's remote sheaf keeps the cache dying");
  h1.shrink();
  assert.ok(!h0.stats().slabs.some((s) => s.name === "remote-objs"), "released once h1 flushed its remote sheaf");
  // reclaimSlot of a slot whose remote sheaf holds kmalloc objects returns them.
  const ks: number[] = [];
  for (let i = 0; i < 30; i++) ks.push(h0.kmalloc(128));
  for (const x of ks) h1.kfree(x);
  const report = h0.reclaimSlot(h1.cpu);
  assert.ok(report.objects >= 30, `the remote sheaf's 30 objects are returned (${report.objects})`);
  allPagesFree(h0);
  h0.detach();
});

test("the owner word is a hint: a stray value sends a free to the remote sheaf and validate() still holds", () => {
  const h = Heap.create({ size: 16 * MiB, cpus: 2 });
  const { slab } = layersOf(h);
  const a = h.kmalloc(32);
  const b = h.kmalloc(32);
  slab.i32[slab.descW + (a >>> PAGE_SHIFT) * PD_WORDS + PD_OWNER] = 12345;
  h.kfree(a);
  const c = h.kmalloc(32);
  assert.notEqual(c, a, "the remote sheaf keeps it");
  h.validate();
  h.kfree(b);
  h.kfree(c);
  allPagesFree(h);
  h.detach();
});

test("two slots whose sheaves share a slab each get their own frees back: alternating batches take no slow path", () => {
  const a = Heap.create({ size: 16 * MiB, cpus: 2 });
  const b = Heap.attach(a.buffer);
  const xa = new Int32Array(32);
  const xb = new Int32Array(32);
  const round = (h: Heap, x: Int32Array): void => {
    for (let i = 0; i < 32; i++) x[i] = h.kmalloc(64);
    for (let i = 31; i >= 0; i--) h.kfree(x[i]!);
  };
  // Each slot's frees of the objects it allocated go back to its own main sheaf, whichever slab
  // its refills took them from.
  for (let r = 0; r < 10; r++) {
    round(a, xa);
    round(b, xb);
  }
  const v0 = a.stats().vmstat;
  for (let r = 0; r < 1000; r++) {
    round(a, xa);
    round(b, xb);
  }
  const v1 = a.stats().vmstat;
  assert.equal(v1.barnPut - v0.barnPut, 0, "no sheaf went to the barn");
  assert.equal(v1.barnGet - v0.barnGet, 0);
  assert.equal(v1.sheafRefill - v0.sheafRefill, 0);
  b.detach();
  allPagesFree(a);
  a.detach();
});

test("cache-scratch: two slots that refill from the slab of a third, which handed each one object, never write neighbouring objects", () => {
  const main = Heap.create({ size: 16 * MiB, cpus: 3 });
  const w = [Heap.attach(main.buffer), Heap.attach(main.buffer)];
  const handoff = [main.kmalloc(8), main.kmalloc(8)];
  const seen = [new Set<number>(), new Set<number>()];
  // The workers run in turns, as two agents would side by side: free the object handed over, then
  // allocate, write and free one object again and again.
  for (let i = 0; i < 2; i++) w[i]!.kfree(handoff[i]!);
  let near = 0;
  for (let r = 0; r < 8 * sheafCapacity(8); r++) {
    const x0 = w[0]!.kmalloc(8);
    w[0]!.kfree(x0);
    const x1 = w[1]!.kmalloc(8);
    w[1]!.kfree(x1);
    seen[0]!.add(x0);
    seen[1]!.add(x1);
    if (Math.abs(x0 - x1) < 128) near++;
  }
  // Before, the slab stayed the handing agent's: every free of either worker went to its remote
  // sheaf, the sheaves went round through the barn, and the two workers walked through
  // neighbouring objects. Now the slab is the last refilling worker's, which reuses one object;
  // the other walks through the objects of its own refill.
  assert.equal(near, 0, "the two workers' objects of one round were never within 128 bytes");
  assert.equal(Math.min(seen[0]!.size, seen[1]!.size), 1, "one worker reuses one object");
  assert.ok(Math.max(seen[0]!.size, seen[1]!.size) <= sheafCapacity(8) + 1, "the other stays within the objects of its refill");
  main.validate();
  for (const h of w) h.detach();
  allPagesFree(main);
  main.detach();
});
