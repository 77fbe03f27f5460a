/*
 * A worker of the demo: attaches to the heap, finds the node cache by name, and runs a mix of
 * hash-table operations until the main thread raises the stop word. A kmalloc trace hook counts
 * allocations per size bucket and keeps a small log of samples in the heap, allocated and freed
 * with the nolock calls only (the hook runs inside the allocator).
 */
import { parentPort, workerData } from "node:worker_threads";
import { Heap, type TraceRecord } from "../src/index.js";
import { C, type MainMessage, openControl, ROW, sizeBucket, STOP, type WorkerData, type WorkerMessage } from "./ht_control.js";
import { NODE_CACHE, SharedTable } from "./ht_table.js";
import { Prng } from "../test/support/common.js";

if (parentPort === null) throw new Error("ht_worker.js runs as a worker thread of main.js");
const port = parentPort;
const post = (m: WorkerMessage): void => port.postMessage(m);

/** Samples kept in the heap-allocated log (a ring of pointers to 16-byte records). */
const LOG_LEN = 64;
/** One kmalloc in this many is sampled into the log. */
const SAMPLE_EVERY = 32;
const SAMPLE_MAGIC = 0x534d504c; // "SMPL"
/** Entries a worker evicts after a failed allocation. */
const EVICT = 8;
/** Operations between looks at the clock. */
const CHUNK = 128;
/** Run this long (ms) before letting the event loop turn (the kfreeRcu timer runs there). */
const SLICE_MS = 10;

const data = workerData as WorkerData;
const ctl = openControl(data.control);
const row = new Float64Array(data.control, 64 + data.index * ROW * 8, ROW);
const rng = new Prng(data.seed, data.index);
let bugsPosted = 0;
/** Add to one of this worker's counters. */
function add(field: number, n = 1): void {
  row[field] = row[field]! + n;
}

const heap = Heap.attach(data.buffer);
const cache = heap.findCache(NODE_CACHE);
if (cache === null) throw new Error(`cache "${NODE_CACHE}" not found`);
const table = new SharedTable(heap, cache, data.hdr, data.index + 1, {
  bug(message) {
    add(C.bugs);
    if (bugsPosted++ < 5) post({ type: "bug", message: `worker ${data.index} (cpu ${heap.cpu}): ${message}` });
  },
  contended() {
    add(C.contended);
  },
});

/* ------------------------------------------------------------------ the trace hook and its log */

const i32 = heap.i32;
/** The log's ring of record pointers; 0 when even that did not fit (then nothing is sampled). */
const log = heap.kzalloc(LOG_LEN * 4);
let logPos = 0;
let hookDepth = 0;
let hookTick = 0;
let hookError: string | null = null;

function onKmalloc(rec: TraceRecord): void {
  add(C.sizes + sizeBucket(rec.size ?? 0));
  // Our own kmallocNolock below fires this event again: count it, sample nothing.
  if (hookDepth !== 0 || ++hookTick % SAMPLE_EVERY !== 0 || log === 0) return;
  hookDepth++;
  try {
    const r = heap.kmallocNolock(16);
    if (r === 0) {
      add(C.nolockFail); // the allocator was busy or short: not an error
      return;
    }
    const rw = r >> 2;
    i32[rw] = SAMPLE_MAGIC;
    i32[rw + 1] = rec.size ?? 0;
    i32[rw + 2] = rec.addr ?? 0;
    i32[rw + 3] = hookTick;
    const slot = (log >> 2) + (logPos++ % LOG_LEN);
    const old = i32[slot]!;
    i32[slot] = r;
    add(C.samples);
    if (old !== 0) {
      if (i32[old >> 2] !== SAMPLE_MAGIC) hookError ??= `sample record 0x${old.toString(16)} was overwritten`;
      heap.kfreeNolock(old);
    }
  } catch (e) {
    hookError ??= e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  } finally {
    hookDepth--;
  }
}

/** Remove the hook and free the log (outside the allocator: plain kfree). */
function freeLog(): number {
  heap.trace.off("kmalloc", onKmalloc);
  if (log === 0) return 0;
  let n = 0;
  for (let k = 0; k < LOG_LEN; k++) {
    const r = i32[(log >> 2) + k]!;
    if (r === 0) continue;
    if (i32[r >> 2] !== SAMPLE_MAGIC) hookError ??= `sample record 0x${r.toString(16)} was overwritten`;
    heap.kfree(r);
    n++;
  }
  heap.kfree(log);
  return n;
}

/* ------------------------------------------------------------------ the workload */

function step(): void {
  const r = rng.u32() % 1000;
  const key = rng.below(table.keySpace);
  if (r < 200) {
    const res = table.insert(key, rng);
    if (res === "failed") {
      // Out of memory: count it and shed some entries, as a cache would.
      add(C.allocFail);
      const gone = table.evict(EVICT, rng);
      add(C.evicted, gone);
      add(C.entries, -gone);
    }
    else if (res === "replaced") add(C.replaces);
    else {
      add(C.inserts);
      add(C.entries);
    }
  } else if (r < 380) {
    if (table.remove(key)) {
      add(C.removes);
      add(C.entries, -1);
    }
  } else if (r < 450) {
    const to = data.nWorkers > 1 ? (data.index + 1 + rng.below(data.nWorkers - 1)) % data.nWorkers : data.index;
    if (table.migrate(key, to)) {
      add(C.migOut);
      add(C.entries, -1);
    }
  } else if (r < 452) {
    add(C.scans);
    add(C.scanned, table.scan(rng.below(table.nBuckets), 64));
  } else {
    add(C.lookups);
    if (table.lookup(key)) add(C.hits);
  }
  add(C.ops);
}

function receive(reinsert: boolean): void {
  const [got, back] = table.receive(data.index, reinsert);
  add(C.migIn, got);
  add(C.reinserted, back);
  add(C.entries, back);
}

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

let go: () => void = () => {};
const started = new Promise<void>((resolve) => {
  go = resolve;
});

async function run(): Promise<void> {
  heap.trace.on("kmalloc", onKmalloc);
  post({ type: "ready", cpu: heap.cpu, log: log !== 0 });
  await started; // every worker is attached: start together
  while (Atomics.load(ctl.i32, STOP) === 0) {
    const t0 = performance.now();
    do {
      for (let i = 0; i < CHUNK; i++) step();
    } while (performance.now() - t0 < SLICE_MS && Atomics.load(ctl.i32, STOP) === 0);
    if (table.inboxBusy(data.index)) receive(true);
    row[C.frees] = table.frees;
    row[C.foreignFrees] = table.foreignFrees;
    await turn();
  }
  post({ type: "stopped" });
}

function finish(): void {
  // Every worker has stopped: nothing is pushed into our inbox any more.
  receive(false);
  row[C.frees] = table.frees;
  row[C.foreignFrees] = table.foreignFrees;
  const logFreed = freeLog();
  heap.detach();
  post({ type: "done", counters: Array.from(row), hookError, logFreed });
  port.unref();
}

port.on("message", (m: MainMessage) => {
  if (m.type === "go") go();
  if (m.type !== "drain") return;
  try {
    finish();
  } catch (e) {
    post({ type: "fatal", message: `worker ${data.index} while draining: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}` });
    process.exit(1);
  }
});

run().catch((e: unknown) => {
  post({ type: "fatal", message: `worker ${data.index}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}` });
  process.exit(1);
});
