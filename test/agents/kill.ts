/*
 * The kill harness: workers run every path of the allocator (kmalloc/kfree of every size, named
 * caches and their churn, page blocks of orders 0..5, nolock calls, kfreeRcu, cross-agent frees,
 * growth, shrink, detach + attach, rcuBarrier; a reentry hook that makes nolock calls) and are
 * terminated at seeded random instants, one or two at once. After each kill the host reclaims the
 * dead slots, pauses the survivors, checks that every page is accounted for (free + cached + held
 * by a live worker == the zone) and every live block is intact and alone, frees what the dead held,
 * runs validate(), and starts replacements. The host runs in a worker of its own, watched here by
 * a heartbeat, so nothing can hang: every wait has a deadline.
 *
 * A short seeded form runs in `npm test` (test/kill.test.ts); the long form is `npm run kills`.
 */
import { pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import { parseCommandLine, parseSeconds, parseWhole, UsageError, usageMessage } from "../../demo/args.js";
import { heldLockWords } from "./kill-locks.js";
import { G_BEAT, G_PHASE, G_WORDS, HOST_PHASES, W_CPU, W_POP, W_WORDS, wBase, type KillOptions, type KillSummary } from "./kill-proto.js";

export type { KillOptions, KillSummary } from "./kill-proto.js";

/** A host that shows no heartbeat for this long is hung. */
const HANG_MS = 120_000;

/** Run the harness; resolves with its summary (failures listed in it, a hang among them). */
export function runKills(opts: KillOptions, onLine: (line: string) => void = () => {}): Promise<KillSummary> {
  const ctrlBuf = new SharedArrayBuffer((G_WORDS + opts.workers * W_WORDS) * 4);
  const ctrl = new Int32Array(ctrlBuf);
  const host = new Worker(new URL("./workers/kill-host.js", import.meta.url), { workerData: { opts, ctrlBuf } });
  return new Promise((resolve) => {
    let summary: KillSummary | null = null;
    let heapBuffer: SharedArrayBuffer | null = null;
    let lastBeat = -1;
    let lastChange = Date.now();
    const watch = setInterval(() => {
      const b = Atomics.load(ctrl, G_BEAT);
      if (b !== lastBeat) {
        lastBeat = b;
        lastChange = Date.now();
      } else if (Date.now() - lastChange > HANG_MS) {
        clearInterval(watch);
        onLine(`failure: the host made no progress for ${HANG_MS / 1000} s, in its ${HOST_PHASES[Atomics.load(ctrl, G_PHASE)] ?? "?"} phase: a hang`);
        if (heapBuffer !== null) onLine(`  held lock words: ${heldLockWords(heapBuffer)}`);
        for (let id = 0; id < opts.workers; id++) onLine(`  worker ${id}: cpu ${ctrl[wBase(id) + W_CPU]}, pending op ${ctrl[wBase(id) + W_POP]}`);
        void host.terminate();
      }
    }, 1000);
    host.on("message", (m: { type: string; line?: string; summary?: KillSummary }) => {
      if (m.type === "line") onLine(m.line!);
      else if (m.type === "buffer") heapBuffer = (m as unknown as { buffer: SharedArrayBuffer }).buffer;
      else if (m.type === "summary") summary = m.summary!;
    });
    host.on("error", (e) => onLine(`failure: host crashed: ${e.message}`));
    host.once("exit", () => {
      clearInterval(watch);
      const s = summary ?? emptySummary(opts, "the host exited without a summary (a hang or a crash)");
      resolve(s);
    });
    // The host ends itself after its summary; give it the run time plus a margin.
    setTimeout(() => void host.terminate(), (opts.seconds + 300) * 1000).unref();
  });
}

function emptySummary(opts: KillOptions, why: string): KillSummary {
  return {
    seed: opts.seed, seconds: opts.seconds, workers: opts.workers, kills: 0, doubleKills: 0, killsInDrain: 0, spawned: 0, ops: 0,
    hookActions: 0, grows: 0, drains: 0, churn: 0, validates: 0, hostFreed: 0, inFlightRecovered: 0, pendingResolved: 0,
    objectWindow: 0, rcuBatchKills: 0, reclaimLocks: 0, reclaimRebuilt: 0, reclaimPages: 0, reclaimObjects: 0, reclaimInHand: 0, leftObjects: 0, windowFreed: 0, freeWindow: 0, stuckCaches: 0, slotsFull: 0, leftSheaves: 0,
    startPages: 0, endPages: 0, failures: [why],
  };
}

/** The summary table. */
export function summaryTable(s: KillSummary): string {
  const n = (x: number): string => x.toLocaleString("en-US");
  const rows: [string, string][] = [
    ["seed", String(s.seed)],
    ["run", `${s.seconds} s, ${s.workers} workers, ${n(s.spawned)} started`],
    ["operations", n(s.ops)],
    ["kills", `${n(s.kills)} (${n(s.doubleKills)} rounds of two at once, ${n(s.killsInDrain)} during another worker's drain)`],
    ["reclaimSlot took over", `${n(s.reclaimLocks)} locks, rebuilt ${n(s.reclaimRebuilt)} structures, returned ${n(s.reclaimPages)} pages and ${n(s.reclaimObjects)} objects, ${n(s.reclaimInHand)} blocks in hand`],
    ["host after kills", `freed ${n(s.hostFreed)} blocks the dead held, ${n(s.inFlightRecovered)} page blocks in flight found by owner, ${n(s.pendingResolved)} pending frees resolved`],
    ["validate() passes", n(s.validates)],
    ["reentry hook actions", n(s.hookActions)],
    ["growths / drains / cache churn", `${n(s.grows)} / ${n(s.drains)} / ${n(s.churn)} caches created`],
    ["churn caches kept", `${n(s.stuckCaches)} of dead workers (an object marked free on no list: no kfree accepts it); ${n(s.slotsFull)} createCache refused, every slot accounted for`],
    ["heap pages", `${n(s.startPages)} at the start, ${n(s.endPages)} at the end`],
    ["objects left", `${n(s.leftObjects)} + ${n(s.windowFreed)} window objects freed from dead workers' churn caches (at most: kills in an object allocation's caller window ${n(s.objectWindow)} + inside a kfree found marked free ${n(s.freeWindow)} + inside a kfreeRcu batch free ${n(s.rcuBatchKills)})`],
    ["sheaf objects left", `${n(s.leftSheaves)} (the allocator's own; at most one a kill)`],
    ["failures", n(s.failures.length)],
  ];
  const w = Math.max(...rows.map((r) => r[0].length));
  return rows.map(([k, v]) => `  ${k.padEnd(w)}  ${v}`).join("\n");
}

const KILL_OPTIONS = {
  minutes: { type: "string" },
  seconds: { type: "string" },
  workers: { type: "string" },
  seed: { type: "string" },
  growth: { type: "boolean" },
  "no-growth": { type: "boolean" },
  kills: { type: "boolean" },
  "no-kills": { type: "boolean" },
  reentry: { type: "boolean" },
  "no-reentry": { type: "boolean" },
  debug: { type: "boolean" },
  "no-debug": { type: "boolean" },
  verbose: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

const KILL_HELP = `npm run kills -- [options]

Workers run every allocator path while the host terminates them at seeded random instants (one or
two at once), reclaims their slots, checks that every page is accounted for and every live block
intact, frees what the dead held, runs validate() and starts replacements. Prints the seed, a
summary table and PASS or FAIL; exit 1 on a failure, 2 for a bad option.

Options:
  --minutes M              run time in minutes (fractions allowed)
  --seconds S              run time in seconds (default 20; give one of --minutes, --seconds)
  --workers N              workers (1..16, default 4)
  --seed X                 seed, a whole number (default random; printed)
  --growth / --no-growth   a 3 MiB heap that grows up to 48 MiB (default on), or a fixed 32 MiB one
  --kills / --no-kills     terminate workers (default on); off: the same checks every round, no kill
  --reentry / --no-reentry a reentry hook that makes nolock calls at lock points (default on)
  --debug / --no-debug     debug mode (default on: a second kfree of an object is always caught,
                           so every pending free of a dead worker can be resolved exactly)
  --verbose                a line per kill and per reclaimSlot that took over a lock
  --help, -h               show this help`;

function flag(v: Record<string, unknown>, name: string, def: boolean): boolean {
  const on = v[name] === true;
  const off = v[`no-${name}`] === true;
  if (on && off) throw new UsageError(`--${name} and --no-${name} are both given: give one`);
  return on ? true : off ? false : def;
}

async function main(): Promise<void> {
  let opts: KillOptions;
  try {
    const v = parseCommandLine(process.argv.slice(2), KILL_OPTIONS);
    if (v.help === true) {
      console.log(KILL_HELP);
      return;
    }
    if (v.minutes !== undefined && v.seconds !== undefined) throw new UsageError("--minutes and --seconds are both given: give one");
    const seconds = v.minutes !== undefined ? parseSeconds(v.minutes, "--minutes", 10_080) * 60 : v.seconds !== undefined ? parseSeconds(v.seconds, "--seconds", 604_800) : 20;
    opts = {
      seconds,
      workers: v.workers === undefined ? 4 : parseWhole(v.workers, "--workers", 1, 16),
      seed: v.seed === undefined ? (Date.now() ^ (Math.random() * 0x100000000)) >>> 0 : parseWhole(v.seed, "--seed", 0, 0xffffffff),
      growth: flag(v, "growth", true),
      kills: flag(v, "kills", true),
      reentry: flag(v, "reentry", true),
      debug: flag(v, "debug", true),
      verbose: v.verbose === true,
    };
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(usageMessage("kills", "npm run kills --", e));
    process.exitCode = 2;
    return;
  }
  const cmd = `npm run kills -- --seconds ${opts.seconds} --workers ${opts.workers} --seed ${opts.seed}${opts.growth ? "" : " --no-growth"}${opts.kills ? "" : " --no-kills"}${opts.reentry ? "" : " --no-reentry"}${opts.debug ? "" : " --no-debug"}`;
  console.log(`shmalloc kills: ${opts.workers} workers for ${opts.seconds} s, seed ${opts.seed}; growth ${opts.growth ? "on" : "off"}, kills ${opts.kills ? "on" : "off"}, reentry ${opts.reentry ? "on" : "off"}, debug ${opts.debug ? "on" : "off"}`);
  console.log(`  repeat with: ${cmd}`);
  const t0 = Date.now();
  const s = await runKills(opts, (l) => console.log(l));
  console.log(summaryTable(s));
  const took = ((Date.now() - t0) / 1000).toFixed(1);
  if (s.failures.length === 0) console.log(`PASS: ${s.kills} kills in ${took} s, seed ${opts.seed}: every page accounted for after each, validate clean`);
  else console.log(`FAIL: ${s.failures.length} failures, seed ${opts.seed}; repeat with: ${cmd}`);
  process.exitCode = s.failures.length === 0 ? 0 : 1;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) void main();
