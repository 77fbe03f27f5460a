/*
 * `npm start`: a realistic program on one shmalloc heap.
 *
 * N workers share a hash table that lives in the heap (see ht_table.ts): nodes from the named
 * cache "ht_node" (created here, found by name in the workers), values from kmalloc of varied
 * sizes. Entries are inserted, looked up inside RCU read sections, replaced, removed (kfreeRcu),
 * and handed from worker to worker, so most are freed by an agent that did not allocate them. A
 * kmalloc trace hook in every worker counts allocations per size bucket. The main thread shows a
 * live view of the allocator, then stops the workers, empties the table, and checks that every
 * page of the heap comes back.
 */
import { randomInt } from "node:crypto";
import { Worker } from "node:worker_threads";
import { Heap, HeapError, type HeapStats, type KmemCache } from "../src/index.js";
import { type Inspector, serveInspector } from "../src/inspector.js";
import { UsageError, usageMessage } from "./args.js";
import { parseArgs, USAGE, type DemoOptions } from "./cli.js";
import { C, makeControl, type MainMessage, ROW, SIZE_LABELS, STOP, type WorkerData, type WorkerMessage } from "./ht_control.js";
import { NODE_CACHE, NODE_SIZE, SharedTable, MAIN_OWNER } from "./ht_table.js";
import { count, frameLines, mib, plainLine, total, TtyFrame, type ViewInput } from "./live_view.js";
import { hex32 } from "../test/support/common.js";

const KEY_SPACE = 1 << 16;
const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 30_000;
const DONE_TIMEOUT_MS = 60_000;

/** The inspector's server (--web), closed when main ends, whichever way. */
let inspector: Inspector | null = null;

/** The smallest heap (a multiple of 64 KiB) Heap.create makes for `cpus` slots, or 0 if none up to 256 MiB. */
function smallestSize(cpus: number): number {
  const STEP = 64 * 1024;
  const fits = (steps: number): boolean => {
    try {
      Heap.create({ size: steps * STEP, cpus }).detach();
      return true;
    } catch {
      return false;
    }
  };
  let lo = 1;
  let hi = (256 * 1024 * 1024) / STEP; // a demo heap needs far less; never try a huge buffer
  if (!fits(hi)) return 0;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (fits(mid)) hi = mid;
    else lo = mid + 1;
  }
  return lo * STEP;
}

function errText(e: unknown): string {
  if (e instanceof HeapError) return e.message.startsWith(e.code) ? e.message : `${e.code}: ${e.message}`;
  return e instanceof Error ? e.message : String(e);
}

function pow2floor(n: number): number {
  return 2 ** Math.floor(Math.log2(n));
}

interface WorkerState {
  worker: Worker;
  cpu: number;
  ready: boolean;
  stopped: boolean;
  done: boolean;
  exited: boolean;
  counters: number[] | null;
  hookError: string | null;
  logFreed: number;
}

async function main(argv: string[]): Promise<number> {
  let opts: DemoOptions;
  try {
    opts = parseArgs(argv);
  } catch (e) {
    process.stderr.write(usageMessage("demo", "npm start --", e instanceof UsageError ? e : new UsageError(errText(e))));
    return 2;
  }
  if (opts.help) {
    process.stdout.write(USAGE + "\n");
    return 0;
  }
  if (!opts.seedGiven) opts.seed = randomInt(0, 2 ** 32 - 1) >>> 0;

  let heap: Heap;
  try {
    heap = Heap.create({ size: opts.size, cpus: opts.workers + 1 });
  } catch (e) {
    // The allocator speaks of cpus and maxSize; the demo's user gave --size and --workers.
    if (e instanceof HeapError && e.code === "EINVAL") {
      const least = smallestSize(opts.workers + 1);
      process.stderr.write(
        usageMessage(
          "demo",
          "npm start --",
          new UsageError(
            `--size ${opts.size} bytes is too small for --workers ${opts.workers}: the heap's own metadata (per worker, and one for the main thread) would leave too few pages; ` +
              (least !== 0 ? `give --size ${least} or more (${mib(least)}), or fewer --workers` : "give a larger --size or fewer --workers"),
          ),
        ),
      );
      return 2;
    }
    process.stderr.write(`error: cannot make a heap of ${opts.size} bytes for ${opts.workers} workers: ${errText(e)}\n`);
    return 2;
  }
  const st0 = heap.stats();
  const nBuckets = Math.min(16384, Math.max(1024, pow2floor(st0.totalPages)));
  const out = process.stdout;
  const tty = out.isTTY === true;
  const forever = !Number.isFinite(opts.seconds);
  out.write(
    `shmalloc demo: ${opts.workers} workers ${forever ? "until Ctrl-C" : `for ${opts.seconds} s`} on a ${mib(heap.size)} heap ` +
      `(${st0.totalPages} pages to allocate), seed ${hex32(opts.seed)}\n` +
      `  hash table: ${nBuckets} buckets, keys 0..${KEY_SPACE - 1}; nodes from cache "${NODE_CACHE}" (${NODE_SIZE} B), ` +
      `values kmalloc 16 B..2 KiB, 0.6% of them 8..24 KiB\n` +
      `  repeat with: node dist/demo/main.js --workers ${opts.workers}${forever ? "" : ` --seconds ${opts.seconds}`} --size ${heap.size} --seed ${hex32(opts.seed)}${opts.web ? " --web" : ""}${opts.web && opts.port !== 0 ? ` --port ${opts.port}` : ""}\n`,
  );

  const bugs: string[] = [];
  const problems: string[] = [];
  const sink = {
    bug(message: string) {
      bugs.push(`main: ${message}`);
    },
    contended() {},
  };

  let cache: KmemCache;
  let table: SharedTable;
  try {
    cache = heap.createCache(NODE_CACHE, NODE_SIZE, { align: NODE_SIZE });
    const shape = SharedTable.create(heap, opts.workers, nBuckets, KEY_SPACE);
    if (shape.hdr === 0) {
      process.stderr.write(`error: the heap (${mib(heap.size)}) has no room for a table of ${nBuckets} buckets; use a larger --size\n`);
      return 2;
    }
    table = new SharedTable(heap, cache, shape.hdr, MAIN_OWNER, sink);
  } catch (e) {
    process.stderr.write(`error: setting up the table failed: ${errText(e)}\n`);
    return 1;
  }

  const control = makeControl(opts.workers);
  /** Workers that found no memory for their sample log (they run without one). */
  const noLog: number[] = [];
  const states: WorkerState[] = [];
  let fatal: string | null = null;
  let wake: (() => void) | null = null;
  const poke = (): void => {
    const w = wake;
    wake = null;
    w?.();
  };
  /** Wait until `cond` holds, a fatal error arrived, or `ms` passed; true when `cond` holds. */
  const until = async (cond: () => boolean, ms: number): Promise<boolean> => {
    const deadline = Date.now() + ms;
    while (!cond() && fatal === null && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 100).unref();
      });
    }
    return cond();
  };

  /** Set once the table is emptied at teardown: the workers' entry counts are then stale, the truth is 0. */
  let tableEmptied = false;
  if (opts.web) {
    const f64 = control.f64;
    try {
      inspector = await serveInspector(heap, {
        port: opts.port,
        title: `shmalloc demo: hash table, ${opts.workers} workers, seed ${hex32(opts.seed)}`,
        extra: () => ({
          agents: states.map((_, w) => ({ name: `worker ${w}`, ops: f64[w * ROW + C.ops]! })),
          sizes: SIZE_LABELS.map((label, i) => ({ label, count: total(f64, opts.workers, C.sizes + i) })),
          counters: {
            "table entries": tableEmptied ? 0 : total(f64, opts.workers, C.entries),
            "inserts without memory": total(f64, opts.workers, C.allocFail),
            "entries evicted": total(f64, opts.workers, C.evicted),
          },
        }),
      });
    } catch (e) {
      process.stderr.write(`error: ${errText(e)}\n`);
      return 2;
    }
    out.write(`inspector: ${inspector.url}  (open it in a browser${forever ? "; Ctrl-C stops the demo" : ""})\n`);
  }

  for (let i = 0; i < opts.workers; i++) {
    const wd: WorkerData = { buffer: heap.buffer, control: control.buffer, hdr: table.hdr, index: i, nWorkers: opts.workers, seed: opts.seed };
    const worker = new Worker(new URL("./ht_worker.js", import.meta.url), { workerData: wd });
    const s: WorkerState = { worker, cpu: -1, ready: false, stopped: false, done: false, exited: false, counters: null, hookError: null, logFreed: 0 };
    states.push(s);
    worker.on("message", (m: WorkerMessage) => {
      switch (m.type) {
        case "ready":
          s.ready = true;
          s.cpu = m.cpu;
          if (!m.log) noLog.push(i);
          break;
        case "bug":
          bugs.push(m.message);
          if (!tty) out.write(`MISMATCH: ${m.message}\n`);
          break;
        case "stopped":
          s.stopped = true;
          break;
        case "done":
          s.done = true;
          s.counters = m.counters;
          s.hookError = m.hookError;
          s.logFreed = m.logFreed;
          break;
        case "fatal":
          fatal ??= m.message;
          break;
      }
      poke();
    });
    worker.on("error", (e) => {
      fatal ??= `worker ${i} died: ${e.stack ?? errText(e)}`;
      poke();
    });
    worker.on("exit", (code) => {
      s.exited = true;
      if (!s.done) fatal ??= `worker ${i} exited with code ${code} before it finished`;
      poke();
    });
  }

  const abort = (why: string, code: number): number => {
    process.stderr.write(`\n${why}\n`);
    try {
      const st = heap.stats();
      process.stderr.write(
        `heap at that moment: free ${st.freePages}/${st.totalPages} pages, pcp ${st.pcp.join(",")}, attached ${st.attached}, ` +
          `rcu readers ${st.rcu.readers} waiting ${st.rcu.waitingObjects}, deferred ${st.deferredPages}p/${st.deferredObjects}o\n`,
      );
    } catch {
      /* the figures are a courtesy */
    }
    for (const s of states) void s.worker.terminate();
    return code;
  };

  if (!(await until(() => states.every((s) => s.ready), READY_TIMEOUT_MS))) {
    return abort(fatal ?? `error: workers did not start within ${READY_TIMEOUT_MS / 1000} s`, 1);
  }

  for (const s of states) s.worker.postMessage({ type: "go" } satisfies MainMessage);
  if (noLog.length > 0) out.write(`  (no memory for the sample log of worker${noLog.length > 1 ? "s" : ""} ${noLog.join(", ")}: they sample nothing)\n`);

  // ---------------------------------------------------------------- the run, with its live view
  const frame = tty ? new TtyFrame(out) : null;
  const title = `shmalloc demo  ${opts.workers} workers  ${mib(heap.size)}  seed ${hex32(opts.seed)}`;
  const t0 = performance.now();
  let prevT = t0;
  let prevOps = new Array<number>(opts.workers).fill(0);
  let prevGp = st0.rcu.gracePeriods;
  let lastRates = prevOps;
  let lastGpRate = 0;
  let lastPlain = 0;
  let interrupted = 0;
  const view = (final: boolean): void => {
    const now = performance.now();
    const dt = Math.max(1e-3, (now - prevT) / 1000);
    const ops = states.map((_, w) => control.f64[w * ROW + C.ops]!);
    let stats: HeapStats | null = null;
    let statsError: string | null = null;
    try {
      stats = heap.stats();
    } catch (e) {
      statsError = errText(e);
    }
    const gp = stats?.rcu.gracePeriods ?? prevGp;
    const input: ViewInput = {
      title,
      elapsed: Math.min(opts.seconds, (now - t0) / 1000),
      seconds: opts.seconds,
      stats,
      statsError,
      f64: control.f64,
      workers: opts.workers,
      opsRate: ops.map((o, w) => (o - prevOps[w]!) / dt),
      gpRate: (gp - prevGp) / dt,
      bugs,
    };
    // The last frame comes right after the stop: keep the rates of the last whole interval.
    if (final && now - prevT < 200) {
      input.opsRate = lastRates;
      input.gpRate = lastGpRate;
    }
    lastRates = input.opsRate;
    lastGpRate = input.gpRate;
    if (frame !== null) {
      frame.draw(frameLines(input));
    } else if ((final && now - lastPlain >= 300) || now - lastPlain >= 1000) {
      out.write(plainLine(input) + "\n");
      lastPlain = now;
    } else {
      return; // keep the rates over the whole second
    }
    prevT = now;
    prevOps = ops;
    prevGp = gp;
  };
  lastPlain = t0;
  const timer = setInterval(() => view(false), tty ? 250 : 100);
  const onSigint = (): void => {
    if (++interrupted > 1) {
      frame?.end();
      process.exit(130);
    }
    poke();
  };
  process.on("SIGINT", onSigint);
  await until(() => interrupted > 0 || performance.now() - t0 >= opts.seconds * 1000, opts.seconds * 1000 + 1000);
  Atomics.store(control.i32, STOP, 1);
  const elapsed = (performance.now() - t0) / 1000;
  clearInterval(timer);
  view(true);
  frame?.end();
  if (fatal !== null) return abort(fatal, 1);

  // ---------------------------------------------------------------- stop, drain, detach
  if (!(await until(() => states.every((s) => s.stopped), STOP_TIMEOUT_MS))) {
    const stuck = states.flatMap((s, i) => (s.stopped ? [] : [`worker ${i} (cpu ${s.cpu})`]));
    return abort(fatal ?? `error: ${stuck.join(", ")} did not stop within ${STOP_TIMEOUT_MS / 1000} s (a hang in the allocator or the table?)`, 3);
  }
  for (const s of states) s.worker.postMessage({ type: "drain" } satisfies MainMessage);
  if (!(await until(() => states.every((s) => s.done && s.exited), DONE_TIMEOUT_MS))) {
    const stuck = states.flatMap((s, i) => (s.done && s.exited ? [] : [`worker ${i} (cpu ${s.cpu})`]));
    return abort(fatal ?? `error: ${stuck.join(", ")} did not drain and detach within ${DONE_TIMEOUT_MS / 1000} s`, 3);
  }
  process.off("SIGINT", onSigint);
  if (fatal !== null) return abort(fatal, 1);

  // ---------------------------------------------------------------- the workers' figures
  const rows = new Float64Array(opts.workers * ROW);
  states.forEach((s, w) => rows.set(s.counters ?? [], w * ROW));
  const sum = (f: number): number => total(rows, opts.workers, f);
  const ops = sum(C.ops);
  const lookups = sum(C.lookups);
  out.write(
    `\nworkers: ${count(ops)} operations in ${elapsed.toFixed(1)} s${interrupted > 0 ? " (stopped early by SIGINT)" : ""} (${count(ops / elapsed)}/s; ` +
      states.map((_, w) => `w${w} ${count(rows[w * ROW + C.ops]!)}`).join(", ") +
      `)\n  ${count(lookups)} lookups (${lookups > 0 ? Math.round((100 * sum(C.hits)) / lookups) : 0}% hit), ` +
      `${count(sum(C.inserts))} inserts, ${count(sum(C.replaces))} replaces, ${count(sum(C.removes))} removes, ` +
      `${count(sum(C.scans))} bucket scans (${count(sum(C.scanned))} entries checked)\n` +
      `  ${count(sum(C.migOut))} entries handed to another worker, ${count(sum(C.reinserted))} reinserted by it; ` +
      `${count(sum(C.frees))} values freed with kfreeRcu, ${count(sum(C.foreignFrees))} of them by an agent that did not allocate them\n` +
      `  ${count(sum(C.allocFail))} inserts found no memory (handled: ${count(sum(C.evicted))} entries evicted), ` +
      `bucket locks contended ${count(sum(C.contended))} times\n` +
      `kmalloc trace hook: ${SIZE_LABELS.map((l, i) => `${l}:${count(sum(C.sizes + i))}`).join(" ")}\n` +
      `  ${count(sum(C.samples))} samples logged with kmallocNolock, ${count(sum(C.nolockFail))} nolock failures (allowed, not errors)\n`,
  );
  for (const [w, s] of states.entries()) {
    if (s.hookError !== null) problems.push(`worker ${w}'s trace hook failed: ${s.hookError}`);
  }

  // ---------------------------------------------------------------- teardown and the final check
  let validateLine: string;
  try {
    const att = heap.stats().attached;
    if (att !== 1) problems.push(`${att} slots still attached after every worker detached`);
    const left = table.drainAll();
    tableEmptied = true;
    table.destroy();
    heap.rcuBarrier();
    try {
      cache.destroy();
    } catch (e) {
      if (e instanceof HeapError && e.code === "EBUSY") problems.push(`destroying "${NODE_CACHE}": ${e.message} (leaked nodes)`);
      else throw e;
    }
    heap.shrink();
    const vm = heap.stats().vmstat;
    out.write(
      `teardown: ${count(left)} entries left in the table freed; vmstat: ${count(vm.pgalloc)} page allocs, ${count(vm.allocFail)} failed, ` +
        `${count(vm.rcuQueued)} kfreeRcu (${count(vm.rcuEmergency)} emergency, ${count(vm.rcuSyncFallback)} synchronous), ` +
        `${count(vm.objectsDeferred)} objects and ${count(vm.pagesDeferred)} pages deferred, ${vm.hookErrors} hook errors\n`,
    );
    if (vm.hookErrors !== 0) problems.push(`${vm.hookErrors} exceptions escaped trace hooks`);
    heap.validate();
    const st = heap.stats();
    const pcp = st.pcp.reduce((a, b) => a + b, 0);
    const leaked = st.totalPages - st.freePages;
    const busy = st.slabs.filter((s) => s.activeObjects !== 0 || s.slabs !== 0).map((s) => `${s.name} ${s.activeObjects} objects in ${s.slabs} slabs`);
    if (leaked === 0 && pcp === 0 && st.deferredPages === 0 && busy.length === 0 && st.rcu.waitingObjects === 0) {
      validateLine = `validate: ok — ${st.freePages}/${st.totalPages} pages free, 0 leaked`;
    } else {
      validateLine =
        `validate: FAILED — validate() passed but ${st.freePages}/${st.totalPages} pages are free (${leaked} leaked; ` +
        `pcp ${pcp}, deferred ${st.deferredPages}, rcu waiting ${st.rcu.waitingObjects}${busy.length > 0 ? `; ${busy.join(", ")}` : ""})`;
      problems.push("pages leaked");
    }
  } catch (e) {
    validateLine = `validate: FAILED — ${errText(e)}`;
    problems.push("teardown or validate() threw");
  }

  for (const b of bugs.slice(0, 10)) process.stderr.write(`MISMATCH: ${b}\n`);
  const nbugs = sum(C.bugs) + bugs.filter((b) => b.startsWith("main:")).length;
  if (nbugs > 0) problems.push(`${nbugs} signature/checksum mismatches or broken links (see above)`);
  out.write(validateLine + "\n");
  if (problems.length > 0) {
    process.stderr.write(`demo FAILED: ${problems.join("; ")}\n`);
    return 1;
  }
  return 0;
}

/** main, then the inspector's server closed (its pages get a last snapshot and an end event). */
async function run(argv: string[]): Promise<number> {
  try {
    return await main(argv);
  } finally {
    await inspector?.close();
  }
}

run(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Workers that were told to terminate may still be winding down; do not wait for them.
    if (code !== 0) setTimeout(() => process.exit(code), 2000).unref();
  },
  (e: unknown) => {
    process.stdout.write("\x1b[?25h".repeat(process.stdout.isTTY === true ? 1 : 0));
    process.stderr.write(`demo FAILED: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 1;
  },
);
