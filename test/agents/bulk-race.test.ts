/*
 * Another agent frees objects of a cache while cache.allocBulk runs (workers/bulk-race.ts). The
 * objects a batch has taken carry their free tag and are in its hand until it hands them over, and
 * it takes them off its sheaf into the hand without ever clearing the tag, so such a free is
 * EDOUBLEFREE. Before, each object was untagged, on no list and in no hand for a few statements
 * after its allocation, another agent's free there was accepted, and batches came back holding one
 * address twice (every run of 3 s). A free at the instant the call hands an object over frees the
 * caller's object: the batcher's own free of it then says EDOUBLEFREE, and nothing is lost.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Worker } from "node:worker_threads";
import { Heap } from "../../src/index.js";
import { baseSeed } from "../support/util.js";

const MS = 2500;

test("a free by another agent of an object a cache.allocBulk has taken is refused: no batch holds an address twice, and nothing is lost", async () => {
  const seed = baseSeed();
  const heap = Heap.create({ size: 16 << 20, cpus: 4 });
  const total = heap.stats().totalPages;
  heap.createCache("bulk-race", 64);
  const ctrl = new SharedArrayBuffer(32);
  const addrs = new SharedArrayBuffer(4 * 2000);
  const run = (role: string, id: number): Promise<Record<string, number>> =>
    new Promise((resolve, reject) => {
      const w = new Worker(new URL("./workers/bulk-race.js", import.meta.url), { workerData: { buffer: heap.buffer, ctrl, addrs, role, ms: MS, id, seed: seed + id } });
      w.on("message", (m: { type: string; message?: string }) => (m.type === "error" ? reject(new Error(m.message)) : resolve(m as unknown as Record<string, number>)));
      w.on("error", reject);
    });
  const [batcher, guesser] = await Promise.all([run("batcher", 0), run("guesser", 1)]);
  assert.ok(batcher!.calls! > 100 && guesser!.refused! > 1000, `the two raced (seed ${seed}): ${JSON.stringify({ batcher, guesser })}`);
  assert.equal(batcher!.dups, 0, `no batch held an address twice (seed ${seed}): ${JSON.stringify({ batcher, guesser })}`);
  assert.ok(batcher!.handedOverFrees! <= guesser!.accepted!, "each free the batcher found done was the guesser's");
  heap.rcuBarrier();
  heap.shrink();
  heap.validate();
  const st = heap.stats();
  assert.equal(st.slabs.find((s) => s.name === "bulk-race")!.activeObjects, 0, "no object of the cache is live");
  assert.equal(st.freePages, total, "every page is free again");
  heap.detach();
});
