import assert from "node:assert/strict";
import { test } from "node:test";
import { Worker } from "node:worker_threads";
import { Heap, HeapError } from "../src/index.js";

test("a worker terminated inside the allocator is reported with EOWNERDEAD; nolock calls never hang on its lock", async () => {
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
    const err = (() => {
      try {
        h.reclaimSlot(cpu);
      } catch (e) {
        return e;
      }
      return null;
    })();
    assert.ok(err instanceof HeapError && err.code === "EOWNERDEAD", `got ${String(err)}`);
    assert.match((err as Error).message, /zone lock/);
    // A normal call that needs the lock now fails with EOWNERDEAD instead of hanging.
    assert.throws(
      () => h.allocPages(6),
      (e: unknown) => e instanceof HeapError && e.code === "EOWNERDEAD",
    );
    assert.throws(
      () => h.reclaimSlot(cpu),
      (e: unknown) => e instanceof HeapError && e.code === "EOWNERDEAD",
    );
  } finally {
    await w.terminate();
  }
});
