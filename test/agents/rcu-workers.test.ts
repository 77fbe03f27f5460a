/*
 * RCU across real worker_threads: read sections in one agent, kfreeRcu and grace periods in
 * others. Ordering is shown with shared words written just before the event they announce
 * (never with timing thresholds): e.g. a reader sets A_UNLOCKING before its rcuReadUnlock, so an
 * agent whose synchronizeRcu returned must find it set.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Heap, type SlabStats } from "../../src/index.js";
import { R_GP_SEQ } from "../../src/core/layout.js";
import { type Agent, MiB, RCU, checkPattern, delay, fillPattern, setWord, signature, until, withAgents, baseSeed, seedNote, withSeedAsync, deriveSeed, errCode } from "../support/util.js";


function slab(heap: Heap, name: string): SlabStats {
  const s = heap.stats().slabs.find((c) => c.name === name);
  assert.ok(s, `no cache ${name}`);
  return s;
}

function assertAllFree(heap: Heap, what: string, seed?: number): void {
  const note = seed === undefined ? "" : `${seedNote(seed)} `;
  heap.shrink();
  const s = heap.stats();
  assert.equal(s.rcu.waitingObjects, 0, `${note}${what}: kfreeRcu objects still wait`);
  assert.equal(s.rcu.blocks, 0, `${note}${what}: kfreeRcu blocks left`);
  for (const c of s.slabs) assert.equal(c.activeObjects, 0, `${note}${what}: ${c.name} has ${c.activeObjects} live objects`);
  assert.equal(s.freePages, s.totalPages, `${note}${what}: ${s.totalPages - s.freePages} pages not free`);
  heap.validate();
}

const word = (c: Int32Array, k: number) => (): boolean => Atomics.load(c, k) !== 0;

async function joinAll(agents: Agent[]): Promise<void> {
  await Promise.all(agents.map((a) => a.join(15_000)));
}

describe("RCU across workers", () => {
  test("kfreeRcu(X) while a reader in another worker reads X: X is not handed out again until the reader leaves, then it is freed", { timeout: 40_000 }, async (t) => {
    await withAgents(async (spawn) => {
      const heap = Heap.create({ size: 16 * MiB, cpus: 4 });
      const ctrl = new SharedArrayBuffer(RCU.WORDS * 4);
      const c = new Int32Array(ctrl);
      const xSize = 96;
      const x = heap.kmalloc(xSize);
      const xSig = signature(99, 1);
      fillPattern(heap.i32, heap.u8, x, xSize, xSig);
      const activeBefore = slab(heap, "kmalloc-96").activeObjects;
      const base = { buffer: heap.buffer, ctrl, abortAt: RCU.ABORT, seed: 0 };
      const a = spawn("rcu", { ...base, id: 1, role: "reader", x, xSize, xSig }, "reader A");
      const b = spawn("rcu", { ...base, id: 2, role: "freer", x, xSize, perRound: 200 }, "freer B");
      await until(() => Atomics.load(c, RCU.B_ROUNDS) >= 100 || (a.check(), b.check(), false), "100 allocation rounds of B");
      // The main thread allocates from the class too: never X.
      const mine: number[] = [];
      for (let k = 0; k < 1000; k++) {
        const o = heap.kmalloc(xSize);
        assert.notEqual(o, x, "X handed out again to the main thread while A is inside");
        mine.push(o);
      }
      heap.kfreeBulk(mine);
      const during = heap.stats();
      assert.equal(during.rcu.waitingObjects, 1, "X waits for its grace period");
      assert.ok(during.rcu.readers >= 1, "A is counted as a reader");
      setWord(c, RCU.B_STOP, 1);
      const allocated = await b.recv("allocated");
      assert.equal(Atomics.load(c, RCU.A_OUT), 0, "A is still inside");
      assert.equal(checkPattern(heap.i32, heap.u8, x, xSize, xSig), null, "nobody wrote into X");
      assert.equal(heap.stats().rcu.waitingObjects, 1, "X still waits");
      setWord(c, RCU.A_STOP, 1);
      const left = await a.recv("left");
      assert.ok((left.reads as number) > 0);
      await until(word(c, RCU.B_SYNCED), "B's synchronizeRcu and rcuBarrier", 20_000).catch((e: Error) => {
        a.check();
        b.check();
        throw e;
      });
      const after = heap.stats();
      assert.equal(after.rcu.waitingObjects, 0, "X was freed after the grace period");
      assert.equal(slab(heap, "kmalloc-96").activeObjects, activeBefore - 1, "kmalloc-96 lost its one live object, X");
      assert.ok(after.vmstat.rcuFreed >= 1);
      assert.equal(errCode(() => heap.kfree(x)), "EDOUBLEFREE", "X is free");
      heap.validate();
      t.diagnostic(`B allocated ${String(allocated.count)} objects of ${xSize} B, A read X ${String(left.reads)} times; rcuSyncFallback ${after.vmstat.rcuSyncFallback}`);
      setWord(c, RCU.EXIT, 1);
      await joinAll([a, b]);
      assertAllFree(heap, "after the kfreeRcu test");
      heap.detach();
    });
  });

  test("synchronizeRcu in the main thread returns only after a reader blocked inside its section in a worker leaves", { timeout: 20_000 }, async () => {
    await withAgents(async (spawn) => {
      const heap = Heap.create({ size: 8 * MiB, cpus: 4 });
      const ctrl = new SharedArrayBuffer(RCU.WORDS * 4);
      const c = new Int32Array(ctrl);
      const r = spawn("rcu", { buffer: heap.buffer, ctrl, abortAt: RCU.ABORT, seed: 0, id: 1, role: "timedReader", holdMs: 150 }, "timed reader");
      await until(word(c, RCU.A_IN), "the reader to enter");
      heap.synchronizeRcu();
      assert.equal(Atomics.load(c, RCU.A_UNLOCKING), 1, "synchronizeRcu returned before the reader's rcuReadUnlock");
      setWord(c, RCU.EXIT, 1);
      await joinAll([r]);
      heap.synchronizeRcu(); // nobody inside: returns at once
      assertAllFree(heap, "after the test");
      heap.detach();
    });
  });

  test("synchronizeRcu in a worker waits for an earlier reader through its nesting, not for a later reader nor an idle worker; EDEADLK inside a section", { timeout: 40_000 }, async () => {
    await withAgents(async (spawn) => {
      const heap = Heap.create({ size: 8 * MiB, cpus: 6 });
      const ctrl = new SharedArrayBuffer(RCU.WORDS * 4);
      const c = new Int32Array(ctrl);
      const base = { buffer: heap.buffer, ctrl, abortAt: RCU.ABORT, seed: 0 };
      const idle = spawn("rcu", { ...base, id: 1, role: "idle" }, "idle worker");
      const r1 = spawn("rcu", { ...base, id: 2, role: "reader", nest: 2 }, "reader R1 (nested)");
      const w = spawn("rcu", { ...base, id: 3, role: "syncer" }, "syncer W");
      const r2 = spawn("rcu", { ...base, id: 4, role: "late" }, "late reader R2");
      const all = [idle, r1, w, r2];
      const checkAll = (): boolean => {
        for (const x of all) x.check();
        return false;
      };
      const ed = await w.recv("edeadlk");
      assert.deepEqual(ed.codes, ["EDEADLK", "EDEADLK", "EDEADLK", "EDEADLK"], "synchronizeRcu / rcuBarrier inside a (nested) section");
      // The same from the main thread.
      heap.rcuReadLock();
      assert.equal(errCode(() => heap.synchronizeRcu()), "EDEADLK");
      heap.rcuReadUnlock();
      await until(() => word(c, RCU.IDLE)() || checkAll(), "the idle worker");
      await until(() => word(c, RCU.A_IN)() || checkAll(), "R1 to enter (two levels deep)");
      assert.equal(heap.stats().rcu.readers, 1);
      const seq0 = Atomics.load(heap.i32, R_GP_SEQ);
      setWord(c, RCU.W_GO, 1);
      await until(() => word(c, RCU.W_STARTED)() || checkAll(), "W to start synchronizeRcu");
      // R2 must begin after W's grace period began: wait until the period's counter moved (then
      // any later section is not waited for), or, failing that, a while.
      await until(() => Atomics.load(heap.i32, R_GP_SEQ) !== seq0, "the grace-period counter to move", 2000).catch(() => delay(100));
      await delay(20);
      setWord(c, RCU.R2_GO, 1);
      await until(() => word(c, RCU.R2_IN)() || checkAll(), "R2 to enter");
      await delay(50);
      assert.equal(Atomics.load(c, RCU.W_RETURNED), 0, "synchronizeRcu returned while R1 is inside (two levels deep)");
      assert.equal(heap.stats().rcu.readers, 2);
      setWord(c, RCU.A_DROP_INNER, 1);
      await until(() => word(c, RCU.A_INNER_OUT)() || checkAll(), "R1 to drop its inner level");
      await delay(50);
      assert.equal(Atomics.load(c, RCU.W_RETURNED), 0, "synchronizeRcu returned after R1's inner unlock, with R1's outer level still open");
      setWord(c, RCU.A_STOP, 1);
      await until(() => word(c, RCU.W_RETURNED)() || checkAll(), "W's synchronizeRcu to return with R2 inside and the idle worker blocked", 15_000);
      assert.equal(Atomics.load(c, RCU.W_SAW), 2, "synchronizeRcu returned before R1's outermost rcuReadUnlock");
      assert.equal(Atomics.load(c, RCU.R2_OUT), 0, "R2 is still inside: W did not wait for it");
      assert.equal(heap.stats().rcu.readers, 1, "R2 is the one reader left");
      setWord(c, RCU.R2_STOP, 1);
      await until(() => word(c, RCU.R2_OUT)() || checkAll(), "R2 to leave");
      setWord(c, RCU.EXIT, 1);
      await joinAll(all);
      heap.synchronizeRcu();
      assertAllFree(heap, "after the test");
      heap.detach();
    });
  });
});

describe("RCU and detached handles", () => {
  // Allocator bug (rcu.ts): rcuReadLock / rcuReadUnlock only call assertLive when this handle's
  // slot nesting word is 0, and that word lives in the slot, which a new agent may own by now. A
  // stale handle then changes the new owner's nesting: a stale unlock ends its read section early
  // (its objects can be freed under it), a stale lock keeps it open for ever (synchronizeRcu hangs).
  test(
    "a detached handle whose slot a worker reused cannot open or close that worker's read section (EDETACHED)",
    { timeout: 20_000 },
    async () => {
      await withAgents(async (spawn) => {
        const heap = Heap.create({ size: 8 * MiB, cpus: 2 });
        const stale = Heap.attach(heap.buffer);
        assert.equal(stale.cpu, 1);
        stale.detach();
        const ctrl = new SharedArrayBuffer(RCU.WORDS * 4);
        const c = new Int32Array(ctrl);
        const w = spawn("rcu", { buffer: heap.buffer, ctrl, abortAt: RCU.ABORT, seed: 0, id: 1, role: "late" }, "reader on the reused slot");
        assert.equal((await w.recv("attached")).cpu, 1, "the worker reuses slot 1");
        setWord(c, RCU.R2_GO, 1);
        await until(() => word(c, RCU.R2_IN)() || (w.check(), false), "the worker to enter its section");
        // Collect first, assert after the worker is out: a failure must not leave it stuck.
        const lockCode = errCode(() => stale.rcuReadLock());
        const unlockCode = errCode(() => stale.rcuReadUnlock());
        const unlockCode2 = errCode(() => stale.rcuReadUnlock());
        const readers = heap.stats().rcu.readers;
        setWord(c, RCU.R2_STOP, 1);
        let workerError: Error | null = null;
        await until(() => word(c, RCU.R2_OUT)() || (w.check(), false), "the worker to leave its section", 5000).catch((e: Error) => {
          workerError = e;
        });
        const readersAfter = heap.stats().rcu.readers;
        setWord(c, RCU.EXIT, 1);
        assert.equal(lockCode, "EDETACHED", "rcuReadLock on a detached handle");
        assert.equal(unlockCode, "EDETACHED", "rcuReadUnlock on a detached handle");
        assert.equal(unlockCode2, "EDETACHED", "rcuReadUnlock on a detached handle");
        assert.equal(readers, 1, "the worker is still inside its section");
        assert.equal(workerError, null, "the worker's own rcuReadUnlock works");
        assert.equal(readersAfter, 0);
        await joinAll([w]);
        heap.synchronizeRcu();
        assertAllFree(heap, "after the test");
        heap.detach();
      });
    },
  );
});

describe("RCU stress", () => {
  test("4 workers read, insert and unlink nodes of an RCU list in the heap (debug heap); nothing leaks after rcuBarrier and detach", { timeout: 60_000 }, async (t) => {
    const seed = baseSeed();
    await withSeedAsync(seed, () =>
      withAgents(async (spawn) => {
        const workers = 4;
        let heap: Heap;
        let debug = true;
        try {
          heap = Heap.create({ size: 32 * MiB, cpus: workers + 2, debug: true });
        } catch {
          debug = false;
          heap = Heap.create({ size: 32 * MiB, cpus: workers + 2 });
        }
        const name = "rcu-node";
        const cache = heap.createCache(name, 48);
        const root = heap.kzalloc(64);
        const ctrl = new SharedArrayBuffer(RCU.WORDS * 4);
        const agents: Agent[] = [];
        for (let id = 0; id < workers; id++) {
          agents.push(
            spawn(
              "rcu-list",
              { buffer: heap.buffer, ctrl, abortAt: RCU.ABORT, id, seed: deriveSeed(seed, id), workers, ops: 60_000, root, cacheName: name, minLen: 32, maxLen: 300 },
              `list worker ${id}`,
            ),
          );
        }
        const done = await Promise.all(agents.map((a) => a.recv("done", 55_000)));
        await joinAll(agents);
        const stats = done.map((m) => m.stats as Record<string, number>);
        const sum = (k: string): number => stats.reduce((s, x) => s + x[k]!, 0);
        // Empty the list from the main thread, checking every node on the way.
        const r = root >> 2;
        let p = Atomics.load(heap.i32, r);
        let left = 0;
        const payloadWords = (cache.objectSize >> 2) - 3;
        while (p !== 0) {
          const w = p >> 2;
          const key = heap.i32[w + 2]!;
          const sig = heap.i32[w]!;
          assert.equal(sig, signature(key, p), `${seedNote(seed)} node 0x${p.toString(16)} intact at the end`);
          for (let k = 0; k < payloadWords; k++) assert.equal(heap.i32[w + 3 + k], (sig ^ Math.imul(k + 1, 0x2545f491)) | 0);
          const next = heap.i32[w + 1]!;
          cache.free(p);
          p = next;
          left++;
        }
        assert.equal(left, heap.i32[r + 2], "the list's length word matches");
        heap.kfree(root);
        heap.rcuBarrier();
        const s = heap.stats();
        assert.equal(s.rcu.waitingObjects, 0, `${seedNote(seed)} kfreeRcu objects left after rcuBarrier`);
        assert.equal(s.attached, 1);
        assert.equal(sum("inserts") - sum("deletes"), left, "every insert and unlink accounted for");
        heap.shrink();
        assert.equal(cache.stats().activeObjects, 0, `${seedNote(seed)} live list nodes after everything was freed`);
        cache.destroy();
        assertAllFree(heap, "after the RCU list stress", seed);
        t.diagnostic(
          `seed ${seed}, debug heap: ${debug}: ${sum("reads")} traversals (${sum("visited")} nodes checked, ${sum("longReads")} long, ${sum("nested")} nested), ` +
            `${sum("inserts")} inserts, ${sum("deletes")} unlinks (${sum("rcuFrees")} kfreeRcu, ${sum("syncFrees")} after synchronizeRcu), ${sum("syncs")} synchronizeRcu, ` +
            `${sum("barriers")} rcuBarrier; grace periods ${s.rcu.gracePeriods}; rcu vmstat ${JSON.stringify({ q: s.vmstat.rcuQueued, f: s.vmstat.rcuFreed, e: s.vmstat.rcuEmergency, sf: s.vmstat.rcuSyncFallback })}`,
        );
        heap.detach();
      }),
    );
  });
});
