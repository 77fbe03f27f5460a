/*
 * Findings 4, 11 and 13 of the trust issue: findCache under concurrent destroy and create; shrink()
 * of a cache another agent destroyed; cache handles that outlive their heap handle.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Heap } from "../../../src/index.js";
import { code } from "../../support/check.js";
import { type Agent, baseSeed, deriveSeed, withAgents, withSeedAsync } from "../../support/util.js";
import type { ChurnData } from "../../agents/workers/cache-churn.js";

describe("cache lifecycle", () => {
  test("a cache handle obtained through a heap handle that detached is dead: its destroy() destroys nothing", () => {
    const h = Heap.create({ size: 4 << 20, cpus: 4 });
    const mine = h.createCache("outlived", 48);
    const o = mine.alloc();
    const h2 = Heap.attach(h.buffer);
    const theirs = h2.findCache("outlived")!;
    h2.detach();
    assert.equal(code(() => theirs.alloc()), "EDETACHED");
    assert.equal(code(() => theirs.free(o)), "EDETACHED");
    assert.equal(code(() => theirs.shrink()), "EDETACHED");
    assert.equal(code(() => theirs.stats()), "EDETACHED");
    mine.free(o);
    assert.equal(code(() => theirs.destroy()), "EDETACHED");
    assert.notEqual(h.findCache("outlived"), null, "the cache still exists for everyone else");
    mine.free(mine.alloc());
    mine.destroy();
    h.validate();
  });

  test("shrink() returns this agent's cached objects of a cache another agent destroyed, and the cache is released", () => {
    const h = Heap.create({ size: 4 << 20, cpus: 4 });
    const c = h.createCache("destroyed-elsewhere", 100);
    const h2 = Heap.attach(h.buffer);
    const c2 = h2.findCache("destroyed-elsewhere")!;
    const objs: number[] = [];
    for (let i = 0; i < 30; i++) objs.push(c2.alloc());
    for (const o of objs) c2.free(o); // cached in h2's sheaves
    c.destroy(); // no live object: the cache is dying until h2 lets go of its sheaves
    assert.equal(h.stats().slabs.some((s) => s.name === "destroyed-elsewhere"), true, "dying while h2 caches objects");
    h2.shrink();
    assert.equal(h.stats().slabs.some((s) => s.name === "destroyed-elsewhere"), false, "released once h2 shrank");
    h.validate();
    h2.detach();
    h.shrink();
    const s = h.stats();
    assert.equal(s.freePages, s.totalPages);
  });

  test("create, destroy and findCache churn from several workers", async () => {
    const seed = baseSeed();
    await withSeedAsync(seed, () =>
      withAgents(async (spawn) => {
        const workers = 4;
        const h = Heap.create({ size: 16 << 20, cpus: 8, maxCaches: 24 });
        const ctrl = new SharedArrayBuffer(64);
        const agents: Agent[] = [];
        for (let k = 0; k < workers; k++) {
          const data: ChurnData = { buffer: h.buffer, ctrl, abortAt: 0, id: k, seed: deriveSeed(seed, k), names: 5, ops: 1500, workers, attachedAt: 1, doneAt: 2 };
          agents.push(spawn("cache-churn", data, `churn worker ${k}`));
        }
        const totals: Record<string, number> = {};
        for (const a of agents) {
          const m = await a.recv("done", 60_000);
          for (const [k, v] of Object.entries(m.counts as Record<string, number>)) totals[k] = (totals[k] ?? 0) + v;
          await a.join();
        }
        h.shrink();
        h.validate();
        for (let k = 0; k < 5; k++) h.findCache(`churn-${k}`)?.destroy();
        h.shrink();
        h.validate();
        const s = h.stats();
        assert.equal(s.slabs.filter((c) => c.name.startsWith("churn-")).length, 0, "every churn cache was released");
        assert.equal(s.freePages, s.totalPages, "every page came back");
        assert.ok(totals.created! > 0 && totals.destroyed! > 0 && totals.found! > 0, JSON.stringify(totals));
        console.log(`cache churn: ${JSON.stringify(totals)}`);
      }),
    );
  });
});
