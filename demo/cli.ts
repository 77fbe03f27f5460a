/** Command-line options of the demo (`npm start -- --help`). */
import { availableParallelism } from "node:os";
import { nonEmpty, type OptionTable, parseCommandLine, parseSeconds, parseSize, parseWhole, UsageError } from "./args.js";
import { parseSeed } from "../test/support/common.js";

export interface DemoOptions {
  workers: number;
  seconds: number;
  size: number;
  seed: number;
  /** The seed was given on the command line (otherwise it was drawn at random). */
  seedGiven: boolean;
  help: boolean;
  /** Serve the inspector page while the demo runs (--web); then --seconds defaults to no limit. */
  web: boolean;
  /** The inspector's port (0: any free one). */
  port: number;
}

/** One CPU slot per worker plus the main thread; shmalloc allows up to 1024 slots. */
export const MAX_WORKERS = 256;

export function defaultWorkers(): number {
  return Math.max(2, availableParallelism());
}

export const USAGE = `Usage: npm start -- [options]      (or: node dist/demo/main.js [options])

Runs a concurrent hash table on one shmalloc heap: worker threads insert, look up, replace,
delete and hand entries to each other; readers walk the buckets inside RCU read sections;
removed entries are freed with kfreeRcu. A live view shows the allocator's state while it runs.
At the end the table is emptied, the heap shrunk and validated, and every page accounted for.

Options:
  --workers N    worker threads (default: the number of cores, at least 2; now ${defaultWorkers()})
  --seconds S    how long the workers run, in seconds, fractions allowed (default 10, at most
                 86400: a day)
  --size SIZE    heap size: bytes, or a number with a binary unit k/m/g (KiB/MiB/GiB; "64m",
                 "256MiB", "1.5g", "67108864"; "64MB" is refused as ambiguous, and a size must be a
                 whole number of bytes); default 64m, at most 2047m. Small heaps put the allocator under
                 memory pressure: failed allocations are counted, not fatal.
  --seed X       seed of the workload's random generator: a number (decimal or 0x-hex) or any
                 text (hashed); default random. Printed at start so that a run can be repeated.
  --web          serve the live inspector on http://127.0.0.1 and print its URL (npm run inspect);
                 the demo then runs until Ctrl-C unless --seconds is given
  --port N       the inspector's port (default 0: any free one); only with --web, an error without
  --help, -h     show this help

Exit status: 0 when the run ended with validate() passing and every page free; 1 when a check
failed (a value's signature mismatch, a worker error, a leak, validate() throwing); 2 for bad
options.`;

/**
 * The demo's options. Add one here (and to USAGE) and read it in parseArgs: `name: { type: "string" }`
 * takes a value, `{ type: "boolean" }` is a switch.
 */
export const DEMO_OPTIONS = {
  workers: { type: "string" },
  seconds: { type: "string" },
  size: { type: "string" },
  seed: { type: "string" },
  web: { type: "boolean" },
  port: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const satisfies OptionTable;

export function parseArgs(argv: readonly string[]): DemoOptions {
  const v = parseCommandLine(argv, DEMO_OPTIONS);
  const o: DemoOptions = { workers: defaultWorkers(), seconds: 10, size: 64 << 20, seed: 0, seedGiven: false, help: v.help === true, web: v.web === true, port: 0 };
  if (v.workers !== undefined) o.workers = parseWhole(v.workers, "--workers", 1, MAX_WORKERS);
  if (v.seconds !== undefined) o.seconds = parseSeconds(v.seconds, "--seconds", 86400);
  if (v.size !== undefined) o.size = parseSize(v.size, "--size");
  if (v.seed !== undefined) {
    o.seed = parseSeed(nonEmpty(v.seed, "--seed"));
    o.seedGiven = true;
  }
  if (v.port !== undefined) o.port = parseWhole(v.port, "--port", 0, 65535);
  // Refused rather than implied: --web also changes how long the demo runs (no limit by default).
  if (v.port !== undefined && !o.web) throw new UsageError("--port is the inspector's port and needs --web (add --web, or drop --port)");
  if (o.web && v.seconds === undefined) o.seconds = Infinity;
  return o;
}
