/*
 * shrink() while other agents stream batches larger than a sheaf through the same barn: shrink
 * empties the barn one sheaf per lock hold, and the others fill it again between the holds. It
 * flushes what the barn held when it began (barnShrink); before, it counted every sheaf it took
 * and called the barn broken (ECORRUPT) past 2 * K_BARN_MAX, about one shrink in six with three
 * agents on kmalloc-4k.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Heap } from "../../src/index.js";
import { withAgents } from "../support/util.js";
import type { ShrinkerData } from "./workers/shrinker.js";

test("shrink() from three agents streaming kmalloc(4096) batches through one barn never fails, and every page comes back", async () => {
  await withAgents(async (spawn) => {
    const h = Heap.create({ size: 32 << 20, cpus: 4 });
    const ctrl = new SharedArrayBuffer(16);
    const agents = [1, 2, 3].map((id) => {
      const data: ShrinkerData = { buffer: h.buffer, ctrl, abortAt: 0, id, seed: 1000 + id, size: 4096, ms: 1500, shrinkChance: 0.2 };
      return spawn("shrinker", data, `shrinker ${id}`);
    });
    let shrinks = 0;
    for (const a of agents) {
      const done = await a.recv("done", 60_000);
      shrinks += done.shrinks as number;
      await a.join();
    }
    assert.ok(shrinks > 20, `${shrinks} shrinks ran`);
    h.shrink();
    h.validate();
    const st = h.stats();
    assert.equal(st.freePages, st.totalPages, "every page is free again");
    h.detach();
  });
});
