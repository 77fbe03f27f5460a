/*
 * shrink() while other agents stream batches larger than a sheaf through the same barn: shrink
 * empties the barn one sheaf per lock hold, and the others fill it again between the holds. It
 * flushes what the barn held when it began (barnShrink); before, it counted every sheaf it took
 * and called the barn broken (ECORRUPT) past 2 * K_BARN_MAX, about one shrink in six with three
 * agents on kmalloc-4k.
 *
 * And destroy() while another agent's shrink() flushes a full sheaf of the cache from its hand:
 * the destroy counted those objects as live and refused (EBUSY). It now counts a hand's sheaf as
 * cached; heap.shrink() counts itself in the cache's users (PCS_USERS) like cache.shrink(), so
 * the destroyed cache waits, dying, for its flush.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Heap } from "../../src/index.js";
import { withAgents } from "../support/util.js";
import type { ShrinkerData } from "./workers/shrinker.js";
import type { ShrinkHandData } from "./workers/shrink-hand.js";

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

test("destroy() while another agent's shrink() flushes a full sheaf of the cache from its hand: destroyed, not refused, and released once the shrink is done", async () => {
  await withAgents(async (spawn) => {
    const h = Heap.create({ size: 16 << 20, cpus: 4 });
    const c = h.createCache("shrunk-under", 64);
    const ctrl = new SharedArrayBuffer(16);
    const data: ShrinkHandData = { buffer: h.buffer, ctrl, id: 1, seed: 0, cacheName: "shrunk-under" };
    const w = spawn("shrink-hand", data, "shrinker");
    const parked = await w.recv("parked", 30_000);
    assert.ok((parked.objects as number) > 0, "the shrinker's hand holds a sheaf of objects");
    c.destroy();
    assert.equal(h.findCache("shrunk-under"), null, "destroyed");
    const go = new Int32Array(ctrl);
    Atomics.store(go, 0, 1);
    Atomics.notify(go, 0);
    await w.recv("done", 30_000);
    await w.join();
    h.shrink();
    h.validate();
    assert.equal(h.cacheNames().includes("shrunk-under"), false, "released");
    const st = h.stats();
    assert.equal(st.freePages, st.totalPages, "every page is free again");
    h.detach();
  });
});
