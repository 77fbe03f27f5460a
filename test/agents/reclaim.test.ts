import assert from "node:assert/strict";
import { test } from "node:test";
import { Worker } from "node:worker_threads";
import { Heap } from "../../src/index.js";
import { errCode } from "../support/util.js";

test("a worker terminated holding the zone lock: nolock calls never hang on its lock; reclaimSlot recovers the lock and the heap goes on", async () => {
  const h = Heap.create({ size: 8 * (1 << 20), cpus: 4 });
  const flag = new SharedArrayBuffer(4);
  const w = new Worker(new URL("./workers/dying.js", import.meta.url), { workerData: { buffer: h.buffer, flag } });
  try {
    const msgs: { cpu?: number; holding?: string }[] = [];
    w.on("message", (m) => msgs.push(m as { cpu?: number; holding?: string }));
    for (let i = 0; i < 500 && !msgs.some((m) => m.holding); i++) await new Promise((r) => setTimeout(r, 10));
    const cpu = msgs.find((m) => m.cpu !== undefined)?.cpu;
    assert.ok(cpu !== undefined && msgs.some((m) => m.holding === "zone:acquire"), "the worker holds the zone lock");
    await w.terminate();
    // Nolock calls of other agents degrade instead of waiting on the dead owner's lock.
    assert.equal(h.allocPagesNolock(2), 0, "zone trylock fails, nothing cached: 0, at once");
    // reclaimSlot takes the dead worker's zone lock over, rebuilds the buddy lists and frees the slot.
    h.reclaimSlot(cpu);
    const a = h.allocPages(6);
    assert.notEqual(a, 0, "the heap goes on allocating after reclaimSlot");
    h.freePages(a, 6);
    assert.equal(h.stats().attached, 1);
    h.shrink();
    h.validate();
    const s = h.stats();
    assert.equal(s.freePages, s.totalPages, "every page is free again: the dead worker held no page");
    assert.equal(errCode(() => h.reclaimSlot(cpu)), "EINVAL", "the slot is free now");
  } finally {
    await w.terminate();
  }
});
