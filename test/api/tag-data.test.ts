/*
 * A live object whose first word holds its own free tag (address xor O_FREE_TAG) as its caller's
 * data: the tag alone says "maybe free", and every place that reads it asks the double-free
 * search before it treats the object as free. validate() with the object waiting in kfreeRcu, a
 * bulk call's `out` view over it, and its kfree from a reentry hook while another handle of the
 * agent holds a lock all behave as for any other live object.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Heap } from "../../src/index.js";
import { O_FREE_TAG } from "../../src/core/layout.js";
import { allPagesFree } from "../support/check.js";

const MiB = 1 << 20;
/** Write the object's free tag into its first word, as a caller's data. */
const tag = (h: Heap, a: number): void => {
  h.i32[a >> 2] = a ^ O_FREE_TAG;
};

test("validate() while a live object that holds its free tag waits in kfreeRcu: no ECORRUPT", () => {
  for (const debug of [false, true]) {
    const h = Heap.create({ size: 8 * MiB, cpus: 2, debug });
    const a = h.kmalloc(64);
    tag(h, a);
    h.kfreeRcu(a);
    h.validate();
    h.rcuBarrier();
    h.validate();
    h.shrink();
    allPagesFree(h);
    h.detach();
  }
});

test("allocPagesBulk and cache.allocBulk write into an `out` view over a live object that holds its free tag", () => {
  for (const debug of [false, true]) {
    const h = Heap.create({ size: 8 * MiB, cpus: 2, debug });
    const c = h.createCache("tag-data", 256);
    const a = h.kmalloc(64);
    const out = new Uint32Array(h.buffer, a, 4);
    tag(h, a);
    assert.equal(h.allocPagesBulk(1, out), 1);
    h.freePages(out[0]!, 0);
    tag(h, a);
    assert.equal(c.allocBulk(2, out), 2);
    c.free(out[0]!);
    c.free(out[1]!);
    h.kfree(a);
    h.validate();
    c.destroy();
    h.shrink();
    allPagesFree(h);
    h.detach();
  }
});

test("kfree of a live object that holds its free tag, from a reentry hook while another handle holds a lock: freed as any other object", () => {
  const a = Heap.create({ size: 32 * MiB, cpus: 4 });
  const b = Heap.attach(a.buffer);
  const pool: number[] = [];
  for (let i = 0; i < 2000; i++) pool.push(a.kmalloc(64));
  const free = (x: number): string => {
    try {
      a.kfree(x);
      return "ok";
    } catch (e) {
      pool.push(x);
      return (e as { code?: string }).code ?? String(e);
    }
  };
  let calls = 0;
  let tagFailedAlone = 0;
  b.setReentryHook((point) => {
    if (!/^(list|barn|zone):acquire$/.test(point)) return;
    calls++;
    // The tagged object first: if its free is refused (the sheaf is full, so the slow path needs
    // the lock b holds), the sheaf is as it was, and the plain object's free meets the same.
    const x = pool.pop()!;
    tag(a, x);
    const y = pool.pop()!;
    a.i32[y >> 2] = 12345;
    const rx = free(x);
    const ry = free(y);
    if (rx !== "ok" && ry === "ok") tagFailedAlone++;
  });
  const ys: number[] = [];
  for (let i = 0; i < 600; i++) ys.push(b.kmalloc(64));
  for (const y of ys) b.kfree(y);
  b.shrink();
  b.setReentryHook(null);
  assert.ok(calls > 0, "the hook ran at a list, barn or zone lock point");
  assert.equal(tagFailedAlone, 0, "a tagged object's free was refused where a plain one's went through");
  for (const x of pool) a.kfree(x);
  a.validate();
  b.detach();
  allPagesFree(a);
  a.detach();
});
