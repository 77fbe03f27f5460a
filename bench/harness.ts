/*
 * The driver's side of a run: make a fresh heap (or shared MemPool) for a group of workers, start
 * them, collect their samples, and after they detached check the heap: validate() and, after
 * shrink(), every page free. A benchmark that leaks is a bug and is reported as a failed check.
 */
import { Worker } from "node:worker_threads";
import { MemPool } from "@thi.ng/malloc";
import { Heap } from "../src/index.js";
import { type AllocKind, CTL_WORDS, isPeer, type Sample, type TaskSpec, type WorkerResult } from "./common.js";
import { loadPeersKit } from "./peers.js";

export interface GroupOptions {
  kind: string;
  alloc: AllocKind;
  workers: number;
  params: Record<string, number>;
  sampleMs: number;
  samples: number;
  warmMs: number;
  /** Name of the run in progress lines and leak checks. */
  label: string;
  /** Bytes of the workload's shared SharedArrayBuffer (tables, rings). */
  sharedBytes?: number;
  /** cache-scratch: the main thread allocates one object of this size per worker and hands it over. */
  handoffSize?: number;
  /** @thi.ng/malloc: bytes of one shared MemPool behind one lock (without it, each worker makes a bare MemPool). */
  poolBytes?: number;
  /** shmalloc heap size (default 64 MiB). */
  heapBytes?: number;
  /** Wasm peers: the folder of wasm-peers.mjs (findPeers accepted it). */
  peersDir?: string;
  /** Progress units this run reports (one per warm-up and per sample). */
  units: number;
}

export interface LeakCheck {
  run: string;
  ok: boolean;
  validate: string;
  freePages: number;
  totalPages: number;
  detail: string;
}

export interface GroupResult {
  /** Per series, per worker, the samples. */
  series: Record<string, Sample[][]>;
  info: Record<string, number | string>[];
  vmstat?: Record<string, number>;
  leak?: LeakCheck;
  error?: string;
  /** Wall time of the whole run, setup and checks included (ms). */
  wallMs: number;
}

export interface Progress {
  begin(label: string, units: number): void;
  tick(): void;
  end(): void;
}

const TIMEOUT_MS = 120_000;

export async function runGroup(o: GroupOptions, progress: Progress): Promise<GroupResult> {
  const t0 = performance.now();
  progress.begin(o.label, o.units);
  const ctl = new SharedArrayBuffer(CTL_WORDS * 4);
  const shared = o.sharedBytes !== undefined ? new SharedArrayBuffer(o.sharedBytes) : undefined;
  let heap: Heap | null = null;
  let pool: SharedArrayBuffer | undefined;
  let lock: SharedArrayBuffer | undefined;
  const handoff: number[] = [];
  let peerMemory: unknown;
  let peerModule: unknown;
  if (isPeer(o.alloc)) {
    // One fresh shared memory per run; the main thread is agent 0 (it allocates the handoff
    // objects), worker w is agent w + 1.
    const kit = await loadPeersKit(o.peersDir!);
    const memory = kit.createMemory();
    peerMemory = memory;
    peerModule = kit.peerModule(o.alloc);
    if (o.handoffSize !== undefined) {
      const main = kit.loadPeer(o.alloc, { memory, module: peerModule, index: 0 });
      for (let w = 0; w < o.workers; w++) handoff.push(main.malloc(o.handoffSize));
    }
  } else if (o.alloc === "shmalloc") {
    heap = Heap.create({ size: o.heapBytes ?? 64 << 20, cpus: 8 });
    if (o.handoffSize !== undefined) for (let w = 0; w < o.workers; w++) handoff.push(heap.kmalloc(o.handoffSize));
  } else if (o.alloc === "thing" && o.poolBytes !== undefined) {
    pool = new SharedArrayBuffer(o.poolBytes);
    lock = new SharedArrayBuffer(64);
    const mp = new MemPool({ buf: pool });
    if (o.handoffSize !== undefined) for (let w = 0; w < o.workers; w++) handoff.push(mp.malloc(o.handoffSize));
  }
  const base: TaskSpec = {
    kind: o.kind,
    alloc: o.alloc,
    workers: o.workers,
    index: 0,
    sampleMs: o.sampleMs,
    samples: o.samples,
    warmMs: o.warmMs,
    params: o.params,
    ctl,
  };
  if (heap !== null) base.heap = heap.buffer;
  if (pool !== undefined) base.pool = pool;
  if (lock !== undefined) base.lock = lock;
  if (shared !== undefined) base.shared = shared;
  if (handoff.length > 0) base.handoff = handoff;
  if (peerMemory !== undefined) {
    base.peersDir = o.peersDir!;
    base.memory = peerMemory;
    base.module = peerModule;
  }

  const workers: Worker[] = [];
  const results: (WorkerResult | undefined)[] = new Array<WorkerResult | undefined>(o.workers);
  let error: string | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      let done = 0;
      const timer = setTimeout(() => reject(new Error(`timed out after ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
      const fail = (e: unknown): void => {
        clearTimeout(timer);
        reject(e instanceof Error ? e : new Error(String(e)));
      };
      for (let w = 0; w < o.workers; w++) {
        const worker = new Worker(new URL("./worker.js", import.meta.url), { workerData: { ...base, index: w } });
        workers.push(worker);
        worker.on("message", (m: WorkerResult | { type: "tick" }) => {
          if (m.type === "tick") progress.tick();
          else {
            results[m.index] = m;
            if (++done === o.workers) {
              clearTimeout(timer);
              resolve();
            }
          }
        });
        worker.on("error", fail);
        worker.on("exit", (code) => {
          if (results[w] === undefined) fail(new Error(`worker ${w} exited with code ${code} before it reported`));
        });
      }
    });
  } catch (e) {
    error = `${o.label}: ${(e as Error).message}`;
  }
  await Promise.all(workers.map((w) => w.terminate()));

  const series: Record<string, Sample[][]> = {};
  const info: Record<string, number | string>[] = [];
  for (const r of results) {
    if (r === undefined) continue;
    info.push(r.info);
    for (const [k, s] of Object.entries(r.series)) (series[k] ??= []).push(s);
  }
  const out: GroupResult = { series, info, wallMs: 0 };
  if (error !== undefined) out.error = error;
  if (heap !== null) {
    out.vmstat = { ...heap.stats().vmstat };
    out.leak = error === undefined ? leakCheck(heap, o.label) : { run: o.label, ok: false, validate: "not run", freePages: 0, totalPages: 0, detail: "the run failed" };
  }
  out.wallMs = performance.now() - t0;
  progress.end();
  return out;
}

/** After every worker detached: validate, shrink, and demand that every page is free. */
function leakCheck(heap: Heap, run: string): LeakCheck {
  let validate = "ok";
  try {
    heap.validate();
  } catch (e) {
    validate = (e as Error).message;
  }
  let detail = "";
  try {
    heap.shrink();
  } catch (e) {
    detail = `shrink threw: ${(e as Error).message}`;
  }
  const st = heap.stats();
  const ok = validate === "ok" && detail === "" && st.freePages === st.totalPages;
  if (!ok && detail === "") {
    const live = st.slabs.filter((s) => s.activeObjects > 0).map((s) => `${s.name}: ${s.activeObjects} live`);
    detail =
      `${st.totalPages - st.freePages} of ${st.totalPages} pages not free (pcp ${st.pcp.reduce((a, b) => a + b, 0)}, ` +
      `deferred ${st.deferredPages}, attached ${st.attached})` +
      (live.length > 0 ? `; ${live.join(", ")}` : "");
  }
  heap.detach();
  return { run, ok, validate, freePages: st.freePages, totalPages: st.totalPages, detail };
}
