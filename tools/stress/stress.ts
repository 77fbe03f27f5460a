/*
 * The stress command: `npm run stress -- --workers N --seconds S --seed X`.
 *
 * The main thread creates one heap (debug checks and fault injection on by default) and starts N
 * worker_threads (stress-worker.ts) that attach to it and hammer every entry point for S seconds:
 * kmalloc/kfree in normal and nolock mode, kzalloc, krealloc, kfreeBulk, named caches created,
 * used and destroyed, page blocks of orders 0..5 and bulk pages, blocks handed to other workers
 * through rings in a separate SharedArrayBuffer, kfreeRcu with readers in read-side sections, and
 * a re-entry hook that fires nolock calls at random lock points. Every block carries a signature
 * that is checked before it is freed. At the end the workers free everything and detach; the main
 * thread drains the rings and the RCU table, calls rcuBarrier, shrink and validate, checks that
 * every page is back, prints a summary and exits non-zero on any failure.
 */
import { availableParallelism, cpus as osCpus } from "node:os";
import { Worker } from "node:worker_threads";
import { Heap, HeapError, type HeapStats } from "../../src/index.js";
import {
  controlBytes,
  CTL_STOP,
  dumpAround,
  hex,
  isNoBlockWorker,
  mix32,
  progressView,
  RCU_SLOTS,
  rcuObjectSize,
  rcuTableBytes,
  Rings,
  unpackRcu,
  verify,
  type WorkerConfig,
  type WorkerCounters,
  type WorkerMessage,
  XKIND_PAGES,
  zeroCounters,
} from "./stress-shared.js";
import { nonEmpty, type OptionTable, parseCommandLine, parseFraction, parseSeconds, parseSize, parseWhole, UsageError, usageMessage } from "../../demo/args.js";
import { parseSeed } from "../../test/support/common.js";

/* ------------------------------------------------------------------ options */

interface Options {
  workers: number;
  seconds: number;
  seed: number;
  seedGiven: boolean;
  faultRate: number;
  size: number;
  /** --size as given, for the repeat command. */
  sizeText: string;
  debug: boolean;
  help: boolean;
}

const DEFAULT_FAULT_RATE = 0.02;
const DEFAULT_SIZE = 64 << 20;
/** Seconds a worker may go without finishing a batch of operations before the run counts as hung. */
const STALL_SECONDS = 60;
/** Seconds the workers get to free everything and detach once told to stop. */
const FINISH_SECONDS = 120;

function defaultWorkers(): number {
  const n = typeof availableParallelism === "function" ? availableParallelism() : osCpus().length;
  return Math.max(2, n);
}

const HELP = `Usage: npm run stress -- [options]
       node dist/tools/stress/stress.js [options]

Runs worker_threads against one shmalloc heap, checking every block they free, then checks that the
heap is intact and every page came back. Prints a summary table and a PASS or FAIL line. Exit code:
0 on PASS, 1 on a failure, 2 for bad options, 3 when a worker hung.

Options:
  --workers N       worker threads attached to the heap (default: the number of cores, at least 2)
  --seconds S       how long they run, in seconds, decimals allowed (default 10, at most 604800:
                    a week)
  --seed X          seed of every worker's random choices and of fault injection: a decimal or
                    0x-hex 32-bit number, or any word (hashed). Default: random. The seed is printed
                    at start and in the failure message; the same seed and flags repeat the same
                    per-worker operation sequences (the interleaving between workers differs).
  --fault-rate R    share of page allocations and slab refills that fail on purpose, 0..1
                    (default ${DEFAULT_FAULT_RATE}); 0 turns fault injection off
  --size SIZE       heap size in bytes or with a binary unit: 4M, 64m, 256MiB, 1g (default 64M,
                    at most 2047M; "64MB" is refused as ambiguous, and a size must be a whole
                    number of bytes); a small heap, e.g. 4M, forces memory pressure
  --no-debug        run without the heap's debug checks (poisoning, redzones, per-object state), so
                    the allocator's fast paths run too
  --debug           run with them (the default; for scripts that spell it out); not with --no-debug
  -h, --help        this text

Every third worker attaches with noBlock (it spins where the others would Atomics.wait). Ctrl-C
ends the run early and still runs the final checks; a second Ctrl-C quits at once.

Examples:
  npm run stress
  npm run stress -- --workers 4 --seconds 30 --seed 42
  npm run stress -- --workers 8 --seconds 600            (the long run)
  npm run stress -- --workers 4 --seconds 60 --size 4M   (memory pressure)
`;

/** The stress command's options: add one here, to HELP, and read it in parseStressArgs. */
const STRESS_OPTIONS = {
  workers: { type: "string" },
  seconds: { type: "string" },
  seed: { type: "string" },
  "fault-rate": { type: "string" },
  size: { type: "string" },
  "no-debug": { type: "boolean" },
  debug: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const satisfies OptionTable;

function parseStressArgs(argv: string[]): Options {
  const v = parseCommandLine(argv, STRESS_OPTIONS);
  if (v.debug === true && v["no-debug"] === true) throw new UsageError("--debug and --no-debug contradict each other: give one of them");
  const o: Options = {
    workers: v.workers !== undefined ? parseWhole(v.workers, "--workers", 1, 256) : defaultWorkers(),
    seconds: v.seconds !== undefined ? parseSeconds(v.seconds, "--seconds", 7 * 24 * 3600) : 10,
    seed: v.seed !== undefined ? parseSeed(nonEmpty(v.seed, "--seed")) : (Math.random() * 0x100000000) >>> 0,
    seedGiven: v.seed !== undefined,
    faultRate: v["fault-rate"] !== undefined ? parseFraction(v["fault-rate"], "--fault-rate", 0, 1) : DEFAULT_FAULT_RATE,
    size: v.size !== undefined ? parseSize(v.size, "--size") : DEFAULT_SIZE,
    sizeText: v.size ?? "",
    debug: v["no-debug"] !== true,
    help: v.help === true,
  };
  return o;
}

function repeatCommand(o: Options): string {
  const parts = [`npm run stress -- --workers ${o.workers} --seconds ${o.seconds} --seed ${o.seed}`];
  if (o.size !== DEFAULT_SIZE) parts.push(`--size ${o.sizeText}`);
  if (o.faultRate !== DEFAULT_FAULT_RATE) parts.push(`--fault-rate ${o.faultRate}`);
  if (!o.debug) parts.push("--no-debug");
  return parts.join(" ");
}

/* ------------------------------------------------------------------ output helpers */

function mib(bytes: number): string {
  return bytes >= 1 << 20 ? `${+(bytes / (1 << 20)).toFixed(2)} MiB` : `${+(bytes / 1024).toFixed(1)} KiB`;
}

function big(n: number): string {
  return n.toLocaleString("en-US");
}

function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]): string => r.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join("  ");
  return [line(head), ...rows.map(line)].join("\n");
}

/* ------------------------------------------------------------------ the run */

interface WorkerState {
  worker: Worker;
  cpu: number;
  attached: boolean;
  done: boolean;
  detached: boolean;
  exited: boolean;
  counters: WorkerCounters;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function run(o: Options): Promise<number> {
  const failures: string[] = [];
  const failure = (m: string): void => {
    failures.push(m);
  };

  const faultSeed = mix32(o.seed, 0xfa17) || 1;
  let heap: Heap;
  try {
    heap = Heap.create({
      size: o.size,
      cpus: o.workers + 1,
      maxCaches: Math.max(64, 14 + 2 * o.workers + 8),
      debug: o.debug,
      faultInjection: o.faultRate > 0 ? { rate: o.faultRate, seed: faultSeed } : undefined,
    });
  } catch (e) {
    console.error(`stress: cannot create the heap: ${e instanceof Error ? e.message : String(e)}`);
    return 2;
  }
  const st0 = heap.stats();
  console.log(`shmalloc stress: ${o.workers} worker${o.workers === 1 ? "" : "s"} for ${o.seconds} s, seed ${o.seed}${o.seedGiven ? "" : " (random)"}`);
  console.log(
    `  heap ${mib(heap.size)} (${st0.totalPages} pages), debug checks ${o.debug ? "on" : "off"}, ` +
      (o.faultRate > 0 ? `fault injection ${+(o.faultRate * 100).toFixed(3)}% of page allocations and slab refills` : "no fault injection"),
  );
  console.log(`  repeat with: ${repeatCommand(o)}`);

  const ctrlSab = new SharedArrayBuffer(controlBytes(o.workers));
  const ctl = new Int32Array(ctrlSab, 0, 16);
  const progress = progressView(ctrlSab, o.workers);
  const ringSab = new SharedArrayBuffer(Rings.bytes(o.workers));
  const rings = new Rings(ringSab);
  const rcuSab = new SharedArrayBuffer(rcuTableBytes());
  const rcuTable = new BigInt64Array(rcuSab);
  const budget = Math.max(256 << 10, Math.floor((heap.size * 0.4) / o.workers));

  const states: WorkerState[] = [];
  const stop = (): void => {
    Atomics.store(ctl, CTL_STOP, 1);
  };
  for (let i = 0; i < o.workers; i++) {
    const cfg: WorkerConfig = { index: i, workers: o.workers, seed: o.seed, heap: heap.buffer, ctrl: ctrlSab, rings: ringSab, rcu: rcuSab, budget, debug: o.debug, noBlock: isNoBlockWorker(i) };
    const worker = new Worker(new URL("./stress-worker.js", import.meta.url), { workerData: cfg });
    const s: WorkerState = { worker, cpu: -1, attached: false, done: false, detached: false, exited: false, counters: zeroCounters() };
    states.push(s);
    worker.on("message", (m: WorkerMessage) => {
      if (m.type === "attached") {
        s.cpu = m.cpu;
        s.attached = true;
      } else if (m.type === "fail") {
        failure(m.message);
        stop();
      } else if (m.type === "done") {
        s.done = true;
        s.detached = m.detached;
        s.counters = m.counters;
      }
    });
    worker.on("error", (e: Error) => {
      failure(`worker ${i} crashed: ${e.stack ?? e.message}`);
      stop();
    });
    worker.on("exit", (code: number) => {
      s.exited = true;
      if (!s.done) {
        failure(`worker ${i} exited (code ${code}) without finishing its cleanup`);
        stop();
      }
    });
  }

  let interrupted = false;
  const onSigint = (): void => {
    if (interrupted) process.exit(130);
    interrupted = true;
    console.log("  interrupted: stopping the workers (Ctrl-C again quits at once)");
    stop();
  };
  process.on("SIGINT", onSigint);

  // Run for the given time; stop early on a failure; watch for workers that stop making progress.
  const t0 = Date.now();
  const endAt = t0 + o.seconds * 1000;
  const lastOps = new Array<number>(o.workers).fill(-1);
  const lastMove = new Array<number>(o.workers).fill(t0);
  const reportEvery = o.seconds >= 30 ? 10_000 : o.seconds >= 20 ? 5_000 : Infinity;
  let nextReport = t0 + reportEvery;
  while (Atomics.load(ctl, CTL_STOP) === 0 && Date.now() < endAt) {
    await sleep(Math.min(100, Math.max(1, endAt - Date.now())));
    const now = Date.now();
    for (let i = 0; i < o.workers; i++) {
      const ops = progress[i]!;
      if (ops !== lastOps[i]) {
        lastOps[i] = ops;
        lastMove[i] = now;
      } else if (now - lastMove[i]! > STALL_SECONDS * 1000 && !states[i]!.exited) {
        failure(`worker ${i} (cpu ${states[i]!.cpu}) made no progress for ${STALL_SECONDS} s at op ${ops}: hung?`);
        stop();
      }
    }
    if (now >= nextReport) {
      nextReport += reportEvery;
      let total = 0;
      for (let i = 0; i < o.workers; i++) total += progress[i]!;
      const s = heap.stats();
      let pcp = 0;
      for (const n of s.pcp) pcp += n;
      console.log(
        `  [${String(Math.round((now - t0) / 1000)).padStart(4)} s] ${big(total)} ops; pages: ${s.freePages} free in the buddy lists, ${pcp} in pcp lists, ` +
          `of ${s.totalPages}; rcu grace periods ${s.rcu.gracePeriods}; fault-injected failures ${s.vmstat.failInjected}`,
      );
    }
  }
  stop();
  const stoppedAt = Date.now();

  // Wait for every worker to free what it holds and detach.
  while (states.some((s) => !s.exited) && Date.now() - stoppedAt < FINISH_SECONDS * 1000) await sleep(20);
  let hung = false;
  for (const [i, s] of states.entries()) {
    if (s.exited) continue;
    hung = true;
    failure(`worker ${i} (cpu ${s.cpu}) did not finish within ${FINISH_SECONDS} s of the stop signal (at op ${progress[i]}): hung?`);
    await s.worker.terminate();
  }
  const elapsed = (stoppedAt - t0) / 1000;
  process.off("SIGINT", onSigint);

  // A worker that died attached: give its slot back (EOWNERDEAD if it died holding a lock).
  let lockLost = false;
  for (const [i, s] of states.entries()) {
    if (s.detached || s.cpu < 0) continue;
    try {
      heap.reclaimSlot(s.cpu);
      failure(`worker ${i} did not detach: its slot (cpu ${s.cpu}) was reclaimed`);
    } catch (e) {
      if (e instanceof HeapError && e.code === "EOWNERDEAD") lockLost = true;
      failure(`worker ${i} did not detach and reclaimSlot(${s.cpu}) failed: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  // The main thread frees what is left in the rings and the RCU table.
  const verifyOrReport = (addr: number, size: number, tag: number, what: string): boolean => {
    const off = verify(heap, addr, size, tag);
    if (off < 0) return true;
    failure(`signature mismatch in ${what} ${hex(addr)} (${size} bytes, tag ${hex(tag)}) at offset ${off}: ${dumpAround(heap, addr, off, size)}`);
    return false;
  };
  let drainedRing = 0;
  let drainedRcu = 0;
  const finalStep = (what: string, f: () => void): boolean => {
    if (lockLost) return false;
    try {
      f();
      return true;
    } catch (e) {
      failure(`${what}: ${e instanceof Error ? e.message : String(e)}`);
      return false;
    }
  };
  finalStep("draining the cross-worker rings", () => {
    const e = new Int32Array(4);
    for (let r = 0; r < o.workers; r++) {
      while (rings.pop(r, e)) {
        const [addr, kind, size, tag] = [e[0]!, e[1]! & 0xff, e[2]!, e[3]!];
        if (kind === XKIND_PAGES) {
          if (verifyOrReport(addr, 4096 << size, tag, `pages left in worker ${r}'s inbox`)) heap.freePages(addr, size);
        } else if (verifyOrReport(addr, size, tag, `an object left in worker ${r}'s inbox`)) heap.kfree(addr);
        drainedRing++;
      }
    }
  });
  finalStep("draining the RCU table", () => {
    for (let k = 0; k < RCU_SLOTS; k++) {
      const v = Atomics.exchange(rcuTable, k, 0n);
      if (v === 0n) continue;
      const { addr, tag } = unpackRcu(v);
      if (verifyOrReport(addr, rcuObjectSize(tag), tag, `the RCU-published object of slot ${k}`)) heap.kfree(addr);
      drainedRcu++;
    }
  });
  finalStep("rcuBarrier()", () => heap.rcuBarrier());
  finalStep("shrink()", () => heap.shrink());
  const validated = finalStep("validate()", () => heap.validate());

  const st: HeapStats = heap.stats();
  const leakChecked = !lockLost && !hung && states.every((s) => s.detached);
  let pcpPages = 0;
  for (const n of st.pcp) pcpPages += n;
  if (leakChecked) {
    if (st.freePages !== st.totalPages) {
      const slabPages = st.slabs.filter((s) => s.pages > 0).map((s) => `${s.name}: ${s.pages} pages, ${s.activeObjects} active objects`);
      failure(
        `leak: ${st.totalPages - st.freePages} of ${st.totalPages} pages are not back in the buddy lists ` +
          `(pcp ${pcpPages}, deferred ${st.deferredPages}, kfreeRcu waiting ${st.rcu.waitingObjects} in ${st.rcu.blocks} blocks` +
          (slabPages.length > 0 ? `; slabs: ${slabPages.join("; ")}` : "") +
          ")",
      );
    }
    for (const s of st.slabs) {
      if (s.activeObjects !== 0) failure(`cache ${s.name} still counts ${s.activeObjects} active objects after every block was freed`);
    }
    const named = st.slabs.filter((s) => s.name.startsWith("stress-"));
    if (named.length > 0) failure(`named caches left after the run: ${named.map((s) => s.name).join(", ")}`);
    if (st.deferredObjects !== 0) failure(`${st.deferredObjects} objects still wait on deferred lists`);
    if (st.attached !== 1) failure(`${st.attached} slots are attached, expected only the main thread's`);
  }
  if (st.vmstat.hookErrors > 0) failure(`vmstat.hookErrors is ${st.vmstat.hookErrors}: a hook or trace handler of the stress program threw inside the allocator`);

  // Summary.
  const head = ["worker", "cpu", "ops", "allocs", "frees", "xfrees", "nolock", "nl-fail", "kfreeRcu", "rcu-reads", "caches c/d", "busy", "alloc-fail"];
  const row = (name: string, cpu: string, c: WorkerCounters): string[] => [
    name,
    cpu,
    big(c.ops),
    big(c.allocs),
    big(c.frees),
    big(c.xfrees),
    big(c.nolockCalls),
    big(c.nolockFails),
    big(c.kfreeRcu),
    big(c.rcuReads),
    `${c.cachesCreated}/${c.cachesDestroyed}`,
    big(c.expectedBusy),
    big(c.allocFails),
  ];
  const total = zeroCounters();
  const rows = states.map((s, i) => {
    for (const k of Object.keys(total) as (keyof WorkerCounters)[]) total[k] += s.counters[k];
    return row(isNoBlockWorker(i) ? `${i} (nb)` : String(i), s.cpu >= 0 ? String(s.cpu) : "-", s.counters);
  });
  rows.push(row("total", "", total));
  console.log("");
  console.log(table(head, rows));
  if (o.workers > 2) console.log("(nb): attached with noBlock, an agent that never blocks: it spins where others would Atomics.wait");
  console.log("");
  const v = st.vmstat;
  console.log(
    `heap: failInjected ${big(v.failInjected)}, pagesDeferred ${big(v.pagesDeferred)}, objectsDeferred ${big(v.objectsDeferred)}, ` +
      `rcu gracePeriods ${big(st.rcu.gracePeriods)}, hookErrors ${v.hookErrors}`,
  );
  console.log(
    `      allocFail ${big(v.allocFail)}, nolockFail ${big(v.nolockFail)}, nolockNextClass ${big(v.nolockNextClass)}, directReclaim ${big(v.directReclaim)}, ` +
      `zoneContended ${big(v.zoneContended)}, kmallocLarge ${big(v.kmallocLarge)}, rcuQueued ${big(v.rcuQueued)}, rcuFreed ${big(v.rcuFreed)}, ` +
      `rcuEmergency ${big(v.rcuEmergency)}, rcuSyncFallback ${big(v.rcuSyncFallback)}`,
  );
  console.log(
    `run:  ${elapsed.toFixed(1)} s, ${big(Math.round(total.ops / Math.max(elapsed, 0.001)))} ops/s, ${mib(total.bytesVerified)} verified, ` +
      `${big(total.xsent)} blocks handed over, ${big(total.hookCalls)} hook actions, ${big(total.synchronizeRcu)} synchronizeRcu, ` +
      `${big(total.rcuBarrier)} rcuBarrier, ${big(total.rcuRefused)} kfreeRcu refused in read sections; the main thread freed ${drainedRing} ring and ${drainedRcu} RCU-table blocks`,
  );
  console.log(
    `end:  validate ${lockLost ? "skipped (a lock owner died)" : validated ? "clean" : "FAILED"}, ` +
      (leakChecked ? `${st.freePages}/${st.totalPages} pages free` : `leak check skipped (${st.freePages}/${st.totalPages} pages free)`) +
      `, ${st.attached} slot attached, hookErrors ${v.hookErrors}`,
  );
  console.log("");
  if (failures.length === 0) {
    const ran = interrupted ? `${o.seconds} s (interrupted after ${elapsed.toFixed(1)} s)` : `${o.seconds} s`;
    console.log(`PASS: ${o.workers} worker${o.workers === 1 ? "" : "s"}, ${ran}, seed ${o.seed}: ${big(total.ops)} operations, every signature intact, heap valid, every page back`);
    return 0;
  }
  const shown = failures.slice(0, 20);
  const code = hung ? 3 : 1;
  for (const f of shown) console.log(`failure: ${f}`);
  if (failures.length > shown.length) console.log(`... and ${failures.length - shown.length} more failures`);
  console.log(`FAIL: ${failures.length} failure${failures.length === 1 ? "" : "s"} with seed ${o.seed}; repeat with: ${repeatCommand(o)}`);
  return code;
}

async function main(): Promise<void> {
  let o: Options;
  try {
    o = parseStressArgs(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(usageMessage("stress", "npm run stress --", e));
    process.exitCode = 2;
    return;
  }
  if (o.help) {
    console.log(HELP);
    return;
  }
  process.exitCode = await run(o);
}

await main();
