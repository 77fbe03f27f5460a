/*
 * Finding 4 of the trust issue: findCache took no lock. While another agent destroyed a cache and
 * created a new one in the same descriptor, findCache could pair the name it had matched with the
 * new cache's generation, and return a handle to the other cache (its name, its object size).
 * A worker flips one descriptor between two caches as fast as it can; the main thread looks one
 * of them up in a tight loop, and every handle it gets must be that cache.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Heap } from "../../src/index.js";
import { until, withAgents } from "../support/util.js";
import type { FlipData } from "./workers/cache-flip.js";

const FLIP_A = { name: "flip-a", size: 32 };
const FLIP_B = { name: "flip-b", size: 64 };

test("findCache while another agent destroys the cache and creates another in its descriptor: every handle is the cache named", async () => {
  await withAgents(async (spawn) => {
    const h = Heap.create({ size: 8 << 20, cpus: 4 });
    const ctrl = new SharedArrayBuffer(16);
    const c = new Int32Array(ctrl);
    const data: FlipData = { buffer: h.buffer, ctrl, abortAt: 3, id: 0, seed: 0, flips: 2_000_000, a: FLIP_A, b: FLIP_B, readyAt: 0, roundsAt: 1, stopAt: 2 };
    const flipper = spawn("cache-flip", data, "flipper");
    await until(() => Atomics.load(c, 0) === 1 || flipper.error !== null, "the flipper to attach");
    flipper.check();
    // Until the flipper has made 20,000 rounds (or 20,000,000 lookups, should it be starved): bounded.
    let found = 0;
    const wrong: string[] = [];
    for (let i = 0; i < 20_000_000 && Atomics.load(c, 1) < 20_000 && Atomics.load(c, 3) === 0; i++) {
      const k = h.findCache(FLIP_A.name);
      if (k === null) continue;
      found++;
      if (k.name !== FLIP_A.name || k.objectSize !== FLIP_A.size) {
        if (wrong.length < 5) wrong.push(`a handle to "${k.name}" (${k.objectSize} B)`);
        else break;
      }
    }
    Atomics.store(c, 2, 1);
    const done = await flipper.recv("done", 30_000);
    await flipper.join();
    console.log(`findCache race: ${found} handles found while the flipper made ${String(done.rounds)} rounds`);
    assert.deepEqual(wrong, [], `findCache("${FLIP_A.name}") returned handles to another cache`);
    assert.ok(found > 0, "the lookup found the cache at least once");
    assert.equal(h.findCache(FLIP_A.name), null);
    h.shrink();
    h.validate();
    const s = h.stats();
    assert.equal(s.freePages, s.totalPages, "every page came back");
  });
});
