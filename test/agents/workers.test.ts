/*
 * Many agents on one heap: real worker_threads attached to one SharedArrayBuffer.
 *
 * Randomised tests take their seed from SHMALLOC_SEED (or a fresh one) and print it in every
 * failure message; each worker derives its own stream from it.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Heap } from "../../src/index.js";
import { type Agent, ATTACH, MiB, SharedRing, STRESS, baseSeed, checkPattern, setWord, until, deriveSeed, seedNote, withAgents, withSeedAsync, errCode } from "../support/util.js";

/** Every page back in the buddy lists and every structure sound. */
function assertAllFree(heap: Heap, seed: number, what: string): void {
  heap.shrink();
  const s = heap.stats();
  assert.equal(s.deferredPages, 0, `${seedNote(seed)} ${what}: deferred pages left`);
  assert.deepEqual(
    s.pcp.filter((n) => n !== 0),
    [],
    `${seedNote(seed)} ${what}: pages left on pcp lists`,
  );
  for (const c of s.slabs) {
    assert.equal(c.activeObjects, 0, `${seedNote(seed)} ${what}: ${c.name} still has ${c.activeObjects} live objects`);
    assert.equal(c.pages, 0, `${seedNote(seed)} ${what}: ${c.name} still holds ${c.pages} pages`);
  }
  assert.equal(s.freePages, s.totalPages, `${seedNote(seed)} ${what}: ${s.totalPages - s.freePages} pages not free`);
  heap.validate();
}


function pick(o: Record<string, number>, keys: string[]): Record<string, number> {
  return Object.fromEntries(keys.map((k) => [k, o[k] ?? 0]));
}

async function joinAll(agents: Agent[], timeoutMs: number): Promise<void> {
  // Fail on the first worker that fails, not on the last one to time out.
  await Promise.all(agents.map((a) => a.join(timeoutMs)));
}

describe("pages across workers", () => {
  const cases = [
    { workers: 2, size: 32 * MiB, ops: 2_000_000, maxHeld: 96, inbox: 256, pressure: false },
    { workers: 4, size: 32 * MiB, ops: 2_000_000, maxHeld: 96, inbox: 256, pressure: false },
    // Memory pressure: what the workers want exceeds the heap; allocations fail now and then and
    // direct reclaim drains the other slots' pcp lists while those slots are busy.
    { workers: 4, size: 4 * MiB, ops: 600_000, maxHeld: 48, inbox: 32, pressure: true },
  ];
  for (const { workers, size, ops, maxHeld, inbox, pressure } of cases) {
    const what = pressure ? `${workers} workers on a ${size / MiB} MiB heap (memory pressure)` : `${workers} workers`;
    test(`${what}: random allocPages/freePages of orders 0..4 with cross-worker frees and signatures`, { timeout: 60_000 }, async (t) => {
      const seed = baseSeed();
      await withSeedAsync(seed, () =>
        withAgents(async (spawn) => {
          const heap = Heap.create({ size, cpus: workers + 2 });
          const ctrl = new SharedArrayBuffer(STRESS.WORDS * 4);
          const rings = Array.from({ length: workers }, () => new SharedRing(inbox));
          const agents: Agent[] = [];
          for (let id = 0; id < workers; id++) {
            agents.push(
              spawn(
                "pages",
                { buffer: heap.buffer, ctrl, abortAt: STRESS.ABORT, rings: rings.map((r) => r.buffer), id, seed: deriveSeed(seed, id), workers, ops: ops / workers, maxHeld, nolockShare: 0.05 },
                `pages worker ${id}`,
              ),
            );
          }
          const cpus = await Promise.all(agents.map(async (a) => (await a.recv("attached")).cpu as number));
          assert.equal(new Set(cpus).size, workers, `each worker has its own slot: ${cpus.join(",")}`);
          assert.ok(!cpus.includes(heap.cpu));
          const done = await Promise.all(agents.map((a) => a.recv("done", 45_000)));
          await joinAll(agents, 10_000);
          const c = new Int32Array(ctrl);
          const totals = done.map((m) => m.stats as Record<string, number>);
          const allocs = totals.reduce((s, t) => s + t.allocs!, 0);
          const fails = totals.reduce((s, t) => s + t.allocFails!, 0);
          if (pressure) assert.ok(fails > 0, "the heap was too small for the workers at times");
          else assert.equal(fails, 0, `no allocation failed on a heap far larger than what is held`);
          assert.ok(Atomics.load(c, STRESS.HANDOFFS) > 100, `blocks moved between workers (${Atomics.load(c, STRESS.HANDOFFS)})`);
          assert.ok(Atomics.load(c, STRESS.CROSS_FREES) > 100, `blocks freed by another worker (${Atomics.load(c, STRESS.CROSS_FREES)})`);
          assert.ok(allocs > 5000);
          assert.deepEqual(rings.map((r) => r.length), rings.map(() => 0), "every inbox was drained");
          assert.equal(heap.stats().attached, 1, "only the main thread is still attached");
          assertAllFree(heap, seed, "after every worker detached");
          const tot = (k: string): number => totals.reduce((n, x) => n + x[k]!, 0);
          t.diagnostic(`seed ${seed}: ${allocs} allocations (nolock: ${tot("nolockAllocs")}, ${tot("nolockFails")} gave 0; ${tot("nolockFrees")} nolock frees; ${fails} failed), ${Atomics.load(c, STRESS.HANDOFFS)} handoffs, ${Atomics.load(c, STRESS.CROSS_FREES)} cross-worker frees; vmstat ${JSON.stringify(pick(heap.stats().vmstat, ["pcpRefill", "pcpDrain", "pcpTrylockFail", "zoneContended", "directReclaim", "allocFail"]))}`);
          heap.detach();
        }),
      );
    });
  }
});

describe("slab objects across workers (larson)", () => {
  for (const workers of [2, 4]) {
    test(`${workers} workers: kmalloc/kfree of 8 B..64 KiB and a named cache, blocks freed by other workers, full patterns`, { timeout: 60_000 }, async (t) => {
      const seed = baseSeed();
      await withSeedAsync(seed, () =>
        withAgents(async (spawn) => {
          const heap = Heap.create({ size: 64 * MiB, cpus: workers + 2 });
          const name = "larson-obj";
          const cache = heap.createCache(name, 200, { align: 8 });
          const ctrl = new SharedArrayBuffer(STRESS.WORDS * 4);
          const rings = Array.from({ length: workers }, () => new SharedRing(512));
          const agents: Agent[] = [];
          for (let id = 0; id < workers; id++) {
            agents.push(
              spawn(
                "slab",
                { buffer: heap.buffer, ctrl, abortAt: STRESS.ABORT, rings: rings.map((r) => r.buffer), id, seed: deriveSeed(seed, id), workers, ops: 1_000_000 / workers, slots: 300, cacheName: name, nolockShare: 0.05 },
                `slab worker ${id}`,
              ),
            );
          }
          const cpus = await Promise.all(agents.map(async (a) => (await a.recv("attached")).cpu as number));
          assert.equal(new Set(cpus).size, workers, `each worker has its own slot: ${cpus.join(",")}`);
          const done = await Promise.all(agents.map((a) => a.recv("done", 45_000)));
          await joinAll(agents, 10_000);
          const c = new Int32Array(ctrl);
          const totals = done.map((m) => m.stats as Record<string, number>);
          const sum = (k: string): number => totals.reduce((s, x) => s + x[k]!, 0);
          assert.equal(sum("allocFails"), 0, "no allocation failed");
          assert.ok(Atomics.load(c, STRESS.HANDOFFS) > 100, `blocks moved between workers (${Atomics.load(c, STRESS.HANDOFFS)})`);
          assert.ok(Atomics.load(c, STRESS.CROSS_FREES) > 100, `blocks freed by another worker (${Atomics.load(c, STRESS.CROSS_FREES)})`);
          assert.ok(sum("cacheAllocs") > 1000);
          assert.equal(heap.stats().attached, 1, "only the main thread is still attached");
          heap.shrink();
          assert.equal(cache.stats().activeObjects, 0, "no live object in the named cache");
          assert.equal(cache.stats().totalObjects, 0, "the named cache's slabs were freed by shrink");
          cache.destroy();
          assert.equal(heap.findCache(name), null, "the destroyed cache is gone");
          assertAllFree(heap, seed, "after every worker detached and the cache was destroyed");
          t.diagnostic(
            `seed ${seed}: ${sum("allocs")} allocations (${sum("cacheAllocs")} from ${name}; nolock ${sum("nolockAllocs")}, ${sum("nolockFails")} gave 0; ${sum("nolockFrees")} nolock frees; ${sum("reallocs")} krealloc), ${Atomics.load(c, STRESS.HANDOFFS)} handoffs, ` +
              `${Atomics.load(c, STRESS.CROSS_FREES)} cross-worker frees; vmstat ${JSON.stringify(pick(heap.stats().vmstat, ["sheafRefill", "sheafFlush", "barnGet", "barnPut", "kmallocLarge", "zoneContended"]))}`,
          );
          heap.detach();
        }),
      );
    });
  }
});

describe("attach and detach from workers", () => {
  test("cpus: 2: a third attach throws ENOCPU, works after a detach and reuses the slot; a detached handle throws EDETACHED", { timeout: 30_000 }, async () => {
    await withAgents(async (spawn) => {
      const heap = Heap.create({ size: 8 * MiB, cpus: 2 });
      const ctrl = new SharedArrayBuffer(ATTACH.WORDS * 4);
      const c = new Int32Array(ctrl);
      const a = spawn("attach", { buffer: heap.buffer, ctrl, abortAt: ATTACH.ABORT, id: 0, seed: 0, role: "a" }, "worker A");
      const b = spawn("attach", { buffer: heap.buffer, ctrl, abortAt: ATTACH.ABORT, id: 1, seed: 0, role: "b" }, "worker B");
      const att = await a.recv("attached");
      assert.equal(att.cpu, 1);
      await b.recv("refused");
      // The main thread cannot attach a second handle either.
      assert.equal(errCode(() => Heap.attach(heap.buffer)), "ENOCPU");
      assert.equal(heap.stats().attached, 2);
      setWord(c, ATTACH.A_GO_DETACH, 1);
      await a.recv("detached");
      const done = await b.recv("done");
      assert.equal(done.cpu, 1, "B got the slot A released");
      await joinAll([a, b], 10_000);
      assert.equal(heap.stats().attached, 1);
      // A's object outlived A's attachment: any agent may free it.
      assert.equal(heap.u32[(att.obj as number) >> 2], 0xabcdef);
      heap.kfree(att.obj as number);
      // And the slot is free again for the main thread.
      const second = Heap.attach(heap.buffer);
      assert.equal(second.cpu, 1);
      second.detach();
      assert.equal(errCode(() => second.kmalloc(8)), "EDETACHED");
      assertAllFree(heap, 0, "after the ENOCPU script");
      heap.detach();
      assert.equal(errCode(() => heap.stats()), "EDETACHED");
      assert.equal(errCode(() => heap.detach()), "EDETACHED");
    });
  });

  test(
    "lock waiters never take an owner that released the lock and detached for a dead one (no false EOWNERDEAD)",
    { timeout: 30_000 },
    async (t) => {
      await withAgents(async (spawn) => {
        const workers = 6;
        const heap = Heap.create({ size: 64 * MiB, cpus: workers + 1 });
        const ctrl = new SharedArrayBuffer(ATTACH.WORDS * 4);
        const c = new Int32Array(ctrl);
        const agents: Agent[] = [];
        for (let id = 0; id < workers; id++) {
          agents.push(spawn("attach", { buffer: heap.buffer, ctrl, abortAt: ATTACH.ABORT, id, seed: 0, role: "churn", stopAt: ATTACH.DONE }, `churning worker ${id}`));
        }
        const stopAt = Date.now() + 4000;
        await until(() => Date.now() > stopAt || agents.some((a) => a.error !== null), "the churn to run").catch(() => undefined);
        setWord(c, ATTACH.DONE, 1);
        const done = await Promise.all(agents.map((a) => a.recv("done", 20_000)));
        await joinAll(agents, 10_000);
        t.diagnostic(`attach/bulk alloc/free/detach cycles: ${done.map((m) => String(m.cycles)).join(", ")}; zone lock contended ${heap.stats().vmstat.zoneContended} times`);
        assertAllFree(heap, 0, "after the churn");
        heap.detach();
      });
    },
  );

  test("3 workers attach and detach 1000 times each on 2 free slots, carrying live blocks across attachments and to each other", { timeout: 60_000 }, async (t) => {
    const seed = baseSeed();
    await withSeedAsync(seed, () =>
      withAgents(async (spawn) => {
        const workers = 3;
        const heap = Heap.create({ size: 16 * MiB, cpus: 3 });
        const ctrl = new SharedArrayBuffer(ATTACH.WORDS * 4);
        const c = new Int32Array(ctrl);
        const ring = new SharedRing(256);
        const agents: Agent[] = [];
        for (let id = 0; id < workers; id++) {
          agents.push(spawn("attach", { buffer: heap.buffer, ctrl, abortAt: ATTACH.ABORT, id, seed: deriveSeed(seed, id), role: "cycle", ring: ring.buffer, workers, cycles: 1000 }, `cycling worker ${id}`));
        }
        const done = await Promise.all(agents.map((a) => a.recv("done", 50_000)));
        await joinAll(agents, 10_000);
        assert.equal(Atomics.load(c, ATTACH.DOUBLE_CLAIM), 0, "no slot was held by two workers at once");
        assert.equal(Atomics.load(c, ATTACH.CYCLES), workers * 1000);
        for (const m of done) {
          for (const cpu of m.cpus as number[]) assert.ok(cpu === 1 || cpu === 2, `slot ${cpu} in 1..2`);
        }
        const enocpu = Atomics.load(c, ATTACH.ENOCPU);
        t.diagnostic(`seed ${seed}: ${enocpu} attaches refused with ENOCPU and retried; slots seen per worker: ${done.map((m) => JSON.stringify(m.cpus)).join(" ")}`);
        assert.equal(heap.stats().attached, 1);
        // The main thread frees what the workers handed on last.
        const e = [0, 0, 0, 0];
        let left = 0;
        while (ring.pop(e)) {
          const bad = checkPattern(heap.i32, heap.u8, e[0]!, e[1]!, e[2]!);
          assert.equal(bad, null, `a block worker ${e[3]} left in the ring: ${bad}`);
          heap.kfree(e[0]!);
          left++;
        }
        t.diagnostic(`${left} blocks left in the ring, freed by the main thread`);
        assertAllFree(heap, seed, "after the attach/detach cycles");
        heap.detach();
      }),
    );
  });
});

describe("reclaimSlot", () => {
  for (const mode of ["return", "terminate"] as const) {
    const how = mode === "return" ? "returns" : "is terminated between calls";
    test(`a worker that ${how} without detaching, holding pcp pages, sheaf objects, deferred frees and kfreeRcu objects inside a read section`, { timeout: 30_000 }, async () => {
      const seed = baseSeed();
      await withSeedAsync(seed, () =>
        withAgents(async (spawn) => {
          const heap = Heap.create({ size: 16 * MiB, cpus: 2 });
          const cache = heap.createCache("reclaim-obj", 48);
          const ctrl = new SharedArrayBuffer(64);
          const w = spawn("reclaim", { buffer: heap.buffer, ctrl, id: 1, seed: deriveSeed(seed, 1), mode, cacheName: "reclaim-obj", parkAt: 0 }, `${mode} worker`);
          const ready = await w.recv("ready");
          const cpu = ready.cpu as number;
          assert.equal(cpu, 1);
          assert.ok((ready.deferred as number) >= 2, `the worker has deferred frees (${String(ready.deferred)})`);
          assert.equal(ready.waiting, 18, "18 kfreeRcu objects wait");
          assert.ok((ready.pcp as number) > 0, "the worker's pcp lists hold pages");
          assert.equal(ready.inSection, true);
          if (mode === "return") {
            await w.join(10_000);
          } else {
            await w.terminate();
            assert.equal(w.exitCode, 1, "terminated");
          }
          let s = heap.stats();
          assert.equal(s.attached, 2, "the dead worker's slot is still attached");
          assert.equal(s.deferredObjects, ready.deferred);
          assert.equal(s.rcu.waitingObjects, 18);
          assert.equal(s.rcu.readers, 1, "the dead worker is still counted inside a read section");
          assert.ok(s.pcp[cpu]! > 0);
          assert.ok(cache.stats().sheafObjects > 0, "objects sit in the dead worker's sheaves");
          assert.equal(errCode(() => heap.reclaimSlot(0)), "EINVAL", "a handle cannot reclaim its own slot");
          heap.reclaimSlot(cpu);
          s = heap.stats();
          assert.equal(s.attached, 1);
          assert.equal(s.deferredObjects, 0, "deferred frees were done");
          assert.equal(s.rcu.waitingObjects, 0, "kfreeRcu objects were freed");
          assert.equal(s.rcu.blocks, 0);
          assert.equal(s.rcu.readers, 0, "the dead worker no longer counts as a reader");
          assert.equal(s.pcp[cpu], 0, "its pcp lists were drained");
          assert.equal(errCode(() => heap.reclaimSlot(cpu)), "EINVAL", "a free slot cannot be reclaimed");
          heap.synchronizeRcu(); // must not wait for the dead reader
          heap.validate();
          // The blocks it kept live are intact and any agent may free them.
          const live = ready.live as { pages: number[][]; objs: number[][]; cacheObjs: number[][] };
          for (const [addr, size, sig, order] of live.pages) {
            assert.equal(checkPattern(heap.i32, heap.u8, addr!, size!, sig!), null);
            heap.freePages(addr!, order!);
          }
          for (const [addr, size, sig] of live.objs) {
            assert.equal(checkPattern(heap.i32, heap.u8, addr!, size!, sig!), null);
            heap.kfree(addr!);
          }
          for (const [addr, size, sig] of live.cacheObjs) {
            assert.equal(checkPattern(heap.i32, heap.u8, addr!, size!, sig!), null);
            cache.free(addr!);
          }
          // The slot is free for a new agent.
          const again = Heap.attach(heap.buffer);
          assert.equal(again.cpu, cpu);
          assert.equal(again.rcuReadLockHeld(), false);
          const o = again.kmalloc(64);
          again.kfree(o);
          again.detach();
          heap.shrink();
          assert.equal(cache.stats().activeObjects, 0);
          cache.destroy();
          assertAllFree(heap, seed, `after reclaimSlot(${cpu})`);
          heap.detach();
        }),
      );
    });
  }
});
