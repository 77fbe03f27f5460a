/*
 * Finding 1 of the trust issue: growth under agents that attached before it, on every
 * allocation path, and a single agent whose own slab refill grows the heap.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Heap } from "../../src/index.js";
import { type Agent, baseSeed, deriveSeed, MiB, until, withAgents, withSeedAsync } from "../support/util.js";
import type { GrowthData } from "./workers/growth.js";

describe("growth", () => {
  test("a single agent whose kmalloc(4000) refills grow the heap gets distinct blocks inside its views", () => {
    const h = Heap.create({ size: 1 * MiB, maxSize: 8 * MiB });
    const seen = new Set<number>();
    const live: number[] = [];
    for (let i = 0; i < 1200; i++) {
      const a = h.kmalloc(4000);
      if (a === 0) break;
      assert.ok(a + 4000 <= h.size && a + 4000 <= h.u8.length, `block ${a} lies outside the heap (${h.size} B)`);
      assert.ok(!seen.has(a), `block ${a} handed out twice`);
      seen.add(a);
      live.push(a);
      h.i32[a >> 2] = i;
    }
    assert.ok(h.size > 1 * MiB, "the heap grew");
    assert.ok(live.length > 400, `only ${live.length} blocks`);
    live.forEach((a, i) => assert.equal(h.i32[a >> 2], i, `block ${a} lost its write`));
    h.validate();
    for (const a of live) h.kfree(a);
    h.shrink();
    h.validate();
  });

  test("the kfreeRcu block page and the cache slab a refill takes from growth are written inside the views", () => {
    const h = Heap.create({ size: 1 * MiB, maxSize: 8 * MiB, cpus: 2 });
    const c = h.createCache("grow-one", 3000);
    const objs: number[] = [];
    for (let i = 0; i < 700; i++) {
      const a = c.alloc();
      if (a === 0) break;
      objs.push(a);
      h.i32[a >> 2] = i + 1;
    }
    assert.ok(h.size > 1 * MiB);
    objs.forEach((a, i) => assert.equal(h.i32[a >> 2], i + 1));
    for (const a of objs) h.kfreeRcu(a);
    h.rcuBarrier();
    c.destroy();
    h.validate();
  });

  for (const offset of [0, 64 * 4096]) {
    test(`workers attached before growth run every allocation path while the heap grows${offset === 0 ? "" : ", the heap at an offset of a caller's buffer"}`, async () => {
      const seed = baseSeed();
      await withSeedAsync(seed, () =>
        withAgents(async (spawn) => {
          const workers = 3;
          const Sab = SharedArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => SharedArrayBuffer;
          const heap =
            offset === 0
              ? Heap.create({ size: 2 * MiB, maxSize: 48 * MiB, cpus: 8 })
              : Heap.create({ buffer: new Sab(offset + 2 * MiB, { maxByteLength: offset + 48 * MiB }), offset, size: 2 * MiB, maxSize: 48 * MiB, cpus: 8 });
          heap.createCache("growth-objects", 200);
          const ctrl = new SharedArrayBuffer(64);
          const c = new Int32Array(ctrl);
          const agents: Agent[] = [];
          for (let k = 0; k < workers; k++) {
            const data: GrowthData = {
              buffer: heap.buffer, offset, ctrl, abortAt: 0, id: k, seed: deriveSeed(seed, k), ops: 3000, cacheName: "growth-objects",
              attachedAt: 1, goAt: 2, opsAt: 3, doneAt: 4, workers,
            };
            agents.push(spawn("growth", data, `growth worker ${k}`));
          }
          await until(() => Atomics.load(c, 1) === workers, "the workers to attach");
          Atomics.store(c, 2, 1);
          Atomics.notify(c, 2);
          // The main thread grows the heap in steps while the workers run.
          for (let step = 1; step <= 6; step++) {
            await until(() => Atomics.load(c, 3) >= step * 1000 || Atomics.load(c, 4) > 0 || agents.some((a) => a.error !== null), "the workers' progress");
            const want = Math.min(heap.maxSize, heap.size + 2 * MiB);
            if (want > heap.size) heap.grow(want);
          }
          for (const a of agents) await a.join(60_000);
          heap.rcuBarrier();
          heap.validate();
          heap.shrink();
          const s = heap.stats();
          heap.validate();
          console.log(`growth (offset ${offset}): heap ends at ${heap.size >> 10} KiB after growth, ${s.freePages} of ${s.totalPages} pages free`);
        }),
      );
    });
  }
});
