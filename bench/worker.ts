/*
 * A benchmark worker: attaches to the heap (or the shared MemPool), builds the workload named in
 * its TaskSpec, runs the warm-up and the timed samples in step with the other workers of its
 * group, frees what it holds, detaches, and posts its samples.
 */
import { parentPort, workerData } from "node:worker_threads";
import { MemPool } from "@thi.ng/malloc";
import { Heap } from "../src/index.js";
import { Barrier, nowNs, type Sample, type TaskSpec, type WorkerResult } from "./common.js";
import { KfreeRcuVsKfree, KmallocBatch, KmallocPairs, nolockStorm, NolockVsNormal, PagePairs, type Paired, RcuPairs } from "./micro.js";
import { loadPeersKit, type WasmMemory } from "./peers.js";
import { JsStore, LockedThingStore, PeerStore, ShmStore, type Store, ThingStore } from "./stores.js";
import { AllocTest, CacheScratch, CpuLoop, GlibcSimple, Larson, MStress, Pair, type Workload, XMalloc } from "./workloads.js";

const spec = workerData as TaskSpec;
const port = parentPort!;
const barrier = new Barrier(spec.ctl, spec.workers);
const p = spec.params;
/** A Wasm peer's loader, when this worker runs one (worker w is the peer's agent w + 1). */
const peersKit = spec.peersDir !== undefined ? await loadPeersKit(spec.peersDir) : null;

function num(name: string): number {
  const v = p[name];
  if (v === undefined) throw new Error(`benchmark ${spec.kind}: parameter ${name} missing`);
  return v;
}

function tick(): void {
  if (spec.index === 0) port.postMessage({ type: "tick" });
}

/** Warm-up and timed samples of a workload, in step with the group; frees and cleans up after. */
function runWorkload(wl: Workload, cleanup: boolean): Sample[] {
  wl.setup();
  barrier.wait(() => barrier.setStop(false));
  wl.run(spec.warmMs);
  tick();
  const samples: Sample[] = [];
  for (let r = 0; r < spec.samples; r++) {
    barrier.wait(() => barrier.setStop(false));
    const t0 = nowNs();
    const ops = wl.run(spec.sampleMs);
    samples.push({ ops, ns: nowNs() - t0 });
    tick();
  }
  barrier.wait();
  if (cleanup) wl.cleanup();
  barrier.wait();
  if (cleanup && spec.index === 0) wl.sharedCleanup();
  return samples;
}

/** Alternating samples of two series (single worker). */
function runPaired(b: Paired): { a: Sample[]; b: Sample[] } {
  b.warm(spec.warmMs);
  tick();
  const a: Sample[] = [];
  const bs: Sample[] = [];
  for (let r = 0; r < spec.samples; r++) {
    a.push(b.sampleA(spec.sampleMs));
    bs.push(b.sampleB(spec.sampleMs));
    tick();
  }
  b.cleanup();
  return { a, b: bs };
}

/** The store the workload uses (its allocation anomalies go into the report). */
let store: Store<unknown> | null = null;

function makeStore(heap: Heap | null): Store<unknown> {
  store = newStore(heap);
  return store;
}

function newStore(heap: Heap | null): Store<unknown> {
  switch (spec.alloc) {
    case "shmalloc":
      return new ShmStore(heap!) as Store<unknown>;
    case "thing":
      if (spec.pool !== undefined) {
        const pool = new MemPool({ buf: spec.pool, skipInitialization: true });
        return new LockedThingStore(pool, spec.lock!) as Store<unknown>;
      }
      return new ThingStore(new MemPool({ buf: new ArrayBuffer(num("poolBytes")) })) as Store<unknown>;
    case "js":
      return new JsStore() as Store<unknown>;
    case "mimalloc":
    case "dlmalloc": {
      const peer = peersKit!.loadPeer(spec.alloc, { memory: spec.memory as WasmMemory, module: spec.module, index: spec.index + 1 });
      return new PeerStore(spec.alloc, peer) as Store<unknown>;
    }
  }
}

function main(): WorkerResult {
  const heap = spec.alloc === "shmalloc" ? Heap.attach(spec.heap!) : null;
  const series: Record<string, Sample[]> = {};
  const info: Record<string, number | string> = {};
  const shm = (): Heap => {
    if (heap === null) throw new Error(`benchmark ${spec.kind} needs shmalloc`);
    return heap;
  };
  const cleanup = heap !== null;
  switch (spec.kind) {
    case "cpu":
      series.main = runWorkload(new CpuLoop(), cleanup);
      break;
    case "pages":
      series.main = runWorkload(new PagePairs(shm(), num("order")), cleanup);
      break;
    case "kmalloc-lifo":
      series.main = runWorkload(new KmallocPairs(shm(), num("size")), cleanup);
      break;
    case "kmalloc-batch": {
      const wl = new KmallocBatch(shm(), num("size"), num("n"));
      series.main = runWorkload(wl, cleanup);
      Object.assign(info, wl.info());
      break;
    }
    case "rcu-pair":
      series.main = runWorkload(new RcuPairs(shm()), cleanup);
      break;
    case "nolock": {
      const r = runPaired(new NolockVsNormal(shm(), num("size")));
      series.kmalloc = r.a;
      series.nolock = r.b;
      break;
    }
    case "kfree-rcu": {
      const r = runPaired(new KfreeRcuVsKfree(shm(), num("n")));
      series.kfree = r.a;
      series.kfreeRcu = r.b;
      break;
    }
    case "storm": {
      // A short untimed pass with another seed warms the code up; its figures are dropped.
      nolockStorm(shm(), Math.ceil(num("iterations") / 10), num("seed") + 1, num("fireRate"), num("burst"));
      const s = nolockStorm(shm(), num("iterations"), num("seed"), num("fireRate"), num("burst"));
      tick();
      info.storm = JSON.stringify(s);
      break;
    }
    case "glibc": {
      const store = makeStore(heap);
      const sizes = [num("size0"), num("size1"), num("size2")];
      const counts = [num("n0"), num("n1"), num("n2"), num("n3")];
      for (const size of sizes) {
        for (const n of counts) series[`${size}/${n}`] = runWorkload(new GlibcSimple(store, size, n), cleanup);
      }
      break;
    }
    case "larson": {
      const store = makeStore(heap);
      const shared = new Int32Array(spec.shared!);
      const wl = new Larson(store, shared, barrier, spec.workers, spec.index, num("slots"), num("epochMs"), num("seed"));
      series.main = runWorkload(wl, cleanup);
      Object.assign(info, wl.info());
      break;
    }
    case "xmalloc": {
      const store = makeStore(heap);
      const wl = new XMalloc(store, spec.shared!, spec.workers, spec.index, num("size"), num("batch"), num("ringSlots"));
      series.main = runWorkload(wl, cleanup);
      Object.assign(info, wl.info());
      break;
    }
    case "mstress": {
      const store = makeStore(heap);
      const wl = new MStress(store, new Int32Array(spec.shared!), spec.index, num("dataSlots"), num("retainSlots"), num("seed"));
      series.main = runWorkload(wl, cleanup);
      Object.assign(info, wl.info());
      break;
    }
    case "cache-scratch": {
      const store = makeStore(heap);
      const wl = new CacheScratch(store, spec.handoff?.[spec.index] ?? 0, num("size"), num("reps"));
      series.main = runWorkload(wl, cleanup);
      break;
    }
    case "pair": {
      const store = makeStore(heap);
      series.main = runWorkload(new Pair(store, num("size")), cleanup);
      break;
    }
    case "alloc-test": {
      const store = makeStore(heap);
      series.main = runWorkload(new AllocTest(store, spec.index, num("live"), num("seed")), cleanup);
      break;
    }
    default:
      throw new Error(`unknown benchmark ${spec.kind}`);
  }
  if (store !== null) info.allocZero = store.zeroReturns;
  if (heap !== null) heap.detach();
  return { type: "done", index: spec.index, series, info };
}

port.postMessage(main());
