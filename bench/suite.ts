/*
 * shmalloc's benchmark suite, started by run.ts (which runs it from a private copy of dist/).
 * See run.ts for the command line.
 *
 * Every figure is the best of several short timed samples taken in the same run (after an untimed
 * warm-up; medians are kept in the JSON); ratios compare figures of the same run. Every run writes latest.json and latest.md
 * (latest-quick.* for --quick) with the date, Node, V8, CPU and all figures.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { nonEmpty, type OptionTable, parseCommandLine, UsageError, usageMessage } from "../demo/args.js";
import { ALLOC_KINDS, ALLOC_LABEL, type AllocKind, best, groupRates, median, PEER_KINDS } from "./common.js";
import { type GroupOptions, type GroupResult, type LeakCheck, runGroup } from "./harness.js";
import type { StormResult } from "./micro.js";
import { findPeers } from "./peers.js";
import { xmallocPairWords } from "./workloads.js";
import { sheafCapacity } from "../src/slab/sizes.js";
import {
  fmtNs,
  fmtPct,
  fmtRate,
  fmtRatio,
  markdownTable,
  passMiss,
  ProgressDisplay,
  type Table,
  type TargetResult,
  textTable,
} from "./report.js";

/* ------------------------------------------------------------------ options */

/** The benchmarks' options (run.ts describes them): add one here, to USAGE, and read it below. */
const BENCH_OPTIONS = {
  quick: { type: "boolean" },
  smoke: { type: "boolean" },
  json: { type: "boolean" },
  out: { type: "string" },
  only: { type: "string" },
  peers: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const satisfies OptionTable;
const USAGE = `usage: node dist/bench/run.js [--quick | --smoke] [--json] [--out DIR] [--only PREFIX,...] [--peers DIR]
  --quick            a much shorter pass (writes latest-quick.* instead of latest.*)
  --smoke            the shortest pass that still runs every section end to end, with one machine
                     check and its leak checks (a few seconds; the test suite's; writes no files
                     unless --out)
  --json             one JSON document of every figure on stdout instead of tables
  --out DIR          write the result files to DIR instead of bench/results/
  --only P,Q         only the runs whose id starts with P or Q (files written only with --out);
                     a prefix that matches no run exits 2 listing the sections
  --peers DIR        also run the Wasm peers (mimalloc and dlmalloc on shared WebAssembly memory)
                     on every workload, from DIR, the folder of their loader wasm-peers.mjs
                     (e.g. ../shared/peers); without it, or when DIR has no loader, they are
                     skipped with a note
  -h, --help         this text`;
let opts: ReturnType<typeof parseCommandLine<typeof BENCH_OPTIONS>>;
try {
  opts = parseCommandLine(process.argv.slice(2), BENCH_OPTIONS);
  if (opts.out !== undefined) nonEmpty(opts.out, "--out");
  if (opts.only !== undefined) nonEmpty(opts.only, "--only");
  if (opts.peers !== undefined) nonEmpty(opts.peers, "--peers");
  if (opts.quick === true && opts.smoke === true) throw new UsageError("--quick and --smoke are two lengths of pass: give one of them");
} catch (e) {
  if (!(e instanceof UsageError)) throw e;
  process.stderr.write(usageMessage("bench", "npm run bench --", e));
  process.exit(2);
}
if (opts.help === true) {
  process.stdout.write(USAGE + "\n");
  process.exit(0);
}
/** --smoke: every run once, as short as it can be; the figures mean nothing, the leak checks do. */
const SMOKE = opts.smoke === true;
const QUICK = opts.quick === true || SMOKE;
const JSON_OUT = opts.json === true;
const here = dirname(fileURLToPath(import.meta.url));
const OUT_ARG = opts.out;
/** The repository (run.ts says where it is, since this file runs from a copy). */
const REPO = process.env.SHMALLOC_BENCH_REPO ?? resolve(here, "../..");
const OUT_DIR = OUT_ARG !== undefined ? resolve(OUT_ARG) : join(REPO, "bench", "results");
const ONLY = opts.only?.split(",").filter((x) => x !== "");
/** The Wasm peers: run on every workload when --peers names their folder (peers.ts). */
const PEERS = findPeers(opts.peers);
const PEERS_DIR = PEERS.dir ?? undefined;
/** Every allocator of this run: the three of every run, then the peers when they are here. */
const KINDS: readonly AllocKind[] = PEERS.dir !== null ? [...ALLOC_KINDS, ...PEER_KINDS] : ALLOC_KINDS;
const RAN_PEERS: readonly AllocKind[] = PEERS.dir !== null ? PEER_KINDS : [];

interface Timing {
  sampleMs: number;
  samples: number;
  warmMs: number;
}

const CFG = SMOKE
  ? {
      micro: { sampleMs: 2, samples: 1, warmMs: 1 } as Timing,
      glibc: { sampleMs: 1, samples: 1, warmMs: 1 } as Timing,
      work: { sampleMs: 3, samples: 1, warmMs: 1 } as Timing,
      larson: { slots: 100, epochMs: 1 },
      xmalloc: { batch: 256, ringSlots: 4 },
      mstress: { dataSlots: 100, retainSlots: 20 },
      scratch: { reps: 5 },
      allocTest: { live: 256 },
      storm: { iterations: 2_000 },
      kfreeRcu: { n: 500 },
    }
  : QUICK
  ? {
      micro: { sampleMs: 15, samples: 3, warmMs: 15 } as Timing,
      glibc: { sampleMs: 4, samples: 3, warmMs: 4 } as Timing,
      work: { sampleMs: 25, samples: 3, warmMs: 15 } as Timing,
      larson: { slots: 500, epochMs: 2 },
      xmalloc: { batch: 4096, ringSlots: 4 },
      mstress: { dataSlots: 500, retainSlots: 100 },
      scratch: { reps: 50 },
      allocTest: { live: 2048 },
      storm: { iterations: 20_000 },
      kfreeRcu: { n: 5_000 },
    }
  : {
      micro: { sampleMs: 80, samples: 9, warmMs: 150 } as Timing,
      glibc: { sampleMs: 40, samples: 7, warmMs: 40 } as Timing,
      work: { sampleMs: 200, samples: 7, warmMs: 200 } as Timing,
      larson: { slots: 5000, epochMs: 5 },
      xmalloc: { batch: 4096, ringSlots: 4 },
      mstress: { dataSlots: 2000, retainSlots: 500 },
      scratch: { reps: 100 },
      allocTest: { live: 16384 },
      storm: { iterations: 300_000 },
      kfreeRcu: { n: 50_000 },
    };

/** Worker counts of the multi-worker rows: 1 and 2 (this machine has 2 cores). */
const THREADS = [1, 2] as const;
const GLIBC_SIZES = [16, 32, 64];
const GLIBC_COUNTS = [25, 100, 400, 1600];
const SEED = 0x2545f491;

/* ------------------------------------------------------------------ the plan */

interface Job extends GroupOptions {
  id: string;
}

const jobs: Job[] = [];
/**
 * The machine check: an arithmetic loop (no allocation, nothing shared) in 1 and then 2 workers,
 * run just before every multi-worker run. Its scaling is what the machine gave two workers at that
 * moment; the machine is shared, so this is the ceiling for the scaling figure that follows.
 */
const MACHINE: Timing = QUICK ? { sampleMs: 5, samples: 2, warmMs: 5 } : { sampleMs: 40, samples: 5, warmMs: 20 };
const machineTags: string[] = [];
function job(id: string, o: Omit<GroupOptions, "units" | "label"> & { units?: number; label?: string }): void {
  const check = o.workers > 1 && o.kind !== "cpu";
  const machineCheck = (tag: string): void => {
    machineTags.push(tag);
    for (const T of THREADS) job(`machine/${tag}/T${T}`, { kind: "cpu", alloc: "js", workers: T, params: {}, ...MACHINE });
  };
  // --smoke: one machine check in all, before the first multi-worker run.
  if (check && !(SMOKE && machineTags.length > 0)) machineCheck(`${id}/before`);
  jobs.push({ ...o, id, label: o.label ?? id, units: o.units ?? o.samples + 1 });
  if (check && !SMOKE) machineCheck(`${id}/after`);
}

const micro = CFG.micro;
// Pages: orders 0 and 4 use the pcp lists (orders 0..5); order 6 is above them, so it always goes
// to the buddy lists under the zone lock.
const PAGE_ORDERS = [0, 4, 6];
for (const order of PAGE_ORDERS) {
  for (const T of THREADS) job(`pages/o${order}/T${T}`, { kind: "pages", alloc: "shmalloc", workers: T, params: { order }, ...micro });
}
for (const T of THREADS) job(`kmalloc/lifo/T${T}`, { kind: "kmalloc-lifo", alloc: "shmalloc", workers: T, params: { size: 64 }, ...micro });
for (const n of [32, 1024]) {
  for (const T of THREADS) job(`kmalloc/batch${n}/T${T}`, { kind: "kmalloc-batch", alloc: "shmalloc", workers: T, params: { size: 64, n }, ...micro });
}
job("nolock", { kind: "nolock", alloc: "shmalloc", workers: 1, params: { size: 64 }, ...micro });
job("storm", { kind: "storm", alloc: "shmalloc", workers: 1, params: { iterations: CFG.storm.iterations, seed: SEED, fireRate: 0.5, burst: 8 }, ...micro, units: 1 });
job("rcu/pair", { kind: "rcu-pair", alloc: "shmalloc", workers: 1, params: {}, ...micro });
job("rcu/kfree", { kind: "kfree-rcu", alloc: "shmalloc", workers: 1, params: { n: CFG.kfreeRcu.n }, ...micro });

const glibcParams = {
  size0: GLIBC_SIZES[0]!,
  size1: GLIBC_SIZES[1]!,
  size2: GLIBC_SIZES[2]!,
  n0: GLIBC_COUNTS[0]!,
  n1: GLIBC_COUNTS[1]!,
  n2: GLIBC_COUNTS[2]!,
  n3: GLIBC_COUNTS[3]!,
  poolBytes: 16 << 20,
};
for (const alloc of KINDS) {
  job(`glibc-simple/${alloc}`, {
    kind: "glibc",
    alloc,
    workers: 1,
    ...(PEERS_DIR !== undefined ? { peersDir: PEERS_DIR } : {}),
    params: glibcParams,
    ...CFG.glibc,
    units: GLIBC_SIZES.length * GLIBC_COUNTS.length * (CFG.glibc.samples + 1),
  });
}

const POOL_BYTES = 64 << 20;
interface WorkloadDef {
  name: string;
  kind: string;
  params: Record<string, number>;
  shared?: (T: number) => number;
  handoffSize?: number;
}
const WORKLOADS: WorkloadDef[] = [
  { name: "pair-64", kind: "pair", params: { size: 64 } },
  { name: "larson", kind: "larson", params: { ...CFG.larson, seed: SEED }, shared: (T) => T * CFG.larson.slots * 4 },
  {
    name: "xmalloc-test",
    kind: "xmalloc",
    params: { size: 64, ...CFG.xmalloc },
    shared: (T) => Math.ceil(T / 2) * xmallocPairWords(CFG.xmalloc.ringSlots, CFG.xmalloc.batch) * 4,
  },
  { name: "mstress", kind: "mstress", params: { ...CFG.mstress, seed: SEED }, shared: () => 1000 * 4 },
  { name: "cache-scratch", kind: "cache-scratch", params: { size: 8, ...CFG.scratch }, handoffSize: 8 },
  { name: "alloc-test", kind: "alloc-test", params: { ...CFG.allocTest, seed: SEED } },
];
for (const wl of WORKLOADS) {
  for (const T of THREADS) {
    for (const alloc of KINDS) {
      const o: Omit<GroupOptions, "units" | "label"> = { kind: wl.kind, alloc, workers: T, params: wl.params, ...CFG.work };
      if (PEERS_DIR !== undefined) o.peersDir = PEERS_DIR;
      if (wl.shared !== undefined) o.sharedBytes = wl.shared(T);
      if (wl.handoffSize !== undefined) o.handoffSize = wl.handoffSize;
      if (alloc === "thing") o.poolBytes = POOL_BYTES;
      job(`${wl.name}/${alloc}/T${T}`, o);
    }
  }
}

/* ------------------------------------------------------------------ running */

if (ONLY !== undefined) {
  const runs = (p: string): boolean => jobs.some((j) => j.id.startsWith(p) || j.id.startsWith(`machine/${p}`));
  const none = ONLY.filter((p) => !runs(p));
  if (ONLY.length === 0 || none.length > 0) {
    const sections = [...new Set(jobs.map((j) => j.id.split("/")[0]!))].join(", ");
    const what = ONLY.length === 0 ? `--only ${JSON.stringify(opts.only)} names no run` : `--only ${none.map((p) => JSON.stringify(p)).join(", ")} matches no run`;
    process.stderr.write(usageMessage("bench", "npm run bench --", new UsageError(`${what}; run ids start with one of ${sections} (e.g. kmalloc/lifo, pages/o0, larson/shmalloc)`)));
    process.exit(2);
  }
  const keep = jobs.filter((j) => ONLY.some((p) => j.id.startsWith(p) || j.id.startsWith(`machine/${p}`)));
  jobs.length = 0;
  jobs.push(...keep);
}
const loadAtStart = os.loadavg().map((x) => Math.round(x * 100) / 100);
const results = new Map<string, GroupResult>();
const leakChecks: LeakCheck[] = [];
const errors: string[] = [];
const progress = new ProgressDisplay(
  jobs.reduce((a, j) => a + j.units, 0),
  jobs.length,
);
for (const j of jobs) {
  const r = await runGroup(j, progress);
  results.set(j.id, r);
  if (r.leak !== undefined) leakChecks.push(r.leak);
  if (r.error !== undefined) errors.push(r.error);
}
progress.finish();

/* ------------------------------------------------------------------ figures */

/**
 * The machine the suite runs on is shared: other processes take the cores in bursts. The best of
 * several short samples is the figure least disturbed by them, so it is the one quoted; the median
 * of the same samples is kept in the JSON next to it.
 */
const STATISTIC =
  "best sample (highest ops/s) of several timed samples per measurement, after an untimed warm-up; the median and every sample are in the JSON";

interface Measure {
  /** The figure quoted: the best sample's ops/s (see STATISTIC). */
  value: number;
  /** Median ops/s over the samples. */
  median: number;
  /** Every sample's ops/s. */
  samples: number[];
}

function measure(id: string, series = "main"): Measure {
  const r = results.get(id);
  const s = r?.series[series];
  if (r === undefined || r.error !== undefined || s === undefined || s.length === 0) return { value: NaN, median: NaN, samples: [] };
  const rates = groupRates(s);
  return { value: best(rates), median: median(rates), samples: rates.map((x) => Math.round(x)) };
}

const sections: Record<string, { title: string; tables: Table[]; data: unknown }> = {};
const targets: TargetResult[] = [];
const statNote = (t: Timing): string =>
  `best of ${t.samples} samples of ${t.sampleMs} ms each, after ${t.warmMs} ms of warm-up (medians and every sample in the JSON)`;
/** Record a target; `value` is the figure compared (NaN when it could not be measured). */
function target(section: string, what: string, targetText: string, measured: string, value: number, pass: boolean, note?: string): string {
  const p = Number.isFinite(value) ? pass : null;
  const t: TargetResult = { section, what, target: targetText, measured, pass: p };
  if (note !== undefined && p === false) t.note = note;
  targets.push(t);
  return `${targetText} ${passMiss(p)}`;
}

/* --- machine */
/** Scaling 2/1 of one machine check. */
function checkScaling(tag: string): number {
  return measure(`machine/${tag}/T2`).value / measure(`machine/${tag}/T1`).value;
}
/** The lower scaling of the machine checks just before and just after run `id` (NaN without them). */
function machineScaling(id: string): number {
  return Math.min(checkScaling(`${id}/before`), checkScaling(`${id}/after`));
}
/** Note for a missed 2-worker scaling target when the machine itself did not scale around it. */
function scalingNote(id: string): string | undefined {
  const m = machineScaling(id);
  return Number.isFinite(m) && m < MACHINE_SCALING_MIN ? `inconclusive: the machine checks around it gave 2 workers ${fmtRatio(m)}` : undefined;
}
/** The 2-worker scaling every workload and pair should reach, where the machine checks around it gave MACHINE_SCALING_MIN. */
const SCALING_TARGET = 1.85;
const MACHINE_SCALING_MIN = 1.9;
{
  const rows: string[][] = [];
  const data: Record<string, unknown>[] = [];
  for (const tag of machineTags) {
    const m1 = measure(`machine/${tag}/T1`);
    const m2 = measure(`machine/${tag}/T2`);
    const sc = m2.value / m1.value;
    rows.push([tag, fmtRate(m1.value * 1000), fmtRate(m2.value * 1000), fmtRatio(sc)]);
    data.push({ before: tag, loopIterationsPerSec: { workers1: m1, workers2: m2 }, scaling: sc });
  }
  const all = data.map((d) => d.scaling as number).filter((x) => Number.isFinite(x));
  sections.machine = {
    title: "The machine: parallelism available to two workers",
    data,
    tables: [
      {
        title: "Machine checks before and after each 2-worker run: an arithmetic loop (no memory shared, no allocation) in 1 and 2 workers",
        columns: ["around run", "1 worker (iter/s)", "2 workers (iter/s)", "scaling 2/1"],
        rows,
        notes: [
          `the lower of the two checks around a run is the ceiling for its scaling figure ("machine 2/1" in the tables): other processes share the cores (median of all checks: ${fmtRatio(median(all))})`,
          `best of ${MACHINE.samples} samples of ${MACHINE.sampleMs} ms each`,
        ],
      },
    ],
  };
}

/* --- pages */
{
  const rows: string[][] = [];
  const data: Record<string, unknown>[] = [];
  for (const order of PAGE_ORDERS) {
    const path = order <= 5 ? `order ${order} via the pcp lists` : `order ${order} via the buddy lists (zone lock)`;
    const m1 = measure(`pages/o${order}/T1`);
    const m2 = measure(`pages/o${order}/T2`);
    const ns1 = 1e9 / m1.value;
    const ns2 = 2e9 / m2.value;
    const scaling = m2.value / m1.value;
    const t1 = order === 0 ? target("pages", "order-0 pcp pair, 1 worker", "<= 15 ns", `${fmtNs(ns1)} ns`, ns1, ns1 <= 15) : "";
    const id2 = `pages/o${order}/T2`;
    const mach = machineScaling(id2);
    const t2 =
      order === 0
        ? target("pages", "order-0 pcp pairs, 2 workers / 1 worker", `>= ${SCALING_TARGET}x`, fmtRatio(scaling), scaling, scaling >= SCALING_TARGET, scalingNote(id2))
        : order === 4
          ? target("pages", "order-4 pcp pairs, 2 workers / 1 worker", ">= 1.5x", fmtRatio(scaling), scaling, scaling >= 1.5, scalingNote(id2))
          : "no target: one zone lock";
    rows.push([path, "1", fmtRate(m1.value), fmtNs(ns1), "", "", t1]);
    rows.push([path, "2", fmtRate(m2.value), fmtNs(ns2), fmtRatio(scaling), fmtRatio(mach), t2]);
    data.push({ order, workers: 1, pairsPerSec: m1, nsPerPair: ns1 }, { order, workers: 2, pairsPerSec: m2, nsPerPairPerWorker: ns2, scaling, machineScaling: mach });
  }
  sections.pages = {
    title: "allocPages / freePages pairs",
    data,
    tables: [
      {
        title: "allocPages(order) / freePages pairs (each worker on its own slot of one heap)",
        columns: ["path", "workers", "pairs/s", "ns/pair/worker", "scaling 2/1", "machine 2/1", "target"],
        rows,
        notes: [
          "orders 0..5 have per-CPU page lists; order 6 is above them, so every order-6 pair takes the zone lock and the buddy lists",
          statNote(micro),
        ],
      },
    ],
  };
}

/* --- kmalloc */
{
  const rows: string[][] = [];
  const data: Record<string, unknown>[] = [];
  for (const [key, label] of [
    ["lifo", "64 B LIFO (kmalloc, kfree at once)"],
    ["batch32", "64 B batch of 32, freed in reverse"],
    ["batch1024", "64 B batch of 1024, freed in reverse"],
  ] as const) {
    const m1 = measure(`kmalloc/${key}/T1`);
    const m2 = measure(`kmalloc/${key}/T2`);
    const ns1 = 1e9 / m1.value;
    const ns2 = 2e9 / m2.value;
    const scaling = m2.value / m1.value;
    const id2 = `kmalloc/${key}/T2`;
    const mach = machineScaling(id2);
    // The 64 B pair: at most 10 ns; the batches, which reach the barn and the slabs, under 20 ns.
    const goal = key === "lifo" ? 10 : 20;
    rows.push([label, "1", fmtRate(m1.value), fmtNs(ns1), "", "", target("kmalloc", `${label}, 1 worker`, `<= ${goal} ns`, `${fmtNs(ns1)} ns`, ns1, ns1 <= goal)]);
    rows.push([label, "2", fmtRate(m2.value), fmtNs(ns2), fmtRatio(scaling), fmtRatio(mach), target("kmalloc", `${label}, 2 workers / 1 worker`, `>= ${SCALING_TARGET}x`, fmtRatio(scaling), scaling, scaling >= SCALING_TARGET, scalingNote(id2))]);
    data.push({ pattern: key, workers: 1, pairsPerSec: m1, nsPerPair: ns1 }, { pattern: key, workers: 2, pairsPerSec: m2, nsPerPairPerWorker: ns2, scaling, machineScaling: mach });
  }
  sections.kmalloc = {
    title: "kmalloc / kfree pairs",
    data,
    tables: [
      {
        title: "kmalloc(64) / kfree pairs (each worker on its own slot of one heap)",
        columns: ["pattern", "workers", "pairs/s", "ns/pair/worker", "scaling 2/1", "machine 2/1", "target"],
        rows,
        notes: [`a batch of 1024 is larger than a sheaf (${sheafCapacity(64)} objects): it goes through the barn as whole sheaves`, statNote(micro)],
      },
    ],
  };
}

/* --- nolock */
{
  const a = measure("nolock", "kmalloc");
  const b = measure("nolock", "nolock");
  const nsA = 1e9 / a.value;
  const nsB = 1e9 / b.value;
  const ratio = nsB / nsA;
  sections.nolock = {
    title: "kmallocNolock / kfreeNolock against kmalloc / kfree",
    data: { kmallocPairsPerSec: a, nolockPairsPerSec: b, kmallocNs: nsA, nolockNs: nsB, ratio },
    tables: [
      {
        title: "kmallocNolock(64) / kfreeNolock against kmalloc(64) / kfree, uncontended, 1 worker",
        columns: ["pair", "pairs/s", "ns/pair", "ratio to kmalloc", "target"],
        rows: [
          ["kmalloc / kfree", fmtRate(a.value), fmtNs(nsA), "1.00x", ""],
          ["kmallocNolock / kfreeNolock", fmtRate(b.value), fmtNs(nsB), fmtRatio(ratio), target("nolock", "nolock pair / kmalloc pair", "<= 1.25x", fmtRatio(ratio), ratio, ratio <= 1.25)],
        ],
        notes: ["samples of the two loops alternate in one worker", statNote(micro)],
      },
    ],
  };
}

/* --- storm */
{
  const r = results.get("storm");
  const raw = r?.info[0]?.storm;
  const s = typeof raw === "string" ? (JSON.parse(raw) as StormResult) : undefined;
  const vm = r?.vmstat ?? {};
  const rows: string[][] = [];
  let data: unknown = null;
  if (s !== undefined) {
    const share = s.allocFails / s.allocCalls;
    data = { ...s, failShare: share, vmstatNolockFail: vm.nolockFail, vmstatNolockNextClass: vm.nolockNextClass, vmstatObjectsDeferred: vm.objectsDeferred, vmstatHookErrors: vm.hookErrors };
    rows.push(["main-loop iterations", String(s.iterations)], ["ns per main-loop iteration", fmtNs(s.ns / s.iterations)]);
    rows.push(["lock points reached by the main loop", String(s.hookRuns)]);
    rows.push(["kmallocNolock calls", String(s.allocCalls)], ["kmallocNolock failures (returned 0)", String(s.allocFails)], ["failure share", fmtPct(share)]);
    rows.push(["vmstat.nolockFail (whole heap)", String(vm.nolockFail ?? "n/a")], ["vmstat.nolockNextClass", String(vm.nolockNextClass ?? "n/a")]);
    rows.push(["kfreeNolock calls from the hook", String(s.nolockFrees)], ["vmstat.objectsDeferred", String(vm.objectsDeferred ?? "n/a")], ["vmstat.hookErrors", String(vm.hookErrors ?? "n/a")]);
  } else {
    rows.push(["error", r?.error ?? "no result"]);
  }
  const points = s === undefined ? [] : Object.entries(s.byPoint).sort((x, y) => y[1].calls - x[1].calls);
  sections.storm = {
    title: "kmallocNolock failure share under a re-entry storm",
    data,
    tables: [
      {
        title: "Re-entry storm: kmallocNolock / kfreeNolock fired from a seeded hook at random lock points",
        columns: ["figure", "value"],
        rows,
        notes: [
          `main loop: kmalloc/kfree of 8..4096 B over 256 slots, and every 8th iteration allocPages/freePages of order 0..4; the hook fires at half of the main loop's lock points (seed ${SEED}), each time a burst of 1..8 nolock calls (55% kmallocNolock of 8..4096 B, 45% kfreeNolock of one it holds, up to 2048 held); it does not fire inside its own calls`,
          "vmstat counters include an untimed warm-up pass with another seed (a tenth of the iterations)",
          "everything the hook allocated is freed (kfreeNolock from the hook, the rest afterwards)",
        ],
      },
      {
        title: "kmallocNolock calls and failures by lock point",
        columns: ["lock point", "calls", "failures", "share"],
        rows: points.map(([pt, c]) => [pt, String(c.calls), String(c.fails), fmtPct(c.fails / c.calls)]),
      },
    ],
  };
}

/* --- rcu */
{
  const pair = measure("rcu/pair");
  const kf = measure("rcu/kfree", "kfree");
  const kr = measure("rcu/kfree", "kfreeRcu");
  const ratio = kr.value / kf.value;
  sections.rcu = {
    title: "RCU",
    data: { readPairsPerSec: pair, readPairNs: 1e9 / pair.value, kfreeObjectsPerSec: kf, kfreeRcuObjectsPerSec: kr, ratio },
    tables: [
      {
        title: "RCU read side and kfreeRcu, 1 worker",
        columns: ["figure", "rate", "ns/op", "ratio"],
        rows: [
          ["rcuReadLock / rcuReadUnlock pair", `${fmtRate(pair.value)}/s`, fmtNs(1e9 / pair.value), ""],
          [`kfree of ${CFG.kfreeRcu.n} live 64 B objects`, `${fmtRate(kf.value)} obj/s`, fmtNs(1e9 / kf.value), "1.00x"],
          [`kfreeRcu of ${CFG.kfreeRcu.n} live 64 B objects + rcuBarrier`, `${fmtRate(kr.value)} obj/s`, fmtNs(1e9 / kr.value), fmtRatio(ratio)],
        ],
        notes: ["the objects are allocated untimed before each round; the kfreeRcu time includes the closing rcuBarrier", statNote(micro)],
      },
    ],
  };
}

/* --- glibc-simple */
/** Peer columns of a table: each peer's figure, then shmalloc over the best of them (none without peers). */
const peerColumns = (): string[] => (RAN_PEERS.length > 0 ? [...RAN_PEERS.map((k) => ALLOC_LABEL[k]), "shmalloc/best peer"] : []);
function peerCells(m: Record<string, Measure>): string[] {
  if (RAN_PEERS.length === 0) return [];
  const bestPeer = Math.max(...RAN_PEERS.map((k) => m[k]?.value ?? NaN));
  return [...RAN_PEERS.map((k) => fmtRate(m[k]?.value ?? NaN)), fmtRatio((m.shmalloc?.value ?? NaN) / bestPeer)];
}
{
  const rows: string[][] = [];
  const data: Record<string, unknown>[] = [];
  for (const size of GLIBC_SIZES) {
    for (const n of GLIBC_COUNTS) {
      const m = Object.fromEntries(KINDS.map((k) => [k, measure(`glibc-simple/${k}`, `${size}/${n}`)])) as Record<AllocKind, Measure>;
      const vsThing = m.shmalloc.value / m.thing.value;
      const vsJs = m.shmalloc.value / m.js.value;
      const t = n === 1600 ? target("glibc-simple", `${size} B, n = 1600: shmalloc / MemPool`, ">= 20x", fmtRatio(vsThing), vsThing, vsThing >= 20) : "";
      rows.push([`${size} B`, String(n), fmtRate(m.shmalloc.value), fmtRate(m.thing.value), fmtRate(m.js.value), ...peerCells(m), fmtRatio(vsThing), fmtRatio(vsJs), t]);
      data.push({ size, n, opsPerSec: m, shmallocOverThing: vsThing, shmallocOverJs: vsJs });
    }
  }
  sections["glibc-simple"] = {
    title: "glibc-simple",
    data,
    tables: [
      {
        title: "glibc-simple, 1 agent: ops/s (an op is one allocation or one free)",
        columns: ["size", "n", "shmalloc", "@thi.ng/malloc", "plain JS", ...peerColumns(), "shmalloc/thi.ng", "shmalloc/JS", "target"],
        rows,
        notes: [
          "allocate n blocks, write every byte of each, free the first half FIFO and the rest LIFO; repeat",
          "@thi.ng/malloc: a bare MemPool on an ArrayBuffer; plain JS: new Uint8Array(size) per block, dropped for the GC",
          PEERS.note,
          statNote(CFG.glibc),
        ],
      },
    ],
  };
}

/* --- workloads */
const WORKLOAD_TEXT: Record<string, string> = {
  "pair-64": "allocate a 64 B block and free it at once, in a loop (each worker alone on its blocks); through the same Store interface for every allocator",
  larson: `sizes 8..1000 B, ${CFG.larson.slots} live blocks per worker in a shared array whose slices rotate between the workers every ${CFG.larson.epochMs} ms (a worker frees blocks another allocated)`,
  "xmalloc-test": `producers allocate 64 B objects in batches of ${CFG.xmalloc.batch}, consumers free them; batches go through a ${CFG.xmalloc.ringSlots}-batch ring in a SharedArrayBuffer (T = 1: one worker produces and consumes in turn)`,
  mstress: `short- and long-lived objects of 8..128 B, 1% large (x100) and 0.1% huge (x1000); a fill pattern written on allocation and checked on free; exchange through 1000 shared slots (Atomics.exchange); ${CFG.mstress.dataSlots} short-lived and ${CFG.mstress.retainSlots} long-lived slots per worker`,
  "cache-scratch": `each worker frees an 8 B object the main thread allocated next to the others', then allocates 8 B objects, increments each byte ${CFG.scratch.reps} times and frees them; an op is one such iteration; the ideal is a T-fold speedup`,
  "alloc-test": `${CFG.allocTest.live} live blocks per worker (8 B..2 KiB, power law), each op pair replaces one; 80% of the picks fall on the hot fifth of the set`,
};
/** Per workload and worker count, every allocator's measure (for the peers summary). */
const workloadMeasures = new Map<string, Map<number, Record<AllocKind, Measure>>>();
for (const wl of WORKLOADS) {
  const rows: string[][] = [];
  const data: Record<string, unknown>[] = [];
  const byT = new Map<number, Record<AllocKind, Measure>>();
  workloadMeasures.set(wl.name, byT);
  for (const T of THREADS) {
    const m = Object.fromEntries(KINDS.map((k) => [k, measure(`${wl.name}/${k}/T${T}`)])) as Record<AllocKind, Measure>;
    byT.set(T, m);
    const vsThing = m.shmalloc.value / m.thing.value;
    const vsJs = m.shmalloc.value / m.js.value;
    rows.push([String(T), fmtRate(m.shmalloc.value), fmtRate(m.thing.value), fmtRate(m.js.value), ...peerCells(m), fmtRatio(vsThing), fmtRatio(vsJs)]);
    data.push({ workers: T, opsPerSec: m, shmallocOverThing: vsThing, shmallocOverJs: vsJs });
  }
  const tMax = THREADS[THREADS.length - 1]!;
  const scale = Object.fromEntries(KINDS.map((k) => [k, byT.get(tMax)![k].value / byT.get(1)![k].value])) as Record<AllocKind, number>;
  const isScratch = wl.name === "cache-scratch";
  const blank = (): string[] => (RAN_PEERS.length > 0 ? ["", ""] : []).concat(["", ""]);
  rows.push([
    isScratch ? `speedup 1->${tMax} (ideal ${tMax}.00x)` : `scaling 1->${tMax}`,
    fmtRatio(scale.shmalloc),
    fmtRatio(scale.thing),
    fmtRatio(scale.js),
    ...RAN_PEERS.map((k) => fmtRatio(scale[k])),
    ...blank(),
  ]);
  const mach = Object.fromEntries(KINDS.map((k) => [k, machineScaling(`${wl.name}/${k}/T${tMax}`)])) as Record<AllocKind, number>;
  rows.push([`machine 1->${tMax} (lower check)`, fmtRatio(mach.shmalloc), fmtRatio(mach.thing), fmtRatio(mach.js), ...RAN_PEERS.map((k) => fmtRatio(mach[k])), ...blank()]);
  sections[wl.name] = {
    title: wl.name,
    data: { rows: data, scaling: scale, machineScaling: mach },
    tables: [
      {
        title: `${wl.name}: ops/s by workers`,
        columns: ["workers", "shmalloc", "@thi.ng/malloc", "plain JS", ...peerColumns(), "shmalloc/thi.ng", "shmalloc/JS"],
        rows,
        notes: [WORKLOAD_TEXT[wl.name]!, statNote(CFG.work)],
      },
    ],
  };
}

/* --- peers: every workload side by side, ns per operation per worker */
{
  const rows: string[][] = [];
  const data: Record<string, unknown>[] = [];
  /** ns per operation per worker of a measure run with T workers. */
  const nsPerOp = (m: Measure | undefined, T: number): number => (m === undefined ? NaN : (T * 1e9) / m.value);
  const cols = [...KINDS];
  /** The scaling column: shmalloc and the peers (the targets compare those). */
  const scaleKinds: AllocKind[] = ["shmalloc", ...RAN_PEERS];
  const add = (what: string, T: number, m: Record<AllocKind, Measure>, scaleNote: string): void => {
    const ns = Object.fromEntries(cols.map((k) => [k, nsPerOp(m[k], T)])) as Record<AllocKind, number>;
    let cell = "";
    if (RAN_PEERS.length > 0) {
      const bestPeer = Math.min(...RAN_PEERS.map((k) => ns[k]));
      cell = target("peers", `${what}, ${T} worker${T > 1 ? "s" : ""}: shmalloc ns/op <= best Wasm peer`, "<= best peer", `${fmtNs(ns.shmalloc)} vs ${fmtNs(bestPeer)}`, ns.shmalloc, ns.shmalloc <= bestPeer);
    }
    rows.push([what, String(T), ...cols.map((k) => fmtNs(ns[k])), scaleNote, cell]);
    data.push({ workload: what, workers: T, nsPerOpPerWorker: ns });
  };
  for (const size of GLIBC_SIZES) {
    for (const n of [100, 1600]) {
      const m = Object.fromEntries(KINDS.map((k) => [k, measure(`glibc-simple/${k}`, `${size}/${n}`)])) as Record<AllocKind, Measure>;
      add(`glibc-simple ${size} B, n = ${n}`, 1, m, "");
    }
  }
  for (const wl of WORKLOADS) {
    const byT = workloadMeasures.get(wl.name)!;
    for (const T of THREADS) {
      const m = byT.get(T)!;
      let scaleNote = "";
      if (T > 1) {
        const one = byT.get(1)!;
        const id2 = `${wl.name}/shmalloc/T${T}`;
        scaleNote = scaleKinds.map((k) => fmtRatio(m[k].value / one[k].value)).join(" / ") + ` (machine ${fmtRatio(machineScaling(id2))})`;
        const scaling = m.shmalloc.value / one.shmalloc.value;
        target("peers", `${wl.name}, 2 workers / 1 worker (shmalloc)`, `>= ${SCALING_TARGET}x`, fmtRatio(scaling), scaling, scaling >= SCALING_TARGET, scalingNote(id2));
      }
      add(wl.name, T, m, scaleNote);
    }
  }
  sections.peers = {
    title: "Side by side with the Wasm peers",
    data: { ran: RAN_PEERS.length > 0, note: PEERS.note, rows: data },
    tables: [
      {
        title: `Every workload side by side: ns per operation per worker (lower is better)${RAN_PEERS.length > 0 ? "" : " (Wasm peers not run)"}`,
        columns: ["workload", "workers", ...cols.map((k) => ALLOC_LABEL[k]), `scaling 1->2 (${scaleKinds.map((k) => ALLOC_LABEL[k]).join(" / ")})`, "target"],
        rows,
        notes: [
          PEERS.note,
          "an operation is one allocation or one free (cache-scratch: one allocate-write-free iteration); ns per op per worker = workers x 1e9 / (ops/s of the group)",
          "the scaling column gives the 2-worker over the 1-worker rate of shmalloc and of each peer, and the lower machine check around shmalloc's 2-worker run",
        ],
      },
    ],
  };
}

/* ------------------------------------------------------------------ output */

const meta = {
  date: new Date().toISOString(),
  node: process.version,
  v8: process.versions.v8,
  cpu: os.cpus()[0]?.model ?? "unknown",
  cores: os.cpus().length,
  platform: `${os.platform()} ${os.arch()}`,
  quick: QUICK,
  smoke: SMOKE,
  /** The Wasm peers: run or not, and from where. */
  peers: { ran: RAN_PEERS.length > 0, note: PEERS.note },
  /** 1-minute load average at the start and the end of the run: other processes on the machine. */
  loadavg1: { start: loadAtStart[0], end: Math.round(os.loadavg()[0]! * 100) / 100 },
  statistic: STATISTIC,
  timing: { micro: CFG.micro, glibc: CFG.glibc, workloads: CFG.work },
};
const GENERAL_NOTES = [
  "Multi-worker rows use real worker_threads, all attached to one shmalloc heap (Heap.attach); each run gets a fresh heap.",
  "@thi.ng/malloc with workers: one MemPool on a SharedArrayBuffer behind one futex-style lock (Atomics.compareExchange/wait/notify on one word), the same in the 1-worker rows.",
  "Plain JS with workers: each worker uses new Uint8Array; a Uint8Array cannot cross workers, so a free of a block another worker allocated is a dropped reference.",
  "After every shmalloc run: heap.validate(), heap.shrink(), and freePages === totalPages (leak checks below).",
  "The machine is shared: just before and just after each 2-worker run, a machine check (an arithmetic loop in 1, then 2 workers) measures the parallelism the machine gave; the lower of the two is shown next to each scaling figure.",
  PEERS.note,
];

/** Allocations that returned 0 although the heap was far from full (retried by the workloads). */
const anomalies: { run: string; zeroReturns: number; allocFail: number | undefined; text: string }[] = [];
for (const j of jobs) {
  const r = results.get(j.id)!;
  const zero = r.info.reduce((a, x) => a + (typeof x.allocZero === "number" ? x.allocZero : 0), 0);
  if (zero > 0) {
    anomalies.push({
      run: j.id,
      zeroReturns: zero,
      allocFail: r.vmstat?.allocFail,
      text: `${j.alloc === "shmalloc" ? "kmalloc" : "malloc"} returned 0 ${zero} time(s) with the heap far from full (retried; vmstat.allocFail ${r.vmstat?.allocFail ?? "n/a"})`,
    });
  }
}
const anomalyTable: Table = {
  title: "Anomalies: allocations that returned 0 while the heap was far from full",
  columns: ["run", "zero returns", "what"],
  rows: anomalies.length > 0 ? anomalies.map((a) => [a.run, String(a.zeroReturns), a.text]) : [["none", "0", ""]],
  notes: ["the workloads retry such an allocation (up to 3 times) and go on; every one is an allocator bug to look at"],
};

const leakTable: Table = {
  title: "Leak checks (after every shmalloc run: validate(), then shrink(), then freePages === totalPages)",
  columns: ["run", "validate", "free/total pages", "result"],
  rows: leakChecks.map((l) => [l.run, l.validate === "ok" ? "ok" : l.validate, `${l.freePages}/${l.totalPages}`, l.ok ? "ok" : `LEAK ${l.detail}`]),
};
const targetTable: Table = {
  title: "Targets",
  columns: ["section", "target", "goal", "measured", "result", "note"],
  rows: targets.map((t) => [t.section, t.what, t.target, t.measured, passMiss(t.pass), t.note ?? ""]),
  notes: ["a 2-worker scaling target missed while a machine check just before or after it did not reach 1.9x either is marked inconclusive"],
};

const SECTION_ORDER = ["machine", "pages", "kmalloc", "nolock", "storm", "rcu", "glibc-simple", "pair-64", "larson", "xmalloc-test", "mstress", "cache-scratch", "alloc-test", "peers"];
const allLeaksOk = leakChecks.every((l) => l.ok) && (leakChecks.length > 0 || ONLY !== undefined);
const doc = {
  meta,
  sections: Object.fromEntries(SECTION_ORDER.map((k) => [k, { title: sections[k]!.title, data: sections[k]!.data }])),
  targets,
  leakChecks,
  leaksOk: allLeaksOk,
  anomalies,
  errors,
  /** Per run: wall time (setup and checks included), the workers' extra figures, shmalloc's vmstat counters summed over slots. */
  runs: Object.fromEntries(jobs.map((j) => {
    const r = results.get(j.id)!;
    return [j.id, { wallMs: Math.round(r.wallMs), info: r.info, vmstat: r.vmstat }];
  })),
};

const header =
  `shmalloc benchmarks ${QUICK ? "(--quick) " : ""}- ${meta.date}\nNode ${meta.node}, V8 ${meta.v8}, ${meta.cpu}, ${meta.cores} cores, ${meta.platform}` +
  `\nload average (1 min) at start ${meta.loadavg1.start}, at end ${meta.loadavg1.end}; ${STATISTIC}`;
const allTables = [...SECTION_ORDER.flatMap((k) => sections[k]!.tables), targetTable, anomalyTable, leakTable];

const md = [
  `# shmalloc benchmark results${QUICK ? " (--quick)" : ""}`,
  "",
  `- date: ${meta.date}`,
  `- Node ${meta.node}, V8 ${meta.v8}`,
  `- CPU: ${meta.cpu}, ${meta.cores} cores (${meta.platform})`,
  `- load average (1 min) at start ${meta.loadavg1.start}, at end ${meta.loadavg1.end} (other processes on the machine)`,
  `- statistic: ${meta.statistic}`,
  ...GENERAL_NOTES.map((n) => `- ${n}`),
  "",
  ...allTables.map((t) => `${markdownTable(t)}\n`),
  errors.length > 0 ? `#### Errors\n\n${errors.map((e) => `- ${e}`).join("\n")}\n` : "",
].join("\n");

const stem = QUICK ? "latest-quick" : "latest";
const writeFiles = (ONLY === undefined && !SMOKE) || OUT_ARG !== undefined;
if (writeFiles) {
  mkdirSync(OUT_DIR, { recursive: true });
  writeFileSync(join(OUT_DIR, `${stem}.json`), `${JSON.stringify(doc, null, 2)}\n`);
  writeFileSync(join(OUT_DIR, `${stem}.md`), md);
}

if (JSON_OUT) {
  process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
} else {
  const text = [header, "", ...GENERAL_NOTES, "", ...allTables.map((t) => `${textTable(t)}\n`)];
  if (errors.length > 0) text.push("Errors:", ...errors.map((e) => `  ${e}`));
  process.stdout.write(`${text.join("\n")}\n`);
  if (writeFiles) process.stdout.write(`results written to ${join(OUT_DIR, `${stem}.json`)} and ${stem}.md\n`);
}

if (!allLeaksOk) process.stderr.write("LEAK CHECK FAILED: see the leak-check table\n");
if (anomalies.length > 0) process.stderr.write(`${anomalies.length} run(s) saw allocations return 0 with memory free: see the anomalies table\n`);
if (errors.length > 0) process.stderr.write(`${errors.length} benchmark run(s) failed\n`);
process.exitCode = allLeaksOk && errors.length === 0 ? 0 : 1;
